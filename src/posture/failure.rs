//! One failure type and one reason vocabulary, without IO: an AWS call that failed, or a change
//! pgbaseline refused to make, is a [`Failure`]; every condition reason, Event reason and metric
//! label is a [`Reason`]. Findings, conditions, Events and metrics all say the same thing in the
//! same words, and a new reason is added in one place.

use std::fmt;

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident,)+) => {
        /// Every reason pgbaseline gives: condition reasons, Event reasons and metric labels.
        /// The text is CamelCase and stable (alerts and dashboards match on it).
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize,
            serde::Deserialize,
        )]
        pub enum Reason {
            $($(#[$doc])* $variant,)+
        }

        impl Reason {
            /// Every reason.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)+];

            /// The stable text, e.g. `NonCompliant`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => stringify!($variant),)+
                }
            }
        }
    };
}

reasons! {
    /// Every selected database complies.
    Compliant,
    /// A selected database does not comply.
    NonCompliant,
    /// A selected database complies once rebooted.
    PendingReboot,
    /// A finding could not be evaluated, or its remediation failed.
    RemediationFailed,
    /// The selector matches no database.
    NoDatabasesSelected,
    /// The policy checked no control on the databases it selected: a vacuous pass, never
    /// `Ready=True`.
    NothingChecked,
    /// Remediation needs a parameter group the account's quota has no room for.
    QuotaExceeded,
    /// A remediation action succeeded.
    Remediated,
    /// Remediation actions were applied in this pass and are verified on the next.
    Remediating,
    /// A run was stopped between two calls (the policy was deleted or changed, or this replica
    /// stopped leading).
    RemediationStopped,
    /// Databases wait for a reboot the policy allows.
    AwaitingReboot,
    /// A transient failure; retried with backoff.
    Retrying,
    /// Nothing in progress.
    Idle,
    /// Nothing needs a person to act.
    Healthy,
    /// AWS throttled past the retries.
    Throttled,
    /// AWS refused the caller (IAM, an invalid key, a bad signature).
    AccessDenied,
    /// No usable AWS credentials.
    NoCredentials,
    /// No region, an unknown region, or an endpoint that does not resolve.
    InvalidConfiguration,
    /// AWS could not be reached or did not answer in time.
    AwsUnreachable,
    /// An AWS resource does not exist.
    NotFound,
    /// An AWS resource is in a state that does not allow the call.
    InvalidState,
    /// Any other AWS error.
    AwsError,
    /// pgbaseline refused a change itself (it would have touched a default group, attached a
    /// group it could not prove, or was not how the catalogue fixes the control).
    Refused,
    /// The Kubernetes API failed.
    KubernetesError,
    /// The policy names an `AwsAccount` that does not exist.
    AccountNotFound,
    /// The policy's namespace may not use the account.
    NamespaceNotPermitted,
    /// The account does not allow the policy's mode (Enforce on an Audit-only account).
    ModeNotPermitted,
    /// The account does not list the policy's region.
    RegionNotPermitted,
    /// The account's external id Secret cannot be read.
    ExternalIdUnavailable,
    // In the database (`database.*` findings: the first word of an `Error` finding's message).
    /// AWS reports no endpoint for the database (it is being created, stopped or deleted).
    NoEndpoint,
    /// No TCP connection to the database within the connect timeout, or it was refused.
    DatabaseUnreachable,
    /// The database server's certificate did not verify against the CA bundle or the host name.
    TlsVerificationFailed,
    /// The database refused the login (wrong password, expired token, no `rds_iam`, pg_hba).
    AuthenticationFailed,
    /// The database credentials could not be had (a Secret or key missing, no managed master
    /// secret, a token not generated).
    CredentialsUnavailable,
    /// The database login role may not read or change what the control needs.
    PermissionDenied,
    /// A statement in the database ran past the statement or lock timeout.
    Timeout,
    /// Any other failure of a statement in the database.
    QueryFailed,
}

