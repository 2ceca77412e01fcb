//! What the scheduler knows of a cluster, and how many replicas fit in it.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_api::cluster::{ApiEnablement, ManagedCluster, Taint};
use flotilla_core::quantity::{self, QuantityError};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;

use crate::estimator::{NodeConstraints, NodeRooms};

/// What the scheduler knows about one cluster (built from a ManagedCluster).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterSnapshot {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub api_enablements: Vec<ApiEnablement>,
    /// cpu in millicores, memory in bytes, pods as a count (from
    /// `status.resourceSummary`), other resources in whole units.
    pub allocatable: BTreeMap<String, u128>,
    pub allocated: BTreeMap<String, u128>,
    /// The free room of each Ready node (`status.nodeCapacity`), shared
    /// between copies; `None` from an agent that does not report it, when
    /// the sums above stand in.
    pub nodes: Option<Arc<NodeRooms>>,
    /// false when the hub has not accepted the cluster or it is being deleted
    pub schedulable: bool,
    /// Since when the cluster is `Available=True` (None: it is not).
    pub available_since: Option<Timestamp>,
}

impl ClusterSnapshot {
    /// Quantities that do not parse are left out (as if not reported).
    pub fn from_managed_cluster(mc: &ManagedCluster) -> Self {
        let status = mc.status.as_ref();
        let summary = status.and_then(|s| s.resource_summary.as_ref());
        let amounts = |list: &BTreeMap<String, Quantity>| -> BTreeMap<String, u128> {
            list.iter()
                .filter_map(|(resource, q)| Some((resource.clone(), resource_amount(resource, q).ok()?)))
                .collect()
        };
        ClusterSnapshot {
            name: mc.metadata.name.clone().unwrap_or_default(),
            labels: mc.metadata.labels.clone().unwrap_or_default(),
            taints: mc.spec.taints.clone(),
            api_enablements: status.map(|s| s.api_enablements.clone()).unwrap_or_default(),
            allocatable: summary.map(|s| amounts(&s.allocatable)).unwrap_or_default(),
            allocated: summary.map(|s| amounts(&s.allocated)).unwrap_or_default(),
            nodes: status.and_then(|s| s.node_capacity.as_ref()).map(|c| Arc::new(NodeRooms::from_api(c))),
            schedulable: mc.spec.hub_accepts_client && mc.metadata.deletion_timestamp.is_none(),
            available_since: status
                .and_then(|s| {
                    s.conditions.iter().find(|c| c.type_ == flotilla_api::cluster::conditions::AVAILABLE)
                })
                .filter(|c| c.status == "True")
                .map(|c| c.last_transition_time.0),
        }
    }
}

/// A quantity of `resource` as an integer: millicores for `cpu`, whole
/// units (bytes, counts) for everything else.
pub fn resource_amount(resource: &str, q: &Quantity) -> Result<u128, QuantityError> {
    if resource == "cpu" {
        quantity::millicores(&q.0)
    } else {
        quantity::units(&q.0)
    }
}

/// How many more replicas with these per-replica requests fit in a
/// cluster, for pods that ask nothing of nodes but room; see
/// [`available_replicas_with`].
pub fn available_replicas(cluster: &ClusterSnapshot, requests: &BTreeMap<String, Quantity>) -> i64 {
    available_replicas_with(cluster, requests, &crate::estimator::UNCONSTRAINED)
}

/// How many more replicas with these per-replica requests and node
/// constraints fit in a cluster: node by node when the cluster reports its
/// nodes (`crate::estimator`), else the least over the requested resources
/// (and `pods`, one per replica) of the cluster's (allocatable −
/// allocated) / request, which knows no node constraint. A cluster that
/// reported no capacity, or lacks a requested resource, fits 0; an
/// unparseable request fits nowhere. Capped at `i32::MAX`.
pub fn available_replicas_with(
    cluster: &ClusterSnapshot,
    requests: &BTreeMap<String, Quantity>,
    constraints: &NodeConstraints,
) -> i64 {
    match parse_requests(requests) {
        Ok(parsed) => available_for(cluster, &parsed, constraints),
        Err(_) => 0,
    }
}

pub(super) fn parse_requests(requests: &BTreeMap<String, Quantity>) -> Result<Vec<(&str, u128)>, String> {
    let mut parsed = Vec::with_capacity(requests.len());
    for (resource, q) in requests {
        match resource_amount(resource, q) {
            Ok(0) => {}
            Ok(amount) => parsed.push((resource.as_str(), amount)),
            Err(e) => return Err(format!("resource request {resource}: {e}")),
        }
    }
    Ok(parsed)
}

pub(super) fn available_for(
    cluster: &ClusterSnapshot,
    requests: &[(&str, u128)],
    constraints: &NodeConstraints,
) -> i64 {
    if let Some(nodes) = &cluster.nodes {
        return i64::try_from(nodes.replicas(requests, constraints).min(i32::MAX as u128)).unwrap_or(0);
    }
    let free = |resource: &str| {
        let allocatable = cluster.allocatable.get(resource).copied().unwrap_or(0);
        allocatable.saturating_sub(cluster.allocated.get(resource).copied().unwrap_or(0))
    };
    let mut fits = free("pods");
    for (resource, request) in requests {
        fits = fits.min(free(resource) / request);
    }
    i64::try_from(fits.min(i32::MAX as u128)).unwrap_or(0)
}
