//! SDK shapes to the posture model, as pure functions: what the inventory read becomes the
//! databases `evaluate` sees. No call is made here; the tests build SDK values with their
//! builders.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_rds::types::{DbCluster, DbInstance};
use chrono::{DateTime, Utc};

use crate::api::{DatabaseKind, Engine};
use crate::posture::model::{
    ApplyStatus, ApplyType, Attached, Attributes, CaCertificate, Database, IngressRule,
    IngressSource, Member, NaclEntry, ParameterGroup, ParameterValue, ReadErrors, SecurityGroup,
};
use crate::posture::values::version_cmp;

/// An RDS for PostgreSQL instance as the model sees it.
pub fn instance_model(region: &str, i: &DbInstance, reads: &Reads<'_>) -> Database {
    let Reads {
        security_groups,
        nacls,
        certificates,
        ..
    } = *reads;
    let mut read_errors = ReadErrors::default();
    let group_status = i.db_parameter_groups().first();
    let parameter_group = group_status.and_then(|g| {
        reads.parameter_group(
            false,
            g.db_parameter_group_name()?,
            ApplyStatus::parse(g.parameter_apply_status().unwrap_or("in-sync")),
            &mut read_errors,
        )
    });
    let sg_ids: Vec<&str> = i
        .vpc_security_groups()
        .iter()
        .filter_map(|g| g.vpc_security_group_id())
        .collect();
    let subnets: Vec<&str> = i
        .db_subnet_group()
        .map(|g| {
            g.subnets()
                .iter()
                .filter_map(|s| s.subnet_identifier())
                .collect()
        })
        .unwrap_or_default();
    reads.network_errors(&sg_ids, &subnets, &mut read_errors);
    if lacks_expiry(i) {
        read_errors.certificates = reads.unread_certificates.map(str::to_string);
    }
    Database {
        id: i.db_instance_identifier().unwrap_or_default().to_string(),
        kind: DatabaseKind::Instance,
        region: region.to_string(),
        engine: i
            .engine()
            .and_then(Engine::parse)
            .unwrap_or(Engine::Postgres),
        engine_version: i.engine_version().unwrap_or_default().to_string(),
        tags: tag_pairs(i.tag_list()).collect(),
        attributes: Attributes {
            publicly_accessible: i.publicly_accessible().unwrap_or(false),
            iam_auth: i.iam_database_authentication_enabled().unwrap_or(false),
            cloudwatch_exports: i
                .enabled_cloudwatch_logs_exports()
                .iter()
                .cloned()
                .collect(),
            deletion_protection: i.deletion_protection().unwrap_or(false),
            backup_retention_days: u32::try_from(i.backup_retention_period().unwrap_or(0))
                .unwrap_or(0),
            auto_minor_version_upgrade: i.auto_minor_version_upgrade().unwrap_or(false),
            storage_encrypted: i.storage_encrypted().unwrap_or(false),
            kms_key_arn: i.kms_key_id().map(str::to_string),
            managed_master_password: i.master_user_secret().is_some(),
            ca_certificate: ca_of(i, certificates),
            port: port_of(i.endpoint().and_then(|e| e.port()).or(i.db_instance_port())),
            endpoint: i.endpoint().and_then(|e| e.address()).map(str::to_string),
            master_username: i.master_username().map(str::to_string),
            master_user_secret_arn: i
                .master_user_secret()
                .and_then(|m| m.secret_arn())
                .map(str::to_string),
        },
        members: Vec::new(),
        parameter_group,
        security_groups: security_groups_of(&sg_ids, security_groups),
        nacl_entries: subnets
            .iter()
            .flat_map(|s| nacls.get(*s).cloned().unwrap_or_default())
            .collect(),
        newest_minor_version: None,
        maintenance_window: i.preferred_maintenance_window().map(str::to_string),
        read_errors,
    }
}

