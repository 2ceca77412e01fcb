//! `CronFederatedHPA` (`autoscaling.flotilla.io`, Karmada's shape): rules
//! with a cron schedule in a time zone that, at each tick, set a hub
//! workload template's replicas (through its `/scale` subresource) or a
//! `FederatedHPA`'s `minReplicas`/`maxReplicas`. The status is the record of
//! what ran: per rule the next tick and the recent executions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "autoscaling.flotilla.io";
/// The kind a rule's `targetMinReplicas`/`targetMaxReplicas` are for.
pub const FEDERATED_HPA_KIND: &str = "FederatedHPA";
/// Its plural (the FederatedHPA type is another module's; the controller
/// only merge-patches two fields of it).
pub const FEDERATED_HPA_PLURAL: &str = "federatedhpas";

/// Condition types of a CronFederatedHPA.
pub mod conditions {
    /// Every rule's schedule and time zone can be used.
    pub const VALID: &str = "Valid";
    /// The target exists and the last execution of every rule succeeded.
    pub const APPLIED: &str = "Applied";
}

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "autoscaling.flotilla.io",
    version = "v1alpha1",
    kind = "CronFederatedHPA",
    plural = "cronfederatedhpas",
    shortname = "cronfhpa",
    namespaced,
    status = "CronFederatedHPAStatus",
    printcolumn = r#"{"name":"Reference","type":"string","jsonPath":".spec.scaleTargetRef.name"}"#,
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.scaleTargetRef.kind"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.scaleTargetRef.kind != 'FederatedHPA' || self.rules.all(r, !has(r.targetReplicas) && (has(r.targetMinReplicas) || has(r.targetMaxReplicas)))",
        "message": "the target is a FederatedHPA: every rule sets targetMinReplicas and/or targetMaxReplicas, and none sets targetReplicas (that is for a workload)"
    },
    {
        "rule": "self.scaleTargetRef.kind == 'FederatedHPA' || self.rules.all(r, has(r.targetReplicas) && !has(r.targetMinReplicas) && !has(r.targetMaxReplicas))",
        "message": "the target is a workload: every rule sets targetReplicas, and none sets targetMinReplicas or targetMaxReplicas (those are for a FederatedHPA)"
    },
    {
        "rule": "self.scaleTargetRef.kind != 'FederatedHPA' || self.scaleTargetRef.apiVersion.startsWith('autoscaling.flotilla.io/')",
        "message": "a FederatedHPA target has apiVersion autoscaling.flotilla.io/v1alpha1"
    }
]))]
pub struct CronFederatedHPASpec {
    /// What the rules scale, in the CronFederatedHPA's namespace: a hub
    /// workload template with a `/scale` subresource (Deployment,
    /// StatefulSet, ...) or a `FederatedHPA`.
    pub scale_target_ref: ScaleTargetRef,
    /// The rules, each with its own schedule (names unique).
    #[schemars(length(min = 1, max = 20))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub rules: Vec<CronRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleTargetRef {
    /// e.g. `apps/v1`, or `autoscaling.flotilla.io/v1alpha1` for a FederatedHPA.
    #[schemars(length(min = 1, max = 253))]
    pub api_version: String,
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.targetMinReplicas) || !has(self.targetMaxReplicas) || self.targetMinReplicas <= self.targetMaxReplicas",
    "message": "targetMinReplicas must not exceed targetMaxReplicas"
}]))]
pub struct CronRule {
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// A cron expression: 5 fields (minute hour day-of-month month
    /// day-of-week), 6 with seconds first, or `@hourly`, `@daily`, ...
    #[schemars(
        regex(
            pattern = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9A-Za-z*/,?#-]+( +[0-9A-Za-z*/,?#-]+){4,5})$"
        ),
        length(max = 128)
    )]
    pub schedule: String,
    /// The IANA time zone the schedule is read in, e.g. `Europe/Paris`
    /// (default UTC). An unknown zone is reported on the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_+/-]+$"), length(max = 64))]
    pub time_zone: Option<String>,
    /// The workload's replicas at each tick (workload targets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub target_replicas: Option<i32>,
    /// The FederatedHPA's `minReplicas` at each tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_min_replicas: Option<i32>,
    /// The FederatedHPA's `maxReplicas` at each tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_max_replicas: Option<i32>,
    /// A suspended rule does nothing at its ticks (and has no next one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Successful executions kept in the status (default 3).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 0, max = 32))]
    pub successful_history_limit: i32,
    /// Failed (and skipped) executions kept in the status (default 3).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 0, max = 32))]
    pub failed_history_limit: i32,
}

fn default_history_limit() -> i32 {
    3
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronFederatedHPAStatus {
    /// One entry per rule (by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["ruleName"]))]
    pub execution_histories: Vec<ExecutionHistory>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionHistory {
    pub rule_name: String,
    /// The next tick the rule runs at (absent when suspended or invalid).
    /// Also the record: only ticks at or after it run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_execution_time: Option<Time>,
    /// Newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub successful_executions: Vec<SuccessfulExecution>,
    /// Newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_executions: Vec<FailedExecution>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuccessfulExecution {
    /// The tick.
    pub schedule_time: Time,
    /// When it ran.
    pub execution_time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_min_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_max_replicas: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedExecution {
    pub schedule_time: Time,
    pub execution_time: Time,
    pub message: String,
}
