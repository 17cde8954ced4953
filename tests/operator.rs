//! The operator against a real control plane (etcd + kube-apiserver from scripts/controlplane)
//! and the AWS emulator: CRD validation, Audit, Enforce, reboots, steady state, drift, deletion,
//! two policies on one database, leader election, an apiserver restart, and remediations
//! stopped between two calls (policy deleted, switched to Audit, narrowed; lease lost).
//!
//! Run with `cargo test --test operator -- --test-threads=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::controlplane::ControlPlane;
use common::operator::{Operator, sum_metric, wait_for};
use common::{Emulator, repo_root};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use pgbaseline::api::{DatabaseSecurityPolicy, FindingStatus};
use serde_json::{Value, json};

/// The policies' resync interval in these tests.
const RESYNC: u64 = 10;
/// A region with no databases, where a policy keeps time for a "nothing happens" window.
const CLOCK_REGION: &str = "eu-west-1";

// ------------------------------------------------------------------------------------------
// Helpers on policies.

fn condition<'a>(p: &'a DatabaseSecurityPolicy, type_: &str) -> Option<&'a Condition> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// `Some((status, reason))` of a condition, when the status describes the current generation.
fn current(p: &DatabaseSecurityPolicy, type_: &str) -> Option<(String, String)> {
    let status = p.status.as_ref()?;
    if status.observed_generation != p.metadata.generation {
        return None;
    }
    condition(p, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

fn is(p: &DatabaseSecurityPolicy, type_: &str, status: &str, reason: &str) -> bool {
    current(p, type_) == Some((status.to_string(), reason.to_string()))
}

fn policy_yaml(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
    )
}

async fn patch_spec(api: &Api<DatabaseSecurityPolicy>, name: &str, spec: Value) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": spec })),
    )
    .await
    .expect("patch spec");
}

fn rv(p: &DatabaseSecurityPolicy) -> String {
    p.metadata.resource_version.clone().unwrap_or_default()
}

fn mutating(emulator: &Emulator) -> Vec<String> {
    emulator
        .mutating_calls()
        .into_iter()
        .map(|c| format!("{}:{}", c.service, c.action))
        .collect()
}

