//! The node agent's own hub credential: a bootstrap token buys one
//! certificate request (user `flotilla:machine:<name>`, group
//! `flotilla:machines`); the hub approves it once the Machine is accepted
//! (annotation `kok.flotilla.io/accepted: "true"`, or a hub that
//! auto-accepts); the agent then works with its certificate and renews it at
//! 70% of its life with the certificate itself. The flow is
//! `flotilla_csr_client`'s; this module says how a node agent's requests
//! look.
//!
//! Files in the state directory: `node-agent.key`, `node-agent.crt`,
//! `hub.kubeconfig` (all 0600, written atomically).

use std::collections::BTreeMap;
use std::path::Path;

use flotilla_csr_client::Identity;
use flotilla_kok_core::machine_identity as identity;

use std::time::Duration;

use crate::error::Error;

pub use flotilla_csr_client::{Registration, HUB_KUBECONFIG};

/// Timeouts of the node agent's clients of the hub.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(30);
const KEY_FILE: &str = "node-agent.key";
const CERT_FILE: &str = "node-agent.crt";

/// How machine `machine`'s node agent asks for its certificate.
fn node_agent(machine: &str) -> Identity {
    Identity {
        noun: "machine",
        name: machine.into(),
        key_file: KEY_FILE,
        cert_file: CERT_FILE,
        bootstrap_flag: "--bootstrap-kubeconfig",
        forbidden_action: "request certificates",
        signer: identity::CLIENT_SIGNER,
        labels: BTreeMap::from([(identity::MACHINE_LABEL.to_string(), machine.to_string())]),
        annotations: BTreeMap::new(),
        request: identity::machine_csr,
        bootstrap_csr_name: identity::bootstrap_csr_name,
        renewal_csr_name: identity::renewal_csr_name,
        waiting_hint: format!(
            "still waiting for the hub to approve this machine's certificate; if it is not accepted yet, run \
             `kubectl annotate machine {machine} {}=true` on the hub",
            identity::ACCEPTED_ANNOTATION
        ),
        // A machine waits for its hub (it may boot first).
        retry_unreachable: true,
        connect_timeout: CONNECT_TIMEOUT,
        read_timeout: READ_TIMEOUT,
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
    Ok(flotilla_csr_client::register(&node_agent(machine), state_dir, bootstrap).await?)
}

/// Sleeps until 70% of the certificate's life has passed, then gets a new
/// certificate (with a new key) using the current one, and stores it.
/// Returns once the new credential is stored; the caller restarts with it.
pub async fn renew_before_expiry(
    machine: &str,
    state_dir: &Path,
    registration: &Registration,
) -> Result<(), Error> {
    Ok(flotilla_csr_client::renew_before_expiry(&node_agent(machine), state_dir, registration).await?)
}
