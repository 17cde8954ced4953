//! Scale-out over replicas, the decisions (sans-IO): which (account, region) keys this replica
//! should hold, take, give up or release, given the key Leases as it last saw them.
//!
//! The model (the IO is in `scaleout.rs`):
//! - Every (account, region) key a policy needs has a Lease; its holder is the only replica
//!   that sweeps and remediates in that key, for as long as its term runs (the client-go rules
//!   of `lease.rs`: the term on the monotonic clock, asked before every mutating call; others
//!   take the Lease only after seeing it unchanged for a whole lease duration).
//! - Keys that one policy needs together (a policy over several regions) form a *group*, held
//!   by one replica: the replica that holds every key of a policy reconciles it and is the only
//!   writer of its status. A policy's keys can never be held by two replicas at once for long:
//!   in a split group, the holder of the group's first held key keeps it and the others give
//!   their keys up.
//! - Replicas announce themselves with a member Lease each. A replica takes a free group only
//!   while it stays within its fair share, `ceil(keys / live replicas)`, or while it holds no
//!   more than the least-loaded other replica (so a group larger than the share still finds a
//!   holder); it gives a group up only when another replica is so much less loaded that the
//!   move makes the spread strictly better. Taking and giving up use the same measure, so a
//!   settled assignment never oscillates.
//! - Giving up is silent: the term ends at once and the Lease is no longer renewed, so the
//!   others take it a lease duration later, never while this replica might still act.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::lease::{Decision, LEASE_DURATION};

/// How a key's Lease looks to this replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// No holder, released, or not renewed for a lease duration (by this replica's clock).
    Free,
    /// This replica holds it and renews it.
    Mine,
    /// This replica holds it in the record but gave it up: nobody (this replica included) may
    /// take it before it expires.
    GivenUp,
    /// Another replica holds it.
    Held(String),
}

impl Seen {
    /// How a key's Lease looks, from the election's decision on its record and when this
    /// replica gave it up (if it did): a Lease given up is this replica's to take again only
    /// once the others could have taken it (a lease duration later).
    pub(crate) fn of(decision: Decision, given_up: Option<Instant>, now: Instant) -> Seen {
        match decision {
            Decision::Acquire => Seen::Free,
            Decision::HeldBy(holder) => Seen::Held(holder),
            Decision::Renew => match given_up {
                None => Seen::Mine,
                Some(at) if now.saturating_duration_since(at) >= LEASE_DURATION => Seen::Free,
                Some(_) => Seen::GivenUp,
            },
        }
    }
}

/// What this replica knows at one look.
#[derive(Clone, Debug)]
pub struct View<'a, K> {
    pub me: &'a str,
    /// Live replicas other than this one (their member Lease is current).
    pub others: &'a BTreeSet<String>,
    /// The keys policies need, grouped: each group sorted, no key in two groups.
    pub groups: &'a [Vec<K>],
    /// Each key's Lease; a key missing here has no Lease yet (free). Keys this replica holds
    /// that no group needs any more are listed too (they are released).
    pub seen: &'a BTreeMap<K, Seen>,
    /// Whether this replica may take keys: not before it has announced itself and looked once,
    /// so replicas that start together see each other before anyone grabs everything.
    pub may_take: bool,
}

/// What to do with the Leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Steps<K> {
    /// Held and kept: renew.
    pub renew: Vec<K>,
    /// Free: take.
    pub take: Vec<K>,
    /// Held, but another replica should have it: stop acting and stop renewing.
    pub give_up: Vec<K>,
    /// Held, and no policy needs it any more: stop acting and release.
    pub release: Vec<K>,
}

impl<K> Default for Steps<K> {
    fn default() -> Self {
        Steps {
            renew: Vec::new(),
            take: Vec::new(),
            give_up: Vec::new(),
            release: Vec::new(),
        }
    }
}

/// The fair share of `keys` over `replicas` live replicas.
pub fn fair_share(keys: usize, replicas: usize) -> usize {
    keys.div_ceil(replicas.max(1))
}

