//! Several AWS accounts from one operator, against the emulator (which isolates accounts by the
//! assumed role's account, checks external ids, enforces session policies and logs each call
//! with its account and session) and a real control plane: tenants see only their account's
//! databases, the guard makes no call in an account a policy may not use, an Audit session
//! cannot write even through a role that could, revoked and expired credentials are reported
//! and recovered from without touching other accounts, and the admission policy refuses what
//! the guard would.
//!
//! Run with `cargo test --test accounts -- --test-threads=1`.

mod common;

use std::time::{Duration, Instant};

use common::Emulator;
use common::controlplane::ControlPlane;
use common::operator::{Operator, wait_for};
use kube::Api;
use pgbaseline::api::{AwsAccount, DatabaseSecurityPolicy};
use serde_json::json;

const A: &str = "222222222222";
const B: &str = "333333333333";
const C: &str = "444444444444";

fn role(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/{name}")
}

fn condition(p: &DatabaseSecurityPolicy, type_: &str) -> Option<(String, String, String)> {
    let s = p.status.as_ref()?;
    if s.observed_generation != p.metadata.generation {
        return None;
    }
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn is(p: &DatabaseSecurityPolicy, type_: &str, status: &str, reason: &str) -> bool {
    condition(p, type_).is_some_and(|(s, r, _)| s == status && r == reason)
}

fn ids(p: &DatabaseSecurityPolicy) -> Vec<String> {
    p.status
        .iter()
        .flat_map(|s| s.databases.iter().map(|d| d.id.clone()))
        .collect()
}

fn account_ready(a: &AwsAccount) -> bool {
    a.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn account_yaml(name: &str, spec: serde_json::Value) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "pgbaseline.io/v1alpha1",
        "kind": "AwsAccount",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("json")
}

fn policy_yaml(ns: &str, name: &str, account: &str, mode: &str) -> String {
    format!(
        "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  accountRef: {{name: {account}}}\n  selector: {{tags: {{team: shared}}}}\n  mode: {mode}\n  resyncSeconds: 10\n  posture:\n    maintenance: {{deletionProtection: true}}\n"
    )
}

/// Calls the emulator logged in `account`, as `service:action`.
fn calls_in(emulator: &Emulator, account: &str) -> Vec<String> {
    emulator
        .calls()
        .into_iter()
        .filter(|c| c.account == account)
        .map(|c| format!("{}:{}", c.service, c.action))
        .collect()
}

/// The tenants' world: three accounts with their roles (external ids required), namespaces,
/// the external-id Secret, and the AwsAccounts:
/// - `a` (account A): Audit only, namespace `tenant-a` by name;
/// - `b` (account B): Audit and Enforce (a separate Enforce role), namespaces labelled
///   `pgbaseline.io/account=b`;
/// - `c` (account C): allows only `tenant-a`; named only by the intruder's policy.
struct World {
    emulator: Emulator,
    suffix: String,
    tenant_a: String,
    tenant_b: String,
    intruder: String,
}

impl World {
    fn account(&self, which: &str) -> String {
        format!("{which}-{}", self.suffix)
    }
}

async fn world(cp: &ControlPlane) -> World {
    let emulator = Emulator::start(None);
    emulator
        .create_shared_instance(A, "us-east-1", "db-a")
        .await;
    emulator
        .create_shared_instance(B, "us-east-1", "db-b")
        .await;
    emulator
        .create_shared_instance(C, "us-east-1", "db-c")
        .await;
    emulator.set_roles(json!({
        role(A, "pgbaseline-audit"): {"external_id": "ext-a"},
        role(B, "pgbaseline-audit"): {"external_id": "ext-b"},
        role(B, "pgbaseline-enforce"): {"external_id": "ext-b"},
        role(C, "pgbaseline-audit"): {"external_id": "ext-c"},
    }));
    let system = cp.namespace("pgb-system");
    let tenant_a = cp.namespace("tenant-a");
    let tenant_b = cp.namespace("tenant-b");
    let intruder = cp.namespace("intruder");
    cp.kubectl_ok(
        &["label", "namespace", &tenant_b, "pgbaseline.io/account=b"],
        None,
    );
    cp.kubectl_ok(
        &[
            "create",
            "secret",
            "generic",
            "external-ids",
            "-n",
            &system,
            "--from-literal=a=ext-a",
            "--from-literal=b=ext-b",
            "--from-literal=c=ext-c",
        ],
        None,
    );
    let suffix = tenant_a.trim_start_matches("tenant-a-").to_string();
    let w = World {
        emulator,
        suffix,
        tenant_a,
        tenant_b,
        intruder,
    };
    let secret = |key: &str| json!({"namespace": system, "name": "external-ids", "key": key});
    for (which, spec) in [
        (
            "a",
            json!({
                "accountId": A, "regions": ["us-east-1"],
                "auditRoleArn": role(A, "pgbaseline-audit"),
                "externalIdSecretRef": secret("a"),
                "allowedNamespaces": {"names": [w.tenant_a]},
            }),
        ),
        (
            "b",
            json!({
                "accountId": B, "regions": ["us-east-1"],
                "auditRoleArn": role(B, "pgbaseline-audit"),
                "enforceRoleArn": role(B, "pgbaseline-enforce"),
                "externalIdSecretRef": secret("b"),
                "allowedNamespaces": {"selector": {"matchLabels": {"pgbaseline.io/account": "b"}}},
                "allowedModes": ["Audit", "Enforce"],
            }),
        ),
        (
            "c",
            json!({
                "accountId": C, "regions": ["us-east-1"],
                "auditRoleArn": role(C, "pgbaseline-audit"),
                "externalIdSecretRef": secret("c"),
                "allowedNamespaces": {"names": [w.tenant_a]},
            }),
        ),
    ] {
        cp.kubectl_ok(
            &["apply", "-f", "-"],
            Some(&account_yaml(&w.account(which), spec)),
        );
    }
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_account_and_the_guard_calls_nothing_in_a_refused_one() {
    // A control plane of its own: AwsAccounts are cluster-scoped, and another test's operator
    // running alongside would see (and verify) this test's accounts.
    let cp = &ControlPlane::start();
    cp.install_crd();
    let w = world(cp).await;
    let op = Operator::start(cp, &w.emulator, &[]);
    let client = cp.client().await;
    let accounts: Api<AwsAccount> = Api::all(client.clone());

    // Each account is verified by STS: Ready, with the assumed identity in that account.
    for (which, id) in [("a", A), ("b", B), ("c", C)] {
        let acct = wait_for(
            &accounts,
            &w.account(which),
            Duration::from_secs(60),
            "Ready",
            &op,
            account_ready,
        )
        .await;
        let status = acct.status.expect("status");
        assert!(
            status
                .caller_arn
                .as_deref()
                .is_some_and(|arn| arn.starts_with(&format!(
                    "arn:aws:sts::{id}:assumed-role/pgbaseline-audit/pgbaseline-"
                ))),
            "{status:?}"
        );
        assert_eq!(status.regions_verified, vec!["us-east-1".to_string()]);
    }

    w.emulator.reset_calls();
    let (a, b, x) = (w.account("a"), w.account("b"), w.account("c"));
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            &[
                policy_yaml(&w.tenant_a, "audit-a", &a, "Audit"),
                policy_yaml(&w.tenant_a, "enforce-in-audit-only", &a, "Enforce"),
                policy_yaml(&w.tenant_b, "audit-b", &b, "Audit"),
                policy_yaml(&w.intruder, "intrude", &x, "Audit"),
                policy_yaml(&w.tenant_b, "missing", "no-such-account", "Audit"),
            ]
            .join("---\n"),
        ),
    );
    let in_a: Api<DatabaseSecurityPolicy> = Api::namespaced(client.clone(), &w.tenant_a);
    let in_b: Api<DatabaseSecurityPolicy> = Api::namespaced(client.clone(), &w.tenant_b);
    let in_x: Api<DatabaseSecurityPolicy> = Api::namespaced(client.clone(), &w.intruder);

    // Same selector, different accounts: each sees its own account's database only.
    let pa = wait_for(
        &in_a,
        "audit-a",
        Duration::from_secs(60),
        "NonCompliant",
        &op,
        |p| is(p, "Ready", "False", "NonCompliant"),
    )
    .await;
    assert_eq!(ids(&pa), vec!["db-a".to_string()]);
    let pb = wait_for(
        &in_b,
        "audit-b",
        Duration::from_secs(60),
        "NonCompliant",
        &op,
        |p| is(p, "Ready", "False", "NonCompliant"),
    )
    .await;
    assert_eq!(ids(&pb), vec!["db-b".to_string()]);

    // The guard: refused policies are Stalled with a reason a person can act on.
    let px = wait_for(
        &in_x,
        "intrude",
        Duration::from_secs(30),
        "NamespaceNotPermitted",
        &op,
        |p| is(p, "Stalled", "True", "NamespaceNotPermitted"),
    )
    .await;
    let (_, _, message) = condition(&px, "Ready").expect("ready");
    assert!(
        message.contains(&w.intruder) && message.contains(C),
        "{message}"
    );
    let pe = wait_for(
        &in_a,
        "enforce-in-audit-only",
        Duration::from_secs(30),
        "ModeNotPermitted",
        &op,
        |p| is(p, "Stalled", "True", "ModeNotPermitted"),
    )
    .await;
    assert!(ids(&pe).is_empty());
    wait_for(
        &in_b,
        "missing",
        Duration::from_secs(30),
        "AccountNotFound",
        &op,
        |p| is(p, "Stalled", "True", "AccountNotFound"),
    )
    .await;

    // Wait for a second sweep of account A (the policies' resync), so the refused policies had
    // as long as the allowed ones to call AWS.
    let deadline = Instant::now() + Duration::from_secs(60);
    while calls_in(&w.emulator, A)
        .iter()
        .filter(|c| *c == "rds:DescribeDBInstances")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no second sweep of account A:\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Zero calls in account C: no session was even assumed for policies (C's only policy is
    // the intruder's), and nothing but nothing reached C after the verification.
    assert_eq!(calls_in(&w.emulator, C), Vec::<String>::new());
    let calls = w.emulator.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.session.is_empty() || c.session.starts_with("pgbaseline-")),
        "{calls:?}"
    );
    // Audit makes no mutating call anywhere, and reads in B go through B's read-only session.
    assert!(
        calls
            .iter()
            .all(|c| !c.is_mutating() || c.action == "AssumeRole"),
        "{calls:?}"
    );
    let sessions: serde_json::Value = ureq::get(&format!("{}/_emulator/roles", w.emulator.url))
        .call()
        .expect("roles")
        .body_mut()
        .read_json()
        .expect("json");
    let audit_sessions: Vec<&serde_json::Value> = sessions["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter(|s| {
            s["role_arn"]
                .as_str()
                .is_some_and(|r| r.ends_with("/pgbaseline-audit"))
        })
        .collect();
    assert!(!audit_sessions.is_empty());
    assert!(
        audit_sessions.iter().all(|s| s["read_only"] == true),
        "{audit_sessions:?}"
    );
    // Metrics carry the account.
    let metrics = op.metrics();
    assert!(
        metrics.contains(&format!("account=\"{a}\""))
            && metrics.contains(&format!("account=\"{b}\"")),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&format!("account=\"{x}\",service")),
        "{metrics}"
    );
}

