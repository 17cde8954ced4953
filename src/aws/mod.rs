//! The only module that talks to AWS (`aws_sdk_*` is imported nowhere else). It reads a region's
//! fleet economically (inventory) and executes plans idempotently (executor). SDK shapes become
//! the posture model at once; errors are classified and keep the AWS error code.

pub mod executor;
pub mod groups;
pub mod inventory;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region, retry::RetryConfig};
use aws_sdk_rds::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Default client-side limit, well under RDS's ~12 requests/s shared budget.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 8;

/// Kinds of AWS failure; the same strings name condition reasons and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    Throttled,
    AccessDenied,
    NotFound,
    InvalidState,
    Other,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "Throttled",
            ErrorClass::AccessDenied => "AccessDenied",
            ErrorClass::NotFound => "NotFound",
            ErrorClass::InvalidState => "InvalidState",
            ErrorClass::Other => "AwsError",
        }
    }

    /// Classifies an AWS error code.
    pub fn of_code(code: &str) -> ErrorClass {
        match code {
            "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
            | "RequestThrottled"
            | "SlowDown" => ErrorClass::Throttled,
            "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "AuthFailure"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "ExpiredToken"
            | "NotAuthorized" => ErrorClass::AccessDenied,
            c if c.ends_with("NotFound")
                || c.ends_with("NotFoundFault")
                || c.ends_with(".NotFound")
                || c == "NotFoundException" =>
            {
                ErrorClass::NotFound
            }
            c if c.starts_with("Invalid") && (c.contains("State") || c.ends_with("StateFault")) => {
                ErrorClass::InvalidState
            }
            _ => ErrorClass::Other,
        }
    }
}

/// An AWS call that failed, with the AWS error code and message (never request data).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{action}: {code}: {message}")]
pub struct AwsError {
    pub action: &'static str,
    pub class: ErrorClass,
    pub code: String,
    pub message: String,
}

impl AwsError {
    /// Builds an `AwsError` from any SDK error.
    pub fn from_sdk<E>(
        action: &'static str,
        err: aws_sdk_rds::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (code, message) = match &err {
            aws_sdk_rds::error::SdkError::ServiceError(service) => (
                service.err().code().unwrap_or("Unknown").to_string(),
                service.err().message().unwrap_or_default().to_string(),
            ),
            aws_sdk_rds::error::SdkError::TimeoutError(_) => {
                ("Timeout".to_string(), "request timed out".to_string())
            }
            aws_sdk_rds::error::SdkError::DispatchFailure(d) => {
                ("DispatchFailure".to_string(), format!("{d:?}"))
            }
            other => (
                other.code().unwrap_or("Unknown").to_string(),
                other
                    .message()
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
            ),
        };
        AwsError {
            action,
            class: ErrorClass::of_code(&code),
            code,
            message,
        }
    }
}

/// Counts of AWS call attempts (retries included) by service, operation and outcome.
#[derive(Debug, Default)]
pub struct CallStats {
    counts: Mutex<BTreeMap<(String, String, &'static str), u64>>,
}

impl CallStats {
    fn record(&self, service: &str, operation: &str, outcome: &'static str) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts
                .entry((service.to_string(), operation.to_string(), outcome))
                .or_insert(0) += 1;
        }
    }

    /// A copy of the counts: (service, operation, outcome) → attempts.
    pub fn snapshot(&self) -> BTreeMap<(String, String, &'static str), u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Total attempts of mutating calls (anything but Describe/List/Get).
    pub fn mutating_calls(&self) -> u64 {
        self.snapshot()
            .iter()
            .filter(|((_, op, _), _)| !is_read_operation(op))
            .map(|(_, n)| *n)
            .sum()
    }
}

/// Reads never change AWS.
pub fn is_read_operation(operation: &str) -> bool {
    ["Describe", "List", "Get"]
        .iter()
        .any(|p| operation.starts_with(p))
}

/// Records every attempt (retries included) in [`CallStats`].
#[derive(Debug)]
struct CountingInterceptor {
    stats: Arc<CallStats>,
}

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "pgbaseline-call-counter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
        let outcome = match context.response().map(|r| r.status().as_u16()) {
            Some(200..=299) => "success",
            Some(503) | Some(429) => "throttled",
            Some(_) => "error",
            None => "transport_error",
        };
        self.stats.record(&service, &operation, outcome);
        Ok(())
    }
}

