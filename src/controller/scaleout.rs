//! Scale-out over replicas (`pgbaseline run --scale-out`), the IO: one Lease per (account,
//! region) key and one per live replica, looked at every [`RETRY_PERIOD`] with one list, taken,
//! renewed, given up and released as `shards::plan` decides, with the election's rules
//! (`lease.rs`: terms on the monotonic clock, compare-and-swap writes).
//!
//! Who does what:
//! - The holder of a key is the only replica that sweeps that (account, region) and acts in it:
//!   every mutating AWS call asks [`Shards::may_act`] for the policy's keys first.
//! - A policy is reconciled — swept, evaluated, remediated, its status, Events and policy
//!   reports written — by the replica that holds all of its keys (`shards::groups` keeps one
//!   policy's keys together). Every other replica leaves it alone.
//! - An `AwsAccount` is verified and its status written by the holder of its first region's
//!   key (the account's home key, always wanted while the account exists).
//! - A policy whose keys cannot be known yet (its `AwsAccount` does not exist) belongs to the
//!   holder of the pseudo key `(account, "")`, which only writes its Stalled status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::api::{AwsAccount, DatabaseSecurityPolicy};

use super::fleet::Key;
use super::lease::{Claim, Decision, Leadership, RETRY_PERIOD};
use super::reconcile::Context;
use super::shards::{self, Seen, View};

/// Label on every scale-out Lease: the group (the `--lease-name`), so one list finds them.
const GROUP_LABEL: &str = "pgbaseline.io/lease-group";
/// Label saying what a Lease is for: `key` or `member`.
const ROLE_LABEL: &str = "pgbaseline.io/lease-role";
/// Annotation naming the key a key Lease is for (`account/region`, or `region`).
const KEY_ANNOTATION: &str = "pgbaseline.io/key";
/// A hung apiserver call cannot hold a look longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A member Lease not renewed for this long (a replica that died without releasing it) is
/// deleted by whoever sees it.
const MEMBER_GC_AFTER: Duration = Duration::from_secs(4 * 60);

/// The keys this replica holds, each with its term (asked before every mutating call).
#[derive(Debug)]
pub struct Shards {
    terms: Mutex<BTreeMap<String, Arc<Leadership>>>,
    /// The keys whose terms run, after each look (reconciles start when keys arrive).
    held: watch::Sender<BTreeSet<String>>,
}

impl Default for Shards {
    fn default() -> Self {
        Shards {
            terms: Mutex::new(BTreeMap::new()),
            held: watch::channel(BTreeSet::new()).0,
        }
    }
}

impl Shards {
    fn term(&self, key: &str) -> Arc<Leadership> {
        match self.terms.lock() {
            Ok(mut terms) => terms.entry(key.to_string()).or_default().clone(),
            // A poisoned lock means a panic elsewhere: a term nobody renews (never running).
            Err(_) => Arc::default(),
        }
    }

    /// `Ok(())` while this replica's term runs for every one of `keys` (judged by the clock at
    /// each question, as the leader's term is).
    pub fn may_act(&self, keys: &[Key]) -> Result<(), String> {
        for key in keys {
            let key = key.to_string();
            if self.term(&key).may_act().is_err() {
                return Err(format!(
                    "this replica does not hold the lease of {key} (any more)"
                ));
            }
        }
        Ok(())
    }

    /// Whether this replica holds every one of `keys` now.
    pub fn holds(&self, keys: &[Key]) -> bool {
        self.may_act(keys).is_ok()
    }

    /// Changes of the keys held.
    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<String>> {
        self.held.subscribe()
    }

