//! One inventory per region, one sweep shared by every policy that reconciles within the sweep
//! window: a hundred policies over the same fleet cost one sweep of AWS reads. A sweep whose
//! fleet an Enforce plan acted on is stale: the next policy re-reads before it evaluates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::aws::executor::{MayAct, collect_garbage};
use crate::aws::inventory::{Inventory, Needs};
use crate::aws::{AwsRegion, ErrorClass, Failure};
use crate::posture::Fleet;
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

/// The cache of one region: the last good sweep and the last failure.
#[derive(Default)]
struct Cache {
    sweep: Option<Sweep>,
    /// A failed sweep is not retried by every policy in the window: they share the error.
    failed: Option<(Instant, Failure)>,
}

/// One (account, region).
pub struct Region {
    pub aws: AwsRegion,
    inventory: Inventory,
    cache: Mutex<Cache>,
    /// Held by a policy that may act from its evaluation to the end of its execution, so two
    /// Enforce policies never plan from the same fleet.
    act: Mutex<()>,
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
        Region {
            inventory: Inventory::new(aws.clone()),
            aws,
            cache: Mutex::new(Cache::default()),
            act: Mutex::new(()),
            garbage: Mutex::new((BTreeMap::new(), None)),
            unreachable: std::sync::Mutex::new(None),
        }
    }

    pub async fn act_lock(&self) -> MutexGuard<'_, ()> {
        self.act.lock().await
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
        metrics.sweep(&self.aws.region, seconds, result.is_ok());
        metrics.sync_aws_calls(&self.aws.region, &self.aws.stats);
        let fleet = match result {
            Ok(fleet) => Arc::new(fleet),
            Err(e) => {
                cache.failed = Some((Instant::now(), e.clone()));
                return Err(e);
            }
        };
        tracing::debug!(
            region = %self.aws.region,
            databases = fleet.databases.len(),
            seconds,
            "swept the fleet"
        );
        if needs.group_listing {
            metrics.managed_groups(
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
        let deleted = collect_garbage(&self.aws, &candidates, may_act).await;
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

    /// Marks the cached sweep stale (a plan changed AWS).
    pub async fn invalidate(&self) {
        if let Some(sweep) = self.cache.lock().await.sweep.as_mut() {
            sweep.stale = true;
        }
    }
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
}

impl Regions {
    pub fn new(requests_per_second: u32) -> Regions {
        Regions {
            requests_per_second,
            call_timeout: crate::aws::DEFAULT_CALL_TIMEOUT,
            regions: Mutex::new(HashMap::new()),
            default_region: std::sync::RwLock::new(None),
        }
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

    /// Every region created so far.
    pub async fn all(&self) -> Vec<Arc<Region>> {
        self.regions.lock().await.values().cloned().collect()
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