/// Events on the policies of `ns`: (type, reason, action, note).
fn events(cp: &ControlPlane, ns: &str) -> Vec<(String, String, String, String)> {
    let out = cp.kubectl_ok(
        &["get", "events.events.k8s.io", "-n", ns, "-o", "json"],
        None,
    );
    let v: Value = serde_json::from_str(&out).expect("events json");
    v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                    (s("type"), s("reason"), s("action"), s("note"))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn rds(emulator: &Emulator) -> aws_sdk_rds::Client {
    aws_sdk_rds::Client::new(&emulator.sdk_config().await)
}

// ------------------------------------------------------------------------------------------
// 1. The CRD on a real apiserver.

#[test]
fn crd_installs_rejects_malformed_policies_and_accepts_the_examples() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("crd");
    const SEL: &str = "  selector: {tags: {env: prod}}\n";
    const POS: &str = "  posture: {transport: {forceSsl: true}}\n";
    let long_key = "k".repeat(129);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("{SEL}  mode: Sometimes\n{POS}"),
            "spec.mode",
            "Unsupported value",
        ),
        (format!("{SEL}  mode: 1\n{POS}"), "spec.mode", "string"),
        (
            format!("{POS}  selector: {{engines: [postgres]}}\n"),
            "spec.selector",
            "at least one of",
        ),
        (POS.to_string(), "spec.selector", "Required value"),
        (
            format!("{SEL}  posture: {{transport: {{minTlsVersion: TLSv1.1}}}}\n"),
            "spec.posture.transport.minTlsVersion",
            "Unsupported value",
        ),
        (
            format!("{SEL}  posture: {{logging: {{retention: {{minimumMinutes: 60}}}}}}\n"),
            "spec.posture.logging.retention.minimumMinutes",
            "1440",
        ),
        (
            format!("{SEL}  posture: {{maintenance: {{backupRetention: {{minimumDays: 90}}}}}}\n"),
            "spec.posture.maintenance.backupRetention.minimumDays",
            "35",
        ),
        (
            format!(
                "{SEL}  posture: {{network: {{ingress: {{allowedSecurityGroups: [default]}}}}}}\n"
            ),
            "spec.posture.network.ingress.allowedSecurityGroups[0]",
            "should match",
        ),
        (
            format!("{SEL}  posture: {{network: {{ingress: {{allowedCidrs: [10.0.0.0/33]}}}}}}\n"),
            "spec.posture.network.ingress.allowedCidrs",
            "valid CIDR",
        ),
        (
            format!("{SEL}  posture: {{network: {{ingress: {{allowedCidrs: [0.0.0.0/0]}}}}}}\n"),
            "spec.posture.network.ingress.allowedCidrs",
            "never allowed",
        ),
        (
            format!("{SEL}  posture: {{network: {{publicAccess: Allowed}}}}\n"),
            "spec.posture.network.publicAccess",
            "Unsupported value",
        ),
        (
            format!("{SEL}  posture: {{audit: {{pgaudit: {{classes: [everything]}}}}}}\n"),
            "spec.posture.audit.pgaudit.classes[0]",
            "Unsupported value",
        ),
        (
            format!("{SEL}  posture: {{audit: {{pgaudit: {{classes: []}}}}}}\n"),
            "spec.posture.audit.pgaudit.classes",
            "at least 1",
        ),
        (
            format!("{SEL}  posture: {{audit: {{pgaudit: {{classes: [ddl], role: Bad-Role}}}}}}\n"),
            "spec.posture.audit.pgaudit.role",
            "should match",
        ),
        (
            format!("{SEL}  posture: {{encryption: {{storage: {{kmsKeyId: my-key}}}}}}\n"),
            "spec.posture.encryption.storage.kmsKeyId",
            "should match",
        ),
        (
            format!("{SEL}  posture: {{transport: {{caCertificate: {{allowed: [digicert]}}}}}}\n"),
            "spec.posture.transport.caCertificate.allowed[0]",
            "should match",
        ),
        (
            format!("{SEL}  posture: {{transport: {{caCertificate: {{minValidDays: 5000}}}}}}\n"),
            "spec.posture.transport.caCertificate.minValidDays",
            "3650",
        ),
        (
            format!("{SEL}  posture: {{logging: {{cloudwatchExports: [audit]}}}}\n"),
            "spec.posture.logging.cloudwatchExports[0]",
            "Unsupported value",
        ),
        (
            format!("{SEL}{POS}  controlModes: {{network.everything: Audit}}\n"),
            "spec.controlModes",
            "control ids",
        ),
        (
            format!("{SEL}{POS}  controlModes: {{transport.forceSsl: Sometimes}}\n"),
            "spec.controlModes",
            "Unsupported value",
        ),
        (
            format!("{SEL}{POS}  resyncSeconds: 5\n"),
            "spec.resyncSeconds",
            "10",
        ),
        (
            format!("{SEL}{POS}  resyncSeconds: 100000\n"),
            "spec.resyncSeconds",
            "86400",
        ),
        (
            format!("{SEL}{POS}  remediation: {{reboot: Whenever}}\n"),
            "spec.remediation.reboot",
            "Unsupported value",
        ),
        (
            format!("{SEL}{POS}  remediation: {{parameterGroupStrategy: Shared}}\n"),
            "spec.remediation.parameterGroupStrategy",
            "Unsupported value",
        ),
        (
            format!("{SEL}  posture: {{}}\n"),
            "spec.posture",
            "at least one",
        ),
        (
            format!("{SEL}  posture: {{transport: {{forceSSL: true}}}}\n"),
            "spec.posture.transport.forceSSL",
            "unknown field",
        ),
        (
            format!("{SEL}  posture: {{transport: {{forceSsl: yes-please}}}}\n"),
            "spec.posture.transport.forceSsl",
            "boolean",
        ),
        (
            format!("  selector: {{tags: {{env: prod}}, region: Mars}}\n{POS}"),
            "spec.selector.region",
            "should match",
        ),
        (
            format!("  selector: {{instanceIdentifiers: [\"1bad\"]}}\n{POS}"),
            "spec.selector.instanceIdentifiers[0]",
            "should match",
        ),
        (
            format!("  selector: {{instanceIdentifiers: []}}\n{POS}"),
            "spec.selector.instanceIdentifiers",
            "at least 1",
        ),
        (
            format!("  selector: {{tags: {{env: prod}}, engines: [mysql]}}\n{POS}"),
            "spec.selector.engines[0]",
            "Unsupported value",
        ),
        (
            format!("  selector: {{tags: {{{long_key}: x}}}}\n{POS}"),
            "spec.selector.tags",
            "at most 128",
        ),
    ];
    assert!(cases.len() >= 20);
    for (i, (spec, path, reason)) in cases.iter().enumerate() {
        let name = format!("bad-{i}");
        let out = cp.kubectl(&["create", "-f", "-"], Some(&policy_yaml(&ns, &name, spec)));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} was accepted:\n{spec}");
        assert!(
            stderr.contains(path) && stderr.contains(reason),
            "case {i}: expected {path:?} and {reason:?} in the apiserver's answer, got:\n{stderr}\nspec:\n{spec}"
        );
    }
    // Nothing was stored.
    let listed = cp.kubectl_ok(&["get", "dbsp", "-n", &ns, "-o", "name"], None);
    assert!(listed.trim().is_empty(), "{listed}");

    // The examples are accepted as they are.
    let _ = cp.kubectl(&["create", "namespace", "platform-security"], None);
    for entry in std::fs::read_dir(repo_root().join("examples")).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            cp.kubectl_ok(
                &[
                    "apply",
                    "--dry-run=server",
                    "-f",
                    path.to_str().expect("utf-8"),
                ],
                None,
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// 2–4. Audit → Enforce → static parameter and reboot → steady state.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_then_enforce_then_reboot_then_steady_state() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("flow");
    let emulator = Emulator::start(Some("small"));
    let op = Operator::start(cp, &emulator, &["--namespace", &ns]);
    let client = cp.client().await;
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(client, &ns);
    emulator.reset_calls();

    // Audit: findings in status, Ready=False NonCompliant, no mutating call.
    let spec = format!(
        "  selector: {{instanceIdentifiers: [legacy-prod]}}\n  mode: Audit\n  resyncSeconds: {RESYNC}\n  posture:\n    network: {{publicAccess: Forbidden}}\n    maintenance: {{deletionProtection: true, autoMinorVersionUpgrade: true, backupRetention: {{minimumDays: 7}}}}\n"
    );
    let t0 = Instant::now();
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&policy_yaml(&ns, "legacy", &spec)),
    );
    let p = wait_for(
        &api,
        "legacy",
        Duration::from_secs(60),
        "Audit → NonCompliant",
        &op,
        |p| is(p, "Ready", "False", "NonCompliant"),
    )
    .await;
    eprintln!(
        "audit: first status after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let status = p.status.as_ref().expect("status");
    assert_eq!(status.summary.selected, 1);
    assert_eq!(status.summary.non_compliant, 1);
    let db = &status.databases[0];
    assert_eq!(db.id, "legacy-prod");
    let bad: Vec<&str> = db
        .findings
        .iter()
        .filter(|f| f.status == FindingStatus::NonCompliant)
        .map(|f| f.control.as_str())
        .collect();
    for control in [
        "network.publicAccess",
        "maintenance.deletionProtection",
        "maintenance.autoMinorVersionUpgrade",
    ] {
        assert!(bad.contains(&control), "{control} not reported: {bad:?}");
    }
    let ready = condition(&p, "Ready").expect("Ready");
    assert!(ready.message.contains("legacy-prod"), "{}", ready.message);
    for c in ["Ready", "Reconciling", "Stalled"] {
        assert_eq!(
            condition(&p, c).and_then(|c| c.observed_generation),
            Some(1),
            "{c}"
        );
    }
    assert_eq!(
        current(&p, "Stalled"),
        Some(("False".into(), "Healthy".into()))
    );
    let columns = cp.kubectl_ok(&["get", "dbsp", "-n", &ns], None);
    let header = columns.lines().next().unwrap_or_default();
    for col in [
        "NAME",
        "MODE",
        "SELECTED",
        "COMPLIANT",
        "NONCOMPLIANT",
        "READY",
        "AGE",
    ] {
        assert!(header.contains(col), "column {col} missing:\n{columns}");
    }
    let row = columns.lines().nth(1).unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        &["legacy", "Audit", "1", "0", "1", "False"],
        "{columns}"
    );
    assert_eq!(
        mutating(&emulator),
        Vec::<String>::new(),
        "Audit made a mutating call"
    );
    assert!(
        !emulator.calls().is_empty(),
        "the operator read nothing from AWS"
    );

    // Enforce: remediated, then Ready=True.
    let t1 = Instant::now();
    patch_spec(&api, "legacy", json!({"mode": "Enforce"})).await;
    wait_for(
        &api,
        "legacy",
        Duration::from_secs(60),
        "Enforce → Ready",
        &op,
        |p| is(p, "Ready", "True", "Compliant"),
    )
    .await;
    eprintln!("enforce: Ready after {:.1}s", t1.elapsed().as_secs_f64());
    let calls = mutating(&emulator);
    assert!(
        calls.contains(&"rds:ModifyDBInstance".to_string()),
        "{calls:?}"
    );
    let waited = cp.kubectl(
        &[
            "wait",
            "--for=condition=Ready",
            "dbsp/legacy",
            "-n",
            &ns,
            "--timeout=30s",
        ],
        None,
    );
    assert!(
        waited.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let evs = events(cp, &ns);
    assert!(
        evs.iter().any(|(t, r, a, n)| t == "Normal"
            && r == "Remediated"
            && a == "ModifyDBInstance"
            && n.contains("legacy-prod")),
        "no Remediated event naming the call and the database: {evs:#?}"
    );

    // A static parameter: PendingReboot while the policy allows no reboot.
    let t2 = Instant::now();
    patch_spec(
        &api,
        "legacy",
        json!({"posture": {"audit": {"pgaudit": {"classes": ["ddl"]}}}}),
    )
    .await;
    let p = wait_for(
        &api,
        "legacy",
        Duration::from_secs(60),
        "PendingReboot",
        &op,
        |p| is(p, "Ready", "False", "PendingReboot"),
    )
    .await;
    eprintln!(
        "static parameter: PendingReboot after {:.1}s",
        t2.elapsed().as_secs_f64()
    );
    let finding = p.status.as_ref().expect("status").databases[0]
        .findings
        .iter()
        .find(|f| f.control.as_str() == "audit.pgaudit")
        .cloned()
        .expect("pgaudit finding");
    assert_eq!(finding.status, FindingStatus::PendingReboot);
    assert!(
        !mutating(&emulator).contains(&"rds:RebootDBInstance".to_string()),
        "rebooted although the policy allows no reboot"
    );

    // Reboot allowed: compliant.
    let t3 = Instant::now();
    patch_spec(
        &api,
        "legacy",
        json!({"remediation": {"reboot": "Immediately"}}),
    )
    .await;
    wait_for(
        &api,
        "legacy",
        Duration::from_secs(60),
        "rebooted → Ready",
        &op,
        |p| is(p, "Ready", "True", "Compliant") && is(p, "Reconciling", "False", "Idle"),
    )
    .await;
    eprintln!(
        "reboot allowed: Ready after {:.1}s",
        t3.elapsed().as_secs_f64()
    );
    assert!(mutating(&emulator).contains(&"rds:RebootDBInstance".to_string()));

    // Steady state: several resyncs, no status write, no mutating call.
    let p = wait_for(
        &api,
        "legacy",
        Duration::from_secs(30),
        "settled",
        &op,
        |p| {
            p.status.as_ref().is_some_and(|s| {
                s.databases
                    .iter()
                    .flat_map(|d| &d.findings)
                    .all(|f| f.status == FindingStatus::Compliant)
            }) && is(p, "Reconciling", "False", "Idle")
        },
    )
    .await;
    let before = rv(&p);
    let writes_before = op.metric("pgbaseline_status_writes_total");
    let reconciles_before = op.metric("pgbaseline_reconciles_total");
    emulator.reset_calls();
    // Three resyncs, counted by the operator itself rather than guessed from the clock.
    wait_reconciles(
        &op,
        reconciles_before + 3.0,
        Duration::from_secs(6 * RESYNC),
        "three resyncs in steady state",
    )
    .await;
    let p = api.get("legacy").await.expect("policy");
    assert_eq!(rv(&p), before, "status was written in steady state");
    assert_eq!(op.metric("pgbaseline_status_writes_total"), writes_before);
    assert_eq!(
        mutating(&emulator),
        Vec::<String>::new(),
        "mutating call in steady state"
    );
    let reads = emulator.count_calls("DescribeDBInstances");
    assert!(
        (2..=4).contains(&reads),
        "expected one sweep per resync (2-4 in three resyncs of {RESYNC}s), saw {reads}"
    );
    assert!(op.metric("pgbaseline_reconciles_total") >= reconciles_before + 2.0);
    let metrics = op.metrics();
    let mean = |name: &str| {
        sum_metric(&metrics, &format!("{name}_sum"))
            / sum_metric(&metrics, &format!("{name}_count"))
    };
    eprintln!(
        "reconciles: {} (mean {:.1} ms); sweeps: {} (mean {:.1} ms); status writes: {}",
        sum_metric(&metrics, "pgbaseline_reconciles_total"),
        1000.0 * mean("pgbaseline_reconcile_duration_seconds"),
        sum_metric(&metrics, "pgbaseline_sweep_duration_seconds_count"),
        1000.0 * mean("pgbaseline_sweep_duration_seconds"),
        sum_metric(&metrics, "pgbaseline_status_writes_total"),
    );
    for family in [
        "pgbaseline_findings{",
        "pgbaseline_remediations_total{",
        "pgbaseline_aws_calls_total{",
        "pgbaseline_sweep_duration_seconds_count",
        "pgbaseline_last_successful_sweep_timestamp_seconds",
        "pgbaseline_reconcile_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    // Every metric the chart's alerts and Grafana dashboard use is one this operator exports.
    let used = chart_metric_names();
    assert!(used.len() >= 8, "{used:?}");
    for name in used {
        assert!(
            exports(&metrics, &name),
            "{name}, used by the chart's alerts or dashboard, is not in /metrics:\n{metrics}"
        );
    }
}

/// Every `pgbaseline_*` metric name in the chart's alert rules and Grafana dashboard.
fn chart_metric_names() -> std::collections::BTreeSet<String> {
    let files = ["prometheus-rules.yaml", "grafana-dashboard.json"];
    let mut names = std::collections::BTreeSet::new();
    for file in files {
        let path = common::repo_root()
            .join("charts/pgbaseline/files")
            .join(file);
        let text = std::fs::read_to_string(&path).expect("chart file");
        for (start, _) in text.match_indices("pgbaseline_") {
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// Whether `/metrics` has the series `name`: a sample of it, or its family's `# TYPE` line (a
/// family without samples yet, e.g. no remediation so far) with the suffix its type gives.
fn exports(metrics: &str, name: &str) -> bool {
    metrics.lines().any(|line| {
        if let Some(sample) = line.strip_prefix(name) {
            return sample.starts_with('{') || sample.starts_with(' ');
        }
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            return false;
        };
        let mut words = declared.split_whitespace();
        let (Some(family), Some(kind)) = (words.next(), words.next()) else {
            return false;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            _ => &[""],
        };
        suffixes.iter().any(|s| format!("{family}{s}") == name)
    })
}

// ------------------------------------------------------------------------------------------
// 5. Drift and deletion.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_detected_within_one_resync_and_deleted_policies_cost_nothing() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("drift");
    let emulator = Emulator::start(Some("small"));
    let op = Operator::start(cp, &emulator, &["--namespace", &ns]);
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);

    let spec = format!(
        "  selector: {{instanceIdentifiers: [payments-prod]}}\n  resyncSeconds: {RESYNC}\n  posture:\n    network: {{publicAccess: Forbidden}}\n    maintenance: {{deletionProtection: true}}\n    auth: {{iam: true}}\n"
    );
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&policy_yaml(&ns, "payments", &spec)),
    );
    wait_for(
        &api,
        "payments",
        Duration::from_secs(60),
        "Ready",
        &op,
        |p| is(p, "Ready", "True", "Compliant"),
    )
    .await;

    // Drift injected behind the operator's back.
    rds(&emulator)
        .await
        .modify_db_instance()
        .db_instance_identifier("payments-prod")
        .publicly_accessible(true)
        .apply_immediately(true)
        .send()
        .await
        .expect("inject drift");
    let injected = Instant::now();
    let p = wait_for(
        &api,
        "payments",
        Duration::from_secs(RESYNC + 10),
        "drift reported",
        &op,
        |p| is(p, "Ready", "False", "NonCompliant"),
    )
    .await;
    let detected = injected.elapsed();
    eprintln!(
        "drift visible in status after {:.1}s (resync {RESYNC}s)",
        detected.as_secs_f64()
    );
    assert!(
        // One resync interval, plus a sweep and a status write on a busy 2-core machine.
        detected <= Duration::from_secs(RESYNC + 5),
        "drift took {detected:?} to show, resync is {RESYNC}s"
    );
    assert!(
        condition(&p, "Ready")
            .expect("Ready")
            .message
            .contains("network.publicAccess")
    );
    let evs = events(cp, &ns);
    assert!(
        evs.iter()
            .any(|(t, r, _, _)| t == "Warning" && r == "NonCompliant"),
        "{evs:#?}"
    );

    // Deleted: nothing more is read or changed on its behalf. A second policy with the same
    // resync in another region keeps time: two of its reconciles span two intervals in which
    // the deleted one would have read its region.
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&policy_yaml(
            &ns,
            "clock",
            &format!(
                "  selector: {{region: {CLOCK_REGION}, instanceIdentifiers: [nothing-here]}}\n  resyncSeconds: {RESYNC}\n  posture:\n    network: {{publicAccess: Forbidden}}\n"
            ),
        )),
    );
    wait_for(
        &api,
        "clock",
        Duration::from_secs(60),
        "the clock policy reconciled",
        &op,
        |p| p.status.is_some(),
    )
    .await;
    api.delete("payments", &DeleteParams::default())
        .await
        .expect("delete");
    let payments_series = format!("policy=\"{ns}/payments\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    while op.metrics().contains(&payments_series) {
        assert!(
            Instant::now() < deadline,
            "finding series of a deleted policy remain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    emulator.reset_calls();
    let reconciles = op.metric("pgbaseline_reconciles_total");
    wait_reconciles(
        &op,
        reconciles + 2.0,
        Duration::from_secs(4 * RESYNC),
        "two resyncs of the clock policy",
    )
    .await;
    let calls = emulator.calls();
    assert!(
        calls.iter().any(|c| c.region == CLOCK_REGION),
        "the clock policy read its region: {calls:?}"
    );
    let others: Vec<_> = calls.iter().filter(|c| c.region != CLOCK_REGION).collect();
    assert!(
        others.is_empty(),
        "AWS calls after the policy was deleted: {others:?}"
    );

    // Created again under the same name: a new object, reconciled at once.
    let t = Instant::now();
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&policy_yaml(&ns, "payments", &spec)),
    );
    wait_for(
        &api,
        "payments",
        Duration::from_secs(RESYNC),
        "re-created policy reconciled",
        &op,
        |p| is(p, "Ready", "False", "NonCompliant"),
    )
    .await;
    eprintln!(
        "re-created policy reconciled after {:.1}s",
        t.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------------------------------
// 5. Two policies on one database.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_policies_on_one_database_converge_without_flapping() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("two");
    let emulator = Emulator::start(Some("small"));
    let op = Operator::start(cp, &emulator, &["--namespace", &ns]);
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);
    emulator.reset_calls();

    let a = format!(
        "  selector: {{instanceIdentifiers: [sandbox-dev]}}\n  mode: Enforce\n  resyncSeconds: {RESYNC}\n  posture:\n    maintenance: {{deletionProtection: true, backupRetention: {{minimumDays: 7}}}}\n"
    );
    let b = format!(
        "  selector: {{tags: {{env: dev}}, engines: [postgres]}}\n  mode: Enforce\n  resyncSeconds: {RESYNC}\n  posture:\n    maintenance: {{backupRetention: {{minimumDays: 14}}, autoMinorVersionUpgrade: true}}\n"
    );
    let both = format!(
        "{}\n---\n{}",
        policy_yaml(&ns, "a", &a),
        policy_yaml(&ns, "b", &b)
    );
    cp.kubectl_ok(&["apply", "-f", "-"], Some(&both));
    let settled = |p: &DatabaseSecurityPolicy| {
        is(p, "Ready", "True", "Compliant")
            && is(p, "Reconciling", "False", "Idle")
            && p.status.as_ref().is_some_and(|s| {
                s.databases
                    .iter()
                    .flat_map(|d| &d.findings)
                    .all(|f| f.status == FindingStatus::Compliant)
            })
    };
    let pa = wait_for(
        &api,
        "a",
        Duration::from_secs(60),
        "a settled",
        &op,
        settled,
    )
    .await;
    let pb = wait_for(
        &api,
        "b",
        Duration::from_secs(60),
        "b settled",
        &op,
        settled,
    )
    .await;
    let modifies = mutating(&emulator);
    eprintln!("two policies converged with {modifies:?}");
    assert!(
        modifies.len() <= 4,
        "too many changes to converge: {modifies:?}"
    );

    // No flapping: several resyncs, no write, no change.
    let (rva, rvb) = (rv(&pa), rv(&pb));
    emulator.reset_calls();
    let reconciles = op.metric("pgbaseline_reconciles_total");
    wait_reconciles(
        &op,
        reconciles + 6.0,
        Duration::from_secs(5 * RESYNC),
        "three resyncs of both policies",
    )
    .await;
    assert_eq!(mutating(&emulator), Vec::<String>::new());
    assert_eq!(rv(&api.get("a").await.expect("a")), rva);
    assert_eq!(rv(&api.get("b").await.expect("b")), rvb);
    // The two policies shared their sweeps: about one DescribeDBInstances per resync.
    let sweeps = emulator.count_calls("DescribeDBInstances");
    assert!(
        sweeps <= 5,
        "{sweeps} sweeps in {}s for two policies: the sweep is not shared",
        3 * RESYNC
    );
    let backup = rds(&emulator)
        .await
        .describe_db_instances()
        .db_instance_identifier("sandbox-dev")
        .send()
        .await
        .expect("describe")
        .db_instances()[0]
        .backup_retention_period();
    assert_eq!(backup, Some(14));
}

