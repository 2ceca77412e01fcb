//! The JSON API the pages read: built from the shared watches' stores (no
//! apiserver call per page view, except a cluster's Events), each read
//! gated by the user's rights in hub mode.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla_api::cluster::ManagedCluster;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Access, Auth, Mode, SESSION_COOKIE};
use crate::error::Error;
use crate::state::{request_token, AppState};
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

pub async fn whoami(State(state): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, Error> {
    let mode = match state.auth.mode {
        Mode::Local => "local",
        Mode::Hub => "hub",
    };
    let token = request_token(&headers);
    let user = match state.auth.client(token.as_deref()) {
        Ok(client) => Auth::who_am_i(&client).await.ok(),
        Err(_) => None,
    };
    Ok(Json(json!({ "mode": mode, "user": user })))
}

#[derive(Deserialize)]
pub struct Login {
    pub token: String,
}

/// Checks the token with the apiserver (`SelfSubjectReview`) and keeps it
/// in an HttpOnly, same-site cookie: page scripts never see it again.
pub async fn login(State(state): State<Shared>, Json(login): Json<Login>) -> Result<Response, Error> {
    let token = login.token.trim();
    if token.is_empty() || token.contains([';', ',', ' ', '"']) {
        return Err(Error::BadRequest("paste a bearer token".into()));
    }
    let client = state.auth.token_client(token)?;
    let user = Auth::who_am_i(&client).await?;
    let cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
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

pub async fn fleet(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<SelectorQuery>,
) -> Result<Json<Value>, Error> {
    let token = request_token(&headers);
    state.auth.require_read(token.as_deref(), "cluster.flotilla.io", "managedclusters").await?;
    let selector = Selector::parse(&query.selector).map_err(|e| Error::BadRequest(e.to_string()))?;
    let now = Timestamp::now();
    let mut rows: Vec<_> = state
        .watches
        .clusters
        .state()
        .iter()
        .filter(|mc| selector.matches(mc.labels()))
        .map(|mc| fleet_row(mc, now))
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({ "rows": rows })))
}

pub async fn cluster(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, Error> {
    let token = request_token(&headers);
    let auth = &state.auth;
    auth.require_read(token.as_deref(), "cluster.flotilla.io", "managedclusters").await?;
    let watches = &state.watches;
    let cluster = watches
        .clusters
        .state()
        .into_iter()
        .find(|mc| mc.name_any() == name)
        .ok_or_else(|| Error::NotFound(format!("cluster {name}")))?;
    let now = Timestamp::now();
    let namespace = ManagedCluster::hub_namespace(&name);
    // Placements and Works are shown only to users who may read them.
    let mut placed = Vec::new();
    let mut works = Vec::new();
    if auth.require_read(token.as_deref(), "work.flotilla.io", "resourcebindings").await.is_ok() {
        for b in watches.bindings.state() {
            let binding = format!("{}/{}", b.namespace().unwrap_or_default(), b.name_any());
            placed.extend(placement(&binding, &b.spec.spec, b.status.as_ref(), &name));
        }
        for b in watches.cluster_bindings.state() {
            placed.extend(placement(&b.name_any(), &b.spec.spec, b.status.as_ref(), &name));
        }
        works = watches
            .works
            .state()
            .iter()
            .filter(|w| w.namespace().as_deref() == Some(namespace.as_str()))
            .map(|w| work_view(w))
            .collect();
    }
    // Events: the user's own read (one list per page view, not a watch).
    let client = auth.client(token.as_deref())?;
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

pub async fn apps(State(state): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, Error> {
    let token = request_token(&headers);
    state.auth.require_read(token.as_deref(), "work.flotilla.io", "resourcebindings").await?;
    let watches = &state.watches;
    let rollouts = watches.rollouts.state();
    let overrides = applied_overrides(watches.works.state().iter().map(|w| w.as_ref()));
    let mut rows: Vec<_> =
        watches
            .bindings
            .state()
            .iter()
            .map(|b| {
                let ns = b.namespace().unwrap_or_default();
                app_row(&ns, &b.name_any(), &b.spec.spec, b.status.as_ref(), &rollouts, &overrides)
            })
            .chain(
                watches.cluster_bindings.state().iter().map(|b| {
                    app_row("", &b.name_any(), &b.spec.spec, b.status.as_ref(), &rollouts, &overrides)
                }),
            )
            .collect();
    rows.sort_by(|a, b| a.binding.cmp(&b.binding));
    Ok(Json(json!({ "rows": rows })))
}

pub async fn hosted(State(state): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, Error> {
    let token = request_token(&headers);
    state.auth.require_read(token.as_deref(), "kok.flotilla.io", "hostedclusters").await?;
    let watches = &state.watches;
    let (etcds, backups, machines) =
        (watches.etcds.state(), watches.backups.state(), watches.machines.state());
    let inputs = Inputs { etcds: &etcds, backups: &backups, machines: &machines };
    let now = Timestamp::now();
    let mut views: Vec<_> = watches.hosted.state().iter().map(|hc| hosted_view(hc, &inputs, now)).collect();
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
    headers: HeaderMap,
    Query(q): Query<CanQuery>,
) -> Result<Json<Value>, Error> {
    let token = request_token(&headers);
    let access =
        Access { verb: q.verb, group: q.group, resource: q.resource, namespace: q.namespace, name: q.name };
    let (allowed, reason) = state.auth.allowed(token.as_deref(), &access).await?;
    Ok(Json(json!({ "allowed": allowed, "reason": reason })))
}
