//! `evaluate`: what each control of a policy finds on one database, and what would fix it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::api::{
    ControlId, DatabaseKind, DatabaseSecurityPolicySpec, Finding, FindingStatus, Ingress,
};

use super::exposure::{self, Exposure, Family};
use super::model::{ApplyStatus, Database, IngressRule, IngressSource, ParameterGroup};
use super::values::{
    self, list_contains, list_with, parse_bool, pgaudit_covers, tls_rank, version_cmp,
};

/// What evaluation needs besides the policy and the database.
#[derive(Clone, Debug)]
pub struct EvalContext<'a> {
    pub now: DateTime<Utc>,
    /// KMS key ids and alias names to key ARNs.
    pub kms_keys: &'a BTreeMap<String, String>,
}

/// The instance or cluster an attribute change applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Target {
    Instance(String),
    Cluster(String),
}

impl Target {
    pub fn of(database: &Database) -> Target {
        match database.kind {
            DatabaseKind::Instance => Target::Instance(database.id.clone()),
            DatabaseKind::Cluster => Target::Cluster(database.id.clone()),
        }
    }
}

/// A change that only ever tightens an attribute.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum AttributeChange {
    DisablePublicAccess,
    EnableIamAuth,
    EnableLogExports(Vec<String>),
    EnableDeletionProtection,
    RaiseBackupRetention(u32),
    EnableAutoMinorVersionUpgrade,
    SetCaCertificate(String),
    EnableManagedMasterPassword,
}

impl std::fmt::Display for AttributeChange {
    /// For people: events, findings and logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttributeChange::DisablePublicAccess => write!(f, "turn off public access"),
            AttributeChange::EnableIamAuth => write!(f, "turn on IAM database authentication"),
            AttributeChange::EnableLogExports(logs) => {
                write!(f, "export {} logs to CloudWatch", logs.join(", "))
            }
            AttributeChange::EnableDeletionProtection => write!(f, "turn on deletion protection"),
            AttributeChange::RaiseBackupRetention(days) => {
                write!(f, "keep backups {days} days")
            }
            AttributeChange::EnableAutoMinorVersionUpgrade => {
                write!(f, "turn on automatic minor version upgrades")
            }
            AttributeChange::SetCaCertificate(ca) => write!(f, "use certificate authority {ca}"),
            AttributeChange::EnableManagedMasterPassword => {
                write!(f, "let Secrets Manager manage the master password")
            }
        }
    }
}

/// One step towards compliance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Fix {
    /// Set a parameter of the database's parameter group (instance) or cluster group (Aurora).
    Parameter { name: String, value: String },
    /// Modify an instance or cluster attribute.
    Attribute {
        target: Target,
        change: AttributeChange,
    },
    /// Revoke exactly one ingress rule.
    Revoke {
        security_group: String,
        rule: IngressRule,
    },
    /// The right values are set and wait for a reboot.
    Reboot,
}

/// A finding together with the fixes that would make it compliant.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub finding: Finding,
    pub fixes: Vec<Fix>,
}

impl Evaluation {
    fn new(
        control: ControlId,
        status: FindingStatus,
        observed: String,
        expected: String,
        message: String,
    ) -> Self {
        Evaluation {
            finding: Finding {
                control,
                severity: super::catalogue::severity(control),
                status,
                observed,
                expected,
                message,
            },
            fixes: Vec::new(),
        }
    }

    fn with_fixes(mut self, fixes: Vec<Fix>) -> Self {
        self.fixes = fixes;
        self
    }
}

fn compliant(
    control: ControlId,
    observed: impl Into<String>,
    expected: impl Into<String>,
) -> Evaluation {
    Evaluation::new(
        control,
        FindingStatus::Compliant,
        observed.into(),
        expected.into(),
        "meets the policy".into(),
    )
}

fn violation(
    control: ControlId,
    observed: impl Into<String>,
    expected: impl Into<String>,
    message: impl Into<String>,
    fixes: Vec<Fix>,
) -> Evaluation {
    Evaluation::new(
        control,
        FindingStatus::NonCompliant,
        observed.into(),
        expected.into(),
        message.into(),
    )
    .with_fixes(fixes)
}

