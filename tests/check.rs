//! `pgbaseline check` against the AWS emulator: every control in Audit and Enforce on an RDS
//! instance and an Aurora cluster, AWS's parameter-group semantics, paging, throttling, and the
//! safety rules read from the emulator's call log.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{Emulator, manifest, pgbaseline, policy_manifest as policy, runtime};
use serde_json::Value;

fn json(output: &std::process::Output) -> Value {
    common::report_json(output)
}

/// control id → status, for one database of a report.
fn statuses(report: &Value, id: &str) -> BTreeMap<String, String> {
    let db = report["databases"]
        .as_array()
        .expect("databases")
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in report: {report:#}"));
    db["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["control"].as_str().unwrap_or_default().to_string(),
                f["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Where an ingress rule a test adds lets traffic come from.
enum Source<'a> {
    Cidr(&'a str),
    Cidr6(&'a str),
    Group(&'a str),
}

/// One TCP ingress permission on ports `from..=to`.
fn tcp(from: i32, to: i32, source: Source) -> aws_sdk_ec2::types::IpPermission {
    let p = aws_sdk_ec2::types::IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(from)
        .to_port(to);
    match source {
        Source::Cidr(cidr) => {
            p.ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip(cidr).build())
        }
        Source::Cidr6(cidr) => p.ipv6_ranges(
            aws_sdk_ec2::types::Ipv6Range::builder()
                .cidr_ipv6(cidr)
                .build(),
        ),
        Source::Group(id) => p.user_id_group_pairs(
            aws_sdk_ec2::types::UserIdGroupPair::builder()
                .group_id(id)
                .build(),
        ),
    }
    .build()
}

/// The seeded security group named `name`.
fn security_group(emulator: &Emulator, name: &str) -> aws_sdk_ec2::types::SecurityGroup {
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&emulator.sdk_config().await);
        let out = ec2
            .describe_security_groups()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("group-name")
                    .values(name)
                    .build(),
            )
            .send()
            .await
            .expect("describe sg");
        out.security_groups()[0].clone()
    })
}

/// The ingress rules of the security group `id`, as AWS holds them now.
fn ingress_of(emulator: &Emulator, id: &str) -> Vec<aws_sdk_ec2::types::IpPermission> {
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&emulator.sdk_config().await);
        let out = ec2
            .describe_security_groups()
            .group_ids(id)
            .send()
            .await
            .expect("describe sg");
        out.security_groups()[0].ip_permissions().to_vec()
    })
}

/// The security group the seeded `pgb-db-restricted` group admits on 5432 (the app tier).
fn app_security_group(emulator: &Emulator) -> String {
    security_group(emulator, "pgb-db-restricted").ip_permissions()[0].user_id_group_pairs()[0]
        .group_id()
        .expect("app sg")
        .to_string()
}

fn full_posture(app_sg: &str) -> String {
    format!(
        "    transport: {{forceSsl: true, minTlsVersion: TLSv1.3, caCertificate: {{allowed: [rds-ca-rsa4096-g1]}}}}\n\
         \x20   encryption: {{storage: {{}}}}\n\
         \x20   logging: {{retention: {{minimumMinutes: 10080}}, cloudwatchExports: [postgresql, upgrade], connections: true, noStatementSecrets: true}}\n\
         \x20   audit: {{pgaudit: {{classes: [ddl, role], role: rds_pgaudit}}}}\n\
         \x20   auth: {{iam: true, managedMasterPassword: true, passwordEncryption: true}}\n\
         \x20   network: {{publicAccess: Forbidden, ingress: {{allowedSecurityGroups: [{app_sg}], allowedCidrs: [10.0.0.0/8]}}, acl: true}}\n\
         \x20   maintenance: {{autoMinorVersionUpgrade: true, deletionProtection: true, backupRetention: {{minimumDays: 7}}, engineVersionCurrent: true}}"
    )
}

const SELECT_BILLING_AND_LEDGER: &str =
    "{instanceIdentifiers: [billing-prod], clusterIdentifiers: [ledger-prod]}";
const REPORT_ONLY: [&str; 3] = [
    "encryption.storage",
    "network.acl",
    "maintenance.engineVersionCurrent",
];

#[test]
fn every_control_audit_then_enforce_on_an_instance_and_an_aurora_cluster() {
    let emulator = Emulator::start(Some("small"));
    let dir = tempfile::tempdir().expect("tmp");
    let app_sg = app_security_group(&emulator);
    let audit = manifest(
        dir.path(),
        "audit.yaml",
        &policy(
            "all",
            SELECT_BILLING_AND_LEDGER,
            "Audit",
            &full_posture(&app_sg),
            "{}",
        ),
    );

    // Audit: every control reported for both kinds, nothing changed.
    emulator.reset_calls();
    let out = pgbaseline(
        &emulator,
        &["check", "-f", audit.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["summary"]["databases"], 2);
    for id in ["billing-prod", "ledger-prod"] {
        let s = statuses(&report, id);
        // Every control checked through the AWS APIs (the in-database ones: tests/database.rs).
        assert_eq!(
            s.len(),
            pgbaseline::api::ControlId::ALL
                .iter()
                .filter(|c| !c.in_database())
                .count(),
            "{id}: {s:?}"
        );
    }
    let billing = statuses(&report, "billing-prod");
    let ledger = statuses(&report, "ledger-prod");
    for control in [
        "logging.connections",
        "audit.pgaudit",
        "auth.iam",
        "network.ingress",
        "maintenance.deletionProtection",
        "transport.caCertificate",
        "transport.minTlsVersion",
    ] {
        assert_eq!(billing[control], "NonCompliant", "billing {control}");
    }
    // Aurora's defaults: rds.force_ssl is 0 in default.aurora-postgresql16; RDS 15 forces SSL.
    assert_eq!(ledger["transport.forceSsl"], "NonCompliant");
    assert_eq!(billing["transport.forceSsl"], "Compliant");
    // Without allowMasterPasswordRotation the control is report only (turning it on rotates).
    assert_eq!(billing["auth.managedMasterPassword"], "ReportOnly");
    assert!(
        emulator.mutating_calls().is_empty(),
        "Audit changed AWS: {:?}",
        emulator.mutating_calls()
    );

    // Enforce with every remediation allowed.
    let enforce = manifest(
        dir.path(),
        "enforce.yaml",
        &policy(
            "all",
            SELECT_BILLING_AND_LEDGER,
            "Enforce",
            &full_posture(&app_sg),
            "{reboot: Immediately, allowMasterPasswordRotation: true}",
        ),
    );
    let out = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            enforce.to_str().unwrap(),
            "--fix",
            "-o",
            "json",
        ],
    );
    let fixed = json(&out);
    assert!(
        fixed["summary"]["remediated"].as_u64() == Some(2),
        "{fixed:#}"
    );
    let mutating: Vec<String> = emulator
        .mutating_calls()
        .into_iter()
        .map(|c| c.action)
        .collect();
    for call in [
        "CopyDBParameterGroup",
        "CopyDBClusterParameterGroup",
        "ModifyDBParameterGroup",
        "ModifyDBClusterParameterGroup",
        "ModifyDBInstance",
        "ModifyDBCluster",
        "RevokeSecurityGroupIngress",
        "RebootDBInstance",
    ] {
        assert!(
            mutating.iter().any(|a| a == call),
            "{call} not called: {mutating:?}"
        );
    }

    // Re-read: every fixable control complies on both databases.
    let out = pgbaseline(
        &emulator,
        &["check", "-f", audit.to_str().unwrap(), "-o", "json"],
    );
    let after = json(&out);
    for id in ["billing-prod", "ledger-prod"] {
        for (control, status) in statuses(&after, id) {
            if REPORT_ONLY.contains(&control.as_str()) {
                assert!(
                    status == "Compliant" || status == "ReportOnly",
                    "{id} {control}: {status}"
                );
            } else {
                assert_eq!(status, "Compliant", "{id} {control} after --fix: {after:#}");
            }
        }
    }

    // A second --fix has nothing left to do.
    emulator.reset_calls();
    let out = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            enforce.to_str().unwrap(),
            "--fix",
            "-o",
            "json",
        ],
    );
    assert_eq!(json(&out)["summary"]["remediated"], 0);
    assert!(
        emulator.mutating_calls().is_empty(),
        "second --fix changed AWS: {:?}",
        emulator.mutating_calls()
    );
}

