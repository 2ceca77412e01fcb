//! `NodePool`: a hosted cluster's real worker nodes, as a group of a size,
//! a Kubernetes version and a kubelet configuration, on the Machines its
//! selector picks. A change of version or configuration is a new revision
//! that rolls through the pool a few nodes at a time.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::machine::RepairPolicy;

/// Label on every Node of a pool (registered by its kubelet): the pool's
/// name.
pub const POOL_LABEL: &str = "kok.flotilla.io/node-pool";

/// Real worker nodes of a HostedCluster (containerd, kubelet and kube-proxy
/// per node, run by the node agents of the selected Machines).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kok.flotilla.io",
    version = "v1alpha1",
    kind = "NodePool",
    plural = "nodepools",
    shortname = "np",
    namespaced,
    status = "NodePoolStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.clusterRef"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyNodes"}"#,
    printcolumn = r#"{"name":"Updated","type":"integer","jsonPath":".status.updatedNodes"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.version"}"#,
    printcolumn = r#"{"name":"Rollout","type":"string","jsonPath":".status.rollout.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePoolSpec {
    /// The HostedCluster, in the pool's namespace, the nodes join.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub cluster_ref: String,
    /// Number of nodes. Scaling down cordons and drains a node (honouring
    /// PodDisruptionBudgets) before its Node and components go.
    #[schemars(range(min = 0, max = 64))]
    pub replicas: i32,
    /// Kubernetes version of the nodes' kubelet and kube-proxy; the
    /// cluster's version when absent. At most one minor version older
    /// than the control plane's, never newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^v?[0-9]+\.[0-9]+\.[0-9]+$"))]
    pub version: Option<String>,
    /// Labels of the Machines that may run the pool's nodes; every Machine
    /// when empty. Nodes spread over them, fewest first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub machine_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub kubelet: KubeletSpec,
    #[serde(default, skip_serializing_if = "is_default")]
    pub rollout: NodeRolloutSpec,
    /// When a node NotReady is repaired in place (its kubelet and
    /// containerd restarted by the node agent) and when it is replaced by a
    /// new node on another Machine.
    #[serde(default, skip_serializing_if = "is_default")]
    pub repair: NodeRepairSpec,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The kubelet configuration of every node of the pool. Changing it rolls
/// the pool like a version change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletSpec {
    /// Pods a node takes (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 250))]
    pub max_pods: Option<u32>,
    /// Labels the Nodes register with (besides the pool's own label).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// How a new revision rolls through the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRolloutSpec {
    /// Nodes cordoned, drained and updated at once (default 1). A node is
    /// taken only while every PodDisruptionBudget of the cluster has its
    /// pods healthy again.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub max_unavailable: i32,
    /// A node not Ready on the new revision this long after it was cordoned
    /// fails the rollout (default 300): the pool is put back on its last
    /// good revision, the failure recorded on its status, and the failed
    /// revision is not tried again until the spec changes.
    #[serde(default = "node_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub node_deadline_seconds: u32,
}

fn one() -> i32 {
    1
}

fn node_deadline() -> u32 {
    300
}

impl Default for NodeRolloutSpec {
    fn default() -> Self {
        Self { max_unavailable: one(), node_deadline_seconds: node_deadline() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRepairSpec {
    /// NotReady this long: the node agent restarts the node's kubelet and
    /// containerd (default 60).
    #[serde(default = "restart_after")]
    #[schemars(range(min = 5, max = 3600))]
    pub restart_after_seconds: u32,
    /// NotReady this long, or its Machine lost: the node is replaced by a
    /// new one on another Machine (default 300; 0 never replaces).
    #[serde(default = "replace_after")]
    #[schemars(range(min = 0, max = 86400))]
    pub replace_after_seconds: u32,
}

fn restart_after() -> u32 {
    RepairPolicy::default().not_ready_seconds
}

fn replace_after() -> u32 {
    300
}

impl Default for NodeRepairSpec {
    fn default() -> Self {
        Self { restart_after_seconds: restart_after(), replace_after_seconds: replace_after() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The version every node runs once the rollout is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Nodes that exist (declared on a Machine).
    #[serde(default)]
    pub nodes_count: i32,
    /// Nodes Ready, schedulable and on the current revision.
    #[serde(default)]
    pub ready_nodes: i32,
    /// Nodes on the current revision.
    #[serde(default)]
    pub updated_nodes: i32,
    /// Each node: where it runs and what the pool knows of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub nodes: Vec<PoolNodeStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<NodeRolloutStatus>,
    /// Replacements of nodes that stayed NotReady or lost their Machine.
    #[serde(default)]
    pub replacements: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_replacement: Option<String>,
    /// `Ready` (every node Ready on the current revision), `Progressing` (a
    /// rollout, scale or replacement under way), `Degraded` (a rollout
    /// rolled back, a node that cannot be placed, a spec the pool refuses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolNodeStatus {
    pub name: String,
    pub machine: String,
    /// The revision (a hash of version and kubelet configuration) its
    /// Machine entry carries.
    pub revision: String,
    /// The kubelet version the Node reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub ready: bool,
    /// `Running`, `Joining`, `Cordoned`, `Draining`, `Updating`,
    /// `Removing` or `NotReady`.
    pub state: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRolloutStatus {
    /// The revision the pool rolls to (or holds).
    pub revision: String,
    /// The last revision every node reached Ready on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_revision: Option<String>,
    /// The version and kubelet configuration of the last good revision, so
    /// a failed rollout can go back to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_kubelet: Option<KubeletSpec>,
    /// `Complete`, `Progressing` or `RolledBack`.
    pub state: String,
    /// The revision that failed and is not tried again until the spec
    /// changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}
