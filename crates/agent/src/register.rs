//! Registration: a bootstrap token buys one certificate request; the hub
//! approves it once the cluster is accepted; the agent then works with its
//! own certificate (user `flotilla:cluster:<name>`) and renews it before it
//! expires.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_fleet_core::membership;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::{AgentConfig, Error};

const KEY_FILE: &str = "agent.key";
const CERT_FILE: &str = "agent.crt";
const HUB_KUBECONFIG: &str = "hub.kubeconfig";

/// The agent's working credential.
#[derive(Clone)]
pub struct Registration {
    pub client: Client,
    pub hub_kubeconfig: PathBuf,
    /// Seconds since the epoch when the certificate was issued to us (not
    /// its notBefore: signers backdate that by minutes for clock skew).
    pub issued: i64,
    /// Seconds since the epoch when the certificate stops being valid.
    pub not_after: i64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Validity of a PEM certificate, in seconds since the epoch.
fn validity(cert_pem: &str) -> Option<(i64, i64)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some((cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp()))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Deletes the agent's key, certificate and hub kubeconfig.
pub fn forget_credentials(state_dir: &Path) -> Result<(), Error> {
    for f in [KEY_FILE, CERT_FILE, HUB_KUBECONFIG] {
        let p = state_dir.join(f);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { path: p, source: e }),
        }
    }
    Ok(())
}

/// Server URL and CA (PEM) of the hub, from a kubeconfig's current context.
pub fn hub_endpoint(kubeconfig: &kube::config::Kubeconfig) -> Result<(String, String), Error> {
    let context_name = kubeconfig.current_context.clone().unwrap_or_default();
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .or_else(|| kubeconfig.clusters.first().map(|c| c.name.clone()))
        .unwrap_or_default();
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| Error::Hub("the hub kubeconfig names no cluster".into()))?;
    let server =
        cluster.server.clone().ok_or_else(|| Error::Hub("the hub kubeconfig has no server".into()))?;
    let ca = match &cluster.certificate_authority_data {
        Some(data) => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| Error::Hub(format!("the hub kubeconfig's CA is not base64: {e}")))?,
        )
        .map_err(|e| Error::Hub(format!("the hub kubeconfig's CA is not PEM: {e}")))?,
        None => match &cluster.certificate_authority {
            Some(file) => std::fs::read_to_string(file).map_err(io(Path::new(file)))?,
            None => return Err(Error::Hub("the hub kubeconfig has no certificate authority".into())),
        },
    };
    Ok((server, ca))
}

/// Whether a failed call is worth repeating: an overloaded or restarting hub
/// (5xx, 429, timeouts) is; a refused credential or a wrong address is not.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        other => {
            let text = other.to_string();
            !(text.contains("Connect") || text.contains("dns") || text.contains("certificate"))
        }
    }
}

/// Explains a failed call to the hub made with a bootstrap token.
fn bootstrap_error(server: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) if s.code == 401 => Error::Hub(format!(
            "the hub at {server} rejected the bootstrap token (401 Unauthorized): it is wrong or has expired. \
             Create a new one on the hub with `flotilla token create`"
        )),
        kube::Error::Api(s) if s.code == 403 => Error::Hub(format!(
            "the hub at {server} does not let this token register clusters (403 Forbidden): use a token made by \
             `flotilla token create`, and make sure `flotilla hub install` has run on the hub"
        )),
        other => Error::Hub(format!(
            "cannot reach the hub at {server}: {other}. Check the server address in the hub kubeconfig"
        )),
    }
}

