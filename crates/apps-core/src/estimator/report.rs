//! The agent's side and the wire: a member's Nodes and Pods as
//! [`NodeState`]s, and [`NodeRooms`] to and from
//! `ManagedCluster.status.nodeCapacity`.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_api::cluster::{NodeCapacity, NodeGroup, NodeProfile, NodeTaint, TaintEffect};
use flotilla_core::quantity;
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{Amounts, Effect, Group, NodeRooms, NodeState, Profile, Taint};

/// A quantity of `resource` as an integer: millicores for `cpu`, whole
/// units for everything else; `None` when it does not parse.
pub fn amount(resource: &str, q: &str) -> Option<u128> {
    if resource == "cpu" {
        quantity::millicores(q).ok()
    } else {
        quantity::units(q).ok()
    }
}

/// An integer amount of `resource` written back as a quantity.
pub fn format_amount(resource: &str, amount: u128) -> String {
    if resource == "cpu" {
        quantity::format_millicores(amount)
    } else if resource == "memory" || resource == "ephemeral-storage" || resource.starts_with("hugepages-") {
        quantity::format_bytes(amount)
    } else {
        amount.to_string()
    }
}

fn amounts(list: Option<&BTreeMap<String, Quantity>>) -> Amounts {
    list.into_iter()
        .flatten()
        .filter_map(|(resource, q)| Some((resource.clone(), amount(resource, &q.0)?)))
        .collect()
}

fn add(into: &mut Amounts, more: &Amounts) {
    for (resource, amount) in more {
        let sum = into.entry(resource.clone()).or_default();
        *sum = sum.saturating_add(*amount);
    }
}

fn container_requests(container: &Container) -> Amounts {
    amounts(container.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// A pod's requests as kube-scheduler counts them (`PodRequests`): the sum
/// of its containers and sidecars (init containers with `restartPolicy:
/// Always`), at least each plain init container plus the sidecars started
/// before it, plus the pod overhead.
pub fn pod_requests(spec: &PodSpec) -> Amounts {
    let mut total = Amounts::new();
    for container in &spec.containers {
        add(&mut total, &container_requests(container));
    }
    let mut sidecars = Amounts::new();
    let mut init_peak = Amounts::new();
    for init in spec.init_containers.iter().flatten() {
        let requests = container_requests(init);
        let during = if init.restart_policy.as_deref() == Some("Always") {
            add(&mut total, &requests);
            add(&mut sidecars, &requests);
            sidecars.clone()
        } else {
            let mut during = requests;
            add(&mut during, &sidecars);
            during
        };
        for (resource, amount) in during {
            let peak = init_peak.entry(resource).or_default();
            *peak = (*peak).max(amount);
        }
    }
    for (resource, peak) in init_peak {
        let current = total.entry(resource).or_default();
        *current = (*current).max(peak);
    }
    add(&mut total, &amounts(spec.overhead.as_ref()));
    total
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Each node with the requests and count of the pods bound to it that are
/// not finished (`Succeeded`/`Failed` pods hold nothing, as for the
/// scheduler). Pods of unknown nodes are ignored.
pub fn node_states<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<NodeState> {
    let mut states: BTreeMap<&str, NodeState> = BTreeMap::new();
    for node in nodes {
        let Some(name) = node.metadata.name.as_deref() else { continue };
        let spec = node.spec.as_ref();
        let taints = spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some(Taint {
                    key: t.key.clone(),
                    value: t.value.clone().unwrap_or_default(),
                    effect: Effect::parse(&t.effect)?,
                })
            })
            .collect();
        let state = NodeState {
            name: name.to_string(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints,
            allocatable: amounts(node.status.as_ref().and_then(|s| s.allocatable.as_ref())),
            requested: Amounts::new(),
            pods: 0,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready: node_ready(node),
        };
        states.insert(name, state);
    }
    for pod in pods {
        let Some(spec) = &pod.spec else { continue };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            continue;
        }
        let Some(state) = spec.node_name.as_deref().and_then(|n| states.get_mut(n)) else { continue };
        state.pods += 1;
        add(&mut state.requested, &pod_requests(spec));
    }
    states.into_values().collect()
}

fn api_effect(effect: Effect) -> TaintEffect {
    match effect {
        Effect::NoSchedule => TaintEffect::NoSchedule,
        Effect::NoExecute => TaintEffect::NoExecute,
    }
}

impl NodeRooms {
    /// What the agent writes on `status.nodeCapacity`.
    pub fn to_api(&self) -> NodeCapacity {
        NodeCapacity {
            profiles: self
                .profiles
                .iter()
                .map(|p| NodeProfile {
                    labels: p.labels.clone(),
                    taints: p
                        .taints
                        .iter()
                        .map(|t| NodeTaint {
                            key: t.key.clone(),
                            value: (!t.value.is_empty()).then(|| t.value.clone()),
                            effect: api_effect(t.effect),
                        })
                        .collect(),
                })
                .collect(),
            groups: self
                .groups
                .iter()
                .map(|g| NodeGroup {
                    profile: i32::try_from(g.profile).unwrap_or(i32::MAX),
                    nodes: g.nodes.clone(),
                    free: g.free.iter().map(|(r, a)| (r.clone(), Quantity(format_amount(r, *a)))).collect(),
                })
                .collect(),
        }
    }

    /// What the hub reads back. A group naming no profile, and quantities
    /// that do not parse, are left out (that room is not counted);
    /// `PreferNoSchedule` taints filter nothing and are dropped.
    pub fn from_api(capacity: &NodeCapacity) -> NodeRooms {
        let profiles: Vec<Profile> = capacity
            .profiles
            .iter()
            .map(|p| Profile {
                labels: p.labels.clone(),
                taints: p
                    .taints
                    .iter()
                    .filter_map(|t| {
                        let effect = match t.effect {
                            TaintEffect::NoSchedule => Effect::NoSchedule,
                            TaintEffect::NoExecute => Effect::NoExecute,
                            TaintEffect::PreferNoSchedule => return None,
                        };
                        Some(Taint { key: t.key.clone(), value: t.value.clone().unwrap_or_default(), effect })
                    })
                    .collect(),
            })
            .collect();
        let groups = capacity
            .groups
            .iter()
            .filter_map(|g| {
                let profile = usize::try_from(g.profile).ok().filter(|p| *p < profiles.len())?;
                Some(Group { profile, nodes: g.nodes.clone(), free: amounts(Some(&g.free)) })
            })
            .collect();
        NodeRooms { profiles, groups }
    }
}

/// Each reported node's profile index, by name.
fn profiles_by_node(capacity: &NodeCapacity) -> BTreeMap<&str, i32> {
    capacity.groups.iter().flat_map(|g| g.nodes.iter().map(move |n| (n.as_str(), g.profile))).collect()
}

/// Whether the agent writes a new node report now. Nodes that came, went
/// or changed labels or taints change where replicas may go: at once.
/// Room alone changes with every pod: at most once per `min_interval`
/// (`since_last`: since the last report was chosen), so a busy member does
/// not rewrite its ManagedCluster constantly; a pending change goes out
/// when the interval is over.
pub fn report_due(
    last: Option<&NodeCapacity>,
    next: &NodeCapacity,
    since_last: Duration,
    min_interval: Duration,
) -> bool {
    let Some(last) = last else { return true };
    if last == next {
        return false;
    }
    if last.profiles != next.profiles || profiles_by_node(last) != profiles_by_node(next) {
        return true;
    }
    since_last >= min_interval
}
