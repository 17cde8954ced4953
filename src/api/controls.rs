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
}

impl fmt::Display for ControlId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
    fn ids_are_unique() {
        let mut ids: Vec<&str> = ControlId::ALL.iter().map(|c| c.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ControlId::ALL.len());
    }
}
