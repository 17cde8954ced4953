//! The only module that talks to AWS (`aws_sdk_*` is imported nowhere else). It reads a region's
//! fleet economically (inventory) and executes plans idempotently (executor). SDK shapes become
//! the posture model at once; errors are classified and keep the AWS error code.

pub mod convert;
pub mod executor;
pub mod groups;
pub mod inventory;
pub mod queue;
pub mod sts;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
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

/// Default limit on one AWS call, retries included.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The SDK's time limits for calls that may take `call`, retries included: an attempt gets a
/// third of it (so throttled calls still get their retries), connecting at most 5 s, and a
/// response must start within the attempt's limit. A hung endpoint costs at most `call`.
pub fn timeout_config(call: Duration) -> TimeoutConfig {
    let call = call.max(Duration::from_secs(1));
    let attempt = (call / 3).max(Duration::from_millis(500));
    TimeoutConfig::builder()
        .connect_timeout(attempt.min(Duration::from_secs(5)))
        .read_timeout(attempt)
        .operation_attempt_timeout(attempt)
        .operation_timeout(call)
        .build()
}

pub use crate::posture::failure::{ErrorClass, Failure, code};

/// Longest message kept from an error (status and events stay small).
const MAX_ERROR_MESSAGE: usize = 600;

/// Failures of AWS calls: from SDK errors, and where they happened.
impl Failure {
    /// Builds an `Failure` from any SDK error: AWS's code and message when AWS answered with
    /// an error, else a code of [`code`] and the cause from the error's source chain, on one
    /// line (never the SDK's `Debug` output).
    pub fn from_sdk<E>(
        action: &'static str,
        err: aws_sdk_rds::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        use aws_sdk_rds::error::SdkError;
        let (code, message) = match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status();
                let reason = http_reason(status.as_u16());
                let aws_message = service.err().message().map(str::trim).unwrap_or_default();
                match service.err().code() {
                    Some(code) if !aws_message.is_empty() => {
                        (code.to_string(), aws_message.to_string())
                    }
                    Some(code) => (
                        code.to_string(),
                        format!(
                            "AWS answered HTTP {} {reason} without a message",
                            status.as_u16()
                        ),
                    ),
                    None => (
                        code::INVALID_RESPONSE.to_string(),
                        format!(
                            "the endpoint answered HTTP {} {reason} without an AWS error code (is it an AWS endpoint for this region?){}",
                            status.as_u16(),
                            if aws_message.is_empty() {
                                String::new()
                            } else {
                                format!(": {aws_message}")
                            }
                        ),
                    ),
                }
            }
            SdkError::TimeoutError(_) => (
                code::TIMEOUT.to_string(),
                format!("no answer in time: {}", cause(&err)),
            ),
            SdkError::DispatchFailure(dispatch) => dispatch_failure(dispatch, &err),
            SdkError::ResponseError(_) => (
                code::INVALID_RESPONSE.to_string(),
                format!("the answer could not be read: {}", cause(&err)),
            ),
            SdkError::ConstructionFailure(_) => (
                code::INVALID_REQUEST.to_string(),
                format!("the request could not be built: {}", cause(&err)),
            ),
            _ => (code::SDK_FAILURE.to_string(), cause(&err)),
        };
        Failure {
            call: action,
            class: ErrorClass::of_code(&code),
            code,
            message: one_line(&message),
        }
    }

    /// The same error with where it happened (region and endpoint) appended, and an endpoint
    /// that does not resolve recognised as an unknown region when it is AWS's own.
    pub fn located(mut self, region: &str, endpoint: Option<&str>) -> Failure {
        let service = service_of(self.call);
        let host = match endpoint {
            Some(url) => url.to_string(),
            None => format!("https://{service}.{region}.amazonaws.com"),
        };
        if self.code == code::UNKNOWN_ENDPOINT && endpoint.is_none() {
            self.code = code::UNKNOWN_REGION.to_string();
            self.class = ErrorClass::InvalidConfiguration;
            self.message = format!(
                "{host} does not exist: is {region} an AWS region where {} is available? Check selector.region or AWS_REGION ({})",
                service.to_ascii_uppercase(),
                self.message
            );
        } else {
            self.message = format!("{} (region {region}, endpoint {host})", self.message);
        }
        self
    }
}