/// Revoked credentials: the account's policies say so (AccessDenied, Stalled) and recover once
/// the role works again; expired credentials are replaced without a person; the other account
/// is swept all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_credentials_hit_only_their_account_and_recover() {
    // A control plane of its own: AwsAccounts are cluster-scoped, and another test's operator
    // running alongside would see (and verify) this test's accounts.
    let cp = &ControlPlane::start();
    cp.install_crd();
    let w = world(cp).await;
    let op = Operator::start(cp, &w.emulator, &[]);
    let client = cp.client().await;
    let (a, b) = (w.account("a"), w.account("b"));
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            &[
                policy_yaml(&w.tenant_a, "audit-a", &a, "Audit"),
                policy_yaml(&w.tenant_b, "audit-b", &b, "Audit"),
            ]
            .join("---\n"),
        ),
    );
    let in_a: Api<DatabaseSecurityPolicy> = Api::namespaced(client.clone(), &w.tenant_a);
    let in_b: Api<DatabaseSecurityPolicy> = Api::namespaced(client.clone(), &w.tenant_b);
    let evaluated = |p: &DatabaseSecurityPolicy| is(p, "Ready", "False", "NonCompliant");
    wait_for(
        &in_a,
        "audit-a",
        Duration::from_secs(60),
        "evaluated",
        &op,
        evaluated,
    )
    .await;
    wait_for(
        &in_b,
        "audit-b",
        Duration::from_secs(60),
        "evaluated",
        &op,
        evaluated,
    )
    .await;

    // Revoke A's sessions (and refuse new ones).
    let audit_a = role(A, "pgbaseline-audit");
    w.emulator
        .set_roles(json!({ audit_a.clone(): {"external_id": "ext-a", "revoked": true} }));
    w.emulator.reset_calls();
    let denied = wait_for(
        &in_a,
        "audit-a",
        Duration::from_secs(60),
        "AccessDenied",
        &op,
        |p| is(p, "Stalled", "True", "AccessDenied"),
    )
    .await;
    let (_, _, message) = condition(&denied, "Ready").expect("ready");
    assert!(
        message.contains(&a),
        "the failure names the account: {message}"
    );
    // B is swept on while A is refused: a fresh DescribeDBInstances in B, and audit-b unchanged.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !calls_in(&w.emulator, B).contains(&"rds:DescribeDBInstances".to_string()) {
        assert!(
            Instant::now() < deadline,
            "account B was not swept while A failed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let pb = in_b.get("audit-b").await.expect("audit-b");
    assert!(evaluated(&pb), "{:?}", pb.status);

    // The role works again: A recovers by itself (re-assumed after its backoff).
    w.emulator
        .set_roles(json!({ audit_a.clone(): {"external_id": "ext-a", "revoked": false} }));
    wait_for(
        &in_a,
        "audit-a",
        Duration::from_secs(90),
        "recovered",
        &op,
        |p| evaluated(p) && is(p, "Stalled", "False", "Healthy"),
    )
    .await;

    // Expired credentials: replaced without a person (ExpiredToken, then a fresh session).
    let before = w.emulator.calls().len();
    w.emulator
        .set_roles(json!({ audit_a.clone(): {"external_id": "ext-a", "expired": true} }));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let calls = w.emulator.calls();
        let after: Vec<_> = calls[before.min(calls.len())..].to_vec();
        let expired = after.iter().position(|c| c.account == A && c.status == 403);
        let renewed = expired.is_some_and(|i| {
            after[i..]
                .iter()
                .any(|c| c.account == A && c.action == "DescribeDBInstances" && c.status == 200)
        });
        if renewed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no fresh session after expiry:\n{}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_for(
        &in_a,
        "audit-a",
        Duration::from_secs(60),
        "evaluated again",
        &op,
        |p| evaluated(p) && is(p, "Stalled", "False", "Healthy"),
    )
    .await;
    let metrics = op.metrics();
    assert!(
        metrics.contains(&format!(
            "pgbaseline_account_failures_total{{account=\"{a}\",code=\"AccessDenied\"}}"
        )),
        "{metrics}"
    );
}

