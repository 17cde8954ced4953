//! The reconcile of one `DatabaseSecurityPolicy`, as named stages:
//! inventory (shared sweep) → run (select → evaluate → plan → execute, `engine::run_policy`) →
//! events → status → metrics.

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

use crate::api::{AwsAccount, DatabaseSecurityPolicy, Mode};
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

    /// The (account, region) a policy's work happens in, as far as the caches tell (the
    /// guard is not applied: this only groups policies for a shared sweep).
    pub fn policy_key(&self, policy: &DatabaseSecurityPolicy) -> Option<Key> {
        match &policy.spec.account_ref {
            None => Some(Key {
                account: String::new(),
                region: policy
                    .spec
                    .region()
                    .map(str::to_string)
                    .or_else(|| self.regions.default_region())?,
            }),
            Some(r) => Some(Key {
                account: r.name.clone(),
                region: match policy.spec.region() {
                    Some(region) => region.to_string(),
                    None => self.account(&r.name)?.spec.regions.first()?.clone(),
                },
            }),
        }
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
                .filter(|p| self.policy_key(p).as_ref() == Some(key))
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
fn next_resync(resync: Duration, fleet_age: Duration) -> Duration {
    let jitter = resync.mul_f64(0.1 * random_fraction());
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
        Ok(())
    }
}

