//! `cluster.flotilla.io/v1alpha1`: fleet membership.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "cluster.flotilla.io";

/// Condition types on a ManagedCluster.
pub mod conditions {
    /// The hub accepted the cluster and its agent holds a credential.
    pub const JOINED: &str = "Joined";
    /// The member is reachable and its API is healthy (True), reachable but
    /// unhealthy (False), or not heard from (Unknown).
    pub const AVAILABLE: &str = "Available";
    /// Written by the agent: its last probe of its member's API (`/readyz`)
    /// answered (True) or not (False); the transition time is when that
    /// last changed.
    pub const MEMBER_HEALTHY: &str = "MemberHealthy";
}

/// Taints the hub manages.
pub mod taints {
    pub const UNREACHABLE: &str = "cluster.flotilla.io/unreachable";
    pub const NOT_READY: &str = "cluster.flotilla.io/not-ready";
}

/// Annotations and labels.
pub mod keys {
    /// SHA-256 of the public key of the agent that holds the cluster's name
    /// (written by the hub only; status updates cannot change metadata).
    pub const AGENT_KEY: &str = "cluster.flotilla.io/agent-key-sha256";
    /// On a CertificateSigningRequest: the cluster it is for.
    pub const CSR_CLUSTER: &str = "cluster.flotilla.io/cluster-name";
}

/// A member cluster of the fleet. Cluster-scoped; its agent's namespace on
/// the hub is `flotilla-cluster-<name>`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "cluster.flotilla.io",
    version = "v1alpha1",
    kind = "ManagedCluster",
    plural = "managedclusters",
    shortname = "mcl",
    status = "ManagedClusterStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.syncMode"}"#,
    printcolumn = r#"{"name":"Accepted","type":"boolean","jsonPath":".spec.hubAcceptsClient","priority":1}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.kubernetesVersion"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.nodeSummary.display"}"#,
    printcolumn = r#"{"name":"CPU","type":"string","jsonPath":".status.resourceSummary.allocatable.cpu"}"#,
    printcolumn = r#"{"name":"Memory","type":"string","jsonPath":".status.resourceSummary.allocatable.memory"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManagedClusterSpec {
    /// Pull: an agent in the member applies its work (default). Push: the
    /// hub does, with the credential in `secretRef`.
    #[serde(default)]
    pub sync_mode: SyncMode,
    /// The member's API server URL (informational in pull mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    /// Push mode: the Secret (key `kubeconfig`) holding the member's credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Whether the hub admits this cluster's agent (`flotilla cluster accept`).
    #[serde(default)]
    pub hub_accepts_client: bool,
    /// Taints repel workloads that do not tolerate them. The hub adds and
    /// removes the `cluster.flotilla.io/*` ones itself, applying only those
    /// (a list-map keyed by key and effect), so it never touches others'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["key", "effect"]))]
    pub taints: Vec<Taint>,
    /// How often the agent must renew its heartbeat Lease (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub lease_duration_seconds: Option<i32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SyncMode {
    #[default]
    Pull,
    Push,
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncMode::Pull => "Pull",
            SyncMode::Push => "Push",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: TaintEffect,
    /// When the taint was added (set by the hub for its own taints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_added: Option<Time>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterStatus {
    /// A list-map keyed by `type`: each writer applies only its own
    /// entries, under its own field manager (the hub `Joined` and
    /// `Available`, the agent `MemberHealthy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The conditions' transitions as the hub observed them, oldest first,
    /// a bounded number per type (`flotilla_fleet_core::condition_history`).
    /// Written by the hub only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub condition_history: Vec<ConditionTransition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_summary: Option<NodeSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_summary: Option<ResourceSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_enablements: Vec<ApiEnablement>,
    /// Room on the member's nodes, node by node, for the hub's capacity
    /// estimator (`flotilla_apps_core::estimator`). Absent when the agent
    /// predates it: the hub then falls back to `resourceSummary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_capacity: Option<NodeCapacity>,
}

/// One transition of a ManagedCluster condition: its new status and
/// reason, with the message it carried then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionTransition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    pub transition_time: Time,
}

/// The free room of every Ready node of a member, compact enough for a
/// thousand nodes: label and taint sets are written once as profiles, and
/// nodes with the same profile and the same free amounts share one group.
/// Pod lists are not sent: only allocatable minus what the node's
/// unfinished pods request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCapacity {
    /// Distinct label and taint sets, referred to by index from `groups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<NodeProfile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<NodeGroup>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeProfile {
    /// The nodes' labels, except `kubernetes.io/hostname` when it equals
    /// the node's name (each node's name stands for it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The nodes' `NoSchedule` and `NoExecute` taints (a cordoned node's
    /// `node.kubernetes.io/unschedulable` among them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<NodeTaint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTaint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

/// Nodes of one profile with the same free room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroup {
    /// Index into `profiles`.
    #[schemars(range(min = 0))]
    pub profile: i32,
    /// The nodes' names.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Per node: allocatable minus the requests of its unfinished pods
    /// (`pods`: how many more pods it takes); resources with no room left
    /// are left out.
    #[serde(default)]
    pub free: BTreeMap<String, Quantity>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    pub total: i32,
    pub ready: i32,
    /// `ready/total`, for the printer column.
    pub display: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSummary {
    /// Sum over Ready nodes of their allocatable cpu, memory and pods.
    #[serde(default)]
    pub allocatable: BTreeMap<String, Quantity>,
    /// Sum of the requests of pods bound to those nodes and not finished
    /// (pods counted as one each).
    #[serde(default)]
    pub allocated: BTreeMap<String, Quantity>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiEnablement {
    /// `group/version`, or `version` for the core group.
    pub group_version: String,
    /// Plural resource names served in that group/version.
    pub resources: Vec<String>,
}

impl ManagedCluster {
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
    }

    /// The cluster's namespace on the hub.
    pub fn hub_namespace(name: &str) -> String {
        format!("flotilla-cluster-{name}")
    }
}
