//! The observed model: a database as AWS describes it, already normalised by `aws/`.
//!
//! An RDS instance is one `Database` of kind `Instance`. An Aurora cluster is one `Database` of
//! kind `Cluster`; its member instances' instance-level settings (public access, minor version
//! upgrades, CA) are carried in `members` and evaluated as part of it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::api::{DatabaseKind, Engine};

/// A database and everything the controls need to know about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Database {
    pub id: String,
    pub kind: DatabaseKind,
    pub region: String,
    pub engine: Engine,
    pub engine_version: String,
    pub tags: BTreeMap<String, String>,
    pub attributes: Attributes,
    /// Aurora cluster members (empty for an RDS instance).
    pub members: Vec<Member>,
    /// The DB parameter group (instance) or DB cluster parameter group (Aurora cluster).
    pub parameter_group: Option<ParameterGroup>,
    /// Security groups attached to the database, with their ingress rules.
    pub security_groups: Vec<SecurityGroup>,
    /// Inbound NACL entries of the database's subnets.
    pub nacl_entries: Vec<NaclEntry>,
    /// The newest minor version of this major version, when known.
    pub newest_minor_version: Option<String>,
    /// `ddd:hh24:mi-ddd:hh24:mi` in UTC.
    pub maintenance_window: Option<String>,
    /// Reads of the sweep that failed for this database: the controls that need that data are
    /// `Error` findings; everything else is still evaluated.
    #[serde(default, skip_serializing_if = "ReadErrors::is_empty")]
    pub read_errors: ReadErrors,
}

/// What a sweep could not read about one database, each with what failed and why (one line,
/// for people). A read that fails costs the controls that need it, not the sweep.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadErrors {
    /// The parameter group's values (or the engine defaults of its family).
    pub parameters: Option<String>,
    /// The name of the attached parameter group those values belong to: the database still
    /// uses it, which the managed-group collection must know.
    pub parameter_group: Option<String>,
    /// The rules of the database's security groups.
    pub security_groups: Option<String>,
    /// The network ACLs of the database's subnets.
    pub network_acls: Option<String>,
    /// The region's KMS aliases (needed to compare a key given by alias).
    pub kms_aliases: Option<String>,
    /// The expiry of the database's certificate authority.
    pub certificates: Option<String>,
    /// The engine versions the database could upgrade to.
    pub engine_versions: Option<String>,
}

impl ReadErrors {
    pub fn is_empty(&self) -> bool {
        *self == ReadErrors::default()
    }
}

/// Instance or cluster attributes the controls read.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Attributes {
    pub publicly_accessible: bool,
    pub iam_auth: bool,
    pub cloudwatch_exports: BTreeSet<String>,
    pub deletion_protection: bool,
    pub backup_retention_days: u32,
    pub auto_minor_version_upgrade: bool,
    pub storage_encrypted: bool,
    /// The key ARN (AWS returns the ARN whatever form was used at creation).
    pub kms_key_arn: Option<String>,
    pub managed_master_password: bool,
    pub ca_certificate: Option<CaCertificate>,
    pub port: u16,
    /// The host name AWS reports for connecting: the instance endpoint, or an Aurora cluster's
    /// writer endpoint. The in-database layer connects only here (and to Aurora members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The master user name (allowed to hold `rds_superuser` implicitly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_username: Option<String>,
    /// The ARN of the secret RDS manages for the master password (`MasterUserSecret`), the
    /// only secret `database.connection.masterUserSecret` reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_user_secret_arn: Option<String>,
}

/// The server certificate authority of an instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaCertificate {
    pub identifier: String,
    pub valid_till: Option<DateTime<Utc>>,
}

/// An Aurora cluster member instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub is_writer: bool,
    pub publicly_accessible: bool,
    pub auto_minor_version_upgrade: bool,
    pub ca_certificate: Option<CaCertificate>,
    /// Status of the cluster parameter group on this member.
    pub apply_status: ApplyStatus,
    /// The member's instance endpoint host name, as AWS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Whether the attached group's values are in effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyStatus {
    InSync,
    Applying,
    PendingReboot,
}

impl ApplyStatus {
    pub fn parse(s: &str) -> ApplyStatus {
        match s {
            "pending-reboot" => ApplyStatus::PendingReboot,
            "applying" => ApplyStatus::Applying,
            _ => ApplyStatus::InSync,
        }
    }
}

/// Apply type of a parameter, from the engine catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyType {
    Static,
    Dynamic,
}

/// The effective value of one parameter in a group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParameterValue {
    /// Explicit value, else the engine default; `None` when neither is set.
    pub value: Option<String>,
    pub apply_type: ApplyType,
    pub modifiable: bool,
}

