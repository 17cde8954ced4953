//! Property tests of the safety invariants (DESIGN.md §3), over random fleets and policies.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use crate::api::*;

use super::evaluate::{AttributeChange, EvalContext, Evaluation, Target, evaluate};
use super::model::{
    ApplyStatus, Database, Fleet, IngressRule, IngressSource, ParameterGroup, SecurityGroup,
};
use super::plan::{ActionKind, Plan, PlanContext, plan};
use super::select::selects;
use super::testing::{cluster, group, instance};
use super::values::is_tightening;

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 5, 10, 0).unwrap() // inside the fixtures' window
}

// ---------------------------------------------------------------- generators

fn opt<T: Clone + std::fmt::Debug + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![Just(None), s.prop_map(Some)].boxed()
}

fn group_strategy(index: usize) -> impl Strategy<Value = ParameterGroup> {
    let names = [
        "default.postgres14",
        "default.postgres16",
        "team-a",
        "team-b",
        "pgbaseline-db0-postgres16",
    ];
    let name = names[index % names.len()];
    let family = if name.ends_with("14") {
        "postgres14"
    } else {
        "postgres16"
    };
    (
        prop::sample::select(vec!["0", "1", "on", "off"]),
        opt(prop::sample::select(vec![
            "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3",
        ])),
        prop::sample::select(vec!["1440", "4320", "10080"]),
        prop::sample::select(vec!["0", "1", "on"]),
        prop::sample::select(vec!["none", "ddl", "mod", "all"]),
        prop::sample::select(vec![
            "pg_stat_statements",
            "pg_stat_statements, pgaudit",
            "pgaudit",
            "auto_explain",
        ]),
        prop::sample::select(vec!["none", "ddl", "all", "all,-ddl", "read, write"]),
        opt(Just("rds_pgaudit")),
        prop::sample::select(vec!["md5", "scram-sha-256"]),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            move |(ssl, tls, ret, conn, stmt, spl, pglog, role, pwd, pending)| {
                let mut g = group(name, family, false);
                let mut set = |k: &str, v: Option<&str>| {
                    if let Some(p) = g.parameters.get_mut(k) {
                        p.value = v.map(String::from);
                    }
                };
                set("rds.force_ssl", Some(ssl));
                set("ssl_min_protocol_version", tls);
                set("rds.log_retention_period", Some(ret));
                set("log_connections", Some(conn));
                set("log_disconnections", Some(conn));
                set("log_statement", Some(stmt));
                set("shared_preload_libraries", Some(spl));
                set("pgaudit.log", Some(pglog));
                set("pgaudit.role", role);
                set("password_encryption", Some(pwd));
                if name.starts_with("default.") {
                    // AWS's own groups hold engine defaults only.
                    g = group(name, family, false);
                }
                if pending {
                    g.apply_status = ApplyStatus::PendingReboot;
                }
                g
            },
        )
}

fn rule_strategy() -> impl Strategy<Value = IngressRule> {
    (
        prop::sample::select(vec!["tcp", "-1", "udp"]),
        prop::sample::select(vec![(5432, 5432), (0, 65535), (22, 22), (5000, 6000)]),
        prop::sample::select(vec![
            "0.0.0.0/0",
            "::/0",
            "10.1.0.0/16",
            "192.168.1.0/24",
            "sg-0123456789abcdef0",
            "sg-99999999",
        ]),
    )
        .prop_map(|(protocol, (from, to), source)| IngressRule {
            protocol: protocol.into(),
            from_port: Some(from),
            to_port: Some(to),
            source: if source.starts_with("sg-") {
                IngressSource::SecurityGroup(source.into())
            } else {
                IngressSource::Cidr(source.parse().expect("valid cidr"))
            },
        })
}

#[derive(Clone, Debug)]
struct DbSeed {
    cluster: bool,
    group: usize,
    prod: bool,
    sgs: Vec<usize>,
    attrs: (bool, bool, bool, bool, u32, bool, bool),
}

