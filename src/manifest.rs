//! Reading `DatabaseSecurityPolicy` manifests outside Kubernetes (for `pgbaseline check`).
//!
//! A manifest must mean the same thing here as in the cluster, so it is read the way the
//! apiserver reads it (`kubectl apply`, or a YAML body with `fieldValidation=Strict`):
//!
//! 1. YAML → JSON as `sigs.k8s.io/yaml` does it ([`yaml`]): YAML 1.1 scalars (`yes` is true,
//!    `0755` is 493), integral floats (`1e1`, `1440.0`) become integers, duplicate keys are
//!    errors. Input is bounded ([`MAX_INPUT_BYTES`], [`yaml::MAX_NODES`], [`yaml::MAX_DEPTH`])
//!    and a syntax error stops at once with its line.
//! 2. The structural schema steps ([`structural`]): unknown fields are errors (strict field
//!    validation), nulls the schema does not allow are dropped, then schema defaults apply.
//! 3. `metadata` as the apiserver validates it on create (name, namespace, labels, annotations).
//! 4. The OpenAPI schema (types, enums, ranges, patterns; `nullable` honoured), set-like lists
//!    without repeats (`x-kubernetes-list-type: set`), then the CRD's CEL rules (null fields are
//!    absent for CEL, as in the apiserver).
//! 5. Typed deserialisation.
//!
//! Every error names the file, the document, the line when known, and the field path. The
//! corpus in `tests/manifests/` runs through both this loader and a real apiserver, and the
//! verdicts and defaulted specs must be identical.

pub mod structural;
pub mod yaml;

use std::fmt;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::api::DatabaseSecurityPolicy;

/// Largest manifest file (or stdin) `check` reads: a policy is a few KiB; the apiserver refuses
/// request bodies over 3 MiB.
pub const MAX_INPUT_BYTES: usize = 4 * 1024 * 1024;

/// Reported errors per file; the rest are summarised.
const MAX_ERRORS: usize = 50;

/// A manifest that is not a valid policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ManifestError {
    /// File name (or `-`) the document came from.
    pub source_name: String,
    /// 1-based document index inside the file (0: the file as a whole).
    pub document: usize,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Field path as Kubernetes writes it, e.g. `spec.selector.engines[1]`, or `(yaml)` for
    /// a syntax error.
    pub path: String,
    /// Why it is rejected.
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source_name)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
        }
        write!(f, ": {}: {}", self.path, self.reason)
    }
}

/// Something that is valid but read in a way the author may not expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestWarning {
    pub source_name: String,
    pub document: usize,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ManifestWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: document {}: {}",
            self.source_name, self.line, self.document, self.message
        )
    }
}

/// One valid policy and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPolicy {
    pub policy: DatabaseSecurityPolicy,
    /// The object as the apiserver would store it: defaults applied, `status` dropped.
    pub value: Value,
    pub source_name: String,
    pub document: usize,
    pub line: usize,
}

impl LoadedPolicy {
    /// `namespace/name`, the policy's identity in the cluster (`default` when no namespace is
    /// given; a `generateName` prefix ends in `*`).
    pub fn key(&self) -> String {
        crate::check::policy_key(&self.policy)
    }
}

/// The policies of one file and the warnings about them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub policies: Vec<LoadedPolicy>,
    pub warnings: Vec<ManifestWarning>,
}

/// The schema and CEL rules of the CRD, prepared once and used for every file.
pub struct Loader {
    schema: Value,
    validator: jsonschema::Validator,
    cel: kube::core::cel::CompiledSchema,
}

impl Loader {
    pub fn new() -> Result<Loader, String> {
        let crd = DatabaseSecurityPolicy::crd();
        let schema = crd
            .spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .ok_or("the CRD has no schema")?;
        let validator = jsonschema::validator_for(&structural::as_json_schema(&schema))
            .map_err(|e| format!("internal schema error: {e}"))?;
        let cel = kube::core::cel::compile_schema(&schema);
        Ok(Loader {
            schema,
            validator,
            cel,
        })
    }

