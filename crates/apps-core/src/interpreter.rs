//! Custom workload kinds, read through their `WorkloadInterpreter`: where
//! replicas and the pod template live (field paths), which status counts
//! are summed across members, and health by a bounded CEL expression
//! ([`cel_rule`]). Built-in kinds never reach here: the functions taking an
//! `Option<&Interpreter>` fall back to [`crate::workload`], [`crate::aggregate`]
//! and [`crate::health`] when there is none.

pub mod cel_rule;

use std::collections::BTreeMap;

use flotilla_api::interpreter::{interpreter_name, HealthRule, KindHealthRule, WorkloadInterpreterSpec};
use flotilla_api::work::{Health, HealthDetail};
use flotilla_core::conditions::Wanted;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Map, Value};

use crate::aggregate::MemberStatus;
use crate::fleet_health::template_condition;
use crate::workload::{self, api_group, type_of, Dependency};

/// A dotted field path (`spec.replicas`): identifiers only, no indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    pub fn parse(path: &str) -> Result<FieldPath, String> {
        if path.len() > flotilla_api::interpreter::MAX_FIELD_PATH as usize {
            return Err(format!(
                "path {path:?} is longer than {}",
                flotilla_api::interpreter::MAX_FIELD_PATH
            ));
        }
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        let identifier = |s: &String| {
            let mut chars = s.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if segments.iter().all(identifier) {
            Ok(FieldPath(segments))
        } else {
            Err(format!("path {path:?} is not a dotted path of identifiers (e.g. spec.replicas)"))
        }
    }

    pub fn starts_with(&self, first: &str) -> bool {
        self.0.first().is_some_and(|s| s == first)
    }

    pub fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(value, |v, segment| v.get(segment))
    }

    /// Removes the field, if there.
    pub fn remove(&self, value: &mut Value) {
        let Some((last, parents)) = self.0.split_last() else { return };
        let parent = parents.iter().try_fold(value, |v, segment| v.get_mut(segment));
        if let Some(object) = parent.and_then(Value::as_object_mut) {
            object.remove(last);
        }
    }

    /// Sets the field, creating the objects on the way; does nothing when
    /// a value on the way is not an object.
    pub fn set(&self, value: &mut Value, new: Value) {
        let Some((last, parents)) = self.0.split_last() else { return };
        let mut at = value;
        for segment in parents {
            let Some(object) = at.as_object_mut() else { return };
            at = object.entry(segment.clone()).or_insert_with(|| Value::Object(Map::new()));
        }
        if let Some(object) = at.as_object_mut() {
            object.insert(last.clone(), new);
        }
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A valid interpreter, as the hub uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Interpreter {
    pub api_version: String,
    pub kind: String,
    pub replicas: Option<FieldPath>,
    pub pod_template: Option<FieldPath>,
    pub status_counts: Vec<FieldPath>,
    pub health: Option<HealthRule>,
}

/// Whether the API group is one whose kinds Flotilla interprets itself.
pub fn built_in_group(api_version: &str) -> bool {
    !api_version.contains('/') || matches!(api_group(api_version), "apps" | "batch" | "extensions")
}

impl Interpreter {
    /// The interpreter a stored `WorkloadInterpreter` describes, or every
    /// problem that makes it unusable (each a sentence naming the field).
    /// The schema refuses most of these; this judges objects as stored and
    /// what only a compiler can tell (CEL).
    pub fn from_spec(name: &str, spec: &WorkloadInterpreterSpec) -> Result<Interpreter, Vec<String>> {
        let mut problems = Vec::new();
        let target = &spec.target;
        if built_in_group(&target.api_version) {
            problems.push(format!(
                "spec.target: {} {} is a built-in kind, interpreted by Flotilla itself; an interpreter is for a \
                 custom resource",
                target.api_version, target.kind
            ));
        }
        let wanted = interpreter_name(&target.api_version, &target.kind);
        if name != wanted {
            problems.push(format!("metadata.name: must be {wanted} (one interpreter per kind)"));
        }
        let mut path = |field: &str, value: &str| match FieldPath::parse(value) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(format!("{field}: {e}"));
                None
            }
        };
        let replicas = spec.replicas_path.as_deref().and_then(|p| path("spec.replicasPath", p));
        let pod_template = spec.pod_template_path.as_deref().and_then(|p| path("spec.podTemplatePath", p));
        let status_counts: Vec<FieldPath> = spec
            .status_counts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| path(&format!("spec.statusCounts[{i}]"), p))
            .collect();
        for (field, p) in [("spec.replicasPath", &replicas), ("spec.podTemplatePath", &pod_template)] {
            if p.as_ref().is_some_and(|p| !p.starts_with("spec") || p.0.len() < 2) {
                problems.push(format!("{field}: must lie under spec (only the spec is sent to members)"));
            }
        }
        if let Some(health) = &spec.health {
            if let Err(e) = cel_rule::compile(&health.expression) {
                problems.push(format!("spec.health.expression: {e}"));
            }
            if let Some(Err(e)) = health.message.as_deref().map(cel_rule::compile) {
                problems.push(format!("spec.health.message: {e}"));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Interpreter {
            api_version: target.api_version.clone(),
            kind: target.kind.clone(),
            replicas,
            pod_template,
            status_counts,
            health: spec.health.clone(),
        })
    }

    fn pod_spec<'a>(&self, template: &'a Value) -> Option<&'a Value> {
        self.pod_template.as_ref()?.get(template)?.get("spec")
    }

    /// The health rule the hub copies into the kind's Works.
    pub fn health_rule(&self) -> Option<KindHealthRule> {
        Some(KindHealthRule {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            rule: self.health.clone()?,
        })
    }
}

