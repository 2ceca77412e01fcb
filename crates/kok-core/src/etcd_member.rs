//! An etcd member on its Machine (process runtime): its name, ports and
//! URLs, the Machines that may take a new one, the certificates in the
//! cluster's Secret, and the component it runs as (a restored cluster's
//! founding member first restores the snapshot). These are what the
//! membership plan ([`crate::etcd::decide`]) places and what an upgrade
//! ([`crate::etcd_upgrade`]) rewrites: the operator-wide settings, and the
//! members read back from the Machines' components, so every decision is
//! the same when made twice or by a restarted operator.
//!
//! `crate::etcd` re-exports the public items: callers keep using
//! `etcd::member_component`, `etcd::EtcdOperatorConfig` and the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_api::kok::EtcdCluster;
use flotilla_api::machine::{ComponentFile, ComponentSpec, HealthCheck, KeyRef, Machine, TcpCheck};
use flotilla_core::pki::{CertAndKey, CertificateAuthority, LeafSpec, Usage, DEFAULT_CA_VALIDITY};
use k8s_openapi::jiff::Timestamp;
use time::OffsetDateTime;

use crate::etcd_error::EtcdPlanError;
use crate::pki::{keys, leaves};
use crate::ports;
use crate::render::{etcd_args, EtcdMemberLayout, EtcdPeer, InitialClusterState};

/// Leaf name of the client certificate the operator (and users of the
/// cluster) connect with.
pub const CLIENT_LEAF: &str = "client";
/// Default ports for members: below Linux's ephemeral range (32768 and up),
/// so no outgoing connection ever holds one when a member starts. It
/// overlaps Kubernetes' NodePort range: on machines that are also
/// Kubernetes nodes, configure another range.
pub const DEFAULT_PORTS: RangeInclusive<u16> = 32000..=32767;
/// Where a member's certificates are written, relative to its component's
/// working directory.
pub(crate) const PKI_DIR: &str = "pki";
/// Where a member keeps its data by default, relative to its component's
/// working directory: the node agent deletes that directory when the
/// component is removed, so a removed member's data goes with it.
pub(crate) const DATA_DIR: &str = "data";

/// Operator-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOperatorConfig {
    /// Directory holding the `etcd` binary on the machines.
    pub bin_dir: PathBuf,
    /// File name (in `bin_dir`) of the etcd binary new members run: the
    /// operator sets it per cluster from its version
    /// ([`crate::etcd_versions`]).
    pub etcd_binary: String,
    /// Each member takes a client and a peer port from this range: the
    /// lowest two that no component on any Machine with the same address
    /// names (machines may share an address: a laptop, CI).
    pub ports: RangeInclusive<u16>,
    /// A member that has not answered for this long, or whose Machine's
    /// node agent has not reported for this long, is replaced (when the
    /// others keep a quorum without it).
    pub member_dead_after: Duration,
    /// The flotilla binary on the machines: a prefixed (one tenant's)
    /// backup or restore runs its `etcd-keys dump|load`.
    pub flotilla_binary: PathBuf,
}

impl Default for EtcdOperatorConfig {
    fn default() -> Self {
        Self {
            bin_dir: "/usr/local/bin".into(),
            etcd_binary: "etcd".into(),
            ports: DEFAULT_PORTS,
            member_dead_after: Duration::from_secs(120),
            flotilla_binary: "/usr/local/bin/flotilla".into(),
        }
    }
}

/// One member: where it runs and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPlan {
    /// The number in its name (`<cluster>-<index>`); never reused.
    pub index: u32,
    pub name: String,
    pub machine: String,
    pub address: String,
    pub client_url: String,
    pub peer_url: String,
}

/// Name of the member with index `index`.
pub fn member_name(cluster: &str, index: u32) -> String {
    format!("{cluster}-{index}")
}

pub(crate) fn member_index(cluster: &str, member: &str) -> Option<u32> {
    member.strip_prefix(cluster)?.strip_prefix('-')?.parse().ok()
}

/// Name of the component (on every member's Machine) of the cluster.
pub fn component_name(namespace: &str, cluster: &str) -> String {
    format!("etcd-{namespace}-{cluster}")
}