/// An Audit session cannot write even when its role could: an Enforce plan run with the read-only
/// session fails at every mutating call, and the database is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_session_cannot_write_even_through_a_broad_role() {
    use pgbaseline::aws::AwsRegion;
    use pgbaseline::aws::inventory::{Inventory, Needs};
    use pgbaseline::aws::sts::{Assume, session_name};
    use pgbaseline::posture::report::Outcome;

    let emulator = Emulator::start(None);
    emulator
        .create_shared_instance(B, "us-east-1", "db-b")
        .await;
    // SAFETY of the environment: the SDK reads the emulator's endpoint and keys from it.
    let base = emulator.sdk_config().await;
    let assume = |read_only| Assume {
        account_id: B.into(),
        // The emulator grants roles everything: a broad role.
        role_arn: role(B, "pgbaseline-broad"),
        external_id: None,
        session_name: session_name(&[
            "pgbaseline",
            "test",
            if read_only { "audit" } else { "enforce" },
        ]),
        read_only,
        session_length: Duration::from_secs(900),
    };
    let audit = AwsRegion::assumed_with(
        &base,
        "us-east-1",
        &assume(true),
        100,
        Duration::from_secs(10),
    )
    .await
    .expect("audit session");
    assert_eq!(
        audit
            .verify_account(B)
            .await
            .expect("identity")
            .split(':')
            .nth(4),
        Some(B)
    );
    let spec: pgbaseline::api::DatabaseSecurityPolicySpec = serde_json::from_value(json!({
        "selector": {"tags": {"team": "shared"}},
        "mode": "Enforce",
        "posture": {"maintenance": {"deletionProtection": true}},
    }))
    .expect("spec");
    let fleet = Inventory::new(audit.clone())
        .sweep(Needs::for_policies([&spec]))
        .await
        .expect("the audit session reads");
    assert_eq!(fleet.databases.len(), 1);
    let run = pgbaseline::engine::run_policy(&spec, &fleet, &audit, None, chrono::Utc::now()).await;
    assert!(!run.outcomes.is_empty(), "an action was planned");
    for outcome in &run.outcomes {
        match outcome {
            Outcome::Failed(failure) => assert_eq!(failure.code, "AccessDenied"),
            other => panic!("the read-only session acted: {other:?}"),
        }
    }
    // Through the same role without the session policy, the same plan succeeds.
    let enforce = AwsRegion::assumed_with(
        &base,
        "us-east-1",
        &assume(false),
        100,
        Duration::from_secs(10),
    )
    .await
    .expect("enforce session");
    let run =
        pgbaseline::engine::run_policy(&spec, &fleet, &enforce, None, chrono::Utc::now()).await;
    assert!(
        run.outcomes.iter().all(|o| matches!(o, Outcome::Succeeded)),
        "{:?}",
        run.outcomes
    );
    let writes: Vec<_> = emulator
        .calls()
        .into_iter()
        .filter(|c| c.is_mutating() && c.action != "AssumeRole")
        .map(|c| (c.session, c.status))
        .collect();
    assert!(
        writes
            .iter()
            .any(|(s, st)| s.ends_with("-audit") && *st == 403)
            && writes
                .iter()
                .any(|(s, st)| s.ends_with("-enforce") && *st == 200),
        "{writes:?}"
    );
}

