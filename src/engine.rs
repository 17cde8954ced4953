//! One policy over one region's fleet: select → evaluate → plan → execute → results. Shared by
//! `pgbaseline check` and the operator's reconcile, so both behave identically.

use chrono::{DateTime, Utc};

use crate::api::{DatabaseResult, DatabaseSecurityPolicySpec, Finding, Summary};
use crate::aws::AwsRegion;
use crate::aws::executor::{self, Always, MayAct};
use crate::postgres::{Layer, Login};
use crate::posture::effective;
use crate::posture::indb::{self, Observation};
use crate::posture::model::Database;
use crate::posture::report::{Outcome, results};
use crate::posture::select::select;
use crate::posture::{self, EvalContext, Evaluation, Fleet, Plan, PlanContext};

/// The in-database layer and how one policy logs in.
#[derive(Clone, Copy, Debug)]
pub struct DbAccess<'a> {
    pub layer: &'a Layer,
    pub login: &'a Login,
}

/// What one pass of a policy found and did.
#[derive(Debug, Clone)]
pub struct PolicyRun {
    /// Every selected database, non-compliant first (unbounded).
    pub results: Vec<DatabaseResult>,
    pub summary: Summary,
    pub plan: Plan,
    /// One per plan action, in order.
    pub outcomes: Vec<Outcome>,
    /// Why the execution stopped early (see [`executor::MayAct`]); `results` then describe a
    /// spec that no longer holds, or a replica that may no longer act.
    pub stopped: Option<String>,
}

/// Evaluates `spec` on `fleet` and executes its plan (which only holds Enforce-mode controls;
/// an Audit policy plans nothing, so nothing is executed).
pub async fn run_policy(
    spec: &DatabaseSecurityPolicySpec,
    fleet: &Fleet,
    aws: &AwsRegion,
    db: Option<DbAccess<'_>>,
    now: DateTime<Utc>,
) -> PolicyRun {
    run_policy_while(spec, fleet, aws, db, now, &Always).await
}

/// As [`run_policy`], asking `may_act` before every mutating AWS call: the operator stops a
/// run as soon as its policy is deleted or changed or its replica loses the lead.
pub async fn run_policy_while(
    spec: &DatabaseSecurityPolicySpec,
    fleet: &Fleet,
    aws: &AwsRegion,
    db: Option<DbAccess<'_>>,
    now: DateTime<Utc>,
    may_act: &dyn MayAct,
) -> PolicyRun {
    let (evaluated_plan, executed) = {
        let ctx = EvalContext {
            now,
            kms_keys: &fleet.kms_keys,
        };
        let selected = select(&spec.selector, fleet);
        let mut evaluated: Vec<_> = selected
            .iter()
            .map(|d| (*d, posture::evaluate(spec, d, &ctx)))
            .collect();
        if let Some(db) = db
            && indb::needed(spec)
        {
            in_database(spec, &mut evaluated, aws, db, may_act, &ctx).await;
        }
        let plan = posture::plan(spec, &evaluated, PlanContext { now, fleet });
        let executed = if plan.is_empty() {
            executor::Executed::default()
        } else {
            executor::execute_while(aws, fleet, &plan, may_act).await
        };
        let (results, summary) = results(&evaluated, &plan, &executed.outcomes);
        ((results, summary, plan), executed)
    };
    let (results, summary, plan) = evaluated_plan;
    PolicyRun {
        results,
        summary,
        plan,
        outcomes: executed.outcomes,
        stopped: executed.stopped,
    }
}

/// The in-database layer of one policy run: looks inside every selected database (at most the
/// layer's cap at once), compares the parameter controls with what each server runs, holds back
/// `transport.forceSsl` where plaintext clients are connected, evaluates the `database.*`
/// controls and, for those in Enforce, runs their SQL fixes and reads again. Appends the
/// findings to each database's evaluations.
async fn in_database(
    spec: &DatabaseSecurityPolicySpec,
    evaluated: &mut [(&Database, Vec<Evaluation>)],
    aws: &AwsRegion,
    db: DbAccess<'_>,
    may_act: &dyn MayAct,
    ctx: &EvalContext<'_>,
) {
    use futures::StreamExt;
    let reads = Reads {
        roles: indb::roles_of_interest(spec),
        parameters: effective::parameters_of(spec),
    };
    let pending: Vec<_> = evaluated
        .iter()
        .map(|(database, _)| one_database(spec, database, aws, db, may_act, &reads))
        .collect();
    let passes: Vec<(Observation, Vec<Finding>)> = futures::stream::iter(pending)
        .buffered(db.layer.concurrency())
        .collect()
        .await;
    for ((database, evaluations), (observation, findings)) in evaluated.iter_mut().zip(passes) {
        effective::refine(spec, database, evaluations, &observation.effective, ctx);
        indb::gate_force_ssl(spec, evaluations, &observation);
        evaluations.extend(findings.into_iter().map(|finding| Evaluation {
            finding,
            fixes: Vec::new(),
        }));
    }
}

/// What every look of one policy reads besides the catalogue.
struct Reads {
    /// Roles whose existence matters (`audit.pgaudit.role`).
    roles: Vec<String>,
    /// Settings whose effective values the parameter controls compare.
    parameters: Vec<String>,
}

/// Observe one database, and in Enforce fix and observe again.
async fn one_database(
    spec: &DatabaseSecurityPolicySpec,
    database: &Database,
    aws: &AwsRegion,
    db: DbAccess<'_>,
    may_act: &dyn MayAct,
    reads: &Reads,
) -> (Observation, Vec<Finding>) {
    let observation = db
        .layer
        .observe(database, db.login, aws, &reads.roles, &reads.parameters)
        .await;
    let before = indb::evaluate(spec, database, &observation);
    let fixes = indb::plan(spec, &before);
    if fixes.is_empty() {
        let findings = before.into_iter().map(|e| e.finding).collect();
        return (observation, findings);
    }
    if let Err(why) = may_act.may_act() {
        let findings = before
            .into_iter()
            .map(|mut e| {
                if !e.fixes.is_empty() {
                    e.finding.message = format!("{}; not remediated: {why}", e.finding.message);
                }
                e.finding
            })
            .collect();
        return (observation, findings);
    }
    let ran = db.layer.apply(database, db.login, aws, &fixes).await;
    // The SQL fixes change no server setting: the settings of the first look still hold, and
    // are not read twice.
    let mut again = db
        .layer
        .observe(database, db.login, aws, &reads.roles, &[])
        .await;
    again.effective = observation.effective;
    let after = indb::evaluate(spec, database, &again);
    (again, indb::after_fixes(&before, &after, &ran))
}