/// Returns a working hub credential: the stored one if still valid,
/// otherwise a new certificate obtained with the bootstrap kubeconfig
/// (waiting, if need be, for the cluster to be accepted).
pub async fn register(config: &AgentConfig) -> Result<Registration, Error> {
    membership::validate_cluster_name(&config.cluster).map_err(Error::Other)?;
    std::fs::create_dir_all(&config.state_dir).map_err(io(&config.state_dir))?;
    let cert_path = config.state_dir.join(CERT_FILE);
    let hub_kubeconfig = config.state_dir.join(HUB_KUBECONFIG);
    if let (Ok(cert), true) = (std::fs::read_to_string(&cert_path), hub_kubeconfig.exists()) {
        if let Some((not_before, not_after)) = validity(&cert) {
            if not_after > now_secs() + 5 {
                let (client, _) = crate::client_from_kubeconfig(&hub_kubeconfig).await.map_err(Error::Hub)?;
                let written = std::fs::metadata(&cert_path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(not_before);
                let issued = written.clamp(not_before, not_after);
                return Ok(Registration { client, hub_kubeconfig, issued, not_after });
            }
        }
    }
    let Some(bootstrap_path) = &config.bootstrap_kubeconfig else {
        return Err(Error::Hub(format!(
            "cluster {} has no valid credentials in {}: pass a bootstrap kubeconfig (--hub-kubeconfig) made \
             from a token of `flotilla token create`",
            config.cluster,
            config.state_dir.display()
        )));
    };
    let bootstrap = kube::config::Kubeconfig::read_from(bootstrap_path).map_err(|e| {
        Error::Hub(format!("cannot read the hub kubeconfig {}: {e}", bootstrap_path.display()))
    })?;
    let (server, ca) = hub_endpoint(&bootstrap)?;
    let (client, _) = crate::client_from_kubeconfig(bootstrap_path).await.map_err(Error::Hub)?;

    let key_path = config.state_dir.join(KEY_FILE);
    let key = match std::fs::read_to_string(&key_path) {
        Ok(k) => k,
        Err(_) => {
            let k =
                flotilla_core::pki::generate_key_pair().map_err(|e| Error::Other(e.to_string()))?.private_pem;
            write_private(&key_path, &k)?;
            k
        }
    };
    let key_hash = membership::public_key_sha256(&key).map_err(Error::Other)?;
    let csr_name = format!("flotilla-cluster-{}-{}", config.cluster, &key_hash[..12]);
    let cert = request_certificate(&client, &config.cluster, &csr_name, &key, &server).await?;
    store_credentials(config, &server, &ca, &cert, None).await
}

async fn store_credentials(
    config: &AgentConfig,
    server: &str,
    ca: &str,
    cert: &str,
    new_key: Option<&str>,
) -> Result<Registration, Error> {
    let key_path = config.state_dir.join(KEY_FILE);
    if let Some(k) = new_key {
        write_private(&key_path, k)?;
    }
    let key = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
    write_private(&config.state_dir.join(CERT_FILE), cert)?;
    let hub_kubeconfig = config.state_dir.join(HUB_KUBECONFIG);
    write_private(
        &hub_kubeconfig,
        &kubeconfig::render(&KubeconfigSpec {
            name: "flotilla-hub".into(),
            server: server.into(),
            ca_pem: ca.into(),
            credential: Credential::ClientCert { cert_pem: cert.into(), key_pem: key },
        }),
    )?;
    let (not_before, not_after) =
        validity(cert).ok_or_else(|| Error::Hub("the hub issued an unreadable certificate".into()))?;
    let issued = now_secs().clamp(not_before, not_after);
    let (client, _) = crate::client_from_kubeconfig(&hub_kubeconfig).await.map_err(Error::Hub)?;
    tracing::info!(cluster = %config.cluster, not_after, "agent certificate stored");
    Ok(Registration { client, hub_kubeconfig, issued, not_after })
}

/// Creates (or finds) the CSR and waits for its certificate.
async fn request_certificate(
    client: &Client,
    cluster: &str,
    csr_name: &str,
    key_pem: &str,
    server: &str,
) -> Result<String, Error> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let request = membership::agent_csr(cluster, key_pem).map_err(Error::Other)?;
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": csr_name, "annotations": {flotilla_api::cluster::keys::CSR_CLUSTER: cluster}},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": membership::CLIENT_SIGNER,
            "usages": ["digital signature", "key encipherment", "client auth"]
        }
    }))?;
    let started = std::time::Instant::now();
    loop {
        match csrs.create(&PostParams::default(), &csr).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => break,
            Err(e) if transient(&e) && started.elapsed() < Duration::from_secs(120) => {
                tracing::warn!(error = %e, "asking the hub for a certificate failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(bootstrap_error(server, e)),
        }
    }
    let mut told = false;
    loop {
        let current = match csrs.get(csr_name).await {
            Ok(c) => c,
            Err(e) if transient(&e) => {
                tracing::warn!(error = %e, "reading the certificate request failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(bootstrap_error(server, e)),
        };
        let status = current.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                return Err(Error::Denied {
                    cluster: cluster.into(),
                    message: c.message.clone().unwrap_or_else(|| c.type_.clone()),
                });
            }
        }
        if let Some(cert) = status.certificate {
            return String::from_utf8(cert.0).map_err(|e| Error::Hub(format!("certificate is not PEM: {e}")));
        }
        if !told && started.elapsed() > Duration::from_secs(3) {
            tracing::warn!(
                %cluster,
                "still waiting for the hub to approve this cluster's certificate; if it has not been accepted yet, \
                 run `flotilla cluster accept {cluster}` on the hub"
            );
            told = true;
        }
        // Quick at first (joins usually complete in well under a second),
        // then gentle on the hub while waiting for acceptance.
        let pause = if started.elapsed() < Duration::from_secs(3) { 100 } else { 1000 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Sleeps until 70% of the certificate's lifetime has passed, then gets a
/// new certificate (with a new key) using the current one. Returns once the
/// new credential is stored; the caller restarts with it.
pub async fn renew_before_expiry(config: &AgentConfig, registration: &Registration) -> Result<(), Error> {
    let lifetime = (registration.not_after - registration.issued).max(1);
    let renew_at = registration.issued + lifetime * 7 / 10;
    let wait = (renew_at - now_secs()).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    tracing::info!(cluster = %config.cluster, "renewing the agent certificate");
    let kubeconfig = kube::config::Kubeconfig::read_from(&registration.hub_kubeconfig)
        .map_err(|e| Error::Hub(e.to_string()))?;
    let (server, ca) = hub_endpoint(&kubeconfig)?;
    let csrs: Api<CertificateSigningRequest> = Api::all(registration.client.clone());
    let name = membership::renewal_csr_name(&config.cluster);
    match csrs.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let new_key =
        flotilla_core::pki::generate_key_pair().map_err(|e| Error::Other(e.to_string()))?.private_pem;
    let cert = request_certificate(&registration.client, &config.cluster, &name, &new_key, &server).await?;
    store_credentials(config, &server, &ca, &cert, Some(&new_key)).await?;
    Ok(())
}
