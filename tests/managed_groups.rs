//! Managed parameter groups against the AWS emulator (which enforces AWS's group quotas):
//! shared content-addressed copies, squatted and altered names, quota exhaustion, and the
//! migration of first-version per-database copies.

mod common;

use std::collections::BTreeMap;

use aws_sdk_rds::types::{ApplyMethod, Parameter, Tag};
use common::{Emulator, manifest, pgbaseline, runtime};
use pgbaseline::posture::managed::{Contents, FullParameter, content_digest, managed_name};
use pgbaseline::posture::model::ApplyType;
use pgbaseline::posture::plan::{ApplyMethod as PlannedMethod, ParameterChange};
use serde_json::Value;

fn json(output: &std::process::Output) -> Value {
    common::report_json(output)
}

fn finding<'a>(report: &'a Value, id: &str, control: &str) -> &'a Value {
    report["databases"]
        .as_array()
        .expect("databases")
        .iter()
        .find(|d| d["id"] == id)
        .and_then(|d| {
            d["findings"]
                .as_array()
                .expect("findings")
                .iter()
                .find(|f| f["control"] == control)
        })
        .unwrap_or_else(|| panic!("{id}/{control} not in report: {report:#}"))
}

fn policy(selector: &str, posture: &str, remediation: &str) -> String {
    common::policy_manifest("managed", selector, "Enforce", posture, remediation)
}

/// Creates a PostgreSQL instance, on `group` when given, tagged `team=share` when `tagged`.
async fn create_instance(
    rds: &aws_sdk_rds::Client,
    id: &str,
    version: &str,
    group: Option<&str>,
    tagged: bool,
) {
    let mut request = rds
        .create_db_instance()
        .db_instance_identifier(id)
        .engine("postgres")
        .engine_version(version)
        .db_instance_class("db.t4g.micro")
        .allocated_storage(20)
        .master_username("postgres")
        .master_user_password("not-a-real-password-1")
        .set_db_parameter_group_name(group.map(str::to_string));
    if tagged {
        request = request.tags(Tag::builder().key("team").value("share").build());
    }
    request.send().await.expect("create instance");
}

/// A fresh emulator with `n` PostgreSQL 14 instances `share-<i>` on `default.postgres14`
/// (`rds.force_ssl` 0 by default), tagged `team=share`.
fn fleet_on_default_group(n: usize) -> Emulator {
    let emulator = Emulator::start(None);
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        for i in 0..n {
            create_instance(&rds, &format!("share-{i}"), "14.15", None, true).await;
        }
    });
    emulator
}

fn group_of(emulator: &Emulator, id: &str) -> (String, String) {
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        let out = rds
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .expect("describe");
        let g = &out.db_instances()[0].db_parameter_groups()[0];
        (
            g.db_parameter_group_name().unwrap_or_default().to_string(),
            g.parameter_apply_status().unwrap_or_default().to_string(),
        )
    })
}

/// Every parameter of a group, as the executor reads it.
fn contents(emulator: &Emulator, group: &str) -> Contents {
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        let mut out = Contents::new();
        let mut marker = None;
        loop {
            let page = rds
                .describe_db_parameters()
                .db_parameter_group_name(group)
                .set_marker(marker)
                .send()
                .await
                .expect("parameters");
            for p in page.parameters() {
                out.insert(
                    p.parameter_name().unwrap_or_default().to_string(),
                    FullParameter {
                        value: p.parameter_value().map(str::to_string),
                        apply_type: if p.apply_type() == Some("dynamic") {
                            ApplyType::Dynamic
                        } else {
                            ApplyType::Static
                        },
                    },
                );
            }
            marker = page.marker().map(str::to_string);
            if marker.is_none() {
                return out;
            }
        }
    })
}

fn values(c: &Contents) -> BTreeMap<String, Option<String>> {
    c.iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

fn group_names(emulator: &Emulator) -> Vec<String> {
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        rds.describe_db_parameter_groups()
            .send()
            .await
            .expect("groups")
            .db_parameter_groups()
            .iter()
            .filter_map(|g| g.db_parameter_group_name().map(str::to_string))
            .collect()
    })
}

fn tags_of(emulator: &Emulator, group: &str) -> Vec<(String, String)> {
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        let arn = format!("arn:aws:rds:us-east-1:123456789012:pg:{group}");
        rds.list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await
            .expect("tags")
            .tag_list()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect()
    })
}

