//! `plan`: the typed actions that bring the selected databases into compliance.
//!
//! The planner never modifies a `default.*` group, never changes a group or a security group that
//! a database outside the selection also uses, only ever tightens, and reboots only as the
//! policy's reboot policy allows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use crate::api::{
    ControlId, DatabaseKind, DatabaseSecurityPolicySpec, FindingStatus, Mode,
    ParameterGroupStrategy, RebootPolicy,
};

use super::catalogue::{self, Remediation};
use super::evaluate::{AttributeChange, Evaluation, Fix, Target};
use super::managed::{MANAGED_PREFIX, is_legacy_name};
use super::model::{ApplyType, Database, Fleet, IngressRule, ParameterGroup};

/// At most this many parameters per `ModifyDB(Cluster)ParameterGroup` call (AWS limit).
pub const MAX_PARAMETERS_PER_CALL: usize = 20;

/// A database, by kind and id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DbKey {
    pub kind: DatabaseKind,
    pub id: String,
}

impl DbKey {
    pub fn of(database: &Database) -> DbKey {
        DbKey {
            kind: database.kind,
            id: database.id.clone(),
        }
    }
}

/// `immediate` for dynamic parameters, `pending-reboot` for static ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ApplyMethod {
    Immediate,
    PendingReboot,
}

impl ApplyMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyMethod::Immediate => "immediate",
            ApplyMethod::PendingReboot => "pending-reboot",
        }
    }
}

/// One parameter to set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ParameterChange {
    pub name: String,
    pub value: String,
    pub method: ApplyMethod,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ActionKind {
    /// Set at most 20 parameters of a custom group in place (every database on it is selected).
    SetParameters {
        group: String,
        cluster: bool,
        changes: Vec<ParameterChange>,
    },
    /// Move a database to the managed copy of `source` with `changes` set: the copy is
    /// created, or reused once its tag and contents prove it is pgbaseline's and as intended; it
    /// is attached only when its full contents equal the current group's except the planned,
    /// stricter values (see `managed`). Takes effect after a reboot.
    MoveToManagedGroup {
        database: DbKey,
        /// The group the database is on now.
        current: String,
        /// The group the copy is made from: the current group, or for a first-version
        /// per-database copy the group that copy was made from (so those databases converge on
        /// shared copies).
        source: String,
        family: String,
        cluster: bool,
        /// The planned tightening (empty when only migrating a first-version copy).
        changes: Vec<ParameterChange>,
    },
    /// Modify instance or cluster attributes, applied immediately.
    ModifyAttributes {
        target: Target,
        changes: Vec<AttributeChange>,
    },
    /// Revoke exactly one ingress rule.
    RevokeIngress {
        security_group: String,
        rule: IngressRule,
    },
    /// Reboot one DB instance (an Aurora cluster is rebooted member by member).
    Reboot { instance: String },
}

impl ActionKind {
    /// The AWS API call this action makes (for events and metrics).
    pub fn aws_call(&self) -> &'static str {
        match self {
            ActionKind::SetParameters { cluster: false, .. } => "ModifyDBParameterGroup",
            ActionKind::SetParameters { cluster: true, .. } => "ModifyDBClusterParameterGroup",
            ActionKind::MoveToManagedGroup { database, .. } => match database.kind {
                DatabaseKind::Instance => "ModifyDBInstance",
                DatabaseKind::Cluster => "ModifyDBCluster",
            },
            ActionKind::ModifyAttributes {
                target: Target::Instance(_),
                ..
            } => "ModifyDBInstance",
            ActionKind::ModifyAttributes {
                target: Target::Cluster(_),
                ..
            } => "ModifyDBCluster",
            ActionKind::RevokeIngress { .. } => "RevokeSecurityGroupIngress",
            ActionKind::Reboot { .. } => "RebootDBInstance",
        }
    }

    /// A one-line description without secrets.
    pub fn describe(&self) -> String {
        match self {
            ActionKind::SetParameters { group, changes, .. } => {
                format!("set {} in {group}", describe_changes(changes))
            }
            ActionKind::MoveToManagedGroup {
                database,
                current,
                source,
                changes,
                ..
            } => {
                let with = if changes.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", describe_changes(changes))
                };
                let of = if source == current {
                    String::new()
                } else {
                    format!(" (a shared copy of {source})")
                };
                format!(
                    "move {} from {current} to a pgbaseline-managed copy{of}{with}",
                    database.id
                )
            }
            ActionKind::ModifyAttributes { target, changes } => {
                let (what, id) = match target {
                    Target::Instance(i) => ("instance", i),
                    Target::Cluster(i) => ("cluster", i),
                };
                let changes: Vec<String> = changes.iter().map(ToString::to_string).collect();
                format!("{what} {id}: {}", changes.join("; "))
            }
            ActionKind::RevokeIngress {
                security_group,
                rule,
            } => format!("revoke {} on {security_group}", rule.describe()),
            ActionKind::Reboot { instance } => format!("reboot {instance}"),
        }
    }
}

