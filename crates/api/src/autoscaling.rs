//! `FederatedHPA` (`autoscaling.flotilla.io/v1alpha1`): a fleet-wide
//! HorizontalPodAutoscaler in Karmada's shape. It scales a hub template
//! (through its `/scale` subresource) from the usage of the template's pods
//! in every member, which the members' agents report on the template's
//! Works; the binder then divides the new total by the placement as usual.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "autoscaling.flotilla.io";

/// On a Work: the member's agent reports its workloads' usage
/// (`status.usage`). The FederatedHPA controller sets it (with its own
/// field manager) on the Works of its targets, and removes it when no
/// FederatedHPA targets them any more.
pub const REPORT_USAGE_LABEL: &str = "autoscaling.flotilla.io/report-usage";

/// Condition types on a FederatedHPA (those of HPA v2).
pub mod conditions {
    pub const ABLE_TO_SCALE: &str = "AbleToScale";
    pub const SCALING_ACTIVE: &str = "ScalingActive";
    pub const SCALING_LIMITED: &str = "ScalingLimited";
}

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "autoscaling.flotilla.io",
    version = "v1alpha1",
    kind = "FederatedHPA",
    plural = "federatedhpas",
    shortname = "fhpa",
    namespaced,
    status = "FederatedHPAStatus",
    printcolumn = r#"{"name":"Reference","type":"string","jsonPath":".spec.scaleTargetRef.name"}"#,
    printcolumn = r#"{"name":"MinPods","type":"integer","jsonPath":".spec.minReplicas"}"#,
    printcolumn = r#"{"name":"MaxPods","type":"integer","jsonPath":".spec.maxReplicas"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.currentReplicas"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
     "message": "minReplicas must not be greater than maxReplicas"}
]))]
pub struct FederatedHPASpec {
    /// The hub template to scale, in the FederatedHPA's namespace; its kind
    /// must serve a `/scale` subresource (Deployment, StatefulSet, a CRD
    /// with one).
    pub scale_target_ref: CrossVersionObjectReference,
    /// Fewest replicas fleet-wide (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,
    /// Most replicas fleet-wide.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// What to scale on; the largest recommendation wins (default: 80% cpu
    /// utilisation, as HPA v2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub metrics: Vec<MetricSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HPABehavior>,
}

impl FederatedHPASpec {
    pub fn min(&self) -> i32 {
        self.min_replicas.unwrap_or(1)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrossVersionObjectReference {
    #[schemars(length(min = 1))]
    pub api_version: String,
    #[schemars(length(min = 1))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// HPA v2's MetricSpec; Flotilla supports `Resource` metrics (cpu, memory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type == 'Resource'",
     "message": "only Resource metrics (cpu, memory) are supported: the members' agents read metrics.k8s.io only; Pods, Object, External and ContainerResource metrics are not"},
    {"rule": "self.type != 'Resource' || has(self.resource)",
     "message": "a Resource metric needs resource: {name, target}"},
    {"rule": "!has(self.pods) && !has(self.object) && !has(self.external) && !has(self.containerResource)",
     "message": "only resource may be set: Pods, Object, External and ContainerResource metrics are not supported"}
]))]
pub struct MetricSpec {
    #[serde(rename = "type")]
    #[schemars(schema_with = "metric_type_schema")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceMetricSource>,
    /// Declared only to be refused by name (see the rules above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::any_object")]
    pub pods: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::any_object")]
    pub object: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::any_object")]
    pub external: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::any_object")]
    pub container_resource: Option<serde_json::Value>,
}

fn metric_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // Every HPA v2 type is accepted by the enum so the rule can say why the
    // others are refused.
    schemars::json_schema!({"type": "string", "enum": ["Resource", "Pods", "Object", "External", "ContainerResource"]})
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceMetricSource {
    /// `cpu` or `memory`.
    #[schemars(schema_with = "resource_name_schema")]
    pub name: String,
    pub target: MetricTarget,
}

fn resource_name_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["cpu", "memory"]})
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'Value'",
     "message": "target type Value is not supported for Resource metrics: use Utilization (averageUtilization) or AverageValue (averageValue)"},
    {"rule": "self.type != 'Utilization' || (has(self.averageUtilization) && !has(self.averageValue))",
     "message": "a Utilization target needs averageUtilization (percent of the pods' requests) and no averageValue"},
    {"rule": "self.type != 'AverageValue' || (has(self.averageValue) && !has(self.averageUtilization))",
     "message": "an AverageValue target needs averageValue (a quantity per pod) and no averageUtilization"}
]))]
pub struct MetricTarget {
    /// `Utilization` or `AverageValue`.
    #[serde(rename = "type")]
    #[schemars(schema_with = "target_type_schema")]
    pub type_: String,
    /// Percent of the pods' requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub average_utilization: Option<i32>,
    /// A quantity per pod (`500m`, `256Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub average_value: Option<String>,
    /// Declared only to be refused with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub value: Option<String>,
}