fn db_seed() -> impl Strategy<Value = DbSeed> {
    (
        prop::bool::weighted(0.3),
        0usize..5,
        prop::bool::weighted(0.7),
        prop::collection::vec(0usize..3, 0..3),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0u32..36,
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(|(cluster, group, prod, sgs, attrs)| DbSeed {
            cluster,
            group,
            prod,
            sgs,
            attrs,
        })
}

fn fleet_strategy() -> impl Strategy<Value = Fleet> {
    (
        prop::collection::vec(db_seed(), 1..6),
        (
            group_strategy(0),
            group_strategy(1),
            group_strategy(2),
            group_strategy(3),
            group_strategy(4),
        ),
        prop::collection::vec(prop::collection::vec(rule_strategy(), 0..4), 3),
    )
        .prop_map(|(seeds, groups, sg_rules)| {
            let groups = [groups.0, groups.1, groups.2, groups.3, groups.4];
            let mut databases: Vec<Database> = Vec::new();
            for (i, seed) in seeds.iter().enumerate() {
                let id = format!("db{i}");
                let mut db = if seed.cluster {
                    let mut c = cluster(&id, &[&format!("{id}-a"), &format!("{id}-b")]);
                    c.members[1].publicly_accessible = seed.attrs.0;
                    c.members[0].auto_minor_version_upgrade = seed.attrs.3;
                    let mut g = groups[seed.group].clone();
                    g.cluster = true;
                    g.family = "aurora-postgresql16".into();
                    if g.name.starts_with("default.") {
                        g = super::testing::group(
                            "default.aurora-postgresql16",
                            "aurora-postgresql16",
                            true,
                        );
                    } else if g.name.starts_with("pgbaseline-") {
                        g.name = "pgbaseline-db0-aurora-postgresql16".into();
                    }
                    let pending = g.apply_status;
                    for m in &mut c.members {
                        m.apply_status = pending;
                    }
                    c.parameter_group = Some(g);
                    c
                } else {
                    let mut d = instance(&id);
                    d.parameter_group = Some(groups[seed.group].clone());
                    d.attributes.publicly_accessible = seed.attrs.0;
                    d.attributes.auto_minor_version_upgrade = seed.attrs.3;
                    d
                };
                if let Some(g) = db.parameter_group.as_mut()
                    && g.family == "postgres14"
                {
                    db.engine_version = "14.9".into();
                }
                db.attributes.iam_auth = seed.attrs.1;
                db.attributes.deletion_protection = seed.attrs.2;
                db.attributes.backup_retention_days = seed.attrs.4;
                db.attributes.storage_encrypted = seed.attrs.5;
                db.attributes.managed_master_password = seed.attrs.6;
                if seed.prod {
                    db.tags.insert("env".into(), "prod".into());
                }
                let mut sgs: Vec<usize> = seed.sgs.clone();
                sgs.sort_unstable();
                sgs.dedup();
                db.security_groups = sgs
                    .iter()
                    .map(|s| SecurityGroup {
                        id: format!("sg-0000000{s}"),
                        rules: sg_rules[*s].clone(),
                        shared_with: Default::default(),
                    })
                    .collect();
                databases.push(db);
            }
            // Sharers, as the inventory computes them.
            let snapshot = databases.clone();
            for db in &mut databases {
                if let Some(g) = db.parameter_group.as_mut() {
                    g.shared_with = snapshot
                        .iter()
                        .filter(|o| {
                            o.id != db.id
                                && o.kind == db.kind
                                && o.parameter_group
                                    .as_ref()
                                    .is_some_and(|og| og.name == g.name)
                        })
                        .map(|o| o.id.clone())
                        .collect::<Vec<_>>()
                        .into();
                }
                for sg in &mut db.security_groups {
                    sg.shared_with = snapshot
                        .iter()
                        .filter(|o| {
                            o.id != db.id && o.security_groups.iter().any(|s| s.id == sg.id)
                        })
                        .map(|o| o.id.clone())
                        .collect::<Vec<_>>()
                        .into();
                }
            }
            Fleet {
                databases,
                ..Fleet::default()
            }
        })
}

fn policy_strategy() -> impl Strategy<Value = DatabaseSecurityPolicySpec> {
    (
        (
            any::<bool>(),
            opt(prop::sample::select(vec![
                TlsVersion::Tls12,
                TlsVersion::Tls13,
            ])),
            opt(1440u32..=10080),
            any::<bool>(),
            any::<bool>(),
        ),
        (
            opt(prop::sample::subsequence(
                vec![
                    PgauditClass::Ddl,
                    PgauditClass::Role,
                    PgauditClass::Write,
                    PgauditClass::All,
                ],
                1..3,
            )),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            opt(1u32..=35),
            any::<bool>(),
            any::<bool>(),
        ),
        (
            prop::sample::select(vec![Mode::Audit, Mode::Enforce]),
            prop::sample::select(vec![
                RebootPolicy::Never,
                RebootPolicy::MaintenanceWindow,
                RebootPolicy::Immediately,
            ]),
            prop::sample::select(vec![
                ParameterGroupStrategy::Auto,
                ParameterGroupStrategy::Dedicated,
            ]),
            any::<bool>(),
            opt(prop::sample::select(vec![
                "auth.iam",
                "network.ingress",
                "transport.forceSsl",
            ])),
        ),
    )
        .prop_map(|(t, a, m, r)| {
            let (force_ssl, min_tls, retention, connections, secrets) = t;
            let (pgaudit, iam, managed, pwd, public) = a;
            let (ingress, deletion, backup, minor, exports) = m;
            let (mode, reboot, strategy, rotation, audit_override) = r;
            let yes = |b: bool| b.then_some(true);
            let mut control_modes = BTreeMap::new();
            if let Some(id) = audit_override {
                control_modes.insert(id.to_string(), Mode::Audit);
            }
            DatabaseSecurityPolicySpec {
                selector: Selector {
                    tags: Some(BTreeMap::from([("env".into(), "prod".into())])),
                    engines: vec![Engine::Postgres, Engine::AuroraPostgresql],
                    ..Selector::default()
                },
                mode,
                control_modes,
                posture: Posture {
                    transport: Some(Transport {
                        force_ssl: yes(force_ssl),
                        min_tls_version: min_tls,
                        ca_certificate: None,
                    }),
                    encryption: None,
                    logging: Some(Logging {
                        retention: retention
                            .map(|minimum_minutes| LogRetention { minimum_minutes }),
                        cloudwatch_exports: exports
                            .then(|| vec![LogExport::Postgresql, LogExport::Upgrade]),
                        connections: yes(connections),
                        no_statement_secrets: yes(secrets),
                    }),
                    audit: Some(Audit {
                        pgaudit: pgaudit.map(|classes| Pgaudit {
                            classes,
                            role: None,
                        }),
                    }),
                    auth: Some(Auth {
                        iam: yes(iam),
                        managed_master_password: yes(managed),
                        password_encryption: yes(pwd),
                    }),
                    network: Some(Network {
                        public_access: public.then_some(PublicAccess::Forbidden),
                        ingress: ingress.then(|| Ingress {
                            allowed_security_groups: vec!["sg-0123456789abcdef0".into()],
                            allowed_cidrs: vec!["10.0.0.0/8".into()],
                            deny_all: false,
                        }),
                        acl: None,
                    }),
                    maintenance: Some(Maintenance {
                        auto_minor_version_upgrade: yes(minor),
                        deletion_protection: yes(deletion),
                        backup_retention: backup
                            .map(|minimum_days| BackupRetention { minimum_days }),
                        engine_version_current: None,
                    }),
                    database: None,
                },
                remediation: Remediation {
                    reboot,
                    parameter_group_strategy: strategy,
                    allow_master_password_rotation: rotation,
                    allow_force_ssl_with_plaintext_clients: false,
                },
                account_ref: None,
                resync_seconds: 60,
            }
        })
}

// ---------------------------------------------------------------- helpers

fn evaluate_selected<'a>(
    spec: &DatabaseSecurityPolicySpec,
    fleet: &'a Fleet,
) -> Vec<(&'a Database, Vec<Evaluation>)> {
    let ctx = EvalContext {
        now: now(),
        kms_keys: &fleet.kms_keys,
    };
    fleet
        .databases
        .iter()
        .filter(|d| selects(&spec.selector, d))
        .map(|d| (d, evaluate(spec, d, &ctx)))
        .collect()
}

