//! Policy fields written one level off, refused with where they belong.
//!
//! Karmada's own documentation has `clusterAffinity` indented under `spec`
//! instead of `spec.placement`; a strict client would only hear "unknown
//! field", any other client would have it pruned and the policy would select
//! every cluster. Each common misplacement is declared in the published
//! schema only to be refused by a CEL rule on its parent whose message names
//! the right place (`crds()` applies this to the policy CRDs).

/// How a refused misplaced field's message begins.
pub const MISPLACED_FIELD: &str = "misplaced field";

/// The JSON type a misplaced field has where it belongs: the schema must
/// accept the value for the rule (and its message) to be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Object,
    /// A list of objects.
    Array,
    /// A list of strings.
    Strings,
    String,
    Integer,
    Boolean,
}

/// (Kind suffix the entry applies to, dotted path as written (list items
/// implied), where the field belongs, its type.)
pub const MISPLACED_FIELDS: &[(&str, &str, &str, FieldType)] = &[
    ("PropagationPolicy", "spec.clusterAffinity", "spec.placement", FieldType::Object),
    ("PropagationPolicy", "spec.clusterAffinities", "spec.placement", FieldType::Array),
    ("PropagationPolicy", "spec.clusterTolerations", "spec.placement", FieldType::Array),
    ("PropagationPolicy", "spec.spreadConstraints", "spec.placement", FieldType::Array),
    ("PropagationPolicy", "spec.replicaScheduling", "spec.placement", FieldType::Object),
    (
        "PropagationPolicy",
        "spec.placement.clusterNames",
        "spec.placement.clusterAffinity",
        FieldType::Strings,
    ),
    (
        "PropagationPolicy",
        "spec.placement.labelSelector",
        "spec.placement.clusterAffinity",
        FieldType::Object,
    ),
    (
        "PropagationPolicy",
        "spec.placement.fieldSelector",
        "spec.placement.clusterAffinity",
        FieldType::Object,
    ),
    ("PropagationPolicy", "spec.placement.exclude", "spec.placement.clusterAffinity", FieldType::Strings),
    ("PropagationPolicy", "spec.placement.resourceSelectors", "spec", FieldType::Array),
    ("PropagationPolicy", "spec.placement.propagateDeps", "spec", FieldType::Boolean),
    ("PropagationPolicy", "spec.placement.priority", "spec", FieldType::Integer),
    ("PropagationPolicy", "spec.placement.conflictResolution", "spec", FieldType::String),
    (
        "PropagationPolicy",
        "spec.placement.replicaDivisionPreference",
        "spec.placement.replicaScheduling",
        FieldType::String,
    ),
    (
        "PropagationPolicy",
        "spec.placement.replicaSchedulingType",
        "spec.placement.replicaScheduling",
        FieldType::String,
    ),
    (
        "PropagationPolicy",
        "spec.placement.weightPreference",
        "spec.placement.replicaScheduling",
        FieldType::Object,
    ),
    ("OverridePolicy", "spec.plaintext", "spec.overrideRules[].overriders", FieldType::Array),
    ("OverridePolicy", "spec.imageOverrider", "spec.overrideRules[].overriders", FieldType::Array),
    ("OverridePolicy", "spec.commandOverrider", "spec.overrideRules[].overriders", FieldType::Array),
    ("OverridePolicy", "spec.argsOverrider", "spec.overrideRules[].overriders", FieldType::Array),
    ("OverridePolicy", "spec.labelsOverrider", "spec.overrideRules[].overriders", FieldType::Array),
    ("OverridePolicy", "spec.annotationsOverrider", "spec.overrideRules[].overriders", FieldType::Array),
    ("OverridePolicy", "spec.overrideRules.plaintext", "spec.overrideRules[].overriders", FieldType::Array),
    (
        "OverridePolicy",
        "spec.overrideRules.imageOverrider",
        "spec.overrideRules[].overriders",
        FieldType::Array,
    ),
    (
        "OverridePolicy",
        "spec.overrideRules.commandOverrider",
        "spec.overrideRules[].overriders",
        FieldType::Array,
    ),
    (
        "OverridePolicy",
        "spec.overrideRules.argsOverrider",
        "spec.overrideRules[].overriders",
        FieldType::Array,
    ),
    (
        "OverridePolicy",
        "spec.overrideRules.labelsOverrider",
        "spec.overrideRules[].overriders",
        FieldType::Array,
    ),
    (
        "OverridePolicy",
        "spec.overrideRules.annotationsOverrider",
        "spec.overrideRules[].overriders",
        FieldType::Array,
    ),
    (
        "OverridePolicy",
        "spec.overrideRules.clusterNames",
        "spec.overrideRules[].targetCluster",
        FieldType::Array,
    ),
    (
        "OverridePolicy",
        "spec.overrideRules.overriders.targetCluster",
        "spec.overrideRules[]",
        FieldType::Object,
    ),
];

/// The message of a misplaced field's rule.
pub fn message(field: &str, belongs: &str) -> String {
    format!("{MISPLACED_FIELD}: `{field}` belongs under `{belongs}`")
}

