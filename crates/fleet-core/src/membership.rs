//! Fleet membership decisions: identities, CSR approval, availability,
//! taints and the inventory summary. Pure functions of what the caller read.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_api::cluster::{
    conditions, taints, ApiEnablement, NodeSummary, ResourceSummary, Taint, TaintEffect,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use flotilla_core::quantity;

/// Every agent's certificate carries this organization (its group).
pub const AGENT_GROUP: &str = "flotilla:clusters";
/// Bootstrap tokens made by `flotilla token create` add this group, so only
/// they (not, say, kubeadm's node tokens) may ask to join the fleet.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:flotilla";
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
const AGENT_USER_PREFIX: &str = "flotilla:cluster:";
/// Name of the heartbeat Lease in the cluster's hub namespace.
pub const LEASE_NAME: &str = "cluster-heartbeat";
pub const DEFAULT_LEASE_SECONDS: i32 = 10;
/// Label on heartbeat Leases (the hub watches only those).
pub const HEARTBEAT_LABEL: &str = "cluster.flotilla.io/heartbeat";

/// The heartbeat Lease, renewed at `now`, as a server-side apply body.
pub fn heartbeat_lease(
    holder: &str,
    lease_seconds: i32,
    now: k8s_openapi::jiff::Timestamp,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "labels": {HEARTBEAT_LABEL: "true"}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": lease_seconds,
            "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now)}
    })
}

/// The Kubernetes user name of cluster `name`'s agent.
pub fn agent_user(name: &str) -> String {
    format!("{AGENT_USER_PREFIX}{name}")
}

/// The cluster an agent user name belongs to.
pub fn cluster_of_agent_user(user: &str) -> Option<&str> {
    user.strip_prefix(AGENT_USER_PREFIX).filter(|n| validate_cluster_name(n).is_ok())
}

/// A cluster name must be a DNS label that still is one inside its
/// namespace name `flotilla-cluster-<name>`.
pub fn validate_cluster_name(name: &str) -> Result<(), String> {
    const MAX: usize = 63 - "flotilla-cluster-".len();
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() || name.len() > MAX || !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "invalid cluster name {name:?}: use 1-{MAX} lower-case letters, digits or '-', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// What the hub knows about a CertificateSigningRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrFacts {
    /// Who created it (set by the API server).
    pub requester: String,
    pub requester_groups: Vec<String>,
    pub signer: String,
    pub usages: Vec<String>,
    /// From the PKCS#10 request itself.
    pub subject_common_name: String,
    pub subject_organizations: Vec<String>,
    pub public_key_sha256: String,
}

/// What the hub knows about the object a CSR names (a ManagedCluster, a
/// Machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderFacts {
    pub accepted: bool,
    /// Public key hash of the agent that holds the name, if any yet.
    pub agent_key: Option<String>,
    pub being_deleted: bool,
}

/// What the hub knows about the ManagedCluster the CSR names.
pub type ClusterFacts = HolderFacts;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrDecision {
    /// Not a Flotilla agent CSR: leave it to others.
    Ignore,
    /// Wait (e.g. for `flotilla cluster accept`); the message says why.
    Pending(String),
    Approve,
    Deny(String),
}

/// The names and words that differ between the identities Flotilla issues
/// client certificates to (cluster agents, node agents); the rules for
/// their certificate requests are the same.
pub struct IdentityKind {
    /// What the name is the name of: "cluster", "machine".
    pub noun: &'static str,
    /// Who holds the certificate: "agent", "node agent".
    pub holder: &'static str,
    /// The certificate's one organization.
    pub group: &'static str,
    /// The name in a certificate's common name, if it is one of this kind.
    pub name_of_user: fn(&str) -> Option<&str>,
    /// Why a request for a name being deleted is denied.
    pub being_deleted: fn(&str) -> String,
    /// Why a bootstrap request for a name held by another key is denied.
    pub name_taken: fn(&str) -> String,
    /// Why a request waits for acceptance.
    pub not_accepted: fn(&str) -> String,
}

