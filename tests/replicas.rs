//! Scale-out over replicas (`pgbaseline run --scale-out`), against the emulator (which logs each
//! call with its account, region and STS session — `pgbaseline-<replica>-<AwsAccount>` — so the
//! log says which replica swept which (account, region)) and a real control plane: three
//! replicas over six (account, region) keys split the keys fairly, each key is swept by exactly
//! one replica, a policy over two regions is reconciled by the replica holding both, and a
//! killed replica's keys are taken over within a lease duration with no double remediation.
//!
//! Run with `cargo test --test replicas -- --test-threads=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::controlplane::ControlPlane;
use common::operator::{Operator, wait_for};
use common::{Call, Emulator};
use kube::Api;
use pgbaseline::api::DatabaseSecurityPolicy;
use serde_json::json;

const ACCOUNTS: [(&str, &str); 3] = [
    ("a", "222222222222"),
    ("b", "333333333333"),
    ("c", "444444444444"),
];
const REGIONS: [&str; 2] = ["us-east-1", "us-west-2"];
/// `lease::LEASE_DURATION` and `RETRY_PERIOD`.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

fn role(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/{name}")
}

/// Turns deletion protection off behind the operator's back (drift).
async fn drift(emulator: &Emulator, account: &str, region: &str, id: &str) {
    let rds = aws_sdk_rds::Client::new(&emulator.sdk_config_in(account, region).await);
    rds.modify_db_instance()
        .db_instance_identifier(id)
        .deletion_protection(false)
        .apply_immediately(true)
        .send()
        .await
        .expect("drift");
}

fn ready(p: &DatabaseSecurityPolicy) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.observed_generation == p.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// The replica a call came from: sessions are `pgbaseline-<replica>-<AwsAccount>`.
fn replica_of(call: &Call) -> Option<String> {
    let rest = call.session.strip_prefix("pgbaseline-")?;
    rest.find("-acct-").map(|i| rest[..i].to_string())
}

/// (AWS account id, region) → the replicas whose sessions swept it (`DescribeDBInstances`),
/// with how many sweeps each.
fn sweepers(calls: &[Call]) -> BTreeMap<(String, String), BTreeMap<String, usize>> {
    let mut out: BTreeMap<(String, String), BTreeMap<String, usize>> = BTreeMap::new();
    for c in calls {
        if c.action == "DescribeDBInstances"
            && let Some(r) = replica_of(c)
        {
            *out.entry((c.account.clone(), c.region.clone()))
                .or_default()
                .entry(r)
                .or_default() += 1;
        }
    }
    out
}

fn modifies(calls: &[Call]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for c in calls.iter().filter(|c| c.action == "ModifyDBInstance") {
        *out.entry((c.account.clone(), c.region.clone()))
            .or_default() += 1;
    }
    out
}

/// `text` without ANSI colour sequences (the log is coloured even into a file).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The operator's calls (the test's own drift goes through a `test-seeder` session).
fn by_operator(calls: &[Call]) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| c.session.starts_with("pgbaseline-"))
        .cloned()
        .collect()
}

fn policy(ns: &str, name: &str, account: &str, regions: &[&str], mode: &str) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "pgbaseline.io/v1alpha1",
        "kind": "DatabaseSecurityPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "accountRef": {"name": account},
            "selector": {"tags": {"team": "shared"}, "regions": regions},
            "mode": mode,
            "resyncSeconds": 10,
            "posture": {"maintenance": {"deletionProtection": true}},
        },
    }))
    .expect("json")
}

