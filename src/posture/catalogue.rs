//! The control catalogue: for each control its severity, where it lives on an RDS instance and
//! on an Aurora cluster, its parameters and how it is remediated.

use crate::api::ControlId;

/// How bad a violation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// Where AWS keeps the setting a control checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    InstanceAttribute,
    ClusterAttribute,
    InstanceParameterGroup,
    ClusterParameterGroup,
    SecurityGroup,
    NetworkAcl,
    /// Inside PostgreSQL: catalogues, per-role settings, live sessions.
    InDatabase,
}

/// How a violation is fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemediationClass {
    /// A dynamic parameter: applied immediately.
    ParameterDynamic,
    /// A parameter with at least one static member: pending reboot until rebooted.
    ParameterStatic,
    /// `ModifyDBInstance` / `ModifyDBCluster` with `ApplyImmediately`.
    Modify,
    /// A modification that restarts the database; done only when a reboot is allowed.
    ModifyMayRestart,
    /// Turning on the managed master password rotates it: only with explicit opt-in.
    ModifyRotatesPassword,
    /// Revoke the offending ingress rule only.
    RevokeIngress,
    /// One idempotent SQL statement that only tightens, then checked again.
    Sql,
    /// Reported with the way to fix it, never changed.
    ReportOnly,
}

/// Catalogue entry of one control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlInfo {
    pub id: ControlId,
    pub severity: Severity,
    pub title: &'static str,
    /// Where the setting lives on an RDS for PostgreSQL instance.
    pub instance_location: Location,
    /// Where the setting lives on an Aurora PostgreSQL cluster.
    pub cluster_location: Location,
    pub parameters: &'static [&'static str],
    pub remediation: RemediationClass,
}

use Location::*;
use RemediationClass::*;
use Severity::*;

const fn entry(
    id: ControlId,
    severity: Severity,
    title: &'static str,
    instance_location: Location,
    cluster_location: Location,
    parameters: &'static [&'static str],
    remediation: RemediationClass,
) -> ControlInfo {
    ControlInfo {
        id,
        severity,
        title,
        instance_location,
        cluster_location,
        parameters,
        remediation,
    }
}

/// The catalogue entry of a control.
pub fn info(id: ControlId) -> ControlInfo {
    use ControlId as C;
    match id {
        C::ForceSsl => entry(
            id,
            High,
            "SSL is required",
            InstanceParameterGroup,
            ClusterParameterGroup,
            &["rds.force_ssl"],
            ParameterDynamic,
        ),
        C::MinTlsVersion => entry(
            id,
            High,
            "TLS minimum version",
            InstanceParameterGroup,
            ClusterParameterGroup,
            &["ssl_min_protocol_version"],
            ParameterDynamic,
        ),
        C::CaCertificate => entry(
            id,
            Medium,
            "Server certificate authority",
            InstanceAttribute,
            InstanceAttribute,
            &[],
            ModifyMayRestart,
        ),
        C::StorageEncryption => entry(
            id,
            High,
            "Storage encrypted with the right key",
            InstanceAttribute,
            ClusterAttribute,
            &[],
            ReportOnly,
        ),
        C::LogRetention => entry(
            id,
            Medium,
            "Log retention",
            InstanceParameterGroup,
            ClusterParameterGroup,
            &["rds.log_retention_period"],
            ParameterDynamic,
        ),
        C::CloudwatchExports => entry(
            id,
            Medium,
            "Logs exported to CloudWatch",
            InstanceAttribute,
            ClusterAttribute,
            &[],
            Modify,
        ),
        C::LogConnections => entry(
            id,
            Medium,
            "Connections and disconnections logged",
            InstanceParameterGroup,
            ClusterParameterGroup,
            &["log_connections", "log_disconnections"],
            ParameterDynamic,
        ),
        C::NoStatementSecrets => entry(
            id,
            High,
            "No passwords in statement logs",
            InstanceParameterGroup,
            ClusterParameterGroup,
            &["log_statement"],
            ParameterDynamic,
        ),
        C::Pgaudit => entry(
            id,
            High,
            "pgAudit loaded and logging",
            InstanceParameterGroup,
            ClusterParameterGroup,
            &["shared_preload_libraries", "pgaudit.log", "pgaudit.role"],
            ParameterStatic,
        ),
        C::IamAuth => entry(
            id,
            Medium,
            "IAM database authentication",
            InstanceAttribute,
            ClusterAttribute,
            &[],
            Modify,
        ),
        C::ManagedMasterPassword => entry(
            id,
            Medium,
            "Master password managed by Secrets Manager",
            InstanceAttribute,
            ClusterAttribute,
            &[],
            ModifyRotatesPassword,
        ),
        C::PasswordEncryption => entry(
            id,
            High,
            "SCRAM password hashing",
            InstanceParameterGroup,
            ClusterParameterGroup,
            &["password_encryption"],
            ParameterDynamic,
        ),
        C::PublicAccess => entry(
            id,
            Critical,
            "Not publicly accessible",
            InstanceAttribute,
            InstanceAttribute,
            &[],
            Modify,
        ),
        C::Ingress => entry(
            id,
            Critical,
            "Database port not open beyond allowed sources",
            SecurityGroup,
            SecurityGroup,
            &[],
            RevokeIngress,
        ),
        C::NetworkAcl => entry(
            id,
            Medium,
            "Subnet ACLs do not open the database port to everyone",
            NetworkAcl,
            NetworkAcl,
            &[],
            ReportOnly,
        ),
        C::AutoMinorVersionUpgrade => entry(
            id,
            Low,
            "Automatic minor version upgrades",
            InstanceAttribute,
            InstanceAttribute,
            &[],
            Modify,
        ),
        C::DeletionProtection => entry(
            id,
            Medium,
            "Deletion protection",
            InstanceAttribute,
            ClusterAttribute,
            &[],
            Modify,
        ),
        C::BackupRetention => entry(
            id,
            Medium,
            "Backup retention",
            InstanceAttribute,
            ClusterAttribute,
            &[],
            Modify,
        ),
        C::EngineVersionCurrent => entry(
            id,
            Low,
            "Newest minor engine version",
            InstanceAttribute,
            ClusterAttribute,
            &[],
            ReportOnly,
        ),
        C::PublicSchema => entry(
            id,
            High,
            "PUBLIC cannot create objects in any schema",
            InDatabase,
            InDatabase,
            &[],
            Sql,
        ),
        C::PgauditExtension => entry(
            id,
            High,
            "pgaudit extension in every database",
            InDatabase,
            InDatabase,
            &[],
            Sql,
        ),
        C::Superusers => entry(
            id,
            Critical,
            "rds_superuser held only by allowed roles",
            InDatabase,
            InDatabase,
            &[],
            ReportOnly,
        ),
        C::SecurityDefinerSearchPath => entry(
            id,
            High,
            "SECURITY DEFINER functions pin search_path",
            InDatabase,
            InDatabase,
            &[],
            ReportOnly,
        ),
        C::PasswordHashes => entry(
            id,
            High,
            "No md5 password hashes",
            InDatabase,
            InDatabase,
            &[],
            ReportOnly,
        ),
        C::SettingOverrides => entry(
            id,
            High,
            "No per-role or per-database setting defeats the parameter group",
            InDatabase,
            InDatabase,
            &[],
            Sql,
        ),
        C::EventTriggers => entry(
            id,
            Medium,
            "Only expected event triggers",
            InDatabase,
            InDatabase,
            &[],
            ReportOnly,
        ),
        C::PlaintextSessions => entry(
            id,
            High,
            "No live client session without TLS",
            InDatabase,
            InDatabase,
            &[],
            ReportOnly,
        ),
    }
}

