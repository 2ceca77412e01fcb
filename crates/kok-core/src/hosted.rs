//! The HostedCluster operator's decisions (process runtime): where each
//! control-plane instance and worker kubelet runs, which ports it gets,
//! the certificates in the cluster's Secret, the Machine components that
//! run it all, and the status read back from the Machines.
//!
//! Placement is read back from the Machines themselves (a component's
//! name says which instance it is; its command line which ports it has),
//! so the plan is the same when computed twice, after an operator restart,
//! or after a missed event.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use flotilla_api::kok::{conditions, HostedCluster};
use flotilla_api::machine::{
    ComponentFile, ComponentSpec, ComponentState, HealthCheck, HttpCheck, KeyRef, Machine,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use time::{Duration, OffsetDateTime};

use crate::pki::{identities, keys, KokPkiError};
use crate::ports;
use crate::render::{self, Component, ComponentPorts, ControlPlaneLayout};

/// Finalizer that keeps a HostedCluster until its processes, data and
/// Secrets are gone.
pub const FINALIZER: &str = "kok.flotilla.io/hosted-cluster";
/// Label on what the operator creates for a cluster: `<namespace>.<name>`.
pub const OWNER_LABEL: &str = "kok.flotilla.io/hosted-cluster";
/// Env var on every component: the Kubernetes version it runs.
pub const VERSION_ENV: &str = "KOK_KUBERNETES_VERSION";
/// Relative directory (in a component's working directory) of its files.
const PKI_DIR: &str = "pki";
/// Auth-extra-group of the cluster's node bootstrap tokens.
pub const NODE_BOOTSTRAP_GROUP: &str = "system:bootstrappers:kok:nodes";

#[derive(Debug, thiserror::Error)]
pub enum HostedPlanError {
    #[error("certificates: {0}")]
    Pki(#[from] KokPkiError),
    #[error("certificates: {0}")]
    Leaf(#[from] flotilla_core::pki::PkiError),
    /// A machine chosen has no address: why, naming it.
    #[error("machine {0}")]
    NoAddress(String),
    #[error("no free port left on machine {machine} in {first}-{last}")]
    NoPorts { machine: String, first: u16, last: u16 },
}

/// Operator-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedOperatorConfig {
    /// Kubernetes version → directory holding `kube-apiserver`,
    /// `kube-controller-manager`, `kube-scheduler` and `kubemark` on the
    /// machines. A version not listed here is refused.
    pub versions: BTreeMap<String, PathBuf>,
    /// Ports the operator hands out on machines.
    pub port_range: RangeInclusive<u16>,
    /// The `flotilla` binary on the machines (it joins kubelets with a
    /// bootstrap token, then runs them).
    pub flotilla_binary: PathBuf,
    /// A machine whose node agent has not reported for this long is lost:
    /// its control-plane instances move to another machine.
    pub machine_lost_after: Duration,
    /// Leaf certificates are reissued when they expire within this.
    pub renew_before: Duration,
}

impl Default for HostedOperatorConfig {
    fn default() -> Self {
        Self {
            versions: BTreeMap::new(),
            port_range: 33000..=39999,
            flotilla_binary: "/usr/local/bin/flotilla".into(),
            machine_lost_after: Duration::seconds(40),
            renew_before: Duration::days(30),
        }
    }
}

/// The processes of a hosted cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Apiserver,
    ControllerManager,
    Scheduler,
    Kubelet,
}

impl Part {
    pub const CONTROL_PLANE: [Part; 3] = [Part::Apiserver, Part::ControllerManager, Part::Scheduler];

    /// The upstream binary / component name.
    pub fn upstream(self) -> &'static str {
        match self {
            Part::Apiserver => "kube-apiserver",
            Part::ControllerManager => "kube-controller-manager",
            Part::Scheduler => "kube-scheduler",
            Part::Kubelet => "kubelet",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Part::Apiserver => "apiserver",
            Part::ControllerManager => "controller-manager",
            Part::Scheduler => "scheduler",
            Part::Kubelet => "kubelet",
        }
    }

    pub fn from_upstream(name: &str) -> Option<Part> {
        [Part::Apiserver, Part::ControllerManager, Part::Scheduler, Part::Kubelet]
            .into_iter()
            .find(|p| p.upstream() == name)
    }

    /// The HostedCluster condition that reports this part.
    pub fn condition_type(self) -> &'static str {
        match self {
            Part::Apiserver => conditions::KUBE_APISERVER_READY,
            Part::ControllerManager => conditions::KUBE_CONTROLLER_MANAGER_READY,
            Part::Scheduler => conditions::KUBE_SCHEDULER_READY,
            Part::Kubelet => conditions::NODES_READY,
        }
    }
}

