//! The EtcdCluster operator's decisions (process runtime): which machine
//! hosts which member, the certificates in the cluster's Secret, the Machine
//! component each member runs as, and the status read back from the members.

use std::collections::BTreeMap;
use std::path::PathBuf;

use flotilla_api::kok::{conditions, EtcdCluster, EtcdClusterPhase, EtcdClusterStatus, EtcdMemberStatus};
use flotilla_api::machine::{ComponentFile, ComponentSpec, HealthCheck, KeyRef, Machine, TcpCheck};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Deserialize;
use time::OffsetDateTime;

use super::pki::{keys, leaves};
use super::render::{etcd_args, EtcdMemberLayout, EtcdPeer, InitialClusterState};
use crate::pki::{CertAndKey, CertificateAuthority, LeafSpec, PkiError, Usage, DEFAULT_CA_VALIDITY};

/// Leaf name of the client certificate the operator (and users of the
/// cluster) connect with.
pub const CLIENT_LEAF: &str = "client";
/// Where a member's certificates are written, relative to its component's
/// working directory.
const PKI_DIR: &str = "pki";

#[derive(Debug, thiserror::Error)]
pub enum EtcdPlanError {
    #[error("certificates: {0}")]
    Pki(#[from] PkiError),
    #[error("machine {0} has no address")]
    NoAddress(String),
    #[error("etcd API answer: {0}")]
    Parse(String),
}

/// Operator-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOperatorConfig {
    /// Directory holding the `etcd` binary on the machines.
    pub bin_dir: PathBuf,
    /// Data directories default to `<data_root>/<namespace>-<name>/<member>`.
    pub data_root: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    /// Member `i` uses `client_port + i * port_stride` (likewise for peers):
    /// 0 when every machine has its own address, non-zero when machines share
    /// one (a laptop, tests).
    pub port_stride: u16,
}

impl Default for EtcdOperatorConfig {
    fn default() -> Self {
        Self {
            bin_dir: "/usr/local/bin".into(),
            data_root: "/var/lib/flotilla/etcd".into(),
            client_port: 2379,
            peer_port: 2380,
            port_stride: 0,
        }
    }
}

/// One member: where it runs and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPlan {
    pub index: u16,
    pub name: String,
    pub machine: String,
    pub address: String,
    pub client_url: String,
    pub peer_url: String,
}

impl MemberPlan {
    fn peer(&self) -> EtcdPeer {
        EtcdPeer {
            name: self.name.clone(),
            peer_url: self.peer_url.clone(),
            client_url: self.client_url.clone(),
        }
    }
}

/// Name of the member with index `index`.
pub fn member_name(cluster: &str, index: u16) -> String {
    format!("{cluster}-{index}")
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

fn labels_match(selector: &BTreeMap<String, String>, machine: &Machine) -> bool {
    let labels = machine.metadata.labels.as_ref();
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Members already on `machines`: the `--name` of the cluster's component,
/// by machine. Reading the Machines (not the status) keeps placement stable
/// even if the status was never written.
fn existing_members<'a>(component: &str, machines: &[&'a Machine]) -> BTreeMap<String, &'a Machine> {
    let mut out = BTreeMap::new();
    for &m in machines {
        let name = m.metadata.name.as_deref().unwrap_or_default();
        let Some(c) = m.spec.components.iter().find(|c| c.name == component) else { continue };
        if let Some(member) = c.args.iter().find_map(|a| a.strip_prefix("--name=")) {
            if !name.is_empty() {
                out.insert(member.to_string(), m);
            }
        }
    }
    out
}

