//! Validation of policy objects, as messages that each start with the path
//! of the field.
//!
//! The published CRDs make the API server refuse most of it itself (see
//! `flotilla_api::policy`): unknown fields for strict clients, unsupported
//! Karmada fields, and the rules across fields as CEL. What a schema cannot
//! say is [`validate_policy_beyond_schema`], which the hub's admission
//! webhook applies: a namespaced policy's selectors against its own
//! namespace (CEL sees no `metadata.namespace`), the embedded Kubernetes
//! types (label selectors, tolerations: their schemas come from
//! k8s-openapi), `exclude` against `clusterNames` (comparing two unbounded
//! lists is over the CEL cost budget), and a plaintext overrider's `value`
//! (any JSON: CEL cannot see an untyped field). [`validate_policy`] checks
//! everything, schema included, on an object as stored: the hub's
//! controllers judge with it, so a policy stored under an older schema or
//! while the fail-open webhook was away is marked `Valid=False` and unused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use flotilla_api::misplaced::MISPLACED_FIELD;
use flotilla_api::policy::{
    ClusterAffinity, FieldSelectorOperator, OverrideSpec, OverriderOperator, PropagationSpec,
    ReplicaDivisionPreference, ReplicaSchedulingType, ResourceSelector, RuleWithCluster, DEFAULT_SCHEDULER,
    UNSUPPORTED_KARMADA_FIELD, UNSUPPORTED_KARMADA_FIELDS,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::de::DeserializeOwned;
use serde_json::Value;

const PRESERVE_UNKNOWN: &str = "x-kubernetes-preserve-unknown-fields";

/// Paths (like `spec.placement.clusterAfinity`) of fields in `object` that
/// the CRD schema does not declare. The walk follows `properties`, `items`
/// and `additionalProperties`; it stops where the schema keeps unknown
/// fields on purpose (`x-kubernetes-preserve-unknown-fields` on a node that
/// declares no properties, e.g. a plaintext overrider's `value`). A node
/// that keeps unknown fields *and* declares properties is still checked
/// (objects stored under an older schema may have them). At the root,
/// `apiVersion`, `kind` and `metadata` are the API server's business.
pub fn unknown_fields(schema: &Value, object: &Value) -> Vec<String> {
    let mut report = SchemaReport::default();
    walk(schema, &mut object.clone(), "", &mut report);
    report.unknown.into_iter().map(|u| u.path).collect()
}

/// Everything wrong with a policy object (`kind` is PropagationPolicy,
/// ClusterPropagationPolicy, OverridePolicy or ClusterOverridePolicy), as
/// messages a person can act on, each starting with the field's path. Empty
/// means valid.
pub fn validate_policy(kind: &str, object: &Value) -> Vec<String> {
    let Some(schema) = policy_schemas().get(kind) else {
        return vec![format!("{kind} is not a Flotilla policy kind")];
    };
    let mut object = object.clone();
    let mut report = SchemaReport::default();
    // Prunes what it reports, so the typed checks below see only known fields.
    walk(schema, &mut object, "", &mut report);

    let mut errors: Vec<String> = report.unknown.iter().flat_map(describe_unknown).collect();
    let schema_errors = !report.violations.is_empty();
    errors.extend(report.violations);

    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).filter(|ns| !ns.is_empty());
    let namespaced = matches!(kind, "PropagationPolicy" | "OverridePolicy");
    let own_namespace = if namespaced { Some((kind, namespace.unwrap_or("default"))) } else { None };
    let spec = object.get("spec").cloned().unwrap_or(Value::Object(Default::default()));
    let semantic = match kind {
        "PropagationPolicy" | "ClusterPropagationPolicy" => {
            typed::<PropagationSpec>(spec).map(|spec| check_propagation(&spec, own_namespace, Scope::All))
        }
        _ => typed::<OverrideSpec>(spec).map(|spec| check_override(&spec, own_namespace, Scope::All)),
    };
    match semantic {
        Ok(problems) => errors.extend(problems),
        // The schema problems already explain why the typed form does not
        // parse (a missing required field, a value of the wrong type).
        Err(_) if schema_errors => {}
        Err(parse_error) => errors.push(parse_error),
    }
    errors
}

/// What is wrong with a policy that its CRD schema cannot say (see the
/// module doc). The object has passed the schema: a spec that does not
/// parse is left to it.
pub fn validate_policy_beyond_schema(kind: &str, object: &Value) -> Vec<String> {
    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).filter(|ns| !ns.is_empty());
    let namespaced = matches!(kind, "PropagationPolicy" | "OverridePolicy");
    let own_namespace = if namespaced { Some((kind, namespace.unwrap_or("default"))) } else { None };
    let spec = object.get("spec").cloned().unwrap_or(Value::Object(Default::default()));
    let checked = match kind {
        "PropagationPolicy" | "ClusterPropagationPolicy" => typed::<PropagationSpec>(spec)
            .map(|spec| check_propagation(&spec, own_namespace, Scope::BeyondSchema)),
        "OverridePolicy" | "ClusterOverridePolicy" => {
            typed::<OverrideSpec>(spec).map(|spec| check_override(&spec, own_namespace, Scope::BeyondSchema))
        }
        _ => return vec![format!("{kind} is not a Flotilla policy kind")],
    };
    checked.unwrap_or_default()
}

/// What the hub's webhook says about a policy being created (`old` None)
/// or updated: the problems beyond the schema that `new` has and `old` did
/// not. A policy stored before these rules existed (or while the webhook was
/// away) can thus still get its finalizers, labels and status changed, and
/// be fixed step by step; a policy being deleted is never held up.
pub fn validate_policy_change(kind: &str, old: Option<&Value>, new: &Value) -> Vec<String> {
    if new.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        return Vec::new();
    }
    let errors = validate_policy_beyond_schema(kind, new);
    let Some(old) = old else { return errors };
    let before: BTreeSet<String> = validate_policy_beyond_schema(kind, old).into_iter().collect();
    errors.into_iter().filter(|e| !before.contains(e)).collect()
}

/// Which checks to run: all of them, or only those the CRD schema cannot
/// express (the rest the API server has already enforced).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    BeyondSchema,
}

/// The published `openAPIV3Schema` of each policy kind, as JSON.
fn policy_schemas() -> &'static BTreeMap<String, Value> {
    static SCHEMAS: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        flotilla_api::crds()
            .into_iter()
            .filter(|crd| crd.spec.group == flotilla_api::policy::GROUP)
            .filter_map(|crd| {
                let schema = crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?;
                Some((crd.spec.names.kind.clone(), serde_json::to_value(schema).ok()?))
            })
            .collect()
    })
}

