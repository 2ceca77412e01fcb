//! Lifts the `kubernetes.io/pvc-protection` finalizer from a claim template
//! being deleted that no hub pod uses (`flotilla_apps_core::pvc_protection`
//! says why and when): on a hub whose API server adds it, nothing else
//! would ever remove it.

use flotilla_apps_core::pvc_protection::{lift, pod_uses_claim};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::Api;

use super::index::TemplateKey;
use super::state::Apps;
use crate::error::Error;

pub(super) async fn lift_if_unused(
    apps: &Apps,
    api: &Api<DynamicObject>,
    key: &TemplateKey,
    template: &DynamicObject,
) -> Result<(), Error> {
    let finalizers = template.metadata.finalizers.clone().unwrap_or_default();
    let deleting = template.metadata.deletion_timestamp.is_some();
    // Only a claim being deleted with the finalizer is worth a pod list.
    if lift(&key.api_version, &key.kind, deleting, &finalizers, false).is_none() {
        return Ok(());
    }
    let pods = Api::<Pod>::namespaced(apps.client.clone(), &key.namespace).list(&Default::default()).await?;
    let in_use = pods.items.iter().any(|p| pod_uses_claim(p, &key.name));
    let Some(remaining) = lift(&key.api_version, &key.kind, deleting, &finalizers, in_use) else {
        tracing::info!(template = %key, "a hub pod uses the claim; its protection stays");
        return Ok(());
    };
    // With the resourceVersion read: a conflict (the list changed) fails,
    // and the next event tries again.
    let patch = serde_json::json!({"metadata": {
        "finalizers": remaining,
        "resourceVersion": template.metadata.resource_version,
    }});
    api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    tracing::info!(template = %key, "lifted the pvc-protection finalizer from a deleted claim template");
    Ok(())
}