/// `<prefix>-<suffix>`, cut to Kubernetes' 63 characters with a hash of the
/// whole so distinct long names stay distinct.
fn bounded_name(prefix: &str, suffix: &str) -> String {
    let full = format!("{prefix}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    use sha2::{Digest, Sha256};
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
    let keep = 63 - hash.len() - 1 - suffix.len() - 1;
    let head: String = prefix.chars().take(keep).collect();
    format!("{}-{hash}-{suffix}", head.trim_end_matches('-'))
}

/// Name of instance `index` of `part` on its Machine.
pub fn component_name(part: Part, namespace: &str, cluster: &str, index: i32) -> String {
    bounded_name(&format!("{}-{namespace}-{cluster}", part.short()), &index.to_string())
}

/// Which part and instance a Machine component is, if it is this cluster's.
pub fn parse_component_name(name: &str, namespace: &str, cluster: &str) -> Option<(Part, i32)> {
    for part in [Part::Apiserver, Part::ControllerManager, Part::Scheduler, Part::Kubelet] {
        let (_, index) = name.rsplit_once('-')?;
        let index: i32 = index.parse().ok()?;
        if component_name(part, namespace, cluster, index) == name {
            return Some((part, index));
        }
    }
    None
}

/// The cluster's certificates, keys and component kubeconfigs.
pub fn pki_secret_name(cluster: &str) -> String {
    format!("{cluster}-pki")
}

/// The admin kubeconfig (key `kubeconfig`).
pub fn admin_secret_name(cluster: &str) -> String {
    format!("{cluster}-admin-kubeconfig")
}

/// The node bootstrap token and the kubelets' bootstrap kubeconfig.
pub fn bootstrap_secret_name(cluster: &str) -> String {
    format!("{cluster}-node-bootstrap")
}

/// Field manager for what the operator writes on Machines: one per cluster,
/// so server-side apply leaves other clusters' components alone.
pub fn field_manager(namespace: &str, cluster: &str) -> String {
    format!("flotilla-hc-{namespace}-{cluster}")
}

/// Value of [`OWNER_LABEL`].
pub fn owner_label_value(namespace: &str, cluster: &str) -> String {
    format!("{namespace}.{cluster}")
}

/// Name of worker node `index`.
pub fn node_name(cluster: &str, index: i32) -> String {
    bounded_name(&format!("{cluster}-node"), &index.to_string())
}

// ---------------------------------------------------------------- machines

fn labels_match(selector: &BTreeMap<String, String>, machine: &Machine) -> bool {
    let labels = machine.metadata.labels.as_ref();
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether the machine is in `pool` (every machine is when there is none).
fn in_pool(pool: Option<&str>, machine: &Machine) -> bool {
    pool.is_none_or(|p| {
        machine
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(flotilla_api::kok::MACHINE_POOL_LABEL))
            .map(String::as_str)
            == Some(p)
    })
}

/// Whether a machine can host components: not being deleted, with an
/// address (given or reported), and its node agent reported within
/// `lost_after`. (Its Ready condition says whether its components are
/// healthy, which is not the question: a machine whose apiserver crashes is
/// still there.)
pub fn machine_usable(machine: &Machine, now: OffsetDateTime, lost_after: Duration) -> bool {
    machine_unusable(machine, now, lost_after).is_none()
}

/// Why a machine cannot host components ([`machine_usable`]), naming it;
/// `None` when it can.
pub fn machine_unusable(machine: &Machine, now: OffsetDateTime, lost_after: Duration) -> Option<String> {
    let name = machine_name(machine);
    if machine.metadata.deletion_timestamp.is_some() {
        return Some(format!("{name} is being deleted"));
    }
    if machine.address().is_none() {
        return Some(machine.no_address_reason());
    }
    let Some(beat) = machine.status.as_ref().and_then(|s| s.last_heartbeat.as_ref()) else {
        return Some(format!("{name}'s node agent has never reported"));
    };
    let at = OffsetDateTime::from_unix_timestamp(beat.0.as_second()).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let age = now - at;
    (age > lost_after).then(|| format!("{name}'s node agent has not reported for {}s", age.whole_seconds()))
}

fn machine_name(m: &Machine) -> String {
    m.metadata.name.clone().unwrap_or_default()
}

fn host_of(address: &str) -> String {
    if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}

/// One control-plane instance: an apiserver, a controller-manager and a
/// scheduler side by side on one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePlan {
    pub index: i32,
    pub machine: String,
    pub address: String,
    pub ports: ComponentPorts,
}

impl InstancePlan {
    pub fn apiserver_url(&self) -> String {
        format!("https://{}:{}", host_of(&self.address), self.ports.apiserver)
    }
}

/// One worker kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub index: i32,
    pub name: String,
    pub machine: String,
    pub address: String,
    pub kubelet_port: u16,
    pub read_only_port: u16,
}

/// Where everything of the cluster runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub instances: Vec<InstancePlan>,
    pub nodes: Vec<NodePlan>,
    /// Instances that could not be placed (not enough usable machines).
    pub unplaced_instances: i32,
    pub unplaced_nodes: i32,
    /// Why the machines the control plane may use (its selector and pool)
    /// but does not are unusable, one reason per machine.
    pub control_plane_unusable: Vec<String>,
    /// The same for the machines of the node pool.
    pub nodes_unusable: Vec<String>,
}

impl Placement {
    /// What clients use: the first instance's apiserver.
    pub fn endpoint(&self) -> Option<String> {
        self.instances.first().map(InstancePlan::apiserver_url)
    }
}

/// Port bookkeeping while placing, per address: machines that share an
/// address (node agents on one host) share its ports.
struct PortBook<'a> {
    range: RangeInclusive<u16>,
    /// Ports used by other owners' components, by address.
    foreign: BTreeMap<String, BTreeSet<u16>>,
    /// Ports given out in this plan, by address.
    given: BTreeMap<String, BTreeSet<u16>>,
    machines: &'a [Machine],
}

