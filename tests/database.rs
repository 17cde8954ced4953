//! The in-database layer against real parts: the AWS emulator reports the instances, whose
//! endpoints (`<id>.aaaaaaaaaa.us-east-1.rds.amazonaws.com`, port echoed from CreateDBInstance)
//! are routed to a real PostgreSQL 15 + pgaudit on 127.0.0.1 by `--db-connect-addr`; TLS still
//! verifies the AWS host name against the test CA. The server is seeded with one violation of
//! every in-database control (`scripts/postgres/seed.sql`).

mod common;

use std::collections::BTreeMap;

use common::postgres::Postgres;
use common::{Emulator, free_port, manifest, pgbaseline, report_json, runtime};
use serde_json::Value;

const AUDITOR: (&str, &str, &str) = ("auditor", "pgbaseline_auditor", "auditor-password");
const MASTER_PASSWORD: &str = "master-password-1";

/// A CreateDBInstance of a PostgreSQL 14 instance (`rds.force_ssl` 0 by default) whose endpoint
/// port is `port`, tagged `indb=<tag>`, master user `postgres` (no password yet).
fn new_instance(
    rds: &aws_sdk_rds::Client,
    id: &str,
    port: u16,
    tag: &str,
) -> aws_sdk_rds::operation::create_db_instance::builders::CreateDBInstanceFluentBuilder {
    rds.create_db_instance()
        .db_instance_identifier(id)
        .engine("postgres")
        .engine_version("14.15")
        .db_instance_class("db.t4g.micro")
        .allocated_storage(20)
        .master_username("postgres")
        .port(i32::from(port))
        .tags(
            aws_sdk_rds::types::Tag::builder()
                .key("indb")
                .value(tag)
                .build(),
        )
}

/// Creates PostgreSQL instances in the emulator ([`new_instance`], with a password).
fn create_instances(emulator: &Emulator, instances: &[(&str, u16, &str)]) {
    runtime().block_on(async {
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        for (id, port, tag) in instances {
            new_instance(&rds, id, *port, tag)
                .master_user_password("not-a-real-password-1")
                .send()
                .await
                .expect("create instance");
        }
    });
}

fn policy(name: &str, tag: &str, mode: &str, secret: &str, extra_posture: &str) -> String {
    format!(
        "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {{name: {name}, namespace: test}}\nspec:\n  selector: {{tags: {{indb: {tag}}}}}\n  mode: {mode}\n  posture:\n    audit: {{pgaudit: {{classes: [ddl, role], role: rds_pgaudit}}}}\n{extra_posture}    database:\n      connection: {{secretRef: {{name: {secret}}}}}\n      publicSchema: true\n      pgauditExtension: true\n      superusers: {{}}\n      securityDefinerSearchPath: true\n      passwordHashes: true\n      settingOverrides: true\n      eventTriggers: {{}}\n      plaintextSessions: true\n"
    )
}

fn check(
    emulator: &Emulator,
    pg: &Postgres,
    secrets: &std::path::Path,
    files: &[&std::path::Path],
    fix: bool,
) -> (Value, String) {
    let mut args: Vec<String> = vec!["check".into()];
    for f in files {
        args.push("-f".into());
        args.push(f.display().to_string());
    }
    args.extend(
        [
            "-o",
            "json",
            "--db-connect-addr",
            "127.0.0.1",
            "--db-connect-timeout",
            "2s",
            "--db-ca-bundle",
        ]
        .map(String::from),
    );
    args.push(pg.ca.display().to_string());
    args.push("--db-secrets-dir".into());
    args.push(secrets.display().to_string());
    if fix {
        args.push("--fix".into());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pgbaseline(emulator, &argv);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let text = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    (report_json(&out), text)
}

/// control → (status, message) of one database in a report.
fn findings(report: &Value, id: &str) -> BTreeMap<String, (String, String)> {
    report["databases"]
        .as_array()
        .expect("databases")
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {report}"))["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["control"].as_str().unwrap_or_default().to_string(),
                (
                    f["status"].as_str().unwrap_or_default().to_string(),
                    f["message"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

fn status<'a>(f: &'a BTreeMap<String, (String, String)>, control: &str) -> &'a str {
    f.get(control)
        .map(|(s, _)| s.as_str())
        .unwrap_or_else(|| panic!("{control} in {f:?}"))
}

fn message<'a>(f: &'a BTreeMap<String, (String, String)>, control: &str) -> &'a str {
    f.get(control).map(|(_, m)| m.as_str()).unwrap_or_default()
}