/// The ValidatingAdmissionPolicy shipped in the chart refuses, on the real apiserver, what the
/// guard would refuse, and lets the rest through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_policy_refuses_namespaces_modes_and_regions_the_account_does_not_allow() {
    let cp = ControlPlane::shared();
    let vap = common::repo_root().join("deploy/account-admission-policy.yaml");
    cp.kubectl_ok(
        &["apply", "--server-side", "-f", vap.to_str().expect("path")],
        None,
    );
    let allowed = cp.namespace("vap-ok");
    let labelled = cp.namespace("vap-label");
    cp.kubectl_ok(
        &["label", "namespace", &labelled, "team=pay", "tier=prod"],
        None,
    );
    let other = cp.namespace("vap-no");
    let name = format!("vap-{}", allowed.trim_start_matches("vap-ok-"));
    cp.kubectl_ok(
        &["apply", "-f", "-"],
        Some(&account_yaml(
            &name,
            json!({
                "accountId": A, "regions": ["us-east-1", "eu-west-1"],
                "auditRoleArn": role(A, "pgbaseline-audit"),
                "allowedNamespaces": {
                    "names": [allowed],
                    "selector": {
                        "matchLabels": {"team": "pay"},
                        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["sandbox"]}],
                    },
                },
            }),
        )),
    );
    let try_apply = |ns: &str, mode: &str, region: Option<&str>| {
        let mut text = policy_yaml(ns, "p", &name, mode);
        if let Some(r) = region {
            // `[a, b]`: several regions.
            let field = if r.starts_with('[') {
                "regions"
            } else {
                "region"
            };
            text = text.replace("team: shared}", &format!("team: shared}}, {field}: {r}"));
        }
        cp.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&text))
    };
    // The apiserver compiles a new policy asynchronously: wait until it refuses.
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        let out = try_apply(&other, "Audit", None);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the admission policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        refused.contains(&format!(
            "AwsAccount {name} does not allow namespace {other}"
        )),
        "{refused}"
    );
    let out = try_apply(&allowed, "Enforce", None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("allows only Audit"),
        "{err}"
    );
    let out = try_apply(&allowed, "Audit", Some("ap-south-1"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("spec.selector.region: ap-south-1 is not one of"),
        "{err}"
    );
    let out = try_apply(&allowed, "Audit", Some("[eu-west-1, ap-south-1]"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("spec.selector.regions: ap-south-1 not among"),
        "{err}"
    );
    for (ns, region) in [
        (&allowed, Some("eu-west-1")),
        (&allowed, Some("[us-east-1, eu-west-1]")),
        (&labelled, None),
    ] {
        let out = try_apply(ns, "Audit", region);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A label the selector excludes.
    cp.kubectl_ok(
        &[
            "label",
            "--overwrite",
            "namespace",
            &labelled,
            "tier=sandbox",
        ],
        None,
    );
    let out = try_apply(&labelled, "Audit", None);
    assert!(!out.status.success(), "a sandbox namespace was let through");
    // A policy naming no account, or one that does not exist, is not this policy's business.
    let out = cp.kubectl(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&policy_yaml(&other, "p", "not-created-yet", "Enforce")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