fn describe_changes(changes: &[ParameterChange]) -> String {
    changes
        .iter()
        .map(|c| format!("{}={} ({})", c.name, c.value, c.method.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Action {
    /// `Err` when the catalogue does not fix a cause's control this way (a parameter change for
    /// a report-only control, a revoke for a parameter…): the executor refuses such an action,
    /// whatever planned it.
    pub fn within_catalogue(&self) -> Result<(), String> {
        for cause in &self.causes {
            let remediation = catalogue::info(cause.control).remediation;
            let allowed = match &self.kind {
                ActionKind::SetParameters { .. }
                | ActionKind::MoveToManagedGroup { .. }
                | ActionKind::Reboot { .. } => remediation == Remediation::SetParameters,
                ActionKind::ModifyAttributes { .. } => matches!(
                    remediation,
                    Remediation::Modify
                        | Remediation::ModifyRestarts
                        | Remediation::ModifyRotatesPassword
                ),
                ActionKind::RevokeIngress { .. } => remediation == Remediation::RevokeRule,
            };
            if !allowed {
                return Err(format!(
                    "{} is not how {} is fixed ({})",
                    self.kind.aws_call(),
                    cause.control,
                    catalogue::info(cause.control).fix
                ));
            }
        }
        Ok(())
    }
}

/// The finding an action works towards.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Cause {
    pub database: DbKey,
    pub control: ControlId,
}

/// An action and the findings it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Action {
    pub kind: ActionKind,
    pub causes: Vec<Cause>,
}

/// The plan: ordered actions, the findings that will still wait for a reboot, and notes on
/// violations the planner deliberately leaves alone.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Findings whose fix takes effect only after a reboot this plan does not do.
    pub awaiting_reboot: BTreeSet<Cause>,
    /// Why a fixable violation is not acted on (shared security group, restart not allowed…).
    pub notes: BTreeMap<Cause, String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// What planning needs besides the policy and the selected databases.
#[derive(Clone, Copy, Debug)]
pub struct PlanContext<'a> {
    /// Decides reboots in maintenance windows.
    pub now: DateTime<Utc>,
    /// The whole region, selected or not: which groups are in use by whom.
    pub fleet: &'a Fleet,
}