/// Declares the misplaced fields of the CRD's kind in `schema` (its
/// `openAPIV3Schema`), each refused by a rule on its parent. A path whose
/// field the schema already has (a real field) is left alone.
pub fn declare(kind: &str, schema: &mut serde_json::Value) {
    for (suffix, path, belongs, field_type) in MISPLACED_FIELDS {
        if kind.ends_with(suffix) {
            refuse(schema, path, belongs, *field_type);
        }
    }
}

fn type_schema(t: FieldType) -> serde_json::Value {
    let any_object = serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    match t {
        // Items typed: CEL drops a list of untyped items from the object's
        // type, and a rule naming it would not compile.
        FieldType::Array => serde_json::json!({"type": "array", "items": any_object}),
        FieldType::Strings => serde_json::json!({"type": "array", "items": {"type": "string"}}),
        FieldType::Object => any_object,
        FieldType::String => serde_json::json!({"type": "string"}),
        FieldType::Integer => serde_json::json!({"type": "integer"}),
        FieldType::Boolean => serde_json::json!({"type": "boolean"}),
    }
}

fn refuse(schema: &mut serde_json::Value, path: &str, belongs: &str, field_type: FieldType) {
    let mut segments: Vec<&str> = path.split('.').collect();
    let Some(field) = segments.pop() else { return };
    let mut parent = schema;
    for segment in segments {
        if parent.get("type").and_then(serde_json::Value::as_str) == Some("array") {
            parent = &mut parent["items"];
        }
        // Only under parents the schema declares: a misplacement is one
        // level off a real field.
        match parent.pointer_mut(&format!("/properties/{segment}")) {
            Some(next) => parent = next,
            None => return,
        }
    }
    if parent.get("type").and_then(serde_json::Value::as_str) == Some("array") {
        parent = &mut parent["items"];
    }
    if !parent.is_object() || parent.pointer(&format!("/properties/{field}")).is_some() {
        return;
    }
    let message = message(field, belongs);
    let mut declared = type_schema(field_type);
    declared["description"] = message.clone().into();
    if parent.get("properties").is_none_or(|p| !p.is_object()) {
        parent["properties"] = serde_json::json!({});
    }
    parent["properties"][field] = declared;
    let rule = serde_json::json!({
        "rule": format!("!has(self.{field})"),
        "message": message,
        "fieldPath": format!(".{field}"),
        "reason": "FieldValueInvalid",
    });
    match parent.get_mut("x-kubernetes-validations").and_then(serde_json::Value::as_array_mut) {
        Some(rules) => rules.push(rule),
        None => parent["x-kubernetes-validations"] = serde_json::json!([rule]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misplaced_fields_are_declared_once_under_real_parents_with_a_rule_naming_their_place() {
        for crd in crate::crds().into_iter().filter(|c| c.spec.group == crate::policy::GROUP) {
            let kind = crd.spec.names.kind.clone();
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let root = &schema["openAPIV3Schema"];
            let cases: Vec<_> = MISPLACED_FIELDS.iter().filter(|(k, ..)| kind.ends_with(k)).collect();
            assert!(!cases.is_empty(), "{kind}");
            for (_, path, belongs, _) in cases {
                let mut pointer = String::new();
                let mut node = root;
                for segment in path.split('.') {
                    if node["type"] == "array" {
                        pointer.push_str("/items");
                        node = &node["items"];
                    }
                    pointer.push_str(&format!("/properties/{segment}"));
                    node = &node["properties"][segment];
                }
                let field = path.rsplit('.').next().unwrap();
                assert!(!node.is_null(), "{kind}: {path} not declared");
                // Typed all the way down, or CEL cannot see it.
                assert!(node["type"].is_string(), "{kind}: {path}: {node}");
                if node["type"] == "array" {
                    assert!(node["items"]["type"].is_string(), "{kind}: {path}: {node}");
                }
                let parent_pointer = pointer.rsplit_once("/properties/").unwrap().0.to_string();
                let rules = root.pointer(&format!("{parent_pointer}/x-kubernetes-validations")).unwrap();
                let wanted = message(field, belongs);
                assert!(
                    rules.as_array().unwrap().iter().any(|r| r["message"] == wanted.as_str()
                        && r["rule"] == format!("!has(self.{field})").as_str()),
                    "{kind}: {path}: {rules:#}"
                );
            }
        }
    }

    #[test]
    fn a_real_field_is_never_turned_into_a_refused_one() {
        let mut schema = serde_json::json!({"properties": {"spec": {"type": "object", "properties": {
            "clusterAffinity": {"type": "object"}}}}});
        declare("PropagationPolicy", &mut schema);
        assert_eq!(
            schema["properties"]["spec"]["properties"]["clusterAffinity"],
            serde_json::json!({"type": "object"})
        );
        assert!(schema["properties"]["spec"]["properties"]["clusterTolerations"]["description"]
            .as_str()
            .unwrap()
            .starts_with(MISPLACED_FIELD));
        // A missing parent is not invented.
        assert!(schema["properties"]["spec"]["properties"].get("placement").is_none());
    }
}
