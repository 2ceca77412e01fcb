//! `flotilla`: one binary, many subcommands.

// jemalloc returns freed memory to the system far better than glibc's
// malloc under many short-lived allocations (watch events, JSON), which
// keeps the hub controller and agents small.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use flotilla_cli::hub_kubeconfig::HubKubeconfig;
use flotilla_cli::{
    binaries, completion, dashboard_cmd, etcd_cmd, fleet, fleetctl, get_cmd, hub_cmd, kokctl, member_cmd,
    migrate, node_agent, rebalance_cmd, rollout_cmd,
};

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Manage fleets of Kubernetes clusters: build them, keep them healthy, run apps across them",
    long_about = "Flotilla manages fleets of Kubernetes clusters from one hub.\n\n\
        Start here:\n  \
        flotilla up        start a local fleet (a hub and member clusters) from real binaries\n  \
        flotilla status    show every cluster and process of the local fleet\n  \
        flotilla down      stop the local fleet and remove its state"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local fleet: a hub and N member clusters with hollow nodes.
    ///
    /// The members are built the Kube-on-Kube way: the hub holds a
    /// HostedCluster per member (and one EtcdCluster they share under a
    /// key prefix each), its operators (`hub run`) issue the certificates
    /// and place etcd, the control planes and hollow kubelets on the local
    /// Machines (--machines, default 2) whose node agents run them; each
    /// Ready member joins the fleet. Builds the Kubernetes binaries first
    /// if they are not cached yet (~10 minutes once; seconds after). The
    /// fleet runs in the background until `flotilla down`. Running `up`
    /// again shows the running fleet.
    Up(fleet::UpArgs),
    /// Show the local fleet's clusters and processes and whether they are healthy.
    ///
    /// Exits non-zero when a cluster or process is unhealthy.
    Status(fleet::StateDirArg),
    /// Stop exactly the processes `up` started and remove the fleet's state.
    Down(fleet::DownArgs),
    /// The hub: install Flotilla's resources, run its controllers.
    #[command(subcommand)]
    Hub(hub_cmd::HubCommand),
    /// Bootstrap tokens for clusters joining the fleet.
    #[command(subcommand)]
    Token(fleetctl::TokenCommand),
    /// Register a cluster with the hub (pull mode) and start its agent in the background.
    Join(fleetctl::JoinArgs),
    /// Run a cluster's agent in the foreground.
    Agent(fleetctl::AgentArgs),
    /// Run this host's node agent: the processes its Machine on the hub declares.
    NodeAgent(node_agent::NodeAgentArgs),
    /// Remove a cluster from the fleet: its ManagedCluster, namespace and agent access.
    Unjoin(fleetctl::UnjoinArgs),
    /// Manage member clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Images for hosted clusters' real nodes (which pull from no registry).
    #[command(subcommand)]
    Images(kokctl::ImagesCommand),
    /// EtcdClusters: list them, show one, snapshot and restore them.
    #[command(subcommand)]
    Etcd(etcd_cmd::EtcdCommand),
    /// List fleet resources.
    #[command(subcommand)]
    Get(get_cmd::GetCommand),
    /// Print a member cluster's pod log, through the hub as your hub user.
    ///
    /// The member's RBAC applies to your hub user (pods/log get).
    ///
    /// Example: flotilla logs --cluster m1 -n shop web-7c9f -c main -f
    Logs(member_cmd::LogsArgs),
    /// Run a command in a member cluster's pod, through the hub as your hub user.
    ///
    /// The member's RBAC applies to your hub user (pods/exec create). No TTY;
    /// -i passes standard input. Exits non-zero when the command fails.
    ///
    /// Example: flotilla exec --cluster m1 -n shop web-7c9f -- ls /
    Exec(member_cmd::ExecArgs),
    /// Adopt a workload already running in a member into the fleet, without restarting it.
    ///
    /// Reads the object from the member, writes a hub template of it (its
    /// spec as it runs, pod template untouched; status and member-only
    /// fields such as uid, resourceVersion, managedFields, ownerReferences,
    /// a Service's cluster IPs and controller annotations left out),
    /// labelled `apps.flotilla.io/managed=true`, and a PropagationPolicy
    /// `promoted-<kind>-<name>` that places it on that cluster and takes the
    /// running object over (`conflictResolution: Overwrite`). Then waits
    /// until the member's agent applied it. From then on the hub template is
    /// the source of truth: edit it on the hub.
    ///
    /// Example: flotilla promote deployment/web -n shop --cluster m1
    Promote(migrate::PromoteArgs),
    /// Remove an application from the fleet, leaving its member objects running.
    ///
    /// Marks the template's Works to preserve their objects, waits until
    /// every member's agent confirmed that (nothing is deleted before),
    /// deletes the hub template (the agents drop Flotilla's marks and leave
    /// the objects in place) and the policy `promote` made, if nothing
    /// else uses it. Says what it did.
    ///
    /// Example: flotilla release deployment/web -n shop
    Release(migrate::ReleaseArgs),
    /// Divide a template's replicas again from scratch.
    ///
    /// A divided template keeps its clusters while they fit, so a cluster
    /// that joins or comes back gets nothing until the template is scaled.
    /// This writes a WorkloadRebalancer (apps.flotilla.io/v1alpha1) naming
    /// the template; the hub divides its replicas as if they had never been
    /// placed, once, and reports the result on the rebalancer's status
    /// (deleted --ttl-seconds after). --wait waits and prints the result.
    ///
    /// Example: flotilla rebalance deployment/web -n shop --wait
    Rebalance(rebalance_cmd::RebalanceArgs),
    /// Serve the web dashboard: the fleet, a cluster, applications, hosted clusters, live.
    ///
    /// Local mode (default) acts with your kubeconfig; --hub-mode serves
    /// beside the hub, where each user logs in with their own token.
    ///
    /// Example: flotilla dashboard --listen 127.0.0.1:8090
    Dashboard(dashboard_cmd::DashboardArgs),
    /// Progressive delivery: roll templates out in waves (status, history, pause, promote, abort, undo).
    #[command(subcommand)]
    Rollout(rollout_cmd::RolloutCommand),
    /// Print a shell completion script (bash, zsh, fish); --help says how to install it.
    #[command(long_about = completion::LONG_ABOUT)]
    Completion(completion::CompletionArgs),
    /// Build (or verify) the Kubernetes binaries in the cache and print their directory.
    #[command(
        long_about = "Build (or verify) the Kubernetes binaries in the cache and print their directory.\n\n\
        Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,\n\
        kubectl, the hollow node (kubemark) and etcd from Go modules into\n\
        ~/.cache/flotilla/kubernetes/vVERSION/bin (a few minutes the first time; under a\n\
        second once cached). Supported: 1.37 (the default) and 1.36."
    )]
    K8sBinaries {
        /// The Kubernetes release, e.g. 1.36.3 (default: 1.37.2).
        version: Option<String>,
    },
    /// Runs a local fleet in the foreground (what `up` starts in the background).
    #[command(hide = true)]
    FleetDaemon(fleet::daemon::DaemonArgs),
    /// One prefix of an etcd keyspace to a file and back (what prefixed
    /// EtcdBackups and their restores run on the machines).
    #[command(hide = true, subcommand)]
    EtcdKeys(etcd_cmd::EtcdKeysCommand),
    /// Joins a hollow kubelet to a hosted cluster with a bootstrap token,
    /// then runs it (what a hosted cluster's worker components run).
    #[command(hide = true)]
    KubeletJoin(KubeletJoinArgs),
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Let a cluster that asked to join in (sets hubAcceptsClient).
    Accept {
        name: String,
        #[command(flatten)]
        hub: HubKubeconfig,
    },
    // Hosted clusters: create, get, kubeconfig, upgrade, delete, rotate-certs (see kokctl).
    #[command(flatten)]
    Hosted(kokctl::HostedCommand),
}

