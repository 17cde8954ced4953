//! One policy over one region's fleet: select → evaluate → plan → execute → results. Shared by
//! `pgbaseline check` and the operator's reconcile, so both behave identically.

use chrono::{DateTime, Utc};

use crate::api::{DatabaseResult, DatabaseSecurityPolicySpec, Summary};
use crate::aws::AwsRegion;
use crate::aws::executor::{self, Always, MayAct};
use crate::posture::report::{Outcome, results};
use crate::posture::select::select;
use crate::posture::{self, EvalContext, Fleet, Plan, PlanContext};

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
    now: DateTime<Utc>,
) -> PolicyRun {
    run_policy_while(spec, fleet, aws, now, &Always).await
}

/// As [`run_policy`], asking `may_act` before every mutating AWS call: the operator stops a
/// run as soon as its policy is deleted or changed or its replica loses the lead.
pub async fn run_policy_while(
    spec: &DatabaseSecurityPolicySpec,
    fleet: &Fleet,
    aws: &AwsRegion,
    now: DateTime<Utc>,
    may_act: &dyn MayAct,
) -> PolicyRun {
    let (evaluated_plan, executed) = {
        let ctx = EvalContext {
            now,
            kms_keys: &fleet.kms_keys,
        };
        let selected = select(&spec.selector, fleet);
        let evaluated: Vec<_> = selected
            .iter()
            .map(|d| (*d, posture::evaluate(spec, d, &ctx)))
            .collect();
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
