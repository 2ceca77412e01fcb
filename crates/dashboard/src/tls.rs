//! TLS for the dashboard: the server's own certificate, and sign-in by
//! client certificate. The listener asks every client for a certificate
//! and verifies one against the hub's client CA; a client without one is
//! still served (it signs in with a token). A verified certificate names
//! the user as Kubernetes reads it: the user from the common name, the
//! groups from the organisations.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use x509_parser::prelude::FromDer as _;

use crate::error::Error;

/// The PEM files of `--tls-cert`, `--tls-key` and `--client-ca`.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_pem: String,
    pub key_pem: String,
    /// Sign-in by client certificate is on only with a CA to verify them.
    pub client_ca_pem: Option<String>,
}

impl std::fmt::Debug for TlsFiles {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles").field("client_ca", &self.client_ca_pem.is_some()).finish_non_exhaustive()
    }
}

/// The user a verified client certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

/// Hub mode carries users' credentials: off this machine it needs TLS.
pub fn check_listen(hub_mode: bool, listen: SocketAddr, tls: bool) -> Result<(), Error> {
    if hub_mode && !tls && !listen.ip().is_loopback() {
        return Err(Error::Insecure(listen.to_string()));
    }
    Ok(())
}

/// Reads the user (common name) and groups (organisations) of a DER
/// certificate the TLS handshake has verified.
pub fn identity_from_der(der: &[u8]) -> Result<ClientIdentity, Error> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| Error::Tls(format!("the client certificate does not parse: {e}")))?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| Error::Tls("the client certificate has no common name (the user)".into()))?;
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Ok(ClientIdentity { user, groups })
}

/// The rustls server configuration: the server's chain and key, and, with
/// a client CA, an optional client certificate verified against it.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(files.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("--tls-cert: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(files.key_pem.as_bytes())
        .map_err(|e| Error::Tls(format!("--tls-key: {e}")))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let builder = match &files.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca_pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                let cert = cert.map_err(|e| Error::Tls(format!("--client-ca: {e}")))?;
                roots.add(cert).map_err(|e| Error::Tls(format!("--client-ca: {e}")))?;
            }
            // A browser without a certificate still gets the page and
            // signs in with a token.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| Error::Tls(format!("--client-ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `app` over TLS until `shutdown` resolves. Each connection's
/// verified client certificate, if any, reaches the handlers as a
/// `ClientIdentity` request extension.
pub async fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    // Connections end when serving stops.
    flotilla_tls_serve::serve(listener, acceptor, "dashboard", shutdown, move |tls, peer| {
        let app = app.clone();
        async move {
            // Present only if the verifier accepted it.
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| identity_from_der(leaf.as_ref()));
            let app = match identity {
                None => app,
                Some(Ok(identity)) => app.layer(Extension(identity)),
                Some(Err(e)) => return tracing::info!(%peer, error = %e, "client certificate refused"),
            };
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "dashboard connection ended with an error");
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use flotilla_core::pki::{CertificateAuthority, LeafSpec};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    use super::*;

    #[test]
    fn a_client_certificate_names_the_user_and_groups() {
        let ca = CertificateAuthority::generate("test-ca").unwrap();
        // (rcgen writes one organisation per subject, so one group at most.)
        let cases: [(&str, &str, &[&str]); 3] = [
            ("a user without groups", "alice", &[]),
            ("one group", "bob", &["flotilla-viewers"]),
            ("a user name with colons", "system:node:n1", &["system:nodes"]),
        ];
        for (name, user, groups) in cases {
            let leaf = ca.issue(&LeafSpec::client(user, groups)).unwrap();
            let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
            let want =
                ClientIdentity { user: user.into(), groups: groups.iter().map(|g| g.to_string()).collect() };
            assert_eq!(identity_from_der(der.as_ref()).unwrap(), want, "{name}");
        }
        assert!(identity_from_der(b"not a certificate").is_err(), "garbage is refused");
    }

    #[test]
    fn hub_mode_off_this_machine_needs_tls() {
        let cases = [
            ("local mode anywhere", false, "0.0.0.0:8090", false, true),
            ("hub mode on loopback", true, "127.0.0.1:8090", false, true),
            ("hub mode on IPv6 loopback", true, "[::1]:8090", false, true),
            ("hub mode on all addresses without TLS", true, "0.0.0.0:8090", false, false),
            ("hub mode on a LAN address without TLS", true, "192.0.2.7:8090", false, false),
            ("hub mode on all addresses with TLS", true, "0.0.0.0:8443", true, true),
        ];
        for (name, hub, addr, tls, ok) in cases {
            assert_eq!(check_listen(hub, addr.parse().unwrap(), tls).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn the_server_configuration_asks_for_client_certificates_only_with_a_ca() {
        let ca = CertificateAuthority::generate("test-ca").unwrap();
        let serving = ca.issue(&LeafSpec::server("dashboard", &["127.0.0.1".into()])).unwrap();
        let mut files = TlsFiles {
            cert_pem: serving.cert_pem.clone(),
            key_pem: serving.key_pem.clone(),
            client_ca_pem: None,
        };
        assert!(server_config(&files).is_ok(), "a certificate and key are enough");
        files.client_ca_pem = Some(ca.pem.cert_pem.clone());
        assert!(server_config(&files).is_ok(), "with a client CA");
        files.client_ca_pem = Some("not a PEM".into());
        assert!(server_config(&files).is_err(), "a client CA that is no certificate is refused");
        files.client_ca_pem = None;
        files.key_pem = "nothing".into();
        assert!(server_config(&files).is_err(), "a missing key is refused");
    }
}