/// What junitparser (a JUnit reader CI tools use) understood of a JUnit file, as JSON.
fn read_junit(xml: &std::path::Path) -> Value {
    let setup = Command::new(common::repo_root().join("tests/emulator/setup"))
        .output()
        .expect("tests/emulator/setup");
    let venv = String::from_utf8_lossy(&setup.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let out = Command::new(std::path::Path::new(&venv).join("bin/python"))
        .arg(common::repo_root().join("tests/junit/read.py"))
        .arg(xml)
        .output()
        .expect("run the JUnit reader");
    assert!(
        out.status.success(),
        "junitparser refused the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reader prints JSON")
}

#[test]
fn junit_output_is_read_by_a_junit_consumer_as_the_json_report_says() {
    let emulator = Emulator::start(Some("small"));
    let dir = tempfile::tempdir().expect("tmp");
    let app_sg = app_security_group(&emulator);
    let policies = format!(
        "{}---\n{}",
        policy(
            "all",
            SELECT_BILLING_AND_LEDGER,
            "Audit",
            &full_posture(&app_sg),
            "{}"
        ),
        policy(
            "typo",
            "{tags: {team: no-such-team}}",
            "Audit",
            "    transport: {forceSsl: true}",
            "{}"
        ),
    );
    let file = manifest(dir.path(), "policies.yaml", &policies);
    let file = file.to_str().expect("utf-8 path");
    let report = json(&pgbaseline(&emulator, &["check", "-f", file, "-o", "json"]));
    let out = pgbaseline(&emulator, &["check", "-f", file, "-o", "junit"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "same exit status as the other formats"
    );
    let xml = dir.path().join("report.xml");
    std::fs::write(&xml, &out.stdout).expect("write junit");
    let read = read_junit(&xml);

    let mut failures = 0;
    let mut errors = 0;
    let mut tests = 0;
    for db in report["databases"].as_array().expect("databases") {
        let suite_name = format!(
            "{}/{}/{}",
            db["region"].as_str().unwrap_or_default(),
            db["kind"].as_str().unwrap_or_default(),
            db["id"].as_str().unwrap_or_default()
        );
        let suite = &read[&suite_name];
        assert_eq!(suite["properties"]["id"], db["id"], "{read:#}");
        assert_eq!(suite["properties"]["engine"], db["engine"]);
        let findings = db["findings"].as_array().expect("findings");
        assert_eq!(
            suite["cases"].as_object().map(|c| c.len()),
            Some(findings.len())
        );
        for f in findings {
            let control = f["control"].as_str().unwrap_or_default();
            let status = f["status"].as_str().unwrap_or_default();
            let case = &suite["cases"][control];
            let expected = match status {
                "Compliant" | "Remediated" => "passed",
                "Error" => "error",
                _ => "failure",
            };
            assert_eq!(case["result"], expected, "{suite_name} {control}: {case}");
            assert_eq!(case["classname"], suite_name.as_str());
            tests += 1;
            match expected {
                "failure" => failures += 1,
                "error" => errors += 1,
                _ => continue,
            }
            assert_eq!(case["type"], status);
            let message = case["message"].as_str().unwrap_or_default();
            for field in ["observed", "expected"] {
                let value = f[field].as_str().unwrap_or_default();
                assert!(
                    message.contains(value),
                    "{control}: {field} {value:?} not in {message:?}"
                );
            }
        }
    }
    assert!(failures > 0, "the small fleet has findings: {report:#}");
    // The policy that selected nothing fails the gate in the test view too.
    let typo = &read["pgbaseline policies"]["cases"]["test/typo"];
    assert_eq!(typo["result"], "failure", "{read:#}");
    assert_eq!(typo["type"], "SelectedNothing");
    assert_eq!(read["_totals"]["tests"], tests + 1);
    assert_eq!(read["_totals"]["failures"], failures + 1);
    assert_eq!(read["_totals"]["errors"], errors);
}

#[test]
fn default_group_is_copied_attached_and_pending_until_the_policy_allows_a_reboot() {
    let emulator = Emulator::start(Some("small"));
    emulator.reset_calls();
    let dir = tempfile::tempdir().expect("tmp");
    let posture = "    transport: {forceSsl: true}\n    audit: {pgaudit: {classes: [ddl]}}";
    let never = manifest(
        dir.path(),
        "never.yaml",
        &policy(
            "legacy",
            "{instanceIdentifiers: [legacy-prod]}",
            "Enforce",
            posture,
            "{reboot: Never}",
        ),
    );
    let out = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            never.to_str().unwrap(),
            "--fix",
            "-o",
            "json",
        ],
    );
    let report = json(&out);
    let s = statuses(&report, "legacy-prod");
    assert_eq!(s["transport.forceSsl"], "PendingReboot", "{report:#}");
    assert_eq!(s["audit.pgaudit"], "PendingReboot");
    let calls: Vec<String> = emulator
        .mutating_calls()
        .into_iter()
        .map(|c| c.action)
        .collect();
    assert_eq!(
        calls,
        vec![
            "CopyDBParameterGroup",
            "ModifyDBParameterGroup",
            "ModifyDBInstance"
        ],
        "{calls:?}"
    );

    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        let db = rds
            .describe_db_instances()
            .db_instance_identifier("legacy-prod")
            .send()
            .await
            .expect("describe");
        let group = &db.db_instances()[0].db_parameter_groups()[0];
        // A content-addressed managed copy of the default group.
        assert!(
            group
                .db_parameter_group_name()
                .is_some_and(|n| n.starts_with("pgbaseline-postgres14-")),
            "{:?}",
            group.db_parameter_group_name()
        );
        assert_eq!(group.parameter_apply_status(), Some("pending-reboot"));
        // The default group itself is untouched.
        let defaults = rds
            .describe_db_parameters()
            .db_parameter_group_name("default.postgres14")
            .source("user")
            .send()
            .await
            .expect("default params");
        assert!(defaults.parameters().is_empty());
    });

    // Still pending, and not planned again: no mutating call.
    emulator.reset_calls();
    let out = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            never.to_str().unwrap(),
            "--fix",
            "-o",
            "json",
        ],
    );
    assert_eq!(
        statuses(&json(&out), "legacy-prod")["transport.forceSsl"],
        "PendingReboot"
    );
    assert!(
        emulator.mutating_calls().is_empty(),
        "{:?}",
        emulator.mutating_calls()
    );

    // A policy that allows the reboot reboots, and the database complies.
    let now = manifest(
        dir.path(),
        "now.yaml",
        &policy(
            "legacy",
            "{instanceIdentifiers: [legacy-prod]}",
            "Enforce",
            posture,
            "{reboot: Immediately}",
        ),
    );
    let out = pgbaseline(
        &emulator,
        &["check", "-f", now.to_str().unwrap(), "--fix", "-o", "json"],
    );
    let calls: Vec<String> = emulator
        .mutating_calls()
        .into_iter()
        .map(|c| c.action)
        .collect();
    assert_eq!(calls, vec!["RebootDBInstance"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = pgbaseline(
        &emulator,
        &["check", "-f", never.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        statuses(&json(&out), "legacy-prod")
            .values()
            .all(|s| s == "Compliant")
    );
}

#[test]
fn shared_group_is_copied_when_a_sharer_is_not_selected_and_changed_in_place_when_all_are() {
    let emulator = Emulator::start(Some("small"));
    let dir = tempfile::tempdir().expect("tmp");
    let posture = "    logging: {noStatementSecrets: true}";
    // orders-prod (env=prod) shares pgb-shared-pg16 with analytics-dev (env=dev).
    let prod = manifest(
        dir.path(),
        "prod.yaml",
        &policy(
            "prod",
            "{tags: {env: prod}, engines: [postgres]}",
            "Enforce",
            posture,
            "{}",
        ),
    );
    let out = pgbaseline(
        &emulator,
        &["check", "-f", prod.to_str().unwrap(), "--fix", "-o", "json"],
    );
    assert!(out.status.code().is_some());
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        let value = |group: &'static str| {
            let rds = rds.clone();
            async move {
                let out = rds
                    .describe_db_parameters()
                    .db_parameter_group_name(group)
                    .filters(
                        aws_sdk_rds::types::Filter::builder()
                            .name("parameter-name")
                            .values("log_statement")
                            .build(),
                    )
                    .send()
                    .await
                    .expect("params");
                out.parameters()[0].parameter_value().map(str::to_string)
            }
        };
        // The shared group still serves analytics-dev unchanged; orders-prod is on a managed
        // copy of it.
        assert_eq!(value("pgb-shared-pg16").await.as_deref(), Some("all"));
        let orders = rds
            .describe_db_instances()
            .db_instance_identifier("orders-prod")
            .send()
            .await
            .expect("d");
        let copy = orders.db_instances()[0].db_parameter_groups()[0]
            .db_parameter_group_name()
            .expect("group")
            .to_string();
        assert!(copy.starts_with("pgbaseline-postgres16-"), "{copy}");
        let copy: &'static str = Box::leak(copy.into_boxed_str());
        assert_eq!(value(copy).await.as_deref(), Some("none"));
        let analytics = rds
            .describe_db_instances()
            .db_instance_identifier("analytics-dev")
            .send()
            .await
            .expect("d");
        assert_eq!(
            analytics.db_instances()[0].db_parameter_groups()[0].db_parameter_group_name(),
            Some("pgb-shared-pg16")
        );
    });

    // A policy selecting both sharers changes the shared group in place (no copy).
    emulator.reset_calls();
    let both = manifest(
        dir.path(),
        "both.yaml",
        &policy(
            "both",
            "{instanceIdentifiers: [analytics-dev]}",
            "Enforce",
            posture,
            "{}",
        ),
    );
    pgbaseline(
        &emulator,
        &["check", "-f", both.to_str().unwrap(), "--fix", "-o", "json"],
    );
    let calls: Vec<String> = emulator
        .mutating_calls()
        .into_iter()
        .map(|c| c.action)
        .collect();
    assert_eq!(
        calls,
        vec!["ModifyDBParameterGroup"],
        "after orders-prod left, analytics-dev alone uses the group"
    );
}

