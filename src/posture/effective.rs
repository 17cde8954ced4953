//! Effective settings, sans IO: what each server actually runs with (`pg_settings`, read on every
//! instance endpoint: an RDS instance, or each Aurora member) compared with the parameter group
//! AWS reports. It makes the parameter controls precise in two ways:
//!
//! - **Pending reboot, per parameter.** A group in `pending-reboot` used to make every parameter
//!   control on it `PendingReboot`. Now a control is `PendingReboot` only when a server does not
//!   run its required values yet and the difference waits for a reboot (`pg_settings`
//!   `pending_restart`, or that endpoint's group status is `pending-reboot`); the finding names
//!   exactly those parameters and instances. A control whose values are already in effect
//!   everywhere is `Compliant`, and no reboot is planned for it.
//! - **Overrides.** A server that runs a value differing from its group, with nothing pending,
//!   is overridden outside the group (an Aurora member's DB parameter group, a server-level
//!   change): when that value fails the policy, the control is `NonCompliant` with no fix
//!   (changing the group again would change nothing), and the finding says which instance runs
//!   what.
//!
//! Only controls whose group already satisfies the policy are refined: a group that fails is
//! `NonCompliant` whatever the servers run, and its fix is the group's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{DatabaseSecurityPolicySpec, FindingStatus};

use super::catalogue;
use super::evaluate::{EvalContext, Evaluation, Fix};
use super::failure::Reason;
use super::model::{ApplyStatus, Database};
use super::values::{parse_bool, split_list};

/// One setting as a server runs it (a row of `pg_settings`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub value: String,
    /// `pg_settings.source` (`configuration file`, `default`, …; `unknown` when the server does
    /// not list the setting, a placeholder read with `current_setting`).
    pub source: String,
    /// The configuration holds another value that takes effect at the next restart.
    pub pending_restart: bool,
}

/// What one instance endpoint runs with, or why it could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveSettings {
    /// The RDS instance or Aurora member whose endpoint was read.
    pub instance: String,
    /// The controlled settings the server knows, by name.
    pub read: Result<BTreeMap<String, Setting>, (Reason, String)>,
}