/// The cause of a dispatch failure: missing credentials, a name that does not resolve, a
/// refused connection, a timeout.
fn dispatch_failure(
    dispatch: &aws_smithy_runtime_api::client::result::DispatchFailure,
    err: &(dyn std::error::Error + 'static),
) -> (String, String) {
    use aws_credential_types::provider::error::CredentialsError;
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(credentials) = e.downcast_ref::<CredentialsError>() {
            let detail = credential_attempts(credentials).unwrap_or_else(|| cause_of(credentials));
            return match credentials {
                CredentialsError::CredentialsNotLoaded(_) => (
                    code::NO_CREDENTIALS.to_string(),
                    format!(
                        "no AWS credentials: no provider gave any ({detail}); give pgbaseline an IAM role (IRSA or EKS Pod Identity) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    ),
                ),
                CredentialsError::InvalidConfiguration(_) => (
                    code::CREDENTIALS_MISCONFIGURED.to_string(),
                    format!("the AWS credential configuration is invalid: {detail}"),
                ),
                _ => match sts::assume_role_refusal(credentials) {
                    // STS answered: its code (AccessDenied, ExpiredToken…) says what to fix.
                    Some(refusal) => refusal,
                    None => (
                        code::CONNECTION_FAILED.to_string(),
                        format!("AWS credentials could not be loaded: {detail}"),
                    ),
                },
            };
        }
        source = e.source();
    }
    let detail = cause(err);
    if dispatch.is_timeout() {
        (
            code::TIMEOUT.to_string(),
            format!("no answer in time: {detail}"),
        )
    } else if dispatch.is_io() && name_does_not_resolve(&detail) {
        (
            code::UNKNOWN_ENDPOINT.to_string(),
            format!("the endpoint's host name does not resolve: {detail}"),
        )
    } else if dispatch.is_io() {
        (
            code::CONNECTION_FAILED.to_string(),
            format!("could not reach AWS: {detail}"),
        )
    } else {
        (code::SDK_FAILURE.to_string(), detail)
    }
}

/// What each provider of the default credential chain said, as `Name: reason; …`.
fn credential_attempts(
    err: &aws_credential_types::provider::error::CredentialsError,
) -> Option<String> {
    use aws_config::meta::ProviderChainError;
    use aws_credential_types::provider::error::CredentialsError;
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(chain) = e.downcast_ref::<ProviderChainError<CredentialsError>>() {
            let attempts: Vec<String> = chain
                .attempts()
                .iter()
                .map(|a| format!("{}: {}", a.name(), innermost(a.error())))
                .collect();
            return Some(attempts.join("; "));
        }
        source = e.source();
    }
    None
}

/// The text of the deepest source of an error (the most specific reason).
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = err;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    one_line(&deepest.to_string())
}

/// A DNS answer that the name does not exist (not a DNS server that failed to answer).
fn name_does_not_resolve(detail: &str) -> bool {
    [
        "Name or service not known",
        "No address associated with hostname",
        "nodename nor servname provided",
        "No such host is known",
    ]
    .iter()
    .any(|m| detail.contains(m))
}

