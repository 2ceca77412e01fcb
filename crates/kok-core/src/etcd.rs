//! The EtcdCluster operator's decisions (process runtime): which machine
//! hosts which member and on which ports, the certificates in the cluster's
//! Secret, the Machine component each member runs as, the one membership
//! change to make next (bootstrap, add a learner, promote it, remove a dead
//! or stray member), what deleting the cluster still waits for, and the
//! status read back from the members.
//!
//! The Machines are the record: a member is the cluster's component on a
//! Machine, and its name, ports and URLs are read back from that
//! component's command line, so every decision is the same when made twice
//! or by a restarted operator. A member's component is written once and
//! never rewritten; a member moves only by being replaced (a new member,
//! with a new name, a fresh data dir and `--initial-cluster-state=existing`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_api::kok::{
    conditions, EtcdBackup, EtcdBackupStatus, EtcdCluster, EtcdClusterPhase, EtcdClusterStatus,
    EtcdMemberStatus, JobPhase,
};
use flotilla_api::machine::{
    ComponentFile, ComponentSpec, ComponentStatus, HealthCheck, KeyRef, Machine, RestartPolicy, TcpCheck,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::etcd_keys;
use crate::pki::{keys, leaves};
use crate::ports;
use crate::render::{etcd_args, EtcdMemberLayout, EtcdPeer, InitialClusterState};
use flotilla_core::pki::{CertAndKey, CertificateAuthority, LeafSpec, PkiError, Usage, DEFAULT_CA_VALIDITY};

/// Leaf name of the client certificate the operator (and users of the
/// cluster) connect with.
pub const CLIENT_LEAF: &str = "client";
/// Finalizer on every EtcdCluster: its members are removed from their
/// Machines (and their data with them) before the object goes.
pub const FINALIZER: &str = "kok.flotilla.io/etcd-members";
/// Default ports for members: below Linux's ephemeral range (32768 and up),
/// so no outgoing connection ever holds one when a member starts. It
/// overlaps Kubernetes' NodePort range: on machines that are also
/// Kubernetes nodes, configure another range.
pub const DEFAULT_PORTS: RangeInclusive<u16> = 32000..=32767;
/// Where a member's certificates are written, relative to its component's
/// working directory.
const PKI_DIR: &str = "pki";
/// Where a member keeps its data by default, relative to its component's
/// working directory: the node agent deletes that directory when the
/// component is removed, so a removed member's data goes with it.
const DATA_DIR: &str = "data";

#[derive(Debug, thiserror::Error)]
pub enum EtcdPlanError {
    #[error("certificates: {0}")]
    Pki(#[from] PkiError),
    #[error("etcd API answer: {0}")]
    Parse(String),
}

/// Operator-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOperatorConfig {
    /// Directory holding the `etcd` binary on the machines.
    pub bin_dir: PathBuf,
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

fn member_index(cluster: &str, member: &str) -> Option<u32> {
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

fn names(cluster: &EtcdCluster) -> (&str, &str) {
    (
        cluster.metadata.name.as_deref().unwrap_or_default(),
        cluster.metadata.namespace.as_deref().unwrap_or_default(),
    )
}

fn labels_match(selector: &BTreeMap<String, String>, machine: &Machine) -> bool {
    let labels = machine.metadata.labels.as_ref();
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn arg<'a>(component: &'a ComponentSpec, flag: &str) -> Option<&'a str> {
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
                address: m.spec.address.clone().unwrap_or_default(),
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
fn stale_for(machine: &Machine, now: Timestamp, limit: Duration) -> Option<Duration> {
    let beat = machine.status.as_ref()?.last_heartbeat.as_ref()?.0;
    let age =
        Duration::from_secs(u64::try_from(now.as_second().saturating_sub(beat.as_second())).unwrap_or(0));
    (age > limit).then_some(age)
}

/// Machines that may take a new member, in name order, and why the others
/// that match the selector may not.
fn candidates<'a>(
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
        } else if m.spec.address.as_deref().is_none_or(str::is_empty) {
            refused.push(format!("{machine} has no spec.address"));
        } else if let Some(age) = stale_for(m, now, config.member_dead_after) {
            refused.push(format!("{machine}'s node agent has not reported for {}s", age.as_secs()));
        } else {
            free.push(m);
        }
    }
    (free, refused)
}

/// Ports taken on `address`: every port any component on a Machine with
/// that address names, plus what this plan already handed out there.
fn ports_taken(machines: &[Machine], address: &str, handed_out: &BTreeSet<u16>) -> BTreeSet<u16> {
    machines
        .iter()
        .filter(|m| m.spec.address.as_deref() == Some(address))
        .flat_map(|m| ports::used_ports(m, &[]))
        .chain(handed_out.iter().copied())
        .collect()
}

/// A new member `index` on `machine` with a client and a peer port free
/// there; `None` when the range has no two free ports left.
fn new_member(
    cluster: &str,
    index: u32,
    machine: &Machine,
    machines: &[Machine],
    handed_out: &mut BTreeMap<String, BTreeSet<u16>>,
    range: &RangeInclusive<u16>,
) -> Option<MemberPlan> {
    let address = machine.spec.address.clone()?;
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
        binary: config.bin_dir.join("etcd").display().to_string(),
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
    let etcdctl = config.bin_dir.join("etcdctl").display().to_string();
    let script = format!(
        "set -e\n\
         if [ ! -d '{data}' ]; then\n\
         rm -rf '{data}.restoring'\n\
         mkdir -p \"$(dirname '{data}')\"\n\
         echo 'restoring {snapshot} into {data}'\n\
         ETCDCTL_API=3 '{etcdctl}' snapshot restore '{snapshot}' --name '{name}' \
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

// ---------------------------------------------------------------- observations

/// A member as `/v3/cluster/member/list` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// What `/v3/maintenance/status` says about the member that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub id: u64,
    pub leader: u64,
    pub db_size: i64,
    pub version: String,
}

/// The gateway writes 64-bit integers as decimal strings.
fn num<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr + Default,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(T::default()),
        Some(N::S(s)) => s.parse().map_err(|_| serde::de::Error::custom(format!("not a number: {s}"))),
        Some(N::I(i)) => i.to_string().parse().map_err(|_| serde::de::Error::custom("number out of range")),
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "num")]
    member_id: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMember {
    #[serde(rename = "ID", default, deserialize_with = "num")]
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
    #[serde(default)]
    is_learner: bool,
}

#[derive(Deserialize)]
struct RawList {
    #[serde(default)]
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    header: Option<Header>,
    #[serde(default, deserialize_with = "num")]
    leader: u64,
    #[serde(default, deserialize_with = "num")]
    db_size: i64,
    #[serde(default)]
    version: String,
}

/// Parses the gateway's `/v3/cluster/member/list` answer.
pub fn parse_member_list(body: &[u8]) -> Result<Vec<ListedMember>, EtcdPlanError> {
    let raw: RawList = serde_json::from_slice(body).map_err(|e| EtcdPlanError::Parse(e.to_string()))?;
    Ok(raw
        .members
        .into_iter()
        .map(|m| ListedMember {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            is_learner: m.is_learner,
        })
        .collect())
}

/// Parses the gateway's `/v3/maintenance/status` answer.
pub fn parse_status(body: &[u8]) -> Result<MemberState, EtcdPlanError> {
    let raw: RawStatus = serde_json::from_slice(body).map_err(|e| EtcdPlanError::Parse(e.to_string()))?;
    Ok(MemberState {
        id: raw.header.map(|h| h.member_id).unwrap_or_default(),
        leader: raw.leader,
        db_size: raw.db_size,
        version: raw.version,
    })
}

/// What the operator saw: the member list (from a member that answered
/// and knows a leader) and each member's own status, by member name
/// (absent: it did not answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub listed: Option<Vec<ListedMember>>,
    pub states: BTreeMap<String, MemberState>,
}

impl Observation {
    fn healthy(&self, member: &str) -> bool {
        self.states.get(member).is_some_and(|s| s.leader != 0)
    }
}

// ---------------------------------------------------------------- decisions

/// One change to the etcd membership, made through a healthy member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// `member add --learner`; its component is written once this worked.
    AddLearner { member: String, peer_url: String },
    /// `member promote`; etcd refuses until the learner has caught up.
    Promote { member: String, id: u64 },
    /// `member remove`, for `why`.
    Remove { member: String, id: u64, why: String },
}

impl MembershipChange {
    /// The gateway path and JSON body of the change. IDs are strings: the
    /// gateway reads 64-bit integers that way without losing precision.
    pub fn request(&self) -> (&'static str, String) {
        match self {
            MembershipChange::AddLearner { peer_url, .. } => (
                "/v3/cluster/member/add",
                serde_json::json!({"peerURLs": [peer_url], "isLearner": true}).to_string(),
            ),
            MembershipChange::Promote { id, .. } => {
                ("/v3/cluster/member/promote", serde_json::json!({"ID": id.to_string()}).to_string())
            }
            MembershipChange::Remove { id, .. } => {
                ("/v3/cluster/member/remove", serde_json::json!({"ID": id.to_string()}).to_string())
            }
        }
    }
}

/// Why the cluster is not (yet) as asked, for the Available condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub reason: String,
    pub message: String,
}

fn progress(reason: &str, message: impl Into<String>) -> Option<Progress> {
    Some(Progress { reason: reason.into(), message: message.into() })
}

/// Everything a decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub cluster: &'a EtcdCluster,
    pub machines: &'a [Machine],
    pub seen: &'a Observation,
    /// Recorded members that did not answer at the last probes, and since
    /// when. The caller keeps this in memory: after an operator restart it
    /// starts over, which only delays a replacement.
    pub down_since: &'a BTreeMap<String, Timestamp>,
    pub config: &'a EtcdOperatorConfig,
    pub now: Timestamp,
}

