//! `AwsAccount`s: the guard a policy passes before any AWS call in an account (its namespace and
//! mode allowed, its region one of the account's), and the account controller that confirms
//! with STS that each account's role really is that account's (the account's status).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::api::account::AccountError;
use crate::api::{AwsAccount, AwsAccountSpec, AwsAccountStatus, DatabaseSecurityPolicy, Mode};
use crate::aws::sts::{Assume, session_name};
use crate::aws::{AwsRegion, Failure};

use super::fleet::AccountTarget;
use super::reconcile::{Context, Error, FIELD_MANAGER};
use super::status::Refusal;
use crate::posture::failure::Reason;

/// How often a verified account is verified again.
const VERIFY_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Where a policy's AWS work happens.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// The operator's own identity, in this region (the environment's when `None`).
    Own(Option<String>),
    /// An account reached by assuming its role.
    Account(Box<AccountTarget>),
}

/// Where a policy's work happens, one target per region it selects from: for a policy naming
/// an `AwsAccount`, the account checked — the policy's namespace and mode are allowed, every
/// region is one of the account's, and the external id can be read. Reads only Kubernetes (the
/// account from the cache, the namespace's labels, the external id's Secret): a refused policy
/// makes no AWS call at all.
pub async fn resolve(
    ctx: &Context,
    policy: &DatabaseSecurityPolicy,
) -> Result<Result<Vec<Target>, Refusal>, Error> {
    let spec = &policy.spec;
    let Some(account_ref) = &spec.account_ref else {
        let regions = spec.regions();
        if regions.is_empty() {
            return Ok(Ok(vec![Target::Own(None)]));
        }
        return Ok(Ok(regions
            .into_iter()
            .map(|r| Target::Own(Some(r.to_string())))
            .collect()));
    };
    let namespace = policy.namespace().unwrap_or_default();
    let Some(account) = ctx.account(&account_ref.name) else {
        return Ok(Err(Refusal {
            reason: Reason::AccountNotFound,
            message: format!(
                "AwsAccount {} does not exist; a platform admin creates it (accounts are cluster-scoped)",
                account_ref.name
            ),
        }));
    };
    let allowed = &account.spec.allowed_namespaces;
    let permitted = if allowed.names.iter().flatten().any(|n| *n == namespace) {
        true
    } else if allowed.selector.is_some() {
        let labels = namespace_labels(ctx, &namespace).await?;
        allowed.allows(&namespace, &labels)
    } else {
        false
    };
    if !permitted {
        return Ok(Err(Refusal {
            reason: Reason::NamespaceNotPermitted,
            message: format!(
                "AwsAccount {} does not allow namespace {namespace} (spec.allowedNamespaces); nothing is read or changed in account {}",
                account_ref.name, account.spec.account_id
            ),
        }));
    }
    let enforces = spec.enforces_anything();
    if enforces && !account.spec.allows_mode(Mode::Enforce) {
        return Ok(Err(Refusal {
            reason: Reason::ModeNotPermitted,
            message: format!(
                "AwsAccount {} allows only Audit (spec.allowedModes), and this policy enforces; use mode: Audit or ask a platform admin to allow Enforce",
                account_ref.name
            ),
        }));
    }
    if !account.spec.allows_mode(Mode::Audit) && !enforces {
        return Ok(Err(Refusal {
            reason: Reason::ModeNotPermitted,
            message: format!(
                "AwsAccount {} does not allow Audit (spec.allowedModes)",
                account_ref.name
            ),
        }));
    }
    let mut regions: Vec<String> = spec.regions().into_iter().map(str::to_string).collect();
    if regions.is_empty() {
        regions.extend(account.spec.regions.first().cloned());
    }
    if let Some(region) = regions.iter().find(|r| !account.spec.regions.contains(r)) {
        return Ok(Err(Refusal {
            reason: Reason::RegionNotPermitted,
            message: format!(
                "region {region} is not one of AwsAccount {}'s regions ({})",
                account_ref.name,
                account.spec.regions.join(", ")
            ),
        }));
    }
    let external_id = match external_id(ctx, &account.spec).await? {
        Ok(id) => id,
        Err(message) => {
            return Ok(Err(Refusal {
                reason: Reason::ExternalIdUnavailable,
                message,
            }));
        }
    };
    Ok(Ok(regions
        .iter()
        .map(|region| {
            Target::Account(Box::new(target(
                &ctx.identity(),
                &account.name_any(),
                &account.spec,
                region,
                external_id.clone(),
            )))
        })
        .collect()))
}

