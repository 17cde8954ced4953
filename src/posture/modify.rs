//! What a set of attribute changes asks of AWS, as one neutral description: the executor builds
//! `ModifyDBInstance` and `ModifyDBCluster` from it and the simulator applies it to the model,
//! so the meaning of an [`AttributeChange`] is written once.

use super::evaluate::{AttributeChange, Target};
use super::model::{Attributes, CaCertificate, Member};

/// The fields of one `ModifyDBInstance` / `ModifyDBCluster` call (`None`: left as it is). Every
/// field only tightens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Modification {
    /// `PubliclyAccessible` (instances only).
    pub publicly_accessible: Option<bool>,
    /// `EnableIAMDatabaseAuthentication`.
    pub iam_auth: Option<bool>,
    /// `CloudwatchLogsExportConfiguration.EnableLogTypes`.
    pub enable_log_exports: Vec<String>,
    /// `DeletionProtection`.
    pub deletion_protection: Option<bool>,
    /// `BackupRetentionPeriod`, in days.
    pub backup_retention_days: Option<u32>,
    /// `AutoMinorVersionUpgrade`.
    pub auto_minor_version_upgrade: Option<bool>,
    /// `CACertificateIdentifier` (instances only).
    pub ca_certificate: Option<String>,
    /// `ManageMasterUserPassword`.
    pub manage_master_password: Option<bool>,
}

impl Modification {
    /// The call `changes` make on `target`. Instance-level settings of Aurora (public access,
    /// the CA) are planned on the member instances and have no cluster field: on a cluster they
    /// are left out.
    pub fn of(target: &Target, changes: &[AttributeChange]) -> Modification {
        let instance = matches!(target, Target::Instance(_));
        let mut m = Modification::default();
        for change in changes {
            match change {
                AttributeChange::DisablePublicAccess if instance => {
                    m.publicly_accessible = Some(false)
                }
                AttributeChange::SetCaCertificate(ca) if instance => {
                    m.ca_certificate = Some(ca.clone())
                }
                AttributeChange::DisablePublicAccess | AttributeChange::SetCaCertificate(_) => {}
                AttributeChange::EnableIamAuth => m.iam_auth = Some(true),
                AttributeChange::EnableLogExports(logs) => {
                    for log in logs {
                        if !m.enable_log_exports.contains(log) {
                            m.enable_log_exports.push(log.clone());
                        }
                    }
                }
                AttributeChange::EnableDeletionProtection => m.deletion_protection = Some(true),
                AttributeChange::RaiseBackupRetention(days) => {
                    m.backup_retention_days = Some(m.backup_retention_days.unwrap_or(0).max(*days))
                }
                AttributeChange::EnableAutoMinorVersionUpgrade => {
                    m.auto_minor_version_upgrade = Some(true)
                }
                AttributeChange::EnableManagedMasterPassword => {
                    m.manage_master_password = Some(true)
                }
            }
        }
        m
    }

    /// AWS's result on an instance's or a cluster's attributes.
    pub fn apply_to(&self, a: &mut Attributes) {
        if let Some(v) = self.publicly_accessible {
            a.publicly_accessible = v;
        }
        if let Some(v) = self.iam_auth {
            a.iam_auth = v;
        }
        a.cloudwatch_exports
            .extend(self.enable_log_exports.iter().cloned());
        if let Some(v) = self.deletion_protection {
            a.deletion_protection = v;
        }
        if let Some(days) = self.backup_retention_days {
            // A raise is planned only from below; the model never lowers either.
            a.backup_retention_days = a.backup_retention_days.max(days);
        }
        if let Some(v) = self.auto_minor_version_upgrade {
            a.auto_minor_version_upgrade = v;
        }
        if let Some(ca) = &self.ca_certificate {
            a.ca_certificate = Some(CaCertificate {
                identifier: ca.clone(),
                valid_till: None,
            });
        }
        if let Some(v) = self.manage_master_password {
            a.managed_master_password = v;
        }
    }

    /// AWS's result on an Aurora member (the instance-level settings).
    pub fn apply_to_member(&self, m: &mut Member) {
        if let Some(v) = self.publicly_accessible {
            m.publicly_accessible = v;
        }
        if let Some(v) = self.auto_minor_version_upgrade {
            m.auto_minor_version_upgrade = v;
        }
        if let Some(ca) = &self.ca_certificate {
            m.ca_certificate = Some(CaCertificate {
                identifier: ca.clone(),
                valid_till: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_change() -> Vec<AttributeChange> {
        vec![
            AttributeChange::DisablePublicAccess,
            AttributeChange::EnableIamAuth,
            AttributeChange::EnableLogExports(vec!["postgresql".into()]),
            AttributeChange::EnableDeletionProtection,
            AttributeChange::RaiseBackupRetention(7),
            AttributeChange::EnableAutoMinorVersionUpgrade,
            AttributeChange::SetCaCertificate("rds-ca-rsa2048-g1".into()),
            AttributeChange::EnableManagedMasterPassword,
        ]
    }

    #[test]
    fn an_instance_gets_every_field() {
        let m = Modification::of(&Target::Instance("a".into()), &every_change());
        assert_eq!(
            m,
            Modification {
                publicly_accessible: Some(false),
                iam_auth: Some(true),
                enable_log_exports: vec!["postgresql".into()],
                deletion_protection: Some(true),
                backup_retention_days: Some(7),
                auto_minor_version_upgrade: Some(true),
                ca_certificate: Some("rds-ca-rsa2048-g1".into()),
                manage_master_password: Some(true),
            }
        );
    }

    #[test]
    fn a_cluster_leaves_the_member_settings_out() {
        let m = Modification::of(&Target::Cluster("c".into()), &every_change());
        assert_eq!(m.publicly_accessible, None);
        assert_eq!(m.ca_certificate, None);
        assert_eq!(m.iam_auth, Some(true));
        assert_eq!(m.auto_minor_version_upgrade, Some(true));
    }

    #[test]
    fn repeated_changes_only_tighten() {
        let m = Modification::of(
            &Target::Instance("a".into()),
            &[
                AttributeChange::RaiseBackupRetention(14),
                AttributeChange::RaiseBackupRetention(7),
                AttributeChange::EnableLogExports(vec!["postgresql".into()]),
                AttributeChange::EnableLogExports(vec!["postgresql".into(), "upgrade".into()]),
            ],
        );
        assert_eq!(m.backup_retention_days, Some(14));
        assert_eq!(m.enable_log_exports, ["postgresql", "upgrade"]);
        assert_eq!(
            Modification::of(&Target::Instance("a".into()), &[]),
            Modification::default()
        );
    }

    #[test]
    fn applying_sets_what_the_call_sets() {
        let mut a = Attributes {
            publicly_accessible: true,
            cloudwatch_exports: ["upgrade".to_string()].into(),
            ..Attributes::default()
        };
        Modification::of(&Target::Instance("a".into()), &every_change()).apply_to(&mut a);
        assert!(!a.publicly_accessible && a.iam_auth && a.deletion_protection);
        assert!(a.auto_minor_version_upgrade && a.managed_master_password);
        assert_eq!(a.backup_retention_days, 7);
        assert_eq!(
            a.cloudwatch_exports,
            ["postgresql".to_string(), "upgrade".to_string()].into()
        );
        assert_eq!(
            a.ca_certificate.map(|c| c.identifier).as_deref(),
            Some("rds-ca-rsa2048-g1")
        );
    }
}
