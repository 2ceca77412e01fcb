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

use flotilla_api::kok::{
    conditions, ControlPlaneInstanceStatus, HostedCluster, HostedClusterPhase, ROTATE_CERTS_ANNOTATION,
};
use flotilla_api::machine::{
    ComponentFile, ComponentSpec, ComponentState, HealthCheck, HttpCheck, KeyRef, Machine,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use time::{Duration, OffsetDateTime};

use crate::pki::{identities, keys, leaves, ControlPlanePki, KokPkiError, PkiInputs};
use crate::ports;
use crate::render::{self, Component, ComponentPorts, ControlPlaneLayout};
use flotilla_core::pki::CertificateAuthority;

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
    #[error("machine {0} has no address")]
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
/// address, and its node agent reported within `lost_after`. (Its Ready
/// condition says whether its components are healthy, which is not the
/// question: a machine whose apiserver crashes is still there.)
pub fn machine_usable(machine: &Machine, now: OffsetDateTime, lost_after: Duration) -> bool {
    if machine.metadata.deletion_timestamp.is_some() || machine.spec.address.is_none() {
        return false;
    }
    let Some(status) = machine.status.as_ref() else { return false };
    status.last_heartbeat.as_ref().is_some_and(|t| {
        let at = OffsetDateTime::from_unix_timestamp(t.0.as_second()).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        now - at <= lost_after
    })
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
            let used = foreign.entry(m.spec.address.clone().unwrap_or_default()).or_default();
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

    fn machine(&self, name: &str) -> Option<&'a Machine> {
        self.machines.iter().find(|m| m.metadata.name.as_deref() == Some(name))
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
    let selected: Vec<&Machine> = usable
        .iter()
        .copied()
        .filter(|m| labels_match(&hc.spec.control_plane.machine_selector, m) && in_pool(pool, m))
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
        let m = book.machine(&machine).ok_or_else(|| HostedPlanError::NoAddress(machine.clone()))?;
        let address = m.spec.address.clone().ok_or_else(|| HostedPlanError::NoAddress(machine.clone()))?;
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
        let m = book.machine(&machine).ok_or_else(|| HostedPlanError::NoAddress(machine.clone()))?;
        let address = m.spec.address.clone().ok_or_else(|| HostedPlanError::NoAddress(machine.clone()))?;
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

// ---------------------------------------------------------------- certificates

/// What forces a rotation, from the `rotate-certs` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    None,
    Leaves,
    Ca,
}

/// The rotation the annotation asks for, unless it was handled already.
pub fn requested_rotation(hc: &HostedCluster) -> (Rotation, Option<String>) {
    let value = hc.metadata.annotations.as_ref().and_then(|a| a.get(ROTATE_CERTS_ANNOTATION)).cloned();
    let handled = hc.status.as_ref().and_then(|s| s.handled_rotation.clone());
    match value {
        Some(v) if Some(&v) != handled.as_ref() => {
            let rotation = if v.starts_with("ca/") { Rotation::Ca } else { Rotation::Leaves };
            (rotation, Some(v))
        }
        _ => (Rotation::None, None),
    }
}

/// The certificates' inputs for a placement.
pub fn pki_inputs(hc: &HostedCluster, placement: &Placement) -> Option<PkiInputs> {
    let server = placement.endpoint()?;
    let mut hosts: Vec<String> = Vec::new();
    for i in &placement.instances {
        if !hosts.contains(&i.address) {
            hosts.push(i.address.clone());
        }
    }
    Some(PkiInputs {
        server: server.clone(),
        component_server: Some(server),
        endpoint_hosts: hosts,
        service_cidr: hc.spec.network.service_cidr.clone(),
        cluster_domain: hc.spec.network.cluster_domain.clone(),
        etcd_members: Vec::new(),
    })
}

/// The EtcdCluster's CA (from its Secret): it signs the apiserver's etcd
/// client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Outcome of [`pki_data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiUpdate {
    pub data: BTreeMap<String, Vec<u8>>,
    /// Names of what was (re)issued; empty when nothing changed.
    pub issued: Vec<String>,
}