#[test]
fn ingress_revokes_only_the_offending_rule() {
    let emulator = Emulator::start(Some("small"));
    let dir = tempfile::tempdir().expect("tmp");
    let open_sg = security_group(&emulator, "pgb-db-open")
        .group_id()
        .expect("id")
        .to_string();
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&emulator.sdk_config().await);
        let id = &open_sg;
        // A second, allowed rule and an IPv6 everywhere rule on a port range covering 5432.
        ec2.authorize_security_group_ingress()
            .group_id(id)
            .ip_permissions(tcp(5432, 5432, Source::Cidr("10.20.0.0/16")))
            .ip_permissions(tcp(5000, 6000, Source::Cidr6("::/0")))
            .send()
            .await
            .expect("authorize");
    });
    let p = manifest(
        dir.path(),
        "p.yaml",
        &policy(
            "net",
            "{instanceIdentifiers: [billing-prod]}",
            "Enforce",
            "    network: {ingress: {allowedCidrs: [10.0.0.0/8]}}",
            "{}",
        ),
    );
    let out = pgbaseline(
        &emulator,
        &["check", "-f", p.to_str().unwrap(), "--fix", "-o", "json"],
    );
    assert_eq!(
        statuses(&json(&out), "billing-prod")["network.ingress"],
        "Remediated"
    );
    assert_eq!(emulator.count_calls("RevokeSecurityGroupIngress"), 2);
    let perms = ingress_of(&emulator, &open_sg);
    let v4: Vec<&str> = perms
        .iter()
        .flat_map(|p| p.ip_ranges())
        .filter_map(|r| r.cidr_ip())
        .collect();
    let v6: Vec<&str> = perms
        .iter()
        .flat_map(|p| p.ipv6_ranges())
        .filter_map(|r| r.cidr_ipv6())
        .collect();
    assert_eq!(v4, vec!["10.20.0.0/16"]);
    assert!(v6.is_empty());
}

