//! The `pgbaseline.io/v1alpha1` API: the `DatabaseSecurityPolicy` custom resource.
//!
//! Types only: no IO. The schema (with defaults, ranges, patterns and CEL rules) is derived from
//! these types, so `kubectl explain` shows the doc comments and the apiserver rejects bad input
//! before the operator ever sees it.

pub mod account;
pub mod controls;
pub mod status;

use std::collections::BTreeMap;

use kube::core::{Message, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::posture::exposure::{self, Family};

pub use account::{AccountRef, AwsAccount, AwsAccountSpec, AwsAccountStatus};
pub use controls::ControlId;
pub use status::*;

/// Security baseline for Amazon RDS for PostgreSQL and Aurora PostgreSQL databases.
// Each printer column repeats the same keys, which the lint mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pgbaseline.io",
    version = "v1alpha1",
    kind = "DatabaseSecurityPolicy",
    namespaced,
    shortname = "dbsp",
    category = "pgbaseline",
    status = "DatabaseSecurityPolicyStatus",
    derive = "PartialEq",
    doc = "DatabaseSecurityPolicy declares the security posture a set of RDS for PostgreSQL and Aurora PostgreSQL databases must keep. In Audit mode drift is reported; in Enforce mode it is remediated, only ever by tightening a setting.",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        description = "Audit or Enforce"
    ),
    printcolumn(
        name = "Account",
        type_ = "string",
        json_path = ".spec.accountRef.name",
        description = "The AwsAccount, when not the operator's own"
    ),
    printcolumn(
        name = "Selected",
        type_ = "integer",
        json_path = ".status.summary.selected",
        description = "Databases the selector matched"
    ),
    printcolumn(
        name = "Compliant",
        type_ = "integer",
        json_path = ".status.summary.compliant",
        description = "Selected databases that comply"
    ),
    printcolumn(
        name = "NonCompliant",
        type_ = "integer",
        json_path = ".status.summary.nonCompliant",
        description = "Selected databases that do not comply"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "True when every selected database complies"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSecurityPolicySpec {
    /// Which databases this policy governs.
    pub selector: Selector,

    /// Audit (default) reports drift only and never changes AWS; Enforce remediates drift.
    #[serde(default)]
    pub mode: Mode,

    /// Per-control mode overrides keyed by control id (for example `network.ingress: Audit` while
    /// the rest enforces).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    // Bounding the map keeps the CEL rule's estimated cost inside the apiserver's budget.
    #[schemars(extend("maxProperties" = 27))]
    #[x_kube(validation = override_keys_rule())]
    pub control_modes: BTreeMap<String, Mode>,

    /// The controls to check. A control that is not mentioned is not checked.
    pub posture: Posture,

    /// How remediation may change databases.
    #[serde(default)]
    pub remediation: Remediation,

    /// The `AwsAccount` whose databases this policy governs. Without it, the operator's own
    /// identity and region are used. The account must allow this policy's namespace and mode;
    /// otherwise the policy is Stalled and nothing is read or changed in that account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_ref: Option<AccountRef>,

    /// How often AWS is re-read, in seconds.
    #[serde(default = "default_resync_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    #[schemars(with = "i32")]
    pub resync_seconds: u32,
}

fn default_resync_seconds() -> u32 {
    60
}

fn override_keys_rule() -> Rule {
    Rule::new(format!("self.all(k, k in {})", controls::cel_id_list())).message(
        "controlModes keys must be control ids such as transport.forceSsl or network.ingress",
    )
}

/// Audit reports; Enforce remediates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Mode {
    #[default]
    Audit,
    Enforce,
}

/// Database engines pgbaseline governs.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum Engine {
    #[serde(rename = "postgres")]
    Postgres,
    #[serde(rename = "aurora-postgresql")]
    AuroraPostgresql,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::AuroraPostgresql => "aurora-postgresql",
        }
    }

    pub fn parse(s: &str) -> Option<Engine> {
        match s {
            "postgres" => Some(Engine::Postgres),
            "aurora-postgresql" => Some(Engine::AuroraPostgresql),
            _ => None,
        }
    }
}

fn default_engines() -> Vec<Engine> {
    vec![Engine::Postgres, Engine::AuroraPostgresql]
}

