//! The control catalogue: the single description of each control besides its evaluation — how
//! bad a violation is, where AWS keeps the setting, the parameters it reads, how Enforce fixes it
//! and the sentence that says so. `evaluate`, `plan`, the executor, the inventory's parameter
//! filter and the README's control table all read it (a test keeps the README in step).
//!
//! Adding a control: its id (`api::controls`), its entry here, its evaluation and their tests.
//! A new kind of place (e.g. inside the database) is a new [`Location`]; a new way to fix is a
//! new [`Remediation`], which says which plan actions it allows.

use crate::api::ControlId;
pub use crate::api::Severity;

/// Where AWS keeps the setting a control checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// Parameters of the DB parameter group (an instance) or of the DB cluster parameter group
    /// (Aurora: every parameter a control reads lives there).
    ParameterGroup,
    /// An attribute of the instance, or of the Aurora cluster.
    DatabaseAttribute,
    /// An attribute of each DB instance: the instance, or every member of an Aurora cluster.
    InstanceAttribute,
    /// The rules of the database's VPC security groups.
    SecurityGroup,
    /// The network ACLs of the database's subnets.
    NetworkAcl,
}

/// How Enforce fixes a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remediation {
    /// Set parameters: in place when every database on the group is selected, else on a managed
    /// copy; a static parameter or a newly attached group waits for a reboot.
    SetParameters,
    /// `ModifyDBInstance` / `ModifyDBCluster` with `ApplyImmediately`.
    Modify,
    /// A modification that restarts the database: made only when the reboot policy allows a
    /// restart now.
    ModifyRestarts,
    /// A modification that rotates the master password: only with explicit opt-in.
    ModifyRotatesPassword,
    /// Revoke exactly the offending ingress rule.
    RevokeRule,
    /// Never changed: the finding says how to fix it.
    ReportOnly,
}

/// Catalogue entry of one control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlInfo {
    pub id: ControlId,
    pub severity: Severity,
    /// What the control asks for, as a short noun phrase ("Deletion protection").
    pub title: &'static str,
    pub location: Location,
    /// The parameters the control reads (only for [`Location::ParameterGroup`]).
    pub parameters: &'static [&'static str],
    pub remediation: Remediation,
    /// What Enforce does about a violation, for people (the README's control table).
    pub fix: &'static str,
}

/// The catalogue entry of a control.
pub fn info(id: ControlId) -> ControlInfo {
    use ControlId as C;
    use Location::*;
    use Remediation::*;
    use Severity::*;
    let parameter = |severity: Severity,
                     title: &'static str,
                     parameters: &'static [&'static str],
                     fix: &'static str| ControlInfo {
        id,
        severity,
        title,
        location: ParameterGroup,
        parameters,
        remediation: SetParameters,
        fix,
    };
    let other = |severity: Severity,
                 title: &'static str,
                 location: Location,
                 remediation: Remediation,
                 fix: &'static str| ControlInfo {
        id,
        severity,
        title,
        location,
        parameters: &[],
        remediation,
        fix,
    };
    const DYNAMIC: &str = "parameter (dynamic)";
    match id {
        C::ForceSsl => parameter(High, "SSL is required", &["rds.force_ssl"], DYNAMIC),
        C::MinTlsVersion => parameter(
            High,
            "TLS minimum version",
            &["ssl_min_protocol_version"],
            DYNAMIC,
        ),
        C::CaCertificate => other(
            Medium,
            "Server certificate authority",
            InstanceAttribute,
            ModifyRestarts,
            "modify, only when the reboot policy allows a restart now",
        ),
        C::StorageEncryption => other(
            High,
            "Storage encrypted with the right key",
            DatabaseAttribute,
            ReportOnly,
            "report only, with the snapshot/copy/restore recipe",
        ),
        C::LogRetention => parameter(
            Medium,
            "Log retention",
            &["rds.log_retention_period"],
            DYNAMIC,
        ),
        C::CloudwatchExports => other(
            Medium,
            "Logs exported to CloudWatch",
            DatabaseAttribute,
            Modify,
            "modify instance / cluster",
        ),
        C::LogConnections => parameter(
            Medium,
            "Connections and disconnections logged",
            &["log_connections", "log_disconnections"],
            DYNAMIC,
        ),
        C::NoStatementSecrets => parameter(
            High,
            "No passwords in statement logs",
            &["log_statement"],
            DYNAMIC,
        ),
        C::Pgaudit => parameter(
            High,
            "pgAudit loaded and logging",
            &["shared_preload_libraries", "pgaudit.log", "pgaudit.role"],
            "parameters; `shared_preload_libraries` is static → pending reboot",
        ),
        C::IamAuth => other(
            Medium,
            "IAM database authentication",
            DatabaseAttribute,
            Modify,
            "modify instance / cluster",
        ),
        C::ManagedMasterPassword => other(
            Medium,
            "Master password managed by Secrets Manager",
            DatabaseAttribute,
            ModifyRotatesPassword,
            "modify, only with `allowMasterPasswordRotation` (it rotates the password); else report only",
        ),
        C::PasswordEncryption => parameter(
            High,
            "SCRAM password hashing",
            &["password_encryption"],
            DYNAMIC,
        ),
        C::PublicAccess => other(
            Critical,
            "Not publicly accessible",
            InstanceAttribute,
            Modify,
            "modify",
        ),
        C::Ingress => other(
            Critical,
            "Database port not open beyond allowed sources",
            SecurityGroup,
            RevokeRule,
            "revoke exactly the offending rule, only if every database using the SG is selected",
        ),
        C::NetworkAcl => other(
            Medium,
            "Subnet ACLs do not open the database port to everyone",
            NetworkAcl,
            ReportOnly,
            "report only",
        ),
        C::AutoMinorVersionUpgrade => other(
            Low,
            "Automatic minor version upgrades",
            InstanceAttribute,
            Modify,
            "modify",
        ),
        C::DeletionProtection => other(
            Medium,
            "Deletion protection",
            DatabaseAttribute,
            Modify,
            "modify",
        ),
        C::BackupRetention => other(
            Medium,
            "Backup retention",
            DatabaseAttribute,
            Modify,
            "modify",
        ),
        C::EngineVersionCurrent => other(
            Low,
            "Newest minor engine version",
            DatabaseAttribute,
            ReportOnly,
            "report only",
        ),
    }
}