/// A field the schema does not declare, and the names it does declare there
/// (to suggest one).
struct UnknownField {
    path: String,
    known: Vec<String>,
    value: Value,
}

#[derive(Default)]
struct SchemaReport {
    unknown: Vec<UnknownField>,
    /// Values the schema's constraints (type, required, enum, minimum,
    /// minItems, minLength) reject. The API server checks these too, before
    /// the webhook; they are here so the function judges stored objects alone.
    violations: Vec<String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Walks `value` along `schema`, removing (and reporting) undeclared fields.
/// The message of a field the schema declares only to refuse as
/// misplaced (`flotilla_api::misplaced`), if `schema` is one.
fn misplaced_message(schema: &Value) -> Option<&str> {
    schema.get("description").and_then(Value::as_str).filter(|d| d.starts_with(MISPLACED_FIELD))
}

fn walk(schema: &Value, value: &mut Value, path: &str, report: &mut SchemaReport) {
    if !type_matches(schema, value) {
        let wanted = schema.get("type").and_then(Value::as_str).unwrap_or("?");
        report.violations.push(format!("{path}: must be {}", article(wanted)));
        return;
    }
    check_constraints(schema, value, path, report);
    let properties = schema.get("properties").and_then(Value::as_object);
    let preserves = schema.get(PRESERVE_UNKNOWN).and_then(Value::as_bool).unwrap_or(false);
    match value {
        Value::Object(fields) => {
            let additional = schema.get("additionalProperties");
            if let Some(properties) = properties {
                let mut undeclared = Vec::new();
                let mut misplaced = Vec::new();
                for (key, child) in fields.iter_mut() {
                    if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    let child_path = join(path, key);
                    match properties.get(key) {
                        // Declared (untyped) only for the CRD to refuse it:
                        // an unsupported Karmada field.
                        Some(child_schema)
                            if child_schema
                                .get("description")
                                .and_then(Value::as_str)
                                .is_some_and(|d| d.starts_with(UNSUPPORTED_KARMADA_FIELD)) =>
                        {
                            undeclared.push(key.clone())
                        }
                        // Declared only for the CRD's rule to refuse it with
                        // where it belongs: say the same.
                        Some(child_schema) if misplaced_message(child_schema).is_some() => {
                            let message = misplaced_message(child_schema).unwrap_or_default();
                            report.violations.push(format!("{child_path}: {message}"));
                            misplaced.push(key.clone());
                        }
                        Some(child_schema) => walk(child_schema, child, &child_path, report),
                        None => undeclared.push(key.clone()),
                    }
                }
                for key in misplaced {
                    fields.remove(&key);
                }
                for key in undeclared {
                    let value = fields.remove(&key).unwrap_or_default();
                    let known = properties.keys().cloned().collect();
                    report.unknown.push(UnknownField { path: join(path, &key), known, value });
                }
            } else if let Some(item_schema) = additional.filter(|a| a.is_object()) {
                for (key, child) in fields.iter_mut() {
                    walk(item_schema, child, &join(path, key), report);
                }
            } else if !preserves
                && additional.is_none()
                && schema.get("type").and_then(Value::as_str) == Some("object")
            {
                // An object that declares nothing keeps nothing.
                for (key, value) in std::mem::take(fields) {
                    report.unknown.push(UnknownField { path: join(path, &key), known: Vec::new(), value });
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|i| i.is_object()) {
                for (index, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{index}]"), report);
                }
            }
        }
        _ => {}
    }
}

fn article(type_name: &str) -> String {
    match type_name {
        "object" | "array" | "integer" => format!("an {type_name}"),
        "boolean" | "string" | "number" => format!("a {type_name}"),
        other => other.to_string(),
    }
}

fn type_matches(schema: &Value, value: &Value) -> bool {
    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return value.is_string() || value.is_i64() || value.is_u64();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    }
}

fn check_constraints(schema: &Value, value: &Value, path: &str, report: &mut SchemaReport) {
    let shown = |key: &str| if path.is_empty() { key.to_string() } else { path.to_string() };
    if let (Some(required), Some(fields)) =
        (schema.get("required").and_then(Value::as_array), value.as_object())
    {
        for key in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(key) {
                report.violations.push(format!("{}: required", join(path, key)));
            }
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
            report.violations.push(match unsupported_reason(path) {
                Some(reason) => format!("{path}: {value}: Karmada value not supported by Flotilla: {reason}"),
                None => format!("{}: {value} is not one of {}", shown(""), allowed.join(", ")),
            });
        }
    }
    if let (Some(minimum), Some(number)) = (schema.get("minimum").and_then(Value::as_f64), value.as_f64()) {
        if number < minimum {
            report.violations.push(format!("{}: must be at least {minimum}, not {value}", shown("")));
        }
    }
    if let (Some(maximum), Some(number)) = (schema.get("maximum").and_then(Value::as_f64), value.as_f64()) {
        if number > maximum {
            report.violations.push(format!("{}: must be at most {maximum}, not {value}", shown("")));
        }
    }
    if let (Some(min), Some(items)) = (schema.get("minItems").and_then(Value::as_u64), value.as_array()) {
        if (items.len() as u64) < min {
            let noun = if min == 1 { "item" } else { "items" };
            report.violations.push(format!("{}: must have at least {min} {noun}", shown("")));
        }
    }
    if let (Some(max), Some(items)) = (schema.get("maxItems").and_then(Value::as_u64), value.as_array()) {
        if items.len() as u64 > max {
            report.violations.push(format!("{}: must have at most {max} items", shown("")));
        }
    }
    if let (Some(min), Some(text)) = (schema.get("minLength").and_then(Value::as_u64), value.as_str()) {
        if (text.chars().count() as u64) < min {
            report.violations.push(format!("{}: must not be empty", shown("")));
        }
    }
}

fn without_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}

fn unsupported_reason(path: &str) -> Option<&'static str> {
    let path = without_indices(path);
    UNSUPPORTED_KARMADA_FIELDS.iter().find(|(field, _)| *field == path).map(|(_, reason)| *reason)
}

