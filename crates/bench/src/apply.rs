//! Writing objects of any kind to a cluster.

use anyhow::Context;
use kube::api::{Patch, PatchParams};
use kube::Api;

/// Server-side applies any object (its kind found by discovery).
pub async fn apply_json(client: &kube::Client, object: serde_json::Value) -> anyhow::Result<()> {
    let api_version = object["apiVersion"].as_str().context("apiVersion")?.to_string();
    let kind = object["kind"].as_str().context("kind")?.to_string();
    let name = object["metadata"]["name"].as_str().context("name")?.to_string();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<kube::api::DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    };
    api.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&object)).await?;
    Ok(())
}