/// The next step for a cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The members the status reports on: those on Machines that are
    /// still in the membership, plus the one being added.
    pub members: Vec<MemberPlan>,
    /// Components to write: the founding members, or the learner being
    /// added (only once [`MembershipChange::AddLearner`] worked).
    pub write: Vec<(MemberPlan, ComponentSpec)>,
    /// Members whose component goes from its Machine: they are no longer
    /// in the membership (removed as dead, or an add that never joined).
    pub drop: Vec<MemberPlan>,
    pub change: Option<MembershipChange>,
    pub progress: Option<Progress>,
}

/// Whether the voters left after `removed` goes still have a quorum of
/// healthy members.
fn keeps_quorum(listed: &[ListedMember], healthy: &BTreeSet<u64>, removed: u64) -> bool {
    let voters: Vec<&ListedMember> = listed.iter().filter(|l| !l.is_learner && l.id != removed).collect();
    let up = voters.iter().filter(|l| healthy.contains(&l.id)).count();
    !voters.is_empty() && up > voters.len() / 2
}

/// The next index: past every member on the Machines, in the membership
/// or in the last status. A name whose add failed is taken again by the
/// next try (with the certificates already issued for it).
fn next_index(cluster: &EtcdCluster, recorded: &[MemberPlan], facts: &Facts) -> u32 {
    let (name, _) = names(cluster);
    let listed = facts.seen.listed.iter().flatten().map(|l| l.name.as_str());
    let reported = cluster.status.iter().flat_map(|s| &s.members).map(|m| m.name.as_str());
    recorded
        .iter()
        .map(|m| m.name.as_str())
        .chain(listed)
        .chain(reported)
        .filter_map(|m| member_index(name, m))
        .max()
        .map_or(0, |i| i.saturating_add(1))
}

/// Why a recorded member counts as dead, if it does.
fn dead(member: &MemberPlan, facts: &Facts) -> Option<String> {
    let limit = facts.config.member_dead_after;
    let machine = facts.machines.iter().find(|m| m.metadata.name.as_deref() == Some(&member.machine));
    if let Some(age) = machine.and_then(|m| stale_for(m, facts.now, limit)) {
        return Some(format!(
            "its Machine {}'s node agent has not reported for {}s",
            member.machine,
            age.as_secs()
        ));
    }
    let since = facts.down_since.get(&member.name)?;
    let down = u64::try_from(facts.now.as_second().saturating_sub(since.as_second())).unwrap_or(0);
    (Duration::from_secs(down) > limit).then(|| format!("it has not answered for {down}s"))
}

/// The next step: found the cluster, or make at most one membership change
/// (remove a stray or dead member, promote a learner, add one), and drop
/// the components of members no longer in the membership.
pub fn decide(facts: &Facts) -> Plan {
    let cluster = facts.cluster;
    let (name, _) = names(cluster);
    let recorded = recorded_members(cluster, facts.machines);
    let wanted = usize::try_from(cluster.spec.members.max(0)).unwrap_or(0);
    let mut plan = Plan::default();

    let had_members = cluster.status.iter().flat_map(|s| &s.members).any(|m| m.id.is_some());
    let Some(listed) = facts.seen.listed.as_deref() else {
        plan.members = recorded;
        if !had_members && founding_interrupted(cluster, facts.machines, plan.members.len()) {
            // Too few founders were written to ever reach a quorum, so the
            // cluster never formed and holds no data: start founding over.
            plan.progress = progress(
                "FoundingInterrupted",
                "the founding members were only partly written; removing them to found the cluster again",
            );
            plan.drop = std::mem::take(&mut plan.members);
            return plan;
        }
        if !plan.members.is_empty() {
            plan.progress = progress(
                "NoQuorum",
                "no member answers with a leader yet (still starting, or quorum is lost); \
                 see the members' component status on their Machines",
            );
            return plan;
        }
        if had_members {
            plan.progress = progress(
                "MembersLost",
                "no Machine runs a member any more (were the Machines deleted?); the data is gone \
                 unless restored: restore an EtcdBackup into a new EtcdCluster",
            );
            return plan;
        }
        return found(facts, plan, wanted);
    };

    // The membership is the truth: a component whose member is not in it
    // any more (removed as dead, or added and removed again) goes.
    let listed_for = |m: &MemberPlan| listed.iter().find(|l| l.peer_urls.contains(&m.peer_url));
    let (kept, gone): (Vec<MemberPlan>, Vec<MemberPlan>) =
        recorded.into_iter().partition(|m| listed_for(m).is_some());
    plan.members = kept;
    plan.drop = gone;
    let healthy: BTreeSet<u64> =
        facts.seen.states.iter().filter(|(_, s)| s.leader != 0).map(|(_, s)| s.id).collect();

    // Members without a component: their Machine was deleted, or an add
    // was interrupted before its component was written.
    for l in listed {
        if plan.members.iter().any(|m| l.peer_urls.contains(&m.peer_url)) {
            continue;
        }
        let label = if l.name.is_empty() { l.peer_urls.join(",") } else { l.name.clone() };
        let why = if l.is_learner {
            format!("learner {label} runs on no Machine (an add that was interrupted)")
        } else {
            format!("member {label} runs on no Machine (its Machine was deleted?)")
        };
        if l.is_learner || keeps_quorum(listed, &healthy, l.id) {
            plan.progress = progress("ReplacingMember", format!("removing {why}; a new member replaces it"));
            plan.change = Some(MembershipChange::Remove { member: label, id: l.id, why });
        } else {
            plan.progress = progress(
                "QuorumAtRisk",
                format!("{why}, but removing it would leave no healthy quorum; bring members back"),
            );
        }
        return plan;
    }

    for m in &plan.members {
        let Some(why) = dead(m, facts) else { continue };
        let Some(l) = listed_for(m) else { continue };
        if l.is_learner || keeps_quorum(listed, &healthy, l.id) {
            plan.progress = progress(
                "ReplacingMember",
                format!("removing member {} on {}: {why}; a new member replaces it", m.name, m.machine),
            );
            plan.change = Some(MembershipChange::Remove { member: m.name.clone(), id: l.id, why });
            return plan;
        }
        plan.progress = progress(
            "QuorumAtRisk",
            format!(
                "member {} on {} is dead ({why}) but removing it would leave no healthy quorum",
                m.name, m.machine
            ),
        );
        return plan;
    }

    // One learner at a time: promote it before adding another.
    if let Some((m, l)) =
        plan.members.iter().find_map(|m| listed_for(m).filter(|l| l.is_learner).map(|l| (m, l)))
    {
        plan.progress = progress(
            "PromotingLearner",
            format!("learner {} on {} is promoted once it has caught up with the leader", m.name, m.machine),
        );
        plan.change = Some(MembershipChange::Promote { member: m.name.clone(), id: l.id });
        return plan;
    }

    let voters = listed.iter().filter(|l| !l.is_learner).count();
    if voters > wanted {
        plan.progress = progress(
            "ScaleDownUnsupported",
            format!("{voters} voting members, spec.members is {wanted}: scaling down is not supported yet"),
        );
        return plan;
    }
    if voters == wanted {
        return plan;
    }
    let (free, refused) = candidates(cluster, facts.machines, facts.config, facts.now);
    let index = next_index(cluster, &plan.members, facts);
    let mut handed_out = BTreeMap::new();
    let member = free
        .iter()
        .find_map(|m| new_member(name, index, m, facts.machines, &mut handed_out, &facts.config.ports));
    let Some(member) = member else {
        plan.progress =
            progress("NotEnoughMachines", not_enough(voters, wanted, &free, &refused, facts.config));
        return plan;
    };
    // The membership it joins: everyone listed (names from the Machines
    // when a member has not started yet), and itself.
    let mut initial: Vec<MemberPlan> = listed
        .iter()
        .filter_map(|l| {
            let recorded = plan.members.iter().find(|m| l.peer_urls.contains(&m.peer_url))?;
            Some(recorded.clone())
        })
        .collect();
    initial.push(member.clone());
    let component = member_component(cluster, &initial, &member, InitialClusterState::Existing, facts.config);
    plan.progress = progress(
        "AddingMember",
        format!(
            "adding member {} on {} as a learner ({voters} of {wanted} voting members)",
            member.name, member.machine
        ),
    );
    plan.change =
        Some(MembershipChange::AddLearner { member: member.name.clone(), peer_url: member.peer_url.clone() });
    plan.write.push((member.clone(), component));
    plan.members.push(member);
    plan
}

/// Whether the Machines hold founding members (`--initial-cluster-state=new`)
/// only, fewer than a quorum of the founding membership they name: a write
/// of the founders failed halfway, and they can never elect a leader.
fn founding_interrupted(cluster: &EtcdCluster, machines: &[Machine], recorded: usize) -> bool {
    let (name, namespace) = names(cluster);
    let component = component_name(namespace, name);
    let founders: Vec<&ComponentSpec> =
        machines.iter().filter_map(|m| m.spec.components.iter().find(|c| c.name == component)).collect();
    let founding = founders.iter().all(|c| arg(c, "--initial-cluster-state") == Some("new"));
    let size = founders
        .iter()
        .filter_map(|c| arg(c, "--initial-cluster"))
        .map(|v| v.split(',').count())
        .max()
        .unwrap_or(0);
    recorded > 0 && founding && recorded <= size / 2
}

fn not_enough(
    have: usize,
    wanted: usize,
    free: &[&Machine],
    refused: &[String],
    config: &EtcdOperatorConfig,
) -> String {
    let mut message = format!(
        "{have} of {wanted} members placed: too few Machines match spec.machineSelector without already \
         running a member"
    );
    if !free.is_empty() {
        message.push_str(&format!(
            "; no two free ports in {}..={} on {}",
            config.ports.start(),
            config.ports.end(),
            free.iter().filter_map(|m| m.metadata.name.as_deref()).collect::<Vec<_>>().join(", ")
        ));
    }
    if !refused.is_empty() {
        message.push_str(&format!(" ({})", refused.join("; ")));
    }
    message
}

