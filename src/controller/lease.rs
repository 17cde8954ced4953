//! Leader election on a `coordination.k8s.io` Lease, as client-go does it, plus what the executor
//! needs: a term measured on the local monotonic clock, asked before every mutating AWS call.
//!
//! - The holder identity is unique per process (`--identity` and a random suffix): two replicas
//!   started with the same `--identity` (a copied manifest, two processes on one host) cannot
//!   both find the lease "already theirs".
//! - Acquiring and renewing are `update`s carrying the Lease's `resourceVersion`: of two replicas
//!   racing for it, one wins and the other gets a conflict.
//! - A follower judges expiry by its own clock only: a record that has not changed for its
//!   `leaseDurationSeconds` since this replica first saw it is free. Wall clocks of different
//!   nodes are never compared.
//! - The leader may act until [`RENEW_DEADLINE`] after it *sent* its last successful renewal,
//!   on its monotonic clock ([`Leadership::may_act`]). Followers count [`LEASE_DURATION`] from
//!   when they *saw* that renewal, which is later, so two terms never overlap. A process paused
//!   past its lease (SIGSTOP, a frozen VM, a long stall) finds its term over the moment it
//!   resumes, before it could learn that another replica took over.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// How long a holder's record stays valid for the others after they saw it change.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader acts after sending its last successful renewal (shorter than
/// [`LEASE_DURATION`]: the margin absorbs request latency and clock-rate differences).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often every replica looks at the lease (and the leader renews it).
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// A hung apiserver call cannot hold an attempt longer than this.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A holder identity unique to this process: `identity` and a random suffix (Events keep
/// `identity`, which names the pod).
pub fn holder_identity(identity: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{identity}-{:08x}", h.finish() as u32)
}

/// Whether this process may act as the leader, as far as it knows: shared by the election task
/// (which extends the term on each renewal) and every executor run (which asks before each
/// mutating call).
#[derive(Debug, Default)]
pub struct Leadership {
    /// End of the current term on the local monotonic clock; `None` while not leading.
    term_end: Mutex<Option<Instant>>,
}

impl Leadership {
    /// `Ok(())` while the term runs; checked against the clock at each call, so a process that
    /// was paused past its term learns it before its next call, not from a background task.
    pub fn may_act(&self) -> Result<(), String> {
        self.may_act_at(Instant::now())
    }

    fn may_act_at(&self, now: Instant) -> Result<(), String> {
        match self.term_end() {
            Some(end) if now < end => Ok(()),
            Some(_) => Err(
                "this replica's leader lease ran out without a renewal (by its own clock)".into(),
            ),
            None => Err("this replica is not the leader".into()),
        }
    }

    /// Whether the term runs now.
    pub fn is_leading(&self) -> bool {
        self.may_act().is_ok()
    }

    pub(crate) fn term_end(&self) -> Option<Instant> {
        // A poisoned lock means a panic elsewhere: not leading.
        self.term_end.lock().map(|t| *t).unwrap_or(None)
    }

    pub(crate) fn set_term_end(&self, end: Option<Instant>) {
        if let Ok(mut t) = self.term_end.lock() {
            *t = end;
        }
    }
}

/// What to do with the lease as last read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Ours: renew it.
    Renew,
    /// Free, released or expired: take it.
    Acquire,
    /// Someone else holds it.
    HeldBy(String),
}

/// The decision on a lease `spec` first seen (in this state) at `first_seen`, at `now`; local
/// clock only.
pub(crate) fn decide(spec: &LeaseSpec, me: &str, first_seen: Instant, now: Instant) -> Decision {
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    match holder {
        None => Decision::Acquire,
        Some(h) if h == me => Decision::Renew,
        Some(h) => {
            let valid_for = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .unwrap_or(LEASE_DURATION);
            if now.saturating_duration_since(first_seen) >= valid_for {
                Decision::Acquire
            } else {
                Decision::HeldBy(h.to_string())
            }
        }
    }
}

/// The lease record a holder writes: renewed now, acquired now unless it already held it.
fn record(previous: &LeaseSpec, me: &str, renew: bool, now: Timestamp) -> LeaseSpec {
    let mut spec = previous.clone();
    if !renew {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(previous.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.holder_identity = Some(me.to_string());
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15));
    spec
}

/// Where the lease is and who this process is in it.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per process ([`holder_identity`]).
    pub holder: String,
}

/// One Lease as this process takes part in it: the record last seen and since when (local
/// clock), and the writes that take, renew and release it. The leader election holds one; the
/// scale-out (`scaleout.rs`) one per (account, region) key and one announcing the replica.
#[derive(Debug)]
pub struct Claim {
    pub name: String,
    pub namespace: String,
    /// Labels and annotations a Lease created by this claim carries (how the scale-out finds
    /// its Leases with one list, and says which key each is for).
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The lease's `resourceVersion` last seen and when it was first seen (local clock).
    observed: Option<(String, Instant)>,
}

