//! One inventory per region, one sweep shared by every policy that reconciles within the sweep
//! window: a hundred policies over the same fleet cost one sweep of AWS reads. A sweep whose
//! fleet an Enforce plan acted on is stale: the next policy re-reads before it evaluates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

use chrono::{DateTime, Utc};

use crate::aws::executor::{MayAct, collect_garbage};
use crate::aws::inventory::{Inventory, Needs};
use crate::aws::sts::Assume;
use crate::aws::{AwsRegion, ErrorClass, Failure};
use crate::posture::Fleet;
use crate::posture::drift::Target;
use crate::posture::managed::garbage;

use super::metrics::Metrics;

/// Longest a sweep may take: each AWS call has its own limit (`--aws-timeout`); this bounds a
/// sweep of many slow calls, so a region's policies are never held longer.
pub const SWEEP_DEADLINE: Duration = Duration::from_secs(300);

/// One sweep's result.
struct Sweep {
    fleet: Arc<Fleet>,
    needs: Needs,
    at: Instant,
    stale: bool,
}

/// A fleet handed to a reconcile, with when it was read.
#[derive(Clone)]
pub struct FleetView {
    pub fleet: Arc<Fleet>,
    pub at: Instant,
    /// Whether this call swept (false: reused a sweep within the window).
    pub swept: bool,
}

/// A sweep refreshed after an event.
pub struct Refreshed {
    pub before: Arc<Fleet>,
    pub after: Arc<Fleet>,
    /// The databases read again.
    pub read: BTreeSet<(crate::api::DatabaseKind, String)>,
}

/// The cache of one region: the last good sweep and the last failure.
#[derive(Default)]
struct Cache {
    sweep: Option<Sweep>,
    /// A failed sweep is not retried by every policy in the window: they share the error.
    failed: Option<(Instant, Failure)>,
}

/// One (account, region).
pub struct Region {
    /// The `AwsAccount` this region is reached through; empty for the operator's own identity.
    pub account: String,
    /// The clients that read (for an account: its Audit role, in a read-only session).
    pub aws: AwsRegion,
    /// The role that remediates, when not the reading clients' (an account that allows
    /// Enforce), and its clients once first needed.
    enforce: Option<(Assume, Duration)>,
    enforce_aws: tokio::sync::OnceCell<AwsRegion>,
    inventory: Inventory,
    cache: Mutex<Cache>,
    /// Held by a policy that may act from its evaluation to the end of its execution, so two
    /// Enforce policies never plan from the same fleet.
    act: Arc<Mutex<()>>,
    /// Garbage collection of managed parameter groups: since when each has been seen unused,
    /// and the sweep last collected from (once per sweep however many policies enforce).
    garbage: Mutex<Garbage>,
    /// The last sweep's failure, and when, when AWS could not be reached (what `/readyz`
    /// reports).
    unreachable: std::sync::Mutex<Option<(Instant, Failure)>>,
}

/// Since when each managed group has been seen unused, and the sweep last collected from.
type Garbage = (BTreeMap<(bool, String), DateTime<Utc>>, Option<Instant>);

/// `a` includes everything `b` reads.
pub fn covers(a: Needs, b: Needs) -> bool {
    (a.kms_aliases || !b.kms_aliases)
        && (a.engine_versions || !b.engine_versions)
        && (a.certificates || !b.certificates)
        && (a.network || !b.network)
        && (a.group_listing || !b.group_listing)
}

pub fn union(a: Needs, b: Needs) -> Needs {
    Needs {
        kms_aliases: a.kms_aliases || b.kms_aliases,
        engine_versions: a.engine_versions || b.engine_versions,
        certificates: a.certificates || b.certificates,
        network: a.network || b.network,
        group_listing: a.group_listing || b.group_listing,
    }
}

impl Region {
    pub fn new(aws: AwsRegion) -> Region {
        Region::of_account(String::new(), aws, None)
    }