/// The parameter names the policy's parameter controls read (what to ask `pg_settings` for).
pub fn parameters_of(spec: &DatabaseSecurityPolicySpec) -> Vec<String> {
    let mut names: Vec<String> = spec
        .enabled_controls()
        .into_iter()
        .filter(|c| catalogue::reads_parameters(*c))
        .flat_map(|c| catalogue::info(c).parameters.iter().map(|p| p.to_string()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Sources that describe one session rather than the server (`ALTER ROLE/DATABASE … SET`,
/// connection options): such a value says nothing about what the server runs with, and
/// `database.settingOverrides` judges it.
fn per_session(source: &str) -> bool {
    matches!(
        source,
        "database" | "user" | "database user" | "client" | "session"
    )
}

/// A value in one spelling: booleans as `on`/`off`, lists as sorted sets, the rest trimmed and
/// lower-cased (RDS stores `1`, PostgreSQL shows `on`).
fn canonical(name: &str, value: &str) -> String {
    let v = value.trim();
    if matches!(name, "shared_preload_libraries" | "pgaudit.log") {
        let mut items: Vec<String> = split_list(&v.replace('"', ""));
        items.sort();
        items.dedup();
        return items.join(",");
    }
    match parse_bool(v) {
        Some(true) => "on".into(),
        Some(false) => "off".into(),
        None => v.to_ascii_lowercase(),
    }
}

/// How one parameter on one instance differs from its group.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Difference {
    instance: String,
    parameter: String,
    running: String,
    group: String,
    source: String,
    pending: bool,
}

/// The group status that applies to `instance` (an Aurora member's own, else the group's).
fn endpoint_status(database: &Database, instance: &str) -> ApplyStatus {
    database
        .members
        .iter()
        .find(|m| m.id == instance)
        .map(|m| m.apply_status)
        .or_else(|| database.parameter_group.as_ref().map(|g| g.apply_status))
        .unwrap_or(ApplyStatus::InSync)
}

/// Refines the parameter controls of `evaluations` (one database's, from
/// [`super::evaluate`]) with what its servers run (see the module documentation). `ctx` is the
/// context those evaluations were made with.
pub fn refine(
    spec: &DatabaseSecurityPolicySpec,
    database: &Database,
    evaluations: &mut [Evaluation],
    effective: &[EffectiveSettings],
    ctx: &EvalContext<'_>,
) {
    let Some(group) = &database.parameter_group else {
        return;
    };
    if effective.is_empty() {
        return;
    }
    // Each read endpoint's verdicts: the same evaluation, on the group's values replaced by
    // what that server runs (and nothing pending), so the policy is judged by one code path.
    let mut verdicts: Vec<(&str, &BTreeMap<String, Setting>, Vec<Evaluation>)> = Vec::new();
    let mut unread: Vec<String> = Vec::new();
    for e in effective {
        match &e.read {
            Err((reason, message)) => unread.push(format!("{}: {reason}: {message}", e.instance)),
            Ok(settings) => {
                let mut running = database.clone();
                running.members.iter_mut().for_each(|m| {
                    m.apply_status = ApplyStatus::InSync;
                });
                if let Some(g) = running.parameter_group.as_mut() {
                    g.apply_status = ApplyStatus::InSync;
                    for (name, setting) in settings {
                        if per_session(&setting.source) {
                            continue;
                        }
                        if let Some(p) = g.parameters.get_mut(name) {
                            p.value = Some(setting.value.clone());
                        }
                    }
                }
                verdicts.push((
                    e.instance.as_str(),
                    settings,
                    super::evaluate(spec, &running, ctx),
                ));
            }
        }
    }
    if verdicts.is_empty() {
        return;
    }
    for evaluation in evaluations.iter_mut() {
        let control = evaluation.finding.control;
        if !catalogue::reads_parameters(control)
            || !matches!(
                evaluation.finding.status,
                FindingStatus::Compliant | FindingStatus::PendingReboot
            )
        {
            continue;
        }
        let params = catalogue::info(control).parameters;
        let mut differences: Vec<Difference> = Vec::new();
        // A server that fails the policy although it runs what the group says (a spelling
        // this module does not know): nothing can be said beyond the group's verdict.
        let mut unexplained = false;
        for (instance, settings, running) in &verdicts {
            let holds = running
                .iter()
                .find(|r| r.finding.control == control)
                .is_some_and(|r| r.finding.status == FindingStatus::Compliant);
            if holds {
                continue;
            }
            let status = endpoint_status(database, instance);
            let found = differences.len();
            for p in params {
                let Some(setting) = settings.get(*p).filter(|s| !per_session(&s.source)) else {
                    continue;
                };
                let configured = group.value(p).unwrap_or("");
                if canonical(p, &setting.value) == canonical(p, configured) {
                    continue;
                }
                differences.push(Difference {
                    instance: instance.to_string(),
                    parameter: p.to_string(),
                    running: setting.value.clone(),
                    group: if configured.is_empty() {
                        "(unset)".into()
                    } else {
                        configured.to_string()
                    },
                    source: setting.source.clone(),
                    pending: setting.pending_restart || status != ApplyStatus::InSync,
                });
            }
            unexplained |= differences.len() == found;
        }
        if unexplained {
            continue;
        }
        let unread_note = if unread.is_empty() {
            String::new()
        } else {
            format!("; effective settings not read on {}", unread.join("; "))
        };
        let describe = |d: &Difference| {
            format!(
                "{} runs {} = {} (group {} sets {})",
                d.instance, d.parameter, d.running, group.name, d.group
            )
        };
        let overrides: Vec<&Difference> = differences.iter().filter(|d| !d.pending).collect();
        let pending: Vec<&Difference> = differences.iter().filter(|d| d.pending).collect();
        let finding = &mut evaluation.finding;
        if !overrides.is_empty() {
            finding.status = FindingStatus::NonCompliant;
            finding.observed = overrides
                .iter()
                .map(|d| format!("{} = {} on {}", d.parameter, d.running, d.instance))
                .collect::<Vec<_>>()
                .join(", ");
            finding.message = format!(
                "overridden outside the parameter group: {}; nothing is pending, so the server's own configuration wins (an Aurora member's DB parameter group, or a server-level setting with source {}); pgbaseline changes only the group and leaves this to you{unread_note}",
                overrides
                    .iter()
                    .map(|d| describe(d))
                    .collect::<Vec<_>>()
                    .join("; "),
                overrides
                    .iter()
                    .map(|d| format!("'{}'", d.source))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            evaluation.fixes.clear();
        } else if !pending.is_empty() {
            finding.status = FindingStatus::PendingReboot;
            finding.observed = pending
                .iter()
                .map(|d| format!("{} = {} on {}", d.parameter, d.running, d.instance))
                .collect::<Vec<_>>()
                .join(", ");
            let mut instances: Vec<&str> = pending.iter().map(|d| d.instance.as_str()).collect();
            instances.dedup();
            finding.message = format!(
                "set in {} but not in effect until {} reboot{}: {}{unread_note}",
                group.name,
                instances.join(", "),
                if instances.len() == 1 { "s" } else { "" },
                pending
                    .iter()
                    .map(|d| describe(d))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            evaluation.fixes = vec![Fix::Reboot];
        } else if finding.status == FindingStatus::PendingReboot && unread.is_empty() {
            // Every server already runs the required values: the reboot the group waits for is
            // not this control's.
            finding.status = FindingStatus::Compliant;
            finding.message = format!(
                "meets the policy: {} in effect on {}; the reboot {} waits for does not change it",
                params.join(", "),
                verdicts
                    .iter()
                    .map(|(i, _, _)| *i)
                    .collect::<Vec<_>>()
                    .join(", "),
                group.name
            );
            evaluation.fixes.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ControlId;
    use crate::posture::testing::{cluster, instance};

    fn spec() -> DatabaseSecurityPolicySpec {
        serde_saphyr::from_str(
            "selector: {instanceIdentifiers: [a]}\nmode: Enforce\nposture:\n  logging: {connections: true, noStatementSecrets: true}\n  audit: {pgaudit: {classes: [ddl, role]}}\n  transport: {minTlsVersion: TLSv1.2}\n  database:\n    connection: {secretRef: {name: auditor}}\n    publicSchema: true\n",
        )
        .expect("spec")
    }

    fn ctx(keys: &BTreeMap<String, String>) -> EvalContext<'_> {
        EvalContext {
            now: chrono::Utc::now(),
            kms_keys: keys,
        }
    }

    /// `a` on a custom group that sets everything the policy asks for.
    fn configured(mut db: Database) -> Database {
        let g = db.parameter_group.as_mut().expect("group");
        g.name = "custom".into();
        for (name, value) in [
            ("log_connections", "1"),
            ("log_disconnections", "1"),
            ("shared_preload_libraries", "pg_stat_statements,pgaudit"),
            ("pgaudit.log", "ddl,role"),
        ] {
            g.parameters.get_mut(name).expect(name).value = Some(value.into());
        }
        db
    }

    fn running(instance: &str, values: &[(&str, &str, bool)]) -> EffectiveSettings {
        EffectiveSettings {
            instance: instance.into(),
            read: Ok(values
                .iter()
                .map(|(n, v, pending)| {
                    (
                        n.to_string(),
                        Setting {
                            value: v.to_string(),
                            source: "configuration file".into(),
                            pending_restart: *pending,
                        },
                    )
                })
                .collect()),
        }
    }

    /// What a server runs when it runs exactly the group `configured` sets.
    const IN_EFFECT: &[(&str, &str, bool)] = &[
        ("log_connections", "on", false),
        ("log_disconnections", "on", false),
        ("log_statement", "none", false),
        (
            "shared_preload_libraries",
            "pgaudit,pg_stat_statements",
            false,
        ),
        ("pgaudit.log", "ddl, role", false),
        ("ssl_min_protocol_version", "TLSv1.2", false),
    ];

    fn with(
        values: &[(&'static str, &'static str, bool)],
    ) -> Vec<(&'static str, &'static str, bool)> {
        let mut out: Vec<_> = IN_EFFECT
            .iter()
            .filter(|(n, _, _)| !values.iter().any(|(m, _, _)| m == n))
            .copied()
            .collect();
        out.extend_from_slice(values);
        out
    }

    fn refined(db: &Database, effective: &[EffectiveSettings]) -> Vec<Evaluation> {
        let keys = BTreeMap::new();
        let s = spec();
        let mut evals = crate::posture::evaluate(&s, db, &ctx(&keys));
        refine(&s, db, &mut evals, effective, &ctx(&keys));
        evals
    }

    fn all_parameter_controls_comply(evals: &[Evaluation]) {
        for e in evals
            .iter()
            .filter(|e| catalogue::reads_parameters(e.finding.control))
        {
            assert_eq!(
                e.finding.status,
                FindingStatus::Compliant,
                "{:?}",
                e.finding
            );
        }
    }

    fn get(evals: &[Evaluation], control: ControlId) -> &Evaluation {
        evals
            .iter()
            .find(|e| e.finding.control == control)
            .expect("evaluated")
    }

    #[test]
    fn values_in_effect_keep_an_in_sync_database_compliant() {
        let db = configured(instance("a"));
        all_parameter_controls_comply(&refined(&db, &[running("a", IN_EFFECT)]));
    }

    #[test]
    fn a_pending_group_makes_only_the_controls_not_yet_in_effect_pending() {
        let mut db = configured(instance("a"));
        db.parameter_group.as_mut().expect("group").apply_status = ApplyStatus::PendingReboot;
        // Before: every parameter control on the group is PendingReboot.
        let keys = BTreeMap::new();
        let before = crate::posture::evaluate(&spec(), &db, &ctx(&keys));
        assert_eq!(
            get(&before, ControlId::LogConnections).finding.status,
            FindingStatus::PendingReboot
        );
        // The server runs pgaudit already, but not the connection logging.
        let evals = refined(
            &db,
            &[running(
                "a",
                &with(&[
                    ("log_connections", "off", false),
                    ("log_disconnections", "off", false),
                ]),
            )],
        );
        let logging = get(&evals, ControlId::LogConnections);
        assert_eq!(logging.finding.status, FindingStatus::PendingReboot);
        assert_eq!(logging.fixes, vec![Fix::Reboot]);
        assert!(
            logging
                .finding
                .message
                .contains("a runs log_connections = off (group custom sets 1)")
                && logging.finding.message.contains("log_disconnections = off"),
            "{}",
            logging.finding.message
        );
        for control in [
            ControlId::Pgaudit,
            ControlId::NoStatementSecrets,
            ControlId::MinTlsVersion,
        ] {
            let e = get(&evals, control);
            assert_eq!(
                e.finding.status,
                FindingStatus::Compliant,
                "{:?}",
                e.finding
            );
            assert!(e.fixes.is_empty());
        }
        assert!(
            get(&evals, ControlId::Pgaudit)
                .finding
                .message
                .contains("the reboot custom waits for does not change it")
        );
    }

    #[test]
    fn pending_restart_on_the_server_is_pending_even_when_aws_says_in_sync() {
        let mut db = configured(instance("a"));
        db.parameter_group
            .as_mut()
            .expect("group")
            .parameters
            .get_mut("shared_preload_libraries")
            .expect("preload")
            .value = Some("pgaudit".into());
        let evals = refined(
            &db,
            &[running(
                "a",
                &with(&[("shared_preload_libraries", "pg_stat_statements", true)]),
            )],
        );
        let e = get(&evals, ControlId::Pgaudit);
        assert_eq!(e.finding.status, FindingStatus::PendingReboot);
        assert!(
            e.finding
                .message
                .contains("shared_preload_libraries = pg_stat_statements")
        );
        assert!(!e.finding.message.contains("log_connections"));
    }

    #[test]
    fn a_weaker_value_that_is_not_pending_is_an_override_without_a_fix() {
        let db = configured(instance("a"));
        let evals = refined(
            &db,
            &[running("a", &with(&[("log_statement", "all", false)]))],
        );
        let e = get(&evals, ControlId::NoStatementSecrets);
        assert_eq!(e.finding.status, FindingStatus::NonCompliant);
        assert!(e.fixes.is_empty());
        assert_eq!(e.finding.observed, "log_statement = all on a");
        assert!(
            e.finding
                .message
                .starts_with("overridden outside the parameter group: a runs log_statement = all")
        );
        assert_eq!(
            get(&evals, ControlId::LogConnections).finding.status,
            FindingStatus::Compliant
        );
    }

    #[test]
    fn a_stricter_or_differently_spelt_value_is_not_a_finding() {
        let db = configured(instance("a"));
        // RDS adds its own libraries; TLS 1.3 is stricter; `true` is `1`.
        let evals = refined(
            &db,
            &[running(
                "a",
                &with(&[
                    (
                        "shared_preload_libraries",
                        "rdsutils,pg_stat_statements,pgaudit",
                        false,
                    ),
                    ("ssl_min_protocol_version", "TLSv1.3", false),
                    ("log_connections", "true", false),
                ]),
            )],
        );
        all_parameter_controls_comply(&evals);
    }

    #[test]
    fn a_per_session_value_is_left_to_setting_overrides() {
        let db = configured(instance("a"));
        let mut e = running("a", IN_EFFECT);
        if let Ok(settings) = e.read.as_mut() {
            settings.insert(
                "log_statement".into(),
                Setting {
                    value: "all".into(),
                    source: "user".into(),
                    pending_restart: false,
                },
            );
        }
        let evals = refined(&db, &[e]);
        assert_eq!(
            get(&evals, ControlId::NoStatementSecrets).finding.status,
            FindingStatus::Compliant
        );
    }

    #[test]
    fn each_aurora_member_is_judged_with_its_own_status() {
        let mut db = configured(cluster("c", &["w", "r1", "r2"]));
        db.members[2].apply_status = ApplyStatus::PendingReboot;
        db.parameter_group.as_mut().expect("group").apply_status = ApplyStatus::PendingReboot;
        let off = [
            ("log_connections", "off", false),
            ("log_disconnections", "off", false),
        ];
        // r2 waits for its reboot; r1 is in sync yet runs another value: an override wins.
        let evals = refined(
            &db,
            &[
                running("w", IN_EFFECT),
                running("r1", &with(&off)),
                running("r2", &with(&off)),
            ],
        );
        let e = get(&evals, ControlId::LogConnections);
        assert_eq!(e.finding.status, FindingStatus::NonCompliant);
        assert!(
            e.finding.message.contains("r1 runs log_connections = off"),
            "{}",
            e.finding.message
        );
        assert!(!e.finding.message.contains("r2"), "{}", e.finding.message);
        // Without r1's override, only r2 is pending.
        let evals = refined(
            &db,
            &[
                running("w", IN_EFFECT),
                running("r1", IN_EFFECT),
                running("r2", &with(&off)),
            ],
        );
        let e = get(&evals, ControlId::LogConnections);
        assert_eq!(e.finding.status, FindingStatus::PendingReboot);
        assert!(
            e.finding.message.contains("until r2 reboots"),
            "{}",
            e.finding.message
        );
    }

    #[test]
    fn an_unread_member_keeps_the_group_verdict_and_is_named() {
        let mut db = configured(cluster("c", &["w", "r1"]));
        db.parameter_group.as_mut().expect("group").apply_status = ApplyStatus::PendingReboot;
        db.members[1].apply_status = ApplyStatus::PendingReboot;
        let evals = refined(
            &db,
            &[
                running("w", IN_EFFECT),
                EffectiveSettings {
                    instance: "r1".into(),
                    read: Err((Reason::DatabaseUnreachable, "no answer".into())),
                },
            ],
        );
        // r1 may not run the values yet: the control stays pending, as AWS says.
        let e = get(&evals, ControlId::LogConnections);
        assert_eq!(e.finding.status, FindingStatus::PendingReboot);
    }

    #[test]
    fn a_group_that_fails_the_policy_is_left_alone() {
        let mut db = instance("a");
        db.parameter_group.as_mut().expect("group").apply_status = ApplyStatus::PendingReboot;
        let evals = refined(&db, &[running("a", IN_EFFECT)]);
        let e = get(&evals, ControlId::LogConnections);
        assert_eq!(e.finding.status, FindingStatus::NonCompliant);
        assert!(e.fixes.iter().any(|f| matches!(f, Fix::Parameter { .. })));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::posture::testing::instance;
    use proptest::prelude::*;

    const PARAMS: &[(&str, &[&str])] = &[
        ("log_connections", &["on", "off", "1", "0"]),
        ("log_disconnections", &["on", "off"]),
        ("log_statement", &["none", "ddl", "all"]),
        (
            "shared_preload_libraries",
            &[
                "pgaudit",
                "pg_stat_statements",
                "pgaudit,pg_stat_statements",
                "",
            ],
        ),
        ("pgaudit.log", &["none", "ddl", "ddl,role", "all"]),
        ("ssl_min_protocol_version", &["TLSv1", "TLSv1.2", "TLSv1.3"]),
        ("password_encryption", &["md5", "scram-sha-256"]),
    ];

    fn arb_values() -> impl Strategy<Value = Vec<(usize, usize, bool)>> {
        prop::collection::vec((0..PARAMS.len(), 0usize..4, any::<bool>()), 0..8)
    }

    fn spec() -> DatabaseSecurityPolicySpec {
        serde_saphyr::from_str(
            "selector: {instanceIdentifiers: [a]}\nmode: Enforce\nposture:\n  logging: {connections: true, noStatementSecrets: true}\n  audit: {pgaudit: {classes: [ddl, role]}}\n  auth: {passwordEncryption: true}\n  transport: {minTlsVersion: TLSv1.2}\n  database:\n    connection: {secretRef: {name: auditor}}\n    publicSchema: true\n",
        )
        .expect("spec")
    }

    proptest! {
        /// Whatever the group holds and the server runs: a control the group fails is never
        /// touched; a refined control is Compliant only if the server's values satisfy the
        /// policy; it is never given a fix other than a reboot; and a server that runs exactly
        /// the group, with nothing pending, changes nothing.
        #[test]
        fn refining_is_sound(
            group_values in arb_values(),
            running_values in arb_values(),
            pending_group in any::<bool>(),
        ) {
            let keys = BTreeMap::new();
            let ctx = EvalContext { now: chrono::Utc::now(), kms_keys: &keys };
            let s = spec();
            let mut db = instance("a");
            {
                let g = db.parameter_group.as_mut().expect("group");
                g.name = "custom".into();
                if pending_group {
                    g.apply_status = ApplyStatus::PendingReboot;
                }
                for (p, v, _) in &group_values {
                    let (name, values) = PARAMS[*p];
                    g.parameters.get_mut(name).expect(name).value = Some(values[v % values.len()].into());
                }
            }
            let mut settings: BTreeMap<String, Setting> = db
                .parameter_group
                .as_ref()
                .expect("group")
                .parameters
                .iter()
                .filter_map(|(n, p)| Some((n.clone(), Setting { value: p.value.clone()?, source: "configuration file".into(), pending_restart: false })))
                .collect();
            let before = crate::posture::evaluate(&s, &db, &ctx);
            // Exactly the group: nothing changes, except a pending group that is in fact in
            // effect, which becomes Compliant.
            let mut same = before.clone();
            refine(&s, &db, &mut same, &[EffectiveSettings { instance: "a".into(), read: Ok(settings.clone()) }], &ctx);
            for (b, a) in before.iter().zip(&same) {
                if b.finding.status == FindingStatus::PendingReboot && catalogue::reads_parameters(b.finding.control) {
                    prop_assert_eq!(a.finding.status, FindingStatus::Compliant);
                } else {
                    prop_assert_eq!(a, b);
                }
            }
            for (p, v, pending) in &running_values {
                let (name, values) = PARAMS[*p];
                settings.insert(name.into(), Setting { value: values[v % values.len()].into(), source: "configuration file".into(), pending_restart: *pending });
            }
            let mut after = before.clone();
            refine(&s, &db, &mut after, &[EffectiveSettings { instance: "a".into(), read: Ok(settings.clone()) }], &ctx);
            // The server's values alone, judged as a group.
            let mut running_db = db.clone();
            if let Some(g) = running_db.parameter_group.as_mut() {
                g.apply_status = ApplyStatus::InSync;
                for (n, st) in &settings {
                    if let Some(p) = g.parameters.get_mut(n) { p.value = Some(st.value.clone()); }
                }
            }
            let judged = crate::posture::evaluate(&s, &running_db, &ctx);
            for ((b, a), j) in before.iter().zip(&after).zip(&judged) {
                prop_assert_eq!(b.finding.control, a.finding.control);
                if !catalogue::reads_parameters(b.finding.control) || !matches!(b.finding.status, FindingStatus::Compliant | FindingStatus::PendingReboot) {
                    prop_assert_eq!(a, b);
                    continue;
                }
                if a.finding.status == FindingStatus::Compliant {
                    prop_assert_eq!(j.finding.status, FindingStatus::Compliant, "{:?}", a.finding);
                }
                prop_assert!(a.fixes.iter().all(|f| *f == Fix::Reboot), "{:?}", a.fixes);
            }
        }
    }
}