/// A parameter group attached to a database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParameterGroup {
    pub name: String,
    pub family: String,
    /// Cluster parameter group (Aurora) rather than DB parameter group.
    pub cluster: bool,
    /// For an instance: its `ParameterApplyStatus`. For a cluster: the worst of its members.
    pub apply_status: ApplyStatus,
    /// The controlled parameters, effective values.
    pub parameters: BTreeMap<String, ParameterValue>,
    /// The databases (instance or cluster ids of the same kind) attached to this group; may
    /// include this database.
    pub shared_with: Attached,
}

impl ParameterGroup {
    /// AWS's own groups are immutable.
    pub fn is_default(&self) -> bool {
        is_default_group_name(&self.name)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).and_then(|p| p.value.as_deref())
    }
}

/// Database ids attached to one group. One list shared by every database on the group, so a
/// group of N databases costs N ids rather than N² (a default group often holds hundreds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attached(std::sync::Arc<[String]>);

impl From<Vec<String>> for Attached {
    fn from(ids: Vec<String>) -> Self {
        Attached(ids.into())
    }
}

impl std::ops::Deref for Attached {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

/// `default.*` groups belong to AWS and can never be modified.
pub fn is_default_group_name(name: &str) -> bool {
    name.starts_with("default.") || name.starts_with("default:")
}

/// A security group attached to a database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    pub rules: Vec<IngressRule>,
    /// The databases attached to this security group; may include this database.
    pub shared_with: Attached,
}

/// One source of one ingress permission (EC2 stores a permission with several sources; we
/// split them so exactly one can be revoked).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IngressRule {
    /// `tcp`, `udp`, `icmp`, a number, or `-1` for all.
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub source: IngressSource,
}

/// Where an ingress rule lets traffic come from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IngressSource {
    Cidr(IpNet),
    SecurityGroup(String),
    PrefixList(String),
}

impl IngressRule {
    /// True when the rule lets traffic reach `port` over TCP.
    pub fn reaches_port(&self, port: u16) -> bool {
        match self.protocol.as_str() {
            "-1" | "all" => true,
            "tcp" | "6" => match (self.from_port, self.to_port) {
                (Some(from), Some(to)) => {
                    // EC2 uses -1 / 0..65535 for "all ports".
                    (from == -1 && to == -1) || (from <= i32::from(port) && i32::from(port) <= to)
                }
                _ => true,
            },
            _ => false,
        }
    }

    pub fn describe(&self) -> String {
        let ports = match (self.protocol.as_str(), self.from_port, self.to_port) {
            ("-1", _, _) => "all traffic".to_string(),
            (p, Some(f), Some(t)) if f == t => format!("{p}/{f}"),
            (p, Some(f), Some(t)) => format!("{p}/{f}-{t}"),
            (p, _, _) => p.to_string(),
        };
        let source = match &self.source {
            IngressSource::Cidr(net) => net.to_string(),
            IngressSource::SecurityGroup(id) => id.clone(),
            IngressSource::PrefixList(id) => id.clone(),
        };
        format!("{ports} from {source}")
    }
}

/// An inbound network ACL entry of one of the database's subnets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NaclEntry {
    pub acl_id: String,
    pub rule_number: i32,
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub cidr: IpNet,
    pub allow: bool,
}

/// Everything a sweep read in one (account, region): the databases plus what evaluation needs
/// from outside them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    pub databases: Vec<Database>,
    /// KMS aliases (`alias/name`) to key ARNs, and key ids to key ARNs.
    pub kms_keys: BTreeMap<String, String>,
    /// Every DB and DB cluster parameter group of the region (read when some policy enforces):
    /// where managed copies already exist, what first-version copies were made from, and which
    /// managed groups no database uses any more.
    #[serde(default)]
    pub parameter_groups: Vec<super::managed::GroupListing>,
}

impl Fleet {
    pub fn get(&self, kind: DatabaseKind, id: &str) -> Option<&Database> {
        self.databases.iter().find(|d| d.kind == kind && d.id == id)
    }

    /// A parameter group of the region by kind and name.
    pub fn group_listing(
        &self,
        cluster: bool,
        name: &str,
    ) -> Option<&super::managed::GroupListing> {
        self.parameter_groups
            .iter()
            .find(|g| g.cluster == cluster && g.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(protocol: &str, from: i32, to: i32) -> IngressRule {
        IngressRule {
            protocol: protocol.into(),
            from_port: Some(from),
            to_port: Some(to),
            source: IngressSource::Cidr("0.0.0.0/0".parse().unwrap()),
        }
    }

    #[test]
    fn rules_reach_the_port_through_ranges_and_all_protocols() {
        let cases = [
            (rule("tcp", 5432, 5432), true),
            (rule("tcp", 5000, 6000), true),
            (rule("tcp", 0, 65535), true),
            (rule("tcp", 22, 22), false),
            (rule("tcp", 5433, 6000), false),
            (rule("-1", -1, -1), true),
            (rule("udp", 5432, 5432), false),
            (rule("6", 5432, 5432), true),
            (rule("icmp", -1, -1), false),
        ];
        for (r, expected) in cases {
            assert_eq!(r.reaches_port(5432), expected, "{r:?}");
        }
    }
}
