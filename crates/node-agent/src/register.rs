//! The node agent's own hub credential: a bootstrap token buys one
//! certificate request (user `flotilla:machine:<name>`, group
//! `flotilla:machines`); the hub approves it once the Machine is accepted
//! (annotation `kok.flotilla.io/accepted: "true"`, or a hub that
//! auto-accepts); the agent then works with its certificate and renews it at
//! 70% of its life with the certificate itself.
//!
//! Files in the state directory: `node-agent.key`, `node-agent.crt`,
//! `hub.kubeconfig` (all 0600, written atomically).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_kok_core::machine_identity as identity;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::{client_from_kubeconfig, io_error, Error};

const KEY_FILE: &str = "node-agent.key";
const CERT_FILE: &str = "node-agent.crt";
/// The kubeconfig with the node agent's own certificate.
pub const HUB_KUBECONFIG: &str = "hub.kubeconfig";

/// The node agent's working credential.
#[derive(Clone)]
pub struct Registration {
    pub client: Client,
    pub hub_kubeconfig: PathBuf,
    /// Seconds since the epoch when the certificate was issued to us (not
    /// its notBefore: signers backdate that for clock skew).
    pub issued: i64,
    /// Seconds since the epoch when the certificate stops being valid.
    pub not_after: i64,
}

fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io_error(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Server URL and CA (PEM) of the hub, from a kubeconfig's current context.
fn hub_endpoint(path: &Path) -> Result<(String, String), Error> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| Error::Hub(format!("cannot read kubeconfig {}: {e}", path.display())))?;
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
        .ok_or_else(|| Error::Hub(format!("{} names no cluster", path.display())))?;
    let server =
        cluster.server.clone().ok_or_else(|| Error::Hub(format!("{} has no server", path.display())))?;
    let ca = match (&cluster.certificate_authority_data, &cluster.certificate_authority) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Error::Hub(format!("{}: the CA is not base64 PEM", path.display())))?,
        (None, Some(file)) => std::fs::read_to_string(file).map_err(io_error(Path::new(file)))?,
        (None, None) => return Err(Error::Hub(format!("{} has no certificate authority", path.display()))),
    };
    Ok((server, ca))
}

/// Whether a failed call is worth repeating (an overloaded or restarting
/// hub); a refused credential is not.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        _ => true,
    }
}

fn refused(server: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) if s.code == 401 => Error::Hub(format!(
            "the hub at {server} rejected the bootstrap token (401): it is wrong or has expired; create a \
             new one with `flotilla token create`"
        )),
        kube::Error::Api(s) if s.code == 403 => Error::Hub(format!(
            "the hub at {server} does not let this token request certificates (403): use a token made by \
             `flotilla token create` on a hub where `flotilla hub install` has run"
        )),
        other => Error::Hub(format!("asking the hub at {server} for a certificate failed: {other}")),
    }
}