    /// The region of an account: `aws` reads, `enforce` (the role and the call time limit)
    /// remediates.
    pub fn of_account(
        account: String,
        aws: AwsRegion,
        enforce: Option<(Assume, Duration)>,
    ) -> Region {
        Region {
            account,
            enforce,
            enforce_aws: tokio::sync::OnceCell::new(),
            inventory: Inventory::new(aws.clone()),
            aws,
            cache: Mutex::new(Cache::default()),
            act: Arc::new(Mutex::new(())),
            garbage: Mutex::new((BTreeMap::new(), None)),
            unreachable: std::sync::Mutex::new(None),
        }
    }

    /// The clients a policy of this region executes its plan with: the Enforce role's when the
    /// policy may act in an account with one, else the reading clients (for an account: a
    /// read-only session, so nothing it could do would write).
    pub async fn acting(&self, may_act: bool) -> Result<AwsRegion, Failure> {
        match &self.enforce {
            Some((assume, timeout)) if may_act => self
                .enforce_aws
                .get_or_try_init(|| self.aws.assumed_alongside(assume, *timeout))
                .await
                .cloned(),
            _ => Ok(self.aws.clone()),
        }
    }

    /// The key of this region.
    pub fn key(&self) -> Key {
        Key {
            account: self.account.clone(),
            region: self.aws.region.clone(),
        }
    }

    /// The region's turn to act, held by a policy that may act from before it reads the fleet
    /// to the end of its execution (owned: the reconcile's stages hand it on).
    pub async fn act_lock(&self) -> OwnedMutexGuard<()> {
        Arc::clone(&self.act).lock_owned().await
    }

    /// A fleet no older than `max_age` that holds what `needs` asks for; sweeps (reading what
    /// `sweep_needs` asks for, every policy of the region) when the cached one won't do.
    /// Concurrent callers wait for one sweep and share it; a failure is shared the same way.
    pub async fn fleet(
        &self,
        needs: Needs,
        sweep_needs: Needs,
        max_age: Duration,
        metrics: &Metrics,
    ) -> Result<FleetView, Failure> {
        let mut cache = self.cache.lock().await;
        if let Some(sweep) = cache.sweep.as_ref()
            && !sweep.stale
            && covers(sweep.needs, needs)
            && sweep.at.elapsed() < max_age
        {
            return Ok(FleetView {
                fleet: sweep.fleet.clone(),
                at: sweep.at,
                swept: false,
            });
        }
        if let Some((at, error)) = cache.failed.as_ref()
            && at.elapsed() < max_age
        {
            return Err(error.clone());
        }
        let needs = union(needs, sweep_needs);
        let started = Instant::now();
        let result = match tokio::time::timeout(SWEEP_DEADLINE, self.inventory.sweep(needs)).await {
            Ok(result) => result,
            Err(_) => Err(Failure {
                call: "sweep",
                class: ErrorClass::Unreachable,
                code: crate::aws::code::TIMEOUT.into(),
                message: format!(
                    "the sweep of region {} did not finish within {}s",
                    self.aws.region,
                    SWEEP_DEADLINE.as_secs()
                ),
            }),
        };
        if let Ok(mut unreachable) = self.unreachable.lock() {
            *unreachable = match &result {
                Err(e) if e.class == ErrorClass::Unreachable => Some((Instant::now(), e.clone())),
                _ => None,
            };
        }
        let seconds = started.elapsed().as_secs_f64();
        metrics.sweep(&self.account, &self.aws.region, seconds, result.is_ok());
        metrics.sync_aws_calls(&self.account, &self.aws.region, &self.aws.stats);
        let fleet = match result {
            Ok(fleet) => Arc::new(fleet),
            Err(e) => {
                cache.failed = Some((Instant::now(), e.clone()));
                return Err(e);
            }
        };
        tracing::debug!(
            account = %self.account,
            region = %self.aws.region,
            databases = fleet.databases.len(),
            seconds,
            "swept the fleet"
        );
        if needs.group_listing {
            metrics.managed_groups(
                &self.account,
                &self.aws.region,
                fleet
                    .parameter_groups
                    .iter()
                    .filter(|g| g.looks_managed())
                    .count(),
            );
        }
        cache.failed = None;
        cache.sweep = Some(Sweep {
            fleet: fleet.clone(),
            needs,
            at: started,
            stale: false,
        });
        Ok(FleetView {
            fleet,
            at: started,
            swept: true,
        })
    }