/// Places `spec.members` members on distinct machines matching the
/// selector. Members keep the machine they run on, even one that no longer
/// matches (moving a running member needs the remove/add dance of member
/// replacement, not a fresh start); new ones go to unused matching machines
/// in name order. Fewer members than wanted are returned when there are not
/// enough machines.
pub fn place(
    cluster: &EtcdCluster,
    machines: &[Machine],
    config: &EtcdOperatorConfig,
) -> Result<Vec<MemberPlan>, EtcdPlanError> {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let mut candidates: Vec<&Machine> =
        machines.iter().filter(|m| labels_match(&cluster.spec.machine_selector, m)).collect();
    candidates.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let all: Vec<&Machine> = machines.iter().collect();
    let existing = existing_members(&component_name(namespace, name), &all);
    let mut used: Vec<String> = Vec::new();
    let mut chosen: Vec<(u16, &Machine)> = Vec::new();
    let wanted = u16::try_from(cluster.spec.members.max(0)).unwrap_or(0);
    for index in 0..wanted {
        if let Some(m) = existing.get(&member_name(name, index)) {
            used.push(m.metadata.name.clone().unwrap_or_default());
            chosen.push((index, m));
        }
    }
    for index in 0..wanted {
        if chosen.iter().any(|(i, _)| *i == index) {
            continue;
        }
        let free = candidates.iter().find(|c| {
            let n = c.metadata.name.as_deref().unwrap_or_default();
            !used.iter().any(|u| u == n) && !existing.values().any(|e| e.metadata.name.as_deref() == Some(n))
        });
        let Some(m) = free else { break };
        used.push(m.metadata.name.clone().unwrap_or_default());
        chosen.push((index, m));
    }
    chosen.sort_by_key(|(i, _)| *i);
    chosen
        .into_iter()
        .map(|(index, m)| {
            let machine = m.metadata.name.clone().unwrap_or_default();
            let address = m.spec.address.clone().ok_or_else(|| EtcdPlanError::NoAddress(machine.clone()))?;
            let host = if address.contains(':') { format!("[{address}]") } else { address.clone() };
            let offset = index.saturating_mul(config.port_stride);
            Ok(MemberPlan {
                index,
                name: member_name(name, index),
                machine,
                client_url: format!("https://{host}:{}", config.client_port.saturating_add(offset)),
                peer_url: format!("https://{host}:{}", config.peer_port.saturating_add(offset)),
                address,
            })
        })
        .collect()
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
            if missing(&data, &leaf) {
                put(&mut data, &leaf, &ca.issue_at(&spec, now)?);
            }
        }
    }
    Ok((data != *existing).then_some(data))
}