fn describe_unknown(field: &UnknownField) -> Vec<String> {
    if let Some(reason) = unsupported_reason(&field.path) {
        return vec![format!("{}: Karmada field not supported by Flotilla: {reason}", field.path)];
    }
    // A Karmada section Flotilla lacks entirely (e.g. `failover`): name the
    // unsupported fields inside it.
    let prefix = format!("{}.", without_indices(&field.path));
    if UNSUPPORTED_KARMADA_FIELDS.iter().any(|(path, _)| path.starts_with(&prefix)) {
        if let Some(children) = field.value.as_object().filter(|c| !c.is_empty()) {
            return children
                .iter()
                .flat_map(|(key, value)| {
                    describe_unknown(&UnknownField {
                        path: join(&field.path, key),
                        known: Vec::new(),
                        value: value.clone(),
                    })
                })
                .collect();
        }
    }
    let name = field.path.rsplit('.').next().unwrap_or(&field.path);
    vec![match closest(name, &field.known) {
        Some(suggestion) => format!("{}: unknown field (did you mean {suggestion}?)", field.path),
        None => format!("{}: unknown field", field.path),
    }]
}

/// The declared name `name` is most likely a typo of, if any.
fn closest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    let name = name.to_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&name, &k.to_lowercase()), k))
        // Up to one edit per four characters, at least one.
        .filter(|(distance, k)| *distance <= (k.len() / 4).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Parses the spec into its Rust type, with the failing field's path.
fn typed<T: DeserializeOwned>(spec: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "spec".to_string() } else { format!("spec.{path}") };
        match unsupported_reason(&path) {
            Some(reason) => format!("{path}: Karmada field not supported by Flotilla: {reason}"),
            None => format!("{path}: {}", e.inner()),
        }
    })
}

/// The namespaced policy's kind and namespace; None for cluster-wide ones.
type OwnNamespace<'a> = Option<(&'a str, &'a str)>;

fn check_propagation(spec: &PropagationSpec, own_namespace: OwnNamespace, scope: Scope) -> Vec<String> {
    let mut errors = Vec::new();
    check_selectors(&spec.resource_selectors, own_namespace, &mut errors);
    // A CEL rule on the field, too.
    match spec.scheduler_name.as_deref() {
        Some(name) if scope == Scope::All && name != DEFAULT_SCHEDULER => errors.push(format!(
            "spec.schedulerName: no scheduler named {name:?}: Flotilla has one scheduler, \
             `{DEFAULT_SCHEDULER}` (Karmada's default); set it or remove the field"
        )),
        _ => {}
    }
    let placement = &spec.placement;
    if let Some(affinity) = &placement.cluster_affinity {
        check_affinity(affinity, "spec.placement.clusterAffinity", scope, &mut errors);
    }
    for (i, term) in placement.cluster_affinities.iter().enumerate() {
        check_affinity(&term.affinity, &format!("spec.placement.clusterAffinities[{i}]"), scope, &mut errors);
    }
    for (i, toleration) in placement.cluster_tolerations.iter().enumerate() {
        check_toleration(toleration, &format!("spec.placement.clusterTolerations[{i}]"), &mut errors);
    }
    if let Some(weights) = placement.replica_scheduling.as_ref().and_then(|s| s.weight_preference.as_ref()) {
        for (i, weight) in weights.static_weight_list.iter().enumerate() {
            let path = format!("spec.placement.replicaScheduling.weightPreference.staticWeightList[{i}]");
            check_affinity(&weight.target_cluster, &format!("{path}.targetCluster"), scope, &mut errors);
        }
    }
    if scope == Scope::BeyondSchema {
        return errors;
    }
    // The rest are the CRD's CEL rules, checked again on stored objects.
    if let Some(failover) = &spec.failover {
        errors.extend(crate::app_failover::rule_errors(failover));
    }
    if placement.cluster_affinity.is_some() && !placement.cluster_affinities.is_empty() {
        errors.push(
            "spec.placement.clusterAffinities: set clusterAffinity or clusterAffinities, not both".into(),
        );
    }
    for (i, term) in placement.cluster_affinities.iter().enumerate() {
        if placement.cluster_affinities[..i].iter().any(|t| t.affinity_name == term.affinity_name) {
            errors.push(format!(
                "spec.placement.clusterAffinities[{i}].affinityName: {:?} names an earlier group too",
                term.affinity_name
            ));
        }
    }
    for (i, spread) in placement.spread_constraints.iter().enumerate() {
        let path = format!("spec.placement.spreadConstraints[{i}]");
        let by_label = spread.spread_by_label.as_deref().is_some_and(|l| !l.is_empty());
        if spread.spread_by_field.is_some() == by_label {
            errors.push(format!("{path}: set exactly one of spreadByField and spreadByLabel"));
        }
        if spread.max_groups > 0 && spread.min_groups > spread.max_groups {
            errors.push(format!(
                "{path}.minGroups: {} is more than maxGroups ({})",
                spread.min_groups, spread.max_groups
            ));
        }
    }
    if let Some(scheduling) = &placement.replica_scheduling {
        let path = "spec.placement.replicaScheduling";
        if scheduling.replica_scheduling_type == Some(ReplicaSchedulingType::Duplicated) {
            for (set, field) in [
                (scheduling.replica_division_preference.is_some(), "replicaDivisionPreference"),
                (scheduling.weight_preference.is_some(), "weightPreference"),
            ] {
                if set {
                    errors.push(format!(
                        "{path}.{field}: only applies to replicaSchedulingType Divided, not Duplicated"
                    ));
                }
            }
        }
        if let Some(weights) = &scheduling.weight_preference {
            let path = format!("{path}.weightPreference");
            if !weights.static_weight_list.is_empty() && weights.dynamic_weight.is_some() {
                errors.push(format!("{path}: set staticWeightList or dynamicWeight, not both"));
            }
            if !weights.static_weight_list.is_empty()
                && scheduling.replica_division_preference == Some(ReplicaDivisionPreference::Aggregated)
            {
                errors.push(format!(
                    "{path}.staticWeightList: only applies to replicaDivisionPreference Weighted, not Aggregated"
                ));
            }
        }
    }
    errors
}