/// An Aurora PostgreSQL cluster (and its members, from `instances`) as the model sees it.
pub fn cluster_model(
    region: &str,
    c: &DbCluster,
    instances: &HashMap<&str, &DbInstance>,
    reads: &Reads<'_>,
) -> Database {
    let Reads {
        security_groups,
        nacls,
        certificates,
        ..
    } = *reads;
    let mut read_errors = ReadErrors::default();
    let members: Vec<Member> = c
        .db_cluster_members()
        .iter()
        .filter_map(|m| {
            let id = m.db_instance_identifier()?;
            let instance = instances.get(id);
            Some(Member {
                id: id.to_string(),
                is_writer: m.is_cluster_writer().unwrap_or(false),
                publicly_accessible: instance
                    .and_then(|i| i.publicly_accessible())
                    .unwrap_or(false),
                auto_minor_version_upgrade: instance
                    .and_then(|i| i.auto_minor_version_upgrade())
                    .unwrap_or(false),
                ca_certificate: instance.and_then(|i| ca_of(i, certificates)),
                apply_status: ApplyStatus::parse(
                    m.db_cluster_parameter_group_status().unwrap_or("in-sync"),
                ),
                endpoint: instance
                    .and_then(|i| i.endpoint())
                    .and_then(|e| e.address())
                    .map(str::to_string),
            })
        })
        .collect();
    let worst = members
        .iter()
        .map(|m| m.apply_status)
        .find(|s| *s == ApplyStatus::PendingReboot)
        .unwrap_or(ApplyStatus::InSync);
    let parameter_group = c
        .db_cluster_parameter_group()
        .and_then(|name| reads.parameter_group(true, name, worst, &mut read_errors));
    let sg_ids: Vec<&str> = c
        .vpc_security_groups()
        .iter()
        .filter_map(|g| g.vpc_security_group_id())
        .collect();
    let subnets: BTreeSet<&str> = members
        .iter()
        .filter_map(|m| instances.get(m.id.as_str()))
        .filter_map(|i| i.db_subnet_group())
        .flat_map(|g| g.subnets().iter().filter_map(|s| s.subnet_identifier()))
        .collect();
    let subnet_list: Vec<&str> = subnets.iter().copied().collect();
    reads.network_errors(&sg_ids, &subnet_list, &mut read_errors);
    if members
        .iter()
        .filter_map(|m| instances.get(m.id.as_str()))
        .any(|i| lacks_expiry(i))
    {
        read_errors.certificates = reads.unread_certificates.map(str::to_string);
    }
    Database {
        id: c.db_cluster_identifier().unwrap_or_default().to_string(),
        kind: DatabaseKind::Cluster,
        region: region.to_string(),
        engine: Engine::AuroraPostgresql,
        engine_version: c.engine_version().unwrap_or_default().to_string(),
        tags: tag_pairs(c.tag_list()).collect(),
        attributes: Attributes {
            publicly_accessible: members.iter().any(|m| m.publicly_accessible),
            iam_auth: c.iam_database_authentication_enabled().unwrap_or(false),
            cloudwatch_exports: c
                .enabled_cloudwatch_logs_exports()
                .iter()
                .cloned()
                .collect(),
            deletion_protection: c.deletion_protection().unwrap_or(false),
            backup_retention_days: u32::try_from(c.backup_retention_period().unwrap_or(0))
                .unwrap_or(0),
            auto_minor_version_upgrade: members.iter().all(|m| m.auto_minor_version_upgrade),
            storage_encrypted: c.storage_encrypted().unwrap_or(false),
            kms_key_arn: c.kms_key_id().map(str::to_string),
            managed_master_password: c.master_user_secret().is_some(),
            ca_certificate: None,
            port: port_of(c.port()),
            endpoint: c.endpoint().map(str::to_string),
            master_username: c.master_username().map(str::to_string),
            master_user_secret_arn: c
                .master_user_secret()
                .and_then(|m| m.secret_arn())
                .map(str::to_string),
        },
        members,
        parameter_group,
        security_groups: security_groups_of(&sg_ids, security_groups),
        nacl_entries: subnets
            .iter()
            .flat_map(|s| nacls.get(*s).cloned().unwrap_or_default())
            .collect(),
        newest_minor_version: None,
        maintenance_window: c.preferred_maintenance_window().map(str::to_string),
        read_errors,
    }
}