/// A stable 64-bit hash (FNV-1a): the same on every replica and every build.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The steps for one look. Pure: the same view gives the same steps.
pub fn plan<K: Ord + Clone + AsRef<str>>(view: &View<'_, K>) -> Steps<K> {
    let seen = |k: &K| view.seen.get(k).cloned().unwrap_or(Seen::Free);
    let wanted: BTreeSet<&K> = view.groups.iter().flatten().collect();
    let mut steps = Steps::default();
    for (k, s) in view.seen {
        if *s == Seen::Mine && !wanted.contains(k) {
            steps.release.push(k.clone());
        }
    }

    // Keys held by each replica (this one: renewed only), over the wanted keys.
    let mut load: BTreeMap<&str, usize> = view.others.iter().map(|o| (o.as_str(), 0)).collect();
    let mut mine = 0usize;
    for k in &wanted {
        match seen(k) {
            Seen::Mine => mine += 1,
            Seen::Held(h) => {
                if let Some(n) = load.get_mut(h.as_str()) {
                    *n += 1;
                }
            }
            Seen::Free | Seen::GivenUp => {}
        }
    }
    let share = fair_share(wanted.len(), view.others.len() + 1);
    // The keys of a group this replica holds (and renews).
    let mine_in = |group: &[K]| -> Vec<K> {
        group
            .iter()
            .filter(|k| seen(k) == Seen::Mine)
            .cloned()
            .collect()
    };
    let least_other = || load.values().copied().min();

    // The groups this replica holds part of, and whether it keeps them: in a split group (a
    // policy now spans keys held by several replicas) the holder of its first held key keeps it.
    let mut kept: Vec<&Vec<K>> = Vec::new();
    for group in view.groups {
        if !group.iter().any(|k| seen(k) == Seen::Mine) {
            continue;
        }
        let first_held = group
            .iter()
            .map(&seen)
            .find(|s| matches!(s, Seen::Mine | Seen::Held(_) | Seen::GivenUp));
        if first_held == Some(Seen::Mine) {
            kept.push(group);
        } else {
            let held = mine_in(group);
            mine -= held.len();
            steps.give_up.extend(held);
        }
    }

    // Balance: give up a group while another live replica holds so few keys that moving the
    // group to it makes the largest load smaller (least preferred groups first). One group per
    // look: the others' loads change only once they take it.
    kept.sort_by_key(|g| std::cmp::Reverse(preference(view.me, g)));
    if mine > share
        && kept.len() > 1
        && let Some(least) = least_other()
        && let Some(pos) = kept.iter().position(|g| least + mine_in(g).len() < mine)
    {
        let held = mine_in(kept.remove(pos));
        mine -= held.len();
        steps.give_up.extend(held);
    }
    for group in &kept {
        for k in group.iter() {
            match seen(k) {
                Seen::Mine => steps.renew.push(k.clone()),
                // Complete a group this replica keeps.
                Seen::Free if view.may_take => {
                    steps.take.push(k.clone());
                    mine += 1;
                }
                _ => {}
            }
        }
    }
    if !view.may_take {
        return steps;
    }

    // Take whole free groups, most preferred first, within the share (or while no other
    // replica holds fewer keys).
    let mut free: Vec<&Vec<K>> = view
        .groups
        .iter()
        .filter(|g| g.iter().all(|k| seen(k) == Seen::Free))
        .collect();
    free.sort_by_key(|g| std::cmp::Reverse(preference(view.me, g)));
    for group in free {
        let fits = mine + group.len() <= share;
        let least_loaded = least_other().is_none_or(|least| mine <= least);
        if mine == 0 || fits || least_loaded {
            mine += group.len();
            steps.take.extend(group.iter().cloned());
        }
    }
    steps
}

/// How much replica `me` prefers a group (rendezvous hashing on its first key): replicas that
/// look at the same free keys try different ones first, so they rarely race for a Lease.
fn preference<K: AsRef<str>>(me: &str, group: &[K]) -> u64 {
    group
        .first()
        .map(|k| stable_hash(&[me, k.as_ref()]))
        .unwrap_or_default()
}

/// The keys policies need, grouped so that the keys of one policy are in one group (connected
/// components of "needed by the same policy"); each group sorted, groups by their first key.
pub fn groups<K: Ord + Clone>(needs: impl IntoIterator<Item = Vec<K>>) -> Vec<Vec<K>> {
    // Union-find over the keys.
    let mut index: BTreeMap<K, usize> = BTreeMap::new();
    let mut parent: Vec<usize> = Vec::new();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for keys in needs {
        let mut first = None;
        for k in keys {
            let i = *index.entry(k).or_insert_with(|| {
                parent.push(parent.len());
                parent.len() - 1
            });
            match first {
                None => first = Some(i),
                Some(f) => {
                    let (a, b) = (root(&mut parent, f), root(&mut parent, i));
                    if a != b {
                        parent[b.max(a)] = a.min(b);
                    }
                }
            }
        }
    }
    let mut by_root: BTreeMap<usize, Vec<K>> = BTreeMap::new();
    for (k, i) in &index {
        let r = root(&mut parent, *i);
        by_root.entry(r).or_default().push(k.clone());
    }
    let mut out: Vec<Vec<K>> = by_root.into_values().collect();
    for g in &mut out {
        g.sort();
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests;