#[test]
fn audit_reports_every_seeded_violation_writes_nothing_and_isolates_failing_databases() {
    let mut pg = Postgres::start(true);
    pg.connect_plaintext_client();
    let emulator = Emulator::start(None);
    let closed = free_port();
    create_instances(
        &emulator,
        &[
            ("seeded", pg.port, "a"),
            ("gone", closed, "a"),
            ("wrongpass", pg.port, "b"),
        ],
    );
    let secrets = pg.secrets_dir(&[
        AUDITOR,
        ("badsecret", "pgbaseline_auditor", "not-the-password"),
    ]);
    let dir = tempfile::tempdir().expect("tmp");
    let a = manifest(
        dir.path(),
        "a.yaml",
        &policy(
            "a",
            "a",
            "Audit",
            "auditor",
            "    transport: {forceSsl: true}\n",
        ),
    );
    let b = manifest(
        dir.path(),
        "b.yaml",
        &policy("b", "b", "Audit", "badsecret", ""),
    );
    let before = pg.catalogue_snapshot();
    emulator.reset_calls();
    let (report, output) = check(&emulator, &pg, &secrets, &[&a, &b], false);

    // Audit wrote nothing in the database, and made no mutating AWS call.
    assert_eq!(pg.catalogue_snapshot(), before);
    assert!(emulator.mutating_calls().is_empty());
    // No password reached the output.
    for secret in ["auditor-password", "not-the-password", "plaintext-password"] {
        assert!(!output.contains(secret), "{secret} leaked: {output}");
    }

    let seeded = findings(&report, "seeded");
    for (control, want) in [
        ("database.publicSchema", "NonCompliant"),
        ("database.pgauditExtension", "NonCompliant"),
        ("database.superusers", "ReportOnly"),
        ("database.securityDefinerSearchPath", "ReportOnly"),
        ("database.passwordHashes", "ReportOnly"),
        ("database.settingOverrides", "NonCompliant"),
        ("database.eventTriggers", "ReportOnly"),
        ("database.plaintextSessions", "ReportOnly"),
        ("transport.forceSsl", "NonCompliant"),
    ] {
        assert_eq!(status(&seeded, control), want, "{control}: {seeded:?}");
    }
    let has = |control: &str, text: &str| {
        assert!(
            message(&seeded, control).contains(text),
            "{control} lacks {text:?}: {}",
            message(&seeded, control)
        )
    };
    has("database.publicSchema", "app.public");
    has("database.publicSchema", "reports.public");
    has(
        "database.pgauditExtension",
        "no pgaudit extension in database reports",
    );
    has(
        "database.pgauditExtension",
        "no pgaudit extension in database postgres",
    );
    has(
        "database.pgauditExtension",
        "role rds_pgaudit (pgaudit.role) does not exist",
    );
    has(
        "database.superusers",
        "nested (via rds_superuser > appadmin)",
    );
    has("database.superusers", "appadmin (via rds_superuser)");
    has(
        "database.securityDefinerSearchPath",
        "bad_definer() (owner appadmin)",
    );
    assert!(!message(&seeded, "database.securityDefinerSearchPath").contains("good_definer"));
    assert!(!message(&seeded, "database.securityDefinerSearchPath").contains("pgaudit"));
    has("database.passwordHashes", "legacy (md5)");
    has(
        "database.settingOverrides",
        "log_statement = all for role app_user",
    );
    has(
        "database.settingOverrides",
        "pgaudit.log = none for database reports",
    );
    assert!(!message(&seeded, "database.settingOverrides").contains("work_mem"));
    has("database.eventTriggers", "app: suspicious");
    assert!(!message(&seeded, "database.eventTriggers").contains("pgaudit_ddl_command_end"));
    has(
        "database.plaintextSessions",
        "plaintext_client@127.0.0.1 to app",
    );
    // The force-SSL gate names who would be cut off.
    has(
        "transport.forceSsl",
        "not enforced: 1 live client session without TLS",
    );

    // The unreachable database and the failed login are errors of their own; the rest is
    // reported.
    let gone = findings(&report, "gone");
    assert!(
        gone.iter()
            .filter(|(c, _)| c.starts_with("database."))
            .count()
            == 8
    );
    for (control, (s, m)) in gone.iter().filter(|(c, _)| c.starts_with("database.")) {
        assert_eq!(s, "Error", "{control}");
        assert!(m.starts_with("DatabaseUnreachable: "), "{control}: {m}");
    }
    let wrong = findings(&report, "wrongpass");
    for (control, (s, m)) in wrong.iter().filter(|(c, _)| c.starts_with("database.")) {
        assert_eq!(s, "Error", "{control}");
        assert!(m.starts_with("AuthenticationFailed: "), "{control}: {m}");
        assert!(m.contains("password authentication failed"), "{m}");
    }
}

