//! Push members through the proxy: the hub dials the member with its push
//! credentials and impersonates the user, streaming the answer back.

use bytes::Bytes;
use flotilla_api::cluster::ManagedCluster;
use flotilla_fleet_core::cluster_proxy;
use http_body_util::BodyExt;
use hyper::{Response, StatusCode};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::response::{full, member_response, status, BoxError, Forward, ProxyBody};

pub(super) async fn forward(
    hub: &kube::Client,
    cluster: &ManagedCluster,
    forward: Forward,
    body: Bytes,
    upgrade: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    let name = &forward.cluster;
    let Some(secret) = cluster.spec.secret_ref.as_ref() else {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("push cluster {name} has no secretRef: the hub has no credentials for it"),
        );
    };
    let client = match crate::push::member_config(hub, &secret.namespace, &secret.name).await {
        Ok(mut config) => {
            config.connect_timeout = Some(std::time::Duration::from_secs(5));
            match kube::Client::try_from(config) {
                Ok(client) => client,
                Err(e) => return unreachable(name, &e),
            }
        }
        Err(e) => return unreachable(name, &e),
    };
    let request = match member_request(&forward, body) {
        Ok(request) => request,
        Err(e) => return status(StatusCode::BAD_REQUEST, &format!("the request cannot be forwarded: {e}")),
    };
    match client.send(request).await {
        Ok(mut response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let headers = header_pairs(response.headers());
            let member = hyper::upgrade::on(&mut response);
            if let Some(user) = upgrade {
                tokio::spawn(splice(name.clone(), user, member));
            }
            member_response(101, &headers, full(Bytes::new()))
        }
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let headers = header_pairs(&parts.headers);
            let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
            member_response(parts.status.as_u16(), &headers, body)
        }
        Err(e) => unreachable(name, &e),
    }
}

/// Joins the user's upgraded connection to the member's until either
/// ends.
async fn splice(cluster: String, user: OnUpgrade, member: OnUpgrade) {
    match tokio::join!(user, member) {
        (Ok(user), Ok(member)) => {
            let copied =
                tokio::io::copy_bidirectional(&mut TokioIo::new(user), &mut TokioIo::new(member)).await;
            if let Err(e) = copied {
                tracing::debug!(cluster, error = %e, "an upgraded stream to a push member ended");
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(cluster, error = %e, "an upgrade to a push member failed")
        }
    }
}

fn unreachable(cluster: &str, error: &dyn std::fmt::Display) -> Response<ProxyBody> {
    status(StatusCode::BAD_GATEWAY, &format!("cannot reach cluster {cluster}: {error}"))
}

fn header_pairs(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers.iter().filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))).collect()
}

/// The member request: the user's method, target and allowed headers, as
/// the user (impersonated).
fn member_request(
    forward: &Forward,
    body: Bytes,
) -> Result<hyper::http::Request<kube::client::Body>, hyper::http::Error> {
    let mut builder =
        hyper::http::Request::builder().method(forward.method.as_str()).uri(forward.target.as_str());
    for (name, value) in cluster_proxy::member_request_headers(&forward.headers, &forward.identity) {
        builder = builder.header(name, value);
    }
    builder.body(kube::client::Body::from(body))
}
