//! Karmada's `fieldOverrider`: edits inside a JSON or YAML document held in
//! a string field of the manifest, e.g. a ConfigMap's
//! `data.config.yaml`.
//!
//! The string at `fieldPath` (a JSON pointer) is parsed as JSON (`json`
//! operations) or YAML (`yaml` operations), each operation (`add`,
//! `remove`, `replace` at `subPath`, a JSON pointer inside the document)
//! is applied in order with RFC 6902's rules, and the document is written
//! back as a string. As in Karmada, the result is re-serialised: JSON
//! compact, YAML in block style, object keys sorted, comments dropped.

use flotilla_api::policy::{DocumentPatchOperation, FieldOverrider, OverriderOperator};
use serde_json::Value;

use crate::json_patch_op::apply_operation;

/// Applies one fieldOverrider to `manifest`; the error says what is wrong
/// (the manifest is unchanged then).
pub fn apply_field_overrider(manifest: &mut Value, o: &FieldOverrider) -> Result<(), String> {
    let path = o.field_path.as_str();
    let text = match manifest.pointer(path) {
        None => return Err(format!("fieldPath {path} does not exist")),
        Some(Value::String(text)) => text.clone(),
        Some(other) => {
            return Err(format!(
                "fieldPath {path} holds {}, not a string with a JSON or YAML document",
                kind_of(other)
            ))
        }
    };
    let edited = match (o.json.is_empty(), o.yaml.is_empty()) {
        (false, true) => {
            let mut doc: Value = serde_json::from_str(&text)
                .map_err(|e| format!("the string at {path} is not a JSON document: {e}"))?;
            apply_all(&mut doc, &o.json, path, "json")?;
            serde_json::to_string(&doc).map_err(|e| format!("cannot write the JSON at {path}: {e}"))?
        }
        (true, false) => {
            let mut doc: Value = serde_saphyr::from_str(&text)
                .map_err(|e| format!("the string at {path} is not a YAML document: {e}"))?;
            apply_all(&mut doc, &o.yaml, path, "yaml")?;
            serde_saphyr::to_string(&doc).map_err(|e| format!("cannot write the YAML at {path}: {e}"))?
        }
        (true, true) => return Err(format!("fieldPath {path}: no json or yaml operations")),
        (false, false) => return Err(format!("fieldPath {path}: set json or yaml operations, not both")),
    };
    if let Some(slot) = manifest.pointer_mut(path) {
        *slot = Value::String(edited);
    }
    Ok(())
}