/// Cluster agents (`flotilla:cluster:<name>`).
pub const CLUSTER_AGENT: IdentityKind = IdentityKind {
    noun: "cluster",
    holder: "agent",
    group: AGENT_GROUP,
    name_of_user: cluster_of_agent_user,
    being_deleted: |name| format!("cluster {name} is being removed from the fleet"),
    name_taken: |name| {
        format!(
            "the name {name} is already held by another agent identity; choose another name, \
             or run `flotilla unjoin {name}` first if that cluster is gone"
        )
    },
    not_accepted: |name| {
        format!("cluster {name} is waiting to be accepted: run `flotilla cluster accept {name}` on the hub")
    },
};

/// Whether to approve an agent's client certificate request.
///
/// A request made with a bootstrap token may claim a name only if the name
/// is free or already held by the same key; a request made by the cluster's
/// own certificate (a renewal) may use a new key.
pub fn decide_csr(csr: &CsrFacts, cluster: Option<&ClusterFacts>) -> CsrDecision {
    decide_identity_csr(&CLUSTER_AGENT, csr, cluster)
}

/// The certificate request decision for any kind of Flotilla identity.
pub fn decide_identity_csr(kind: &IdentityKind, csr: &CsrFacts, holder: Option<&HolderFacts>) -> CsrDecision {
    let Some(name) = (kind.name_of_user)(&csr.subject_common_name) else {
        return CsrDecision::Ignore;
    };
    if csr.signer != CLIENT_SIGNER {
        return CsrDecision::Ignore;
    }
    if csr.subject_organizations != [kind.group] {
        return CsrDecision::Deny(format!(
            "the request's organizations must be exactly [{}], not {:?}",
            kind.group, csr.subject_organizations
        ));
    }
    let allowed = ["digital signature", "key encipherment", "client auth"];
    if !csr.usages.iter().any(|u| u == "client auth")
        || csr.usages.iter().any(|u| !allowed.contains(&u.as_str()))
    {
        return CsrDecision::Deny(format!("usages must be client auth only, not {:?}", csr.usages));
    }
    let renewal = csr.requester == csr.subject_common_name;
    let bootstrap = csr.requester_groups.iter().any(|g| g == BOOTSTRAP_GROUP);
    let noun = kind.noun;
    if !renewal && !bootstrap {
        return CsrDecision::Deny(format!(
            "{} may not request a certificate for {noun} {name}: only a Flotilla bootstrap token \
             or the {noun}'s own {} may",
            csr.requester, kind.holder
        ));
    }
    let Some(holder) = holder else {
        return CsrDecision::Pending(format!("{noun} {name} is not registered yet"));
    };
    if holder.being_deleted {
        return CsrDecision::Deny((kind.being_deleted)(name));
    }
    if !renewal && holder.agent_key.as_ref().is_some_and(|held| held != &csr.public_key_sha256) {
        return CsrDecision::Deny((kind.name_taken)(name));
    }
    if !holder.accepted {
        return CsrDecision::Pending((kind.not_accepted)(name));
    }
    CsrDecision::Approve
}

/// The Available condition the hub should publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    /// "True", "False" or "Unknown".
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
    /// When to look again even if nothing changes (the lease's expiry).
    pub recheck_after: Option<Duration>,
}

/// What the agent last said about its member's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReport {
    pub healthy: bool,
    pub message: String,
}

/// Availability from the heartbeat's age and the agent's report.
///
/// `since_renewal` is how long ago the Lease was last renewed (`None`: never).
/// The cluster is Unknown once that exceeds the lease duration plus `grace`.
pub fn availability(
    since_renewal: Option<Duration>,
    lease_duration: Duration,
    grace: Duration,
    report: Option<&MemberReport>,
) -> Availability {
    let limit = lease_duration + grace;
    let Some(age) = since_renewal else {
        return Availability {
            status: "Unknown",
            reason: "NoHeartbeat",
            message: "the cluster's agent has not sent a heartbeat yet".into(),
            recheck_after: None,
        };
    };
    if age > limit {
        return Availability {
            status: "Unknown",
            reason: "HeartbeatExpired",
            message: format!(
                "no heartbeat from the cluster's agent for {}s (limit {}s); the agent or its network may be down",
                age.as_secs(),
                limit.as_secs()
            ),
            recheck_after: None,
        };
    }
    let recheck_after = Some(limit - age + Duration::from_millis(100));
    match report {
        Some(r) if !r.healthy => Availability {
            status: "False",
            reason: "MemberUnhealthy",
            message: format!("the agent is alive but its cluster's API is unhealthy: {}", r.message),
            recheck_after,
        },
        Some(_) => Availability {
            status: "True",
            reason: "MemberHealthy",
            message: "heartbeat current and the cluster's API is healthy".into(),
            recheck_after,
        },
        None => Availability {
            status: "Unknown",
            reason: "NoHealthReport",
            message: "heartbeat current but the agent has not reported its cluster's health yet".into(),
            recheck_after,
        },
    }
}

