//! Names, hashes and failover bookkeeping for bindings and works: the
//! pure part of the hub's binder.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_api::cluster::{Taint, TaintEffect};
use flotilla_api::policy::{ClusterAffinity, Placement, ReplicaSchedulingType};
use flotilla_api::policy_failover::PurgeMode;
use flotilla_api::work::{GracefulEvictionTask, Health, TargetCluster};

use crate::scheduler::{schedule, ClusterSnapshot, SchedulingRequest};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

/// Longest name a custom resource may have (a DNS subdomain).
const MAX_NAME: usize = 253;

fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// Group of an `apiVersion` (`""` for the core group).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// Stable identity of a template (16 hex chars), independent of the API
/// version it is read through; used as a label value on its works.
pub fn template_key(api_version: &str, kind: &str, namespace: &str, name: &str) -> String {
    short_hash(&[group_of(api_version), kind, namespace, name])
}

/// Name of the binding of a template: `<name>-<kind>`, kind in lower case
/// (as in Karmada), shortened with a hash when too long. A template name
/// that is valid for its kind but not in a custom resource's name (RBAC
/// names like `system:controller:x`, capitals) is mapped as Karmada maps
/// it (`:` to `.`, lower case, anything else outside a DNS subdomain to
/// `-`) and a hash of the template's identity is appended, since the
/// mapping alone could make two templates' names equal. Names valid before
/// keep their binding's name. The binding lives in the template's namespace
/// (ClusterResourceBinding for cluster-scoped ones).
pub fn binding_name(api_version: &str, kind: &str, name: &str) -> String {
    // The identity hashed as before, so long valid names keep theirs too.
    let identity = [group_of(api_version), kind, name];
    let lower_kind = kind.to_lowercase();
    let plain = format!("{name}-{lower_kind}");
    if is_dns_subdomain(&plain, usize::MAX) {
        return fit(plain, &identity);
    }
    let hash = short_hash(&identity);
    let suffix = format!("-{lower_kind}-{hash}");
    let mut mapped = subdomain_of(name);
    let room = MAX_NAME.saturating_sub(suffix.len());
    if mapped.len() > room {
        mapped.truncate(room);
        mapped = mapped.trim_end_matches(['-', '.']).to_string();
    }
    format!("{mapped}{suffix}")
}

/// Whether `name` is a DNS subdomain (RFC 1123) of at most `max` bytes:
/// dot-separated labels of lower-case letters, digits and `-`, each
/// beginning and ending with a letter or digit.
pub fn is_dns_subdomain(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.split('.').all(|label| {
            let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && alnum(bytes[0])
                && alnum(bytes[bytes.len() - 1])
                && bytes.iter().all(|&b| alnum(b) || b == b'-')
        })
}

