//! The certificate-request flow Flotilla's agents share (the cluster agent
//! and the node agent): a bootstrap token buys one certificate request; the
//! hub approves it once the holder is accepted; the agent then works with
//! its own certificate and renews it, with that certificate, at 70% of its
//! life (`flotilla_core::certificate::renew_at`).
//!
//! What differs between the agents (names, files, the request's subject and
//! metadata, what to tell a waiting operator) is an [`Identity`]; the flow
//! itself — create or find the request, poll it, fail on a denial, store the
//! key, certificate and kubeconfig atomically — is written once here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use flotilla_core::certificate::{cert_validity, renew_at};
use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

/// The kubeconfig with the agent's own certificate, in its state directory.
pub const HUB_KUBECONFIG: &str = "hub.kubeconfig";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Hub(String),
    #[error("the hub refused {noun} {name}: {message}")]
    Denied { noun: &'static str, name: String, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Who asks for a certificate, and how its requests look.
#[derive(Debug, Clone)]
pub struct Identity {
    /// What holds the certificate, for messages: `cluster`, `machine`.
    pub noun: &'static str,
    /// The cluster's or machine's name.
    pub name: String,
    /// Private key and certificate files in the state directory.
    pub key_file: &'static str,
    pub cert_file: &'static str,
    /// The command-line flag that passes a bootstrap kubeconfig.
    pub bootstrap_flag: &'static str,
    /// What a 403 on the request means the token may not do.
    pub forbidden_action: &'static str,
    /// The request's signer.
    pub signer: &'static str,
    /// Labels and annotations the hub's registration controller selects by.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The PEM certificate request for the holder, signed by a PEM key.
    pub request: fn(name: &str, key_pem: &str) -> Result<String, String>,
    /// Name of the first request (unique per key, so a retry finds it).
    pub bootstrap_csr_name: fn(name: &str, key_sha256: &str) -> String,
    /// Name of the renewal request (fixed, so RBAC can name it).
    pub renewal_csr_name: fn(name: &str) -> String,
    /// What to tell the operator while the hub has not approved.
    pub waiting_hint: String,
    /// Whether an unreachable hub (connection refused, DNS, TLS) is retried
    /// like an overloaded one (the node agent waits for its hub; a cluster
    /// joining by hand is told at once that the address is wrong).
    pub retry_unreachable: bool,
    /// Timeouts of the clients made from the kubeconfigs.
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

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

/// Writes a file only its owner reads, atomically (a crash leaves the old
/// one or the new one).
fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A client for a kubeconfig file, with the identity's timeouts.
pub async fn client_from_kubeconfig(
    path: &Path,
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Result<Client, Error> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| Error::Hub(format!("cannot read kubeconfig {}: {e}", path.display())))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| Error::Hub(format!("invalid kubeconfig {}: {e}", path.display())))?;
    config.connect_timeout = Some(connect_timeout);
    config.read_timeout = Some(read_timeout);
    Client::try_from(config).map_err(|e| Error::Hub(format!("kubeconfig {}: {e}", path.display())))
}

async fn client(identity: &Identity, path: &Path) -> Result<Client, Error> {
    client_from_kubeconfig(path, identity.connect_timeout, identity.read_timeout).await
}

/// Deletes the agent's key, certificate and hub kubeconfig.
pub fn forget_credentials(identity: &Identity, state_dir: &Path) -> Result<(), Error> {
    for f in [identity.key_file, identity.cert_file, HUB_KUBECONFIG] {
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

fn read_endpoint(path: &Path) -> Result<(String, String), Error> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| Error::Hub(format!("cannot read the hub kubeconfig {}: {e}", path.display())))?;
    hub_endpoint(&kubeconfig)
}

/// Whether a failed call is worth repeating: an overloaded or restarting hub
/// (5xx, 429, timeouts, a connection that timed out before it was made) is;
/// a refused credential is not, nor (unless `retry_unreachable`) a wrong
/// address.
fn transient(e: &kube::Error, retry_unreachable: bool) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        other => retry_unreachable || timed_out(other) || !unreachable(&other.to_string()),
    }
}