    /// Deletes the managed parameter groups no database has used for `grace` (tag-proved to be
    /// pgbaseline's), at most once per sweep. Call with the act lock held, from a policy that
    /// enforces: Audit never deletes. Stops when `may_act` says no. Returns the groups deleted.
    pub async fn collect_garbage(
        &self,
        view: &FleetView,
        grace: Duration,
        may_act: &dyn MayAct,
    ) -> Vec<String> {
        if view.fleet.parameter_groups.is_empty() {
            return Vec::new();
        }
        let candidates = {
            let mut state = self.garbage.lock().await;
            if state.1.is_some_and(|at| at >= view.at) {
                return Vec::new();
            }
            state.1 = Some(view.at);
            garbage(
                &view.fleet,
                &mut state.0,
                Utc::now(),
                chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX),
            )
        };
        if candidates.is_empty() {
            return Vec::new();
        }
        let aws = match self.acting(true).await {
            Ok(aws) => aws,
            Err(e) => {
                tracing::warn!(account = %self.account, region = %self.aws.region, error = %e, "no Enforce session for garbage collection");
                return Vec::new();
            }
        };
        let deleted = collect_garbage(&aws, &candidates, may_act).await;
        if !deleted.is_empty() {
            self.invalidate().await;
        }
        deleted
    }

    /// Why this region makes the operator not ready: its last sweep could not reach AWS. A
    /// failure older than two sweep deadlines is forgotten (a region whose policies are gone
    /// sweeps no more; one with policies sweeps at least every five minutes).
    pub fn unreachable(&self) -> Option<Failure> {
        let unreachable = self.unreachable.lock().ok()?;
        let (at, e) = unreachable.as_ref()?;
        (at.elapsed() < 2 * SWEEP_DEADLINE).then(|| e.clone())
    }

    /// After an event: re-reads just the databases `targets` concern into the cached sweep,
    /// which keeps its age (the rest of the fleet is as old as it was). Returns the fleet before
    /// and after and what was read, or `None` when there is no usable sweep to refresh (the
    /// policies the event wakes sweep anyway). A failed re-read marks the sweep stale, for the
    /// same reason.
    pub async fn refresh(
        &self,
        targets: &BTreeSet<Target>,
        metrics: &Metrics,
    ) -> Option<Result<Refreshed, Failure>> {
        let mut cache = self.cache.lock().await;
        let sweep = cache.sweep.as_mut().filter(|s| !s.stale)?;
        let reread = tokio::time::timeout(
            SWEEP_DEADLINE,
            self.inventory.reread(sweep.needs, &sweep.fleet, targets),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Failure {
                call: "reread",
                class: ErrorClass::Unreachable,
                code: crate::aws::code::TIMEOUT.into(),
                message: format!(
                    "the re-read in region {} did not finish within {}s",
                    self.aws.region,
                    SWEEP_DEADLINE.as_secs()
                ),
            })
        });
        metrics.event_reread(&self.account, &self.aws.region);
        metrics.sync_aws_calls(&self.account, &self.aws.region, &self.aws.stats);
        Some(match reread {
            Ok(reread) => {
                let after = Arc::new(reread.fleet);
                let before = std::mem::replace(&mut sweep.fleet, after.clone());
                Ok(Refreshed {
                    before,
                    after,
                    read: reread.read,
                })
            }
            Err(e) => {
                sweep.stale = true;
                Err(e)
            }
        })
    }

    /// Marks the cached sweep stale (a plan changed AWS).
    pub async fn invalidate(&self) {
        if let Some(sweep) = self.cache.lock().await.sweep.as_mut() {
            sweep.stale = true;
        }
    }
}

