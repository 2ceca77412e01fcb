//! The EtcdCluster operator, `Kubernetes` runtime (the I/O half of
//! `flotilla_kok_core::etcd_kube`, which documents the layout): the
//! cluster's certificates into its Secret, then the members' Secret, the
//! headless Service and the StatefulSet server-side applied into the
//! EtcdCluster's namespace, each owned by the EtcdCluster, and the status
//! read back from the StatefulSet and its pods.
//!
//! Deleting the EtcdCluster deletes what it owns (the garbage collector);
//! the finalizer stays until the StatefulSet's volume claims, which nothing
//! owns, are deleted too.

use std::collections::BTreeMap;

use flotilla_api::kok::EtcdCluster;
use flotilla_kok_core::etcd as process;
use flotilla_kok_core::etcd_kube as plan;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::etcd::{
    ensure_finalizer, read_pki, set_finalizers, write_status, EtcdOperator, FIELD_MANAGER, STEP,
};
use crate::Error;

fn label_selector(cluster: &str) -> ListParams {
    ListParams::default().labels(&format!("{}={cluster}", plan::CLUSTER_LABEL))
}

/// One reconcile of an EtcdCluster whose `spec.runtime` is `Kubernetes`.
pub(crate) async fn reconcile(
    client: &Client,
    cluster: &EtcdCluster,
    config: &EtcdOperator,
) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        return tear_down(client, cluster).await;
    }
    ensure_finalizer(client, cluster).await?;
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let existing = sets.get_opt(&plan::service_name(&name)).await?;
    let (replicas, note) = plan::replicas(cluster, existing.as_ref());

    // The cluster's Secret: CA, client and member certificates.
    let pki = read_pki(client, cluster).await?;
    let pki = match plan::pki_data(&name, &namespace, &pki, replicas, time::OffsetDateTime::now_utc())
        .map_err(|e| Error::Other(e.to_string()))?
    {
        Some(data) => {
            write_pki(client, cluster, &data).await?;
            tracing::info!(cluster = %name, secret = %process::secret_name(&name), keys = data.len(),
                "etcd certificates written (kubernetes runtime)");
            data
        }
        None => pki,
    };

    let rendered = match plan::render(cluster, &pki, replicas, &config.kube) {
        Ok(rendered) => rendered,
        Err(e) => {
            // Only the user can fix these (a bad size, …): say so.
            tracing::warn!(cluster = %name, error = %e, "etcd cluster not rendered (kubernetes runtime)");
            let mut status = plan::status(cluster, existing.as_ref(), &[], replicas, None, now());
            if let Some(c) = status.conditions.first_mut() {
                c.reason = "CannotRender".into();
                c.message = e.to_string();
            }
            write_status(client, cluster, &status).await?;
            return Ok(Action::requeue(config.resync));
        }
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch(&plan::member_secret_name(&name), &params, &Patch::Apply(&rendered.member_secret))
        .await?;
    Api::<Service>::namespaced(client.clone(), &namespace)
        .patch(&plan::service_name(&name), &params, &Patch::Apply(&rendered.service))
        .await?;
    let applied =
        sets.patch(&plan::service_name(&name), &params, &Patch::Apply(&rendered.statefulset)).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace).list(&label_selector(&name)).await?.items;
    let status = plan::status(cluster, Some(&applied), &pods, replicas, note.as_deref(), now());
    tracing::debug!(cluster = %name, generation = applied.metadata.generation, ready = status.ready_members,
        checksum = %rendered.tls_checksum, "etcd statefulset applied");
    let available = status.conditions.first().is_some_and(|c| c.status == "True");
    write_status(client, cluster, &status).await?;
    Ok(Action::requeue(if available { config.resync } else { STEP }))
}

fn now() -> Time {
    Time(Timestamp::now())
}

async fn write_pki(
    client: &Client,
    cluster: &EtcdCluster,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<(), Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let owner = plan::owner_reference(cluster).map_err(|e| Error::Other(e.to_string()))?;
    let b64 = |v: &Vec<u8>| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v);
    let body = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": process::secret_name(&name), "namespace": namespace, "ownerReferences": [owner]},
        "type": "Opaque",
        "data": data.iter().map(|(k, v)| (k.clone(), b64(v))).collect::<BTreeMap<_, _>>(),
    });
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch(&process::secret_name(&name), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    Ok(())
}

/// Deleting: the owned objects go with the EtcdCluster; the volume claims
/// the StatefulSet made are deleted here, then the finalizer goes.
async fn tear_down(client: &Client, cluster: &EtcdCluster) -> Result<Action, Error> {
    if !cluster.finalizers().iter().any(|f| f == process::FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let left = claims.list(&label_selector(&name)).await?.items;
    for claim in &left {
        if claim.metadata.deletion_timestamp.is_none() {
            claims.delete(&claim.name_any(), &DeleteParams::background()).await?;
            tracing::info!(cluster = %name, claim = %claim.name_any(), "etcd cluster deleted: its member's volume claim deleted");
        }
    }
    let finalizers: Vec<String> =
        cluster.finalizers().iter().filter(|f| *f != process::FINALIZER).cloned().collect();
    set_finalizers(client, cluster, finalizers).await?;
    tracing::info!(cluster = %name, "etcd cluster deleted (kubernetes runtime): its objects go with it");
    Ok(Action::await_change())
}