/// The component `member` runs as on its machine.
pub fn member_component(
    cluster: &EtcdCluster,
    members: &[MemberPlan],
    member: &MemberPlan,
    config: &EtcdOperatorConfig,
) -> ComponentSpec {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let data_dir = match cluster.spec.storage.as_ref().and_then(|s| s.data_dir.as_ref()) {
        Some(dir) => PathBuf::from(dir),
        None => config.data_root.join(format!("{namespace}-{name}")),
    }
    // Per member, so members sharing a host (and a data root) never collide.
    .join(&member.name);
    let layout = EtcdMemberLayout {
        data_dir,
        pki_dir: PKI_DIR.into(),
        listen_client_urls: Vec::new(),
        listen_peer_urls: Vec::new(),
        quota_backend_bytes: None,
        cluster_token: format!("{namespace}-{name}"),
    };
    let peers: Vec<EtcdPeer> = members.iter().map(MemberPlan::peer).collect();
    let args = etcd_args(&member.peer(), &peers, &layout, InitialClusterState::New);
    let secret = secret_name(name);
    let file = |key: String| ComponentFile {
        path: format!("{PKI_DIR}/{key}"),
        secret_ref: Some(KeyRef { namespace: namespace.to_string(), name: secret.clone(), key }),
        mode: Some(0o600),
        ..Default::default()
    };
    let server = leaves::etcd_server(&member.name);
    let peer = leaves::etcd_peer(&member.name);
    let files = vec![
        file(keys::ETCD_CA_CRT.to_string()),
        file(keys::crt(&server)),
        file(keys::key(&server)),
        file(keys::crt(&peer)),
        file(keys::key(&peer)),
    ];
    let client_port = config.client_port.saturating_add(member.index.saturating_mul(config.port_stride));
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

/// What the operator saw: the member list (from any member that answered)
/// and each member's own status, by member name (absent: it did not answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub listed: Option<Vec<ListedMember>>,
    pub states: BTreeMap<String, MemberState>,
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The cluster's status from the plan and what the members answered.
pub fn status(
    cluster: &EtcdCluster,
    members: &[MemberPlan],
    seen: &Observation,
    now: Time,
) -> EtcdClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let listed = seen.listed.as_deref().unwrap_or_default();
    let mut out: Vec<EtcdMemberStatus> = members
        .iter()
        .map(|m| {
            let listing = listed.iter().find(|l| l.name == m.name);
            let state = seen.states.get(&m.name);
            EtcdMemberStatus {
                name: m.name.clone(),
                machine: Some(m.machine.clone()),
                peer_url: Some(m.peer_url.clone()),
                client_url: Some(m.client_url.clone()),
                id: listing.map(|l| l.id).or(state.map(|s| s.id)).map(|id| format!("{id:x}")),
                is_learner: listing.is_some_and(|l| l.is_learner),
                healthy: state.is_some_and(|s| s.leader != 0),
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
            .find(|l| l.id == id)
            .map(|l| l.name.clone())
            .or_else(|| seen.states.iter().find(|(_, s)| s.id == id).map(|(n, _)| n.clone()))
    });
    let ready = i32::try_from(out.iter().filter(|m| m.healthy && !m.is_learner).count()).unwrap_or(i32::MAX);
    let version = out
        .iter()
        .filter_map(|m| m.version.clone())
        .filter(|v| !v.is_empty())
        .min_by(|a, b| version_key(a).cmp(&version_key(b)));
    let available = ready == cluster.spec.members && leader.is_some();
    let phase = if cluster.metadata.deletion_timestamp.is_some() {
        EtcdClusterPhase::Deleting
    } else if available {
        EtcdClusterPhase::Running
    } else if matches!(previous.phase, Some(EtcdClusterPhase::Running | EtcdClusterPhase::Degraded)) {
        EtcdClusterPhase::Degraded
    } else {
        EtcdClusterPhase::Provisioning
    };
    let (reason, message) = if available {
        (
            "AllMembersHealthy".to_string(),
            format!("{ready} healthy members, leader {}", leader.clone().unwrap_or_default()),
        )
    } else if (members.len() as i64) < i64::from(cluster.spec.members) {
        (
            "NotEnoughMachines".to_string(),
            format!(
                "{} of {} members placed: too few matching machines",
                members.len(),
                cluster.spec.members
            ),
        )
    } else {
        ("MembersNotReady".to_string(), format!("{ready}/{} members healthy", cluster.spec.members))
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
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::kok::EtcdClusterSpec;
    use flotilla_api::machine::MachineSpec;

    fn machine(name: &str, pool: &str) -> Machine {
        let mut m =
            Machine::new(name, MachineSpec { address: Some("127.0.0.1".into()), ..Default::default() });
        m.metadata.labels = Some(BTreeMap::from([("pool".to_string(), pool.to_string())]));
        m
    }

    fn cluster(members: i32) -> EtcdCluster {
        let mut c = EtcdCluster::new(
            "e",
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

    fn config() -> EtcdOperatorConfig {
        EtcdOperatorConfig {
            bin_dir: "/opt/bin".into(),
            data_root: "/data".into(),
            client_port: 3000,
            peer_port: 4000,
            port_stride: 10,
        }
    }

    fn names(plan: &[MemberPlan]) -> Vec<(&str, &str)> {
        plan.iter().map(|m| (m.name.as_str(), m.machine.as_str())).collect()
    }

    #[test]
    fn members_go_to_distinct_selected_machines_in_name_order() {
        let machines = vec![
            machine("m3", "etcd"),
            machine("w1", "workers"),
            machine("m1", "etcd"),
            machine("m2", "etcd"),
        ];
        let plan = place(&cluster(3), &machines, &config()).unwrap();
        assert_eq!(names(&plan), [("e-0", "m1"), ("e-1", "m2"), ("e-2", "m3")]);
        assert_eq!(plan[1].client_url, "https://127.0.0.1:3010");
        assert_eq!(plan[2].peer_url, "https://127.0.0.1:4020");
        assert_eq!(
            initial_cluster(&plan),
            "e-0=https://127.0.0.1:4000,e-1=https://127.0.0.1:4010,e-2=https://127.0.0.1:4020"
        );
    }

    #[test]
    fn too_few_machines_place_fewer_members_and_no_address_is_an_error() {
        let plan = place(&cluster(3), &[machine("m1", "etcd")], &config()).unwrap();
        assert_eq!(names(&plan), [("e-0", "m1")]);
        let mut bare = machine("m1", "etcd");
        bare.spec.address = None;
        assert!(
            matches!(place(&cluster(1), &[bare], &config()), Err(EtcdPlanError::NoAddress(m)) if m == "m1")
        );
    }

    #[test]
    fn members_keep_their_machines() {
        let c = cluster(3);
        let cfg = config();
        let mut machines = vec![machine("m1", "etcd"), machine("m2", "etcd"), machine("m3", "etcd")];
        let plan = place(&c, &machines, &cfg).unwrap();
        // The members run where they were placed; a new machine sorting first
        // changes nothing.
        for (m, p) in machines.iter_mut().zip([&plan[0], &plan[1], &plan[2]]) {
            m.spec.components.push(member_component(&c, &plan, p, &cfg));
        }
        machines.insert(0, machine("a0", "etcd"));
        assert_eq!(names(&place(&c, &machines, &cfg).unwrap()), names(&plan));
        // m3 no longer matches the selector: its running member stays.
        machines[3].metadata.labels = None;
        assert_eq!(names(&place(&c, &machines, &cfg).unwrap()), names(&plan));
        // e-1's machine is gone: e-1 goes to the free machine, the others stay.
        machines.retain(|m| m.metadata.name.as_deref() != Some("m2"));
        assert_eq!(
            names(&place(&c, &machines, &cfg).unwrap()),
            [("e-0", "m1"), ("e-1", "a0"), ("e-2", "m3")]
        );
    }

    #[test]
    fn component_runs_etcd_with_tls_files_from_the_secret() {
        let c = cluster(3);
        let machines = vec![machine("m1", "etcd"), machine("m2", "etcd"), machine("m3", "etcd")];
        let plan = place(&c, &machines, &config()).unwrap();
        let comp = member_component(&c, &plan, &plan[1], &config());
        assert_eq!(comp.name, "etcd-ns-e");
        assert_eq!(comp.binary, "/opt/bin/etcd");
        let arg = |flag: &str| {
            comp.args.iter().find_map(|a| a.strip_prefix(&format!("{flag}="))).unwrap().to_string()
        };
        assert_eq!(arg("--name"), "e-1");
        assert_eq!(arg("--data-dir"), "/data/ns-e/e-1");
        assert_eq!(arg("--initial-cluster"), initial_cluster(&plan));
        assert_eq!(arg("--initial-cluster-state"), "new");
        assert_eq!(arg("--advertise-client-urls"), "https://127.0.0.1:3010");
        assert_eq!(arg("--cert-file"), "pki/etcd-member-e-1-server.crt");
        assert_eq!(arg("--trusted-ca-file"), "pki/etcd-ca.crt");
        let paths: Vec<&str> = comp.files.iter().map(|f| f.path.as_str()).collect();
        assert!(paths.contains(&"pki/etcd-member-e-1-peer.key"), "{paths:?}");
        assert!(
            !paths.iter().any(|p| p.contains("ca.key") || p.contains("e-0")),
            "least privilege: {paths:?}"
        );
        let r = comp.files[0].secret_ref.as_ref().unwrap();
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("ns", "e-etcd-pki"));
        assert_eq!(comp.health.unwrap().tcp.unwrap().port, 3010);
        assert_eq!(field_manager("ns", "e"), "flotilla-etcd-ns-e");
    }

    #[test]
    fn certificates_are_made_once_and_only_missing_ones_added() {
        let machines = vec![machine("m1", "etcd"), machine("m2", "etcd"), machine("m3", "etcd")];
        let plan = place(&cluster(3), &machines, &config()).unwrap();
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
        let facts = crate::pki::inspect_certificate(
            &String::from_utf8(second["etcd-member-e-2-server.crt"].clone()).unwrap(),
        )
        .unwrap();
        assert!(facts.covers("127.0.0.1", now, time::Duration::ZERO));
    }

    #[test]
    fn gateway_answers_parse() {
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
    }

    fn observed(plan: &[MemberPlan], answering: &[usize]) -> Observation {
        let listed: Vec<ListedMember> = plan
            .iter()
            .map(|m| ListedMember {
                id: u64::from(m.index) + 100,
                name: m.name.clone(),
                peer_urls: vec![m.peer_url.clone()],
                client_urls: vec![m.client_url.clone()],
                is_learner: false,
            })
            .collect();
        let states = answering
            .iter()
            .map(|&i| {
                let v = if i == 2 { "3.4.12" } else { "3.4.13" };
                (
                    plan[i].name.clone(),
                    MemberState { id: 100 + i as u64, leader: 101, db_size: 4096, version: v.into() },
                )
            })
            .collect();
        Observation { listed: Some(listed), states }
    }

    #[test]
    fn status_reports_members_leader_version_and_phase() {
        let mut c = cluster(3);
        let machines = vec![machine("m1", "etcd"), machine("m2", "etcd"), machine("m3", "etcd")];
        let plan = place(&c, &machines, &config()).unwrap();
        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1000).unwrap());
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2000).unwrap());

        let s = status(&c, &plan, &Observation::default(), t0.clone());
        assert_eq!(
            (s.phase, s.ready_members, s.leader.clone()),
            (Some(EtcdClusterPhase::Provisioning), 0, None)
        );
        assert_eq!(s.conditions[0].status, "False");

        let s = status(&c, &plan, &observed(&plan, &[0, 1, 2]), t0.clone());
        assert_eq!(s.phase, Some(EtcdClusterPhase::Running));
        assert_eq!((s.ready_members, s.leader.as_deref()), (3, Some("e-1")));
        assert_eq!(s.version.as_deref(), Some("3.4.12"), "the lowest version");
        assert_eq!(s.members[0].id.as_deref(), Some("64"));
        assert_eq!(s.members[0].machine.as_deref(), Some("m1"));
        assert_eq!(s.members[0].db_size_bytes, Some(4096));
        assert_eq!(s.client_urls.len(), 3);
        assert_eq!(s.client_secret.as_deref(), Some("e-etcd-pki"));
        assert_eq!((s.conditions[0].status.as_str(), s.observed_generation), ("True", Some(2)));
        c.status = Some(s);

        let s = status(&c, &plan, &observed(&plan, &[0, 1, 2]), t1.clone());
        assert_eq!(s.conditions[0].last_transition_time, t0, "no transition, no new time");

        let s = status(&c, &plan, &observed(&plan, &[0, 1]), t1.clone());
        assert_eq!((s.phase, s.ready_members), (Some(EtcdClusterPhase::Degraded), 2));
        assert!(!s.members[2].healthy && s.members[2].id.is_some());
        assert_eq!(s.conditions[0].last_transition_time, t1);

        let few = status(&cluster(3), &plan[..1], &Observation::default(), t0);
        assert_eq!(few.conditions[0].reason, "NotEnoughMachines");
    }
}