/// The `Valid` condition of an interpreter judged by [`Interpreter::from_spec`].
pub fn valid_condition(judged: &Result<Interpreter, Vec<String>>, generation: Option<i64>) -> Wanted {
    match judged {
        Ok(i) => Wanted::new(
            "Valid",
            true,
            "Valid",
            format!(
                "{} {} objects are divided, aggregated and judged by this interpreter",
                i.api_version, i.kind
            ),
        ),
        Err(problems) => {
            Wanted::new("Valid", false, "Invalid", format!("ignored until fixed: {}", problems.join("; ")))
        }
    }
    .generation(generation)
}

/// `spec.replicas` of a built-in kind, or the interpreter's replica path
/// (1 when absent); `None` for kinds without replicas.
pub fn replicas(template: &Value, interpreter: Option<&Interpreter>) -> Option<i32> {
    let Some(path) = interpreter.and_then(|i| i.replicas.as_ref()) else {
        return workload::replicas(template);
    };
    let replicas = path.get(template).and_then(Value::as_i64).unwrap_or(1);
    Some(i32::try_from(replicas.max(0)).unwrap_or(i32::MAX))
}

/// Sets the replicas where the kind keeps them.
pub fn set_replicas(manifest: &mut Value, replicas: i32, interpreter: Option<&Interpreter>) {
    match interpreter.and_then(|i| i.replicas.as_ref()) {
        Some(path) => path.set(manifest, replicas.into()),
        None => workload::set_replicas(manifest, replicas),
    }
}

/// Reason on the binding while a divided custom kind has lost its interpreter.
pub const REASON_INTERPRETER_MISSING: &str = "InterpreterMissing";

/// Why a template must not be bound now: it is of a custom kind whose
/// replicas were divided (`divided_before`: its binding has replicas) and
/// it has no valid interpreter any more (deleted, or an invalid edit
/// stored while the webhook was away). Bound without one it would be copied
/// whole, all its replicas to every member.
pub fn missing(template: &Value, interpreter: Option<&Interpreter>, divided_before: bool) -> Option<String> {
    if !divided_before || workload::replicas(template).is_some() {
        return None;
    }
    if interpreter.is_some_and(|i| i.replicas.is_some()) {
        return None;
    }
    let (api_version, kind) = type_of(template);
    Some(format!(
        "the replicas of this {kind} were divided by the WorkloadInterpreter {}, which is gone, invalid or has no \
         replicasPath now; the members keep their share until it is back (see its Valid condition)",
        interpreter_name(api_version, kind)
    ))
}

/// A revision's manifest leaves the replicas out (a scale is no new
/// revision); built-in kinds are handled by `revision` itself.
pub fn without_replicas(manifest: &mut Value, interpreter: Option<&Interpreter>) {
    if let Some(path) = interpreter.and_then(|i| i.replicas.as_ref()) {
        path.remove(manifest);
    }
}

