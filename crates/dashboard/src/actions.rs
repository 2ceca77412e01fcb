//! Actions, each made with the user's own credentials: the apiserver's
//! authorisation decides, and its refusal reaches the page as a 403 with
//! its message. The page asks for confirmation and enables an action only
//! when the user's access review allows it (`/api/can`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use flotilla_api::cluster::ManagedCluster;
use flotilla_api::kok::{EtcdBackup, HostedCluster, ROTATE_CERTS_ANNOTATION};
use flotilla_api::rollout::{control, Rollout};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::Shared;
use crate::auth::Caller;
use crate::error::Error;

/// The taint a cordon adds: new workloads are not scheduled to the cluster.
pub const CORDON_TAINT: &str = "flotilla.io/cordoned";
/// The dashboard's field manager: uncordon removes only what it applied.
pub const FIELD_MANAGER: &str = "flotilla-dashboard";
/// Header every action request carries: a cross-site form cannot set it.
pub const ACTION_HEADER: &str = "x-flotilla-action";

fn client(state: &Shared, caller: &Caller, headers: &HeaderMap) -> Result<kube::Client, Error> {
    if !headers.contains_key(ACTION_HEADER) {
        return Err(Error::BadRequest(format!("actions need the {ACTION_HEADER} header")));
    }
    state.auth.client(caller)
}

#[derive(Deserialize)]
pub struct Cordon {
    pub cluster: String,
    pub cordon: bool,
}

/// Cordon: applies the `flotilla.io/cordoned:NoSchedule` taint as the
/// dashboard's field manager; uncordon applies none, which removes the
/// taint this manager owned and no other.
pub async fn cordon(
    State(state): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Json(req): Json<Cordon>,
) -> Result<Json<Value>, Error> {
    let api: Api<ManagedCluster> = Api::all(client(&state, &caller, &headers)?);
    let taints = match req.cordon {
        true => json!([{ "key": CORDON_TAINT, "effect": "NoSchedule" }]),
        false => json!([]),
    };
    let patch = json!({
        "apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
        "metadata": { "name": req.cluster }, "spec": { "taints": taints },
    });
    api.patch(&req.cluster, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&patch))
        .await
        .map_err(Error::from_kube)?;
    tracing::info!(cluster = %req.cluster, cordon = req.cordon, "dashboard cordon");
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
pub struct Backup {
    pub namespace: String,
    pub cluster: String,
    pub machine: String,
    pub path: String,
}

/// Triggers an on-demand etcd backup: an `EtcdBackup` the etcd operator
/// takes like any other.
pub async fn etcd_backup(
    State(state): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Json(req): Json<Backup>,
) -> Result<Json<Value>, Error> {
    let api: Api<EtcdBackup> = Api::namespaced(client(&state, &caller, &headers)?, &req.namespace);
    let backup: EtcdBackup = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdBackup",
        "metadata": { "generateName": format!("{}-dashboard-", req.cluster), "namespace": req.namespace },
        "spec": { "cluster": req.cluster, "destination": { "machine": req.machine, "path": req.path } },
    }))
    .map_err(Error::Json)?;
    let created = api.create(&PostParams::default(), &backup).await.map_err(Error::from_kube)?;
    Ok(Json(json!({ "ok": true, "name": created.metadata.name })))
}

#[derive(Deserialize)]
pub struct Rotate {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub ca: bool,
}

/// Rotates a hosted cluster's certificates by a new value of its
/// rotate-certs annotation (as `flotilla cluster rotate-certs` does).
pub async fn rotate_certs(
    State(state): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Json(req): Json<Rotate>,
) -> Result<Json<Value>, Error> {
    let api: Api<HostedCluster> = Api::namespaced(client(&state, &caller, &headers)?, &req.namespace);
    let value =
        format!("{}/dashboard-{}", if req.ca { "ca" } else { "leaves" }, Timestamp::now().as_second());
    let patch = json!({ "metadata": { "annotations": { ROTATE_CERTS_ANNOTATION: value } } });
    api.patch(&req.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(Error::from_kube)?;
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
pub struct Pause {
    pub namespace: String,
    pub name: String,
    pub paused: bool,
}

/// Pauses (no next wave starts) or resumes a Rollout by its annotation.
pub async fn pause_rollout(
    State(state): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Json(req): Json<Pause>,
) -> Result<Json<Value>, Error> {
    let api: Api<Rollout> = Api::namespaced(client(&state, &caller, &headers)?, &req.namespace);
    let value = if req.paused { json!("true") } else { Value::Null };
    let patch = json!({ "metadata": { "annotations": { control::PAUSED: value } } });
    api.patch(&req.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(Error::from_kube)?;
    Ok(Json(json!({ "ok": true })))
}