/// Plans the actions for the selected databases and their evaluations.
pub fn plan(
    spec: &DatabaseSecurityPolicySpec,
    evaluated: &[(&Database, Vec<Evaluation>)],
    ctx: PlanContext<'_>,
) -> Plan {
    let selected: BTreeSet<DbKey> = evaluated.iter().map(|(d, _)| DbKey::of(d)).collect();
    let mut builder = Builder::default();

    for (database, evaluations) in evaluated {
        let key = DbKey::of(database);
        let mut parameters: BTreeMap<String, (String, Vec<ControlId>)> = BTreeMap::new();
        let mut reboot_for: Vec<ControlId> = Vec::new();
        let restart_allowed = reboot_allowed(
            spec.remediation.reboot,
            database.maintenance_window.as_deref(),
            ctx.now,
        );

        for evaluation in evaluations {
            let control = evaluation.finding.control;
            if spec.mode_for(control) != Mode::Enforce {
                continue;
            }
            let cause = Cause {
                database: key.clone(),
                control,
            };
            let status = evaluation.finding.status;
            if status != FindingStatus::NonCompliant && status != FindingStatus::PendingReboot {
                continue;
            }
            for fix in &evaluation.fixes {
                match fix {
                    Fix::Parameter { name, value } => {
                        let entry = parameters
                            .entry(name.clone())
                            .or_insert_with(|| (value.clone(), Vec::new()));
                        entry.1.push(control);
                    }
                    Fix::Reboot => reboot_for.push(control),
                    Fix::Attribute { target, change } => {
                        if catalogue::info(control).remediation == Remediation::ModifyRestarts
                            && !restart_allowed
                        {
                            builder.notes.insert(
                                cause.clone(),
                                format!(
                                    "changing the CA restarts the database; remediation.reboot is {}, which does not allow a restart now",
                                    spec.remediation.reboot.as_str()
                                ),
                            );
                            continue;
                        }
                        builder.modify(target.clone(), change.clone(), cause.clone());
                    }
                    Fix::Revoke {
                        security_group,
                        rule,
                    } => {
                        let sharers_unselected: Vec<&String> = database
                            .security_groups
                            .iter()
                            .find(|g| &g.id == security_group)
                            .map(|g| {
                                g.shared_with
                                    .iter()
                                    .filter(|id| !is_selected(&selected, id))
                                    .collect()
                            })
                            .unwrap_or_default();
                        if sharers_unselected.is_empty() {
                            builder.revoke(security_group, rule, cause.clone());
                        } else {
                            builder.notes.insert(
                                cause.clone(),
                                format!(
                                    "security group {security_group} is also used by {} which this policy does not select; revoke {} by hand",
                                    sharers_unselected.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                                    rule.describe()
                                ),
                            );
                        }
                    }
                }
            }
        }

        let mut needs_reboot = !reboot_for.is_empty();
        let mut reboot_causes: Vec<ControlId> = reboot_for;
        if let Some(group) = &database.parameter_group {
            // A first-version per-database copy converges on the shared copy of its source.
            let legacy_source = legacy_source(ctx.fleet, database, group);
            let param_controls: Vec<ControlId> = if parameters.is_empty() {
                // Nothing to tighten: migrate only where the policy enforces parameters and the
                // reboot the new group needs may happen now (otherwise the database would show
                // pending reboot for values that do not change).
                if legacy_source.is_some() && restart_allowed {
                    enforced_parameter_controls(spec, evaluations)
                } else {
                    Vec::new()
                }
            } else {
                parameters
                    .values()
                    .flat_map(|(_, c)| c.iter().copied())
                    .collect()
            };
            if !param_controls.is_empty() {
                let changes: Vec<ParameterChange> = parameters
                    .iter()
                    .map(|(name, (value, _))| ParameterChange {
                        name: name.clone(),
                        value: value.clone(),
                        method: apply_method(group, name),
                    })
                    .collect();
                let causes: Vec<Cause> = dedup(
                    param_controls
                        .iter()
                        .map(|c| Cause {
                            database: key.clone(),
                            control: *c,
                        })
                        .collect(),
                );
                let in_place = legacy_source.is_none()
                    && can_change_in_place(
                        spec.remediation.parameter_group_strategy,
                        group,
                        &selected,
                        database.kind,
                    );
                if in_place {
                    let any_static = changes
                        .iter()
                        .any(|c| c.method == ApplyMethod::PendingReboot);
                    builder.set_parameters(&group.name, group.cluster, changes, &causes);
                    // A group already waiting for a reboot keeps every value waiting with it.
                    if any_static || super::evaluate::pending_reboot(database) {
                        needs_reboot = true;
                        reboot_causes.extend(param_controls.iter().copied());
                    }
                } else {
                    builder.moves.push(Action {
                        kind: ActionKind::MoveToManagedGroup {
                            database: key.clone(),
                            current: group.name.clone(),
                            source: legacy_source.unwrap_or(&group.name).to_string(),
                            family: group.family.clone(),
                            cluster: group.cluster,
                            changes,
                        },
                        causes,
                    });
                    // A newly attached group takes effect after a reboot, for every parameter.
                    needs_reboot = true;
                    reboot_causes.extend(param_controls.iter().copied());
                }
            }
        }

        if needs_reboot {
            let causes: Vec<Cause> = dedup(
                reboot_causes
                    .iter()
                    .map(|c| Cause {
                        database: key.clone(),
                        control: *c,
                    })
                    .collect(),
            );
            if restart_allowed {
                for instance in reboot_targets(database) {
                    builder.reboot(instance, &causes);
                }
            } else {
                for cause in causes {
                    builder.awaiting_reboot.insert(cause);
                }
            }
        }
    }
    builder.finish()
}

