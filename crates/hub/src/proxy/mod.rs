//! Member clusters through the hub (Karmada's cluster proxy): the hub
//! serves the aggregated API `proxy.flotilla.io/v1alpha1`, so that
//!
//! ```text
//! kubectl --server https://HUB/apis/proxy.flotilla.io/v1alpha1/clusters/m1/proxy get pods
//! ```
//!
//! reaches member `m1` as the hub user. The hub's kube-apiserver
//! authenticates and authorizes the user (RBAC on `clusters/proxy` in
//! `proxy.flotilla.io`) and forwards the request here with the user's name
//! and groups in its front-proxy headers, over TLS with its front-proxy
//! client certificate, which this server requires (signed by the
//! request-header CA of `kube-system/extension-apiserver-authentication`,
//! with an allowed common name). The member is asked as that user through
//! impersonation (`flotilla_fleet_core::cluster_proxy` decides the
//! headers), so the member's RBAC applies:
//!
//! - push members ([`member`]): the hub dials the member with its push
//!   credentials;
//! - pull members ([`tunnels`]): the hub never dials them; their agent
//!   keeps a WebSocket open to `clusters/{name}/tunnel` (through the hub's
//!   API server, as its own hub user) and runs the requests the hub sends
//!   through it (`flotilla_agent::tunnel`).
//!
//! The leader serves it (`HubConfig::proxy`, run by `crate::run`) and
//! registers itself: a selector-less Service, its endpoints and the
//! APIService with its CA, again every minute. Requests and tunnels thus
//! meet in one process; when leadership moves, the old leader's tunnels
//! close and the agents reopen them to the new one.

mod handler;
mod member;
mod response;
mod server;
mod tunnels;

pub use server::{serve, ProxyConfig, SERVICE_NAME};