/// A cluster with no member yet: every founding member at once, on
/// distinct machines in name order, with `--initial-cluster-state=new`.
/// Fewer than wanted when machines are short; the rest join later as
/// learners.
fn found(facts: &Facts, mut plan: Plan, wanted: usize) -> Plan {
    let cluster = facts.cluster;
    let (name, _) = names(cluster);
    let (mut free, refused) = candidates(cluster, facts.machines, facts.config, facts.now);
    // A restore founds one member, on the machine holding the snapshot;
    // the others join it as learners once it runs.
    let restore = cluster.spec.restore_from.as_ref();
    let wanted = if restore.is_some() { wanted.min(1) } else { wanted };
    if let Some(snapshot) = restore {
        free.retain(|m| m.metadata.name.as_deref() == Some(snapshot.machine.as_str()));
        if free.is_empty() {
            plan.progress = progress(
                "RestoreMachineUnavailable",
                format!(
                    "the snapshot is on Machine {}, which cannot host a member now{}",
                    snapshot.machine,
                    if refused.is_empty() { String::new() } else { format!(" ({})", refused.join("; ")) }
                ),
            );
            return plan;
        }
    }
    let first = next_index(cluster, &[], facts);
    let mut handed_out = BTreeMap::new();
    let mut members: Vec<MemberPlan> = Vec::new();
    for m in &free {
        if members.len() == wanted {
            break;
        }
        let index = first.saturating_add(u32::try_from(members.len()).unwrap_or(u32::MAX));
        if let Some(member) = new_member(name, index, m, facts.machines, &mut handed_out, &facts.config.ports)
        {
            members.push(member);
        }
    }
    plan.write = members
        .iter()
        .map(|m| {
            let component = member_component(cluster, &members, m, InitialClusterState::New, facts.config);
            let component = match restore {
                Some(snapshot) => restoring(component, &snapshot.path, m, facts.config),
                None => component,
            };
            (m.clone(), component)
        })
        .collect();
    plan.progress = if members.len() < wanted {
        progress("NotEnoughMachines", not_enough(members.len(), wanted, &free, &refused, facts.config))
    } else {
        progress("Bootstrapping", format!("starting {wanted} founding members"))
    };
    plan.members = members;
    plan
}

// ---------------------------------------------------------------- deletion

/// What deleting a cluster still has to do or wait for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Teardown {
    /// Machines whose spec still holds the cluster's component.
    pub remove_from: Vec<String>,
    /// Machines whose node agent still reports the component (it has not
    /// stopped it and deleted its working directory yet).
    pub waiting_for: Vec<String>,
    /// Machines that still report it but whose node agent has been silent
    /// beyond `member_dead_after`: not waited for. Their member's data
    /// stays until that agent comes back and removes it.
    pub abandoned: Vec<String>,
}

impl Teardown {
    /// Nothing left: the finalizer can go.
    pub fn done(&self) -> bool {
        self.remove_from.is_empty() && self.waiting_for.is_empty()
    }