/// How a violation of `id` is fixed, for people: what Enforce does, or what to do by hand.
pub fn fix_text(id: ControlId) -> &'static str {
    use ControlId as C;
    match id {
        C::PublicSchema => {
            "Enforce runs REVOKE CREATE ON SCHEMA <schema> FROM PUBLIC in each database as the schema owner or rds_superuser, then checks again"
        }
        C::PgauditExtension => {
            "Enforce runs CREATE EXTENSION pgaudit in each database and creates the pgaudit.role role, once pgaudit is preloaded (audit.pgaudit, after a reboot)"
        }
        C::Superusers => {
            "REVOKE rds_superuser FROM <role> (or from the role it inherits it through) after checking nothing depends on it"
        }
        C::SecurityDefinerSearchPath => {
            "ALTER FUNCTION <function> SET search_path = pg_catalog, pg_temp (after checking the function qualifies every name it uses)"
        }
        C::PasswordHashes => {
            "the role's owner sets a new password while password_encryption = scram-sha-256; then set rds.accepted_password_auth_method = scram"
        }
        C::SettingOverrides => {
            "Enforce runs ALTER ROLE ... [IN DATABASE ...] RESET <setting> or ALTER DATABASE ... RESET <setting> for the offending override only"
        }
        C::EventTriggers => {
            "DROP EVENT TRIGGER <name> if nobody expects it, or list it in database.eventTriggers.allowed"
        }
        C::PlaintextSessions => {
            "move the listed clients to sslmode=verify-full; then transport.forceSsl can be enforced without cutting them off"
        }
        _ => "",
    }
}

/// Every parameter any control reads: the `parameter-name` filter of a parameter group read.
pub fn controlled_parameters() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = ControlId::ALL
        .iter()
        .flat_map(|c| info(*c).parameters.iter().copied())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aurora_parameters_live_in_the_cluster_group() {
        for control in ControlId::ALL {
            let entry = info(*control);
            assert_eq!(entry.id, *control);
            if control.in_database() {
                assert_eq!(entry.instance_location, InDatabase, "{control}");
                assert!(!fix_text(*control).is_empty(), "{control}");
                assert!(entry.parameters.is_empty(), "{control}");
            }
            if !entry.parameters.is_empty() {
                assert_eq!(entry.instance_location, InstanceParameterGroup, "{control}");
                assert_eq!(entry.cluster_location, ClusterParameterGroup, "{control}");
            }
        }
        // IAM auth, exports, deletion protection, backups and encryption are cluster attributes.
        for control in [
            ControlId::IamAuth,
            ControlId::CloudwatchExports,
            ControlId::DeletionProtection,
            ControlId::BackupRetention,
            ControlId::StorageEncryption,
        ] {
            assert_eq!(info(control).cluster_location, ClusterAttribute);
        }
    }

    #[test]
    fn controlled_parameters_are_sorted_and_unique() {
        let names = controlled_parameters();
        assert!(names.contains(&"rds.force_ssl"));
        assert!(names.contains(&"shared_preload_libraries"));
        let mut sorted = names.clone();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 10);
    }
}
