//! Table-driven tests of evaluate → plan → report on the pure model.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};

use crate::api::controls::Switch;
use crate::api::*;

use super::evaluate::{AttributeChange, EvalContext, Evaluation, Fix, Target, evaluate};
use super::failure::Failure;
use super::model::{
    ApplyStatus, ApplyType, Database, Fleet, IngressRule, IngressSource, NaclEntry, SecurityGroup,
};
use super::plan::{ActionKind, ApplyMethod, PlanContext, in_maintenance_window, plan};
use super::report::{Outcome, results};
use super::testing::{cluster, group, instance};

static EMPTY: Fleet = Fleet {
    databases: Vec::new(),
    kms_keys: BTreeMap::new(),
    parameter_groups: Vec::new(),
};

fn spec(yaml: &str) -> DatabaseSecurityPolicySpec {
    serde_saphyr::from_str(yaml).expect("test spec parses")
}

fn enforce(posture: &str) -> DatabaseSecurityPolicySpec {
    spec(&format!(
        "selector: {{tags: {{env: prod}}}}\nmode: Enforce\nposture:\n{posture}"
    ))
}

fn now() -> chrono::DateTime<Utc> {
    // A Wednesday, outside the fixtures' Sunday maintenance window.
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn eval_all<'a>(
    spec: &DatabaseSecurityPolicySpec,
    dbs: &'a [Database],
) -> Vec<(&'a Database, Vec<Evaluation>)> {
    let keys = BTreeMap::new();
    let ctx = EvalContext {
        now: now(),
        kms_keys: &keys,
    };
    dbs.iter().map(|d| (d, evaluate(spec, d, &ctx))).collect()
}

fn status_of(evals: &[Evaluation], control: ControlId) -> FindingStatus {
    evals
        .iter()
        .find(|e| e.finding.control == control)
        .map(|e| e.finding.status)
        .expect("control evaluated")
}

fn kinds(plan: &super::plan::Plan) -> Vec<&ActionKind> {
    plan.actions.iter().map(|a| &a.kind).collect()
}

#[test]
fn compliant_by_default_on_postgres16_default_group() {
    let s = enforce(
        "  transport: {forceSsl: true, minTlsVersion: TLSv1.2}\n  auth: {passwordEncryption: true}",
    );
    let dbs = [instance("a")];
    let evaluated = eval_all(&s, &dbs);
    for e in &evaluated[0].1 {
        assert_eq!(
            e.finding.status,
            FindingStatus::Compliant,
            "{:?}",
            e.finding
        );
    }
    assert!(
        plan(
            &s,
            &evaluated,
            PlanContext {
                now: now(),
                fleet: &EMPTY
            }
        )
        .is_empty()
    );
}

#[test]
fn default_group_is_copied_attached_and_waits_for_reboot() {
    let s =
        enforce("  transport: {forceSsl: true}\n  logging: {retention: {minimumMinutes: 10080}}");
    let mut db = instance("orders");
    db.parameter_group = Some(group("default.postgres14", "postgres14", false));
    let dbs = [db];
    let evaluated = eval_all(&s, &dbs);
    assert_eq!(
        status_of(&evaluated[0].1, ControlId::ForceSsl),
        FindingStatus::NonCompliant
    );
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let k = kinds(&p);
    assert_eq!(k.len(), 1, "{k:?}");
    assert!(
        matches!(k[0], ActionKind::MoveToManagedGroup { current, source, changes, cluster: false, .. }
        if current == "default.postgres14" && source == "default.postgres14"
        && changes.iter().any(|c| c.name == "rds.force_ssl" && c.value == "1" && c.method == ApplyMethod::Immediate)
        && changes.iter().any(|c| c.name == "rds.log_retention_period" && c.value == "10080"))
    );
    // Reboot policy Never: no reboot, both controls await one.
    assert_eq!(p.awaiting_reboot.len(), 2);
    for action in &p.actions {
        if let ActionKind::SetParameters { group, .. } = &action.kind {
            assert!(!group.starts_with("default."));
        }
    }
}

#[test]
fn reboot_policy_decides_whether_and_when_to_reboot() {
    let mut s = enforce("  transport: {forceSsl: true}");
    let mut db = instance("orders");
    db.parameter_group = Some(group("default.postgres14", "postgres14", false));
    let dbs = [db];
    let evaluated = eval_all(&s, &dbs);

    s.remediation.reboot = RebootPolicy::Immediately;
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert!(
        matches!(p.actions.last().map(|a| &a.kind), Some(ActionKind::Reboot { instance }) if instance == "orders")
    );

    s.remediation.reboot = RebootPolicy::MaintenanceWindow;
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a.kind, ActionKind::Reboot { .. }))
    );
    let sunday = Utc.with_ymd_and_hms(2026, 11, 29, 5, 10, 0).unwrap();
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: sunday,
            fleet: &EMPTY,
        },
    );
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a.kind, ActionKind::Reboot { .. }))
    );
}

#[test]
fn maintenance_windows_including_week_wrap() {
    let at = |d, h, m| Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap(); // 23 = Monday
    let cases = [
        ("mon:03:00-mon:04:00", at(23, 3, 30), true),
        ("mon:03:00-mon:04:00", at(23, 4, 0), false),
        ("sun:23:00-mon:01:00", at(23, 0, 30), true),
        ("sun:23:00-mon:01:00", at(29, 23, 30), true),
        ("sun:23:00-mon:01:00", at(29, 22, 59), false),
        ("garbage", at(23, 3, 30), false),
    ];
    for (window, t, expected) in cases {
        assert_eq!(in_maintenance_window(window, t), expected, "{window} {t}");
    }
}

