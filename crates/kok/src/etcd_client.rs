//! Talking to an etcd cluster's members: a TLS client from the cluster's
//! Secret (or from PEM files, as `etcdctl` takes them) and one request to
//! a member's gRPC gateway. Used by the EtcdCluster operator, the key
//! dump and load (`etcd_keys`) and the HostedCluster operator (a shared
//! etcd's key prefix deleted with its cluster).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_kok_core::etcd as plan;
use flotilla_kok_core::pki::keys;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;

/// A TLS client that trusts the cluster's CA and presents its client
/// certificate.
pub fn client_tls(data: &BTreeMap<String, Vec<u8>>) -> Result<Arc<ClientConfig>, Error> {
    let get = |key: &str| data.get(key).ok_or_else(|| Error::Other(format!("the Secret has no {key}")));
    client_tls_from_pem(
        get(keys::ETCD_CA_CRT)?,
        get(&keys::crt(plan::CLIENT_LEAF))?,
        get(&keys::key(plan::CLIENT_LEAF))?,
    )
}

/// A TLS client from PEM files: the CA to trust, the client certificate
/// (chain) and its key (what `etcdctl --cacert --cert --key` take).
pub fn client_tls_from_files(
    cacert: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<ClientConfig>, Error> {
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| Error::Other(format!("{}: {e}", p.display())));
    client_tls_from_pem(&read(cacert)?, &read(cert)?, &read(key)?)
}

/// A TLS client from PEM bytes: the CA, the client certificate, its key.
pub fn client_tls_from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        let cert = cert.map_err(|e| Error::Other(format!("CA certificate: {e}")))?;
        roots.add(cert).map_err(|e| Error::Other(format!("CA certificate: {e}")))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Other(format!("client certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| Error::Other(format!("client key: {e}")))?;
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Other(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| Error::Other(format!("client certificate: {e}")))?;
    Ok(Arc::new(config))
}

/// POSTs `body` to `path` of an etcd member's gRPC gateway (`url` is its
/// `https://host:port` client URL) and returns the answer's body.
pub async fn call(
    tls: &Arc<ClientConfig>,
    url: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let exchange = async {
        let authority = url.strip_prefix("https://").ok_or_else(|| format!("{url}: not https"))?;
        let (host, port) = authority.rsplit_once(':').ok_or_else(|| format!("{url}: no port"))?;
        let port: u16 = port.parse().map_err(|_| format!("{url}: bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, port)).await.map_err(|e| format!("{url}: {e}"))?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{url}: {e}"))?;
        let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        // HTTP/1.0: the answer is never chunked and ends when the
        // connection closes.
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("{url}: {e}"))?;
        let mut answer = Vec::new();
        if let Err(e) = stream.read_to_end(&mut answer).await {
            // Servers may close without a TLS close_notify; what arrived counts.
            if e.kind() != std::io::ErrorKind::UnexpectedEof || answer.is_empty() {
                return Err(format!("{url}: {e}"));
            }
        }
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("{url}: no HTTP answer"))?;
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let code = head.split_whitespace().nth(1).unwrap_or_default();
        if code != "200" {
            let text = String::from_utf8_lossy(&answer[split + 4..]);
            return Err(format!("{url}{path}: HTTP {code}: {text}"));
        }
        Ok(answer[split + 4..].to_vec())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer in {timeout:?}")))
}