/// An (account, region): the unit of sweeping, throttling, backoff and sharding. `account` is
/// the `AwsAccount`'s name, empty for the operator's own identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub account: String,
    pub region: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.account.is_empty() {
            write!(f, "{}", self.region)
        } else {
            write!(f, "{}/{}", self.account, self.region)
        }
    }
}

/// How to reach an account in one region (from its `AwsAccount` and the external id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountTarget {
    /// The `AwsAccount`'s name.
    pub name: String,
    pub region: String,
    /// The read-only Audit session.
    pub audit: Assume,
    /// The Enforce session, when the account allows Enforce.
    pub enforce: Option<Assume>,
}

/// One account region's clients, or why they are not available and until when.
enum SlotState {
    Empty,
    Ready(Arc<Region>),
    Failed {
        until: Instant,
        error: Failure,
        failures: u32,
    },
}

struct Slot {
    target: AccountTarget,
    state: Mutex<SlotState>,
}

/// Backoff of an account region whose role could not be assumed or verified: 5 s doubling to
/// 5 min. Only that account's policies wait; others never share its lock.
fn account_backoff(failures: u32) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(1 << failures.saturating_sub(1).min(6))
        .min(Duration::from_secs(300))
}

/// Regions by name; a policy without `selector.region` uses the environment's region, and
/// shares its inventory with policies that name that region.
pub struct Regions {
    requests_per_second: u32,
    /// Limit on each AWS call, retries included.
    call_timeout: Duration,
    regions: Mutex<HashMap<String, Arc<Region>>>,
    /// The environment's region, once known.
    default_region: std::sync::RwLock<Option<String>>,
    /// Account regions: each behind its own lock, so one account's slow or failing STS never
    /// holds another's.
    accounts: std::sync::Mutex<HashMap<Key, Arc<Slot>>>,
}