/// Which databases a policy selects. Every criterion given must hold (they are ANDed); at least
/// one of the identifier lists or tags is required so a policy never selects a whole account by
/// accident.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.instanceIdentifiers) || has(self.clusterIdentifiers) || has(self.tags)").message("selector needs at least one of instanceIdentifiers, clusterIdentifiers or tags"))]
#[x_kube(validation = Rule::new("!(has(self.region) && has(self.regions))").message("give either region or regions, not both"))]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// DB instance identifiers (RDS for PostgreSQL). When given, an instance must be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 1000),
        inner(regex(pattern = r"^[a-zA-Z][a-zA-Z0-9-]{0,62}$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub instance_identifiers: Option<Vec<String>>,

    /// DB cluster identifiers (Aurora PostgreSQL). When given, a cluster must be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 1000),
        inner(regex(pattern = r"^[a-zA-Z][a-zA-Z0-9-]{0,62}$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub cluster_identifiers: Option<Vec<String>>,

    /// AWS tags that must all be present with these exact values (at least one, at most 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 50))]
    #[x_kube(validation = Rule::new("size(self) > 0").message("tags must name at least one tag: an empty map would select every database of the region"))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 128 && size(self[k]) <= 256)").message("tag keys are at most 128 characters and values at most 256"))]
    pub tags: Option<BTreeMap<String, String>>,

    /// Engines to select; both by default.
    #[serde(default = "default_engines")]
    #[schemars(length(min = 1))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub engines: Vec<Engine>,

    /// AWS region of the databases; the operator's region (or with an `accountRef`, the
    /// account's first region) when neither this nor `regions` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$"))]
    pub region: Option<String>,

    /// AWS regions of the databases, when the policy spans several (instead of `region`). With
    /// an `accountRef`, each must be one of the account's regions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 32),
        inner(regex(pattern = r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub regions: Option<Vec<String>>,
}

/// The controls, grouped as their ids are. A control that is not mentioned is not checked; at
/// least one must be switched on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = posture_rule())]
#[serde(rename_all = "camelCase")]
pub struct Posture {
    /// Transport security: SSL, TLS version, server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// Encryption at rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Database logging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Session and object auditing with pgAudit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
    /// Authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Network exposure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Maintenance and resilience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    /// Inside PostgreSQL: schemas, extensions, roles, functions, settings and live sessions,
    /// read over a TLS-verified connection to the endpoint AWS reports for each database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<InDatabase>,
}

/// Transport security controls.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = group_rule("transport"))]
#[serde(rename_all = "camelCase")]
pub struct Transport {
    /// `transport.forceSsl`: when true, `rds.force_ssl` must be 1 (clients must use SSL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_ssl: Option<bool>,
    /// `transport.minTlsVersion`: `ssl_min_protocol_version` must be at least this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tls_version: Option<TlsVersion>,
    /// `transport.caCertificate`: the server certificate's CA must be one of the allowed ones and
    /// stay valid long enough. Changing the CA may restart the database, so it is only remediated
    /// when the reboot policy allows a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate: Option<CaCertificate>,
}

/// A TLS protocol version RDS accepts as a minimum.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum TlsVersion {
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
}

/// Allowed certificate authorities for the database server certificate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaCertificate {
    /// Allowed CA identifiers, for example `rds-ca-rsa2048-g1`.
    #[serde(default = "default_allowed_cas")]
    #[schemars(
        length(min = 1, max = 20),
        inner(regex(pattern = r"^rds-ca-[a-z0-9-]+$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed: Vec<String>,
    /// The CA must stay valid at least this many more days.
    #[serde(default = "default_min_valid_days")]
    #[schemars(range(min = 0, max = 3650))]
    #[schemars(with = "i32")]
    pub min_valid_days: u32,
}

fn default_allowed_cas() -> Vec<String> {
    ["rds-ca-rsa2048-g1", "rds-ca-rsa4096-g1", "rds-ca-ecc384-g1"]
        .map(String::from)
        .to_vec()
}

fn default_min_valid_days() -> u32 {
    30
}

/// Encryption at rest.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = group_rule("encryption"))]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// `encryption.storage`: storage must be encrypted (report only: AWS sets this at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageEncryption>,
}

/// Storage encryption requirement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StorageEncryption {
    /// When set, the storage must be encrypted with this KMS key: a key id, key ARN, alias name
    /// (`alias/name`) or alias ARN. Aliases are resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})|(mrk-[0-9a-f]{32})|(alias/[a-zA-Z0-9/_-]{1,250})|(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key/[a-zA-Z0-9-]+|alias/[a-zA-Z0-9/_-]{1,250})))$"
    ))]
    pub kms_key_id: Option<String>,
}