/// What a sweep read, and which reads failed, for turning SDK shapes into databases.
#[derive(Clone, Copy)]
pub struct Reads<'a> {
    pub groups: &'a HashMap<(bool, String), Result<GroupRead, String>>,
    pub security_groups: &'a BTreeMap<String, Vec<IngressRule>>,
    pub nacls: &'a BTreeMap<String, Vec<NaclEntry>>,
    pub certificates: &'a BTreeMap<String, DateTime<Utc>>,
    /// Security group id → why it could not be read.
    pub unread_security_groups: &'a BTreeMap<String, String>,
    /// Subnet id → why its network ACL could not be read.
    pub unread_subnets: &'a BTreeMap<String, String>,
    pub unread_certificates: Option<&'a str>,
}

impl Reads<'_> {
    /// The group `name` as read, or `None` with the failed read recorded in `errors`.
    fn parameter_group(
        &self,
        cluster: bool,
        name: &str,
        apply_status: ApplyStatus,
        errors: &mut ReadErrors,
    ) -> Option<ParameterGroup> {
        match self.groups.get(&(cluster, name.to_string()))? {
            Ok(read) => Some(ParameterGroup {
                name: name.to_string(),
                family: read.family.clone(),
                cluster,
                apply_status,
                parameters: read.parameters.clone(),
                shared_with: Default::default(),
            }),
            Err(why) => {
                errors.parameters = Some(why.clone());
                errors.parameter_group = Some(name.to_string());
                None
            }
        }
    }

    /// Records the failed reads of these security groups and subnets.
    fn network_errors(&self, sg_ids: &[&str], subnets: &[&str], errors: &mut ReadErrors) {
        errors.security_groups = sg_ids
            .iter()
            .find_map(|id| self.unread_security_groups.get(*id))
            .cloned();
        errors.network_acls = subnets
            .iter()
            .find_map(|id| self.unread_subnets.get(*id))
            .cloned();
    }
}

/// AWS tags as (key, value) pairs (a tag without a value has an empty one).
pub fn tag_pairs(tags: &[aws_sdk_rds::types::Tag]) -> impl Iterator<Item = (String, String)> + '_ {
    tags.iter().filter_map(|t| {
        Some((
            t.key()?.to_string(),
            t.value().unwrap_or_default().to_string(),
        ))
    })
}

/// Whether AWS gave the instance's CA without its expiry.
pub fn lacks_expiry(i: &DbInstance) -> bool {
    i.certificate_details()
        .and_then(|d| d.valid_till())
        .is_none()
}

/// Values of one parameter group read.
#[derive(Debug, Clone)]
pub struct GroupRead {
    pub family: String,
    pub parameters: BTreeMap<String, ParameterValue>,
}

pub fn apply_type(s: &str) -> ApplyType {
    if s.eq_ignore_ascii_case("dynamic") {
        ApplyType::Dynamic
    } else {
        ApplyType::Static
    }
}

/// `postgres` 16.4 → `postgres16`; `aurora-postgresql` 15.7 → `aurora-postgresql15`.
pub fn family_of(engine: Option<&str>, version: Option<&str>) -> String {
    format!(
        "{}{}",
        engine.unwrap_or("postgres"),
        major(version.unwrap_or(""))
    )
}

pub fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

fn port_of(port: Option<i32>) -> u16 {
    port.and_then(|p| u16::try_from(p).ok()).unwrap_or(5432)
}

pub fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn ca_of(i: &DbInstance, certificates: &BTreeMap<String, DateTime<Utc>>) -> Option<CaCertificate> {
    let details = i.certificate_details();
    let identifier = details
        .and_then(|d| d.ca_identifier())
        .or(i.ca_certificate_identifier())?;
    let valid_till = details
        .and_then(|d| d.valid_till())
        .and_then(to_chrono)
        .or_else(|| certificates.get(identifier).copied());
    Some(CaCertificate {
        identifier: identifier.to_string(),
        valid_till,
    })
}

