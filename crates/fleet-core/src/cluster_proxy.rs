//! Member clusters through the hub (as Karmada's cluster proxy): which
//! request the hub's aggregated API received, who sent it, and what the
//! member is asked on that user's behalf.
//!
//! The hub's kube-apiserver authenticates the user and forwards
//! `/apis/proxy.flotilla.io/v1alpha1/clusters/{name}/proxy/{path}` to the
//! hub's proxy with the user's identity in the front-proxy headers
//! (`X-Remote-User`, `X-Remote-Group`), over a connection authenticated by
//! its front-proxy client certificate. The proxy (or, for a pull member,
//! the member's agent) sends the request to the member as the same user
//! through impersonation (`Impersonate-User`, `Impersonate-Group`), so the
//! member's RBAC decides, never the forwarding credential's own rights.
//! Pure: no I/O.

use std::collections::BTreeMap;

use crate::membership;

/// The aggregated API's group and version.
pub const GROUP: &str = "proxy.flotilla.io";
pub const VERSION: &str = "v1alpha1";
/// The APIService registering it (`<version>.<group>`).
pub const API_SERVICE: &str = "v1alpha1.proxy.flotilla.io";
/// The subresource users are granted on `clusters` (`get`, `create`, ...
/// with the HTTP method's verb), e.g. `resources: ["clusters/proxy"]`.
pub const PROXY_SUBRESOURCE: &str = "proxy";
/// The subresource an agent opens its tunnel on (`get`).
pub const TUNNEL_SUBRESOURCE: &str = "tunnel";

/// The API path prefix of every route.
pub fn api_prefix() -> String {
    format!("/apis/{GROUP}/{VERSION}")
}

/// The path that reaches `rest` (e.g. `/api/v1/pods`) in `cluster`.
pub fn proxy_path(cluster: &str, rest: &str) -> String {
    format!("{}/clusters/{cluster}/{PROXY_SUBRESOURCE}{rest}", api_prefix())
}

/// The path an agent opens its tunnel on.
pub fn tunnel_path(cluster: &str) -> String {
    format!("{}/clusters/{cluster}/{TUNNEL_SUBRESOURCE}", api_prefix())
}