#[test]
fn more_than_twenty_parameters_go_out_in_calls_of_at_most_twenty() {
    use pgbaseline::api::{ControlId, Finding, FindingStatus, Severity};
    use pgbaseline::posture::{Evaluation, Fix, PlanContext, plan, testing};
    let emulator = Emulator::start(None);
    emulator.reset_calls();
    let rt = runtime();
    let (plan, outcomes) = rt.block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        rds.create_db_parameter_group()
            .db_parameter_group_name("many")
            .db_parameter_group_family("postgres16")
            .description("many parameters")
            .send()
            .await
            .expect("create group");
        // Every modifiable, dynamic parameter of the emulator's postgres16 catalogue.
        let defaults = rds.describe_engine_default_parameters().db_parameter_group_family("postgres16").send().await.expect("defaults");
        let params: Vec<(String, String, bool)> = defaults
            .engine_defaults()
            .expect("defaults")
            .parameters()
            .iter()
            .filter(|p| p.is_modifiable() == Some(true))
            .filter_map(|p| {
                // The default, else the first allowed value (`a,b,c` or the low end of `lo-hi`).
                let allowed_first = p.allowed_values().map(|a| match a.split_once(',') {
                    Some((first, _)) => first.to_string(),
                    None => a.rsplit_once('-').map(|(lo, _)| lo.to_string()).unwrap_or_else(|| a.to_string()),
                });
                let value = p.parameter_value().map(str::to_string).or(allowed_first)?;
                Some((p.parameter_name()?.to_string(), value, p.apply_type() == Some("dynamic")))
            })
            .collect();
        assert!(params.len() > 20, "catalogue has {} modifiable parameters with a default", params.len());
        let mut db = testing::instance("many-db");
        db.parameter_group = Some(testing::group("many", "postgres16", false));
        for (name, _, dynamic) in &params {
            let apply_type = if *dynamic { pgbaseline::posture::model::ApplyType::Dynamic } else { pgbaseline::posture::model::ApplyType::Static };
            db.parameter_group
                .as_mut()
                .expect("group")
                .parameters
                .insert(name.clone(), pgbaseline::posture::model::ParameterValue { value: None, apply_type, modifiable: true });
        }
        let evaluation = Evaluation {
            finding: Finding { control: ControlId::LogConnections, severity: Severity::Medium, status: FindingStatus::NonCompliant, observed: String::new(), expected: String::new(), message: String::new() },
            fixes: params.iter().map(|(name, value, _)| Fix::Parameter { name: name.clone(), value: value.clone() }).collect(),
        };
        let spec: pgbaseline::api::DatabaseSecurityPolicySpec =
            serde_saphyr::from_str("selector: {instanceIdentifiers: [many-db]}\nmode: Enforce\nposture: {logging: {connections: true}}").expect("spec");
        let fleet = pgbaseline::posture::Fleet::default();
        let plan = plan(&spec, &[(&db, vec![evaluation])], PlanContext { now: chrono::Utc::now(), fleet: &fleet });
        let aws = pgbaseline::aws::AwsRegion::from_config(&emulator.sdk_config().await, 8).expect("aws");
        let outcomes = pgbaseline::aws::executor::execute(&aws, &fleet, &plan).await;
        (plan, outcomes)
    });
    assert!(plan.actions.len() >= 2);
    assert!(
        outcomes
            .iter()
            .all(|o| *o == pgbaseline::posture::report::Outcome::Succeeded),
        "{outcomes:?}"
    );
    let sizes: Vec<usize> = plan
        .actions
        .iter()
        .map(|a| match &a.kind {
            pgbaseline::posture::plan::ActionKind::SetParameters { changes, .. } => changes.len(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(
        sizes.iter().all(|n| *n <= 20) && sizes[0] == 20,
        "{sizes:?}"
    );
    let modifies = emulator
        .mutating_calls()
        .into_iter()
        .filter(|c| c.action == "ModifyDBParameterGroup" && c.status == 200)
        .count();
    assert_eq!(modifies, plan.actions.len());
}

#[test]
fn two_hundred_fifty_instances_are_read_across_pages() {
    let emulator = Emulator::start(None);
    let dir = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        for i in 0..250 {
            rds.create_db_instance()
                .db_instance_identifier(format!("page-{i:03}"))
                .engine("postgres")
                .engine_version("16.4")
                .db_instance_class("db.t4g.micro")
                .master_username("pgadmin")
                .master_user_password("not-a-real-password-1")
                .allocated_storage(20)
                .tags(
                    aws_sdk_rds::types::Tag::builder()
                        .key("fleet")
                        .value("paged")
                        .build(),
                )
                .send()
                .await
                .expect("create");
        }
    });
    emulator.reset_calls();
    let p = manifest(
        dir.path(),
        "p.yaml",
        &policy(
            "paged",
            "{tags: {fleet: paged}}",
            "Audit",
            "    auth: {iam: true}",
            "{}",
        ),
    );
    let out = pgbaseline(
        &emulator,
        &["check", "-f", p.to_str().unwrap(), "-o", "json", "--stats"],
    );
    let report = json(&out);
    assert_eq!(report["summary"]["databases"], 250);
    assert_eq!(report["summary"]["nonCompliant"], 250);
    let pages = emulator.count_calls("DescribeDBInstances");
    assert_eq!(pages, 3, "100 per page");
    // 250 instances on one default group: one parameter read, not 250.
    let reads = emulator.count_calls("DescribeDBParameters");
    assert_eq!(reads, 1);
    assert_eq!(report["stats"]["RDS:DescribeDBInstances"], 3);
}

