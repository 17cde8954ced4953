//! The next status of a policy, as a pure function of what one reconcile saw and the status the
//! object has now. No IO: the reconcile writes the result with server-side apply, and only when
//! [`differs`] says so.
//!
//! Conditions follow kstatus: `Ready` summarises, `Reconciling` and `Stalled` are the
//! abnormal-true pair. `lastTransitionTime` moves only when a condition's status flips, and
//! every condition carries the `observedGeneration` it describes. Reasons are CamelCase and are
//! the same strings that label Events and metrics.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    ControlId, DatabaseResult, DatabaseSecurityPolicyStatus, FindingStatus, RebootPolicy, Summary,
};
use crate::posture::failure::{Failure, Reason};
use crate::posture::report::bounded;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Longest condition message; longer ones are cut (status stays small and readable).
const MAX_MESSAGE: usize = 1024;
/// Databases named in a condition message.
const NAMED_IN_MESSAGE: usize = 5;

/// What one reconcile of a policy saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// The fleet was read and the policy evaluated (and, in Enforce, its plan executed).
    Evaluated {
        /// Every selected database (unbounded).
        results: Vec<DatabaseResult>,
        summary: Summary,
        /// Actions that succeeded in this pass.
        actions_succeeded: usize,
        /// Actions that failed in this pass.
        failures: Vec<Failure>,
    },
    /// The fleet could not be read.
    InventoryFailed(Failure),
    /// The policy may not use the account it names (or the account cannot be used): nothing
    /// was read or changed in it.
    Refused(Refusal),
}

/// Why a policy may not use its account; a person must change the policy or the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `AccountNotFound`, `NamespaceNotPermitted`, `ModeNotPermitted`, `RegionNotPermitted` or
    /// `ExternalIdUnavailable`.
    pub reason: Reason,
    pub message: String,
}

/// One condition before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    pub type_: &'static str,
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

/// Ready, Reconciling and Stalled for an observation. `previous_ready` is the object's current
/// Ready condition: a transient AWS error keeps it (Ready does not flap on a throttled sweep).
pub fn conditions(
    observation: &Observation,
    reboot: RebootPolicy,
    previous_ready: Option<&Condition>,
) -> [ConditionState; 3] {
    let idle = || {
        cond(
            RECONCILING,
            false,
            Reason::Idle,
            "nothing in progress; the databases are checked again at the next resync".into(),
        )
    };
    let healthy = || {
        cond(
            STALLED,
            false,
            Reason::Healthy,
            "nothing needs a person to act".into(),
        )
    };
    match observation {
        Observation::Refused(refusal) => [
            cond(READY, false, refusal.reason, refusal.message.clone()),
            idle(),
            cond(STALLED, true, refusal.reason, refusal.message.clone()),
        ],
        Observation::InventoryFailed(failure) => {
            let message = failure.to_string();
            if failure.needs_human() {
                [
                    cond(READY, false, failure.reason(), message.clone()),
                    idle(),
                    cond(STALLED, true, failure.reason(), message),
                ]
            } else {
                let ready = match previous_ready {
                    Some(c) if !needs_human_reason(&c.reason) => ConditionState {
                        type_: READY,
                        status: c.status == "True",
                        reason: known_reason(&c.reason).unwrap_or(failure.reason()),
                        message: c.message.clone(),
                    },
                    _ => cond(READY, false, failure.reason(), message.clone()),
                };
                [
                    ready,
                    cond(RECONCILING, true, Reason::Retrying, message),
                    healthy(),
                ]
            }
        }
        Observation::Evaluated {
            results,
            summary,
            actions_succeeded,
            failures,
        } => {
            let ready = ready_condition(results, summary);
            let stalled = match failures.iter().find(|f| f.needs_human()) {
                Some(f) => cond(STALLED, true, f.reason(), f.to_string()),
                // Only a change of the policy can make it check something.
                None if ready.reason == Reason::NothingChecked => {
                    cond(STALLED, true, Reason::NothingChecked, ready.message.clone())
                }
                None => healthy(),
            };
            let reconciling = if stalled.status {
                idle()
            } else if !failures.is_empty() {
                cond(
                    RECONCILING,
                    true,
                    Reason::Retrying,
                    failures.first().map(Failure::to_string).unwrap_or_default(),
                )
            } else if *actions_succeeded > 0 {
                cond(
                    RECONCILING,
                    true,
                    Reason::Remediating,
                    format!(
                        "{actions_succeeded} remediation action(s) applied; verifying on the next sweep"
                    ),
                )
            } else if summary.pending_reboot > 0 && reboot != RebootPolicy::Never {
                cond(
                    RECONCILING,
                    true,
                    Reason::AwaitingReboot,
                    format!(
                        "{} database(s) wait for a reboot the policy allows (remediation.reboot: {})",
                        summary.pending_reboot,
                        reboot.as_str()
                    ),
                )
            } else {
                idle()
            };
            [ready, reconciling, stalled]
        }
    }
}

