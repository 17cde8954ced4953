//! Policy reports: one namespaced report per (policy, database), one result per control, in the
//! schema both report API groups share (`openreports.io/v1alpha1` `Report` and
//! `wgpolicyk8s.io/v1alpha2` `PolicyReport`). Objects stay small (etcd's limit is 1.5 MiB; a
//! database's report is a few KiB), carry a digest of their content so they are written only
//! when it changes, and are owned by the policy so Kubernetes deletes them with it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{DatabaseResult, DatabaseSecurityPolicy, Finding, FindingStatus, Mode};

use super::catalogue::{self, Severity};

/// Labels and annotations pgbaseline puts on its reports.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "pgbaseline";
pub const POLICY_UID_LABEL: &str = "pgbaseline.io/policy-uid";
pub const REGION_LABEL: &str = "pgbaseline.io/region";
pub const DATABASE_LABEL: &str = "pgbaseline.io/database";
pub const KIND_LABEL: &str = "pgbaseline.io/database-kind";
pub const POLICY_ANNOTATION: &str = "pgbaseline.io/policy";
pub const DIGEST_ANNOTATION: &str = "pgbaseline.io/content-sha256";
/// The engine label the report samples of both groups use.
pub const ENGINE_LABEL: &str = "policy.kubernetes.io/engine";

/// Which report API pgbaseline writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReportApi {
    /// `openreports.io/v1alpha1`, kind `Report`: the successor, preferred when served.
    OpenReports,
    /// `wgpolicyk8s.io/v1alpha2`, kind `PolicyReport`: what Kyverno serves by default.
    WgPolicy,
}

impl ReportApi {
    pub const ALL: [ReportApi; 2] = [ReportApi::OpenReports, ReportApi::WgPolicy];

    pub fn group(self) -> &'static str {
        match self {
            ReportApi::OpenReports => "openreports.io",
            ReportApi::WgPolicy => "wgpolicyk8s.io",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            ReportApi::OpenReports => "v1alpha1",
            ReportApi::WgPolicy => "v1alpha2",
        }
    }

    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }

    pub fn kind(self) -> &'static str {
        match self {
            ReportApi::OpenReports => "Report",
            ReportApi::WgPolicy => "PolicyReport",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ReportApi::OpenReports => "reports",
            ReportApi::WgPolicy => "policyreports",
        }
    }

    /// The one to use given which are served: OpenReports when both are, never both.
    pub fn choose(served: impl Fn(ReportApi) -> bool) -> Option<ReportApi> {
        ReportApi::ALL.into_iter().find(|api| served(*api))
    }
}

/// The report of one database for one policy, ready to be applied.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredReport {
    pub name: String,
    /// SHA-256 of everything in the report but the timestamps: equal digests, nothing to write.
    pub digest: String,
    /// The whole object (apiVersion, kind, metadata, body) with the results stamped `now`.
    pub object: Value,
}

/// The result field of a report entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultKind {
    Pass,
    Fail,
    Error,
}

impl ResultKind {
    /// `Compliant` and `Remediated` pass; anything out of compliance fails (also when it only
    /// waits for a reboot or cannot be fixed automatically); a control that could not be
    /// evaluated is an error.
    pub fn of(status: FindingStatus) -> ResultKind {
        match status {
            FindingStatus::Compliant | FindingStatus::Remediated => ResultKind::Pass,
            FindingStatus::NonCompliant
            | FindingStatus::PendingReboot
            | FindingStatus::ReportOnly => ResultKind::Fail,
            FindingStatus::Error => ResultKind::Error,
        }
    }
}

/// The report schemas spell severities in lower case (`critical|high|medium|low|info`).
fn severity(severity: Severity) -> String {
    severity.as_str().to_ascii_lowercase()
}