    /// Reads every document of `text` (empty documents are skipped) and validates each as a
    /// `DatabaseSecurityPolicy`. Returns the policies, or every error found (at most 50).
    pub fn load(&self, source_name: &str, text: &str) -> Result<Loaded, Vec<ManifestError>> {
        let error = |document, line, path: &str, reason: String| ManifestError {
            source_name: source_name.to_string(),
            document,
            line,
            path: path.to_string(),
            reason,
        };
        if text.len() > MAX_INPUT_BYTES {
            return Err(vec![error(
                0,
                None,
                "(file)",
                format!("larger than {} MiB", MAX_INPUT_BYTES / (1024 * 1024)),
            )]);
        }
        let documents = yaml::documents(text).map_err(|e| {
            let (path, reason) = match (e.column, &e.path) {
                (Some(column), _) => (
                    "(yaml)".to_string(),
                    format!("column {column}: {}", e.reason),
                ),
                (None, Some(path)) if !path.is_empty() => (path.clone(), e.reason.clone()),
                (None, _) => ("(yaml)".to_string(), e.reason.clone()),
            };
            vec![error(e.document, Some(e.line), &path, reason)]
        })?;
        let mut loaded = Loaded::default();
        let mut errors = Vec::new();
        for doc in documents {
            let Some(value) = &doc.value else { continue };
            loaded
                .warnings
                .extend(doc.notes.iter().map(|(line, message)| ManifestWarning {
                    source_name: source_name.to_string(),
                    document: doc.index,
                    line: *line,
                    message: message.clone(),
                }));
            match self.check_document(value.clone()) {
                Ok((policy, value)) => loaded.policies.push(LoadedPolicy {
                    policy: *policy,
                    value,
                    source_name: source_name.to_string(),
                    document: doc.index,
                    line: doc.line_of("").unwrap_or(1),
                }),
                Err(found) => errors.extend(found.into_iter().map(|(path, reason)| {
                    let line = doc.line_of(&path);
                    error(
                        doc.index,
                        line,
                        if path.is_empty() { "(root)" } else { &path },
                        reason,
                    )
                })),
            }
        }
        if errors.is_empty() {
            Ok(loaded)
        } else {
            if errors.len() > MAX_ERRORS {
                let more = errors.len() - MAX_ERRORS;
                errors.truncate(MAX_ERRORS);
                errors.push(error(0, None, "(file)", format!("{more} more errors")));
            }
            Err(errors)
        }
    }

