//! `WorkloadInterpreter` (`config.flotilla.io`): how Flotilla reads a
//! custom workload kind (an OpenKruise CloneSet, any CRD with replicas):
//! where its replicas and pod template live, which status counts the hub
//! sums across members, and when an object of the kind is healthy.
//!
//! Karmada's `ResourceInterpreterCustomization` runs Lua; here everything
//! is declarative and checked before use: field paths in a restricted dotted
//! syntax (a CRD pattern) and CEL expressions (compiled, bounded in length
//! and nesting by the hub's webhook and again by the hub before use).
//!
//! One interpreter per target kind is an API guarantee: the name must be
//! `<kind in lower case>.<version>.<group>` (a CEL rule on the object), so a
//! second interpreter for the same kind cannot exist. Built-in kinds
//! (core, `apps`, `batch`, `extensions`) keep their built-in behaviour and
//! are refused.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "config.flotilla.io";

/// The longest field path accepted.
pub const MAX_FIELD_PATH: u32 = 256;
/// The longest CEL expression accepted.
pub const MAX_EXPRESSION: u32 = 1024;

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "config.flotilla.io",
    version = "v1alpha1",
    kind = "WorkloadInterpreter",
    plural = "workloadinterpreters",
    shortname = "wi",
    status = "WorkloadInterpreterStatus",
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.target.kind"}"#,
    printcolumn = r#"{"name":"APIVersion","type":"string","jsonPath":".spec.target.apiVersion"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.podTemplatePath) || self.podTemplatePath.startsWith('spec.')",
        "message": "podTemplatePath must lie under spec (e.g. spec.template): only the spec is sent to members",
        "fieldPath": ".podTemplatePath",
    },
    {
        "rule": "has(self.replicasPath) || !has(self.podTemplatePath)",
        "message": "podTemplatePath needs replicasPath: per-replica requests mean nothing without replicas",
        "fieldPath": ".podTemplatePath",
    },
]))]
pub struct WorkloadInterpreterSpec {
    /// The kind interpreted, as templates name it.
    pub target: InterpreterTarget,
    /// Where an object of the kind keeps its wanted replica count, e.g.
    /// `spec.replicas` (1 when absent, as for Deployments). Must lie under
    /// `spec`. Without it the kind is not divided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 256),
        extend("x-kubernetes-validations" = [{
            "rule": "self.matches('^spec([.][A-Za-z_][A-Za-z0-9_]*)+$')",
            "message": "replicasPath must be a dotted path of identifiers under spec, e.g. spec.replicas \
                        (no indexes, wildcards or leading dot)",
        }])
    )]
    pub replicas_path: Option<String>,
    /// Where the pod template (a `PodTemplateSpec`, with `.spec`) lives,
    /// e.g. `spec.template`: per-replica requests for the scheduler and the
    /// ConfigMaps, Secrets, ... it refers to (propagateDeps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 256),
        extend("x-kubernetes-validations" = [{
            "rule": "self.matches('^[A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)*$')",
            "message": "podTemplatePath must be a dotted path of identifiers, e.g. spec.template \
                        (no indexes, wildcards or leading dot)",
        }])
    )]
    pub pod_template_path: Option<String>,
    /// Integer fields of the object's `.status` (paths relative to it, e.g.
    /// `readyReplicas`, `rollout.updated`) summed over the members into the
    /// hub template's status at the same paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        extend(
            "x-kubernetes-list-type" = "set",
            "x-kubernetes-validations" = [{
                "rule": "self.all(p, p.matches('^[A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)*$'))",
                "message": "statusCounts entries must be dotted paths of identifiers relative to status, \
                            e.g. readyReplicas (no indexes, wildcards or leading dot)",
            }]
        ),
        inner(length(max = 256))
    )]
    pub status_counts: Vec<String>,
    /// When an object of the kind is healthy in its member. Without it, a
    /// `Ready` (else `Available`) condition decides, as for any kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthRule>,
}

