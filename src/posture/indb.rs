//! The in-database layer, sans IO: what one look inside PostgreSQL saw (`Observation`), the
//! findings of the `database.*` controls, the SQL fixes Enforce may run, and the force-SSL safety
//! gate. `postgres/` fills the observation and runs the fixes; nothing here connects anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::api::{ControlId, DatabaseSecurityPolicySpec, Finding, FindingStatus, Mode};

use super::model::Database;
use super::values::{parse_bool, pgaudit_covers, tls_rank};

/// Why a look inside a database failed: the one reason vocabulary ([`super::failure::Reason`]),
/// whose text starts the message of an `Error` finding and labels events and metrics.
pub use super::failure::Reason;

/// A look that failed: which database (none: the server as a whole), why, and a message for
/// people that holds no secret (the IO layer builds it from error kinds, never from the
/// connection string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub database: Option<String>,
    pub reason: Reason,
    pub message: String,
}

/// A member of `rds_superuser`, with the chain of roles it holds it through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superuser {
    pub role: String,
    pub can_login: bool,
    /// `rds_superuser > admins > alice`: the granted role first.
    pub via: String,
}

/// One row of `pg_db_role_setting`, split: `role` and/or `database` are set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Override {
    pub role: Option<String>,
    pub database: Option<String>,
    pub setting: String,
    pub value: String,
}

impl Override {
    fn scope(&self) -> String {
        match (&self.role, &self.database) {
            (Some(r), Some(d)) => format!("role {r} in database {d}"),
            (Some(r), None) => format!("role {r}"),
            (None, Some(d)) => format!("database {d}"),
            (None, None) => "everyone".into(),
        }
    }
}

/// A live client session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub database: String,
    pub client_addr: String,
    pub ssl: bool,
}

/// What is the same in every database of a server (one read per instance, or per Aurora cluster
/// through its writer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFacts {
    /// The effective `shared_preload_libraries`.
    pub preload: Vec<String>,
    pub superusers: Vec<Superuser>,
    /// Login roles whose password hash is md5.
    pub md5_roles: Vec<String>,
    pub overrides: Vec<Override>,
    /// Client sessions (other than pgbaseline's own).
    pub sessions: Vec<Session>,
    /// Roles that exist, of those the policy names (`audit.pgaudit.role`).
    pub roles: BTreeSet<String>,
}

/// A SECURITY DEFINER function without a pinned `search_path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definer {
    pub function: String,
    pub owner: String,
}

/// An event trigger and the extension owning it, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventTrigger {
    pub name: String,
    pub owner: String,
    pub extension: Option<String>,
}

/// What one database (in the PostgreSQL sense) holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseFacts {
    pub name: String,
    /// Schemas PUBLIC may CREATE in, with their owners.
    pub public_create: Vec<(String, String)>,
    /// The installed pgaudit version, if any.
    pub pgaudit: Option<String>,
    pub definers: Vec<Definer>,
    pub event_triggers: Vec<EventTrigger>,
}

/// Everything one look inside one RDS instance or Aurora cluster saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// `None` when not even the first database could be read.
    pub server: Option<ServerFacts>,
    /// The databases read, by name.
    pub databases: Vec<DatabaseFacts>,
    pub failures: Vec<Failure>,
    /// What each instance endpoint runs with (the instance; each Aurora member), for the
    /// parameter controls ([`super::effective`]). Its failures are not the databases'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effective: Vec<super::effective::EffectiveSettings>,
}

impl Observation {
    /// An observation of a server that could not be read at all.
    pub fn failed(reason: Reason, message: impl Into<String>) -> Observation {
        Observation {
            server: None,
            databases: Vec::new(),
            failures: vec![Failure {
                database: None,
                reason,
                message: message.into(),
            }],
            effective: Vec::new(),
        }
    }

    /// Plaintext client sessions.
    pub fn plaintext_sessions(&self) -> Vec<&Session> {
        self.server
            .iter()
            .flat_map(|s| s.sessions.iter())
            .filter(|s| !s.ssl)
            .collect()
    }

