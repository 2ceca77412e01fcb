//! How many replicas of a pod shape a member cluster can take, node by node,
//! as its kube-scheduler's default filters would place them:
//! NodeResourcesFit (allocatable minus what the node's unfinished pods
//! request, and its pod count limit), NodeAffinity (`nodeSelector` and
//! required node affinity), TaintToleration (`NoSchedule` and `NoExecute`
//! taints), NodeUnschedulable (a cordoned node is tainted
//! `node.kubernetes.io/unschedulable:NoSchedule` here, which a pod may
//! tolerate, as the filter allows) and NodePorts (a pod with host ports
//! takes at most one place per node). Nodes that are not Ready count for
//! nothing.
//!
//! The estimate is the sum over eligible nodes of the least, over the
//! requested resources and `pods`, of free / request. The agent turns its
//! member's nodes and pods into [`NodeRooms`] (`report`) and sends them as
//! `ManagedCluster.status.nodeCapacity`; the hub reads them back and runs
//! this same function node by node for each workload's shape (pod shapes
//! are known only on the hub, and the hub never dials pull members).
//!
//! Not modelled: inter-pod affinity, topology spread inside the member,
//! volume filters, host ports already taken by other pods, preemption.

pub mod constraints;
pub mod matching;
pub mod report;

use std::collections::BTreeMap;

pub use constraints::{Effect, NodeConstraints, Taint, HOSTNAME_LABEL, UNCONSTRAINED, UNSCHEDULABLE_TAINT};

/// Resource amounts as integers: millicores for `cpu`, whole units (bytes,
/// counts) for everything else; `pods` is a count of pods.
pub type Amounts = BTreeMap<String, u128>;

/// One node as the agent sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeState {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// `status.allocatable`, `pods` included.
    pub allocatable: Amounts,
    /// Summed requests of the node's unfinished pods (`pods` not included).
    pub requested: Amounts,
    /// How many unfinished pods the node holds.
    pub pods: u128,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
}

/// A set of labels and taints several nodes share.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Profile {
    /// Without `kubernetes.io/hostname` when it equals the node's name.
    pub labels: BTreeMap<String, String>,
    /// Sorted, deduplicated.
    pub taints: Vec<Taint>,
}

/// Nodes of one profile with the same free room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Group {
    /// Index into [`NodeRooms::profiles`].
    pub profile: usize,
    pub nodes: Vec<String>,
    /// Per node: allocatable minus requested, `pods` the pods it still
    /// takes; resources without room are left out.
    pub free: Amounts,
}

/// The free room of a cluster's Ready nodes, grouped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NodeRooms {
    pub profiles: Vec<Profile>,
    pub groups: Vec<Group>,
}

impl NodeRooms {
    /// Ready nodes only; a cordoned node carries the unschedulable taint.
    /// Deterministic: the same nodes in any order give the same rooms.
    pub fn from_states(states: &[NodeState]) -> NodeRooms {
        let mut states: Vec<&NodeState> = states.iter().filter(|s| s.ready).collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        let mut profile_index: BTreeMap<Profile, usize> = BTreeMap::new();
        let mut group_index: BTreeMap<(usize, Vec<(String, u128)>), usize> = BTreeMap::new();
        let mut rooms = NodeRooms::default();
        for state in states {
            let profile = profile_of(state);
            let next = rooms.profiles.len();
            let profile = *profile_index.entry(profile.clone()).or_insert_with(|| {
                rooms.profiles.push(profile);
                next
            });
            let free = free_of(state);
            let key = (profile, free.iter().map(|(r, a)| (r.clone(), *a)).collect::<Vec<_>>());
            let next = rooms.groups.len();
            let group = *group_index.entry(key).or_insert_with(|| {
                rooms.groups.push(Group { profile, nodes: Vec::new(), free });
                next
            });
            rooms.groups[group].nodes.push(state.name.clone());
        }
        rooms
    }

    /// How many nodes are reported.
    pub fn node_count(&self) -> usize {
        self.groups.iter().map(|g| g.nodes.len()).sum()
    }

    /// How many replicas with these per-replica requests (positive amounts;
    /// see [`crate::scheduler::resource_amount`]) and constraints fit: the
    /// sum over eligible nodes of the least of free / request over the
    /// requested resources and `pods` (one per replica).
    pub fn replicas(&self, requests: &[(&str, u128)], constraints: &NodeConstraints) -> u128 {
        let per_node_names = matching::depends_on_node_name(constraints);
        // Whether each profile passes, found once per call.
        let mut profile_passes: Vec<Option<bool>> = vec![None; self.profiles.len()];
        let mut total: u128 = 0;
        for group in &self.groups {
            let Some(profile) = self.profiles.get(group.profile) else { continue };
            let per_node = replicas_on_node(&group.free, requests, constraints.host_ports);
            if per_node == 0 {
                continue;
            }
            let tolerated = || matching::tolerates_all(&constraints.tolerations, &profile.taints);
            let eligible = if per_node_names {
                if !tolerated() {
                    continue;
                }
                group
                    .nodes
                    .iter()
                    .filter(|name| matching::node_matches(constraints, &profile.labels, name))
                    .count()
            } else {
                let passes = *profile_passes[group.profile].get_or_insert_with(|| {
                    // The name matters to no term here, so any node of the
                    // profile answers for all.
                    let name = group.nodes.first().map(String::as_str).unwrap_or_default();
                    tolerated() && matching::node_matches(constraints, &profile.labels, name)
                });
                if passes {
                    group.nodes.len()
                } else {
                    0
                }
            };
            total = total.saturating_add(per_node.saturating_mul(eligible as u128));
        }
        total
    }
}

/// How many replicas fit in `free` (NodeResourcesFit): the least over `pods`
/// and every requested resource of free / request; at most one with host
/// ports (NodePorts).
pub fn replicas_on_node(free: &Amounts, requests: &[(&str, u128)], host_ports: bool) -> u128 {
    let mut fits = free.get("pods").copied().unwrap_or(0);
    for (resource, request) in requests {
        if *request == 0 {
            continue;
        }
        fits = fits.min(free.get(*resource).copied().unwrap_or(0) / request);
        if fits == 0 {
            return 0;
        }
    }
    if host_ports {
        fits.min(1)
    } else {
        fits
    }
}

fn profile_of(state: &NodeState) -> Profile {
    let mut labels = state.labels.clone();
    if labels.get(HOSTNAME_LABEL).is_some_and(|h| *h == state.name) {
        labels.remove(HOSTNAME_LABEL);
    }
    let mut taints = state.taints.clone();
    if state.unschedulable {
        taints.push(Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            value: String::new(),
            effect: Effect::NoSchedule,
        });
    }
    taints.sort();
    taints.dedup();
    Profile { labels, taints }
}

fn free_of(state: &NodeState) -> Amounts {
    let mut free = Amounts::new();
    for (resource, allocatable) in &state.allocatable {
        let used =
            if resource == "pods" { state.pods } else { state.requested.get(resource).copied().unwrap_or(0) };
        let room = allocatable.saturating_sub(used);
        if room > 0 {
            free.insert(resource.clone(), room);
        }
    }
    free
}

#[cfg(test)]
#[path = "estimator_tests.rs"]
mod tests;