/// Whether the call ran out of time somewhere in its chain of causes: a
/// connect error says only "Connect" at the top, and one that timed out
/// (a hub too loaded to finish a TLS handshake in time) is not a wrong
/// address.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(error) = cause {
        let io_timeout = error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if io_timeout || error.to_string().contains("deadline has elapsed") {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Whether an error's text says the hub cannot be reached at all.
fn unreachable(text: &str) -> bool {
    text.contains("Connect") || text.contains("dns") || text.contains("certificate")
}

/// Explains a failed call to the hub made with a bootstrap token.
fn bootstrap_error(identity: &Identity, server: &str, e: kube::Error) -> Error {
    let action = identity.forbidden_action;
    match e {
        kube::Error::Api(s) if s.code == 401 => Error::Hub(format!(
            "the hub at {server} rejected the bootstrap token (401 Unauthorized): it is wrong or has expired. \
             Create a new one on the hub with `flotilla token create`"
        )),
        kube::Error::Api(s) if s.code == 403 => Error::Hub(format!(
            "the hub at {server} does not let this token {action} (403 Forbidden): use a token made by \
             `flotilla token create`, and make sure `flotilla hub install` has run on the hub"
        )),
        other => Error::Hub(format!(
            "cannot reach the hub at {server}: {other}. Check the server address in the hub kubeconfig"
        )),
    }
}

/// Returns a working hub credential: the stored one while still valid,
/// otherwise a new certificate obtained with the bootstrap kubeconfig
/// (waiting, if need be, for the holder to be accepted).
pub async fn register(
    identity: &Identity,
    state_dir: &Path,
    bootstrap: Option<&Path>,
) -> Result<Registration, Error> {
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let cert_path = state_dir.join(identity.cert_file);
    let hub_kubeconfig = state_dir.join(HUB_KUBECONFIG);
    if let (Ok(cert), true) = (std::fs::read_to_string(&cert_path), hub_kubeconfig.exists()) {
        if let Some((not_before, not_after)) = cert_validity(&cert) {
            if not_after > now_secs() + 5 {
                let client = client(identity, &hub_kubeconfig).await?;
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
            "{} {} has no valid credentials in {}: pass a bootstrap kubeconfig ({}) made from a token of \
             `flotilla token create`",
            identity.noun,
            identity.name,
            state_dir.display(),
            identity.bootstrap_flag,
        )));
    };
    let (server, ca) = read_endpoint(bootstrap)?;
    let bootstrap_client = client(identity, bootstrap).await?;
    // Keep the key across attempts: a retried request then finds its own
    // CSR instead of making a second one.
    let key_path = state_dir.join(identity.key_file);
    let key = match std::fs::read_to_string(&key_path) {
        Ok(k) => k,
        Err(_) => {
            let k = new_key()?;
            write_private(&key_path, &k)?;
            k
        }
    };
    let key_hash = flotilla_fleet_core::membership::public_key_sha256(&key).map_err(Error::Hub)?;
    let csr_name = (identity.bootstrap_csr_name)(&identity.name, &key_hash);
    let cert = request_certificate(identity, &bootstrap_client, &csr_name, &key, &server).await?;
    store(identity, state_dir, &server, &ca, &cert, &key).await
}

fn new_key() -> Result<String, Error> {
    Ok(flotilla_core::pki::generate_key_pair().map_err(|e| Error::Hub(e.to_string()))?.private_pem)
}

