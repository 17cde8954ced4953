//! `pgbaseline check`: evaluate policy manifests against AWS once, optionally fix, and print a
//! table or a stable JSON report. Exit 0 compliant, 1 non-compliant, 2 bad input or error, 3
//! nothing was checked (a policy selected no database, or switches on no control).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::Utc;
use serde::Serialize;

use crate::api::{
    DatabaseKind, DatabaseResult, DatabaseSecurityPolicy, DatabaseSecurityPolicySpec,
    FindingStatus, Mode,
};
use crate::aws::sts::{Assume, session_name};
use crate::aws::{
    AwsRegion, Failure,
    inventory::{Inventory, Needs},
};
use crate::engine;
use crate::postgres::{Layer, Login};
use crate::posture::indb;
use crate::posture::report::Outcome;

mod junit;

/// The report `--output json` prints. Field names are stable and documented in the README.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub summary: ReportSummary,
    pub databases: Vec<ReportDatabase>,
    /// `namespace/name` of every policy whose selector matched no database (a typo in a tag or
    /// an identifier must not look like success).
    #[serde(rename = "unmatchedPolicies", skip_serializing_if = "Vec::is_empty")]
    pub unmatched_policies: Vec<String>,
    /// `namespace/name` of every policy that checked no control on the databases it selected
    /// (its posture switches every control off). The loader rejects such a policy, as the
    /// apiserver does; this catches one that reaches [`run`] another way.
    #[serde(rename = "uncheckedPolicies", skip_serializing_if = "Vec::is_empty")]
    pub unchecked_policies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<BTreeMap<String, u64>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportSummary {
    pub databases: u32,
    pub compliant: u32,
    pub non_compliant: u32,
    pub pending_reboot: u32,
    pub remediated: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportDatabase {
    pub id: String,
    pub kind: DatabaseKind,
    pub region: String,
    pub engine: String,
    pub compliant: bool,
    pub findings: Vec<ReportFinding>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportFinding {
    pub control: crate::api::ControlId,
    pub severity: crate::api::Severity,
    pub status: FindingStatus,
    pub observed: String,
    pub expected: String,
    pub message: String,
    /// `namespace/name` of the policy that asked for the control.
    pub policy: String,
}

/// Options of one run.
#[derive(Clone, Debug)]
pub struct Options {
    pub fix: bool,
    pub requests_per_second: u32,
    /// Limit on each AWS call, retries included.
    pub call_timeout: std::time::Duration,
    /// The in-database layer.
    pub db: crate::postgres::Settings,
    /// Where `secretRef`s are read: DIR/<name>/<key>.
    pub secrets_dir: Option<std::path::PathBuf>,
    /// Assume this role (another account's), read-only unless `fix`.
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    /// Regions for the policies that name none (the environment's when empty).
    pub regions: Vec<String>,
}

impl Options {
    /// Options that check with the environment's identity and region.
    pub fn new(fix: bool, requests_per_second: u32, call_timeout: std::time::Duration) -> Options {
        Options {
            fix,
            requests_per_second,
            call_timeout,
            role_arn: None,
            external_id: None,
            regions: Vec::new(),
            db: crate::postgres::Settings::default(),
            secrets_dir: None,
        }
    }

    /// The clients for `region`: the environment's identity, or the assumed role's (with the
    /// operator's read-only session policy unless fixing).
    async fn clients(&self, region: Option<&str>) -> Result<AwsRegion, Failure> {
        let Some(role) = &self.role_arn else {
            return AwsRegion::from_env(region, self.requests_per_second, self.call_timeout).await;
        };
        let region = match region {
            Some(r) => r.to_string(),
            None => {
                AwsRegion::from_env(None, self.requests_per_second, self.call_timeout)
                    .await?
                    .region
            }
        };
        let account_id = role.split(':').nth(4).unwrap_or_default().to_string();
        let assume = Assume {
            account_id: account_id.clone(),
            role_arn: role.clone(),
            external_id: self.external_id.clone(),
            session_name: session_name(&["pgbaseline-check", &account_id]),
            read_only: !self.fix,
            session_length: std::time::Duration::from_secs(3600),
        };
        let aws = AwsRegion::assumed(
            &region,
            &assume,
            self.requests_per_second,
            self.call_timeout,
        )
        .await?;
        aws.verify_account(&account_id).await?;
        Ok(aws)
    }
}

/// How a policy logs in to its databases, as `check` resolves it: an IAM user as is, a
/// `secretRef` from the secrets directory (never from the cluster).
pub fn login_of(spec: &DatabaseSecurityPolicySpec, secrets_dir: Option<&std::path::Path>) -> Login {
    let secret = match Login::of_spec(spec) {
        Ok(login) => return login,
        Err(secret) => secret,
    };
    let Some(dir) = secrets_dir else {
        return Login::unavailable(format!(
            "secret {} is read from --db-secrets-dir, which was not given",
            secret.name
        ));
    };
    let read = |key: &str| {
        std::fs::read_to_string(dir.join(&secret.name).join(key))
            .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("secret {} key {key}: {}", secret.name, e.kind()))
    };
    Login::from_secret(read(&secret.username_key), read(&secret.password_key))
}

/// How the run ended.
pub enum Exit {
    Compliant,
    NonCompliant,
    /// Everything selected complies, but some policy selected nothing or checked nothing.
    NothingSelected,
    Error,
}

/// Evaluates (and with `fix`, remediates) every policy against its region.
pub async fn run(
    policies: &[DatabaseSecurityPolicy],
    options: &Options,
) -> Result<(Report, Vec<std::sync::Arc<crate::aws::CallStats>>), Failure> {
    let mut by_region: BTreeMap<Option<String>, Vec<&DatabaseSecurityPolicy>> = BTreeMap::new();
    for policy in policies {
        if let Some(account) = &policy.spec.account_ref
            && options.role_arn.is_none()
        {
            return Err(Failure {
                call: "configure",
                class: crate::aws::ErrorClass::InvalidConfiguration,
                code: "AccountNotGiven".into(),
                message: format!(
                    "policy {} names AwsAccount {}, which check cannot read outside the cluster: give that account's role with --role-arn (and --external-id)",
                    policy_key(policy),
                    account.name
                ),
            });
        }
        let named = policy.spec.regions();
        let regions: Vec<Option<String>> = if !named.is_empty() {
            named.iter().map(|r| Some(r.to_string())).collect()
        } else if options.regions.is_empty() {
            vec![None]
        } else {
            options.regions.iter().cloned().map(Some).collect()
        };
        for region in regions {
            by_region.entry(region).or_default().push(policy);
        }
    }
    let mut merged: BTreeMap<(String, DatabaseKind, String), ReportDatabase> = BTreeMap::new();
    let mut selected: BTreeMap<String, u32> = BTreeMap::new();
    let mut unchecked = Vec::new();
    let mut stats = Vec::new();
    let layer = policies
        .iter()
        .any(|p| indb::needed(&p.spec))
        .then(|| Layer::new(options.db.clone()));
    for (region, policies) in by_region {
        let aws = options.clients(region.as_deref()).await?;
        stats.push(aws.stats.clone());
        let inventory = Inventory::new(aws.clone());
        let specs: Vec<_> = policies
            .iter()
            .map(|policy| {
                let mut spec = policy.spec.clone();
                if options.fix {
                    // `--fix` remediates as Enforce would; per-control Audit overrides still hold.
                    spec.mode = Mode::Enforce;
                } else {
                    spec.mode = Mode::Audit;
                    spec.control_modes.clear();
                }
                spec
            })
            .collect();
        let needs = Needs::for_policies(&specs);
        let mut fleet = inventory.sweep(needs).await?;
        for (policy, spec) in policies.iter().zip(&specs) {
            let login = login_of(spec, options.secrets_dir.as_deref());
            let db = layer.as_ref().map(|layer| engine::DbAccess {
                layer,
                login: &login,
            });
            let run = engine::run_policy(spec, &fleet, &aws, db, Utc::now()).await;
            let acted = run.outcomes.iter().any(Outcome::may_have_changed_aws);
            let name = policy_key(policy);
            // A policy checked in several regions is unmatched only if no region matched.
            *selected.entry(name.clone()).or_insert(0) += run.summary.selected;
            if checked_nothing(spec, &run.results) && !unchecked.contains(&name) {
                unchecked.push(name.clone());
            }
            for result in run.results {
                let entry = merged
                    .entry((result.region.clone(), result.kind, result.id.clone()))
                    .or_insert_with(|| ReportDatabase {
                        id: result.id.clone(),
                        kind: result.kind,
                        region: result.region.clone(),
                        engine: result.engine.clone(),
                        compliant: true,
                        findings: Vec::new(),
                    });
                entry
                    .findings
                    .extend(result.findings.into_iter().map(|f| ReportFinding {
                        control: f.control,
                        severity: f.severity,
                        status: f.status,
                        observed: f.observed,
                        expected: f.expected,
                        message: f.message,
                        policy: name.clone(),
                    }));
            }
            if acted {
                // Later policies see what this one changed.
                fleet = inventory.sweep(needs).await?;
            }
        }
    }
    let mut unmatched: Vec<String> = policies
        .iter()
        .map(policy_key)
        .filter(|name| selected.get(name).copied().unwrap_or(0) == 0)
        .collect();
    unmatched.dedup();
    let mut report = Report {
        unmatched_policies: unmatched,
        unchecked_policies: unchecked,
        ..Report::default()
    };
    for (_, mut db) in merged {
        db.compliant = db.findings.iter().all(|f| f.status.is_compliant());
        report.summary.databases += 1;
        if db.compliant {
            report.summary.compliant += 1;
        } else {
            report.summary.non_compliant += 1;
        }
        if db
            .findings
            .iter()
            .any(|f| f.status == FindingStatus::PendingReboot)
        {
            report.summary.pending_reboot += 1;
        }
        if db
            .findings
            .iter()
            .any(|f| f.status == FindingStatus::Remediated)
        {
            report.summary.remediated += 1;
        }
        report.databases.push(db);
    }
    report
        .databases
        .sort_by(|a, b| (a.compliant, a.kind, &a.id).cmp(&(b.compliant, b.kind, &b.id)));
    Ok((report, stats))
}

/// Whether a policy checked nothing: its posture switches no control on, or it selected
/// databases and found nothing to say about any of them (the operator's `NothingChecked`).
fn checked_nothing(spec: &DatabaseSecurityPolicySpec, results: &[DatabaseResult]) -> bool {
    spec.enabled_controls().is_empty()
        || (!results.is_empty() && results.iter().all(|r| r.findings.is_empty()))
}

/// `namespace/name` of a policy (`default` when it names no namespace).
pub fn policy_key(policy: &DatabaseSecurityPolicy) -> String {
    let meta = &policy.metadata;
    let name = match (&meta.name, &meta.generate_name) {
        (Some(name), _) => name.clone(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => "unnamed".into(),
    };
    format!("{}/{name}", meta.namespace.as_deref().unwrap_or("default"))
}

impl Report {
    /// 2 when a control could not be evaluated or fixed, else 1 when a selected database does
    /// not comply, else 3 when a policy selected nothing or checked nothing, else 0.
    pub fn exit(&self) -> Exit {
        if self
            .databases
            .iter()
            .flat_map(|d| &d.findings)
            .any(|f| f.status == FindingStatus::Error)
        {
            Exit::Error
        } else if self.summary.non_compliant > 0 {
            Exit::NonCompliant
        } else if !self.unmatched_policies.is_empty() || !self.unchecked_policies.is_empty() {
            Exit::NothingSelected
        } else {
            Exit::Compliant
        }
    }

    /// A human table: one block per database, one line per finding.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for db in &self.databases {
            let verdict = if db.compliant {
                "COMPLIANT"
            } else {
                "NON-COMPLIANT"
            };
            let _ = writeln!(
                out,
                "{} {} ({}, {}, {})",
                verdict,
                db.id,
                db.kind.as_str(),
                db.engine,
                db.region
            );
            for f in &db.findings {
                let _ = writeln!(
                    out,
                    "  {:<38} {:<8} {:<13} {}",
                    f.control.as_str(),
                    f.severity.as_str(),
                    f.status.as_str(),
                    f.observed
                );
                if !f.status.is_compliant() {
                    if !f.expected.is_empty() {
                        let _ = writeln!(out, "  {:<61} expected: {}", "", f.expected);
                    }
                    if !f.message.is_empty() {
                        let _ = writeln!(out, "  {:<61} {}", "", f.message);
                    }
                }
            }
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "\n{} databases: {} compliant, {} non-compliant, {} pending reboot, {} remediated",
            s.databases, s.compliant, s.non_compliant, s.pending_reboot, s.remediated
        );
        for policy in &self.unmatched_policies {
            let _ = writeln!(
                out,
                "policy {policy} selected no database: check its selector (tags, identifiers, engines, region)"
            );
        }
        for policy in &self.unchecked_policies {
            let _ = writeln!(
                out,
                "policy {policy} checks nothing: its posture switches on no control"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_that_checks_nothing_is_no_pass() {
        let clean = Report {
            summary: ReportSummary {
                databases: 1,
                compliant: 1,
                ..ReportSummary::default()
            },
            ..Report::default()
        };
        assert!(matches!(clean.exit(), Exit::Compliant));
        let unchecked = Report {
            unchecked_policies: vec!["ns/vacuous".into()],
            ..clean.clone()
        };
        assert!(matches!(unchecked.exit(), Exit::NothingSelected));
        assert!(
            unchecked
                .table()
                .contains("policy ns/vacuous checks nothing")
        );
        let json = serde_json::to_value(&unchecked).unwrap_or_default();
        assert_eq!(json["uncheckedPolicies"][0], "ns/vacuous");
        assert!(serde_json::to_value(&clean).unwrap_or_default()["uncheckedPolicies"].is_null());
    }

    #[test]
    fn a_posture_with_every_control_off_checked_nothing() {
        let spec = |posture: &str| -> DatabaseSecurityPolicySpec {
            serde_saphyr::from_str(&format!(
                "selector: {{tags: {{env: prod}}}}\nposture:\n{posture}"
            ))
            .unwrap_or_else(|e| panic!("{posture}: {e}"))
        };
        let db = |findings: usize| DatabaseResult {
            id: "a".into(),
            kind: DatabaseKind::Instance,
            region: "us-east-1".into(),
            engine: "postgres".into(),
            compliant: true,
            findings: (0..findings)
                .map(|_| crate::api::Finding {
                    control: crate::api::ControlId::ForceSsl,
                    severity: crate::api::Severity::High,
                    status: FindingStatus::Compliant,
                    observed: String::new(),
                    expected: String::new(),
                    message: String::new(),
                })
                .collect(),
        };
        // Read without the apiserver's rules, as a library caller could.
        let off = spec("  transport: {forceSsl: false}");
        assert!(checked_nothing(&off, &[db(0)]));
        assert!(checked_nothing(&off, &[]));
        let on = spec("  transport: {forceSsl: true}");
        assert!(!checked_nothing(&on, &[db(1)]));
        assert!(!checked_nothing(&on, &[]));
        assert!(checked_nothing(&on, &[db(0), db(0)]));
    }
}
