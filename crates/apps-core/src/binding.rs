//! Names, hashes and failover bookkeeping for bindings and works: the
//! pure part of the hub's binder.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_api::cluster::{Taint, TaintEffect};
use flotilla_api::policy::{ClusterAffinity, Placement, ReplicaSchedulingType};
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

/// Name of the binding of a template: `<name>-<kind>`, lower case (as in
/// Karmada), shortened with a hash when too long. The binding lives in the
/// template's namespace (ClusterResourceBinding for cluster-scoped ones).
pub fn binding_name(api_version: &str, kind: &str, name: &str) -> String {
    let plain = format!("{name}-{}", kind.to_lowercase());
    fit(plain, &[group_of(api_version), kind, name])
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

fn fit(plain: String, identity: &[&str]) -> String {
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
    let chosen_names: BTreeSet<&str> = chosen.iter().map(|c| c.name.as_str()).collect();
    let all_new_healthy = chosen.iter().all(|c| health.get(&c.name) == Some(&Health::Healthy));
    let mut out: Vec<GracefulEvictionTask> = Vec::new();
    for task in tasks {
        if chosen_names.contains(task.from_cluster.as_str()) || all_new_healthy {
            continue;
        }
        let age = now.duration_since(task.creation_timestamp.0);
        if age.as_secs() >= GRACEFUL_EVICTION_TIMEOUT.as_secs() as i64 {
            continue;
        }
        out.push(task.clone());
    }
    for gone in previous.iter().filter(|p| !chosen_names.contains(p.name.as_str())) {
        if all_new_healthy || out.iter().any(|t| t.from_cluster == gone.name) {
            continue;
        }
        let tainted =
            taints.get(&gone.name).and_then(|ts| ts.iter().find(|t| t.effect == TaintEffect::NoExecute));
        if let Some(taint) = tainted {
            out.push(GracefulEvictionTask {
                from_cluster: gone.name.clone(),
                replicas: gone.replicas,
                reason: "TaintUntolerated".into(),
                message: format!("cluster has taint {}:NoExecute", taint.key),
                creation_timestamp: Time(now),
            });
        }
    }
    out.sort_by(|a, b| a.from_cluster.cmp(&b.from_cluster));
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
}