fn report_only(
    control: ControlId,
    observed: impl Into<String>,
    expected: impl Into<String>,
    message: impl Into<String>,
) -> Evaluation {
    Evaluation::new(
        control,
        FindingStatus::ReportOnly,
        observed.into(),
        expected.into(),
        message.into(),
    )
}

fn error(control: ControlId, message: impl Into<String>) -> Evaluation {
    let mut message: String = message.into();
    if message.trim().is_empty() {
        message = "could not be evaluated".into();
    }
    Evaluation::new(
        control,
        FindingStatus::Error,
        "unknown".into(),
        String::new(),
        message,
    )
}

/// Evaluates every control the policy names on one database, in control-id order.
pub fn evaluate(
    spec: &DatabaseSecurityPolicySpec,
    database: &Database,
    ctx: &EvalContext<'_>,
) -> Vec<Evaluation> {
    let posture = &spec.posture;
    let mut out = Vec::new();
    let transport = posture.transport.as_ref();
    let logging = posture.logging.as_ref();
    let auth = posture.auth.as_ref();
    let network = posture.network.as_ref();
    let maintenance = posture.maintenance.as_ref();

    if transport.and_then(|t| t.force_ssl) == Some(true) {
        out.push(parameter_control(
            database,
            ControlId::ForceSsl,
            "rds.force_ssl = 1",
            |g| {
                let v = g.value("rds.force_ssl");
                if v.and_then(parse_bool) == Some(true) {
                    Ok(())
                } else {
                    Err(vec![("rds.force_ssl", "1".to_string())])
                }
            },
        ));
    }
    if let Some(min) = transport.and_then(|t| t.min_tls_version) {
        let expected = format!("ssl_min_protocol_version >= {}", min.as_str());
        out.push(parameter_control(
            database,
            ControlId::MinTlsVersion,
            &expected,
            |g| {
                let v = g
                    .value("ssl_min_protocol_version")
                    .unwrap_or(values::POSTGRES_DEFAULT_MIN_TLS);
                match (tls_rank(v), tls_rank(min.as_str())) {
                    (Some(have), Some(need)) if have >= need => Ok(()),
                    _ => Err(vec![("ssl_min_protocol_version", min.as_str().to_string())]),
                }
            },
        ));
    }
    if let Some(ca) = transport.and_then(|t| t.ca_certificate.as_ref()) {
        out.push(ca_control(
            database,
            &ca.allowed,
            ca.min_valid_days,
            ctx.now,
        ));
    }
    if let Some(storage) = posture.encryption.as_ref().and_then(|e| e.storage.as_ref()) {
        out.push(storage_control(
            database,
            storage.kms_key_id.as_deref(),
            ctx.kms_keys,
        ));
    }
    if let Some(retention) = logging.and_then(|l| l.retention.as_ref()) {
        let minimum = retention.minimum_minutes;
        let expected = format!("rds.log_retention_period >= {minimum}");
        out.push(parameter_control(
            database,
            ControlId::LogRetention,
            &expected,
            |g| match g
                .value("rds.log_retention_period")
                .and_then(|v| v.trim().parse::<u32>().ok())
            {
                Some(have) if have >= minimum => Ok(()),
                _ => Err(vec![("rds.log_retention_period", minimum.to_string())]),
            },
        ));
    }
    if let Some(exports) = logging.and_then(|l| l.cloudwatch_exports.as_ref()) {
        let missing: Vec<String> = exports
            .iter()
            .map(|e| e.as_str().to_string())
            .filter(|e| !database.attributes.cloudwatch_exports.contains(e))
            .collect();
        let observed = join_or_none(database.attributes.cloudwatch_exports.iter());
        let expected = join_or_none(exports.iter().map(|e| e.as_str()));
        out.push(if missing.is_empty() {
            compliant(ControlId::CloudwatchExports, observed, expected)
        } else {
            let message = format!("not exported to CloudWatch Logs: {}", missing.join(", "));
            violation(
                ControlId::CloudwatchExports,
                observed,
                expected,
                message,
                vec![Fix::Attribute {
                    target: Target::of(database),
                    change: AttributeChange::EnableLogExports(missing),
                }],
            )
        });
    }
    if logging.and_then(|l| l.connections) == Some(true) {
        out.push(parameter_control(
            database,
            ControlId::LogConnections,
            "log_connections = 1, log_disconnections = 1",
            |g| {
                let fixes: Vec<(&str, String)> = ["log_connections", "log_disconnections"]
                    .into_iter()
                    .filter(|p| g.value(p).and_then(parse_bool) != Some(true))
                    .map(|p| (p, "1".to_string()))
                    .collect();
                if fixes.is_empty() { Ok(()) } else { Err(fixes) }
            },
        ));
    }
    if logging.and_then(|l| l.no_statement_secrets) == Some(true) {
        out.push(parameter_control(
            database,
            ControlId::NoStatementSecrets,
            "log_statement = none",
            |g| match g
                .value("log_statement")
                .map(|v| v.trim().to_ascii_lowercase())
            {
                None => Ok(()),
                Some(v) if v == "none" || v.is_empty() => Ok(()),
                Some(_) => Err(vec![("log_statement", "none".to_string())]),
            },
        ));
    }
    if let Some(pgaudit) = posture.audit.as_ref().and_then(|a| a.pgaudit.as_ref()) {
        let classes: Vec<&str> = pgaudit.classes.iter().map(|c| c.as_str()).collect();
        let mut expected = format!(
            "shared_preload_libraries has pgaudit, pgaudit.log covers {}",
            classes.join(",")
        );
        if let Some(role) = &pgaudit.role {
            expected.push_str(&format!(", pgaudit.role = {role}"));
        }
        out.push(parameter_control(
            database,
            ControlId::Pgaudit,
            &expected,
            |g| {
                let mut fixes = Vec::new();
                let libraries = g.value("shared_preload_libraries");
                if !list_contains(libraries, "pgaudit") {
                    fixes.push((
                        "shared_preload_libraries",
                        list_with(libraries, &["pgaudit"]),
                    ));
                }
                let log = g.value("pgaudit.log");
                if !pgaudit_covers(log, &classes) {
                    fixes.push(("pgaudit.log", list_with(log, &classes)));
                }
                if let Some(role) = &pgaudit.role
                    && g.value("pgaudit.role").map(str::trim) != Some(role.as_str())
                {
                    fixes.push(("pgaudit.role", role.clone()));
                }
                if fixes.is_empty() { Ok(()) } else { Err(fixes) }
            },
        ));
    }
    if auth.and_then(|a| a.iam) == Some(true) {
        out.push(flag_control(
            ControlId::IamAuth,
            database.attributes.iam_auth,
            "IAM database authentication enabled",
            vec![Fix::Attribute {
                target: Target::of(database),
                change: AttributeChange::EnableIamAuth,
            }],
        ));
    }
    if auth.and_then(|a| a.managed_master_password) == Some(true) {
        out.push(if database.attributes.managed_master_password {
            compliant(ControlId::ManagedMasterPassword, "managed by Secrets Manager", "managed by Secrets Manager")
        } else if spec.remediation.allow_master_password_rotation {
            violation(
                ControlId::ManagedMasterPassword,
                "self-managed",
                "managed by Secrets Manager",
                "turning this on rotates the master password into a Secrets Manager secret",
                vec![Fix::Attribute { target: Target::of(database), change: AttributeChange::EnableManagedMasterPassword }],
            )
        } else {
            report_only(
                ControlId::ManagedMasterPassword,
                "self-managed",
                "managed by Secrets Manager",
                "turning this on rotates the master password; set remediation.allowMasterPasswordRotation: true to let Enforce do it, or run modify-db-* --manage-master-user-password after updating clients",
            )
        });
    }
    if auth.and_then(|a| a.password_encryption) == Some(true) {
        out.push(parameter_control(
            database,
            ControlId::PasswordEncryption,
            "password_encryption = scram-sha-256",
            |g| match g
                .value("password_encryption")
                .map(|v| v.trim().to_ascii_lowercase())
            {
                Some(v) if v == "scram-sha-256" => Ok(()),
                _ => Err(vec![("password_encryption", "scram-sha-256".to_string())]),
            },
        ));
    }
    if network.and_then(|n| n.public_access).is_some() {
        out.push(public_access_control(database));
    }
    if let Some(ingress) = network.and_then(|n| n.ingress.as_ref()) {
        out.push(ingress_control(database, ingress));
    }
    if network.and_then(|n| n.acl) == Some(true) {
        out.push(acl_control(database));
    }
    if maintenance.and_then(|m| m.auto_minor_version_upgrade) == Some(true) {
        out.push(auto_minor_control(database));
    }
    if maintenance.and_then(|m| m.deletion_protection) == Some(true) {
        out.push(flag_control(
            ControlId::DeletionProtection,
            database.attributes.deletion_protection,
            "deletion protection on",
            vec![Fix::Attribute {
                target: Target::of(database),
                change: AttributeChange::EnableDeletionProtection,
            }],
        ));
    }
    if let Some(backup) = maintenance.and_then(|m| m.backup_retention.as_ref()) {
        let have = database.attributes.backup_retention_days;
        let observed = format!("{have} days");
        let expected = format!(">= {} days", backup.minimum_days);
        out.push(if have >= backup.minimum_days {
            compliant(ControlId::BackupRetention, observed, expected)
        } else {
            violation(
                ControlId::BackupRetention,
                observed,
                expected,
                "automated backups are kept too briefly",
                vec![Fix::Attribute {
                    target: Target::of(database),
                    change: AttributeChange::RaiseBackupRetention(backup.minimum_days),
                }],
            )
        });
    }
    if maintenance.and_then(|m| m.engine_version_current) == Some(true) {
        out.push(match &database.newest_minor_version {
            None => error(ControlId::EngineVersionCurrent, "the newest minor version of this engine is unknown (DescribeDBEngineVersions gave no upgrade targets)"),
            Some(newest) if version_cmp(&database.engine_version, newest).is_ge() => {
                compliant(ControlId::EngineVersionCurrent, database.engine_version.clone(), newest.clone())
            }
            Some(newest) => report_only(
                ControlId::EngineVersionCurrent,
                database.engine_version.clone(),
                newest.clone(),
                format!("upgrade to {newest} (modify the engine version, or let automatic minor version upgrades apply it in the maintenance window)"),
            ),
        });
    }
    out.sort_by_key(|e| e.finding.control);
    // A read the sweep could not make costs the controls that need it, nothing else.
    for e in &mut out {
        if let Some(why) = unread(spec, database, e.finding.control) {
            let expected = std::mem::take(&mut e.finding.expected);
            *e = error(e.finding.control, format!("not evaluated: {why}"));
            e.finding.expected = expected;
        }
    }
    out
}