/// `pgb-<policy>-<8 hex of region/kind/id>`: unique per policy and database, a valid object name
/// whatever the policy's name (names are at most 253 characters).
pub fn report_name(policy: &str, db: &DatabaseResult) -> String {
    let hash = Sha256::digest(format!("{}/{}/{}", db.region, db.kind.as_str(), db.id));
    let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let mut prefix: String = policy
        .chars()
        .take(253 - "pgb--".len() - hex.len())
        .collect();
    // A DNS subdomain's labels end with an alphanumeric character.
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("pgb-{prefix}-{hex}")
}

/// The reports a policy should have now: one per database in `results` (every selected
/// database, not only the 50 the status lists), stamped `now_seconds`.
pub fn desired_reports(
    api: ReportApi,
    policy: &DatabaseSecurityPolicy,
    results: &[DatabaseResult],
    now_seconds: i64,
) -> Vec<DesiredReport> {
    results
        .iter()
        .map(|db| desired_report(api, policy, db, now_seconds))
        .collect()
}

fn desired_report(
    api: ReportApi,
    policy: &DatabaseSecurityPolicy,
    db: &DatabaseResult,
    now_seconds: i64,
) -> DesiredReport {
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    let namespace = policy.metadata.namespace.clone().unwrap_or_default();
    let uid = policy.metadata.uid.clone().unwrap_or_default();
    let name = report_name(&policy_name, db);

    let mut findings: Vec<&Finding> = db.findings.iter().collect();
    findings.sort_by_key(|f| f.control.as_str());
    let mut summary = BTreeMap::from([
        ("pass", 0),
        ("fail", 0),
        ("warn", 0),
        ("error", 0),
        ("skip", 0),
    ]);
    let mut results = Vec::with_capacity(findings.len());
    for finding in findings {
        let kind = ResultKind::of(finding.status);
        let key = match kind {
            ResultKind::Pass => "pass",
            ResultKind::Fail => "fail",
            ResultKind::Error => "error",
        };
        *summary.entry(key).or_default() += 1;
        results.push(result_entry(policy, &policy_name, db, finding, kind));
    }

    let labels = json!({
        MANAGED_BY_LABEL: MANAGED_BY,
        ENGINE_LABEL: MANAGED_BY,
        POLICY_UID_LABEL: uid,
        REGION_LABEL: db.region,
        DATABASE_LABEL: db.id,
        KIND_LABEL: db.kind.as_str(),
    });
    let scope = json!({
        "apiVersion": "pgbaseline.io/v1alpha1",
        "kind": "DatabaseSecurityPolicy",
        "name": policy_name,
        "namespace": namespace,
        "uid": uid,
    });
    let mut body = json!({
        "scope": scope,
        "summary": summary,
        "results": results,
    });
    if api == ReportApi::OpenReports {
        body["source"] = json!(MANAGED_BY);
    }
    let digest = digest_of(&json!({ "labels": labels, "body": body, "api": api.api_version() }));

    let mut object = body;
    stamp(&mut object, now_seconds);
    object["apiVersion"] = json!(api.api_version());
    object["kind"] = json!(api.kind());
    object["metadata"] = json!({
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "annotations": {
            POLICY_ANNOTATION: policy_name,
            DIGEST_ANNOTATION: digest,
        },
        "ownerReferences": [{
            "apiVersion": "pgbaseline.io/v1alpha1",
            "kind": "DatabaseSecurityPolicy",
            "name": policy_name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": false,
        }],
    });
    DesiredReport {
        name,
        digest,
        object,
    }
}

