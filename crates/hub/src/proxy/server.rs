//! The cluster proxy's server: TLS that admits only the hub API server's
//! front-proxy client, the connections, and the registration (Service,
//! endpoints, APIService).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::pki::{CertAndKey, CertificateAuthority, LeafSpec};
use flotilla_fleet_core::cluster_proxy::{self, RequestHeaderAuth};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::handler::{self, State};
use super::tunnels;
use crate::error::Error;
use crate::names::{FIELD_MANAGER, SYSTEM_NAMESPACE};

/// The Service the APIService points at.
pub const SERVICE_NAME: &str = "flotilla-cluster-proxy";
const REGISTER_INTERVAL: Duration = Duration::from_secs(60);
const REGISTER_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address to listen on, e.g. `0.0.0.0:9444`.
    pub listen: SocketAddr,
    /// The address the hub's API server reaches this server at (the
    /// APIService's endpoint; not loopback, which endpoints may not be).
    pub advertise: IpAddr,
}

/// Serves the cluster proxy until the process ends. Fails at once if the
/// hub's API server has no aggregation layer or the port is taken.
pub async fn serve(hub: Client, config: ProxyConfig) -> Result<(), Error> {
    let auth = request_header_auth(&hub).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Other(format!("cluster proxy cannot listen on {}: {e}", config.listen)))?;
    let port = listener.local_addr().map_err(|e| Error::Other(e.to_string()))?.port();
    let ca = CertificateAuthority::generate("flotilla-cluster-proxy-ca").map_err(pki_error)?;
    let names = [format!("{SERVICE_NAME}.{SYSTEM_NAMESPACE}.svc"), config.advertise.to_string()];
    let serving = ca.issue(&LeafSpec::server(SERVICE_NAME, &names)).map_err(pki_error)?;
    let acceptor = tls_acceptor(&serving, &auth)?;
    let state = Arc::new(State { hub: hub.clone(), auth, tunnels: Arc::default() });
    let _close_tunnels = CloseTunnels(state.tunnels.clone());
    tracing::info!(listen = %config.listen, advertise = %config.advertise, port, "cluster proxy serving");
    let serving = accept_loop(listener, acceptor, state);
    tokio::pin!(serving);
    loop {
        let next = tokio::select! {
            () = &mut serving => return Ok(()),
            registered = register(&hub, config.advertise, port, &ca.pem.cert_pem) => match registered {
                Ok(()) => REGISTER_INTERVAL,
                Err(e) => {
                    tracing::warn!(error = %e, "registering the cluster proxy APIService failed; retrying");
                    REGISTER_RETRY
                }
            },
        };
        tokio::select! {
            () = &mut serving => return Ok(()),
            () = tokio::time::sleep(next) => {}
        }
    }
}

/// Closes the tunnels when [`serve`] stops (its future dropped, as a
/// leader's that steps down is).
struct CloseTunnels(Arc<tunnels::Tunnels>);

impl Drop for CloseTunnels {
    fn drop(&mut self) {
        self.0.close_all();
    }
}

fn pki_error(e: flotilla_core::pki::PkiError) -> Error {
    Error::Other(format!("cluster proxy certificate: {e}"))
}

async fn request_header_auth(hub: &Client) -> Result<RequestHeaderAuth, Error> {
    let configmaps: Api<ConfigMap> = Api::namespaced(hub.clone(), "kube-system");
    let found = configmaps.get("extension-apiserver-authentication").await?;
    cluster_proxy::request_header_auth(&found.data.unwrap_or_default())
        .map_err(|e| Error::Other(format!("cluster proxy: {e}")))
}

/// TLS that admits only clients with a certificate of the request-header
/// CA (the hub API server's front-proxy client); the common name is
/// checked per connection.
fn tls_acceptor(serving: &CertAndKey, auth: &RequestHeaderAuth) -> Result<TlsAcceptor, Error> {
    let tls_error = |e: &dyn std::fmt::Display| Error::Other(format!("cluster proxy TLS: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(&e))?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).map_err(|e| tls_error(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(auth.client_ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls_error(&e))?).map_err(|e| tls_error(&e))?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| tls_error(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_error(&e))?;
    // HTTP/1.1 only: tunnels and user upgrades are HTTP/1.1 upgrades.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
    flotilla_tls_serve::serve(listener, acceptor, "cluster proxy", std::future::pending(), move |tls, peer| {
        let state = state.clone();
        async move {
            let cn = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| cluster_proxy::certificate_common_name(cert));
            let front_proxy = cluster_proxy::front_proxy_allowed(&state.auth, cn.as_deref());
            if !front_proxy {
                tracing::warn!(%peer, cn = cn.as_deref().unwrap_or(""), "a client certificate not allowed to assert identities");
            }
            let service = hyper::service::service_fn(move |request| {
                handler::handle(state.clone(), front_proxy, request)
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "cluster proxy connection ended with an error");
            }
        }
    })
    .await
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// The Service, its endpoints (this server) and the APIService.
async fn register(hub: &Client, address: IpAddr, port: u16, ca_pem: &str) -> Result<(), Error> {
    use base64::Engine as _;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let address_type = if address.is_ipv4() { "IPv4" } else { "IPv6" };
    let objects = [
        (
            resource("", "v1", "Namespace", "namespaces"),
            None,
            SYSTEM_NAMESPACE,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}}),
        ),
        (
            resource("", "v1", "Service", "services"),
            Some(SYSTEM_NAMESPACE),
            SERVICE_NAME,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": SERVICE_NAME, "namespace": SYSTEM_NAMESPACE},
                "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}),
        ),
        (
            resource("", "v1", "Endpoints", "endpoints"),
            Some(SYSTEM_NAMESPACE),
            SERVICE_NAME,
            json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": SERVICE_NAME, "namespace": SYSTEM_NAMESPACE},
                "subsets": [{"addresses": [{"ip": address.to_string()}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}),
        ),
        (
            resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
            Some(SYSTEM_NAMESPACE),
            SERVICE_NAME,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": SERVICE_NAME, "namespace": SYSTEM_NAMESPACE,
                    "labels": {"kubernetes.io/service-name": SERVICE_NAME,
                        "endpointslice.kubernetes.io/managed-by": FIELD_MANAGER}},
                "addressType": address_type,
                "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}),
        ),
        (
            resource("apiregistration.k8s.io", "v1", "APIService", "apiservices"),
            None,
            cluster_proxy::API_SERVICE,
            json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": cluster_proxy::API_SERVICE},
                "spec": {"group": cluster_proxy::GROUP, "version": cluster_proxy::VERSION,
                    "service": {"namespace": SYSTEM_NAMESPACE, "name": SERVICE_NAME, "port": 443},
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
                    "groupPriorityMinimum": 1000, "versionPriority": 15}}),
        ),
    ];
    for (resource, namespace, name, body) in objects {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(hub.clone(), ns, &resource),
            None => Api::all_with(hub.clone(), &resource),
        };
        api.patch(name, &params, &Patch::Apply(&body)).await?;
    }
    Ok(())
}