fn security_groups_of(
    ids: &[&str],
    known: &BTreeMap<String, Vec<IngressRule>>,
) -> Vec<SecurityGroup> {
    ids.iter()
        .filter_map(|id| {
            known.get(*id).map(|rules| SecurityGroup {
                id: id.to_string(),
                rules: rules.clone(),
                shared_with: Default::default(),
            })
        })
        .collect()
}

/// Which other databases share each parameter group and security group.
pub fn fill_sharers(databases: &mut [Database]) {
    let mut by_group: HashMap<(DatabaseKind, String), Vec<String>> = HashMap::new();
    let mut by_sg: HashMap<String, Vec<String>> = HashMap::new();
    for db in databases.iter() {
        if let Some(g) = &db.parameter_group {
            by_group
                .entry((db.kind, g.name.clone()))
                .or_default()
                .push(db.id.clone());
        }
        for sg in &db.security_groups {
            by_sg.entry(sg.id.clone()).or_default().push(db.id.clone());
        }
    }
    let by_group: HashMap<(DatabaseKind, String), Attached> = by_group
        .into_iter()
        .map(|(k, ids)| (k, ids.into()))
        .collect();
    let by_sg: HashMap<String, Attached> =
        by_sg.into_iter().map(|(k, ids)| (k, ids.into())).collect();
    for db in databases.iter_mut() {
        let kind = db.kind;
        if let Some(g) = db.parameter_group.as_mut() {
            g.shared_with = by_group
                .get(&(kind, g.name.clone()))
                .cloned()
                .unwrap_or_default();
        }
        for sg in &mut db.security_groups {
            sg.shared_with = by_sg.get(&sg.id).cloned().unwrap_or_default();
        }
    }
}

/// The ingress rules of one security group: one rule per source of each permission.
pub fn ingress_rules(group: &aws_sdk_ec2::types::SecurityGroup) -> Vec<IngressRule> {
    let mut rules = Vec::new();
    for perm in group.ip_permissions() {
        let protocol = perm.ip_protocol().unwrap_or("-1").to_string();
        let (from_port, to_port) = (perm.from_port(), perm.to_port());
        let rule = |source| IngressRule {
            protocol: protocol.clone(),
            from_port,
            to_port,
            source,
        };
        for r in perm.ip_ranges() {
            if let Some(net) = r.cidr_ip().and_then(|c| c.parse().ok()) {
                rules.push(rule(IngressSource::Cidr(net)));
            }
        }
        for r in perm.ipv6_ranges() {
            if let Some(net) = r.cidr_ipv6().and_then(|c| c.parse().ok()) {
                rules.push(rule(IngressSource::Cidr(net)));
            }
        }
        for pair in perm.user_id_group_pairs() {
            if let Some(g) = pair.group_id() {
                rules.push(rule(IngressSource::SecurityGroup(g.to_string())));
            }
        }
        for pl in perm.prefix_list_ids() {
            if let Some(p) = pl.prefix_list_id() {
                rules.push(rule(IngressSource::PrefixList(p.to_string())));
            }
        }
    }
    rules
}

/// The inbound entries of one network ACL (egress entries do not guard the database).
pub fn inbound_entries(acl: &aws_sdk_ec2::types::NetworkAcl) -> Vec<NaclEntry> {
    let acl_id = acl.network_acl_id().unwrap_or_default().to_string();
    acl.entries()
        .iter()
        .filter(|e| e.egress() != Some(true))
        .filter_map(|e| {
            let cidr = e.cidr_block().or(e.ipv6_cidr_block())?.parse().ok()?;
            Some(NaclEntry {
                acl_id: acl_id.clone(),
                rule_number: e.rule_number().unwrap_or(32767),
                protocol: e.protocol().unwrap_or("-1").to_string(),
                from_port: e.port_range().and_then(|p| p.from()),
                to_port: e.port_range().and_then(|p| p.to()),
                cidr,
                allow: e
                    .rule_action()
                    .map(|a| a.as_str() == "allow")
                    .unwrap_or(false),
            })
        })
        .collect()
}