impl<'a> PortBook<'a> {
    fn new(machines: &'a [Machine], ours: &dyn Fn(&str) -> bool, range: RangeInclusive<u16>) -> Self {
        let mut foreign: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        for m in machines {
            let used = foreign.entry(m.address().unwrap_or_default().to_string()).or_default();
            used.extend(m.spec.components.iter().filter(|c| !ours(&c.name)).flat_map(ports::component_ports));
        }
        Self { range, foreign, given: BTreeMap::new(), machines }
    }

    /// Keeps `wanted` if none of it is taken yet, else allocates fresh ones.
    fn take(
        &mut self,
        address: &str,
        machine: &str,
        wanted: Option<Vec<u16>>,
        count: usize,
    ) -> Result<Vec<u16>, HostedPlanError> {
        let foreign = self.foreign.get(address).cloned().unwrap_or_default();
        let given = self.given.entry(address.to_string()).or_default();
        let taken = |p: &u16| foreign.contains(p) || given.contains(p);
        let distinct = |w: &Vec<u16>| w.iter().collect::<BTreeSet<_>>().len() == w.len();
        let ports = match wanted.filter(|w| w.len() == count && distinct(w) && !w.iter().any(taken)) {
            Some(w) => w,
            None => {
                let used: BTreeSet<u16> = foreign.union(given).copied().collect();
                ports::allocate(&used, self.range.clone(), count).ok_or_else(|| HostedPlanError::NoPorts {
                    machine: machine.to_string(),
                    first: *self.range.start(),
                    last: *self.range.end(),
                })?
            }
        };
        given.extend(ports.iter().copied());
        Ok(ports)
    }

    pub(crate) fn machine(&self, name: &str) -> Option<&'a Machine> {
        self.machines.iter().find(|m| m.metadata.name.as_deref() == Some(name))
    }

    /// Where machine `name` is reached (given or reported).
    fn address(&self, name: &str) -> Result<String, HostedPlanError> {
        let machine = self.machine(name);
        match machine.and_then(Machine::address) {
            Some(address) => Ok(address.to_string()),
            None => Err(HostedPlanError::NoAddress(
                machine.map_or_else(|| format!("{name} is not a Machine"), Machine::no_address_reason),
            )),
        }
    }
}

/// Places the control plane's instances and the worker kubelets.
///
/// An instance stays on the machine that already runs its apiserver while
/// that machine is usable; otherwise (a new instance, or its machine was
/// lost) it goes to the usable, selected machine with the fewest of this
/// cluster's instances, then the fewest components, then by name. Worker
/// kubelets spread the same way over all usable machines.
pub fn place(
    hc: &HostedCluster,
    machines: &[Machine],
    config: &HostedOperatorConfig,
    now: OffsetDateTime,
) -> Result<Placement, HostedPlanError> {
    let name = hc.metadata.name.as_deref().unwrap_or_default();
    let namespace = hc.metadata.namespace.as_deref().unwrap_or_default();
    let ours = |c: &str| parse_component_name(c, namespace, name).is_some();
    let mut book = PortBook::new(machines, &ours, config.port_range.clone());
    let usable: Vec<&Machine> =
        machines.iter().filter(|m| machine_usable(m, now, config.machine_lost_after)).collect();
    let find = |part: Part, index: i32| -> Option<(&Machine, &ComponentSpec)> {
        let wanted = component_name(part, namespace, name, index);
        machines.iter().find_map(|m| m.spec.components.iter().find(|c| c.name == wanted).map(|c| (m, c)))
    };

    let replicas = hc.spec.control_plane.replicas.max(1);
    let mut placement = Placement::default();
    let mut load: BTreeMap<String, (usize, usize)> = usable
        .iter()
        .map(|m| {
            let others = m.spec.components.iter().filter(|c| !ours(&c.name)).count();
            (machine_name(m), (0, others))
        })
        .collect();
    let pool = hc.spec.control_plane.machine_pool.as_deref();
    let for_control_plane =
        |m: &Machine| labels_match(&hc.spec.control_plane.machine_selector, m) && in_pool(pool, m);
    let selected: Vec<&Machine> = usable.iter().copied().filter(|m| for_control_plane(m)).collect();
    placement.control_plane_unusable = machines
        .iter()
        .filter(|m| for_control_plane(m))
        .filter_map(|m| machine_unusable(m, now, config.machine_lost_after))
        .collect();

    // Kept instances first, so new ones avoid their machines.
    let mut chosen: BTreeMap<i32, String> = BTreeMap::new();
    for index in 0..replicas {
        if let Some((m, _)) = find(Part::Apiserver, index) {
            let machine = machine_name(m);
            if selected.iter().any(|u| machine_name(u) == machine) {
                if let Some(l) = load.get_mut(&machine) {
                    l.0 += 1;
                }
                chosen.insert(index, machine);
            }
        }
    }
    for index in 0..replicas {
        if chosen.contains_key(&index) {
            continue;
        }
        let best = selected.iter().map(|m| machine_name(m)).min_by_key(|m| {
            let (instances, others) = load.get(m).copied().unwrap_or_default();
            (instances, others, m.clone())
        });
        let Some(machine) = best else {
            placement.unplaced_instances += 1;
            continue;
        };
        if let Some(l) = load.get_mut(&machine) {
            l.0 += 1;
        }
        chosen.insert(index, machine);
    }
    for (index, machine) in chosen {
        let address = book.address(&machine)?;
        // Ports are kept only when the component is still on this machine.
        let existing = |part: Part, flag: &str| {
            find(part, index)
                .filter(|(on, _)| machine_name(on) == machine)
                .and_then(|(_, c)| ports::flag_port(c, flag))
        };
        let wanted = [
            existing(Part::Apiserver, "--secure-port"),
            existing(Part::ControllerManager, "--secure-port"),
            existing(Part::Scheduler, "--secure-port"),
        ];
        let wanted = wanted.iter().all(Option::is_some).then(|| wanted.iter().flatten().copied().collect());
        let got = book.take(&address, &machine, wanted, 3)?;
        placement.instances.push(InstancePlan {
            index,
            machine,
            address,
            ports: ComponentPorts { apiserver: got[0], controller_manager: got[1], scheduler: got[2] },
        });
    }

    let count = hc.spec.nodes.as_ref().map_or(0, |n| n.count.max(0));
    let node_pool = hc.spec.nodes.as_ref().and_then(|n| n.machine_pool.as_deref());
    if count > 0 {
        placement.nodes_unusable = machines
            .iter()
            .filter(|m| in_pool(node_pool, m))
            .filter_map(|m| machine_unusable(m, now, config.machine_lost_after))
            .collect();
    }
    let mut node_load: BTreeMap<String, usize> =
        usable.iter().filter(|m| in_pool(node_pool, m)).map(|m| (machine_name(m), 0)).collect();
    let mut node_chosen: BTreeMap<i32, String> = BTreeMap::new();
    for index in 0..count {
        if let Some((m, _)) = find(Part::Kubelet, index) {
            let machine = machine_name(m);
            if let Some(l) = node_load.get_mut(&machine) {
                *l += 1;
                node_chosen.insert(index, machine);
            }
        }
    }
    for index in 0..count {
        if node_chosen.contains_key(&index) {
            continue;
        }
        let best = node_load.iter().min_by_key(|(m, n)| (**n, (*m).clone())).map(|(m, _)| m.clone());
        let Some(machine) = best else {
            placement.unplaced_nodes += 1;
            continue;
        };
        if let Some(l) = node_load.get_mut(&machine) {
            *l += 1;
        }
        node_chosen.insert(index, machine);
    }
    for (index, machine) in node_chosen {
        let address = book.address(&machine)?;
        let wanted =
            find(Part::Kubelet, index).filter(|(on, _)| machine_name(on) == machine).and_then(|(_, c)| {
                Some(vec![
                    ports::flag_port(c, "--kubelet-port")?,
                    ports::flag_port(c, "--kubelet-read-only-port")?,
                ])
            });
        let got = book.take(&address, &machine, wanted, 2)?;
        placement.nodes.push(NodePlan {
            index,
            name: node_name(name, index),
            machine,
            address,
            kubelet_port: got[0],
            read_only_port: got[1],
        });
    }
    Ok(placement)
}

