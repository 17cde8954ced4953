//! What the apiserver does with a custom resource's structural schema before and around
//! validation, mirrored on JSON values: pruning of unknown fields (reported, as with
//! `fieldValidation=Strict`), pruning of nulls that are neither nullable nor defaulted, schema
//! defaulting, `x-kubernetes-list-type: set` uniqueness, and how CEL sees null fields. Each
//! function names the apiextensions-apiserver code it follows.

use serde_json::{Map, Value};

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

fn additional_properties(schema: &Value) -> Option<&Value> {
    schema.get("additionalProperties").filter(|a| a.is_object())
}

fn items(schema: &Value) -> Option<&Value> {
    schema.get("items").filter(|i| i.is_object())
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn has_default(schema: &Value) -> bool {
    schema.get("default").is_some_and(|d| !d.is_null())
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Fields the schema does not declare (`pruning.prune` with `ReturnPruned`), as field paths.
/// `apiVersion`, `kind` and `metadata` at the root belong to every object.
pub fn unknown_fields(value: &Value, schema: Option<&Value>, path: &str, out: &mut Vec<String>) {
    if schema.is_some_and(|s| flag(s, "x-kubernetes-preserve-unknown-fields")) {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
                    continue;
                }
                let here = child_path(path, key);
                let declared = schema.and_then(|s| properties(s).and_then(|p| p.get(key)));
                match (declared, schema.and_then(additional_properties)) {
                    (Some(s), _) | (None, Some(s)) => unknown_fields(child, Some(s), &here, out),
                    (None, None) => out.push(here),
                }
            }
        }
        Value::Array(list) => {
            for (i, item) in list.iter().enumerate() {
                unknown_fields(item, schema.and_then(items), &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn schema_for_field<'s>(schema: Option<&'s Value>, key: &str) -> Option<&'s Value> {
    let schema = schema?;
    properties(schema)
        .and_then(|p| p.get(key))
        .or_else(|| additional_properties(schema))
}

/// `defaulting.PruneNonNullableNullsWithoutDefaults`: a null where the schema allows none and
/// gives no default is removed (so a required field becomes missing).
pub fn prune_nulls(value: &mut Value, schema: Option<&Value>) {
    match value {
        Value::Object(map) => {
            map.retain(|key, child| {
                let s = schema_for_field(schema, key);
                !(child.is_null() && s.is_some_and(|s| !flag(s, "nullable") && !has_default(s)))
            });
            for (key, child) in map.iter_mut() {
                prune_nulls(child, schema_for_field(schema, key));
            }
        }
        Value::Array(list) => {
            for item in list {
                prune_nulls(item, schema.and_then(items));
            }
        }
        _ => {}
    }
}

fn non_nullable_null(value: &Value, schema: &Value) -> bool {
    value.is_null() && !flag(schema, "nullable")
}

/// `defaulting.Default`: a missing field, or a null one that may not be null, takes the schema
/// default; then every field is defaulted inside (defaults included).
pub fn apply_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = properties(schema) {
                for (key, prop) in props {
                    let Some(default) = prop.get("default").filter(|d| !d.is_null()) else {
                        continue;
                    };
                    if map.get(key).is_none_or(|v| non_nullable_null(v, prop)) {
                        map.insert(key.clone(), default.clone());
                    }
                }
            }
            for (key, child) in map.iter_mut() {
                if let Some(prop) = properties(schema).and_then(|p| p.get(key)) {
                    apply_defaults(child, prop);
                } else if let Some(extra) = additional_properties(schema) {
                    if non_nullable_null(child, extra)
                        && let Some(default) = extra.get("default")
                    {
                        *child = default.clone();
                    }
                    apply_defaults(child, extra);
                }
            }
        }
        Value::Array(list) => {
            if let Some(item_schema) = items(schema) {
                for item in list {
                    if non_nullable_null(item, item_schema)
                        && let Some(default) = item_schema.get("default")
                    {
                        *item = default.clone();
                    }
                    apply_defaults(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

/// `x-kubernetes-list-type: set`: every item at most once (`validation.ValidateListSetsAndMaps`).
/// Returns (path of the repeated item, reason).
pub fn duplicate_set_items(
    value: &Value,
    schema: &Value,
    path: &str,
    out: &mut Vec<(String, String)>,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if let Some(s) = schema_for_field(Some(schema), key) {
                    duplicate_set_items(child, s, &child_path(path, key), out);
                }
            }
        }
        Value::Array(list) => {
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
                for (i, item) in list.iter().enumerate() {
                    if list[..i].contains(item) {
                        out.push((format!("{path}[{i}]"), format!("Duplicate value: {item}")));
                    }
                }
            }
            if let Some(item_schema) = items(schema) {
                for (i, item) in list.iter().enumerate() {
                    duplicate_set_items(item, item_schema, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// The value as the apiserver's CEL sees it: a null field of an object with properties is
/// absent (`has()` is false and no rule runs on it).
pub fn without_null_fields(value: &Value, schema: Option<&Value>) -> Value {
    match value {
        Value::Object(map) => {
            let is_object = schema.and_then(properties).is_some();
            Value::Object(
                map.iter()
                    .filter(|(_, v)| !(is_object && v.is_null()))
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            without_null_fields(v, schema_for_field(schema, k)),
                        )
                    })
                    .collect(),
            )
        }
        Value::Array(list) => Value::Array(
            list.iter()
                .map(|item| without_null_fields(item, schema.and_then(items)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The OpenAPI schema as JSON Schema, validated as kube-openapi validates: `nullable: true`
/// becomes a `null` type alternative, and a null never satisfies an `enum`, even one that lists
/// `null` (kube-openapi's enum check skips null entries), so `null` is taken out of every enum.
pub fn as_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let nullable = map.get("nullable").and_then(Value::as_bool) == Some(true);
            let mut out = Map::new();
            for (key, value) in map {
                match key.as_str() {
                    "nullable" => {}
                    "type" if nullable => {
                        out.insert(
                            key.clone(),
                            Value::Array(vec![value.clone(), "null".into()]),
                        );
                    }
                    "enum" if value.is_array() => {
                        let values = value.as_array().into_iter().flatten();
                        let values = values.filter(|v| !v.is_null()).cloned().collect();
                        out.insert(key.clone(), Value::Array(values));
                    }
                    _ => {
                        out.insert(key.clone(), as_json_schema(value));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(list) => Value::Array(list.iter().map(as_json_schema).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "mode": {"type": "string", "default": "Audit"},
                "opt": {"type": "string", "nullable": true},
                "req": {"type": "string"},
                "list": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                "nested": {"type": "object", "default": {}, "properties": {"n": {"type": "integer", "default": 5}}}
            }
        })
    }

    #[test]
    fn nulls_are_pruned_or_defaulted_as_the_apiserver_does() {
        let s = schema();
        let mut v = json!({"mode": null, "opt": null, "req": null, "tags": {"a": null}});
        prune_nulls(&mut v, Some(&s));
        apply_defaults(&mut v, &s);
        assert_eq!(
            v,
            json!({"mode": "Audit", "opt": null, "tags": {}, "nested": {"n": 5}})
        );
    }

    #[test]
    fn unknown_fields_and_set_duplicates_are_found() {
        let s = schema();
        let mut unknown = Vec::new();
        unknown_fields(
            &json!({"kind": "x", "bogus": 1, "nested": {"m": 1}, "tags": {"free": "ok"}}),
            Some(&s),
            "",
            &mut unknown,
        );
        assert_eq!(unknown, vec!["bogus", "nested.m"]);
        let mut dups = Vec::new();
        duplicate_set_items(&json!({"list": ["a", "b", "a"]}), &s, "spec", &mut dups);
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].0, "spec.list[2]");
    }

    #[test]
    fn null_satisfies_no_enum_as_in_kube_openapi() {
        let s = json!({"type": "string", "nullable": true, "enum": ["a", null]});
        assert_eq!(
            as_json_schema(&s),
            json!({"type": ["string", "null"], "enum": ["a"]})
        );
    }

    #[test]
    fn cel_does_not_see_null_fields() {
        let s = schema();
        assert_eq!(
            without_null_fields(&json!({"opt": null, "mode": "Audit"}), Some(&s)),
            json!({"mode": "Audit"})
        );
    }
}