fn target_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["Utilization", "AverageValue", "Value"]})
}

fn quantity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$",
        "maxLength": 64
    })
}

/// HPA v2's behavior: how fast to scale each way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HPABehavior {
    /// Default: no stabilisation window; the larger of +100% and +4 pods
    /// per 15 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<HPAScalingRules>,
    /// Default: a 300 s stabilisation window; up to 100% per 15 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<HPAScalingRules>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HPAScalingRules {
    /// Recommendations of the last this-many seconds are considered: scale
    /// up to the lowest of them, down to the highest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: Option<i32>,
    /// `Max` (default), `Min` or `Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "select_policy_schema")]
    pub select_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub policies: Vec<HPAScalingPolicy>,
}

fn select_policy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["Max", "Min", "Disabled"]})
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HPAScalingPolicy {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    #[schemars(schema_with = "policy_type_schema")]
    pub type_: String,
    #[schemars(range(min = 1))]
    pub value: i32,
    #[schemars(range(min = 1, max = 1800))]
    pub period_seconds: i32,
}

fn policy_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["Pods", "Percent"]})
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FederatedHPAStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the controller last changed the target's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    #[serde(default)]
    pub current_replicas: i32,
    #[serde(default)]
    pub desired_replicas: i32,
    /// Each metric as last read, fleet-wide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub current_metrics: Vec<MetricStatus>,
    /// The target's pods in each member, as its agent last reported them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterUsage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Recent raw recommendations (for the stabilisation windows), newest
    /// last, bounded: kept here so a restarted hub stabilises the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub recommendations: Vec<TimedReplicas>,
    /// Recent changes of the target's replicas made by this controller (for
    /// the scaling policies' periods), signed, newest last, bounded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub scale_events: Vec<TimedReplicas>,
}

/// A replica count (or change) at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimedReplicas {
    pub replicas: i32,
    pub time: Time,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// `Resource`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceMetricStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceMetricStatus {
    pub name: String,
    pub current: MetricValueStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricValueStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_utilization: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_value: Option<String>,
}

/// One member's pods of the target, from its Work's `status.usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUsage {
    pub cluster: String,
    #[serde(flatten)]
    pub usage: WorkloadUsage,
}

/// What a member's agent reports about a workload's pods: counts, the
/// summed usage (metrics.k8s.io) and requests of the ready pods that have
/// metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadUsage {
    /// Pods of the workload not terminating and not finished.
    #[serde(default)]
    pub pods: i32,
    #[serde(default)]
    pub ready_pods: i32,
    /// Ready pods whose metrics the sums below include.
    #[serde(default)]
    pub pods_with_metrics: i32,
    #[serde(default)]
    pub cpu_usage_millicores: i64,
    #[serde(default)]
    pub cpu_requests_millicores: i64,
    #[serde(default)]
    pub memory_usage_bytes: i64,
    #[serde(default)]
    pub memory_requests_bytes: i64,
    /// The newest metrics' timestamp and window (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<i64>,
    /// Why no metrics were read (metrics.k8s.io not served, refused).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A workload's usage, per manifest of a Work (`status.usage`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestUsage {
    /// Position of the manifest in `spec.manifests`.
    pub ordinal: i32,
    #[serde(flatten)]
    pub usage: WorkloadUsage,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_crd_has_the_rules_and_a_status_subresource() {
        let crd = serde_json::to_string(&FederatedHPA::crd()).unwrap();
        for want in [
            "minReplicas must not be greater than maxReplicas",
            "only Resource metrics (cpu, memory) are supported",
            "target type Value is not supported",
            "\"status\":{}",
        ] {
            assert!(crd.contains(want), "{want}");
        }
    }

    #[test]
    fn karmada_shaped_objects_parse() {
        let hpa: FederatedHPA = serde_json::from_value(serde_json::json!({
            "apiVersion": "autoscaling.flotilla.io/v1alpha1", "kind": "FederatedHPA",
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2, "maxReplicas": 10,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10,
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 15}]}}
            }
        }))
        .unwrap();
        assert_eq!(hpa.spec.min(), 2);
        assert_eq!(hpa.spec.metrics[0].resource.as_ref().unwrap().target.average_utilization, Some(50));
    }
}