/// Secret with the CA, the members' and the client certificates.
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-etcd-pki")
}

/// Field manager for what the operator writes on Machines: one per cluster,
/// so server-side apply leaves other clusters' components alone.
pub fn field_manager(namespace: &str, cluster: &str) -> String {
    format!("flotilla-etcd-{namespace}-{cluster}")
}

pub(crate) fn names(cluster: &EtcdCluster) -> (&str, &str) {
    (
        cluster.metadata.name.as_deref().unwrap_or_default(),
        cluster.metadata.namespace.as_deref().unwrap_or_default(),
    )
}

fn labels_match(selector: &BTreeMap<String, String>, machine: &Machine) -> bool {
    let labels = machine.metadata.labels.as_ref();
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

pub(crate) fn arg<'a>(component: &'a ComponentSpec, flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    component.args.iter().find_map(|a| a.strip_prefix(prefix.as_str()))
}

/// The members the Machines run: the cluster's component on each, read
/// back from its command line. Sorted by index.
pub fn recorded_members(cluster: &EtcdCluster, machines: &[Machine]) -> Vec<MemberPlan> {
    let (name, namespace) = names(cluster);
    let component = component_name(namespace, name);
    let mut out: Vec<MemberPlan> = machines
        .iter()
        .filter_map(|m| {
            let c = m.spec.components.iter().find(|c| c.name == component)?;
            let member = arg(c, "--name")?;
            Some(MemberPlan {
                index: member_index(name, member).unwrap_or(u32::MAX),
                name: member.to_string(),
                machine: m.metadata.name.clone()?,
                address: m.address().unwrap_or_default().to_string(),
                client_url: arg(c, "--advertise-client-urls")?.to_string(),
                peer_url: arg(c, "--initial-advertise-peer-urls")?.to_string(),
            })
        })
        .collect();
    out.sort_by(|a, b| (a.index, &a.name).cmp(&(b.index, &b.name)));
    out
}

/// How long ago the Machine's node agent last reported, when it is more
/// than `limit` (absent: never reported, or recently).
pub(crate) fn stale_for(machine: &Machine, now: Timestamp, limit: Duration) -> Option<Duration> {
    let beat = machine.status.as_ref()?.last_heartbeat.as_ref()?.0;
    let age =
        Duration::from_secs(u64::try_from(now.as_second().saturating_sub(beat.as_second())).unwrap_or(0));
    (age > limit).then_some(age)
}

/// Machines that may take a new member, in name order, and why the others
/// that match the selector may not.
pub(crate) fn candidates<'a>(
    cluster: &EtcdCluster,
    machines: &'a [Machine],
    config: &EtcdOperatorConfig,
    now: Timestamp,
) -> (Vec<&'a Machine>, Vec<String>) {
    let (name, namespace) = names(cluster);
    let component = component_name(namespace, name);
    let mut free = Vec::new();
    let mut refused = Vec::new();
    let mut matching: Vec<&Machine> =
        machines.iter().filter(|m| labels_match(&cluster.spec.machine_selector, m)).collect();
    matching.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for m in matching {
        let machine = m.metadata.name.as_deref().unwrap_or_default();
        if m.spec.components.iter().any(|c| c.name == component) {
            continue;
        }
        if m.metadata.deletion_timestamp.is_some() {
            refused.push(format!("{machine} is being deleted"));
        } else if m.address().is_none() {
            refused.push(m.no_address_reason());
        } else if let Some(age) = stale_for(m, now, config.member_dead_after) {
            refused.push(format!("{machine}'s node agent has not reported for {}s", age.as_secs()));
        } else {
            free.push(m);
        }
    }
    (free, refused)
}

/// Ports taken on `address`: every port any component on a Machine with
/// that address (given or reported) names, plus what this plan already
/// handed out there.
fn ports_taken(machines: &[Machine], address: &str, handed_out: &BTreeSet<u16>) -> BTreeSet<u16> {
    machines
        .iter()
        .filter(|m| m.address() == Some(address))
        .flat_map(|m| ports::used_ports(m, &[]))
        .chain(handed_out.iter().copied())
        .collect()
}