    fn publish(&self) {
        let held: BTreeSet<String> = match self.terms.lock() {
            Ok(terms) => terms
                .iter()
                .filter(|(_, t)| t.is_leading())
                .map(|(k, _)| k.clone())
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        self.held.send_if_modified(|h| {
            let changed = *h != held;
            *h = held;
            changed
        });
    }

    fn end(&self, key: &str) {
        self.term(key).set_term_end(None);
    }

    fn end_all(&self) {
        if let Ok(terms) = self.terms.lock() {
            for t in terms.values() {
                t.set_term_end(None);
            }
        }
        self.publish();
    }
}

/// The keys a policy needs: one per region it selects from in its account.
pub fn policy_keys(ctx: &Context, policy: &DatabaseSecurityPolicy) -> Vec<Key> {
    match ctx.policy_keys(policy) {
        Some(keys) => keys,
        // Its account does not exist (or no region is known): nothing is read; whoever holds
        // the pseudo key writes why.
        None => vec![Key {
            account: policy
                .spec
                .account_ref
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            region: String::new(),
        }],
    }
}

/// The key of the replica that verifies an account and writes its status.
pub fn account_key(account: &AwsAccount) -> Key {
    Key {
        account: account.name_any(),
        region: account.spec.regions.first().cloned().unwrap_or_default(),
    }
}

/// Every key wanted now, grouped (`None` until the caches have their first complete list:
/// before that, a replica would give up keys whose policies it has not seen yet).
fn wanted(ctx: &Context) -> Option<Vec<Vec<String>>> {
    let stores = ctx.stores.read().ok()?.clone();
    let accounts = ctx.accounts.read().ok()?.clone()?;
    if stores.is_empty()
        || accounts.wait_until_ready().now_or_never().is_none()
        || stores
            .iter()
            .any(|s| s.wait_until_ready().now_or_never().is_none())
    {
        return None;
    }
    let policies = stores.iter().flat_map(|s| s.state());
    let needs = policies
        .map(|p| policy_keys(ctx, &p))
        .chain(accounts.state().into_iter().map(|a| vec![account_key(&a)]))
        .map(|keys| keys.iter().map(Key::to_string).collect::<Vec<_>>());
    Some(shards::groups(needs))
}

/// Where the scale-out Leases are and who this process is.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Leases' common prefix and group label (`--lease-name`).
    pub group: String,
    pub namespace: String,
    /// Unique per process (`lease::holder_identity`).
    pub holder: String,
}

/// The election of many Leases.
pub struct Elector {
    api: Api<Lease>,
    config: Config,
    shards: Arc<Shards>,
    ctx: Arc<Context>,
    member: Claim,
    /// Per Lease name.
    claims: HashMap<String, Claim>,
    /// Keys this replica gave up, and when.
    given_up: BTreeMap<String, Instant>,
    /// Whether this replica has looked once (it takes keys only from its second look).
    looked: bool,
    /// Live replicas last logged.
    logged: Option<(usize, usize)>,
}

fn lease_name(group: &str, key: &str) -> String {
    format!("{group}-{:016x}", shards::stable_hash(&[key]))
}