/// A control's severity.
pub fn severity(id: ControlId) -> Severity {
    info(id).severity
}

/// Whether the control reads the parameter group.
pub fn reads_parameters(id: ControlId) -> bool {
    info(id).location == Location::ParameterGroup
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
    fn every_entry_is_consistent() {
        for control in ControlId::ALL {
            let entry = info(*control);
            assert_eq!(entry.id, *control);
            assert!(
                !entry.title.is_empty() && !entry.fix.is_empty(),
                "{control}"
            );
            // Parameters are read exactly where the catalogue says they live, and parameter
            // controls are fixed by setting parameters.
            assert_eq!(
                entry.location == Location::ParameterGroup,
                !entry.parameters.is_empty(),
                "{control}"
            );
            assert_eq!(
                entry.location == Location::ParameterGroup,
                entry.remediation == Remediation::SetParameters,
                "{control}"
            );
            // What is never changed says so in its fix text.
            assert_eq!(
                entry.remediation == Remediation::ReportOnly,
                entry.fix.starts_with("report only"),
                "{control}"
            );
        }
    }

    #[test]
    fn aurora_member_settings_are_instance_attributes() {
        // Public access, minor upgrades and the CA are settings of each Aurora member; IAM
        // auth, exports, deletion protection, backups and encryption are cluster attributes.
        for control in [
            ControlId::PublicAccess,
            ControlId::AutoMinorVersionUpgrade,
            ControlId::CaCertificate,
        ] {
            assert_eq!(info(control).location, Location::InstanceAttribute);
        }
        for control in [
            ControlId::IamAuth,
            ControlId::CloudwatchExports,
            ControlId::DeletionProtection,
            ControlId::BackupRetention,
            ControlId::StorageEncryption,
        ] {
            assert_eq!(info(control).location, Location::DatabaseAttribute);
        }
    }

    #[test]
    fn network_exposure_is_critical() {
        assert_eq!(severity(ControlId::PublicAccess), Severity::Critical);
        assert_eq!(severity(ControlId::Ingress), Severity::Critical);
        assert!(ControlId::ALL.iter().any(|c| severity(*c) == Severity::Low));
    }

    /// The README's control table, as (id, severity, fix) per row.
    fn readme_control_table() -> Vec<(String, String, String)> {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("### Controls")
            .expect("README has a Controls section");
        readme[start..]
            .lines()
            .skip_while(|l| !l.starts_with("| id |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|row| {
                let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
                assert_eq!(
                    cells.len(),
                    4,
                    "id | severity | checks | Enforce does: {row}"
                );
                (
                    cells[0].trim_matches('`').to_string(),
                    cells[1].to_string(),
                    cells[3].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn the_readme_control_table_agrees_with_the_catalogue() {
        let expected: Vec<(String, String, String)> = ControlId::ALL
            .iter()
            .map(|c| {
                let entry = info(*c);
                (
                    c.as_str().to_string(),
                    entry.severity.to_string(),
                    entry.fix.to_string(),
                )
            })
            .collect();
        let documented = readme_control_table();
        for (row, want) in documented.iter().zip(&expected) {
            assert_eq!(
                row, want,
                "README row for {} differs from the catalogue: | `{}` | {} | … | {} |",
                want.0, want.0, want.1, want.2
            );
        }
        assert_eq!(
            documented.len(),
            expected.len(),
            "the README lists {} controls, the catalogue {}",
            documented.len(),
            expected.len()
        );
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