/// Logging controls.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = group_rule("logging"))]
#[serde(rename_all = "camelCase")]
pub struct Logging {
    /// `logging.retention`: `rds.log_retention_period` must be at least this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<LogRetention>,
    /// `logging.cloudwatchExports`: these log types must be exported to CloudWatch Logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub cloudwatch_exports: Option<Vec<LogExport>>,
    /// `logging.connections`: when true, `log_connections` and `log_disconnections` must be on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<bool>,
    /// `logging.noStatementSecrets`: when true, `log_statement` must be `none`; `ddl`, `mod` and
    /// `all` write `CREATE/ALTER ROLE ... PASSWORD` statements to the log in clear text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_statement_secrets: Option<bool>,
}

/// Minimum log retention.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogRetention {
    /// Minimum retention in minutes (RDS accepts 1440 to 10080).
    #[schemars(range(min = 1440, max = 10080))]
    #[schemars(with = "i32")]
    pub minimum_minutes: u32,
}

/// A log type RDS for PostgreSQL can export to CloudWatch Logs.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum LogExport {
    #[serde(rename = "postgresql")]
    Postgresql,
    #[serde(rename = "upgrade")]
    Upgrade,
    #[serde(rename = "iam-db-auth-error")]
    IamDbAuthError,
}

impl LogExport {
    pub fn as_str(self) -> &'static str {
        match self {
            LogExport::Postgresql => "postgresql",
            LogExport::Upgrade => "upgrade",
            LogExport::IamDbAuthError => "iam-db-auth-error",
        }
    }
}

/// Auditing controls.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = group_rule("audit"))]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// `audit.pgaudit`: pgAudit is preloaded and logs at least these classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgaudit: Option<Pgaudit>,
}

/// pgAudit requirement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pgaudit {
    /// Statement classes `pgaudit.log` must include (`all` includes every class).
    #[schemars(length(min = 1))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub classes: Vec<PgauditClass>,
    /// When set, `pgaudit.role` must be this role (object audit logging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_$]{0,62}$"))]
    pub role: Option<String>,
}

/// A pgAudit statement class.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PgauditClass {
    Read,
    Write,
    Function,
    Role,
    Ddl,
    Misc,
    MiscSet,
    All,
}

impl PgauditClass {
    pub const ALL: [PgauditClass; 8] = [
        PgauditClass::Read,
        PgauditClass::Write,
        PgauditClass::Function,
        PgauditClass::Role,
        PgauditClass::Ddl,
        PgauditClass::Misc,
        PgauditClass::MiscSet,
        PgauditClass::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PgauditClass::Read => "read",
            PgauditClass::Write => "write",
            PgauditClass::Function => "function",
            PgauditClass::Role => "role",
            PgauditClass::Ddl => "ddl",
            PgauditClass::Misc => "misc",
            PgauditClass::MiscSet => "misc_set",
            PgauditClass::All => "all",
        }
    }
}

/// Authentication controls.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = group_rule("auth"))]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// `auth.iam`: when true, IAM database authentication must be enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<bool>,
    /// `auth.managedMasterPassword`: when true, the master password must be managed by Secrets
    /// Manager. Turning it on rotates the master password, so Enforce only does it with
    /// `remediation.allowMasterPasswordRotation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_master_password: Option<bool>,
    /// `auth.passwordEncryption`: when true, `password_encryption` must be `scram-sha-256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_encryption: Option<bool>,
}

/// Network controls.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = group_rule("network"))]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// `network.publicAccess`: `Forbidden` requires `PubliclyAccessible` to be false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access: Option<PublicAccess>,
    /// `network.ingress`: the database's security groups may open the database port only to
    /// these sources. Public address space is bounded: at most 65,536 public IPv4 addresses (one
    /// /16) and one /48 of public IPv6 in total; private ranges are not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Ingress>,
    /// `network.acl`: when true, the network ACLs of the database subnets must not allow the
    /// database port from anywhere (report only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<bool>,
}