impl Elector {
    pub fn new(client: Client, config: Config, shards: Arc<Shards>, ctx: Arc<Context>) -> Elector {
        let mut member = Claim::new(
            format!(
                "{}-member-{:016x}",
                config.group,
                shards::stable_hash(&[&config.holder])
            ),
            config.namespace.clone(),
        );
        member.labels = labels(&config.group, "member");
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            shards,
            ctx,
            member,
            claims: HashMap::new(),
            given_up: BTreeMap::new(),
            looked: false,
            logged: None,
        }
    }

    /// Runs until `release` resolves, then ends every term and releases every Lease held.
    pub async fn run(mut self, release: impl std::future::Future<Output = ()>) {
        tokio::pin!(release);
        loop {
            tokio::select! {
                _ = &mut release => break,
                result = self.look() => if let Err(e) = result {
                    tracing::warn!(error = %e, "scale-out: leases not read or written");
                },
            }
            self.shards.publish();
            tokio::select! {
                _ = &mut release => break,
                _ = tokio::time::sleep(RETRY_PERIOD) => {}
            }
        }
        self.shards.end_all();
        match tokio::time::timeout(2 * CALL_TIMEOUT, self.release_all()).await {
            Ok(n) => tracing::info!(released = n, "scale-out: released the leases"),
            Err(_) => tracing::warn!("scale-out: timed out releasing the leases"),
        }
    }

    /// One look: list the Leases, plan, write.
    async fn look(&mut self) -> Result<(), String> {
        let selector = format!("{GROUP_LABEL}={}", self.config.group);
        let list = tokio::time::timeout(
            CALL_TIMEOUT,
            self.api.list(&ListParams::default().labels(&selector)),
        )
        .await
        .map_err(|_| "the apiserver did not answer the list in time".to_string())?
        .map_err(|e| e.to_string())?;
        let now = Instant::now();
        let me = self.config.holder.clone();
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        let mut leases: BTreeMap<String, Lease> = BTreeMap::new();
        let mut others = BTreeSet::new();
        let mut my_member = None;
        let mut names = BTreeSet::new();
        let mut dead_members = Vec::new();
        for lease in list.items {
            let name = lease.name_any();
            names.insert(name.clone());
            if name == self.member.name {
                self.member.look(&lease, &me, now);
                my_member = Some(lease);
                continue;
            }
            let namespace = self.config.namespace.clone();
            let claim = self
                .claims
                .entry(name.clone())
                .or_insert_with(|| Claim::new(name.clone(), namespace));
            let decision = claim.look(&lease, &me, now);
            let role = lease.labels().get(ROLE_LABEL).cloned().unwrap_or_default();
            if role == "member" {
                match decision {
                    Decision::HeldBy(holder) => {
                        others.insert(holder);
                    }
                    Decision::Acquire => {
                        if claim.unchanged_for(now) >= MEMBER_GC_AFTER {
                            dead_members.push(lease);
                        }
                    }
                    Decision::Renew => {}
                }
                continue;
            }
            let Some(key) = lease.annotations().get(KEY_ANNOTATION).cloned() else {
                continue;
            };
            let spec = lease.spec.as_ref();
            if spec.and_then(|s| s.holder_identity.as_deref()) != Some(me.as_str()) {
                self.given_up.remove(&key);
            }
            seen.insert(
                key.clone(),
                Seen::of(decision, self.given_up.get(&key).copied(), now),
            );
            leases.insert(key, lease);
        }
        self.claims.retain(|name, _| names.contains(name));

        // Announce this replica first: the others count it before it takes anything.
        let member = tokio::time::timeout(
            CALL_TIMEOUT,
            self.member
                .write(&self.api, &me, my_member.clone(), my_member.is_some()),
        )
        .await;
        if !matches!(member, Ok(Ok(Some(_)))) {
            tracing::warn!(lease = %self.member.name, "scale-out: could not renew this replica's member lease");
        }
        for lease in dead_members {
            self.delete_member(lease).await;
        }

        let Some(groups) = wanted(&self.ctx) else {
            return Ok(());
        };
        let steps = shards::plan(&View {
            me: &me,
            others: &others,
            groups: &groups,
            seen: &seen,
            may_take: self.looked,
        });
        self.looked = true;
        for key in &steps.give_up {
            self.shards.end(key);
            self.given_up.insert(key.clone(), now);
            tracing::info!(%key, "scale-out: giving the key up to a less loaded replica");
        }
        for key in &steps.release {
            self.shards.end(key);
            if let Some(lease) = leases.remove(key) {
                let name = lease.name_any();
                if let Some(claim) = self.claims.get(&name) {
                    let _ =
                        tokio::time::timeout(CALL_TIMEOUT, claim.release(&self.api, &me, lease))
                            .await;
                }
            }
        }
        let renew: BTreeSet<&String> = steps.renew.iter().collect();
        for key in steps.renew.iter().chain(&steps.take) {
            let name = lease_name(&self.config.group, key);
            let claim = self.claims.entry(name.clone()).or_insert_with(|| {
                let mut c = Claim::new(name, self.config.namespace.clone());
                c.labels = labels(&self.config.group, "key");
                c.annotations = [(KEY_ANNOTATION.to_string(), key.clone())].into();
                c
            });
            let written = tokio::time::timeout(
                CALL_TIMEOUT,
                claim.write(&self.api, &me, leases.remove(key), renew.contains(key)),
            )
            .await;
            let term = self.shards.term(key);
            match written {
                Ok(Ok(end)) => {
                    if end.is_some() && !renew.contains(key) {
                        tracing::info!(%key, "scale-out: took the key");
                    }
                    term.set_term_end(end);
                }
                // The term runs out by itself unless a later look renews it.
                Ok(Err(e)) => tracing::warn!(%key, error = %e, "scale-out: lease not written"),
                Err(_) => tracing::warn!(%key, "scale-out: the apiserver did not answer in time"),
            }
        }
        let counts = (others.len() + 1, steps.renew.len() + steps.take.len());
        if self.logged != Some(counts) {
            tracing::info!(
                replicas = counts.0,
                keys = groups.iter().map(Vec::len).sum::<usize>(),
                held = counts.1,
                "scale-out: live replicas and keys"
            );
            self.logged = Some(counts);
        }
        self.ctx.metrics.shard_keys.set(counts.1 as i64);
        self.ctx.metrics.shard_replicas.set(counts.0 as i64);
        Ok(())
    }

    /// Deletes the member Lease of a replica gone for good (only if unchanged since read).
    async fn delete_member(&self, lease: Lease) {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        let _ =
            tokio::time::timeout(CALL_TIMEOUT, self.api.delete(&lease.name_any(), &params)).await;
    }

    /// Releases every key Lease and the member Lease this replica holds. Returns how many.
    async fn release_all(&self) -> usize {
        let me = &self.config.holder;
        let selector = format!("{GROUP_LABEL}={}", self.config.group);
        let Ok(list) = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
        else {
            return 0;
        };
        let mut released = 0;
        for lease in list.items {
            let claim = Claim::new(lease.name_any(), self.config.namespace.clone());
            if let Ok(true) = claim.release(&self.api, me, lease).await {
                released += 1;
            }
        }
        released
    }
}