/// Creates `name` as a copy of `source` with `values` set, tagged with `tags`.
fn make_group(
    emulator: &Emulator,
    source: &str,
    name: &str,
    description: &str,
    tags: &[(&str, &str)],
    values: &[(&str, &str)],
) {
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        rds.copy_db_parameter_group()
            .source_db_parameter_group_identifier(source)
            .target_db_parameter_group_identifier(name)
            .target_db_parameter_group_description(description)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .send()
            .await
            .expect("copy");
        if !values.is_empty() {
            rds.modify_db_parameter_group()
                .db_parameter_group_name(name)
                .set_parameters(Some(
                    values
                        .iter()
                        .map(|(n, v)| {
                            Parameter::builder()
                                .parameter_name(*n)
                                .parameter_value(*v)
                                .apply_method(ApplyMethod::PendingReboot)
                                .build()
                        })
                        .collect(),
                ))
                .send()
                .await
                .expect("modify");
        }
    });
}

/// The name pgbaseline gives the copy of `source` with `rds.force_ssl=1`.
fn force_ssl_copy_name(emulator: &Emulator, source: &str, attempt: u8) -> String {
    let digest = content_digest(&contents(emulator, source));
    let change = ParameterChange {
        name: "rds.force_ssl".into(),
        value: "1".into(),
        method: PlannedMethod::Immediate,
    };
    managed_name(false, "postgres14", source, &digest, &[change], attempt)
}

/// `check --fix -o json` of the policy at `path`, with the call log cleared first.
fn fix(emulator: &Emulator, path: &std::path::Path) -> std::process::Output {
    emulator.reset_calls();
    pgbaseline(
        emulator,
        &[
            "check",
            "-f",
            &path.to_string_lossy(),
            "--fix",
            "-o",
            "json",
        ],
    )
}

