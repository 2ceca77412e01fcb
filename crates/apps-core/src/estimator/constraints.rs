//! What a pod asks of nodes besides room, and the node taints it must
//! tolerate: the inputs of `matching`, shared by the estimator.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, Toleration};

/// The label the kubelet sets to the node's name.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The taint the NodeUnschedulable filter stands for.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// What a pod asks of a node besides room: its `nodeSelector`, its
/// `requiredDuringSchedulingIgnoredDuringExecution` node selector terms, its
/// tolerations, and whether it uses host ports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeConstraints {
    pub node_selector: BTreeMap<String, String>,
    /// `None`: no required node affinity; else the terms, any of which must
    /// match.
    pub required_terms: Option<Vec<NodeSelectorTerm>>,
    pub tolerations: Vec<Toleration>,
    pub host_ports: bool,
}

/// A pod that asks nothing of nodes but room.
pub static UNCONSTRAINED: NodeConstraints = NodeConstraints {
    node_selector: BTreeMap::new(),
    required_terms: None,
    tolerations: Vec::new(),
    host_ports: false,
};

/// A taint's effect, of those the filters act on (`PreferNoSchedule` only
/// scores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    NoSchedule,
    NoExecute,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::NoSchedule => "NoSchedule",
            Effect::NoExecute => "NoExecute",
        }
    }

    /// `None` for `PreferNoSchedule` and anything unknown.
    pub fn parse(effect: &str) -> Option<Effect> {
        match effect {
            "NoSchedule" => Some(Effect::NoSchedule),
            "NoExecute" => Some(Effect::NoExecute),
            _ => None,
        }
    }
}

/// A node taint; an absent value is the empty string, as Kubernetes
/// compares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: Effect,
}