#[test]
fn enforce_makes_the_three_fixes_once_and_holds_force_ssl_while_plaintext_clients_connect() {
    let mut pg = Postgres::start(true);
    pg.psql(
        "postgres",
        &format!("ALTER ROLE postgres PASSWORD '{MASTER_PASSWORD}'"),
    );
    pg.connect_plaintext_client();
    let emulator = Emulator::start(None);
    create_instances(&emulator, &[("seeded", pg.port, "a")]);
    let secrets = pg.secrets_dir(&[("master", "postgres", MASTER_PASSWORD)]);
    let dir = tempfile::tempdir().expect("tmp");
    let p = manifest(
        dir.path(),
        "p.yaml",
        &policy(
            "p",
            "a",
            "Enforce",
            "master",
            "    transport: {forceSsl: true}\n",
        )
        .replace(
            "  mode: Enforce\n",
            "  mode: Enforce\n  controlModes: {audit.pgaudit: Audit}\n",
        ),
    );
    emulator.reset_calls();
    let (report, output) = check(&emulator, &pg, &secrets, &[&p], true);
    assert!(!output.contains(MASTER_PASSWORD));
    let first = findings(&report, "seeded");
    for control in [
        "database.publicSchema",
        "database.pgauditExtension",
        "database.settingOverrides",
    ] {
        assert_eq!(
            status(&first, control),
            "Remediated",
            "{control}: {first:?}"
        );
    }
    assert!(
        message(&first, "database.publicSchema")
            .contains("revoked CREATE on schema public from PUBLIC in database reports")
    );
    assert!(
        message(&first, "database.settingOverrides")
            .contains("reset log_statement for role app_user")
    );
    // Report-only controls stay reported, untouched.
    for control in [
        "database.superusers",
        "database.passwordHashes",
        "database.eventTriggers",
        "database.securityDefinerSearchPath",
    ] {
        assert_eq!(status(&first, control), "ReportOnly", "{control}");
    }
    // The gate held: rds.force_ssl was not changed while a plaintext client is connected.
    assert_eq!(status(&first, "transport.forceSsl"), "NonCompliant");
    assert!(message(&first, "transport.forceSsl").contains("not enforced"));
    assert!(
        emulator.mutating_calls().is_empty(),
        "{:?}",
        emulator.mutating_calls()
    );

    // The database now holds what the fixes promised, and only that.
    for db in ["postgres", "app", "reports"] {
        assert_eq!(
            pg.psql(
                db,
                "SELECT has_schema_privilege('public', 'public', 'CREATE')"
            ),
            "f",
            "{db}"
        );
        assert_eq!(
            pg.psql(
                db,
                "SELECT count(*) FROM pg_extension WHERE extname = 'pgaudit'"
            ),
            "1",
            "{db}"
        );
    }
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'rds_pgaudit' AND NOT rolcanlogin"
        ),
        "1"
    );
    assert_eq!(
        pg.psql("postgres", "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting WHERE setrole = 'app_user'::regrole"),
        "work_mem=8MB"
    );
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = 'reports')"), "0");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_auth_members WHERE member = 'nested'::regrole"
        ),
        "1"
    );

    // A second Enforce pass does nothing.
    let snapshot = pg.catalogue_snapshot();
    let (report, _) = check(&emulator, &pg, &secrets, &[&p], true);
    let second = findings(&report, "seeded");
    for control in [
        "database.publicSchema",
        "database.pgauditExtension",
        "database.settingOverrides",
    ] {
        assert_eq!(
            status(&second, control),
            "Compliant",
            "{control}: {second:?}"
        );
    }
    assert!(!second.values().any(|(s, _)| s == "Remediated"));
    assert_eq!(pg.catalogue_snapshot(), snapshot);
}