#[test]
fn a_fifth_of_calls_throttled_still_completes_with_the_same_result() {
    let emulator = Emulator::start(Some("small"));
    let audit = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            "examples/audit-prod-baseline.yaml",
            "-o",
            "json",
        ],
    );
    let expected = json(&audit);
    emulator.reset_calls();
    emulator.set_faults(
        serde_json::json!({"throttle_fraction": 0.2, "seed": 7, "services": ["rds", "ec2", "kms"]}),
    );
    let throttled = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            "examples/audit-prod-baseline.yaml",
            "-o",
            "json",
        ],
    );
    assert_eq!(
        throttled.status.code(),
        audit.status.code(),
        "{}",
        String::from_utf8_lossy(&throttled.stderr)
    );
    assert_eq!(json(&throttled), expected);
    let calls = emulator.calls();
    assert!(
        calls.iter().any(|c| c.throttled),
        "no call was throttled: {calls:?}"
    );
}

#[test]
fn invalid_input_exits_2_with_the_field_path() {
    let emulator = Emulator::start(None);
    let dir = tempfile::tempdir().expect("tmp");
    let bad = manifest(
        dir.path(),
        "bad.yaml",
        &policy(
            "bad",
            "{tags: {env: prod}}",
            "Audit",
            "    logging: {retention: {minimumMinutes: 5}}",
            "{}",
        ),
    );
    let out = pgbaseline(&emulator, &["check", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.posture.logging.retention.minimumMinutes"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.yaml"), "{stderr}");

    let out = pgbaseline(&emulator, &["check", "-f", "does-not-exist.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist.yaml"));

    let out = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            "examples/audit-prod-baseline.yaml",
            "--output",
            "xml",
        ],
    );
    assert_eq!(out.status.code(), Some(2));

    let out = pgbaseline(&emulator, &["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(emulator.calls().is_empty(), "bad input must not reach AWS");
}

#[test]
fn aws_errors_exit_2_with_the_aws_error_code() {
    let emulator = Emulator::start(None);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgbaseline"))
        .current_dir(common::repo_root())
        .args(["check", "-f", "examples/audit-prod-baseline.yaml"])
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", common::free_port()),
        )
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("run");
    drop(emulator);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DescribeDBInstances"));
}

/// `pgbaseline check` of the example policy with `env` (over a clean AWS environment: no
/// profile, no instance metadata).
fn check_with_env(env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgbaseline"));
    cmd.current_dir(common::repo_root())
        .args(["check", "-f", "examples/audit-prod-baseline.yaml"])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/pgbaseline-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/pgbaseline-test/credentials",
        );
    for var in [
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run pgbaseline")
}

/// The `error:` line of a failed check: one line, naming the call, never SDK `Debug` output.
fn aws_error_line(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{}", stderr(out));
    let text = stderr(out);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    let line = errors[0].to_string();
    assert!(
        line.starts_with("error: AWS DescribeDBInstances: "),
        "{line}"
    );
    for debug in ["DispatchFailure {", "ConnectorError", "Some(", "source:"] {
        assert!(!line.contains(debug), "{debug}: {line}");
    }
    assert!(!line.trim_end().ends_with(':'), "{line}");
    line
}

#[test]
fn aws_errors_name_the_cause_the_region_and_the_endpoint() {
    let emulator = Emulator::start(None);
    let keys = || {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ]
    };

    // Nothing listens on the endpoint.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let mut env = keys();
    env.push(("AWS_ENDPOINT_URL", dead.clone()));
    env.push(("AWS_REGION", "us-east-1".into()));
    let line = aws_error_line(&check_with_env(&env));
    assert!(line.contains("ConnectionFailed"), "{line}");
    assert!(line.contains("Connection refused"), "{line}");
    assert!(
        line.contains(&format!("region us-east-1, endpoint {dead}")),
        "{line}"
    );

    // A region the endpoint does not serve answers with no AWS error code (was `Unknown: `).
    let mut env = keys();
    env.push(("AWS_ENDPOINT_URL", emulator.url.clone()));
    env.push(("AWS_REGION", "xx-nowhere-1".into()));
    let line = aws_error_line(&check_with_env(&env));
    assert!(!line.contains("Unknown"), "{line}");
    assert!(line.contains("HTTP 500"), "{line}");
    assert!(line.contains("region xx-nowhere-1"), "{line}");
    assert!(line.contains(&emulator.url), "{line}");

    // AWS's own endpoint of a region that does not exist.
    let mut env = keys();
    env.push(("AWS_REGION", "xx-nowhere-1".into()));
    let line = aws_error_line(&check_with_env(&env));
    assert!(
        line.contains("https://rds.xx-nowhere-1.amazonaws.com"),
        "{line}"
    );
    assert!(line.contains("xx-nowhere-1"), "{line}");

    // No credentials anywhere in the chain.
    emulator.reset_calls();
    let env = vec![
        ("AWS_ENDPOINT_URL", emulator.url.clone()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    let line = aws_error_line(&check_with_env(&env));
    assert!(line.contains("NoCredentials: no AWS credentials"), "{line}");
    assert!(
        line.contains("Environment: environment variable not set"),
        "{line}"
    );
    assert!(
        emulator.calls().is_empty(),
        "an unsigned request reached AWS"
    );
}

#[test]
fn a_hung_aws_costs_one_call_timeout_not_forever() {
    let emulator = Emulator::start(None);
    // Every AWS call waits ten minutes.
    emulator.set_faults(serde_json::json!({"latency_ms": 600_000}));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgbaseline"));
    cmd.current_dir(common::repo_root())
        .args([
            "check",
            "-f",
            "examples/audit-prod-baseline.yaml",
            "--aws-timeout",
            "3s",
        ])
        .env_remove("AWS_PROFILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in emulator.env() {
        cmd.env(k, v);
    }
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().expect("run pgbaseline");
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("check still running 60s into a hung AWS");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    eprintln!(
        "check gave up on a hung AWS after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let line = aws_error_line(&out);
    assert!(
        line.contains("DescribeDBInstances: Timeout: no answer in time"),
        "{line}"
    );
    assert!(
        line.contains(&format!("(region us-east-1, endpoint {})", emulator.url)),
        "{line}"
    );
}

#[test]
fn a_failed_read_is_an_error_finding_for_its_database_and_the_rest_is_reported() {
    let emulator = Emulator::start(Some("small"));
    let example = [
        "check",
        "-f",
        "examples/audit-prod-baseline.yaml",
        "-o",
        "json",
    ];
    let before = json(&pgbaseline(&emulator, &example));
    // A database on a group of a family whose engine defaults cannot be read
    // (DescribeEngineDefaultParameters answers InvalidParameterValue).
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        rds.create_db_parameter_group()
            .db_parameter_group_name("pg13-custom")
            .db_parameter_group_family("postgres13")
            .description("a family without engine defaults here")
            .send()
            .await
            .expect("create group");
        rds.create_db_instance()
            .db_instance_identifier("old-13")
            .engine("postgres")
            .engine_version("13.15")
            .db_instance_class("db.t4g.micro")
            .db_parameter_group_name("pg13-custom")
            .master_username("pgadmin")
            .master_user_password("not-a-real-password-1")
            .allocated_storage(20)
            .tags(
                aws_sdk_rds::types::Tag::builder()
                    .key("env")
                    .value("prod")
                    .build(),
            )
            .send()
            .await
            .expect("create instance");
    });
    let out = pgbaseline(&emulator, &example);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report = json(&out);
    let databases = report["databases"].as_array().expect("databases");
    assert_eq!(
        report["summary"]["databases"].as_u64(),
        before["summary"]["databases"].as_u64().map(|n| n + 1),
        "every database is reported: {report:#}"
    );
    // Every other database is reported exactly as before.
    for db in before["databases"].as_array().expect("databases") {
        let now = databases
            .iter()
            .find(|d| d["id"] == db["id"])
            .unwrap_or_else(|| panic!("{} missing", db["id"]));
        assert_eq!(now, db);
    }
    let old = databases
        .iter()
        .find(|d| d["id"] == "old-13")
        .expect("old-13 reported");
    let findings = old["findings"].as_array().expect("findings");
    let parameter_controls = [
        "transport.forceSsl",
        "transport.minTlsVersion",
        "logging.retention",
        "logging.connections",
        "logging.noStatementSecrets",
        "audit.pgaudit",
        "auth.passwordEncryption",
    ];
    for f in findings {
        let control = f["control"].as_str().unwrap_or_default();
        if parameter_controls.contains(&control) {
            assert_eq!(f["status"], "Error", "{f}");
            let message = f["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with("not evaluated: could not read DB parameter group pg13-custom: DescribeEngineDefaultParameters: InvalidParameterValue: "),
                "{message}"
            );
            assert!(message.contains("postgres13"), "{message}");
            assert!(message.contains("region us-east-1"), "{message}");
        } else {
            assert_ne!(f["status"], "Error", "{f}");
        }
    }
    assert_eq!(statuses(&report, "old-13")["auth.iam"], "NonCompliant");
}

