//! Reaching another AWS account: STS `AssumeRole` through the SDK's own provider
//! (`aws_config::sts::AssumeRoleProvider`), whose credentials the SDK's identity cache keeps and
//! refreshes before they expire, and `GetCallerIdentity` to check who we became.

use std::time::Duration;

use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
use aws_credential_types::provider::SharedCredentialsProvider;

use super::{AwsRegion, ErrorClass, Failure, timeout_config};

/// The session policy of every Audit session: whatever the role allows, the session can only
/// describe and list (AWS intersects a session policy with the role's policies).
pub const READ_ONLY_SESSION_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"PgbaselineAuditIsReadOnly","Effect":"Allow","Action":["rds:Describe*","rds:List*","ec2:Describe*","kms:Describe*","kms:List*","sts:GetCallerIdentity","rds-db:connect"],"Resource":"*"}]}"#;

/// Whether `code` says the credentials expired (a fresh session fixes it; no person needed).
pub fn is_expiry(code: &str) -> bool {
    matches!(
        code,
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" | "TokenRefreshRequired"
    )
}

/// The code of an assumed identity that is not in the account it should be.
pub const ACCOUNT_MISMATCH: &str = "AccountMismatch";

/// How to assume a role in an account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Assume {
    /// The account the assumed identity must belong to.
    pub account_id: String,
    pub role_arn: String,
    pub external_id: Option<String>,
    /// Names the session in the account's CloudTrail (`RoleSessionName`).
    pub session_name: String,
    /// Carry [`READ_ONLY_SESSION_POLICY`].
    pub read_only: bool,
    pub session_length: Duration,
}

/// Who STS says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
}

/// A valid `RoleSessionName` (`[\w+=,.@-]`, 2 to 64 characters) made of `parts`.
pub fn session_name(parts: &[&str]) -> String {
    let joined = parts.join("-");
    let mut name: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while name.len() < 2 {
        name.push('-');
    }
    name
}

/// The SDK configuration every client starts from: the standard chain (the operator's own
/// identity), patient retries and a time limit on every call.
async fn base_config(region: Option<&str>, call_timeout: Duration) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        // Throttling is expected under a shared budget: retry patiently.
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(6)
                .with_max_backoff(Duration::from_secs(5)),
        )
        // A hung endpoint must not hold a sweep (and every policy waiting on it) forever.
        .timeout_config(timeout_config(call_timeout));
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    loader.load().await
}

impl AwsRegion {
    /// Clients from the standard environment (`AWS_ENDPOINT_URL`, credential chain), for
    /// `region` or the environment's region; every call ends within `call_timeout`.
    pub async fn from_env(
        region: Option<&str>,
        requests_per_second: u32,
        call_timeout: Duration,
    ) -> Result<AwsRegion, Failure> {
        let config = base_config(region, call_timeout).await;
        AwsRegion::from_config(&config, requests_per_second)
    }

    /// Clients in `region` acting as `assume`'s role, assumed with the operator's own identity.
    /// Nothing is called yet: the first call assumes the role (and the SDK refreshes the
    /// credentials before they expire).
    pub async fn assumed(
        region: &str,
        assume: &Assume,
        requests_per_second: u32,
        call_timeout: Duration,
    ) -> Result<AwsRegion, Failure> {
        let base = base_config(Some(region), call_timeout).await;
        AwsRegion::assumed_with(&base, region, assume, requests_per_second, call_timeout).await
    }

    /// Like [`AwsRegion::assumed`], assuming the role with `base`'s identity and endpoint.
    pub async fn assumed_with(
        base: &aws_config::SdkConfig,
        region: &str,
        assume: &Assume,
        requests_per_second: u32,
        call_timeout: Duration,
    ) -> Result<AwsRegion, Failure> {
        let base = base
            .to_builder()
            .timeout_config(timeout_config(call_timeout))
            .build();
        let config = assumed_config(&base, region, assume).await;
        AwsRegion::from_config(&config, requests_per_second)
    }

