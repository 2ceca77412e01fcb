//! The JSON API the pages read: built from the shared watches' stores (no
//! apiserver call per page view, except a cluster's Events), each object
//! shown only if the user may read it (hub mode; `gate`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla_api::cluster::ManagedCluster;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Access, Auth, Caller, Mode, SESSION_COOKIE};
use crate::error::Error;
use crate::gate::{self, Readable};
use crate::state::AppState;
use crate::view::apps::{app_row, applied_overrides};
use crate::view::cluster::{cluster_page, event_views, placement, work_view};
use crate::view::fleet::fleet_row;
use crate::view::hosted::{hosted_view, Inputs};
use crate::view::selector::Selector;

pub type Shared = Arc<AppState>;

#[derive(Deserialize, Default)]
pub struct SelectorQuery {
    #[serde(default)]
    pub selector: String,
}

pub async fn whoami(State(state): State<Shared>, caller: Caller) -> Result<Json<Value>, Error> {
    let mode = match state.auth.mode {
        Mode::Local => "local",
        Mode::Hub => "hub",
    };
    let user = match state.auth.client(&caller) {
        Ok(client) => Auth::who_am_i(&client).await.ok(),
        Err(_) => None,
    };
    Ok(Json(json!({ "mode": mode, "user": user, "via": caller.via() })))
}

#[derive(Deserialize)]
pub struct Login {
    pub token: String,
}

/// Checks the token with the apiserver (`SelfSubjectReview`) and keeps it
/// in an HttpOnly, same-site cookie (`Secure` over TLS): page scripts
/// never see it again.
pub async fn login(State(state): State<Shared>, Json(login): Json<Login>) -> Result<Response, Error> {
    let token = login.token.trim();
    if token.is_empty() || token.contains([';', ',', ' ', '"']) {
        return Err(Error::BadRequest("paste a bearer token".into()));
    }
    let client = state.auth.token_client(token)?;
    let user = Auth::who_am_i(&client).await?;
    let secure = if state.tls { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}");
    let mut response = Json(json!({ "user": user })).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie_value(&cookie)?);
    Ok(response)
}

pub async fn logout() -> Result<Response, Error> {
    let mut response = Json(json!({})).into_response();
    let cookie = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    response.headers_mut().insert(header::SET_COOKIE, cookie_value(&cookie)?);
    Ok(response)
}

fn cookie_value(cookie: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(cookie)
        .map_err(|_| Error::BadRequest("the token is not a valid cookie value".into()))
}

/// The ManagedClusters the caller may read, by name (`get` on each, or
/// `list` on all); a caller who may read none of an existing fleet is
/// refused with the reason.
pub async fn readable_clusters(state: &AppState, caller: &Caller) -> Result<Readable, Error> {
    let clusters = state.watches.clusters.state();
    let readable =
        gate::names(&state.auth, caller, gate::MANAGED_CLUSTERS, clusters.iter().map(|mc| mc.name_any()))
            .await?;
    if readable.is_nothing() && !clusters.is_empty() {
        return Err(Error::Forbidden(
            "you may read no ManagedCluster (neither list managedclusters.cluster.flotilla.io nor get any)"
                .into(),
        ));
    }
    Ok(readable)
}

pub async fn fleet(
    State(state): State<Shared>,
    caller: Caller,
    Query(query): Query<SelectorQuery>,
) -> Result<Json<Value>, Error> {
    let selector = Selector::parse(&query.selector).map_err(|e| Error::BadRequest(e.to_string()))?;
    let readable = readable_clusters(&state, &caller).await?;
    let now = Timestamp::now();
    let mut rows: Vec<_> = state
        .watches
        .clusters
        .state()
        .iter()
        .filter(|mc| readable.contains(&mc.name_any()) && selector.matches(mc.labels()))
        .map(|mc| fleet_row(mc, now))
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({ "rows": rows })))
}

fn namespaces_of<K: ResourceExt>(objects: &[Arc<K>]) -> impl Iterator<Item = String> + '_ {
    objects.iter().map(|o| o.namespace().unwrap_or_default())
}

pub async fn cluster(
    State(state): State<Shared>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, Error> {
    let auth = &state.auth;
    if !gate::names(auth, &caller, gate::MANAGED_CLUSTERS, [name.clone()]).await?.contains(&name) {
        return Err(Error::Forbidden(format!("you may not get managedclusters.cluster.flotilla.io {name}")));
    }
    let watches = &state.watches;
    let cluster = watches
        .clusters
        .state()
        .into_iter()
        .find(|mc| mc.name_any() == name)
        .ok_or_else(|| Error::NotFound(format!("cluster {name}")))?;
    let now = Timestamp::now();
    let namespace = ManagedCluster::hub_namespace(&name);
    // Placements and Works are shown only where the user may read them.
    let mut placed = Vec::new();
    let bindings = watches.bindings.state();
    let readable = gate::namespaces(auth, &caller, gate::BINDINGS, namespaces_of(&bindings)).await?;
    for b in bindings.iter().filter(|b| readable.contains(&b.namespace().unwrap_or_default())) {
        let binding = format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any());
        placed.extend(placement(&binding, &b.spec.spec, b.status.as_ref(), &name));
    }
    let cluster_bindings = watches.cluster_bindings.state();
    let readable =
        gate::names(auth, &caller, gate::CLUSTER_BINDINGS, cluster_bindings.iter().map(|b| b.name_any()))
            .await?;
    for b in cluster_bindings.iter().filter(|b| readable.contains(&b.name_any())) {
        placed.extend(placement(&b.name_any(), &b.spec.spec, b.status.as_ref(), &name));
    }
    let mut works = Vec::new();
    if gate::namespaces(auth, &caller, gate::WORKS, [namespace.clone()]).await?.contains(&namespace) {
        works = watches
            .works
            .state()
            .iter()
            .filter(|w| w.namespace().as_deref() == Some(namespace.as_str()))
            .map(|w| work_view(w))
            .collect();
    }
    // Events: the user's own read (one list per page view, not a watch).
    let client = auth.client(&caller)?;
    let mut events: Vec<Event> = Vec::new();
    let about_cluster = ListParams::default()
        .fields(&format!("involvedObject.kind=ManagedCluster,involvedObject.name={name}"))
        .limit(200);
    if let Ok(list) = Api::<Event>::all(client.clone()).list(&about_cluster).await {
        events.extend(list.items);
    }
    if let Ok(list) =
        Api::<Event>::namespaced(client, &namespace).list(&ListParams::default().limit(200)).await
    {
        events.extend(list.items);
    }
    let page = cluster_page(&cluster, placed, works, event_views(&events, now), now);
    Ok(Json(serde_json::to_value(page).map_err(Error::Json)?))
}