/// What the sweep failed to read that `control` needs on `database`, if anything.
fn unread<'a>(
    spec: &DatabaseSecurityPolicySpec,
    database: &'a Database,
    control: ControlId,
) -> Option<&'a str> {
    let errors = &database.read_errors;
    let failed = match control {
        ControlId::Ingress => &errors.security_groups,
        ControlId::NetworkAcl => &errors.network_acls,
        ControlId::CaCertificate => &errors.certificates,
        ControlId::EngineVersionCurrent => &errors.engine_versions,
        // Aliases are needed only to compare a key not given by its ARN.
        ControlId::StorageEncryption => match spec
            .posture
            .encryption
            .as_ref()
            .and_then(|e| e.storage.as_ref())
            .and_then(|s| s.kms_key_id.as_deref())
        {
            Some(key) if !(key.starts_with("arn:") && key.contains(":key/")) => &errors.kms_aliases,
            _ => return None,
        },
        c if super::catalogue::reads_parameters(c) => &errors.parameters,
        _ => return None,
    };
    failed.as_deref()
}

fn join_or_none<'a>(items: impl Iterator<Item = impl AsRef<str> + 'a>) -> String {
    let joined: Vec<String> = items.map(|s| s.as_ref().to_string()).collect();
    if joined.is_empty() {
        "none".into()
    } else {
        joined.join(",")
    }
}

