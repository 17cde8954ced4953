//! One inventory per region, one sweep shared by every policy that reconciles within the sweep
//! window: a hundred policies over the same fleet cost one sweep of AWS reads. A sweep whose
//! fleet an Enforce plan acted on is stale: the next policy re-reads before it evaluates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};

use crate::aws::inventory::{Inventory, Needs};
use crate::aws::{AwsError, AwsRegion};
use crate::posture::Fleet;

use super::metrics::Metrics;

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

/// One (account, region).
pub struct Region {
    pub aws: AwsRegion,
    inventory: Inventory,
    sweep: Mutex<Option<Sweep>>,
    /// Held by a policy that may act from its evaluation to the end of its execution, so two
    /// Enforce policies never plan from the same fleet.
    act: Mutex<()>,
}

/// `a` includes everything `b` reads.
pub fn covers(a: Needs, b: Needs) -> bool {
    (a.kms_aliases || !b.kms_aliases)
        && (a.engine_versions || !b.engine_versions)
        && (a.certificates || !b.certificates)
        && (a.network || !b.network)
}

pub fn union(a: Needs, b: Needs) -> Needs {
    Needs {
        kms_aliases: a.kms_aliases || b.kms_aliases,
        engine_versions: a.engine_versions || b.engine_versions,
        certificates: a.certificates || b.certificates,
        network: a.network || b.network,
    }
}

impl Region {
    pub fn new(aws: AwsRegion) -> Region {
        Region {
            inventory: Inventory::new(aws.clone()),
            aws,
            sweep: Mutex::new(None),
            act: Mutex::new(()),
        }
    }

    pub async fn act_lock(&self) -> MutexGuard<'_, ()> {
        self.act.lock().await
    }

    /// A fleet no older than `max_age` that holds what `needs` asks for; sweeps (reading what
    /// `sweep_needs` asks for, every policy of the region) when the cached one won't do.
    /// Concurrent callers wait for one sweep and share it.
    pub async fn fleet(
        &self,
        needs: Needs,
        sweep_needs: Needs,
        max_age: Duration,
        metrics: &Metrics,
    ) -> Result<FleetView, AwsError> {
        let mut cached = self.sweep.lock().await;
        if let Some(sweep) = cached.as_ref()
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
        let needs = union(needs, sweep_needs);
        let started = Instant::now();
        let result = self.inventory.sweep(needs).await;
        let seconds = started.elapsed().as_secs_f64();
        metrics.sweep(&self.aws.region, seconds, result.is_ok());
        metrics.sync_aws_calls(&self.aws.region, &self.aws.stats);
        let fleet = Arc::new(result?);
        tracing::info!(
            region = %self.aws.region,
            databases = fleet.databases.len(),
            seconds,
            "swept the fleet"
        );
        *cached = Some(Sweep {
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

    /// Marks the cached sweep stale (a plan changed AWS).
    pub async fn invalidate(&self) {
        if let Some(sweep) = self.sweep.lock().await.as_mut() {
            sweep.stale = true;
        }
    }
}

/// Regions by the policy's `selector.region` (None: the environment's region).
pub struct Regions {
    requests_per_second: u32,
    regions: Mutex<HashMap<Option<String>, Arc<Region>>>,
}

impl Regions {
    pub fn new(requests_per_second: u32) -> Regions {
        Regions {
            requests_per_second,
            regions: Mutex::new(HashMap::new()),
        }
    }

    /// The region's clients, created on first use.
    pub async fn get(&self, region: Option<&str>) -> Result<Arc<Region>, AwsError> {
        let key = region.map(str::to_string);
        let mut regions = self.regions.lock().await;
        if let Some(r) = regions.get(&key) {
            return Ok(r.clone());
        }
        let aws = AwsRegion::from_env(region, self.requests_per_second).await?;
        let r = Arc::new(Region::new(aws));
        regions.insert(key, r.clone());
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