/// The hub-managed taints, and when to look again.
#[derive(Debug, Clone, PartialEq)]
pub struct HubTaints {
    pub taints: Vec<Taint>,
    /// A member reported unhealthy is tainted only after the grace: look
    /// again then.
    pub recheck_after: Option<Duration>,
}

/// The hub-managed taints for an availability status: unreachable for
/// Unknown, not-ready for False, none for True.
///
/// One episode of ill health keeps one clock: a taint that replaces
/// another of the hub's (not-ready turning unreachable, or back) keeps the
/// earliest `timeAdded`, so a toleration's seconds count from the start of
/// the episode, not from the latest change of kind. A member whose agent
/// reports its API unhealthy (False, `unhealthy_since`) is tainted only once
/// that has lasted `grace`, like a late heartbeat: a restart of a few
/// seconds taints nothing. Unknown already includes the grace.
pub fn hub_taints(
    status: &str,
    unhealthy_since: k8s_openapi::jiff::Timestamp,
    existing: &[Taint],
    now: &k8s_openapi::jiff::Timestamp,
    grace: Duration,
) -> HubTaints {
    let key = match status {
        "Unknown" => taints::UNREACHABLE,
        "False" => taints::NOT_READY,
        _ => return HubTaints { taints: Vec::new(), recheck_after: None },
    };
    let episode_start = existing
        .iter()
        .filter(|t| {
            t.effect == TaintEffect::NoExecute && (t.key == taints::UNREACHABLE || t.key == taints::NOT_READY)
        })
        .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
        .min();
    let time_added = match episode_start {
        Some(start) => start,
        None if status == "False" => {
            let lasted = Duration::try_from(now.duration_since(unhealthy_since)).unwrap_or(Duration::ZERO);
            if lasted < grace {
                return HubTaints {
                    taints: Vec::new(),
                    recheck_after: Some(grace - lasted + Duration::from_millis(100)),
                };
            }
            *now
        }
        None => *now,
    };
    let taint = Taint {
        key: key.into(),
        value: None,
        effect: TaintEffect::NoExecute,
        time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(time_added)),
    };
    HubTaints { taints: vec![taint], recheck_after: None }
}

/// Whether a condition list already says `status` for `type_` with the same
/// reason and message (so no write is needed).
pub fn condition_is(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == status && c.reason == reason && c.message == message)
}

pub use conditions::{AVAILABLE, JOINED};

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn add_quantities(into: &mut BTreeMap<&'static str, u128>, list: Option<&BTreeMap<String, Quantity>>) {
    let Some(list) = list else { return };
    for (resource, parse) in [
        ("cpu", quantity::millicores as fn(&str) -> _),
        ("memory", quantity::units),
        ("pods", quantity::units),
    ] {
        if let Some(q) = list.get(resource) {
            *into.entry(resource).or_default() += parse(&q.0).unwrap_or(0);
        }
    }
}

fn to_quantities(sums: &BTreeMap<&'static str, u128>) -> BTreeMap<String, Quantity> {
    sums.iter()
        .map(|(k, v)| {
            let text = match *k {
                "cpu" => quantity::format_millicores(*v),
                "memory" => quantity::format_bytes(*v),
                _ => v.to_string(),
            };
            (k.to_string(), Quantity(text))
        })
        .collect()
}

