//! From evaluations, a plan and the outcome of each action to per-database results and the
//! summary. Used alike by `pgbaseline check`, the operator's status and the reports.

use std::collections::BTreeMap;

use crate::api::{DatabaseResult, FindingStatus, MAX_DATABASES_IN_STATUS, Summary};

use super::evaluate::Evaluation;
use super::failure::Failure;
use super::model::Database;
use super::plan::{ActionKind, Cause, DbKey, Plan};

/// `text` cut to at most `max` bytes at a character boundary, ending in `...` when cut: condition
/// messages, Event notes and error messages all have a size limit.
pub fn ellipsize(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max.saturating_sub(3);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// How one action went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Not attempted, and why: an earlier step of the same database failed, or the run was
    /// stopped (the policy was deleted or changed, or this replica is not the leader any more).
    Skipped {
        reason: String,
    },
    /// Failed: an AWS call failed, or pgbaseline refused the change.
    Failed(Failure),
    /// Not done because it does not fit the account's quotas (reported; tried again next pass).
    Deferred {
        reason: String,
    },
}

impl Outcome {
    /// Whether AWS may now differ from the fleet the plan was made from (a failed action may
    /// have done part of its calls); a skipped or deferred one made no change.
    pub fn may_have_changed_aws(&self) -> bool {
        matches!(self, Outcome::Succeeded | Outcome::Failed(_))
    }
}

/// Per-database results for every selected database (unbounded, deterministic order: non
/// compliant first, then kind and id) and the exact summary.
pub fn results(
    evaluated: &[(&Database, Vec<Evaluation>)],
    plan: &Plan,
    outcomes: &[Outcome],
) -> (Vec<DatabaseResult>, Summary) {
    // Every action's outcome per cause.
    let mut by_cause: BTreeMap<&Cause, Vec<(&ActionKind, &Outcome)>> = BTreeMap::new();
    let not_executed = Outcome::Skipped {
        reason: "not executed".into(),
    };
    for (index, action) in plan.actions.iter().enumerate() {
        let outcome = outcomes.get(index).unwrap_or(&not_executed);
        for cause in &action.causes {
            by_cause
                .entry(cause)
                .or_default()
                .push((&action.kind, outcome));
        }
    }

    let mut summary = Summary::default();
    let mut results = Vec::with_capacity(evaluated.len());
    for (database, evaluations) in evaluated {
        let key = DbKey::of(database);
        let mut deferred_here = false;
        let mut findings = Vec::with_capacity(evaluations.len());
        for evaluation in evaluations {
            let mut finding = evaluation.finding.clone();
            let cause = Cause {
                database: key.clone(),
                control: finding.control,
            };
            let actions = by_cause.get(&cause).map(Vec::as_slice).unwrap_or_default();
            let acted = matches!(
                finding.status,
                FindingStatus::NonCompliant | FindingStatus::PendingReboot
            );
            if acted && !actions.is_empty() {
                let failure = actions.iter().find_map(|(kind, outcome)| match outcome {
                    // pgbaseline's own refusals made no failing call: say what was refused.
                    Outcome::Failed(f) if f.is_refusal() => {
                        Some(format!("not remediated: {}", f.message))
                    }
                    Outcome::Failed(f) => Some(format!(
                        "{} failed: {}: {}",
                        kind.aws_call(),
                        f.code,
                        f.message
                    )),
                    _ => None,
                });
                let deferred = actions.iter().find_map(|(_, outcome)| match outcome {
                    Outcome::Deferred { reason } => Some(reason.clone()),
                    _ => None,
                });
                let all_done = actions.iter().all(|(_, o)| **o == Outcome::Succeeded);
                let rebooted = actions.iter().any(|(k, o)| {
                    matches!(k, ActionKind::Reboot { .. }) && **o == Outcome::Succeeded
                });
                if let Some(message) = failure {
                    finding.status = FindingStatus::Error;
                    finding.message = message;
                } else if let Some(reason) = deferred {
                    // Still non-compliant, and why nothing was done.
                    finding.message = format!("{}; {reason}", finding.message);
                    deferred_here = true;
                } else if all_done && plan.awaiting_reboot.contains(&cause) && !rebooted {
                    finding.status = FindingStatus::PendingReboot;
                    finding.message = "the new value is set and takes effect after a reboot; the reboot policy does not allow one now".into();
                } else if all_done {
                    finding.status = FindingStatus::Remediated;
                    finding.message = actions
                        .iter()
                        .map(|(k, _)| k.describe())
                        .collect::<Vec<_>>()
                        .join("; ");
                }
            } else if acted && plan.awaiting_reboot.contains(&cause) {
                finding.status = FindingStatus::PendingReboot;
            } else if let Some(note) = plan.notes.get(&cause) {
                finding.message = note.clone();
            }
            findings.push(finding);
        }
        let compliant = findings.iter().all(|f| f.status.is_compliant());
        summary.selected += 1;
        if compliant {
            summary.compliant += 1;
        } else {
            summary.non_compliant += 1;
        }
        if findings
            .iter()
            .any(|f| f.status == FindingStatus::PendingReboot)
        {
            summary.pending_reboot += 1;
        }
        if findings
            .iter()
            .any(|f| f.status == FindingStatus::Remediated)
        {
            summary.remediated += 1;
        }
        if findings.iter().any(|f| f.status == FindingStatus::Error) {
            summary.failed += 1;
        }
        if deferred_here {
            summary.deferred += 1;
        }
        results.push(DatabaseResult {
            id: database.id.clone(),
            kind: database.kind,
            region: database.region.clone(),
            engine: database.engine.as_str().to_string(),
            compliant,
            findings,
        });
    }
    results.sort_by(|a, b| (a.compliant, a.kind, &a.id).cmp(&(b.compliant, b.kind, &b.id)));
    (results, summary)
}

