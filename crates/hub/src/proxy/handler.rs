//! One request to the cluster proxy: which route, whose, and to which
//! member (push: dialled directly; pull: through its agent's tunnel).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use flotilla_api::cluster::{ManagedCluster, SyncMode};
use flotilla_fleet_core::cluster_proxy::{self, Identity, Route};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use kube::Api;

use super::response::{json, status, text, Forward, ProxyBody};
use super::{member, tunnels};

/// What every request handler shares.
pub(super) struct State {
    pub(super) hub: kube::Client,
    pub(super) auth: flotilla_fleet_core::cluster_proxy::RequestHeaderAuth,
    pub(super) tunnels: Arc<tunnels::Tunnels>,
}

/// The largest request body forwarded (the API server's own limit).
const MAX_REQUEST_BODY: usize = 3 * 1024 * 1024;

pub(super) async fn handle(
    state: Arc<State>,
    front_proxy: bool,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let route = cluster_proxy::parse_route(&target);
    let response = match route {
        Route::Health => text(StatusCode::OK, "ok"),
        Route::Discovery(level) => json(StatusCode::OK, &cluster_proxy::discovery_body(level)),
        Route::NotFound(message) => status(StatusCode::NOT_FOUND, &message),
        Route::Proxy { .. } | Route::Tunnel { .. } if !front_proxy => status(
            StatusCode::UNAUTHORIZED,
            "this connection's client certificate may not assert identities; ask through the hub's API server",
        ),
        Route::Proxy { cluster, path, query } => {
            let headers = header_pairs(&request);
            match cluster_proxy::identity_from_headers(&state.auth, &headers) {
                Err(message) => status(StatusCode::UNAUTHORIZED, &message),
                Ok(identity) => {
                    let target = if query.is_empty() { path } else { format!("{path}?{query}") };
                    let method = request.method().as_str().to_string();
                    let forward = Forward { cluster, identity, method, target, headers };
                    proxy(&state, forward, request).await
                }
            }
        }
        Route::Tunnel { cluster } => {
            let headers = header_pairs(&request);
            match cluster_proxy::identity_from_headers(&state.auth, &headers) {
                Err(message) => status(StatusCode::UNAUTHORIZED, &message),
                Ok(identity) => open_tunnel(&state, &cluster, &identity, request).await,
            }
        }
    };
    Ok(response)
}

fn header_pairs<B>(request: &Request<B>) -> Vec<(String, String)> {
    request
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

async fn proxy(state: &State, forward: Forward, mut request: Request<Incoming>) -> Response<ProxyBody> {
    let cluster = match find_cluster(state, &forward.cluster).await {
        Ok(cluster) => cluster,
        Err(response) => return response,
    };
    // An upgrade (exec, attach, port-forward) has no body: its streams
    // follow the 101, on the connection taken over here.
    let upgrade = cluster_proxy::is_upgrade(&forward.headers).then(|| hyper::upgrade::on(&mut request));
    let body = match upgrade {
        Some(_) => Bytes::new(),
        None => match Limited::new(request.into_body(), MAX_REQUEST_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return status(StatusCode::BAD_REQUEST, &format!("reading the request body: {e}")),
        },
    };
    tracing::debug!(
        cluster = %forward.cluster, user = %forward.identity.user, method = %forward.method,
        target = %forward.target, "cluster proxy request"
    );
    match cluster.spec.sync_mode {
        SyncMode::Push => member::forward(&state.hub, &cluster, forward, body, upgrade).await,
        SyncMode::Pull => match state.tunnels.get(&forward.cluster) {
            Some(tunnel) => tunnel.forward(forward, body, upgrade).await,
            None => status(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "cluster {} is not connected: its agent has no tunnel open to the hub \
                     (is the agent running and Available?)",
                    forward.cluster
                ),
            ),
        },
    }
}

/// The accepted ManagedCluster, or the response that says why not.
async fn find_cluster(state: &State, name: &str) -> Result<ManagedCluster, Response<ProxyBody>> {
    let clusters: Api<ManagedCluster> = Api::all(state.hub.clone());
    match clusters.get_opt(name).await {
        Ok(Some(cluster)) if cluster.spec.hub_accepts_client => Ok(cluster),
        Ok(Some(_)) => Err(status(
            StatusCode::FORBIDDEN,
            &format!("cluster {name} is not accepted into the fleet (flotilla cluster accept {name})"),
        )),
        Ok(None) => {
            Err(status(StatusCode::NOT_FOUND, &format!("cluster {name} is not a member of the fleet")))
        }
        Err(e) => Err(status(StatusCode::SERVICE_UNAVAILABLE, &format!("reading cluster {name}: {e}"))),
    }
}

async fn open_tunnel(
    state: &State,
    cluster: &str,
    identity: &Identity,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    if let Err(message) = cluster_proxy::tunnel_allowed(identity, cluster) {
        return status(StatusCode::FORBIDDEN, &message);
    }
    let found = match find_cluster(state, cluster).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if found.spec.sync_mode != SyncMode::Pull {
        return status(
            StatusCode::CONFLICT,
            &format!("cluster {cluster} is in push mode: the hub dials it, it opens no tunnel"),
        );
    }
    tunnels::accept(&state.tunnels, cluster, request)
}