/// Reconciles one policy.
pub async fn reconcile(
    policy: Arc<DatabaseSecurityPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*policy);
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
    let spec = &policy.spec;
    let name = display_name(policy);
    let generation = policy.meta().generation;
    let resync = Duration::from_secs(u64::from(spec.resync_seconds.max(10)));

    // Stage 1: inventory (one sweep per region, shared by every policy in the window).
    let may_act =
        spec.mode == Mode::Enforce || spec.control_modes.values().any(|m| *m == Mode::Enforce);
    let mut fleet_age = Duration::ZERO;
    let observation;
    let mut event_specs = Vec::new();
    let mut acted = false;
    // Stage 0: the account guard (Kubernetes reads only; a refused policy calls no AWS).
    let region: Result<Result<Arc<Region>, (String, Failure)>, Refusal> =
        match accounts::resolve(ctx, policy).await? {
            Err(refusal) => Err(refusal),
            Ok(Target::Own(region)) => Ok(ctx
                .regions
                .get(region.as_deref())
                .await
                .map_err(|e| (String::new(), e))),
            Ok(Target::Account(target)) => Ok(ctx
                .regions
                .account(&target, &ctx.metrics)
                .await
                .map_err(|e| (target.name.clone(), e))),
        };
    match region {
        Err(refusal) => {
            tracing::warn!(policy = %name, reason = %refusal.reason, message = %refusal.message, "account refused");
            observation = Observation::Refused(refusal);
        }
        Ok(Err((account, e))) => {
            observation = Observation::InventoryFailed(failure_in(&account, e));
        }
        Ok(Ok(region)) => {
            let guard = if may_act {
                Some(region.act_lock().await)
            } else {
                None
            };
            let fleet = region
                .fleet(
                    Needs::for_policies([spec]),
                    ctx.region_needs(&region.key()),
                    sweep_window(resync),
                    &ctx.metrics,
                )
                .await;
            match fleet {
                Err(e) => {
                    tracing::warn!(policy = %name, account = %region.account, error = %e, "inventory failed");
                    if e.class.needs_human() && !region.account.is_empty() {
                        // Revoked or expired credentials: assume the role afresh next time.
                        ctx.metrics.account_failure(&region.account, &e.code);
                        ctx.regions.refused(&region.key(), &e).await;
                    }
                    observation = Observation::InventoryFailed(failure_in(&region.account, e));
                }
                Ok(FleetView { fleet, at, swept }) => {
                    fleet_age = at.elapsed();
                    // Stage 2: select → evaluate → plan → execute (Enforce only), for as long
                    // as the policy is still wanted as it is and this replica leads.
                    let still_wanted = StillWanted {
                        ctx,
                        key,
                        uid: policy.meta().uid.as_deref(),
                        generation,
                    };
                    let aws = match region.acting(may_act).await {
                        Ok(aws) => aws,
                        Err(e) => {
                            drop(guard);
                            return Err(Error::Aws(e));
                        }
                    };
                    let namespace = policy.namespace().unwrap_or_default();
                    let login = match &ctx.db {
                        Some(layer) if crate::posture::indb::needed(spec) => layer
                            .login_for(&namespace, login_of(&ctx.client, &namespace, spec).await),
                        _ => crate::postgres::Login::Unavailable {
                            reason: crate::posture::indb::Reason::CredentialsUnavailable,
                            message: "not needed".into(),
                        },
                    };
                    let db = ctx.db.as_ref().map(|layer| engine::DbAccess {
                        layer,
                        login: &login,
                    });
                    let run =
                        engine::run_policy_while(spec, &fleet, &aws, db, Utc::now(), &still_wanted)
                            .await;
                    let attempted = run.outcomes.iter().any(Outcome::may_have_changed_aws);
                    if let Some(reason) = &run.stopped {
                        // Part of an action may have been done: nobody plans from this fleet.
                        region.invalidate().await;
                        drop(guard);
                        ctx.metrics.sync_aws_calls(
                            &region.account,
                            &region.aws.region,
                            &region.aws.stats,
                        );
                        return Ok(stopped(ctx, policy, key, &run, reason).await);
                    }
                    if attempted {
                        // AWS changed: the next policy must not plan from this fleet.
                        region.invalidate().await;
                        acted = true;
                    }
                    if guard.is_some() && spec.enforces_anything() {
                        let view = FleetView {
                            fleet: fleet.clone(),
                            at,
                            swept,
                        };
                        let deleted = region
                            .collect_garbage(&view, ctx.managed_group_grace, &still_wanted)
                            .await;
                        ctx.metrics.managed_groups_deleted(
                            &region.account,
                            &region.aws.region,
                            deleted.len(),
                        );
                    }
                    drop(guard);
                    ctx.metrics.sync_aws_calls(
                        &region.account,
                        &region.aws.region,
                        &region.aws.stats,
                    );
                    tracing::debug!(
                        policy = %name,
                        swept,
                        selected = run.summary.selected,
                        actions = run.plan.actions.len(),
                        "evaluated"
                    );
                    let (succeeded, failures) = count_remediations(ctx, &run);
                    event_specs = events::for_actions(&run.plan, &run.outcomes);
                    ctx.metrics.set_findings(&name, &run.results);
                    observation = Observation::Evaluated {
                        results: run.results,
                        summary: run.summary,
                        actions_succeeded: succeeded,
                        failures,
                    };
                }
            }
        }
    }

    // Stage 3: status (server-side apply, only when something but timestamps changed).
    let now = Time(
        k8s_openapi::jiff::Timestamp::from_second(Utc::now().timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    );
    let current = policy.status.as_ref();
    let next = status::next_status(
        current,
        generation,
        &observation,
        spec.remediation.reboot,
        now,
    );
    // next_status always writes a Ready condition from a Reason.
    let ready_reason = status::ready_reason(&next).unwrap_or(Reason::RemediationFailed);
    let ready_message = next
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();

    // Stage 4: events (actions, failures, Ready changes; persisting warnings once).
    if let Observation::InventoryFailed(failure) = &observation {
        event_specs.push(events::for_failure(failure));
    }
    if let Observation::Refused(refusal) = &observation {
        event_specs.push(events::for_refusal(refusal));
    }
    let previous_ready = ctx
        .with_memory(key, |m| m.ready_reason)
        .flatten()
        .or_else(|| current.and_then(status::ready_reason));
    if let Some(e) = events::for_ready_change(previous_ready, ready_reason, &ready_message) {
        event_specs.push(e);
    }
    let published = ctx
        .with_memory(key, |m| m.warnings.clone())
        .unwrap_or_default();
    let (fresh, warnings) = events::dedupe(event_specs, &published);
    for event in &fresh {
        ctx.publish(policy, event).await;
    }

    let write = status::differs(current, &next);
    if write {
        let api: Api<DatabaseSecurityPolicy> =
            Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": "pgbaseline.io/v1alpha1",
            "kind": "DatabaseSecurityPolicy",
            "status": next,
        });
        api.patch_status(
            &policy.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.metrics.status_writes.inc();
        tracing::info!(policy = %name, ready = %ready_reason, "status updated");
    }

    // Stage 4b: policy reports, one per selected database, written only when they change. A
    // failure is logged and retried next time; it does not fail the reconcile.
    if let Observation::Evaluated { results, .. } = &observation {
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

    // Stage 5: schedule.
    let failure = match &observation {
        Observation::InventoryFailed(f) => Some(f.clone()),
        Observation::Evaluated { failures, .. } => failures.first().cloned(),
        Observation::Refused(_) => None,
    };
    let account = ctx.account_version(policy);
    ctx.with_memory(key, |m| {
        m.uid = policy.meta().uid.clone();
        m.generation = generation;
        m.account = account;
        m.warnings = warnings;
        m.ready_reason = Some(ready_reason);
    });
    if let Some(f) = failure {
        // Reported in status and events; the error policy backs off.
        return Err(Error::Aws(f));
    }
    let delay = if acted {
        next_resync(resync, fleet_age).min(VERIFY_AFTER)
    } else {
        next_resync(resync, fleet_age)
    };
    ctx.with_memory(key, |m| {
        m.failures = 0;
        m.due = Some(Instant::now() + delay);
    });
    Ok((Action::requeue(delay), ready_reason))
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
            let d = next_resync(Duration::from_secs(60), Duration::from_secs(5));
            assert!(
                d <= Duration::from_secs(55) && d >= Duration::from_secs(49),
                "{d:?}"
            );
        }
        assert_eq!(
            next_resync(Duration::from_secs(10), Duration::from_secs(30)),
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
            assert!(resync - next_resync(resync, Duration::ZERO) <= resync.mul_f64(0.1));
            assert!(next_resync(resync, Duration::ZERO) > sweep_window(resync));
        }
    }
}