fn flag_control(control: ControlId, on: bool, expected: &str, fixes: Vec<Fix>) -> Evaluation {
    if on {
        compliant(control, "on", expected)
    } else {
        violation(
            control,
            "off",
            expected,
            format!("{} is off", super::catalogue::info(control).title),
            fixes,
        )
    }
}

/// A control checked on the parameter group. `check` returns the parameter changes needed.
fn parameter_control<F>(
    database: &Database,
    control: ControlId,
    expected: &str,
    check: F,
) -> Evaluation
where
    F: FnOnce(&ParameterGroup) -> Result<(), Vec<(&'static str, String)>>,
{
    let Some(group) = &database.parameter_group else {
        return error(control, "the database's parameter group could not be read");
    };
    let params = super::catalogue::info(control).parameters;
    let observed = params
        .iter()
        .map(|p| format!("{p} = {}", group.value(p).unwrap_or("(unset)")))
        .collect::<Vec<_>>()
        .join(", ");
    match check(group) {
        Ok(()) if pending_reboot(database) => Evaluation::new(
            control,
            FindingStatus::PendingReboot,
            observed,
            expected.to_string(),
            format!(
                "{} is set in {} but takes effect after {}",
                params.join(", "),
                group.name,
                match waiting_members(database).as_slice() {
                    [] => "a reboot".to_string(),
                    [one] => format!("member {one} reboots"),
                    many => format!("members {} reboot", many.join(", ")),
                }
            ),
        )
        .with_fixes(vec![Fix::Reboot]),
        Ok(()) => compliant(control, observed, expected),
        Err(changes) => {
            let where_ = if group.is_default() {
                format!(
                    "{} is an AWS default group and is never modified; Enforce copies it to a dedicated group",
                    group.name
                )
            } else {
                format!("set in parameter group {}", group.name)
            };
            violation(
                control,
                observed,
                expected,
                where_,
                changes
                    .into_iter()
                    .map(|(name, value)| Fix::Parameter {
                        name: name.into(),
                        value,
                    })
                    .collect(),
            )
        }
    }
}

/// The Aurora members whose cluster parameter group waits for their reboot.
fn waiting_members(database: &Database) -> Vec<&str> {
    database
        .members
        .iter()
        .filter(|m| m.apply_status == ApplyStatus::PendingReboot)
        .map(|m| m.id.as_str())
        .collect()
}

/// Whether the attached group's values are waiting for a reboot (any member, for a cluster).
pub fn pending_reboot(database: &Database) -> bool {
    let group_pending = database
        .parameter_group
        .as_ref()
        .is_some_and(|g| g.apply_status == ApplyStatus::PendingReboot);
    group_pending
        || database
            .members
            .iter()
            .any(|m| m.apply_status == ApplyStatus::PendingReboot)
}

fn ca_control(
    database: &Database,
    allowed: &[String],
    min_valid_days: u32,
    now: DateTime<Utc>,
) -> Evaluation {
    let control = ControlId::CaCertificate;
    let expected = format!(
        "one of {} valid for >= {min_valid_days} days",
        allowed.join(",")
    );
    let mut holders: Vec<(Target, Option<&super::model::CaCertificate>)> = Vec::new();
    match database.kind {
        DatabaseKind::Instance => holders.push((
            Target::of(database),
            database.attributes.ca_certificate.as_ref(),
        )),
        DatabaseKind::Cluster => {
            for m in &database.members {
                holders.push((Target::Instance(m.id.clone()), m.ca_certificate.as_ref()));
            }
        }
    }
    let Some(replacement) = allowed.first() else {
        return error(control, "no allowed CA given");
    };
    let mut observed = Vec::new();
    let mut fixes = Vec::new();
    let mut problems = Vec::new();
    for (target, ca) in holders {
        let name = match &target {
            Target::Instance(id) | Target::Cluster(id) => id.clone(),
        };
        match ca {
            None => {
                observed.push(format!("{name}: unknown"));
                problems.push(format!("{name} has no CA information"));
                fixes.push(Fix::Attribute {
                    target,
                    change: AttributeChange::SetCaCertificate(replacement.clone()),
                });
            }
            Some(ca) => {
                observed.push(format!("{name}: {}", ca.identifier));
                let days_left = ca.valid_till.map(|t| (t - now).num_days());
                let allowed_ca = allowed.iter().any(|a| a == &ca.identifier);
                let fresh = days_left.is_none_or(|d| d >= i64::from(min_valid_days));
                if !allowed_ca || !fresh {
                    problems.push(match (allowed_ca, days_left) {
                        (false, _) => format!("{name} uses {} which is not allowed", ca.identifier),
                        (true, Some(d)) => {
                            format!("{name}'s CA {} expires in {d} days", ca.identifier)
                        }
                        (true, None) => format!("{name}'s CA expiry is unknown"),
                    });
                    fixes.push(Fix::Attribute {
                        target,
                        change: AttributeChange::SetCaCertificate(replacement.clone()),
                    });
                }
            }
        }
    }
    let observed = observed.join(", ");
    if problems.is_empty() {
        compliant(control, observed, expected)
    } else {
        violation(
            control,
            observed,
            expected,
            format!(
                "{}; changing the CA restarts the database",
                problems.join("; ")
            ),
            fixes,
        )
    }
}

fn storage_control(
    database: &Database,
    wanted_key: Option<&str>,
    kms_keys: &BTreeMap<String, String>,
) -> Evaluation {
    let control = ControlId::StorageEncryption;
    let attrs = &database.attributes;
    let observed = match (&attrs.storage_encrypted, &attrs.kms_key_arn) {
        (false, _) => "not encrypted".to_string(),
        (true, Some(key)) => format!("encrypted with {key}"),
        (true, None) => "encrypted".to_string(),
    };
    let how = match database.kind {
        DatabaseKind::Instance => {
            "storage encryption is fixed at creation: snapshot the instance, copy the snapshot with the key (copy-db-snapshot --kms-key-id), restore from the copy and switch clients over"
        }
        DatabaseKind::Cluster => {
            "storage encryption is fixed at creation: snapshot the cluster, copy the snapshot with the key (copy-db-cluster-snapshot --kms-key-id), restore a new cluster from the copy and switch clients over"
        }
    };
    let Some(wanted) = wanted_key else {
        return if attrs.storage_encrypted {
            compliant(control, observed, "encrypted")
        } else {
            report_only(control, observed, "encrypted", how)
        };
    };
    let expected = format!("encrypted with {wanted}");
    let wanted_arn = resolve_kms(wanted, kms_keys);
    let matches = attrs.storage_encrypted
        && match (&wanted_arn, &attrs.kms_key_arn) {
            (Some(want), Some(have)) => want == have,
            _ => false,
        };
    if matches {
        compliant(control, observed, expected)
    } else if attrs.storage_encrypted && wanted_arn.is_none() {
        error(
            control,
            format!(
                "KMS key {wanted} could not be resolved (no such key or alias, or kms:ListAliases denied)"
            ),
        )
    } else {
        report_only(control, observed, expected, how)
    }
}

/// A key id, key ARN, alias name or alias ARN to the key ARN.
pub fn resolve_kms(key: &str, kms_keys: &BTreeMap<String, String>) -> Option<String> {
    if let Some(arn) = kms_keys.get(key) {
        return Some(arn.clone());
    }
    // alias ARN: arn:aws:kms:region:acct:alias/name → alias/name
    if let Some(pos) = key.find(":alias/") {
        return kms_keys.get(&key[pos + 1..]).cloned();
    }
    if key.starts_with("arn:") && key.contains(":key/") {
        return Some(key.to_string());
    }
    None
}

fn public_access_control(database: &Database) -> Evaluation {
    let control = ControlId::PublicAccess;
    let public: Vec<Target> = match database.kind {
        DatabaseKind::Instance if database.attributes.publicly_accessible => {
            vec![Target::of(database)]
        }
        DatabaseKind::Instance => vec![],
        DatabaseKind::Cluster => database
            .members
            .iter()
            .filter(|m| m.publicly_accessible)
            .map(|m| Target::Instance(m.id.clone()))
            .collect(),
    };
    if public.is_empty() {
        return compliant(
            control,
            "not publicly accessible",
            "not publicly accessible",
        );
    }
    let names: Vec<String> = public
        .iter()
        .map(|t| match t {
            Target::Instance(i) | Target::Cluster(i) => i.clone(),
        })
        .collect();
    let message = match database.kind {
        DatabaseKind::Instance => {
            "the database has a public DNS address; turn PubliclyAccessible off".to_string()
        }
        DatabaseKind::Cluster => format!(
            "Aurora member(s) {} have a public DNS address; turn PubliclyAccessible off on them",
            names.join(", ")
        ),
    };
    violation(
        control,
        format!("publicly accessible: {}", names.join(",")),
        "not publicly accessible",
        message,
        public
            .into_iter()
            .map(|target| Fix::Attribute {
                target,
                change: AttributeChange::DisablePublicAccess,
            })
            .collect(),
    )
}

fn auto_minor_control(database: &Database) -> Evaluation {
    let control = ControlId::AutoMinorVersionUpgrade;
    let off: Vec<Target> = match database.kind {
        DatabaseKind::Instance if !database.attributes.auto_minor_version_upgrade => {
            vec![Target::of(database)]
        }
        DatabaseKind::Instance => vec![],
        DatabaseKind::Cluster => database
            .members
            .iter()
            .filter(|m| !m.auto_minor_version_upgrade)
            .map(|m| Target::Instance(m.id.clone()))
            .collect(),
    };
    if off.is_empty() {
        compliant(control, "on", "on")
    } else {
        let (observed, message) = match database.kind {
            DatabaseKind::Instance => (
                "off".to_string(),
                "automatic minor version upgrades are off".to_string(),
            ),
            DatabaseKind::Cluster => {
                let names: Vec<&str> = off
                    .iter()
                    .map(|t| match t {
                        Target::Instance(i) | Target::Cluster(i) => i.as_str(),
                    })
                    .collect();
                (
                    format!("off on {}", names.join(",")),
                    format!(
                        "automatic minor version upgrades are off on Aurora member(s) {}",
                        names.join(", ")
                    ),
                )
            }
        };
        violation(
            control,
            observed,
            "on",
            message,
            off.into_iter()
                .map(|target| Fix::Attribute {
                    target,
                    change: AttributeChange::EnableAutoMinorVersionUpgrade,
                })
                .collect(),
        )
    }
}

/// True when `rule`'s source is one the policy allows: a security group it lists, or a CIDR
/// inside one of its allowed CIDRs, provided the policy's list itself keeps within the bound on
/// public address space ([`exposure`]); a list that does not (a policy stored before the
/// apiserver enforced the bound) allows nothing.
pub fn source_allowed(rule: &IngressRule, ingress: &Ingress) -> bool {
    Allowance::of(ingress).is_ok_and(|a| a.permits(rule))
}

/// The sources a policy's `network.ingress` allows, once checked as admission checks them.
#[derive(Clone, Debug)]
pub struct Allowance<'a> {
    cidrs: Vec<ipnet::IpNet>,
    groups: &'a [String],
}

