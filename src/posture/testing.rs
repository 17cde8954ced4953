//! Builders for databases in tests and examples (pure data, no IO).

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{DatabaseKind, Engine};

use super::model::{
    ApplyStatus, ApplyType, Attributes, CaCertificate, Database, Member, ParameterGroup,
    ParameterValue,
};

/// Engine defaults of the controlled parameters for a family (as AWS documents them).
pub fn engine_defaults(family: &str) -> BTreeMap<String, ParameterValue> {
    let aurora = family.starts_with("aurora");
    let major: u32 = family
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(16);
    let force_ssl = if !aurora && major >= 15 { "1" } else { "0" };
    let dynamic = |v: Option<&str>| ParameterValue {
        value: v.map(String::from),
        apply_type: ApplyType::Dynamic,
        modifiable: true,
    };
    BTreeMap::from([
        ("rds.force_ssl".into(), dynamic(Some(force_ssl))),
        ("ssl_min_protocol_version".into(), dynamic(Some("TLSv1.2"))),
        ("rds.log_retention_period".into(), dynamic(Some("4320"))),
        ("log_connections".into(), dynamic(Some("0"))),
        ("log_disconnections".into(), dynamic(Some("0"))),
        ("log_statement".into(), dynamic(Some("none"))),
        (
            "shared_preload_libraries".into(),
            ParameterValue {
                value: Some("pg_stat_statements".into()),
                apply_type: ApplyType::Static,
                modifiable: true,
            },
        ),
        ("pgaudit.log".into(), dynamic(Some("none"))),
        ("pgaudit.role".into(), dynamic(None)),
        ("password_encryption".into(), dynamic(Some("scram-sha-256"))),
    ])
}

/// A parameter group with engine-default values.
pub fn group(name: &str, family: &str, cluster: bool) -> ParameterGroup {
    ParameterGroup {
        name: name.into(),
        family: family.into(),
        cluster,
        apply_status: ApplyStatus::InSync,
        parameters: engine_defaults(family),
        shared_with: Default::default(),
    }
}

/// An RDS for PostgreSQL 16 instance on `default.postgres16`, otherwise loosely configured.
pub fn instance(id: &str) -> Database {
    Database {
        id: id.into(),
        kind: DatabaseKind::Instance,
        region: "us-east-1".into(),
        engine: Engine::Postgres,
        engine_version: "16.4".into(),
        tags: BTreeMap::new(),
        attributes: Attributes {
            port: 5432,
            endpoint: Some(format!("{id}.aaaaaaaaaa.us-east-1.rds.amazonaws.com")),
            master_username: Some("postgres".into()),
            backup_retention_days: 1,
            ca_certificate: Some(CaCertificate {
                identifier: "rds-ca-rsa2048-g1".into(),
                valid_till: None,
            }),
            ..Attributes::default()
        },
        members: Vec::new(),
        parameter_group: Some(group("default.postgres16", "postgres16", false)),
        security_groups: Vec::new(),
        nacl_entries: Vec::new(),
        newest_minor_version: Some("16.4".into()),
        maintenance_window: Some("sun:05:00-sun:05:30".into()),
        read_errors: Default::default(),
    }
}

/// An Aurora PostgreSQL 16 cluster with the given members (the first is the writer).
pub fn cluster(id: &str, members: &[&str]) -> Database {
    Database {
        id: id.into(),
        kind: DatabaseKind::Cluster,
        engine: Engine::AuroraPostgresql,
        members: members
            .iter()
            .enumerate()
            .map(|(i, m)| Member {
                id: (*m).into(),
                is_writer: i == 0,
                publicly_accessible: false,
                auto_minor_version_upgrade: true,
                ca_certificate: Some(CaCertificate {
                    identifier: "rds-ca-rsa2048-g1".into(),
                    valid_till: None,
                }),
                apply_status: ApplyStatus::InSync,
                endpoint: Some(format!("{m}.aaaaaaaaaa.us-east-1.rds.amazonaws.com")),
            })
            .collect(),
        parameter_group: Some(group(
            "default.aurora-postgresql16",
            "aurora-postgresql16",
            true,
        )),
        attributes: Attributes {
            port: 5432,
            endpoint: Some(format!(
                "{id}.cluster-aaaaaaaaaa.us-east-1.rds.amazonaws.com"
            )),
            master_username: Some("postgres".into()),
            backup_retention_days: 1,
            cloudwatch_exports: BTreeSet::new(),
            ..Attributes::default()
        },
        ..instance(id)
    }
}