impl Reason {
    /// The reason of this text, if it is one (a reason read back from an object).
    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == text)
    }

    /// Whether retrying cannot help until a person changes something.
    pub fn needs_human(self) -> bool {
        matches!(
            self,
            Reason::AccessDenied
                | Reason::NoCredentials
                | Reason::InvalidConfiguration
                | Reason::AccountNotFound
                | Reason::NamespaceNotPermitted
                | Reason::ModeNotPermitted
                | Reason::RegionNotPermitted
                | Reason::ExternalIdUnavailable
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kinds of failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    Throttled,
    /// AWS refused the caller (denied by IAM, unknown or invalid key, bad signature).
    AccessDenied,
    /// No credentials at all (or an unusable credential configuration).
    NoCredentials,
    /// No region, a region that does not exist, or an endpoint that does not resolve.
    InvalidConfiguration,
    /// AWS could not be reached or did not answer in time (connection, DNS, timeout).
    Unreachable,
    NotFound,
    InvalidState,
    /// pgbaseline refused the change itself; no AWS call failed.
    Refused,
    Other,
}

impl ErrorClass {
    /// The reason this class of failure is reported with.
    pub fn reason(self) -> Reason {
        match self {
            ErrorClass::Throttled => Reason::Throttled,
            ErrorClass::AccessDenied => Reason::AccessDenied,
            ErrorClass::NoCredentials => Reason::NoCredentials,
            ErrorClass::InvalidConfiguration => Reason::InvalidConfiguration,
            ErrorClass::Unreachable => Reason::AwsUnreachable,
            ErrorClass::NotFound => Reason::NotFound,
            ErrorClass::InvalidState => Reason::InvalidState,
            ErrorClass::Refused => Reason::Refused,
            ErrorClass::Other => Reason::AwsError,
        }
    }

    /// Whether retrying cannot help until a person changes something (credentials, IAM, the
    /// region or the endpoint).
    pub fn needs_human(self) -> bool {
        self.reason().needs_human()
    }

    /// Whether the failure is the region's rather than one resource's: throttled past the
    /// retries, unreachable, no credentials, an unknown region. Other calls to the region would
    /// fail the same way.
    pub fn is_regional(self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled
                | ErrorClass::Unreachable
                | ErrorClass::NoCredentials
                | ErrorClass::InvalidConfiguration
        )
    }

    /// Classifies an AWS error code (or one of the codes pgbaseline gives failures that have
    /// none: [`code`]).
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
            | "ExpiredTokenException"
            | "SignatureDoesNotMatch"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "InvalidAccessKeyId"
            | "NotAuthorized" => ErrorClass::AccessDenied,
            code::NO_CREDENTIALS | code::CREDENTIALS_MISCONFIGURED => ErrorClass::NoCredentials,
            code::NO_REGION
            | code::UNKNOWN_REGION
            | code::UNKNOWN_ENDPOINT
            | code::INVALID_REQUEST
            | code::TOKEN_NOT_GENERATED
            | "OptInRequired" => ErrorClass::InvalidConfiguration,
            code::TIMEOUT | code::CONNECTION_FAILED => ErrorClass::Unreachable,
            code::REFUSED | code::REFUSED_MANAGED_GROUP => ErrorClass::Refused,
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

/// The codes pgbaseline gives failures that AWS gave no code for (the call never got an AWS
/// answer, the answer was not an AWS error, or pgbaseline refused the change).
pub mod code {
    /// No credential provider of the chain gave credentials.
    pub const NO_CREDENTIALS: &str = "NoCredentials";
    /// A credential provider is configured but unusable (a broken profile, a role loop).
    pub const CREDENTIALS_MISCONFIGURED: &str = "InvalidCredentialsConfiguration";
    /// No region configured.
    pub const NO_REGION: &str = "NoRegion";
    /// AWS's endpoint for the region does not exist (its name does not resolve).
    pub const UNKNOWN_REGION: &str = "UnknownRegion";
    /// A configured endpoint (`AWS_ENDPOINT_URL`) does not resolve.
    pub const UNKNOWN_ENDPOINT: &str = "UnknownEndpoint";
    /// The SDK could not build the request (e.g. a region it cannot make an endpoint of).
    pub const INVALID_REQUEST: &str = "InvalidRequest";
    /// No answer in time (connect, read, attempt or operation timeout).
    pub const TIMEOUT: &str = "Timeout";
    /// The connection failed (refused, reset, TLS, a DNS server that does not answer).
    pub const CONNECTION_FAILED: &str = "ConnectionFailed";
    /// An answer that is not an AWS response or error.
    pub const INVALID_RESPONSE: &str = "InvalidResponse";
    /// The SDK failed for another reason.
    pub const SDK_FAILURE: &str = "SdkFailure";
    /// An IAM database authentication token could not be generated (no credentials to sign it).
    pub const TOKEN_NOT_GENERATED: &str = "TokenNotGenerated";
    /// pgbaseline refused a change (a default group, an action the catalogue does not allow).
    pub const REFUSED: &str = "RefusedByPgbaseline";
    /// pgbaseline did not attach a managed copy it could not prove safe.
    pub const REFUSED_MANAGED_GROUP: &str = "RefusedManagedGroup";
}

/// A failure: an AWS call that failed (with AWS's error code and message, never request data),
/// or a change pgbaseline refused to make.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {code}: {message}")]
pub struct Failure {
    /// The AWS API call that failed or was refused (`DescribeDBInstances`,
    /// `ModifyDBParameterGroup`…).
    pub call: &'static str,
    pub class: ErrorClass,
    /// The AWS error code, or one of [`code`].
    pub code: String,
    /// One line, for people: AWS's message, or what failed and why.
    pub message: String,
}

impl Failure {
    /// A failure classified by its code.
    pub fn new(call: &'static str, code: &str, message: impl Into<String>) -> Failure {
        Failure {
            call,
            class: ErrorClass::of_code(code),
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// A change pgbaseline refused to make before `call` (`code` is one of the `Refused*`
    /// codes of [`code`]).
    pub fn refused(call: &'static str, code: &str, message: impl Into<String>) -> Failure {
        Failure {
            call,
            class: ErrorClass::Refused,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The reason this failure is reported with.
    pub fn reason(&self) -> Reason {
        self.class.reason()
    }

    /// Whether a human must act before a retry can succeed (access denied, no credentials, an
    /// unknown region or endpoint).
    pub fn needs_human(&self) -> bool {
        self.class.needs_human()
    }

    /// Whether pgbaseline refused the change itself (no AWS call failed).
    pub fn is_refusal(&self) -> bool {
        self.class == ErrorClass::Refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_are_camel_case() {
        for reason in Reason::ALL {
            let text = reason.as_str();
            assert_eq!(Reason::parse(text), Some(*reason));
            assert_eq!(reason.to_string(), text);
            assert!(text.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
            assert!(text.chars().all(|c| c.is_ascii_alphanumeric()), "{text}");
        }
        let mut texts: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), Reason::ALL.len());
        assert_eq!(Reason::parse("nonCompliant"), None);
    }

    #[test]
    fn the_stable_texts_do_not_change() {
        // Alerts and dashboards match on these.
        let expected = [
            (Reason::Compliant, "Compliant"),
            (Reason::NonCompliant, "NonCompliant"),
            (Reason::PendingReboot, "PendingReboot"),
            (Reason::RemediationFailed, "RemediationFailed"),
            (Reason::NoDatabasesSelected, "NoDatabasesSelected"),
            (Reason::NothingChecked, "NothingChecked"),
            (Reason::QuotaExceeded, "QuotaExceeded"),
            (Reason::Remediated, "Remediated"),
            (Reason::Remediating, "Remediating"),
            (Reason::RemediationStopped, "RemediationStopped"),
            (Reason::AwaitingReboot, "AwaitingReboot"),
            (Reason::Retrying, "Retrying"),
            (Reason::Idle, "Idle"),
            (Reason::Healthy, "Healthy"),
            (Reason::Throttled, "Throttled"),
            (Reason::AccessDenied, "AccessDenied"),
            (Reason::NoCredentials, "NoCredentials"),
            (Reason::InvalidConfiguration, "InvalidConfiguration"),
            (Reason::AwsUnreachable, "AwsUnreachable"),
            (Reason::NotFound, "NotFound"),
            (Reason::InvalidState, "InvalidState"),
            (Reason::AwsError, "AwsError"),
            (Reason::Refused, "Refused"),
            (Reason::KubernetesError, "KubernetesError"),
            (Reason::AccountNotFound, "AccountNotFound"),
            (Reason::NamespaceNotPermitted, "NamespaceNotPermitted"),
            (Reason::ModeNotPermitted, "ModeNotPermitted"),
            (Reason::RegionNotPermitted, "RegionNotPermitted"),
            (Reason::ExternalIdUnavailable, "ExternalIdUnavailable"),
            (Reason::NoEndpoint, "NoEndpoint"),
            (Reason::DatabaseUnreachable, "DatabaseUnreachable"),
            (Reason::TlsVerificationFailed, "TlsVerificationFailed"),
            (Reason::AuthenticationFailed, "AuthenticationFailed"),
            (Reason::CredentialsUnavailable, "CredentialsUnavailable"),
            (Reason::PermissionDenied, "PermissionDenied"),
            (Reason::Timeout, "Timeout"),
            (Reason::QueryFailed, "QueryFailed"),
        ];
        assert_eq!(expected.len(), Reason::ALL.len());
        for (reason, text) in expected {
            assert_eq!(reason.as_str(), text);
        }
    }

    #[test]
    fn every_class_has_its_reason_and_only_caller_problems_need_a_human() {
        let classes = [
            (ErrorClass::Throttled, Reason::Throttled, false),
            (ErrorClass::AccessDenied, Reason::AccessDenied, true),
            (ErrorClass::NoCredentials, Reason::NoCredentials, true),
            (
                ErrorClass::InvalidConfiguration,
                Reason::InvalidConfiguration,
                true,
            ),
            (ErrorClass::Unreachable, Reason::AwsUnreachable, false),
            (ErrorClass::NotFound, Reason::NotFound, false),
            (ErrorClass::InvalidState, Reason::InvalidState, false),
            (ErrorClass::Refused, Reason::Refused, false),
            (ErrorClass::Other, Reason::AwsError, false),
        ];
        for (class, reason, human) in classes {
            assert_eq!(class.reason(), reason, "{class:?}");
            assert_eq!(class.needs_human(), human, "{class:?}");
        }
        // The account guard's refusals need a person too; they come from no AWS call.
        let account_refusals = [
            Reason::AccountNotFound,
            Reason::NamespaceNotPermitted,
            Reason::ModeNotPermitted,
            Reason::RegionNotPermitted,
            Reason::ExternalIdUnavailable,
        ];
        for reason in Reason::ALL {
            let from_a_class = classes.iter().any(|(_, r, _)| r == reason);
            if reason.needs_human() {
                assert!(
                    from_a_class || account_refusals.contains(reason),
                    "{reason}"
                );
            }
        }
        assert!(account_refusals.iter().all(|r| r.needs_human()));
    }

    #[test]
    fn refusals_are_classified_by_construction_not_by_their_code_text() {
        let refused = Failure::refused("ModifyDBInstance", code::REFUSED_MANAGED_GROUP, "why");
        assert!(refused.is_refusal());
        assert_eq!(refused.reason(), Reason::Refused);
        assert_eq!(
            refused.to_string(),
            "ModifyDBInstance: RefusedManagedGroup: why"
        );
        // An AWS code that merely starts like ours is AWS's.
        assert!(!Failure::new("ModifyDBInstance", "RefusedSomething", "m").is_refusal());
        assert_eq!(
            Failure::new("X", code::REFUSED, "m").class,
            ErrorClass::Refused
        );
        let denied = Failure::new("DescribeDBInstances", "AccessDenied", "no");
        assert!(denied.needs_human() && !denied.is_refusal());
    }

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
            (code::TIMEOUT, ErrorClass::Unreachable),
            (code::NO_CREDENTIALS, ErrorClass::NoCredentials),
            (code::UNKNOWN_REGION, ErrorClass::InvalidConfiguration),
        ];
        for (code, class) in cases {
            assert_eq!(ErrorClass::of_code(code), class, "{code}");
        }
    }
}
