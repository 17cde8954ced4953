//! Reading `DatabaseSecurityPolicy` manifests outside Kubernetes (for `pgbaseline check`).
//!
//! A manifest is checked the way the apiserver would check it: the generated OpenAPI schema
//! (types, enums, ranges, patterns), then the CEL rules of the same CRD, then typed
//! deserialisation. Every error names the document and the field path, so a CI log says exactly
//! what to fix. Unknown fields are errors here (the apiserver would silently prune them, and a
//! misspelt control would then silently not be checked).

use kube::CustomResourceExt;
use serde_json::Value;

use crate::api::DatabaseSecurityPolicy;

/// A manifest that is not a valid policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_name}: document {document}: {path}: {reason}")]
pub struct ManifestError {
    /// File name (or `-`) the document came from.
    pub source_name: String,
    /// 1-based document index inside the file.
    pub document: usize,
    /// Dotted field path, e.g. `spec.logging.retention.minimumMinutes`.
    pub path: String,
    /// Why it is rejected.
    pub reason: String,
}

/// Parses every YAML document of `text`, skipping empty documents, and validates each as a
/// `DatabaseSecurityPolicy`. Returns the policies or every error found.
pub fn parse_policies(
    source_name: &str,
    text: &str,
) -> Result<Vec<DatabaseSecurityPolicy>, Vec<ManifestError>> {
    let schema = crd_schema();
    // Compiled once per file, not once per document.
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![ManifestError {
                source_name: source_name.to_string(),
                document: 0,
                path: "(schema)".into(),
                reason: format!("internal schema error: {e}"),
            }]);
        }
    };
    let mut policies = Vec::new();
    let mut errors = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = |path: &str, reason: String| ManifestError {
            source_name: source_name.to_string(),
            document: index + 1,
            path: if path.is_empty() {
                "(root)".into()
            } else {
                path.to_string()
            },
            reason,
        };
        let value: Value = match serde::Deserialize::deserialize(document) {
            Ok(v) => v,
            Err(e) => {
                errors.push(at("", format!("not valid YAML: {e}")));
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        match validate_document(&schema, &validator, &value) {
            Ok(policy) => policies.push(policy),
            Err(found) => errors.extend(found.into_iter().map(|(p, r)| at(&p, r))),
        }
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(errors)
    }
}

fn crd_schema() -> Value {
    let crd = DatabaseSecurityPolicy::crd();
    crd.spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null)
}

fn validate_document(
    schema: &Value,
    validator: &jsonschema::Validator,
    value: &Value,
) -> Result<DatabaseSecurityPolicy, Vec<(String, String)>> {
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let kind = value.get("kind").and_then(Value::as_str);
    if api_version != Some("pgbaseline.io/v1alpha1") || kind != Some("DatabaseSecurityPolicy") {
        return Err(vec![(
            "apiVersion".into(),
            format!(
                "expected apiVersion pgbaseline.io/v1alpha1 and kind DatabaseSecurityPolicy, found {} {}",
                api_version.unwrap_or("(none)"),
                kind.unwrap_or("(none)")
            ),
        )]);
    }

    // 1. The OpenAPI schema, as the apiserver's structural validation applies it.
    let schema_errors: Vec<(String, String)> = validator
        .iter_errors(value)
        .map(|e| (pointer_to_path(&e.instance_path.to_string()), e.to_string()))
        .collect();
    if !schema_errors.is_empty() {
        return Err(schema_errors);
    }

    // 2. The CEL rules of the CRD, with schema defaults applied first as admission does.
    if let Err(cel_errors) = kube::core::cel::Validator::new().validate(schema, value, None) {
        return Err(cel_errors
            .iter()
            .map(|e| (e.field_path.clone(), e.message.clone()))
            .collect());
    }

    // 3. Typed deserialisation; unknown fields are reported rather than dropped.
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let result: Result<DatabaseSecurityPolicy, _> = serde_ignored::deserialize(
        serde_path_to_error::Deserializer::new(value, &mut track),
        |path| {
            // `?` marks an Option layer in serde_ignored's paths; it is no field.
            let path = path.to_string().replace(".?", "").replace("?.", "");
            let top_level = ["apiVersion", "kind"].contains(&path.as_str());
            if !top_level && !path.starts_with("metadata.") && !path.starts_with("status") {
                unknown.push(path);
            }
        },
    );
    match result {
        Err(e) => Err(vec![(track.path().to_string(), e.to_string())]),
        Ok(_) if !unknown.is_empty() => Err(unknown
            .into_iter()
            .map(|p| (p, "unknown field".to_string()))
            .collect()),
        Ok(policy) => Ok(policy),
    }
}

fn pointer_to_path(pointer: &str) -> String {
    pointer
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}
