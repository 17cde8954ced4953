//! One policy over one region's fleet: select → evaluate → plan → execute → results. Shared by
//! `pgbaseline check` and the operator's reconcile, so both behave identically.

use chrono::{DateTime, Utc};

use crate::api::{DatabaseResult, DatabaseSecurityPolicySpec, Summary};
use crate::aws::{AwsRegion, executor};
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
}

/// Evaluates `spec` on `fleet` and executes its plan (which only holds Enforce-mode controls;
/// an Audit policy plans nothing, so nothing is executed).
pub async fn run_policy(
    spec: &DatabaseSecurityPolicySpec,
    fleet: &Fleet,
    aws: &AwsRegion,
    now: DateTime<Utc>,
) -> PolicyRun {
    let (evaluated_plan, outcomes) = {
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
        let outcomes = if plan.is_empty() {
            Vec::new()
        } else {
            executor::execute(aws, fleet, &plan).await
        };
        let (results, summary) = results(&evaluated, &plan, &outcomes);
        ((results, summary, plan), outcomes)
    };
    let (results, summary, plan) = evaluated_plan;
    PolicyRun {
        results,
        summary,
        plan,
        outcomes,
    }
}
