//! Hosted clusters from the command line: `flotilla cluster create | get |
//! kubeconfig | upgrade | delete | rotate-certs`. Each command writes the
//! HostedCluster (and, for `create`, its EtcdCluster) on the hub, then —
//! unless `--no-wait` — polls its status until the hub's operators have
//! done the work, showing one progress line.
//!
//! The decisions (the objects built from the flags, what a status says is
//! still missing, the tables) are plain functions tested below; the command
//! functions only read and write the API around them.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{ContentArrangement, Table};
use flotilla_api::kok::{
    conditions, Addon, ControlPlaneSpec, EtcdCluster, EtcdClusterSpec, HostedCluster, HostedClusterSpec,
    HostedEtcd, NodesSpec, Runtime, UpgradeState, ROTATE_CERTS_ANNOTATION,
};
use flotilla_api::machine::{ComponentState, Machine};
use flotilla_kok_core::hosted::{owner_label_value, parse_component_name, Part, OWNER_LABEL};
use flotilla_kok_core::upgrade::reasons;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::fleetctl::HubKubeconfig;

/// Every line this module prints fits in this many columns.
const WIDTH: usize = 100;
/// How often a waiting command looks at the status again.
const POLL: Duration = Duration::from_millis(500);
/// The add-ons a new cluster gets unless `--no-addons`.
/// The Kubernetes version of the binary cache.
pub const DEFAULT_VERSION: &str = "1.20.2";
const DEFAULT_ADDONS: &[&str] = &["coredns"];
/// The readiness conditions, in the order the operator gets to them: the
/// first one not True is what a cluster is waiting for.
const READINESS_ORDER: &[&str] = &[
    conditions::VALID,
    conditions::ETCD_READY,
    conditions::CERTIFICATES_READY,
    conditions::KUBE_APISERVER_READY,
    conditions::KUBE_CONTROLLER_MANAGER_READY,
    conditions::KUBE_SCHEDULER_READY,
    conditions::ADDONS_APPLIED,
    conditions::NODES_READY,
];

// ---------------------------------------------------------------- arguments

#[derive(Subcommand, Debug)]
pub enum HostedCommand {
    /// Create a hosted cluster (etcd, control plane, nodes) and wait until it is Ready.
    // Help text is broken into lines by hand: clap does not wrap without its
    // wrap_help feature, and every line must fit in 100 columns.
    #[command(long_about = "Create a hosted cluster and wait until it is Ready.\n\n\
        Creates an EtcdCluster NAME-etcd (owned by the cluster: deleted with it) and a\n\
        HostedCluster NAME in --namespace on the hub. The hub's operators (`flotilla hub run`)\n\
        run etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the worker\n\
        kubelets on the Machines of the node agents (`flotilla node-agent`), then install the\n\
        add-ons.\n\n\
        Waits (up to --timeout) showing which condition is not True yet, then prints how to\n\
        use the cluster. Exits 1 when the spec is refused (Valid=False) or on timeout, with\n\
        the conditions' messages. Refuses to touch a cluster that exists already.")]
    Create(CreateArgs),
    /// List the hosted clusters, or show one in detail (conditions, certificates...).
    Get(GetArgs),
    /// Print a hosted cluster's admin kubeconfig.
    #[command(long_about = "Print a hosted cluster's admin kubeconfig on stdout.\n\n\
        It is read from the Secret the cluster's status names (key `kubeconfig`); a cluster\n\
        that is not provisioned yet has none.\n\n\
        Example:\n  flotilla cluster kubeconfig c1 > c1.kubeconfig\n  \
        kubectl --kubeconfig c1.kubeconfig get nodes")]
    Kubeconfig(KubeconfigArgs),
    /// Move a hosted cluster to another Kubernetes version and wait for the outcome.
    #[command(long_about = "Move a hosted cluster to another Kubernetes version.\n\n\
        Sets spec.version; the operator moves one instance at a time (kube-apiserver first)\n\
        and rolls back when a step does not become healthy in time. Waits (up to --timeout)\n\
        showing the step in progress. Exits 0 when the upgrade Succeeded; 1 when it was\n\
        RolledBack or Refused (e.g. a skipped minor version, or a version the operator has\n\
        no binaries for), with the reason.")]
    Upgrade(UpgradeArgs),
    /// Delete a hosted cluster and wait until its processes, data and Secrets are gone.
    #[command(long_about = "Delete a hosted cluster.\n\n\
        Deletes the HostedCluster; the operator then stops its processes on the Machines,\n\
        removes its fleet membership (ManagedCluster), its etcd data (the EtcdCluster it\n\
        owns, or its key prefix in a shared one) and its Secrets, and lets the object go.\n\
        Waits (up to --timeout) until the HostedCluster and its own EtcdCluster are gone.")]
    Delete(DeleteArgs),
    /// Reissue a hosted cluster's certificates and wait until it is Ready again.
    #[command(long_about = "Reissue a hosted cluster's certificates now.\n\n\
        Sets the annotation kok.flotilla.io/rotate-certs to leaves/<unix-seconds> (or\n\
        ca/<unix-seconds> with --ca). The operator reissues every leaf certificate (with --ca\n\
        first the CAs, so kubeconfigs fetched before stop working) and the node agents\n\
        restart the control plane with them. Waits (up to --timeout) until the operator has\n\
        handled this request, every control-plane process has restarted since, and the\n\
        cluster is Ready.")]
    RotateCerts(RotateCertsArgs),
}

/// Which hub and namespace the HostedCluster lives in.
#[derive(Args, Debug, Clone)]
pub struct Target {
    #[command(flatten)]
    pub hub: HubKubeconfig,
    /// Namespace of the HostedCluster on the hub.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
}

#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Return once the change is written, without waiting for the operator
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait before giving up (then exit 1, saying what is not done)
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// Supervised processes on the Machines, run by their node agents.
    Process,
    /// Deployments in the meta cluster, namespace kok-NAME.
    Kubernetes,
}

impl From<RuntimeArg> for Runtime {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Process => Runtime::Process,
            RuntimeArg::Kubernetes => Runtime::Kubernetes,
        }
    }
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct CreateArgs {
    /// Name of the cluster (lowercase letters, digits, '-'); also its name in the fleet.
    pub name: String,
    /// Kubernetes version of the control plane and the nodes.
    #[arg(long, default_value = DEFAULT_VERSION)]
    pub version: String,
    /// etcd members, each on its own Machine.
    #[arg(long, default_value = "1", value_parser = etcd_members_parser())]
    pub etcd_members: i32,
    /// etcd version [default: the version of the etcd binary in the cache]
    #[arg(long)]
    pub etcd_version: Option<String>,
    /// Where the control plane runs
    ///
    /// The cluster's etcd runs the same way: members on the Machines, or a
    /// StatefulSet in the meta cluster.
    #[arg(long, value_enum, default_value_t = RuntimeArg::Process)]
    pub runtime: RuntimeArg,
    /// Instances of each control-plane component, 1-5 (more elect a leader)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=5))]
    pub replicas: i32,
    /// Worker nodes (hollow kubelets on the Machines); 0 for none
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(0..=1000))]
    pub nodes: i32,
    /// Install no add-ons (by default: coredns).
    #[arg(long)]
    pub no_addons: bool,
    /// Run the control plane only on Machines labelled
    /// kok.flotilla.io/machine-pool=POOL (a lost one's instances move to
    /// another of the pool) [default: any Machine]
    #[arg(long, value_name = "POOL")]
    pub machine_pool: Option<String>,
    /// Run the worker nodes only on Machines labelled
    /// kok.flotilla.io/machine-pool=POOL [default: any Machine]
    #[arg(long, value_name = "POOL")]
    pub node_pool: Option<String>,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