fn result_entry(
    policy: &DatabaseSecurityPolicy,
    policy_name: &str,
    db: &DatabaseResult,
    finding: &Finding,
    kind: ResultKind,
) -> Value {
    let control = finding.control;
    let info = catalogue::info(control);
    let category = control.as_str().split('.').next().unwrap_or_default();
    let mode = match policy.spec.mode_for(control) {
        Mode::Audit => "Audit",
        Mode::Enforce => "Enforce",
    };
    let message = if finding.message.is_empty() {
        format!(
            "{}: observed {}; expected {}",
            info.title, finding.observed, finding.expected
        )
    } else {
        finding.message.clone()
    };
    json!({
        "source": MANAGED_BY,
        "policy": policy_name,
        "rule": control.as_str(),
        "category": category,
        "severity": severity(info.severity),
        "result": kind,
        "scored": true,
        "message": message,
        "properties": {
            "status": finding.status.as_str(),
            "observed": finding.observed,
            "expected": finding.expected,
            "title": info.title,
            "mode": mode,
            "databaseId": db.id,
            "databaseKind": db.kind.as_str(),
            "region": db.region,
            "engine": db.engine,
        },
    })
}

/// Every result gets the time of this write: `metav1.Timestamp`, seconds and nanos.
fn stamp(body: &mut Value, now_seconds: i64) {
    if let Some(results) = body["results"].as_array_mut() {
        for result in results {
            result["timestamp"] = json!({ "seconds": now_seconds, "nanos": 0 });
        }
    }
}