fn plan_for(spec: &DatabaseSecurityPolicySpec, fleet: &Fleet) -> Plan {
    plan(
        spec,
        &evaluate_selected(spec, fleet),
        PlanContext { now: now(), fleet },
    )
}

fn groups_by_name(fleet: &Fleet) -> BTreeMap<(bool, String), (ParameterGroup, Vec<&Database>)> {
    let mut out: BTreeMap<(bool, String), (ParameterGroup, Vec<&Database>)> = BTreeMap::new();
    for db in &fleet.databases {
        if let Some(g) = &db.parameter_group {
            out.entry((g.cluster, g.name.clone()))
                .or_insert_with(|| (g.clone(), Vec::new()))
                .1
                .push(db);
        }
    }
    out
}

/// Every action is safe: no default group touched, nothing outside the selection changed,
/// nothing loosened.
fn assert_safe(
    spec: &DatabaseSecurityPolicySpec,
    fleet: &Fleet,
    plan: &Plan,
) -> Result<(), TestCaseError> {
    let selected: Vec<&Database> = fleet
        .databases
        .iter()
        .filter(|d| selects(&spec.selector, d))
        .collect();
    let is_selected_instance = |id: &str| {
        selected.iter().any(|d| {
            (d.kind == DatabaseKind::Instance && d.id == id) || d.members.iter().any(|m| m.id == id)
        })
    };
    let groups = groups_by_name(fleet);
    for action in &plan.actions {
        prop_assert!(
            action.within_catalogue().is_ok(),
            "{:?}",
            action.within_catalogue()
        );
        match &action.kind {
            ActionKind::SetParameters {
                group,
                cluster,
                changes,
            } => {
                prop_assert!(
                    !group.starts_with("default."),
                    "modifies default group {group}"
                );
                prop_assert!(changes.len() <= 20);
                let existing = groups.get(&(*cluster, group.clone()));
                if let Some((_, attached)) = existing {
                    for db in attached {
                        prop_assert!(
                            selects(&spec.selector, db),
                            "group {group} also serves unselected {}",
                            db.id
                        );
                    }
                }
                let baseline = existing
                    .map(|(g, _)| g.clone())
                    .ok_or_else(|| TestCaseError::fail(format!("set on unknown group {group}")))?;
                for change in changes {
                    let old = baseline.value(&change.name);
                    prop_assert!(
                        is_tightening(&change.name, old, &change.value),
                        "{} {:?} -> {} loosens",
                        change.name,
                        old,
                        change.value
                    );
                }
            }
            ActionKind::MoveToManagedGroup {
                database,
                current,
                changes,
                ..
            } => {
                let db = selected
                    .iter()
                    .find(|d| d.kind == database.kind && d.id == database.id)
                    .ok_or_else(|| {
                        TestCaseError::fail(format!("moves unselected {}", database.id))
                    })?;
                let group = db
                    .parameter_group
                    .as_ref()
                    .ok_or_else(|| TestCaseError::fail("move without a group".to_string()))?;
                prop_assert_eq!(&group.name, current);
                prop_assert!(changes.len() <= 20 * 20);
                for change in changes {
                    let old = group.value(&change.name);
                    prop_assert!(
                        is_tightening(&change.name, old, &change.value),
                        "{} {:?} -> {} loosens",
                        change.name,
                        old,
                        change.value
                    );
                }
            }
            ActionKind::ModifyAttributes { target, changes } => {
                let db = match target {
                    Target::Instance(id) => selected.iter().find(|d| {
                        (d.kind == DatabaseKind::Instance && &d.id == id)
                            || d.members.iter().any(|m| &m.id == id)
                    }),
                    Target::Cluster(id) => selected
                        .iter()
                        .find(|d| d.kind == DatabaseKind::Cluster && &d.id == id),
                };
                let db = db.ok_or_else(|| {
                    TestCaseError::fail(format!("modifies unselected {target:?}"))
                })?;
                for change in changes {
                    if let AttributeChange::RaiseBackupRetention(days) = change {
                        prop_assert!(*days > db.attributes.backup_retention_days);
                    }
                    if *change == AttributeChange::EnableManagedMasterPassword {
                        prop_assert!(spec.remediation.allow_master_password_rotation);
                    }
                }
            }
            ActionKind::RevokeIngress { security_group, .. } => {
                for db in fleet
                    .databases
                    .iter()
                    .filter(|d| d.security_groups.iter().any(|s| &s.id == security_group))
                {
                    prop_assert!(
                        selects(&spec.selector, db),
                        "revoke on {security_group} shared with unselected {}",
                        db.id
                    );
                }
            }
            ActionKind::Reboot { instance } => {
                prop_assert!(
                    is_selected_instance(instance),
                    "reboots unselected {instance}"
                );
                prop_assert!(spec.remediation.reboot != RebootPolicy::Never);
            }
        }
    }
    Ok(())
}

