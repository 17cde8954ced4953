//! The `AwsAccount` custom resource: an AWS account the platform admin lets tenants use.
//!
//! Cluster-scoped and owned by the platform admin (only they get RBAC to create it): a tenant
//! names an account from its policy (`spec.accountRef`) but can never invent a role ARN. The
//! account says which namespaces may use it and in which modes; the operator checks both
//! before any AWS call in that account.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Mode;

/// An AWS account pgbaseline may assume roles in, and which namespaces may use it.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pgbaseline.io",
    version = "v1alpha1",
    kind = "AwsAccount",
    shortname = "awsacct",
    category = "pgbaseline",
    status = "AwsAccountStatus",
    derive = "PartialEq",
    doc = "AwsAccount names an AWS account pgbaseline reaches by assuming a role (with an external id), the regions it may work in, and which namespaces may point their DatabaseSecurityPolicies at it and in which modes. Cluster-scoped: only platform admins create it.",
    printcolumn(
        name = "Account",
        type_ = "string",
        json_path = ".spec.accountId",
        description = "AWS account id"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "True when STS confirmed the assumed identity belongs to the account"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.auditRoleArn.contains(':iam::' + self.accountId + ':role/')").message("auditRoleArn must be a role of accountId").field_path(".auditRoleArn"))]
#[x_kube(validation = Rule::new("!has(self.enforceRoleArn) || self.enforceRoleArn.contains(':iam::' + self.accountId + ':role/')").message("enforceRoleArn must be a role of accountId").field_path(".enforceRoleArn"))]
#[serde(rename_all = "camelCase")]
pub struct AwsAccountSpec {
    /// The 12-digit AWS account id. The identity STS returns for the assumed role must belong
    /// to it, or the account is not used.
    #[schemars(regex(pattern = r"^[0-9]{12}$"), length(min = 12, max = 12))]
    pub account_id: String,

    /// The regions policies may use in this account (the first is the default of a policy that
    /// names none).
    #[schemars(
        length(min = 1, max = 32),
        inner(regex(pattern = r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$"))
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub regions: Vec<String>,

    /// The role assumed to read (Audit). Its sessions also carry a read-only session policy, so
    /// even a broad role cannot write through them.
    #[schemars(
        regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$"),
        length(max = 600)
    )]
    pub audit_role_arn: String,

    /// The role assumed to remediate (Enforce); the Audit role (without the read-only session
    /// policy) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$"),
        length(max = 600)
    )]
    pub enforce_role_arn: Option<String>,

    /// The Secret holding the external id the roles' trust policies require (`sts:ExternalId`).
    /// The operator reads only this Secret, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_secret_ref: Option<SecretKeyRef>,

    /// Which namespaces may use this account. A namespace is allowed when it is listed in
    /// `names` or its labels match `selector`.
    pub allowed_namespaces: AllowedNamespaces,

    /// The modes policies may use here: `[Audit]` (default) or `[Audit, Enforce]`. A policy
    /// asking Enforce of an Audit-only account is refused before any AWS call.
    #[serde(default = "default_modes")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_modes: Vec<Mode>,

    /// How long an assumed-role session lasts, in seconds (STS: 900 to the role's maximum).
    /// Credentials are refreshed before they expire.
    #[serde(default = "default_session_seconds")]
    #[schemars(range(min = 900, max = 43200))]
    #[schemars(with = "i32")]
    pub session_duration_seconds: u32,
}

fn default_modes() -> Vec<Mode> {
    vec![Mode::Audit]
}

fn default_session_seconds() -> u32 {
    3600
}

/// A key of a Secret, by namespace and name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the external id.
    #[serde(default = "default_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_key() -> String {
    "externalId".into()
}

/// Namespaces allowed to use an account: by name and/or by labels.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("(has(self.names) && size(self.names) > 0) || has(self.selector)").message("allowedNamespaces needs names or a selector"))]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 63)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub names: Option<Vec<String>>,
    /// Namespaces allowed by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<NamespaceSelector>,
}

/// A label selector over namespaces (as Kubernetes' `LabelSelector`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("a selector needs matchLabels or matchExpressions (an empty one would allow every namespace)"))]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 32))]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub match_expressions: Option<Vec<LabelRequirement>>,
}

/// One label requirement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)").message("In and NotIn need values; Exists and DoesNotExist take none"))]
#[serde(rename_all = "camelCase")]
pub struct LabelRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: LabelOperator,
    /// The values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub values: Option<Vec<String>>,
}