#[test]
fn shared_custom_group_is_copied_when_a_sharer_is_not_selected() {
    let s = enforce("  logging: {connections: true}");
    let mut a = instance("a");
    let mut shared = group("team-pg16", "postgres16", false);
    shared.shared_with = vec!["a".to_string(), "b".to_string()].into();
    a.parameter_group = Some(shared.clone());
    let dbs = [a.clone()];
    let p = plan(
        &s,
        &eval_all(&s, &dbs),
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert!(
        matches!(kinds(&p)[0], ActionKind::MoveToManagedGroup { source, .. } if source == "team-pg16")
    );

    // When the sharer is selected too, the group is changed in place, once.
    let mut b = instance("b");
    let mut shared_b = shared.clone();
    shared_b.shared_with = vec!["a".to_string(), "b".to_string()].into();
    b.parameter_group = Some(shared_b);
    let dbs = [a, b];
    let p = plan(
        &s,
        &eval_all(&s, &dbs),
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let k = kinds(&p);
    assert_eq!(k.len(), 1, "{k:?}");
    assert!(
        matches!(k[0], ActionKind::SetParameters { group, changes, .. } if group == "team-pg16" && changes.len() == 2)
    );
    assert_eq!(p.actions[0].causes.len(), 2);
}

#[test]
fn dedicated_strategy_never_changes_a_group_pgbaseline_did_not_create() {
    let mut s = enforce("  logging: {connections: true}");
    s.remediation.parameter_group_strategy = ParameterGroupStrategy::Dedicated;
    let mut a = instance("a");
    a.parameter_group = Some(group("custom", "postgres16", false));
    let p = plan(
        &s,
        &eval_all(&s, &[a.clone()]),
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert!(matches!(
        kinds(&p)[0],
        ActionKind::MoveToManagedGroup { source, .. } if source == "custom"
    ));
}

#[test]
fn managed_copies_are_never_changed_in_place_whatever_their_name_or_strategy() {
    // A group named like pgbaseline's (ours, squatted or first-version) is never modified in
    // place: changing it would change what its name promises to every database that shares it.
    for strategy in [
        ParameterGroupStrategy::Auto,
        ParameterGroupStrategy::Dedicated,
    ] {
        for name in [
            "pgbaseline-a-postgres16",
            "pgbaseline-postgres16-0123456789abcdef",
        ] {
            let mut s = enforce("  logging: {connections: true}");
            s.remediation.parameter_group_strategy = strategy;
            let mut a = instance("a");
            let mut g = group(name, "postgres16", false);
            g.shared_with = vec!["a".to_string()].into();
            a.parameter_group = Some(g);
            let p = plan(
                &s,
                &eval_all(&s, &[a]),
                PlanContext {
                    now: now(),
                    fleet: &EMPTY,
                },
            );
            assert!(
                !p.actions
                    .iter()
                    .any(|x| matches!(x.kind, ActionKind::SetParameters { .. })),
                "{name} {strategy:?}: {:?}",
                kinds(&p)
            );
            assert!(matches!(
                kinds(&p)[0],
                ActionKind::MoveToManagedGroup { current, source, .. } if current == name && source == name
            ));
        }
    }
}

#[test]
fn first_version_copies_migrate_to_a_shared_copy_of_their_source() {
    use super::managed::GroupListing;
    let listing = |name: &str, description: &str| GroupListing {
        name: name.into(),
        family: "postgres16".into(),
        cluster: false,
        arn: format!("arn:aws:rds:us-east-1:123456789012:pg:{name}"),
        description: description.into(),
    };
    let fleet = Fleet {
        parameter_groups: vec![
            listing(
                "default.postgres16",
                "Default parameter group for postgres16",
            ),
            listing(
                "pgbaseline-a-postgres16",
                "pgbaseline: copy of default.postgres16",
            ),
            listing("pgbaseline-b-postgres16", "somebody else's description"),
        ],
        ..Fleet::default()
    };
    let mut s = enforce("  transport: {forceSsl: true}");
    let mut a = instance("a");
    let mut g = group("pgbaseline-a-postgres16", "postgres16", false);
    g.parameters.get_mut("rds.force_ssl").unwrap().value = Some("1".into());
    a.parameter_group = Some(g);
    let mut b = instance("b");
    b.parameter_group = Some(group("pgbaseline-b-postgres16", "postgres16", false));
    b.parameter_group
        .as_mut()
        .unwrap()
        .parameters
        .get_mut("rds.force_ssl")
        .unwrap()
        .value = Some("1".into());
    let dbs = [a, b];
    // Compliant and no reboot allowed: no move (it would leave the database pending reboot for
    // values that do not change).
    let ctx = PlanContext {
        now: now(),
        fleet: &fleet,
    };
    assert!(plan(&s, &eval_all(&s, &dbs), ctx).is_empty());
    // A reboot is allowed: the first-version copy moves to a copy of its source, then reboots;
    // a group whose description does not say where it came from stays.
    s.remediation.reboot = RebootPolicy::Immediately;
    let p = plan(&s, &eval_all(&s, &dbs), ctx);
    let k = kinds(&p);
    assert_eq!(k.len(), 2, "{k:?}");
    assert!(matches!(
        k[0],
        ActionKind::MoveToManagedGroup { database, current, source, changes, .. }
        if database.id == "a" && current == "pgbaseline-a-postgres16" && source == "default.postgres16" && changes.is_empty()
    ));
    assert!(matches!(k[1], ActionKind::Reboot { instance } if instance == "a"));
}

#[test]
fn values_are_normalised_before_comparing() {
    let s = enforce(
        "  logging: {connections: true}\n  audit: {pgaudit: {classes: [ddl, role]}}\n  transport: {forceSsl: true}",
    );
    let mut db = instance("a");
    let mut g = group("custom", "postgres16", false);
    let mut set = |k: &str, v: &str| g.parameters.get_mut(k).unwrap().value = Some(v.into());
    set("log_connections", "on");
    set("log_disconnections", "TRUE");
    set("shared_preload_libraries", "pg_stat_statements, PGAUDIT");
    set("pgaudit.log", "ddl , Role");
    set("rds.force_ssl", "1");
    db.parameter_group = Some(g);
    let evaluated = eval_all(&s, std::slice::from_ref(&db));
    for e in &evaluated[0].1 {
        assert_eq!(
            e.finding.status,
            FindingStatus::Compliant,
            "{:?}",
            e.finding
        );
    }
}

#[test]
fn unset_parameters_fall_back_to_the_engine_default() {
    let mut db = instance("a");
    let mut g = group("custom", "postgres16", false);
    g.parameters
        .get_mut("ssl_min_protocol_version")
        .unwrap()
        .value = None;
    db.parameter_group = Some(g);
    let dbs = [db];
    let s12 = enforce("  transport: {minTlsVersion: TLSv1.2}");
    assert_eq!(
        status_of(&eval_all(&s12, &dbs)[0].1, ControlId::MinTlsVersion),
        FindingStatus::Compliant
    );
    let s13 = enforce("  transport: {minTlsVersion: TLSv1.3}");
    assert_eq!(
        status_of(&eval_all(&s13, &dbs)[0].1, ControlId::MinTlsVersion),
        FindingStatus::NonCompliant
    );
}

#[test]
fn pending_reboot_is_reported_and_not_planned_again() {
    let mut s = enforce("  audit: {pgaudit: {classes: [ddl]}}");
    let mut db = instance("a");
    let mut g = group("pgbaseline-a-postgres16", "postgres16", false);
    g.parameters
        .get_mut("shared_preload_libraries")
        .unwrap()
        .value = Some("pg_stat_statements,pgaudit".into());
    g.parameters.get_mut("pgaudit.log").unwrap().value = Some("ddl".into());
    g.apply_status = ApplyStatus::PendingReboot;
    db.parameter_group = Some(g);
    let dbs = [db];
    let evaluated = eval_all(&s, &dbs);
    assert_eq!(
        status_of(&evaluated[0].1, ControlId::Pgaudit),
        FindingStatus::PendingReboot
    );
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert!(p.actions.is_empty());
    let (res, summary) = results(&evaluated, &p, &[]);
    assert_eq!(res[0].findings[0].status, FindingStatus::PendingReboot);
    assert_eq!(summary.pending_reboot, 1);
    assert_eq!(summary.compliant, 0);

    s.remediation.reboot = RebootPolicy::Immediately;
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert_eq!(
        kinds(&p),
        vec![&ActionKind::Reboot {
            instance: "a".into()
        }]
    );
}

#[test]
fn static_parameter_uses_pending_reboot_apply_method() {
    let s = enforce("  audit: {pgaudit: {classes: [ddl], role: rds_pgaudit}}");
    let mut db = instance("a");
    db.parameter_group = Some(group("custom", "postgres16", false));
    let p = plan(
        &s,
        &eval_all(&s, &[db]),
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let ActionKind::SetParameters { changes, .. } = &p.actions[0].kind else {
        panic!("{p:?}")
    };
    let method = |n: &str| changes.iter().find(|c| c.name == n).unwrap().method;
    assert_eq!(
        method("shared_preload_libraries"),
        ApplyMethod::PendingReboot
    );
    assert_eq!(method("pgaudit.log"), ApplyMethod::Immediate);
    assert_eq!(
        changes
            .iter()
            .find(|c| c.name == "shared_preload_libraries")
            .unwrap()
            .value,
        "pg_stat_statements,pgaudit"
    );
    assert_eq!(
        changes
            .iter()
            .find(|c| c.name == "pgaudit.role")
            .unwrap()
            .value,
        "rds_pgaudit"
    );
    assert!(!p.awaiting_reboot.is_empty());
}

#[test]
fn aurora_parameters_go_to_the_cluster_group_and_attributes_to_the_cluster() {
    let s = enforce(
        "  transport: {forceSsl: true}\n  auth: {iam: true}\n  network: {publicAccess: Forbidden}\n  maintenance: {deletionProtection: true}",
    );
    let mut c = cluster("billing", &["billing-1", "billing-2"]);
    c.members[1].publicly_accessible = true;
    let p = plan(
        &s,
        &eval_all(&s, &[c]),
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let k = kinds(&p);
    assert!(k.iter().any(|a| matches!(a, ActionKind::MoveToManagedGroup { source, cluster: true, family, changes, .. }
        if source == "default.aurora-postgresql16" && family == "aurora-postgresql16"
        && changes.iter().any(|c| c.name == "rds.force_ssl"))));
    assert!(k.iter().any(|a| matches!(a, ActionKind::ModifyAttributes { target: Target::Cluster(id), changes }
        if id == "billing" && changes.contains(&AttributeChange::EnableIamAuth) && changes.contains(&AttributeChange::EnableDeletionProtection))));
    assert!(k.iter().any(
        |a| matches!(a, ActionKind::ModifyAttributes { target: Target::Instance(id), changes }
        if id == "billing-2" && changes == &vec![AttributeChange::DisablePublicAccess])
    ));
    assert!(!k.iter().any(|a| matches!(a, ActionKind::ModifyAttributes { target: Target::Instance(id), .. } if id == "billing-1")));
}

#[test]
fn aurora_reboot_goes_member_by_member_when_allowed() {
    let mut s = enforce("  transport: {forceSsl: true}");
    s.remediation.reboot = RebootPolicy::Immediately;
    let c = cluster("billing", &["billing-1", "billing-2"]);
    let p = plan(
        &s,
        &eval_all(&s, &[c]),
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let reboots: Vec<&str> = p
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::Reboot { instance } => Some(instance.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reboots, vec!["billing-1", "billing-2"]);
}

fn sg(id: &str, rules: Vec<IngressRule>) -> SecurityGroup {
    SecurityGroup {
        id: id.into(),
        rules,
        shared_with: Default::default(),
    }
}

fn cidr_rule(protocol: &str, from: i32, to: i32, cidr: &str) -> IngressRule {
    IngressRule {
        protocol: protocol.into(),
        from_port: Some(from),
        to_port: Some(to),
        source: IngressSource::Cidr(cidr.parse().unwrap()),
    }
}

#[test]
fn ingress_revokes_exactly_the_offending_rules() {
    let s = enforce(
        "  network:\n    ingress: {allowedCidrs: [10.0.0.0/8], allowedSecurityGroups: [sg-0123456789abcdef0]}",
    );
    let mut db = instance("a");
    let offending = vec![
        cidr_rule("tcp", 5432, 5432, "0.0.0.0/0"),
        cidr_rule("tcp", 5000, 6000, "192.168.0.0/16"),
        cidr_rule("-1", -1, -1, "::/0"),
        IngressRule {
            protocol: "tcp".into(),
            from_port: Some(5432),
            to_port: Some(5432),
            source: IngressSource::SecurityGroup("sg-99999999".into()),
        },
    ];
    let fine = vec![
        cidr_rule("tcp", 5432, 5432, "10.1.0.0/16"),
        cidr_rule("tcp", 22, 22, "0.0.0.0/0"),
        IngressRule {
            protocol: "tcp".into(),
            from_port: Some(5432),
            to_port: Some(5432),
            source: IngressSource::SecurityGroup("sg-0123456789abcdef0".into()),
        },
    ];
    let mut rules = offending.clone();
    rules.extend(fine);
    db.security_groups = vec![sg("sg-11111111", rules)];
    let p = plan(
        &s,
        &eval_all(&s, &[db]),
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let revoked: Vec<&IngressRule> = p
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::RevokeIngress {
                rule,
                security_group,
            } if security_group == "sg-11111111" => Some(rule),
            _ => None,
        })
        .collect();
    assert_eq!(revoked.len(), offending.len());
    for rule in &offending {
        assert!(revoked.contains(&rule), "{rule:?}");
    }
}

#[test]
fn shared_security_group_with_unselected_database_is_only_reported() {
    let s = enforce("  network:\n    ingress: {allowedCidrs: [10.0.0.0/8]}");
    let mut db = instance("a");
    let mut group = sg(
        "sg-11111111",
        vec![cidr_rule("tcp", 5432, 5432, "0.0.0.0/0")],
    );
    group.shared_with = vec!["a".to_string(), "outsider".to_string()].into();
    db.security_groups = vec![group];
    let dbs = [db];
    let evaluated = eval_all(&s, &dbs);
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert!(p.actions.is_empty());
    let (res, _) = results(&evaluated, &p, &[]);
    assert_eq!(res[0].findings[0].status, FindingStatus::NonCompliant);
    assert!(res[0].findings[0].message.contains("outsider"));
}

#[test]
fn more_than_twenty_parameters_are_split_into_calls_of_twenty() {
    let s = enforce("  transport: {forceSsl: true}");
    let mut db = instance("a");
    db.parameter_group = Some(group("custom", "postgres16", false));
    let fixes: Vec<Fix> = (0..45)
        .map(|i| Fix::Parameter {
            name: format!("p{i:02}"),
            value: "1".into(),
        })
        .collect();
    let evaluation = Evaluation {
        finding: Finding {
            control: ControlId::ForceSsl,
            severity: Severity::High,
            status: FindingStatus::NonCompliant,
            observed: String::new(),
            expected: String::new(),
            message: String::new(),
        },
        fixes,
    };
    let p = plan(
        &s,
        &[(&db, vec![evaluation])],
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let sizes: Vec<usize> = p
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::SetParameters { changes, .. } => Some(changes.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![20, 20, 5]);
}

#[test]
fn audit_plans_nothing_and_overrides_switch_single_controls() {
    let mut s = spec(
        "selector: {tags: {env: prod}}\nposture:\n  transport: {forceSsl: true}\n  auth: {iam: true}",
    );
    let mut db = instance("a");
    db.parameter_group = Some(group("default.postgres14", "postgres14", false));
    let dbs = [db];
    let evaluated = eval_all(&s, &dbs);
    assert!(
        plan(
            &s,
            &evaluated,
            PlanContext {
                now: now(),
                fleet: &EMPTY
            }
        )
        .is_empty()
    );
    s.control_modes.insert("auth.iam".into(), Mode::Enforce);
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert_eq!(
        kinds(&p),
        vec![&ActionKind::ModifyAttributes {
            target: Target::Instance("a".into()),
            changes: vec![AttributeChange::EnableIamAuth]
        }]
    );
}

#[test]
fn master_password_rotation_needs_opt_in() {
    let mut s = enforce("  auth: {managedMasterPassword: true}");
    let dbs = [instance("a")];
    let evaluated = eval_all(&s, &dbs);
    assert_eq!(
        status_of(&evaluated[0].1, ControlId::ManagedMasterPassword),
        FindingStatus::ReportOnly
    );
    assert!(
        plan(
            &s,
            &evaluated,
            PlanContext {
                now: now(),
                fleet: &EMPTY
            }
        )
        .is_empty()
    );
    s.remediation.allow_master_password_rotation = true;
    let evaluated = eval_all(&s, &dbs);
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert_eq!(
        kinds(&p),
        vec![&ActionKind::ModifyAttributes {
            target: Target::Instance("a".into()),
            changes: vec![AttributeChange::EnableManagedMasterPassword]
        }]
    );
}

#[test]
fn ca_change_waits_for_an_allowed_restart() {
    let mut s = enforce("  transport: {caCertificate: {allowed: [rds-ca-rsa4096-g1]}}");
    let dbs = [instance("a")];
    let evaluated = eval_all(&s, &dbs);
    assert_eq!(
        status_of(&evaluated[0].1, ControlId::CaCertificate),
        FindingStatus::NonCompliant
    );
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert!(p.actions.is_empty());
    assert_eq!(p.notes.len(), 1);
    s.remediation.reboot = RebootPolicy::Immediately;
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert!(
        matches!(kinds(&p)[0], ActionKind::ModifyAttributes { changes, .. } if changes == &vec![AttributeChange::SetCaCertificate("rds-ca-rsa4096-g1".into())])
    );
}

#[test]
fn ca_expiring_soon_is_non_compliant() {
    let s = enforce("  transport: {caCertificate: {minValidDays: 60}}");
    let mut db = instance("a");
    db.attributes.ca_certificate.as_mut().unwrap().valid_till =
        Some(now() + chrono::Duration::days(30));
    assert_eq!(
        status_of(&eval_all(&s, &[db.clone()])[0].1, ControlId::CaCertificate),
        FindingStatus::NonCompliant
    );
    db.attributes.ca_certificate.as_mut().unwrap().valid_till =
        Some(now() + chrono::Duration::days(400));
    assert_eq!(
        status_of(&eval_all(&s, &[db])[0].1, ControlId::CaCertificate),
        FindingStatus::Compliant
    );
}

#[test]
fn storage_encryption_resolves_aliases_and_is_report_only() {
    let s = enforce("  encryption: {storage: {kmsKeyId: alias/db}}");
    let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let keys = BTreeMap::from([("alias/db".to_string(), arn.to_string())]);
    let ctx = EvalContext {
        now: now(),
        kms_keys: &keys,
    };
    let mut db = instance("a");
    db.attributes.storage_encrypted = true;
    db.attributes.kms_key_arn = Some(arn.into());
    assert_eq!(
        status_of(&evaluate(&s, &db, &ctx), ControlId::StorageEncryption),
        FindingStatus::Compliant
    );
    db.attributes.kms_key_arn = Some("arn:aws:kms:us-east-1:123456789012:key/other".into());
    let evals = evaluate(&s, &db, &ctx);
    assert_eq!(
        status_of(&evals, ControlId::StorageEncryption),
        FindingStatus::ReportOnly
    );
    assert!(evals[0].fixes.is_empty());
    assert!(evals[0].finding.message.contains("snapshot"));
    db.attributes.storage_encrypted = false;
    assert_eq!(
        status_of(&evaluate(&s, &db, &ctx), ControlId::StorageEncryption),
        FindingStatus::ReportOnly
    );
}

fn ingress_finding(s: &DatabaseSecurityPolicySpec, rules: Vec<IngressRule>) -> Evaluation {
    let mut db = instance("a");
    db.security_groups = vec![sg("sg-11111111", rules)];
    let dbs = [db];
    eval_all(s, &dbs)[0]
        .1
        .iter()
        .find(|e| e.finding.control == ControlId::Ingress)
        .cloned()
        .expect("ingress evaluated")
}

fn revokes(s: &DatabaseSecurityPolicySpec, rules: Vec<IngressRule>) -> Vec<IngressRule> {
    let mut db = instance("a");
    db.security_groups = vec![sg("sg-11111111", rules)];
    let p = plan(
        s,
        &eval_all(s, &[db]),
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let mut revoked: Vec<IngressRule> = p
        .actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::RevokeIngress { rule, .. } => Some(rule.clone()),
            _ => None,
        })
        .collect();
    revoked.sort();
    revoked
}

fn sorted(mut rules: Vec<IngressRule>) -> Vec<IngressRule> {
    rules.sort();
    rules
}

fn sg_rule(source: &str) -> IngressRule {
    IngressRule {
        protocol: "tcp".into(),
        from_port: Some(5432),
        to_port: Some(5432),
        source: IngressSource::SecurityGroup(source.into()),
    }
}

#[test]
fn a_policy_allowing_the_internet_in_pieces_allows_nothing() {
    // Specs read without the apiserver's rules, as one stored before them would be.
    for (allowed, rules) in [
        ("[0.0.0.0/1, 128.0.0.0/1]", vec!["0.0.0.0/1", "128.0.0.0/1"]),
        ("['::/1', '8000::/1']", vec!["::/1", "8000::/1"]),
        ("[0.0.0.0/1]", vec!["0.0.0.0/1", "10.1.0.0/16"]),
        ("['8000::/1']", vec!["8000::/1"]),
        ("[52.0.0.0/16, 53.0.0.0/16]", vec!["52.0.0.0/16"]),
    ] {
        let s = enforce(&format!(
            "  network:\n    ingress: {{allowedCidrs: {allowed}}}"
        ));
        let rules: Vec<IngressRule> = rules
            .into_iter()
            .map(|c| cidr_rule("tcp", 5432, 5432, c))
            .collect();
        let e = ingress_finding(&s, rules.clone());
        assert_eq!(e.finding.status, FindingStatus::Error, "{allowed}: {e:?}");
        assert!(
            e.finding.message.contains("more public"),
            "{allowed}: {}",
            e.finding.message
        );
        assert!(e.fixes.is_empty());
        assert!(revokes(&s, rules.clone()).is_empty(), "{allowed}");
        for rule in &rules {
            assert!(
                !super::evaluate::source_allowed(
                    rule,
                    s.posture
                        .network
                        .as_ref()
                        .and_then(|n| n.ingress.as_ref())
                        .expect("ingress")
                ),
                "{allowed} allows {rule:?}"
            );
        }
    }
}

#[test]
fn world_open_rules_in_pieces_are_offending_and_named_as_the_whole_internet() {
    let s = enforce("  network:\n    ingress: {allowedCidrs: [10.0.0.0/8, 52.0.0.0/16]}");
    let rules = vec![
        cidr_rule("tcp", 5432, 5432, "0.0.0.0/1"),
        cidr_rule("-1", -1, -1, "128.0.0.0/1"),
        cidr_rule("tcp", 5432, 5432, "52.0.0.0/17"),
    ];
    let e = ingress_finding(&s, rules.clone());
    assert_eq!(e.finding.status, FindingStatus::NonCompliant);
    assert!(
        e.finding.message.contains("the whole IPv4 Internet"),
        "{}",
        e.finding.message
    );
    assert_eq!(revokes(&s, rules.clone()), sorted(rules[..2].to_vec()));
    // Within the bound, nothing is said about the Internet.
    let e = ingress_finding(&s, vec![cidr_rule("tcp", 5432, 5432, "53.0.0.0/24")]);
    assert_eq!(e.finding.status, FindingStatus::NonCompliant);
    assert!(
        !e.finding.message.contains("Internet"),
        "{}",
        e.finding.message
    );
}

#[test]
fn ingress_without_a_source_is_an_error_unless_deny_all_says_so() {
    let app = sg_rule("sg-0123456789abcdef0");
    let rules = vec![app.clone(), cidr_rule("tcp", 5432, 5432, "10.1.0.0/16")];
    // `ingress: {}` stored before the apiserver rejected it: no revocation of the app's rule.
    for ingress in [
        "{}",
        "{allowedCidrs: [], allowedSecurityGroups: []}",
        "{denyAll: false}",
    ] {
        let s = enforce(&format!("  network:\n    ingress: {ingress}"));
        let e = ingress_finding(&s, rules.clone());
        assert_eq!(e.finding.status, FindingStatus::Error, "{ingress}");
        assert!(
            e.finding.message.contains("denyAll"),
            "{}",
            e.finding.message
        );
        assert!(revokes(&s, rules.clone()).is_empty(), "{ingress}");
    }
    // Both at once is contradictory: nothing is done either.
    let s = enforce(
        "  network:\n    ingress: {denyAll: true, allowedSecurityGroups: [sg-0123456789abcdef0]}",
    );
    assert_eq!(
        ingress_finding(&s, rules.clone()).finding.status,
        FindingStatus::Error
    );
    assert!(revokes(&s, rules.clone()).is_empty());
    // An explicit denyAll revokes every rule reaching the port, the app's included.
    let s = enforce("  network:\n    ingress: {denyAll: true}");
    let e = ingress_finding(&s, rules.clone());
    assert_eq!(e.finding.status, FindingStatus::NonCompliant);
    assert_eq!(e.finding.expected, "port 5432 from no source (denyAll)");
    assert_eq!(revokes(&s, rules.clone()), sorted(rules));
}

#[test]
fn a_posture_that_switches_nothing_on_checks_nothing_and_says_so() {
    for posture in [
        "  transport: {}",
        "  transport: {forceSsl: false}\n  network: {acl: false}",
        "  maintenance: {deletionProtection: false, engineVersionCurrent: false}",
    ] {
        let s = enforce(posture);
        assert!(s.enabled_controls().is_empty(), "{posture}");
        assert!(eval_all(&s, &[instance("a")])[0].1.is_empty(), "{posture}");
    }
}

#[test]
fn enabled_controls_are_exactly_the_controls_evaluated() {
    for control in ControlId::ALL {
        let value = match (control, control.switch()) {
            (_, Switch::Flag) => "true",
            (ControlId::MinTlsVersion, _) => "TLSv1.2",
            (ControlId::CaCertificate, _) => "{}",
            (ControlId::StorageEncryption, _) => "{}",
            (ControlId::LogRetention, _) => "{minimumMinutes: 1440}",
            (ControlId::CloudwatchExports, _) => "[postgresql]",
            (ControlId::Pgaudit, _) => "{classes: [ddl]}",
            (ControlId::PublicAccess, _) => "Forbidden",
            (ControlId::Ingress, _) => "{denyAll: true}",
            (ControlId::BackupRetention, _) => "{minimumDays: 7}",
            (other, _) => panic!("no test value for {other}"),
        };
        let s = enforce(&format!(
            "  {}: {{{}: {value}}}",
            control.group(),
            control.field()
        ));
        assert_eq!(s.enabled_controls(), vec![*control]);
        let evaluated: Vec<ControlId> = eval_all(&s, &[instance("a")])[0]
            .1
            .iter()
            .map(|e| e.finding.control)
            .collect();
        assert_eq!(evaluated, vec![*control]);
        if control.switch() == Switch::Flag {
            let off = enforce(&format!(
                "  {}: {{{}: false}}",
                control.group(),
                control.field()
            ));
            assert!(off.enabled_controls().is_empty(), "{control}");
            assert!(
                eval_all(&off, &[instance("a")])[0].1.is_empty(),
                "{control}"
            );
        }
    }
}

fn acl_entry(n: i32, allow: bool, cidr: &str) -> NaclEntry {
    NaclEntry {
        acl_id: "acl-1".into(),
        rule_number: n,
        protocol: "-1".into(),
        from_port: None,
        to_port: None,
        cidr: cidr.parse().unwrap(),
        allow,
    }
}

fn acl_status(entries: Vec<NaclEntry>) -> (FindingStatus, String) {
    let s = enforce("  network: {acl: true}");
    let mut db = instance("a");
    db.nacl_entries = entries;
    let dbs = [db];
    let evals = eval_all(&s, &dbs);
    let e = evals[0]
        .1
        .iter()
        .find(|e| e.finding.control == ControlId::NetworkAcl)
        .expect("acl evaluated");
    (e.finding.status, e.finding.observed.clone())
}

#[test]
fn nacl_exposure_is_the_union_of_what_its_allow_entries_let_through() {
    let open = FindingStatus::ReportOnly;
    let closed = FindingStatus::Compliant;
    let tcp = |n, allow, cidr: &str, from, to| NaclEntry {
        protocol: "6".into(),
        from_port: Some(from),
        to_port: Some(to),
        ..acl_entry(n, allow, cidr)
    };
    let cases: Vec<(&str, Vec<NaclEntry>, FindingStatus)> = vec![
        (
            "two halves of IPv4",
            vec![
                acl_entry(10, true, "0.0.0.0/1"),
                acl_entry(20, true, "128.0.0.0/1"),
                acl_entry(30, false, "0.0.0.0/0"),
            ],
            open,
        ),
        (
            "two halves of IPv6",
            vec![
                acl_entry(10, true, "::/1"),
                acl_entry(20, true, "8000::/1"),
                acl_entry(30, false, "::/0"),
            ],
            open,
        ),
        (
            "half the Internet",
            vec![acl_entry(10, true, "0.0.0.0/1")],
            open,
        ),
        (
            "a deny of half, then an allow of everything, still opens the other half",
            vec![
                acl_entry(10, false, "0.0.0.0/1"),
                acl_entry(20, true, "0.0.0.0/0"),
            ],
            open,
        ),
        (
            "a deny of a few hosts does not close an allow of everything",
            vec![
                acl_entry(10, false, "203.0.113.0/24"),
                acl_entry(100, true, "0.0.0.0/0"),
            ],
            open,
        ),
        (
            "a deny of everything first closes it",
            vec![
                acl_entry(50, false, "0.0.0.0/0"),
                acl_entry(100, true, "0.0.0.0/0"),
            ],
            closed,
        ),
        (
            "denies of both halves first close it",
            vec![
                acl_entry(10, false, "0.0.0.0/1"),
                acl_entry(11, false, "128.0.0.0/1"),
                acl_entry(100, true, "0.0.0.0/0"),
            ],
            closed,
        ),
        (
            "rule numbers decide, not the order AWS lists them in",
            vec![
                acl_entry(100, true, "0.0.0.0/0"),
                acl_entry(50, false, "0.0.0.0/0"),
            ],
            closed,
        ),
        (
            "private space and one public /16",
            vec![
                acl_entry(10, true, "10.0.0.0/8"),
                acl_entry(20, true, "100.64.0.0/10"),
                acl_entry(30, true, "52.0.0.0/16"),
                acl_entry(40, true, "fd00::/8"),
                acl_entry(50, false, "0.0.0.0/0"),
            ],
            closed,
        ),
        (
            "public space beyond the bound, in pieces",
            vec![
                acl_entry(10, true, "52.0.0.0/16"),
                acl_entry(20, true, "52.1.0.0/24"),
            ],
            open,
        ),
        (
            "an entry for another port does not open the database port",
            vec![tcp(10, true, "0.0.0.0/0", 22, 22)],
            closed,
        ),
        (
            "ephemeral ports cover the database port",
            vec![tcp(10, true, "0.0.0.0/0", 1024, 65535)],
            open,
        ),
        (
            "a deny for another port does not close it",
            vec![
                tcp(10, false, "0.0.0.0/0", 22, 22),
                acl_entry(20, true, "0.0.0.0/0"),
            ],
            open,
        ),
    ];
    for (what, entries, want) in cases {
        let (status, observed) = acl_status(entries);
        assert_eq!(status, want, "{what}: {observed}");
    }
    let (_, observed) = acl_status(vec![
        acl_entry(10, true, "0.0.0.0/1"),
        acl_entry(20, true, "128.0.0.0/1"),
    ]);
    assert_eq!(
        observed,
        "acl-1 opens port 5432 to the whole IPv4 Internet (rule 10 allows 0.0.0.0/1, rule 20 allows 128.0.0.0/1)"
    );
}

#[test]
fn nacl_first_matching_rule_decides() {
    let s = enforce("  network: {acl: true}");
    let entry = |n, allow, cidr: &str| NaclEntry {
        acl_id: "acl-1".into(),
        rule_number: n,
        protocol: "-1".into(),
        from_port: None,
        to_port: None,
        cidr: cidr.parse().unwrap(),
        allow,
    };
    let mut db = instance("a");
    db.nacl_entries = vec![entry(100, true, "0.0.0.0/0")];
    assert_eq!(
        status_of(&eval_all(&s, &[db.clone()])[0].1, ControlId::NetworkAcl),
        FindingStatus::ReportOnly
    );
    db.nacl_entries.push(entry(50, false, "0.0.0.0/0"));
    assert_eq!(
        status_of(&eval_all(&s, &[db])[0].1, ControlId::NetworkAcl),
        FindingStatus::Compliant
    );
}

#[test]
fn engine_version_currency_is_report_only() {
    let s = enforce("  maintenance: {engineVersionCurrent: true}");
    let mut db = instance("a");
    db.newest_minor_version = Some("16.10".into());
    let evals = eval_all(&s, std::slice::from_ref(&db));
    assert_eq!(
        status_of(&evals[0].1, ControlId::EngineVersionCurrent),
        FindingStatus::ReportOnly
    );
    assert!(
        plan(
            &s,
            &evals,
            PlanContext {
                now: now(),
                fleet: &EMPTY
            }
        )
        .is_empty()
    );
}

#[test]
fn log_statement_that_logs_passwords_is_lowered_to_none() {
    let s = enforce("  logging: {noStatementSecrets: true}");
    for (value, expected) in [
        ("all", FindingStatus::NonCompliant),
        ("ddl", FindingStatus::NonCompliant),
        ("mod", FindingStatus::NonCompliant),
        ("none", FindingStatus::Compliant),
    ] {
        let mut db = instance("a");
        let mut g = group("custom", "postgres16", false);
        g.parameters.get_mut("log_statement").unwrap().value = Some(value.into());
        db.parameter_group = Some(g);
        assert_eq!(
            status_of(&eval_all(&s, &[db])[0].1, ControlId::NoStatementSecrets),
            expected,
            "{value}"
        );
    }
}

#[test]
fn report_marks_remediations_failures_and_counts() {
    let s = enforce("  auth: {iam: true}\n  maintenance: {deletionProtection: true}");
    let dbs = [instance("a"), instance("b")];
    let evaluated = eval_all(&s, &dbs);
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert_eq!(p.actions.len(), 2);
    let outcomes = vec![
        Outcome::Succeeded,
        Outcome::Failed(Failure::new(
            "ModifyDBParameterGroup",
            "AccessDenied",
            "not authorized",
        )),
    ];
    let (res, summary) = results(&evaluated, &p, &outcomes);
    assert_eq!(summary.selected, 2);
    assert_eq!(summary.remediated, 1);
    assert_eq!(summary.failed, 1);
    assert_eq!(summary.compliant, 1);
    let failed = res.iter().find(|r| r.id == "b").unwrap();
    assert!(!failed.compliant);
    assert!(
        failed
            .findings
            .iter()
            .all(|f| f.status == FindingStatus::Error && f.message.contains("AccessDenied"))
    );
    // Non-compliant databases are listed first.
    assert_eq!(res[0].id, "b");
}

#[test]
fn deferred_and_refused_remediations_are_reported_with_their_reason() {
    let s = enforce("  transport: {forceSsl: true}");
    let on_pg14 = |id: &str| {
        let mut db = instance(id);
        db.parameter_group = Some(group("default.postgres14", "postgres14", false));
        db
    };
    let dbs = [on_pg14("a"), on_pg14("b")];
    let evaluated = eval_all(&s, &dbs);
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert_eq!(p.actions.len(), 2);
    assert!(
        p.actions
            .iter()
            .all(|a| matches!(a.kind, ActionKind::MoveToManagedGroup { .. }))
    );
    let outcomes = vec![
        Outcome::Deferred {
            reason: "QuotaExceeded: the quota is used up".into(),
        },
        Outcome::Failed(Failure::refused(
            "ModifyDBInstance",
            super::failure::code::REFUSED_MANAGED_GROUP,
            "pgbaseline-x exists but it was not created by pgbaseline",
        )),
    ];
    let (res, summary) = results(&evaluated, &p, &outcomes);
    assert_eq!(summary.deferred, 1);
    assert_eq!(summary.failed, 1);
    let deferred = res.iter().find(|r| r.id == "a").unwrap();
    assert_eq!(deferred.findings[0].status, FindingStatus::NonCompliant);
    assert!(deferred.findings[0].message.contains("QuotaExceeded"));
    let refused = res.iter().find(|r| r.id == "b").unwrap();
    assert_eq!(refused.findings[0].status, FindingStatus::Error);
    // A refusal is pgbaseline's decision, not a failed AWS call.
    assert!(
        refused.findings[0]
            .message
            .starts_with("not remediated: pgbaseline-x"),
        "{}",
        refused.findings[0].message
    );
}

#[test]
fn bounded_status_keeps_the_summary_exact() {
    let s = spec("selector: {tags: {env: prod}}\nposture:\n  auth: {iam: true}");
    let dbs: Vec<Database> = (0..120).map(|i| instance(&format!("db{i:03}"))).collect();
    let evaluated = eval_all(&s, &dbs);
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let (res, summary) = results(&evaluated, &p, &[]);
    assert_eq!(summary.selected, 120);
    assert_eq!(summary.non_compliant, 120);
    let (listed, omitted) = super::report::bounded(res);
    assert_eq!(listed.len(), MAX_DATABASES_IN_STATUS);
    assert_eq!(omitted, 70);
    assert_eq!(listed[0].id, "db000");
}

#[test]
fn a_static_parameter_in_a_catalogue_of_dynamic_ones_is_flagged_by_apply_type() {
    // Apply type comes from the model (the engine catalogue), never from the value.
    let mut g = group("custom", "postgres16", false);
    g.parameters.get_mut("rds.force_ssl").unwrap().apply_type = ApplyType::Static;
    let mut db = instance("a");
    g.parameters.get_mut("rds.force_ssl").unwrap().value = Some("0".into());
    db.parameter_group = Some(g);
    let s = enforce("  transport: {forceSsl: true}");
    let p = plan(
        &s,
        &eval_all(&s, &[db]),
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    assert!(
        matches!(&p.actions[0].kind, ActionKind::SetParameters { changes, .. } if changes[0].method == ApplyMethod::PendingReboot)
    );
}

#[test]
fn fleet_lookup_finds_by_kind_and_id() {
    let fleet = Fleet {
        databases: vec![instance("a"), cluster("a", &["a-1"])],
        ..Fleet::default()
    };
    assert_eq!(
        fleet.get(DatabaseKind::Cluster, "a").map(|d| d.kind),
        Some(DatabaseKind::Cluster)
    );
    assert!(fleet.get(DatabaseKind::Instance, "zzz").is_none());
}

#[test]
fn action_descriptions_are_sentences_not_debug_output() {
    let s = enforce(
        "  auth: {iam: true}\n  logging: {cloudwatchExports: [postgresql, upgrade]}\n  maintenance: {deletionProtection: true}",
    );
    let p = plan(
        &s,
        &eval_all(&s, &[instance("orders")]),
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let text: Vec<String> = p.actions.iter().map(|a| a.kind.describe()).collect();
    assert_eq!(
        text,
        [
            "instance orders: turn on IAM database authentication; export postgresql, upgrade logs to CloudWatch; turn on deletion protection"
        ]
    );
}

#[test]
fn a_failed_read_makes_error_findings_of_the_controls_that_need_it_only() {
    let s = enforce(
        "  transport: {forceSsl: true, caCertificate: {allowed: [rds-ca-rsa2048-g1]}}\n  encryption: {storage: {kmsKeyId: alias/rds}}\n  logging: {connections: true}\n  auth: {iam: true}\n  network: {publicAccess: Forbidden, ingress: {allowedCidrs: [10.0.0.0/8]}, acl: true}\n  maintenance: {deletionProtection: true, engineVersionCurrent: true}",
    );
    let why = "could not read DB parameter group pg13: DescribeEngineDefaultParameters: InvalidParameterValue: Invalid DB parameter group family: postgres13 (region us-east-1, endpoint https://rds.us-east-1.amazonaws.com)";
    let mut unread = instance("unread");
    unread.parameter_group = None;
    unread.read_errors.parameters = Some(why.into());
    unread.read_errors.security_groups = Some("could not read sg".into());
    unread.read_errors.network_acls = Some("could not read nacl".into());
    unread.read_errors.kms_aliases = Some("could not read aliases".into());
    unread.read_errors.certificates = Some("could not read certificates".into());
    unread.read_errors.engine_versions = Some("could not read versions".into());
    let dbs = [unread, instance("fine")];
    let evaluated = eval_all(&s, &dbs);
    let (_, unread) = &evaluated[0];
    for e in unread {
        let f = &e.finding;
        match f.control {
            ControlId::IamAuth | ControlId::DeletionProtection => {
                assert_eq!(f.status, FindingStatus::NonCompliant, "{f:?}")
            }
            ControlId::PublicAccess => assert_eq!(f.status, FindingStatus::Compliant, "{f:?}"),
            _ => {
                assert_eq!(f.status, FindingStatus::Error, "{f:?}");
                assert!(
                    f.message.starts_with("not evaluated: could not read"),
                    "{f:?}"
                );
                assert!(e.fixes.is_empty());
            }
        }
    }
    let ssl = unread
        .iter()
        .find(|e| e.finding.control == ControlId::ForceSsl)
        .expect("forceSsl");
    assert_eq!(ssl.finding.message, format!("not evaluated: {why}"));
    // The other database is evaluated as usual.
    assert_eq!(
        status_of(&evaluated[1].1, ControlId::ForceSsl),
        FindingStatus::Compliant
    );
    assert_eq!(
        status_of(&evaluated[1].1, ControlId::Ingress),
        FindingStatus::Compliant
    );
    // Only the parameter controls' plan is lost: the attribute fixes still go ahead.
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let for_unread: Vec<&ActionKind> = p
        .actions
        .iter()
        .filter(|a| a.causes.iter().any(|c| c.database.id == "unread"))
        .map(|a| &a.kind)
        .collect();
    assert!(
        !for_unread.is_empty()
            && for_unread
                .iter()
                .all(|k| matches!(k, ActionKind::ModifyAttributes { .. })),
        "{for_unread:?}"
    );
    // A key given by its ARN needs no aliases.
    let by_arn =
        enforce("  encryption: {storage: {kmsKeyId: 'arn:aws:kms:us-east-1:123456789012:key/k'}}");
    let evaluated = eval_all(&by_arn, &dbs[..1]);
    assert_ne!(
        status_of(&evaluated[0].1, ControlId::StorageEncryption),
        FindingStatus::Error
    );
}

#[test]
fn findings_name_the_aurora_member_they_are_about_and_are_never_empty_or_debug() {
    let s = enforce(
        "  transport: {forceSsl: true, caCertificate: {allowed: [rds-ca-rsa4096-g1]}}\n  encryption: {storage: {}}\n  logging: {retention: {minimumMinutes: 10080}, cloudwatchExports: [postgresql], connections: true, noStatementSecrets: true}\n  audit: {pgaudit: {classes: [ddl]}}\n  auth: {iam: true, managedMasterPassword: true, passwordEncryption: true}\n  network: {publicAccess: Forbidden, ingress: {allowedCidrs: [10.0.0.0/8]}, acl: true}\n  maintenance: {autoMinorVersionUpgrade: true, deletionProtection: true, backupRetention: {minimumDays: 7}, engineVersionCurrent: true}",
    );
    let mut c = cluster("ledger", &["ledger-1", "ledger-2", "ledger-3"]);
    c.members[1].publicly_accessible = true;
    c.members[2].auto_minor_version_upgrade = false;
    c.members[2].apply_status = ApplyStatus::PendingReboot;
    let mut unread = instance("unread");
    unread.parameter_group = None;
    unread.read_errors.parameters = Some("could not read it".into());
    let dbs = [c, instance("plain"), unread];
    let evaluated = eval_all(&s, &dbs);
    let finding = |control: ControlId| {
        evaluated[0]
            .1
            .iter()
            .find(|e| e.finding.control == control)
            .map(|e| e.finding.clone())
            .expect("evaluated")
    };
    let public = finding(ControlId::PublicAccess);
    assert!(public.message.contains("member(s) ledger-2 "), "{public:?}");
    assert!(!public.message.contains("ledger-1"), "{public:?}");
    let minor = finding(ControlId::AutoMinorVersionUpgrade);
    assert_eq!(minor.observed, "off on ledger-3");
    assert!(minor.message.contains("member(s) ledger-3"), "{minor:?}");
    let retention = finding(ControlId::LogRetention);
    assert_eq!(retention.status, FindingStatus::NonCompliant);
    let ssl = finding(ControlId::ForceSsl);
    assert_eq!(ssl.status, FindingStatus::NonCompliant, "{ssl:?}");
    // Aurora defaults to rds.force_ssl 0; once the value is right it waits for ledger-3.
    let mut set = dbs[0].clone();
    if let Some(g) = set.parameter_group.as_mut()
        && let Some(p) = g.parameters.get_mut("rds.force_ssl")
    {
        p.value = Some("1".into());
    }
    let set = [set];
    let pending = eval_all(&s, &set);
    let ssl = &pending[0]
        .1
        .iter()
        .find(|e| e.finding.control == ControlId::ForceSsl)
        .expect("ssl")
        .finding;
    assert_eq!(ssl.status, FindingStatus::PendingReboot);
    assert!(
        ssl.message
            .ends_with("takes effect after member ledger-3 reboots"),
        "{ssl:?}"
    );
    // Every finding says something, for people.
    for (db, evaluations) in evaluated.iter().chain(pending.iter()) {
        for e in evaluations {
            let f = &e.finding;
            assert!(!f.message.trim().is_empty(), "{}: {f:?}", db.id);
            assert!(!f.observed.trim().is_empty(), "{}: {f:?}", db.id);
            for debug in ["Some(", "([", "\"]", "{ ", "::"] {
                assert!(
                    !f.message.contains(debug) && !f.observed.contains(debug),
                    "{}: {debug} in {f:?}",
                    db.id
                );
            }
        }
    }
    // A restart the reboot policy does not allow is explained with the policy's own words.
    let p = plan(
        &s,
        &evaluated,
        PlanContext {
            now: now(),
            fleet: &EMPTY,
        },
    );
    let ca_note = p
        .notes
        .values()
        .find(|n| n.contains("restart"))
        .expect("a CA note");
    assert!(ca_note.contains("remediation.reboot is Never"), "{ca_note}");
}