/// Node counts and capacity of a member: allocatable summed over Ready
/// nodes, allocated summed over the requests of pods bound to those nodes
/// that have not finished (each such pod also counts one `pods`).
pub fn summarize<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> (NodeSummary, ResourceSummary) {
    let nodes: Vec<&Node> = nodes.into_iter().collect();
    let ready: Vec<&Node> = nodes.iter().copied().filter(|n| node_ready(n)).collect();
    let ready_names: std::collections::HashSet<&str> =
        ready.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
    let mut allocatable = BTreeMap::new();
    for node in &ready {
        add_quantities(&mut allocatable, node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
    }
    let mut allocated: BTreeMap<&'static str, u128> =
        [("cpu", 0), ("memory", 0), ("pods", 0)].into_iter().collect();
    for pod in pods {
        let on_ready_node =
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| ready_names.contains(n));
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if !on_ready_node || matches!(phase, Some("Succeeded") | Some("Failed")) {
            continue;
        }
        *allocated.entry("pods").or_default() += 1;
        let Some(spec) = &pod.spec else { continue };
        // Like the scheduler: the larger of the sum of containers and the
        // largest init container, per resource.
        for resource in ["cpu", "memory"] {
            let parse = if resource == "cpu" { quantity::millicores } else { quantity::units };
            let request = |c: &k8s_openapi::api::core::v1::Container| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get(resource))
                    .map(|q| parse(&q.0).unwrap_or(0))
                    .unwrap_or(0)
            };
            let sum: u128 = spec.containers.iter().map(request).sum();
            let init_max = spec.init_containers.iter().flatten().map(request).max().unwrap_or(0);
            *allocated.entry(resource).or_default() += sum.max(init_max);
        }
    }
    let node_summary = NodeSummary {
        total: nodes.len() as i32,
        ready: ready.len() as i32,
        display: format!("{}/{}", ready.len(), nodes.len()),
    };
    (
        node_summary,
        ResourceSummary { allocatable: to_quantities(&allocatable), allocated: to_quantities(&allocated) },
    )
}