/// The group a first-version per-database copy (`pgbaseline-<db>-<family>`) was made from, when
/// the region still has it.
fn legacy_source<'f>(
    fleet: &'f Fleet,
    database: &Database,
    group: &ParameterGroup,
) -> Option<&'f str> {
    if !is_legacy_name(&group.name, &database.id, &group.family) {
        return None;
    }
    let source = fleet
        .group_listing(group.cluster, &group.name)?
        .legacy_source()?;
    fleet
        .group_listing(group.cluster, source)
        .map(|g| g.name.as_str())
}

/// The policy's parameter controls in Enforce mode that were evaluated on this database.
fn enforced_parameter_controls(
    spec: &DatabaseSecurityPolicySpec,
    evaluations: &[Evaluation],
) -> Vec<ControlId> {
    evaluations
        .iter()
        .map(|e| e.finding.control)
        .filter(|c| spec.mode_for(*c) == Mode::Enforce && catalogue::reads_parameters(*c))
        .collect()
}

/// Security groups are shared across kinds: an id is selected as an instance or as a cluster.
fn is_selected(selected: &BTreeSet<DbKey>, id: &str) -> bool {
    [DatabaseKind::Instance, DatabaseKind::Cluster]
        .into_iter()
        .any(|kind| {
            selected.contains(&DbKey {
                kind,
                id: id.to_string(),
            })
        })
}

fn dedup(mut causes: Vec<Cause>) -> Vec<Cause> {
    causes.sort();
    causes.dedup();
    causes
}

/// `Auto` changes a custom group in place when every database attached to it is selected.
/// `Dedicated` never changes a group pgbaseline did not create. Neither ever changes a default
/// group or a managed copy (copies are content-addressed and shared: a change makes a new copy).
fn can_change_in_place(
    strategy: ParameterGroupStrategy,
    group: &ParameterGroup,
    selected: &BTreeSet<DbKey>,
    kind: DatabaseKind,
) -> bool {
    if group.is_default() || group.name.starts_with(MANAGED_PREFIX) {
        return false;
    }
    match strategy {
        ParameterGroupStrategy::Dedicated => false,
        ParameterGroupStrategy::Auto => group.shared_with.iter().all(|id| {
            selected.contains(&DbKey {
                kind,
                id: id.clone(),
            })
        }),
    }
}

fn apply_method(group: &ParameterGroup, name: &str) -> ApplyMethod {
    match group.parameters.get(name).map(|p| p.apply_type) {
        Some(ApplyType::Dynamic) => ApplyMethod::Immediate,
        // Static, or unknown: pending-reboot is accepted by AWS for both kinds.
        _ => ApplyMethod::PendingReboot,
    }
}

/// The instances to reboot: the instance itself, or an Aurora cluster's members with readers
/// first and the writer last.
fn reboot_targets(database: &Database) -> Vec<String> {
    match database.kind {
        DatabaseKind::Instance => vec![database.id.clone()],
        DatabaseKind::Cluster => {
            let mut members: Vec<&super::model::Member> = database.members.iter().collect();
            members.sort_by_key(|m| (m.is_writer, m.id.clone()));
            members.into_iter().map(|m| m.id.clone()).collect()
        }
    }
}

/// Whether the reboot policy allows restarting now.
pub fn reboot_allowed(policy: RebootPolicy, window: Option<&str>, now: DateTime<Utc>) -> bool {
    match policy {
        RebootPolicy::Never => false,
        RebootPolicy::Immediately => true,
        RebootPolicy::MaintenanceWindow => window.is_some_and(|w| in_maintenance_window(w, now)),
    }
}

/// Whether `now` lies in an RDS maintenance window `ddd:hh24:mi-ddd:hh24:mi` (UTC), including
/// windows that wrap around the end of the week.
pub fn in_maintenance_window(window: &str, now: DateTime<Utc>) -> bool {
    fn minute_of_week(part: &str) -> Option<u32> {
        let mut it = part.trim().split(':');
        let day = match it.next()?.to_ascii_lowercase().as_str() {
            "mon" => 0,
            "tue" => 1,
            "wed" => 2,
            "thu" => 3,
            "fri" => 4,
            "sat" => 5,
            "sun" => 6,
            _ => return None,
        };
        let hour: u32 = it.next()?.parse().ok()?;
        let minute: u32 = it.next()?.parse().ok()?;
        (hour < 24 && minute < 60).then_some(day * 1440 + hour * 60 + minute)
    }
    let Some((start, end)) = window.split_once('-') else {
        return false;
    };
    let (Some(start), Some(end)) = (minute_of_week(start), minute_of_week(end)) else {
        return false;
    };
    let current = now.weekday().num_days_from_monday() * 1440 + now.hour() * 60 + now.minute();
    if start <= end {
        start <= current && current < end
    } else {
        current >= start || current < end
    }
}