#[test]
fn tls_is_verified_against_the_ca_bundle_and_never_skipped() {
    let pg = Postgres::start(false);
    let emulator = Emulator::start(None);
    create_instances(&emulator, &[("plain", pg.port, "a")]);
    let secrets = pg.secrets_dir(&[AUDITOR]);
    let dir = tempfile::tempdir().expect("tmp");
    let p = manifest(
        dir.path(),
        "p.yaml",
        &policy("p", "a", "Audit", "auditor", ""),
    );
    // Verified: a clean server complies.
    let (report, _) = check(&emulator, &pg, &secrets, &[&p], false);
    let ok = findings(&report, "plain");
    assert_eq!(status(&ok, "database.publicSchema"), "Compliant", "{ok:?}");
    // Another CA: the certificate does not verify, nothing is read.
    let other = dir.path().join("other-ca.crt");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .expect("openssl");
    assert!(made.status.success());
    let out = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            p.to_str().expect("path"),
            "-o",
            "json",
            "--db-connect-addr",
            "127.0.0.1",
            "--db-ca-bundle",
            other.to_str().expect("path"),
            "--db-secrets-dir",
            secrets.to_str().expect("path"),
        ],
    );
    let f = findings(&report_json(&out), "plain");
    assert_eq!(status(&f, "database.publicSchema"), "Error");
    assert!(
        message(&f, "database.publicSchema").starts_with("TlsVerificationFailed: "),
        "{f:?}"
    );
    // No CA bundle: never connects unverified.
    let out = pgbaseline(
        &emulator,
        &[
            "check",
            "-f",
            p.to_str().expect("path"),
            "-o",
            "json",
            "--db-connect-addr",
            "127.0.0.1",
            "--db-secrets-dir",
            secrets.to_str().expect("path"),
        ],
    );
    let f = findings(&report_json(&out), "plain");
    assert!(
        message(&f, "database.publicSchema").contains("no CA bundle"),
        "{f:?}"
    );
}