/// A new member `index` on `machine` with a client and a peer port free
/// there; `None` when the range has no two free ports left.
pub(crate) fn new_member(
    cluster: &str,
    index: u32,
    machine: &Machine,
    machines: &[Machine],
    handed_out: &mut BTreeMap<String, BTreeSet<u16>>,
    range: &RangeInclusive<u16>,
) -> Option<MemberPlan> {
    let address = machine.address()?.to_string();
    let taken_here = handed_out.entry(address.clone()).or_default();
    let picked = ports::allocate(&ports_taken(machines, &address, taken_here), range.clone(), 2)?;
    taken_here.extend(&picked);
    let host = if address.contains(':') { format!("[{address}]") } else { address.clone() };
    Some(MemberPlan {
        index,
        name: member_name(cluster, index),
        machine: machine.metadata.name.clone()?,
        client_url: format!("https://{host}:{}", picked[0]),
        peer_url: format!("https://{host}:{}", picked[1]),
        address,
    })
}

/// `--initial-cluster` of `members`.
pub fn initial_cluster(members: &[MemberPlan]) -> String {
    members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",")
}

fn put(data: &mut BTreeMap<String, Vec<u8>>, leaf: &str, issued: &CertAndKey) {
    data.insert(keys::crt(leaf), issued.cert_pem.clone().into_bytes());
    data.insert(keys::key(leaf), issued.key_pem.clone().into_bytes());
}