/// API enablements sorted by group/version with sorted resources, so that
/// two discoveries of the same API compare equal.
pub fn normalize_enablements(mut list: Vec<ApiEnablement>) -> Vec<ApiEnablement> {
    for e in &mut list {
        e.resources.sort();
        e.resources.dedup();
    }
    list.sort_by(|a, b| a.group_version.cmp(&b.group_version));
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(requester: &str, groups: &[&str], cn: &str) -> CsrFacts {
        CsrFacts {
            requester: requester.into(),
            requester_groups: groups.iter().map(|g| g.to_string()).collect(),
            signer: CLIENT_SIGNER.into(),
            usages: vec!["digital signature".into(), "key encipherment".into(), "client auth".into()],
            subject_common_name: cn.into(),
            subject_organizations: vec![AGENT_GROUP.into()],
            public_key_sha256: "key-a".into(),
        }
    }

    fn cluster(accepted: bool, key: Option<&str>) -> ClusterFacts {
        ClusterFacts { accepted, agent_key: key.map(Into::into), being_deleted: false }
    }

    const BOOT: &[&str] = &["system:bootstrappers", BOOTSTRAP_GROUP, "system:authenticated"];

    #[test]
    fn names() {
        assert_eq!(agent_user("prod-1"), "flotilla:cluster:prod-1");
        assert_eq!(cluster_of_agent_user("flotilla:cluster:prod-1"), Some("prod-1"));
        assert_eq!(cluster_of_agent_user("system:node:x"), None);
        assert!(validate_cluster_name("member-1").is_ok());
        for bad in ["", "Prod", "a_b", "-a", "a-", &"x".repeat(47)] {
            assert!(validate_cluster_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bootstrap_csr_waits_for_acceptance_then_is_approved() {
        let c = csr("system:bootstrap:abcdef", BOOT, "flotilla:cluster:a");
        assert!(matches!(decide_csr(&c, None), CsrDecision::Pending(_)));
        match decide_csr(&c, Some(&cluster(false, None))) {
            CsrDecision::Pending(m) => assert!(m.contains("flotilla cluster accept a"), "{m}"),
            d => panic!("{d:?}"),
        }
        assert_eq!(decide_csr(&c, Some(&cluster(true, None))), CsrDecision::Approve);
        // The same agent (same key) coming back is fine.
        assert_eq!(decide_csr(&c, Some(&cluster(true, Some("key-a")))), CsrDecision::Approve);
    }

    #[test]
    fn a_name_held_by_another_key_is_refused_even_if_accepted() {
        let c = csr("system:bootstrap:abcdef", BOOT, "flotilla:cluster:a");
        match decide_csr(&c, Some(&cluster(true, Some("key-b")))) {
            CsrDecision::Deny(m) => assert!(m.contains("already held"), "{m}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn renewal_by_the_cluster_itself_may_use_a_new_key() {
        let mut c = csr("flotilla:cluster:a", &[AGENT_GROUP], "flotilla:cluster:a");
        c.public_key_sha256 = "key-new".into();
        assert_eq!(decide_csr(&c, Some(&cluster(true, Some("key-a")))), CsrDecision::Approve);
    }

    #[test]
    fn other_identities_and_shapes_are_refused_or_ignored() {
        // Cluster b's agent cannot get a certificate for a.
        let c = csr("flotilla:cluster:b", &[AGENT_GROUP], "flotilla:cluster:a");
        assert!(matches!(decide_csr(&c, Some(&cluster(true, None))), CsrDecision::Deny(_)));
        // A kubeadm-style node token (no Flotilla group) cannot join.
        let c = csr("system:bootstrap:abcdef", &["system:bootstrappers"], "flotilla:cluster:a");
        assert!(matches!(decide_csr(&c, Some(&cluster(true, None))), CsrDecision::Deny(_)));
        // Extra organizations (e.g. system:masters) are refused.
        let mut c = csr("system:bootstrap:abcdef", BOOT, "flotilla:cluster:a");
        c.subject_organizations.push("system:masters".into());
        assert!(matches!(decide_csr(&c, Some(&cluster(true, None))), CsrDecision::Deny(_)));
        // Server auth is refused.
        let mut c = csr("system:bootstrap:abcdef", BOOT, "flotilla:cluster:a");
        c.usages.push("server auth".into());
        assert!(matches!(decide_csr(&c, Some(&cluster(true, None))), CsrDecision::Deny(_)));
        // Someone else's CSR is not ours to decide.
        let c = csr("system:node:n1", &["system:nodes"], "system:node:n1");
        assert_eq!(decide_csr(&c, None), CsrDecision::Ignore);
        let mut c = csr("system:bootstrap:abcdef", BOOT, "flotilla:cluster:a");
        c.signer = "kubernetes.io/kubelet-serving".into();
        assert_eq!(decide_csr(&c, Some(&cluster(true, None))), CsrDecision::Ignore);
    }

    #[test]
    fn availability_follows_heartbeat_and_report() {
        let ten = Duration::from_secs(10);
        let healthy = MemberReport { healthy: true, message: String::new() };
        let sick = MemberReport { healthy: false, message: "readyz: etcd failed".into() };
        let a = availability(Some(Duration::from_secs(3)), ten, ten, Some(&healthy));
        assert_eq!(a.status, "True");
        assert_eq!(a.recheck_after, Some(Duration::from_millis(17_100)));
        let a = availability(Some(Duration::from_secs(3)), ten, ten, Some(&sick));
        assert_eq!(a.status, "False");
        assert!(a.message.contains("etcd failed"));
        let a = availability(Some(Duration::from_secs(21)), ten, ten, Some(&healthy));
        assert_eq!((a.status, a.reason), ("Unknown", "HeartbeatExpired"));
        assert!(a.message.contains("21s"));
        assert_eq!(availability(None, ten, ten, Some(&healthy)).status, "Unknown");
        // Exactly at the limit is still fine: no flapping at the edge.
        assert_eq!(availability(Some(Duration::from_secs(20)), ten, ten, Some(&healthy)).status, "True");
    }

    #[test]
    fn hub_taints_keep_the_first_time_of_an_episode_and_wait_out_the_grace() {
        let t = |s: i64| k8s_openapi::jiff::Timestamp::from_second(s).unwrap();
        let grace = Duration::from_secs(10);
        let taint = |key: &str, at: i64| Taint {
            key: key.into(),
            value: None,
            effect: TaintEffect::NoExecute,
            time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(at))),
        };
        let other =
            Taint { key: "team".into(), value: None, effect: TaintEffect::NoExecute, time_added: None };
        // (name, status, unhealthy since, existing hub taints, now, want taints, want recheck)
        type Case<'a> = (&'a str, &'a str, i64, Vec<Taint>, i64, Vec<Taint>, Option<Duration>);
        let cases: Vec<Case> = vec![
            ("healthy: none", "True", 0, vec![taint(taints::NOT_READY, 5)], 100, vec![], None),
            (
                "unreachable: at once (the grace is in the lease)",
                "Unknown",
                100,
                vec![],
                100,
                vec![taint(taints::UNREACHABLE, 100)],
                None,
            ),
            (
                "unreachable stays put",
                "Unknown",
                100,
                vec![taint(taints::UNREACHABLE, 100)],
                200,
                vec![taint(taints::UNREACHABLE, 100)],
                None,
            ),
            (
                "not-ready waits out the grace",
                "False",
                100,
                vec![],
                104,
                vec![],
                Some(Duration::from_millis(6_100)),
            ),
            (
                "not-ready after the grace",
                "False",
                100,
                vec![],
                110,
                vec![taint(taints::NOT_READY, 110)],
                None,
            ),
            (
                "not-ready to unreachable keeps the clock",
                "Unknown",
                100,
                vec![taint(taints::NOT_READY, 110)],
                130,
                vec![taint(taints::UNREACHABLE, 110)],
                None,
            ),
            (
                "unreachable to not-ready keeps the clock (no second grace)",
                "False",
                130,
                vec![taint(taints::UNREACHABLE, 90)],
                131,
                vec![taint(taints::NOT_READY, 90)],
                None,
            ),
            (
                "other taints are not the hub's",
                "False",
                100,
                vec![other],
                101,
                vec![],
                Some(Duration::from_millis(9_100)),
            ),
        ];
        for (name, status, since, existing, now, want, recheck) in cases {
            let got = hub_taints(status, t(since), &existing, &t(now), grace);
            assert_eq!(got, HubTaints { taints: want, recheck_after: recheck }, "{name}");
        }
    }

    fn node(name: &str, ready: bool, cpu: &str, mem: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn pod(node: &str, phase: &str, cpu: &str, mem: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": node, "containers": [
                {"name": "a", "resources": {"requests": {"cpu": cpu, "memory": mem}}},
                {"name": "b"}],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "3"}}}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn summary_counts_ready_nodes_and_live_pods() {
        let nodes =
            [node("n1", true, "4", "8Gi"), node("n2", true, "2", "4Gi"), node("n3", false, "8", "8Gi")];
        let pods = [
            pod("n1", "Running", "500m", "1Gi"),
            pod("n2", "Pending", "250m", "512Mi"),
            pod("n1", "Succeeded", "1", "1Gi"),
            pod("n3", "Running", "1", "1Gi"),
        ];
        let (nodes_s, res) = summarize(&nodes, &pods);
        assert_eq!((nodes_s.total, nodes_s.ready, nodes_s.display.as_str()), (3, 2, "2/3"));
        assert_eq!(res.allocatable["cpu"].0, "6");
        assert_eq!(res.allocatable["memory"].0, "12Gi");
        assert_eq!(res.allocatable["pods"].0, "220");
        // init container (3 CPU) dominates each pod's 500m/250m.
        assert_eq!(res.allocated["cpu"].0, "6");
        assert_eq!(res.allocated["memory"].0, "1536Mi");
        assert_eq!(res.allocated["pods"].0, "2");
    }
}

/// The parts of a PKCS#10 request the hub decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrSubject {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub public_key_sha256: String,
}