/// After a plan is applied, each Enforce-mode finding is compliant, pending a reboot, report
/// only, or a violation the planner deliberately left with a note.
fn assert_settled(spec: &DatabaseSecurityPolicySpec, fleet: &Fleet) -> Result<(), TestCaseError> {
    let again = plan_for(spec, fleet);
    prop_assert!(
        again.actions.is_empty(),
        "second plan is not empty: {:#?}",
        again.actions
    );
    for (db, evaluations) in evaluate_selected(spec, fleet) {
        for e in evaluations {
            if spec.mode_for(e.finding.control) != Mode::Enforce
                || e.finding.status != FindingStatus::NonCompliant
            {
                continue;
            }
            let cause = super::plan::Cause {
                database: super::plan::DbKey::of(db),
                control: e.finding.control,
            };
            prop_assert!(
                again.notes.contains_key(&cause),
                "{} {:?} still non-compliant without a note",
                db.id,
                e.finding
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn audit_plans_nothing(fleet in fleet_strategy(), mut spec in policy_strategy()) {
        spec.mode = Mode::Audit;
        spec.control_modes.clear();
        prop_assert!(plan_for(&spec, &fleet).actions.is_empty());
    }

    #[test]
    fn actions_never_loosen_touch_defaults_or_leave_the_selection(fleet in fleet_strategy(), spec in policy_strategy()) {
        let p = plan_for(&spec, &fleet);
        assert_safe(&spec, &fleet, &p)?;
    }

    #[test]
    fn applying_a_plan_converges(fleet in fleet_strategy(), mut spec in policy_strategy()) {
        spec.mode = Mode::Enforce;
        let p = plan_for(&spec, &fleet);
        let mut after = fleet.clone();
        super::simulate::apply(&mut after, &p);
        assert_settled(&spec, &after).map_err(|e| TestCaseError::fail(format!("{e}\nfirst plan: {:#?}", p.actions)))?;
    }

    #[test]
    fn overlapping_policies_converge_in_either_order(fleet in fleet_strategy(), mut a in policy_strategy(), mut b in policy_strategy()) {
        a.mode = Mode::Enforce;
        b.mode = Mode::Enforce;
        a.control_modes.clear();
        b.control_modes.clear();
        for order in [[&a, &b], [&b, &a]] {
            let mut state = fleet.clone();
            // Each policy only raises settings, so alternating them reaches a fixpoint quickly;
            // a reboot one policy allows may be what the other was waiting for.
            for _round in 0..3 {
                for policy in order {
                    let p = plan_for(policy, &state);
                    assert_safe(policy, &state, &p)?;
                    super::simulate::apply(&mut state, &p);
                }
            }
            assert_settled(order[0], &state)?;
            assert_settled(order[1], &state)?;
        }
    }
}

#[test]
fn generators_produce_selected_and_unselected_databases() {
    // Guards the generators themselves: the properties above are vacuous without both kinds.
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut kinds = BTreeSet::new();
    for _ in 0..200 {
        let fleet = fleet_strategy()
            .new_tree(&mut runner)
            .expect("tree")
            .current();
        for db in &fleet.databases {
            kinds.insert((db.kind, db.tags.contains_key("env")));
        }
    }
    assert_eq!(kinds.len(), 4, "{kinds:?}");
}

// ---------------------------------------------------------------- exposure

/// Networks biased towards the interesting ones: the halves and quarters of the Internet, private
/// and public ranges of every size, both families.
fn net_strategy() -> impl Strategy<Value = ipnet::IpNet> {
    let v4 = (
        prop_oneof![
            Just(0u32),
            Just(0x8000_0000),
            Just(0x0a00_0000), // 10.0.0.0
            Just(0xac10_0000), // 172.16.0.0
            Just(0x6440_0000), // 100.64.0.0
            Just(0x3400_0000), // 52.0.0.0
            any::<u32>(),
        ],
        0u8..=32,
    )
        .prop_map(|(addr, prefix)| {
            ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(addr), prefix)
                    .expect("prefix <= 32")
                    .trunc(),
            )
        });
    let v6 = (
        prop_oneof![
            Just(0u128),
            Just(1u128 << 127),
            Just(0xfd00u128 << 112),     // fd00::
            Just(0x2001_0db8u128 << 96), // 2001:db8::
            any::<u128>(),
        ],
        prop_oneof![0u8..=128, 40u8..=72],
    )
        .prop_map(|(addr, prefix)| {
            ipnet::IpNet::V6(
                ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(addr), prefix)
                    .expect("prefix <= 128")
                    .trunc(),
            )
        });
    prop_oneof![3 => v4, 2 => v6]
}

