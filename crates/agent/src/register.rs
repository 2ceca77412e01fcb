//! Registration: a bootstrap token buys one certificate request; the hub
//! approves it once the cluster is accepted; the agent then works with its
//! own certificate (user `flotilla:cluster:<name>`) and renews it before it
//! expires. The flow is `flotilla_csr_client`'s; this module says how a
//! cluster agent's requests look.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use flotilla_csr_client::Identity;
use flotilla_fleet_core::membership;

use crate::config::AgentConfig;
use crate::error::Error;

pub use flotilla_csr_client::Registration;

const KEY_FILE: &str = "agent.key";
const CERT_FILE: &str = "agent.crt";

/// How cluster `cluster`'s agent asks for its certificate.
fn identity(cluster: &str) -> Identity {
    Identity {
        noun: "cluster",
        name: cluster.into(),
        key_file: KEY_FILE,
        cert_file: CERT_FILE,
        bootstrap_flag: "--hub-kubeconfig",
        forbidden_action: "register clusters",
        signer: membership::CLIENT_SIGNER,
        labels: BTreeMap::new(),
        annotations: BTreeMap::from([(flotilla_api::cluster::keys::CSR_CLUSTER.to_string(), cluster.to_string())]),
        request: membership::agent_csr,
        bootstrap_csr_name: |cluster, key_sha256| format!("flotilla-cluster-{cluster}-{}", &key_sha256[..12]),
        renewal_csr_name: membership::renewal_csr_name,
        waiting_hint: format!(
            "still waiting for the hub to approve this cluster's certificate; if it has not been accepted yet, \
             run `flotilla cluster accept {cluster}` on the hub"
        ),
        // Someone joining a cluster by hand is told at once that the
        // address is wrong.
        retry_unreachable: false,
        connect_timeout: Duration::from_secs(3),
        read_timeout: Duration::from_secs(15),
    }
}

/// Deletes the agent's key, certificate and hub kubeconfig.
pub fn forget_credentials(state_dir: &Path) -> Result<(), Error> {
    Ok(flotilla_csr_client::forget_credentials(&identity(""), state_dir)?)
}

/// Server URL and CA (PEM) of the hub, from a kubeconfig's current context.
pub fn hub_endpoint(kubeconfig: &kube::config::Kubeconfig) -> Result<(String, String), Error> {
    Ok(flotilla_csr_client::hub_endpoint(kubeconfig)?)
}

/// Returns a working hub credential: the stored one if still valid,
/// otherwise a new certificate obtained with the bootstrap kubeconfig
/// (waiting, if need be, for the cluster to be accepted).
pub async fn register(config: &AgentConfig) -> Result<Registration, Error> {
    membership::validate_cluster_name(&config.cluster).map_err(Error::Other)?;
    Ok(flotilla_csr_client::register(
        &identity(&config.cluster),
        &config.state_dir,
        config.bootstrap_kubeconfig.as_deref(),
    )
    .await?)
}

/// Sleeps until 70% of the certificate's lifetime has passed, then gets a
/// new certificate (with a new key) using the current one. Returns once the
/// new credential is stored; the caller restarts with it.
pub async fn renew_before_expiry(config: &AgentConfig, registration: &Registration) -> Result<(), Error> {
    Ok(flotilla_csr_client::renew_before_expiry(&identity(&config.cluster), &config.state_dir, registration)
        .await?)
}