impl<'a> Allowance<'a> {
    /// The allowance of `ingress`, or why it cannot be used: no source and no `denyAll`, both, or
    /// allowed CIDRs beyond the bound. The apiserver rejects each of these; a policy stored
    /// before those rules is refused here rather than read loosely.
    pub fn of(ingress: &'a Ingress) -> Result<Allowance<'a>, String> {
        let has_source =
            !ingress.allowed_security_groups.is_empty() || !ingress.allowed_cidrs.is_empty();
        if ingress.deny_all && has_source {
            return Err(
                "network.ingress sets denyAll: true and also lists allowed sources; say one or the other"
                    .into(),
            );
        }
        if !ingress.deny_all && !has_source {
            return Err(
                "network.ingress names no allowed source: every rule reaching the database port would be revoked, the applications' included; list allowedSecurityGroups or allowedCidrs, or set denyAll: true"
                    .into(),
            );
        }
        Ok(Allowance {
            cidrs: exposure::check_allowed(&ingress.allowed_cidrs)?,
            groups: &ingress.allowed_security_groups,
        })
    }

    /// Whether the policy allows `rule`'s source.
    pub fn permits(&self, rule: &IngressRule) -> bool {
        match &rule.source {
            IngressSource::Cidr(net) => {
                net.prefix_len() != 0 && self.cidrs.iter().any(|allowed| allowed.contains(net))
            }
            IngressSource::SecurityGroup(id) => self.groups.contains(id),
            IngressSource::PrefixList(_) => false,
        }
    }
}

fn ingress_control(database: &Database, ingress: &Ingress) -> Evaluation {
    let control = ControlId::Ingress;
    let port = database.attributes.port;
    let allowance = match Allowance::of(ingress) {
        Ok(allowance) => allowance,
        Err(why) => {
            return error(
                control,
                format!(
                    "{why}. The apiserver refuses such a policy (this one was stored before that rule, or did not pass through it): nothing is judged allowed and nothing is revoked until network.ingress is fixed"
                ),
            );
        }
    };
    let mut offending = Vec::new();
    let mut exposed = Exposure::default();
    for group in &database.security_groups {
        for rule in &group.rules {
            if !rule.reaches_port(port) {
                continue;
            }
            if let IngressSource::Cidr(net) = &rule.source {
                exposed.add(net);
            }
            if !allowance.permits(rule) {
                offending.push((group.id.clone(), rule.clone()));
            }
        }
    }
    let expected = if ingress.deny_all {
        format!("port {port} from no source (denyAll)")
    } else {
        let mut sources: Vec<String> = ingress.allowed_security_groups.clone();
        sources.extend(ingress.allowed_cidrs.iter().cloned());
        format!("port {port} only from {}", join_or_none(sources.iter()))
    };
    if offending.is_empty() {
        return compliant(
            control,
            format!("port {port} reachable only from allowed sources"),
            expected,
        );
    }
    let observed = offending
        .iter()
        .map(|(sg, rule)| format!("{sg}: {}", rule.describe()))
        .collect::<Vec<_>>()
        .join("; ");
    let excess = exposed.describe_excess();
    let together = if excess.is_empty() {
        String::new()
    } else {
        format!(
            "together the security group rules open port {port} to {}; ",
            excess.join(" and ")
        )
    };
    violation(
        control,
        observed,
        expected,
        format!(
            "{together}security group rules open the database port beyond the allowed sources; only the offending rules are revoked"
        ),
        offending
            .into_iter()
            .map(|(security_group, rule)| Fix::Revoke {
                security_group,
                rule,
            })
            .collect(),
    )
}

/// A network ACL is evaluated as AWS does, per source address: entries in rule-number order,
/// the first entry that matches the address and the database port decides (allow or deny), and
/// nothing matched is denied. The addresses allowed are the union of what each allow entry
/// contributes beyond the entries before it. An ACL is open when that union holds more public
/// space of a family than a policy may allow (see [`exposure`]): `0.0.0.0/0`, or
/// `0.0.0.0/1` + `128.0.0.0/1`, or a `/8`, but not a deny of everything followed by an allow.
fn acl_control(database: &Database) -> Evaluation {
    let control = ControlId::NetworkAcl;
    let port = database.attributes.port;
    let mut by_acl: BTreeMap<&str, Vec<&super::model::NaclEntry>> = BTreeMap::new();
    for entry in &database.nacl_entries {
        by_acl.entry(entry.acl_id.as_str()).or_default().push(entry);
    }
    let mut open = Vec::new();
    for (acl, mut entries) in by_acl {
        entries.sort_by_key(|e| e.rule_number);
        let mut decided = Exposure::default();
        let mut allowed = Exposure::default();
        let mut through = Vec::new();
        for entry in entries {
            let reaches = IngressRule {
                protocol: entry.protocol.clone(),
                from_port: entry.from_port,
                to_port: entry.to_port,
                source: IngressSource::Cidr(entry.cidr),
            }
            .reaches_port(port);
            if !reaches {
                continue;
            }
            let family = Family::of(&entry.cidr);
            let fresh = decided.fresh(&entry.cidr);
            if entry.allow && !fresh.without_private(family).is_empty() {
                allowed.add_set(family, &fresh);
                through.push(format!("rule {} allows {}", entry.rule_number, entry.cidr));
            }
            decided.add(&entry.cidr);
        }
        if allowed.exceeds_budget() {
            open.push(format!(
                "{acl} opens port {port} to {} ({})",
                allowed.describe_excess().join(" and "),
                through.join(", ")
            ));
        }
    }
    let expected = format!(
        "port {port} not open to the Internet: at most {} and {}",
        exposure::describe_budget(Family::V4),
        exposure::describe_budget(Family::V6)
    );
    if open.is_empty() {
        compliant(control, "closed to the Internet", expected)
    } else {
        report_only(
            control,
            open.join("; "),
            expected,
            "add lower-numbered deny entries for the database port in the subnet's network ACL, or narrow the allow entries (NACLs are shared by every resource in the subnet, so pgbaseline does not change them)",
        )
    }
}