/// Public accessibility requirement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PublicAccess {
    /// The database must not be publicly accessible.
    Forbidden,
}

/// Allowed ingress sources for the database port. Name the allowed security groups or CIDRs, or
/// set `denyAll: true`: with no allowed source every rule reaching the port is offending, and
/// Enforce revokes each of them, the applications' security-group rules included.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(format!("{HAS_SOURCE} || {DENY_ALL}")).message("ingress must name allowedSecurityGroups or allowedCidrs, or set denyAll: true: with no allowed source every rule reaching the database port is revoked, the applications' own security-group rules included"))]
#[x_kube(validation = Rule::new(format!("!{DENY_ALL} || !{HAS_SOURCE}")).message("denyAll: true allows no source: leave allowedSecurityGroups and allowedCidrs empty").field_path(".denyAll"))]
#[serde(rename_all = "camelCase")]
pub struct Ingress {
    /// Security groups allowed to reach the database port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(regex(pattern = r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_security_groups: Vec<String>,
    /// IPv4 or IPv6 CIDR blocks allowed to reach the database port. A rule's range must lie
    /// inside one of them. Private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16,
    /// 100.64.0.0/10, fc00::/7) are not bounded; the other (public) entries may add up to at most
    /// 65,536 IPv4 addresses (one /16) and one /48 of IPv6, however they are split, so a policy
    /// can never allow the Internet, whole or in pieces. Each is written in canonical form, so
    /// one network has one spelling: the network address (host bits zero), no leading zeros,
    /// IPv6 in lower case and shortest form (`10.0.0.0/8`, `2001:db8::/48`; not `10.0.0.1/8`,
    /// `10.0.0.0/08` or `2001:DB8::/48`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 43)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("allowedCidrs entries must be valid CIDRs such as 10.0.0.0/16"))]
    #[x_kube(validation = Rule::new("self.all(c, !isCIDR(c) || string(cidr(c).masked()) == c)").message("allowedCidrs entries must be canonical: the network address with host bits zero, no leading zeros, IPv6 lower case and shortest (10.0.0.0/8, 2001:db8::/48)"))]
    #[x_kube(validation = Rule::new("self.all(c, !c.endsWith('/0'))").message("0.0.0.0/0 and ::/0 are never allowed"))]
    #[x_kube(validation = budget_rule(Family::V4))]
    #[x_kube(validation = budget_rule(Family::V6))]
    pub allowed_cidrs: Vec<String>,
    /// Allow no source at all: every security-group rule that lets traffic reach the database
    /// port is offending, and Enforce revokes each of them (the applications' rules included).
    /// Required when neither allowedSecurityGroups nor allowedCidrs is given, so that "nothing
    /// may connect" is a decision rather than an omission; excludes both.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deny_all: bool,
}

const HAS_SOURCE: &str = "((has(self.allowedSecurityGroups) && size(self.allowedSecurityGroups) > 0) || (has(self.allowedCidrs) && size(self.allowedCidrs) > 0))";
const DENY_ALL: &str = "(has(self.denyAll) && self.denyAll)";

fn budget_rule(family: Family) -> Rule {
    Rule::new(exposure::cel_budget_rule(family))
        .message(Message::Message(exposure::cel_budget_message(family)))
}

fn posture_rule() -> Rule {
    let on: Vec<String> = ControlId::ALL.iter().map(|c| c.cel_is_on()).collect();
    Rule::new(on.join(" || ")).message(
        "posture must switch on at least one control (for example transport: {forceSsl: true}): a policy that checks nothing would report every database as compliant",
    )
}

fn group_rule(group: &str) -> Rule {
    let fields = controls::group_fields(group);
    let has: Vec<String> = fields.iter().map(|f| format!("has(self.{f})")).collect();
    Rule::new(has.join(" || ")).message(Message::Message(format!(
        "{group} names none of its controls ({}): naming a group does not switch its controls on",
        fields.join(", ")
    )))
}

