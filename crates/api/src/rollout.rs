//! `RolloutStrategy` (`rollout.flotilla.io`): how a change of the templates
//! it selects reaches the fleet: in waves of clusters (by ratio or by label
//! stages), each soaked and gated on health before the next, rolled back
//! automatically when a gate fails. The Karmada-compatible policies are
//! unchanged: a strategy selects templates the same way they do, and a
//! template no strategy selects changes everywhere at once as before.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::ResourceSelector;

pub const GROUP: &str = "rollout.flotilla.io";

/// Annotations on a `Rollout` that control it (`kubectl annotate` or
/// `flotilla rollout`).
pub mod control {
    /// `"true"`: no next wave starts (a failure still rolls back).
    pub const PAUSED: &str = "rollout.flotilla.io/paused";
    /// `<revision>/<wave>`: skip that wave's soak (waves from 1);
    /// `<revision>/all`: every remaining wave now. Names the revision (its
    /// hash, `status.revision`) so it never carries over to the next one.
    pub const PROMOTE: &str = "rollout.flotilla.io/promote";
    /// `<revision>`: roll that revision back now.
    pub const ABORT: &str = "rollout.flotilla.io/abort";
}

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "rollout.flotilla.io",
    version = "v1alpha1",
    kind = "RolloutStrategy",
    plural = "rolloutstrategies",
    shortname = "rs",
    namespaced,
    printcolumn = r#"{"name":"Waves","type":"string","jsonPath":".spec.waves.ratio"}"#,
    printcolumn = r#"{"name":"Soak","type":"integer","jsonPath":".spec.soakSeconds"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStrategySpec {
    /// The templates whose changes roll out this way (at least one), as a
    /// PropagationPolicy selects them; the strategy's namespace only.
    #[schemars(length(min = 1))]
    pub resource_selectors: Vec<ResourceSelector>,
    pub waves: Waves,
    /// Clusters always in the first wave (ratio waves only).
    #[serde(default, skip_serializing_if = "Canary::is_empty")]
    pub canary: Canary,
    /// How long a wave stays healthy on the new revision before the next
    /// starts (default 300).
    #[serde(default = "default_soak")]
    #[schemars(range(min = 0, max = 86400))]
    pub soak_seconds: i64,
    /// How long a wave may take to be healthy on the new revision before
    /// the rollout fails and rolls back (default 600).
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub progress_deadline_seconds: i64,
    /// A cluster fails its gate when a pod of the new revision restarted
    /// more than this many times (default 2).
    #[serde(default = "default_restarts")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_restarts: i32,
    /// Prometheus queries every cluster of the waves reached must pass
    /// while its wave rolls out and soaks; one failing rolls back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub metric_gates: Vec<MetricGate>,
    /// Revisions kept on the hub for `flotilla rollout history` and undo
    /// (default 10).
    #[serde(default = "default_history")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: i32,
}

fn default_soak() -> i64 {
    300
}
fn default_deadline() -> i64 {
    600
}
fn default_restarts() -> i32 {
    2
}
fn default_history() -> i32 {
    10
}

/// A PromQL query per cluster and the bound its value must keep.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.max) || has(self.min)",
    "message": "a metric gate needs a bound: max (fail above it) or min (fail below it)"
}]))]
pub struct MetricGate {
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// The Prometheus server, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(regex(pattern = r"^http://[^\s/]+(/.*)?$"))]
    pub prometheus: String,
    /// A PromQL query whose result is one number; `{{cluster}}` stands
    /// for the cluster's name, e.g.
    /// `sum(rate(http_errors_total{cluster="{{cluster}}"}[1m]))`.
    #[schemars(length(min = 1, max = 2048))]
    pub query: String,
    /// The gate fails when the value is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The gate fails when the value is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

/// Exactly one of `ratio` and `stages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.ratio) != has(self.stages)",
    "message": "set exactly one of waves.ratio (e.g. \"1:2:7\") and waves.stages"
}]))]
pub struct Waves {
    /// Shares of the target clusters per wave, e.g. `1:2:7` (10 clusters:
    /// 1, then 2, then 7; every wave at least one cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,3}(:[1-9][0-9]{0,3}){0,9}$"))]
    pub ratio: Option<String>,
    /// One wave per stage, in order; a cluster goes in the first stage its
    /// labels match, clusters matching none in a last wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10))]
    pub stages: Option<Vec<Stage>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stage {
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// Cluster labels (all must match).
    #[schemars(length(min = 1))]
    pub cluster_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Canary {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_names: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_labels: BTreeMap<String, String>,
}

impl Canary {
    pub fn is_empty(&self) -> bool {
        self.cluster_names.is_empty() && self.cluster_labels.is_empty()
    }
}

/// The label on a template's `ControllerRevision`s naming its Rollout.
pub const ROLLOUT_LABEL: &str = "rollout.flotilla.io/rollout";
/// The `ControllerRevision` annotation listing what changed from the
/// revision before it (one change per line).
pub const CHANGES_ANNOTATION: &str = "rollout.flotilla.io/changes";
/// The `ControllerRevision` annotation holding the revision's hash.
pub const HASH_ANNOTATION: &str = "rollout.flotilla.io/revision";

/// One template's rollout, written by the hub for every template a
/// `RolloutStrategy` selects (named like its binding). Its status is the
/// rollout: waves, clusters, gates, the failure; its annotations are the
/// user's controls ([`control`]).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "rollout.flotilla.io",
    version = "v1alpha1",
    kind = "Rollout",
    plural = "rollouts",
    shortname = "ro",
    namespaced,
    status = "RolloutStatus",
    printcolumn = r#"{"name":"Template","type":"string","jsonPath":".spec.template.name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Wave","type":"string","jsonPath":".status.waveText"}"#,
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".status.revisionNumber"}"#,
    printcolumn = r#"{"name":"Stable","type":"integer","jsonPath":".status.stableRevisionNumber"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    pub template: TemplateReference,
    /// The `RolloutStrategy` (same namespace) that selects the template.
    pub strategy: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// `Progressing`, `Soaking`, `Paused`, `Complete` or `RolledBack`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// The revision the template asks for (its hash) and its number.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    #[serde(default)]
    pub revision_number: i64,
    /// The last good revision, which clusters not yet reached keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision_number: Option<i64>,
    /// The current wave, from 1.
    #[serde(default)]
    pub wave: i32,
    /// `2/3` for `kubectl get`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wave_text: String,
    /// The clusters of each wave, cut when the revision started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<WaveStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_started_at: Option<Time>,
    /// The strategy's soak and deadline, for the time left.
    #[serde(default)]
    pub soak_seconds: i64,
    #[serde(default)]
    pub progress_deadline_seconds: i64,
    /// Every target cluster: its wave, the revision it is given and its gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterRolloutStatus>,
    /// Why the revision was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RolloutFailure>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveStatus {
    pub clusters: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRolloutStatus {
    pub name: String,
    /// From 1.
    pub wave: i32,
    /// The revision the cluster is given (`new` or `stable`).
    pub given: String,
    /// The revision its member runs, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// `Healthy`, `Progressing`, `Failed` or `Unreachable`.
    pub gate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutFailure {
    pub revision: String,
    /// The cluster whose gate failed; absent for an abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub reason: String,
}