fn labels(group: &str, role: &str) -> BTreeMap<String, String> {
    [
        (GROUP_LABEL.to_string(), group.to_string()),
        (ROLE_LABEL.to_string(), role.to_string()),
    ]
    .into()
}

/// Resolves whenever the keys held grew (for `Controller::reconcile_all_on`: the policies of
/// a key just taken are reconciled at once, not at their next watch event).
pub fn on_new_keys(shards: &Shards) -> impl futures::Stream<Item = ()> + Send + use<> {
    let rx = shards.subscribe();
    futures::stream::unfold(
        (rx, BTreeSet::new()),
        |(mut rx, mut before): (_, BTreeSet<String>)| async move {
            loop {
                rx.changed().await.ok()?;
                let now = rx.borrow_and_update().clone();
                let grew = now.iter().any(|k| !before.contains(k));
                before = now;
                if grew {
                    return Some(((), (rx, before)));
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::lease::LEASE_DURATION;
    use super::*;

    #[test]
    fn lease_names_are_stable_and_valid() {
        let name = lease_name("pgbaseline-leader", "payments/eu-west-1");
        assert_eq!(name, lease_name("pgbaseline-leader", "payments/eu-west-1"));
        assert_ne!(name, lease_name("pgbaseline-leader", "payments/us-east-1"));
        assert!(name.len() <= 253);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn terms_are_asked_for_every_key() {
        let shards = Shards::default();
        let a = Key {
            account: "a".into(),
            region: "us-east-1".into(),
        };
        let b = Key {
            account: "a".into(),
            region: "us-west-2".into(),
        };
        assert!(shards.may_act(std::slice::from_ref(&a)).is_err());
        shards
            .term(&a.to_string())
            .set_term_end(Some(Instant::now() + LEASE_DURATION));
        assert!(shards.holds(std::slice::from_ref(&a)));
        let why = shards.may_act(&[a.clone(), b]).expect_err("b is not held");
        assert!(why.contains("a/us-west-2"), "{why}");
        shards.end(&a.to_string());
        assert!(!shards.holds(&[a]));
    }
}
