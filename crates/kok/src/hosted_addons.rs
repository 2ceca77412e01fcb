//! Inside a hosted cluster (process runtime), once its API server
//! answers: the add-ons applied with server-side apply (again only when
//! their manifests changed) and the Ready nodes counted.

use std::time::Duration;

use flotilla_api::kok::{conditions, AddonStatus, HostedCluster};
use flotilla_core::conditions::{condition, Wanted};
use flotilla_kok_core::addons;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Api, Client, ResourceExt};

use crate::Error;

/// Field manager of add-on objects inside the hosted cluster.
pub const ADDON_MANAGER: &str = "flotilla-addons";

/// A client for the hosted cluster from its admin kubeconfig.
pub async fn business_client(kubeconfig: &[u8]) -> Result<Client, Error> {
    let text = String::from_utf8_lossy(kubeconfig);
    let parsed = kube::config::Kubeconfig::from_yaml(&text).map_err(|e| Error::Other(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .map_err(|e| Error::Other(e.to_string()))?;
    config.connect_timeout = Some(Duration::from_secs(3));
    config.read_timeout = Some(Duration::from_secs(10));
    Ok(Client::try_from(config)?)
}

/// What the reconcile learned inside the hosted cluster.
pub(crate) struct InsideCluster {
    /// The add-ons as applied now.
    pub(crate) addons: Vec<AddonStatus>,
    /// `AddonsApplied`.
    pub(crate) condition: Condition,
    /// Ready nodes, when nodes are asked for and could be counted.
    pub(crate) ready_nodes: Option<i32>,
}

/// Applies add-ons whose manifests changed since they were last applied,
/// and counts Ready nodes.
pub(crate) async fn inside_cluster(
    member: &Client,
    hc: &HostedCluster,
    token: &str,
    now: &Time,
) -> InsideCluster {
    let previous = hc.status.clone().unwrap_or_default();
    let generation = hc.metadata.generation;
    let mut applied = Vec::new();
    let mut failure: Option<String> = None;
    for addon in addons::wanted(hc) {
        let manifests = match addons::manifests(&addon, hc, token) {
            Ok(m) => m,
            Err(e) => {
                failure = Some(e.to_string());
                continue;
            }
        };
        let hash = addons::hash(&manifests);
        let last = previous.addons.iter().find(|a| a.name == addon.name);
        if last.is_some_and(|a| a.hash == hash) {
            applied.push(last.cloned().unwrap_or_default());
            continue;
        }
        match apply_manifests(member, &manifests).await {
            Ok(()) => {
                tracing::info!(cluster = %hc.name_any(), addon = %addon.name, "add-on applied");
                applied.push(AddonStatus { name: addon.name.clone(), hash, applied_at: Some(now.clone()) });
            }
            Err(e) => {
                failure = Some(format!("add-on {}: {e}", addon.name));
                if let Some(last) = last {
                    applied.push(last.clone());
                }
            }
        }
    }
    let reason = if failure.is_none() { "Applied" } else { "ApplyFailed" };
    let message = failure.unwrap_or_else(|| "every add-on is applied".into());
    let wanted_condition =
        Wanted::new(conditions::ADDONS_APPLIED, reason == "Applied", reason, message).generation(generation);
    let mut inside = InsideCluster {
        addons: applied,
        condition: condition(&previous.conditions, wanted_condition, now),
        ready_nodes: None,
    };
    let wanted = hc.spec.nodes.as_ref().map_or(0, |n| n.count.max(0));
    if wanted > 0 {
        match Api::<Node>::all(member.clone()).list(&ListParams::default()).await {
            Ok(nodes) => {
                let ready = nodes.items.iter().filter(|n| node_ready(n)).count();
                inside.ready_nodes = Some(i32::try_from(ready).unwrap_or(i32::MAX));
            }
            Err(e) => tracing::debug!(cluster = %hc.name_any(), error = %e, "listing nodes failed"),
        }
    }
    inside
}

pub(crate) fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Server-side applies plain manifests (core and a few well-known groups).
pub async fn apply_manifests(client: &Client, manifests: &[serde_json::Value]) -> Result<(), Error> {
    for m in manifests {
        let api_version = m["apiVersion"].as_str().unwrap_or_default();
        let kind = m["kind"].as_str().unwrap_or_default();
        let name = m["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = m["metadata"]["namespace"].as_str();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let plural = format!("{}s", kind.to_lowercase());
        let resource = ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            plural,
        };
        let caps = ApiCapabilities {
            scope: if namespace.is_some() { Scope::Namespaced } else { Scope::Cluster },
            subresources: vec![],
            operations: vec![],
        };
        let api: Api<DynamicObject> = match (namespace, caps.scope) {
            (Some(ns), Scope::Namespaced) => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        };
        api.patch(name, &PatchParams::apply(ADDON_MANAGER).force(), &Patch::Apply(m)).await?;
    }
    Ok(())
}