// ------------------------------------------------------------------------------------------
// 5. Leader election.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_election_exactly_one_remediates_and_the_standby_takes_over() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("leader");
    let emulator = Emulator::start(Some("small"));
    let args = |id: &'static str| {
        vec![
            "--namespace".to_string(),
            ns.clone(),
            "--leader-election".to_string(),
            "--leader-election-namespace".to_string(),
            ns.clone(),
            "--identity".to_string(),
            id.to_string(),
        ]
    };
    let a_args = args("op-a");
    let b_args = args("op-b");
    let mut a = Operator::start(
        cp,
        &emulator,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut b = Operator::start(
        cp,
        &emulator,
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leaders = a.metric("pgbaseline_leader") + b.metric("pgbaseline_leader");
        if leaders >= 1.0 {
            assert_eq!(leaders, 1.0, "two leaders");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nobody became the leader:\n{}",
            a.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for op in [&a, &b] {
        let (code, _) = op.get("/readyz").expect("readyz");
        assert_eq!(code, 200, "standbys are ready too");
    }
    let (leader, standby) = if a.metric("pgbaseline_leader") == 1.0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);
    emulator.reset_calls();
    let spec = format!(
        "  selector: {{instanceIdentifiers: [sandbox-dev]}}\n  mode: Enforce\n  resyncSeconds: {RESYNC}\n  posture:\n    maintenance: {{deletionProtection: true}}\n"
    );
    cp.kubectl_ok(&["apply", "-f", "-"], Some(&policy_yaml(&ns, "le", &spec)));
    wait_for(&api, "le", Duration::from_secs(60), "Ready", leader, |p| {
        is(p, "Ready", "True", "Compliant")
    })
    .await;
    // Let the standby have every chance to act too: one more resync of the leader.
    let reconciles = leader.metric("pgbaseline_reconciles_total");
    wait_reconciles(
        leader,
        reconciles + 1.0,
        Duration::from_secs(3 * RESYNC),
        "one more resync of the leader",
    )
    .await;
    let modifies: Vec<String> = mutating(&emulator);
    assert_eq!(
        modifies,
        vec!["rds:ModifyDBInstance".to_string()],
        "exactly one remediation"
    );
    assert!(leader.metric("pgbaseline_remediations_total") >= 1.0);
    assert_eq!(standby.metric("pgbaseline_remediations_total"), 0.0);
    assert_eq!(
        standby.metric("pgbaseline_aws_calls_total"),
        0.0,
        "the standby called AWS"
    );
    assert_eq!(standby.metric("pgbaseline_reconciles_total"), 0.0);

    // Kill the leader hard; the standby takes the lease and remediates new drift.
    leader.signal("KILL");
    let killed = Instant::now();
    rds(&emulator)
        .await
        .modify_db_instance()
        .db_instance_identifier("sandbox-dev")
        .deletion_protection(false)
        .apply_immediately(true)
        .send()
        .await
        .expect("inject drift");
    emulator.reset_calls();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if standby.metric("pgbaseline_remediations_total") >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not take over:\n{}",
            standby.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "standby remediated {:.1}s after the leader was killed",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(standby.metric("pgbaseline_leader"), 1.0);
    assert!(standby.is_running());
    let calls = mutating(&emulator);
    assert_eq!(calls, vec!["rds:ModifyDBInstance".to_string()]);
    wait_for(
        &api,
        "le",
        Duration::from_secs(30),
        "Ready again",
        standby,
        |p| is(p, "Ready", "True", "Compliant"),
    )
    .await;
    // Graceful shutdown: SIGTERM ends the process promptly and cleanly.
    standby.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    while standby.is_running() {
        assert!(Instant::now() < deadline, "no graceful exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = standby.log_text();
    assert!(log.contains("released the lease"), "{}", standby.log_tail());
}

// ------------------------------------------------------------------------------------------
// 5. The apiserver goes away and comes back.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_recovers_after_an_apiserver_restart() {
    // Its own control plane: the restart must not disturb tests running alongside.
    let cp = &ControlPlane::start();
    cp.install_crd();
    let ns = cp.namespace("restart");
    let emulator = Emulator::start(Some("small"));
    let mut op = Operator::start(cp, &emulator, &["--namespace", &ns]);
    let spec = format!(
        "  selector: {{instanceIdentifiers: [orders-prod]}}\n  resyncSeconds: {RESYNC}\n  posture:\n    maintenance: {{deletionProtection: true}}\n"
    );
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&policy_yaml(&ns, "orders", &spec)),
    );
    {
        let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);
        wait_for(
            &api,
            "orders",
            Duration::from_secs(60),
            "first status",
            &op,
            |p| is(p, "Ready", "False", "NonCompliant"),
        )
        .await;
    }
    let t = Instant::now();
    cp.restart_apiserver(Duration::from_secs(3));
    eprintln!("apiserver restarted in {:.1}s", t.elapsed().as_secs_f64());
    assert!(op.is_running(), "the operator died with the apiserver");
    // A spec change after the restart is picked up without restarting the operator.
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);
    let t = Instant::now();
    patch_spec(&api, "orders", json!({"mode": "Enforce"})).await;
    wait_for(
        &api,
        "orders",
        Duration::from_secs(90),
        "Enforce after restart",
        &op,
        |p| is(p, "Ready", "True", "Compliant"),
    )
    .await;
    eprintln!(
        "spec change reconciled {:.1}s after the restart",
        t.elapsed().as_secs_f64()
    );
    assert!(op.is_running());
}