fn etcd_members_parser() -> impl clap::builder::TypedValueParser<Value = i32> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["1", "3", "5"]).map(|s| match s.as_str() {
        "3" => 3,
        "5" => 5,
        _ => 1,
    })
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct GetArgs {
    /// Show this cluster in detail; without it, list the clusters.
    pub name: Option<String>,
    /// List the clusters of every namespace.
    #[arg(long, short = 'A', conflicts_with = "name")]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct KubeconfigArgs {
    /// Name of the hosted cluster.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct UpgradeArgs {
    /// Name of the hosted cluster.
    pub name: String,
    /// The Kubernetes version to move to (one minor version at a time).
    #[arg(long)]
    pub version: String,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct DeleteArgs {
    /// Name of the hosted cluster.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args, Debug)]
// Each flag's help on its own line: clap does not wrap help here.
#[command(next_line_help = true)]
pub struct RotateCertsArgs {
    /// Name of the hosted cluster.
    pub name: String,
    /// Also replace the CAs (kubeconfigs fetched before stop working)
    #[arg(long)]
    pub ca: bool,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

// ---------------------------------------------------------------- building objects

/// What `create` asks for, from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRequest {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub etcd_members: i32,
    pub etcd_version: String,
    pub runtime: Runtime,
    pub replicas: i32,
    pub nodes: i32,
    pub addons: bool,
    /// Machine pool of the control plane, and of the nodes.
    pub machine_pool: Option<String>,
    pub node_pool: Option<String>,
}

/// The dedicated EtcdCluster of a new cluster.
pub fn etcd_name(cluster: &str) -> String {
    format!("{cluster}-etcd")
}

/// The cluster's own EtcdCluster, labelled so that the operator deletes it
/// with the cluster (and leaves any other EtcdCluster alone).
pub fn build_etcd_cluster(req: &ClusterRequest) -> EtcdCluster {
    let mut etcd = EtcdCluster::new(
        &etcd_name(&req.name),
        EtcdClusterSpec {
            members: req.etcd_members,
            version: req.etcd_version.clone(),
            // Beside the control plane: on the Machines, or in the meta cluster.
            runtime: req.runtime,
            ..Default::default()
        },
    );
    etcd.metadata.namespace = Some(req.namespace.clone());
    etcd.metadata.labels =
        Some(BTreeMap::from([(OWNER_LABEL.to_string(), owner_label_value(&req.namespace, &req.name))]));
    etcd
}

pub fn build_hosted_cluster(req: &ClusterRequest) -> HostedCluster {
    let addons = if req.addons {
        DEFAULT_ADDONS.iter().map(|name| Addon { name: name.to_string(), version: None }).collect()
    } else {
        Vec::new()
    };
    let mut hc = HostedCluster::new(
        &req.name,
        HostedClusterSpec {
            version: req.version.clone(),
            etcd: HostedEtcd { cluster_ref: Some(etcd_name(&req.name)), shared: None },
            control_plane: ControlPlaneSpec {
                replicas: req.replicas,
                runtime: req.runtime,
                machine_pool: req.machine_pool.clone(),
                ..Default::default()
            },
            network: Default::default(),
            addons,
            nodes: (req.nodes > 0)
                .then_some(NodesSpec { count: req.nodes, machine_pool: req.node_pool.clone() }),
        },
    );
    hc.metadata.namespace = Some(req.namespace.clone());
    hc
}

/// The version in `etcd --version` output ("etcd Version: 3.4.23").
pub fn parse_etcd_version(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The annotation value that asks for a rotation at `unix_seconds`.
pub fn rotation_value(ca: bool, unix_seconds: i64) -> String {
    format!("{}/{unix_seconds}", if ca { "ca" } else { "leaves" })
}

// ---------------------------------------------------------------- reading a status

/// What a waiting command makes of what it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not there yet: what it waits for, in one line.
    Pending(String),
    /// Done, with a one-line summary.
    Done(String),
    /// It will not get there: why.
    Failed(String),
}

fn condition_true(c: Option<&Condition>) -> bool {
    c.is_some_and(|c| c.status == "True")
}

/// The status describes the current spec (the operator has seen the last change).
fn observed(hc: &HostedCluster) -> bool {
    let seen = hc.status.as_ref().and_then(|s| s.observed_generation);
    match hc.metadata.generation {
        Some(generation) => seen.is_some_and(|s| s >= generation),
        None => seen.is_some(),
    }
}

/// Ready, for the spec as it is now.
pub fn is_ready(hc: &HostedCluster) -> bool {
    observed(hc) && condition_true(hc.condition(conditions::READY))
}

fn phase_of(hc: &HostedCluster) -> String {
    // The operator writes no status while it cleans up, so the last phase
    // it wrote (often Ready) would hide the deletion.
    if hc.metadata.deletion_timestamp.is_some() {
        return "Deleting".into();
    }
    match hc.status.as_ref().and_then(|s| s.phase) {
        Some(p) => format!("{p:?}"),
        None => "Pending".into(),
    }
}

/// The first readiness condition that is not True, with its message.
pub fn first_not_ready(hc: &HostedCluster) -> Option<&Condition> {
    let status = hc.status.as_ref()?;
    READINESS_ORDER
        .iter()
        .filter_map(|t| status.conditions.iter().find(|c| c.type_ == *t))
        .find(|c| c.status != "True")
        .or_else(|| status.conditions.iter().find(|c| c.type_ == conditions::READY && c.status != "True"))
}

/// "Phase · Condition: message": what a cluster is waiting for.
pub fn waiting_for(hc: &HostedCluster) -> String {
    if hc.status.is_none() {
        return "Pending · waiting for the operator to pick it up (is `flotilla hub run` running?)".into();
    }
    let phase = phase_of(hc);
    match first_not_ready(hc) {
        Some(c) => format!("{phase} · {}: {}", c.type_, one_line(&c.message)),
        None if !observed(hc) => format!("{phase} · waiting for the operator to see the latest change"),
        None => phase,
    }
}

/// Every condition that is not True, one per line, for an error message.
pub fn not_ready_summary(hc: &HostedCluster) -> String {
    let Some(status) = hc.status.as_ref() else {
        return "  the operator has not written any status (is `flotilla hub run` running?)".into();
    };
    let lines: Vec<String> = status
        .conditions
        .iter()
        .filter(|c| c.status != "True")
        .map(|c| format!("  {} ({}): {}", c.type_, c.reason, one_line(&c.message)))
        .collect();
    if lines.is_empty() {
        "  every condition is True, but the operator has not seen the latest change yet".into()
    } else {
        lines.join("\n")
    }
}

/// `create`: Ready, refused, or what it waits for.
pub fn create_verdict(hc: &HostedCluster) -> Verdict {
    let valid = hc.condition(conditions::VALID);
    if observed(hc) && valid.is_some_and(|c| c.status == "False") {
        return Verdict::Failed(format!(
            "the spec is refused: {}",
            valid.map(|c| c.message.as_str()).unwrap_or("")
        ));
    }
    if is_ready(hc) {
        return Verdict::Done(format!("Ready at {}", endpoint_of(hc)));
    }
    Verdict::Pending(waiting_for(hc))
}

fn endpoint_of(hc: &HostedCluster) -> String {
    hc.status.as_ref().and_then(|s| s.endpoint.clone()).unwrap_or_else(|| "-".into())
}

/// `upgrade`: the outcome of moving to `target`, once the operator has seen
/// the spec at `generation`.
pub fn upgrade_verdict(hc: &HostedCluster, target: &str, generation: i64) -> Verdict {
    let Some(status) = hc.status.as_ref() else { return Verdict::Pending(waiting_for(hc)) };
    if status.observed_generation.is_none_or(|g| g < generation) {
        return Verdict::Pending(format!(
            "{} · waiting for the operator to see version {target}",
            phase_of(hc)
        ));
    }
    let upgraded = hc.condition(conditions::UPGRADED);
    if let Some(c) = upgraded.filter(|c| {
        c.status == "False" && (c.reason == reasons::REFUSED || c.reason == reasons::UNKNOWN_VERSION)
    }) {
        return Verdict::Failed(format!("refused ({}): {}", c.reason, c.message));
    }
    match status.upgrade.as_ref().filter(|u| u.to == target) {
        Some(u) if u.state == UpgradeState::Succeeded => {
            Verdict::Done(format!("upgraded from {} to {}", u.from, u.to))
        }
        Some(u) if u.state == UpgradeState::RolledBack => {
            let why = u
                .message
                .clone()
                .or_else(|| upgraded.map(|c| c.message.clone()))
                .unwrap_or_else(|| "no reason given".into());
            Verdict::Failed(format!(
                "rolled back to {}: {why} (it is not retried until spec.version is set to another version)",
                u.from
            ))
        }
        Some(u) => {
            let verb = if u.state == UpgradeState::RollingBack { "Rolling back" } else { "Upgrading" };
            let step = match (&u.component, u.instance) {
                (Some(c), Some(i)) => format!("{c}/{i}"),
                (Some(c), None) => c.clone(),
                _ => "next step".into(),
            };
            let done =
                if u.done.is_empty() { String::new() } else { format!(" (done: {})", u.done.join(", ")) };
            Verdict::Pending(format!("{verb} {} → {}: {step}{done}", u.from, u.to))
        }
        // No upgrade record for this target: a cluster that never ran another
        // version (still provisioning) is done once it is Ready at it.
        None if status.version.as_deref() == Some(target) && is_ready(hc) => {
            Verdict::Done(format!("runs {target}"))
        }
        None => Verdict::Pending(waiting_for(hc)),
    }
}

/// A component of cluster `namespace/name` on a Machine, as its node agent
/// reports it.
struct RunningComponent<'a> {
    machine: String,
    part: Part,
    name: &'a str,
    state: ComponentState,
    healthy: bool,
    started_at: Option<&'a Time>,
}

fn running_components<'a>(machines: &'a [Machine], namespace: &str, name: &str) -> Vec<RunningComponent<'a>> {
    machines
        .iter()
        .flat_map(|m| {
            let machine = m.name_any();
            m.status.iter().flat_map(|s| s.components.iter()).filter_map(move |c| {
                let (part, _) = parse_component_name(&c.name, namespace, name)?;
                Some(RunningComponent {
                    machine: machine.clone(),
                    part,
                    name: &c.name,
                    state: c.state,
                    healthy: c.healthy == Some(true),
                    started_at: c.started_at.as_ref(),
                })
            })
        })
        .collect()
}