fn check_override(spec: &OverrideSpec, own_namespace: OwnNamespace, scope: Scope) -> Vec<String> {
    let mut errors = Vec::new();
    check_selectors(&spec.resource_selectors, own_namespace, &mut errors);
    // Karmada's deprecated spec-level shape is one rule, at `spec`.
    if spec.uses_deprecated_shape() && !spec.override_rules.is_empty() {
        errors.push(
            "spec.overriders: set overrideRules, or the deprecated targetCluster and overriders, not both \
             (as in Karmada)"
                .into(),
        );
    }
    let rules: Vec<(String, RuleWithCluster)> = match spec.override_rules.is_empty() {
        true => spec.rules().iter().map(|r| ("spec".to_string(), r.clone())).collect(),
        false => spec
            .override_rules
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("spec.overrideRules[{i}]"), r.clone()))
            .collect(),
    };
    for (path, rule) in &rules {
        if let Some(affinity) = &rule.target_cluster {
            check_affinity(affinity, &format!("{path}.targetCluster"), scope, &mut errors);
        }
        let overriders = &rule.overriders;
        let sets_value = |operator: OverriderOperator| operator != OverriderOperator::Remove;
        for (j, plaintext) in overriders.plaintext.iter().enumerate() {
            let path = format!("{path}.overriders.plaintext[{j}]");
            if scope == Scope::All {
                check_pointer(&plaintext.path, &format!("{path}.path"), &mut errors);
            }
            if sets_value(plaintext.operator) && plaintext.value.is_none() {
                errors.push(format!(
                    "{path}.value: required for operator {}",
                    operator_name(plaintext.operator)
                ));
            }
        }
        crate::field_overrides::check(
            &overriders.field_overrider,
            &format!("{path}.overriders"),
            scope == Scope::All,
            &mut errors,
        );
        if scope == Scope::BeyondSchema {
            continue;
        }
        // The rest are the CRD's CEL rules and patterns.
        for (j, image) in overriders.image_overrider.iter().enumerate() {
            let path = format!("{path}.overriders.imageOverrider[{j}]");
            if let Some(predicate) = &image.predicate {
                check_pointer(&predicate.path, &format!("{path}.predicate.path"), &mut errors);
            }
            if sets_value(image.operator) && image.value.is_empty() {
                errors.push(format!(
                    "{path}.value: must not be empty for operator {}",
                    operator_name(image.operator)
                ));
            }
        }
        for (field, list) in [
            ("commandOverrider", &overriders.command_overrider),
            ("argsOverrider", &overriders.args_overrider),
        ] {
            for (j, overrider) in list.iter().enumerate() {
                if overrider.operator == OverriderOperator::Replace {
                    errors.push(format!(
                        "{path}.overriders.{field}[{j}].operator: must be add or remove (as in Karmada), not replace"
                    ));
                }
            }
        }
    }
    errors
}

fn operator_name(operator: OverriderOperator) -> &'static str {
    match operator {
        OverriderOperator::Add => "add",
        OverriderOperator::Remove => "remove",
        OverriderOperator::Replace => "replace",
    }
}

/// RFC 6901: starts with `/`, and `~` only as `~0` or `~1`.
fn check_pointer(pointer: &str, path: &str, errors: &mut Vec<String>) {
    let mut chars = pointer.chars().peekable();
    let mut valid = pointer.starts_with('/');
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            valid = false;
        }
    }
    if !valid {
        errors.push(format!("{path}: {pointer:?} is not a JSON pointer (like /spec/replicas)"));
    }
}

fn check_selectors(selectors: &[ResourceSelector], own_namespace: OwnNamespace, errors: &mut Vec<String>) {
    for (i, selector) in selectors.iter().enumerate() {
        let path = format!("spec.resourceSelectors[{i}]");
        if let Some((kind, namespace)) = own_namespace {
            if !selector.namespace.is_empty() && selector.namespace != namespace {
                errors.push(format!(
                    "{path}.namespace: a {kind} selects only in its own namespace {namespace:?}, not {:?}",
                    selector.namespace
                ));
            }
        }
        if let Some(labels) = &selector.label_selector {
            check_label_selector(labels, &format!("{path}.labelSelector"), errors);
        }
    }
}

fn check_affinity(affinity: &ClusterAffinity, path: &str, scope: Scope, errors: &mut Vec<String>) {
    if let Some(labels) = &affinity.label_selector {
        check_label_selector(labels, &format!("{path}.labelSelector"), errors);
    }
    // Field selectors' values: a CEL rule.
    if let Some(fields) = affinity.field_selector.as_ref().filter(|_| scope == Scope::All) {
        for (i, requirement) in fields.match_expressions.iter().enumerate() {
            let path = format!("{path}.fieldSelector.matchExpressions[{i}]");
            let (needs_values, name) = match requirement.operator {
                FieldSelectorOperator::In => (true, "In"),
                FieldSelectorOperator::NotIn => (true, "NotIn"),
                FieldSelectorOperator::Exists => (false, "Exists"),
                FieldSelectorOperator::DoesNotExist => (false, "DoesNotExist"),
            };
            check_values(needs_values, name, requirement.values.is_empty(), &path, errors);
        }
    }
    let excluded: BTreeSet<&String> = affinity.exclude.iter().collect();
    if !affinity.cluster_names.is_empty() && affinity.cluster_names.iter().all(|n| excluded.contains(n)) {
        errors
            .push(format!("{path}.exclude: excludes every cluster in clusterNames, so nothing is selected"));
    }
}

fn check_values(needs_values: bool, operator: &str, empty: bool, path: &str, errors: &mut Vec<String>) {
    if needs_values && empty {
        errors.push(format!("{path}.values: required (at least one) for operator {operator}"));
    }
    if !needs_values && !empty {
        errors.push(format!("{path}.values: must be empty for operator {operator}"));
    }
}

/// The API server does not validate label selectors inside custom
/// resources; an unknown operator would otherwise match nothing, silently.
fn check_label_selector(selector: &LabelSelector, path: &str, errors: &mut Vec<String>) {
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        let path = format!("{path}.matchExpressions[{i}]");
        let empty = requirement.values.as_ref().is_none_or(Vec::is_empty);
        match requirement.operator.as_str() {
            op @ ("In" | "NotIn") => check_values(true, op, empty, &path, errors),
            op @ ("Exists" | "DoesNotExist") => check_values(false, op, empty, &path, errors),
            other => errors
                .push(format!("{path}.operator: {other:?} is not one of In, NotIn, Exists, DoesNotExist")),
        }
    }
}

