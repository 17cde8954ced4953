//! The reconcile of one `DatabaseSecurityPolicy`, as four typed stages:
//!
//! 1. [`observe`] (reads only): the account guard, then the (account, region)'s shared sweep →
//!    [`Observed`].
//! 2. [`act`]: select → evaluate → plan (pure, `posture::plan`) → execute on AWS and in the
//!    databases (Enforce only, asking before every mutating call whether the policy is still
//!    wanted) → [`Done`], or [`Acted::Stopped`].
//! 3. [`decide`] (pure, unit-tested): the next status, which Events to publish, when to come
//!    back → [`Decision`].
//! 4. [`report`]: Events, the status write (only on change), policy reports, memory.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tracing::{Instrument, info_span};

use crate::api::{AwsAccount, DatabaseSecurityPolicy, DatabaseSecurityPolicyStatus, RebootPolicy};
use crate::aws::executor::MayAct;
use crate::aws::inventory::Needs;
use crate::engine;
use crate::posture::failure::{Failure, Reason};
use crate::posture::report::Outcome;

use super::accounts::{self, Target};
use super::events::{self, EventSpec};
use super::fleet::{FleetView, Key, Region, Regions};
use super::lease::Leadership;
use super::metrics::Metrics;
use super::reports::{Reports, ReportsMode};
use super::status::{self, Observation, Refusal};
use tokio::sync::OwnedMutexGuard;

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "pgbaseline";

/// After a plan changed AWS, look again this soon (at most) to confirm.
const VERIFY_AFTER: Duration = Duration::from_secs(10);
/// Backoff after errors: first delay and cap.
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS failure already reported in status; retried with backoff.
    #[error("AWS: {reason}: {0}", reason = .0.reason())]
    Aws(Failure),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    pub fn reason(&self) -> Reason {
        match self {
            Error::Aws(failure) => failure.reason(),
            Error::Kube(_) => Reason::KubernetesError,
        }
    }
}

/// What the operator remembers about a policy between reconciles.
#[derive(Debug, Default)]
struct Memory {
    /// The object this memory is about (a policy deleted and created again is a new one).
    uid: Option<String>,
    /// The generation last reconciled.
    generation: Option<i64>,
    /// The `AwsAccount` (uid and generation) last reconciled against: a changed account is a
    /// reason to reconcile before the policy is due.
    account: Option<String>,
    /// When the next reconcile is due; watch events before then (our own status writes, a
    /// re-list after an apiserver restart) are not a reason to read AWS again.
    due: Option<Instant>,
    /// Consecutive failed reconciles (backoff).
    failures: u32,
    /// Warnings published last time (so a persisting failure is published once).
    warnings: BTreeSet<EventSpec>,
    /// The Ready reason last published.
    ready_reason: Option<Reason>,
    /// The time of the earliest AWS event that woke this policy and is not yet reported (the
    /// event-to-status latency).
    event_at: Option<chrono::DateTime<Utc>>,
}

/// An account's uid and generation when verified, and when it is due again.
pub type AccountCheck = (Option<String>, Option<i64>, Instant);

/// Shared by every reconcile.
/// Default grace period before an unused managed parameter group is deleted.
pub const DEFAULT_MANAGED_GROUP_GRACE: Duration = Duration::from_secs(3600);

pub struct Context {
    /// How long a managed parameter group stays unused before it is deleted.
    pub managed_group_grace: Duration,
    pub client: Client,
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    pub regions: Regions,
    /// The controllers' caches, to know which policies share a region and whether a policy
    /// being remediated still exists unchanged.
    pub stores: RwLock<Vec<Store<DatabaseSecurityPolicy>>>,
    /// With leader election: whether this replica's term runs (asked before every mutating
    /// AWS call).
    pub leadership: Option<Arc<Leadership>>,
    /// With `--scale-out`: the (account, region) keys this replica holds (a policy is
    /// reconciled only by the replica holding all of its keys; see `scaleout.rs`).
    pub shards: Option<Arc<super::scaleout::Shards>>,
    /// The in-database layer (connections, TLS, the concurrency cap), shared by every policy.
    pub db: Option<crate::postgres::Layer>,
    /// The `AwsAccount` cache (kept current by the account controller's watch).
    pub accounts: RwLock<Option<Store<AwsAccount>>>,
    /// When each account (by name: uid, generation) is next verified; its own status writes are
    /// no reason to call STS again.
    pub account_checks: Mutex<HashMap<String, AccountCheck>>,
    /// Policy reports (the API group found by discovery).
    pub reports: Reports,
    memory: Mutex<HashMap<ObjectRef<DatabaseSecurityPolicy>, Memory>>,
}

