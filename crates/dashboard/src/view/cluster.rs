//! The page of one cluster: its row, conditions, inventory, Events and
//! what the fleet placed there (bindings' targets and the cluster's Works).

use flotilla_api::cluster::{ConditionTransition, ManagedCluster};
use flotilla_api::work::{BindingSpec, BindingStatus, Health, Work};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use super::age::age;
use super::fleet::{fleet_row, FleetRow};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPage {
    pub row: FleetRow,
    pub api_endpoint: String,
    pub conditions: Vec<ConditionView>,
    /// The conditions' transitions the hub recorded, newest first.
    pub history: Vec<TransitionView>,
    /// Group versions the member serves.
    pub apis: Vec<String>,
    /// Node profiles with how many nodes each and their free amounts.
    pub node_groups: Vec<String>,
    pub placed: Vec<Placement>,
    pub works: Vec<WorkView>,
    pub events: Vec<EventView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    /// Since the last transition.
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    /// How long ago.
    pub ago: String,
}

/// The recorded transitions, newest first (the status keeps them oldest
/// first).
pub fn transition_views(history: &[ConditionTransition], now: Timestamp) -> Vec<TransitionView> {
    history
        .iter()
        .rev()
        .map(|t| TransitionView {
            type_: t.type_.clone(),
            status: t.status.clone(),
            reason: t.reason.clone(),
            message: t.message.clone(),
            ago: age(t.transition_time.0, now),
        })
        .collect()
}

/// One binding that targets the cluster: the template and the replicas
/// given here, with the member's health of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub binding: String,
    pub template: String,
    pub replicas: i32,
    pub health: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkView {
    pub name: String,
    pub manifests: usize,
    pub applied: String,
    pub available: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub object: String,
    pub message: String,
    pub count: i32,
    pub age: String,
}

pub fn condition_views(conditions: &[Condition], now: Timestamp) -> Vec<ConditionView> {
    conditions
        .iter()
        .map(|c| ConditionView {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            since: age(c.last_transition_time.0, now),
        })
        .collect()
}

/// A binding as seen from one cluster (`None` when it does not target it).
pub fn placement(
    binding_name: &str,
    spec: &BindingSpec,
    status: Option<&BindingStatus>,
    cluster: &str,
) -> Option<Placement> {
    let target = spec.clusters.iter().find(|t| t.name == cluster)?;
    let item = status.and_then(|s| s.aggregated_status.iter().find(|i| i.cluster_name == cluster));
    let r = &spec.resource;
    let template = match r.namespace.as_str() {
        "" => format!("{}/{}", r.kind, r.name),
        ns => format!("{}/{}/{}", r.kind, ns, r.name),
    };
    Some(Placement {
        binding: binding_name.to_string(),
        template,
        replicas: target.replicas,
        health: health_text(item.map(|i| i.health).unwrap_or_default()),
        reason: item.map(member_reason).unwrap_or_default(),
    })
}

pub fn health_text(health: Health) -> String {
    format!("{health:?}")
}

/// The member's own words on a cluster's copy: the health detail, else
/// the applier's message.
pub fn member_reason(item: &flotilla_api::work::AggregatedStatusItem) -> String {
    match &item.health_detail {
        Some(d) if !d.message.is_empty() => format!("{}: {}", d.reason, d.message),
        Some(d) => d.reason.clone(),
        None => item.applied_message.clone(),
    }
}

pub fn work_view(work: &Work) -> WorkView {
    let status = work.status.as_ref();
    let condition = |t: &str| status.and_then(|s| s.conditions.iter().find(|c| c.type_ == t));
    WorkView {
        name: work.name_any(),
        manifests: work.spec.manifests.len(),
        applied: condition("Applied").map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into()),
        available: condition("Available").map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into()),
        message: condition("Available")
            .or(condition("Applied"))
            .map(|c| c.message.clone())
            .unwrap_or_default(),
    }
}

/// Events newest first.
pub fn event_views(events: &[Event], now: Timestamp) -> Vec<EventView> {
    let mut views: Vec<(i64, EventView)> = events
        .iter()
        .map(|e| {
            let when = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let o = &e.involved_object;
            let view = EventView {
                type_: e.type_.clone().unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                object: format!(
                    "{}/{}",
                    o.kind.clone().unwrap_or_default(),
                    o.name.clone().unwrap_or_default()
                ),
                message: e.message.clone().unwrap_or_default(),
                count: e.count.unwrap_or(1),
                age: when.map(|w| age(w, now)).unwrap_or_default(),
            };
            (when.map(|w| w.as_second()).unwrap_or(0), view)
        })
        .collect();
    views.sort_by_key(|(when, _)| std::cmp::Reverse(*when));
    views.into_iter().map(|(_, v)| v).collect()
}

pub fn cluster_page(
    cluster: &ManagedCluster,
    placed: Vec<Placement>,
    works: Vec<WorkView>,
    events: Vec<EventView>,
    now: Timestamp,
) -> ClusterPage {
    let status = cluster.status.as_ref();
    ClusterPage {
        row: fleet_row(cluster, now),
        api_endpoint: cluster.spec.api_endpoint.clone().unwrap_or_default(),
        conditions: status.map(|s| condition_views(&s.conditions, now)).unwrap_or_default(),
        history: status.map(|s| transition_views(&s.condition_history, now)).unwrap_or_default(),
        apis: status
            .map(|s| s.api_enablements.iter().map(|a| a.group_version.clone()).collect())
            .unwrap_or_default(),
        node_groups: status
            .and_then(|s| s.node_capacity.as_ref())
            .map(|c| {
                c.groups
                    .iter()
                    .map(|g| {
                        let free: Vec<String> = g.free.iter().map(|(k, v)| format!("{k}={}", v.0)).collect();
                        format!("{} node(s), free {}", g.nodes.len(), free.join(" "))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        placed,
        works,
        events,
    }
}