fn digest_of(value: &Value) -> String {
    // serde_json's maps are ordered (BTreeMap): the text is canonical.
    let text = value.to_string();
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ControlId, DatabaseKind};

    fn policy(name: &str) -> DatabaseSecurityPolicy {
        let mut p: DatabaseSecurityPolicy = serde_json::from_value(json!({
            "apiVersion": "pgbaseline.io/v1alpha1",
            "kind": "DatabaseSecurityPolicy",
            "metadata": {"name": name, "namespace": "team", "uid": "1234-uid"},
            "spec": {
                "selector": {"tags": {"env": "prod"}},
                "mode": "Enforce",
                "controlModes": {"auth.iam": "Audit"},
                "posture": {"transport": {"forceSsl": true}, "auth": {"iam": true}},
            },
        }))
        .expect("policy");
        p.metadata.name = Some(name.into());
        p
    }

    fn finding(control: ControlId, status: FindingStatus, message: &str) -> Finding {
        Finding {
            control,
            severity: catalogue::severity(control),
            status,
            observed: "off".into(),
            expected: "on".into(),
            message: message.into(),
        }
    }

    fn db(id: &str, findings: Vec<Finding>) -> DatabaseResult {
        DatabaseResult {
            id: id.into(),
            kind: DatabaseKind::Instance,
            region: "eu-west-1".into(),
            engine: "postgres".into(),
            compliant: false,
            findings,
        }
    }

    #[test]
    fn one_report_per_database_with_one_result_per_control() {
        let results = vec![
            db(
                "orders",
                vec![
                    finding(ControlId::IamAuth, FindingStatus::NonCompliant, ""),
                    finding(ControlId::ForceSsl, FindingStatus::Remediated, "fixed"),
                ],
            ),
            db(
                "billing",
                vec![finding(
                    ControlId::ForceSsl,
                    FindingStatus::Error,
                    "AccessDenied: …",
                )],
            ),
        ];
        let reports = desired_reports(ReportApi::OpenReports, &policy("baseline"), &results, 42);
        assert_eq!(reports.len(), 2);
        let orders = &reports[0].object;
        assert_eq!(orders["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(orders["kind"], "Report");
        assert_eq!(orders["source"], "pgbaseline");
        assert_eq!(orders["metadata"]["namespace"], "team");
        assert_eq!(orders["metadata"]["labels"][DATABASE_LABEL], "orders");
        assert_eq!(orders["metadata"]["labels"][POLICY_UID_LABEL], "1234-uid");
        assert_eq!(orders["metadata"]["ownerReferences"][0]["uid"], "1234-uid");
        assert_eq!(orders["scope"]["kind"], "DatabaseSecurityPolicy");
        assert_eq!(
            orders["summary"],
            json!({"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0})
        );
        // Sorted by control id; severity and category from the catalogue.
        let r = &orders["results"];
        assert_eq!(r[0]["rule"], "auth.iam");
        assert_eq!(r[0]["result"], "fail");
        assert_eq!(r[0]["category"], "auth");
        assert_eq!(
            r[0]["properties"]["mode"], "Audit",
            "the per-control override"
        );
        assert_eq!(r[0]["properties"]["observed"], "off");
        assert!(
            r[0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("observed off")
        );
        assert_eq!(r[1]["rule"], "transport.forceSsl");
        assert_eq!(r[1]["result"], "pass");
        assert_eq!(
            r[1]["severity"],
            severity(catalogue::info(ControlId::ForceSsl).severity)
        );
        assert_eq!(r[1]["properties"]["mode"], "Enforce");
        assert_eq!(r[1]["timestamp"], json!({"seconds": 42, "nanos": 0}));
        assert_eq!(reports[1].object["results"][0]["result"], "error");

        let wg = desired_reports(ReportApi::WgPolicy, &policy("baseline"), &results, 42);
        assert_eq!(wg[0].object["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(wg[0].object["kind"], "PolicyReport");
        assert!(
            wg[0].object.get("source").is_none(),
            "no top-level source in v1alpha2"
        );
    }

    #[test]
    fn the_digest_ignores_the_time_and_follows_the_content() {
        let results = vec![db(
            "orders",
            vec![finding(
                ControlId::ForceSsl,
                FindingStatus::NonCompliant,
                "",
            )],
        )];
        let p = policy("baseline");
        let at = |t| desired_reports(ReportApi::OpenReports, &p, &results, t);
        assert_eq!(at(1)[0].digest, at(2)[0].digest);
        assert_ne!(at(1)[0].object, at(2)[0].object);
        let fixed = vec![db(
            "orders",
            vec![finding(ControlId::ForceSsl, FindingStatus::Remediated, "")],
        )];
        let after = desired_reports(ReportApi::OpenReports, &p, &fixed, 1);
        assert_ne!(after[0].digest, at(1)[0].digest);
        let other_api = desired_reports(ReportApi::WgPolicy, &p, &results, 1);
        assert_ne!(other_api[0].digest, at(1)[0].digest);
    }

    #[test]
    fn names_are_valid_unique_and_bounded() {
        let a = db("orders", vec![]);
        let mut b = db("orders", vec![]);
        b.region = "us-east-1".into();
        assert_ne!(report_name("p", &a), report_name("p", &b));
        let long = format!("{}-.x", "a".repeat(250));
        let name = report_name(&long, &a);
        assert!(name.len() <= 253, "{}", name.len());
        assert!(
            !name.contains("-.") && !name.contains(".-") && !name.contains("--"),
            "{name}"
        );
        assert!(
            name.starts_with("pgb-a") && name.chars().last().is_some_and(|c| c.is_ascii_hexdigit())
        );
    }

    #[test]
    fn openreports_is_chosen_when_both_are_served_and_none_when_neither() {
        assert_eq!(ReportApi::choose(|_| true), Some(ReportApi::OpenReports));
        assert_eq!(
            ReportApi::choose(|a| a == ReportApi::WgPolicy),
            Some(ReportApi::WgPolicy)
        );
        assert_eq!(ReportApi::choose(|_| false), None);
    }

    #[test]
    fn statuses_map_to_results() {
        use FindingStatus as S;
        assert_eq!(ResultKind::of(S::Compliant), ResultKind::Pass);
        assert_eq!(ResultKind::of(S::Remediated), ResultKind::Pass);
        assert_eq!(ResultKind::of(S::NonCompliant), ResultKind::Fail);
        assert_eq!(ResultKind::of(S::PendingReboot), ResultKind::Fail);
        assert_eq!(ResultKind::of(S::ReportOnly), ResultKind::Fail);
        assert_eq!(ResultKind::of(S::Error), ResultKind::Error);
    }
}