/// A rule inside `net` (a longer prefix of it) or `net` itself.
fn subnet_of(net: ipnet::IpNet, extra: u8) -> ipnet::IpNet {
    let prefix = net
        .prefix_len()
        .saturating_add(extra)
        .min(net.max_prefix_len());
    ipnet::IpNet::new(net.network(), prefix).map_or(net, |n| n.trunc())
}

fn cidr_rule(net: ipnet::IpNet) -> IngressRule {
    IngressRule {
        protocol: "tcp".into(),
        from_port: Some(5432),
        to_port: Some(5432),
        source: IngressSource::Cidr(net),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Whatever a policy lists (even a list the apiserver would reject, as a policy stored before
    /// the rule), no security-group rule beyond the bound is ever judged allowed, and the rules
    /// judged allowed together never open more public space than the bound.
    #[test]
    fn no_rule_beyond_the_bound_is_ever_allowed(
        allowed in prop::collection::vec(net_strategy(), 0..6),
        extra in prop::collection::vec(net_strategy(), 0..6),
        deeper in prop::collection::vec(0u8..20, 6),
    ) {
        use super::exposure::{Exposure, Family, PUBLIC_BUDGET, budget_addresses, weight};
        let ingress = Ingress {
            allowed_security_groups: vec![],
            allowed_cidrs: allowed.iter().map(|n| n.to_string()).collect(),
            deny_all: false,
        };
        // Rules: the allowed networks themselves, pieces of them, and unrelated networks.
        let mut rules: Vec<IngressRule> = Vec::new();
        for (i, net) in allowed.iter().enumerate() {
            rules.push(cidr_rule(*net));
            rules.push(cidr_rule(subnet_of(*net, deeper[i % deeper.len()])));
        }
        rules.extend(extra.iter().map(|n| cidr_rule(*n)));
        let mut exposed = Exposure::default();
        for rule in &rules {
            let IngressSource::Cidr(net) = &rule.source else { continue };
            if super::evaluate::source_allowed(rule, &ingress) {
                prop_assert!(
                    weight(net) <= PUBLIC_BUDGET,
                    "{net} is beyond the bound but allowed by {:?}",
                    ingress.allowed_cidrs
                );
                exposed.add(net);
            }
        }
        for family in Family::BOTH {
            prop_assert!(
                exposed.public(family).count() <= budget_addresses(family),
                "rules allowed by {:?} open {} public {} addresses",
                ingress.allowed_cidrs,
                exposed.public(family).count(),
                family.name()
            );
        }
        // The evaluation agrees: a rule it does not flag is one `source_allowed` allows.
        let mut db = instance("db0");
        db.security_groups = vec![SecurityGroup {
            id: "sg-11111111".into(),
            rules: rules.clone(),
            shared_with: Default::default(),
        }];
        let spec = DatabaseSecurityPolicySpec {
            posture: Posture {
                network: Some(Network {
                    ingress: Some(ingress.clone()),
                    ..Network::default()
                }),
                ..Posture::default()
            },
            ..policy_skeleton()
        };
        let evaluations = evaluate(&spec, &db, &EvalContext { now: now(), kms_keys: &BTreeMap::new() });
        let finding = &evaluations[0];
        if finding.finding.status == FindingStatus::Compliant {
            for rule in &rules {
                prop_assert!(super::evaluate::source_allowed(rule, &ingress), "{rule:?} passed unflagged");
            }
        }
    }

    /// A network ACL is open exactly when some address outside private space is let through to
    /// the port: with entries no longer than /8, every /8 is decided as a whole, so an oracle can
    /// walk the 256 blocks one by one and apply the first matching entry.
    #[test]
    fn nacl_verdict_matches_a_block_by_block_oracle(
        entries in prop::collection::vec(
            (1i32..200, any::<bool>(), any::<u8>(), 0u8..=8, prop::sample::select(vec!["-1", "6", "17"]), any::<bool>()),
            0..8,
        ),
    ) {
        let nacl: Vec<super::model::NaclEntry> = entries
            .iter()
            .map(|(n, allow, first, prefix, protocol, db_port)| super::model::NaclEntry {
                acl_id: "acl-1".into(),
                rule_number: *n,
                protocol: (*protocol).into(),
                from_port: Some(if *db_port { 5000 } else { 22 }),
                to_port: Some(if *db_port { 6000 } else { 22 }),
                cidr: ipnet::IpNet::V4(
                    ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(*first, 0, 0, 0), *prefix)
                        .expect("prefix <= 8")
                        .trunc(),
                ),
                allow: *allow,
            })
            .collect();
        let reaches = |e: &super::model::NaclEntry| {
            e.protocol == "-1" || (e.protocol == "6" && e.from_port == Some(5000))
        };
        let mut sorted = nacl.clone();
        sorted.sort_by_key(|e| e.rule_number);
        // Every /8 but 10/8 holds far more than 65,536 public addresses.
        let oracle_open = (0u8..=255).filter(|b| *b != 10).any(|block| {
            let addr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(block, 0, 0, 0));
            sorted
                .iter()
                .find(|e| reaches(e) && e.cidr.contains(&addr))
                .is_some_and(|e| e.allow)
        });
        let spec = DatabaseSecurityPolicySpec {
            posture: Posture {
                network: Some(Network { acl: Some(true), ..Network::default() }),
                ..Posture::default()
            },
            ..policy_skeleton()
        };
        let mut db = instance("db0");
        db.nacl_entries = nacl;
        let evaluations = evaluate(&spec, &db, &EvalContext { now: now(), kms_keys: &BTreeMap::new() });
        let open = evaluations[0].finding.status == FindingStatus::ReportOnly;
        prop_assert_eq!(open, oracle_open, "{:?}", evaluations[0].finding);
    }

    /// Address-set arithmetic against a bitmap of a /24.
    #[test]
    fn address_sets_match_a_bitmap(
        ops in prop::collection::vec((any::<bool>(), any::<u8>(), 24u8..=32), 0..12),
    ) {
        use super::exposure::AddressSet;
        let mut set = AddressSet::default();
        let mut bitmap = [false; 256];
        for (add, host, prefix) in ops {
            let net = ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(192, 0, 2, host), prefix)
                    .expect("prefix <= 32")
                    .trunc(),
            );
            let size = 1usize << (32 - prefix);
            let start = usize::from(host) & !(size - 1);
            for bit in &mut bitmap[start..start + size] {
                *bit = add;
            }
            let piece = AddressSet::of(&net);
            if add {
                set.union_with(&piece);
            } else {
                set = set.minus(&piece);
            }
            prop_assert_eq!(set.count(), bitmap.iter().filter(|b| **b).count() as u128);
        }
    }
}

/// A policy with a selector and nothing switched on; tests add the posture they need.
fn policy_skeleton() -> DatabaseSecurityPolicySpec {
    DatabaseSecurityPolicySpec {
        selector: Selector {
            tags: Some(BTreeMap::from([("env".into(), "prod".into())])),
            engines: vec![Engine::Postgres, Engine::AuroraPostgresql],
            ..Selector::default()
        },
        mode: Mode::Audit,
        control_modes: BTreeMap::new(),
        posture: Posture::default(),
        remediation: Remediation::default(),
        account_ref: None,
        resync_seconds: 60,
    }
}