    fn failures_line(&self) -> Option<String> {
        if self.failures.is_empty() {
            return None;
        }
        Some(
            self.failures
                .iter()
                .map(|f| match &f.database {
                    Some(db) => format!("{}: database {db}: {}", f.reason, f.message),
                    None => format!("{}: {}", f.reason, f.message),
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// One SQL fix. Every one is idempotent and only tightens.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum SqlFix {
    /// `REVOKE CREATE ON SCHEMA s FROM PUBLIC`, in `database`.
    RevokeCreate { database: String, schema: String },
    /// `CREATE EXTENSION IF NOT EXISTS pgaudit`, in `database`.
    CreatePgaudit { database: String },
    /// `CREATE ROLE r NOLOGIN` when it does not exist.
    CreateRole { role: String },
    /// Reset exactly one per-role and/or per-database setting.
    ResetOverride(Override),
}

impl SqlFix {
    /// The database the statement runs in; `None`: any (a cluster-wide object).
    pub fn database(&self) -> Option<&str> {
        match self {
            SqlFix::RevokeCreate { database, .. } | SqlFix::CreatePgaudit { database } => {
                Some(database)
            }
            SqlFix::CreateRole { .. } | SqlFix::ResetOverride(_) => None,
        }
    }

    /// The statement, every name quoted; `None` when a name cannot be written safely (a setting
    /// name is not an identifier), in which case nothing is run.
    pub fn sql(&self) -> Option<String> {
        Some(match self {
            SqlFix::RevokeCreate { schema, .. } => {
                format!(
                    "REVOKE CREATE ON SCHEMA {} FROM PUBLIC",
                    quote_ident(schema)
                )
            }
            SqlFix::CreatePgaudit { .. } => "CREATE EXTENSION IF NOT EXISTS pgaudit".into(),
            SqlFix::CreateRole { role } => format!(
                "DO $pgb$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {}) THEN CREATE ROLE {} NOLOGIN; END IF; END$pgb$",
                quote_literal(role),
                quote_ident(role)
            ),
            SqlFix::ResetOverride(o) => {
                let setting = setting_name(&o.setting)?;
                match (&o.role, &o.database) {
                    (Some(r), Some(d)) => format!(
                        "ALTER ROLE {} IN DATABASE {} RESET {setting}",
                        quote_ident(r),
                        quote_ident(d)
                    ),
                    (Some(r), None) => format!("ALTER ROLE {} RESET {setting}", quote_ident(r)),
                    (None, Some(d)) => {
                        format!("ALTER DATABASE {} RESET {setting}", quote_ident(d))
                    }
                    (None, None) => format!("ALTER ROLE ALL RESET {setting}"),
                }
            }
        })
    }
}

impl fmt::Display for SqlFix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlFix::RevokeCreate { database, schema } => write!(
                f,
                "revoked CREATE on schema {schema} from PUBLIC in database {database}"
            ),
            SqlFix::CreatePgaudit { database } => {
                write!(f, "created extension pgaudit in database {database}")
            }
            SqlFix::CreateRole { role } => write!(f, "created role {role}"),
            SqlFix::ResetOverride(o) => write!(f, "reset {} for {}", o.setting, o.scope()),
        }
    }
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled (standard_conforming_strings is on since 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A setting name usable unquoted in `RESET`: `name` or `class.name`, lower-case identifiers.
fn setting_name(name: &str) -> Option<&str> {
    let ok = |part: &str| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    (parts.len() <= 2 && parts.iter().all(|p| ok(p))).then_some(name)
}

/// A finding of an in-database control and the fixes Enforce would run.
#[derive(Clone, Debug, PartialEq)]
pub struct DbEvaluation {
    pub finding: Finding,
    pub fixes: Vec<SqlFix>,
}

/// The in-database controls the policy switches on.
pub fn controls(spec: &DatabaseSecurityPolicySpec) -> Vec<ControlId> {
    spec.enabled_controls()
        .into_iter()
        .filter(|c| c.in_database())
        .collect()
}

/// Whether the layer must look inside the databases this policy selects: it has a connection and
/// in-database controls, or `transport.forceSsl` (whose Enforce is gated on the live sessions),
/// or parameter controls (compared with what the servers run, [`super::effective`]).
pub fn needed(spec: &DatabaseSecurityPolicySpec) -> bool {
    spec.posture
        .database
        .as_ref()
        .is_some_and(|d| d.connection.is_some())
        && (!controls(spec).is_empty() || !super::effective::parameters_of(spec).is_empty())
}

/// The roles whose existence the controls need to know (`audit.pgaudit.role`).
pub fn roles_of_interest(spec: &DatabaseSecurityPolicySpec) -> Vec<String> {
    spec.posture
        .audit
        .as_ref()
        .and_then(|a| a.pgaudit.as_ref())
        .and_then(|p| p.role.clone())
        .into_iter()
        .collect()
}

fn finding(
    control: ControlId,
    status: FindingStatus,
    observed: impl Into<String>,
    expected: &str,
    message: impl Into<String>,
) -> Finding {
    Finding {
        control,
        severity: super::catalogue::severity(control),
        status,
        observed: observed.into(),
        expected: expected.to_string(),
        message: message.into(),
    }
}

fn expected_of(control: ControlId) -> &'static str {
    match control {
        ControlId::PublicSchema => "PUBLIC has no CREATE on any schema",
        ControlId::PgauditExtension => "pgaudit extension in every database",
        ControlId::Superusers => "rds_superuser held only by the master user and allowed roles",
        ControlId::SecurityDefinerSearchPath => "every SECURITY DEFINER function pins search_path",
        ControlId::PasswordHashes => "no login role with an md5 password hash",
        ControlId::SettingOverrides => {
            "no per-role or per-database setting weakens logging, auditing or TLS"
        }
        ControlId::EventTriggers => "event triggers belong to extensions or are allowed",
        ControlId::PlaintextSessions => "no client session without TLS",
        _ => "",
    }
}

/// Names a list, at most `max` items and how many more.
fn listing(items: &[String], max: usize) -> String {
    let mut out = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        out.push_str(&format!(" and {} more", items.len() - max));
    }
    out
}

/// Evaluates the in-database controls of `spec` on `database` from what `observation` saw, in
/// control-id order.
pub fn evaluate(
    spec: &DatabaseSecurityPolicySpec,
    database: &Database,
    observation: &Observation,
) -> Vec<DbEvaluation> {
    let mut out = Vec::new();
    let db_spec = spec.posture.database.as_ref();
    for control in controls(spec) {
        let expected = expected_of(control);
        let Some(server) = &observation.server else {
            let message = observation
                .failures_line()
                .unwrap_or_else(|| "not read".into());
            out.push(DbEvaluation {
                finding: finding(control, FindingStatus::Error, "unknown", expected, message),
                fixes: Vec::new(),
            });
            continue;
        };
        // Problems found, each a line for people, and the fixes that would remove them. Report
        // only controls never carry fixes.
        let (problems, fixes, blocked): (Vec<String>, Vec<SqlFix>, Option<String>) = match control {
            ControlId::PublicSchema => {
                let mut problems = Vec::new();
                let mut fixes = Vec::new();
                for db in &observation.databases {
                    for (schema, owner) in &db.public_create {
                        problems.push(format!("{}.{schema} (owner {owner})", db.name));
                        fixes.push(SqlFix::RevokeCreate {
                            database: db.name.clone(),
                            schema: schema.clone(),
                        });
                    }
                }
                (problems, fixes, None)
            }
            ControlId::PgauditExtension => {
                let mut problems = Vec::new();
                let mut fixes = Vec::new();
                for db in observation.databases.iter().filter(|d| d.pgaudit.is_none()) {
                    problems.push(format!("no pgaudit extension in database {}", db.name));
                    fixes.push(SqlFix::CreatePgaudit {
                        database: db.name.clone(),
                    });
                }
                if let Some(role) = spec
                    .posture
                    .audit
                    .as_ref()
                    .and_then(|a| a.pgaudit.as_ref())
                    .and_then(|p| p.role.as_ref())
                    && !server.roles.contains(role)
                {
                    problems.push(format!("role {role} (pgaudit.role) does not exist"));
                    fixes.push(SqlFix::CreateRole { role: role.clone() });
                }
                let preloaded = server.preload.iter().any(|l| l == "pgaudit");
                let blocked = (!preloaded).then(|| {
                    format!(
                        "pgaudit is not in effect in shared_preload_libraries ({}): switch on audit.pgaudit, which sets it in the parameter group and takes effect after a reboot; the extension can be created after that",
                        if server.preload.is_empty() { "empty".to_string() } else { server.preload.join(",") }
                    )
                });
                (problems, fixes, blocked)
            }
            ControlId::Superusers => {
                let mut allowed: BTreeSet<&str> = db_spec
                    .and_then(|d| d.superusers.as_ref())
                    .map(|s| s.allowed.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                if let Some(master) = &database.attributes.master_username {
                    allowed.insert(master);
                }
                let problems = server
                    .superusers
                    .iter()
                    .filter(|s| !allowed.contains(s.role.as_str()))
                    .map(|s| {
                        format!(
                            "{}{} (via {})",
                            s.role,
                            if s.can_login { "" } else { " [nologin]" },
                            s.via
                        )
                    })
                    .collect();
                (problems, Vec::new(), None)
            }
            ControlId::SecurityDefinerSearchPath => (
                observation
                    .databases
                    .iter()
                    .flat_map(|d| {
                        d.definers
                            .iter()
                            .map(move |f| format!("{}: {} (owner {})", d.name, f.function, f.owner))
                    })
                    .collect(),
                Vec::new(),
                None,
            ),
            ControlId::PasswordHashes => (
                server
                    .md5_roles
                    .iter()
                    .map(|r| format!("{r} (md5)"))
                    .collect(),
                Vec::new(),
                None,
            ),
            ControlId::SettingOverrides => {
                let mut problems = Vec::new();
                let mut fixes = Vec::new();
                for o in &server.overrides {
                    if let Some(why) = weakens(spec, database, o) {
                        problems.push(format!(
                            "{} = {} for {}: {why}",
                            o.setting,
                            o.value,
                            o.scope()
                        ));
                        fixes.push(SqlFix::ResetOverride(o.clone()));
                    }
                }
                (problems, fixes, None)
            }
            ControlId::EventTriggers => {
                let allowed: BTreeSet<&str> = db_spec
                    .and_then(|d| d.event_triggers.as_ref())
                    .map(|e| e.allowed.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                (
                    observation
                        .databases
                        .iter()
                        .flat_map(|d| {
                            d.event_triggers
                                .iter()
                                .filter(|t| {
                                    t.extension.is_none() && !allowed.contains(t.name.as_str())
                                })
                                .map(move |t| format!("{}: {} (owner {})", d.name, t.name, t.owner))
                        })
                        .collect(),
                    Vec::new(),
                    None,
                )
            }
            ControlId::PlaintextSessions => (
                describe_sessions(&observation.plaintext_sessions()),
                Vec::new(),
                None,
            ),
            _ => continue,
        };
        let unread = observation.failures_line();
        let report_only = super::catalogue::info(control).remediation
            == super::catalogue::Remediation::ReportOnly;
        let evaluation = if problems.is_empty() {
            match unread {
                // A database that could not be read may hold a violation.
                Some(why) if per_database(control) => DbEvaluation {
                    finding: finding(control, FindingStatus::Error, "unknown", expected, why),
                    fixes: Vec::new(),
                },
                _ => DbEvaluation {
                    finding: finding(
                        control,
                        FindingStatus::Compliant,
                        "none",
                        expected,
                        "meets the policy",
                    ),
                    fixes: Vec::new(),
                },
            }
        } else {
            let observed = format!("{} found", problems.len());
            let mut message = listing(&problems, 10);
            if let Some(why) = &blocked {
                message.push_str(&format!("; {why}"));
            } else {
                message.push_str(&format!("; {}", super::catalogue::fix_text(control)));
            }
            if let Some(why) = unread.filter(|_| per_database(control)) {
                message.push_str(&format!("; not read: {why}"));
            }
            if report_only {
                DbEvaluation {
                    finding: finding(
                        control,
                        FindingStatus::ReportOnly,
                        observed,
                        expected,
                        message,
                    ),
                    fixes: Vec::new(),
                }
            } else {
                DbEvaluation {
                    finding: finding(
                        control,
                        FindingStatus::NonCompliant,
                        observed,
                        expected,
                        message,
                    ),
                    fixes: if blocked.is_some() { Vec::new() } else { fixes },
                }
            }
        };
        out.push(evaluation);
    }
    out
}

/// Controls read in every database (the others are read once per server).
fn per_database(control: ControlId) -> bool {
    matches!(
        control,
        ControlId::PublicSchema
            | ControlId::PgauditExtension
            | ControlId::SecurityDefinerSearchPath
            | ControlId::EventTriggers
    )
}

fn describe_sessions(sessions: &[&Session]) -> Vec<String> {
    // One line per (user, address, database), with a count.
    let mut grouped: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for s in sessions {
        *grouped
            .entry((s.user.as_str(), s.client_addr.as_str(), s.database.as_str()))
            .or_default() += 1;
    }
    grouped
        .into_iter()
        .map(|((user, addr, db), n)| {
            let times = if n > 1 {
                format!(" x{n}")
            } else {
                String::new()
            };
            format!("{user}@{addr} to {db}{times}")
        })
        .collect()
}

/// Why an override weakens what the policy or the parameter group asks for, if it does.
pub fn weakens(
    spec: &DatabaseSecurityPolicySpec,
    database: &Database,
    o: &Override,
) -> Option<String> {
    let value = o.value.trim().to_ascii_lowercase();
    let group = database.parameter_group.as_ref();
    let group_value = |name: &str| group.and_then(|g| g.value(name));
    match o.setting.as_str() {
        "log_statement" => (value != "none").then(|| {
            "statements are logged, CREATE/ALTER ROLE ... PASSWORD in clear text".to_string()
        }),
        "pgaudit.log" => {
            let policy: Vec<&str> = spec
                .posture
                .audit
                .as_ref()
                .and_then(|a| a.pgaudit.as_ref())
                .map(|p| p.classes.iter().map(|c| c.as_str()).collect())
                .unwrap_or_default();
            let group_classes: Vec<String> = group_value("pgaudit.log")
                .map(|v| {
                    v.split(',')
                        .map(|c| c.trim().to_ascii_lowercase())
                        .filter(|c| !c.is_empty() && c != "none" && !c.starts_with('-'))
                        .collect()
                })
                .unwrap_or_default();
            let mut needed: Vec<&str> = policy;
            needed.extend(group_classes.iter().map(String::as_str));
            let covered = if needed.is_empty() {
                true
            } else {
                pgaudit_covers(Some(&o.value), &needed)
            };
            (!covered).then(|| format!("audits less than {}", needed.join(",")))
        }
        "log_connections" | "log_disconnections" => (parse_bool(&value) != Some(true)
            && (group_value(&o.setting).and_then(parse_bool) == Some(true)
                || spec.posture.logging.as_ref().and_then(|l| l.connections) == Some(true)))
        .then(|| "turns connection logging off".to_string()),
        "ssl_min_protocol_version" => {
            let policy = spec
                .posture
                .transport
                .as_ref()
                .and_then(|t| t.min_tls_version)
                .map(|v| v.as_str());
            let floor = [policy, group_value("ssl_min_protocol_version")]
                .into_iter()
                .flatten()
                .filter_map(tls_rank)
                .max();
            match (tls_rank(&o.value), floor) {
                (Some(have), Some(need)) if have >= need => None,
                (_, None) => None,
                _ => Some("allows an older TLS version".to_string()),
            }
        }
        "password_encryption" => (value != "scram-sha-256"
            && (spec
                .posture
                .auth
                .as_ref()
                .and_then(|a| a.password_encryption)
                == Some(true)
                || group_value("password_encryption") == Some("scram-sha-256")))
        .then(|| "new passwords get md5 hashes".to_string()),
        "pgaudit.role" => spec
            .posture
            .audit
            .as_ref()
            .and_then(|a| a.pgaudit.as_ref())
            .and_then(|p| p.role.as_ref())
            .filter(|role| o.value.trim() != role.as_str())
            .map(|role| format!("object auditing expects pgaudit.role = {role}")),
        _ => None,
    }
}

/// The SQL fixes to run: those of the controls in Enforce, deduplicated, in a stable order.
pub fn plan(spec: &DatabaseSecurityPolicySpec, evaluations: &[DbEvaluation]) -> Vec<SqlFix> {
    let mut fixes: BTreeSet<SqlFix> = BTreeSet::new();
    for e in evaluations {
        if e.finding.status == FindingStatus::NonCompliant
            && spec.mode_for(e.finding.control) == Mode::Enforce
        {
            fixes.extend(e.fixes.iter().cloned());
        }
    }
    // Roles first: the extension may name them.
    let mut out: Vec<SqlFix> = fixes.into_iter().collect();
    out.sort_by_key(|f| match f {
        SqlFix::CreateRole { .. } => 0,
        _ => 1,
    });
    out
}

/// After the fixes ran and the database was read again: the findings as they now stand. A
/// control that had fixes and now complies is `Remediated` (saying what was done); one that still
/// does not is an `Error` (a REVOKE by a non-owner only warns, for example).
pub fn after_fixes(
    before: &[DbEvaluation],
    after: &[DbEvaluation],
    ran: &[(SqlFix, Result<(), String>)],
) -> Vec<Finding> {
    after
        .iter()
        .map(|now| {
            let control = now.finding.control;
            let Some(was) = before.iter().find(|b| b.finding.control == control) else {
                return now.finding.clone();
            };
            let mine: Vec<&(SqlFix, Result<(), String>)> =
                ran.iter().filter(|(f, _)| was.fixes.contains(f)).collect();
            if mine.is_empty() {
                return now.finding.clone();
            }
            let mut f = now.finding.clone();
            let failed: Vec<String> = mine
                .iter()
                .filter_map(|(fix, r)| r.as_ref().err().map(|e| format!("{fix}: {e}")))
                .collect();
            if f.status == FindingStatus::Compliant && failed.is_empty() {
                f.status = FindingStatus::Remediated;
                f.observed = was.finding.observed.clone();
                f.message = mine
                    .iter()
                    .map(|(fix, _)| fix.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
            } else if f.status != FindingStatus::Compliant {
                f.status = FindingStatus::Error;
                f.message = if failed.is_empty() {
                    format!(
                        "not remediated: the fix ran but the check still fails (is the login the owner or rds_superuser?): {}",
                        now.finding.message
                    )
                } else {
                    format!("not remediated: {}", listing(&failed, 5))
                };
            }
            f
        })
        .collect()
}

/// The force-SSL safety gate: while plaintext clients are connected, `transport.forceSsl` is not
/// enforced (its fixes are dropped and the finding says who would be cut off) unless the policy
/// opts in. Applies to the evaluations of one database.
pub fn gate_force_ssl(
    spec: &DatabaseSecurityPolicySpec,
    evaluations: &mut [super::Evaluation],
    observation: &Observation,
) {
    if spec.remediation.allow_force_ssl_with_plaintext_clients {
        return;
    }
    let plaintext = observation.plaintext_sessions();
    if plaintext.is_empty() {
        return;
    }
    for e in evaluations.iter_mut() {
        if e.finding.control == ControlId::ForceSsl
            && e.finding.status == FindingStatus::NonCompliant
        {
            e.fixes.clear();
            e.finding.message = format!(
                "not enforced: {} live client session{} without TLS would be cut off ({}); move them to TLS, or set remediation.allowForceSslWithPlaintextClients: true",
                plaintext.len(),
                if plaintext.len() == 1 { "" } else { "s" },
                listing(&describe_sessions(&plaintext), 10)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DatabaseSecurityPolicySpec, Finding};
    use crate::posture::testing::instance;

    pub(super) fn spec(mode: &str, database: &str) -> DatabaseSecurityPolicySpec {
        let yaml = format!(
            "selector: {{instanceIdentifiers: [a]}}\nmode: {mode}\nposture:\n  audit: {{pgaudit: {{classes: [ddl, role], role: rds_pgaudit}}}}\n  transport: {{forceSsl: true, minTlsVersion: TLSv1.2}}\n  database:\n    connection: {{secretRef: {{name: auditor}}}}\n{database}\n"
        );
        serde_saphyr::from_str(&yaml).expect("spec")
    }

    pub(super) fn all_on(mode: &str) -> DatabaseSecurityPolicySpec {
        spec(
            mode,
            "    publicSchema: true\n    pgauditExtension: true\n    superusers: {allowed: [dba]}\n    securityDefinerSearchPath: true\n    passwordHashes: true\n    settingOverrides: true\n    eventTriggers: {allowed: [audit_ddl]}\n    plaintextSessions: true",
        )
    }

    pub(super) fn clean() -> Observation {
        Observation {
            server: Some(ServerFacts {
                preload: vec!["pgaudit".into()],
                superusers: vec![
                    Superuser {
                        role: "postgres".into(),
                        can_login: true,
                        via: "rds_superuser".into(),
                    },
                    Superuser {
                        role: "dba".into(),
                        can_login: true,
                        via: "rds_superuser".into(),
                    },
                ],
                md5_roles: vec![],
                overrides: vec![Override {
                    role: Some("app".into()),
                    database: None,
                    setting: "search_path".into(),
                    value: "app".into(),
                }],
                sessions: vec![Session {
                    user: "app".into(),
                    database: "app".into(),
                    client_addr: "10.0.0.5".into(),
                    ssl: true,
                }],
                roles: BTreeSet::from(["rds_pgaudit".to_string()]),
            }),
            databases: vec![DatabaseFacts {
                name: "app".into(),
                public_create: vec![],
                pgaudit: Some("1.7".into()),
                definers: vec![],
                event_triggers: vec![
                    EventTrigger {
                        name: "pgaudit_ddl_command_end".into(),
                        owner: "postgres".into(),
                        extension: Some("pgaudit".into()),
                    },
                    EventTrigger {
                        name: "audit_ddl".into(),
                        owner: "dba".into(),
                        extension: None,
                    },
                ],
            }],
            failures: vec![],
            effective: vec![],
        }
    }

    pub(super) fn dirty() -> Observation {
        let mut o = clean();
        let server = o.server.as_mut().expect("server");
        server.superusers.push(Superuser {
            role: "nested".into(),
            can_login: true,
            via: "rds_superuser > appadmin".into(),
        });
        server.md5_roles.push("legacy".into());
        server.overrides.push(Override {
            role: Some("app".into()),
            database: None,
            setting: "log_statement".into(),
            value: "all".into(),
        });
        server.overrides.push(Override {
            role: None,
            database: Some("app".into()),
            setting: "pgaudit.log".into(),
            value: "none".into(),
        });
        server.sessions.push(Session {
            user: "legacy".into(),
            database: "app".into(),
            client_addr: "10.0.0.9".into(),
            ssl: false,
        });
        server.roles.clear();
        o.databases[0]
            .public_create
            .push(("public".into(), "pg_database_owner".into()));
        o.databases[0].definers.push(Definer {
            function: "bad_definer()".into(),
            owner: "appadmin".into(),
        });
        o.databases[0].event_triggers.push(EventTrigger {
            name: "suspicious".into(),
            owner: "nested".into(),
            extension: None,
        });
        o.databases.push(DatabaseFacts {
            name: "reports".into(),
            ..DatabaseFacts::default()
        });
        o
    }

    fn status(evals: &[DbEvaluation], control: ControlId) -> &Finding {
        &evals
            .iter()
            .find(|e| e.finding.control == control)
            .expect("evaluated")
            .finding
    }

    #[test]
    fn a_clean_server_complies_with_every_control() {
        let s = all_on("Enforce");
        let evals = evaluate(&s, &instance("a"), &clean());
        assert_eq!(evals.len(), 8);
        for e in &evals {
            assert_eq!(
                e.finding.status,
                FindingStatus::Compliant,
                "{:?}",
                e.finding
            );
        }
        assert!(plan(&s, &evals).is_empty());
    }

    #[test]
    fn every_violation_is_found_and_only_the_three_fixes_are_planned() {
        let s = all_on("Enforce");
        let evals = evaluate(&s, &instance("a"), &dirty());
        use FindingStatus::*;
        for (control, want) in [
            (ControlId::PublicSchema, NonCompliant),
            (ControlId::PgauditExtension, NonCompliant),
            (ControlId::Superusers, ReportOnly),
            (ControlId::SecurityDefinerSearchPath, ReportOnly),
            (ControlId::PasswordHashes, ReportOnly),
            (ControlId::SettingOverrides, NonCompliant),
            (ControlId::EventTriggers, ReportOnly),
            (ControlId::PlaintextSessions, ReportOnly),
        ] {
            assert_eq!(status(&evals, control).status, want, "{control}");
        }
        assert!(
            status(&evals, ControlId::Superusers)
                .message
                .contains("nested (via rds_superuser > appadmin)")
        );
        assert!(
            status(&evals, ControlId::SecurityDefinerSearchPath)
                .message
                .contains("bad_definer() (owner appadmin)")
        );
        assert!(
            status(&evals, ControlId::EventTriggers)
                .message
                .contains("suspicious")
        );
        assert!(
            !status(&evals, ControlId::EventTriggers)
                .message
                .contains("audit_ddl")
        );
        assert!(
            status(&evals, ControlId::PlaintextSessions)
                .message
                .contains("legacy@10.0.0.9")
        );
        let fixes = plan(&s, &evals);
        assert_eq!(
            fixes,
            vec![
                SqlFix::CreateRole {
                    role: "rds_pgaudit".into()
                },
                SqlFix::RevokeCreate {
                    database: "app".into(),
                    schema: "public".into()
                },
                SqlFix::CreatePgaudit {
                    database: "reports".into()
                },
                SqlFix::ResetOverride(Override {
                    role: None,
                    database: Some("app".into()),
                    setting: "pgaudit.log".into(),
                    value: "none".into()
                }),
                SqlFix::ResetOverride(Override {
                    role: Some("app".into()),
                    database: None,
                    setting: "log_statement".into(),
                    value: "all".into()
                }),
            ]
        );
        // The harmless override (search_path) is left alone.
        assert!(
            !fixes
                .iter()
                .any(|f| matches!(f, SqlFix::ResetOverride(o) if o.setting == "search_path"))
        );
    }

    #[test]
    fn audit_plans_nothing_and_per_control_audit_holds() {
        assert!(
            plan(
                &all_on("Audit"),
                &evaluate(&all_on("Audit"), &instance("a"), &dirty())
            )
            .is_empty()
        );
        let mut s = all_on("Enforce");
        s.control_modes
            .insert("database.publicSchema".into(), Mode::Audit);
        let fixes = plan(&s, &evaluate(&s, &instance("a"), &dirty()));
        assert!(!fixes.is_empty());
        assert!(
            !fixes
                .iter()
                .any(|f| matches!(f, SqlFix::RevokeCreate { .. }))
        );
    }

    #[test]
    fn without_the_preload_the_extension_is_not_created_and_the_finding_points_at_audit_pgaudit() {
        let s = all_on("Enforce");
        let mut o = dirty();
        o.server.as_mut().expect("server").preload = vec!["pg_stat_statements".into()];
        let evals = evaluate(&s, &instance("a"), &o);
        let f = status(&evals, ControlId::PgauditExtension);
        assert_eq!(f.status, FindingStatus::NonCompliant);
        assert!(f.message.contains("audit.pgaudit"), "{}", f.message);
        assert!(
            !plan(&s, &evals)
                .iter()
                .any(|f| matches!(f, SqlFix::CreatePgaudit { .. } | SqlFix::CreateRole { .. }))
        );
    }

    #[test]
    fn an_unreadable_server_is_an_error_for_every_control_with_its_reason() {
        let s = all_on("Enforce");
        let o = Observation::failed(
            Reason::AuthenticationFailed,
            "password authentication failed for user \"auditor\"",
        );
        let evals = evaluate(&s, &instance("a"), &o);
        assert_eq!(evals.len(), 8);
        for e in &evals {
            assert_eq!(e.finding.status, FindingStatus::Error);
            assert!(
                e.finding.message.starts_with("AuthenticationFailed: "),
                "{}",
                e.finding.message
            );
        }
        assert!(plan(&s, &evals).is_empty());
    }

    #[test]
    fn an_unreadable_database_makes_clean_per_database_controls_errors_but_not_the_server_ones() {
        let s = all_on("Audit");
        let mut o = clean();
        o.failures.push(Failure {
            database: Some("locked".into()),
            reason: Reason::PermissionDenied,
            message: "permission denied for database locked".into(),
        });
        let evals = evaluate(&s, &instance("a"), &o);
        assert_eq!(
            status(&evals, ControlId::PublicSchema).status,
            FindingStatus::Error
        );
        assert!(
            status(&evals, ControlId::PublicSchema)
                .message
                .contains("PermissionDenied: database locked")
        );
        assert_eq!(
            status(&evals, ControlId::PasswordHashes).status,
            FindingStatus::Compliant
        );
    }

    #[test]
    fn overrides_that_weaken_are_flagged_and_the_rest_are_not() {
        let s = all_on("Enforce");
        let db = instance("a");
        let o = |setting: &str, value: &str| Override {
            role: Some("r".into()),
            database: None,
            setting: setting.into(),
            value: value.into(),
        };
        for (setting, value, weak) in [
            ("log_statement", "all", true),
            ("log_statement", "ddl", true),
            ("log_statement", "none", false),
            ("pgaudit.log", "none", true),
            ("pgaudit.log", "ddl", true),
            ("pgaudit.log", "ddl,role", false),
            ("pgaudit.log", "all", false),
            ("ssl_min_protocol_version", "TLSv1", true),
            ("ssl_min_protocol_version", "TLSv1.3", false),
            ("password_encryption", "md5", true),
            ("password_encryption", "scram-sha-256", false),
            ("pgaudit.role", "someone", true),
            ("work_mem", "1GB", false),
        ] {
            assert_eq!(
                weakens(&s, &db, &o(setting, value)).is_some(),
                weak,
                "{setting}={value}"
            );
        }
    }

    #[test]
    fn reset_statements_quote_names_and_refuse_odd_setting_names() {
        let r = SqlFix::ResetOverride(Override {
            role: Some("we\"ird".into()),
            database: Some("d b".into()),
            setting: "pgaudit.log".into(),
            value: "none".into(),
        });
        assert_eq!(
            r.sql().as_deref(),
            Some("ALTER ROLE \"we\"\"ird\" IN DATABASE \"d b\" RESET pgaudit.log")
        );
        let bad = SqlFix::ResetOverride(Override {
            role: Some("r".into()),
            database: None,
            setting: "x; DROP ROLE r".into(),
            value: "1".into(),
        });
        assert_eq!(bad.sql(), None);
        assert_eq!(
            SqlFix::RevokeCreate {
                database: "d".into(),
                schema: "Odd\"Name".into()
            }
            .sql()
            .as_deref(),
            Some("REVOKE CREATE ON SCHEMA \"Odd\"\"Name\" FROM PUBLIC")
        );
        let role = SqlFix::CreateRole {
            role: "o'brien".into(),
        }
        .sql()
        .expect("sql");
        assert!(
            role.contains("rolname = 'o''brien'")
                && role.contains("CREATE ROLE \"o'brien\" NOLOGIN")
        );
    }

    #[test]
    fn fixed_controls_become_remediated_and_stubborn_ones_errors() {
        let s = all_on("Enforce");
        let db = instance("a");
        let before = evaluate(&s, &db, &dirty());
        let fixes = plan(&s, &before);
        let ran: Vec<_> = fixes.iter().cloned().map(|f| (f, Ok(()))).collect();
        // Everything fixed except the public schema (a non-owner's REVOKE only warns).
        let mut o = clean();
        o.databases[0]
            .public_create
            .push(("public".into(), "someone".into()));
        o.databases.push(DatabaseFacts {
            name: "reports".into(),
            pgaudit: Some("1.7".into()),
            ..DatabaseFacts::default()
        });
        let after = evaluate(&s, &db, &o);
        let findings = after_fixes(&before, &after, &ran);
        let get = |c| findings.iter().find(|f| f.control == c).expect("finding");
        assert_eq!(get(ControlId::PublicSchema).status, FindingStatus::Error);
        assert_eq!(
            get(ControlId::PgauditExtension).status,
            FindingStatus::Remediated
        );
        assert!(
            get(ControlId::PgauditExtension)
                .message
                .contains("created extension pgaudit in database reports")
        );
        assert_eq!(
            get(ControlId::SettingOverrides).status,
            FindingStatus::Remediated
        );
        // Report-only controls are untouched by fixes.
        assert_eq!(get(ControlId::Superusers).status, FindingStatus::Compliant);
    }

    #[test]
    fn the_force_ssl_gate_holds_while_plaintext_clients_are_connected_unless_opted_in() {
        use crate::posture::{EvalContext, evaluate as aws_evaluate};
        let mut db = instance("a");
        if let Some(g) = db.parameter_group.as_mut()
            && let Some(p) = g.parameters.get_mut("rds.force_ssl")
        {
            p.value = Some("0".into());
        }
        let s = all_on("Enforce");
        let keys = BTreeMap::new();
        let ctx = EvalContext {
            now: chrono::Utc::now(),
            kms_keys: &keys,
        };
        let mut evals = aws_evaluate(&s, &db, &ctx);
        gate_force_ssl(&s, &mut evals, &dirty());
        let force = evals
            .iter()
            .find(|e| e.finding.control == ControlId::ForceSsl)
            .expect("forceSsl");
        assert!(force.fixes.is_empty());
        assert!(
            force
                .finding
                .message
                .contains("1 live client session without TLS")
                && force.finding.message.contains("legacy@10.0.0.9"),
            "{}",
            force.finding.message
        );
        // No plaintext client: the fix stays.
        let mut evals = aws_evaluate(&s, &db, &ctx);
        gate_force_ssl(&s, &mut evals, &clean());
        assert!(
            !evals
                .iter()
                .find(|e| e.finding.control == ControlId::ForceSsl)
                .expect("forceSsl")
                .fixes
                .is_empty()
        );
        // Opted in: the fix stays.
        let mut opted = s.clone();
        opted.remediation.allow_force_ssl_with_plaintext_clients = true;
        let mut evals = aws_evaluate(&opted, &db, &ctx);
        gate_force_ssl(&opted, &mut evals, &dirty());
        assert!(
            !evals
                .iter()
                .find(|e| e.finding.control == ControlId::ForceSsl)
                .expect("forceSsl")
                .fixes
                .is_empty()
        );
    }

    #[test]
    fn the_master_user_is_an_allowed_superuser_implicitly() {
        let s = spec("Audit", "    superusers: {}");
        let mut o = clean();
        o.server
            .as_mut()
            .expect("server")
            .superusers
            .retain(|s| s.role == "postgres");
        let evals = evaluate(&s, &instance("a"), &o);
        assert_eq!(evals[0].finding.status, FindingStatus::Compliant);
        let mut db = instance("a");
        db.attributes.master_username = Some("admin".into());
        let evals = evaluate(&s, &db, &o);
        assert_eq!(evals[0].finding.status, FindingStatus::ReportOnly);
    }
}

#[cfg(test)]
mod proptests {
    use super::tests::{all_on, clean, dirty};
    use super::*;
    use crate::posture::testing::instance;
    use proptest::prelude::*;

    fn arb_override() -> impl Strategy<Value = Override> {
        (
            prop::option::of(prop::sample::select(vec!["app", "r\"x", "admin"])),
            prop::option::of(prop::sample::select(vec!["app", "reports"])),
            prop::sample::select(vec![
                "log_statement",
                "pgaudit.log",
                "log_connections",
                "ssl_min_protocol_version",
                "password_encryption",
                "pgaudit.role",
                "work_mem",
            ]),
            prop::sample::select(vec![
                "all",
                "none",
                "ddl",
                "off",
                "on",
                "TLSv1",
                "TLSv1.3",
                "md5",
                "scram-sha-256",
                "read,write",
            ]),
        )
            .prop_map(|(role, database, setting, value)| Override {
                role: role.map(String::from),
                database: database.map(String::from),
                setting: setting.into(),
                value: value.into(),
            })
    }

    proptest! {
        /// Audit plans nothing, whatever the databases hold; Enforce plans only fixes that
        /// tighten: revokes from PUBLIC, creations, and resets of overrides that weaken
        /// (a reset returns to the parameter group, which is never weaker than the override).
        #[test]
        fn audit_plans_nothing_and_enforce_only_tightens(
            overrides in prop::collection::vec(arb_override(), 0..6),
            preload in any::<bool>(),
            mask in prop::collection::vec(any::<bool>(), 8),
        ) {
            let mut o = if mask[0] { dirty() } else { clean() };
            let server = o.server.as_mut().expect("server");
            server.overrides = overrides;
            if !preload {
                server.preload.clear();
            }
            let mut enforce = all_on("Enforce");
            for (control, audit) in controls(&enforce).into_iter().zip(&mask) {
                if *audit {
                    enforce.control_modes.insert(control.as_str().into(), Mode::Audit);
                }
            }
            let db = instance("a");
            prop_assert!(plan(&all_on("Audit"), &evaluate(&all_on("Audit"), &db, &o)).is_empty());
            let evals = evaluate(&enforce, &db, &o);
            for fix in plan(&enforce, &evals) {
                let sql = fix.sql();
                match &fix {
                    SqlFix::ResetOverride(ov) => {
                        prop_assert!(weakens(&enforce, &db, ov).is_some(), "{:?}", ov);
                        prop_assert!(sql.as_deref().is_some_and(|s| s.contains(" RESET ")));
                    }
                    SqlFix::RevokeCreate { .. } => prop_assert!(sql.as_deref().is_some_and(|s| s.starts_with("REVOKE CREATE ON SCHEMA ") && s.ends_with(" FROM PUBLIC"))),
                    SqlFix::CreatePgaudit { .. } | SqlFix::CreateRole { .. } => prop_assert!(preload),
                }
                let control = match &fix {
                    SqlFix::RevokeCreate { .. } => ControlId::PublicSchema,
                    SqlFix::CreatePgaudit { .. } | SqlFix::CreateRole { .. } => ControlId::PgauditExtension,
                    SqlFix::ResetOverride(_) => ControlId::SettingOverrides,
                };
                prop_assert_eq!(enforce.mode_for(control), Mode::Enforce);
            }
        }

        /// Applying the planned fixes to the observation and evaluating again plans nothing more
        /// (convergence): the second Enforce pass does nothing.
        #[test]
        fn a_second_pass_plans_nothing(overrides in prop::collection::vec(arb_override(), 0..6)) {
            let s = all_on("Enforce");
            let db = instance("a");
            let mut o = dirty();
            o.server.as_mut().expect("server").overrides = overrides;
            let fixes = plan(&s, &evaluate(&s, &db, &o));
            for fix in &fixes {
                match fix {
                    SqlFix::RevokeCreate { database, schema } => {
                        for d in o.databases.iter_mut().filter(|d| &d.name == database) {
                            d.public_create.retain(|(s, _)| s != schema);
                        }
                    }
                    SqlFix::CreatePgaudit { database } => {
                        for d in o.databases.iter_mut().filter(|d| &d.name == database) {
                            d.pgaudit = Some("1.7".into());
                        }
                    }
                    SqlFix::CreateRole { role } => {
                        o.server.as_mut().expect("server").roles.insert(role.clone());
                    }
                    SqlFix::ResetOverride(ov) => {
                        o.server.as_mut().expect("server").overrides.retain(|x| x != ov);
                    }
                }
            }
            prop_assert!(plan(&s, &evaluate(&s, &db, &o)).is_empty());
        }
    }
}
