//! One row of the fleet page per `ManagedCluster`: mode, health, version,
//! nodes, capacity and usage as bars, taints and age.

use std::collections::BTreeMap;

use flotilla_api::cluster::{conditions, ManagedCluster};
use flotilla_core::quantity;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use super::age::age;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetRow {
    pub name: String,
    pub mode: String,
    /// `Healthy`, `Unhealthy`, `Unknown` (never heard from or silent) or
    /// `Pending` (not accepted yet).
    pub health: String,
    /// Why, from the `Available` condition.
    pub health_reason: String,
    pub version: String,
    pub nodes: String,
    pub bars: Vec<Bar>,
    pub taints: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub age: String,
    pub created: Option<String>,
}

/// Usage of one resource: `allocated` of `allocatable`, as a percentage
/// for the bar's width and both amounts written for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bar {
    pub resource: String,
    pub percent: u8,
    pub text: String,
}

/// The resources the fleet page draws bars for, in order.
pub const BAR_RESOURCES: [&str; 3] = ["cpu", "memory", "pods"];

pub fn fleet_row(cluster: &ManagedCluster, now: Timestamp) -> FleetRow {
    let status = cluster.status.as_ref();
    let available = cluster.condition(conditions::AVAILABLE);
    let health = match available.map(|c| c.status.as_str()) {
        _ if !cluster.spec.hub_accepts_client && available.is_none() => "Pending",
        Some("True") => "Healthy",
        Some("False") => "Unhealthy",
        _ => "Unknown",
    };
    let health_reason = available
        .map(|c| if c.message.is_empty() { c.reason.clone() } else { format!("{}: {}", c.reason, c.message) })
        .unwrap_or_default();
    let bars = status
        .and_then(|s| s.resource_summary.as_ref())
        .map(|r| {
            BAR_RESOURCES
                .iter()
                .filter_map(|res| bar(res, r.allocated.get(*res), r.allocatable.get(*res)))
                .collect()
        })
        .unwrap_or_default();
    let created = cluster.metadata.creation_timestamp.as_ref().map(|t| t.0);
    FleetRow {
        name: cluster.name_any(),
        mode: cluster.spec.sync_mode.to_string(),
        health: health.to_string(),
        health_reason,
        version: status.and_then(|s| s.kubernetes_version.clone()).unwrap_or_default(),
        nodes: status.and_then(|s| s.node_summary.as_ref()).map(|n| n.display.clone()).unwrap_or_default(),
        bars,
        taints: cluster
            .spec
            .taints
            .iter()
            .map(|t| match &t.value {
                Some(v) => format!("{}={}:{:?}", t.key, v, t.effect),
                None => format!("{}:{:?}", t.key, t.effect),
            })
            .collect(),
        labels: cluster.labels().clone(),
        age: created.map(|c| age(c, now)).unwrap_or_default(),
        created: created.map(|c| c.to_string()),
    }
}

/// The bar of `resource`, `None` without an allocatable amount. Usage
/// above capacity (overcommit) draws a full bar.
pub fn bar(resource: &str, allocated: Option<&Quantity>, allocatable: Option<&Quantity>) -> Option<Bar> {
    let total = amount(resource, &allocatable?.0)?;
    let used = allocated.and_then(|q| amount(resource, &q.0)).unwrap_or(0);
    let percent = used.saturating_mul(100).checked_div(total).unwrap_or(0).min(100) as u8;
    Some(Bar {
        resource: resource.to_string(),
        percent,
        text: format!("{} / {}", written(resource, used), written(resource, total)),
    })
}

fn amount(resource: &str, q: &str) -> Option<u128> {
    match resource {
        "cpu" => quantity::millicores(q).ok(),
        _ => quantity::units(q).ok(),
    }
}

fn written(resource: &str, amount: u128) -> String {
    match resource {
        "cpu" => quantity::format_millicores(amount),
        "memory" | "ephemeral-storage" => human_bytes(amount),
        _ => amount.to_string(),
    }
}

/// Bytes with the largest binary unit that keeps a whole part, one decimal
/// when it is not whole: `512Mi`, `1.5Gi`, `7.8Gi`.
pub fn human_bytes(bytes: u128) -> String {
    for (suffix, size) in [("Ti", 1u128 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= size {
            let tenths = bytes * 10 / size;
            return match tenths % 10 {
                0 => format!("{}{suffix}", tenths / 10),
                d => format!("{}.{d}{suffix}", tenths / 10),
            };
        }
    }
    bytes.to_string()
}