    pub fn message(&self) -> String {
        let list = |v: &[String]| v.join(", ");
        let mut parts = Vec::new();
        if !self.remove_from.is_empty() {
            parts.push(format!("removing the members from {}", list(&self.remove_from)));
        }
        if !self.waiting_for.is_empty() {
            parts.push(format!("waiting for the node agents of {} to stop them", list(&self.waiting_for)));
        }
        if !self.abandoned.is_empty() {
            parts.push(format!(
                "not waiting for {} (node agent silent); their data is removed when it returns",
                list(&self.abandoned)
            ));
        }
        if parts.is_empty() {
            "every member is stopped and its data removed".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Deleting `cluster`: its components leave every Machine's spec, then
/// the node agents must report them gone.
pub fn teardown(
    cluster: &EtcdCluster,
    machines: &[Machine],
    config: &EtcdOperatorConfig,
    now: Timestamp,
) -> Teardown {
    let (name, namespace) = names(cluster);
    let component = component_name(namespace, name);
    let mut out = Teardown::default();
    for m in machines {
        let machine = m.metadata.name.clone().unwrap_or_default();
        if m.spec.components.iter().any(|c| c.name == component) {
            out.remove_from.push(machine);
        } else if m.status.iter().flat_map(|s| &s.components).any(|c| c.name == component) {
            if stale_for(m, now, config.member_dead_after).is_some() {
                out.abandoned.push(machine);
            } else {
                out.waiting_for.push(machine);
            }
        }
    }
    out
}

// ---------------------------------------------------------------- backups

/// Shell that runs a backup's script (etcdctl itself cannot create the
/// destination directory or report the snapshot's size).
const SHELL: &str = "/bin/sh";
/// Creates the directory, saves the snapshot, then prints its revision and
/// size as the log's last line (read back from the component's log tail).
/// `$1` is etcdctl, `$2` the snapshot file; the endpoint and the client
/// certificate come from `ETCDCTL_*` variables, so nothing is quoted.
const BACKUP_SCRIPT: &str = r#"set -e
mkdir -p "$(dirname "$2")"
"$1" snapshot save "$2"
"$1" --write-out=json snapshot status "$2""#;

/// How a one-shot component ended, for a status message: `exited with
/// CODE: <its last log lines>` (without the agent's own banner lines).
pub fn one_shot_exit(component: &ComponentStatus) -> String {
    let code = component.last_exit_code.map_or("an unknown code".to_string(), |c| c.to_string());
    let tail: Vec<&str> =
        component.log_tail.iter().map(String::as_str).filter(|l| !l.starts_with("---- flotilla")).collect();
    format!("exited with {code}: {}", tail.join("\n"))
}

/// Name of a backup's one-shot component on its destination Machine (a
/// component name is at most 63 characters: long ones end in a hash).
pub fn backup_component_name(namespace: &str, backup: &str) -> String {
    one_shot_component_name("etcd-backup", namespace, backup)
}

/// `<kind>-<namespace>-<name>` as a component name (dots become dashes; at
/// most 63 characters: long ones end in a hash).
pub fn one_shot_component_name(kind: &str, namespace: &str, object: &str) -> String {
    use sha2::{Digest, Sha256};
    let name = format!("{kind}-{namespace}-{}", object.replace('.', "-"));
    if name.len() <= 63 {
        return name;
    }
    let hash = hex::encode(Sha256::digest(name.as_bytes()));
    format!("{}-{}", name[..50].trim_end_matches('-'), &hash[..12])
}

/// Field manager of a backup's component: one per backup.
pub fn backup_field_manager(namespace: &str, backup: &str) -> String {
    format!("flotilla-{}", backup_component_name(namespace, backup))
}

/// The snapshot file: `<destination>/<cluster>-<backup>.db`.
pub fn snapshot_path(backup: &EtcdBackup) -> String {
    let dir = backup.spec.destination.path.trim_end_matches('/');
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    format!("{dir}/{}-{name}.db", backup.spec.cluster)
}

/// A prefixed backup's key dump: `<destination>/<cluster>-<backup>.keys.json`.
pub fn keys_dump_path(backup: &EtcdBackup) -> String {
    let dir = backup.spec.destination.path.trim_end_matches('/');
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    format!("{dir}/{}-{name}.keys.json", backup.spec.cluster)
}

/// The file a backup writes: the key dump of a prefixed one, the snapshot
/// of any other.
pub fn backup_file_path(backup: &EtcdBackup) -> String {
    match backup.spec.prefix {
        Some(_) => keys_dump_path(backup),
        None => snapshot_path(backup),
    }
}

/// The cluster's healthy voters that have a client URL, the leader first
/// (it is never behind).
pub fn serving_members(cluster: &EtcdCluster) -> Vec<&EtcdMemberStatus> {
    let leader = cluster.status.as_ref().and_then(|s| s.leader.as_ref());
    let mut members: Vec<&EtcdMemberStatus> = cluster
        .status
        .iter()
        .flat_map(|s| &s.members)
        .filter(|m| m.healthy && !m.is_learner && m.client_url.is_some())
        .collect();
    members.sort_by_key(|m| Some(&m.name) != leader);
    members
}

/// The files of a one-shot component that connects to the cluster: its CA
/// and client certificate from the cluster's Secret, under `pki/` of the
/// component's working directory.
pub fn client_pki_files(cluster: &EtcdCluster) -> Vec<ComponentFile> {
    let (cluster_name, cluster_namespace) = names(cluster);
    let secret = secret_name(cluster_name);
    let file = |key: String| ComponentFile {
        path: format!("{PKI_DIR}/{key}"),
        secret_ref: Some(KeyRef { namespace: cluster_namespace.to_string(), name: secret.clone(), key }),
        mode: Some(0o600),
        ..Default::default()
    };
    vec![file(keys::ETCD_CA_CRT.to_string()), file(keys::crt(CLIENT_LEAF)), file(keys::key(CLIENT_LEAF))]
}

/// `flotilla etcd-keys` flags that reach `members` with the files of
/// [`client_pki_files`].
pub fn etcd_keys_client_args(members: &[&EtcdMemberStatus]) -> Vec<String> {
    let endpoints: Vec<&str> = members.iter().filter_map(|m| m.client_url.as_deref()).collect();
    vec![
        "--endpoints".into(),
        endpoints.join(","),
        "--cacert".into(),
        format!("{PKI_DIR}/{}", keys::ETCD_CA_CRT),
        "--cert".into(),
        format!("{PKI_DIR}/{}", keys::crt(CLIENT_LEAF)),
        "--key".into(),
        format!("{PKI_DIR}/{}", keys::key(CLIENT_LEAF)),
    ]
}

/// What to do about one EtcdBackup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupPlan {
    pub status: EtcdBackupStatus,
    /// The one-shot component to write on the destination Machine.
    pub run: Option<ComponentSpec>,
    /// The component has done its job (its outcome is in `status`): remove
    /// it from the Machine.
    pub release: bool,
}

/// What `etcdctl snapshot status -w json` prints.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotInfo {
    revision: i64,
    total_size: i64,
}

fn snapshot_info(log_tail: &[String]) -> Option<SnapshotInfo> {
    log_tail.iter().rev().find_map(|line| serde_json::from_str(line.trim()).ok())
}

/// The next step of a backup, from the cluster's status and the
/// destination Machine (its spec and what its node agent reports).
pub fn backup_plan(
    backup: &EtcdBackup,
    cluster: Option<&EtcdCluster>,
    destination: Option<&Machine>,
    config: &EtcdOperatorConfig,
    now: Time,
) -> BackupPlan {
    let previous = backup.status.clone().unwrap_or_default();
    let namespace = backup.metadata.namespace.as_deref().unwrap_or_default();
    let name = backup.metadata.name.as_deref().unwrap_or_default();
    let component = backup_component_name(namespace, name);
    let on_machine = destination.is_some_and(|m| m.spec.components.iter().any(|c| c.name == component));
    let mut plan = BackupPlan { status: previous.clone(), ..Default::default() };
    let waiting = |message: String| EtcdBackupStatus {
        phase: Some(JobPhase::Pending),
        message: Some(message),
        ..previous.clone()
    };
    if matches!(previous.phase, Some(JobPhase::Succeeded | JobPhase::Failed)) {
        plan.release = on_machine;
        return plan;
    }
    let prefix = backup.spec.prefix.as_deref();
    let what = if prefix.is_some() { "key dump" } else { "snapshot" };
    let machine = &backup.spec.destination.machine;
    let Some(destination) = destination else {
        plan.status = waiting(format!("waiting for Machine {machine} (spec.destination.machine) to exist"));
        return plan;
    };
    if on_machine {
        let reported = destination.status.iter().flat_map(|s| &s.components).find(|c| c.name == component);
        plan.status = match reported {
            Some(c) if c.last_exit_time.is_some() && c.pid.is_none() => {
                let done = EtcdBackupStatus { completed_at: c.last_exit_time.clone(), ..previous.clone() };
                if c.last_exit_code == Some(0) && prefix.is_some() {
                    let info: Option<etcd_keys::DumpSummary> = etcd_keys::last_summary(&c.log_tail);
                    EtcdBackupStatus {
                        phase: Some(JobPhase::Succeeded),
                        size_bytes: info.as_ref().and_then(|i| i64::try_from(i.bytes).ok()),
                        revision: info.as_ref().map(|i| i.revision),
                        message: info.as_ref().map(|i| {
                            format!("{} keys under {} at revision {}", i.keys, i.prefix, i.revision)
                        }),
                        ..done
                    }
                } else if c.last_exit_code == Some(0) {
                    let info = snapshot_info(&c.log_tail);
                    EtcdBackupStatus {
                        phase: Some(JobPhase::Succeeded),
                        size_bytes: info.as_ref().map(|i| i.total_size),
                        revision: info.as_ref().map(|i| i.revision),
                        message: None,
                        ..done
                    }
                } else {
                    let exit = one_shot_exit(c);
                    EtcdBackupStatus {
                        phase: Some(JobPhase::Failed),
                        message: Some(format!("the {what} on {machine} {exit}")),
                        ..done
                    }
                }
            }
            Some(c) => EtcdBackupStatus {
                phase: Some(JobPhase::Running),
                message: c.message.clone(),
                ..previous.clone()
            },
            None => EtcdBackupStatus { phase: Some(JobPhase::Running), ..previous.clone() },
        };
        plan.release = matches!(plan.status.phase, Some(JobPhase::Succeeded | JobPhase::Failed));
        return plan;
    }
    let Some(cluster) = cluster else {
        plan.status =
            waiting(format!("waiting for EtcdCluster {} (spec.cluster) to exist", backup.spec.cluster));
        return plan;
    };
    let members = serving_members(cluster);
    let Some(member) = members.first() else {
        plan.status = waiting(format!(
            "EtcdCluster {} has no healthy member to take a {what} from",
            backup.spec.cluster
        ));
        return plan;
    };
    let path = backup_file_path(backup);
    plan.run = Some(match prefix {
        // One tenant's keys: `flotilla etcd-keys dump` (see
        // `crate::etcd_keys`), against every healthy voter in turn.
        Some(prefix) => {
            let mut args = vec!["etcd-keys".to_string(), "dump".into()];
            args.extend(etcd_keys_client_args(&members));
            args.extend(["--prefix".into(), prefix.to_string(), "--out".into(), path.clone()]);
            ComponentSpec {
                name: component,
                binary: config.flotilla_binary.display().to_string(),
                args,
                files: client_pki_files(cluster),
                restart_policy: RestartPolicy::Never,
                ..Default::default()
            }
        }
        None => {
            let env = BTreeMap::from([
                ("ETCDCTL_API".to_string(), "3".to_string()),
                ("ETCDCTL_ENDPOINTS".to_string(), member.client_url.clone().unwrap_or_default()),
                ("ETCDCTL_CACERT".to_string(), format!("{PKI_DIR}/{}", keys::ETCD_CA_CRT)),
                ("ETCDCTL_CERT".to_string(), format!("{PKI_DIR}/{}", keys::crt(CLIENT_LEAF))),
                ("ETCDCTL_KEY".to_string(), format!("{PKI_DIR}/{}", keys::key(CLIENT_LEAF))),
            ]);
            ComponentSpec {
                name: component,
                binary: SHELL.into(),
                args: vec![
                    "-c".into(),
                    BACKUP_SCRIPT.into(),
                    "flotilla-etcd-backup".into(),
                    config.bin_dir.join("etcdctl").display().to_string(),
                    path.clone(),
                ],
                env,
                files: client_pki_files(cluster),
                restart_policy: RestartPolicy::Never,
                ..Default::default()
            }
        }
    });
    plan.status = EtcdBackupStatus {
        phase: Some(JobPhase::Running),
        path: Some(path),
        member: Some(member.name.clone()),
        started_at: Some(now),
        message: None,
        ..previous
    };
    plan
}

// ---------------------------------------------------------------- status

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The cluster's status from the plan and what the members answered.
pub fn status(cluster: &EtcdCluster, plan: &Plan, seen: &Observation, now: Time) -> EtcdClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let listed = seen.listed.as_deref().unwrap_or_default();
    let mut out: Vec<EtcdMemberStatus> = plan
        .members
        .iter()
        .map(|m| {
            let listing = listed.iter().find(|l| l.peer_urls.contains(&m.peer_url) || l.name == m.name);
            let state = seen.states.get(&m.name);
            EtcdMemberStatus {
                name: m.name.clone(),
                machine: Some(m.machine.clone()),
                peer_url: Some(m.peer_url.clone()),
                client_url: Some(m.client_url.clone()),
                id: listing.map(|l| l.id).or(state.map(|s| s.id)).map(|id| format!("{id:x}")),
                is_learner: listing.is_some_and(|l| l.is_learner),
                healthy: seen.healthy(&m.name),
                db_size_bytes: state.map(|s| s.db_size),
                version: state.map(|s| s.version.clone()),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let leader_id = seen.states.values().map(|s| s.leader).find(|l| *l != 0);
    let leader = leader_id.and_then(|id| {
        listed
            .iter()
            .find(|l| l.id == id && !l.name.is_empty())
            .map(|l| l.name.clone())
            .or_else(|| seen.states.iter().find(|(_, s)| s.id == id).map(|(n, _)| n.clone()))
    });
    let ready = i32::try_from(out.iter().filter(|m| m.healthy && !m.is_learner).count()).unwrap_or(i32::MAX);
    let voters = out.iter().filter(|m| !m.is_learner).count();
    let version = out
        .iter()
        .filter_map(|m| m.version.clone())
        .filter(|v| !v.is_empty())
        .min_by(|a, b| version_key(a).cmp(&version_key(b)));
    let available = ready == cluster.spec.members
        && i64::try_from(voters).unwrap_or(i64::MAX) == i64::from(cluster.spec.members)
        && leader.is_some();
    let phase = if cluster.metadata.deletion_timestamp.is_some() {
        EtcdClusterPhase::Deleting
    } else if available && plan.change.is_none() {
        EtcdClusterPhase::Running
    } else if matches!(
        plan.change,
        Some(MembershipChange::AddLearner { .. } | MembershipChange::Promote { .. })
    ) {
        EtcdClusterPhase::Scaling
    } else if matches!(plan.change, Some(MembershipChange::Remove { .. }))
        || matches!(
            previous.phase,
            Some(EtcdClusterPhase::Running | EtcdClusterPhase::Degraded | EtcdClusterPhase::Scaling)
        )
    {
        EtcdClusterPhase::Degraded
    } else {
        EtcdClusterPhase::Provisioning
    };
    let (reason, message) = if available && plan.change.is_none() {
        (
            "AllMembersHealthy".to_string(),
            format!("{ready} healthy members, leader {}", leader.clone().unwrap_or_default()),
        )
    } else if let Some(p) = &plan.progress {
        (p.reason.clone(), p.message.clone())
    } else {
        let silent: Vec<&str> = out.iter().filter(|m| !m.healthy).map(|m| m.name.as_str()).collect();
        let mut message = format!("{ready}/{} members healthy", cluster.spec.members);
        if !silent.is_empty() {
            message.push_str(&format!(
                "; not answering: {} (see their component status on the Machines)",
                silent.join(", ")
            ));
        }
        ("MembersNotReady".to_string(), message)
    };
    let status_text = if available { "True" } else { "False" };
    let generation = cluster.metadata.generation;
    let old = previous.conditions.iter().find(|c| c.type_ == conditions::ETCD_AVAILABLE);
    let condition = Condition {
        type_: conditions::ETCD_AVAILABLE.into(),
        status: status_text.into(),
        reason,
        message,
        observed_generation: generation,
        // The transition time moves only when the verdict changes.
        last_transition_time: old
            .filter(|c| c.status == status_text)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(now),
    };
    let (name, _) = names(cluster);
    EtcdClusterStatus {
        phase: Some(phase),
        ready_members: ready,
        leader,
        version,
        client_urls: out.iter().filter(|m| !m.is_learner).filter_map(|m| m.client_url.clone()).collect(),
        client_secret: Some(secret_name(name)),
        observed_generation: generation,
        conditions: vec![condition],
        members: out,
        // The backup schedule's fields: `etcd_schedule::SchedulePlan::fill`.
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::kok::{EtcdClusterSpec, EtcdStorage};
    use flotilla_api::machine::{MachineSpec, MachineStatus};

    fn machine(name: &str, pool: &str) -> Machine {
        let mut m =
            Machine::new(name, MachineSpec { address: Some("127.0.0.1".into()), ..Default::default() });
        m.metadata.labels = Some(BTreeMap::from([("pool".to_string(), pool.to_string())]));
        m
    }

    fn cluster_named(name: &str, members: i32) -> EtcdCluster {
        let mut c = EtcdCluster::new(
            name,
            EtcdClusterSpec {
                members,
                version: "3.4.13".into(),
                machine_selector: BTreeMap::from([("pool".to_string(), "etcd".to_string())]),
                ..Default::default()
            },
        );
        c.metadata.namespace = Some("ns".into());
        c.metadata.generation = Some(2);
        c
    }

    fn cluster(members: i32) -> EtcdCluster {
        cluster_named("e", members)
    }

    fn config() -> EtcdOperatorConfig {
        EtcdOperatorConfig {
            bin_dir: "/opt/bin".into(),
            ports: 3000..=3009,
            member_dead_after: Duration::from_secs(60),
            flotilla_binary: "/opt/bin/flotilla".into(),
        }
    }

    fn t(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    /// Decides with no member answering and no history.
    fn check(c: &EtcdCluster, machines: &[Machine], seen: &Observation) -> Plan {
        let (cfg, down) = (config(), BTreeMap::new());
        decide(&Facts { cluster: c, machines, seen, down_since: &down, config: &cfg, now: t(1000) })
    }

    /// Writes what the plan writes into the machines (as the operator's
    /// apply would).
    fn apply(plan: &Plan, machines: &mut [Machine]) {
        for (member, component) in &plan.write {
            let m =
                machines.iter_mut().find(|m| m.metadata.name.as_deref() == Some(&member.machine)).unwrap();
            m.spec.components.retain(|c| c.name != component.name);
            m.spec.components.push(component.clone());
        }
        for member in &plan.drop {
            let m =
                machines.iter_mut().find(|m| m.metadata.name.as_deref() == Some(&member.machine)).unwrap();
            m.spec.components.retain(|c| arg(c, "--name") != Some(member.name.as_str()));
        }
    }

    fn placed(plan: &[MemberPlan]) -> Vec<(&str, &str)> {
        plan.iter().map(|m| (m.name.as_str(), m.machine.as_str())).collect()
    }

    fn flag(c: &ComponentSpec, flag: &str) -> String {
        arg(c, flag).unwrap().to_string()
    }

    /// Every member listed (ids 100 + index, the given ones learners),
    /// the `answering` ones with a leader.
    fn observed(members: &[MemberPlan], learners: &[&str], answering: &[&str]) -> Observation {
        let listed = members
            .iter()
            .map(|m| ListedMember {
                id: 100 + u64::from(m.index),
                name: m.name.clone(),
                peer_urls: vec![m.peer_url.clone()],
                client_urls: vec![m.client_url.clone()],
                is_learner: learners.contains(&m.name.as_str()),
            })
            .collect();
        let states = members
            .iter()
            .filter(|m| answering.contains(&m.name.as_str()))
            .map(|m| {
                let v = if m.index == 2 { "3.4.12" } else { "3.4.13" };
                let state = MemberState {
                    id: 100 + u64::from(m.index),
                    leader: 100,
                    db_size: 4096,
                    version: v.into(),
                };
                (m.name.clone(), state)
            })
            .collect();
        Observation { listed: Some(listed), states }
    }

    fn three() -> Vec<Machine> {
        vec![machine("m3", "etcd"), machine("w1", "workers"), machine("m1", "etcd"), machine("m2", "etcd")]
    }

    #[test]
    fn founding_members_go_to_distinct_selected_machines_with_ports_free_on_the_shared_address() {
        let mut machines = three();
        // Someone else's component on m2 holds 3001 (a URL) and 3003 (a port flag).
        machines[3].spec.components.push(ComponentSpec {
            name: "other".into(),
            binary: "/bin/x".into(),
            args: vec!["--listen=http://127.0.0.1:3001".into(), "--secure-port=3003".into()],
            ..Default::default()
        });
        let plan = check(&cluster(3), &machines, &Observation::default());
        assert_eq!(placed(&plan.members), [("e-0", "m1"), ("e-1", "m2"), ("e-2", "m3")]);
        let urls: Vec<(&str, &str)> =
            plan.members.iter().map(|m| (m.client_url.as_str(), m.peer_url.as_str())).collect();
        assert_eq!(
            urls,
            [
                ("https://127.0.0.1:3000", "https://127.0.0.1:3002"),
                ("https://127.0.0.1:3004", "https://127.0.0.1:3005"),
                ("https://127.0.0.1:3006", "https://127.0.0.1:3007"),
            ],
            "machines sharing an address never share a port"
        );
        assert_eq!(plan.change, None);
        assert_eq!(plan.progress.as_ref().unwrap().reason, "Bootstrapping");
        for (_, c) in &plan.write {
            assert_eq!(flag(c, "--initial-cluster-state"), "new");
            assert_eq!(flag(c, "--initial-cluster"), initial_cluster(&plan.members));
        }
    }

    #[test]
    fn a_restored_cluster_founds_one_member_on_the_snapshot_machine_that_restores_first() {
        let mut machines = three();
        let mut c = cluster(3);
        c.spec.restore_from =
            Some(flotilla_api::kok::SnapshotFile { machine: "m2".into(), path: "/b/e-1.db".into() });
        let plan = check(&c, &machines, &Observation::default());
        assert_eq!(placed(&plan.members), [("e-0", "m2")]);
        let (_, component) = &plan.write[0];
        assert_eq!(component.binary, "/bin/sh");
        let script = &component.args[1];
        assert!(script.contains("snapshot restore '/b/e-1.db' --name 'e-0'"), "{script}");
        assert!(script.contains("if [ ! -d 'data/e-0' ]"), "restores only without data: {script}");
        assert!(script.contains("exec '/opt/bin/etcd' \"$@\""), "{script}");
        assert_eq!(flag(component, "--initial-cluster"), initial_cluster(&plan.members));
        // The member reads back from its Machine like any other.
        apply(&plan, &mut machines);
        assert_eq!(recorded_members(&c, &machines), plan.members);
        // The snapshot's machine is gone: nothing is founded elsewhere.
        c.spec.restore_from.as_mut().unwrap().machine = "m9".into();
        let waiting = check(&c, &three(), &Observation::default());
        assert!(waiting.write.is_empty());
        assert_eq!(waiting.progress.unwrap().reason, "RestoreMachineUnavailable");
    }

    #[test]
    fn a_second_cluster_on_the_same_machines_takes_other_ports_and_both_read_theirs_back() {
        let mut machines = three();
        let a = cluster_named("a", 3);
        let plan_a = check(&a, &machines, &Observation::default());
        apply(&plan_a, &mut machines);
        let b = cluster_named("b", 3);
        let plan_b = check(&b, &machines, &Observation::default());
        apply(&plan_b, &mut machines);
        let ports = |p: &Plan| -> Vec<String> {
            p.members.iter().flat_map(|m| [m.client_url.clone(), m.peer_url.clone()]).collect()
        };
        let (pa, pb) = (ports(&plan_a), ports(&plan_b));
        assert!(pa.iter().all(|u| !pb.contains(u)), "{pa:?} {pb:?}");
        // Read back from the Machines: the same members, the same URLs, and
        // nothing to write again.
        assert_eq!(recorded_members(&a, &machines), plan_a.members);
        assert_eq!(recorded_members(&b, &machines), plan_b.members);
        let again = check(&a, &machines, &observed(&plan_a.members, &[], &["a-0", "a-1", "a-2"]));
        assert_eq!((again.write.len(), again.drop.len(), again.change.clone()), (0, 0, None));
        assert_eq!(again.members, plan_a.members);
        // The range is full: a third cluster says so, and where.
        let c = cluster_named("c", 1);
        let plan_c = check(&c, &machines, &Observation::default());
        let p = plan_c.progress.unwrap();
        assert_eq!(p.reason, "NotEnoughMachines");
        assert!(p.message.contains("no two free ports in 3000..=3009"), "{}", p.message);
    }

    #[test]
    fn too_few_usable_machines_found_fewer_members_and_say_why() {
        let mut bare = machine("m2", "etcd");
        bare.spec.address = None;
        let mut silent = machine("m3", "etcd");
        silent.status = Some(MachineStatus { last_heartbeat: Some(Time(t(100))), ..Default::default() });
        let plan = check(&cluster(3), &[machine("m1", "etcd"), bare, silent], &Observation::default());
        assert_eq!(placed(&plan.members), [("e-0", "m1")]);
        assert_eq!(flag(&plan.write[0].1, "--initial-cluster"), initial_cluster(&plan.members));
        let p = plan.progress.unwrap();
        assert_eq!(p.reason, "NotEnoughMachines");
        assert!(
            p.message.contains("1 of 3") && p.message.contains("m2 has no spec.address"),
            "{}",
            p.message
        );
        assert!(p.message.contains("m3's node agent has not reported for 900s"), "{}", p.message);
    }

    #[test]
    fn members_keep_their_machines_and_ports() {
        let c = cluster(3);
        let mut machines = three();
        let plan = check(&c, &machines, &Observation::default());
        apply(&plan, &mut machines);
        // A new machine sorting first, and m3 no longer matching, change
        // nothing: running members are never moved.
        machines.insert(0, machine("a0", "etcd"));
        machines.iter_mut().find(|m| m.metadata.name.as_deref() == Some("m3")).unwrap().metadata.labels =
            None;
        let all = ["e-0", "e-1", "e-2"];
        let again = check(&c, &machines, &observed(&plan.members, &[], &all));
        assert_eq!(again.members, plan.members);
        assert!(again.write.is_empty() && again.change.is_none());
        // While nobody answers, nothing is founded again.
        let silent = check(&c, &machines, &Observation::default());
        assert!(silent.write.is_empty());
        assert_eq!(silent.progress.unwrap().reason, "NoQuorum");
    }

    #[test]
    fn component_runs_etcd_with_tls_files_and_data_in_its_working_directory() {
        let c = cluster(3);
        let plan = check(&c, &three(), &Observation::default());
        let (member, comp) = &plan.write[1];
        assert_eq!(member.name, "e-1");
        assert_eq!(comp.name, "etcd-ns-e");
        assert_eq!(comp.binary, "/opt/bin/etcd");
        assert_eq!(flag(comp, "--name"), "e-1");
        assert_eq!(flag(comp, "--data-dir"), "data/e-1", "relative: removed with the component");
        assert_eq!(flag(comp, "--advertise-client-urls"), member.client_url);
        assert_eq!(flag(comp, "--cert-file"), "pki/etcd-member-e-1-server.crt");
        assert_eq!(flag(comp, "--trusted-ca-file"), "pki/etcd-ca.crt");
        let paths: Vec<&str> = comp.files.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&"pki/etcd-member-e-1-peer.key"), "{paths:?}");
        assert!(
            !paths.iter().any(|p| p.contains("ca.key") || p.contains("e-0")),
            "least privilege: {paths:?}"
        );
        let r = comp.files[0].secret_ref.as_ref().unwrap();
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("ns", "e-etcd-pki"));
        assert_eq!(comp.health.as_ref().unwrap().tcp.as_ref().unwrap().port, 3002);
        assert_eq!(field_manager("ns", "e"), "flotilla-etcd-ns-e");

        let mut own = cluster(1);
        own.spec.storage = Some(EtcdStorage { data_dir: Some("/srv/etcd".into()), size: None });
        let plan = check(&own, &three(), &Observation::default());
        assert_eq!(flag(&plan.write[0].1, "--data-dir"), "/srv/etcd/e-0");
    }

    #[test]
    fn certificates_are_made_once_and_only_missing_ones_added() {
        let plan = check(&cluster(3), &three(), &Observation::default()).members;
        let now = OffsetDateTime::now_utc();
        let first = pki_data("e", &BTreeMap::new(), &plan[..1], now).unwrap().unwrap();
        assert!(first.contains_key("etcd-ca.key") && first.contains_key("client.crt"));
        assert!(
            first.contains_key("etcd-member-e-0-server.crt")
                && !first.contains_key("etcd-member-e-1-peer.crt")
        );
        assert_eq!(pki_data("e", &first, &plan[..1], now).unwrap(), None, "nothing missing, nothing changes");
        let second = pki_data("e", &first, &plan, now).unwrap().unwrap();
        assert_eq!(second.get("etcd-ca.crt"), first.get("etcd-ca.crt"), "the CA is kept");
        assert_eq!(second.get("etcd-member-e-0-server.crt"), first.get("etcd-member-e-0-server.crt"));
        assert!(second.contains_key("etcd-member-e-2-peer.key"));
        // The same name on a machine with another address: new certificates.
        let mut moved = plan[2].clone();
        moved.address = "10.0.0.7".into();
        let third = pki_data("e", &second, &[moved], now).unwrap().unwrap();
        assert_ne!(third.get("etcd-member-e-2-peer.crt"), second.get("etcd-member-e-2-peer.crt"));
        assert_eq!(third.get("etcd-member-e-1-peer.crt"), second.get("etcd-member-e-1-peer.crt"));
        let facts = flotilla_core::pki::inspect_certificate(
            &String::from_utf8(second["etcd-member-e-2-server.crt"].clone()).unwrap(),
        )
        .unwrap();
        assert!(facts.covers("127.0.0.1", now, time::Duration::ZERO));
    }

    #[test]
    fn gateway_answers_parse_and_requests_carry_ids_as_strings() {
        let list = br#"{"header":{"cluster_id":"1","member_id":"2"},"members":[
            {"ID":"10276657743932975437","name":"e-0","peerURLs":["https://127.0.0.1:4000"],"clientURLs":["https://127.0.0.1:3000"]},
            {"ID":"5","name":"e-1","peerURLs":["https://127.0.0.1:4010"],"isLearner":true}]}"#;
        let members = parse_member_list(list).unwrap();
        assert_eq!(members[0].id, 10276657743932975437);
        assert!(!members[0].is_learner && members[1].is_learner);
        assert!(members[1].client_urls.is_empty());
        let status = br#"{"header":{"member_id":"5","raft_term":"2"},"version":"3.4.13","dbSize":"20480","leader":"10276657743932975437","raftIndex":"9"}"#;
        assert_eq!(
            parse_status(status).unwrap(),
            MemberState { id: 5, leader: 10276657743932975437, db_size: 20480, version: "3.4.13".into() }
        );
        assert!(parse_status(b"not json").is_err());

        let add = MembershipChange::AddLearner { member: "e-3".into(), peer_url: "https://h:1".into() };
        assert_eq!(
            add.request(),
            ("/v3/cluster/member/add", r#"{"isLearner":true,"peerURLs":["https://h:1"]}"#.into())
        );
        let id = 10276657743932975437;
        let promote = MembershipChange::Promote { member: "e-3".into(), id };
        assert_eq!(
            promote.request(),
            ("/v3/cluster/member/promote", r#"{"ID":"10276657743932975437"}"#.into())
        );
        let remove = MembershipChange::Remove { member: "e-1".into(), id: 5, why: String::new() };
        assert_eq!(remove.request().0, "/v3/cluster/member/remove");
    }

    /// Three founded members running on m1..m3, and a spare m4.
    fn running_three() -> (EtcdCluster, Vec<Machine>, Vec<MemberPlan>) {
        let c = cluster(3);
        let mut machines = three();
        machines.push(machine("m4", "etcd"));
        let plan = check(&c, &machines, &Observation::default());
        apply(&plan, &mut machines);
        (c, machines, plan.members)
    }

    #[test]
    fn a_member_whose_machine_was_deleted_is_removed_then_replaced_on_a_spare_machine() {
        let (c, mut machines, members) = running_three();
        machines.retain(|m| m.metadata.name.as_deref() != Some("m2"));
        // e-1 is still in the membership but runs nowhere: removed (2 of
        // the 2 voters left are healthy).
        let seen = observed(&members, &[], &["e-0", "e-2"]);
        let plan = check(&c, &machines, &seen);
        assert!(
            matches!(&plan.change, Some(MembershipChange::Remove { member, id: 101, why }) if member == "e-1" && why.contains("runs on no Machine")),
            "{plan:?}"
        );
        assert!(plan.write.is_empty());
        assert_eq!(status(&c, &plan, &seen, Time(t(1000))).phase, Some(EtcdClusterPhase::Degraded));

        // Removed: a learner e-3 (a new name, never e-1 again) is added on
        // m4 to join the running cluster.
        let left: Vec<MemberPlan> = members.iter().filter(|m| m.name != "e-1").cloned().collect();
        let seen = observed(&left, &[], &["e-0", "e-2"]);
        let plan = check(&c, &machines, &seen);
        let Some(MembershipChange::AddLearner { member, peer_url }) = &plan.change else {
            panic!("{plan:?}")
        };
        assert_eq!(member, "e-3");
        let (new, component) = &plan.write[0];
        assert_eq!((new.machine.as_str(), &new.peer_url), ("m4", peer_url));
        assert_eq!(flag(component, "--initial-cluster-state"), "existing");
        assert_eq!(
            flag(component, "--initial-cluster"),
            format!("{},e-3={peer_url}", initial_cluster(&left))
        );
        assert_eq!(flag(component, "--data-dir"), "data/e-3");
        let s = status(&c, &plan, &seen, Time(t(1000)));
        assert_eq!(s.phase, Some(EtcdClusterPhase::Scaling));
        assert_eq!(s.conditions[0].reason, "AddingMember");
        apply(&plan, &mut machines);

        // Joined as a learner: promoted (etcd refuses until it caught up).
        let now: Vec<MemberPlan> = recorded_members(&c, &machines);
        assert_eq!(placed(&now), [("e-0", "m1"), ("e-2", "m3"), ("e-3", "m4")]);
        let plan = check(&c, &machines, &observed(&now, &["e-3"], &["e-0", "e-2", "e-3"]));
        assert_eq!(plan.change, Some(MembershipChange::Promote { member: "e-3".into(), id: 103 }));
        // Promoted: done.
        let seen = observed(&now, &[], &["e-0", "e-2", "e-3"]);
        let plan = check(&c, &machines, &seen);
        assert_eq!((plan.change.clone(), plan.write.len()), (None, 0));
        let s = status(&c, &plan, &seen, Time(t(1000)));
        assert_eq!((s.phase, s.ready_members), (Some(EtcdClusterPhase::Running), 3));
    }

    #[test]
    fn a_silent_machine_or_a_long_silent_member_is_replaced_only_past_the_threshold_and_with_quorum() {
        let (c, mut machines, members) = running_three();
        let cfg = config();
        let seen = observed(&members, &[], &["e-0", "e-2"]);
        let decide_at =
            |machines: &[Machine], down: &BTreeMap<String, Timestamp>, seen: &Observation, now| {
                decide(&Facts { cluster: &c, machines, seen, down_since: down, config: &cfg, now })
            };
        // Down for 30 s of the 60 s allowed: wait.
        let down = BTreeMap::from([("e-1".to_string(), t(970))]);
        assert_eq!(decide_at(&machines, &down, &seen, t(1000)).change, None);
        // Down for 61 s: removed.
        let plan = decide_at(&machines, &down, &seen, t(1031));
        assert!(
            matches!(&plan.change, Some(MembershipChange::Remove { id: 101, why, .. }) if why.contains("not answered for 61s")),
            "{plan:?}"
        );
        // Its machine's agent silent for 90 s: removed as well.
        let m2 = machines.iter_mut().find(|m| m.metadata.name.as_deref() == Some("m2")).unwrap();
        m2.status = Some(MachineStatus { last_heartbeat: Some(Time(t(910))), ..Default::default() });
        let plan = decide_at(&machines, &BTreeMap::new(), &seen, t(1000));
        assert!(
            matches!(&plan.change, Some(MembershipChange::Remove { why, .. }) if why.contains("m2's node agent has not reported for 90s")),
            "{plan:?}"
        );
        // Two of three down: removing one would leave 1 of 2 healthy.
        let seen = observed(&members, &[], &["e-0"]);
        let plan = decide_at(&machines, &down, &seen, t(1100));
        assert_eq!(plan.change, None);
        assert_eq!(plan.progress.unwrap().reason, "QuorumAtRisk");
        // Once removed, its component goes from m2 (its data with it), and
        // the replacement avoids the silent m2.
        let left: Vec<MemberPlan> = members.iter().filter(|m| m.name != "e-1").cloned().collect();
        let plan = decide_at(&machines, &BTreeMap::new(), &observed(&left, &[], &["e-0", "e-2"]), t(1000));
        assert_eq!(placed(&plan.drop), [("e-1", "m2")]);
        assert_eq!(placed(&plan.write.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>()), [("e-3", "m4")]);
    }

    #[test]
    fn a_learner_without_a_component_is_removed() {
        let (c, machines, members) = running_three();
        let mut seen = observed(&members, &[], &["e-0", "e-1", "e-2"]);
        seen.listed.as_mut().unwrap().push(ListedMember {
            id: 7,
            name: String::new(),
            peer_urls: vec!["https://127.0.0.1:3009".into()],
            client_urls: vec![],
            is_learner: true,
        });
        let plan = check(&c, &machines, &seen);
        assert!(
            matches!(&plan.change, Some(MembershipChange::Remove { id: 7, why, .. }) if why.contains("interrupted")),
            "{plan:?}"
        );
    }

    #[test]
    fn scaling_up_adds_one_learner_at_a_time() {
        let c1 = cluster(1);
        let mut machines = three();
        let plan = check(&c1, &machines, &Observation::default());
        assert_eq!(placed(&plan.members), [("e-0", "m1")]);
        apply(&plan, &mut machines);
        let c3 = cluster(3);
        let mut steps = Vec::new();
        for _ in 0..4 {
            let members = recorded_members(&c3, &machines);
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            // The newest member is a learner until promoted (a step later).
            let learner: Vec<&str> = match steps.last() {
                Some(MembershipChange::AddLearner { member, .. }) => vec![member.as_str()],
                _ => vec![],
            };
            let plan = check(&c3, &machines, &observed(&members, &learner, &names));
            apply(&plan, &mut machines);
            steps.push(plan.change.unwrap());
        }
        let kinds: Vec<String> = steps
            .iter()
            .map(|s| match s {
                MembershipChange::AddLearner { member, .. } => format!("add {member}"),
                MembershipChange::Promote { member, .. } => format!("promote {member}"),
                MembershipChange::Remove { member, .. } => format!("remove {member}"),
            })
            .collect();
        assert_eq!(kinds, ["add e-1", "promote e-1", "add e-2", "promote e-2"]);
        assert_eq!(placed(&recorded_members(&c3, &machines)), [("e-0", "m1"), ("e-1", "m2"), ("e-2", "m3")]);
        let members = recorded_members(&c3, &machines);
        let plan = check(&c3, &machines, &observed(&members, &[], &["e-0", "e-1", "e-2"]));
        assert_eq!(plan.change, None);
        // More voters than asked: said, not done.
        let plan = check(&c1, &machines, &observed(&members, &[], &["e-0", "e-1", "e-2"]));
        assert_eq!((plan.change, plan.progress.unwrap().reason.as_str()), (None, "ScaleDownUnsupported"));
    }

    #[test]
    fn a_lost_cluster_is_not_founded_again() {
        let (c, _, members) = running_three();
        let mut c = c;
        let seen = observed(&members, &[], &["e-0", "e-1", "e-2"]);
        let plan = Plan { members: members.clone(), ..Default::default() };
        c.status = Some(status(&c, &plan, &seen, Time(t(1000))));
        let plan = check(&c, &[machine("m9", "etcd")], &Observation::default());
        assert!(plan.write.is_empty());
        assert_eq!(plan.progress.unwrap().reason, "MembersLost");
    }

    #[test]
    fn teardown_removes_components_then_waits_for_the_agents_but_not_for_silent_ones() {
        let (c, mut machines, _) = running_three();
        let component = component_name("ns", "e");
        let cfg = config();
        let td = teardown(&c, &machines, &cfg, t(1000));
        assert_eq!(td.remove_from, ["m3", "m1", "m2"]);
        assert!(!td.done());
        let reported = |beat: i64| MachineStatus {
            last_heartbeat: Some(Time(t(beat))),
            components: vec![flotilla_api::machine::ComponentStatus {
                name: component.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        for m in &mut machines {
            m.spec.components.clear();
        }
        machines[0].status = Some(reported(990));
        machines[2].status = Some(reported(100));
        let td = teardown(&c, &machines, &cfg, t(1000));
        assert_eq!(
            (td.waiting_for.clone(), td.abandoned.clone()),
            (vec!["m3".to_string()], vec!["m1".to_string()])
        );
        assert!(td.message().contains("waiting for the node agents of m3"), "{}", td.message());
        machines[0].status = None;
        assert!(teardown(&c, &machines, &cfg, t(1000)).done());
    }

    #[test]
    fn status_reports_members_leader_version_and_phase() {
        let mut c = cluster(3);
        let members = check(&c, &three(), &Observation::default()).members;
        let plan = Plan { members: members.clone(), ..Default::default() };
        let t0 = Time(t(1000));
        let t1 = Time(t(2000));

        let s = status(&c, &plan, &Observation::default(), t0.clone());
        assert_eq!(
            (s.phase, s.ready_members, s.leader.clone()),
            (Some(EtcdClusterPhase::Provisioning), 0, None)
        );
        assert_eq!(s.conditions[0].status, "False");
        assert!(s.conditions[0].message.contains("not answering: e-0, e-1, e-2"), "{:?}", s.conditions[0]);

        let all = observed(&members, &[], &["e-0", "e-1", "e-2"]);
        let s = status(&c, &plan, &all, t0.clone());
        assert_eq!(s.phase, Some(EtcdClusterPhase::Running));
        assert_eq!((s.ready_members, s.leader.as_deref()), (3, Some("e-0")));
        assert_eq!(s.version.as_deref(), Some("3.4.12"), "the lowest version");
        assert_eq!(s.members[0].id.as_deref(), Some("64"));
        assert_eq!(s.members[0].machine.as_deref(), Some("m1"));
        assert_eq!(s.members[0].db_size_bytes, Some(4096));
        assert_eq!(s.client_urls.len(), 3);
        assert_eq!(s.client_secret.as_deref(), Some("e-etcd-pki"));
        assert_eq!((s.conditions[0].status.as_str(), s.observed_generation), ("True", Some(2)));
        c.status = Some(s);

        let s = status(&c, &plan, &all, t1.clone());
        assert_eq!(s.conditions[0].last_transition_time, t0, "no transition, no new time");

        let s = status(&c, &plan, &observed(&members, &[], &["e-0", "e-1"]), t1.clone());
        assert_eq!((s.phase, s.ready_members), (Some(EtcdClusterPhase::Degraded), 2));
        assert!(!s.members[2].healthy && s.members[2].id.is_some());
        assert_eq!(s.conditions[0].last_transition_time, t1);

        let mut deleting = cluster(3);
        deleting.metadata.deletion_timestamp = Some(t0);
        assert_eq!(status(&deleting, &plan, &all, t1).phase, Some(EtcdClusterPhase::Deleting));
    }

    fn backup(prefix: Option<&str>) -> EtcdBackup {
        let mut b = EtcdBackup::new(
            "nightly",
            flotilla_api::kok::EtcdBackupSpec {
                cluster: "e".into(),
                prefix: prefix.map(str::to_string),
                destination: flotilla_api::kok::MachinePath {
                    machine: "m1".into(),
                    path: "/backups/".into(),
                },
            },
        );
        b.metadata.namespace = Some("ns".into());
        b
    }

    fn running_cluster() -> EtcdCluster {
        let (mut c, _, members) = running_three();
        let seen = observed(&members, &[], &["e-0", "e-1", "e-2"]);
        let plan = Plan { members, ..Default::default() };
        c.status = Some(status(&c, &plan, &seen, Time(t(1000))));
        c
    }

    #[test]
    fn a_backup_runs_etcdctl_once_on_its_machine_and_reads_the_outcome_back() {
        let (b, c, cfg, now) = (backup(None), running_cluster(), config(), Time(t(2000)));
        let mut m1 = machine("m1", "etcd");
        // Nothing placed yet: a one-shot component that saves a snapshot from
        // the leader with the client certificate.
        let plan = backup_plan(&b, Some(&c), Some(&m1), &cfg, now.clone());
        let run = plan.run.clone().unwrap();
        assert_eq!(run.name, "etcd-backup-ns-nightly");
        assert_eq!(run.restart_policy, RestartPolicy::Never);
        assert_eq!(run.args[3..], ["/opt/bin/etcdctl".to_string(), "/backups/e-nightly.db".into()]);
        assert_eq!(
            run.env["ETCDCTL_ENDPOINTS"],
            c.status.as_ref().unwrap().members[0].client_url.clone().unwrap()
        );
        assert_eq!(run.env["ETCDCTL_CERT"], "pki/client.crt");
        let keys: Vec<&str> = run.files.iter().map(|f| f.secret_ref.as_ref().unwrap().key.as_str()).collect();
        assert_eq!(keys, ["etcd-ca.crt", "client.crt", "client.key"]);
        let s = &plan.status;
        assert_eq!(
            (s.phase, s.member.as_deref(), s.path.as_deref()),
            (Some(JobPhase::Running), Some("e-0"), Some("/backups/e-nightly.db"))
        );
        let mut b = b;
        b.status = Some(plan.status.clone());
        m1.spec.components.push(run.clone());

        // Still running: nothing new.
        let again = backup_plan(&b, Some(&c), Some(&m1), &cfg, now.clone());
        assert_eq!(
            (again.run.is_none(), again.release, again.status.phase),
            (true, false, Some(JobPhase::Running))
        );

        // Exited 0: Succeeded with the size and revision it printed last.
        let exited = |code: i32, tail: &[&str]| MachineStatus {
            components: vec![flotilla_api::machine::ComponentStatus {
                name: run.name.clone(),
                state: flotilla_api::machine::ComponentState::Stopped,
                last_exit_code: Some(code),
                last_exit_time: Some(Time(t(2005))),
                log_tail: tail.iter().map(|l| l.to_string()).collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        m1.status = Some(exited(
            0,
            &[
                "Snapshot saved at /backups/e-nightly.db",
                r#"{"hash":1,"revision":42,"totalKey":7,"totalSize":20480}"#,
            ],
        ));
        let done = backup_plan(&b, Some(&c), Some(&m1), &cfg, now.clone());
        let s = &done.status;
        assert_eq!((s.phase, s.size_bytes, s.revision), (Some(JobPhase::Succeeded), Some(20480), Some(42)));
        assert_eq!(s.completed_at, Some(Time(t(2005))));
        assert!(done.release, "the finished component leaves the Machine");
        // Once recorded, the outcome stays and only the release is left.
        let mut finished = b.clone();
        finished.status = Some(done.status.clone());
        let after = backup_plan(&finished, Some(&c), Some(&m1), &cfg, now.clone());
        assert_eq!((after.status, after.release, after.run), (done.status.clone(), true, None));

        // Exited 1: Failed, with what it printed.
        m1.status = Some(exited(
            1,
            &[
                "---- flotilla-node-agent: starting",
                "mkdir: cannot create directory '/backups': Permission denied",
            ],
        ));
        let failed = backup_plan(&b, Some(&c), Some(&m1), &cfg, now).status;
        assert_eq!(failed.phase, Some(JobPhase::Failed));
        let message = failed.message.unwrap();
        assert!(
            message.contains("exited with 1")
                && message.contains("Permission denied")
                && !message.contains("flotilla-node-agent"),
            "{message}"
        );
    }

    #[test]
    fn a_prefixed_backup_dumps_the_keys_with_flotilla_and_reports_their_count() {
        let (b, c, cfg, now) = (backup(Some("/clusters/a")), running_cluster(), config(), Time(t(2000)));
        let mut m1 = machine("m1", "etcd");
        let plan = backup_plan(&b, Some(&c), Some(&m1), &cfg, now.clone());
        let run = plan.run.clone().unwrap();
        assert_eq!((run.name.as_str(), run.binary.as_str()), ("etcd-backup-ns-nightly", "/opt/bin/flotilla"));
        assert_eq!(run.restart_policy, RestartPolicy::Never);
        let urls: Vec<String> =
            c.status.as_ref().unwrap().members.iter().map(|m| m.client_url.clone().unwrap()).collect();
        assert_eq!(
            run.args,
            [
                "etcd-keys",
                "dump",
                "--endpoints",
                &urls.join(","),
                "--cacert",
                "pki/etcd-ca.crt",
                "--cert",
                "pki/client.crt",
                "--key",
                "pki/client.key",
                "--prefix",
                "/clusters/a",
                "--out",
                "/backups/e-nightly.keys.json"
            ]
        );
        let keys: Vec<&str> = run.files.iter().map(|f| f.secret_ref.as_ref().unwrap().key.as_str()).collect();
        assert_eq!(keys, ["etcd-ca.crt", "client.crt", "client.key"]);
        assert_eq!(plan.status.path.as_deref(), Some("/backups/e-nightly.keys.json"));
        let mut b = b;
        b.status = Some(plan.status.clone());
        m1.spec.components.push(run.clone());
        let summary = crate::etcd_keys::DumpSummary {
            dumped: "/backups/e-nightly.keys.json".into(),
            prefix: "/clusters/a".into(),
            revision: 77,
            keys: 12,
            bytes: 4096,
        };
        let exited = |code: i32, tail: Vec<String>| MachineStatus {
            components: vec![flotilla_api::machine::ComponentStatus {
                name: run.name.clone(),
                state: flotilla_api::machine::ComponentState::Stopped,
                last_exit_code: Some(code),
                last_exit_time: Some(Time(t(2005))),
                log_tail: tail,
                ..Default::default()
            }],
            ..Default::default()
        };
        m1.status = Some(exited(0, vec![serde_json::to_string(&summary).unwrap()]));
        let done = backup_plan(&b, Some(&c), Some(&m1), &cfg, now.clone());
        let s = &done.status;
        assert_eq!((s.phase, s.size_bytes, s.revision), (Some(JobPhase::Succeeded), Some(4096), Some(77)));
        assert_eq!(s.message.as_deref(), Some("12 keys under /clusters/a at revision 77"));
        assert!(done.release);
        m1.status = Some(exited(1, vec!["error: https://127.0.0.1:1: connection refused".into()]));
        let failed = backup_plan(&b, Some(&c), Some(&m1), &cfg, now).status;
        let message = failed.message.unwrap();
        assert_eq!(failed.phase, Some(JobPhase::Failed));
        assert!(message.contains("the key dump on m1 exited with 1: error: https"), "{message}");
    }

    #[test]
    fn a_backup_waits_for_its_machine_and_a_healthy_cluster() {
        let (cfg, now) = (config(), Time(t(2000)));
        let m1 = machine("m1", "etcd");
        let wait = |b: &EtcdBackup, c: Option<&EtcdCluster>, m: Option<&Machine>| {
            let plan = backup_plan(b, c, m, &cfg, now.clone());
            assert!(plan.run.is_none());
            (plan.status.phase, plan.status.message.unwrap_or_default())
        };
        let (phase, message) = wait(&backup(None), Some(&running_cluster()), None);
        assert_eq!(phase, Some(JobPhase::Pending));
        assert!(message.contains("Machine m1"), "{message}");
        let (phase, message) = wait(&backup(None), None, Some(&m1));
        assert_eq!((phase, message.contains("EtcdCluster e")), (Some(JobPhase::Pending), true));
        let (phase, message) = wait(&backup(None), Some(&cluster(3)), Some(&m1));
        assert_eq!((phase, message.contains("no healthy member")), (Some(JobPhase::Pending), true));
        let (phase, message) = wait(&backup(Some("/a")), Some(&cluster(3)), Some(&m1));
        assert_eq!(
            (phase, message.contains("no healthy member to take a key dump")),
            (Some(JobPhase::Pending), true)
        );
        assert_eq!(backup_component_name("ns", "b.1"), "etcd-backup-ns-b-1");
        let long = backup_component_name("a-rather-long-namespace-name", "and-an-even-longer-backup-name");
        assert!(long.len() <= 63 && long.starts_with("etcd-backup-a-rather"), "{long}");
    }

    #[test]
    fn founders_written_only_in_part_are_removed_and_founded_again() {
        let c = cluster(3);
        let mut machines = three();
        let mut plan = check(&c, &machines, &Observation::default());
        // Only e-0's write went through: it can never find a quorum.
        plan.write.truncate(1);
        apply(&plan, &mut machines);
        let stuck = check(&c, &machines, &Observation::default());
        assert_eq!(placed(&stuck.drop), [("e-0", "m1")]);
        assert_eq!(stuck.progress.as_ref().unwrap().reason, "FoundingInterrupted");
        apply(&stuck, &mut machines);
        assert_eq!(check(&c, &machines, &Observation::default()).write.len(), 3);
        // Two of three written: they form a quorum; nothing is undone.
        let mut plan = check(&c, &machines, &Observation::default());
        plan.write.truncate(2);
        apply(&plan, &mut machines);
        let waiting = check(&c, &machines, &Observation::default());
        assert!(waiting.drop.is_empty());
        assert_eq!(waiting.progress.unwrap().reason, "NoQuorum");
    }
}