/// The CertificatesReady verdict for the PKI Secret's data: whether every
/// certificate is readable and outside the renewal window, with a message
/// naming the next to expire (or what a person must do).
pub fn certificates_verdict(
    cluster: &str,
    data: &BTreeMap<String, Vec<u8>>,
    now: OffsetDateTime,
    renew_before: Duration,
) -> (bool, &'static str, String) {
    if data.is_empty() {
        return (false, "NotIssued", "the certificates are not issued yet".into());
    }
    let expiries = match ControlPlanePki::from_secret_data(cluster, data).and_then(|p| p.expiries()) {
        Ok(list) => list,
        Err(e) => return (false, "Unreadable", format!("the certificate Secret cannot be read: {e}")),
    };
    let day = |t: OffsetDateTime| format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
    if let Some(e) = expiries.iter().find(|e| e.not_after <= now) {
        return (false, "Expired", format!("certificate {} expired on {}", e.name, day(e.not_after)));
    }
    const CAS: [&str; 3] = ["ca", "front-proxy-ca", "etcd-ca"];
    if let Some(e) =
        expiries.iter().find(|e| CAS.contains(&e.name.as_str()) && e.not_after <= now + renew_before)
    {
        let fix = if e.name == "etcd-ca" {
            "the EtcdCluster owns it: restore or recreate the etcd with a new CA".to_string()
        } else {
            format!("rotate it with `flotilla cluster rotate-certs {cluster} --ca`")
        };
        return (false, "CaExpiring", format!("{} expires on {}: {fix}", e.name, day(e.not_after)));
    }
    if let Some(e) = expiries.iter().find(|e| e.not_after <= now + renew_before) {
        return (
            false,
            "Renewing",
            format!("certificate {} expires on {} and is being renewed", e.name, day(e.not_after)),
        );
    }
    let next = expiries.iter().min_by_key(|e| e.not_after);
    let message = match next {
        Some(e) => format!(
            "{} certificates; the next to expire is {} on {} (renewed from {})",
            expiries.len(),
            e.name,
            day(e.not_after),
            day(e.not_after - renew_before)
        ),
        None => "no certificates".into(),
    };
    (true, "Valid", message)
}

/// The Secret data: generated when `existing` is empty, rotated when asked,
/// leaves renewed when they expire within the threshold or lack a name the
/// placement needs, and the etcd client certificate reissued when the
/// EtcdCluster's CA changed (a restored or replaced etcd).
pub fn pki_data(
    cluster: &str,
    existing: &BTreeMap<String, Vec<u8>>,
    etcd_ca: &EtcdCa,
    inputs: &PkiInputs,
    rotation: Rotation,
    now: OffsetDateTime,
    renew_before: Duration,
) -> Result<PkiUpdate, HostedPlanError> {
    let etcd = CertificateAuthority::from_pem(&etcd_ca.cert_pem, &etcd_ca.key_pem)?;
    let (mut pki, mut issued) = if existing.is_empty() {
        (ControlPlanePki::generate_at(cluster, inputs, now)?, vec!["all".to_string()])
    } else {
        match (ControlPlanePki::from_secret_data(cluster, existing), rotation) {
            (Ok(current), Rotation::Ca) => (current.rotate_ca(inputs, now)?, vec!["ca".to_string()]),
            (Ok(current), _) => (current, Vec::new()),
            // Unreadable data is replaced rather than crash-looping on it.
            (Err(_), _) => (ControlPlanePki::generate_at(cluster, inputs, now)?, vec!["all".to_string()]),
        }
    };
    if pki.etcd_ca.pem.cert_pem != etcd.pem.cert_pem {
        pki.etcd_ca = etcd;
        pki.leaves.remove(leaves::APISERVER_ETCD_CLIENT);
    }
    let threshold = match rotation {
        // Everything counts as expiring.
        Rotation::Leaves => Duration::days(365 * 200),
        _ => renew_before,
    };
    let (next, renewed) = pki.renew_leaves(inputs, now, threshold)?;
    issued.extend(renewed);
    let data = next.to_secret_data();
    if issued.is_empty() && data == *existing {
        return Ok(PkiUpdate { data, issued });
    }
    if issued.is_empty() {
        issued.push("kubeconfigs".into());
    }
    Ok(PkiUpdate { data, issued })
}

/// An admin kubeconfig for the cluster from its Secret data.
pub fn admin_kubeconfig(data: &BTreeMap<String, Vec<u8>>) -> Option<Vec<u8>> {
    data.get(keys::ADMIN_KUBECONFIG).cloned()
}