/// Per-replica requests of the pod template (see
/// [`workload::replica_requirements`]).
pub fn replica_requirements(
    template: &Value,
    interpreter: Option<&Interpreter>,
) -> BTreeMap<String, Quantity> {
    match interpreter.and_then(|i| i.pod_spec(template)) {
        Some(spec) => workload::pod_spec_requirements(spec),
        None => workload::replica_requirements(template),
    }
}

/// What the pod template refers to (see [`workload::dependencies`]).
pub fn dependencies(template: &Value, interpreter: Option<&Interpreter>) -> Vec<Dependency> {
    match interpreter.and_then(|i| i.pod_spec(template)) {
        Some(spec) => workload::pod_spec_dependencies(spec),
        None => workload::dependencies(template),
    }
}

/// The hub template's status for a custom kind: each status count summed
/// over the members at its path, zeros included (so stale counts go);
/// `observedGeneration` as for built-in kinds (only when every cluster is
/// current); the binding's `Healthy` condition among the conditions.
/// `None` when the interpreter names no counts (the status is left alone).
pub fn aggregate_status(
    interpreter: &Interpreter,
    template_generation: Option<i64>,
    all_current: bool,
    members: &[MemberStatus],
    healthy: Option<&Condition>,
) -> Option<Value> {
    if interpreter.status_counts.is_empty() {
        return None;
    }
    let mut status = Value::Object(Map::new());
    if let (true, Some(generation)) = (all_current, template_generation) {
        status["observedGeneration"] = generation.into();
    }
    for path in &interpreter.status_counts {
        let sum: i64 = members.iter().filter_map(|m| path.get(m.status?)?.as_i64()).sum();
        path.set(&mut status, sum.into());
    }
    if let Some(healthy) = healthy {
        status["conditions"] = Value::Array(vec![template_condition(healthy)]);
    }
    Some(status)
}

/// Reason of a health detail when the interpreter's expression says unhealthy.
pub const REASON_HEALTH_RULE: &str = "HealthRuleFalse";
/// Reason when the expression could not be evaluated (health unknown).
pub const REASON_HEALTH_RULE_FAILED: &str = "HealthRuleFailed";

/// Health of a member object whose kind has a health rule, and why it is
/// not healthy. `None` when no rule is for its kind (the built-in
/// judgement applies).
pub fn judge_health(object: &Value, rules: &[KindHealthRule]) -> Option<(Health, Option<HealthDetail>)> {
    let (api_version, kind) = type_of(object);
    let rule = rules.iter().find(|r| r.api_version == api_version && r.kind == kind)?;
    let detail = |reason: &str, message: String| {
        let mut message = message;
        if message.len() > 1000 {
            let mut end = 1000;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Some(HealthDetail { reason: reason.into(), message, restart_count: None })
    };
    let judged = cel_rule::compile(&rule.rule.expression).and_then(|c| c.evaluate(object));
    Some(match judged {
        Ok(cel_rule::Outcome::Bool(true)) => (Health::Healthy, None),
        Ok(cel_rule::Outcome::Bool(false)) => {
            let why =
                rule.rule.message.as_deref().map(|m| cel_rule::compile(m).and_then(|c| c.evaluate(object)));
            let message = match why {
                Some(Ok(cel_rule::Outcome::String(s))) if !s.is_empty() => s,
                _ => format!(
                    "the health expression of its WorkloadInterpreter is false: {}",
                    rule.rule.expression
                ),
            };
            (Health::Unhealthy, detail(REASON_HEALTH_RULE, message))
        }
        Ok(other) => (
            Health::Unknown,
            detail(REASON_HEALTH_RULE_FAILED, format!("the health expression gave {other:?}, not a bool")),
        ),
        Err(e) => (
            Health::Unknown,
            detail(REASON_HEALTH_RULE_FAILED, format!("the health expression could not be evaluated: {e}")),
        ),
    })
}

/// The health rules to copy into a Work for its manifests.
pub fn rules_for(manifests: &[&Value], interpreters: &[&Interpreter]) -> Vec<KindHealthRule> {
    let mut rules: Vec<KindHealthRule> = Vec::new();
    for manifest in manifests {
        let (api_version, kind) = type_of(manifest);
        let found = interpreters.iter().find(|i| i.api_version == api_version && i.kind == kind);
        if let Some(rule) = found.and_then(|i| i.health_rule()) {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    rules
}

#[cfg(test)]
#[path = "interpreter_tests.rs"]
mod tests;