/// A label selector operator.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Observed state of an account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AwsAccountStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (STS confirmed the assumed identity is this account in every region),
    /// `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The assumed identity STS returned (`arn:aws:sts::<account>:assumed-role/<role>/<session>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_arn: Option<String>,
    /// The regions where the Audit role was assumed and verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions_verified: Vec<String>,
    /// The last failure, with its AWS error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<AccountError>,
}

/// A failure to use an account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountError {
    /// The region the failure happened in, when it is one region's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The AWS error code (`AccessDenied`, `ExpiredToken`…) or pgbaseline's own
    /// (`AccountMismatch`, `ExternalIdUnavailable`).
    pub code: String,
    /// What failed, for people.
    pub message: String,
}

/// A policy's reference to an [`AwsAccount`].
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct AccountRef {
    /// The `AwsAccount`'s name.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

impl AwsAccountSpec {
    /// Whether `mode` is allowed.
    pub fn allows_mode(&self, mode: Mode) -> bool {
        self.allowed_modes.contains(&mode)
    }

    /// The role a policy in `mode` assumes, and whether its session is read-only.
    pub fn role_for(&self, enforce: bool) -> (&str, bool) {
        match (enforce, &self.enforce_role_arn) {
            (false, _) => (&self.audit_role_arn, true),
            (true, Some(role)) => (role, false),
            (true, None) => (&self.audit_role_arn, false),
        }
    }
}

impl AllowedNamespaces {
    /// Whether a namespace with this name and these labels is allowed.
    pub fn allows(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.names
            .as_ref()
            .is_some_and(|n| n.iter().any(|n| n == namespace))
            || self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

impl NamespaceSelector {
    /// Whether `labels` satisfy every requirement (an empty selector matches nothing).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let label_pairs = self.match_labels.iter().flatten();
        let expressions = self.match_expressions.iter().flatten();
        let mut any = false;
        for (k, v) in label_pairs {
            any = true;
            if labels.get(k) != Some(v) {
                return false;
            }
        }
        for e in expressions {
            any = true;
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            let ok = match e.operator {
                LabelOperator::In => value.is_some_and(|v| values.contains(v)),
                LabelOperator::NotIn => value.is_none_or(|v| !values.contains(v)),
                LabelOperator::Exists => value.is_some(),
                LabelOperator::DoesNotExist => value.is_none(),
            };
            if !ok {
                return false;
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn namespaces_are_allowed_by_name_or_by_labels_and_an_empty_selector_allows_none() {
        let allowed = AllowedNamespaces {
            names: Some(vec!["payments".into()]),
            selector: Some(NamespaceSelector {
                match_labels: Some(labels(&[("team", "pay")])),
                match_expressions: Some(vec![LabelRequirement {
                    key: "tier".into(),
                    operator: LabelOperator::NotIn,
                    values: Some(vec!["sandbox".into()]),
                }]),
            }),
        };
        assert!(allowed.allows("payments", &labels(&[])));
        assert!(allowed.allows("other", &labels(&[("team", "pay")])));
        assert!(!allowed.allows("other", &labels(&[("team", "pay"), ("tier", "sandbox")])));
        assert!(!allowed.allows("other", &labels(&[("team", "web")])));
        let empty = AllowedNamespaces {
            names: None,
            selector: Some(NamespaceSelector::default()),
        };
        assert!(!empty.allows("payments", &labels(&[("team", "pay")])));
        let exists = NamespaceSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelRequirement {
                key: "pgbaseline.io/account".into(),
                operator: LabelOperator::Exists,
                values: None,
            }]),
        };
        assert!(exists.matches(&labels(&[("pgbaseline.io/account", "")])));
        assert!(!exists.matches(&labels(&[])));
    }

    #[test]
    fn audit_sessions_are_read_only_and_enforce_uses_its_own_role_when_given() {
        let mut spec = AwsAccountSpec {
            account_id: "222222222222".into(),
            regions: vec!["us-east-1".into()],
            audit_role_arn: "arn:aws:iam::222222222222:role/audit".into(),
            enforce_role_arn: None,
            external_id_secret_ref: None,
            allowed_namespaces: AllowedNamespaces::default(),
            allowed_modes: default_modes(),
            session_duration_seconds: 3600,
        };
        assert_eq!(spec.role_for(false), (spec.audit_role_arn.as_str(), true));
        assert_eq!(spec.role_for(true), (spec.audit_role_arn.as_str(), false));
        spec.enforce_role_arn = Some("arn:aws:iam::222222222222:role/enforce".into());
        assert_eq!(
            spec.role_for(true),
            ("arn:aws:iam::222222222222:role/enforce", false)
        );
        assert!(!spec.allows_mode(Mode::Enforce));
    }
}
