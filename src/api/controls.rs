//! Stable control ids: the names used in the spec overrides, status, reports, metrics and the CLI.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! control_ids {
    ($($variant:ident => $id:literal),+ $(,)?) => {
        /// A control of the baseline, named by its stable id (`group.name`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        pub enum ControlId {
            $(#[serde(rename = $id)] $variant,)+
        }

        impl ControlId {
            /// Every control, in catalogue order.
            pub const ALL: &'static [ControlId] = &[$(ControlId::$variant,)+];

            /// The stable id, e.g. `transport.forceSsl`.
            pub fn as_str(self) -> &'static str {
                match self { $(ControlId::$variant => $id,)+ }
            }
        }

        impl FromStr for ControlId {
            type Err = UnknownControl;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($id => Ok(ControlId::$variant),)+
                    other => Err(UnknownControl(other.to_string())),
                }
            }
        }
    };
}

control_ids! {
    ForceSsl => "transport.forceSsl",
    MinTlsVersion => "transport.minTlsVersion",
    CaCertificate => "transport.caCertificate",
    StorageEncryption => "encryption.storage",
    LogRetention => "logging.retention",
    CloudwatchExports => "logging.cloudwatchExports",
    LogConnections => "logging.connections",
    NoStatementSecrets => "logging.noStatementSecrets",
    Pgaudit => "audit.pgaudit",
    IamAuth => "auth.iam",
    ManagedMasterPassword => "auth.managedMasterPassword",
    PasswordEncryption => "auth.passwordEncryption",
    PublicAccess => "network.publicAccess",
    Ingress => "network.ingress",
    NetworkAcl => "network.acl",
    AutoMinorVersionUpgrade => "maintenance.autoMinorVersionUpgrade",
    DeletionProtection => "maintenance.deletionProtection",
    BackupRetention => "maintenance.backupRetention",
    EngineVersionCurrent => "maintenance.engineVersionCurrent",
    PublicSchema => "database.publicSchema",
    PgauditExtension => "database.pgauditExtension",
    Superusers => "database.superusers",
    SecurityDefinerSearchPath => "database.securityDefinerSearchPath",
    PasswordHashes => "database.passwordHashes",
    SettingOverrides => "database.settingOverrides",
    EventTriggers => "database.eventTriggers",
    PlaintextSessions => "database.plaintextSessions",
}

impl fmt::Display for ControlId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a policy switches a control on. Every control id is `group.field`, the path of its field
/// under `spec.posture`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// A boolean: on when `true`, off when `false` or absent.
    Flag,
    /// A value or an object: on when present.
    Presence,
}

impl ControlId {
    /// Whether the control is checked inside PostgreSQL (group `database`), over a connection,
    /// rather than through the AWS APIs.
    pub fn in_database(self) -> bool {
        self.group() == "database"
    }

    /// The group of the control, e.g. `transport`.
    pub fn group(self) -> &'static str {
        self.as_str().split_once('.').map_or("", |(group, _)| group)
    }

    /// The field of the control inside its group, e.g. `forceSsl`.
    pub fn field(self) -> &'static str {
        self.as_str()
            .split_once('.')
            .map_or(self.as_str(), |(_, field)| field)
    }

    /// How the policy switches this control on.
    pub fn switch(self) -> Switch {
        match self {
            ControlId::ForceSsl
            | ControlId::LogConnections
            | ControlId::NoStatementSecrets
            | ControlId::IamAuth
            | ControlId::ManagedMasterPassword
            | ControlId::PasswordEncryption
            | ControlId::NetworkAcl
            | ControlId::AutoMinorVersionUpgrade
            | ControlId::DeletionProtection
            | ControlId::EngineVersionCurrent
            | ControlId::PublicSchema
            | ControlId::PgauditExtension
            | ControlId::SecurityDefinerSearchPath
            | ControlId::PasswordHashes
            | ControlId::SettingOverrides
            | ControlId::PlaintextSessions => Switch::Flag,
            ControlId::MinTlsVersion
            | ControlId::CaCertificate
            | ControlId::StorageEncryption
            | ControlId::LogRetention
            | ControlId::CloudwatchExports
            | ControlId::Pgaudit
            | ControlId::PublicAccess
            | ControlId::Ingress
            | ControlId::BackupRetention
            | ControlId::Superusers
            | ControlId::EventTriggers => Switch::Presence,
        }
    }

    /// Whether `posture` (the JSON of `spec.posture`) switches this control on.
    pub fn is_on(self, posture: &serde_json::Value) -> bool {
        let value = posture.get(self.group()).and_then(|g| g.get(self.field()));
        match self.switch() {
            Switch::Flag => value == Some(&serde_json::Value::Bool(true)),
            Switch::Presence => value.is_some_and(|v| !v.is_null()),
        }
    }

    /// The CEL condition, on `spec.posture` as `self`, that this control is switched on;
    /// [`ControlId::is_on`] in CEL.
    pub fn cel_is_on(self) -> String {
        let (group, field) = (self.group(), self.field());
        match self.switch() {
            Switch::Flag => {
                format!("(has(self.{group}) && has(self.{group}.{field}) && self.{group}.{field})")
            }
            Switch::Presence => format!("(has(self.{group}) && has(self.{group}.{field}))"),
        }
    }
}

/// The control groups of `spec.posture`, in catalogue order.
pub fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for control in ControlId::ALL {
        if !groups.contains(&control.group()) {
            groups.push(control.group());
        }
    }
    groups
}

/// The fields of one control group, in catalogue order.
pub fn group_fields(group: &str) -> Vec<&'static str> {
    ControlId::ALL
        .iter()
        .filter(|c| c.group() == group)
        .map(|c| c.field())
        .collect()
}

/// A string that names no control.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown control id {0:?}")]
pub struct UnknownControl(pub String);

/// The CEL list literal of every control id, used by the schema to validate override keys.
pub fn cel_id_list() -> String {
    let quoted: Vec<String> = ControlId::ALL
        .iter()
        .map(|c| format!("'{}'", c.as_str()))
        .collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_serde() {
        for control in ControlId::ALL {
            assert_eq!(control.as_str().parse::<ControlId>(), Ok(*control));
            let json = serde_json::to_string(control).unwrap();
            assert_eq!(json, format!("\"{}\"", control.as_str()));
        }
        assert!("transport.forceSSL".parse::<ControlId>().is_err());
    }

    #[test]
    fn ids_are_group_and_field() {
        for control in ControlId::ALL {
            assert_eq!(
                format!("{}.{}", control.group(), control.field()),
                control.as_str()
            );
            assert!(!control.group().is_empty() && !control.field().contains('.'));
        }
        assert_eq!(
            groups(),
            [
                "transport",
                "encryption",
                "logging",
                "audit",
                "auth",
                "network",
                "maintenance",
                "database"
            ]
        );
        assert_eq!(
            group_fields("transport"),
            ["forceSsl", "minTlsVersion", "caCertificate"]
        );
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<&str> = ControlId::ALL.iter().map(|c| c.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ControlId::ALL.len());
    }
}