fn check_toleration(
    toleration: &k8s_openapi::api::core::v1::Toleration,
    path: &str,
    errors: &mut Vec<String>,
) {
    let operator = toleration.operator.as_deref().unwrap_or_default();
    let key = toleration.key.as_deref().unwrap_or_default();
    let value = toleration.value.as_deref().unwrap_or_default();
    let effect = toleration.effect.as_deref().unwrap_or_default();
    match operator {
        "" | "Equal" if key.is_empty() => errors
            .push(format!("{path}.operator: must be Exists when key is empty (to tolerate every taint)")),
        "" | "Equal" => {}
        "Exists" if !value.is_empty() => {
            errors.push(format!("{path}.value: must be empty when operator is Exists"))
        }
        "Exists" => {}
        other => errors.push(format!("{path}.operator: {other:?} is not Equal or Exists")),
    }
    if !matches!(effect, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        errors.push(format!("{path}.effect: {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"));
    }
    if toleration.toleration_seconds.is_some() && effect != "NoExecute" {
        errors.push(format!("{path}.tolerationSeconds: only applies to effect NoExecute"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap()
    }

    /// The messages for `object`, asserting there is at least one.
    fn errors_of(kind: &str, object: &Value) -> Vec<String> {
        let errors = validate_policy(kind, object);
        assert!(!errors.is_empty(), "expected {kind} to be invalid: {object:#}");
        errors
    }

    fn assert_one_error_mentions(errors: &[String], needles: &[&str]) {
        assert!(
            errors.iter().any(|e| needles.iter().all(|n| e.contains(n))),
            "no error mentions all of {needles:?}: {errors:#?}"
        );
    }

    fn pp(spec: Value) -> Value {
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "p", "namespace": "apps"}, "spec": spec})
    }

    fn op(spec: Value) -> Value {
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "OverridePolicy",
            "metadata": {"name": "o", "namespace": "apps"}, "spec": spec})
    }

    fn deployment_selector() -> Value {
        json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "nginx"}])
    }

    fn pp_with_placement(placement: Value) -> Value {
        pp(json!({"resourceSelectors": deployment_selector(), "placement": placement}))
    }

    fn op_with_overriders(overriders: Value) -> Value {
        op(json!({"resourceSelectors": deployment_selector(), "overrideRules": [{"overriders": overriders}]}))
    }

    const KARMADA_PROPAGATION: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/karmada/propagation-policy.yaml"));

    const KARMADA_OVERRIDE: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/karmada/override-policy.yaml"));

    #[test]
    fn karmada_policies_with_only_the_api_version_changed_are_valid() {
        assert_eq!(validate_policy("PropagationPolicy", &yaml(KARMADA_PROPAGATION)), Vec::<String>::new());
        assert_eq!(validate_policy("OverridePolicy", &yaml(KARMADA_OVERRIDE)), Vec::<String>::new());
        let mut cluster_wide = yaml(KARMADA_PROPAGATION);
        cluster_wide["kind"] = json!("ClusterPropagationPolicy");
        cluster_wide["metadata"].as_object_mut().unwrap().remove("namespace");
        cluster_wide["spec"]["resourceSelectors"][1]["namespace"] = json!("elsewhere");
        assert_eq!(validate_policy("ClusterPropagationPolicy", &cluster_wide), Vec::<String>::new());
        let mut cluster_wide = yaml(KARMADA_OVERRIDE);
        cluster_wide["kind"] = json!("ClusterOverridePolicy");
        assert_eq!(validate_policy("ClusterOverridePolicy", &cluster_wide), Vec::<String>::new());
    }

    #[test]
    fn minimal_policies_are_valid() {
        assert!(validate_policy(
            "PropagationPolicy",
            &pp(json!({"resourceSelectors": deployment_selector()}))
        )
        .is_empty());
        assert!(validate_policy("ClusterOverridePolicy", &json!({"spec": {}})).is_empty());
    }

    #[test]
    fn unknown_fields_are_listed_with_their_paths() {
        let schema = &policy_schemas()["OverridePolicy"];
        let object = json!({
            "apiVersion": "x", "kind": "y", "metadata": {"anything": 1},
            "spec": {
                "overrideRules": [
                    {"overriders": {"plaintext": [{"path": "/a", "operator": "add", "value": {"free": {"form": 1}}}]}},
                    {"overriders": {"fieldOverrides": []}, "extra": true}
                ],
                "resourceSelectors": [{"apiVersion": "v1", "kind": "Pod",
                    "labelSelector": {"matchLabels": {"a": "b"}, "matchLabel": {}}}]
            },
            "status": {"conditions": [], "phase": "x"},
            "topLevel": 1
        });
        let mut found = unknown_fields(schema, &object);
        found.sort();
        assert_eq!(
            found,
            [
                "spec.overrideRules[1].extra",
                "spec.overrideRules[1].overriders.fieldOverrides",
                "spec.resourceSelectors[0].labelSelector.matchLabel",
                "status.phase",
                "topLevel",
            ]
        );
    }

    #[test]
    fn a_misplaced_field_is_refused_with_where_it_belongs_as_the_api_server_does() {
        // (policy, the one error) — as the CRD's rules say it; the typed
        // checks then see the policy without the misplaced field.
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "PropagationPolicy",
                pp(
                    json!({"resourceSelectors": deployment_selector(), "clusterAffinity": {"clusterNames": ["m1"]}}),
                ),
                "spec.clusterAffinity: misplaced field: `clusterAffinity` belongs under `spec.placement`",
            ),
            (
                "PropagationPolicy",
                pp_with_placement(json!({"clusterNames": ["m1"]})),
                "spec.placement.clusterNames: misplaced field: `clusterNames` belongs under \
                 `spec.placement.clusterAffinity`",
            ),
            (
                "OverridePolicy",
                op(json!({"resourceSelectors": deployment_selector(),
                    "overrideRules": [{"overriders": {"targetCluster": {"clusterNames": ["m1"]}}}]})),
                "spec.overrideRules[0].overriders.targetCluster: misplaced field: `targetCluster` belongs \
                 under `spec.overrideRules[]`",
            ),
        ];
        for (kind, policy, want) in cases {
            assert_eq!(errors_of(kind, &policy), [want], "{policy}");
        }
    }

    #[test]
    fn a_typo_is_an_unknown_field_with_a_suggestion() {
        let errors = errors_of(
            "PropagationPolicy",
            &pp_with_placement(json!({"clusterAfinity": {"clusterNames": ["m1"]}})),
        );
        assert_eq!(errors, ["spec.placement.clusterAfinity: unknown field (did you mean clusterAffinity?)"]);
        let errors = errors_of(
            "PropagationPolicy",
            &pp(json!({"resourceSelectors": deployment_selector(), "colour": 1})),
        );
        assert_eq!(errors, ["spec.colour: unknown field"]);
    }

    #[test]
    fn unsupported_karmada_fields_are_named_with_the_reason() {
        let errors = validate_policy(
            "ClusterPropagationPolicy",
            &json!({"spec": {"resourceSelectors": deployment_selector(), "preemption": "Always"}}),
        );
        // Karmada's preemption is Flotilla's too (`claim`).
        assert!(errors.is_empty(), "{errors:?}");
        let errors = errors_of(
            "ClusterPropagationPolicy",
            &json!({"spec": {"resourceSelectors": deployment_selector(), "failover": {"cluster": {}, "x": 1}}}),
        );
        assert_eq!(errors, ["spec.failover.x: unknown field"]);
        let errors = errors_of(
            "PropagationPolicy",
            &pp_with_placement(
                json!({"replicaScheduling": {"weightPreference": {"dynamicWeight": "Other"}}}),
            ),
        );
        assert_eq!(
            errors,
            ["spec.placement.replicaScheduling.weightPreference.dynamicWeight: \"Other\": Karmada value not \
              supported by Flotilla: only `AvailableReplicas` is supported"]
        );
    }

    #[test]
    fn schema_constraints_are_checked_too() {
        let weights = |weight: i64| {
            pp_with_placement(json!({"replicaScheduling": {"weightPreference": {"staticWeightList": [
                {"targetCluster": {"clusterNames": ["m1"]}, "weight": weight}]}}}))
        };
        for weight in [0, -1] {
            let errors = errors_of("PropagationPolicy", &weights(weight));
            assert_eq!(
                errors,
                [format!(
                    "spec.placement.replicaScheduling.weightPreference.staticWeightList[0].weight: \
                     must be at least 1, not {weight}"
                )]
            );
        }
        let errors = errors_of("PropagationPolicy", &pp(json!({"resourceSelectors": []})));
        assert_eq!(errors, ["spec.resourceSelectors: must have at least 1 item"]);
        let errors = errors_of("PropagationPolicy", &pp(json!({"placement": {}})));
        assert_eq!(errors, ["spec.resourceSelectors: required"]);
        let errors =
            errors_of("PropagationPolicy", &pp(json!({"resourceSelectors": [{"apiVersion": "v1"}]})));
        assert_eq!(errors, ["spec.resourceSelectors[0].kind: required"]);
        let errors = errors_of(
            "PropagationPolicy",
            &pp(json!({"resourceSelectors": [{"apiVersion": "", "kind": "Pod"}]})),
        );
        assert_eq!(errors, ["spec.resourceSelectors[0].apiVersion: must not be empty"]);
        let errors = errors_of("PropagationPolicy", &pp_with_placement(json!({"spreadConstraints": "x"})));
        assert_eq!(errors, ["spec.placement.spreadConstraints: must be an array"]);
        let errors = errors_of(
            "PropagationPolicy",
            &pp(json!({"resourceSelectors": deployment_selector(), "conflictResolution": "Ignore"})),
        );
        assert_eq!(errors, [r#"spec.conflictResolution: "Ignore" is not one of "Abort", "Overwrite""#]);
        let errors = errors_of("OverridePolicy", &json!({"metadata": {"namespace": "a"}}));
        assert_eq!(errors, ["spec: required"]);
        let spread = json!({"spreadByField": "zone"});
        let errors = errors_of(
            "PropagationPolicy",
            &pp_with_placement(json!({"spreadConstraints": vec![spread; 11]})),
        );
        assert_eq!(errors, ["spec.placement.spreadConstraints: must have at most 10 items"]);
    }

    #[test]
    fn cluster_affinities_are_karmadas_ordered_groups() {
        // Karmada's documented primary/backup groups.
        let groups = json!([
            {"affinityName": "primary-clusters", "clusterNames": ["member1"]},
            {"affinityName": "backup-clusters", "clusterNames": ["member1", "member2"]}
        ]);
        let valid = pp_with_placement(json!({"clusterAffinities": groups}));
        assert_eq!(validate_policy("PropagationPolicy", &valid), Vec::<String>::new());
        let cases: &[(&str, Value, &[&str])] = &[
            (
                "both forms",
                json!({"clusterAffinity": {"clusterNames": ["a"]}, "clusterAffinities": groups}),
                &["spec.placement.clusterAffinities", "not both"],
            ),
            (
                "a name twice",
                json!({"clusterAffinities": [{"affinityName": "a"}, {"affinityName": "a"}]}),
                &["spec.placement.clusterAffinities[1].affinityName", "earlier group"],
            ),
            (
                "no name",
                json!({"clusterAffinities": [{"clusterNames": ["a"]}]}),
                &["spec.placement.clusterAffinities[0]", "affinityName"],
            ),
            (
                "a group's own rules",
                json!({"clusterAffinities": [{"affinityName": "a", "clusterNames": ["x"], "exclude": ["x"]}]}),
                &["spec.placement.clusterAffinities[0].exclude", "excludes every cluster"],
            ),
        ];
        for (name, placement, needles) in cases {
            let errors = errors_of("PropagationPolicy", &pp_with_placement(placement.clone()));
            assert!(errors.iter().any(|e| needles.iter().all(|n| e.contains(n))), "{name}: {errors:?}");
        }
    }

    #[test]
    fn spread_constraints_need_one_group_by_and_consistent_bounds() {
        let spread = |c: Value| pp_with_placement(json!({"spreadConstraints": [c]}));
        let errors = errors_of(
            "PropagationPolicy",
            &spread(json!({"minGroups": 3, "maxGroups": 2, "spreadByField": "region"})),
        );
        assert_eq!(errors, ["spec.placement.spreadConstraints[0].minGroups: 3 is more than maxGroups (2)"]);
        assert!(validate_policy(
            "PropagationPolicy",
            &spread(json!({"minGroups": 3, "spreadByField": "zone"}))
        )
        .is_empty());
        for both_or_neither in
            [json!({"spreadByField": "zone", "spreadByLabel": "rack"}), json!({"maxGroups": 2})]
        {
            let errors = errors_of("PropagationPolicy", &spread(both_or_neither));
            assert_eq!(
                errors,
                ["spec.placement.spreadConstraints[0]: set exactly one of spreadByField and spreadByLabel"]
            );
        }
    }

    #[test]
    fn replica_scheduling_options_must_fit_together() {
        let scheduling = |s: Value| pp_with_placement(json!({"replicaScheduling": s}));
        let errors = errors_of(
            "PropagationPolicy",
            &scheduling(
                json!({"replicaSchedulingType": "Duplicated", "replicaDivisionPreference": "Weighted",
                "weightPreference": {"dynamicWeight": "AvailableReplicas"}}),
            ),
        );
        assert_one_error_mentions(&errors, &["replicaScheduling.replicaDivisionPreference", "Duplicated"]);
        assert_one_error_mentions(&errors, &["replicaScheduling.weightPreference", "Duplicated"]);
        assert_eq!(errors.len(), 2, "{errors:?}");

        let static_list = json!([{"targetCluster": {"clusterNames": ["m1"]}, "weight": 1}]);
        let errors = errors_of(
            "PropagationPolicy",
            &scheduling(
                json!({"weightPreference": {"staticWeightList": static_list, "dynamicWeight": "AvailableReplicas"}}),
            ),
        );
        assert_eq!(
            errors,
            ["spec.placement.replicaScheduling.weightPreference: set staticWeightList or dynamicWeight, not both"]
        );
        let errors = errors_of(
            "PropagationPolicy",
            &scheduling(json!({"replicaDivisionPreference": "Aggregated",
                "weightPreference": {"staticWeightList": static_list}})),
        );
        assert_one_error_mentions(&errors, &["weightPreference.staticWeightList", "Aggregated"]);
        let errors = errors_of(
            "PropagationPolicy",
            &scheduling(json!({"weightPreference": {"staticWeightList": [
                {"targetCluster": {"fieldSelector": {"matchExpressions": [{"key": "zone", "operator": "NotIn"}]}},
                 "weight": 2}]}})),
        );
        assert_eq!(
            errors,
            ["spec.placement.replicaScheduling.weightPreference.staticWeightList[0].targetCluster.fieldSelector\
              .matchExpressions[0].values: required (at least one) for operator NotIn"]
        );
    }

    #[test]
    fn overriders_that_set_something_need_a_value() {
        let errors = errors_of(
            "OverridePolicy",
            &op_with_overriders(json!({"plaintext": [{"path": "/spec/replicas", "operator": "replace"}]})),
        );
        assert_eq!(
            errors,
            ["spec.overrideRules[0].overriders.plaintext[0].value: required for operator replace"]
        );
        let errors = errors_of(
            "ClusterOverridePolicy",
            &json!({"spec": {"overrideRules": [{"overriders": {"plaintext": [{"path": "/a", "operator": "add"}]}}]}}),
        );
        assert_eq!(
            errors,
            ["spec.overrideRules[0].overriders.plaintext[0].value: required for operator add"]
        );
        // A JSON null is a value.
        assert!(validate_policy(
            "OverridePolicy",
            &op_with_overriders(json!({"plaintext": [{"path": "/a", "operator": "remove"}]}))
        )
        .is_empty());
        for image in [
            json!({"component": "Tag", "operator": "add"}),
            json!({"component": "Registry", "operator": "replace", "value": ""}),
        ] {
            let errors = errors_of("OverridePolicy", &op_with_overriders(json!({"imageOverrider": [image]})));
            assert_one_error_mentions(
                &errors,
                &["spec.overrideRules[0].overriders.imageOverrider[0].value", "empty"],
            );
        }
        let errors = errors_of(
            "OverridePolicy",
            &op_with_overriders(
                json!({"argsOverrider": [{"containerName": "c", "operator": "replace", "value": ["a"]}]}),
            ),
        );
        assert_one_error_mentions(&errors, &["overriders.argsOverrider[0].operator", "add or remove"]);
        let errors = errors_of(
            "OverridePolicy",
            &op_with_overriders(json!({"plaintext": [{"path": "/a~2b", "operator": "remove"}]})),
        );
        assert_one_error_mentions(&errors, &["plaintext[0].path", "JSON pointer"]);
    }

    #[test]
    fn namespaced_policies_select_only_in_their_namespace() {
        let selector = json!([{"apiVersion": "v1", "kind": "ConfigMap", "namespace": "other"}]);
        let errors = errors_of("PropagationPolicy", &pp(json!({"resourceSelectors": selector})));
        assert_eq!(
            errors,
            [
                r#"spec.resourceSelectors[0].namespace: a PropagationPolicy selects only in its own namespace "apps", not "other""#
            ]
        );
        let errors = errors_of("OverridePolicy", &op(json!({"resourceSelectors": selector})));
        assert_one_error_mentions(
            &errors,
            &["spec.resourceSelectors[0].namespace", "OverridePolicy", "\"apps\""],
        );
        let same = json!([{"apiVersion": "v1", "kind": "ConfigMap", "namespace": "apps"}]);
        assert!(validate_policy("PropagationPolicy", &pp(json!({"resourceSelectors": same}))).is_empty());
        assert!(validate_policy(
            "ClusterPropagationPolicy",
            &json!({"spec": {"resourceSelectors": selector}})
        )
        .is_empty());
    }

    #[test]
    fn tolerations_follow_the_kubernetes_rules() {
        let tolerate = |t: Value| pp_with_placement(json!({"clusterTolerations": [t]}));
        let cases = [
            (json!({"key": "k", "operator": "Gt", "value": "1"}), "clusterTolerations[0].operator"),
            (json!({"key": "k", "operator": "Exists", "value": "v"}), "clusterTolerations[0].value"),
            (
                json!({"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}),
                "clusterTolerations[0].tolerationSeconds",
            ),
            (json!({"key": "k", "tolerationSeconds": 5}), "clusterTolerations[0].tolerationSeconds"),
            (json!({"key": "k", "effect": "Evict"}), "clusterTolerations[0].effect"),
            (json!({"operator": "Equal", "value": "v"}), "clusterTolerations[0].operator"),
        ];
        for (toleration, field) in cases {
            let errors = errors_of("PropagationPolicy", &tolerate(toleration));
            assert_one_error_mentions(&errors, &[&format!("spec.placement.{field}")]);
        }
        for fine in [
            json!({"operator": "Exists"}),
            json!({"key": "k", "value": "v", "effect": "NoExecute", "tolerationSeconds": 0}),
            json!({"key": "k", "operator": "Equal", "effect": "PreferNoSchedule"}),
        ] {
            assert!(validate_policy("PropagationPolicy", &tolerate(fine.clone())).is_empty(), "{fine}");
        }
    }

    #[test]
    fn selectors_need_values_for_in_and_known_operators() {
        let affinity = |a: Value| pp_with_placement(json!({"clusterAffinity": a}));
        for operator in ["In", "NotIn"] {
            let errors = errors_of(
                "PropagationPolicy",
                &affinity(
                    json!({"fieldSelector": {"matchExpressions": [{"key": "region", "operator": operator}]}}),
                ),
            );
            assert_eq!(
                errors,
                [format!(
                    "spec.placement.clusterAffinity.fieldSelector.matchExpressions[0].values: \
                     required (at least one) for operator {operator}"
                )]
            );
        }
        let errors = errors_of(
            "PropagationPolicy",
            &affinity(json!({"fieldSelector": {"matchExpressions": [
                {"key": "region", "operator": "Exists", "values": ["eu"]}]}})),
        );
        assert_one_error_mentions(&errors, &["matchExpressions[0].values", "must be empty", "Exists"]);
        let errors = errors_of(
            "PropagationPolicy",
            &affinity(json!({"labelSelector": {"matchExpressions": [{"key": "env", "operator": "Equals"}]}})),
        );
        assert_one_error_mentions(
            &errors,
            &["clusterAffinity.labelSelector.matchExpressions[0].operator", "Equals"],
        );
        let errors = errors_of(
            "PropagationPolicy",
            &pp(json!({"resourceSelectors": [{"apiVersion": "v1", "kind": "Pod",
                "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}}]})),
        );
        assert_one_error_mentions(
            &errors,
            &["resourceSelectors[0].labelSelector.matchExpressions[0].values"],
        );
        let errors =
            errors_of("PropagationPolicy", &affinity(json!({"clusterNames": ["a"], "exclude": ["a"]})));
        assert_one_error_mentions(&errors, &["clusterAffinity.exclude", "every cluster"]);
    }

    #[test]
    fn wrong_types_are_reported_with_their_path() {
        let errors = errors_of(
            "PropagationPolicy",
            &pp_with_placement(json!({"clusterTolerations": [{"key": "k", "tolerationSeconds": "30"}]})),
        );
        assert_eq!(errors, ["spec.placement.clusterTolerations[0].tolerationSeconds: must be an integer"]);
    }

    #[test]
    fn updates_are_judged_only_on_the_problems_they_add() {
        let foreign = |extra: Value| {
            let mut p = pp(json!({"resourceSelectors": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "other"}]}));
            p["metadata"]["labels"] = extra;
            p
        };
        let old = foreign(json!({}));
        assert_eq!(validate_policy_change("PropagationPolicy", None, &old).len(), 1);
        assert!(
            validate_policy_change("PropagationPolicy", Some(&old), &foreign(json!({"a": "b"}))).is_empty()
        );
        let mut worse = foreign(json!({}));
        worse["spec"]["placement"]["clusterAffinity"] = json!({"clusterNames": ["m1"], "exclude": ["m1"]});
        let errors = validate_policy_change("PropagationPolicy", Some(&old), &worse);
        assert_eq!(
            errors,
            ["spec.placement.clusterAffinity.exclude: excludes every cluster in clusterNames, so nothing is selected"]
        );
        let mut deleting = worse.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        assert!(validate_policy_change("PropagationPolicy", Some(&old), &deleting).is_empty());
    }

    /// The webhook's share: what the schema cannot say is reported, what the
    /// CRD's CEL rules and patterns already refuse is left to them.
    #[test]
    fn beyond_the_schema_are_only_what_the_crd_cannot_express() {
        let beyond = |object: &Value| validate_policy_beyond_schema(object["kind"].as_str().unwrap(), object);
        let left_to_the_schema = [
            pp_with_placement(
                json!({"spreadConstraints": [{"spreadByField": "zone", "minGroups": 3, "maxGroups": 2}]}),
            ),
            pp_with_placement(json!({"spreadConstraints": [{"maxGroups": 1}]})),
            pp_with_placement(json!({"replicaScheduling": {"replicaSchedulingType": "Duplicated",
                "replicaDivisionPreference": "Weighted"}})),
            pp_with_placement(json!({"clusterAffinity": {"fieldSelector": {"matchExpressions": [
                {"key": "zone", "operator": "In"}]}}})),
            op_with_overriders(json!({"plaintext": [{"path": "/a~2", "operator": "remove"}]})),
            op_with_overriders(json!({"argsOverrider": [{"containerName": "c", "operator": "replace"}]})),
        ];
        for object in &left_to_the_schema {
            assert!(!validate_policy(object["kind"].as_str().unwrap(), object).is_empty(), "{object:#}");
            assert_eq!(beyond(object), Vec::<String>::new(), "{object:#}");
        }
        let cases: [(Value, &str); 5] = [
            (
                op_with_overriders(json!({"plaintext": [{"path": "/spec/replicas", "operator": "add"}]})),
                "spec.overrideRules[0].overriders.plaintext[0].value: required for operator add",
            ),
            (
                pp(
                    json!({"resourceSelectors": [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": "other"}]}),
                ),
                "spec.resourceSelectors[0].namespace: a PropagationPolicy selects only in its own namespace",
            ),
            (
                pp_with_placement(json!({"clusterAffinity": {"labelSelector": {"matchExpressions": [
                    {"key": "a", "operator": "Has"}]}}})),
                "spec.placement.clusterAffinity.labelSelector.matchExpressions[0].operator",
            ),
            (
                pp_with_placement(json!({"clusterTolerations": [{"operator": "Exists", "value": "x"}]})),
                "spec.placement.clusterTolerations[0].value: must be empty when operator is Exists",
            ),
            (
                pp_with_placement(json!({"replicaScheduling": {"weightPreference": {"staticWeightList": [
                    {"targetCluster": {"clusterNames": ["a"], "exclude": ["a"]}, "weight": 1}]}}})),
                "staticWeightList[0].targetCluster.exclude: excludes every cluster",
            ),
        ];
        for (object, needle) in cases {
            assert_one_error_mentions(&beyond(&object), &[needle]);
        }
        assert_eq!(beyond(&pp(json!({"resourceSelectors": deployment_selector()}))), Vec::<String>::new());
    }

    #[test]
    fn unknown_kinds_are_an_error() {
        assert_eq!(validate_policy("Deployment", &json!({})), ["Deployment is not a Flotilla policy kind"]);
    }

    #[test]
    fn suggestions_are_for_near_misses_only() {
        let known = ["clusterAffinity".to_string(), "spreadConstraints".to_string()];
        assert_eq!(closest("clusterafinity", &known), Some("clusterAffinity"));
        assert_eq!(closest("spreadConstraint", &known), Some("spreadConstraints"));
        assert_eq!(closest("affinity", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