/// Maintenance controls.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = group_rule("maintenance"))]
#[serde(rename_all = "camelCase")]
pub struct Maintenance {
    /// `maintenance.autoMinorVersionUpgrade`: when true, automatic minor version upgrades must
    /// be on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_minor_version_upgrade: Option<bool>,
    /// `maintenance.deletionProtection`: when true, deletion protection must be on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_protection: Option<bool>,
    /// `maintenance.backupRetention`: automated backups are kept at least this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_retention: Option<BackupRetention>,
    /// `maintenance.engineVersionCurrent`: when true, the engine must run the newest minor
    /// version of its major version (report only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version_current: Option<bool>,
}

/// Minimum backup retention.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupRetention {
    /// Minimum days of automated backups (1 to 35).
    #[schemars(range(min = 1, max = 35))]
    #[schemars(with = "i32")]
    pub minimum_days: u32,
}

/// In-database controls. pgbaseline connects to the endpoint AWS reports for each selected
/// database (never to a host or port from a policy), over TLS with the server certificate and
/// host name verified, and visits every database that accepts connections. Audit runs in a
/// read-only transaction and writes nothing; Enforce makes only three fixes (revoke CREATE from
/// PUBLIC, create the pgaudit extension and role, reset an offending per-role or per-database
/// setting), each of which only tightens.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = group_rule("database"))]
#[x_kube(validation = Rule::new("has(self.connection)").message("the in-database controls need connection: say how pgbaseline logs in (iamUser, secretRef or masterUserSecret)"))]
#[serde(rename_all = "camelCase")]
pub struct InDatabase {
    /// How pgbaseline logs in. There is deliberately no host or port: a policy that could choose
    /// the address would be handed a password or an IAM token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<DatabaseConnection>,
    /// `database.publicSchema`: when true, PUBLIC holds CREATE on no schema of any database.
    /// Enforce revokes it (`REVOKE CREATE ON SCHEMA ... FROM PUBLIC`) and checks again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_schema: Option<bool>,
    /// `database.pgauditExtension`: when true, the pgaudit extension exists in every database
    /// (its DDL auditing needs it per database), and the role named by `audit.pgaudit.role`
    /// exists. Enforce creates them when pgaudit is preloaded; otherwise see `audit.pgaudit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgaudit_extension: Option<bool>,
    /// `database.superusers`: members of `rds_superuser`, directly or through other roles, are
    /// the master user or listed here (report only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superusers: Option<Superusers>,
    /// `database.securityDefinerSearchPath`: when true, every SECURITY DEFINER function outside
    /// extensions pins `search_path` (report only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_definer_search_path: Option<bool>,
    /// `database.passwordHashes`: when true, no login role has an md5 password hash (report
    /// only: the role's owner sets a new password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hashes: Option<bool>,
    /// `database.settingOverrides`: when true, no per-role or per-database setting raises
    /// `log_statement` above `none` or weakens `pgaudit.log`, `log_connections`,
    /// `log_disconnections`, `ssl_min_protocol_version` or a parameter this policy controls.
    /// Enforce resets only the offending override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting_overrides: Option<bool>,
    /// `database.eventTriggers`: every event trigger belongs to an extension or is listed here
    /// (report only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_triggers: Option<EventTriggers>,
    /// `database.plaintextSessions`: when true, no live client session is without TLS (report
    /// only). Whatever this says, Enforce of `transport.forceSsl` is held back while plaintext
    /// clients are connected, unless `remediation.allowForceSslWithPlaintextClients`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_sessions: Option<bool>,
}

/// How pgbaseline authenticates to the databases: exactly one of `iamUser`, `secretRef` and
/// `masterUserSecret`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("(has(self.iamUser) ? 1 : 0) + (has(self.secretRef) ? 1 : 0) + (has(self.masterUserSecret) ? 1 : 0) == 1").message("connection needs exactly one of iamUser, secretRef and masterUserSecret"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseConnection {
    /// Log in as this role with an IAM authentication token generated by the operator (the
    /// role must be a member of `rds_iam`, and the database must have IAM authentication on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_$]{0,62}$"))]
    pub iam_user: Option<String>,
    /// Log in with the user name and password of a Secret in the policy's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Log in as the master user with the secret RDS manages for each database in Secrets
    /// Manager (`ManageMasterUserPassword`): pgbaseline reads the secret whose ARN AWS reports
    /// for the database (`MasterUserSecret`), never one a policy names. Needs
    /// `secretsmanager:GetSecretValue` on `rds!*` secrets (and `kms:Decrypt` for a customer
    /// managed key). Meant for Enforce: the master user may run the fixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_user_secret: Option<MasterUserSecret>,
}