/// A parameter group: (cluster group?, name).
type GroupKey = (bool, String);

/// Collects actions with de-duplication across databases (a shared group is set once).
#[derive(Default)]
struct Builder {
    sets: BTreeMap<GroupKey, (BTreeMap<String, ParameterChange>, Vec<Cause>)>,
    moves: Vec<Action>,
    modifies: BTreeMap<Target, (Vec<AttributeChange>, Vec<Cause>)>,
    revokes: BTreeMap<(String, IngressRule), Vec<Cause>>,
    reboots: BTreeMap<String, Vec<Cause>>,
    awaiting_reboot: BTreeSet<Cause>,
    notes: BTreeMap<Cause, String>,
}

impl Builder {
    fn set_parameters(
        &mut self,
        group: &str,
        cluster: bool,
        changes: Vec<ParameterChange>,
        causes: &[Cause],
    ) {
        let entry = self.sets.entry((cluster, group.to_string())).or_default();
        for change in changes {
            entry.0.entry(change.name.clone()).or_insert(change);
        }
        entry.1.extend_from_slice(causes);
    }

    fn modify(&mut self, target: Target, change: AttributeChange, cause: Cause) {
        let entry = self.modifies.entry(target).or_default();
        match (
            entry
                .0
                .iter_mut()
                .find(|c| matches!(c, AttributeChange::EnableLogExports(_))),
            &change,
        ) {
            (
                Some(AttributeChange::EnableLogExports(existing)),
                AttributeChange::EnableLogExports(more),
            ) => {
                for log in more {
                    if !existing.contains(log) {
                        existing.push(log.clone());
                    }
                }
            }
            _ => {
                if !entry.0.contains(&change) {
                    entry.0.push(change);
                }
            }
        }
        entry.1.push(cause);
    }

    fn revoke(&mut self, security_group: &str, rule: &IngressRule, cause: Cause) {
        self.revokes
            .entry((security_group.to_string(), rule.clone()))
            .or_default()
            .push(cause);
    }

    fn reboot(&mut self, instance: String, causes: &[Cause]) {
        self.reboots
            .entry(instance)
            .or_default()
            .extend_from_slice(causes);
    }

    fn finish(mut self) -> Plan {
        let mut actions = Vec::new();
        for ((cluster, group), (changes, causes)) in self.sets {
            let changes: Vec<ParameterChange> = changes.into_values().collect();
            let causes = dedup(causes);
            for chunk in changes.chunks(MAX_PARAMETERS_PER_CALL) {
                actions.push(Action {
                    kind: ActionKind::SetParameters {
                        group: group.clone(),
                        cluster,
                        changes: chunk.to_vec(),
                    },
                    causes: causes.clone(),
                });
            }
        }
        // Moves that share a copy are adjacent, the most shared first: when the region's group
        // quota runs out, the copies that serve the most databases have been made.
        let spec_of = |a: &Action| match &a.kind {
            ActionKind::MoveToManagedGroup {
                source,
                cluster,
                changes,
                ..
            } => Some((*cluster, source.clone(), changes.clone())),
            _ => None,
        };
        let mut sharing: BTreeMap<_, usize> = BTreeMap::new();
        for a in &self.moves {
            *sharing.entry(spec_of(a)).or_default() += 1;
        }
        self.moves.sort_by_cached_key(|a| {
            let spec = spec_of(a);
            (
                std::cmp::Reverse(sharing.get(&spec).copied().unwrap_or(0)),
                spec,
            )
        });
        actions.extend(self.moves);
        for (target, (mut changes, causes)) in self.modifies {
            changes.sort();
            actions.push(Action {
                kind: ActionKind::ModifyAttributes { target, changes },
                causes: dedup(causes),
            });
        }
        for ((security_group, rule), causes) in self.revokes {
            actions.push(Action {
                kind: ActionKind::RevokeIngress {
                    security_group,
                    rule,
                },
                causes: dedup(causes),
            });
        }
        for (instance, causes) in self.reboots {
            actions.push(Action {
                kind: ActionKind::Reboot { instance },
                causes: dedup(causes),
            });
        }
        Plan {
            actions,
            awaiting_reboot: self.awaiting_reboot,
            notes: self.notes,
        }
    }
}