/// One policy's results over several regions as one list and summary: ordered as [`results`]
/// orders one region's (then by region), counts added up.
pub fn merge(parts: Vec<(Vec<DatabaseResult>, Summary)>) -> (Vec<DatabaseResult>, Summary) {
    let mut results = Vec::new();
    let mut summary = Summary::default();
    for (r, s) in parts {
        results.extend(r);
        summary.selected += s.selected;
        summary.compliant += s.compliant;
        summary.non_compliant += s.non_compliant;
        summary.pending_reboot += s.pending_reboot;
        summary.remediated += s.remediated;
        summary.failed += s.failed;
        summary.deferred += s.deferred;
    }
    results.sort_by(|a, b| {
        (a.compliant, a.kind, &a.id, &a.region).cmp(&(b.compliant, b.kind, &b.id, &b.region))
    });
    (results, summary)
}

/// The results as status lists them: at most [`MAX_DATABASES_IN_STATUS`], and how many were left
/// out.
pub fn bounded(mut results: Vec<DatabaseResult>) -> (Vec<DatabaseResult>, u32) {
    let omitted = results.len().saturating_sub(MAX_DATABASES_IN_STATUS);
    results.truncate(MAX_DATABASES_IN_STATUS);
    (results, u32::try_from(omitted).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DatabaseKind;

    fn result(id: &str, region: &str, compliant: bool) -> DatabaseResult {
        DatabaseResult {
            id: id.into(),
            kind: DatabaseKind::Instance,
            region: region.into(),
            engine: "postgres".into(),
            compliant,
            findings: Vec::new(),
        }
    }

    #[test]
    fn regions_merge_into_one_ordered_list_and_one_summary() {
        let east = (
            vec![
                result("b", "us-east-1", false),
                result("a", "us-east-1", true),
            ],
            Summary {
                selected: 2,
                compliant: 1,
                non_compliant: 1,
                ..Summary::default()
            },
        );
        let west = (
            vec![result("a", "us-west-2", false)],
            Summary {
                selected: 1,
                non_compliant: 1,
                remediated: 1,
                ..Summary::default()
            },
        );
        let (results, summary) = merge(vec![east, west]);
        let order: Vec<(&str, &str)> = results
            .iter()
            .map(|r| (r.id.as_str(), r.region.as_str()))
            .collect();
        assert_eq!(
            order,
            [("a", "us-west-2"), ("b", "us-east-1"), ("a", "us-east-1")]
        );
        assert_eq!(
            summary,
            Summary {
                selected: 3,
                compliant: 1,
                non_compliant: 2,
                remediated: 1,
                ..Summary::default()
            }
        );
        assert_eq!(merge(Vec::new()), (Vec::new(), Summary::default()));
    }
}