#[test]
fn an_endpoint_without_the_parameter_name_filter_gets_full_pages_and_the_same_report() {
    let emulator = Emulator::start(Some("small"));
    let filtered = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            "examples/audit-prod-baseline.yaml",
            "-o",
            "json",
        ],
    );
    emulator.set_faults(serde_json::json!({"reject_parameter_filter": true}));
    emulator.reset_calls();
    let unfiltered = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            "examples/audit-prod-baseline.yaml",
            "-o",
            "json",
        ],
    );
    assert_eq!(json(&unfiltered), json(&filtered));
    let reads: Vec<u16> = emulator
        .calls()
        .into_iter()
        .filter(|c| c.action == "DescribeDBParameters" || c.action == "DescribeDBClusterParameters")
        .map(|c| c.status)
        .collect();
    // Only the first read is refused; every later group is read unfiltered straight away.
    assert_eq!(reads.iter().filter(|s| **s == 400).count(), 1, "{reads:?}");
    assert!(
        reads.iter().filter(|s| **s == 200).count() >= 5,
        "{reads:?}"
    );
}

#[test]
fn no_secret_reaches_the_output_or_the_logs_even_at_trace_level() {
    // The seeded databases' master password (tests/emulator/seed.py).
    const SEEDED_PASSWORD: &str = "not-a-real-password-1";
    let emulator = Emulator::start(Some("small"));
    let mut outputs = Vec::new();
    for args in [
        vec![
            "check",
            "-f",
            "examples/audit-prod-baseline.yaml",
            "-o",
            "json",
            "--stats",
        ],
        vec![
            "check",
            "-f",
            "examples/enforce-strict-instance.yaml",
            "-f",
            "examples/enforce-aurora-cluster.yaml",
            "--fix",
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgbaseline"))
            .current_dir(common::repo_root())
            .args(&args)
            .envs(emulator.env())
            .env("RUST_LOG", "trace")
            .output()
            .expect("run");
        outputs.push(String::from_utf8_lossy(&out.stdout).to_string());
        outputs.push(String::from_utf8_lossy(&out.stderr).to_string());
    }
    assert!(
        outputs.iter().any(|o| o.contains("DescribeDBInstances")),
        "trace logging was on"
    );
    for text in &outputs {
        assert!(
            !text.contains(SEEDED_PASSWORD),
            "a password reached the output"
        );
        assert!(
            !text.contains("MasterUserPassword"),
            "a password field reached the output"
        );
    }
}

/// The binary with AWS pointed at a closed port: input errors must stop it before any AWS call.
fn offline(args: &[&str], stdin: std::process::Stdio) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pgbaseline"))
        .current_dir(common::repo_root())
        .args(args)
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", common::free_port()),
        )
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdin(stdin)
        .output()
        .expect("run pgbaseline")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_no_panic(out: &std::process::Output) {
    let err = stderr(out);
    assert!(
        !err.contains("panicked") && !err.contains("memory allocation"),
        "{err}"
    );
    assert!(out.status.code().is_some(), "killed by a signal: {out:?}");
}

const GOOD: &str = "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {name: good, namespace: test}\nspec:\n  selector: {tags: {env: prod}}\n  posture: {transport: {forceSsl: true}}\n";

#[test]
fn yaml_syntax_errors_exit_2_with_file_line_and_reason_in_little_memory() {
    let dir = tempfile::tempdir().expect("tmp");
    for (name, text, line) in [
        (
            "unclosed-quote.yaml",
            "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {name: x}\nspec:\n  mode: \"Audit\n  posture: {}\n",
            ":5",
        ),
        (
            "tab.yaml",
            "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {name: x}\nspec:\n\tmode: Audit\n",
            ":5",
        ),
        ("flow.yaml", "spec: {selector: [\n", ":"),
    ] {
        let path = manifest(dir.path(), name, text);
        // 512 MiB of address space: the old reader allocated about 1.8 GB on these files.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v 524288 && exec \"$0\" check -f {}",
                path.display()
            ))
            .arg(env!("CARGO_BIN_EXE_pgbaseline"))
            .env("AWS_REGION", "us-east-1")
            .output()
            .expect("run");
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("{name}{line}")), "{name}: {err}");
        assert!(err.contains("(yaml)"), "{name}: {err}");
        assert!(err.lines().count() < 10, "{name}: {err}");
    }
}

