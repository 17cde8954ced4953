use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::LeaseSpec;
use proptest::prelude::*;

use super::super::lease::{LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, decide};
use super::*;

fn keys(ks: &[&str]) -> Vec<String> {
    ks.iter().map(|k| k.to_string()).collect()
}

fn view_plan(
    me: &str,
    others: &[&str],
    groups: &[Vec<String>],
    seen: &[(&str, Seen)],
) -> Steps<String> {
    let others: BTreeSet<String> = others.iter().map(|o| o.to_string()).collect();
    let seen: BTreeMap<String, Seen> = seen
        .iter()
        .map(|(k, s)| (k.to_string(), s.clone()))
        .collect();
    plan(&View {
        me,
        others: &others,
        groups,
        seen: &seen,
        may_take: true,
    })
}

#[test]
fn a_lone_replica_takes_everything_and_keeps_it() {
    let groups = vec![keys(&["a"]), keys(&["b"]), keys(&["c", "d"])];
    let steps = view_plan("r0", &[], &groups, &[]);
    assert_eq!(steps.take.len(), 4);
    let held: Vec<(&str, Seen)> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| (*k, Seen::Mine))
        .collect();
    let steps = view_plan("r0", &[], &groups, &held);
    assert_eq!(steps.renew.len(), 4);
    assert!(steps.take.is_empty() && steps.give_up.is_empty() && steps.release.is_empty());
}

#[test]
fn a_replica_takes_its_share_only_while_others_are_live() {
    let groups: Vec<Vec<String>> = (0..6).map(|i| vec![format!("k{i}")]).collect();
    let steps = view_plan("r0", &["r1", "r2"], &groups, &[]);
    assert_eq!(steps.take.len(), 2, "{steps:?}");
    // Holding its share, it takes no more.
    let mine: Vec<(&str, Seen)> = steps
        .take
        .iter()
        .map(|k| (k.as_str(), Seen::Mine))
        .collect();
    let again = view_plan("r0", &["r1", "r2"], &groups, &mine);
    assert!(again.take.is_empty(), "{again:?}");
}

#[test]
fn an_overloaded_replica_gives_up_one_group_per_look_to_a_newcomer() {
    let groups: Vec<Vec<String>> = (0..6).map(|i| vec![format!("k{i}")]).collect();
    let all: Vec<(String, Seen)> = (0..6).map(|i| (format!("k{i}"), Seen::Mine)).collect();
    let all: Vec<(&str, Seen)> = all.iter().map(|(k, s)| (k.as_str(), s.clone())).collect();
    let steps = view_plan("r0", &["r1", "r2"], &groups, &all);
    assert_eq!(steps.give_up.len(), 1, "{steps:?}");
    assert_eq!(steps.renew.len(), 5);
    // At its share it keeps what it has.
    let two = &all[..2];
    let steps = view_plan("r0", &["r1", "r2"], &groups, two);
    assert!(steps.give_up.is_empty());
}

#[test]
fn a_split_group_stays_with_the_holder_of_its_first_key() {
    let groups = vec![keys(&["a", "b"])];
    let first = view_plan(
        "r0",
        &["r1"],
        &groups,
        &[("a", Seen::Mine), ("b", Seen::Held("r1".into()))],
    );
    assert_eq!(first.renew, keys(&["a"]));
    assert!(first.take.is_empty(), "b is r1's until it gives it up");
    let second = view_plan(
        "r1",
        &["r0"],
        &groups,
        &[("a", Seen::Held("r0".into())), ("b", Seen::Mine)],
    );
    assert_eq!(second.give_up, keys(&["b"]));
    // Once b is free, r0 completes its group.
    let complete = view_plan("r0", &["r1"], &groups, &[("a", Seen::Mine)]);
    assert_eq!(complete.take, keys(&["b"]));
}

#[test]
fn keys_no_policy_needs_are_released_and_given_up_keys_are_not_taken() {
    let groups = vec![keys(&["a"])];
    let steps = view_plan(
        "r0",
        &[],
        &groups,
        &[("a", Seen::GivenUp), ("gone", Seen::Mine)],
    );
    assert_eq!(steps.release, keys(&["gone"]));
    assert!(steps.take.is_empty() && steps.renew.is_empty(), "{steps:?}");
}

#[test]
fn a_group_larger_than_the_share_still_finds_a_holder() {
    // Three groups of two over two replicas: the share is 3, so after one group each, the
    // third fits nobody's share; the least-loaded replicas may still take it.
    let groups = vec![keys(&["a", "b"]), keys(&["c", "d"]), keys(&["e", "f"])];
    let steps = view_plan(
        "r0",
        &["r1"],
        &groups,
        &[
            ("a", Seen::Mine),
            ("b", Seen::Mine),
            ("c", Seen::Held("r1".into())),
            ("d", Seen::Held("r1".into())),
        ],
    );
    assert_eq!(steps.take, keys(&["e", "f"]));
}