/// The RDS-managed master secret of each database (no fields: AWS says which secret it is).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MasterUserSecret {}

/// A Secret in the policy's namespace holding a user name and a password.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    pub name: String,
    /// Key of the user name.
    #[serde(default = "default_username_key")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]{1,253}$"))]
    pub username_key: String,
    /// Key of the password.
    #[serde(default = "default_password_key")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]{1,253}$"))]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}

/// Who may hold `rds_superuser`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Superusers {
    /// Roles allowed to be members of `rds_superuser` besides the master user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(regex(pattern = r"^[a-z_][a-z0-9_$]{0,62}$")))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed: Vec<String>,
}

/// Which event triggers may exist besides those of extensions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EventTriggers {
    /// Event trigger names allowed besides the triggers extensions own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed: Vec<String>,
}

/// How remediation may change databases.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Remediation {
    /// When a database may be rebooted so a static parameter or a new parameter group takes
    /// effect: `Never` (report PendingReboot), `MaintenanceWindow` (inside the database's
    /// preferred maintenance window) or `Immediately`.
    #[serde(default)]
    pub reboot: RebootPolicy,
    /// `Auto` changes a custom parameter group in place only when every database attached to it
    /// is selected by this policy, and copies it to a dedicated group otherwise; `Dedicated`
    /// always gives each database its own group. `default.*` groups are always copied.
    #[serde(default)]
    pub parameter_group_strategy: ParameterGroupStrategy,
    /// Allow turning on the managed master password, which rotates the master password. Without
    /// it `auth.managedMasterPassword` is report only.
    #[serde(default)]
    pub allow_master_password_rotation: bool,
    /// Enforce `transport.forceSsl` even on a database with live plaintext clients (they are cut
    /// off). Without it the change is held back while such clients are connected, as far as the
    /// policy's `database.connection` lets pgbaseline see.
    #[serde(default)]
    pub allow_force_ssl_with_plaintext_clients: bool,
}

/// When a reboot may happen.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RebootPolicy {
    #[default]
    Never,
    MaintenanceWindow,
    Immediately,
}

impl RebootPolicy {
    /// The value as written in a policy.
    pub fn as_str(self) -> &'static str {
        match self {
            RebootPolicy::Never => "Never",
            RebootPolicy::MaintenanceWindow => "MaintenanceWindow",
            RebootPolicy::Immediately => "Immediately",
        }
    }
}

/// How parameter groups are changed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ParameterGroupStrategy {
    #[default]
    Auto,
    Dedicated,
}

impl DatabaseSecurityPolicySpec {
    /// The effective mode of one control: its override, else the policy mode.
    pub fn mode_for(&self, control: ControlId) -> Mode {
        self.control_modes
            .get(control.as_str())
            .copied()
            .unwrap_or(self.mode)
    }

    /// Whether any control runs in Enforce mode (the policy may act on AWS).
    pub fn enforces_anything(&self) -> bool {
        self.mode == Mode::Enforce || self.control_modes.values().any(|m| *m == Mode::Enforce)
    }

    /// The controls the policy switches on, in catalogue order. Empty only for a policy the
    /// apiserver would reject now (one stored before that rule): such a policy checks nothing.
    pub fn enabled_controls(&self) -> Vec<ControlId> {
        let posture = serde_json::to_value(&self.posture).unwrap_or_default();
        ControlId::ALL
            .iter()
            .copied()
            .filter(|c| c.is_on(&posture))
            .collect()
    }

    /// The first region the policy selects from, when it names one.
    pub fn region(&self) -> Option<&str> {
        self.regions().first().copied()
    }

    /// The regions the policy selects from, as named (`region` or `regions`); empty: the
    /// default one (the operator's, or the account's first).
    pub fn regions(&self) -> Vec<&str> {
        match (&self.selector.region, &self.selector.regions) {
            (Some(region), _) => vec![region.as_str()],
            (None, Some(regions)) => regions.iter().map(String::as_str).collect(),
            (None, None) => Vec::new(),
        }
    }
}