/// The source chain below an SDK error's own generic text, joined with `: `.
fn cause(err: &(dyn std::error::Error + 'static)) -> String {
    match err.source() {
        Some(source) => cause_of(source),
        None => err.to_string(),
    }
}

/// An error and its sources, joined with `: `; the SDK's generic wrapper texts (`io error`,
/// `other`, `timeout`) are left out where a source says more.
fn cause_of(err: &(dyn std::error::Error + 'static)) -> String {
    const GENERIC: [&str; 7] = [
        "io error",
        "other",
        "timeout",
        "user error",
        "dispatch failure",
        "response error",
        "failed to construct request",
    ];
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = one_line(&e.to_string());
        let next = e.source();
        let generic = GENERIC.contains(&text.as_str()) && next.is_some();
        // Some errors repeat their source's text in their own; keep the longer one only.
        if !generic && !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = next;
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

/// Whitespace (newlines included) collapsed to single spaces, cut at a char boundary.
pub fn one_line(text: &str) -> String {
    crate::posture::report::ellipsize(
        text.split_whitespace().collect::<Vec<_>>().join(" "),
        MAX_ERROR_MESSAGE,
    )
}

fn http_reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// The AWS service an action of ours belongs to (for naming its endpoint).
fn service_of(action: &str) -> &'static str {
    if action.contains("SecurityGroup")
        || action.contains("NetworkAcl")
        || action.contains("Subnet")
    {
        "ec2"
    } else if action.contains("Alias") || action.ends_with("Key") {
        "kms"
    } else if action.contains("Secret") {
        "secretsmanager"
    } else {
        "rds"
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
    pub(crate) sts: aws_sdk_sts::Client,
    /// Only for the RDS-managed master secrets (`database.connection.masterUserSecret`).
    pub(crate) secretsmanager: aws_sdk_secretsmanager::Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    pub stats: Arc<CallStats>,
    /// The endpoint every client uses when one is configured (`AWS_ENDPOINT_URL`); else AWS's
    /// own endpoints of the region.
    pub endpoint: Option<String>,
    /// The configuration the clients were made from (credentials and clock for IAM tokens).
    sdk: aws_config::SdkConfig,
}

impl std::fmt::Debug for AwsRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsRegion")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl AwsRegion {
    /// Clients from an explicit SDK configuration (tests, benchmarks).
    pub fn from_config(
        config: &aws_config::SdkConfig,
        requests_per_second: u32,
    ) -> Result<AwsRegion, Failure> {
        let rate = NonZeroU32::new(requests_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let limiter = Arc::new(RateLimiter::direct(Quota::per_second(rate)));
        AwsRegion::from_config_sharing(config, limiter, Arc::new(CallStats::default()))
    }

    /// Clients from `config` counting into `stats` and sharing `limiter`.
    fn from_config_sharing(
        config: &aws_config::SdkConfig,
        limiter: Arc<DefaultDirectRateLimiter>,
        stats: Arc<CallStats>,
    ) -> Result<AwsRegion, Failure> {
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| Failure {
                call: "configure",
                class: ErrorClass::InvalidConfiguration,
                code: code::NO_REGION.into(),
                message: "no AWS region: set AWS_REGION or the policy's selector.region".into(),
            })?;
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
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(config)
                .interceptor(interceptor())
                .build(),
        );
        let secretsmanager = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(config)
                .interceptor(interceptor())
                .build(),
        );
        Ok(AwsRegion {
            region,
            rds,
            ec2,
            kms,
            sts,
            secretsmanager,
            limiter,
            stats,
            endpoint: config.endpoint_url().map(str::to_string),
            sdk: config.clone(),
        })
    }

    /// An IAM database authentication token for `user` at `host:port` (the endpoint AWS reports,
    /// never one from a policy): a SigV4 presigned `rds-db:connect` request valid 15 minutes,
    /// signed in process with this region's credentials. No network call.
    pub async fn db_auth_token(
        &self,
        host: &str,
        port: u16,
        user: &str,
    ) -> Result<String, Failure> {
        use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config};
        let fail = |message: String| Failure {
            call: "GenerateDBAuthToken",
            class: ErrorClass::InvalidConfiguration,
            code: code::TOKEN_NOT_GENERATED.into(),
            message,
        };
        let mut builder = Config::builder()
            .hostname(host)
            .port(u64::from(port))
            .username(user)
            .region(aws_config::Region::new(self.region.clone()))
            .expires_in(900);
        if let Some(credentials) = self.sdk.credentials_provider() {
            builder = builder.credentials(credentials);
        }
        let config = builder.build().map_err(|e| fail(e.to_string()))?;
        AuthTokenGenerator::new(config)
            .auth_token(&self.sdk)
            .await
            .map(|t| t.as_str().to_string())
            .map_err(|e| fail(e.to_string()))
    }

    /// The user name and password of the secret RDS manages for a database's master user
    /// (`arn` as DescribeDBInstances/DescribeDBClusters report it in `MasterUserSecret`, never
    /// from a policy). The value is returned, never logged or put in an error: a secret that is
    /// not the JSON RDS writes is refused by its shape alone. Bounded by the clients' time limits.
    pub async fn master_user_secret(&self, arn: &str) -> Result<(String, String), Failure> {
        self.throttle().await;
        let out = self
            .secretsmanager
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| self.locate(Failure::from_sdk("GetSecretValue", e)))?;
        #[derive(serde::Deserialize)]
        struct Credentials {
            username: String,
            password: String,
        }
        let shape = || {
            Failure::new(
                "GetSecretValue",
                code::INVALID_RESPONSE,
                format!("{arn} does not hold the JSON RDS writes (username, password)"),
            )
        };
        let text = out.secret_string().ok_or_else(shape)?;
        let credentials: Credentials = serde_json::from_str(text).map_err(|_| shape())?;
        Ok((credentials.username, credentials.password))
    }

    /// `e` with this region and the endpoint it was sent to (see [`Failure::located`]).
    pub fn locate(&self, e: Failure) -> Failure {
        e.located(&self.region, self.endpoint.as_deref())
    }

    /// Waits for a token of the client-side rate limit.
    pub(crate) async fn throttle(&self) {
        self.limiter.until_ready().await;
    }

    /// Follows `Marker` until the last page, waiting for the rate limit before each call.
    pub(crate) async fn paged<T, F, Fut>(&self, mut page: F) -> Result<Vec<T>, Failure>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), Failure>>,
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

    mod sdk {
        pub use aws_sdk_rds::error::SdkError;
        pub use aws_sdk_rds::operation::describe_db_instances::DescribeDBInstancesError;
        pub use aws_smithy_runtime_api::client::result::ConnectorError;
        pub use aws_smithy_runtime_api::http::{Response, StatusCode};
        pub use aws_smithy_types::body::SdkBody;
        pub use aws_smithy_types::error::ErrorMetadata;
    }

    type Sdk = sdk::SdkError<sdk::DescribeDBInstancesError, sdk::Response>;

    fn io(text: &str) -> Sdk {
        Sdk::dispatch_failure(sdk::ConnectorError::io(Box::new(std::io::Error::other(
            text.to_string(),
        ))))
    }

    fn service(status: u16, code: Option<&str>, message: Option<&str>) -> Sdk {
        let mut meta = sdk::ErrorMetadata::builder();
        if let Some(code) = code {
            meta = meta.code(code);
        }
        if let Some(message) = message {
            meta = meta.message(message);
        }
        Sdk::service_error(
            sdk::DescribeDBInstancesError::generic(meta.build()),
            sdk::Response::new(
                sdk::StatusCode::try_from(status).expect("status"),
                sdk::SdkBody::empty(),
            ),
        )
    }

    /// One line, says something, and is not Rust `Debug` output.
    fn assert_for_people(e: &Failure) {
        let text = e.to_string();
        assert!(!e.message.trim().is_empty(), "{text}");
        assert!(!text.contains('\n'), "{text}");
        for debug in [
            "ConnectorError",
            "DispatchFailure {",
            "Some(",
            "kind:",
            "source:",
        ] {
            assert!(!text.contains(debug), "{debug} in {text}");
        }
    }

    #[test]
    fn failures_without_an_aws_code_say_what_failed_on_one_line() {
        // The endpoint answered, but not with an AWS error (before: `Unknown: `).
        let e = Failure::from_sdk("DescribeDBInstances", service(500, None, None));
        assert_eq!(e.code, "InvalidResponse");
        assert!(e.message.contains("HTTP 500"), "{e}");
        assert_for_people(&e);
        let e = e.located("xx-nowhere-1", Some("http://127.0.0.1:4566"));
        assert!(
            e.message
                .ends_with("(region xx-nowhere-1, endpoint http://127.0.0.1:4566)"),
            "{e}"
        );

        // Refused connection (before: the DispatchFailure's Debug dump).
        let e = Failure::from_sdk(
            "DescribeDBInstances",
            io("tcp connect error: Connection refused (os error 111)"),
        );
        assert_eq!(
            (e.code.as_str(), e.class),
            ("ConnectionFailed", ErrorClass::Unreachable)
        );
        assert!(
            e.message.contains("Connection refused (os error 111)"),
            "{e}"
        );
        assert_for_people(&e);

        // An AWS error with a code but no message still says something.
        let e = Failure::from_sdk(
            "DescribeDBInstances",
            service(403, Some("AccessDenied"), None),
        );
        assert_eq!(e.class, ErrorClass::AccessDenied);
        assert!(e.message.contains("HTTP 403"), "{e}");

        // AWS's own messages are kept, on one line.
        let e = Failure::from_sdk(
            "DescribeDBInstances",
            service(400, Some("InvalidParameterValue"), Some("bad\n  value")),
        );
        assert_eq!(e.message, "bad value");

        let e = Failure::from_sdk(
            "DescribeDBInstances",
            Sdk::timeout_error(Box::new(std::io::Error::other(
                "operation timeout (all attempts including retries) occurred after 6s",
            ))),
        );
        assert_eq!(
            (e.code.as_str(), e.class),
            ("Timeout", ErrorClass::Unreachable)
        );
        assert!(e.message.contains("after 6s"), "{e}");
        assert_for_people(&e);
    }

    #[test]
    fn an_unknown_region_needs_a_human_and_names_the_region_and_the_endpoint() {
        let dns = "dns error: failed to lookup address information: Name or service not known";
        let e = Failure::from_sdk("DescribeDBInstances", io(dns)).located("xx-nowhere-1", None);
        assert_eq!(e.code, "UnknownRegion");
        assert_eq!(e.class, ErrorClass::InvalidConfiguration);
        assert!(e.class.needs_human());
        assert!(
            e.message.contains("https://rds.xx-nowhere-1.amazonaws.com"),
            "{e}"
        );
        assert!(e.message.contains("xx-nowhere-1 an AWS region"), "{e}");
        assert!(e.message.contains("Name or service not known"), "{e}");
        assert_for_people(&e);
        // A configured endpoint that does not resolve is a configuration error too.
        let e = Failure::from_sdk("DescribeSecurityGroups", io(dns))
            .located("us-east-1", Some("http://aws.invalid"));
        assert_eq!(e.code, "UnknownEndpoint");
        assert!(e.class.needs_human());
        assert!(e.message.contains("endpoint http://aws.invalid"), "{e}");
        // A DNS server that does not answer is transient, not a missing region.
        let e = Failure::from_sdk(
            "DescribeDBInstances",
            io("dns error: Temporary failure in name resolution"),
        )
        .located("us-east-1", None);
        assert_eq!(e.class, ErrorClass::Unreachable);
        assert!(
            e.message.contains("https://rds.us-east-1.amazonaws.com"),
            "{e}"
        );
        let e = Failure::from_sdk("ListAliases", io(dns)).located("eu-west-1", None);
        assert!(
            e.message.contains("https://kms.eu-west-1.amazonaws.com"),
            "{e}"
        );
    }

    #[test]
    fn missing_credentials_need_a_human_and_say_so_on_one_line() {
        use aws_credential_types::provider::error::CredentialsError;
        let err = Sdk::dispatch_failure(sdk::ConnectorError::other(
            Box::new(CredentialsError::not_loaded(
                "no providers in chain provided credentials",
            )),
            None,
        ));
        let e = Failure::from_sdk("DescribeDBInstances", err);
        assert_eq!(e.code, "NoCredentials");
        assert_eq!(e.class, ErrorClass::NoCredentials);
        assert!(e.class.needs_human());
        assert!(e.message.starts_with("no AWS credentials"), "{e}");
        assert!(e.message.contains("IRSA"), "{e}");
        assert_for_people(&e);
        let err = Sdk::dispatch_failure(sdk::ConnectorError::other(
            Box::new(CredentialsError::invalid_configuration(
                "role loop in profile",
            )),
            None,
        ));
        let e = Failure::from_sdk("DescribeDBInstances", err);
        assert_eq!(e.class, ErrorClass::NoCredentials);
        assert!(e.message.contains("role loop in profile"), "{e}");
        // Invalid keys are AWS's answer: access denied, which needs a human too.
        for code in [
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "AuthFailure",
        ] {
            assert!(ErrorClass::of_code(code).needs_human(), "{code}");
        }
        for code in [
            "Throttling",
            "Timeout",
            "ConnectionFailed",
            "InvalidResponse",
        ] {
            assert!(!ErrorClass::of_code(code).needs_human(), "{code}");
        }
    }

    #[test]
    fn every_call_and_attempt_has_a_time_limit() {
        let c = timeout_config(Duration::from_secs(60));
        assert_eq!(c.operation_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(c.operation_attempt_timeout(), Some(Duration::from_secs(20)));
        assert_eq!(c.read_timeout(), Some(Duration::from_secs(20)));
        assert_eq!(c.connect_timeout(), Some(Duration::from_secs(5)));
        let c = timeout_config(Duration::from_secs(3));
        assert_eq!(c.operation_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(c.operation_attempt_timeout(), Some(Duration::from_secs(1)));
        assert_eq!(c.connect_timeout(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn only_describe_list_and_get_are_reads() {
        assert!(is_read_operation("DescribeDBInstances"));
        assert!(is_read_operation("ListAliases"));
        assert!(!is_read_operation("ModifyDBInstance"));
        assert!(!is_read_operation("RevokeSecurityGroupIngress"));
    }
}
