//! The event path end to end: the emulator holds the drift queue and the EventBridge rules of
//! `deploy/events/` (created as a platform team would), someone changes AWS and the matching
//! CloudTrail record goes to the bus, the operator (resync an hour away) long-polls the queue,
//! re-reads just the databases the event concerns and flips the policy's status within seconds.
//! Its own calls, failed calls, foreign accounts and garbage change nothing (garbage is deleted);
//! a burst about one group costs one re-read.
//!
//! Run with `cargo test --test events`.

mod common;

use std::time::{Duration, Instant};

use common::Emulator;
use common::controlplane::ControlPlane;
use common::operator::{Operator, wait_for};
use kube::Api;
use pgbaseline::api::DatabaseSecurityPolicy;

fn ready(p: &DatabaseSecurityPolicy) -> Option<(String, String)> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn is_ready(p: &DatabaseSecurityPolicy, status: &str, reason: &str) -> bool {
    ready(p) == Some((status.to_string(), reason.to_string()))
}

/// An Audit policy with the resync an hour away: only events make it look again.
fn audit_policy(cp: &ControlPlane, ns: &str, name: &str, instance: &str) {
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  mode: Audit\n  resyncSeconds: 3600\n  selector: {{instanceIdentifiers: [{instance}]}}\n  posture:\n    transport: {{forceSsl: true}}\n"
        )),
    );
}

