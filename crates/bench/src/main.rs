//! `flotilla-bench`: commands that print the figures each issue asks for.
//!
//! Not part of the shipped `flotilla` binary: the benchmarks start local
//! fleets, hubs and agents by running the `flotilla` binary beside this one
//! (see [`flotilla_binary`]).

mod apply;
mod apps;
mod dashboard;
mod deschedule;
mod estimate;
mod faults;
mod flotilla_binary;
mod foundation;
mod hosted_join;
mod hpa;
mod hub_faults;
mod interpreter;
mod kok;
mod measure;
mod membership;
mod metrics;
mod node_pool;
mod real_nodes;
mod rollout;
mod scheduling;
mod simulated_agent;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flotilla-bench",
    version,
    about = "Print Flotilla's benchmark figures (start-up times, latencies, memory)"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Foundation figures: localkube cluster start time, `flotilla up` time to
    /// ready (warm cache) and the local fleet's resident memory.
    Foundation(foundation::FoundationArgs),
    /// Fleet membership figures: join -> Available latency (p50/p99), failure
    /// detection, agent memory, and (with --scale N) the hub with N agents.
    Membership(membership::MembershipArgs),
    /// Scheduler figures: time of one scheduling decision (p50/p99/max) on
    /// synthetic fleets of 1,000 and 10,000 clusters, per strategy.
    Scheduling(scheduling::SchedulingArgs),
    /// Capacity estimate per node: time of one estimate (p50/max) per pod
    /// shape on a synthetic member of 1,000 mixed nodes, 50 shapes; the
    /// size and cost of the agent's node report.
    Estimate(estimate::EstimateArgs),
    /// Descheduling figures: time of one descheduling decision (p50/p99/max)
    /// for a binding spread over 1,000 clusters with replicas stuck,
    /// young and recorded, and of the capped re-division that follows.
    Deschedule(deschedule::DescheduleArgs),
    /// Applications across the fleet: distribution latency (template change
    /// -> applied in every member, p50/p99) and the hub controller's memory
    /// with many templates after a cold restart.
    Apps(apps::AppsArgs),
    /// Kube-on-Kube: hosted cluster create -> Ready (one, in a row, at
    /// once), the operator's memory per hosted cluster, and a rolling
    /// upgrade of two apiservers under a polling client.
    Kok(kok::KokArgs),
    /// A hosted cluster joining the fleet: seconds from its HostedCluster
    /// Ready to its ManagedCluster Available (p50/max over clusters created
    /// one after another), with the steps between.
    HostedJoin(hosted_join::HostedJoinArgs),
    /// Faults without harm: a member API restart, a shared etcd blip, a
    /// member gone for good and back: time to converge, replicas moved,
    /// lost and duplicated, failover time after the toleration, peak surplus.
    Faults(faults::FaultsArgs),
    /// Faults of the hub in a local fleet: time to converge after `hub run`
    /// is killed mid-burst and after the hub's API server is killed, with
    /// the replicas lost and duplicated.
    HubFaults(hub_faults::HubFaultsArgs),
    /// Real worker nodes (containerd, kubelet, kube-proxy): node join ->
    /// Ready, pod create -> Running, kubelet killed -> node Ready again
    /// (p50/p90/max). Needs root and scripts/node-runtime.sh.
    RealNodes(real_nodes::RealNodesArgs),
    /// Node pools of real nodes: pool created -> every node Ready, and a
    /// rolling upgrade of the pool (1.36.3 -> 1.37.2, maxUnavailable 1)
    /// under a Deployment with a PodDisruptionBudget: time, time per node,
    /// seconds below the budget's minimum. Needs root and
    /// scripts/node-runtime.sh.
    NodePool(node_pool::NodePoolArgs),
    /// Progressive delivery over members with hollow nodes and one real
    /// node: the rollout's own overhead per wave on a healthy change (zero
    /// soak), and a crashing release caught in the last wave: failure
    /// visible -> rollback started -> every member back (p50/max). Needs
    /// root and scripts/node-runtime.sh.
    Rollout(rollout::RolloutArgs),
    /// Custom workloads: the cost of judging a member object by a
    /// WorkloadInterpreter's CEL health rule (compile + evaluate, p50/p99),
    /// short and longest admitted expressions, objects with up to 1,000
    /// conditions. Pure: no cluster.
    Interpreter(interpreter::InterpreterArgs),
    /// Fleet autoscaling: a FederatedHPA over two members on real nodes
    /// with real metrics-servers (hub sync 15 s): load switched on / off
    /// in one member -> replicas changed in the members, and from the
    /// agent's usage report on (min/median/max). Needs root,
    /// scripts/node-runtime.sh and scripts/metrics-server.sh.
    Hpa(hpa::HpaArgs),
    /// The web dashboard's fleet page with 1,000 ManagedClusters on a real
    /// hub, in Debian's Chromium (playwright-core): time to interactive
    /// (load -> all 1,000 counted and the first screen of rows painted; the
    /// table draws only the rows in view) and a fleet change -> visible on
    /// the open page (p50/p99/max). Needs scripts/test-tools.sh.
    Dashboard(dashboard::DashboardArgs),
    /// Metrics: time of a `/metrics` scrape of `hub run` holding 5,000
    /// templates (p50/p99/max; goal under 50 ms) and the per-reconcile cost
    /// of the instrumentation every controller runs in.
    Metrics(metrics::MetricsArgs),
}

async fn run(bench: Bench) -> anyhow::Result<bool> {
    match bench {
        Bench::Foundation(args) => foundation::foundation(args).await,
        Bench::Membership(args) => membership::membership(args).await,
        Bench::Scheduling(args) => scheduling::run(args),
        Bench::Estimate(args) => estimate::run(args),
        Bench::Deschedule(args) => deschedule::run(args),
        Bench::Apps(args) => apps::apps(args).await,
        Bench::Kok(args) => kok::kok(args).await,
        Bench::HostedJoin(args) => hosted_join::hosted_join(args).await,
        Bench::Faults(args) => faults::faults(args).await,
        Bench::Rollout(args) => rollout::rollout(args).await,
        Bench::HubFaults(args) => hub_faults::hub_faults(args).await,
        Bench::RealNodes(args) => real_nodes::real_nodes(args).await,
        Bench::NodePool(args) => node_pool::node_pool(args).await,
        Bench::Interpreter(args) => interpreter::run(args),
        Bench::Hpa(args) => hpa::hpa(args).await,
        Bench::Dashboard(args) => dashboard::dashboard(args).await,
        Bench::Metrics(args) => metrics::metrics(args).await,
    }
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
    match run(cli.bench).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