/// Components of the cluster (and of its own etcd) that Machines still
/// declare or run, as `machine/component`.
pub fn leftover_components(
    machines: &[Machine],
    namespace: &str,
    name: &str,
    etcd: Option<&str>,
) -> Vec<String> {
    let etcd_component = etcd.map(|e| flotilla_kok_core::etcd::component_name(namespace, e));
    let ours =
        |c: &str| parse_component_name(c, namespace, name).is_some() || etcd_component.as_deref() == Some(c);
    let mut out: Vec<String> = machines
        .iter()
        .flat_map(|m| {
            let machine = m.name_any();
            let declared = m.spec.components.iter().map(|c| c.name.as_str());
            let running = m.status.iter().flat_map(|s| s.components.iter()).map(|c| c.name.as_str());
            declared
                .chain(running)
                .filter(|c| ours(c))
                .map(move |c| format!("{machine}/{c}"))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `rotate-certs`: done once the operator handled `value` by issuing
/// certificates no earlier than `requested_at` (unix seconds), every
/// control-plane process restarted since (so it uses them), and the
/// cluster is Ready.
pub fn rotation_verdict(hc: &HostedCluster, machines: &[Machine], value: &str, requested_at: i64) -> Verdict {
    let Some(status) = hc.status.as_ref() else { return Verdict::Pending(waiting_for(hc)) };
    if status.handled_rotation.as_deref() != Some(value) {
        return Verdict::Pending(format!(
            "{} · waiting for the operator to reissue the certificates",
            phase_of(hc)
        ));
    }
    let Some(issued) = status.certificates_issued_at.as_ref().filter(|t| t.0.as_second() >= requested_at)
    else {
        return Verdict::Pending(format!("{} · waiting for the new certificates", phase_of(hc)));
    };
    let namespace = hc.namespace().unwrap_or_default();
    let stale: Vec<String> = running_components(machines, &namespace, &hc.name_any())
        .into_iter()
        .filter(|c| c.part != Part::Kubelet)
        .filter(|c| {
            c.state != ComponentState::Running || !c.healthy || c.started_at.is_none_or(|s| s.0 < issued.0)
        })
        .map(|c| format!("{} on {}", c.name, c.machine))
        .collect();
    if !stale.is_empty() {
        return Verdict::Pending(format!("restarting with the new certificates: {}", stale.join(", ")));
    }
    if !is_ready(hc) {
        return Verdict::Pending(waiting_for(hc));
    }
    Verdict::Done(format!("certificates reissued ({value})"))
}

/// `delete`: done once the HostedCluster and its own EtcdCluster are gone.
pub fn deletion_verdict(
    hc: Option<&HostedCluster>,
    etcd_left: Option<&str>,
    machines: &[Machine],
    namespace: &str,
    name: &str,
) -> Verdict {
    let left = leftover_components(machines, namespace, name, etcd_left);
    let mut on: Vec<&str> = left.iter().filter_map(|l| l.split_once('/')).map(|(m, _)| m).collect();
    on.dedup();
    let components = format!("{} component(s) on {}", left.len(), on.join(", "));
    match (hc, etcd_left) {
        (Some(_), _) if !left.is_empty() => {
            Verdict::Pending(format!("Deleting · the operator is stopping {components}"))
        }
        (Some(_), _) => Verdict::Pending("Deleting · the operator is removing data and Secrets".into()),
        (None, Some(etcd)) if !left.is_empty() => {
            Verdict::Pending(format!("Deleting · EtcdCluster {etcd} is stopping {components}"))
        }
        (None, Some(etcd)) => Verdict::Pending(format!("Deleting · EtcdCluster {etcd} is being removed")),
        (None, None) => Verdict::Done("deleted".into()),
    }
}

// ---------------------------------------------------------------- output

/// `s` cut to `width` characters (with an ellipsis when cut).
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// "5s", "3m", "2h", "4d".
pub fn age(created: Option<&Time>, now: Timestamp) -> String {
    let Some(created) = created else { return "-".into() };
    let secs = now.duration_since(created.0).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// What follows a command when the hub is not the default one.
fn hub_flag(target: &Target) -> String {
    let default = crate::default_state_dir().join("hub.kubeconfig");
    if target.hub.path == default || std::env::var_os("FLOTILLA_HUB_KUBECONFIG").is_some() {
        String::new()
    } else {
        format!(" --kubeconfig {}", target.hub.path.display())
    }
}

fn namespace_flag(namespace: &str) -> String {
    if namespace == "default" {
        String::new()
    } else {
        format!(" -n {namespace}")
    }
}

/// How to use a Ready cluster.
pub fn usage_hint(name: &str, namespace: &str, endpoint: &str, hub_flag: &str) -> String {
    let ns = namespace_flag(namespace);
    format!(
        "  API server: {endpoint}\n\
         Use it:\n  \
         flotilla cluster kubeconfig {name}{ns}{hub_flag} > {name}.kubeconfig\n  \
         kubectl --kubeconfig {name}.kubeconfig get nodes"
    )
}

fn table(header: Vec<&str>) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(WIDTH as u16)
        .set_header(header);
    t
}

fn version_cell(hc: &HostedCluster) -> String {
    let running = hc.status.as_ref().and_then(|s| s.version.clone());
    match running {
        Some(v) if v == hc.spec.version => v,
        Some(v) => format!("{v} (→{})", hc.spec.version),
        None => format!("({})", hc.spec.version),
    }
}

fn nodes_cell(hc: &HostedCluster) -> String {
    let wanted = hc.spec.nodes.as_ref().map_or(0, |n| n.count);
    let ready = hc.status.as_ref().and_then(|s| s.ready_nodes).unwrap_or(0);
    format!("{ready}/{wanted}")
}

/// One row of the list: NAME, VERSION, PHASE, ENDPOINT, NODES, AGE
/// (NAMESPACE first with `all_namespaces`).
pub fn list_row(hc: &HostedCluster, all_namespaces: bool, now: Timestamp) -> Vec<String> {
    let mut row = Vec::new();
    if all_namespaces {
        row.push(hc.namespace().unwrap_or_default());
    }
    row.extend([
        hc.name_any(),
        version_cell(hc),
        phase_of(hc),
        endpoint_of(hc),
        nodes_cell(hc),
        age(hc.metadata.creation_timestamp.as_ref(), now),
    ]);
    row
}

pub fn render_list(clusters: &[HostedCluster], all_namespaces: bool, now: Timestamp) -> String {
    let mut header = vec!["NAME", "VERSION", "PHASE", "ENDPOINT", "NODES", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut t = table(header);
    for hc in clusters {
        t.add_row(list_row(hc, all_namespaces, now));
    }
    t.to_string()
}

/// "2027-01-01 12:00 (in 364d)".
fn expiry(not_after: &Time, now: Timestamp) -> String {
    let secs = not_after.0.duration_since(now).as_secs();
    let left = match secs {
        s if s <= 0 => "EXPIRED".to_string(),
        s if s < 7200 => format!("in {}m", s / 60),
        s if s < 172_800 => format!("in {}h", s / 3600),
        s => format!("in {}d", s / 86400),
    };
    format!("{} ({left})", not_after.0.strftime("%Y-%m-%d %H:%M UTC"))
}

/// How many certificates the detail view lists (soonest expiry first).
const CERTIFICATES_SHOWN: usize = 5;

/// The detail view of one cluster.
pub fn render_detail(hc: &HostedCluster, etcd: Option<&EtcdCluster>, now: Timestamp) -> String {
    let status = hc.status.clone().unwrap_or_default();
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("Name:        {namespace}/{name}"));
    line(format!("Phase:       {}", phase_of(hc)));
    line(format!("Version:     {} (spec {})", status.version.as_deref().unwrap_or("-"), hc.spec.version));
    line(format!("Endpoint:    {}", endpoint_of(hc)));
    line(format!(
        "Control:     {:?} runtime, {} replica(s)",
        hc.spec.control_plane.runtime, hc.spec.control_plane.replicas
    ));
    let etcd_name = hc.spec.etcd.resolve().map(|(e, _)| e.to_string()).unwrap_or_else(|| "-".into());
    let etcd_state = etcd
        .and_then(|e| e.status.as_ref())
        .map(|s| {
            format!(
                " ({}/{} members ready, {})",
                s.ready_members,
                etcd.map_or(0, |e| e.spec.members),
                s.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "no phase".into())
            )
        })
        .unwrap_or_else(|| if etcd.is_none() { " (not found)".into() } else { String::new() });
    line(format!("Etcd:        {etcd_name}{etcd_state}"));
    line(format!("Nodes:       {} Ready", nodes_cell(hc)));
    let addons: Vec<&str> = hc.spec.addons.iter().map(|a| a.name.as_str()).collect();
    line(format!("Add-ons:     {}", if addons.is_empty() { "-".into() } else { addons.join(", ") }));
    if let Some(secret) = &status.admin_kubeconfig_secret {
        line(format!("Kubeconfig:  Secret {secret} (`flotilla cluster kubeconfig {name}`)"));
    }

    if !status.instances.is_empty() {
        line(String::new());
        line("Instances:".into());
        let mut t = table(vec!["NAME", "MACHINE", "VERSION", "HEALTHY"]);
        for i in &status.instances {
            t.add_row(vec![
                i.name.clone(),
                i.machine.clone().unwrap_or_else(|| "-".into()),
                i.version.clone().unwrap_or_else(|| "-".into()),
                i.healthy.to_string(),
            ]);
        }
        line(t.to_string());
    }

    if !status.conditions.is_empty() {
        line(String::new());
        line("Conditions:".into());
        let mut t = table(vec!["TYPE", "STATUS", "REASON", "MESSAGE"]);
        for c in &status.conditions {
            t.add_row(vec![c.type_.clone(), c.status.clone(), c.reason.clone(), one_line(&c.message)]);
        }
        line(t.to_string());
    }

    if let Some(u) = &status.upgrade {
        line(String::new());
        let step = match (&u.component, u.instance) {
            (Some(c), Some(i)) => format!(", now {c}/{i}"),
            _ => String::new(),
        };
        line(format!("Upgrade:     {} → {}: {:?}{step}", u.from, u.to, u.state));
        if !u.done.is_empty() {
            line(format!("  done: {}", u.done.join(", ")));
        }
        if let Some(m) = &u.message {
            line(format!("  {}", one_line(m)));
        }
    }

    if !status.certificates.is_empty() {
        line(String::new());
        let mut certs = status.certificates.clone();
        certs.sort_by(|a, b| a.not_after.0.cmp(&b.not_after.0).then_with(|| a.name.cmp(&b.name)));
        line(format!(
            "Certificates (soonest expiry first, {} of {}):",
            certs.len().min(CERTIFICATES_SHOWN),
            certs.len()
        ));
        let mut t = table(vec!["NAME", "EXPIRES"]);
        for c in certs.iter().take(CERTIFICATES_SHOWN) {
            t.add_row(vec![c.name.clone(), expiry(&c.not_after, now)]);
        }
        line(t.to_string());
    }
    out.lines().map(|l| fit(l.trim_end(), WIDTH)).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------- waiting

/// One progress line: a spinner on a terminal, otherwise a line on stderr
/// each time what it says changes (for logs and CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last: String,
}

impl Progress {
    fn start() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar, started: Instant::now(), last: String::new() }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn show(&mut self, what: &str) {
        let line = fit(&format!("[{:>3}s] {what}", self.started.elapsed().as_secs()), WIDTH - 2);
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None if what != self.last => eprintln!("{line}"),
            None => {}
        }
        self.last = what.to_string();
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Polls `look` until it says Done (→ Ok) or Failed or the time is up (→ Err).
async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut look: F) -> anyhow::Result<(String, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Verdict, String)>>,
{
    let mut progress = Progress::start();
    let mut last_detail = String::new();
    loop {
        match look().await {
            Ok((Verdict::Done(summary), _)) => {
                progress.finish();
                return Ok((summary, progress.elapsed()));
            }
            Ok((Verdict::Failed(why), detail)) => {
                progress.finish();
                bail!(
                    "{what}: {why}{}",
                    if detail.is_empty() { String::new() } else { format!("\n{detail}") }
                );
            }
            Ok((Verdict::Pending(line), detail)) => {
                progress.show(&line);
                last_detail = detail;
            }
            // The hub may be restarting: keep trying until the deadline.
            Err(e) => progress.show(&format!("cannot read from the hub: {e:#}")),
        }
        if progress.elapsed() >= timeout {
            progress.finish();
            bail!(
                "{what}: not done after {}s; last seen: {}{}",
                timeout.as_secs(),
                progress.last,
                if last_detail.is_empty() { String::new() } else { format!("\n{last_detail}") }
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------- commands

pub async fn run(cmd: HostedCommand) -> anyhow::Result<bool> {
    match cmd {
        HostedCommand::Create(args) => create(args).await,
        HostedCommand::Get(args) => get(args).await,
        HostedCommand::Kubeconfig(args) => kubeconfig(args).await,
        HostedCommand::Upgrade(args) => upgrade(args).await,
        HostedCommand::Delete(args) => delete(args).await,
        HostedCommand::RotateCerts(args) => rotate_certs(args).await,
    }
}

async fn client(target: &Target) -> anyhow::Result<Client> {
    target.hub.client().await
}

async fn existing(api: &Api<HostedCluster>, name: &str, namespace: &str) -> anyhow::Result<HostedCluster> {
    api.get_opt(name).await.context("reading HostedClusters (is `flotilla hub install` done?)")?.with_context(
        || format!("no hosted cluster {name} in namespace {namespace}; `flotilla cluster get` lists them"),
    )
}

/// The etcd version the local binary cache has.
fn cached_etcd_version() -> anyhow::Result<String> {
    let binary = flotilla_localkube::Binaries::default_dir().join("etcd");
    let output = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version to learn the etcd version", binary.display()))?;
    parse_etcd_version(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("{} --version printed no version", binary.display()))
}

async fn create(args: CreateArgs) -> anyhow::Result<bool> {
    flotilla_fleet_core::membership::validate_cluster_name(&args.name).map_err(anyhow::Error::msg)?;
    let namespace = args.target.namespace.clone();
    let etcd_version = match args.etcd_version.clone() {
        Some(v) => v,
        None => cached_etcd_version().context("pass --etcd-version to say which etcd to run")?,
    };
    let request = ClusterRequest {
        namespace: namespace.clone(),
        name: args.name.clone(),
        version: args.version.trim_start_matches('v').to_string(),
        etcd_members: args.etcd_members,
        etcd_version,
        runtime: args.runtime.into(),
        replicas: args.replicas,
        nodes: args.nodes,
        addons: !args.no_addons,
        machine_pool: args.machine_pool.clone(),
        node_pool: args.node_pool.clone(),
    };
    let client = client(&args.target).await?;
    let clusters: Api<HostedCluster> = Api::namespaced(client.clone(), &namespace);
    let etcds: Api<EtcdCluster> = Api::namespaced(client.clone(), &namespace);
    if let Some(hc) = clusters
        .get_opt(&args.name)
        .await
        .context("reading HostedClusters (is `flotilla hub install` done?)")?
    {
        bail!(
            "hosted cluster {} exists already in namespace {namespace} (phase {}); \
             `flotilla cluster get {}` shows it, `flotilla cluster delete {}` removes it",
            args.name,
            phase_of(&hc),
            args.name,
            args.name
        );
    }

    let etcd = build_etcd_cluster(&request);
    let etcd_name = etcd.name_any();
    let mut created_etcd = false;
    match etcds.get_opt(&etcd_name).await? {
        Some(e) if e.labels().get(OWNER_LABEL) != Some(&owner_label_value(&namespace, &args.name)) => bail!(
            "EtcdCluster {etcd_name} exists in namespace {namespace} and belongs to something else; \
             choose another cluster name"
        ),
        Some(e) if e.metadata.deletion_timestamp.is_some() => bail!(
            "EtcdCluster {etcd_name} of an earlier cluster {} is still being deleted; try again shortly",
            args.name
        ),
        // Left by an earlier `create` whose HostedCluster was never made.
        Some(_) => {}
        None => {
            etcds
                .create(&PostParams::default(), &etcd)
                .await
                .with_context(|| format!("creating EtcdCluster {etcd_name}"))?;
            created_etcd = true;
        }
    }
    let hc = build_hosted_cluster(&request);
    if let Err(e) = clusters.create(&PostParams::default(), &hc).await {
        if created_etcd {
            let _ = etcds.delete(&etcd_name, &DeleteParams::default()).await;
        }
        if let kube::Error::Api(api) = &e {
            if api.code == 409 {
                bail!("hosted cluster {} was created by someone else meanwhile", args.name);
            }
        }
        return Err(e).context(format!("creating HostedCluster {}", args.name));
    }
    println!(
        "Created HostedCluster {namespace}/{} (Kubernetes {}, {} etcd member(s), {} node(s)).",
        args.name, request.version, request.etcd_members, request.nodes
    );
    if args.wait.no_wait {
        println!(
            "Not waiting; `flotilla cluster get {}{}` shows its progress.",
            args.name,
            namespace_flag(&namespace)
        );
        return Ok(true);
    }
    let name = args.name.clone();
    let (_, elapsed) = wait_for(Duration::from_secs(args.wait.timeout), &format!("cluster {name}"), || {
        let (clusters, name) = (clusters.clone(), name.clone());
        async move {
            let hc = clusters.get(&name).await?;
            Ok((create_verdict(&hc), not_ready_summary(&hc)))
        }
    })
    .await?;
    let hc = clusters.get(&args.name).await?;
    println!("Cluster {} is Ready after {}s.", args.name, elapsed.as_secs());
    println!("{}", usage_hint(&args.name, &namespace, &endpoint_of(&hc), &hub_flag(&args.target)));
    Ok(true)
}

async fn get(args: GetArgs) -> anyhow::Result<bool> {
    let client = client(&args.target).await?;
    let namespace = &args.target.namespace;
    let now = Timestamp::now();
    let Some(name) = args.name else {
        let api: Api<HostedCluster> =
            if args.all_namespaces { Api::all(client) } else { Api::namespaced(client, namespace) };
        let mut list = api
            .list(&ListParams::default())
            .await
            .context("listing HostedClusters (is `flotilla hub install` done?)")?
            .items;
        list.sort_by_key(|hc| (hc.namespace(), hc.name_any()));
        if list.is_empty() {
            let place = if args.all_namespaces {
                "any namespace".to_string()
            } else {
                format!("namespace {namespace}")
            };
            println!("No hosted clusters in {place}. Create one with `flotilla cluster create NAME`.");
        } else {
            println!("{}", render_list(&list, args.all_namespaces, now));
        }
        return Ok(true);
    };
    let api: Api<HostedCluster> = Api::namespaced(client.clone(), namespace);
    let hc = existing(&api, &name, namespace).await?;
    let etcd = match hc.spec.etcd.resolve() {
        Some((etcd, _)) => Api::<EtcdCluster>::namespaced(client, namespace).get_opt(etcd).await?,
        None => None,
    };
    println!("{}", render_detail(&hc, etcd.as_ref(), now));
    Ok(true)
}

async fn kubeconfig(args: KubeconfigArgs) -> anyhow::Result<bool> {
    let client = client(&args.target).await?;
    let namespace = &args.target.namespace;
    let hc = existing(&Api::namespaced(client.clone(), namespace), &args.name, namespace).await?;
    let not_yet = || {
        format!(
            "cluster {} is not provisioned yet (phase {}; {}): it has no admin kubeconfig; \
             `flotilla cluster get {}` shows its progress",
            args.name,
            phase_of(&hc),
            waiting_for(&hc),
            args.name
        )
    };
    let Some(secret_name) = hc.status.as_ref().and_then(|s| s.admin_kubeconfig_secret.clone()) else {
        bail!(not_yet());
    };
    let secret = Api::<Secret>::namespaced(client, namespace).get_opt(&secret_name).await?;
    let Some(bytes) =
        secret.and_then(|s| s.data).and_then(|d| d.get("kubeconfig").cloned()).filter(|b| !b.0.is_empty())
    else {
        bail!(not_yet());
    };
    std::io::stdout().write_all(&bytes.0)?;
    Ok(true)
}

async fn upgrade(args: UpgradeArgs) -> anyhow::Result<bool> {
    let client = client(&args.target).await?;
    let namespace = &args.target.namespace;
    let api: Api<HostedCluster> = Api::namespaced(client, namespace);
    let hc = existing(&api, &args.name, namespace).await?;
    let target = args.version.trim_start_matches('v').to_string();
    let from = hc.status.as_ref().and_then(|s| s.version.clone()).unwrap_or_else(|| hc.spec.version.clone());
    let patched = api
        .patch(&args.name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": target}})))
        .await
        .with_context(|| format!("setting spec.version of {} to {target}", args.name))?;
    let generation = patched.metadata.generation.unwrap_or_default();
    println!("Cluster {}: spec.version {} → {target}.", args.name, hc.spec.version);
    if args.wait.no_wait {
        println!(
            "Not waiting; `flotilla cluster get {}{}` shows the upgrade.",
            args.name,
            namespace_flag(namespace)
        );
        return Ok(true);
    }
    let name = args.name.clone();
    let (summary, elapsed) = wait_for(
        Duration::from_secs(args.wait.timeout),
        &format!("upgrading {name} from {from} to {target}"),
        || {
            let (api, name, target) = (api.clone(), name.clone(), target.clone());
            async move {
                let hc = api.get(&name).await?;
                Ok((upgrade_verdict(&hc, &target, generation), not_ready_summary(&hc)))
            }
        },
    )
    .await?;
    println!("Cluster {}: {summary} in {}s.", args.name, elapsed.as_secs());
    Ok(true)
}

async fn delete(args: DeleteArgs) -> anyhow::Result<bool> {
    let client = client(&args.target).await?;
    let namespace = args.target.namespace.clone();
    let api: Api<HostedCluster> = Api::namespaced(client.clone(), &namespace);
    let hc = existing(&api, &args.name, &namespace).await?;
    // Only an EtcdCluster this cluster owns goes with it.
    let own_etcd = match hc.spec.etcd.cluster_ref.as_deref() {
        Some(etcd) => Api::<EtcdCluster>::namespaced(client.clone(), &namespace)
            .get_opt(etcd)
            .await?
            .filter(|e| e.labels().get(OWNER_LABEL) == Some(&owner_label_value(&namespace, &args.name)))
            .map(|e| e.name_any()),
        None => None,
    };
    match api.delete(&args.name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e).context(format!("deleting HostedCluster {}", args.name)),
    }
    println!("Deleting hosted cluster {namespace}/{}.", args.name);
    if args.wait.no_wait {
        println!("Not waiting; the operator removes its processes, data and Secrets.");
        return Ok(true);
    }
    let etcds: Api<EtcdCluster> = Api::namespaced(client.clone(), &namespace);
    let machines: Api<Machine> = Api::all(client);
    let name = args.name.clone();
    let (_, elapsed) = wait_for(Duration::from_secs(args.wait.timeout), &format!("deleting {name}"), || {
        let (api, etcds, machines, name, namespace, own_etcd) =
            (api.clone(), etcds.clone(), machines.clone(), name.clone(), namespace.clone(), own_etcd.clone());
        async move {
            let hc = api.get_opt(&name).await?;
            let etcd_left = match &own_etcd {
                Some(e) => etcds.get_opt(e).await?.map(|e| e.name_any()),
                None => None,
            };
            let machines = machines.list(&ListParams::default()).await?.items;
            let verdict = deletion_verdict(hc.as_ref(), etcd_left.as_deref(), &machines, &namespace, &name);
            let left = leftover_components(&machines, &namespace, &name, etcd_left.as_deref());
            let detail: Vec<String> = left.iter().map(|c| format!("  still on a Machine: {c}")).collect();
            Ok((verdict, detail.join("\n")))
        }
    })
    .await?;
    println!(
        "Hosted cluster {} deleted in {}s: its processes, etcd data and Secrets are gone.",
        args.name,
        elapsed.as_secs()
    );
    Ok(true)
}

async fn rotate_certs(args: RotateCertsArgs) -> anyhow::Result<bool> {
    let client = client(&args.target).await?;
    let namespace = &args.target.namespace;
    let api: Api<HostedCluster> = Api::namespaced(client.clone(), namespace);
    existing(&api, &args.name, namespace).await?;
    let requested_at = Timestamp::now().as_second();
    let value = rotation_value(args.ca, requested_at);
    api.patch(
        &args.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {ROTATE_CERTS_ANNOTATION: value}}})),
    )
    .await
    .with_context(|| format!("annotating {}", args.name))?;
    println!("Cluster {}: rotation {value} requested.", args.name);
    if args.wait.no_wait {
        println!(
            "Not waiting; `flotilla cluster get {}{}` shows the certificates.",
            args.name,
            namespace_flag(namespace)
        );
        return Ok(true);
    }
    let machines: Api<Machine> = Api::all(client);
    let name = args.name.clone();
    let (summary, elapsed) = wait_for(
        Duration::from_secs(args.wait.timeout),
        &format!("rotating the certificates of {name}"),
        || {
            let (api, machines, name, value) = (api.clone(), machines.clone(), name.clone(), value.clone());
            async move {
                let hc = api.get(&name).await?;
                let machines = machines.list(&ListParams::default()).await?.items;
                Ok((rotation_verdict(&hc, &machines, &value, requested_at), not_ready_summary(&hc)))
            }
        },
    )
    .await?;
    println!("Cluster {}: {summary}; Ready again after {}s.", args.name, elapsed.as_secs());
    if args.ca {
        println!(
            "The CA changed: fetch the kubeconfig again (`flotilla cluster kubeconfig {}{}`).",
            args.name,
            namespace_flag(namespace)
        );
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::kok::{
        CertificateStatus, ControlPlaneInstanceStatus, HostedClusterPhase, HostedClusterStatus, UpgradeStatus,
    };
    use flotilla_api::machine::{ComponentSpec, ComponentStatus, MachineSpec, MachineStatus};
    use flotilla_kok_core::hosted::component_name;

    fn request() -> ClusterRequest {
        ClusterRequest {
            namespace: "team".into(),
            name: "c1".into(),
            version: "1.20.2".into(),
            etcd_members: 3,
            etcd_version: "3.4.23".into(),
            runtime: Runtime::Process,
            replicas: 1,
            nodes: 2,
            addons: true,
            machine_pool: None,
            node_pool: None,
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cond(type_: &str, status: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: if status == "True" { "Fine".into() } else { "NotYet".into() },
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: Time(ts("2024-01-01T00:00:00Z")),
        }
    }

    fn cluster(conditions: Vec<Condition>) -> HostedCluster {
        let mut hc = build_hosted_cluster(&request());
        hc.metadata.generation = Some(1);
        hc.status = Some(HostedClusterStatus {
            phase: Some(HostedClusterPhase::Provisioning),
            observed_generation: Some(1),
            endpoint: Some("https://127.0.0.1:33000".into()),
            conditions,
            ..Default::default()
        });
        hc
    }

    #[test]
    fn create_builds_an_owned_etcd_and_a_cluster_that_refers_to_it() {
        let etcd = build_etcd_cluster(&request());
        assert_eq!(etcd.name_any(), "c1-etcd");
        assert_eq!(etcd.namespace().as_deref(), Some("team"));
        assert_eq!((etcd.spec.members, etcd.spec.version.as_str()), (3, "3.4.23"));
        assert_eq!(etcd.labels().get(OWNER_LABEL).map(String::as_str), Some("team.c1"));

        let hc = build_hosted_cluster(&request());
        assert_eq!((hc.name_any().as_str(), hc.namespace().as_deref()), ("c1", Some("team")));
        assert_eq!(hc.spec.version, "1.20.2");
        assert_eq!(hc.spec.etcd.resolve(), Some(("c1-etcd", "/registry")));
        assert_eq!(hc.spec.control_plane.replicas, 1);
        assert_eq!(hc.spec.control_plane.runtime, Runtime::Process);
        assert_eq!(hc.spec.nodes.as_ref().map(|n| n.count), Some(2));
        assert_eq!(hc.spec.addons.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["coredns"]);
        // What is sent is what the CRD's schema accepts (no unknown fields).
        let sent = serde_json::to_value(&hc.spec).unwrap();
        serde_json::from_value::<HostedClusterSpec>(sent).unwrap();
    }

    #[test]
    fn create_flags_change_the_objects() {
        let req = ClusterRequest {
            addons: false,
            nodes: 0,
            replicas: 3,
            runtime: Runtime::Kubernetes,
            etcd_members: 1,
            ..request()
        };
        let hc = build_hosted_cluster(&req);
        assert!(hc.spec.addons.is_empty());
        assert_eq!(hc.spec.nodes, None, "no nodes asked for: no node pool");
        assert_eq!(hc.spec.control_plane.replicas, 3);
        assert_eq!(hc.spec.control_plane.runtime, Runtime::Kubernetes);
        let pooled = build_hosted_cluster(&ClusterRequest {
            machine_pool: Some("cp".into()),
            node_pool: Some("workers".into()),
            ..request()
        });
        assert_eq!(pooled.spec.control_plane.machine_pool.as_deref(), Some("cp"));
        assert_eq!(pooled.spec.nodes.unwrap().machine_pool.as_deref(), Some("workers"));
        let etcd = build_etcd_cluster(&req);
        assert_eq!(etcd.spec.members, 1);
        assert_eq!(etcd.spec.runtime, Runtime::Kubernetes, "etcd runs where the control plane does");
    }

    #[test]
    fn etcd_version_comes_from_the_binary_output() {
        let out = "etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n";
        assert_eq!(parse_etcd_version(out).as_deref(), Some("3.4.23"));
        assert_eq!(parse_etcd_version("etcd Version: \n"), None);
        assert_eq!(parse_etcd_version("something else"), None);
    }

    #[test]
    fn flags_parse_with_their_defaults_and_limits() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            command: HostedCommand,
        }
        let Cli { command: HostedCommand::Create(args) } =
            Cli::try_parse_from(["x", "create", "c1"]).unwrap()
        else {
            panic!("not create")
        };
        assert_eq!(args.version, "1.20.2");
        assert_eq!((args.etcd_members, args.replicas, args.nodes), (1, 1, 1));
        assert_eq!(args.runtime, RuntimeArg::Process);
        assert_eq!(
            (args.target.namespace.as_str(), args.wait.timeout, args.wait.no_wait),
            ("default", 300, false)
        );
        assert!(Cli::try_parse_from(["x", "create", "c1", "--etcd-members", "3"]).is_ok());
        assert!(
            Cli::try_parse_from(["x", "create", "c1", "--etcd-members", "2"]).is_err(),
            "even member count"
        );
        assert!(Cli::try_parse_from(["x", "create", "c1", "--replicas", "6"]).is_err());
        assert!(Cli::try_parse_from(["x", "get", "c1", "-A"]).is_err(), "a name is in one namespace");
        assert!(Cli::try_parse_from(["x", "upgrade", "c1"]).is_err(), "--version is required");
        let Cli { command: HostedCommand::RotateCerts(r) } =
            Cli::try_parse_from(["x", "rotate-certs", "c1", "--ca", "-n", "team"]).unwrap()
        else {
            panic!("not rotate-certs")
        };
        assert!(r.ca);
        assert_eq!(r.target.namespace, "team");
    }

    #[test]
    fn every_help_fits_in_100_columns() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        #[command(name = "flotilla cluster")]
        struct Cli {
            #[command(subcommand)]
            command: HostedCommand,
        }
        let mut cli = Cli::command();
        cli.build();
        let mut helps = vec![cli.render_help().to_string()];
        for sub in cli.get_subcommands_mut() {
            helps.push(sub.render_help().to_string());
            helps.push(sub.render_long_help().to_string());
        }
        assert_eq!(helps.len(), 1 + 2 * 7, "six commands and clap's help");
        let too_wide: Vec<String> = helps
            .iter()
            .flat_map(|h| h.lines())
            .filter(|l| l.chars().count() > WIDTH)
            // fleetctl's shared --kubeconfig flag shows its env var and a
            // HOME-dependent default inline in the short (-h) help.
            .filter(|l| !l.contains("[env: FLOTILLA_HUB_KUBECONFIG="))
            .map(|l| format!("{} columns: {l}", l.chars().count()))
            .collect();
        assert!(too_wide.is_empty(), "{}", too_wide.join("\n"));
    }

    #[test]
    fn progress_names_the_first_condition_that_is_not_true() {
        let hc = cluster(vec![
            cond(conditions::READY, "False", "EtcdReady: no leader"),
            cond(conditions::KUBE_APISERVER_READY, "False", "0/1 healthy"),
            cond(conditions::ETCD_READY, "False", "EtcdCluster c1-etcd is not available: no leader"),
            cond(conditions::VALID, "True", "ok"),
        ]);
        assert_eq!(
            waiting_for(&hc),
            "Provisioning · EtcdReady: EtcdCluster c1-etcd is not available: no leader"
        );
        assert_eq!(create_verdict(&hc), Verdict::Pending(waiting_for(&hc)));

        let later = cluster(vec![
            cond(conditions::VALID, "True", "ok"),
            cond(conditions::ETCD_READY, "True", "ok"),
            cond(conditions::KUBE_APISERVER_READY, "True", "1/1"),
            cond(conditions::ADDONS_APPLIED, "True", "ok"),
            cond(conditions::NODES_READY, "False", "0/2 nodes\n Ready"),
            cond(conditions::READY, "False", "NodesReady: 0/2 nodes Ready"),
        ]);
        assert_eq!(waiting_for(&later), "Provisioning · NodesReady: 0/2 nodes Ready");
        let summary = not_ready_summary(&later);
        assert!(summary.contains("NodesReady (NotYet): 0/2 nodes Ready"), "{summary}");
        assert!(summary.contains("Ready (NotYet)"), "{summary}");
        assert!(!summary.contains("EtcdReady"), "{summary}");

        // Only Ready is False (e.g. a condition the CLI does not know yet).
        let only_ready =
            cluster(vec![cond(conditions::VALID, "True", ""), cond(conditions::READY, "False", "x: y")]);
        assert_eq!(waiting_for(&only_ready), "Provisioning · Ready: x: y");

        let mut fresh = build_hosted_cluster(&request());
        fresh.metadata.generation = Some(1);
        assert!(waiting_for(&fresh).contains("is `flotilla hub run` running?"));
        assert!(
            not_ready_summary(&fresh).contains("has not written any status"),
            "{}",
            not_ready_summary(&fresh)
        );
    }

    #[test]
    fn create_is_done_on_a_current_ready_and_fails_on_an_invalid_spec() {
        let mut ready =
            cluster(vec![cond(conditions::VALID, "True", ""), cond(conditions::READY, "True", "")]);
        assert_eq!(create_verdict(&ready), Verdict::Done("Ready at https://127.0.0.1:33000".into()));
        // A Ready about an older generation does not count.
        ready.metadata.generation = Some(2);
        assert!(matches!(create_verdict(&ready), Verdict::Pending(_)));
        assert!(waiting_for(&ready).contains("latest change"), "{}", waiting_for(&ready));

        let invalid = cluster(vec![
            cond(conditions::VALID, "False", "version 1.99.0 is not available to this operator"),
            cond(conditions::READY, "False", "Valid: ..."),
        ]);
        assert_eq!(
            create_verdict(&invalid),
            Verdict::Failed("the spec is refused: version 1.99.0 is not available to this operator".into())
        );
    }

    fn upgrading(state: UpgradeState, message: Option<&str>) -> HostedCluster {
        let mut hc = cluster(vec![cond(conditions::VALID, "True", ""), cond(conditions::READY, "True", "")]);
        hc.metadata.generation = Some(2);
        let status = hc.status.as_mut().unwrap();
        status.observed_generation = Some(2);
        status.version = Some("1.20.2".into());
        status.upgrade = Some(UpgradeStatus {
            from: "1.20.2".into(),
            to: "1.20.3".into(),
            state,
            component: Some("kube-controller-manager".into()),
            instance: Some(0),
            done: vec!["kube-apiserver/0".into()],
            message: message.map(String::from),
            ..Default::default()
        });
        hc
    }

    #[test]
    fn upgrade_reports_progress_and_each_outcome() {
        assert_eq!(
            upgrade_verdict(&upgrading(UpgradeState::InProgress, None), "1.20.3", 2),
            Verdict::Pending(
                "Upgrading 1.20.2 → 1.20.3: kube-controller-manager/0 (done: kube-apiserver/0)".into()
            )
        );
        assert!(matches!(
            upgrade_verdict(&upgrading(UpgradeState::RollingBack, None), "1.20.3", 2),
            Verdict::Pending(l) if l.starts_with("Rolling back")
        ));
        assert_eq!(
            upgrade_verdict(&upgrading(UpgradeState::Succeeded, None), "1.20.3", 2),
            Verdict::Done("upgraded from 1.20.2 to 1.20.3".into())
        );
        let Verdict::Failed(why) = upgrade_verdict(
            &upgrading(UpgradeState::RolledBack, Some("kube-apiserver/0 not healthy in 60s")),
            "1.20.3",
            2,
        ) else {
            panic!("a rollback is a failure")
        };
        assert!(why.starts_with("rolled back to 1.20.2: kube-apiserver/0 not healthy in 60s"), "{why}");

        // The operator has not seen the new spec yet: an old Succeeded is not this one.
        assert!(matches!(
            upgrade_verdict(&upgrading(UpgradeState::Succeeded, None), "1.20.3", 3),
            Verdict::Pending(l) if l.contains("waiting for the operator")
        ));
        // A record of another target does not count either.
        assert!(matches!(
            upgrade_verdict(&upgrading(UpgradeState::Succeeded, None), "1.21.0", 2),
            Verdict::Pending(_)
        ));

        let mut refused = upgrading(UpgradeState::Succeeded, None);
        let mut c = cond(conditions::UPGRADED, "False", "spec.version skips a minor version");
        c.reason = reasons::REFUSED.into();
        refused.status.as_mut().unwrap().conditions.push(c);
        assert_eq!(
            upgrade_verdict(&refused, "1.22.0", 2),
            Verdict::Failed("refused (Refused): spec.version skips a minor version".into())
        );

        // A cluster that never ran another version is done when Ready at it.
        let mut fresh = upgrading(UpgradeState::Succeeded, None);
        let status = fresh.status.as_mut().unwrap();
        status.upgrade = None;
        status.version = Some("1.20.3".into());
        assert_eq!(upgrade_verdict(&fresh, "1.20.3", 2), Verdict::Done("runs 1.20.3".into()));
    }

    fn machine(name: &str, components: &[(&str, ComponentState, Option<&str>)]) -> Machine {
        let mut m = Machine::new(
            name,
            MachineSpec {
                address: Some("127.0.0.1".into()),
                components: components
                    .iter()
                    .map(|(c, _, _)| ComponentSpec { name: c.to_string(), ..Default::default() })
                    .collect(),
                ..Default::default()
            },
        );
        m.status = Some(MachineStatus {
            components: components
                .iter()
                .map(|(c, state, started)| ComponentStatus {
                    name: c.to_string(),
                    state: *state,
                    healthy: Some(*state == ComponentState::Running),
                    started_at: started.map(|s| Time(ts(s))),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        m
    }

    #[test]
    fn rotation_waits_for_the_operator_then_for_every_control_plane_process_to_restart() {
        let value = rotation_value(false, 1_700_000_000);
        assert_eq!(value, "leaves/1700000000");
        assert_eq!(rotation_value(true, 5), "ca/5");
        let apiserver = component_name(Part::Apiserver, "team", "c1", 0);
        let scheduler = component_name(Part::Scheduler, "team", "c1", 0);
        let kubelet = component_name(Part::Kubelet, "team", "c1", 0);
        let other = component_name(Part::Apiserver, "team", "c2", 0);
        let issued = "2023-11-14T22:13:25Z"; // 1_700_000_005
        let mut hc = cluster(vec![cond(conditions::VALID, "True", ""), cond(conditions::READY, "True", "")]);
        let machines = |scheduler_started: &str| {
            vec![
                machine("m1", &[(&apiserver, ComponentState::Running, Some("2023-11-14T22:13:30Z"))]),
                machine(
                    "m2",
                    &[
                        (&scheduler, ComponentState::Running, Some(scheduler_started)),
                        // Kubelets keep their own credential; other clusters are not ours.
                        (&kubelet, ComponentState::Running, Some("2020-01-01T00:00:00Z")),
                        (&other, ComponentState::Running, Some("2020-01-01T00:00:00Z")),
                    ],
                ),
            ]
        };
        let done_machines = machines("2023-11-14T22:13:31Z");
        assert!(matches!(rotation_verdict(&hc, &done_machines, &value, 1_700_000_000), Verdict::Pending(l)
            if l.contains("reissue")));
        let status = hc.status.as_mut().unwrap();
        status.handled_rotation = Some(value.clone());
        status.certificates_issued_at = Some(Time(ts("2023-11-14T22:13:19Z"))); // before the request
        assert!(matches!(rotation_verdict(&hc, &done_machines, &value, 1_700_000_000), Verdict::Pending(l)
            if l.contains("new certificates")));
        hc.status.as_mut().unwrap().certificates_issued_at = Some(Time(ts(issued)));
        let stale = machines("2023-11-14T22:00:00Z");
        assert_eq!(
            rotation_verdict(&hc, &stale, &value, 1_700_000_000),
            Verdict::Pending(format!("restarting with the new certificates: {scheduler} on m2"))
        );
        assert_eq!(
            rotation_verdict(&hc, &done_machines, &value, 1_700_000_000),
            Verdict::Done("certificates reissued (leaves/1700000000)".into())
        );
        hc.status.as_mut().unwrap().conditions =
            vec![cond(conditions::READY, "False", "KubeSchedulerReady: 0/1")];
        assert!(matches!(rotation_verdict(&hc, &done_machines, &value, 1_700_000_000), Verdict::Pending(l)
            if l.contains("KubeSchedulerReady")));
    }

    #[test]
    fn deletion_waits_for_the_cluster_and_its_etcd_and_names_what_is_left() {
        let apiserver = component_name(Part::Apiserver, "team", "c1", 0);
        let etcd = flotilla_kok_core::etcd::component_name("team", "c1-etcd");
        let machines = vec![machine(
            "m1",
            &[
                (&apiserver, ComponentState::Running, None),
                (&etcd, ComponentState::Running, None),
                ("etcd-team-other", ComponentState::Running, None),
            ],
        )];
        assert_eq!(
            leftover_components(&machines, "team", "c1", Some("c1-etcd")),
            vec![format!("m1/{apiserver}"), format!("m1/{etcd}")]
        );
        let hc = cluster(vec![]);
        assert_eq!(
            deletion_verdict(Some(&hc), Some("c1-etcd"), &machines, "team", "c1"),
            Verdict::Pending("Deleting · the operator is stopping 2 component(s) on m1".into())
        );
        assert_eq!(
            deletion_verdict(Some(&hc), Some("c1-etcd"), &[], "team", "c1"),
            Verdict::Pending("Deleting · the operator is removing data and Secrets".into())
        );
        assert_eq!(
            deletion_verdict(None, Some("c1-etcd"), &machines[..], "team", "c1"),
            Verdict::Pending("Deleting · EtcdCluster c1-etcd is stopping 2 component(s) on m1".into())
        );
        assert_eq!(
            deletion_verdict(None, Some("c1-etcd"), &[], "team", "c1"),
            Verdict::Pending("Deleting · EtcdCluster c1-etcd is being removed".into())
        );
        assert_eq!(deletion_verdict(None, None, &[], "team", "c1"), Verdict::Done("deleted".into()));
    }

    #[test]
    fn list_rows_show_version_phase_endpoint_nodes_and_age() {
        let now = ts("2024-01-01T01:00:00Z");
        let mut hc = cluster(vec![]);
        hc.metadata.creation_timestamp = Some(Time(ts("2024-01-01T00:30:00Z")));
        let status = hc.status.as_mut().unwrap();
        status.phase = Some(HostedClusterPhase::Ready);
        status.version = Some("1.20.2".into());
        status.ready_nodes = Some(1);
        assert_eq!(
            list_row(&hc, false, now),
            ["c1", "1.20.2", "Ready", "https://127.0.0.1:33000", "1/2", "30m"]
        );
        hc.spec.version = "1.20.3".into();
        assert_eq!(list_row(&hc, true, now)[..3], ["team", "c1", "1.20.2 (→1.20.3)"]);
        let mut fresh = build_hosted_cluster(&request());
        assert_eq!(list_row(&fresh, false, now), ["c1", "(1.20.2)", "Pending", "-", "0/2", "-"]);
        fresh.metadata.deletion_timestamp = Some(Time(now));
        assert_eq!(list_row(&fresh, false, now)[2], "Deleting");
        let shown = render_list(&[hc, fresh], true, now);
        assert!(shown.lines().next().unwrap().trim_start().starts_with("NAMESPACE"), "{shown}");
        assert!(shown.lines().all(|l| l.chars().count() <= WIDTH), "{shown}");
    }

    #[test]
    fn age_is_short() {
        let now = ts("2024-01-10T00:00:00Z");
        let at = |s: &str| Some(Time(ts(s)));
        assert_eq!(age(at("2024-01-09T23:59:50Z").as_ref(), now), "10s");
        assert_eq!(age(at("2024-01-09T22:00:00Z").as_ref(), now), "2h");
        assert_eq!(age(at("2024-01-01T00:00:00Z").as_ref(), now), "9d");
        assert_eq!(age(None, now), "-");
    }

    #[test]
    fn detail_shows_everything_within_100_columns() {
        let now = ts("2024-01-01T00:00:00Z");
        let long = "kube-apiserver-0: not healthy yet on machine m1: Get https://127.0.0.1:33000/readyz: \
                    connection refused; kube-apiserver-1: CrashLoop on machine m2: exit code 1 after 3 restarts";
        let mut hc = cluster(vec![
            cond(conditions::KUBE_APISERVER_READY, "False", long),
            cond(conditions::ETCD_READY, "True", "EtcdCluster c1-etcd: 3 members"),
        ]);
        let status = hc.status.as_mut().unwrap();
        status.version = Some("1.20.2".into());
        status.admin_kubeconfig_secret = Some("c1-admin-kubeconfig".into());
        status.instances = vec![ControlPlaneInstanceStatus {
            name: "kube-apiserver-0".into(),
            machine: Some("m1".into()),
            version: Some("1.20.2".into()),
            healthy: false,
        }];
        status.upgrade = upgrading(UpgradeState::InProgress, None).status.unwrap().upgrade;
        status.certificates = (0..8)
            .map(|i| CertificateStatus {
                name: format!("cert-{i}"),
                not_after: Time(ts(&format!("2024-0{}-01T00:00:00Z", 9 - i))),
                issuer: None,
            })
            .collect();
        let shown = render_detail(&hc, None, now);
        for l in shown.lines() {
            assert!(l.chars().count() <= WIDTH, "{} columns: {l}", l.chars().count());
        }
        for want in [
            "Name:        team/c1",
            "Version:     1.20.2 (spec 1.20.2)",
            "Etcd:        c1-etcd (not found)",
            "kube-apiserver-0",
            "Upgrade:     1.20.2 → 1.20.3: InProgress, now kube-controller-manager/0",
            "done: kube-apiserver/0",
            "Certificates (soonest expiry first, 5 of 8):",
        ] {
            assert!(shown.contains(want), "{want:?} missing in:\n{shown}");
        }
        // The long message is wrapped, not cut: its last words are shown.
        assert!(shown.contains("restarts"), "{shown}");
        let certs: Vec<&str> =
            shown.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with("cert-"))).collect();
        assert_eq!(certs, ["cert-7", "cert-6", "cert-5", "cert-4", "cert-3"], "soonest first:\n{shown}");
        assert!(shown.contains("2024-02-01 00:00 UTC (in 31d)"), "{shown}");
    }

    #[test]
    fn usage_hint_names_the_namespace_and_hub_when_they_are_not_the_defaults() {
        let plain = usage_hint("c1", "default", "https://127.0.0.1:33000", "");
        assert!(plain.contains("flotilla cluster kubeconfig c1 > c1.kubeconfig"), "{plain}");
        assert!(plain.contains("kubectl --kubeconfig c1.kubeconfig get nodes"), "{plain}");
        assert!(plain.contains("https://127.0.0.1:33000"), "{plain}");
        let other = usage_hint("c1", "team", "e", " --kubeconfig /h.kc");
        assert!(
            other.contains("flotilla cluster kubeconfig c1 -n team --kubeconfig /h.kc > c1.kubeconfig"),
            "{other}"
        );
    }

    #[test]
    fn fit_cuts_long_lines_only() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("0123456789abc", 10), "012345678…");
        assert_eq!(fit("0123456789abc", 10).chars().count(), 10);
    }
}