/// `name` mapped into a DNS subdomain's characters: `:` to `.`, capitals to
/// lower case, anything else outside `[a-z0-9.-]` to `-`; labels trimmed of
/// `-`, empty labels dropped. Never empty.
fn subdomain_of(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| match c {
            ':' => '.',
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let labels: Vec<&str> =
        mapped.split('.').map(|l| l.trim_matches('-')).filter(|l| !l.is_empty()).collect();
    if labels.is_empty() {
        "x".to_string()
    } else {
        labels.join(".")
    }
}

/// A value fit for a label (at most 63 characters): `value` itself when it
/// fits, else cut with a hash of the whole value appended.
pub fn label_value(value: &str) -> String {
    const MAX_LABEL: usize = 63;
    if value.len() <= MAX_LABEL {
        return value.to_string();
    }
    let hash = short_hash(&[value]);
    let mut cut = MAX_LABEL - hash.len() - 1;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", value[..cut].trim_end_matches(['-', '.', '_']))
}

/// Name of a template's work in a member's namespace: the binding's
/// namespace and name joined by a dot (dots cannot clash with names, which
/// may contain them, only because the namespace part has none).
pub fn work_name(binding_namespace: &str, binding_name: &str) -> String {
    let plain = if binding_namespace.is_empty() {
        binding_name.to_string()
    } else {
        format!("{binding_namespace}.{binding_name}")
    };
    fit(plain, &[binding_namespace, binding_name])
}

/// `plain` when short enough, else cut to fit with a hash of `identity`.
pub fn fit(plain: String, identity: &[&str]) -> String {
    if plain.len() <= MAX_NAME {
        return plain;
    }
    let hash = short_hash(identity);
    let mut cut = MAX_NAME - hash.len() - 1;
    while !plain.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", plain[..cut].trim_end_matches(['-', '.']))
}

/// Hash of a work's spec as serialized, to skip rewriting unchanged works.
pub fn spec_hash(spec: &serde_json::Value) -> String {
    short_hash(&[&spec.to_string()])
}

/// Whether a binding that divides replicas keeps the clusters it has rather
/// than a fresh result: yes while its placement and replica count are
/// unchanged and every cluster it uses still passes every filter. This is
/// what stops replicas flapping back to a member that returns after a
/// failover, or moving when an unrelated cluster joins. Duplicated
/// placements always take the fresh result: a new or returning cluster
/// simply gets its own copy, nothing moves. When kept, says when to check
/// again (a toleration with `tolerationSeconds` running out).
pub fn keep_previous(
    request: &SchedulingRequest,
    previous_placement: &Placement,
    previous_replicas: i32,
    clusters: &[ClusterSnapshot],
) -> Option<Option<Duration>> {
    let divided =
        request.placement.replica_scheduling.as_ref().is_some_and(|rs| {
            rs.replica_scheduling_type.unwrap_or_default() == ReplicaSchedulingType::Divided
        });
    let over_cap =
        request.previous.iter().any(|t| request.caps.get(&t.name).is_some_and(|&cap| t.replicas > cap));
    if !divided
        || over_cap
        || request.previous.is_empty()
        || request.replicas != previous_replicas
        || request.placement != previous_placement
    {
        return None;
    }
    // The same filters, restricted to the clusters in use, with every
    // cluster taking a copy: does each still pass?
    let names: Vec<String> = request.previous.iter().map(|t| t.name.clone()).collect();
    let mut affinity = request.placement.cluster_affinity.clone().unwrap_or_default();
    affinity.cluster_names = if affinity.cluster_names.is_empty() {
        names.clone()
    } else {
        names.iter().filter(|n| affinity.cluster_names.contains(n)).cloned().collect()
    };
    if affinity.cluster_names.is_empty() {
        return None;
    }
    let probe = Placement {
        cluster_affinity: Some(ClusterAffinity { ..affinity }),
        cluster_tolerations: request.placement.cluster_tolerations.clone(),
        spread_constraints: Vec::new(),
        replica_scheduling: None,
        ..Placement::default()
    };
    let probe_request = SchedulingRequest { placement: &probe, ..*request };
    match schedule(&probe_request, clusters) {
        Ok(s) if names.iter().all(|n| s.clusters.iter().any(|c| &c.name == n)) => Some(s.requeue_after),
        _ => None,
    }
}

/// How long a cluster being evicted keeps its copy at most, when the new
/// copies never become healthy (Karmada's default as well).
pub const GRACEFUL_EVICTION_TIMEOUT: Duration = Duration::from_secs(600);

/// Failover bookkeeping: given the clusters chosen before and now, the
/// existing eviction tasks, and each cluster's taints, which tasks remain.
///
/// A cluster that left the schedule because of a NoExecute taint gets a
/// task: its work stays (the old copy keeps serving) until every newly
/// chosen cluster is healthy, or the timeout passes. Clusters that left for
/// other reasons (a policy change) get none and are removed at once. A
/// task whose cluster is chosen again is dropped (the copy is reused).
pub fn plan_evictions(
    previous: &[TargetCluster],
    chosen: &[TargetCluster],
    tasks: &[GracefulEvictionTask],
    taints: &BTreeMap<String, Vec<Taint>>,
    health: &BTreeMap<String, Health>,
    now: Timestamp,
) -> Vec<GracefulEvictionTask> {
    plan_evictions_with(previous, chosen, tasks, taints, health, now, &ClusterEviction::default()).tasks
}

/// How a cluster failover's new tasks are made: the policy's
/// `failover.cluster.purgeMode` (absent: gracefully) and, per cluster, the
/// state its copy preserves (`statePreservation`, read by the caller).
#[derive(Debug, Clone, Default)]
pub struct ClusterEviction {
    pub purge_mode: Option<PurgeMode>,
    pub preserved: BTreeMap<String, BTreeMap<String, String>>,
}

/// The tasks after this pass, and those started in it (a direct purge's
/// too, which keep no copy and so are not among `tasks`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evictions {
    pub tasks: Vec<GracefulEvictionTask>,
    pub started: Vec<GracefulEvictionTask>,
}