#[derive(clap::Args)]
struct KubeletJoinArgs {
    /// Kubeconfig with the cluster's CA and a bootstrap token.
    #[arg(long)]
    bootstrap_kubeconfig: PathBuf,
    /// Where the kubelet's own kubeconfig is kept (reused while current).
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long)]
    node_name: String,
    /// Seconds to wait for the certificate.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
    /// The kubelet's command line.
    #[arg(last = true, required = true)]
    kubelet: Vec<String>,
}

async fn kubelet_join(args: KubeletJoinArgs) -> anyhow::Result<bool> {
    let join = flotilla_kok::kubelet_join::KubeletJoin {
        bootstrap_kubeconfig: args.bootstrap_kubeconfig,
        kubeconfig: args.kubeconfig,
        node_name: args.node_name.clone(),
        timeout: std::time::Duration::from_secs(args.timeout_seconds),
    };
    flotilla_kok::kubelet_join::ensure_credential(&join).await?;
    let (program, rest) =
        args.kubelet.split_first().ok_or_else(|| anyhow::anyhow!("no kubelet command given"))?;
    Err(flotilla_kok::kubelet_join::exec_kubelet(&args.node_name, program, rest).into())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kube_client=off"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => fleet::up(args).await,
        Command::Status(args) => fleet::status(args).await,
        Command::Down(args) => fleet::down(args).await,
        Command::K8sBinaries { version } => binaries::ensure(version.as_deref()).map(|dir| {
            println!("{}", dir.display());
            true
        }),
        Command::Completion(args) => {
            completion::write(args.shell, &mut Cli::command(), &mut std::io::stdout());
            Ok(true)
        }
        Command::Hub(c) => hub_cmd::hub(c).await,
        Command::Token(c) => fleetctl::token(c).await,
        Command::Join(a) => fleetctl::join(a).await,
        Command::Agent(a) => fleetctl::agent(a).await,
        Command::NodeAgent(a) => node_agent::run(a).await,
        Command::Unjoin(a) => fleetctl::unjoin(a).await,
        Command::Cluster(ClusterCommand::Accept { name, hub }) => fleetctl::accept(name, hub).await,
        Command::Cluster(ClusterCommand::Hosted(c)) => kokctl::run(c).await,
        Command::Images(c) => kokctl::images(c).await,
        Command::Get(c) => get_cmd::get(c).await,
        Command::Logs(a) => member_cmd::logs(a).await,
        Command::Exec(a) => member_cmd::exec(a).await,
        Command::Promote(a) => migrate::promote(a).await,
        Command::Release(a) => migrate::release(a).await,
        Command::Rebalance(a) => rebalance_cmd::rebalance(a).await,
        Command::Rollout(c) => rollout_cmd::run(c).await,
        Command::Dashboard(a) => dashboard_cmd::run(a).await.map(|()| true),
        Command::Etcd(c) => etcd_cmd::run(c).await,
        Command::EtcdKeys(c) => etcd_cmd::etcd_keys(c).await,
        Command::FleetDaemon(args) => fleet::daemon::run(args).await.map(|()| true),
        Command::KubeletJoin(args) => kubelet_join(args).await,
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
