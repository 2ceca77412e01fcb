//! `RolloutStrategy` (`rollout.flotilla.io`): how a change of the templates
//! it selects reaches the fleet: in waves of clusters (by ratio or by label
//! stages), each soaked and gated on health before the next, rolled back
//! automatically when a gate fails. The Karmada-compatible policies are
//! unchanged: a strategy selects templates the same way they do, and a
//! template no strategy selects changes everywhere at once as before.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::ResourceSelector;

pub const GROUP: &str = "rollout.flotilla.io";

/// Annotations on a template that control its rollout (`kubectl annotate`
/// or `flotilla rollout`).
pub mod control {
    /// `"true"`: no next wave starts (a failure still rolls back).
    pub const PAUSED: &str = "rollout.flotilla.io/paused";
    /// `soak`: skip the current wave's soak; `all`: every remaining wave now.
    /// Holds for the revision it names (`<what>@<revision>`).
    pub const PROMOTE: &str = "rollout.flotilla.io/promote";
    /// The revision to roll back now.
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