/// The kind an interpreter is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(self.apiVersion.startsWith('apps/') || self.apiVersion.startsWith('batch/') \
             || self.apiVersion.startsWith('extensions/'))",
    "message": "built-in kinds (apps, batch, extensions, core) keep their built-in interpretation; \
                an interpreter is for a custom resource",
    "fieldPath": ".apiVersion",
}]))]
pub struct InterpreterTarget {
    /// `group/version` of a custom resource, e.g. `apps.kruise.io/v1alpha1`
    /// (the core group is refused: it has no custom kinds).
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/[a-z0-9]+$"),
        length(max = 253)
    )]
    pub api_version: String,
    /// E.g. `CloneSet`.
    #[schemars(regex(pattern = r"^[A-Z][A-Za-z0-9]*$"), length(max = 63))]
    pub kind: String,
}

/// A CEL health judgement over the member's object (`object`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthRule {
    /// A CEL expression over `object` (the member's object, status
    /// included) that is `true` when it is healthy, e.g.
    /// `has(object.status) && object.status.readyReplicas >= object.spec.replicas`.
    /// An error while evaluating (a missing field) makes the health
    /// unknown, with the error as the reason.
    #[schemars(length(min = 1, max = 1024))]
    pub expression: String,
    /// A CEL expression over `object` giving a string: why it is not
    /// healthy (shown on the binding), e.g.
    /// `'ready ' + string(object.status.readyReplicas) + ' of ' + string(object.spec.replicas)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub message: Option<String>,
}

/// A health rule for the objects of one kind, as the hub copies it into a
/// Work so the member's agent can judge them without reading interpreters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindHealthRule {
    pub api_version: String,
    pub kind: String,
    #[serde(flatten)]
    pub rule: HealthRule,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadInterpreterStatus {
    /// `Valid`: every path parses and every expression compiles within
    /// bounds (the hub uses only valid interpreters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The name an interpreter for `api_version`/`kind` must have.
pub fn interpreter_name(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    format!("{}.{version}.{group}", kind.to_lowercase())
}

type Crd = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The root rule: the name is `<kind>.<version>.<group>`, so there is at
/// most one interpreter per kind.
pub(crate) fn with_name_rule(crd: Crd) -> Crd {
    let Ok(mut value) = serde_json::to_value(&crd) else { return crd };
    let rule = serde_json::json!({
        "rule": "self.metadata.name == self.spec.target.kind.lowerAscii() + '.' \
                 + self.spec.target.apiVersion.split('/')[1] + '.' + self.spec.target.apiVersion.split('/')[0]",
        "message": "the name of a WorkloadInterpreter must be <kind in lower case>.<version>.<group> of its \
                    target (e.g. cloneset.v1alpha1.apps.kruise.io): one interpreter per kind",
    });
    if let Some(versions) = value.pointer_mut("/spec/versions").and_then(|v| v.as_array_mut()) {
        for version in versions {
            if let Some(schema) = version.pointer_mut("/schema/openAPIV3Schema") {
                match schema.get_mut("x-kubernetes-validations").and_then(serde_json::Value::as_array_mut) {
                    Some(rules) => rules.push(rule.clone()),
                    None => schema["x-kubernetes-validations"] = serde_json::json!([rule.clone()]),
                }
            }
        }
    }
    serde_json::from_value(value).unwrap_or(crd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn names_follow_the_target() {
        assert_eq!(
            interpreter_name("apps.kruise.io/v1alpha1", "CloneSet"),
            "cloneset.v1alpha1.apps.kruise.io"
        );
        assert_eq!(interpreter_name("example.com/v1", "Widget"), "widget.v1.example.com");
    }

    #[test]
    fn crd_is_cluster_scoped_with_status_and_the_name_rule() {
        let crd = with_name_rule(WorkloadInterpreter::crd());
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.group, GROUP);
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let schema = serde_json::to_value(version.schema.as_ref().unwrap()).unwrap();
        let rules = schema["openAPIV3Schema"]["x-kubernetes-validations"].as_array().unwrap();
        assert!(rules.iter().any(|r| r["rule"].as_str().unwrap().contains("self.metadata.name")));
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        let rule = |field: &str| spec["properties"][field]["x-kubernetes-validations"][0]["rule"].clone();
        assert!(rule("replicasPath").as_str().unwrap().contains("matches('^spec("));
        assert!(rule("podTemplatePath").as_str().unwrap().contains("matches("));
        assert!(rule("statusCounts").as_str().unwrap().starts_with("self.all(p, p.matches("));
        assert_eq!(spec["properties"]["statusCounts"]["items"]["maxLength"], 256);
        assert_eq!(spec["properties"]["health"]["properties"]["expression"]["maxLength"], MAX_EXPRESSION);
    }
}