    /// One document through the apiserver's steps. Errors are (field path, reason).
    #[allow(clippy::type_complexity)]
    fn check_document(
        &self,
        mut value: Value,
    ) -> Result<(Box<DatabaseSecurityPolicy>, Value), Vec<(String, String)>> {
        let fail = |path: &str, reason: String| Err(vec![(path.to_string(), reason)]);
        if !value.is_object() {
            return fail("", "a manifest must be a mapping (an object)".into());
        }
        let api_version = value.get("apiVersion").and_then(Value::as_str);
        let kind = value.get("kind").and_then(Value::as_str);
        if api_version != Some("pgbaseline.io/v1alpha1") || kind != Some("DatabaseSecurityPolicy") {
            return fail(
                "apiVersion",
                format!(
                    "expected apiVersion pgbaseline.io/v1alpha1 and kind DatabaseSecurityPolicy, found {} {}",
                    api_version.unwrap_or("(none)"),
                    kind.unwrap_or("(none)")
                ),
            );
        }

        // Strict field validation: fields the schema (or ObjectMeta) does not know are errors.
        let mut errors: Vec<(String, String)> = Vec::new();
        let mut unknown = Vec::new();
        structural::unknown_fields(&value, Some(&self.schema), "", &mut unknown);
        errors.extend(
            unknown
                .into_iter()
                .map(|p| (p, "unknown field".to_string())),
        );
        errors.extend(metadata::check(value.get("metadata")));
        if !errors.is_empty() {
            return Err(errors);
        }

        // Nulls, defaults; status is not part of what a create stores.
        structural::prune_nulls(&mut value, Some(&self.schema));
        structural::apply_defaults(&mut value, &self.schema);
        if let Some(map) = value.as_object_mut() {
            map.remove("status");
        }

        // The OpenAPI schema, then sets, then CEL.
        errors.extend(self.validator.iter_errors(&value).map(|e| {
            (
                pointer_to_path(&value, &e.instance_path.to_string()),
                e.to_string(),
            )
        }));
        structural::duplicate_set_items(&value, &self.schema, "", &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let cel_view = structural::without_null_fields(&value, Some(&self.schema));
        if let Err(cel_errors) =
            kube::core::cel::Validator::new().validate_compiled(&self.cel, &cel_view, None)
        {
            return Err(cel_errors
                .as_slice()
                .iter()
                .map(|e| (e.field_path.clone(), e.message.clone()))
                .collect());
        }

        // Typed deserialisation; an unknown field here would be a bug in the steps above.
        let mut unknown = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        let result: Result<DatabaseSecurityPolicy, _> = serde_ignored::deserialize(
            serde_path_to_error::Deserializer::new(&value, &mut track),
            |path| {
                // `?` marks an Option layer in serde_ignored's paths; it is no field.
                let path = path.to_string().replace(".?", "").replace("?.", "");
                let top_level = ["apiVersion", "kind"].contains(&path.as_str());
                if !top_level && !path.starts_with("metadata.") {
                    unknown.push(path);
                }
            },
        );
        match result {
            Err(e) => fail(&track.path().to_string(), e.to_string()),
            Ok(_) if !unknown.is_empty() => Err(unknown
                .into_iter()
                .map(|p| (p, "unknown field".to_string()))
                .collect()),
            Ok(policy) => Ok((Box::new(policy), value)),
        }
    }
}

/// Parses every YAML document of `text`, skipping empty documents, and validates each as a
/// `DatabaseSecurityPolicy`. Returns the policies or every error found.
pub fn parse_policies(
    source_name: &str,
    text: &str,
) -> Result<Vec<DatabaseSecurityPolicy>, Vec<ManifestError>> {
    let loader = Loader::new().map_err(|reason| {
        vec![ManifestError {
            source_name: source_name.to_string(),
            document: 0,
            line: None,
            path: "(schema)".into(),
            reason,
        }]
    })?;
    let loaded = loader.load(source_name, text)?;
    Ok(loaded.policies.into_iter().map(|p| p.policy).collect())
}

/// A JSON pointer as a Kubernetes field path (`/spec/selector/engines/1` →
/// `spec.selector.engines[1]`), using the value to tell list indices from keys.
fn pointer_to_path(value: &Value, pointer: &str) -> String {
    let mut path = String::new();
    let mut at = Some(value);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(list)) => {
                path.push_str(&format!("[{segment}]"));
                at = segment.parse::<usize>().ok().and_then(|i| list.get(i));
            }
            other => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&segment);
                at = other.and_then(|v| v.get(&segment));
            }
        }
    }
    path
}

/// `metadata` as the apiserver checks it when a custom resource is created
/// (`ValidateObjectMetaAccessor` with DNS-subdomain names, labels and annotations).
mod metadata {
    use serde_json::Value;