impl Regions {
    pub fn new(requests_per_second: u32) -> Regions {
        Regions {
            requests_per_second,
            call_timeout: crate::aws::DEFAULT_CALL_TIMEOUT,
            regions: Mutex::new(HashMap::new()),
            default_region: std::sync::RwLock::new(None),
            accounts: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The clients of an account region, created on first use: the Audit role is assumed and
    /// `GetCallerIdentity` must name the account. A failure is shared by every policy of the
    /// account region and retried after a backoff; a changed target (the `AwsAccount` or its
    /// external id changed) starts afresh.
    pub async fn account(
        &self,
        target: &AccountTarget,
        metrics: &Metrics,
    ) -> Result<Arc<Region>, Failure> {
        let key = Key {
            account: target.name.clone(),
            region: target.region.clone(),
        };
        let slot = {
            let mut accounts = self.accounts.lock().map_err(|_| poisoned())?;
            let slot = accounts.entry(key).or_insert_with(|| {
                Arc::new(Slot {
                    target: target.clone(),
                    state: Mutex::new(SlotState::Empty),
                })
            });
            if slot.target != *target {
                *slot = Arc::new(Slot {
                    target: target.clone(),
                    state: Mutex::new(SlotState::Empty),
                });
            }
            slot.clone()
        };
        let mut state = slot.state.lock().await;
        let failures = match &*state {
            SlotState::Ready(region) => return Ok(region.clone()),
            SlotState::Failed { until, error, .. } if Instant::now() < *until => {
                return Err(error.clone());
            }
            SlotState::Failed { failures, .. } => *failures,
            SlotState::Empty => 0,
        };
        match self.connect(target).await {
            Ok(region) => {
                *state = SlotState::Ready(region.clone());
                Ok(region)
            }
            Err(error) => {
                let failures = failures.saturating_add(1);
                metrics.account_failure(&target.name, &error.code);
                tracing::warn!(account = %target.name, region = %target.region, %error, failures, "account region unavailable");
                *state = SlotState::Failed {
                    until: Instant::now() + account_backoff(failures),
                    error: error.clone(),
                    failures,
                };
                Err(error)
            }
        }
    }

    async fn connect(&self, target: &AccountTarget) -> Result<Arc<Region>, Failure> {
        let aws = AwsRegion::assumed(
            &target.region,
            &target.audit,
            self.requests_per_second,
            self.call_timeout,
        )
        .await?;
        let arn = aws.verify_account(&target.audit.account_id).await?;
        tracing::info!(account = %target.name, region = %target.region, caller = %arn, "assumed the account's Audit role");
        Ok(Arc::new(Region::of_account(
            target.name.clone(),
            aws,
            target.enforce.clone().map(|a| (a, self.call_timeout)),
        )))
    }

    /// Drops an account region's clients after AWS refused them (revoked or expired
    /// credentials): the role is assumed again after the backoff.
    pub async fn refused(&self, key: &Key, error: &Failure) {
        if key.account.is_empty() {
            return;
        }
        let slot = match self.accounts.lock() {
            Ok(accounts) => accounts.get(key).cloned(),
            Err(_) => None,
        };
        if let Some(slot) = slot {
            let mut state = slot.state.lock().await;
            if matches!(&*state, SlotState::Ready(_)) {
                *state = if crate::aws::sts::is_expiry(&error.code) {
                    // Expired: the next attempt assumes the role afresh, at once.
                    SlotState::Empty
                } else {
                    SlotState::Failed {
                        until: Instant::now() + account_backoff(1),
                        error: error.clone(),
                        failures: 1,
                    }
                };
            }
        }
    }

    /// Forgets account regions no policy uses any more (`keep` says which are used).
    pub fn retain_accounts(&self, keep: impl Fn(&Key) -> bool) {
        if let Ok(mut accounts) = self.accounts.lock() {
            accounts.retain(|k, _| keep(k));
        }
    }

    pub fn requests_per_second(&self) -> u32 {
        self.requests_per_second
    }

    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Limits each AWS call (retries included) of the regions created from now on.
    pub fn set_call_timeout(&mut self, timeout: Duration) {
        self.call_timeout = timeout;
    }

    /// The environment's region, when already resolved.
    pub fn default_region(&self) -> Option<String> {
        self.default_region.read().ok().and_then(|r| r.clone())
    }

    /// The region's clients, created on first use.
    pub async fn get(&self, region: Option<&str>) -> Result<Arc<Region>, Failure> {
        let mut regions = self.regions.lock().await;
        let name = region.map(str::to_string).or_else(|| self.default_region());
        if let Some(r) = name.as_ref().and_then(|n| regions.get(n)) {
            return Ok(r.clone());
        }
        let aws = AwsRegion::from_env(region, self.requests_per_second, self.call_timeout).await?;
        if region.is_none()
            && let Ok(mut default) = self.default_region.write()
        {
            *default = Some(aws.region.clone());
        }
        let r = regions
            .entry(aws.region.clone())
            .or_insert_with(|| Arc::new(Region::new(aws)))
            .clone();
        Ok(r)
    }

    /// Every region created so far (account regions whose clients are ready included).
    pub async fn all(&self) -> Vec<Arc<Region>> {
        let mut all: Vec<Arc<Region>> = self.regions.lock().await.values().cloned().collect();
        let slots: Vec<Arc<Slot>> = match self.accounts.lock() {
            Ok(accounts) => accounts.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        for slot in slots {
            // A slot being connected is skipped rather than waited for.
            if let Ok(state) = slot.state.try_lock()
                && let SlotState::Ready(region) = &*state
            {
                all.push(region.clone());
            }
        }
        all
    }
}

fn poisoned() -> Failure {
    Failure {
        call: "configure",
        class: ErrorClass::Other,
        code: crate::aws::code::SDK_FAILURE.into(),
        message: "the account table is unavailable (a thread panicked)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_cover_and_union() {
        let none = Needs::default();
        let net = Needs {
            network: true,
            ..Needs::default()
        };
        let kms = Needs {
            kms_aliases: true,
            ..Needs::default()
        };
        assert!(covers(net, none));
        assert!(!covers(none, net));
        let both = union(net, kms);
        assert!(covers(both, net) && covers(both, kms));
        assert!(!covers(net, kms));
    }
}