// ---------------------------------------------------------------- components

/// What the components are rendered from.
pub struct RenderInputs<'a> {
    pub hc: &'a HostedCluster,
    pub placement: &'a Placement,
    /// Client URLs of the etcd members.
    pub etcd_servers: &'a [String],
    /// Version each control-plane instance and kubelet runs, by part and
    /// index; the cluster version (kubelets: `node_version`) where absent.
    pub versions: &'a BTreeMap<(Part, i32), String>,
    /// Version of kubelets `versions` does not name.
    pub node_version: &'a str,
    pub config: &'a HostedOperatorConfig,
}

fn pki_file(namespace: &str, secret: &str, key: &str) -> ComponentFile {
    ComponentFile {
        path: format!("{PKI_DIR}/{key}"),
        secret_ref: Some(KeyRef {
            namespace: namespace.to_string(),
            name: secret.to_string(),
            key: key.to_string(),
        }),
        mode: Some(0o600),
        ..Default::default()
    }
}

fn bin(config: &HostedOperatorConfig, version: &str, binary: &str) -> String {
    match config.versions.get(version) {
        Some(dir) => dir.join(binary).display().to_string(),
        // Unknown versions are refused before rendering; this keeps the
        // component visibly wrong rather than silently another version.
        None => format!("/nonexistent/kubernetes-{version}/{binary}"),
    }
}