/// SDK clients for one (account, region), sharing a client-side rate limit and call counts.
#[derive(Clone)]
pub struct AwsRegion {
    pub region: String,
    pub(crate) rds: aws_sdk_rds::Client,
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) kms: aws_sdk_kms::Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    pub stats: Arc<CallStats>,
}

impl std::fmt::Debug for AwsRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsRegion")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl AwsRegion {
    /// Clients from the standard environment (`AWS_ENDPOINT_URL`, credential chain), for
    /// `region` or the environment's region.
    pub async fn from_env(
        region: Option<&str>,
        requests_per_second: u32,
    ) -> Result<AwsRegion, AwsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // Throttling is expected under a shared budget: retry patiently.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(6)
                    .with_max_backoff(std::time::Duration::from_secs(5)),
            );
        if let Some(region) = region {
            loader = loader.region(Region::new(region.to_string()));
        }
        let config = loader.load().await;
        AwsRegion::from_config(&config, requests_per_second)
    }

    /// Clients from an explicit SDK configuration (tests, benchmarks).
    pub fn from_config(
        config: &aws_config::SdkConfig,
        requests_per_second: u32,
    ) -> Result<AwsRegion, AwsError> {
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| AwsError {
                action: "configure",
                class: ErrorClass::Other,
                code: "NoRegion".into(),
                message: "no AWS region: set AWS_REGION or the policy's selector.region".into(),
            })?;
        let stats = Arc::new(CallStats::default());
        let interceptor = || CountingInterceptor {
            stats: stats.clone(),
        };
        let rds = aws_sdk_rds::Client::from_conf(
            aws_sdk_rds::config::Builder::from(config)
                .interceptor(interceptor())
                .build(),
        );
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(config)
                .interceptor(interceptor())
                .build(),
        );
        let kms = aws_sdk_kms::Client::from_conf(
            aws_sdk_kms::config::Builder::from(config)
                .interceptor(interceptor())
                .build(),
        );
        let rate = NonZeroU32::new(requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = Arc::new(RateLimiter::direct(Quota::per_second(rate)));
        Ok(AwsRegion {
            region,
            rds,
            ec2,
            kms,
            limiter,
            stats,
        })
    }

    /// Waits for a token of the client-side rate limit.
    pub(crate) async fn throttle(&self) {
        self.limiter.until_ready().await;
    }

    /// Follows `Marker` until the last page, waiting for the rate limit before each call.
    pub(crate) async fn paged<T, F, Fut>(&self, mut page: F) -> Result<Vec<T>, AwsError>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), AwsError>>,
    {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            self.throttle().await;
            let (items, next) = page(marker.take()).await?;
            out.extend(items);
            match next {
                Some(m) if !m.is_empty() => marker = Some(m),
                _ => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_error_codes_are_classified() {
        let cases = [
            ("Throttling", ErrorClass::Throttled),
            ("RequestLimitExceeded", ErrorClass::Throttled),
            ("ThrottlingException", ErrorClass::Throttled),
            ("AccessDenied", ErrorClass::AccessDenied),
            ("UnauthorizedOperation", ErrorClass::AccessDenied),
            ("AccessDeniedException", ErrorClass::AccessDenied),
            ("DBInstanceNotFound", ErrorClass::NotFound),
            ("DBParameterGroupNotFoundFault", ErrorClass::NotFound),
            ("InvalidGroup.NotFound", ErrorClass::NotFound),
            ("InvalidDBInstanceState", ErrorClass::InvalidState),
            (
                "InvalidDBParameterGroupStateFault",
                ErrorClass::InvalidState,
            ),
            ("InvalidParameterValue", ErrorClass::Other),
        ];
        for (code, class) in cases {
            assert_eq!(ErrorClass::of_code(code), class, "{code}");
        }
    }

    #[test]
    fn only_describe_list_and_get_are_reads() {
        assert!(is_read_operation("DescribeDBInstances"));
        assert!(is_read_operation("ListAliases"));
        assert!(!is_read_operation("ModifyDBInstance"));
        assert!(!is_read_operation("RevokeSecurityGroupIngress"));
    }
}
