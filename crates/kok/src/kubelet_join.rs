//! `flotilla kubelet-join`: TLS bootstrapping for a hollow kubelet, which
//! (unlike the real kubelet) cannot do it itself. With the cluster's
//! bootstrap token it asks for a `system:node:<name>` client certificate
//! (the cluster's own controller-manager approves and signs it, as for
//! kubeadm joins), writes the kubelet's kubeconfig, and then becomes the
//! kubelet (exec). A kubeconfig that still trusts the cluster's CA and is
//! far from expiry is reused, so restarts do not ask again; after a CA
//! rotation the bootstrap kubeconfig carries the new CA and the kubelet
//! joins again.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_kok_core::hosted;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

use crate::Error;

/// What `kubelet-join` is asked to do.
#[derive(Debug, Clone)]
pub struct KubeletJoin {
    pub bootstrap_kubeconfig: PathBuf,
    /// Where the kubelet's own kubeconfig is kept.
    pub kubeconfig: PathBuf,
    pub node_name: String,
    /// How long to wait for the certificate.
    pub timeout: Duration,
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}

/// Makes sure `join.kubeconfig` holds a current kubelet credential.
pub async fn ensure_credential(join: &KubeletJoin) -> Result<(), Error> {
    let bootstrap = kubeconfig::parse(&read(&join.bootstrap_kubeconfig)?)
        .map_err(|e| Error::Other(format!("{}: {e}", join.bootstrap_kubeconfig.display())))?;
    let now = time::OffsetDateTime::now_utc();
    if let Ok(current) = read(&join.kubeconfig).and_then(|t| kubeconfig::parse(&t).map_err(Error::Other)) {
        if hosted::kubelet_credential_current(&current, &bootstrap.ca_pem, now)
            && current.server == bootstrap.server
        {
            tracing::info!(node = %join.node_name, "kubelet credential is current");
            return Ok(());
        }
    }
    let token = bootstrap.token.clone().ok_or_else(|| {
        Error::Other(format!("{} has no bootstrap token", join.bootstrap_kubeconfig.display()))
    })?;
    let client = client_for(&bootstrap.server, &bootstrap.ca_pem, &token).await?;
    let key = flotilla_core::pki::generate_key_pair().map_err(|e| Error::Other(e.to_string()))?;
    let request = hosted::node_csr(&join.node_name, &key.private_pem).map_err(Error::Other)?;
    let digest = {
        use sha2::Digest as _;
        hex::encode(&sha2::Sha256::digest(request.as_bytes())[..6])
    };
    let name = format!("node-csr-{}-{digest}", join.node_name);
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": hosted::KUBELET_CLIENT_SIGNER,
            "usages": ["digital signature", "key encipherment", "client auth"],
        }
    }))?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let started = Instant::now();
    loop {
        match csrs.create(&PostParams::default(), &csr).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => break,
            Err(e) if started.elapsed() < join.timeout => {
                // Usual while the API server starts or before the operator
                // has put the token in place: retry soon, the node is waiting.
                tracing::warn!(error = %e, "asking for a kubelet certificate failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let cert = loop {
        if started.elapsed() > join.timeout {
            return Err(Error::Other(format!(
                "certificate request {name} was not signed within {:?}: is the cluster's controller-manager \
                 running, and is the bootstrap RBAC add-on applied?",
                join.timeout
            )));
        }
        match csrs.get(&name).await {
            Ok(current) => {
                let status = current.status.unwrap_or_default();
                if let Some(c) =
                    status.conditions.iter().flatten().find(|c| c.type_ == "Denied" && c.status == "True")
                {
                    return Err(Error::Other(format!(
                        "certificate request {name} was denied: {}",
                        c.message.clone().unwrap_or_default()
                    )));
                }
                if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
                    break String::from_utf8(cert.0)
                        .map_err(|e| Error::Other(format!("certificate is not PEM: {e}")))?;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the certificate request failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let yaml = kubeconfig::render(&KubeconfigSpec {
        name: join.node_name.clone(),
        server: bootstrap.server.clone(),
        ca_pem: bootstrap.ca_pem.clone(),
        credential: Credential::ClientCert { cert_pem: cert, key_pem: key.private_pem },
    });
    let tmp = join.kubeconfig.with_extension("tmp");
    std::fs::write(&tmp, yaml)
        .and_then(|()| std::fs::rename(&tmp, &join.kubeconfig))
        .map_err(|e| Error::Other(format!("{}: {e}", join.kubeconfig.display())))?;
    tracing::info!(node = %join.node_name, csr = %name, "kubelet joined with the bootstrap token");
    Ok(())
}

async fn client_for(server: &str, ca_pem: &str, token: &str) -> Result<Client, Error> {
    let yaml = kubeconfig::render(&KubeconfigSpec {
        name: "bootstrap".into(),
        server: server.to_string(),
        ca_pem: ca_pem.to_string(),
        credential: Credential::Token(token.to_string()),
    });
    let parsed = kube::config::Kubeconfig::from_yaml(&yaml).map_err(|e| Error::Other(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .map_err(|e| Error::Other(e.to_string()))?;
    Ok(Client::try_from(config)?)
}

/// A short scratch directory for the hollow kubelet: it keeps unix sockets
/// under TMPDIR, whose paths must stay under ~100 bytes.
pub fn scratch_dir(node_name: &str, work_dir: &Path) -> PathBuf {
    use sha2::Digest as _;
    let digest = hex::encode(&sha2::Sha256::digest(work_dir.display().to_string().as_bytes())[..6]);
    let short: String = node_name.chars().take(20).collect();
    std::env::temp_dir().join(format!("fk-{short}-{digest}"))
}

/// Replaces this process with `program args` (the kubelet), with TMPDIR
/// pointing at a short scratch directory. Returns only on failure.
pub fn exec_kubelet(node_name: &str, program: &str, args: &[String]) -> Error {
    let work = std::env::current_dir().unwrap_or_default();
    let scratch = scratch_dir(node_name, &work);
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        return Error::Other(format!("{}: {e}", scratch.display()));
    }
    let err = std::process::Command::new(program).args(args).env("TMPDIR", &scratch).exec();
    Error::Other(format!("cannot run {program}: {err}"))
}
