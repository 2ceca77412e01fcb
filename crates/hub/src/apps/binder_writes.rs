//! The binder's writes: a template's binding and its Works (server-side
//! apply with the binder's field manager), a Work's deletion, and the
//! cleanup of everything a template no longer wants.

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::work::{keys, BindingSpec, ClusterResourceBinding, ResourceBinding, Work};
use flotilla_apps_core::binding::{binding_name, work_name};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::index::{lock, TemplateKey};
use super::state::Apps;
use crate::error::Error;

/// The binder's field manager on bindings and Works.
pub(super) const MANAGER: &str = flotilla_apps_core::apply_latency::BINDER_MANAGER;

pub(super) async fn write_binding(
    apps: &Apps,
    key: &TemplateKey,
    template: &DynamicObject,
    spec: &BindingSpec,
    lazy_record: Option<String>,
) -> Result<ObjectReference, Error> {
    let name = binding_name(&key.api_version, &key.kind, &key.name);
    // Absent when the policy is not lazy: applying without it removes it.
    let annotations = match lazy_record {
        Some(record) => json!({flotilla_apps_core::claim::REVISION_ANNOTATION: record}),
        None => json!({}),
    };
    let owner = json!([{
        "apiVersion": key.api_version, "kind": key.kind, "name": key.name,
        "uid": template.metadata.uid.clone().unwrap_or_default(),
        "blockOwnerDeletion": false,
    }]);
    let params = PatchParams::apply(MANAGER).force();
    if key.namespace.is_empty() {
        let body = json!({
            "apiVersion": ClusterResourceBinding::api_version(&()), "kind": ClusterResourceBinding::kind(&()),
            "metadata": {"name": name, "ownerReferences": owner, "annotations": annotations},
            "spec": spec,
        });
        let written = Api::<ClusterResourceBinding>::all(apps.client.clone())
            .patch(&name, &params, &Patch::Apply(&body))
            .await?;
        Ok(written.object_ref(&()))
    } else {
        let body = json!({
            "apiVersion": ResourceBinding::api_version(&()), "kind": ResourceBinding::kind(&()),
            "metadata": {"name": name, "namespace": key.namespace, "ownerReferences": owner,
                         "annotations": annotations},
            "spec": spec,
        });
        let written = Api::<ResourceBinding>::namespaced(apps.client.clone(), &key.namespace)
            .patch(&name, &params, &Patch::Apply(&body))
            .await?;
        Ok(written.object_ref(&()))
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn write_work(
    apps: &Apps,
    key: &TemplateKey,
    binding: &str,
    cluster: &str,
    spec: serde_json::Value,
    hash: String,
    generation: Option<i64>,
    replicas: Option<i32>,
    revision: Option<String>,
    applied_overrides: Option<String>,
) -> Result<(), Error> {
    let namespace = ManagedCluster::hub_namespace(cluster);
    let name = work_name(&key.namespace, binding);
    let binding_ref =
        if key.namespace.is_empty() { binding.to_string() } else { format!("{}/{binding}", key.namespace) };
    let binding_kind = if key.namespace.is_empty() { "ClusterResourceBinding" } else { "ResourceBinding" };
    let mut body = json!({
        "apiVersion": Work::api_version(&()), "kind": Work::kind(&()),
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {keys::TEMPLATE_KEY: key.hash_label()},
            "annotations": {
                keys::SPEC_HASH: hash,
                keys::BINDING: binding_ref,
                keys::BINDING_KIND: binding_kind,
                keys::TEMPLATE_GENERATION: generation.unwrap_or(0).to_string(),
            },
            // The applier removes it once the member objects are gone, so a
            // work deleted while its member is away is cleaned up later.
            "finalizers": [keys::WORK_FINALIZER],
        },
        "spec": spec,
    });
    if let Some(replicas) = replicas {
        body["metadata"]["annotations"][keys::REPLICAS] = json!(replicas.to_string());
    }
    if let Some(revision) = revision {
        body["metadata"]["annotations"][flotilla_apps_core::rollout::REVISION_ANNOTATION] = json!(revision);
    }
    if let Some(applied) = applied_overrides {
        body["metadata"]["annotations"]
            [flotilla_apps_core::applied_overrides::APPLIED_OVERRIDES_ANNOTATION] = json!(applied);
    }
    let params = PatchParams::apply(MANAGER).force();
    let api = Api::<Work>::namespaced(apps.client.clone(), &namespace);
    match api.patch(&name, &params, &Patch::Apply(&body)).await {
        Ok(_) => Ok(()),
        // The cluster's namespace is gone (the cluster left): nothing to do.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn delete_work(apps: &Apps, work: &Work) -> Result<(), Error> {
    let api = Api::<Work>::namespaced(apps.client.clone(), &work.namespace().unwrap_or_default());
    match api.delete(&work.name_any(), &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The template is gone: remove its works (the appliers remove the member
/// objects, or keep them with preserveResourcesOnDeletion, which the works
/// carry) and its binding.
pub(super) async fn cleanup(apps: &Apps, key: &TemplateKey, spec: Option<&BindingSpec>) -> Result<(), Error> {
    for work in apps.works_of(key).values() {
        if work.metadata.deletion_timestamp.is_none() {
            delete_work(apps, work).await?;
        }
    }
    let name = binding_name(&key.api_version, &key.kind, &key.name);
    let result = if spec.is_none() {
        Ok(())
    } else if key.namespace.is_empty() {
        Api::<ClusterResourceBinding>::all(apps.client.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ())
    } else {
        Api::<ResourceBinding>::namespaced(apps.client.clone(), &key.namespace)
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    super::rollouts::remove(apps, key).await?;
    lock(&apps.outcomes).remove(key);
    lock(&apps.written_status).remove(key);
    lock(&apps.refused).remove(key);
    lock(&apps.binding_refusals).remove(key);
    apps.binder.set_priority(key, None);
    for dep in spec.iter().flat_map(|s| s.dependencies.iter()) {
        apps.binder.add(TemplateKey {
            api_version: dep.api_version.clone(),
            kind: dep.kind.clone(),
            namespace: key.namespace.clone(),
            name: dep.name.clone(),
        });
    }
    Ok(())
}

pub(super) fn template_reference(
    key: &TemplateKey,
    template: &DynamicObject,
) -> flotilla_api::work::ObjectReference {
    flotilla_api::work::ObjectReference {
        api_version: key.api_version.clone(),
        kind: key.kind.clone(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        uid: template.metadata.uid.clone().unwrap_or_default(),
    }
}

/// The lazy-activation record a binding carries.
pub(super) fn binding_record(meta: &kube::api::ObjectMeta) -> Option<String> {
    meta.annotations.as_ref().and_then(|a| a.get(flotilla_apps_core::claim::REVISION_ANNOTATION)).cloned()
}

/// Writes the binding; a write the API server refuses for its content is
/// shown on the policy (`BindingsWritten`) and as a Warning Event on the
/// template, besides the binding-less outcome `Refused`.
pub(super) async fn write_claimed_binding(
    apps: &Apps,
    key: &TemplateKey,
    template: &DynamicObject,
    spec: &BindingSpec,
    record: Option<String>,
    policy: Option<&flotilla_api::work::PolicyReference>,
) -> Result<k8s_openapi::api::core::v1::ObjectReference, Error> {
    match write_binding(apps, key, template, spec, record).await {
        Ok(written) => {
            lock(&apps.binding_refusals).remove(key);
            Ok(written)
        }
        Err(Error::Kube(e)) => {
            if let (Some(message), Some(policy)) = (super::state::refusal(&e), policy) {
                let new = lock(&apps.binding_refusals).insert(key.clone(), (policy.clone(), message.clone()))
                    != Some((policy.clone(), message.clone()));
                if new {
                    super::claims::announce_refusal(apps, key, template, &message).await;
                }
            }
            Err(Error::Kube(e))
        }
        Err(e) => Err(e),
    }
}
