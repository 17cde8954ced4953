//! Status of a `DatabaseSecurityPolicy`: conditions, a summary and bounded per-database results.
//!
//! Nothing here changes on every reconcile: there is no "last checked" time, so an unchanged
//! fleet produces an unchanged status and no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ControlId;

/// At most this many databases are listed in status; the summary still counts all of them.
pub const MAX_DATABASES_IN_STATUS: usize = 50;

/// Observed state of a policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSecurityPolicyStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled` (kstatus conventions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Counts over every selected database.
    #[serde(default)]
    pub summary: Summary,
    /// Per-database results, non-compliant first, then by kind and id; at most 50 entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseResult>,
    /// How many selected databases are not listed in `databases` because of the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(with = "i32")]
    pub databases_omitted: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Counts over every selected database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Databases the selector matched.
    #[schemars(with = "i32")]
    pub selected: u32,
    /// Selected databases where every control complies.
    #[schemars(with = "i32")]
    pub compliant: u32,
    /// Selected databases with at least one control out of compliance.
    #[schemars(with = "i32")]
    pub non_compliant: u32,
    /// Databases waiting for a reboot before a setting takes effect.
    #[schemars(with = "i32")]
    pub pending_reboot: u32,
    /// Databases where a remediation succeeded in this pass.
    #[schemars(with = "i32")]
    pub remediated: u32,
    /// Databases where a remediation or a read failed.
    #[schemars(with = "i32")]
    pub failed: u32,
    /// Databases left non-compliant because their remediation does not fit the account's
    /// parameter-group quotas (see their findings).
    #[serde(default)]
    #[schemars(with = "i32")]
    pub deferred: u32,
}

/// Whether a database is an RDS instance or an Aurora cluster.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum DatabaseKind {
    Instance,
    Cluster,
}

impl DatabaseKind {
    /// The value as status and reports write it.
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseKind::Instance => "Instance",
            DatabaseKind::Cluster => "Cluster",
        }
    }
}

/// The result for one database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseResult {
    /// DB instance or cluster identifier.
    pub id: String,
    /// `Instance` or `Cluster`.
    pub kind: DatabaseKind,
    /// AWS region.
    pub region: String,
    /// Engine, `postgres` or `aurora-postgresql`.
    pub engine: String,
    /// True when every finding is `Compliant` or `Remediated`.
    pub compliant: bool,
    /// One finding per checked control.
    pub findings: Vec<Finding>,
}

/// What is known about one control on one database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The control id.
    pub control: ControlId,
    /// How bad a violation of this control is (the control catalogue's severity).
    #[serde(default)]
    pub severity: Severity,
    /// The outcome.
    pub status: FindingStatus,
    /// What AWS reports now.
    #[serde(default)]
    pub observed: String,
    /// What the policy requires.
    #[serde(default)]
    pub expected: String,
    /// Why, and what to do about it.
    #[serde(default)]
    pub message: String,
}

/// How bad a violation of a control is, from `Low` to `Critical`.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum Severity {
    /// Hygiene: worth fixing, no direct exposure. (Also how a status written before
    /// severities were recorded reads until its next reconcile.)
    #[default]
    Low,
    /// Weakens detection or recovery.
    Medium,
    /// Weakens protection of data or credentials.
    High,
    /// Exposes the database to the network.
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of one control on one database.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum FindingStatus {
    /// The setting meets the policy.
    Compliant,
    /// The setting does not meet the policy; Enforce would remediate it.
    NonCompliant,
    /// pgbaseline changed the setting in this pass.
    Remediated,
    /// The right value is set but takes effect only after a reboot.
    PendingReboot,
    /// Out of compliance and not automatically fixable; the message says how to fix it.
    ReportOnly,
    /// The control could not be evaluated or remediated; the message carries the AWS error code.
    Error,
}

impl FindingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::Compliant => "Compliant",
            FindingStatus::NonCompliant => "NonCompliant",
            FindingStatus::Remediated => "Remediated",
            FindingStatus::PendingReboot => "PendingReboot",
            FindingStatus::ReportOnly => "ReportOnly",
            FindingStatus::Error => "Error",
        }
    }

    /// Whether this outcome counts as compliant for the database.
    pub fn is_compliant(self) -> bool {
        matches!(self, FindingStatus::Compliant | FindingStatus::Remediated)
    }
}
