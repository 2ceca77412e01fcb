//! `flotilla node-agent`: runs the components a Machine declares on this host.

use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
#[command(after_help = "The components keep running when the node agent stops (Ctrl-C, SIGTERM, a crash \
    or an upgrade); a node agent started again with the same --state-dir adopts them. Removing a \
    component from the Machine's spec stops it (SIGTERM to its process group, SIGKILL after \
    --stop-grace).\n\n\
    Under systemd, use KillMode=process so that stopping the unit does not kill the components.\n\n\
    The agent's own credential (user flotilla:machine:MACHINE) is obtained with a bootstrap token \
    (--bootstrap-kubeconfig, made from `flotilla token create`) and kept and renewed in --state-dir; \
    the hub approves it once the Machine carries the annotation kok.flotilla.io/accepted=true (or \
    the hub runs with auto-accept). It may read only its Machine, write its status, and get the \
    Secrets and ConfigMaps its components reference.\n\n\
    The agent reports the host's addresses (status.addresses), capacity and software on the \
    Machine; Flotilla places components at spec.address when set, else at the first InternalIP \
    reported.\n\n\
    Example:\n  flotilla node-agent --machine m1 --bootstrap-kubeconfig bootstrap.kubeconfig \
    --state-dir /var/lib/flotilla/m1")]
pub struct NodeAgentArgs {
    /// Name of this host's Machine on the hub (the hub registers it when the
    /// agent first asks for a certificate).
    #[arg(long)]
    pub machine: String,
    /// Kubeconfig with a bootstrap token, to get the agent's own certificate
    /// when --state-dir holds no valid one (first start).
    #[arg(long, conflicts_with = "kubeconfig")]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// An admin kubeconfig for the hub, used as it is instead of the agent's
    /// own narrow credential.
    #[arg(long, env = "FLOTILLA_HUB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Where the agent keeps its record of running components (state.json),
    /// their logs (logs/NAME.log) and working directories (components/NAME/).
    /// Default: ~/.flotilla/node-agent/MACHINE.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Seconds a stopped component gets between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10)]
    pub stop_grace: u64,
    /// Seconds between status writes when nothing changes.
    #[arg(long, default_value_t = 20)]
    pub heartbeat: u64,
    /// The IP other machines reach this one at, reported as its only
    /// InternalIP. Default: the addresses of the interfaces holding a
    /// default route, then the other global ones. (The Machine's
    /// spec.address, when set, wins over both.)
    #[arg(long)]
    pub address: Option<std::net::IpAddr>,
    /// Serve the node agent's Prometheus metrics on this address (`GET
    /// /metrics`), e.g. 0.0.0.0:9466. Off by default: several node agents
    /// may run on one host.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

pub async fn run(args: NodeAgentArgs) -> anyhow::Result<bool> {
    let state_dir = args
        .state_dir
        .unwrap_or_else(|| crate::paths::default_state_dir().join("node-agent").join(&args.machine));
    let mut config = match args.kubeconfig {
        Some(admin) => flotilla_node_agent::NodeAgentConfig::new(args.machine, admin, state_dir),
        None => flotilla_node_agent::NodeAgentConfig::bootstrapped(
            args.machine,
            args.bootstrap_kubeconfig,
            state_dir,
        ),
    };
    config.stop_grace = Duration::from_secs(args.stop_grace);
    config.heartbeat = Duration::from_secs(args.heartbeat.max(1));
    config.address = args.address;
    config.metrics_addr = args.metrics_addr;
    // Stopping the agent leaves its components running (see --help).
    let shutdown = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    match flotilla_node_agent::run(config, shutdown).await {
        Ok(()) => Ok(true),
        Err(flotilla_node_agent::Error::Removed(name)) => {
            println!("Machine {name} was deleted from the hub; its components were stopped.");
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}