/// What a request's path asks the proxy for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/apis`, `/apis/proxy.flotilla.io` or `.../v1alpha1`: discovery.
    Discovery(DiscoveryLevel),
    /// `/healthz`, `/readyz`, `/livez`.
    Health,
    /// A request for the member `cluster`: `path` (starting with `/`) and
    /// `query` (without `?`, possibly empty) as the member is asked.
    Proxy { cluster: String, path: String, query: String },
    /// An agent opening its tunnel.
    Tunnel { cluster: String },
    /// Nothing here; the message says why.
    NotFound(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryLevel {
    Groups,
    Group,
    Resources,
}

/// Parses a request target (path and query) the proxy received.
pub fn parse_route(target: &str) -> Route {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path.trim_end_matches('/') {
        "/healthz" | "/readyz" | "/livez" => return Route::Health,
        "/apis" => return Route::Discovery(DiscoveryLevel::Groups),
        p if p == format!("/apis/{GROUP}") => return Route::Discovery(DiscoveryLevel::Group),
        p if p == api_prefix() => return Route::Discovery(DiscoveryLevel::Resources),
        _ => {}
    }
    let Some(rest) = path.strip_prefix(&format!("{}/clusters/", api_prefix())) else {
        return Route::NotFound(format!("{path} is not served here"));
    };
    let (cluster, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if let Err(e) = membership::validate_cluster_name(cluster) {
        return Route::NotFound(e);
    }
    let (subresource, member_path) = rest.split_once('/').map_or((rest, ""), |(s, p)| (s, p));
    match subresource {
        TUNNEL_SUBRESOURCE if member_path.is_empty() => Route::Tunnel { cluster: cluster.to_string() },
        PROXY_SUBRESOURCE => {
            let member_path = format!("/{member_path}");
            // The member's base URL may carry a path of its own: no segment
            // may climb out of it.
            if member_path.split('/').any(|s| s == ".." || s == ".") || member_path.contains("//") {
                return Route::NotFound(format!(
                    "{member_path}: dot segments and empty segments are refused"
                ));
            }
            Route::Proxy { cluster: cluster.to_string(), path: member_path, query: query.to_string() }
        }
        "" => Route::NotFound(format!(
            "clusters/{cluster}: ask clusters/{cluster}/{PROXY_SUBRESOURCE}/<member path>, e.g. \
             {}",
            proxy_path(cluster, "/api/v1/namespaces/default/pods")
        )),
        other => Route::NotFound(format!("clusters/{cluster}/{other} is not served here")),
    }
}

/// How the hub's API server passes identities (its
/// `kube-system/extension-apiserver-authentication` ConfigMap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeaderAuth {
    /// The CA that signs the front-proxy client certificate (PEM).
    pub client_ca_pem: String,
    /// Common names the client certificate may have (any, when empty).
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
}

/// Reads the request-header settings from the ConfigMap's data; an error
/// says what is missing (an API server without the aggregation layer).
pub fn request_header_auth(data: &BTreeMap<String, String>) -> Result<RequestHeaderAuth, String> {
    let client_ca_pem = data.get("requestheader-client-ca-file").filter(|s| !s.trim().is_empty()).ok_or(
        "the hub's API server has no front-proxy CA (requestheader-client-ca-file in \
         kube-system/extension-apiserver-authentication): start it with the aggregation layer \
         (--requestheader-client-ca-file, --proxy-client-cert-file)",
    )?;
    let list = |key: &str| -> Result<Vec<String>, String> {
        match data.get(key) {
            None => Ok(Vec::new()),
            Some(text) if text.trim().is_empty() => Ok(Vec::new()),
            Some(text) => serde_json::from_str(text).map_err(|e| format!("{key}: {e}")),
        }
    };
    let username_headers = list("requestheader-username-headers")?;
    if username_headers.is_empty() {
        return Err("requestheader-username-headers is empty: the API server passes no user name".into());
    }
    Ok(RequestHeaderAuth {
        client_ca_pem: client_ca_pem.clone(),
        allowed_names: list("requestheader-allowed-names")?,
        username_headers,
        group_headers: list("requestheader-group-headers")?,
    })
}

/// Whether a client certificate (already verified against the front-proxy
/// CA) with common name `cn` may assert identities.
pub fn front_proxy_allowed(auth: &RequestHeaderAuth, cn: Option<&str>) -> bool {
    auth.allowed_names.is_empty() || cn.is_some_and(|cn| auth.allowed_names.iter().any(|a| a == cn))
}

/// A user as the hub's API server authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

/// The user the front-proxy headers name (first username header set wins,
/// as the API server reads them; groups from every group header).
pub fn identity_from_headers(
    auth: &RequestHeaderAuth,
    headers: &[(String, String)],
) -> Result<Identity, String> {
    let values = |name: &str| -> Vec<String> {
        headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    };
    let user = auth
        .username_headers
        .iter()
        .find_map(|h| values(h).into_iter().find(|v| !v.is_empty()))
        .ok_or("the request names no user (no front-proxy username header)")?;
    let groups = auth.group_headers.iter().flat_map(|h| values(h)).collect();
    Ok(Identity { user, groups })
}

/// Groups the member adds by itself to an impersonated user (asking to
/// impersonate them would only need more rights).
const IMPLIED_GROUPS: &[&str] = &["system:authenticated"];

/// Request headers passed from the user's request to the member as is;
/// everything else (credentials, impersonation, front-proxy headers, hop
/// headers) is dropped.
const FORWARDED_REQUEST_HEADERS: &[&str] =
    &["accept", "content-type", "user-agent", "accept-encoding", "x-stream-protocol-version"];

/// What an upgrade request (`exec`, `attach`, `port-forward`: WebSocket or
/// SPDY) carries besides: the upgrade itself, end to end.
const UPGRADE_REQUEST_HEADERS: &[&str] =
    &["upgrade", "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol"];

/// Whether a request asks to upgrade its connection (`Connection: Upgrade`
/// and an `Upgrade` protocol).
pub fn is_upgrade(headers: &[(String, String)]) -> bool {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let connection_upgrade = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("connection") && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    connection_upgrade && has("upgrade")
}

/// The headers of the member request for a user's request: the forwarded
/// ones (and an upgrade's), then impersonation of `identity` (never
/// anything the user sent that claims an identity).
pub fn member_request_headers(incoming: &[(String, String)], identity: &Identity) -> Vec<(String, String)> {
    let upgrade = is_upgrade(incoming);
    let forwarded = |name: &str| {
        FORWARDED_REQUEST_HEADERS.iter().any(|f| name.eq_ignore_ascii_case(f))
            || (upgrade && UPGRADE_REQUEST_HEADERS.iter().any(|f| name.eq_ignore_ascii_case(f)))
    };
    let mut headers: Vec<(String, String)> = incoming
        .iter()
        .filter(|(k, _)| forwarded(k))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    if upgrade {
        headers.push(("connection".into(), "Upgrade".into()));
    }
    headers.push(("impersonate-user".into(), identity.user.clone()));
    for group in &identity.groups {
        if !IMPLIED_GROUPS.contains(&group.as_str()) {
            headers.push(("impersonate-group".into(), group.clone()));
        }
    }
    headers
}

/// Response headers passed back to the user.
const FORWARDED_RESPONSE_HEADERS: &[&str] =
    &["content-type", "content-encoding", "cache-control", "audit-id", "warning", "x-content-type-options"];

/// What a `101 Switching Protocols` answer carries besides.
const UPGRADE_RESPONSE_HEADERS: &[&str] =
    &["upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol", "x-stream-protocol-version"];

/// The member response's headers the user sees (for a 101, the upgrade's
/// too: the member answers the user's handshake).
pub fn user_response_headers(status: u16, incoming: &[(String, String)]) -> Vec<(String, String)> {
    let forwarded = |name: &str| {
        FORWARDED_RESPONSE_HEADERS.iter().any(|f| name.eq_ignore_ascii_case(f))
            || (status == 101 && UPGRADE_RESPONSE_HEADERS.iter().any(|f| name.eq_ignore_ascii_case(f)))
    };
    incoming.iter().filter(|(k, _)| forwarded(k)).map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect()
}

/// Whether `identity` may open cluster `cluster`'s tunnel: only that
/// cluster's agent may (its hub user, which its certificate names).
pub fn tunnel_allowed(identity: &Identity, cluster: &str) -> Result<(), String> {
    match membership::cluster_of_agent_user(&identity.user) {
        Some(own) if own == cluster => Ok(()),
        Some(own) => Err(format!("the agent of cluster {own} may not open cluster {cluster}'s tunnel")),
        None => Err(format!(
            "{} is not a cluster agent; only cluster {cluster}'s agent opens its tunnel",
            identity.user
        )),
    }
}

/// The common name of a DER certificate's subject.
pub fn certificate_common_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// A Kubernetes `Status` body for an error the proxy answers itself, so
/// that kubectl shows `message`.
pub fn status_body(code: u16, reason: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

/// The discovery documents (legacy, non-aggregated form).
pub fn discovery_body(level: DiscoveryLevel) -> serde_json::Value {
    use serde_json::json;
    let version = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    let group = json!({"name": GROUP, "versions": [version], "preferredVersion": version});
    match level {
        DiscoveryLevel::Groups => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}),
        DiscoveryLevel::Group => {
            let mut group = group;
            group["kind"] = json!("APIGroup");
            group["apiVersion"] = json!("v1");
            group
        }
        DiscoveryLevel::Resources => json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
            "resources": [
                {"name": format!("clusters/{PROXY_SUBRESOURCE}"), "singularName": "", "namespaced": false,
                 "kind": "ClusterProxyOptions", "verbs": ["get", "create", "update", "patch", "delete"]},
                {"name": format!("clusters/{TUNNEL_SUBRESOURCE}"), "singularName": "", "namespaced": false,
                 "kind": "ClusterTunnel", "verbs": ["get"]},
            ],
        }),
    }
}

#[cfg(test)]
#[path = "cluster_proxy_tests.rs"]
mod tests;