/// Polls until `f` returns `Some`, or panics with `what` and the replicas' logs.
async fn until<T>(
    timeout: Duration,
    what: &str,
    ops: &[&Operator],
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = ops.iter().map(|o| o.log_tail()).collect();
            panic!(
                "timed out after {timeout:?}: {what}\n{}",
                logs.join("\n-----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the call log holds at least two sweeps of each of the six keys; who swept them.
async fn two_sweeps_of_every_key(
    emulator: &Emulator,
    ops: &[&Operator],
) -> BTreeMap<(String, String), BTreeMap<String, usize>> {
    until(
        Duration::from_secs(60),
        "two sweeps of every key",
        ops,
        || {
            let s = sweepers(&emulator.calls());
            (s.len() == 6 && s.values().all(|by| by.values().sum::<usize>() >= 2)).then_some(s)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_split_six_keys_and_take_over_a_dead_ones() {
    // A control plane of its own: AwsAccounts are cluster-scoped.
    let cp = &ControlPlane::start();
    cp.install_crd();
    let emulator = Emulator::start(None);
    let mut roles = serde_json::Map::new();
    for (_, id) in ACCOUNTS {
        for region in REGIONS {
            emulator
                .create_shared_instance(id, region, &format!("db-{region}"))
                .await;
        }
        roles.insert(role(id, "pgbaseline-audit"), json!({"external_id": "ext"}));
        roles.insert(
            role(id, "pgbaseline-enforce"),
            json!({"external_id": "ext"}),
        );
    }
    emulator.set_roles(serde_json::Value::Object(roles));
    let system = cp.namespace("pgb-system");
    let tenant = cp.namespace("tenant");
    cp.kubectl_ok(
        &[
            "create",
            "secret",
            "generic",
            "external-id",
            "-n",
            &system,
            "--from-literal=id=ext",
        ],
        None,
    );
    let suffix = tenant.trim_start_matches("tenant-").to_string();
    let account_name = |which: &str| format!("acct-{which}-{suffix}");
    for (which, id) in ACCOUNTS {
        let account = json!({
            "apiVersion": "pgbaseline.io/v1alpha1",
            "kind": "AwsAccount",
            "metadata": {"name": account_name(which)},
            "spec": {
                "accountId": id, "regions": REGIONS,
                "auditRoleArn": role(id, "pgbaseline-audit"),
                "enforceRoleArn": role(id, "pgbaseline-enforce"),
                "externalIdSecretRef": {"namespace": system, "name": "external-id", "key": "id"},
                "allowedNamespaces": {"names": [tenant]},
                "allowedModes": ["Audit", "Enforce"],
            },
        });
        cp.kubectl_ok(&["apply", "-f", "-"], Some(&account.to_string()));
    }
    // One Enforce policy per (account, region) key, and an Audit policy over both regions of
    // account a (its two keys form one group: one replica holds both).
    let mut docs = Vec::new();
    for (which, _) in ACCOUNTS {
        for region in REGIONS {
            docs.push(policy(
                &tenant,
                &format!("{which}-{region}"),
                &account_name(which),
                &[region],
                "Enforce",
            ));
        }
    }
    docs.push(policy(
        &tenant,
        "a-both",
        &account_name("a"),
        &REGIONS,
        "Audit",
    ));
    cp.kubectl_ok(&["apply", "-f", "-"], Some(&docs.join("\n---\n")));

    // The drift queue every replica reads.
    let queue = emulator.drift_events(&["setup", "--queue", "pgbaseline-drift"]);
    let start = |i: usize| {
        Operator::start(
            cp,
            &emulator,
            &[
                "--event-queue",
                &queue,
                "--scale-out",
                "--leader-election-namespace",
                &system,
                "--lease-name",
                "pgb-shards",
                "--identity",
                &format!("replica{i}"),
            ],
        )
    };
    let mut ops: Vec<Operator> = (0..3).map(start).collect();

    // Every Enforce policy converges: its database remediated once, by one replica.
    let client = cp.client().await;
    let policies: Api<DatabaseSecurityPolicy> = Api::namespaced(client.clone(), &tenant);
    for (which, _) in ACCOUNTS {
        for region in REGIONS {
            wait_for(
                &policies,
                &format!("{which}-{region}"),
                Duration::from_secs(120),
                "Ready",
                &ops[0],
                ready,
            )
            .await;
        }
    }

    // The spread settles at two keys per replica (the fair share of 6 over 3).
    let refs: Vec<&Operator> = ops.iter().collect();
    until(
        Duration::from_secs(90),
        "two keys per replica",
        &refs,
        || {
            let held: Vec<f64> = ops
                .iter()
                .map(|o| o.metric("pgbaseline_shard_keys"))
                .collect();
            held.iter().all(|h| *h == 2.0).then_some(())
        },
    )
    .await;
    for op in &ops {
        assert_eq!(op.metric("pgbaseline_shard_replicas"), 3.0);
    }

    // The policy over both regions of account a lists both databases.
    let both = wait_for(
        &policies,
        "a-both",
        Duration::from_secs(60),
        "both regions evaluated",
        &ops[0],
        |p| p.status.as_ref().is_some_and(|s| s.summary.selected == 2),
    )
    .await;
    let regions: BTreeSet<String> = both
        .status
        .iter()
        .flat_map(|s| s.databases.iter().map(|d| d.region.clone()))
        .collect();
    assert_eq!(regions, REGIONS.iter().map(|r| r.to_string()).collect());

    // Steady state: over two sweeps of every key, each key is swept by exactly one replica,
    // and each replica sweeps the keys it holds (two each).
    emulator.reset_calls();
    let window_start = Instant::now();
    let by_key = two_sweeps_of_every_key(&emulator, &refs).await;
    let window = window_start.elapsed();
    let mut keys_of: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for (key, by) in &by_key {
        assert_eq!(by.len(), 1, "{key:?} swept by several replicas: {by:?}");
        let (replica, sweeps) = by.iter().next().expect("one");
        // One sweep per resync interval (10 s), however many policies the key has.
        let most = (window.as_secs_f64() / 10.0).ceil() as usize + 1;
        assert!(*sweeps <= most, "{key:?}: {sweeps} sweeps in {window:?}");
        keys_of
            .entry(replica.clone())
            .or_default()
            .insert(key.clone());
    }
    assert_eq!(keys_of.len(), 3, "{keys_of:?}");
    assert!(keys_of.values().all(|k| k.len() == 2), "{keys_of:?}");
    // Account a's two regions (one group, through a-both) are with one replica.
    let a_id = ACCOUNTS[0].1;
    assert!(
        keys_of
            .values()
            .any(|k| k.iter().all(|(acct, _)| acct == a_id)),
        "{keys_of:?}"
    );
    // Each remediation happened once, in all: one ModifyDBInstance per database.
    let calls_so_far = emulator.calls();
    assert!(
        modifies(&calls_so_far).is_empty(),
        "steady state modifies nothing: {:?}",
        modifies(&calls_so_far)
    );

    // An event about one key reaches the replica holding it, whichever replica receives it
    // first (the others hand it back): one re-read, by the holder, and the queue drains.
    let (c_which, c_id) = ACCOUNTS[2];
    let event = json!({
        "version": "0", "id": "e-1", "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.rds", "account": c_id, "time": "2026-12-02T05:00:00Z",
        "region": REGIONS[1], "resources": [],
        "detail": {
            "eventSource": "rds.amazonaws.com", "eventName": "ModifyDBInstance",
            "userIdentity": {"arn": format!("arn:aws:sts::{c_id}:assumed-role/admin/alice")},
            "requestParameters": {"dBInstanceIdentifier": format!("db-{}", REGIONS[1])},
        },
    });
    emulator.drift_events(&["raw", "--queue-url", &queue, "--body", &event.to_string()]);
    let rereads = |op: &Operator| op.metric("pgbaseline_event_rereads_total");
    until(
        Duration::from_secs(60),
        "the holder re-reads",
        &refs,
        || (ops.iter().map(rereads).sum::<f64>() >= 1.0).then_some(()),
    )
    .await;
    let holder = keys_of
        .iter()
        .find(|(_, keys)| keys.contains(&(c_id.to_string(), REGIONS[1].to_string())))
        .map(|(r, _)| r.clone())
        .expect("holder of c's second region");
    let rereaders: Vec<String> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| rereads(o) > 0.0)
        .map(|(i, _)| format!("replica{i}"))
        .collect();
    assert_eq!(rereaders, [holder], "{c_which}: re-read by");
    until(Duration::from_secs(30), "the queue drains", &refs, || {
        (emulator.drift_events(&["depth", "--queue-url", &queue]) == "0").then_some(())
    })
    .await;

    // Drift every database: each is remediated exactly once, and each policy's status is
    // written by one replica only, the one holding its key.
    let offsets: Vec<usize> = ops.iter().map(|o| o.log_text().len()).collect();
    emulator.reset_calls();
    for (_, id) in ACCOUNTS {
        for region in REGIONS {
            drift(&emulator, id, region, &format!("db-{region}")).await;
        }
    }
    let all_keys: BTreeMap<(String, String), usize> = ACCOUNTS
        .iter()
        .flat_map(|(_, id)| REGIONS.iter().map(|r| ((id.to_string(), r.to_string()), 1)))
        .collect();
    until(
        Duration::from_secs(60),
        "every drifted database remediated",
        &refs,
        || (modifies(&by_operator(&emulator.calls())) == all_keys).then_some(()),
    )
    .await;
    for (which, id) in ACCOUNTS {
        for region in REGIONS {
            let name = format!("{which}-{region}");
            wait_for(
                &policies,
                &name,
                Duration::from_secs(60),
                "Ready after the drift",
                &ops[0],
                ready,
            )
            .await;
            let holder = keys_of
                .iter()
                .find(|(_, keys)| keys.contains(&(id.to_string(), region.to_string())))
                .map(|(r, _)| r.clone())
                .expect("holder");
            let writers: BTreeSet<String> = ops
                .iter()
                .enumerate()
                .filter(|(i, o)| {
                    plain(&o.log_text()[offsets[*i]..]).lines().any(|l| {
                        l.contains("status updated")
                            && l.contains(&format!("policy={tenant}/{name}"))
                    })
                })
                .map(|(i, _)| format!("replica{i}"))
                .collect();
            assert_eq!(
                writers,
                BTreeSet::from([holder]),
                "{name}: status written by"
            );
        }
    }
    // Still once each, after the statuses settled.
    assert_eq!(modifies(&by_operator(&emulator.calls())), all_keys);

    // Kill the replica holding b's keys (SIGKILL: it releases nothing), and drift its
    // databases: the others take its keys over and remediate each database once.
    let b_id = ACCOUNTS[1].1;
    let (victim, victim_keys) = keys_of
        .iter()
        .find(|(_, k)| k.iter().any(|(acct, _)| acct == b_id))
        .map(|(r, k)| (r.clone(), k.clone()))
        .expect("a replica holds b");
    let index: usize = victim
        .trim_start_matches("replica")
        .parse()
        .expect("replica index");
    ops[index].kill();
    let killed = Instant::now();
    emulator.reset_calls();
    for (acct, region) in &victim_keys {
        drift(&emulator, acct, region, &format!("db-{region}")).await;
    }
    let survivors: Vec<&Operator> = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, o)| o)
        .collect();
    let taken = until(
        Duration::from_secs(60),
        "the dead replica's keys taken over",
        &survivors,
        || {
            let s = sweepers(&emulator.calls());
            victim_keys
                .iter()
                .all(|k| s.get(k).is_some_and(|by| by.keys().any(|r| *r != victim)))
                .then(|| killed.elapsed())
        },
    )
    .await;
    eprintln!("the dead replica's keys were swept by the others {taken:?} after SIGKILL");
    // Free for the others a lease duration after they last saw it renewed (up to one look
    // after the kill), taken at their next look, swept at once.
    assert!(
        taken <= LEASE_DURATION + 2 * RETRY_PERIOD + Duration::from_secs(5),
        "taken over after {taken:?}"
    );
    until(
        Duration::from_secs(60),
        "the survivors hold three keys each",
        &survivors,
        || {
            survivors
                .iter()
                .all(|o| o.metric("pgbaseline_shard_keys") == 3.0)
                .then_some(())
        },
    )
    .await;
    for key in &victim_keys {
        let name = format!(
            "{}-{}",
            ACCOUNTS
                .iter()
                .find(|(_, id)| *id == key.0)
                .map(|(w, _)| *w)
                .expect("account"),
            key.1
        );
        wait_for(
            &policies,
            &name,
            Duration::from_secs(60),
            "Ready after the takeover",
            survivors[0],
            ready,
        )
        .await;
    }
    // Two more sweeps of every key, then: each drifted database was remediated exactly once,
    // nothing else was modified, and every key is still swept by one replica only.
    let s = two_sweeps_of_every_key(&emulator, &survivors).await;
    let expected: BTreeMap<(String, String), usize> =
        victim_keys.iter().map(|k| (k.clone(), 1)).collect();
    let calls = by_operator(&emulator.calls());
    assert_eq!(modifies(&calls), expected, "{calls:?}");
    for (key, by) in &s {
        assert!(
            !by.contains_key(&victim),
            "{key:?} swept by the dead replica"
        );
        if !victim_keys.contains(key) {
            assert_eq!(by.len(), 1, "{key:?} swept by several replicas: {by:?}");
        }
    }
}