/// Puts `count` CloudTrail records of a `ModifyDBParameterGroup` of [`GROUP`] by `caller` on
/// the bus.
fn group_modified(emulator: &Emulator, count: u32, caller: Option<&str>) {
    let params = format!(r#"{{"dBParameterGroupName": "{GROUP}"}}"#);
    let count = count.to_string();
    let mut args = vec![
        "cloudtrail",
        "--name",
        "ModifyDBParameterGroup",
        "--params",
        &params,
        "--count",
        &count,
    ];
    if let Some(caller) = caller {
        args.extend(["--caller", caller]);
    }
    emulator.drift_events(&args);
}

/// The RDS and EC2 calls the emulator answered (the queue's own SQS calls left out).
fn database_reads(emulator: &Emulator) -> Vec<String> {
    emulator
        .calls()
        .into_iter()
        .filter(|c| c.service == "rds" || c.service == "ec2")
        .map(|c| c.action)
        .collect()
}

async fn set_force_ssl(emulator: &Emulator, group: &str, value: &str) {
    let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
    rds.modify_db_parameter_group()
        .db_parameter_group_name(group)
        .parameters(
            aws_sdk_rds::types::Parameter::builder()
                .parameter_name("rds.force_ssl")
                .parameter_value(value)
                .apply_method(aws_sdk_rds::types::ApplyMethod::Immediate)
                .build(),
        )
        .send()
        .await
        .expect("someone modifies the group");
}

/// Waits until policy `tls` is `Ready` with this status and reason.
async fn wait_ready(
    api: &Api<DatabaseSecurityPolicy>,
    op: &Operator,
    status: &str,
    reason: &str,
    timeout: Duration,
    what: &str,
) {
    wait_for(api, "tls", timeout, what, op, |p| {
        is_ready(p, status, reason)
    })
    .await;
}

const GROUP: &str = "pgb-compliant-pg17";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_events_flip_the_status_within_seconds_and_noise_changes_nothing() {
    let cp = ControlPlane::shared();
    let ns = cp.namespace("events");
    let emulator = Emulator::start(Some("small"));
    let queue = emulator.drift_events(&["setup", "--queue", "pgbaseline-drift"]);
    let op = Operator::start(
        cp,
        &emulator,
        &[
            "--namespace",
            &ns,
            "--event-queue",
            &queue,
            "--event-debounce",
            "2s",
        ],
    );
    let api: Api<DatabaseSecurityPolicy> = Api::namespaced(cp.client().await, &ns);
    audit_policy(cp, &ns, "tls", "payments-prod");
    wait_ready(
        &api,
        &op,
        "True",
        "Compliant",
        Duration::from_secs(60),
        "compliant at first",
    )
    .await;
    // A policy over a database on another group: events about the first group leave it be.
    audit_policy(cp, &ns, "other", "orders-prod");
    wait_for(
        &api,
        "other",
        Duration::from_secs(60),
        "other reconciled",
        &op,
        |p| ready(p).is_some(),
    )
    .await;

    // Someone turns force_ssl off; CloudTrail's record reaches the queue.
    emulator.reset_calls();
    set_force_ssl(&emulator, GROUP, "0").await;
    let changed = Instant::now();
    group_modified(&emulator, 1, None);
    wait_ready(
        &api,
        &op,
        "False",
        "NonCompliant",
        Duration::from_secs(30),
        "the event flips the status (the resync is an hour away)",
    )
    .await;
    let latency = changed.elapsed();
    // The re-read: the instance the group serves and the group, nothing else.
    let mut reads = database_reads(&emulator);
    reads.retain(|a| a != "ModifyDBParameterGroup");
    reads.sort();
    eprintln!(
        "drift to status: {:.1}s (debounce 2s); AWS calls of the re-read: {reads:?}",
        latency.as_secs_f64()
    );
    assert_eq!(reads, ["DescribeDBInstances", "DescribeDBParameters"]);
    assert!(latency < Duration::from_secs(15), "{latency:?}");
    assert_eq!(op.metric("pgbaseline_event_rereads_total"), 1.0);
    assert_eq!(
        op.metric("pgbaseline_events_total{source=\"cloudtrail\",outcome=\"handled\"}"),
        1.0
    );
    assert_eq!(op.metric("pgbaseline_event_to_status_seconds_count"), 1.0);
    assert_eq!(
        op.metric("pgbaseline_event_wakes_total"),
        1.0,
        "the policy that selects a database on the group"
    );

    // A burst of ten records about the group, after it was fixed: one re-read.
    set_force_ssl(&emulator, GROUP, "1").await;
    emulator.reset_calls();
    group_modified(&emulator, 10, None);
    wait_ready(
        &api,
        &op,
        "True",
        "Compliant",
        Duration::from_secs(30),
        "compliant again after the burst",
    )
    .await;
    op.wait_metric_at_least(
        "pgbaseline_events_total{source=\"cloudtrail\",outcome=\"handled\"}",
        11.0,
        Duration::from_secs(30),
        "the burst is read",
    )
    .await;
    assert_eq!(
        op.metric("pgbaseline_event_rereads_total"),
        2.0,
        "ten events about one group, one re-read"
    );
    assert_eq!(emulator.count_calls("DescribeDBParameters"), 1);

    // Noise: the operator's own call (by its caller ARN), then straight into the queue what no
    // rule delivers: a failed call, a foreign account, garbage.
    let own = {
        let sts = aws_sdk_sts::Client::new(&emulator.sdk_config().await);
        let who = sts.get_caller_identity().send().await.expect("identity");
        who.arn().expect("arn").to_string()
    };
    group_modified(&emulator, 1, Some(&own));
    let record = |account: &str, error: &str| {
        format!(
            r#"{{"version":"0","id":"x","detail-type":"AWS API Call via CloudTrail","source":"aws.rds","account":"{account}","time":"2026-12-02T05:00:00Z","region":"us-east-1","resources":[],"detail":{{"eventSource":"rds.amazonaws.com","eventName":"ModifyDBParameterGroup","userIdentity":{{"arn":"arn:aws:sts::{account}:assumed-role/admin/alice"}},"requestParameters":{{"dBParameterGroupName":"{GROUP}"}}{error}}}}}"#
        )
    };
    for body in [
        record("123456789012", r#","errorCode":"AccessDenied""#),
        record("999999999999", ""),
        "this is not an event".to_string(),
    ] {
        emulator.drift_events(&["raw", "--queue-url", &queue, "--body", &body]);
    }
    for outcome in ["own_call", "failed_call", "unknown_account"] {
        op.wait_metric_at_least(
            &format!("pgbaseline_events_total{{source=\"cloudtrail\",outcome=\"{outcome}\"}}"),
            1.0,
            Duration::from_secs(30),
            outcome,
        )
        .await;
    }
    op.wait_metric_at_least(
        "pgbaseline_events_total{source=\"\",outcome=\"malformed\"}",
        1.0,
        Duration::from_secs(30),
        "malformed",
    )
    .await;
    assert_eq!(
        op.metric("pgbaseline_event_rereads_total"),
        2.0,
        "ignored events re-read nothing"
    );
    // Every message was deleted, the malformed one included.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = emulator.drift_events(&["depth", "--queue-url", &queue]);
        if left == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} messages left in the queue"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        is_ready(&api.get("tls").await.expect("policy"), "True", "Compliant"),
        "noise changed the status"
    );
}