/// The components each machine must run for the cluster (machines that
/// must run none of them are absent).
pub fn machine_components(inputs: &RenderInputs) -> BTreeMap<String, Vec<ComponentSpec>> {
    let hc = inputs.hc;
    let name = hc.metadata.name.as_deref().unwrap_or_default();
    let namespace = hc.metadata.namespace.as_deref().unwrap_or_default();
    let secret = pki_secret_name(name);
    let cluster_version =
        hc.status.as_ref().and_then(|s| s.version.clone()).unwrap_or_else(|| hc.spec.version.clone());
    let mut out: BTreeMap<String, Vec<ComponentSpec>> = BTreeMap::new();
    for instance in &inputs.placement.instances {
        let Some(mut layout) = ControlPlaneLayout::for_hosted_cluster(
            name,
            &hc.spec,
            PKI_DIR.into(),
            &instance.address,
            instance.ports,
            inputs.etcd_servers.to_vec(),
        ) else {
            continue;
        };
        layout.leader_elect = hc.spec.control_plane.replicas > 1;
        let version_of = |part: Part| {
            inputs.versions.get(&(part, instance.index)).cloned().unwrap_or_else(|| cluster_version.clone())
        };
        let host = host_of(&instance.address);
        for (part, component, args, port, path) in [
            (
                Part::Apiserver,
                Component::KubeApiserver,
                render::apiserver_args(&layout),
                instance.ports.apiserver,
                "/readyz",
            ),
            (
                Part::ControllerManager,
                Component::KubeControllerManager,
                render::controller_manager_args(&layout),
                instance.ports.controller_manager,
                "/healthz",
            ),
            (
                Part::Scheduler,
                Component::KubeScheduler,
                render::scheduler_args(&layout),
                instance.ports.scheduler,
                "/healthz",
            ),
        ] {
            let version = version_of(part);
            let files = render::component_secret_keys(&component)
                .iter()
                .map(|k| pki_file(namespace, &secret, k))
                .collect();
            out.entry(instance.machine.clone()).or_default().push(ComponentSpec {
                name: component_name(part, namespace, name, instance.index),
                binary: bin(inputs.config, &version, part.upstream()),
                args,
                env: BTreeMap::from([(VERSION_ENV.to_string(), version)]),
                files,
                health: Some(HealthCheck {
                    http: Some(HttpCheck {
                        url: format!("https://{host}:{port}{path}"),
                        ca_file: Some(format!("{PKI_DIR}/{}", keys::CA_CRT)),
                        insecure: false,
                    }),
                    period_seconds: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    let bootstrap = bootstrap_secret_name(name);
    for node in &inputs.placement.nodes {
        let version =
            inputs.versions.get(&(Part::Kubelet, node.index)).map_or(inputs.node_version, String::as_str);
        let kubemark = bin(inputs.config, version, "kubemark");
        let args = vec![
            "kubelet-join".to_string(),
            format!("--bootstrap-kubeconfig={PKI_DIR}/bootstrap.kubeconfig"),
            "--kubeconfig=kubelet.kubeconfig".to_string(),
            format!("--node-name={}", node.name),
            "--".to_string(),
            kubemark,
            "--morph=kubelet".to_string(),
            format!("--name={}", node.name),
            "--kubeconfig=kubelet.kubeconfig".to_string(),
            format!("--kubelet-port={}", node.kubelet_port),
            format!("--kubelet-read-only-port={}", node.read_only_port),
            "--node-status-update-frequency=1s".to_string(),
        ];
        let file = ComponentFile {
            path: format!("{PKI_DIR}/bootstrap.kubeconfig"),
            secret_ref: Some(KeyRef {
                namespace: namespace.to_string(),
                name: bootstrap.clone(),
                key: "kubeconfig".to_string(),
            }),
            mode: Some(0o600),
            ..Default::default()
        };
        out.entry(node.machine.clone()).or_default().push(ComponentSpec {
            name: component_name(Part::Kubelet, namespace, name, node.index),
            binary: inputs.config.flotilla_binary.display().to_string(),
            args,
            env: BTreeMap::from([(VERSION_ENV.to_string(), version.to_string())]),
            files: vec![file],
            health: Some(HealthCheck {
                http: Some(HttpCheck {
                    url: format!("http://{}:{}/healthz", host_of(&node.address), node.read_only_port),
                    ..Default::default()
                }),
                period_seconds: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    out
}

/// Machines that hold any of the cluster's components.
pub fn machines_with_components(machines: &[Machine], namespace: &str, cluster: &str) -> Vec<String> {
    machines
        .iter()
        .filter(|m| {
            m.spec.components.iter().any(|c| parse_component_name(&c.name, namespace, cluster).is_some())
        })
        .map(machine_name)
        .collect()
}

/// Each kube-apiserver instance's URL (index 0 up to `replicas`), read
/// from its Machine component's `--secure-port` and the Machine's address;
/// `None` for an instance no Machine holds yet. For clients that use every
/// endpoint (tests, the upgrade benchmark).
pub fn apiserver_urls(
    machines: &[Machine],
    namespace: &str,
    cluster: &str,
    replicas: i32,
) -> Vec<Option<String>> {
    (0..replicas)
        .map(|index| {
            let name = component_name(Part::Apiserver, namespace, cluster, index);
            machines.iter().find_map(|m| {
                let c = m.spec.components.iter().find(|c| c.name == name)?;
                let port = ports::flag_port(c, "--secure-port")?;
                Some(format!("https://{}:{port}", host_of(m.address()?)))
            })
        })
        .collect()
}

// ---------------------------------------------------------------- observation

/// What a node agent reports about one of the cluster's components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentObservation {
    pub part: Part,
    pub index: i32,
    pub machine: String,
    /// The version its spec says.
    pub version: String,
    /// Running with the current spec and answering its health check.
    pub healthy: bool,
    /// Words for a condition when it is not healthy.
    pub problem: Option<String>,
    /// When the running process started (as its node agent reports).
    pub started_at: Option<Time>,
}

/// Reads the cluster's components back from the Machines: spec (version)
/// and status (running, healthy, the spec hash matching what runs).
pub fn observe(machines: &[Machine], namespace: &str, cluster: &str) -> Vec<ComponentObservation> {
    let mut out = Vec::new();
    for m in machines {
        for c in &m.spec.components {
            let Some((part, index)) = parse_component_name(&c.name, namespace, cluster) else { continue };
            let status = m.status.as_ref().and_then(|s| s.components.iter().find(|s| s.name == c.name));
            let (healthy, problem) = match status {
                None => (false, Some(format!("not started yet on machine {}", machine_name(m)))),
                Some(s) if s.state != ComponentState::Running => (
                    false,
                    Some(format!(
                        "{} on machine {}{}",
                        s.state,
                        machine_name(m),
                        s.message.as_ref().map(|t| format!(": {t}")).unwrap_or_default()
                    )),
                ),
                Some(s) if s.healthy != Some(true) => (
                    false,
                    Some(format!(
                        "not healthy yet on machine {}{}",
                        machine_name(m),
                        s.message.as_ref().map(|t| format!(": {t}")).unwrap_or_default()
                    )),
                ),
                Some(_) => (true, None),
            };
            out.push(ComponentObservation {
                part,
                index,
                machine: machine_name(m),
                version: c.env.get(VERSION_ENV).cloned().unwrap_or_default(),
                healthy,
                problem,
                started_at: status.and_then(|s| s.started_at.clone()),
            });
        }
    }
    out.sort_by_key(|o| (o.part, o.index));
    out
}

/// Whether an instance counts as healthy on its spec's version for the
/// upgrade plan. While a step runs (`step_started`), only a process started
/// since counts: the one before it ran the old configuration. With no step
/// known, an instance whose spec is on a version the cluster is not known to
/// run (`known_version`) does not count either: a step has begun that a
/// cached, older status does not show yet, and its healthy process may
/// still be the old one.
pub fn counts_as_healthy(
    o: &ComponentObservation,
    step_started: Option<&Time>,
    known_version: Option<&str>,
) -> bool {
    o.healthy
        && match (step_started, &o.started_at) {
            (Some(step), Some(started)) => started.0 >= step.0,
            (Some(_), None) => false,
            (None, _) => known_version.is_none_or(|v| v == o.version),
        }
}

/// Admin user of the cluster (for messages).
pub const ADMIN_USER: &str = identities::ADMIN_USER;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flotilla_api::kok::{HostedClusterSpec, HostedEtcd, NodesSpec};
    use flotilla_api::machine::{MachineSpec, MachineStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use k8s_openapi::jiff::Timestamp;

    pub(crate) fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    /// A machine whose agent reported 5 s ago (`alive`) or 10 minutes ago.
    /// Its Ready condition is False either way: unhealthy components do
    /// not make a machine lost.
    pub(crate) fn machine(name: &str, alive: bool) -> Machine {
        let mut m =
            Machine::new(name, MachineSpec { address: Some("127.0.0.1".into()), ..Default::default() });
        let age = if alive { 5 } else { 600 };
        m.status = Some(MachineStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "ComponentsNotReady".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(Timestamp::from_second(1_800_000_000).unwrap()),
            }],
            last_heartbeat: Some(Time(Timestamp::from_second(1_800_000_000 - age).unwrap())),
            ..Default::default()
        });
        m
    }

    #[test]
    fn apiserver_urls_come_from_each_instances_component_and_machine() {
        let mut m1 = machine("m1", true);
        m1.spec.components.push(ComponentSpec {
            name: component_name(Part::Apiserver, "ns", "c", 0),
            args: vec!["--v=1".into(), "--secure-port=7000".into()],
            ..Default::default()
        });
        // No spec.address: the one its node agent reports.
        let mut m2 = machine("m2", true);
        m2.spec.address = None;
        if let Some(status) = m2.status.as_mut() {
            status.addresses = vec![flotilla_api::machine::MachineAddress::new(
                flotilla_api::machine::MachineAddressType::InternalIp,
                "::1",
            )];
        }
        m2.spec.components.push(ComponentSpec {
            name: component_name(Part::Apiserver, "ns", "c", 1),
            args: vec!["--secure-port=7001".into()],
            ..Default::default()
        });
        let other = component_name(Part::Apiserver, "ns", "other", 2);
        m2.spec.components.push(ComponentSpec { name: other, ..Default::default() });
        assert_eq!(
            apiserver_urls(&[m1, m2], "ns", "c", 3),
            [Some("https://127.0.0.1:7000".to_string()), Some("https://[::1]:7001".to_string()), None]
        );
    }

    pub(crate) fn hc(replicas: i32, nodes: i32) -> HostedCluster {
        let mut hc = HostedCluster::new(
            "team-a",
            HostedClusterSpec {
                version: "1.36.2".into(),
                etcd: HostedEtcd { cluster_ref: Some("team-a-etcd".into()), shared: None },
                nodes: Some(NodesSpec { count: nodes, machine_pool: None }),
                ..Default::default()
            },
        );
        hc.spec.control_plane.replicas = replicas;
        hc.metadata.namespace = Some("default".into());
        hc
    }

    pub(crate) fn config() -> HostedOperatorConfig {
        HostedOperatorConfig {
            versions: BTreeMap::from([("1.36.2".to_string(), PathBuf::from("/k8s/1.36.2"))]),
            port_range: 40000..=40100,
            ..Default::default()
        }
    }

    /// Applies a plan's components to the machines, as the operator does.
    pub(crate) fn apply(machines: &mut [Machine], hc: &HostedCluster, placement: &Placement) {
        let versions = BTreeMap::new();
        let rendered = machine_components(&RenderInputs {
            hc,
            placement,
            etcd_servers: &["https://127.0.0.1:2379".to_string()],
            versions: &versions,
            node_version: "1.36.2",
            config: &config(),
        });
        let ns = hc.metadata.namespace.as_deref().unwrap();
        let name = hc.metadata.name.as_deref().unwrap();
        for m in machines.iter_mut() {
            m.spec.components.retain(|c| parse_component_name(&c.name, ns, name).is_none());
            m.spec
                .components
                .extend(rendered.get(m.metadata.name.as_deref().unwrap()).cloned().unwrap_or_default());
        }
    }

    #[test]
    fn names_round_trip_and_stay_within_63_characters() {
        for part in [Part::Apiserver, Part::ControllerManager, Part::Scheduler, Part::Kubelet] {
            let n = component_name(part, "default", "team-a", 2);
            assert_eq!(parse_component_name(&n, "default", "team-a"), Some((part, 2)), "{n}");
            assert_eq!(parse_component_name(&n, "default", "team-b"), None);
            let long =
                component_name(part, "a-very-long-namespace-name", "and-an-even-longer-cluster-name-x", 11);
            assert!(long.len() <= 63, "{long}");
            assert_eq!(
                parse_component_name(
                    &long,
                    "a-very-long-namespace-name",
                    "and-an-even-longer-cluster-name-x"
                ),
                Some((part, 11))
            );
        }
        assert_eq!(component_name(Part::Apiserver, "default", "team-a", 0), "apiserver-default-team-a-0");
        assert_ne!(
            component_name(Part::ControllerManager, "ns", &"x".repeat(60), 0),
            component_name(Part::ControllerManager, "ns", &format!("{}y", "x".repeat(59)), 0)
        );
    }

    #[test]
    fn instances_spread_over_usable_machines_and_keep_their_place_and_ports() {
        let mut machines = vec![machine("m1", true), machine("m2", true), machine("m3", false)];
        let hc = hc(2, 3);
        let first = place(&hc, &machines, &config(), now()).unwrap();
        let on: Vec<&str> = first.instances.iter().map(|i| i.machine.as_str()).collect();
        assert_eq!(on, ["m1", "m2"]);
        assert_eq!(first.nodes.len(), 3);
        assert!(first.nodes.iter().all(|n| n.machine != "m3"), "{:?}", first.nodes);
        // Ports on one address never collide.
        let mut all: Vec<u16> = first
            .instances
            .iter()
            .flat_map(|i| [i.ports.apiserver, i.ports.controller_manager, i.ports.scheduler])
            .collect();
        all.extend(first.nodes.iter().flat_map(|n| [n.kubelet_port, n.read_only_port]));
        let unique: BTreeSet<u16> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len());

        apply(&mut machines, &hc, &first);
        // Computed again from what the machines now hold: the same plan.
        assert_eq!(place(&hc, &machines, &config(), now()).unwrap(), first);

        // m2 is lost: its instance moves (to the least loaded usable machine, m1 here
        // being the only one); instance 0 keeps its machine and ports.
        machines[1] = {
            let mut m = machines[1].clone();
            m.status = machine("m2", false).status;
            m
        };
        let moved = place(&hc, &machines, &config(), now()).unwrap();
        assert_eq!(moved.instances[0], first.instances[0]);
        assert_eq!(moved.instances[1].machine, "m1");
        assert_ne!(moved.instances[1].ports.apiserver, moved.instances[0].ports.apiserver);
    }

    #[test]
    fn machine_pools_bound_where_instances_and_kubelets_go_and_where_a_lost_one_moves() {
        let pooled = |name: &str, pool: &str| {
            let mut m = machine(name, true);
            m.metadata.labels =
                Some(BTreeMap::from([(flotilla_api::kok::MACHINE_POOL_LABEL.to_string(), pool.to_string())]));
            m
        };
        let mut machines =
            vec![pooled("m1", "cp"), machine("m2", true), pooled("m3", "cp"), pooled("m4", "workers")];
        let mut hc = hc(1, 2);
        hc.spec.control_plane.machine_pool = Some("cp".into());
        hc.spec.nodes.as_mut().unwrap().machine_pool = Some("workers".into());
        let first = place(&hc, &machines, &config(), now()).unwrap();
        assert_eq!(first.instances[0].machine, "m1");
        assert!(first.nodes.iter().all(|n| n.machine == "m4"), "{:?}", first.nodes);
        apply(&mut machines, &hc, &first);

        // m1 is lost: the instance moves to the other machine of the pool,
        // not to the emptier m2 outside it.
        machines[0].status = machine("m1", false).status;
        let moved = place(&hc, &machines, &config(), now()).unwrap();
        assert_eq!(moved.instances[0].machine, "m3");

        // No usable machine left in the pool: unplaced, and the condition says which pool.
        machines[2].status = machine("m3", false).status;
        let none = place(&hc, &machines, &config(), now()).unwrap();
        assert_eq!(none.unplaced_instances, 1);
        // (What the condition then says: `hosted_status`'s tests.)
    }

    #[test]
    fn other_owners_ports_are_avoided_and_a_stale_heartbeat_means_lost() {
        let mut m1 = machine("m1", true);
        m1.spec.components.push(ComponentSpec {
            name: "other".into(),
            binary: "/bin/x".into(),
            args: vec!["--secure-port=40000".into(), "--port=40001".into()],
            ..Default::default()
        });
        let placement = place(&hc(1, 0), &[m1.clone()], &config(), now()).unwrap();
        assert_eq!(
            placement.instances[0].ports,
            ComponentPorts { apiserver: 40002, controller_manager: 40003, scheduler: 40004 }
        );
        assert!(machine_usable(&m1, now(), Duration::seconds(40)));
        assert!(!machine_usable(&m1, now() + Duration::seconds(60), Duration::seconds(40)));
        let none = place(&hc(1, 1), &[machine("m1", false)], &config(), now()).unwrap();
        assert_eq!((none.unplaced_instances, none.unplaced_nodes), (1, 1));
        let tight = HostedOperatorConfig { port_range: 40000..=40003, ..config() };
        assert!(matches!(place(&hc(1, 0), &[m1], &tight, now()), Err(HostedPlanError::NoPorts { .. })));
    }

    #[test]
    fn components_run_the_planned_versions_with_only_their_files() {
        let machines = vec![machine("m1", true)];
        let hc = hc(1, 1);
        let placement = place(&hc, &machines, &config(), now()).unwrap();
        let versions = BTreeMap::from([((Part::Apiserver, 0), "1.37.0".to_string())]);
        let cfg = HostedOperatorConfig {
            versions: BTreeMap::from([
                ("1.36.2".to_string(), PathBuf::from("/k8s/1.36.2")),
                ("1.37.0".to_string(), PathBuf::from("/k8s/1.37.0")),
            ]),
            ..config()
        };
        let rendered = machine_components(&RenderInputs {
            hc: &hc,
            placement: &placement,
            etcd_servers: &["https://127.0.0.1:2379".to_string()],
            versions: &versions,
            node_version: "1.36.2",
            config: &cfg,
        });
        let comps = &rendered["m1"];
        assert_eq!(comps.len(), 4);
        let api = comps.iter().find(|c| c.name == "apiserver-default-team-a-0").unwrap();
        assert_eq!(api.binary, "/k8s/1.37.0/kube-apiserver");
        assert_eq!(api.env[VERSION_ENV], "1.37.0");
        assert!(api.args.contains(&"--etcd-servers=https://127.0.0.1:2379".to_string()));
        assert!(api.files.iter().all(|f| f.secret_ref.as_ref().unwrap().name == "team-a-pki"));
        assert!(!api.files.iter().any(|f| f.path.ends_with("/ca.key")));
        let cm = comps.iter().find(|c| c.name == "controller-manager-default-team-a-0").unwrap();
        assert_eq!(cm.binary, "/k8s/1.36.2/kube-controller-manager");
        let kubelet = comps.iter().find(|c| c.name == "kubelet-default-team-a-0").unwrap();
        assert_eq!(kubelet.args[0], "kubelet-join");
        assert!(kubelet.args.contains(&"/k8s/1.36.2/kubemark".to_string()));
        assert!(kubelet.args.contains(&"--name=team-a-node-0".to_string()));
        assert_eq!(kubelet.files[0].secret_ref.as_ref().unwrap().name, "team-a-node-bootstrap");
    }

    #[test]
    fn each_kubelet_runs_its_planned_version_and_the_others_the_node_version() {
        let machines = vec![machine("m1", true)];
        let hc = hc(1, 2);
        let placement = place(&hc, &machines, &config(), now()).unwrap();
        let versions = BTreeMap::from([((Part::Kubelet, 1), "1.37.0".to_string())]);
        let cfg = HostedOperatorConfig {
            versions: BTreeMap::from([
                ("1.36.2".to_string(), PathBuf::from("/k8s/1.36.2")),
                ("1.37.0".to_string(), PathBuf::from("/k8s/1.37.0")),
            ]),
            ..config()
        };
        let rendered = machine_components(&RenderInputs {
            hc: &hc,
            placement: &placement,
            etcd_servers: &["https://127.0.0.1:2379".to_string()],
            versions: &versions,
            node_version: "1.36.2",
            config: &cfg,
        });
        for (name, version) in
            [("kubelet-default-team-a-0", "1.36.2"), ("kubelet-default-team-a-1", "1.37.0")]
        {
            let kubelet = rendered["m1"].iter().find(|c| c.name == name).unwrap();
            assert!(kubelet.args.contains(&format!("/k8s/{version}/kubemark")), "{name}: {:?}", kubelet.args);
            assert_eq!(kubelet.env[VERSION_ENV], version, "{name}");
        }
    }

    #[test]
    fn an_instance_counts_healthy_only_on_a_process_that_runs_its_spec() {
        let at = |s: i64| Time(Timestamp::from_second(1_800_000_000 + s).unwrap());
        let o = |version: &str, healthy: bool, started: i64| ComponentObservation {
            part: Part::Apiserver,
            index: 0,
            machine: "m1".into(),
            version: version.into(),
            healthy,
            problem: None,
            started_at: Some(at(started)),
        };
        // Steady state and a fresh cluster.
        assert!(counts_as_healthy(&o("1.36.2", true, 0), None, Some("1.36.2")));
        assert!(counts_as_healthy(&o("1.36.2", true, 0), None, None));
        assert!(!counts_as_healthy(&o("1.36.2", false, 0), None, None));
        // During a step: only a process started since it began.
        assert!(!counts_as_healthy(&o("1.37.0", true, 0), Some(&at(10)), Some("1.36.2")));
        assert!(counts_as_healthy(&o("1.37.0", true, 12), Some(&at(10)), Some("1.36.2")));
        // A step the cached status does not show yet: the spec is already
        // on 1.37.0 but the healthy process may be the 1.36.2 one.
        assert!(!counts_as_healthy(&o("1.37.0", true, 0), None, Some("1.36.2")));
    }
}