impl Claim {
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Claim {
        Claim {
            name: name.into(),
            namespace: namespace.into(),
            labels: Default::default(),
            annotations: Default::default(),
            observed: None,
        }
    }

    /// The decision on `lease` as read now: its record is judged by how long it has been
    /// unchanged on this process's clock.
    pub(crate) fn look(&mut self, lease: &Lease, me: &str, now: Instant) -> Decision {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == version => *at,
            _ => {
                self.observed = Some((version, now));
                now
            }
        };
        decide(&lease.spec.clone().unwrap_or_default(), me, first_seen, now)
    }

    /// How long the record last looked at has been unchanged (local clock).
    pub fn unchanged_for(&self, now: Instant) -> Duration {
        self.observed
            .as_ref()
            .map(|(_, at)| now.saturating_duration_since(*at))
            .unwrap_or_default()
    }

    /// Takes (`renew` false) or renews `lease` as read, or creates it when there is none.
    /// `Ok(Some(end))`: held until `end` (local clock); `Ok(None)`: another process wrote it
    /// first (a conflict).
    pub async fn write(
        &mut self,
        api: &Api<Lease>,
        me: &str,
        lease: Option<Lease>,
        renew: bool,
    ) -> Result<Option<Instant>, kube::Error> {
        let sent = Instant::now();
        let result = match lease {
            Some(mut next) => {
                let previous = next.spec.clone().unwrap_or_default();
                next.spec = Some(record(&previous, me, renew, Timestamp::now()));
                api.replace(&self.name, &PostParams::default(), &next).await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
                        annotations: (!self.annotations.is_empty())
                            .then(|| self.annotations.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(record(
                        &LeaseSpec {
                            lease_transitions: Some(-1),
                            ..LeaseSpec::default()
                        },
                        me,
                        false,
                        Timestamp::now(),
                    )),
                };
                api.create(&PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(written) => {
                self.observed = written
                    .metadata
                    .resource_version
                    .map(|v| (v, Instant::now()));
                Ok(Some(sent + RENEW_DEADLINE))
            }
            // Written (or created) by someone else since it was read: not ours.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Clears the holder of `lease` (as read) when it is still `me`. Returns whether it did.
    pub async fn release(
        &self,
        api: &Api<Lease>,
        me: &str,
        mut lease: Lease,
    ) -> Result<bool, kube::Error> {
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(me) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        spec.lease_duration_seconds = None;
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The election task: looks at the lease every [`RETRY_PERIOD`], takes or renews it, and
/// reports through [`Leadership`] (the term, for the executor) and a watch channel (leading or
/// not, for starting and stopping the controllers).
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    claim: Claim,
    leadership: Arc<Leadership>,
    leading: watch::Sender<bool>,
    /// The other holder last logged.
    logged_holder: Option<String>,
}

impl Elector {
    pub fn new(
        client: Client,
        config: LeaseConfig,
        leadership: Arc<Leadership>,
    ) -> (Elector, watch::Receiver<bool>) {
        let (leading, rx) = watch::channel(false);
        let elector = Elector {
            api: Api::namespaced(client, &config.namespace),
            claim: Claim::new(config.name.clone(), config.namespace.clone()),
            config,
            leadership,
            leading,
            logged_holder: None,
        };
        (elector, rx)
    }

    /// Runs until `release` resolves, then gives up the term and releases the lease (when
    /// held) for a quick handover.
    pub async fn run(mut self, release: impl Future<Output = ()>) {
        tokio::pin!(release);
        loop {
            let attempt = tokio::select! {
                _ = &mut release => break,
                attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, self.try_acquire_or_renew()) => attempt,
            };
            match attempt {
                Ok(Ok(term_end)) => self.leadership.set_term_end(term_end),
                // The term (if any) runs out by itself unless a later attempt renews it.
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.config.name, "leader election: lease not read or written")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.config.name, "leader election: the apiserver did not answer in time")
                }
            }
            self.publish();
            tokio::select! {
                _ = &mut release => break,
                _ = tokio::time::sleep(RETRY_PERIOD) => {}
            }
        }
        self.leadership.set_term_end(None);
        self.publish();
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.release()).await {
            Ok(Ok(true)) => tracing::info!(holder = %self.config.holder, "released the lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the lease"),
            Err(_) => tracing::warn!("timed out releasing the lease"),
        }
    }

    /// Tells the controllers whether the term runs (only changes are sent).
    fn publish(&self) {
        let leading = self.leadership.is_leading();
        self.leading.send_if_modified(|l| {
            let changed = *l != leading;
            *l = leading;
            changed
        });
    }

    /// One look at the lease. `Ok(Some(end))`: this process holds it until `end` (local
    /// clock); `Ok(None)`: it does not.
    async fn try_acquire_or_renew(&mut self) -> Result<Option<Instant>, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            return self
                .claim
                .write(&self.api, &self.config.holder, None, false)
                .await;
        };
        let renew = match self.claim.look(&lease, &self.config.holder, Instant::now()) {
            Decision::HeldBy(holder) => {
                if self.logged_holder.as_ref() != Some(&holder) {
                    tracing::info!(%holder, lease = %self.config.name, "standing by: the lease is held by another replica");
                    self.logged_holder = Some(holder);
                }
                return Ok(None);
            }
            Decision::Renew => true,
            Decision::Acquire => false,
        };
        let term = self
            .claim
            .write(&self.api, &self.config.holder, Some(lease), renew)
            .await?;
        if term.is_some() {
            self.logged_holder = None;
        }
        Ok(term)
    }

    /// Clears the holder when it is still this process. Returns whether it did.
    async fn release(&self) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        self.claim
            .release(&self.api, &self.config.holder, lease)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn holder_identities_are_unique_per_process_and_keep_the_name() {
        let a = holder_identity("pgbaseline-0");
        let b = holder_identity("pgbaseline-0");
        assert!(a.starts_with("pgbaseline-0-") && b.starts_with("pgbaseline-0-"));
        assert_ne!(
            a, b,
            "two replicas started with one identity must differ in the lease"
        );
    }

    #[test]
    fn a_lease_held_by_another_is_free_only_after_its_duration_on_our_clock() {
        let t0 = Instant::now();
        let spec = held_by("other", 15);
        assert_eq!(
            decide(&spec, "me", t0, t0 + Duration::from_secs(14)),
            Decision::HeldBy("other".into())
        );
        assert_eq!(
            decide(&spec, "me", t0, t0 + Duration::from_secs(15)),
            Decision::Acquire
        );
        // Its renewTime (another node's wall clock) plays no part: an old one is not expired.
        let mut old = held_by("other", 15);
        old.renew_time = Some(MicroTime(Timestamp::UNIX_EPOCH));
        assert_eq!(decide(&old, "me", t0, t0), Decision::HeldBy("other".into()));
        // No duration: ours is assumed.
        let mut no_duration = held_by("other", 0);
        no_duration.lease_duration_seconds = None;
        assert_eq!(
            decide(&no_duration, "me", t0, t0 + Duration::from_secs(10)),
            Decision::HeldBy("other".into())
        );
    }

    #[test]
    fn free_and_own_leases() {
        let t0 = Instant::now();
        assert_eq!(
            decide(&LeaseSpec::default(), "me", t0, t0),
            Decision::Acquire
        );
        let mut released = held_by("", 15);
        released.renew_time = None;
        assert_eq!(decide(&released, "me", t0, t0), Decision::Acquire);
        assert_eq!(decide(&held_by("me", 15), "me", t0, t0), Decision::Renew);
        // Only exactly this process: the same pod name with another suffix is someone else.
        assert_eq!(
            decide(&held_by("me-1", 15), "me-2", t0, t0),
            Decision::HeldBy("me-1".into())
        );
    }

    #[test]
    fn records_renew_or_acquire() {
        let now = Timestamp::now();
        let acquired = record(&held_by("other", 15), "me", false, now);
        assert_eq!(acquired.holder_identity.as_deref(), Some("me"));
        assert_eq!(acquired.acquire_time, Some(MicroTime(now)));
        assert_eq!(acquired.lease_transitions, Some(1));
        assert_eq!(acquired.lease_duration_seconds, Some(15));
        let renewed = record(&acquired, "me", true, Timestamp::UNIX_EPOCH);
        assert_eq!(renewed.acquire_time, Some(MicroTime(now)));
        assert_eq!(renewed.renew_time, Some(MicroTime(Timestamp::UNIX_EPOCH)));
        assert_eq!(renewed.lease_transitions, Some(1));
    }

    #[test]
    fn the_term_is_judged_by_the_clock_at_each_question() {
        let leadership = Leadership::default();
        assert!(leadership.may_act().is_err(), "not leading before a term");
        let now = Instant::now();
        leadership.set_term_end(Some(now + RENEW_DEADLINE));
        assert!(leadership.may_act_at(now).is_ok());
        // A process paused past its term: the first question after it resumes says no, with
        // no background task having run.
        let resumed = now + RENEW_DEADLINE + Duration::from_millis(1);
        let why = leadership.may_act_at(resumed).expect_err("term over");
        assert!(why.contains("ran out"), "{why}");
        leadership.set_term_end(None);
        assert!(leadership.may_act().is_err());
    }

    #[test]
    fn timings_leave_a_margin_between_terms() {
        assert!(RENEW_DEADLINE + RETRY_PERIOD < LEASE_DURATION);
        assert!(ATTEMPT_TIMEOUT < RENEW_DEADLINE);
    }
}
