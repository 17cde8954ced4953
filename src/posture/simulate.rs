//! Applies a plan to the model as AWS would (used by `check --fix --dry-run` style previews and
//! by the property tests that prove convergence).

use std::collections::BTreeMap;

use crate::api::DatabaseKind;

use super::evaluate::{AttributeChange, Target};
use super::managed::{Contents, FullParameter, content_digest, managed_name};
use super::model::{ApplyStatus, Attached, Fleet, ParameterGroup};
use super::modify::Modification;
use super::plan::{ActionKind, ApplyMethod, Plan};

/// Applies every action of `plan` to `fleet`, following AWS semantics: a static change or a
/// newly attached group leaves the database pending reboot until it is rebooted.
pub fn apply(fleet: &mut Fleet, plan: &Plan) {
    // Groups known by name: every group attached somewhere.
    let mut groups: BTreeMap<(bool, String), ParameterGroup> = BTreeMap::new();
    for db in &fleet.databases {
        if let Some(g) = &db.parameter_group {
            groups
                .entry((g.cluster, g.name.clone()))
                .or_insert_with(|| g.clone());
        }
    }
    for action in &plan.actions {
        match &action.kind {
            ActionKind::SetParameters {
                group,
                cluster,
                changes,
            } => {
                if let Some(g) = groups.get_mut(&(*cluster, group.clone())) {
                    for change in changes {
                        if let Some(p) = g.parameters.get_mut(&change.name) {
                            p.value = Some(change.value.clone());
                        }
                    }
                }
                let any_static = changes
                    .iter()
                    .any(|c| c.method == ApplyMethod::PendingReboot);
                for db in &mut fleet.databases {
                    let Some(g) = db.parameter_group.as_mut() else {
                        continue;
                    };
                    if g.name != *group || g.cluster != *cluster {
                        continue;
                    }
                    for change in changes {
                        if let Some(p) = g.parameters.get_mut(&change.name) {
                            p.value = Some(change.value.clone());
                        }
                    }
                    if any_static {
                        g.apply_status = ApplyStatus::PendingReboot;
                        for m in &mut db.members {
                            m.apply_status = ApplyStatus::PendingReboot;
                        }
                    }
                }
            }
            ActionKind::MoveToManagedGroup {
                database,
                source,
                family,
                cluster,
                changes,
                ..
            } => {
                let Some(current) = fleet
                    .get(database.kind, &database.id)
                    .and_then(|d| d.parameter_group.clone())
                else {
                    continue;
                };
                // What the executor attaches: the current contents with the changes set, under
                // the content-addressed name (digest of what the model knows of the source).
                let mut copy = current.clone();
                for change in changes {
                    if let Some(p) = copy.parameters.get_mut(&change.name) {
                        p.value = Some(change.value.clone());
                    }
                }
                let known: Contents = current
                    .parameters
                    .iter()
                    .map(|(n, p)| {
                        (
                            n.clone(),
                            FullParameter {
                                value: p.value.clone(),
                                apply_type: p.apply_type,
                            },
                        )
                    })
                    .collect();
                let name = managed_name(
                    *cluster,
                    family,
                    source,
                    &content_digest(&known),
                    changes,
                    0,
                );
                let sharers: Vec<String> = fleet
                    .databases
                    .iter()
                    .filter(|d| {
                        d.kind == database.kind
                            && (d.id == database.id
                                || d.parameter_group.as_ref().is_some_and(|g| g.name == name))
                    })
                    .map(|d| d.id.clone())
                    .collect();
                let sharers: Attached = sharers.into();
                for db in &mut fleet.databases {
                    if db.kind != database.kind {
                        continue;
                    }
                    let Some(g) = db.parameter_group.as_mut() else {
                        continue;
                    };
                    if db.id == database.id {
                        *g = ParameterGroup {
                            name: name.clone(),
                            apply_status: ApplyStatus::PendingReboot,
                            shared_with: sharers.clone(),
                            ..copy.clone()
                        };
                        for m in &mut db.members {
                            m.apply_status = ApplyStatus::PendingReboot;
                        }
                    } else if g.name == name {
                        g.shared_with = sharers.clone();
                    } else if g.name == current.name {
                        g.shared_with = g
                            .shared_with
                            .iter()
                            .filter(|id| **id != database.id)
                            .cloned()
                            .collect::<Vec<_>>()
                            .into();
                    }
                }
            }
            ActionKind::ModifyAttributes { target, changes } => {
                for change in changes {
                    modify(fleet, target, change);
                }
            }
            ActionKind::RevokeIngress {
                security_group,
                rule,
            } => {
                for db in &mut fleet.databases {
                    for sg in db
                        .security_groups
                        .iter_mut()
                        .filter(|sg| &sg.id == security_group)
                    {
                        sg.rules.retain(|r| r != rule);
                    }
                }
            }
            ActionKind::Reboot { instance } => {
                for db in &mut fleet.databases {
                    if db.kind == DatabaseKind::Instance
                        && &db.id == instance
                        && let Some(g) = db.parameter_group.as_mut()
                    {
                        g.apply_status = ApplyStatus::InSync;
                    }
                    if db.kind == DatabaseKind::Cluster
                        && db.members.iter().any(|m| &m.id == instance)
                    {
                        for m in db.members.iter_mut().filter(|m| &m.id == instance) {
                            m.apply_status = ApplyStatus::InSync;
                        }
                        if db
                            .members
                            .iter()
                            .all(|m| m.apply_status == ApplyStatus::InSync)
                            && let Some(g) = db.parameter_group.as_mut()
                        {
                            g.apply_status = ApplyStatus::InSync;
                        }
                    }
                }
            }
        }
    }
}

fn modify(fleet: &mut Fleet, target: &Target, change: &AttributeChange) {
    let modification = Modification::of(target, std::slice::from_ref(change));
    for db in &mut fleet.databases {
        match target {
            Target::Instance(id) if db.kind == DatabaseKind::Instance && &db.id == id => {
                modification.apply_to(&mut db.attributes)
            }
            Target::Cluster(id) if db.kind == DatabaseKind::Cluster && &db.id == id => {
                modification.apply_to(&mut db.attributes)
            }
            // Instance-level settings of Aurora are planned on the member instances.
            Target::Instance(id) if db.kind == DatabaseKind::Cluster => {
                for member in db.members.iter_mut().filter(|m| &m.id == id) {
                    modification.apply_to_member(member);
                }
            }
            _ => {}
        }
    }
}