// ------------------------------------------------------------------------------------------
// One sweep serves every policy of a region.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_policies_share_one_sweep_per_resync() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("many");
    let emulator = Emulator::start(Some("small"));
    let op = Operator::start(cp, &emulator, &["--namespace", &ns]);
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);
    const N: usize = 20;
    let manifests: Vec<String> = (0..N)
        .map(|i| {
            let spec = format!(
                "  selector: {{tags: {{env: prod}}}}\n  resyncSeconds: {RESYNC}\n  posture:\n    transport: {{forceSsl: true}}\n    maintenance: {{backupRetention: {{minimumDays: {}}}}}\n",
                1 + i
            );
            policy_yaml(&ns, &format!("p{i:02}"), &spec)
        })
        .collect();
    let t = Instant::now();
    cp.kubectl_ok(&["apply", "-f", "-"], Some(&manifests.join("\n---\n")));
    for i in 0..N {
        wait_for(
            &api,
            &format!("p{i:02}"),
            Duration::from_secs(60),
            "status",
            &op,
            |p| current(p, "Ready").is_some(),
        )
        .await;
    }
    eprintln!(
        "{N} policies have status after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    emulator.reset_calls();
    let reconciles = op.metric("pgbaseline_reconciles_total");
    let t = Instant::now();
    wait_reconciles(
        &op,
        reconciles + (2 * N) as f64,
        Duration::from_secs(4 * RESYNC),
        "two resyncs of every policy",
    )
    .await;
    let calls = emulator.calls();
    let sweeps = calls
        .iter()
        .filter(|c| c.action == "DescribeDBInstances")
        .count();
    eprintln!(
        "{N} policies, two resyncs each in {:.1}s: {sweeps} sweeps, {} AWS calls",
        t.elapsed().as_secs_f64(),
        calls.len()
    );
    assert!(
        (1..=4).contains(&sweeps),
        "{sweeps} sweeps for two resyncs of {N} policies: expected about one per resync"
    );
    assert_eq!(mutating(&emulator), Vec::<String>::new());
}