/// The kubelets' bootstrap kubeconfig: the cluster CA and a bootstrap token.
pub fn bootstrap_kubeconfig(cluster: &str, server: &str, ca_pem: &str, token: &str) -> String {
    flotilla_core::kubeconfig::render(&flotilla_core::kubeconfig::KubeconfigSpec {
        name: cluster.to_string(),
        server: server.to_string(),
        ca_pem: ca_pem.to_string(),
        credential: flotilla_core::kubeconfig::Credential::Token(token.to_string()),
    })
}

/// A bootstrap token `<id>.<secret>` from 22 random bytes' worth of hex
/// (the caller supplies the randomness: `core` reads no entropy itself).
pub fn bootstrap_token(random_hex: &str) -> Option<String> {
    let lower: String =
        random_hex.chars().filter(|c| c.is_ascii_hexdigit()).map(|c| c.to_ascii_lowercase()).collect();
    (lower.len() >= 22).then(|| format!("{}.{}", &lower[..6], &lower[6..22]))
}

// ---------------------------------------------------------------- components

/// What the components are rendered from.
pub struct RenderInputs<'a> {
    pub hc: &'a HostedCluster,
    pub placement: &'a Placement,
    /// Client URLs of the etcd members.
    pub etcd_servers: &'a [String],
    /// Version each control-plane instance runs, by part and index; the
    /// cluster version where absent.
    pub versions: &'a BTreeMap<(Part, i32), String>,
    /// Version the kubelets run.
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
        let kubemark = bin(inputs.config, inputs.node_version, "kubemark");
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
            env: BTreeMap::from([(VERSION_ENV.to_string(), inputs.node_version.to_string())]),
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

/// A condition with its transition time kept while the verdict stays.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let old = previous.iter().find(|c| c.type_ == type_);
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: old
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone()),
    }
}

/// One condition per control-plane part (and NodesReady when nodes are
/// asked for), from what the machines report.
pub fn component_conditions(
    hc: &HostedCluster,
    placement: &Placement,
    seen: &[ComponentObservation],
    ready_nodes: i32,
    now: &Time,
) -> Vec<Condition> {
    let previous = hc.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let generation = hc.metadata.generation;
    let replicas = hc.spec.control_plane.replicas.max(1);
    let mut out = Vec::new();
    // A controller-manager or scheduler answers its health check before it
    // can reach the API; it is not ready until an apiserver is.
    let api_up = seen.iter().any(|o| o.part == Part::Apiserver && o.healthy);
    for part in Part::CONTROL_PLANE {
        let mine: Vec<&ComponentObservation> =
            seen.iter().filter(|o| o.part == part && o.index < replicas).collect();
        let healthy = mine.iter().filter(|o| o.healthy).count() as i32;
        let waits_for_api = part != Part::Apiserver && !api_up;
        let ok = healthy == replicas && !waits_for_api;
        let (reason, message) = if ok {
            ("Healthy", format!("{healthy}/{replicas} healthy"))
        } else if healthy == replicas {
            (
                "WaitingForApiserver",
                format!(
                    "{healthy}/{replicas} healthy, but no kube-apiserver is healthy yet, so it cannot act"
                ),
            )
        } else if mine.is_empty() && placement.unplaced_instances > 0 {
            (
                "NoMachine",
                match hc.spec.control_plane.machine_pool.as_deref() {
                    Some(pool) => format!(
                        "no usable machine of pool {pool} (label {}={pool}) matches \
                         spec.controlPlane.machineSelector for {}",
                        flotilla_api::kok::MACHINE_POOL_LABEL,
                        part.upstream()
                    ),
                    None => format!(
                        "no usable machine matches spec.controlPlane.machineSelector for {}",
                        part.upstream()
                    ),
                },
            )
        } else {
            let problems: Vec<String> = mine
                .iter()
                .filter_map(|o| o.problem.as_ref().map(|p| format!("{}-{}: {p}", part.upstream(), o.index)))
                .collect();
            ("NotHealthy", format!("{healthy}/{replicas} healthy; {}", problems.join("; ")))
        };
        out.push(condition(&previous, part.condition_type(), ok, reason, message, generation, now));
    }
    let wanted = hc.spec.nodes.as_ref().map_or(0, |n| n.count.max(0));
    if wanted > 0 {
        let ok = ready_nodes >= wanted;
        let message = if placement.unplaced_nodes > 0 {
            format!("{ready_nodes}/{wanted} nodes Ready; {} have no usable machine", placement.unplaced_nodes)
        } else {
            format!("{ready_nodes}/{wanted} nodes Ready")
        };
        out.push(condition(
            &previous,
            conditions::NODES_READY,
            ok,
            if ok { "NodesReady" } else { "NodesNotReady" },
            message,
            generation,
            now,
        ));
    }
    out
}