/// `fix` that must exit 0 (everything complies afterwards).
fn fix_ok(emulator: &Emulator, path: &std::path::Path) -> std::process::Output {
    let out = fix(emulator, path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// The tests' policy (`transport.forceSsl` on `team=share`, Enforce) with `remediation`.
fn share_policy(dir: &std::path::Path, remediation: &str) -> std::path::PathBuf {
    let file: String = remediation
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    manifest(
        dir,
        &format!("share-{file}.yaml"),
        &policy("{tags: {team: share}}", FORCE_SSL, remediation),
    )
}

/// Attaches `group` to the instance `db` and reboots it, as an earlier run would have.
async fn attach_and_reboot(rds: &aws_sdk_rds::Client, db: &str, group: &str) {
    rds.modify_db_instance()
        .db_instance_identifier(db)
        .db_parameter_group_name(group)
        .apply_immediately(true)
        .send()
        .await
        .expect("attach");
    rds.reboot_db_instance()
        .db_instance_identifier(db)
        .send()
        .await
        .expect("reboot");
}

fn count(calls: &[String], action: &str) -> usize {
    calls.iter().filter(|c| *c == action).count()
}

fn mutating(emulator: &Emulator) -> Vec<String> {
    emulator
        .mutating_calls()
        .into_iter()
        .map(|c| c.action)
        .collect()
}

const FORCE_SSL: &str = "    transport: {forceSsl: true}";

#[test]
fn databases_with_the_same_need_share_one_tagged_copy_and_nothing_is_planned_again() {
    let emulator = fleet_on_default_group(3);
    let dir = tempfile::tempdir().expect("tmp");
    let p = share_policy(dir.path(), "{}");
    let out = fix(&emulator, &p);
    let report = json(&out);
    let calls = mutating(&emulator);
    assert_eq!(count(&calls, "CopyDBParameterGroup"), 1, "{calls:?}");
    assert_eq!(count(&calls, "ModifyDBInstance"), 3, "{calls:?}");
    let expected = force_ssl_copy_name(&emulator, "default.postgres14", 0);
    for i in 0..3 {
        let id = format!("share-{i}");
        assert_eq!(
            group_of(&emulator, &id),
            (expected.clone(), "pending-reboot".into())
        );
        assert_eq!(
            finding(&report, &id, "transport.forceSsl")["status"],
            "PendingReboot",
            "{report:#}"
        );
    }
    assert!(
        tags_of(&emulator, &expected).contains(&("pgbaseline.io/managed".into(), "true".into()))
    );
    // The copy is the default group with exactly rds.force_ssl=1: every other value equal.
    let mut wanted = values(&contents(&emulator, "default.postgres14"));
    wanted.insert("rds.force_ssl".into(), Some("1".into()));
    assert_eq!(values(&contents(&emulator, &expected)), wanted);

    // The next pass plans nothing (pending reboot is not re-planned).
    let out = fix(&emulator, &p);
    assert!(mutating(&emulator).is_empty(), "{:?}", mutating(&emulator));
    assert_eq!(
        finding(&json(&out), "share-0", "transport.forceSsl")["status"],
        "PendingReboot"
    );
}

#[test]
fn a_squatted_or_altered_name_is_never_attached() {
    let emulator = fleet_on_default_group(1);
    let dir = tempfile::tempdir().expect("tmp");
    let usual = force_ssl_copy_name(&emulator, "default.postgres14", 0);
    let alternate = force_ssl_copy_name(&emulator, "default.postgres14", 1);
    // Someone creates the predictable name first, untagged, with loosened values.
    make_group(
        &emulator,
        "default.postgres14",
        &usual,
        "looks like pgbaseline's",
        &[],
        &[
            ("rds.force_ssl", "1"),
            ("password_encryption", "md5"),
            ("log_statement", "all"),
        ],
    );
    let p = share_policy(dir.path(), "{}");
    let out = fix(&emulator, &p);
    let report = json(&out);
    // Not attached; a fresh copy under the alternate name instead, with the default's values.
    let (attached, _) = group_of(&emulator, "share-0");
    assert_eq!(attached, alternate, "{report:#}");
    let c = contents(&emulator, &alternate);
    assert_eq!(
        c["password_encryption"].value.as_deref(),
        Some("scram-sha-256")
    );
    assert_eq!(c["log_statement"].value.as_deref(), Some("none"));
    assert_eq!(c["rds.force_ssl"].value.as_deref(), Some("1"));

    // Both names taken (the alternate tagged as ours but altered after creation): the database
    // stays where it is and the finding says what was found.
    let emulator = fleet_on_default_group(1);
    make_group(
        &emulator,
        "default.postgres14",
        &usual,
        "x",
        &[("pgbaseline.io/managed", "false")],
        &[("rds.force_ssl", "1")],
    );
    make_group(
        &emulator,
        "default.postgres14",
        &alternate,
        "pgbaseline managed copy of default.postgres14",
        &[("pgbaseline.io/managed", "true")],
        &[("rds.force_ssl", "1"), ("log_statement", "all")],
    );
    let out = fix(&emulator, &p);
    let report = json(&out);
    assert_ne!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(group_of(&emulator, "share-0").0, "default.postgres14");
    let f = finding(&report, "share-0", "transport.forceSsl");
    assert_eq!(f["status"], "Error", "{report:#}");
    let message = f["message"].as_str().unwrap_or_default();
    assert!(message.contains("not created by pgbaseline"), "{message}");
    assert!(
        message.contains("changed after pgbaseline created it"),
        "{message}"
    );
    assert!(message.contains("stays on default.postgres14"), "{message}");
    let calls = mutating(&emulator);
    assert!(
        !calls
            .iter()
            .any(|c| c == "ModifyDBInstance" || c == "ModifyDBParameterGroup"),
        "{calls:?}"
    );
}

#[test]
fn quota_exhaustion_is_reported_and_what_fits_is_done() {
    let emulator = fleet_on_default_group(2);
    runtime().block_on(async {
        // Two PostgreSQL 16 instances on another custom group, needing a different copy.
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        rds.create_db_parameter_group()
            .db_parameter_group_name("team-pg16")
            .db_parameter_group_family("postgres16")
            .description("team")
            .send()
            .await
            .expect("group");
        rds.modify_db_parameter_group()
            .db_parameter_group_name("team-pg16")
            .parameters(
                Parameter::builder()
                    .parameter_name("rds.force_ssl")
                    .parameter_value("0")
                    .apply_method(ApplyMethod::Immediate)
                    .build(),
            )
            .send()
            .await
            .expect("modify");
        for id in ["pg16-a", "pg16-b"] {
            create_instance(&rds, id, "16.6", Some("team-pg16"), true).await;
        }
        // A third database on team-pg16 that the policy does not select: no change in place.
        create_instance(&rds, "other", "16.6", Some("team-pg16"), false).await;
    });
    // One custom group exists; allow exactly one more.
    ureq::post(&format!("{}/_emulator/quotas", emulator.url))
        .send_json(serde_json::json!({"DBParameterGroups": 2}))
        .expect("quota");
    let dir = tempfile::tempdir().expect("tmp");
    let p = share_policy(dir.path(), "{}");
    let out = fix(&emulator, &p);
    let report = json(&out);
    let calls = emulator.calls();
    // One copy made, no refused create attempted: the quota was read first.
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.action == "DescribeAccountAttributes")
            .count(),
        1
    );
    assert!(
        calls.iter().all(|c| c.status < 400),
        "{:?}",
        calls.iter().filter(|c| c.status >= 400).collect::<Vec<_>>()
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.action.starts_with("Copy"))
            .count(),
        1,
        "{calls:?}"
    );
    // Both databases of one need moved together; the two of the other need are reported.
    let moved: Vec<String> = ["share-0", "share-1", "pg16-a", "pg16-b"]
        .iter()
        .filter(|id| group_of(&emulator, id).0.starts_with("pgbaseline-"))
        .map(|s| s.to_string())
        .collect();
    assert_eq!(moved.len(), 2, "{moved:?} {report:#}");
    let stuck: Vec<&str> = ["share-0", "share-1", "pg16-a", "pg16-b"]
        .into_iter()
        .filter(|id| !moved.iter().any(|m| m == id))
        .collect();
    for id in &stuck {
        let f = finding(&report, id, "transport.forceSsl");
        assert_eq!(f["status"], "NonCompliant");
        let m = f["message"].as_str().unwrap_or_default();
        assert!(m.contains("QuotaExceeded") && m.contains("2 of 2"), "{m}");
    }
    assert_eq!(out.status.code(), Some(1), "non-compliant, not an error");

    // Raised quota: the rest converges on the next pass.
    ureq::post(&format!("{}/_emulator/quotas", emulator.url))
        .send_json(serde_json::json!({"DBParameterGroups": 3}))
        .expect("quota");
    fix(&emulator, &p);
    for id in stuck {
        assert!(group_of(&emulator, id).0.starts_with("pgbaseline-"), "{id}");
    }
    assert_eq!(group_of(&emulator, "other").0, "team-pg16");
}