async fn store(
    identity: &Identity,
    state_dir: &Path,
    server: &str,
    ca: &str,
    cert: &str,
    key: &str,
) -> Result<Registration, Error> {
    // The kubeconfig, written last, holds the pair in use: a crash in
    // between leaves it with the previous (still valid) pair.
    write_private(&state_dir.join(identity.key_file), key)?;
    write_private(&state_dir.join(identity.cert_file), cert)?;
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
    let (not_before, not_after) =
        cert_validity(cert).ok_or_else(|| Error::Hub("the hub issued an unreadable certificate".into()))?;
    let issued = now_secs().clamp(not_before, not_after);
    let client = client(identity, &hub_kubeconfig).await?;
    tracing::info!(holder = identity.noun, name = %identity.name, not_after, "certificate stored");
    Ok(Registration { client, hub_kubeconfig, issued, not_after })
}

/// The request object for `csr_name`, signed by `key_pem`.
fn request_object(
    identity: &Identity,
    csr_name: &str,
    key_pem: &str,
) -> Result<CertificateSigningRequest, Error> {
    let request = (identity.request)(&identity.name, key_pem).map_err(Error::Hub)?;
    let some = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());
    Ok(CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(csr_name.into()),
            labels: some(&identity.labels),
            annotations: some(&identity.annotations),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(request.into_bytes()),
            signer_name: identity.signer.into(),
            usages: Some(vec!["digital signature".into(), "key encipherment".into(), "client auth".into()]),
            ..Default::default()
        },
        status: None,
    })
}