    const FIELDS: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ];

    pub fn check(metadata: Option<&Value>) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut err = |path: &str, reason: String| errors.push((path.to_string(), reason));
        let Some(metadata) = metadata.filter(|m| !m.is_null()) else {
            err(
                "metadata.name",
                "Required value: name or generateName is required".into(),
            );
            return errors;
        };
        let Some(map) = metadata.as_object() else {
            err("metadata", "must be a mapping".into());
            return errors;
        };
        for key in map.keys() {
            if !FIELDS.contains(&key.as_str()) {
                err(&format!("metadata.{key}"), "unknown field".into());
            }
        }
        if let Err(e) = serde_json::from_value::<
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        >(metadata.clone())
        {
            err("metadata", format!("invalid: {e}"));
            return errors;
        }
        let text = |key: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        match (text("name"), text("generateName")) {
            (Some(name), _) => {
                if let Some(why) = dns1123_subdomain(name) {
                    err("metadata.name", format!("Invalid value: {name:?}: {why}"));
                }
            }
            (None, Some(prefix)) => {
                let masked = prefix.strip_suffix('-').unwrap_or(prefix);
                if let Some(why) = dns1123_subdomain(masked) {
                    err(
                        "metadata.generateName",
                        format!("Invalid value: {prefix:?}: {why}"),
                    );
                }
            }
            (None, None) => err(
                "metadata.name",
                "Required value: name or generateName is required".into(),
            ),
        }
        if let Some(namespace) = text("namespace")
            && let Some(why) = dns1123_label(namespace)
        {
            err(
                "metadata.namespace",
                format!("Invalid value: {namespace:?}: {why}"),
            );
        }
        if let Some(labels) = map.get("labels").and_then(Value::as_object) {
            for (key, value) in labels {
                if let Some(why) = qualified_name(key) {
                    err(
                        &format!("metadata.labels.{key}"),
                        format!("Invalid key: {why}"),
                    );
                }
                let value = value.as_str().unwrap_or_default();
                if let Some(why) = label_value(value) {
                    err(
                        &format!("metadata.labels.{key}"),
                        format!("Invalid value: {value:?}: {why}"),
                    );
                }
            }
        }
        if let Some(annotations) = map.get("annotations").and_then(Value::as_object) {
            let mut size = 0;
            for (key, value) in annotations {
                size += key.len() + value.as_str().map_or(0, str::len);
                if let Some(why) = qualified_name(&key.to_lowercase()) {
                    err(
                        &format!("metadata.annotations.{key}"),
                        format!("Invalid key: {why}"),
                    );
                }
            }
            if size > 256 * 1024 {
                err(
                    "metadata.annotations",
                    "Too long: must have at most 262144 bytes".into(),
                );
            }
        }
        errors
    }

    fn dns1123_label(s: &str) -> Option<String> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if s.len() > 63 {
            Some("must be no more than 63 characters".into())
        } else if !ok {
            Some("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".into())
        } else {
            None
        }
    }

    fn dns1123_subdomain(s: &str) -> Option<String> {
        if s.len() > 253 {
            return Some("must be no more than 253 characters".into());
        }
        if s.split('.')
            .any(|part| part.is_empty() || dns1123_label(part).is_some())
        {
            return Some("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
        }
        None
    }

    /// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
    fn name_part(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && s.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    }

    fn qualified_name(s: &str) -> Option<String> {
        let (prefix, name) = match s.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, s),
        };
        if let Some(prefix) = prefix
            && (prefix.is_empty() || dns1123_subdomain(prefix).is_some())
        {
            return Some("prefix part must be a lowercase RFC 1123 subdomain".into());
        }
        if !name_part(name) {
            return Some("name part must consist of alphanumeric characters, '-', '_' or '.', start and end with an alphanumeric character, and have at most 63 characters".into());
        }
        None
    }

    fn label_value(s: &str) -> Option<String> {
        (!s.is_empty() && !name_part(s)).then(|| {
            "a valid label value must be empty or consist of alphanumeric characters, '-', '_' or '.', start and end with an alphanumeric character, and have at most 63 characters".into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {name: t}\n";

    fn load(spec: &str) -> Result<Loaded, Vec<ManifestError>> {
        Loader::new()
            .expect("loader")
            .load("t.yaml", &format!("{HEAD}spec:\n{spec}"))
    }

    #[test]
    fn manifest_yaml_1_1_and_integral_floats_read_as_kubernetes_reads_them() {
        let loaded = load(
            "  selector: {tags: {env: prod}}\n  resyncSeconds: 1e2\n  posture:\n    transport: {forceSsl: yes}\n    logging: {retention: {minimumMinutes: 1440.0}}\n",
        )
        .expect("valid");
        let spec = &loaded.policies[0].policy.spec;
        assert_eq!(spec.resync_seconds, 100);
        assert_eq!(
            spec.posture.transport.as_ref().and_then(|t| t.force_ssl),
            Some(true)
        );
        assert_eq!(
            spec.posture
                .logging
                .as_ref()
                .and_then(|l| l.retention.as_ref())
                .map(|r| r.minimum_minutes),
            Some(1440)
        );
        assert!(
            loaded.warnings.iter().any(|w| w.message.contains("`yes`")),
            "{loaded:?}"
        );
    }

    #[test]
    fn manifest_nulls_are_defaulted_or_absent_as_in_the_apiserver() {
        let loaded = load(
            "  selector: {tags: {env: prod}, engines: null, region: null}\n  mode: null\n  resyncSeconds: ~\n  remediation: null\n  posture: {transport: {forceSsl: true, caCertificate: null}}\n",
        )
        .expect("valid");
        let spec = &loaded.policies[0].policy.spec;
        assert_eq!(spec.resync_seconds, 60);
        assert_eq!(spec.selector.engines.len(), 2);
        // kube-openapi never matches a null against an enum, even one listing null.
        let errors = load(
            "  selector: {tags: {env: prod}}\n  posture: {transport: {minTlsVersion: null}}\n",
        )
        .expect_err("null is no TLS version");
        assert_eq!(errors[0].path, "spec.posture.transport.minTlsVersion");
        let errors = load("  selector: {tags: {env: prod}}\n  posture: {transport: null}\n")
            .expect_err("a null group is no group");
        assert!(
            errors.iter().any(|e| e.reason.contains("at least one")),
            "{errors:?}"
        );
    }

    #[test]
    fn manifest_errors_carry_file_line_and_kubernetes_paths() {
        let errors = load("  selector: {tags: {env: prod}, engines: [postgres, postgres]}\n  posture: {transport: {forceSsl: true}}\n")
            .expect_err("duplicate engine");
        let e = &errors[0];
        assert_eq!(e.path, "spec.selector.engines[1]");
        assert_eq!(e.line, Some(5));
        assert!(
            e.to_string()
                .starts_with("t.yaml:5: document 1: spec.selector.engines[1]: Duplicate"),
            "{e}"
        );
    }

    use crate::api::ControlId;
    use crate::api::controls::Switch;
    use crate::posture::exposure;
    use proptest::prelude::*;

    fn loader() -> &'static Loader {
        static LOADER: std::sync::OnceLock<Loader> = std::sync::OnceLock::new();
        LOADER.get_or_init(|| Loader::new().expect("loader"))
    }

    fn load_spec(spec: &serde_json::Value) -> Result<Loaded, Vec<ManifestError>> {
        let manifest = serde_json::json!({
            "apiVersion": "pgbaseline.io/v1alpha1",
            "kind": "DatabaseSecurityPolicy",
            "metadata": {"name": "t"},
            "spec": spec,
        });
        loader().load("t.yaml", &manifest.to_string())
    }

    fn canonical_net() -> impl Strategy<Value = ipnet::IpNet> {
        let v4 = (
            prop_oneof![
                Just(0u32),
                Just(0x8000_0000),
                Just(0x0a00_0000),
                Just(0x6440_0000),
                Just(0x3400_0000),
                any::<u32>()
            ],
            prop_oneof![1u8..=32, 14u8..=18],
        )
            .prop_map(|(a, p)| {
                ipnet::IpNet::V4(
                    ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(a), p)
                        .expect("prefix")
                        .trunc(),
                )
            });
        let v6 = (
            prop_oneof![
                Just(0x2001_0db8u128 << 96),
                Just(0xfd00u128 << 112),
                Just(1u128 << 127),
                any::<u128>()
            ],
            prop_oneof![1u8..=128, 46u8..=66],
        )
            .prop_map(|(a, p)| {
                ipnet::IpNet::V6(
                    ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(a), p)
                        .expect("prefix")
                        .trunc(),
                )
            })
            // IPv4-mapped addresses are no CIDR for Kubernetes; their own corpus file covers them.
            .prop_filter("not IPv4-mapped", |n| match n {
                ipnet::IpNet::V6(v6) => v6.network().to_ipv4_mapped().is_none(),
                ipnet::IpNet::V4(_) => true,
            });
        prop_oneof![v4, v6]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// The CEL rules on allowedCidrs (what the apiserver and `check` admit) and the bound
        /// `evaluate` applies to a stored policy are one and the same.
        #[test]
        fn cel_and_evaluate_agree_on_the_bound(nets in prop::collection::btree_set(canonical_net(), 1..6)) {
            let cidrs: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
            let spec = serde_json::json!({
                "selector": {"tags": {"env": "prod"}},
                "posture": {"network": {"ingress": {
                    "allowedSecurityGroups": ["sg-0123456789abcdef0"],
                    "allowedCidrs": cidrs,
                }}},
            });
            let cel = load_spec(&spec);
            let rust = exposure::check_allowed(&cidrs);
            prop_assert_eq!(cel.is_ok(), rust.is_ok(), "{:?}: cel {:?}, evaluate {:?}", cidrs, cel.err(), rust.err());
            if let Err(errors) = cel {
                prop_assert!(errors.iter().all(|e| e.path == "spec.posture.network.ingress.allowedCidrs"), "{:?}", errors);
            }
        }

        /// The CEL rules on posture and `enabled_controls` agree: a posture is admitted exactly
        /// when it switches a control on and names no empty group.
        #[test]
        fn cel_and_enabled_controls_agree_on_a_posture_that_checks_nothing(
            states in prop::collection::vec(0u8..4, ControlId::ALL.len()),
            empty_groups in prop::collection::vec(any::<bool>(), 8),
        ) {
            let mut posture = serde_json::Map::new();
            for (control, state) in ControlId::ALL.iter().zip(&states) {
                let value = match (state, control.switch()) {
                    (0, _) => continue,
                    (1, Switch::Flag) => serde_json::json!(false),
                    (_, Switch::Flag) => serde_json::json!(true),
                    (_, Switch::Presence) => match control {
                        ControlId::MinTlsVersion => serde_json::json!("TLSv1.2"),
                        ControlId::LogRetention => serde_json::json!({"minimumMinutes": 1440}),
                        ControlId::CloudwatchExports => serde_json::json!(["postgresql"]),
                        ControlId::Pgaudit => serde_json::json!({"classes": ["ddl"]}),
                        ControlId::PublicAccess => serde_json::json!("Forbidden"),
                        ControlId::Ingress => serde_json::json!({"denyAll": true}),
                        ControlId::BackupRetention => serde_json::json!({"minimumDays": 7}),
                        _ => serde_json::json!({}),
                    },
                };
                let group = posture
                    .entry(control.group())
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(group) = group.as_object_mut() {
                    group.insert(control.field().to_string(), value);
                }
            }
            // The in-database group needs a connection (a rule of its own, tested elsewhere).
            if let Some(group) = posture.get_mut("database").and_then(|g| g.as_object_mut()) {
                group.insert("connection".into(), serde_json::json!({"iamUser": "auditor"}));
            }
            let mut has_empty_group = false;
            for (group, empty) in crate::api::controls::groups().into_iter().zip(&empty_groups) {
                if *empty && !posture.contains_key(group) {
                    posture.insert(group.to_string(), serde_json::json!({}));
                    has_empty_group = true;
                }
            }
            let spec_json = serde_json::json!({
                "selector": {"tags": {"env": "prod"}},
                "posture": posture,
            });
            let typed: crate::api::DatabaseSecurityPolicySpec =
                serde_json::from_value(spec_json.clone()).expect("typed spec");
            let enabled = !typed.enabled_controls().is_empty();
            let cel = load_spec(&spec_json);
            prop_assert_eq!(cel.is_ok(), enabled && !has_empty_group, "{} -> {:?}", spec_json, cel.err());
            if let Ok(loaded) = cel {
                prop_assert_eq!(loaded.policies[0].policy.spec.enabled_controls(), typed.enabled_controls());
            }
        }
    }

    #[test]
    fn manifest_rejects_what_checks_nothing_or_opens_the_internet_with_a_reason() {
        let cases = [
            (
                "  selector: {tags: {env: prod}}\n  posture: {network: {ingress: {allowedCidrs: [0.0.0.0/1, 128.0.0.0/1]}}}\n",
                "spec.posture.network.ingress.allowedCidrs",
                "65,536 public IPv4 addresses",
            ),
            (
                "  selector: {tags: {env: prod}}\n  posture: {network: {ingress: {allowedCidrs: ['::/1', '8000::/1']}}}\n",
                "spec.posture.network.ingress.allowedCidrs",
                "one /48 of public IPv6",
            ),
            (
                "  selector: {tags: {env: prod}}\n  posture: {network: {ingress: {}}}\n",
                "spec.posture.network.ingress",
                "denyAll: true",
            ),
            (
                "  selector: {tags: {env: prod}}\n  posture: {network: {ingress: {denyAll: true, allowedCidrs: [10.0.0.0/8]}}}\n",
                "spec.posture.network.ingress.denyAll",
                "allows no source",
            ),
            (
                "  selector: {tags: {env: prod}}\n  posture: {transport: {}}\n",
                "spec.posture.transport",
                "names none of its controls",
            ),
            (
                "  selector: {tags: {env: prod}}\n  posture: {transport: {forceSsl: false}}\n",
                "spec.posture",
                "at least one control",
            ),
            (
                "  selector: {tags: {}}\n  posture: {transport: {forceSsl: true}}\n",
                "spec.selector.tags",
                "at least one tag",
            ),
        ];
        for (spec, path, reason) in cases {
            let errors = load(spec).expect_err(spec);
            assert!(
                errors
                    .iter()
                    .any(|e| e.path == path && e.reason.contains(reason)),
                "{spec}: expected {path}: …{reason}…, got {errors:#?}"
            );
        }
        load("  selector: {tags: {env: prod}}\n  posture: {network: {ingress: {denyAll: true}}}\n")
            .expect("denyAll alone is a choice");
    }
}