/// `plan_evictions` with the policy's cluster failover behaviour; each
/// task's purge mode decides how long it keeps its copy
/// (`app_failover::task_remains`).
pub fn plan_evictions_with(
    previous: &[TargetCluster],
    chosen: &[TargetCluster],
    tasks: &[GracefulEvictionTask],
    taints: &BTreeMap<String, Vec<Taint>>,
    health: &BTreeMap<String, Health>,
    now: Timestamp,
    eviction: &ClusterEviction,
) -> Evictions {
    let chosen_names: BTreeSet<&str> = chosen.iter().map(|c| c.name.as_str()).collect();
    let all_new_healthy = chosen.iter().all(|c| health.get(&c.name) == Some(&Health::Healthy));
    let mut out = Evictions::default();
    for task in tasks {
        if chosen_names.contains(task.from_cluster.as_str())
            || !crate::app_failover::task_remains(task, all_new_healthy, now)
        {
            continue;
        }
        out.tasks.push(task.clone());
    }
    for gone in previous.iter().filter(|p| !chosen_names.contains(p.name.as_str())) {
        if out.tasks.iter().any(|t| t.from_cluster == gone.name) {
            continue;
        }
        let tainted =
            taints.get(&gone.name).and_then(|ts| ts.iter().find(|t| t.effect == TaintEffect::NoExecute));
        if let Some(taint) = tainted {
            let mode = eviction.purge_mode.unwrap_or(PurgeMode::Gracefully);
            let task = GracefulEvictionTask {
                from_cluster: gone.name.clone(),
                replicas: gone.replicas,
                reason: "TaintUntolerated".into(),
                message: format!("cluster has taint {}:NoExecute", taint.key),
                creation_timestamp: Time(now),
                producer: crate::app_failover::PRODUCER_TAINT_MANAGER.into(),
                purge_mode: eviction.purge_mode,
                grace_period_seconds: None,
                suppress_deletion: None,
                preserved_label_state: eviction.preserved.get(&gone.name).cloned().unwrap_or_default(),
                clusters_before_failover: previous.iter().map(|p| p.name.clone()).collect(),
            };
            if !mode.is_direct() && !all_new_healthy {
                out.tasks.push(task.clone());
            }
            out.started.push(task);
        }
    }
    out.tasks.sort_by(|a, b| a.from_cluster.cmp(&b.from_cluster));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(list: &[(&str, i32)]) -> Vec<TargetCluster> {
        list.iter().map(|(n, r)| TargetCluster { name: n.to_string(), replicas: *r }).collect()
    }

    fn unreachable() -> Vec<Taint> {
        vec![Taint {
            key: "cluster.flotilla.io/unreachable".into(),
            value: None,
            effect: TaintEffect::NoExecute,
            time_added: None,
        }]
    }

    fn cluster(name: &str) -> ClusterSnapshot {
        ClusterSnapshot {
            name: name.into(),
            api_enablements: vec![flotilla_api::cluster::ApiEnablement {
                group_version: "apps/v1".into(),
                resources: vec!["deployments".into()],
            }],
            schedulable: true,
            ..Default::default()
        }
    }

    fn weighted(weights: &[(&str, i64)]) -> Placement {
        use flotilla_api::policy::*;
        Placement {
            replica_scheduling: Some(ReplicaSchedulingStrategy {
                replica_scheduling_type: Some(ReplicaSchedulingType::Divided),
                replica_division_preference: Some(ReplicaDivisionPreference::Weighted),
                weight_preference: Some(ClusterPreferences {
                    static_weight_list: weights
                        .iter()
                        .map(|(n, w)| StaticClusterWeight {
                            target_cluster: ClusterAffinity {
                                cluster_names: vec![n.to_string()],
                                ..Default::default()
                            },
                            weight: *w,
                        })
                        .collect(),
                    dynamic_weight: None,
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_divided_binding_keeps_its_clusters_until_something_that_matters_changes() {
        let placement = weighted(&[("a", 1), ("b", 2), ("c", 2)]);
        let requests = BTreeMap::new();
        let after_failover = targets(&[("b", 5), ("c", 5)]);
        let all = [cluster("a"), cluster("b"), cluster("c")];
        let request = SchedulingRequest {
            placement: &placement,
            replicas: 10,
            requests: &requests,
            node_constraints: &crate::estimator::UNCONSTRAINED,
            resource: Some(("apps/v1", "deployments")),
            previous: &after_failover,
            caps: &BTreeMap::new(),
            now: Timestamp::from_second(1_000_000).unwrap(),
        };
        // "a" is back and healthy: b and c still fit, so nothing moves.
        assert_eq!(keep_previous(&request, &placement, 10, &all), Some(None));
        // A scale changes the picture; so does a new placement.
        assert_eq!(keep_previous(&request, &placement, 8, &all), None);
        assert_eq!(keep_previous(&request, &weighted(&[("a", 1), ("b", 1), ("c", 1)]), 10, &all), None);
        // A cluster in use no longer fits (gone, or tainted): reschedule.
        assert_eq!(keep_previous(&request, &placement, 10, &[cluster("a"), cluster("b")]), None);
        let mut tainted = cluster("c");
        tainted.taints = unreachable();
        assert_eq!(keep_previous(&request, &placement, 10, &[cluster("a"), cluster("b"), tainted]), None);
        // Duplicated never keeps: a returning cluster gets its copy.
        // A cluster asked to keep fewer than it runs (descheduling): reschedule.
        let caps: BTreeMap<String, i32> = [("c".to_string(), 3)].into();
        assert_eq!(keep_previous(&SchedulingRequest { caps: &caps, ..request }, &placement, 10, &all), None);
        let caps: BTreeMap<String, i32> = [("c".to_string(), 5)].into();
        assert_eq!(
            keep_previous(&SchedulingRequest { caps: &caps, ..request }, &placement, 10, &all),
            Some(None)
        );
        let duplicated = Placement::default();
        let request = SchedulingRequest { placement: &duplicated, ..request };
        assert_eq!(keep_previous(&request, &duplicated, 10, &all), None);
    }

    #[test]
    fn names_are_stable_readable_and_bounded() {
        assert_eq!(binding_name("apps/v1", "Deployment", "web"), "web-deployment");
        assert_eq!(work_name("default", "web-deployment"), "default.web-deployment");
        assert_eq!(work_name("", "ns-namespace"), "ns-namespace");
        let long = "x".repeat(300);
        let name = binding_name("apps/v1", "Deployment", &long);
        assert!(name.len() <= 253, "{}", name.len());
        assert_ne!(name, binding_name("apps/v1", "Deployment", &format!("{long}y")));
        assert_eq!(
            template_key("apps/v1", "Deployment", "default", "web"),
            template_key("apps/v1beta1", "Deployment", "default", "web")
        );
        assert_ne!(
            template_key("apps/v1", "Deployment", "default", "web"),
            template_key("apps/v1", "Deployment", "other", "web")
        );
        assert_eq!(group_of("v1"), "");
    }

    #[test]
    fn binding_and_work_names_are_always_valid_and_unique() {
        let long_colons = format!("system:{}", "controller:".repeat(30));
        let at_limit = format!("system:{}", "a".repeat(253 - "system:".len()));
        struct Case {
            name: &'static str,
            kind: &'static str,
            template: String,
            want: Option<&'static str>,
        }
        let cases = [
            Case {
                name: "valid names keep their binding",
                kind: "Deployment",
                template: "web".into(),
                want: Some("web-deployment"),
            },
            Case {
                name: "dots are valid",
                kind: "ClusterRole",
                template: "a.b".into(),
                want: Some("a.b-clusterrole"),
            },
            Case {
                name: "an RBAC name",
                kind: "ClusterRole",
                template: "system:aggregate-to-view".into(),
                want: None,
            },
            Case {
                name: "the same, mapped by hand",
                kind: "ClusterRole",
                template: "system.aggregate-to-view".into(),
                want: Some("system.aggregate-to-view-clusterrole"),
            },
            Case { name: "capitals", kind: "ClusterRole", template: "Admin".into(), want: None },
            Case {
                name: "colons at the ends",
                kind: "ClusterRoleBinding",
                template: ":a::b:".into(),
                want: None,
            },
            Case { name: "nothing valid", kind: "Role", template: "::%%".into(), want: None },
            Case { name: "long, colon-rich", kind: "ClusterRole", template: long_colons.clone(), want: None },
            Case {
                name: "at the name limit",
                kind: "ClusterRoleBinding",
                template: at_limit.clone(),
                want: None,
            },
        ];
        let mut seen = std::collections::BTreeMap::new();
        for case in &cases {
            let name = binding_name("rbac.authorization.k8s.io/v1", case.kind, &case.template);
            assert!(is_dns_subdomain(&name, 253), "{}: {name} ({} bytes)", case.name, name.len());
            if let Some(want) = case.want {
                assert_eq!(name, want, "{}", case.name);
            } else {
                assert!(name.contains(&format!("-{}-", case.kind.to_lowercase())), "{}: {name}", case.name);
            }
            let previous = seen.insert(name.clone(), case.name);
            assert_eq!(previous, None, "{}: {name} is also another template's", case.name);
            for namespace in ["", "kube-system", &"n".repeat(63)] {
                let work = work_name(namespace, &name);
                assert!(is_dns_subdomain(&work, 253), "{}: work {work}", case.name);
            }
            // Stable: the same template always gets the same name.
            assert_eq!(name, binding_name("rbac.authorization.k8s.io/v1", case.kind, &case.template));
        }
        // Readable: Karmada's mapping shows through.
        let rbac = binding_name("rbac.authorization.k8s.io/v1", "ClusterRole", "system:aggregate-to-view");
        assert!(rbac.starts_with("system.aggregate-to-view-clusterrole-"), "{rbac}");
        // Two templates differing only in what the mapping folds stay apart.
        assert_ne!(
            binding_name("v1", "ClusterRole", "system:a"),
            binding_name("v1", "ClusterRole", "system.a"),
        );
        assert_ne!(binding_name("v1", "ClusterRole", "Admin"), binding_name("v1", "ClusterRole", "admin"));
    }

    #[test]
    fn dns_subdomains_and_label_values() {
        for (name, valid) in [
            ("a", true),
            ("a.b-c", true),
            ("a..b", false),
            ("-a", false),
            ("a-", false),
            ("a.-b", false),
            ("A", false),
            ("a:b", false),
            ("", false),
        ] {
            assert_eq!(is_dns_subdomain(name, 253), valid, "{name}");
        }
        assert!(!is_dns_subdomain(&"a".repeat(254), 253));
        assert_eq!(label_value("web-deployment"), "web-deployment");
        let long = format!("{}-deployment", "w".repeat(80));
        let label = label_value(&long);
        assert!(label.len() <= 63, "{label}");
        assert_ne!(label, label_value(&format!("{}-deployment", "w".repeat(81))));
    }

    #[test]
    fn a_tainted_cluster_keeps_its_copy_until_the_new_ones_are_healthy() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let previous = targets(&[("a", 2), ("b", 4), ("c", 4)]);
        let chosen = targets(&[("b", 5), ("c", 5)]);
        let taints: BTreeMap<_, _> = [("a".to_string(), unreachable())].into();
        let mut health: BTreeMap<String, Health> =
            [("b".to_string(), Health::Healthy), ("c".to_string(), Health::Unhealthy)].into();
        let tasks = plan_evictions(&previous, &chosen, &[], &taints, &health, now);
        assert_eq!(tasks.len(), 1);
        assert_eq!((tasks[0].from_cluster.as_str(), tasks[0].replicas), ("a", 2));
        // Still waiting: the task is kept as is (not re-created).
        let later = Timestamp::from_second(1_000_030).unwrap();
        let kept = plan_evictions(&chosen, &chosen, &tasks, &taints, &health, later);
        assert_eq!(kept, tasks);
        // New copies healthy: done.
        health.insert("c".into(), Health::Healthy);
        assert!(plan_evictions(&chosen, &chosen, &tasks, &taints, &health, later).is_empty());
        // Or the timeout passes.
        health.insert("c".into(), Health::Unhealthy);
        let much_later = Timestamp::from_second(1_000_000 + 601).unwrap();
        assert!(plan_evictions(&chosen, &chosen, &tasks, &taints, &health, much_later).is_empty());
    }

    #[test]
    fn clusters_dropped_by_a_policy_change_or_chosen_again_have_no_task() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let previous = targets(&[("a", 2), ("b", 4)]);
        let chosen = targets(&[("b", 6)]);
        let health = BTreeMap::new();
        assert!(plan_evictions(&previous, &chosen, &[], &BTreeMap::new(), &health, now).is_empty());
        let taints: BTreeMap<_, _> = [("a".to_string(), unreachable())].into();
        let tasks = plan_evictions(&previous, &chosen, &[], &taints, &health, now);
        let back = targets(&[("a", 2), ("b", 4)]);
        assert!(plan_evictions(&chosen, &back, &tasks, &taints, &health, now).is_empty());
    }

    #[test]
    fn cluster_failover_tasks_follow_the_policy_s_purge_mode_and_carry_the_state() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let previous = targets(&[("a", 2), ("b", 1)]);
        let chosen = targets(&[("b", 3)]);
        let taints: BTreeMap<_, _> = [("a".to_string(), unreachable())].into();
        let health: BTreeMap<String, Health> = [("b".to_string(), Health::Unhealthy)].into();
        let state: BTreeMap<String, String> = [("replicas".to_string(), "2".to_string())].into();
        // (name, purge mode, want a task kept)
        let cases = [
            ("default: graceful", None, true),
            ("gracefully", Some(PurgeMode::Gracefully), true),
            ("directly: the copy goes at once", Some(PurgeMode::Directly), false),
        ];
        for (name, mode, kept) in cases {
            let eviction =
                ClusterEviction { purge_mode: mode, preserved: [("a".to_string(), state.clone())].into() };
            let got = plan_evictions_with(&previous, &chosen, &[], &taints, &health, now, &eviction);
            assert_eq!(got.tasks.len(), usize::from(kept), "{name}: {got:?}");
            assert_eq!(got.started.len(), 1, "{name}");
            let task = &got.started[0];
            assert_eq!(task.from_cluster, "a", "{name}");
            assert_eq!(task.purge_mode, mode, "{name}");
            assert_eq!(task.preserved_label_state, state, "{name}");
            assert_eq!(task.clusters_before_failover, ["a", "b"], "{name}");
            assert_eq!(task.producer, crate::app_failover::PRODUCER_TAINT_MANAGER, "{name}");
        }
    }
}