impl Context {
    pub fn new(
        client: Client,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        requests_per_second: u32,
    ) -> Context {
        Context {
            client,
            reporter,
            metrics,
            regions: Regions::new(requests_per_second),
            managed_group_grace: DEFAULT_MANAGED_GROUP_GRACE,
            stores: RwLock::new(Vec::new()),
            leadership: None,
            shards: None,
            db: None,
            accounts: RwLock::new(None),
            account_checks: Mutex::new(HashMap::new()),
            reports: Reports::new(ReportsMode::Auto),
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// This replica's name (Events, STS session names).
    pub fn identity(&self) -> String {
        self.reporter
            .instance
            .clone()
            .unwrap_or_else(|| self.reporter.controller.clone())
    }

    pub fn requests_per_second(&self) -> u32 {
        self.regions.requests_per_second()
    }

    pub fn call_timeout(&self) -> Duration {
        self.regions.call_timeout()
    }

    /// The `AwsAccount` named `name`, as the cache holds it now.
    pub fn account(&self, name: &str) -> Option<Arc<AwsAccount>> {
        let accounts = self.accounts.read().ok()?;
        accounts.as_ref()?.get(&ObjectRef::new(name))
    }

    /// The uid and generation of the account a policy names (`None`: none, or not found).
    fn account_version(&self, policy: &DatabaseSecurityPolicy) -> Option<String> {
        let account = self.account(&policy.spec.account_ref.as_ref()?.name)?;
        Some(format!(
            "{}/{}",
            account.meta().uid.as_deref().unwrap_or_default(),
            account.meta().generation.unwrap_or_default()
        ))
    }

    /// The (account, region)s a policy's work happens in, one per region, as far as the caches
    /// tell (the guard is not applied: this only groups policies for a shared sweep).
    pub fn policy_keys(&self, policy: &DatabaseSecurityPolicy) -> Option<Vec<Key>> {
        let account = match &policy.spec.account_ref {
            None => String::new(),
            Some(r) => r.name.clone(),
        };
        let mut regions: Vec<String> = policy
            .spec
            .regions()
            .into_iter()
            .map(str::to_string)
            .collect();
        if regions.is_empty() {
            regions.push(match &policy.spec.account_ref {
                None => self.regions.default_region()?,
                Some(r) => self.account(&r.name)?.spec.regions.first()?.clone(),
            });
        }
        Some(
            regions
                .into_iter()
                .map(|region| Key {
                    account: account.clone(),
                    region,
                })
                .collect(),
        )
    }

    /// Every known policy.
    pub fn policies(&self) -> Vec<Arc<DatabaseSecurityPolicy>> {
        match self.stores.read() {
            Ok(stores) => stores.iter().flat_map(|s| s.state()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The policy as the controllers' caches (kept current by the watch) hold it now.
    fn cached(
        &self,
        key: &ObjectRef<DatabaseSecurityPolicy>,
    ) -> Result<Option<Arc<DatabaseSecurityPolicy>>, String> {
        let stores = self
            .stores
            .read()
            .map_err(|_| "the policy cache is unavailable".to_string())?;
        Ok(stores.iter().find_map(|s| s.get(key)))
    }

    /// What every known policy of the (account, region) reads, so one sweep serves them all.
    fn region_needs(&self, key: &Key) -> Needs {
        let policies = self.policies();
        Needs::for_policies(
            policies
                .iter()
                .filter(|p| self.policy_keys(p).is_some_and(|keys| keys.contains(key)))
                .map(|p| &p.spec),
        )
    }

    /// `Some(wait)` when the policy is neither changed nor due: nothing to do yet.
    fn not_due(
        &self,
        key: &ObjectRef<DatabaseSecurityPolicy>,
        uid: Option<&str>,
        generation: Option<i64>,
        account: Option<&str>,
    ) -> Option<Duration> {
        let mut memory = self.memory.lock().ok()?;
        let m = memory.get(key)?;
        if m.uid.as_deref() != uid {
            memory.remove(key);
            return None;
        }
        if m.generation != generation || m.account.as_deref() != account {
            return None;
        }
        let wait = m.due?.checked_duration_since(Instant::now())?;
        (wait > Duration::from_millis(500)).then_some(wait)
    }

    fn with_memory<T>(
        &self,
        key: &ObjectRef<DatabaseSecurityPolicy>,
        f: impl FnOnce(&mut Memory) -> T,
    ) -> Option<T> {
        let mut memory = self.memory.lock().ok()?;
        Some(f(memory.entry(key.clone()).or_default()))
    }

    /// Makes the policies of `key` that `concerned` picks due now: an event said some of their
    /// databases may have changed (and the region's sweep has been refreshed where they are).
    /// `event_at` is the earliest event's time. Returns how many policies were woken.
    pub fn wake(
        &self,
        key: &Key,
        event_at: Option<chrono::DateTime<Utc>>,
        concerned: impl Fn(&DatabaseSecurityPolicy) -> bool,
    ) -> usize {
        let woken: Vec<_> = self
            .policies()
            .into_iter()
            .filter(|p| self.policy_keys(p).is_some_and(|keys| keys.contains(key)) && concerned(p))
            .collect();
        for policy in &woken {
            self.with_memory(&ObjectRef::from_obj(&**policy), |m| {
                m.due = None;
                m.event_at = match (m.event_at, event_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            });
        }
        woken.len()
    }

    /// Forgets a deleted policy (memory and metric series); its uid, when it was known.
    pub fn forget(&self, namespace: Option<&str>, name: &str) -> Option<String> {
        let mut uid = None;
        if let Ok(mut memory) = self.memory.lock() {
            memory.retain(|k, m| {
                let this = k.name == name && k.namespace.as_deref() == namespace;
                if this {
                    uid = m.uid.clone();
                }
                !this
            });
        }
        self.metrics
            .forget_policy(&format!("{}/{name}", namespace.unwrap_or_default()));
        uid
    }

    async fn publish(&self, policy: &DatabaseSecurityPolicy, event: &EventSpec) {
        // A recorder per event: its cache would merge events of the same reason and action
        // into one series and keep the first note, and notes name different databases.
        // Repeats are suppressed by the reconcile's own memory instead.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let published = recorder
            .publish(
                &Event {
                    type_: if event.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: event.reason.to_string(),
                    note: Some(event.note.clone()),
                    action: event.action.clone(),
                    secondary: None,
                },
                &policy.object_ref(&()),
            )
            .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, reason = %event.reason, "could not publish an event");
        }
    }
}

/// A random fraction in [0, 1).
pub(crate) fn random_fraction() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The next resync: `resync` after the fleet was read, less up to 10% jitter, so policies that
/// shared a sweep come due together and share the next one too.
fn next_resync(resync: Duration, fleet_age: Duration, jitter: f64) -> Duration {
    let jitter = resync.mul_f64(0.1 * jitter);
    resync
        .saturating_sub(fleet_age)
        .saturating_sub(jitter)
        .max(Duration::from_secs(1))
}

/// How old a shared sweep may be for a policy with this resync interval. Three quarters of the
/// interval: a policy that comes due (at 90-100 % of the interval after its fleet was read)
/// always sweeps, so drift shows within one interval, while every policy reconciled in between
/// joins the latest sweep and from then on comes due with it: one sweep per interval per region.
fn sweep_window(resync: Duration) -> Duration {
    resync.mul_f64(0.75).max(Duration::from_secs(2))
}

/// Exponential backoff with jitter after `failures` consecutive failures.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << failures.saturating_sub(1).min(8));
    exp.min(BACKOFF_MAX).mul_f64(0.8 + 0.4 * random_fraction())
}

fn display_name(policy: &DatabaseSecurityPolicy) -> String {
    format!(
        "{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    )
}

/// `e` as a failure that names the `AwsAccount` it happened in (status and Events say which;
/// empty: the operator's own identity).
fn failure_in(account: &str, mut e: Failure) -> Failure {
    if !account.is_empty() {
        e.message = format!("{} (AwsAccount {account})", e.message);
    }
    e
}

/// May a run of this policy (as reconciled: this uid and generation) still change AWS? Asked by
/// the executor before every mutating call: no once the policy is deleted, recreated or its spec
/// changed (the next reconcile plans from the new spec), or once this replica's leader term is
/// over. Reads only memory: the controllers' caches, which the watch keeps current, and the
/// term on the local monotonic clock.
struct StillWanted<'a> {
    ctx: &'a Context,
    key: &'a ObjectRef<DatabaseSecurityPolicy>,
    uid: Option<&'a str>,
    generation: Option<i64>,
}

impl MayAct for StillWanted<'_> {
    fn may_act(&self) -> Result<(), String> {
        if let Some(leadership) = &self.ctx.leadership {
            leadership.may_act()?;
        }
        let Some(current) = self.ctx.cached(self.key)? else {
            return Err("the policy was deleted".into());
        };
        let meta = current.meta();
        if meta.uid.as_deref() != self.uid {
            return Err("the policy was deleted (and created again)".into());
        }
        if meta.deletion_timestamp.is_some() {
            return Err("the policy is being deleted".into());
        }
        if meta.generation != self.generation {
            return Err(format!(
                "the policy's spec changed (generation {} to {}); the next reconcile plans from the new spec",
                self.generation.unwrap_or_default(),
                meta.generation.unwrap_or_default()
            ));
        }
        if let Some(shards) = &self.ctx.shards {
            shards.may_act(&super::scaleout::policy_keys(self.ctx, &current))?;
        }
        Ok(())
    }
}

/// Reconciles one policy.
pub async fn reconcile(
    policy: Arc<DatabaseSecurityPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*policy);
    if let Some(shards) = &ctx.shards
        && !shards.holds(&super::scaleout::policy_keys(&ctx, &policy))
    {
        // Another replica's (or nobody's yet): it is reconciled here once this replica takes
        // its keys (the controller is triggered then), from scratch.
        ctx.with_memory(&key, |m| m.due = None);
        return Ok(Action::await_change());
    }
    let generation = policy.meta().generation;
    let account = ctx.account_version(&policy);
    if let Some(wait) = ctx.not_due(
        &key,
        policy.meta().uid.as_deref(),
        generation,
        account.as_deref(),
    ) {
        return Ok(Action::requeue(wait));
    }
    let name = display_name(&policy);
    let span = info_span!("reconcile", policy = %name, generation);
    let started = Instant::now();
    let result = reconcile_stages(&policy, &ctx, &key).instrument(span).await;
    let seconds = started.elapsed().as_secs_f64();
    match &result {
        Ok((_, reason)) => ctx.metrics.reconciled(*reason, seconds),
        Err(e) => ctx.metrics.reconciled(e.reason(), seconds),
    }
    tracing::debug!(policy = %name, seconds, "reconciled");
    result.map(|(action, _)| action)
}

async fn reconcile_stages(
    policy: &DatabaseSecurityPolicy,
    ctx: &Context,
    key: &ObjectRef<DatabaseSecurityPolicy>,
) -> Result<(Action, Reason), Error> {
    let observed = observe(policy, ctx).await?;
    let acted = match act(policy, ctx, key, observed).await? {
        Acted::Stopped { run, reason } => return Ok(stopped(ctx, policy, key, &run, &reason).await),
        Acted::Done(acted) => acted,
    };
    let current = policy.status.as_ref();
    let decision = decide(Decide {
        current,
        generation: policy.meta().generation,
        reboot: policy.spec.remediation.reboot,
        now: now(),
        previous_ready: ctx
            .with_memory(key, |m| m.ready_reason)
            .flatten()
            .or_else(|| current.and_then(status::ready_reason)),
        published: &ctx
            .with_memory(key, |m| m.warnings.clone())
            .unwrap_or_default(),
        resync: resync_of(&policy.spec),
        jitter: random_fraction(),
        acted: &acted,
    });
    report(policy, ctx, key, &acted, decision).await
}

fn resync_of(spec: &crate::api::DatabaseSecurityPolicySpec) -> Duration {
    Duration::from_secs(u64::from(spec.resync_seconds.max(10)))
}

fn now() -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_second(Utc::now().timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// What the observe stage found.
enum Observed {
    /// The account guard refused the policy: nothing was read in the account.
    Refused(Refusal),
    /// The account's session or a region's fleet could not be read.
    Unreadable(Failure),
    /// Each region's fleet, in the order the policy names them.
    Swept(Vec<Swept>),
}

/// One region's fleet, as swept now or by a sweep in the window. `turn` holds the region's act
/// lock for a policy that may act, from before the read to the end of its execution, so two
/// Enforce policies never plan from the same fleet.
struct Swept {
    region: Arc<Region>,
    view: FleetView,
    turn: Option<OwnedMutexGuard<()>>,
}

/// Stage 1, observe (reads only): the account guard (Kubernetes reads; a refused policy calls
/// no AWS), then the shared sweep of each (account, region) the policy names.
async fn observe(policy: &DatabaseSecurityPolicy, ctx: &Context) -> Result<Observed, Error> {
    let spec = &policy.spec;
    let targets = match accounts::resolve(ctx, policy).await? {
        Err(refusal) => {
            tracing::warn!(policy = %display_name(policy), reason = %refusal.reason, message = %refusal.message, "account refused");
            return Ok(Observed::Refused(refusal));
        }
        Ok(targets) => targets,
    };
    let mut regions = Vec::with_capacity(targets.len());
    for target in targets {
        let region = match target {
            Target::Own(region) => ctx
                .regions
                .get(region.as_deref())
                .await
                .map_err(|e| failure_in("", e)),
            Target::Account(target) => ctx
                .regions
                .account(&target, &ctx.metrics)
                .await
                .map_err(|e| failure_in(&target.name, e)),
        };
        match region {
            Ok(region) => regions.push(region),
            Err(failure) => return Ok(Observed::Unreadable(failure)),
        }
    }
    // The regions' turns are taken in one order (by key), so two policies over the same
    // regions never hold one each while waiting for the other.
    let mut turns: Vec<Option<OwnedMutexGuard<()>>> = regions.iter().map(|_| None).collect();
    if spec.enforces_anything() {
        let mut order: Vec<usize> = (0..regions.len()).collect();
        order.sort_by_key(|&i| regions[i].key());
        for i in order {
            turns[i] = Some(regions[i].act_lock().await);
        }
    }
    let mut swept = Vec::with_capacity(regions.len());
    for (region, turn) in regions.into_iter().zip(turns) {
        let fleet = region
            .fleet(
                Needs::for_policies([spec]),
                ctx.region_needs(&region.key()),
                sweep_window(resync_of(spec)),
                &ctx.metrics,
            )
            .await;
        match fleet {
            Ok(view) => swept.push(Swept { region, view, turn }),
            Err(e) => {
                tracing::warn!(policy = %display_name(policy), account = %region.account, error = %e, "inventory failed");
                if e.class.needs_human() && !region.account.is_empty() {
                    // Revoked or expired credentials: assume the role afresh next time.
                    ctx.metrics.account_failure(&region.account, &e.code);
                    ctx.regions.refused(&region.key(), &e).await;
                }
                return Ok(Observed::Unreadable(failure_in(&region.account, e)));
            }
        }
    }
    Ok(Observed::Swept(swept))
}

/// What the act stage did, as the decide stage needs it.
#[derive(Debug)]
struct Done {
    observation: Observation,
    /// Events of the executed actions.
    action_events: Vec<EventSpec>,
    /// Whether AWS may have changed (verify soon).
    changed_aws: bool,
    /// How old the fleet was when the run ended (the next resync counts from the sweep).
    fleet_age: Duration,
}

enum Acted {
    Done(Done),
    /// The run stopped between two calls (policy deleted or changed, lead lost).
    Stopped {
        run: Box<engine::PolicyRun>,
        reason: String,
    },
}

/// Stage 2, act: in each region, select → evaluate → plan (pure, `posture::plan`) → execute
/// (Enforce only) on the observed fleet, for as long as the policy is still wanted as it is and
/// this replica may act; then the region's unused managed parameter groups. The regions'
/// results are merged into one.
async fn act(
    policy: &DatabaseSecurityPolicy,
    ctx: &Context,
    key: &ObjectRef<DatabaseSecurityPolicy>,
    observed: Observed,
) -> Result<Acted, Error> {
    let spec = &policy.spec;
    let swept = match observed {
        Observed::Refused(refusal) => {
            return Ok(Acted::Done(Done::nothing(Observation::Refused(refusal))));
        }
        Observed::Unreadable(failure) => {
            return Ok(Acted::Done(Done::nothing(Observation::InventoryFailed(
                failure,
            ))));
        }
        Observed::Swept(swept) => swept,
    };
    let still_wanted = StillWanted {
        ctx,
        key,
        uid: policy.meta().uid.as_deref(),
        generation: policy.meta().generation,
    };
    let login = match &ctx.db {
        Some(layer) if crate::posture::indb::needed(spec) => {
            let namespace = policy.namespace().unwrap_or_default();
            layer.login_for(&namespace, login_of(&ctx.client, &namespace, spec).await)
        }
        _ => crate::postgres::Login::Unavailable {
            reason: crate::posture::indb::Reason::CredentialsUnavailable,
            message: "not needed".into(),
        },
    };
    let db = ctx.db.as_ref().map(|layer| engine::DbAccess {
        layer,
        login: &login,
    });
    let mut parts = Vec::new();
    let (mut succeeded, mut failures) = (0, Vec::new());
    let (mut action_events, mut any_changed, mut fleet_age) = (Vec::new(), false, Duration::ZERO);
    for Swept { region, view, turn } in swept {
        let aws = region
            .acting(spec.enforces_anything())
            .await
            .map_err(Error::Aws)?;
        let run =
            engine::run_policy_while(spec, &view.fleet, &aws, db, Utc::now(), &still_wanted).await;
        let changed_aws = run.outcomes.iter().any(Outcome::may_have_changed_aws);
        if changed_aws || run.stopped.is_some() {
            // AWS changed (or part of an action may have been done): nobody plans from this
            // fleet.
            region.invalidate().await;
        }
        if run.stopped.is_none() && turn.is_some() {
            let deleted = region
                .collect_garbage(&view, ctx.managed_group_grace, &still_wanted)
                .await;
            ctx.metrics
                .managed_groups_deleted(&region.account, &region.aws.region, deleted.len());
        }
        drop(turn);
        ctx.metrics
            .sync_aws_calls(&region.account, &region.aws.region, &region.aws.stats);
        if let Some(reason) = run.stopped.clone() {
            return Ok(Acted::Stopped {
                run: Box::new(run),
                reason,
            });
        }
        tracing::debug!(
            policy = %display_name(policy),
            region = %region.aws.region,
            swept = view.swept,
            selected = run.summary.selected,
            actions = run.plan.actions.len(),
            "evaluated"
        );
        let (s, f) = count_remediations(ctx, &run);
        succeeded += s;
        failures.extend(f);
        action_events.extend(events::for_actions(&run.plan, &run.outcomes));
        any_changed |= changed_aws;
        // The oldest fleet decides when the policy is due again.
        fleet_age = fleet_age.max(view.at.elapsed());
        parts.push((run.results, run.summary));
    }
    let (results, summary) = crate::posture::report::merge(parts);
    ctx.metrics.set_findings(&display_name(policy), &results);
    Ok(Acted::Done(Done {
        observation: Observation::Evaluated {
            results,
            summary,
            actions_succeeded: succeeded,
            failures,
        },
        action_events,
        changed_aws: any_changed,
        fleet_age,
    }))
}

impl Done {
    fn nothing(observation: Observation) -> Done {
        Done {
            observation,
            action_events: Vec::new(),
            changed_aws: false,
            fleet_age: Duration::ZERO,
        }
    }
}

/// Everything the decide stage reads: the act stage's result, what the policy's status says and
/// what this replica remembers. No IO, no clock, no randomness (`now` and `jitter` are inputs).
struct Decide<'a> {
    current: Option<&'a DatabaseSecurityPolicyStatus>,
    generation: Option<i64>,
    reboot: RebootPolicy,
    now: Time,
    /// The Ready reason last published (memory, else the status).
    previous_ready: Option<Reason>,
    /// The warnings published last time: a persisting one is not published again.
    published: &'a BTreeSet<EventSpec>,
    resync: Duration,
    /// A fraction in [0, 1) that spreads the next resync.
    jitter: f64,
    acted: &'a Done,
}

/// What the report stage writes, and when to come back.
#[derive(Debug, PartialEq)]
struct Decision {
    status: DatabaseSecurityPolicyStatus,
    /// Whether `status` differs from the stored one in more than timestamps.
    write_status: bool,
    ready_reason: Reason,
    /// Events to publish now.
    publish: Vec<EventSpec>,
    /// The warnings in force (remembered so they are published once).
    warnings: BTreeSet<EventSpec>,
    next: Next,
}

#[derive(Debug, PartialEq)]
enum Next {
    /// Reconcile again after this long.
    Requeue(Duration),
    /// A failure, reported in status and Events; the error policy backs off.
    Backoff(Failure),
}

/// Stage 3, decide (pure): the next status, the Events to publish, and when to come back.
fn decide(input: Decide<'_>) -> Decision {
    let Done {
        observation,
        action_events,
        changed_aws,
        fleet_age,
    } = input.acted;
    let status = status::next_status(
        input.current,
        input.generation,
        observation,
        input.reboot,
        input.now,
    );
    // next_status always writes a Ready condition from a Reason.
    let ready_reason = status::ready_reason(&status).unwrap_or(Reason::RemediationFailed);
    let ready_message = status
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let mut events = action_events.clone();
    let failure = match observation {
        Observation::InventoryFailed(failure) => {
            events.push(events::for_failure(failure));
            Some(failure.clone())
        }
        Observation::Refused(refusal) => {
            events.push(events::for_refusal(refusal));
            None
        }
        Observation::Evaluated { failures, .. } => failures.first().cloned(),
    };
    events.extend(events::for_ready_change(
        input.previous_ready,
        ready_reason,
        &ready_message,
    ));
    let (publish, warnings) = events::dedupe(events, input.published);
    let next = match failure {
        Some(failure) => Next::Backoff(failure),
        None => {
            let resync = next_resync(input.resync, *fleet_age, input.jitter);
            Next::Requeue(if *changed_aws {
                resync.min(VERIFY_AFTER)
            } else {
                resync
            })
        }
    };
    Decision {
        write_status: status::differs(input.current, &status),
        status,
        ready_reason,
        publish,
        warnings,
        next,
    }
}

/// Stage 4, report: Events, the status (server-side apply, only when something but timestamps
/// changed), the policy reports, and what this replica remembers.
async fn report(
    policy: &DatabaseSecurityPolicy,
    ctx: &Context,
    key: &ObjectRef<DatabaseSecurityPolicy>,
    acted: &Done,
    decision: Decision,
) -> Result<(Action, Reason), Error> {
    let name = display_name(policy);
    for event in &decision.publish {
        ctx.publish(policy, event).await;
    }
    if decision.write_status {
        let api: Api<DatabaseSecurityPolicy> =
            Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": "pgbaseline.io/v1alpha1",
            "kind": "DatabaseSecurityPolicy",
            "status": decision.status,
        });
        api.patch_status(
            &policy.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.metrics.status_writes.inc();
        tracing::info!(policy = %name, ready = %decision.ready_reason, "status updated");
    }
    // Policy reports, one per selected database, written only when they change. A failure is
    // logged and retried next time; it does not fail the reconcile.
    if let Observation::Evaluated { results, .. } = &acted.observation {
        match ctx
            .reports
            .sync(&ctx.client, &ctx.metrics, policy, results)
            .await
        {
            Ok(w) => {
                tracing::debug!(policy = %name, applied = w.applied, deleted = w.deleted, unchanged = w.unchanged, "policy reports")
            }
            Err(e) => tracing::warn!(policy = %name, error = %e, "could not write policy reports"),
        }
    }
    if let Some(at) = ctx.with_memory(key, |m| m.event_at.take()).flatten() {
        let seconds = (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0;
        ctx.metrics.event_to_status.observe(seconds);
        tracing::info!(policy = %name, seconds, "reconciled after a drift event");
    }
    let account = ctx.account_version(policy);
    let Decision {
        ready_reason,
        warnings,
        next,
        ..
    } = decision;
    ctx.with_memory(key, |m| {
        m.uid = policy.meta().uid.clone();
        m.generation = policy.meta().generation;
        m.account = account;
        m.warnings = warnings;
        m.ready_reason = Some(ready_reason);
    });
    match next {
        Next::Backoff(failure) => Err(Error::Aws(failure)),
        Next::Requeue(delay) => {
            ctx.with_memory(key, |m| {
                m.failures = 0;
                m.due = Some(Instant::now() + delay);
            });
            Ok((Action::requeue(delay), ready_reason))
        }
    }
}

/// The end of a run stopped between two calls: the changes made are counted and published (they
/// happened), but no status is written from a spec that no longer holds (or by a replica that no
/// longer leads). A changed policy is reconciled again at once, from its new spec.
async fn stopped(
    ctx: &Context,
    policy: &DatabaseSecurityPolicy,
    key: &ObjectRef<DatabaseSecurityPolicy>,
    run: &engine::PolicyRun,
    reason: &str,
) -> (Action, Reason) {
    let (done, _) = count_remediations(ctx, run);
    tracing::warn!(
        policy = %display_name(policy),
        %reason,
        done,
        planned = run.plan.actions.len(),
        "remediation stopped"
    );
    if ctx.leadership.as_ref().is_none_or(|l| l.is_leading()) {
        for event in events::for_actions(&run.plan, &run.outcomes) {
            ctx.publish(policy, &event).await;
        }
    }
    ctx.with_memory(key, |m| m.due = None);
    (
        Action::requeue(Duration::from_secs(1)),
        Reason::RemediationStopped,
    )
}

/// Counts each executed action in the metrics, by control and result. Returns how many
/// succeeded and what failed.
fn count_remediations(ctx: &Context, run: &engine::PolicyRun) -> (usize, Vec<Failure>) {
    let mut failures = Vec::new();
    let mut succeeded = 0;
    for (action, outcome) in run.plan.actions.iter().zip(&run.outcomes) {
        let result = match outcome {
            Outcome::Succeeded => {
                succeeded += 1;
                Reason::Remediated
            }
            Outcome::Failed(f) => {
                failures.push(Failure {
                    call: action.kind.aws_call(),
                    ..f.clone()
                });
                Reason::RemediationFailed
            }
            Outcome::Deferred { .. } => Reason::QuotaExceeded,
            Outcome::Skipped { .. } => continue,
        };
        let controls: BTreeSet<_> = action.causes.iter().map(|c| c.control).collect();
        for control in controls {
            ctx.metrics.remediation(control.as_str(), result);
        }
    }
    (succeeded, failures)
}

/// Per-object exponential backoff.
pub fn error_policy(
    policy: Arc<DatabaseSecurityPolicy>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = ObjectRef::from_obj(&*policy);
    let failures = ctx
        .with_memory(&key, |m| {
            m.failures = m.failures.saturating_add(1);
            m.failures
        })
        .unwrap_or(1);
    let delay = backoff(failures);
    ctx.with_memory(&key, |m| m.due = Some(Instant::now() + delay));
    tracing::warn!(
        policy = %display_name(&policy),
        error = %error,
        failures,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// How a policy logs in to its databases: an IAM user as is, or the user name and password of a
/// Secret in the policy's own namespace, read on demand (no watch, no cache, nothing logged).
async fn login_of(
    client: &Client,
    namespace: &str,
    spec: &crate::api::DatabaseSecurityPolicySpec,
) -> crate::postgres::Login {
    use crate::postgres::Login;
    let unavailable = Login::unavailable;
    let secret_ref = match Login::of_spec(spec) {
        Ok(login) => return login,
        Err(secret) => secret,
    };
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), namespace);
    let secret = match tokio::time::timeout(Duration::from_secs(10), secrets.get(&secret_ref.name))
        .await
    {
        Err(_) => return unavailable(format!("secret {}: no answer within 10s", secret_ref.name)),
        Ok(Err(kube::Error::Api(e))) => {
            return unavailable(format!(
                "secret {}: {} ({})",
                secret_ref.name, e.reason, e.code
            ));
        }
        Ok(Err(_)) => return unavailable(format!("secret {}: could not be read", secret_ref.name)),
        Ok(Ok(secret)) => secret,
    };
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| format!("secret {} has no key {key}", secret_ref.name))
    };
    Login::from_secret(
        value(&secret_ref.username_key),
        value(&secret_ref.password_key),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resync_is_jittered_down_and_counts_from_the_sweep() {
        for _ in 0..100 {
            let d = next_resync(
                Duration::from_secs(60),
                Duration::from_secs(5),
                random_fraction(),
            );
            assert!(
                d <= Duration::from_secs(55) && d >= Duration::from_secs(49),
                "{d:?}"
            );
        }
        assert_eq!(
            next_resync(Duration::from_secs(10), Duration::from_secs(30), 0.5),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b1 = backoff(1);
        assert!(b1 >= Duration::from_secs(4) && b1 <= Duration::from_secs(6));
        let b3 = backoff(3);
        assert!(b3 >= Duration::from_secs(16) && b3 <= Duration::from_secs(24));
        assert!(backoff(30) <= BACKOFF_MAX.mul_f64(1.2));
    }

    #[test]
    fn sweep_window_is_three_quarters_of_resync_and_shorter_than_the_next_resync() {
        assert_eq!(
            sweep_window(Duration::from_secs(60)),
            Duration::from_secs(45)
        );
        assert_eq!(sweep_window(Duration::from_secs(2)), Duration::from_secs(2));
        for _ in 0..100 {
            let resync = Duration::from_secs(30);
            // A policy coming due always finds its fleet older than the window: it sweeps.
            assert!(
                resync - next_resync(resync, Duration::ZERO, random_fraction())
                    <= resync.mul_f64(0.1)
            );
            assert!(next_resync(resync, Duration::ZERO, random_fraction()) > sweep_window(resync));
        }
    }

    use super::status::fixtures::{db, evaluated, t};
    use crate::api::{ControlId, FindingStatus};

    const RESYNC: Duration = Duration::from_secs(60);

    fn decide_at(
        acted: &Done,
        current: Option<&DatabaseSecurityPolicyStatus>,
        previous_ready: Option<Reason>,
        published: &BTreeSet<EventSpec>,
        now: i64,
    ) -> Decision {
        decide(Decide {
            current,
            generation: Some(1),
            reboot: RebootPolicy::Never,
            now: t(now),
            previous_ready,
            published,
            resync: RESYNC,
            jitter: 0.5,
            acted,
        })
    }

    /// Decides twice on the same result, the second time from what the first wrote and
    /// remembered.
    fn twice(acted: &Done) -> (Decision, Decision) {
        let first = decide_at(acted, None, None, &BTreeSet::new(), 1000);
        let second = decide_at(
            acted,
            Some(&first.status),
            Some(first.ready_reason),
            &first.warnings,
            1060,
        );
        (first, second)
    }

    fn non_compliant() -> Observation {
        evaluated(vec![
            db("a", &[(ControlId::ForceSsl, FindingStatus::NonCompliant)]),
            db("b", &[(ControlId::ForceSsl, FindingStatus::Compliant)]),
        ])
    }

    #[test]
    fn the_same_result_again_writes_no_status_and_publishes_nothing() {
        let (first, second) = twice(&Done::nothing(non_compliant()));
        assert!(first.write_status);
        assert_eq!(first.ready_reason, Reason::NonCompliant);
        assert_eq!(first.publish.len(), 1, "{:?}", first.publish);
        assert_eq!(first.publish[0].reason, Reason::NonCompliant);
        assert!(!second.write_status, "{:?}", second.status);
        assert!(second.publish.is_empty(), "{:?}", second.publish);
        assert_eq!(second.next, first.next);
    }

    #[test]
    fn a_changed_result_writes_the_status_and_publishes_the_ready_change() {
        let before = decide_at(
            &Done::nothing(non_compliant()),
            None,
            None,
            &BTreeSet::new(),
            1000,
        );
        let compliant = Done::nothing(evaluated(vec![db(
            "a",
            &[(ControlId::ForceSsl, FindingStatus::Compliant)],
        )]));
        let after = decide_at(
            &compliant,
            Some(&before.status),
            Some(before.ready_reason),
            &before.warnings,
            1060,
        );
        assert!(after.write_status);
        assert_eq!(after.ready_reason, Reason::Compliant);
        assert_eq!(
            after
                .publish
                .iter()
                .map(|e| (e.warning, e.reason))
                .collect::<Vec<_>>(),
            vec![(false, Reason::Compliant)]
        );
    }

    #[test]
    fn a_failed_read_backs_off_with_its_failure_and_warns_once() {
        let failure = Failure::new("DescribeDBInstances", "Throttling", "Rate exceeded");
        let acted = Done::nothing(Observation::InventoryFailed(failure.clone()));
        let (first, second) = twice(&acted);
        assert_eq!(first.next, Next::Backoff(failure.clone()));
        assert!(
            first
                .publish
                .iter()
                .any(|e| e.warning && e.action == "DescribeDBInstances"),
            "{:?}",
            first.publish
        );
        assert_eq!(second.next, Next::Backoff(failure));
        assert!(second.publish.is_empty(), "{:?}", second.publish);
        assert!(!second.write_status);
    }

    #[test]
    fn a_refused_policy_is_stalled_and_waits_for_its_resync_not_a_backoff() {
        let acted = Done::nothing(Observation::Refused(Refusal {
            reason: Reason::NamespaceNotPermitted,
            message: "namespace team-b may not use AwsAccount prod".into(),
        }));
        let decision = decide_at(&acted, None, None, &BTreeSet::new(), 1000);
        assert_eq!(decision.ready_reason, Reason::NamespaceNotPermitted);
        let Next::Requeue(delay) = decision.next else {
            panic!("a refusal needs a person, not a retry: {:?}", decision.next);
        };
        assert!(delay > RESYNC.mul_f64(0.9) && delay <= RESYNC, "{delay:?}");
        assert!(
            decision
                .publish
                .iter()
                .any(|e| e.warning && e.action == "UseAccount")
        );
    }

    #[test]
    fn after_changing_aws_it_comes_back_within_the_verify_delay() {
        let mut acted = Done::nothing(non_compliant());
        acted.fleet_age = Duration::from_secs(2);
        let Next::Requeue(calm) = decide_at(&acted, None, None, &BTreeSet::new(), 1000).next else {
            panic!("no failure, no backoff");
        };
        assert_eq!(calm, next_resync(RESYNC, Duration::from_secs(2), 0.5));
        acted.changed_aws = true;
        let Next::Requeue(verify) = decide_at(&acted, None, None, &BTreeSet::new(), 1000).next
        else {
            panic!("no failure, no backoff");
        };
        assert_eq!(verify, VERIFY_AFTER);
    }

    #[test]
    fn a_failed_remediation_publishes_its_actions_and_backs_off() {
        let failure = Failure::new("ModifyDBInstance", "InvalidDBInstanceState", "busy");
        let Observation::Evaluated {
            results, summary, ..
        } = non_compliant()
        else {
            unreachable!("non_compliant() is an evaluation");
        };
        let action = EventSpec {
            warning: true,
            reason: Reason::RemediationFailed,
            action: "ModifyDBInstance".into(),
            note: "a: busy".into(),
        };
        let acted = Done {
            observation: Observation::Evaluated {
                results,
                summary,
                actions_succeeded: 0,
                failures: vec![failure.clone()],
            },
            action_events: vec![action.clone()],
            changed_aws: true,
            fleet_age: Duration::ZERO,
        };
        let (first, second) = twice(&acted);
        assert_eq!(first.next, Next::Backoff(failure));
        assert!(first.publish.contains(&action));
        assert!(
            !second.publish.contains(&action),
            "a persisting failure is published once"
        );
    }
}