#[test]
fn input_is_bounded_and_must_be_utf8() {
    let dir = tempfile::tempdir().expect("tmp");
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, format!("# {}\n", "x".repeat(5 * 1024 * 1024))).expect("write");
    let out = offline(
        &["check", "-f", big.to_str().unwrap()],
        std::process::Stdio::null(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("larger than 4 MiB"),
        "{}",
        stderr(&out)
    );
    // An endless stdin is cut off, not read into memory.
    let zero = std::fs::File::open("/dev/zero").expect("/dev/zero");
    let out = offline(&["check", "-f", "-"], zero.into());
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stdin: larger than"),
        "{}",
        stderr(&out)
    );
    let latin1 = manifest(dir.path(), "latin1.yaml", "");
    std::fs::write(&latin1, b"# caf\xe9\n").expect("write");
    let out = offline(
        &["check", "-f", latin1.to_str().unwrap()],
        std::process::Stdio::null(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("latin1.yaml:1: not UTF-8"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_same_policy_twice_is_rejected_with_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = manifest(dir.path(), "a.yaml", GOOD);
    let link = dir.path().join("link.yaml");
    std::os::unix::fs::symlink(&a, &link).expect("symlink");
    let other = manifest(
        dir.path(),
        "other.yaml",
        &GOOD.replace("namespace: test", "namespace: team"),
    );
    let twice_in_one = manifest(dir.path(), "twice.yaml", &format!("{GOOD}---\n{GOOD}"));
    let a = a.to_str().unwrap();
    let dotted = format!("{}/./a.yaml", dir.path().display());
    for args in [
        vec!["check", "-f", a, "-f", a],
        vec!["check", "-f", a, "-f", link.to_str().unwrap()],
        vec!["check", "-f", a, "-f", &dotted],
        vec!["check", "-f", twice_in_one.to_str().unwrap()],
    ] {
        let out = offline(&args, std::process::Stdio::null());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("policy test/good is already defined at"),
            "{args:?}: {err}"
        );
    }
    let out = offline(
        &["check", "-f", "-", "-f", "-"],
        std::process::Stdio::null(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("only once"), "{}", stderr(&out));
    // The same name in two namespaces is two policies: this one reaches AWS (and fails there).
    let out = offline(
        &["check", "-f", a, "-f", other.to_str().unwrap()],
        std::process::Stdio::null(),
    );
    assert!(
        !stderr(&out).contains("already defined"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn yaml_1_1_readings_are_warned_about_and_used_as_kubernetes_uses_them() {
    let emulator = Emulator::start(Some("small"));
    let dir = tempfile::tempdir().expect("tmp");
    // `yes` is true and 0755 is 493 for kubectl; check reads them the same way and says so.
    let p = manifest(
        dir.path(),
        "p.yaml",
        "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {name: p}\nspec:\n  selector: {instanceIdentifiers: [billing-prod]}\n  resyncSeconds: 0755\n  posture:\n    auth: {iam: yes}\n",
    );
    let out = pgbaseline(
        &emulator,
        &["check", "-f", p.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        statuses(&json(&out), "billing-prod")["auth.iam"],
        "NonCompliant"
    );
    let err = stderr(&out);
    assert!(
        err.contains("p.yaml:8: document 1: `yes` is read as true"),
        "{err}"
    );
    assert!(
        err.contains("p.yaml:6: document 1: `0755` is read as the octal number 493"),
        "{err}"
    );
}

#[test]
fn a_selector_that_matches_nothing_exits_3_and_names_the_policy() {
    let emulator = Emulator::start(Some("small"));
    let dir = tempfile::tempdir().expect("tmp");
    let typo = manifest(
        dir.path(),
        "typo.yaml",
        &policy(
            "typo",
            "{tags: {env: prdo}}",
            "Audit",
            "    auth: {iam: true}",
            "{}",
        ),
    );
    let out = pgbaseline(&emulator, &["check", "-f", typo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("0 databases"), "{table}");
    assert!(
        table.contains("policy test/typo selected no database"),
        "{table}"
    );
    let out = pgbaseline(
        &emulator,
        &["check", "-f", typo.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        json(&out)["unmatchedPolicies"],
        serde_json::json!(["test/typo"])
    );

    // A non-compliant database is reported as such (1) even when another policy matched nothing.
    let real = manifest(
        dir.path(),
        "real.yaml",
        &policy(
            "real",
            "{instanceIdentifiers: [billing-prod]}",
            "Audit",
            "    auth: {iam: true}",
            "{}",
        ),
    );
    let out = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            typo.to_str().unwrap(),
            "-f",
            real.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(
        report["unmatchedPolicies"],
        serde_json::json!(["test/typo"])
    );
    // Each finding once: one policy, one finding per control.
    assert_eq!(
        report["databases"][0]["findings"].as_array().map(Vec::len),
        Some(1)
    );

    // The exit codes are documented in --help.
    let help = offline(&["check", "--help"], std::process::Stdio::null());
    let help = String::from_utf8_lossy(&help.stdout);
    for code in [
        "0  every",
        "1  a selected",
        "2  bad input",
        "3  everything selected",
    ] {
        assert!(help.contains(code), "{help}");
    }
}

#[test]
fn a_closed_stdout_is_quiet_and_a_full_disk_is_an_error_not_a_panic() {
    let emulator = Emulator::start(Some("small"));
    let run = |args: &[&str], stdout: std::process::Stdio| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgbaseline"));
        cmd.current_dir(common::repo_root())
            .args(args)
            .envs(emulator.env())
            .stdout(stdout)
            .stderr(std::process::Stdio::piped());
        cmd.output().expect("run")
    };
    let check = [
        "check",
        "-f",
        "examples/audit-prod-baseline.yaml",
        "--stats",
    ];
    let verdict = run(&check, std::process::Stdio::null()).status.code();
    assert_eq!(verdict, Some(1));

    // `check … | head`: the reader is gone before anything is written.
    for args in [&check[..], &["crd"][..]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = run(args, writer.into());
        assert_no_panic(&out);
        let expected = if args[0] == "crd" { Some(0) } else { verdict };
        assert_eq!(out.status.code(), expected, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{args:?}: {}", stderr(&out));
    }

    // `> /dev/full`: the write fails, and that is said once, with exit code 2.
    for args in [&check[..], &["crd"][..]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = run(args, full.into());
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("error: writing to stdout: No space left on device"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// The open security group of `billing-prod` and its VPC's network ACL.
fn open_group_and_acl(emulator: &Emulator) -> (String, String, String) {
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&emulator.sdk_config().await);
        let filter = |name: &str, value: &str| {
            aws_sdk_ec2::types::Filter::builder()
                .name(name)
                .values(value)
                .build()
        };
        let groups = ec2
            .describe_security_groups()
            .filters(filter("group-name", "pgb-db-open"))
            .send()
            .await
            .expect("sg");
        let open = &groups.security_groups()[0];
        let vpc = open.vpc_id().expect("vpc").to_string();
        let app = ec2
            .describe_security_groups()
            .filters(filter("group-name", "pgb-app"))
            .send()
            .await
            .expect("app sg");
        let acls = ec2
            .describe_network_acls()
            .filters(filter("vpc-id", &vpc))
            .send()
            .await
            .expect("acls");
        (
            open.group_id().expect("id").to_string(),
            app.security_groups()[0].group_id().expect("id").to_string(),
            acls.network_acls()[0]
                .network_acl_id()
                .expect("acl id")
                .to_string(),
        )
    })
}

#[test]
fn the_internet_in_pieces_is_refused_in_a_policy_and_reported_in_a_network_acl() {
    let emulator = Emulator::start(Some("small"));
    let dir = tempfile::tempdir().expect("tmp");
    let billing = "{instanceIdentifiers: [billing-prod]}";

    // A policy cannot allow the Internet in two halves (nor leave the choice of sources open,
    // nor check nothing): refused as bad input, before any AWS call.
    emulator.reset_calls();
    for (posture, path, reason) in [
        (
            "    network: {ingress: {allowedCidrs: [0.0.0.0/1, 128.0.0.0/1]}}",
            "spec.posture.network.ingress.allowedCidrs",
            "65,536 public IPv4 addresses",
        ),
        (
            "    network: {ingress: {allowedCidrs: ['::/1', '8000::/1']}}",
            "spec.posture.network.ingress.allowedCidrs",
            "one /48 of public IPv6",
        ),
        (
            "    network: {ingress: {}}",
            "spec.posture.network.ingress",
            "denyAll: true",
        ),
        (
            "    transport: {}",
            "spec.posture.transport",
            "names none of its controls",
        ),
        (
            "    transport: {forceSsl: false}",
            "spec.posture",
            "at least one control",
        ),
    ] {
        let p = manifest(
            dir.path(),
            "bad.yaml",
            &policy("bad", billing, "Enforce", posture, "{}"),
        );
        let out = pgbaseline(&emulator, &["check", "-f", p.to_str().unwrap(), "--fix"]);
        assert_eq!(out.status.code(), Some(2), "{posture}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(path) && err.contains(reason),
            "{posture}: {err}"
        );
    }
    let p = manifest(
        dir.path(),
        "bad.yaml",
        &policy(
            "bad",
            "{tags: {}}",
            "Enforce",
            "    auth: {iam: true}",
            "{}",
        ),
    );
    let out = pgbaseline(&emulator, &["check", "-f", p.to_str().unwrap(), "--fix"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("spec.selector.tags"),
        "{}",
        stderr(&out)
    );
    assert!(emulator.calls().is_empty(), "{:?}", emulator.calls());

    // A network ACL that opens the port through two /1 entries, then denies everything, is open
    // to the whole IPv4 Internet (it used to be "closed to everyone": the first /0 entry denies).
    let (_, _, acl) = open_group_and_acl(&emulator);
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&emulator.sdk_config().await);
        for (rule, allow, cidr, protocol) in [
            (10, true, "0.0.0.0/1", "6"),
            (20, true, "128.0.0.0/1", "6"),
            (30, false, "0.0.0.0/0", "-1"),
        ] {
            ec2.create_network_acl_entry()
                .network_acl_id(&acl)
                .rule_number(rule)
                .egress(false)
                .protocol(protocol)
                .port_range(
                    aws_sdk_ec2::types::PortRange::builder()
                        .from(5432)
                        .to(5432)
                        .build(),
                )
                .rule_action(if allow {
                    aws_sdk_ec2::types::RuleAction::Allow
                } else {
                    aws_sdk_ec2::types::RuleAction::Deny
                })
                .cidr_block(cidr)
                .send()
                .await
                .expect("acl entry");
        }
    });
    let p = manifest(
        dir.path(),
        "acl.yaml",
        &policy("acl", billing, "Audit", "    network: {acl: true}", "{}"),
    );
    let out = pgbaseline(
        &emulator,
        &["check", "-f", p.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    let finding = &report["databases"][0]["findings"][0];
    assert_eq!(finding["control"], "network.acl");
    assert_eq!(finding["status"], "ReportOnly", "{finding:#}");
    let observed = finding["observed"].as_str().unwrap_or_default();
    assert!(
        observed.contains("the whole IPv4 Internet")
            && observed.contains("rule 10 allows 0.0.0.0/1")
            && observed.contains("rule 20 allows 128.0.0.0/1"),
        "{observed}"
    );
}

#[test]
fn deny_all_revokes_every_rule_reaching_the_port_the_applications_included() {
    let emulator = Emulator::start(Some("small"));
    let dir = tempfile::tempdir().expect("tmp");
    let (open_sg, app_sg, _) = open_group_and_acl(&emulator);
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&emulator.sdk_config().await);
        ec2.authorize_security_group_ingress()
            .group_id(&open_sg)
            .ip_permissions(tcp(5432, 5432, Source::Group(&app_sg)))
            .ip_permissions(tcp(22, 22, Source::Cidr("10.20.0.0/16")))
            .send()
            .await
            .expect("authorize");
    });
    let p = manifest(
        dir.path(),
        "deny.yaml",
        &policy(
            "deny",
            "{instanceIdentifiers: [billing-prod]}",
            "Enforce",
            "    network: {ingress: {denyAll: true}}",
            "{}",
        ),
    );
    let out = pgbaseline(
        &emulator,
        &["check", "-f", p.to_str().unwrap(), "--fix", "-o", "json"],
    );
    let report = json(&out);
    assert_eq!(
        statuses(&report, "billing-prod")["network.ingress"],
        "Remediated",
        "{report:#}"
    );
    assert_eq!(emulator.count_calls("RevokeSecurityGroupIngress"), 2);
    // Only the rule for another port is left.
    let perms = ingress_of(&emulator, &open_sg);
    assert_eq!(perms.len(), 1, "{perms:?}");
    assert_eq!(perms[0].from_port(), Some(22));
}
