//! Health probes: HTTP(S) GET answering 2xx, TCP connect, or a command
//! exiting 0.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::machine::{ExecCheck, HealthCheck, HttpCheck, TcpCheck};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs the check; `Err` says why it failed. Relative paths (CA files, the
/// command) are resolved in `work_dir`, the component's working directory.
pub async fn probe(check: &HealthCheck, work_dir: &Path, timeout: Duration) -> Result<(), String> {
    let run = async {
        if let Some(http) = &check.http {
            probe_http(http, work_dir).await
        } else if let Some(tcp) = &check.tcp {
            probe_tcp(tcp).await
        } else if let Some(exec) = &check.exec {
            probe_exec(exec, work_dir).await
        } else {
            Err("the health check names no probe (http, tcp or exec)".to_string())
        }
    };
    tokio::time::timeout(timeout, run).await.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

async fn probe_tcp(tcp: &TcpCheck) -> Result<(), String> {
    let host = tcp.host.as_deref().unwrap_or("127.0.0.1");
    TcpStream::connect((host, tcp.port)).await.map(drop).map_err(|e| format!("tcp {host}:{}: {e}", tcp.port))
}

async fn probe_exec(exec: &ExecCheck, work_dir: &Path) -> Result<(), String> {
    let Some((program, args)) = exec.command.split_first() else {
        return Err("the exec check has an empty command".into());
    };
    let status = tokio::process::Command::new(program)
        .args(args)
        .current_dir(work_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // A probe that times out must not linger.
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program}: {status}"))
    }
}

async fn probe_http(check: &HttpCheck, work_dir: &Path) -> Result<(), String> {
    let uri: http::Uri = check.url.parse().map_err(|e| format!("url {}: {e}", check.url))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("url {}: only http and https are supported", check.url)),
    };
    let host = uri.host().ok_or_else(|| format!("url {}: no host", check.url))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let tls = if https { Some(tls_config(check, work_dir)?) } else { None };
    let tcp = TcpStream::connect((host, port)).await.map_err(|e| format!("{}: {e}", check.url))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nUser-Agent: flotilla-node-agent\r\n\r\n");
    let code = if let Some(config) = tls {
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{}: {e}", check.url))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{}: {e}", check.url))?;
        exchange(tls, &request).await
    } else {
        exchange(tcp, &request).await
    }
    .map_err(|e| format!("{}: {e}", check.url))?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("{}: HTTP {code}", check.url))
    }
}

/// Sends the request and returns the status code of the answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> Result<u16, String> {
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    // The status line is all we need.
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", line.lines().next().unwrap_or_default()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(check: &HttpCheck, work_dir: &Path) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if check.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
    } else {
        let Some(ca_file) = &check.ca_file else {
            return Err(format!("{}: https needs caFile or insecure", check.url));
        };
        let path = work_dir.join(ca_file);
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        builder.with_root_certificates(roots)
    };
    Ok(builder.with_no_client_auth())
}

/// For `insecure: true`: any certificate is accepted, but the handshake's
/// signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(answer: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        port
    }

    fn http(url: String) -> HealthCheck {
        HealthCheck { http: Some(HttpCheck { url, ..Default::default() }), ..Default::default() }
    }

    #[tokio::test]
    async fn http_probe_wants_a_2xx() {
        let dir = Path::new("/");
        let t = Duration::from_secs(5);
        let ok = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        probe(&http(format!("http://127.0.0.1:{ok}/health")), dir, t).await.unwrap();
        let bad = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let err = probe(&http(format!("http://127.0.0.1:{bad}/health")), dir, t).await.unwrap_err();
        assert!(err.ends_with("HTTP 503"), "{err}");
        let err = probe(&http(format!("https://127.0.0.1:{bad}/")), dir, t).await.unwrap_err();
        assert!(err.contains("caFile or insecure"), "{err}");
    }

    #[tokio::test]
    async fn tcp_and_exec_probes() {
        let t = Duration::from_secs(5);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp = |port| HealthCheck { tcp: Some(TcpCheck { host: None, port }), ..Default::default() };
        probe(&tcp(port), Path::new("/"), t).await.unwrap();
        drop(listener);
        assert!(probe(&tcp(port), Path::new("/"), t).await.is_err());
        let exec = |cmd: &str| HealthCheck {
            exec: Some(ExecCheck { command: vec!["/bin/sh".into(), "-c".into(), cmd.into()] }),
            ..Default::default()
        };
        probe(&exec("true"), Path::new("/"), t).await.unwrap();
        assert!(probe(&exec("exit 1"), Path::new("/"), t).await.is_err());
        let err = probe(&exec("sleep 5"), Path::new("/"), Duration::from_millis(100)).await.unwrap_err();
        assert!(err.starts_with("no answer within"), "{err}");
    }
}