/// The Secret data: `existing` plus whatever is missing (the CA once, then
/// a server and peer certificate per member and one client certificate).
/// Returns `None` when nothing is missing.
pub fn pki_data(
    cluster: &str,
    existing: &BTreeMap<String, Vec<u8>>,
    members: &[MemberPlan],
    now: OffsetDateTime,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, EtcdPlanError> {
    let mut data = existing.clone();
    let text = |k: &str| existing.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
    let ca = match (text(keys::ETCD_CA_CRT), text(keys::ETCD_CA_KEY)) {
        (Some(cert), Some(key)) => CertificateAuthority::from_pem(&cert, &key)?,
        _ => {
            // A new CA invalidates every leaf signed by an old one.
            data.clear();
            let ca =
                CertificateAuthority::generate_at(&format!("{cluster}-etcd-ca"), now, DEFAULT_CA_VALIDITY)?;
            data.insert(keys::ETCD_CA_CRT.into(), ca.pem.cert_pem.clone().into_bytes());
            data.insert(keys::ETCD_CA_KEY.into(), ca.pem.key_pem.clone().into_bytes());
            ca
        }
    };
    let missing = |data: &BTreeMap<String, Vec<u8>>, leaf: &str| {
        !data.contains_key(&keys::crt(leaf)) || !data.contains_key(&keys::key(leaf))
    };
    if missing(&data, CLIENT_LEAF) {
        put(&mut data, CLIENT_LEAF, &ca.issue_at(&LeafSpec::client(format!("{cluster}-client"), &[]), now)?);
    }
    for m in members {
        let sans = vec![m.address.clone(), "127.0.0.1".into(), "localhost".into()];
        // etcd presents both certificates as a client too (peers, gateway).
        let spec = LeafSpec { usage: Usage::ServerAndClient, ..LeafSpec::server(m.name.clone(), &sans) };
        for leaf in [leaves::etcd_server(&m.name), leaves::etcd_peer(&m.name)] {
            // A name may come back on another machine (a member whose add
            // failed, placed elsewhere on the next try): its address must
            // be in the certificate.
            let covers = data.get(&keys::crt(&leaf)).is_some_and(|pem| {
                flotilla_core::pki::inspect_certificate(&String::from_utf8_lossy(pem))
                    .is_ok_and(|c| c.covers(&m.address, now, time::Duration::ZERO))
            });
            if missing(&data, &leaf) || !covers {
                put(&mut data, &leaf, &ca.issue_at(&spec, now)?);
            }
        }
    }
    Ok((data != *existing).then_some(data))
}

/// The component `member` runs as on its machine. `initial` is the whole
/// membership it joins (itself included); `state` says whether it founds
/// the cluster or joins a running one.
pub fn member_component(
    cluster: &EtcdCluster,
    initial: &[MemberPlan],
    member: &MemberPlan,
    state: InitialClusterState,
    config: &EtcdOperatorConfig,
) -> ComponentSpec {
    let (name, namespace) = names(cluster);
    // Relative: inside the component's working directory, which the node
    // agent deletes with the component. A directory the user names is
    // theirs and is never deleted.
    let data_dir = match cluster.spec.storage.as_ref().and_then(|s| s.data_dir.as_ref()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(DATA_DIR),
    }
    // Per member, so members sharing a directory never collide, and a new
    // member never starts on an old one's data.
    .join(&member.name);
    let layout = EtcdMemberLayout {
        data_dir,
        pki_dir: PKI_DIR.into(),
        listen_client_urls: Vec::new(),
        listen_peer_urls: Vec::new(),
        quota_backend_bytes: None,
        cluster_token: format!("{namespace}-{name}"),
    };
    let peer = |m: &MemberPlan| EtcdPeer {
        name: m.name.clone(),
        peer_url: m.peer_url.clone(),
        client_url: m.client_url.clone(),
    };
    let peers: Vec<EtcdPeer> = initial.iter().map(peer).collect();
    let args = etcd_args(&peer(member), &peers, &layout, state);
    let secret = secret_name(name);
    let file = |key: String| ComponentFile {
        path: format!("{PKI_DIR}/{key}"),
        secret_ref: Some(KeyRef { namespace: namespace.to_string(), name: secret.clone(), key }),
        mode: Some(0o600),
        ..Default::default()
    };
    let server = leaves::etcd_server(&member.name);
    let peer_leaf = leaves::etcd_peer(&member.name);
    let files = vec![
        file(keys::ETCD_CA_CRT.to_string()),
        file(keys::crt(&server)),
        file(keys::key(&server)),
        file(keys::crt(&peer_leaf)),
        file(keys::key(&peer_leaf)),
    ];
    let client_port =
        member.client_url.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_default();
    ComponentSpec {
        name: component_name(namespace, name),
        binary: config.bin_dir.join(&config.etcd_binary).display().to_string(),
        args,
        files,
        // Client URLs demand a client certificate, which the node agent's
        // HTTP probe does not present; a TCP probe tells it the member
        // listens, and the operator judges real health itself.
        health: Some(HealthCheck {
            tcp: Some(TcpCheck { host: Some(member.address.clone()), port: client_port }),
            period_seconds: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The founding member of a restored cluster: a shell that restores the
/// snapshot into the member's data directory when there is none yet (so a
/// restart never restores twice), then becomes etcd with the same command
/// line. The member's flags stay in the args, where the operator reads
/// them back.
pub fn restoring(
    component: ComponentSpec,
    snapshot: &str,
    member: &MemberPlan,
    config: &EtcdOperatorConfig,
) -> ComponentSpec {
    let data = arg(&component, "--data-dir").unwrap_or(DATA_DIR).to_string();
    let token = arg(&component, "--initial-cluster-token").unwrap_or_default().to_string();
    // etcdutl: `snapshot restore` left etcdctl in etcd 3.6.
    let etcdutl = config.bin_dir.join("etcdutl").display().to_string();
    let script = format!(
        "set -e\n\
         if [ ! -d '{data}' ]; then\n\
         rm -rf '{data}.restoring'\n\
         mkdir -p \"$(dirname '{data}')\"\n\
         echo 'restoring {snapshot} into {data}'\n\
         '{etcdutl}' snapshot restore '{snapshot}' --name '{name}' \
         --initial-cluster '{name}={peer}' --initial-cluster-token '{token}' \
         --initial-advertise-peer-urls '{peer}' --data-dir '{data}.restoring'\n\
         mv '{data}.restoring' '{data}'\n\
         fi\n\
         exec '{etcd}' \"$@\"\n",
        name = member.name,
        peer = member.peer_url,
        etcd = component.binary,
    );
    let mut args = vec!["-c".to_string(), script, "etcd".to_string()];
    args.extend(component.args.iter().cloned());
    ComponentSpec { binary: "/bin/sh".into(), args, ..component }
}
