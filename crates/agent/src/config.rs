//! What the agent needs to run, and the name it writes under.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Field manager for everything the agent writes.
pub const FIELD_MANAGER: &str = "flotilla-agent";

/// What the agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub cluster: String,
    /// Holds the agent's key, certificate and hub kubeconfig.
    pub state_dir: PathBuf,
    /// A kubeconfig with a bootstrap token, used only to register.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// The member cluster's kubeconfig.
    pub member_kubeconfig: PathBuf,
    /// How often to probe the member's API.
    pub health_interval: Duration,
    /// Where to serve `/metrics` (`flotilla agent --metrics-addr`); none
    /// by default, as several agents may run on one host.
    pub metrics_addr: Option<SocketAddr>,
}

impl AgentConfig {
    pub fn new(cluster: impl Into<String>, state_dir: PathBuf, member_kubeconfig: PathBuf) -> Self {
        Self {
            cluster: cluster.into(),
            state_dir,
            bootstrap_kubeconfig: None,
            member_kubeconfig,
            health_interval: Duration::from_secs(2),
            metrics_addr: None,
        }
    }
}