pub async fn apps(State(state): State<Shared>, caller: Caller) -> Result<Json<Value>, Error> {
    let (auth, watches) = (&state.auth, &state.watches);
    let bindings = watches.bindings.state();
    let readable = gate::namespaces(auth, &caller, gate::BINDINGS, namespaces_of(&bindings)).await?;
    let cluster_bindings = watches.cluster_bindings.state();
    let readable_cluster_bindings =
        gate::names(auth, &caller, gate::CLUSTER_BINDINGS, cluster_bindings.iter().map(|b| b.name_any()))
            .await?;
    let rollouts = watches.rollouts.state();
    let readable_rollouts = gate::namespaces(auth, &caller, gate::ROLLOUTS, namespaces_of(&rollouts)).await?;
    let rollouts: Vec<_> = rollouts
        .into_iter()
        .filter(|r| readable_rollouts.contains(&r.namespace().unwrap_or_default()))
        .collect();
    let overrides = applied_overrides(watches.works.state().iter().map(|w| w.as_ref()));
    let mut rows: Vec<_> = bindings
        .iter()
        .filter(|b| readable.contains(&b.namespace().unwrap_or_default()))
        .map(|b| {
            let ns = b.namespace().unwrap_or_default();
            app_row(&ns, &b.name_any(), &b.spec.spec, b.status.as_ref(), &rollouts, &overrides)
        })
        .chain(
            cluster_bindings
                .iter()
                .filter(|b| readable_cluster_bindings.contains(&b.name_any()))
                .map(|b| app_row("", &b.name_any(), &b.spec.spec, b.status.as_ref(), &rollouts, &overrides)),
        )
        .collect();
    rows.sort_by(|a, b| a.binding.cmp(&b.binding));
    Ok(Json(json!({ "rows": rows })))
}

pub async fn hosted(State(state): State<Shared>, caller: Caller) -> Result<Json<Value>, Error> {
    let (auth, watches) = (&state.auth, &state.watches);
    let hosted = watches.hosted.state();
    let readable = gate::namespaces(auth, &caller, gate::HOSTED_CLUSTERS, namespaces_of(&hosted)).await?;
    let etcds = watches.etcds.state();
    let readable_etcds = gate::namespaces(auth, &caller, gate::ETCD_CLUSTERS, namespaces_of(&etcds)).await?;
    let etcds: Vec<_> =
        etcds.into_iter().filter(|e| readable_etcds.contains(&e.namespace().unwrap_or_default())).collect();
    let backups = watches.backups.state();
    let readable_backups =
        gate::namespaces(auth, &caller, gate::ETCD_BACKUPS, namespaces_of(&backups)).await?;
    let backups: Vec<_> = backups
        .into_iter()
        .filter(|b| readable_backups.contains(&b.namespace().unwrap_or_default()))
        .collect();
    let machines = watches.machines.state();
    let readable_machines =
        gate::names(auth, &caller, gate::MACHINES, machines.iter().map(|m| m.name_any())).await?;
    let machines: Vec<_> =
        machines.into_iter().filter(|m| readable_machines.contains(&m.name_any())).collect();
    let inputs = Inputs { etcds: &etcds, backups: &backups, machines: &machines };
    let now = Timestamp::now();
    let mut views: Vec<_> = hosted
        .iter()
        .filter(|hc| readable.contains(&hc.namespace().unwrap_or_default()))
        .map(|hc| hosted_view(hc, &inputs, now))
        .collect();
    views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(Json(json!({ "clusters": views })))
}

#[derive(Deserialize)]
pub struct CanQuery {
    pub verb: String,
    #[serde(default)]
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// The user's access review, so the page enables only the actions the
/// user may take.
pub async fn can(
    State(state): State<Shared>,
    caller: Caller,
    Query(q): Query<CanQuery>,
) -> Result<Json<Value>, Error> {
    let access =
        Access { verb: q.verb, group: q.group, resource: q.resource, namespace: q.namespace, name: q.name };
    let (allowed, reason) = state.auth.allowed(&caller, &access).await?;
    Ok(Json(json!({ "allowed": allowed, "reason": reason })))
}
