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
//! rewritten only to run another etcd release (same flags, same data dir:
//! [`crate::etcd_upgrade`]); a member moves to another machine only by
//! being replaced (a new member, with a new name, a fresh data dir and
//! `--initial-cluster-state=existing`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_api::kok::EtcdCluster;
use flotilla_api::machine::{ComponentFile, ComponentSpec, HealthCheck, KeyRef, Machine, TcpCheck};
use k8s_openapi::jiff::Timestamp;
use time::OffsetDateTime;

use crate::etcd_gateway::{ListedMember, MemberState};
use crate::pki::{keys, leaves};
use crate::ports;
use crate::render::{etcd_args, EtcdMemberLayout, EtcdPeer, InitialClusterState};
use flotilla_core::pki::{CertAndKey, CertificateAuthority, LeafSpec, Usage, DEFAULT_CA_VALIDITY};

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
pub(crate) const PKI_DIR: &str = "pki";
/// Where a member keeps its data by default, relative to its component's
/// working directory: the node agent deletes that directory when the
/// component is removed, so a removed member's data goes with it.
const DATA_DIR: &str = "data";

pub use crate::etcd_error::EtcdPlanError;

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
fn new_member(
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

/// What the operator saw: the member list (from a member that answered
/// and knows a leader) and each member's own status, by member name
/// (absent: it did not answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub listed: Option<Vec<ListedMember>>,
    pub states: BTreeMap<String, MemberState>,
}

impl Observation {
    pub(crate) fn healthy(&self, member: &str) -> bool {
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

/// Reasons of a plan's progress, which an EtcdCluster's `Available` (and
/// through it a HostedCluster's `EtcdReady`) carries.
pub mod reasons {
    /// Fewer usable Machines than members: a Machine must be added (or
    /// come back), or `spec.members` lowered.
    pub const NOT_ENOUGH_MACHINES: &str = "NotEnoughMachines";
    /// `spec.members` below the voting members: not supported.
    pub const SCALE_DOWN_UNSUPPORTED: &str = "ScaleDownUnsupported";
    /// No Machine runs a member any more: only a restore brings the data back.
    pub const MEMBERS_LOST: &str = "MembersLost";
    /// A dead member cannot be removed without losing quorum.
    pub const QUORUM_AT_RISK: &str = "QuorumAtRisk";
    /// The Machine holding the snapshot to restore cannot host a member.
    pub const RESTORE_MACHINE_UNAVAILABLE: &str = "RestoreMachineUnavailable";
}

/// Whether a plan's progress waits on a person (or a Machine that is not
/// there) rather than on the operator's next step.
pub fn waits_on_people(reason: &str) -> bool {
    [
        reasons::NOT_ENOUGH_MACHINES,
        reasons::SCALE_DOWN_UNSUPPORTED,
        reasons::MEMBERS_LOST,
        reasons::QUORUM_AT_RISK,
        reasons::RESTORE_MACHINE_UNAVAILABLE,
    ]
    .contains(&reason)
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
                reasons::MEMBERS_LOST,
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
                reasons::QUORUM_AT_RISK,
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
            reasons::QUORUM_AT_RISK,
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
            reasons::SCALE_DOWN_UNSUPPORTED,
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
            progress(reasons::NOT_ENOUGH_MACHINES, not_enough(voters, wanted, &free, &refused, facts.config));
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
                reasons::RESTORE_MACHINE_UNAVAILABLE,
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
        // The machines that got a member are not short of ports.
        let unused: Vec<&Machine> = free
            .iter()
            .copied()
            .filter(|m| !members.iter().any(|p| Some(p.machine.as_str()) == m.metadata.name.as_deref()))
            .collect();
        progress(
            reasons::NOT_ENOUGH_MACHINES,
            not_enough(members.len(), wanted, &unused, &refused, facts.config),
        )
    } else {
        progress("Bootstrapping", format!("starting {wanted} founding members"))
    };
    plan.members = members;
    plan
}

#[cfg(test)]
#[path = "etcd_tests.rs"]
pub(crate) mod tests;