// ------------------------------------------------------------------------------------------
// 8. Managed parameter groups: garbage collection.

async fn group_exists(emulator: &Emulator, name: &str) -> bool {
    rds(emulator)
        .await
        .describe_db_parameter_groups()
        .db_parameter_group_name(name)
        .send()
        .await
        .is_ok_and(|o| {
            o.db_parameter_groups()
                .iter()
                .any(|g| g.db_parameter_group_name() == Some(name))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_managed_groups_are_deleted_after_the_grace_period_only_when_tagged_ours() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("gc");
    let emulator = Emulator::start(Some("small"));
    let client = rds(&emulator).await;
    let tag = |v: &str| {
        aws_sdk_rds::types::Tag::builder()
            .key("pgbaseline.io/managed")
            .value(v)
            .build()
    };
    // History: a managed copy nobody uses any more; a group merely named like one; a managed
    // copy still in use.
    for (name, tags) in [
        ("pgbaseline-postgres16-00000000000000aa", vec![tag("true")]),
        ("pgbaseline-postgres16-00000000000000bb", vec![]),
        ("pgbaseline-postgres16-00000000000000cc", vec![tag("true")]),
    ] {
        client
            .copy_db_parameter_group()
            .source_db_parameter_group_identifier("default.postgres16")
            .target_db_parameter_group_identifier(name)
            .target_db_parameter_group_description("pgbaseline managed copy of default.postgres16")
            .set_tags(Some(tags))
            .send()
            .await
            .expect("copy");
    }
    client
        .modify_db_instance()
        .db_instance_identifier("sandbox-dev")
        .db_parameter_group_name("pgbaseline-postgres16-00000000000000cc")
        .apply_immediately(true)
        .send()
        .await
        .expect("attach");

    // An Enforce policy (on another database) lets the operator collect in this region.
    let spec = format!(
        "  selector: {{instanceIdentifiers: [payments-prod]}}\n  mode: Enforce\n  resyncSeconds: {RESYNC}\n  posture:\n    maintenance: {{deletionProtection: true}}\n"
    );
    let grace = ["--namespace", ns.as_str(), "--managed-group-grace", "4s"];
    let mut op = Operator::start(cp, &emulator, &grace);
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);
    cp.kubectl_ok(&["apply", "-f", "-"], Some(&policy_yaml(&ns, "gc", &spec)));
    wait_for(&api, "gc", Duration::from_secs(60), "Ready", &op, |p| {
        is(p, "Ready", "True", "Compliant")
    })
    .await;
    // Seen unused once, within the grace period: kept. A restart here forgets when it was
    // first seen, so the grace period starts over (never shorter).
    assert!(group_exists(&emulator, "pgbaseline-postgres16-00000000000000aa").await);
    op.kill();
    let op = Operator::start(cp, &emulator, &grace);
    let deadline = Instant::now() + Duration::from_secs(3 * RESYNC + 10);
    while group_exists(&emulator, "pgbaseline-postgres16-00000000000000aa").await {
        assert!(
            Instant::now() < deadline,
            "unused managed group not collected:\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Named like ours but not tagged: kept. In use: kept.
    assert!(group_exists(&emulator, "pgbaseline-postgres16-00000000000000bb").await);
    assert!(group_exists(&emulator, "pgbaseline-postgres16-00000000000000cc").await);
    // The deletion is counted once the call returns: wait for the counter, not a fixed time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while op.metric("pgbaseline_managed_parameter_groups_deleted_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "deletion not counted:\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        op.metric("pgbaseline_managed_parameter_groups_deleted_total"),
        1.0
    );
    assert!(op.metric("pgbaseline_managed_parameter_groups{") >= 2.0);
}

// ------------------------------------------------------------------------------------------
// 9. Stop means stop: a policy deleted, switched to Audit or narrowed, and a replica that lost
//    its Lease, stop remediating between two AWS calls.

/// Databases the stop tests remediate (one `ModifyDBInstance` each) and the emulator's latency
/// per call while they do: the whole remediation takes about 10 s, long enough to interrupt.
const STOP_FLEET: usize = 40;
const STOP_LATENCY_MS: u64 = 200;
/// How soon after an interruption the operator must have stopped starting mutating calls (the
/// watch event or lease deadline reaching it, and the call in flight).
const STOP_WITHIN: Duration = Duration::from_secs(2);
/// How often [`CallWatch`] reads the call log.
const CALL_POLL: Duration = Duration::from_millis(50);

/// Reads the emulator's call log from a thread and notes when each call was first seen. The log
/// lists a call once it is answered, so a call seen at `t` started at `t - STOP_LATENCY_MS`
/// or earlier.
struct CallWatch {
    url: String,
    /// Calls logged before the watch started (seeding): not counted.
    baseline: usize,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(common::Call, Instant)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn fetch_calls(url: &str) -> Option<Vec<common::Call>> {
    let body: Value = ureq::get(&format!("{url}/_emulator/calls"))
        .call()
        .ok()?
        .body_mut()
        .read_json()
        .ok()?;
    common::parse_calls(&body)
}

impl CallWatch {
    /// Starts watching; the call log must not be reset while it watches.
    fn start(emulator: &Emulator) -> CallWatch {
        use std::sync::atomic::Ordering;
        let before: Vec<_> = fetch_calls(&emulator.url)
            .expect("call log")
            .into_iter()
            .map(|c| (c, Instant::now()))
            .collect();
        let baseline = before.len();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(before));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let url = emulator.url.clone();
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    Self::read(&url, &seen);
                    std::thread::sleep(CALL_POLL);
                }
            })
        };
        CallWatch {
            url: emulator.url.clone(),
            baseline,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn read(url: &str, seen: &std::sync::Mutex<Vec<(common::Call, Instant)>>) {
        if let Some(calls) = fetch_calls(url) {
            let now = Instant::now();
            let mut seen = seen.lock().expect("call watch");
            let known = seen.len();
            seen.extend(calls.into_iter().skip(known).map(|c| (c, now)));
        }
    }

    /// Lets every call already sent to the emulator land in the log, then reads it: a read of
    /// our own, sent now, arrives after them and waits the same latency, so once it is answered
    /// they are too.
    async fn settle(&self, emulator: &Emulator) {
        rds(emulator)
            .await
            .describe_db_instances()
            .max_records(20)
            .send()
            .await
            .expect("a read to settle the call log");
        Self::read(&self.url, &self.seen);
    }

    /// Every mutating call since the watch started, with when it was first seen.
    fn mutating(&self) -> Vec<(String, Instant)> {
        self.seen
            .lock()
            .expect("call watch")
            .iter()
            .skip(self.baseline)
            .filter(|(c, _)| c.is_mutating())
            .map(|(c, at)| (format!("{}:{}", c.service, c.action), *at))
            .collect()
    }

    /// The mutating calls first seen after `t`, with how long after.
    fn mutating_after(&self, t: Instant) -> Vec<(String, Duration)> {
        self.mutating()
            .into_iter()
            .filter(|(_, at)| *at > t)
            .map(|(call, at)| (call, at - t))
            .collect()
    }

    /// Waits until at least `n` mutating calls were seen (a remediation is under way).
    async fn wait_mutating(&self, n: usize, timeout: Duration, op: &Operator) {
        let deadline = Instant::now() + timeout;
        while self.mutating().len() < n {
            assert!(
                Instant::now() < deadline,
                "no remediation under way after {timeout:?}:\n{}",
                op.log_tail()
            );
            tokio::time::sleep(CALL_POLL).await;
        }
    }
}