#[test]
fn first_version_copies_converge_on_one_shared_copy_without_a_looser_value() {
    let emulator = fleet_on_default_group(2);
    // What the first version left: one tagged copy per database, rds.force_ssl=1 set.
    let mut legacy_values = Vec::new();
    for i in 0..2 {
        let name = format!("pgbaseline-share-{i}-postgres14");
        make_group(
            &emulator,
            "default.postgres14",
            &name,
            "pgbaseline: copy of default.postgres14",
            &[("pgbaseline.io/managed", "true")],
            &[("rds.force_ssl", "1")],
        );
        runtime().block_on(async {
            let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
            attach_and_reboot(&rds, &format!("share-{i}"), &name).await;
        });
        legacy_values.push(values(&contents(&emulator, &name)));
    }
    let dir = tempfile::tempdir().expect("tmp");
    // Compliant, reboot not allowed: nothing moves (it would only add a pending reboot).
    let never = share_policy(dir.path(), "{}");
    fix_ok(&emulator, &never);
    assert!(mutating(&emulator).is_empty(), "{:?}", mutating(&emulator));

    // Reboots allowed: both move to one shared copy holding exactly their old values, then reboot.
    let now = share_policy(dir.path(), "{reboot: Immediately}");
    let out = fix(&emulator, &now);
    let calls = mutating(&emulator);
    assert_eq!(count(&calls, "CopyDBParameterGroup"), 1, "{calls:?}");
    assert_eq!(count(&calls, "RebootDBInstance"), 2, "{calls:?}");
    let (shared, status) = group_of(&emulator, "share-0");
    assert_eq!(group_of(&emulator, "share-1").0, shared);
    assert_eq!(status, "in-sync");
    assert_ne!(shared, "pgbaseline-share-0-postgres14");
    assert_eq!(values(&contents(&emulator, &shared)), legacy_values[0]);
    assert_eq!(
        finding(&json(&out), "share-0", "transport.forceSsl")["status"],
        "Compliant"
    );
    // The first-version groups are now unused (the operator collects them after a grace period).
    let names = group_names(&emulator);
    assert!(names.contains(&"pgbaseline-share-0-postgres14".to_string()));
}

#[test]
fn an_interrupted_creation_is_finished_not_copied_again() {
    let emulator = fleet_on_default_group(1);
    // The run died right after its copy: tagged, described, nothing set yet.
    let name = force_ssl_copy_name(&emulator, "default.postgres14", 0);
    make_group(
        &emulator,
        "default.postgres14",
        &name,
        "pgbaseline managed copy of default.postgres14",
        &[("pgbaseline.io/managed", "true")],
        &[],
    );
    let dir = tempfile::tempdir().expect("tmp");
    let p = share_policy(dir.path(), "{reboot: Immediately}");
    fix_ok(&emulator, &p);
    assert_eq!(
        mutating(&emulator),
        [
            "ModifyDBParameterGroup",
            "ModifyDBInstance",
            "RebootDBInstance"
        ]
    );
    assert_eq!(
        group_of(&emulator, "share-0"),
        (name.clone(), "in-sync".into())
    );
    assert_eq!(
        contents(&emulator, &name)["rds.force_ssl"].value.as_deref(),
        Some("1")
    );
    let ours: Vec<String> = group_names(&emulator)
        .into_iter()
        .filter(|n| n.starts_with("pgbaseline-"))
        .collect();
    assert_eq!(ours, [name]);
}