/// The instances for the status.
pub fn instance_statuses(seen: &[ComponentObservation]) -> Vec<ControlPlaneInstanceStatus> {
    let mut out: Vec<ControlPlaneInstanceStatus> = seen
        .iter()
        .map(|o| ControlPlaneInstanceStatus {
            name: format!("{}-{}", o.part.upstream(), o.index),
            machine: Some(o.machine.clone()),
            version: Some(o.version.clone()),
            healthy: o.healthy,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// The phase from the conditions and what is going on.
pub fn phase(deleting: bool, upgrading: bool, all_healthy: bool, was_ready: bool) -> HostedClusterPhase {
    if deleting {
        HostedClusterPhase::Deleting
    } else if upgrading {
        HostedClusterPhase::Upgrading
    } else if all_healthy {
        HostedClusterPhase::Ready
    } else if was_ready {
        HostedClusterPhase::Degraded
    } else {
        HostedClusterPhase::Provisioning
    }
}

/// The identity a kubelet's client certificate must carry.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

/// Group of kubelets.
pub const NODES_GROUP: &str = "system:nodes";
/// Signer of kubelet client certificates (approved and signed by the
/// cluster's own controller-manager).
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// A PEM certificate request for kubelet `node`'s client certificate.
pub fn node_csr(node: &str, key_pem: &str) -> Result<String, String> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("kubelet key: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, NODES_GROUP);
    params.distinguished_name.push(rcgen::DnType::CommonName, node_user(node));
    let csr = params.serialize_request(&key).map_err(|e| format!("certificate request: {e}"))?;
    csr.pem().map_err(|e| format!("certificate request: {e}"))
}

/// Whether a kubelet's kubeconfig can be used as it is: it trusts the
/// bootstrap kubeconfig's CA, and its certificate is for `node` and valid
/// for at least a fifth of a year more.
pub fn kubelet_credential_current(
    kubelet: &flotilla_core::kubeconfig::ParsedKubeconfig,
    bootstrap_ca_pem: &str,
    now: OffsetDateTime,
) -> bool {
    let Some(cert) = kubelet.client_cert_pem.as_deref() else { return false };
    kubelet.ca_pem.trim() == bootstrap_ca_pem.trim()
        && flotilla_core::pki::inspect_certificate(cert).is_ok_and(|f| f.not_after > now + Duration::days(73))
}

/// Admin user of the cluster (for messages).
pub const ADMIN_USER: &str = identities::ADMIN_USER;

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::kok::{HostedClusterSpec, HostedEtcd, NodesSpec};
    use flotilla_api::machine::{ComponentStatus, MachineSpec, MachineStatus};
    use k8s_openapi::jiff::Timestamp;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    /// A machine whose agent reported 5 s ago (`alive`) or 10 minutes ago.
    /// Its Ready condition is False either way: unhealthy components do
    /// not make a machine lost.
    fn machine(name: &str, alive: bool) -> Machine {
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

    fn hc(replicas: i32, nodes: i32) -> HostedCluster {
        let mut hc = HostedCluster::new(
            "team-a",
            HostedClusterSpec {
                version: "1.20.2".into(),
                etcd: HostedEtcd { cluster_ref: Some("team-a-etcd".into()), shared: None },
                nodes: Some(NodesSpec { count: nodes, machine_pool: None }),
                ..Default::default()
            },
        );
        hc.spec.control_plane.replicas = replicas;
        hc.metadata.namespace = Some("default".into());
        hc
    }

    fn config() -> HostedOperatorConfig {
        HostedOperatorConfig {
            versions: BTreeMap::from([("1.20.2".to_string(), PathBuf::from("/k8s/1.20.2"))]),
            port_range: 40000..=40100,
            ..Default::default()
        }
    }

    /// Applies a plan's components to the machines, as the operator does.
    fn apply(machines: &mut [Machine], hc: &HostedCluster, placement: &Placement) {
        let versions = BTreeMap::new();
        let rendered = machine_components(&RenderInputs {
            hc,
            placement,
            etcd_servers: &["https://127.0.0.1:2379".to_string()],
            versions: &versions,
            node_version: "1.20.2",
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
        let conditions = component_conditions(&hc, &none, &[], 0, &Time(Timestamp::UNIX_EPOCH));
        let apiserver = conditions.iter().find(|c| c.type_ == "KubeApiserverReady").unwrap();
        assert!(apiserver.message.contains("pool cp"), "{}", apiserver.message);
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
        let versions = BTreeMap::from([((Part::Apiserver, 0), "1.21.0".to_string())]);
        let cfg = HostedOperatorConfig {
            versions: BTreeMap::from([
                ("1.20.2".to_string(), PathBuf::from("/k8s/1.20.2")),
                ("1.21.0".to_string(), PathBuf::from("/k8s/1.21.0")),
            ]),
            ..config()
        };
        let rendered = machine_components(&RenderInputs {
            hc: &hc,
            placement: &placement,
            etcd_servers: &["https://127.0.0.1:2379".to_string()],
            versions: &versions,
            node_version: "1.20.2",
            config: &cfg,
        });
        let comps = &rendered["m1"];
        assert_eq!(comps.len(), 4);
        let api = comps.iter().find(|c| c.name == "apiserver-default-team-a-0").unwrap();
        assert_eq!(api.binary, "/k8s/1.21.0/kube-apiserver");
        assert_eq!(api.env[VERSION_ENV], "1.21.0");
        assert!(api.args.contains(&"--etcd-servers=https://127.0.0.1:2379".to_string()));
        assert!(api.files.iter().all(|f| f.secret_ref.as_ref().unwrap().name == "team-a-pki"));
        assert!(!api.files.iter().any(|f| f.path.ends_with("/ca.key")));
        let cm = comps.iter().find(|c| c.name == "controller-manager-default-team-a-0").unwrap();
        assert_eq!(cm.binary, "/k8s/1.20.2/kube-controller-manager");
        let kubelet = comps.iter().find(|c| c.name == "kubelet-default-team-a-0").unwrap();
        assert_eq!(kubelet.args[0], "kubelet-join");
        assert!(kubelet.args.contains(&"/k8s/1.20.2/kubemark".to_string()));
        assert!(kubelet.args.contains(&"--name=team-a-node-0".to_string()));
        assert_eq!(kubelet.files[0].secret_ref.as_ref().unwrap().name, "team-a-node-bootstrap");
    }

    #[test]
    fn observation_and_conditions_say_what_is_wrong() {
        let mut machines = vec![machine("m1", true)];
        let hc = hc(1, 0);
        let placement = place(&hc, &machines, &config(), now()).unwrap();
        apply(&mut machines, &hc, &placement);
        let status = machines[0].status.as_mut().unwrap();
        status.components = vec![
            ComponentStatus {
                name: "apiserver-default-team-a-0".into(),
                state: ComponentState::Running,
                healthy: Some(true),
                ..Default::default()
            },
            ComponentStatus {
                name: "controller-manager-default-team-a-0".into(),
                state: ComponentState::Backoff,
                message: Some("exit code 1".into()),
                ..Default::default()
            },
        ];
        let seen = observe(&machines, "default", "team-a");
        assert_eq!(seen.len(), 3);
        assert!(seen[0].healthy && seen[0].version == "1.20.2");
        let t = Time(Timestamp::from_second(1_800_000_000).unwrap());
        let conds = component_conditions(&hc, &placement, &seen, 0, &t);
        let get = |ty: &str| conds.iter().find(|c| c.type_ == ty).unwrap();
        assert_eq!(get(conditions::KUBE_APISERVER_READY).status, "True");
        let cm = get(conditions::KUBE_CONTROLLER_MANAGER_READY);
        assert_eq!(cm.status, "False");
        assert!(cm.message.contains("Backoff on machine m1: exit code 1"), "{}", cm.message);
        assert!(get(conditions::KUBE_SCHEDULER_READY).message.contains("not started yet"));
        assert!(conds.iter().all(|c| c.type_ != conditions::NODES_READY));
        assert_eq!(instance_statuses(&seen).len(), 3);

        // A healthy controller-manager is not ready while no apiserver is.
        let status = machines[0].status.as_mut().unwrap();
        status.components[0].healthy = Some(false);
        status.components[1] = ComponentStatus {
            name: "controller-manager-default-team-a-0".into(),
            state: ComponentState::Running,
            healthy: Some(true),
            ..Default::default()
        };
        let seen = observe(&machines, "default", "team-a");
        let conds = component_conditions(&hc, &placement, &seen, 0, &t);
        let cm = conds.iter().find(|c| c.type_ == conditions::KUBE_CONTROLLER_MANAGER_READY).unwrap();
        assert_eq!((cm.status.as_str(), cm.reason.as_str()), ("False", "WaitingForApiserver"), "{cm:?}");
        assert!(cm.message.contains("no kube-apiserver is healthy yet"), "{}", cm.message);
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
        assert!(counts_as_healthy(&o("1.20.2", true, 0), None, Some("1.20.2")));
        assert!(counts_as_healthy(&o("1.20.2", true, 0), None, None));
        assert!(!counts_as_healthy(&o("1.20.2", false, 0), None, None));
        // During a step: only a process started since it began.
        assert!(!counts_as_healthy(&o("1.21.0", true, 0), Some(&at(10)), Some("1.20.2")));
        assert!(counts_as_healthy(&o("1.21.0", true, 12), Some(&at(10)), Some("1.20.2")));
        // A step the cached status does not show yet: the spec is already
        // on 1.21.0 but the healthy process may be the 1.20.2 one.
        assert!(!counts_as_healthy(&o("1.21.0", true, 0), None, Some("1.20.2")));
    }

    fn etcd_ca() -> EtcdCa {
        let ca = CertificateAuthority::generate("etcd-ca").unwrap();
        EtcdCa { cert_pem: ca.pem.cert_pem.clone(), key_pem: ca.pem.key_pem.clone() }
    }

    #[test]
    fn pki_is_generated_once_renewed_when_inputs_change_and_rotated_on_request() {
        let hc = hc(1, 0);
        let placement = place(&hc, &[machine("m1", true)], &config(), now()).unwrap();
        let inputs = pki_inputs(&hc, &placement).unwrap();
        let etcd = etcd_ca();
        let first =
            pki_data("team-a", &BTreeMap::new(), &etcd, &inputs, Rotation::None, now(), Duration::days(30))
                .unwrap();
        assert!(!first.issued.is_empty());
        let pki = ControlPlanePki::from_secret_data("team-a", &first.data).unwrap();
        assert_eq!(pki.etcd_ca.pem.cert_pem, etcd.cert_pem, "the EtcdCluster's CA signs the etcd client");
        let pem = pki.leaf(leaves::APISERVER_ETCD_CLIENT).unwrap().cert_pem.clone();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = parsed.parse_x509().unwrap();
        assert_eq!(cert.issuer().to_string(), "CN=etcd-ca");

        let again =
            pki_data("team-a", &first.data, &etcd, &inputs, Rotation::None, now(), Duration::days(30))
                .unwrap();
        assert!(again.issued.is_empty());
        assert_eq!(again.data, first.data);

        let mut moved = inputs.clone();
        moved.endpoint_hosts.push("10.0.0.9".into());
        let renewed =
            pki_data("team-a", &first.data, &etcd, &moved, Rotation::None, now(), Duration::days(30))
                .unwrap();
        // Every serving certificate that names the endpoint hosts.
        assert_eq!(
            renewed.issued,
            [leaves::APISERVER, leaves::CONTROLLER_MANAGER_SERVING, leaves::SCHEDULER_SERVING]
        );
        assert_eq!(renewed.data[keys::CA_CRT], first.data[keys::CA_CRT]);

        let leaves_rotated =
            pki_data("team-a", &first.data, &etcd, &inputs, Rotation::Leaves, now(), Duration::days(30))
                .unwrap();
        assert!(leaves_rotated.issued.len() >= 9, "{:?}", leaves_rotated.issued);
        assert_eq!(leaves_rotated.data[keys::CA_CRT], first.data[keys::CA_CRT]);
        assert_ne!(leaves_rotated.data[&keys::crt(leaves::ADMIN)], first.data[&keys::crt(leaves::ADMIN)]);

        let ca_rotated =
            pki_data("team-a", &first.data, &etcd, &inputs, Rotation::Ca, now(), Duration::days(30)).unwrap();
        assert_ne!(ca_rotated.data[keys::CA_CRT], first.data[keys::CA_CRT]);
        assert_eq!(ca_rotated.data[keys::SA_KEY], first.data[keys::SA_KEY], "tokens stay valid");
        assert_eq!(
            ca_rotated.data[keys::ETCD_CA_CRT],
            first.data[keys::ETCD_CA_CRT],
            "etcd's CA is not ours to rotate"
        );

        let other_etcd = etcd_ca();
        let restored =
            pki_data("team-a", &first.data, &other_etcd, &inputs, Rotation::None, now(), Duration::days(30))
                .unwrap();
        assert_eq!(restored.issued, [leaves::APISERVER_ETCD_CLIENT.to_string()]);
    }

    #[test]
    fn certificates_verdict_names_the_next_expiry_and_what_to_do() {
        let hc = hc(1, 0);
        let placement = place(&hc, &[machine("m1", true)], &config(), now()).unwrap();
        let inputs = pki_inputs(&hc, &placement).unwrap();
        let data = pki_data(
            "team-a",
            &BTreeMap::new(),
            &etcd_ca(),
            &inputs,
            Rotation::None,
            now(),
            Duration::days(30),
        )
        .unwrap()
        .data;
        let renew = Duration::days(30);
        let (ok, reason, message) = certificates_verdict("team-a", &data, now(), renew);
        assert!(ok, "{message}");
        assert_eq!(reason, "Valid");
        assert!(message.contains("the next to expire is"), "{message}");

        let late = now() + crate::pki::LEAF_VALIDITY - Duration::days(3);
        let (ok, reason, message) = certificates_verdict("team-a", &data, late, renew);
        assert!(!ok);
        assert_eq!(reason, "Renewing", "{message}");

        let after = now() + crate::pki::LEAF_VALIDITY + Duration::days(1);
        assert_eq!(certificates_verdict("team-a", &data, after, renew).1, "Expired");

        // A window longer than the CAs' lifetime: the cluster CA needs a rotation.
        let (ok, reason, message) = certificates_verdict("team-a", &data, now(), Duration::days(365 * 50));
        assert!(!ok);
        assert_eq!(reason, "CaExpiring");
        assert!(message.contains("flotilla cluster rotate-certs team-a --ca"), "{message}");

        assert_eq!(certificates_verdict("team-a", &BTreeMap::new(), now(), renew).1, "NotIssued");
        let garbage = BTreeMap::from([(keys::CA_CRT.to_string(), b"not a certificate".to_vec())]);
        assert_eq!(certificates_verdict("team-a", &garbage, now(), renew).1, "Unreadable");
    }

    #[test]
    fn rotation_is_requested_by_a_new_annotation_value_only() {
        let mut hc = hc(1, 0);
        assert_eq!(requested_rotation(&hc).0, Rotation::None);
        hc.metadata.annotations =
            Some(BTreeMap::from([(ROTATE_CERTS_ANNOTATION.to_string(), "ca/1".to_string())]));
        assert_eq!(requested_rotation(&hc), (Rotation::Ca, Some("ca/1".into())));
        hc.status = Some(flotilla_api::kok::HostedClusterStatus {
            handled_rotation: Some("ca/1".into()),
            ..Default::default()
        });
        assert_eq!(requested_rotation(&hc).0, Rotation::None);
        hc.metadata.annotations =
            Some(BTreeMap::from([(ROTATE_CERTS_ANNOTATION.to_string(), "leaves/2".to_string())]));
        assert_eq!(requested_rotation(&hc).0, Rotation::Leaves);
    }

    #[test]
    fn bootstrap_tokens_have_the_kubernetes_shape() {
        let t = bootstrap_token("0123456789ABCDEF0123456789abcdef").unwrap();
        assert_eq!(t, "012345.6789abcdef012345");
        assert!(bootstrap_token("abc").is_none());
    }
}