impl Drop for CallWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The emulator with `STOP_FLEET` more instances (`stop-NN`, tagged `batch=stop`), none with
/// deletion protection, every AWS call slowed by `STOP_LATENCY_MS`.
async fn stop_fleet() -> Emulator {
    let emulator = Emulator::start(Some("small"));
    let client = rds(&emulator).await;
    for i in 0..STOP_FLEET {
        common::create_tagged_instance(&client, &format!("stop-{i:02}"), ("batch", "stop")).await;
    }
    emulator.set_faults(json!({ "latency_ms": STOP_LATENCY_MS }));
    emulator
}

/// An Enforce policy that turns on deletion protection on the `STOP_FLEET` instances.
fn stop_policy(ns: &str) -> String {
    policy_yaml(
        ns,
        "big",
        "  selector: {tags: {batch: stop}}\n  mode: Enforce\n  posture:\n    maintenance: {deletionProtection: true}\n",
    )
}

#[derive(Debug, Clone, Copy)]
enum Interruption {
    Delete,
    SwitchToAudit,
    NarrowSelector,
}

/// Interrupts a large remediation as `interruption` says and checks that no mutating call
/// starts more than `STOP_WITHIN` later. The wait ends on an observable event: the interrupted
/// reconcile counted (deletion), or the status of the new generation (a changed spec, which is
/// reconciled only after the interrupted run ended).
async fn remediation_stops_when(interruption: Interruption) {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("stop");
    let emulator = stop_fleet().await;
    let op = Operator::start(cp, &emulator, &["--namespace", &ns]);
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);
    let watch = CallWatch::start(&emulator);
    cp.kubectl_ok(&["apply", "-f", "-"], Some(&stop_policy(&ns)));
    watch.wait_mutating(3, Duration::from_secs(90), &op).await;

    let reconciles = op.metric("pgbaseline_reconciles_total");
    let interrupted = Instant::now();
    match interruption {
        Interruption::Delete => {
            api.delete("big", &DeleteParams::default())
                .await
                .expect("delete");
        }
        Interruption::SwitchToAudit => patch_spec(&api, "big", json!({"mode": "Audit"})).await,
        Interruption::NarrowSelector => {
            patch_spec(
                &api,
                "big",
                json!({"selector": {"tags": {"batch": "stop", "team": "nobody"}}}),
            )
            .await
        }
    }
    match interruption {
        Interruption::Delete => {
            let deadline = Instant::now() + Duration::from_secs(120);
            while op.metric("pgbaseline_reconciles_total") <= reconciles {
                assert!(
                    Instant::now() < deadline,
                    "the interrupted reconcile never ended:\n{}",
                    op.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Interruption::SwitchToAudit | Interruption::NarrowSelector => {
            wait_for(
                &api,
                "big",
                Duration::from_secs(120),
                "status of the changed spec",
                &op,
                |p| {
                    p.status
                        .as_ref()
                        .is_some_and(|s| s.observed_generation == p.metadata.generation)
                },
            )
            .await;
        }
    }
    let late = watch.mutating_after(interrupted);
    let total = watch.mutating().len();
    eprintln!(
        "{interruption:?}: {total} changes in all, {} seen after the interruption: {late:?}",
        late.len()
    );
    // A call seen at `d` started at `d - latency` at the latest, give or take a poll.
    let bound = STOP_WITHIN + Duration::from_millis(STOP_LATENCY_MS) + 2 * CALL_POLL;
    let too_late: Vec<_> = late.iter().filter(|(_, d)| *d > bound).collect();
    assert!(
        too_late.is_empty(),
        "{interruption:?}: {} mutating calls started more than {STOP_WITHIN:?} after the \
         interruption (of {} after it): {too_late:?}\n{}",
        too_late.len(),
        late.len(),
        op.log_tail()
    );
    assert!(
        total < STOP_FLEET,
        "{interruption:?}: all {total} changes were made: the test did not interrupt anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_enforce_policy_stops_its_remediation_between_two_calls() {
    remediation_stops_when(Interruption::Delete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_a_policy_to_audit_stops_its_remediation_between_two_calls() {
    remediation_stops_when(Interruption::SwitchToAudit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_a_selector_stops_the_remediation_between_two_calls() {
    remediation_stops_when(Interruption::NarrowSelector).await;
}

fn leader_args(ns: &str, identity: &str) -> Vec<String> {
    [
        "--namespace",
        ns,
        "--leader-election",
        "--leader-election-namespace",
        ns,
        "--identity",
        identity,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start_leader_elected(cp: &ControlPlane, emulator: &Emulator, args: &[String]) -> Operator {
    Operator::start(
        cp,
        emulator,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// Waits until the operator has counted at least `count` reconciles (of every result): the
/// observable end of a "nothing should happen meanwhile" window.
async fn wait_reconciles(op: &Operator, count: f64, timeout: Duration, what: &str) {
    op.wait_metric_at_least("pgbaseline_reconciles_total", count, timeout, what)
        .await;
}

async fn wait_metric(op: &Operator, name: &str, value: f64, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while op.metric(name) != value {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_makes_no_mutating_call_after_resuming() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;

    let cp = ControlPlane::shared();
    let ns = cp.namespace("paused");
    let emulator = stop_fleet().await;
    let op = start_leader_elected(cp, &emulator, &leader_args(&ns, "paused"));
    wait_metric(
        &op,
        "pgbaseline_leader",
        1.0,
        Duration::from_secs(30),
        "leader",
    )
    .await;
    let watch = CallWatch::start(&emulator);
    cp.kubectl_ok(&["apply", "-f", "-"], Some(&stop_policy(&ns)));
    watch.wait_mutating(3, Duration::from_secs(90), &op).await;

    // Paused in the middle of the remediation (a long GC pause, a frozen node, SIGSTOP) ...
    op.signal("STOP");
    let paused = Instant::now();
    // ... past its lease: another replica may take it over, and does (the test plays it).
    let leases: Api<Lease> = Api::namespaced(cp.client().await, &ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lease = loop {
        let lease = leases.get("pgbaseline-leader").await.expect("lease");
        let spec = lease.spec.clone().unwrap_or_default();
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(renewed)), Some(seconds)) => {
                Timestamp::now().as_millisecond() - renewed.as_millisecond()
                    > i64::from(seconds) * 1000 + 1000
            }
            _ => false,
        };
        if expired {
            break lease;
        }
        assert!(
            Instant::now() < deadline,
            "the lease never expired: {spec:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some("another-replica".into());
    spec.acquire_time = Some(MicroTime(Timestamp::now()));
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    spec.lease_duration_seconds = Some(3600);
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    leases
        .replace("pgbaseline-leader", &Default::default(), &lease)
        .await
        .expect("take the lease over");
    // Everything sent before the pause has been answered long ago.
    let before = watch.mutating();
    eprintln!(
        "paused {:.1}s after {} changes; lease taken over",
        paused.elapsed().as_secs_f64(),
        before.len()
    );

    op.signal("CONT");
    let resumed = Instant::now();
    // The replica's own word that it stood down ends the wait.
    wait_metric(
        &op,
        "pgbaseline_leader",
        0.0,
        Duration::from_secs(30),
        "the resumed replica stands down",
    )
    .await;
    // A call it sent before standing down may still be on its way (its future was dropped, the
    // request was not): let it land.
    watch.settle(&emulator).await;
    let after = watch.mutating_after(resumed);
    assert!(
        after.is_empty(),
        "mutating calls after resuming without the lease: {after:?}\n{}",
        op.log_tail()
    );
    assert!(
        before.len() < STOP_FLEET,
        "the remediation was over before the pause"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_started_with_the_same_identity_do_not_both_lead() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("twins");
    let emulator = Emulator::start(Some("small"));
    let args = leader_args(&ns, "twin");
    let a = start_leader_elected(cp, &emulator, &args);
    wait_metric(
        &a,
        "pgbaseline_leader",
        1.0,
        Duration::from_secs(30),
        "first replica leads",
    )
    .await;
    let b = start_leader_elected(cp, &emulator, &args);
    // The second replica's first look at the lease is logged, whatever it concludes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = b.log_text();
        if log.contains("became the leader") || log.contains("standing by") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "the second replica never looked at the lease:\n{}",
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !log.contains("became the leader"),
        "both replicas lead:\n{}",
        b.log_tail()
    );
    assert_eq!(b.metric("pgbaseline_leader"), 0.0);
    assert_eq!(a.metric("pgbaseline_leader"), 1.0);
}

// ------------------------------------------------------------------------------------------
// 10. // No hang, no SDK dump.

/// Waits up to `timeout` for the process to exit; how long it took.
async fn exits_within(op: &mut Operator, timeout: Duration) -> Option<Duration> {
    let t = Instant::now();
    while op.is_running() {
        if t.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_aws_hanging_spec_changes_are_observed_readyz_fails_and_sigterm_exits_in_time() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("hung");
    let emulator = Emulator::start(Some("small"));
    let op = Operator::start(cp, &emulator, &["--namespace", &ns, "--aws-timeout", "6s"]);
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);
    let spec = format!(
        "  selector: {{instanceIdentifiers: [payments-prod]}}\n  resyncSeconds: {RESYNC}\n  posture:\n    maintenance: {{deletionProtection: true}}\n"
    );
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&policy_yaml(&ns, "hung", &spec)),
    );
    wait_for(&api, "hung", Duration::from_secs(60), "Ready", &op, |p| {
        is(p, "Ready", "True", "Compliant")
    })
    .await;
    assert_eq!(op.get("/readyz").map(|(code, _)| code), Some(200));

    // AWS stops answering (every call waits 10 minutes).
    emulator.set_faults(json!({"latency_ms": 600_000}));
    patch_spec(&api, "hung", json!({"resyncSeconds": RESYNC + 1})).await;
    let t = Instant::now();
    let p = wait_for(
        &api,
        "hung",
        Duration::from_secs(45),
        "the spec change observed and the timeout reported",
        &op,
        |p| {
            is(p, "Reconciling", "True", "Retrying")
                && condition(p, "Reconciling").is_some_and(|c| c.message.contains("Timeout"))
        },
    )
    .await;
    eprintln!(
        "spec change observed with AWS hanging after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // A transient failure keeps Ready; the message says what failed, where, on one line.
    assert!(is(&p, "Ready", "True", "Compliant"));
    assert!(is(&p, "Stalled", "False", "Healthy"));
    let message = &condition(&p, "Reconciling").expect("Reconciling").message;
    assert!(
        message.starts_with("DescribeDBInstances: Timeout: no answer in time"),
        "{message}"
    );
    assert!(
        message.contains(&format!("(region us-east-1, endpoint {})", emulator.url)),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    let (code, body) = op.get("/readyz").expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("AWS unreachable"), "{body}");
    assert!(body.contains("us-east-1"), "{body}");
    // Every later change is observed too, within a call's timeout.
    patch_spec(&api, "hung", json!({"resyncSeconds": RESYNC + 2})).await;
    let generation = api.get("hung").await.expect("policy").metadata.generation;
    wait_for(
        &api,
        "hung",
        Duration::from_secs(20),
        "the second spec change observed",
        &op,
        |p| p.status.as_ref().and_then(|s| s.observed_generation) == generation,
    )
    .await;
    drop(op);

    // SIGTERM with a call hanging (the default 60 s call timeout): out within the 30 s grace.
    let ns2 = cp.namespace("hung-term");
    // The first operator's calls are still held (the emulator does not notice a client leave).
    let held = emulator.delayed();
    let mut op = Operator::start(cp, &emulator, &["--namespace", &ns2]);
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&policy_yaml(&ns2, "hung", &spec)),
    );
    // The reconcile's sweep is hanging in the emulator.
    let deadline = Instant::now() + Duration::from_secs(30);
    while emulator.delayed() <= held {
        assert!(
            Instant::now() < deadline,
            "no call of this operator is hanging:\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(op.is_running());
    op.signal("TERM");
    let took = exits_within(&mut op, Duration::from_secs(25)).await;
    let log = op.log_text();
    let took =
        took.unwrap_or_else(|| panic!("still running 25s after SIGTERM:\n{}", op.log_tail()));
    eprintln!(
        "exited {:.1}s after SIGTERM with AWS hanging",
        took.as_secs_f64()
    );
    assert!(
        log.contains("stopping them"),
        "no reconcile was in flight:\n{}",
        op.log_tail()
    );
    assert!(
        log.contains("pgbaseline operator stopped"),
        "{}",
        op.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_stall_the_policy_with_a_one_line_reason() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("nocreds");
    let emulator = Emulator::start(None);
    let op = Operator::start_with_env(
        cp,
        &emulator,
        &["--namespace", &ns],
        &[
            ("AWS_ACCESS_KEY_ID", None),
            ("AWS_SECRET_ACCESS_KEY", None),
            ("AWS_SESSION_TOKEN", None),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", None),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", None),
            ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", None),
            (
                "AWS_CONFIG_FILE",
                Some("/nonexistent/pgbaseline-test/config"),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                Some("/nonexistent/pgbaseline-test/credentials"),
            ),
        ],
    );
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);
    let spec = format!(
        "  selector: {{instanceIdentifiers: [payments-prod]}}\n  resyncSeconds: {RESYNC}\n  posture:\n    maintenance: {{deletionProtection: true}}\n"
    );
    cp.kubectl_ok(&["apply", "-f", "-"], Some(&policy_yaml(&ns, "p", &spec)));
    let p = wait_for(&api, "p", Duration::from_secs(60), "Stalled", &op, |p| {
        is(p, "Stalled", "True", "NoCredentials")
    })
    .await;
    assert!(is(&p, "Ready", "False", "NoCredentials"));
    assert!(is(&p, "Reconciling", "False", "Idle"));
    for type_ in ["Ready", "Stalled"] {
        let message = &condition(&p, type_).expect("condition").message;
        assert!(
            message.starts_with("DescribeDBInstances: NoCredentials: no AWS credentials"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
        for debug in ["DispatchFailure", "ConnectorError", "Some(", "{"] {
            assert!(!message.contains(debug), "{debug} in {message}");
        }
    }
    let evs = events(cp, &ns);
    let warning = evs
        .iter()
        .find(|(t, r, _, _)| t == "Warning" && r == "NoCredentials")
        .unwrap_or_else(|| panic!("no NoCredentials warning: {evs:#?}"));
    assert!(!warning.3.contains('\n') && !warning.3.contains("DispatchFailure"));
    assert!(
        emulator.calls().is_empty(),
        "an unsigned request reached AWS"
    );
    // Credentials are not a reason to be unready (AWS is reachable).
    assert_eq!(op.get("/readyz").map(|(code, _)| code), Some(200));
}

// ------------------------------------------------------------------------------------------
// Policy reports (the two report API groups from their upstream CRDs, vendored in
// tests/fixtures/policy-report-crds).

/// Installs one upstream report CRD and waits until it is served.
fn install_report_crd(cp: &ControlPlane, file: &str, name: &str) {
    let path = repo_root()
        .join("tests/fixtures/policy-report-crds")
        .join(file);
    cp.kubectl_ok(
        &[
            "apply",
            "--server-side",
            "-f",
            path.to_str().expect("utf-8 path"),
        ],
        None,
    );
    cp.wait_established(name);
}

/// The reports of `resource` (`policyreports.wgpolicyk8s.io`…) in `ns`: name → object.
fn reports(cp: &ControlPlane, resource: &str, ns: &str) -> BTreeMap<String, Value> {
    let out = cp.kubectl(&["get", resource, "-n", ns, "-o", "json"], None);
    if !out.status.success() {
        return BTreeMap::new(); // not served (yet)
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("reports json");
    v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|r| {
                    let name = r["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    (name, r.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_reports(
    cp: &ControlPlane,
    resource: &str,
    ns: &str,
    op: &Operator,
    what: &str,
    pred: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = reports(cp, resource, ns);
        if pred(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {resource}: {what}\nnow: {:#?}\noperator log:\n{}",
            now.keys().collect::<Vec<_>>(),
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn report_databases(reports: &BTreeMap<String, Value>) -> BTreeSet<String> {
    reports
        .values()
        .map(|r| {
            r["metadata"]["labels"]["pgbaseline.io/database"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reports_follow_discovery_change_only_with_their_content_and_go_with_the_policy() {
    // A control plane of its own: which report CRDs exist is the point of the test.
    let cp = ControlPlane::start();
    cp.install_crd();
    install_report_crd(
        &cp,
        "wgpolicyk8s.io_policyreports.yaml",
        "policyreports.wgpolicyk8s.io",
    );
    let ns = cp.namespace("reports");
    let emulator = Emulator::start(Some("small"));
    let op = Operator::start(&cp, &emulator, &["--namespace", &ns]);
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);
    let spec = format!(
        "  selector: {{instanceIdentifiers: [billing-prod, payments-prod]}}\n  mode: Audit\n  resyncSeconds: {RESYNC}\n  posture:\n    transport: {{forceSsl: true}}\n    auth: {{iam: true}}\n    maintenance: {{deletionProtection: true}}\n"
    );
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&policy_yaml(&ns, "baseline", &spec)),
    );
    let policy = wait_for(
        &api,
        "baseline",
        Duration::from_secs(60),
        "evaluated",
        &op,
        |p| current(p, "Ready").is_some(),
    )
    .await;
    let uid = policy.metadata.uid.clone().unwrap_or_default();

    // Only wgpolicyk8s.io is served: one PolicyReport per database, accepted by the upstream
    // schema, owned by the policy, one result per control with the status's verdicts.
    let wg = "policyreports.wgpolicyk8s.io";
    let first = wait_reports(&cp, wg, &ns, &op, "one per database", |r| r.len() == 2).await;
    assert_eq!(
        report_databases(&first),
        BTreeSet::from(["billing-prod".to_string(), "payments-prod".to_string()])
    );
    let statuses: BTreeMap<(String, String), String> = policy
        .status
        .as_ref()
        .map(|s| {
            s.databases
                .iter()
                .flat_map(|d| {
                    d.findings.iter().map(|f| {
                        (
                            (d.id.clone(), f.control.as_str().to_string()),
                            f.status.as_str().to_string(),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    for report in first.values() {
        assert_eq!(
            report["metadata"]["ownerReferences"][0]["uid"],
            uid.as_str()
        );
        assert_eq!(report["scope"]["name"], "baseline");
        let db = report["metadata"]["labels"]["pgbaseline.io/database"]
            .as_str()
            .unwrap_or_default();
        let results = report["results"].as_array().expect("results");
        assert_eq!(results.len(), 3, "{report:#}");
        let (mut pass, mut fail) = (0, 0);
        for r in results {
            let status = &statuses[&(
                db.to_string(),
                r["rule"].as_str().unwrap_or_default().to_string(),
            )];
            let expected = if status == "Compliant" {
                "pass"
            } else {
                "fail"
            };
            assert_eq!(r["result"], expected, "{db} {r:#}");
            assert_eq!(r["properties"]["status"], status.as_str());
            assert!(
                ["low", "medium", "high", "critical"]
                    .contains(&r["severity"].as_str().unwrap_or_default())
            );
            if expected == "pass" {
                pass += 1
            } else {
                fail += 1
            }
        }
        assert_eq!(report["summary"]["pass"], pass);
        assert_eq!(report["summary"]["fail"], fail);
    }

    // Steady state: reconciles go on, no report is written again.
    let writes = op.metric("pgbaseline_policy_report_writes_total");
    let reconciles = op.metric("pgbaseline_reconciles_total");
    let deadline = Instant::now() + Duration::from_secs(4 * RESYNC);
    while op.metric("pgbaseline_reconciles_total") < reconciles + 2.0 {
        assert!(
            Instant::now() < deadline,
            "no reconcile:\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(op.metric("pgbaseline_policy_report_writes_total"), writes);
    let again = reports(&cp, wg, &ns);
    for (name, report) in &first {
        assert_eq!(
            again[name]["metadata"]["resourceVersion"], report["metadata"]["resourceVersion"],
            "{name} rewritten without a change"
        );
    }

    // A database leaves the selection: its report goes; the other stays untouched.
    patch_spec(
        &api,
        "baseline",
        json!({"selector": {"instanceIdentifiers": ["payments-prod"]}}),
    )
    .await;
    let narrowed = wait_reports(&cp, wg, &ns, &op, "billing's report deleted", |r| {
        r.len() == 1
    })
    .await;
    assert_eq!(
        report_databases(&narrowed),
        BTreeSet::from(["payments-prod".to_string()])
    );

    // OpenReports appears: a new operator (discovery) writes Reports and removes the
    // PolicyReports — never both groups.
    drop(op);
    install_report_crd(&cp, "openreports.io_reports.yaml", "reports.openreports.io");
    let op = Operator::start(&cp, &emulator, &["--namespace", &ns]);
    let open = "reports.openreports.io";
    let moved = wait_reports(&cp, open, &ns, &op, "written to openreports.io", |r| {
        r.len() == 1
    })
    .await;
    let report = moved.values().next().expect("one report");
    assert_eq!(report["apiVersion"], "openreports.io/v1alpha1");
    assert_eq!(report["source"], "pgbaseline");
    wait_reports(&cp, wg, &ns, &op, "PolicyReports removed", |r| r.is_empty()).await;

    // The policy is deleted: its reports go with it (the test control plane runs no garbage
    // collector, so this is the operator's doing; the owner reference covers it being down).
    api.delete("baseline", &DeleteParams::default())
        .await
        .expect("delete policy");
    wait_reports(&cp, open, &ns, &op, "deleted with the policy", |r| {
        r.is_empty()
    })
    .await;
}