/// Parses a PEM `CERTIFICATE REQUEST` and checks its self-signature (proof
/// that the requester holds the key).
pub fn parse_csr(pem: &[u8]) -> Result<CsrSubject, String> {
    use sha2::Digest as _;
    use x509_parser::prelude::FromDer as _;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM: {e}"))?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("not a certificate request: {e}"))?;
    csr.verify_signature().map_err(|e| format!("bad request signature: {e}"))?;
    let subject = &csr.certification_request_info.subject;
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("the request has no common name")?
        .to_string();
    let organizations =
        subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    let spki = csr.certification_request_info.subject_pki.raw;
    Ok(CsrSubject { common_name, organizations, public_key_sha256: hex::encode(sha2::Sha256::digest(spki)) })
}

/// A PEM certificate request for cluster `name`'s agent, signed by `key_pem`.
pub fn agent_csr(name: &str, key_pem: &str) -> Result<String, String> {
    identity_csr(&CLUSTER_AGENT, &agent_user(name), key_pem)
}

/// A PEM certificate request for `user` of `kind`, signed by `key_pem`.
pub fn identity_csr(kind: &IdentityKind, user: &str, key_pem: &str) -> Result<String, String> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("{} key: {e}", kind.holder))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, kind.group);
    params.distinguished_name.push(rcgen::DnType::CommonName, user);
    let csr = params.serialize_request(&key).map_err(|e| format!("certificate request: {e}"))?;
    csr.pem().map_err(|e| format!("certificate request: {e}"))
}

