//! The HTTPS accept loop Flotilla's servers share: the hub's admission
//! webhook and cluster proxy, and the dashboard. It accepts, gives each
//! client [`HANDSHAKE_TIMEOUT`] to finish its TLS handshake (a silent
//! client holds no one else up), and hands every finished handshake to the
//! caller, who serves HTTP on it. Connections are owned here: when serving
//! stops, the connections still open close too.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A connection whose TLS handshake has finished.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait after a failed accept (e.g. out of file descriptors)
/// instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts TLS connections on `listener` until `shutdown` resolves, and
/// runs `connection` on each (with the client's address) in a task of its
/// own. `server` names the server in logs.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    server: &'static str,
    shutdown: impl Future<Output = ()>,
    connection: F,
) where
    F: Fn(TlsStream, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(server, error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let (acceptor, connection) = (acceptor.clone(), connection.clone());
        connections.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => connection(tls, peer).await,
                Ok(Err(e)) => tracing::debug!(server, %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(server, %peer, "TLS handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    use super::*;

    fn configs() -> (TlsAcceptor, tokio_rustls::TlsConnector) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (TlsAcceptor::from(Arc::new(server)), tokio_rustls::TlsConnector::from(Arc::new(client)))
    }

    /// An echo of one line per connection.
    async fn echo(mut tls: TlsStream, _peer: SocketAddr) {
        let mut buf = [0u8; 64];
        let n = tls.read(&mut buf).await.unwrap_or(0);
        let _ = tls.write_all(&buf[..n]).await;
        let _ = tls.flush().await;
        // Held open until the client or the server goes.
        let _ = tls.read(&mut buf).await;
    }

    #[tokio::test]
    async fn serves_handshaken_clients_past_a_silent_one_and_closes_them_on_shutdown() {
        let (acceptor, connector) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, acceptor, "test", async { _ = stopped.await }, echo));

        // A client that connects and never speaks TLS.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut clients = Vec::new();
        for word in [b"one", b"two"] {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
            tls.write_all(word).await.unwrap();
            let mut back = [0u8; 3];
            tls.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, word);
            clients.push(tls);
        }
        // A client that is not TLS at all fails its handshake; serving goes on.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();

        stop.send(()).unwrap();
        server.await.unwrap();
        // Their connections closed with the server: reads end.
        for mut tls in clients {
            let mut buf = [0u8; 8];
            let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await.unwrap();
            assert!(matches!(read, Ok(0) | Err(_)), "a connection outlived the server: {read:?}");
        }
        assert!(TcpStream::connect(addr).await.is_err(), "still listening after shutdown");
    }
}