/// How to reach `spec`'s account in `region` as replica `identity`.
pub fn target(
    identity: &str,
    name: &str,
    spec: &AwsAccountSpec,
    region: &str,
    external_id: Option<String>,
) -> AccountTarget {
    let assume = |enforce: bool| {
        let (role, read_only) = spec.role_for(enforce);
        Assume {
            account_id: spec.account_id.clone(),
            role_arn: role.to_string(),
            external_id: external_id.clone(),
            session_name: session_name(&["pgbaseline", identity, name]),
            read_only,
            session_length: Duration::from_secs(u64::from(spec.session_duration_seconds)),
        }
    };
    AccountTarget {
        name: name.to_string(),
        region: region.to_string(),
        audit: assume(false),
        enforce: spec.allows_mode(Mode::Enforce).then(|| assume(true)),
    }
}

async fn namespace_labels(
    ctx: &Context,
    namespace: &str,
) -> Result<BTreeMap<String, String>, Error> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let ns = api.get_metadata_opt(namespace).await?;
    Ok(ns
        .and_then(|n| n.metadata.labels)
        .unwrap_or_default()
        .into_iter()
        .collect())
}

/// The external id from the account's Secret (`Ok(None)` when the account names none), or why
/// it cannot be read, for people.
async fn external_id(
    ctx: &Context,
    spec: &AwsAccountSpec,
) -> Result<Result<Option<String>, String>, Error> {
    let Some(secret_ref) = &spec.external_id_secret_ref else {
        return Ok(Ok(None));
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &secret_ref.namespace);
    let where_ = format!(
        "Secret {}/{} key {}",
        secret_ref.namespace, secret_ref.name, secret_ref.key
    );
    let secret = match api.get(&secret_ref.name).await {
        Ok(s) => s,
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => {
            return Ok(Err(format!(
                "the external id's {where_} cannot be read: {} ({})",
                e.message, e.code
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&secret_ref.key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&secret_ref.key))
                .map(|s| s.trim().to_string())
        });
    Ok(match value {
        Some(v) if !v.is_empty() => Ok(Some(v)),
        _ => Err(format!(
            "the external id's {where_} has no such key or it is empty"
        )),
    })
}

// ------------------------------------------------------------------------------------------
// The account controller: Ready once STS confirms the assumed identity in every region.

/// Verifies one account: assumes its Audit role in each region and checks `GetCallerIdentity`.
pub async fn reconcile_account(
    account: Arc<AwsAccount>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if let Some(shards) = &ctx.shards
        && !shards.holds(&[super::scaleout::account_key(&account)])
    {
        // Verified by the holder of the account's home key; once this replica takes it, the
        // controller is triggered and the account verified here afresh.
        if let Ok(mut checks) = ctx.account_checks.lock() {
            checks.remove(&account.name_any());
        }
        return Ok(Action::await_change());
    }
    let name = account.name_any();
    let generation = account.meta().generation;
    let uid = account.meta().uid.clone();
    let due = ctx
        .account_checks
        .lock()
        .ok()
        .and_then(|m| m.get(&name).cloned())
        .filter(|(u, g, _)| *u == uid && *g == generation)
        .and_then(|(_, _, due)| due.checked_duration_since(std::time::Instant::now()));
    if let Some(wait) = due {
        return Ok(Action::requeue(wait));
    }
    let mut verified = Vec::new();
    let mut caller = None;
    let mut failure: Option<AccountError> = None;
    match external_id(&ctx, &account.spec).await? {
        Err(message) => {
            failure = Some(AccountError {
                region: None,
                code: Reason::ExternalIdUnavailable.as_str().into(),
                message,
            })
        }
        Ok(external) => {
            for region in &account.spec.regions {
                let t = target(
                    &ctx.identity(),
                    &name,
                    &account.spec,
                    region,
                    external.clone(),
                );
                match verify(&ctx, &t).await {
                    Ok(arn) => {
                        verified.push(region.clone());
                        caller.get_or_insert(arn);
                    }
                    Err(e) => {
                        ctx.metrics.account_failure(&name, &e.code);
                        failure.get_or_insert(AccountError {
                            region: Some(region.clone()),
                            code: e.code.clone(),
                            message: e.message.clone(),
                        });
                    }
                }
            }
        }
    }
    let now = Time(
        k8s_openapi::jiff::Timestamp::from_second(Utc::now().timestamp())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    );
    let next = account_status(
        account.status.as_ref(),
        generation,
        caller,
        verified,
        failure.clone(),
        now,
    );
    if account.status.as_ref() != Some(&next) {
        let api: Api<AwsAccount> = Api::all(ctx.client.clone());
        let patch = serde_json::json!({
            "apiVersion": "pgbaseline.io/v1alpha1",
            "kind": "AwsAccount",
            "status": next,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        tracing::info!(account = %name, ready = failure.is_none(), "account status updated");
    }
    let again = match failure {
        None => VERIFY_EVERY,
        Some(_) => Duration::from_secs(60),
    };
    if let Ok(mut checks) = ctx.account_checks.lock() {
        checks.insert(name, (uid, generation, std::time::Instant::now() + again));
    }
    Ok(Action::requeue(again))
}

async fn verify(ctx: &Context, target: &AccountTarget) -> Result<String, Failure> {
    let aws = AwsRegion::assumed(
        &target.region,
        &target.audit,
        ctx.requests_per_second(),
        ctx.call_timeout(),
    )
    .await?;
    aws.verify_account(&target.audit.account_id).await
}

pub fn account_error_policy(account: Arc<AwsAccount>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(account = %account.name_any(), %error, "account reconcile failed");
    Action::requeue(Duration::from_secs(30))
}

/// The account's next status; conditions keep their transition time while unchanged.
fn account_status(
    current: Option<&AwsAccountStatus>,
    generation: Option<i64>,
    caller: Option<String>,
    verified: Vec<String>,
    failure: Option<AccountError>,
    now: Time,
) -> AwsAccountStatus {
    let states: [(&str, bool, String, String); 3] = match &failure {
        None => [
            (
                "Ready",
                true,
                "Verified".into(),
                format!(
                    "STS confirmed the assumed identity in {}",
                    verified.join(", ")
                ),
            ),
            ("Reconciling", false, "Idle".into(), "verified".into()),
            (
                "Stalled",
                false,
                "Healthy".into(),
                "nothing needs a person to act".into(),
            ),
        ],
        Some(f) => {
            let message = format!(
                "{}{}: {}",
                f.region
                    .as_ref()
                    .map(|r| format!("region {r}: "))
                    .unwrap_or_default(),
                f.code,
                f.message
            );
            let reason = match f.code.as_str() {
                c if c == Reason::ExternalIdUnavailable.as_str() => c.to_string(),
                c if c == crate::aws::sts::ACCOUNT_MISMATCH => c.to_string(),
                c => crate::aws::ErrorClass::of_code(c)
                    .reason()
                    .as_str()
                    .to_string(),
            };
            [
                ("Ready", false, reason.clone(), message.clone()),
                (
                    "Reconciling",
                    false,
                    "Idle".into(),
                    "retried in a minute".into(),
                ),
                ("Stalled", true, reason, message),
            ]
        }
    };
    let conditions = states
        .into_iter()
        .map(|(type_, status, reason, message)| {
            let status = if status { "True" } else { "False" };
            let last_transition_time = current
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
                .filter(|c| c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason,
                message: crate::aws::one_line(&message),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    AwsAccountStatus {
        observed_generation: generation,
        conditions,
        caller_arn: caller,
        regions_verified: verified,
        last_error: failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::account::AllowedNamespaces;

    fn spec() -> AwsAccountSpec {
        AwsAccountSpec {
            account_id: "222222222222".into(),
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            audit_role_arn: "arn:aws:iam::222222222222:role/audit".into(),
            enforce_role_arn: Some("arn:aws:iam::222222222222:role/enforce".into()),
            external_id_secret_ref: None,
            allowed_namespaces: AllowedNamespaces {
                names: Some(vec!["payments".into()]),
                selector: None,
            },
            allowed_modes: vec![Mode::Audit],
            session_duration_seconds: 900,
        }
    }

    #[test]
    fn an_audit_only_account_has_no_enforce_session_and_the_audit_one_is_read_only() {
        let t = target("pod-0", "payments", &spec(), "eu-west-1", Some("x".into()));
        assert!(t.enforce.is_none());
        assert!(t.audit.read_only);
        assert_eq!(t.audit.session_name, "pgbaseline-pod-0-payments");
        assert_eq!(t.audit.external_id.as_deref(), Some("x"));
        let mut s = spec();
        s.allowed_modes.push(Mode::Enforce);
        let t = target("pod-0", "payments", &s, "eu-west-1", None);
        let enforce = t.enforce.expect("enforce session");
        assert!(!enforce.read_only);
        assert_eq!(enforce.role_arn, "arn:aws:iam::222222222222:role/enforce");
    }

    #[test]
    fn account_status_says_what_failed_with_the_aws_code_and_keeps_transition_times() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(100).expect("timestamp"));
        let failed = account_status(
            None,
            Some(1),
            None,
            vec![],
            Some(AccountError {
                region: Some("us-east-1".into()),
                code: "AccessDenied".into(),
                message: "not authorized to perform sts:AssumeRole".into(),
            }),
            t0.clone(),
        );
        let ready = failed
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "AccessDenied")
        );
        assert!(
            ready.message.contains("region us-east-1: AccessDenied"),
            "{}",
            ready.message
        );
        let again = account_status(
            Some(&failed),
            Some(1),
            None,
            vec![],
            failed.last_error.clone(),
            t1,
        );
        assert_eq!(again, failed);
        let ok = account_status(
            Some(&failed),
            Some(1),
            Some("arn:aws:sts::222222222222:assumed-role/audit/s".into()),
            vec!["us-east-1".into()],
            None,
            t0,
        );
        assert!(ok.last_error.is_none());
        assert_eq!(ok.regions_verified, vec!["us-east-1".to_string()]);
    }
}