/// Creates (or finds) the CSR and waits for its certificate.
async fn request_certificate(
    identity: &Identity,
    client: &Client,
    csr_name: &str,
    key_pem: &str,
    server: &str,
) -> Result<String, Error> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr = request_object(identity, csr_name, key_pem)?;
    let retry_unreachable = identity.retry_unreachable;
    let started = std::time::Instant::now();
    loop {
        match csrs.create(&PostParams::default(), &csr).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => break,
            Err(e) if transient(&e, retry_unreachable) && started.elapsed() < Duration::from_secs(120) => {
                tracing::warn!(error = %e, "asking the hub for a certificate failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(bootstrap_error(identity, server, e)),
        }
    }
    let mut told = false;
    loop {
        let current = match csrs.get(csr_name).await {
            Ok(c) => c,
            Err(e) if transient(&e, retry_unreachable) => {
                tracing::warn!(error = %e, "reading the certificate request failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(bootstrap_error(identity, server, e)),
        };
        let status = current.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                return Err(Error::Denied {
                    noun: identity.noun,
                    name: identity.name.clone(),
                    message: c.message.clone().unwrap_or_else(|| c.type_.clone()),
                });
            }
        }
        if let Some(cert) = status.certificate {
            return String::from_utf8(cert.0).map_err(|e| Error::Hub(format!("certificate is not PEM: {e}")));
        }
        if !told && started.elapsed() > Duration::from_secs(3) {
            tracing::warn!(holder = identity.noun, name = %identity.name, "{}", identity.waiting_hint);
            told = true;
        }
        // Quick at first (joins usually complete in well under a second),
        // then gentle on the hub while waiting for acceptance.
        let pause = if started.elapsed() < Duration::from_secs(3) { 100 } else { 1000 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Sleeps until 70% of the certificate's life has passed, then gets a new
/// certificate (with a new key) using the current one, and stores it.
/// Returns once the new credential is stored; the caller restarts with it.
pub async fn renew_before_expiry(
    identity: &Identity,
    state_dir: &Path,
    registration: &Registration,
) -> Result<(), Error> {
    let renew_at = renew_at(registration.issued, registration.not_after);
    tokio::time::sleep(Duration::from_secs((renew_at - now_secs()).max(0) as u64)).await;
    tracing::info!(holder = identity.noun, name = %identity.name, "renewing the certificate");
    let (server, ca) = read_endpoint(&registration.hub_kubeconfig)?;
    let csrs: Api<CertificateSigningRequest> = Api::all(registration.client.clone());
    let name = (identity.renewal_csr_name)(&identity.name);
    match csrs.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let key = new_key()?;
    let cert = request_certificate(identity, &registration.client, &name, &key, &server).await?;
    store(identity, state_dir, &server, &ca, &cert, &key).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure("x", "").with_code(code).boxed())
    }

    #[test]
    fn overloaded_hubs_are_retried_refusals_are_not() {
        for (code, retried) in
            [(500, true), (503, true), (429, true), (401, false), (403, false), (404, false)]
        {
            assert_eq!(transient(&api_error(code), false), retried, "{code}");
            assert_eq!(transient(&api_error(code), true), retried, "{code}");
        }
        for (text, gone) in [
            ("error trying to connect: Connect failed", true),
            ("dns error: no such host", true),
            ("invalid peer certificate", true),
            ("operation timed out", false),
        ] {
            assert_eq!(unreachable(text), gone, "{text}");
        }
    }

    /// A connect error whose cause is `cause` (kube reports a failed
    /// connection as "Connect" whatever went wrong).
    #[derive(Debug)]
    struct ConnectError(std::io::Error);

    impl std::fmt::Display for ConnectError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for ConnectError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_connection_that_timed_out_is_retried_a_refused_one_is_not() {
        use std::io::{Error as IoError, ErrorKind};
        let connect = |cause: IoError| kube::Error::Service(Box::new(ConnectError(cause)));
        // (what went wrong, retried without retry_unreachable)
        let cases = [
            (connect(IoError::new(ErrorKind::TimedOut, "connect timed out")), true),
            (connect(IoError::other("deadline has elapsed")), true),
            (connect(IoError::new(ErrorKind::ConnectionRefused, "Connection refused")), false),
            (connect(IoError::other("dns error: no such host")), false),
        ];
        for (error, retried) in &cases {
            assert_eq!(transient(error, false), *retried, "{error:?}");
            assert!(transient(error, true), "{error:?}");
        }
    }

    #[test]
    fn the_request_object_carries_the_identity() {
        let identity = Identity {
            noun: "machine",
            name: "m1".into(),
            key_file: "k",
            cert_file: "c",
            bootstrap_flag: "--x",
            forbidden_action: "request certificates",
            signer: "kubernetes.io/kube-apiserver-client",
            labels: BTreeMap::from([("l".to_string(), "m1".to_string())]),
            annotations: BTreeMap::new(),
            request: |name, _| Ok(format!("REQUEST {name}")),
            bootstrap_csr_name: |name, hash| format!("{name}-{hash}"),
            renewal_csr_name: |name| format!("{name}-renewal"),
            waiting_hint: String::new(),
            retry_unreachable: true,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        };
        let csr = request_object(&identity, "m1-abc", "KEY").unwrap();
        assert_eq!(csr.metadata.name.as_deref(), Some("m1-abc"));
        assert_eq!(csr.metadata.labels.unwrap()["l"], "m1");
        assert!(csr.metadata.annotations.is_none());
        assert_eq!(csr.spec.request.0, b"REQUEST m1");
        assert_eq!(csr.spec.signer_name, "kubernetes.io/kube-apiserver-client");
        let usages = csr.spec.usages.unwrap();
        assert_eq!(usages, ["digital signature", "key encipherment", "client auth"]);
    }

    #[test]
    fn credentials_are_written_private_and_forgotten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_private(&path, "secret").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!path.with_extension("tmp").exists());
        let identity_files = ["k", "c", HUB_KUBECONFIG];
        for f in &identity_files[1..] {
            write_private(&dir.path().join(f), "x").unwrap();
        }
        let identity = Identity {
            noun: "cluster",
            name: "c".into(),
            key_file: "k",
            cert_file: "c",
            bootstrap_flag: "",
            forbidden_action: "",
            signer: "",
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            request: |_, _| Ok(String::new()),
            bootstrap_csr_name: |n, _| n.into(),
            renewal_csr_name: |n| n.into(),
            waiting_hint: String::new(),
            retry_unreachable: false,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        };
        forget_credentials(&identity, dir.path()).unwrap();
        forget_credentials(&identity, dir.path()).unwrap();
        for f in identity_files {
            assert!(!dir.path().join(f).exists(), "{f}");
        }
    }
}
