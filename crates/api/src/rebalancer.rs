//! `WorkloadRebalancer` (`apps.flotilla.io/v1alpha1`, Karmada's shape):
//! a one-off request to divide the replicas of some workloads again from
//! scratch, as if they had never been placed (e.g. after a cluster came
//! back: a divided binding otherwise keeps its clusters for stability).
//! Written by `flotilla rebalance KIND/NAME` or by GitOps; the hub reports
//! each workload's result and deletes the object `ttlSecondsAfterFinished`
//! after it finished.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "apps.flotilla.io";

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "apps.flotilla.io",
    version = "v1alpha1",
    kind = "WorkloadRebalancer",
    plural = "workloadrebalancers",
    status = "WorkloadRebalancerStatus",
    printcolumn = r#"{"name":"Finished","type":"date","jsonPath":".status.finishTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadRebalancerSpec {
    /// The templates (on the hub) whose replicas are divided again.
    #[schemars(length(min = 1, max = 100))]
    pub workloads: Vec<RebalanceWorkload>,
    /// Delete this object that long after every workload has a result
    /// (kept when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// A template, as a `ResourceBinding` refers to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RebalanceWorkload {
    /// e.g. `apps/v1`.
    #[schemars(length(min = 1, max = 256))]
    pub api_version: String,
    #[schemars(length(min = 1, max = 128))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Empty for a cluster-scoped template.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63))]
    pub namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRebalancerStatus {
    /// One entry per workload of the spec, with its result once known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed_workloads: Vec<ObservedWorkload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When every workload had its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedWorkload {
    pub workload: RebalanceWorkload,
    /// Absent while the binder has not yet divided it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RebalanceResult>,
    /// Why it failed (e.g. `ReferencedBindingNotFound`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RebalanceResult {
    Successful,
    Failed,
}