#[test]
fn groups_join_the_keys_of_one_policy() {
    let g = groups(vec![
        keys(&["a/r1", "a/r2"]),
        keys(&["b/r1"]),
        keys(&["a/r2", "c/r1"]),
        keys(&["d/r1"]),
        keys(&["d/r1"]),
    ]);
    assert_eq!(
        g,
        vec![
            keys(&["a/r1", "a/r2", "c/r1"]),
            keys(&["b/r1"]),
            keys(&["d/r1"])
        ]
    );
    assert!(groups(Vec::<Vec<String>>::new()).is_empty());
}

#[test]
fn stable_hash_is_stable() {
    // The rendezvous order must be the same on every replica and build.
    assert_eq!(stable_hash(&["a"]), stable_hash(&["a"]));
    assert_ne!(stable_hash(&["a", "b"]), stable_hash(&["ab"]));
    assert_eq!(stable_hash(&[]), 0xcbf2_9ce4_8422_2325);
}

// ------------------------------------------------------------------------------------------
// A model of several replicas running the election of `lease.rs` and `plan` against one
// apiserver (compare-and-swap on a version), with request latency, pauses (a frozen process
// keeps its stale view and its in-flight writes still land) and crashes.

const MS: fn(u64) -> Duration = Duration::from_millis;

#[derive(Clone, Debug)]
struct Record {
    holder: Option<String>,
    version: u64,
}

#[derive(Debug)]
struct Replica {
    name: String,
    alive: bool,
    paused_until: u64,
    next_look: u64,
    looked: bool,
    /// Lease name → (version, first seen).
    observed: BTreeMap<String, (u64, Instant)>,
    given_up: BTreeMap<String, Instant>,
    /// Key → (term start, term end) of the term that runs.
    terms: BTreeMap<String, (u64, u64)>,
}

#[derive(Debug)]
struct Write {
    lands: u64,
    replica: usize,
    lease: String,
    expected: Option<u64>,
    holder: Option<String>,
    sent: u64,
}

#[derive(Clone, Debug)]
enum Disruption {
    Pause { replica: usize, at: u64, ms: u64 },
    Crash { replica: usize, at: u64 },
    Regroup { at: u64, config: usize },
}

fn configs() -> Vec<Vec<Vec<String>>> {
    vec![
        (0..6).map(|i| vec![format!("k{i}")]).collect(),
        vec![
            keys(&["k0", "k1"]),
            keys(&["k2"]),
            keys(&["k3"]),
            keys(&["k4", "k5"]),
        ],
        vec![keys(&["k0"]), keys(&["k2", "k3", "k4"]), keys(&["k6"])],
        (0..10).map(|i| vec![format!("k{i}")]).collect(),
    ]
}

struct Sim {
    base: Instant,
    now: u64,
    store: BTreeMap<String, Record>,
    replicas: Vec<Replica>,
    writes: Vec<Write>,
    groups: Vec<Vec<String>>,
    /// Key → every (replica, start, end) term, ended or not.
    history: BTreeMap<String, Vec<(usize, u64, u64)>>,
    latency: Vec<u64>,
    tick: usize,
}

fn member(name: &str) -> String {
    format!("member/{name}")
}