/// Whether a reason read back from the object is that of a failure a human must fix (it is not
/// kept once that failure is replaced by another).
fn needs_human_reason(reason: &str) -> bool {
    Reason::parse(reason).is_some_and(Reason::needs_human)
}

/// The Ready verdicts of an evaluation, the reasons a transient failure keeps.
const VERDICTS: [Reason; 7] = [
    Reason::Compliant,
    Reason::NonCompliant,
    Reason::PendingReboot,
    Reason::RemediationFailed,
    Reason::NoDatabasesSelected,
    Reason::NothingChecked,
    Reason::QuotaExceeded,
];

/// A Ready verdict read back from the object.
fn known_reason(s: &str) -> Option<Reason> {
    Reason::parse(s).filter(|r| VERDICTS.contains(r))
}

fn cond(type_: &'static str, status: bool, reason: Reason, message: String) -> ConditionState {
    ConditionState {
        type_,
        status,
        reason,
        message: truncate(message),
    }
}

fn truncate(message: String) -> String {
    crate::posture::report::ellipsize(message, MAX_MESSAGE)
}

/// `id (control, control)` for the first few databases with findings in `wanted`.
fn name_databases(results: &[DatabaseResult], wanted: &[FindingStatus]) -> (usize, String) {
    let hits: Vec<(&str, BTreeSet<ControlId>)> = results
        .iter()
        .filter_map(|r| {
            let controls: BTreeSet<ControlId> = r
                .findings
                .iter()
                .filter(|f| wanted.contains(&f.status))
                .map(|f| f.control)
                .collect();
            (!controls.is_empty()).then_some((r.id.as_str(), controls))
        })
        .collect();
    let mut text = hits
        .iter()
        .take(NAMED_IN_MESSAGE)
        .map(|(id, controls)| {
            let list: Vec<&str> = controls.iter().map(|c| c.as_str()).collect();
            format!("{id} ({})", list.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    if hits.len() > NAMED_IN_MESSAGE {
        text.push_str(&format!("; and {} more", hits.len() - NAMED_IN_MESSAGE));
    }
    (hits.len(), text)
}

fn ready_condition(results: &[DatabaseResult], summary: &Summary) -> ConditionState {
    if summary.selected == 0 {
        return cond(
            READY,
            false,
            Reason::NoDatabasesSelected,
            "the selector matches no PostgreSQL database".into(),
        );
    }
    if results.iter().all(|r| r.findings.is_empty()) {
        return cond(
            READY,
            false,
            Reason::NothingChecked,
            format!(
                "the policy checks nothing: its posture switches on no control, so none of the {} selected database(s) was checked; switch on at least one control in spec.posture (the apiserver rejects such a policy now; this one was stored before)",
                summary.selected
            ),
        );
    }
    let (failed, text) = name_databases(results, &[FindingStatus::Error]);
    if failed > 0 {
        return cond(
            READY,
            false,
            Reason::RemediationFailed,
            format!("{failed} database(s) could not be checked or fixed: {text}"),
        );
    }
    if summary.deferred > 0 {
        return cond(
            READY,
            false,
            Reason::QuotaExceeded,
            format!(
                "{} database(s) could not be remediated: the account's parameter-group quota in this region is used up; their findings say which groups",
                summary.deferred
            ),
        );
    }
    let (non_compliant, text) = name_databases(
        results,
        &[FindingStatus::NonCompliant, FindingStatus::ReportOnly],
    );
    if non_compliant > 0 {
        return cond(
            READY,
            false,
            Reason::NonCompliant,
            format!(
                "{non_compliant} of {} selected database(s) do not comply: {text}",
                summary.selected
            ),
        );
    }
    let (pending, text) = name_databases(results, &[FindingStatus::PendingReboot]);
    if pending > 0 {
        return cond(
            READY,
            false,
            Reason::PendingReboot,
            format!("{pending} database(s) comply once rebooted: {text}"),
        );
    }
    cond(
        READY,
        true,
        Reason::Compliant,
        format!("all {} selected database(s) comply", summary.selected),
    )
}

/// The status to write: conditions from [`conditions`] with `lastTransitionTime` kept from
/// `current` unless the status flipped; on an inventory failure the last known results stay.
pub fn next_status(
    current: Option<&DatabaseSecurityPolicyStatus>,
    generation: Option<i64>,
    observation: &Observation,
    reboot: RebootPolicy,
    now: Time,
) -> DatabaseSecurityPolicyStatus {
    let previous_ready = current.and_then(|s| find(&s.conditions, READY));
    let states = conditions(observation, reboot, previous_ready);
    let conditions = states
        .into_iter()
        .map(|state| {
            let status = if state.status { "True" } else { "False" };
            let last_transition_time = current
                .and_then(|s| find(&s.conditions, state.type_))
                .filter(|c| c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: state.type_.to_string(),
                status: status.to_string(),
                reason: state.reason.as_str().to_string(),
                message: state.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    let (summary, databases, databases_omitted) = match observation {
        Observation::Evaluated {
            results, summary, ..
        } => {
            let (databases, omitted) = bounded(results.clone());
            (summary.clone(), databases, omitted)
        }
        Observation::InventoryFailed(_) => current
            .map(|s| (s.summary.clone(), s.databases.clone(), s.databases_omitted))
            .unwrap_or_default(),
        // Results read from an account the policy may no longer use are not kept.
        Observation::Refused(_) => Default::default(),
    };
    DatabaseSecurityPolicyStatus {
        observed_generation: generation,
        conditions,
        summary,
        databases,
        databases_omitted,
    }
}

fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether `next` differs from `current` in anything but `lastTransitionTime`.
pub fn differs(
    current: Option<&DatabaseSecurityPolicyStatus>,
    next: &DatabaseSecurityPolicyStatus,
) -> bool {
    let Some(current) = current else {
        return true;
    };
    let strip = |s: &DatabaseSecurityPolicyStatus| {
        let mut s = s.clone();
        let epoch = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        for c in &mut s.conditions {
            c.last_transition_time = epoch.clone();
        }
        s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        s
    };
    strip(current) != strip(next)
}

/// The Ready reason of a status (the `result` label of the reconcile metric), when it has one
/// pgbaseline knows.
pub fn ready_reason(status: &DatabaseSecurityPolicyStatus) -> Option<Reason> {
    find(&status.conditions, READY).and_then(|c| Reason::parse(&c.reason))
}

/// Statuses and observations for the tests of this module and of the reconcile's decide stage.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::api::{DatabaseKind, Finding};

    pub(crate) fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("timestamp"))
    }

    pub(crate) fn db(id: &str, statuses: &[(ControlId, FindingStatus)]) -> DatabaseResult {
        let findings: Vec<Finding> = statuses
            .iter()
            .map(|(control, status)| Finding {
                control: *control,
                severity: crate::posture::catalogue::severity(*control),
                status: *status,
                observed: "o".into(),
                expected: "e".into(),
                message: String::new(),
            })
            .collect();
        DatabaseResult {
            id: id.into(),
            kind: DatabaseKind::Instance,
            region: "us-east-1".into(),
            engine: "postgres".into(),
            compliant: findings.iter().all(|f| f.status.is_compliant()),
            findings,
        }
    }

    pub(crate) fn evaluated(results: Vec<DatabaseResult>) -> Observation {
        let mut summary = Summary::default();
        for r in &results {
            summary.selected += 1;
            if r.compliant {
                summary.compliant += 1;
            } else {
                summary.non_compliant += 1;
            }
            if r.findings
                .iter()
                .any(|f| f.status == FindingStatus::PendingReboot)
            {
                summary.pending_reboot += 1;
            }
        }
        Observation::Evaluated {
            results,
            summary,
            actions_succeeded: 0,
            failures: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{db, evaluated, t};
    use super::*;

    #[test]
    fn remediation_deferred_for_the_quota_is_its_own_ready_reason() {
        let mut observation = evaluated(vec![db("a", &[(SSL, FindingStatus::NonCompliant)])]);
        if let Observation::Evaluated { summary, .. } = &mut observation {
            summary.deferred = 1;
        }
        let s = next_status(None, Some(1), &observation, RebootPolicy::Never, t(1));
        let ready = get(&s, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "QuotaExceeded")
        );
        assert!(ready.message.contains("quota"), "{}", ready.message);
    }

    fn get<'a>(s: &'a DatabaseSecurityPolicyStatus, type_: &str) -> &'a Condition {
        find(&s.conditions, type_).expect("condition present")
    }

    const SSL: ControlId = ControlId::ForceSsl;
    const IAM: ControlId = ControlId::IamAuth;

    #[test]
    fn compliant_fleet_is_ready() {
        let obs = evaluated(vec![db("a", &[(SSL, FindingStatus::Compliant)])]);
        let s = next_status(None, Some(3), &obs, RebootPolicy::Never, t(100));
        assert_eq!(get(&s, READY).status, "True");
        assert_eq!(get(&s, READY).reason, "Compliant");
        assert_eq!(get(&s, RECONCILING).status, "False");
        assert_eq!(get(&s, STALLED).status, "False");
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn ready_reasons_in_order_of_severity() {
        let cases = [
            (vec![], "NoDatabasesSelected"),
            (
                vec![
                    db("a", &[(SSL, FindingStatus::Error)]),
                    db("b", &[(SSL, FindingStatus::NonCompliant)]),
                ],
                "RemediationFailed",
            ),
            (
                vec![
                    db("a", &[(SSL, FindingStatus::PendingReboot)]),
                    db("b", &[(IAM, FindingStatus::ReportOnly)]),
                ],
                "NonCompliant",
            ),
            (
                vec![db(
                    "a",
                    &[
                        (SSL, FindingStatus::PendingReboot),
                        (IAM, FindingStatus::Remediated),
                    ],
                )],
                "PendingReboot",
            ),
            (
                vec![db("a", &[(SSL, FindingStatus::Remediated)])],
                "Compliant",
            ),
        ];
        for (results, want) in cases {
            let s = next_status(
                None,
                Some(1),
                &evaluated(results),
                RebootPolicy::Never,
                t(1),
            );
            assert_eq!(get(&s, READY).reason, want);
            assert_eq!(get(&s, READY).status == "True", want == "Compliant");
        }
    }

    #[test]
    fn a_policy_that_checks_nothing_is_not_ready_and_stalls() {
        // Selected databases, but no finding on any of them: every control is switched off.
        let obs = evaluated(vec![db("a", &[]), db("b", &[])]);
        let s = next_status(None, Some(1), &obs, RebootPolicy::Never, t(1));
        assert_eq!(get(&s, READY).status, "False");
        assert_eq!(get(&s, READY).reason, "NothingChecked");
        assert!(
            get(&s, READY).message.contains("checks nothing"),
            "{}",
            get(&s, READY).message
        );
        assert_eq!(get(&s, STALLED).status, "True");
        assert_eq!(get(&s, STALLED).reason, "NothingChecked");
        // A throttled sweep afterwards keeps the reason.
        let throttled = Observation::InventoryFailed(Failure::new(
            "DescribeDBInstances",
            "Throttling",
            "Rate exceeded",
        ));
        let s2 = next_status(Some(&s), Some(1), &throttled, RebootPolicy::Never, t(2));
        assert_eq!(get(&s2, READY).reason, "NothingChecked");
        assert_eq!(get(&s2, READY).status, "False");
    }

    #[test]
    fn message_names_databases_and_controls_boundedly() {
        let results: Vec<_> = (0..8)
            .map(|i| db(&format!("db{i}"), &[(SSL, FindingStatus::NonCompliant)]))
            .collect();
        let s = next_status(
            None,
            Some(1),
            &evaluated(results),
            RebootPolicy::Never,
            t(1),
        );
        let m = &get(&s, READY).message;
        assert!(
            m.starts_with("8 of 8 selected database(s) do not comply: db0 (transport.forceSsl)")
        );
        assert!(m.ends_with("and 3 more"), "{m}");
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let bad = evaluated(vec![db("a", &[(SSL, FindingStatus::NonCompliant)])]);
        let s1 = next_status(None, Some(1), &bad, RebootPolicy::Never, t(100));
        // Same observation later: nothing differs, timestamps kept.
        let s2 = next_status(Some(&s1), Some(1), &bad, RebootPolicy::Never, t(200));
        assert_eq!(s1, s2);
        assert!(!differs(Some(&s1), &s2));
        // Different message, same status: time kept, but the status differs.
        let bad2 = evaluated(vec![db("a", &[(IAM, FindingStatus::NonCompliant)])]);
        let s3 = next_status(Some(&s2), Some(1), &bad2, RebootPolicy::Never, t(300));
        assert_eq!(get(&s3, READY).last_transition_time, t(100));
        assert!(differs(Some(&s2), &s3));
        // Flip to True: time moves for Ready only.
        let good = evaluated(vec![db("a", &[(SSL, FindingStatus::Compliant)])]);
        let s4 = next_status(Some(&s3), Some(2), &good, RebootPolicy::Never, t(400));
        assert_eq!(get(&s4, READY).last_transition_time, t(400));
        assert_eq!(get(&s4, STALLED).last_transition_time, t(100));
        assert_eq!(get(&s4, READY).observed_generation, Some(2));
    }

    #[test]
    fn differs_ignores_only_transition_times() {
        let obs = evaluated(vec![db("a", &[(SSL, FindingStatus::Compliant)])]);
        let s1 = next_status(None, Some(1), &obs, RebootPolicy::Never, t(100));
        let mut s2 = s1.clone();
        for c in &mut s2.conditions {
            c.last_transition_time = t(999);
        }
        s2.conditions.reverse();
        assert!(!differs(Some(&s1), &s2));
        s2.summary.compliant = 7;
        assert!(differs(Some(&s1), &s2));
        assert!(differs(None, &s1));
    }

    #[test]
    fn access_denied_stalls_with_the_aws_code_and_keeps_results() {
        let good = evaluated(vec![db("a", &[(SSL, FindingStatus::Compliant)])]);
        let s1 = next_status(None, Some(1), &good, RebootPolicy::Never, t(1));
        let denied = Observation::InventoryFailed(Failure::new(
            "DescribeDBInstances",
            "AccessDenied",
            "not authorized",
        ));
        let s2 = next_status(Some(&s1), Some(1), &denied, RebootPolicy::Never, t(2));
        assert_eq!(get(&s2, STALLED).status, "True");
        assert_eq!(get(&s2, STALLED).reason, "AccessDenied");
        assert!(
            get(&s2, STALLED)
                .message
                .contains("DescribeDBInstances: AccessDenied")
        );
        assert_eq!(get(&s2, READY).status, "False");
        assert_eq!(get(&s2, READY).reason, "AccessDenied");
        assert_eq!(get(&s2, RECONCILING).status, "False");
        assert_eq!(s2.databases, s1.databases);
        assert_eq!(s2.summary, s1.summary);
    }

    #[test]
    fn missing_credentials_and_unknown_regions_stall_with_one_line() {
        let good = evaluated(vec![db("a", &[(SSL, FindingStatus::Compliant)])]);
        let s1 = next_status(None, Some(1), &good, RebootPolicy::Never, t(1));
        for (code, reason) in [
            ("NoCredentials", "NoCredentials"),
            ("InvalidCredentialsConfiguration", "NoCredentials"),
            ("UnknownRegion", "InvalidConfiguration"),
            ("NoRegion", "InvalidConfiguration"),
            ("InvalidClientTokenId", "AccessDenied"),
        ] {
            let failed = Observation::InventoryFailed(Failure::new(
                "DescribeDBInstances",
                code,
                "no AWS credentials: no provider gave any",
            ));
            let s2 = next_status(Some(&s1), Some(1), &failed, RebootPolicy::Never, t(2));
            assert_eq!(get(&s2, STALLED).status, "True", "{code}");
            assert_eq!(get(&s2, STALLED).reason, reason, "{code}");
            assert_eq!(get(&s2, READY).reason, reason, "{code}");
            assert_eq!(get(&s2, RECONCILING).status, "False", "{code}");
            let message = &get(&s2, STALLED).message;
            assert!(!message.contains('\n'), "{message}");
            assert!(message.starts_with(&format!("DescribeDBInstances: {code}: ")));
            // A transient error next does not keep the Ready of the failure a human fixed.
            let throttled = Observation::InventoryFailed(Failure::new(
                "DescribeDBInstances",
                "Timeout",
                "no answer in time",
            ));
            let s3 = next_status(Some(&s2), Some(1), &throttled, RebootPolicy::Never, t(3));
            assert_eq!(get(&s3, READY).reason, "AwsUnreachable", "{code}");
            assert_eq!(get(&s3, STALLED).status, "False", "{code}");
            assert_eq!(get(&s3, RECONCILING).reason, "Retrying", "{code}");
        }
    }

    #[test]
    fn transient_errors_keep_ready_and_mark_reconciling() {
        let good = evaluated(vec![db("a", &[(SSL, FindingStatus::Compliant)])]);
        let s1 = next_status(None, Some(1), &good, RebootPolicy::Never, t(1));
        let throttled = Observation::InventoryFailed(Failure::new(
            "DescribeDBParameters",
            "Throttling",
            "Rate exceeded",
        ));
        let s2 = next_status(Some(&s1), Some(1), &throttled, RebootPolicy::Never, t(2));
        assert_eq!(get(&s2, READY), get(&s1, READY));
        assert_eq!(get(&s2, RECONCILING).status, "True");
        assert_eq!(get(&s2, RECONCILING).reason, "Retrying");
        assert_eq!(get(&s2, STALLED).status, "False");
        // With no previous status, Ready is False with the error class.
        let s3 = next_status(None, Some(1), &throttled, RebootPolicy::Never, t(2));
        assert_eq!(get(&s3, READY).reason, "Throttled");
    }

    #[test]
    fn remediation_in_flight_and_reboots_the_policy_allows_are_reconciling() {
        let Observation::Evaluated {
            results, summary, ..
        } = evaluated(vec![db("a", &[(SSL, FindingStatus::Remediated)])])
        else {
            unreachable!()
        };
        let acted = Observation::Evaluated {
            results,
            summary,
            actions_succeeded: 2,
            failures: vec![],
        };
        let s = next_status(None, Some(1), &acted, RebootPolicy::Never, t(1));
        assert_eq!(get(&s, READY).status, "True");
        assert_eq!(get(&s, RECONCILING).reason, "Remediating");

        let pending = evaluated(vec![db("a", &[(SSL, FindingStatus::PendingReboot)])]);
        let never = next_status(None, Some(1), &pending, RebootPolicy::Never, t(1));
        assert_eq!(get(&never, RECONCILING).status, "False");
        let window = next_status(
            None,
            Some(1),
            &pending,
            RebootPolicy::MaintenanceWindow,
            t(1),
        );
        assert_eq!(get(&window, RECONCILING).reason, "AwaitingReboot");
        assert_eq!(get(&window, READY).reason, "PendingReboot");
    }

    #[test]
    fn failed_remediation_retries_unless_access_is_denied() {
        let results = vec![db("a", &[(SSL, FindingStatus::Error)])];
        let mk = |code: &str| {
            let Observation::Evaluated {
                results, summary, ..
            } = evaluated(results.clone())
            else {
                unreachable!()
            };
            Observation::Evaluated {
                results,
                summary,
                actions_succeeded: 0,
                failures: vec![Failure::new("ModifyDBInstance", code, "m")],
            }
        };
        let s = next_status(
            None,
            Some(1),
            &mk("InvalidDBInstanceState"),
            RebootPolicy::Never,
            t(1),
        );
        assert_eq!(get(&s, READY).reason, "RemediationFailed");
        assert_eq!(get(&s, RECONCILING).reason, "Retrying");
        assert_eq!(get(&s, STALLED).status, "False");
        let s = next_status(
            None,
            Some(1),
            &mk("AccessDenied"),
            RebootPolicy::Never,
            t(1),
        );
        assert_eq!(get(&s, STALLED).reason, "AccessDenied");
        assert!(
            get(&s, STALLED)
                .message
                .starts_with("ModifyDBInstance: AccessDenied")
        );
        assert_eq!(get(&s, RECONCILING).status, "False");
    }

    #[test]
    fn status_lists_a_bounded_number_of_databases() {
        let results: Vec<_> = (0..60)
            .map(|i| db(&format!("db{i:02}"), &[(SSL, FindingStatus::Compliant)]))
            .collect();
        let s = next_status(
            None,
            Some(1),
            &evaluated(results),
            RebootPolicy::Never,
            t(1),
        );
        assert_eq!(s.databases.len(), crate::api::MAX_DATABASES_IN_STATUS);
        assert_eq!(s.databases_omitted, 10);
        assert_eq!(s.summary.selected, 60);
    }

    #[test]
    fn every_condition_says_something_for_people() {
        let observations = [
            evaluated(vec![db("a", &[(SSL, FindingStatus::Compliant)])]),
            evaluated(vec![db("a", &[(SSL, FindingStatus::PendingReboot)])]),
            evaluated(vec![]),
            Observation::InventoryFailed(Failure::new(
                "DescribeDBInstances",
                "Timeout",
                "no answer in time",
            )),
        ];
        for obs in &observations {
            for reboot in [RebootPolicy::Never, RebootPolicy::MaintenanceWindow] {
                let s = next_status(None, Some(1), obs, reboot, t(1));
                for c in &s.conditions {
                    assert!(!c.message.trim().is_empty(), "{c:?}");
                    assert!(!c.message.contains("Some("), "{c:?}");
                }
            }
        }
        let s = next_status(
            None,
            Some(1),
            &observations[1],
            RebootPolicy::MaintenanceWindow,
            t(1),
        );
        assert!(
            get(&s, RECONCILING)
                .message
                .ends_with("(remediation.reboot: MaintenanceWindow)"),
            "{:?}",
            get(&s, RECONCILING)
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let m = truncate("é".repeat(MAX_MESSAGE));
        assert!(m.len() <= MAX_MESSAGE);
        assert!(m.ends_with("..."));
    }
}