/// The IAM token is a SigV4 query presign for `rds-db` with the right user, host, port and
/// expiry: checked by recomputing the signature from the test credentials.
#[test]
fn iam_tokens_are_valid_sigv4_presigns_for_rds_db() {
    use sha2::{Digest, Sha256};
    let emulator = Emulator::start(None);
    let token = runtime().block_on(async {
        let aws =
            pgbaseline::aws::AwsRegion::from_config(&emulator.sdk_config().await, 10).expect("aws");
        aws.db_auth_token(
            "db1.aaaaaaaaaa.us-east-1.rds.amazonaws.com",
            5439,
            "pgbaseline_auditor",
        )
        .await
        .expect("token")
    });
    let (host, query) = token.split_once("/?").expect("host/?query");
    assert_eq!(host, "db1.aaaaaaaaaa.us-east-1.rds.amazonaws.com:5439");
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(params["Action"], "connect");
    assert_eq!(params["DBUser"], "pgbaseline_auditor");
    assert_eq!(params["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
    assert_eq!(params["X-Amz-Expires"], "900");
    assert_eq!(params["X-Amz-SignedHeaders"], "host");
    let date = &params["X-Amz-Date"];
    let day = &date[..8];
    assert_eq!(
        params["X-Amz-Credential"],
        format!("testing%2F{day}%2Fus-east-1%2Frds-db%2Faws4_request")
    );
    // Recompute the signature (SigV4, query auth, payload UNSIGNED... for presigned rds-db the
    // payload hash is that of the empty body).
    let canonical_query = query
        .split('&')
        .filter(|kv| !kv.starts_with("X-Amz-Signature="))
        .collect::<Vec<_>>();
    let mut sorted = canonical_query.clone();
    sorted.sort();
    let canonical_request = format!(
        "GET\n/\n{}\nhost:{host}\n\nhost\n{}",
        sorted.join("&"),
        hex(&Sha256::digest(b""))
    );
    let scope = format!("{day}/us-east-1/rds-db/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(b"AWS4testing", day.as_bytes());
    for part in ["us-east-1", "rds-db", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    assert_eq!(
        params["X-Amz-Signature"],
        hex(&hmac(&key, to_sign.as_bytes()))
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

/// The operator end to end: a real kube-apiserver, the emulator and PostgreSQL. A policy with
/// database controls in Enforce, logging in with a Secret of its namespace, reaches Ready=True
/// after the fixes, and the database holds them.
#[test]
fn operator_enforces_database_controls_until_ready() {
    use common::controlplane::ControlPlane;
    use common::operator::Operator;
    use std::time::{Duration, Instant};

    let pg = Postgres::start(true);
    pg.psql(
        "postgres",
        &format!("ALTER ROLE postgres PASSWORD '{MASTER_PASSWORD}'"),
    );
    let emulator = Emulator::start(None);
    create_instances(&emulator, &[("seeded", pg.port, "op")]);
    let cp = ControlPlane::shared();
    let ns = cp.namespace("indb");
    cp.kubectl_ok(
        &[
            "create",
            "secret",
            "generic",
            "pg-master",
            "-n",
            &ns,
            "--from-literal=username=postgres",
            &format!("--from-literal=password={MASTER_PASSWORD}"),
        ],
        None,
    );
    let ca = pg.ca.display().to_string();
    let operator = Operator::start(
        cp,
        &emulator,
        &[
            "--namespace",
            &ns,
            "--db-connect-addr",
            "127.0.0.1",
            "--db-ca-bundle",
            &ca,
        ],
    );
    let spec = "  selector: {tags: {indb: op}}\n  mode: Enforce\n  resyncSeconds: 10\n  posture:\n    audit: {pgaudit: {classes: [ddl, role], role: rds_pgaudit}}\n    database:\n      connection: {secretRef: {name: pg-master}}\n      publicSchema: true\n      pgauditExtension: true\n      settingOverrides: true\n  controlModes: {audit.pgaudit: Audit}\n";
    // audit.pgaudit stays in Audit (it would copy the default group and wait for a reboot):
    // it is left out of readiness by checking only the database controls' findings below, and
    // the policy is narrowed to them once they are fixed.
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {{name: indb, namespace: {ns}}}\nspec:\n{spec}"
        )),
    );
    let findings_of = || -> Value {
        let out = cp.kubectl(&["get", "dbsp", "indb", "-n", &ns, "-o", "json"], None);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let remediated = loop {
        let p = findings_of();
        let statuses: BTreeMap<String, String> = p["status"]["databases"][0]["findings"]
            .as_array()
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        (
                            f["control"].as_str().unwrap_or_default().to_string(),
                            f["status"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let db_ok = [
            "database.publicSchema",
            "database.pgauditExtension",
            "database.settingOverrides",
        ]
        .iter()
        .all(|c| {
            statuses
                .get(*c)
                .is_some_and(|s| s == "Remediated" || s == "Compliant")
        });
        if db_ok {
            break statuses;
        }
        assert!(
            Instant::now() < deadline,
            "database controls not fixed: {p}\n{}",
            operator.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        remediated.get("audit.pgaudit").map(String::as_str),
        Some("NonCompliant")
    );
    for db in ["postgres", "app", "reports"] {
        assert_eq!(
            pg.psql(
                db,
                "SELECT has_schema_privilege('public', 'public', 'CREATE')"
            ),
            "f"
        );
    }
    // Narrowed to the database controls, the policy becomes Ready=True.
    cp.kubectl_ok(
        &["patch", "dbsp", "indb", "-n", &ns, "--type=json", "-p",
          r#"[{"op":"remove","path":"/spec/posture/audit"},{"op":"remove","path":"/spec/controlModes"}]"#],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = findings_of();
        let ready = p["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .unwrap_or(Value::Null);
        if ready["status"] == "True"
            && p["status"]["observedGeneration"] == p["metadata"]["generation"]
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Ready: {p}\n{}",
            operator.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Every connection is counted by outcome; none failed.
    let connected = operator.metric("pgbaseline_database_connections_total{outcome=\"Connected\"}");
    assert!(connected >= 3.0, "{}", operator.metrics());
    assert_eq!(
        operator.metric("pgbaseline_database_connections_total"),
        connected,
        "{}",
        operator.metrics()
    );
    assert!(
        operator
            .metric("pgbaseline_database_connect_duration_seconds_count{outcome=\"Connected\"}")
            >= 3.0
    );
    // No secret in the operator's log or the policy's status.
    let text = operator.log_text();
    assert!(!text.contains(MASTER_PASSWORD));
    assert!(!findings_of().to_string().contains(MASTER_PASSWORD));
}

/// `check -o json` of one manifest, routed to the local PostgreSQL.
fn check_text(
    emulator: &Emulator,
    pg: &Postgres,
    secrets: &std::path::Path,
    manifest_text: &str,
    fix: bool,
) -> (Value, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let p = manifest(dir.path(), "p.yaml", manifest_text);
    check(emulator, pg, secrets, &[&p], fix)
}

/// Effective settings, on a real server: a parameter group waiting for a reboot makes only the
/// controls whose values the server does not run yet `PendingReboot` (naming the parameters);
/// after the reboot, a value the server still does not run is an override; once the server runs
/// it, the control complies.
#[test]
fn effective_settings_say_which_values_wait_for_a_reboot_and_catch_overrides() {
    let pg = Postgres::start(false);
    let emulator = Emulator::start(None);
    use aws_sdk_rds::types::ApplyMethod::{Immediate, PendingReboot};
    let set = |name: &str, value: &str, method: aws_sdk_rds::types::ApplyMethod| {
        aws_sdk_rds::types::Parameter::builder()
            .parameter_name(name)
            .parameter_value(value)
            .apply_method(method)
            .build()
    };
    async fn modify(rds: &aws_sdk_rds::Client, parameters: &[aws_sdk_rds::types::Parameter]) {
        rds.modify_db_parameter_group()
            .db_parameter_group_name("eff-pg")
            .set_parameters(Some(parameters.to_vec()))
            .send()
            .await
            .expect("modify eff-pg");
    }
    // One runtime: the client's connections belong to it.
    let rt = runtime();
    let rds = rt.block_on(async { aws_sdk_rds::Client::new(&emulator.sdk_config().await) });
    rt.block_on(async {
        rds.create_db_parameter_group()
            .db_parameter_group_name("eff-pg")
            .db_parameter_group_family("postgres14")
            .description("effective settings test")
            .send()
            .await
            .expect("group");
        modify(
            &rds,
            &[
                set("log_connections", "1", Immediate),
                set("log_disconnections", "1", Immediate),
                set("pgaudit.log", "ddl,role", Immediate),
            ],
        )
        .await;
        new_instance(&rds, "eff", pg.port, "eff")
            .master_user_password("not-a-real-password-1")
            .db_parameter_group_name("eff-pg")
            .send()
            .await
            .expect("instance");
        // The static preload waits for a reboot: the whole group is `pending-reboot` to AWS.
        modify(
            &rds,
            &[set("shared_preload_libraries", "pgaudit", PendingReboot)],
        )
        .await;
    });
    let secrets = pg.secrets_dir(&[AUDITOR]);
    let policy = "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {name: eff, namespace: test}\nspec:\n  selector: {instanceIdentifiers: [eff]}\n  posture:\n    logging: {connections: true, noStatementSecrets: true}\n    audit: {pgaudit: {classes: [ddl, role]}}\n    database:\n      connection: {secretRef: {name: auditor}}\n      publicSchema: true\n";

    let (report, _) = check_text(&emulator, &pg, &secrets, policy, false);
    let f = findings(&report, "eff");
    // The server runs with pgaudit preloaded already: not this control's reboot.
    assert_eq!(status(&f, "audit.pgaudit"), "Compliant", "{f:?}");
    assert!(
        message(&f, "audit.pgaudit").contains("the reboot eff-pg waits for does not change it"),
        "{f:?}"
    );
    assert_eq!(
        status(&f, "logging.noStatementSecrets"),
        "Compliant",
        "{f:?}"
    );
    // Connection logging is set in the group but the server does not run it yet.
    assert_eq!(status(&f, "logging.connections"), "PendingReboot", "{f:?}");
    let m = message(&f, "logging.connections");
    assert!(
        m.contains("eff runs log_connections = off (group eff-pg sets 1)")
            && m.contains("eff runs log_disconnections = off (group eff-pg sets 1)")
            && !m.contains("shared_preload_libraries"),
        "{m}"
    );

    // Rebooted, in sync, and the server still logs no connections: overridden outside the group.
    rt.block_on(async {
        rds.reboot_db_instance()
            .db_instance_identifier("eff")
            .send()
            .await
            .expect("reboot");
    });
    let (report, _) = check_text(&emulator, &pg, &secrets, policy, false);
    let f = findings(&report, "eff");
    assert_eq!(status(&f, "logging.connections"), "NonCompliant", "{f:?}");
    assert!(
        message(&f, "logging.connections")
            .starts_with("overridden outside the parameter group: eff runs log_connections = off"),
        "{f:?}"
    );

    // The server now runs what the group says.
    for setting in ["log_connections", "log_disconnections"] {
        pg.psql("postgres", &format!("ALTER SYSTEM SET {setting} = on"));
    }
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pg.psql("postgres", "SHOW log_connections") != "on" {
        assert!(std::time::Instant::now() < deadline, "reload not seen");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (report, _) = check_text(&emulator, &pg, &secrets, policy, false);
    let f = findings(&report, "eff");
    assert_eq!(status(&f, "logging.connections"), "Compliant", "{f:?}");
}

/// An Aurora cluster: the catalogue is read through the writer (cluster) endpoint and the
/// effective settings on each member's instance endpoint, both with TLS verifying the host
/// names AWS reports (`apg.cluster-aaaaaaaaaa…`, `apg-1.aaaaaaaaaa…`) against the test CA.
#[test]
fn aurora_clusters_are_read_through_the_writer_and_every_member_with_verified_host_names() {
    let pg = Postgres::start(false);
    let emulator = Emulator::start(None);
    let port = pg.port;
    let endpoints = runtime().block_on(async {
        use aws_sdk_rds::types::{ApplyMethod, Parameter};
        let rds = aws_sdk_rds::Client::new(&emulator.sdk_config().await);
        rds.create_db_cluster_parameter_group()
            .db_cluster_parameter_group_name("apg-pg")
            .db_parameter_group_family("aurora-postgresql16")
            .description("members log connections")
            .send()
            .await
            .expect("group");
        let mut modify = rds
            .modify_db_cluster_parameter_group()
            .db_cluster_parameter_group_name("apg-pg");
        for name in ["log_connections", "log_disconnections"] {
            modify = modify.parameters(
                Parameter::builder()
                    .parameter_name(name)
                    .parameter_value("1")
                    .apply_method(ApplyMethod::Immediate)
                    .build(),
            );
        }
        modify.send().await.expect("modify");
        let cluster = rds
            .create_db_cluster()
            .db_cluster_identifier("apg")
            .engine("aurora-postgresql")
            .engine_version("16.6")
            .master_username("postgres")
            .master_user_password("not-a-real-password-1")
            .db_cluster_parameter_group_name("apg-pg")
            .port(i32::from(port))
            .send()
            .await
            .expect("cluster");
        let mut endpoints = vec![
            cluster
                .db_cluster()
                .and_then(|c| c.endpoint())
                .unwrap_or_default()
                .to_string(),
        ];
        for member in ["apg-1", "apg-2"] {
            let db = rds
                .create_db_instance()
                .db_instance_identifier(member)
                .db_cluster_identifier("apg")
                .engine("aurora-postgresql")
                .db_instance_class("db.r6g.large")
                .send()
                .await
                .expect("member");
            endpoints.push(
                db.db_instance()
                    .and_then(|i| i.endpoint())
                    .and_then(|e| e.address())
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        endpoints
    });
    assert_eq!(
        endpoints,
        [
            "apg.cluster-aaaaaaaaaa.us-east-1.rds.amazonaws.com",
            "apg-1.aaaaaaaaaa.us-east-1.rds.amazonaws.com",
            "apg-2.aaaaaaaaaa.us-east-1.rds.amazonaws.com"
        ]
    );
    let secrets = pg.secrets_dir(&[AUDITOR]);
    let policy = "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {name: apg, namespace: test}\nspec:\n  selector: {clusterIdentifiers: [apg]}\n  posture:\n    logging: {connections: true}\n    database:\n      connection: {secretRef: {name: auditor}}\n      publicSchema: true\n      superusers: {}\n";
    let (report, output) = check_text(&emulator, &pg, &secrets, policy, false);
    assert!(!output.contains("auditor-password"));
    let f = findings(&report, "apg");
    // Through the writer endpoint, verified.
    assert_eq!(status(&f, "database.publicSchema"), "Compliant", "{f:?}");
    assert_eq!(status(&f, "database.superusers"), "Compliant", "{f:?}");
    // On every member's endpoint, verified: each runs without connection logging though the
    // cluster group (in sync) asks for it.
    assert_eq!(status(&f, "logging.connections"), "NonCompliant", "{f:?}");
    let m = message(&f, "logging.connections");
    for member in ["apg-1", "apg-2"] {
        assert!(
            m.contains(&format!(
                "{member} runs log_connections = off (group apg-pg sets 1)"
            )),
            "{m}"
        );
    }
    assert!(!m.contains("not read"), "{m}");
}

/// The RDS-managed master secret: pgbaseline reads the secret whose ARN AWS reports for the
/// database (GetSecretValue), logs in as the master user and fixes; a database whose password is
/// not managed reports why; the password never reaches the output.
#[test]
fn the_master_user_secret_aws_reports_logs_in_and_is_never_shown() {
    let pg = Postgres::start(false);
    let emulator = Emulator::start(None);
    let port = pg.port;
    let password = runtime().block_on(async {
        let config = emulator.sdk_config().await;
        let rds = aws_sdk_rds::Client::new(&config);
        let mut arn = String::new();
        for (id, managed) in [("managed", true), ("unmanaged", false)] {
            let create = new_instance(&rds, id, port, "master");
            let create = if managed {
                create.manage_master_user_password(true)
            } else {
                create.master_user_password("not-a-real-password-1")
            };
            let db = create.send().await.expect("instance");
            if managed {
                arn = db
                    .db_instance()
                    .and_then(|d| d.master_user_secret())
                    .and_then(|s| s.secret_arn())
                    .expect("MasterUserSecret")
                    .to_string();
            }
        }
        let value = aws_sdk_secretsmanager::Client::new(&config)
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .expect("secret");
        let json: Value =
            serde_json::from_str(value.secret_string().expect("string")).expect("json");
        assert_eq!(json["username"], "postgres");
        json["password"].as_str().expect("password").to_string()
    });
    // As RDS does: the master user's password is the secret's.
    pg.psql(
        "postgres",
        &format!(
            "ALTER ROLE postgres PASSWORD '{}'",
            password.replace('\'', "''")
        ),
    );
    pg.psql("postgres", "GRANT CREATE ON SCHEMA public TO PUBLIC");
    let secrets = pg.secrets_dir(&[]);
    let policy = "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {name: m, namespace: test}\nspec:\n  selector: {tags: {indb: master}}\n  mode: Enforce\n  posture:\n    database:\n      connection: {masterUserSecret: {}}\n      publicSchema: true\n";
    emulator.reset_calls();
    let (report, output) = check_text(&emulator, &pg, &secrets, policy, true);
    assert!(!output.contains(&password), "the master password leaked");
    let f = findings(&report, "managed");
    assert_eq!(status(&f, "database.publicSchema"), "Remediated", "{f:?}");
    assert!(
        message(&f, "database.publicSchema")
            .contains("revoked CREATE on schema public from PUBLIC in database postgres")
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT has_schema_privilege('public', 'public', 'CREATE')"
        ),
        "f"
    );
    let f = findings(&report, "unmanaged");
    assert_eq!(status(&f, "database.publicSchema"), "Error", "{f:?}");
    assert!(
        message(&f, "database.publicSchema")
            .starts_with("CredentialsUnavailable: AWS reports no MasterUserSecret"),
        "{f:?}"
    );
    // The secret was read through Secrets Manager, only for the managed database, and nothing
    // in AWS was changed.
    let reads: Vec<_> = emulator
        .calls()
        .into_iter()
        .filter(|c| c.action == "GetSecretValue")
        .collect();
    assert!(!reads.is_empty() && reads.iter().all(|c| c.service == "secretsmanager"));
    assert!(emulator.mutating_calls().is_empty());
}
