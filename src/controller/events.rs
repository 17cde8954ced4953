//! Which Kubernetes Events a reconcile publishes, as a pure function; the reconcile publishes
//! them with kube-runtime's `Recorder`. A Normal event per remediation action that ran, a Warning
//! per failure, and one on each change of the Ready reason. Warnings that repeat on every retry
//! are published once (the caller remembers what it published last time).

use std::collections::BTreeSet;

use crate::posture::Plan;
use crate::posture::report::Outcome;

use crate::posture::failure::{Failure, Reason};

/// An event to publish on the policy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventSpec {
    pub warning: bool,
    /// The same vocabulary as condition reasons and metric labels.
    pub reason: Reason,
    /// The AWS call (or `Reconcile`).
    pub action: String,
    pub note: String,
}

/// Longest note Kubernetes accepts is 1 kB.
const MAX_NOTE: usize = 1000;

fn note(text: String) -> String {
    crate::posture::report::ellipsize(text, MAX_NOTE)
}

/// One event per executed plan action: Normal `Remediated` naming the AWS call and the
/// databases, Warning `RemediationFailed` with the AWS error code.
pub fn for_actions(plan: &Plan, outcomes: &[Outcome]) -> Vec<EventSpec> {
    plan.actions
        .iter()
        .zip(outcomes)
        .filter_map(|(action, outcome)| {
            let databases: BTreeSet<&str> = action
                .causes
                .iter()
                .map(|c| c.database.id.as_str())
                .collect();
            let databases = databases.into_iter().collect::<Vec<_>>().join(", ");
            let call = action.kind.aws_call();
            match outcome {
                Outcome::Succeeded => Some(EventSpec {
                    warning: false,
                    reason: Reason::Remediated,
                    action: call.into(),
                    note: note(format!(
                        "{call} for {databases}: {}",
                        action.kind.describe()
                    )),
                }),
                Outcome::Failed(f) => Some(EventSpec {
                    warning: true,
                    reason: Reason::RemediationFailed,
                    action: call.into(),
                    note: note(format!(
                        "{call} for {databases} failed: {}: {}",
                        f.code, f.message
                    )),
                }),
                Outcome::Deferred { reason: why } => Some(EventSpec {
                    warning: true,
                    reason: Reason::QuotaExceeded,
                    action: call.into(),
                    note: note(format!("{call} for {databases} deferred: {why}")),
                }),
                Outcome::Skipped { .. } => None,
            }
        })
        .collect()
}

/// A Warning for a failed inventory read.
pub fn for_failure(failure: &Failure) -> EventSpec {
    EventSpec {
        warning: true,
        reason: failure.reason(),
        action: failure.call.to_string(),
        note: note(failure.to_string()),
    }
}

/// A warning when a policy may not use its account.
pub fn for_refusal(refusal: &super::status::Refusal) -> EventSpec {
    EventSpec {
        warning: true,
        reason: refusal.reason,
        action: "UseAccount".into(),
        note: note(refusal.message.clone()),
    }
}

/// An event when the Ready reason changes: Normal when it became `Compliant`, Warning otherwise.
pub fn for_ready_change(
    previous_reason: Option<Reason>,
    reason: Reason,
    message: &str,
) -> Option<EventSpec> {
    if previous_reason == Some(reason) {
        return None;
    }
    Some(EventSpec {
        warning: reason != Reason::Compliant,
        reason,
        action: "Reconcile".into(),
        note: note(message.to_string()),
    })
}

/// Drops warnings published by the previous reconcile (a failure that persists is reported
/// once, not on every retry) and returns the warnings to remember for the next one.
pub fn dedupe(
    events: Vec<EventSpec>,
    published: &BTreeSet<EventSpec>,
) -> (Vec<EventSpec>, BTreeSet<EventSpec>) {
    let warnings: BTreeSet<EventSpec> = events.iter().filter(|e| e.warning).cloned().collect();
    let fresh = events
        .into_iter()
        .filter(|e| !e.warning || !published.contains(e))
        .collect();
    (fresh, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ControlId, DatabaseKind};
    use crate::posture::plan::{Action, ActionKind, Cause, DbKey};

    fn action(id: &str) -> Action {
        Action {
            kind: ActionKind::Reboot {
                instance: id.into(),
            },
            causes: vec![Cause {
                database: DbKey {
                    kind: DatabaseKind::Instance,
                    id: id.into(),
                },
                control: ControlId::Pgaudit,
            }],
        }
    }

    #[test]
    fn one_event_per_action_that_ran() {
        let plan = Plan {
            actions: vec![action("a"), action("b"), action("c")],
            ..Plan::default()
        };
        let outcomes = vec![
            Outcome::Succeeded,
            Outcome::Failed(Failure::new(
                "RebootDBInstance",
                "InvalidDBInstanceState",
                "busy",
            )),
            Outcome::Skipped {
                reason: "stopped: the policy was deleted".into(),
            },
        ];
        let events = for_actions(&plan, &outcomes);
        assert_eq!(events.len(), 2);
        assert!(!events[0].warning);
        assert_eq!(events[0].reason, Reason::Remediated);
        assert_eq!(events[0].action, "RebootDBInstance");
        assert!(
            events[0]
                .note
                .starts_with("RebootDBInstance for a: reboot a")
        );
        assert!(events[1].warning);
        assert_eq!(
            events[1].note,
            "RebootDBInstance for b failed: InvalidDBInstanceState: busy"
        );
    }

    #[test]
    fn repeated_warnings_are_published_once() {
        let w = EventSpec {
            warning: true,
            reason: Reason::AccessDenied,
            action: "DescribeDBInstances".into(),
            note: "x".into(),
        };
        let n = EventSpec {
            warning: false,
            ..w.clone()
        };
        let (fresh, remembered) = dedupe(vec![w.clone(), n.clone()], &BTreeSet::new());
        assert_eq!(fresh.len(), 2);
        let (fresh, remembered) = dedupe(vec![w.clone(), n.clone()], &remembered);
        assert_eq!(fresh, vec![n.clone()]);
        // Once the failure clears, it is forgotten and would be published again.
        let (_, remembered) = dedupe(vec![], &remembered);
        let (fresh, _) = dedupe(vec![w.clone()], &remembered);
        assert_eq!(fresh, vec![w]);
    }

    #[test]
    fn ready_changes_only() {
        use Reason::{Compliant, NonCompliant};
        assert!(for_ready_change(Some(Compliant), Compliant, "m").is_none());
        let e = for_ready_change(None, NonCompliant, "m").expect("event");
        assert!(e.warning);
        let e = for_ready_change(Some(NonCompliant), Compliant, "m").expect("event");
        assert!(!e.warning);
    }
}