/// SHA-256 of a PEM private key's public half (what [`parse_csr`] reports).
pub fn public_key_sha256(key_pem: &str) -> Result<String, String> {
    use sha2::Digest as _;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("agent key: {e}"))?;
    Ok(hex::encode(sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(&key))))
}

#[cfg(test)]
mod csr_tests {
    use super::*;

    #[test]
    fn agent_csr_round_trips_through_the_parser() {
        let key = flotilla_core::pki::generate_key_pair().unwrap();
        let pem = agent_csr("member-1", &key.private_pem).unwrap();
        let subject = parse_csr(pem.as_bytes()).unwrap();
        assert_eq!(subject.common_name, "flotilla:cluster:member-1");
        assert_eq!(subject.organizations, vec![AGENT_GROUP.to_string()]);
        assert_eq!(subject.public_key_sha256, public_key_sha256(&key.private_pem).unwrap());
        assert!(parse_csr(b"garbage").is_err());
    }
}

/// Name of the CertificateSigningRequest an agent renews its certificate with
/// (fixed, so RBAC can name it).
pub fn renewal_csr_name(name: &str) -> String {
    format!("flotilla-cluster-{name}-renewal")
}

/// The objects that give cluster `name`'s agent access to exactly its own
/// corner of the hub: its namespace (where it may work freely with leases,
/// events, config maps and, later, works), read access to its own
/// ManagedCluster, write access to that object's status, and the right to
/// renew its own certificate. `owner` is the ownerReferences list for
/// cluster-scoped objects, so deleting the ManagedCluster revokes it all.
pub fn agent_access_objects(name: &str, owner: serde_json::Value) -> Vec<serde_json::Value> {
    use serde_json::json;
    let namespace = format!("flotilla-cluster-{name}");
    let user = agent_user(name);
    let role_name = format!("flotilla:cluster:{name}");
    let subject = json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]);
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "ownerReferences": owner,
                "labels": {"cluster.flotilla.io/cluster": name}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "flotilla-agent", "namespace": namespace},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["events", "configmaps"], "verbs": ["*"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["*"]},
            {"apiGroups": ["work.flotilla.io"], "resources": ["works", "works/status"], "verbs": ["*"]}
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "flotilla-agent", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "flotilla-agent"},
            "subjects": subject}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role_name, "ownerReferences": owner},
        "rules": [
            {"apiGroups": ["cluster.flotilla.io"], "resources": ["managedclusters"],
                "resourceNames": [name], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["cluster.flotilla.io"], "resources": ["managedclusters/status"],
                "resourceNames": [name], "verbs": ["get", "update", "patch"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                "verbs": ["create"]},
            // The tunnel through which the hub reaches a pull member
            // (`cluster_proxy`).
            {"apiGroups": [crate::cluster_proxy::GROUP], "resources": ["clusters/tunnel"],
                "resourceNames": [name], "verbs": ["get"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                "resourceNames": [renewal_csr_name(name)], "verbs": ["get", "delete"]}
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role_name, "ownerReferences": owner},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
            "subjects": subject}),
    ]
}