fn apply_all(
    doc: &mut Value,
    ops: &[DocumentPatchOperation],
    path: &str,
    format: &str,
) -> Result<(), String> {
    for (i, op) in ops.iter().enumerate() {
        apply_operation(doc, &op.sub_path, op.operator, op.value.as_ref())
            .map_err(|e| format!("fieldPath {path} {format}[{i}]: {e}"))?;
    }
    Ok(())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Problems with `overriders` (a rule's `fieldOverrider` list at `path`),
/// each starting with the field's path. `with_schema`: also what the CRD's
/// schema says (patterns, exactly one of json and yaml); without, only
/// what it cannot say (a value of any JSON type is required for add and
/// replace).
pub fn check(overriders: &[FieldOverrider], path: &str, with_schema: bool, errors: &mut Vec<String>) {
    for (i, o) in overriders.iter().enumerate() {
        let path = format!("{path}.fieldOverrider[{i}]");
        if with_schema {
            if !is_pointer(&o.field_path) {
                errors.push(format!(
                    "{path}.fieldPath: {:?} is not a JSON pointer (like /data/config.yaml)",
                    o.field_path
                ));
            }
            if o.json.is_empty() == o.yaml.is_empty() {
                errors.push(format!(
                    "{path}: set exactly one of json and yaml (the format of the document at fieldPath)"
                ));
            }
        }
        for (format, ops) in [("json", &o.json), ("yaml", &o.yaml)] {
            for (j, op) in ops.iter().enumerate() {
                let path = format!("{path}.{format}[{j}]");
                if with_schema && !is_pointer(&op.sub_path) {
                    errors.push(format!(
                        "{path}.subPath: {:?} is not a JSON pointer (like /db/port)",
                        op.sub_path
                    ));
                }
                if op.operator != OverriderOperator::Remove && op.value.is_none() {
                    let name = if op.operator == OverriderOperator::Add { "add" } else { "replace" };
                    errors.push(format!("{path}.value: required for operator {name}"));
                }
            }
        }
    }
}

/// RFC 6901: `/` and then keys, `~` only as `~0` or `~1`.
fn is_pointer(pointer: &str) -> bool {
    let mut chars = pointer.chars();
    if chars.next() != Some('/') {
        return false;
    }
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use OverriderOperator::{Add, Remove, Replace};

    fn op(sub_path: &str, operator: OverriderOperator, value: Option<Value>) -> DocumentPatchOperation {
        DocumentPatchOperation { sub_path: sub_path.into(), operator, value }
    }

    fn yaml(field_path: &str, ops: Vec<DocumentPatchOperation>) -> FieldOverrider {
        FieldOverrider { field_path: field_path.into(), json: vec![], yaml: ops }
    }

    fn json_ops(field_path: &str, ops: Vec<DocumentPatchOperation>) -> FieldOverrider {
        FieldOverrider { field_path: field_path.into(), json: ops, yaml: vec![] }
    }

    fn config_map(key: &str, text: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db"}, "data": {key: text}})
    }

    #[test]
    fn operations_edit_the_document_in_the_string() {
        struct Case {
            name: &'static str,
            text: &'static str,
            overrider: FieldOverrider,
            /// The document after, parsed (so formatting is not compared).
            want: Value,
        }
        // Karmada's documented example: a YAML config in a ConfigMap.
        let karmada_yaml = "app:\n  db:\n    port: 5432\n    host: db.local\n  log:\n    level: debug\n";
        let cases = [
            Case {
                name: "yaml replace, add and remove (Karmada's example)",
                text: karmada_yaml,
                overrider: yaml(
                    "/data/config.yaml",
                    vec![
                        op("/app/db/port", Replace, Some(json!(3306))),
                        op("/app/db/user", Add, Some(json!("fleet"))),
                        op("/app/log", Remove, None),
                    ],
                ),
                want: json!({"app": {"db": {"port": 3306, "host": "db.local", "user": "fleet"}}}),
            },
            Case {
                name: "yaml value may be an object or a list",
                text: "a: 1\n",
                overrider: yaml("/data/config.yaml", vec![op("/b", Add, Some(json!({"c": [1, 2]})))]),
                want: json!({"a": 1, "b": {"c": [1, 2]}}),
            },
            Case {
                name: "yaml list append with -",
                text: "hosts:\n  - a\n",
                overrider: yaml("/data/config.yaml", vec![op("/hosts/-", Add, Some(json!("b")))]),
                want: json!({"hosts": ["a", "b"]}),
            },
            Case {
                name: "json replace and add",
                text: r#"{"db": {"port": 5432}}"#,
                overrider: json_ops(
                    "/data/config.yaml",
                    vec![op("/db/port", Replace, Some(json!(3306))), op("/db/tls", Add, Some(json!(true)))],
                ),
                want: json!({"db": {"port": 3306, "tls": true}}),
            },
            Case {
                name: "key with a slash, escaped as ~1",
                text: "a/b: 1\n",
                overrider: yaml("/data/config.yaml", vec![op("/a~1b", Replace, Some(json!(2)))]),
                want: json!({"a/b": 2}),
            },
        ];
        for case in cases {
            let mut manifest = config_map("config.yaml", case.text);
            apply_field_overrider(&mut manifest, &case.overrider)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let text = manifest["data"]["config.yaml"].as_str().unwrap().to_string();
            let got: Value = if case.overrider.json.is_empty() {
                serde_saphyr::from_str(&text).unwrap()
            } else {
                serde_json::from_str(&text).unwrap()
            };
            assert_eq!(got, case.want, "{}: {text}", case.name);
        }
    }

    #[test]
    fn json_is_written_back_compact_with_sorted_keys() {
        let mut manifest = config_map("c.json", r#"{ "z": 1, "a": 2 }"#);
        apply_field_overrider(&mut manifest, &json_ops("/data/c.json", vec![op("/m", Add, Some(json!(3)))]))
            .unwrap();
        assert_eq!(manifest["data"]["c.json"], r#"{"a":2,"m":3,"z":1}"#);
    }

    #[test]
    fn problems_are_named_and_leave_the_manifest_alone() {
        let cases: [(&str, Value, FieldOverrider, &str); 7] = [
            (
                "no such field",
                config_map("config.yaml", "a: 1\n"),
                yaml("/data/other.yaml", vec![op("/a", Remove, None)]),
                "fieldPath /data/other.yaml does not exist",
            ),
            (
                "not a string",
                json!({"spec": {"replicas": 2}}),
                yaml("/spec", vec![op("/a", Remove, None)]),
                "fieldPath /spec holds an object, not a string with a JSON or YAML document",
            ),
            (
                "not JSON",
                config_map("c", "a: 1"),
                json_ops("/data/c", vec![op("/a", Remove, None)]),
                "the string at /data/c is not a JSON document",
            ),
            (
                "not YAML",
                config_map("c", "a: [1,\n"),
                yaml("/data/c", vec![op("/a", Remove, None)]),
                "the string at /data/c is not a YAML document",
            ),
            (
                "sub path missing",
                config_map("c", "a: 1\n"),
                yaml("/data/c", vec![op("/a", Replace, Some(json!(1))), op("/b/c", Replace, Some(json!(2)))]),
                "fieldPath /data/c yaml[1]: path /b/c does not exist",
            ),
            (
                "add without a value",
                config_map("c", "a: 1\n"),
                yaml("/data/c", vec![op("/b", Add, None)]),
                "fieldPath /data/c yaml[0]: add at /b needs a value",
            ),
            (
                "both formats",
                config_map("c", "{}"),
                FieldOverrider {
                    field_path: "/data/c".into(),
                    json: vec![op("/a", Add, Some(json!(1)))],
                    yaml: vec![op("/a", Add, Some(json!(1)))],
                },
                "fieldPath /data/c: set json or yaml operations, not both",
            ),
        ];
        for (name, manifest, overrider, want) in cases {
            let mut edited = manifest.clone();
            let err = apply_field_overrider(&mut edited, &overrider).unwrap_err();
            assert!(err.starts_with(want), "{name}: {err}");
            assert_eq!(edited, manifest, "{name}: the manifest is unchanged");
        }
    }

    #[test]
    fn checks_name_the_field() {
        let bad = vec![
            FieldOverrider { field_path: "data/c".into(), json: vec![], yaml: vec![] },
            yaml("/data/c", vec![op("db", Replace, None), op("/x", Remove, None)]),
        ];
        let mut with_schema = Vec::new();
        check(&bad, "spec.overrideRules[0].overriders", true, &mut with_schema);
        assert_eq!(
            with_schema,
            [
                "spec.overrideRules[0].overriders.fieldOverrider[0].fieldPath: \"data/c\" is not a JSON pointer \
                 (like /data/config.yaml)",
                "spec.overrideRules[0].overriders.fieldOverrider[0]: set exactly one of json and yaml (the format \
                 of the document at fieldPath)",
                "spec.overrideRules[0].overriders.fieldOverrider[1].yaml[0].subPath: \"db\" is not a JSON pointer \
                 (like /db/port)",
                "spec.overrideRules[0].overriders.fieldOverrider[1].yaml[0].value: required for operator replace",
            ]
        );
        let mut beyond_schema = Vec::new();
        check(&bad, "spec.overriders", false, &mut beyond_schema);
        assert_eq!(
            beyond_schema,
            ["spec.overriders.fieldOverrider[1].yaml[0].value: required for operator replace"]
        );
    }
}