    /// Clients acting as `assume`'s role in the same region, sharing this one's rate limit
    /// and call counts (the RDS budget is the account's and region's, whoever calls).
    pub async fn assumed_alongside(
        &self,
        assume: &Assume,
        call_timeout: Duration,
    ) -> Result<AwsRegion, Failure> {
        let base = base_config(Some(&self.region), call_timeout).await;
        let config = assumed_config(&base, &self.region, assume).await;
        AwsRegion::from_config_sharing(&config, self.limiter.clone(), self.stats.clone())
    }

    /// `GetCallerIdentity` with these clients' credentials (assuming the role first when they
    /// are an assumed role's).
    pub async fn caller_identity(&self) -> Result<CallerIdentity, Failure> {
        self.throttle().await;
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| self.locate(Failure::from_sdk("GetCallerIdentity", e)))?;
        Ok(CallerIdentity {
            account: out.account().unwrap_or_default().to_string(),
            arn: out.arn().unwrap_or_default().to_string(),
        })
    }

    /// Checks that these clients act in `account_id`; returns the caller's ARN.
    pub async fn verify_account(&self, account_id: &str) -> Result<String, Failure> {
        let who = self.caller_identity().await?;
        if who.account != account_id {
            return Err(Failure {
                call: "GetCallerIdentity",
                class: ErrorClass::AccessDenied,
                code: ACCOUNT_MISMATCH.into(),
                message: format!(
                    "the assumed identity {} belongs to account {}, not {account_id}: check the role ARN and the account id",
                    who.arn, who.account
                ),
            });
        }
        Ok(who.arn)
    }
}

async fn assumed_config(
    base: &aws_config::SdkConfig,
    region: &str,
    assume: &Assume,
) -> aws_config::SdkConfig {
    let mut builder = AssumeRoleProvider::builder(assume.role_arn.clone())
        .configure(base)
        .region(Region::new(region.to_string()))
        .session_name(assume.session_name.clone())
        .session_length(assume.session_length);
    if let Some(id) = &assume.external_id {
        builder = builder.external_id(id.clone());
    }
    if assume.read_only {
        builder = builder.policy(READ_ONLY_SESSION_POLICY);
    }
    let provider = builder.build().await;
    base.to_builder()
        .region(Region::new(region.to_string()))
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build()
}

/// AWS's code and message when `err` (a credentials error's source) is STS refusing
/// `AssumeRole`.
pub(super) fn assume_role_refusal(
    err: &(dyn std::error::Error + 'static),
) -> Option<(String, String)> {
    use aws_sdk_sts::error::ProvideErrorMetadata;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    type Refused =
        aws_sdk_sts::error::SdkError<AssumeRoleError, aws_smithy_runtime_api::http::Response>;
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>()
            && let Some(code) = refused.code()
        {
            return Some((
                code.to_string(),
                format!(
                    "STS refused to assume the account's role: {}",
                    refused.message().unwrap_or("no message")
                ),
            ));
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_valid_for_sts() {
        assert_eq!(
            session_name(&["pgbaseline", "pod-0", "payments"]),
            "pgbaseline-pod-0-payments"
        );
        assert_eq!(session_name(&["a b/c"]), "a-b-c");
        assert_eq!(session_name(&["x".repeat(100).as_str()]).len(), 64);
        assert_eq!(session_name(&[""]), "--");
    }

    #[test]
    fn the_audit_session_policy_allows_only_reads() {
        let policy: serde_json::Value =
            serde_json::from_str(READ_ONLY_SESSION_POLICY).expect("json");
        let actions = policy["Statement"][0]["Action"]
            .as_array()
            .expect("actions");
        for a in actions {
            // A database login (IAM authentication) changes nothing in AWS; in the database,
            // Audit reads in a read-only transaction.
            if a == "rds-db:connect" {
                continue;
            }
            let op = a.as_str().expect("str").split(':').nth(1).expect("op");
            let sample = op.replace('*', "DBInstances");
            assert!(super::super::is_read_operation(&sample), "{a}");
        }
        assert_eq!(policy["Statement"][0]["Effect"], "Allow");
    }
}