/// A working hub credential: the stored one while still valid, otherwise a
/// new certificate obtained with `bootstrap` (waiting, if need be, for the
/// Machine to be accepted).
pub async fn register(
    machine: &str,
    state_dir: &Path,
    bootstrap: Option<&Path>,
) -> Result<Registration, Error> {
    identity::validate_machine_name(machine).map_err(Error::Hub)?;
    std::fs::create_dir_all(state_dir).map_err(io_error(state_dir))?;
    let cert_path = state_dir.join(CERT_FILE);
    let hub_kubeconfig = state_dir.join(HUB_KUBECONFIG);
    if let (Ok(cert), true) = (std::fs::read_to_string(&cert_path), hub_kubeconfig.exists()) {
        if let Some((not_before, not_after)) = identity::cert_validity(&cert) {
            if not_after > now_secs() + 5 {
                let client = client_from_kubeconfig(&hub_kubeconfig).await?;
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
    let Some(bootstrap) = bootstrap else {
        return Err(Error::Hub(format!(
            "machine {machine} has no valid credential in {}: pass --bootstrap-kubeconfig (a kubeconfig \
             with a token from `flotilla token create`)",
            state_dir.display()
        )));
    };
    let (server, ca) = hub_endpoint(bootstrap)?;
    let client = client_from_kubeconfig(bootstrap).await?;
    let key_path = state_dir.join(KEY_FILE);
    // Keep the key across attempts: a retried request then finds its own
    // CSR instead of making a second one.
    let key = match std::fs::read_to_string(&key_path) {
        Ok(k) => k,
        Err(_) => {
            let k =
                flotilla_core::pki::generate_key_pair().map_err(|e| Error::Hub(e.to_string()))?.private_pem;
            write_private(&key_path, &k)?;
            k
        }
    };
    let key_hash = flotilla_fleet_core::membership::public_key_sha256(&key).map_err(Error::Hub)?;
    let csr_name = identity::bootstrap_csr_name(machine, &key_hash);
    let cert = request_certificate(&client, machine, &csr_name, &key, &server).await?;
    store(machine, state_dir, &server, &ca, &cert, &key).await
}

async fn store(
    machine: &str,
    state_dir: &Path,
    server: &str,
    ca: &str,
    cert: &str,
    key: &str,
) -> Result<Registration, Error> {
    // The kubeconfig, written last, holds the pair in use: a crash in
    // between leaves it with the previous (still valid) pair.
    write_private(&state_dir.join(KEY_FILE), key)?;
    write_private(&state_dir.join(CERT_FILE), cert)?;
    let hub_kubeconfig = state_dir.join(HUB_KUBECONFIG);
    write_private(
        &hub_kubeconfig,
        &kubeconfig::render(&KubeconfigSpec {
            name: "flotilla-hub".into(),
            server: server.into(),
            ca_pem: ca.into(),
            credential: Credential::ClientCert { cert_pem: cert.into(), key_pem: key.into() },
        }),
    )?;
    let (not_before, not_after) = identity::cert_validity(cert)
        .ok_or_else(|| Error::Hub("the hub issued an unreadable certificate".into()))?;
    let issued = now_secs().clamp(not_before, not_after);
    let client = client_from_kubeconfig(&hub_kubeconfig).await?;
    tracing::info!(%machine, not_after, "node agent certificate stored");
    Ok(Registration { client, hub_kubeconfig, issued, not_after })
}

/// Creates (or finds) the CSR and waits for its certificate.
async fn request_certificate(
    client: &Client,
    machine: &str,
    csr_name: &str,
    key_pem: &str,
    server: &str,
) -> Result<String, Error> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let request = identity::machine_csr(machine, key_pem).map_err(Error::Hub)?;
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": csr_name, "labels": {identity::MACHINE_LABEL: machine}},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": identity::CLIENT_SIGNER,
            "usages": ["digital signature", "key encipherment", "client auth"]
        }
    }))
    .map_err(|e| Error::Hub(format!("certificate request: {e}")))?;
    let started = std::time::Instant::now();
    loop {
        match csrs.create(&PostParams::default(), &csr).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => break,
            Err(e) if transient(&e) && started.elapsed() < Duration::from_secs(120) => {
                tracing::warn!(error = %e, "asking the hub for a certificate failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(refused(server, e)),
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
            Err(e) => return Err(refused(server, e)),
        };
        let status = current.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                return Err(Error::Hub(format!(
                    "the hub refused machine {machine}'s certificate: {}",
                    c.message.clone().unwrap_or_else(|| c.type_.clone())
                )));
            }
        }
        if let Some(cert) = status.certificate {
            return String::from_utf8(cert.0).map_err(|e| Error::Hub(format!("certificate is not PEM: {e}")));
        }
        if !told && started.elapsed() > Duration::from_secs(3) {
            tracing::warn!(
                %machine,
                "still waiting for the hub to approve this machine's certificate; if it is not accepted yet, run \
                 `kubectl annotate machine {machine} {}=true` on the hub",
                identity::ACCEPTED_ANNOTATION
            );
            told = true;
        }
        let pause = if started.elapsed() < Duration::from_secs(3) { 100 } else { 1000 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Sleeps until 70% of the certificate's life has passed, then gets a new
/// certificate (with a new key) using the current one, and stores it.
/// Returns once the new credential is stored; the caller restarts with it.
pub async fn renew_before_expiry(
    machine: &str,
    state_dir: &Path,
    registration: &Registration,
) -> Result<(), Error> {
    let renew_at = identity::renew_at(registration.issued, registration.not_after);
    tokio::time::sleep(Duration::from_secs((renew_at - now_secs()).max(0) as u64)).await;
    tracing::info!(%machine, "renewing the node agent certificate");
    let (server, ca) = hub_endpoint(&registration.hub_kubeconfig)?;
    let csrs: Api<CertificateSigningRequest> = Api::all(registration.client.clone());
    let name = identity::renewal_csr_name(machine);
    match csrs.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let key = flotilla_core::pki::generate_key_pair().map_err(|e| Error::Hub(e.to_string()))?.private_pem;
    let cert = request_certificate(&registration.client, machine, &name, &key, &server).await?;
    store(machine, state_dir, &server, &ca, &cert, &key).await?;
    Ok(())
}