/// Alias names and key ids to key ARNs, for the aliases of one `ListAliases` page.
pub fn alias_keys(aliases: &[aws_sdk_kms::types::AliasListEntry]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for alias in aliases {
        let (Some(name), Some(key), Some(arn)) =
            (alias.alias_name(), alias.target_key_id(), alias.alias_arn())
        else {
            continue;
        };
        // arn:aws:kms:region:account:alias/name → arn:aws:kms:region:account:key/id
        if let Some(prefix) = arn.strip_suffix(name) {
            let key_arn = format!("{prefix}key/{key}");
            out.insert(name.to_string(), key_arn.clone());
            out.insert(key.to_string(), key_arn);
        }
    }
    out
}

/// The newest minor version of `version`'s major among its upgrade targets (`version` itself
/// when none is newer).
pub fn newest_minor(version: &str, targets: &[aws_sdk_rds::types::UpgradeTarget]) -> String {
    targets
        .iter()
        .filter(|t| t.is_major_version_upgrade() != Some(true))
        .filter_map(|t| t.engine_version())
        .filter(|t| major(t) == major(version))
        .fold(version.to_string(), |best, t| {
            if version_cmp(t, &best).is_gt() {
                t.to_string()
            } else {
                best
            }
        })
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types as ec2;
    use aws_sdk_rds::types as rds;

    use super::*;

    struct Fixture {
        groups: HashMap<(bool, String), Result<GroupRead, String>>,
        security_groups: BTreeMap<String, Vec<IngressRule>>,
        nacls: BTreeMap<String, Vec<NaclEntry>>,
        certificates: BTreeMap<String, DateTime<Utc>>,
        unread_security_groups: BTreeMap<String, String>,
        unread_subnets: BTreeMap<String, String>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let parameters = BTreeMap::from([(
                "rds.force_ssl".to_string(),
                ParameterValue {
                    value: Some("1".into()),
                    apply_type: ApplyType::Dynamic,
                    modifiable: true,
                },
            )]);
            Fixture {
                groups: HashMap::from([
                    (
                        (false, "pg".to_string()),
                        Ok(GroupRead {
                            family: "postgres16".into(),
                            parameters: parameters.clone(),
                        }),
                    ),
                    (
                        (true, "cpg".to_string()),
                        Ok(GroupRead {
                            family: "aurora-postgresql16".into(),
                            parameters,
                        }),
                    ),
                    ((false, "unreadable".to_string()), Err("denied".to_string())),
                ]),
                security_groups: BTreeMap::from([("sg-1".to_string(), Vec::new())]),
                nacls: BTreeMap::new(),
                certificates: BTreeMap::new(),
                unread_security_groups: BTreeMap::new(),
                unread_subnets: BTreeMap::new(),
            }
        }

        fn reads(&self) -> Reads<'_> {
            Reads {
                groups: &self.groups,
                security_groups: &self.security_groups,
                nacls: &self.nacls,
                certificates: &self.certificates,
                unread_security_groups: &self.unread_security_groups,
                unread_subnets: &self.unread_subnets,
                unread_certificates: None,
            }
        }
    }

    fn instance(id: &str, group: &str) -> rds::builders::DbInstanceBuilder {
        rds::DbInstance::builder()
            .db_instance_identifier(id)
            .engine("postgres")
            .engine_version("16.4")
            .db_parameter_groups(
                rds::DbParameterGroupStatus::builder()
                    .db_parameter_group_name(group)
                    .parameter_apply_status("pending-reboot")
                    .build(),
            )
            .vpc_security_groups(
                rds::VpcSecurityGroupMembership::builder()
                    .vpc_security_group_id("sg-1")
                    .build(),
            )
    }

    #[test]
    fn an_instance_becomes_a_database() {
        let fixture = Fixture::new();
        let i = instance("a", "pg")
            .publicly_accessible(true)
            .enabled_cloudwatch_logs_exports("postgresql")
            .deletion_protection(true)
            .backup_retention_period(7)
            .storage_encrypted(true)
            .kms_key_id("arn:aws:kms:us-east-1:1:key/k")
            .endpoint(rds::Endpoint::builder().port(5433).build())
            .tag_list(rds::Tag::builder().key("env").value("prod").build())
            .ca_certificate_identifier("rds-ca-rsa2048-g1")
            .build();
        let db = instance_model("us-east-1", &i, &fixture.reads());
        assert_eq!((db.id.as_str(), db.kind), ("a", DatabaseKind::Instance));
        assert_eq!(
            (db.engine, db.region.as_str()),
            (Engine::Postgres, "us-east-1")
        );
        let a = &db.attributes;
        assert!(a.publicly_accessible && !a.iam_auth && a.deletion_protection);
        assert!(a.storage_encrypted && !a.managed_master_password);
        assert!(!a.auto_minor_version_upgrade, "absent means off");
        assert_eq!(a.backup_retention_days, 7);
        assert_eq!(a.port, 5433);
        assert!(a.cloudwatch_exports.contains("postgresql"));
        assert_eq!(
            a.kms_key_arn.as_deref(),
            Some("arn:aws:kms:us-east-1:1:key/k")
        );
        assert_eq!(
            a.ca_certificate.as_ref().map(|c| c.identifier.as_str()),
            Some("rds-ca-rsa2048-g1")
        );
        assert_eq!(db.tags.get("env").map(String::as_str), Some("prod"));
        let group = db.parameter_group.expect("group read");
        assert_eq!(
            (group.name.as_str(), group.family.as_str()),
            ("pg", "postgres16")
        );
        assert_eq!(group.apply_status, ApplyStatus::PendingReboot);
        assert!(!group.cluster);
        assert_eq!(group.value("rds.force_ssl"), Some("1"));
        assert_eq!(db.security_groups.len(), 1);
        assert_eq!(db.read_errors, ReadErrors::default());
    }

    #[test]
    fn an_unreadable_group_is_a_read_error_of_its_databases() {
        let fixture = Fixture::new();
        let db = instance_model("r", &instance("b", "unreadable").build(), &fixture.reads());
        assert!(db.parameter_group.is_none());
        assert_eq!(db.read_errors.parameters.as_deref(), Some("denied"));
        assert_eq!(
            db.read_errors.parameter_group.as_deref(),
            Some("unreadable")
        );
        assert_eq!(
            db.attributes.port, 5432,
            "the default port when none is given"
        );
    }

    #[test]
    fn a_cluster_takes_member_settings_from_its_instances() {
        let fixture = Fixture::new();
        let writer = instance("w", "pg")
            .publicly_accessible(true)
            .auto_minor_version_upgrade(true)
            .build();
        let reader = instance("r", "pg").auto_minor_version_upgrade(true).build();
        let c = rds::DbCluster::builder()
            .db_cluster_identifier("c")
            .engine("aurora-postgresql")
            .engine_version("16.2")
            .db_cluster_parameter_group("cpg")
            .iam_database_authentication_enabled(true)
            .db_cluster_members(
                rds::DbClusterMember::builder()
                    .db_instance_identifier("w")
                    .is_cluster_writer(true)
                    .db_cluster_parameter_group_status("in-sync")
                    .build(),
            )
            .db_cluster_members(
                rds::DbClusterMember::builder()
                    .db_instance_identifier("r")
                    .db_cluster_parameter_group_status("pending-reboot")
                    .build(),
            )
            .build();
        let instances: HashMap<&str, &DbInstance> = HashMap::from([("w", &writer), ("r", &reader)]);
        let db = cluster_model("us-east-1", &c, &instances, &fixture.reads());
        assert_eq!(
            (db.kind, db.engine),
            (DatabaseKind::Cluster, Engine::AuroraPostgresql)
        );
        assert_eq!(db.members.len(), 2);
        assert!(db.members[0].is_writer && db.members[0].publicly_accessible);
        assert!(!db.members[1].publicly_accessible);
        // A cluster is public when any member is, upgrades minors only when every member does.
        assert!(db.attributes.publicly_accessible);
        assert!(db.attributes.auto_minor_version_upgrade);
        assert!(db.attributes.iam_auth);
        let group = db.parameter_group.expect("cluster group read");
        assert!(group.cluster);
        assert_eq!(group.family, "aurora-postgresql16");
        assert_eq!(
            group.apply_status,
            ApplyStatus::PendingReboot,
            "a member waits"
        );
    }

    #[test]
    fn security_group_permissions_become_one_rule_per_source() {
        let group = ec2::SecurityGroup::builder()
            .group_id("sg-1")
            .ip_permissions(
                ec2::IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(5432)
                    .to_port(5432)
                    .ip_ranges(ec2::IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .ipv6_ranges(ec2::Ipv6Range::builder().cidr_ipv6("::/0").build())
                    .user_id_group_pairs(ec2::UserIdGroupPair::builder().group_id("sg-app").build())
                    .prefix_list_ids(ec2::PrefixListId::builder().prefix_list_id("pl-1").build())
                    .build(),
            )
            .ip_permissions(ec2::IpPermission::builder().ip_protocol("-1").build())
            .build();
        let rules = ingress_rules(&group);
        let sources: Vec<&IngressSource> = rules.iter().map(|r| &r.source).collect();
        assert_eq!(
            sources,
            [
                &IngressSource::Cidr("0.0.0.0/0".parse().expect("cidr")),
                &IngressSource::Cidr("::/0".parse().expect("cidr")),
                &IngressSource::SecurityGroup("sg-app".into()),
                &IngressSource::PrefixList("pl-1".into()),
            ]
        );
        assert!(
            rules
                .iter()
                .all(|r| r.protocol == "tcp" && r.from_port == Some(5432))
        );
    }

    #[test]
    fn only_inbound_acl_entries_count() {
        let entry = |number: i32, egress: bool, action: ec2::RuleAction| {
            ec2::NetworkAclEntry::builder()
                .rule_number(number)
                .protocol("6")
                .port_range(ec2::PortRange::builder().from(5432).to(5432).build())
                .cidr_block("0.0.0.0/0")
                .rule_action(action)
                .egress(egress)
                .build()
        };
        let acl = ec2::NetworkAcl::builder()
            .network_acl_id("acl-1")
            .entries(entry(100, false, ec2::RuleAction::Allow))
            .entries(entry(110, true, ec2::RuleAction::Allow))
            .entries(entry(120, false, ec2::RuleAction::Deny))
            .build();
        let entries = inbound_entries(&acl);
        assert_eq!(entries.len(), 2);
        assert!(entries[0].allow && entries[0].acl_id == "acl-1");
        assert_eq!((entries[1].rule_number, entries[1].allow), (120, false));
        assert_eq!(entries[0].from_port, Some(5432));
    }

    #[test]
    fn kms_aliases_map_names_and_ids_to_key_arns() {
        let alias = aws_sdk_kms::types::AliasListEntry::builder()
            .alias_name("alias/db")
            .alias_arn("arn:aws:kms:us-east-1:1:alias/db")
            .target_key_id("k-1")
            .build();
        let keys = alias_keys(&[alias]);
        assert_eq!(
            keys.get("alias/db").map(String::as_str),
            Some("arn:aws:kms:us-east-1:1:key/k-1")
        );
        assert_eq!(keys.get("k-1"), keys.get("alias/db"));
    }

    #[test]
    fn the_newest_minor_stays_within_the_major() {
        let target = |v: &str, major: bool| {
            rds::UpgradeTarget::builder()
                .engine_version(v)
                .is_major_version_upgrade(major)
                .build()
        };
        let targets = [
            target("16.5", false),
            target("16.10", false),
            target("17.2", true),
            target("17.9", false),
        ];
        assert_eq!(newest_minor("16.4", &targets), "16.10");
        assert_eq!(newest_minor("16.4", &[]), "16.4");
        assert_eq!(
            family_of(Some("aurora-postgresql"), Some("15.7")),
            "aurora-postgresql15"
        );
    }
}