impl Sim {
    fn new(replicas: usize, groups: Vec<Vec<String>>, latency: Vec<u64>) -> Sim {
        Sim {
            base: Instant::now(),
            now: 0,
            store: BTreeMap::new(),
            replicas: (0..replicas)
                .map(|i| Replica {
                    name: format!("r{i}"),
                    alive: true,
                    paused_until: 0,
                    next_look: (i as u64) * 150,
                    looked: false,
                    observed: BTreeMap::new(),
                    given_up: BTreeMap::new(),
                    terms: BTreeMap::new(),
                })
                .collect(),
            writes: Vec::new(),
            groups,
            history: BTreeMap::new(),
            latency,
            tick: 0,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + MS(ms)
    }

    fn latency(&mut self) -> u64 {
        self.tick += 1;
        self.latency[self.tick % self.latency.len()]
    }

    fn end_term(&mut self, r: usize, key: &str) {
        let now = self.now;
        if let Some((start, end)) = self.replicas[r].terms.remove(key) {
            let end = end.min(now);
            self.history
                .entry(key.to_string())
                .or_default()
                .push((r, start, end));
        }
    }

    /// One look by replica `r`: read every Lease, plan, send the writes.
    fn look(&mut self, r: usize) {
        let now = self.now;
        let now_i = self.at(now);
        let me = self.replicas[r].name.clone();
        let mut seen = BTreeMap::new();
        let mut others = BTreeSet::new();
        let store = self.store.clone();
        for (name, record) in &store {
            let first = {
                let obs = &mut self.replicas[r].observed;
                match obs.get(name) {
                    Some((v, at)) if *v == record.version => *at,
                    _ => {
                        obs.insert(name.clone(), (record.version, now_i));
                        now_i
                    }
                }
            };
            let spec = LeaseSpec {
                holder_identity: record.holder.clone(),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                ..LeaseSpec::default()
            };
            let decision = decide(&spec, &me, first, now_i);
            if let Some(m) = name.strip_prefix("member/") {
                if m != me && !matches!(decision, Decision::Acquire) {
                    others.insert(m.to_string());
                }
                continue;
            }
            let given_up = self.replicas[r].given_up.get(name).copied();
            if record.holder.as_deref() != Some(me.as_str()) {
                self.replicas[r].given_up.remove(name);
            }
            seen.insert(name.clone(), Seen::of(decision, given_up, now_i));
        }
        // Terms that ran out on the clock end (the replica may not act past them anyway).
        let expired: Vec<String> = self.replicas[r]
            .terms
            .iter()
            .filter(|(_, (_, end))| *end <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.end_term(r, &k);
        }
        let groups = self.groups.clone();
        let steps = plan(&View {
            me: &me,
            others: &others,
            groups: &groups,
            seen: &seen,
            may_take: self.replicas[r].looked,
        });
        for k in steps.give_up.iter() {
            self.end_term(r, k);
            self.replicas[r].given_up.insert(k.clone(), now_i);
        }
        for k in steps.release.iter() {
            self.end_term(r, k);
            let lands = now + self.latency();
            self.writes.push(Write {
                lands,
                replica: r,
                lease: k.clone(),
                expected: store.get(k).map(|x| x.version),
                holder: None,
                sent: now,
            });
        }
        let mut renewals: Vec<String> = steps.renew.into_iter().chain(steps.take).collect();
        renewals.push(member(&me));
        for k in renewals {
            let lands = now + self.latency();
            self.writes.push(Write {
                lands,
                replica: r,
                lease: k.clone(),
                expected: store.get(&k).map(|x| x.version),
                holder: Some(me.clone()),
                sent: now,
            });
        }
        self.replicas[r].looked = true;
    }

    fn land(&mut self, w: Write) {
        let current = self.store.get(&w.lease).map(|x| x.version);
        if current != w.expected {
            // A conflict: not ours (any more).
            if w.holder.is_some() && !w.lease.starts_with("member/") {
                self.end_term(w.replica, &w.lease);
            }
            return;
        }
        let version = current.unwrap_or(0) + 1;
        self.store.insert(
            w.lease.clone(),
            Record {
                holder: w.holder.clone(),
                version,
            },
        );
        let landed = self.at(w.lands);
        let rep = &mut self.replicas[w.replica];
        rep.observed.insert(w.lease.clone(), (version, landed));
        if w.holder.is_some() && !w.lease.starts_with("member/") && rep.alive {
            rep.given_up.remove(&w.lease);
            let end = w.sent + RENEW_DEADLINE.as_millis() as u64;
            // A renewal extends the running term; otherwise a new one starts.
            let start = rep.terms.get(&w.lease).map(|t| t.0).unwrap_or(w.sent);
            rep.terms.insert(w.lease.clone(), (start, end));
        }
    }

    /// Runs until `until`, applying `disruptions` at their times.
    fn run(&mut self, until: u64, disruptions: &[Disruption]) {
        let mut pending: Vec<Disruption> = disruptions.to_vec();
        loop {
            let next_write = self.writes.iter().map(|w| w.lands).min();
            let next_look = self
                .replicas
                .iter()
                .filter(|r| r.alive)
                .map(|r| r.next_look.max(r.paused_until))
                .min();
            let next_disruption = pending.iter().map(disruption_at).min();
            let Some(t) = [next_write, next_look, next_disruption]
                .into_iter()
                .flatten()
                .min()
            else {
                break;
            };
            if t > until {
                break;
            }
            self.now = t;
            if next_disruption == Some(t) {
                let i = pending
                    .iter()
                    .position(|d| disruption_at(d) == t)
                    .expect("due");
                match pending.remove(i) {
                    Disruption::Pause { replica, ms, .. } => {
                        self.replicas[replica].paused_until = t + ms
                    }
                    Disruption::Crash { replica, .. } => {
                        self.replicas[replica].alive = false;
                        let held: Vec<String> =
                            self.replicas[replica].terms.keys().cloned().collect();
                        for k in held {
                            self.end_term(replica, &k);
                        }
                    }
                    Disruption::Regroup { config, .. } => {
                        self.groups = configs()[config % configs().len()].clone()
                    }
                }
            } else if next_write == Some(t) {
                let i = self.writes.iter().position(|w| w.lands == t).expect("due");
                let w = self.writes.remove(i);
                self.land(w);
            } else {
                let r = self
                    .replicas
                    .iter()
                    .position(|r| r.alive && r.next_look.max(r.paused_until) == t)
                    .expect("due");
                self.look(r);
                self.replicas[r].next_look = t + RETRY_PERIOD.as_millis() as u64;
            }
        }
        self.now = until;
    }

    /// Every term, the running ones included.
    fn all_terms(&self) -> BTreeMap<String, Vec<(usize, u64, u64)>> {
        let mut all = self.history.clone();
        for (r, rep) in self.replicas.iter().enumerate() {
            for (k, (s, e)) in &rep.terms {
                all.entry(k.clone()).or_default().push((r, *s, *e));
            }
        }
        all
    }
}

fn disruption_at(d: &Disruption) -> u64 {
    match d {
        Disruption::Pause { at, .. }
        | Disruption::Crash { at, .. }
        | Disruption::Regroup { at, .. } => *at,
    }
}

fn disruption(replicas: usize) -> impl Strategy<Value = Disruption> {
    prop_oneof![
        (0..replicas, 0u64..90_000, 1u64..40_000).prop_map(|(replica, at, ms)| Disruption::Pause {
            replica,
            at,
            ms
        }),
        (0..replicas, 0u64..90_000).prop_map(|(replica, at)| Disruption::Crash { replica, at }),
        (0u64..90_000, 0usize..4).prop_map(|(at, config)| Disruption::Regroup { at, config }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Safety: whatever the latencies, pauses, crashes and changes of the policies' keys, no two
    /// replicas ever hold a key in overlapping terms (the windows in which each may act).
    /// Liveness: once nothing disturbs them for a few lease durations, every key is held by a
    /// live replica, each group by one replica, and no replica holds more than its share when
    /// every group is one key.
    #[test]
    fn no_two_replicas_hold_a_key_in_overlapping_terms(
        replicas in 1usize..5,
        config in 0usize..4,
        latency in proptest::collection::vec(0u64..1_500, 1..8),
        disruptions in proptest::collection::vec(disruption(4), 0..6),
    ) {
        let disruptions: Vec<Disruption> = disruptions
            .into_iter()
            .map(|d| match d {
                Disruption::Pause { replica, at, ms } => Disruption::Pause { replica: replica % replicas, at, ms },
                Disruption::Crash { replica, at } => Disruption::Crash { replica: replica % replicas, at },
                other => other,
            })
            .collect();
        let mut sim = Sim::new(replicas, configs()[config].clone(), latency);
        let settle = 100_000 + 8 * LEASE_DURATION.as_millis() as u64;
        sim.run(settle, &disruptions);

        for (key, terms) in sim.all_terms() {
            for (i, a) in terms.iter().enumerate() {
                for b in &terms[i + 1..] {
                    let overlap = a.0 != b.0 && a.1 < b.2 && b.1 < a.2;
                    prop_assert!(!overlap, "{key}: terms {a:?} and {b:?} overlap");
                }
            }
        }

        let live: Vec<usize> = (0..replicas).filter(|r| sim.replicas[*r].alive).collect();
        if live.is_empty() {
            return Ok(());
        }
        let holder_of = |k: &String| {
            live.iter()
                .copied()
                .find(|r| sim.replicas[*r].terms.get(k).is_some_and(|(_, e)| *e > sim.now))
        };
        for group in &sim.groups {
            let holders: BTreeSet<Option<usize>> = group.iter().map(holder_of).collect();
            prop_assert!(holders.len() == 1 && !holders.contains(&None),
                "group {group:?} held by {holders:?}");
        }
        if sim.groups.iter().all(|g| g.len() == 1) {
            let share = fair_share(sim.groups.len(), live.len());
            for r in &live {
                let load = sim.replicas[*r].terms.values().filter(|(_, e)| *e > sim.now).count();
                prop_assert!(load <= share, "r{r} holds {load} keys, share {share}");
            }
        }
    }
}