#[test]
fn a_migration_interrupted_half_way_converges_without_a_second_copy() {
    let emulator = fleet_on_default_group(2);
    let shared = force_ssl_copy_name(&emulator, "default.postgres14", 0);
    // The previous run made the shared copy and moved share-0, then died; share-1 is still on
    // its first-version copy.
    make_group(
        &emulator,
        "default.postgres14",
        &shared,
        "pgbaseline managed copy of default.postgres14",
        &[("pgbaseline.io/managed", "true")],
        &[("rds.force_ssl", "1")],
    );
    make_group(
        &emulator,
        "default.postgres14",
        "pgbaseline-share-1-postgres14",
        "pgbaseline: copy of default.postgres14",
        &[("pgbaseline.io/managed", "true")],
        &[("rds.force_ssl", "1")],
    );
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        for (db, group) in [
            ("share-0", shared.as_str()),
            ("share-1", "pgbaseline-share-1-postgres14"),
        ] {
            attach_and_reboot(&rds, db, group).await;
        }
    });
    let before = values(&contents(&emulator, "pgbaseline-share-1-postgres14"));
    let dir = tempfile::tempdir().expect("tmp");
    let p = share_policy(dir.path(), "{reboot: Immediately}");
    fix_ok(&emulator, &p);
    assert_eq!(
        mutating(&emulator),
        ["ModifyDBInstance", "RebootDBInstance"]
    );
    assert_eq!(
        group_of(&emulator, "share-1"),
        (shared.clone(), "in-sync".into())
    );
    assert_eq!(
        values(&contents(&emulator, &shared)),
        before,
        "no value differs from before"
    );
    // Only the shared copy and the first-version copy (unused now, collected by the operator).
    let ours: Vec<String> = group_names(&emulator)
        .into_iter()
        .filter(|n| n.starts_with("pgbaseline-"))
        .collect();
    assert_eq!(ours.len(), 2, "{ours:?}");
    // And the next pass has nothing to do.
    fix(&emulator, &p);
    assert!(mutating(&emulator).is_empty(), "{:?}", mutating(&emulator));
}

#[test]
fn aurora_cluster_groups_respect_their_own_quota() {
    let emulator = Emulator::start(None);
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        rds.create_db_cluster()
            .db_cluster_identifier("ledger")
            .engine("aurora-postgresql")
            .engine_version("16.6")
            .master_username("postgres")
            .master_user_password("not-a-real-password-1")
            .tags(Tag::builder().key("team").value("share").build())
            .send()
            .await
            .expect("cluster");
        rds.create_db_instance()
            .db_instance_identifier("ledger-1")
            .db_cluster_identifier("ledger")
            .engine("aurora-postgresql")
            .db_instance_class("db.r6g.large")
            .send()
            .await
            .expect("member");
    });
    // The cluster-group quota (50, not adjustable on AWS) is used up; DB groups have room.
    ureq::post(&format!("{}/_emulator/quotas", emulator.url))
        .send_json(serde_json::json!({"DBClusterParameterGroups": 0}))
        .expect("quota");
    let dir = tempfile::tempdir().expect("tmp");
    let p = share_policy(dir.path(), "{}");
    let out = fix(&emulator, &p);
    let report = json(&out);
    let f = finding(&report, "ledger", "transport.forceSsl");
    assert_eq!(f["status"], "NonCompliant", "{report:#}");
    let m = f["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("QuotaExceeded") && m.contains("DB cluster parameter groups (not adjustable)"),
        "{m}"
    );
    assert!(mutating(&emulator).is_empty(), "{:?}", mutating(&emulator));

    // With room, the cluster moves to a managed cluster group.
    ureq::post(&format!("{}/_emulator/quotas", emulator.url))
        .send_json(serde_json::json!({"DBClusterParameterGroups": 50}))
        .expect("quota");
    fix(&emulator, &p);
    let calls = mutating(&emulator);
    assert_eq!(
        calls,
        [
            "CopyDBClusterParameterGroup",
            "ModifyDBClusterParameterGroup",
            "ModifyDBCluster"
        ],
        "{calls:?}"
    );
}
