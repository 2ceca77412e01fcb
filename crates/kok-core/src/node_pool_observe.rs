//! What a NodePool reads inside its cluster, as the pool's decisions need
//! it: a Node as a [`NodeView`], which pods a drain evicts, whether a
//! PodDisruptionBudget has its pods back.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::node_pool::{NodeView, CORDONED_AT_ANNOTATION};

/// The budget's controller has seen its spec and counts at least the pods
/// it wants healthy.
pub fn budget_healthy(pdb: &PodDisruptionBudget) -> bool {
    let Some(status) = &pdb.status else { return false };
    status.observed_generation == pdb.metadata.generation
        && status.current_healthy.unwrap_or(0) >= status.desired_healthy.unwrap_or(0)
}

/// A pod a drain evicts: not finished, not a DaemonSet's (it belongs on
/// every node), not a static pod's mirror, not already going.
pub fn evictable(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let daemon = owners.iter().any(|o| o.kind == "DaemonSet");
    let mirror =
        pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    !matches!(phase, Some("Succeeded") | Some("Failed"))
        && !daemon
        && !mirror
        && pod.metadata.deletion_timestamp.is_none()
}

/// The Node as the pool's plan sees it; `pods` are the cluster's pods.
pub fn node_view(node: &Node, pods: &[Pod]) -> NodeView {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let pods_to_evict = pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name))
        .filter(|p| evictable(p))
        .count() as u32;
    NodeView {
        ready: ready.is_some_and(|c| c.status == "True"),
        ready_since: ready.and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0.as_second()),
        kubelet_version: node
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.kubelet_version.trim_start_matches('v').to_string())
            .unwrap_or_default(),
        unschedulable: node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
        cordoned_at: node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CORDONED_AT_ANNOTATION))
            .and_then(|v| v.parse().ok()),
        pods_to_evict,
        not_ready_message: ready.filter(|c| c.status != "True").and_then(|c| c.message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(node: &str, extra: serde_json::Value) -> Pod {
        let mut value = json!({"metadata": {"name": "p"}, "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running"}});
        if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                match (base.get_mut(k), v) {
                    (Some(serde_json::Value::Object(b)), serde_json::Value::Object(e)) => {
                        b.extend(e.clone());
                    }
                    _ => {
                        base.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn evictable_table() {
        let cases = [
            ("a running pod", json!({}), true),
            ("finished", json!({"status": {"phase": "Succeeded"}}), false),
            ("failed", json!({"status": {"phase": "Failed"}}), false),
            (
                "a DaemonSet's",
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                    "name": "d", "uid": "u"}]}}),
                false,
            ),
            (
                "a ReplicaSet's",
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "r", "uid": "u"}]}}),
                true,
            ),
            (
                "a mirror pod",
                json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}}),
                false,
            ),
            ("being deleted", json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}), false),
        ];
        for (name, extra, want) in cases {
            assert_eq!(evictable(&pod("n1", extra)), want, "{name}");
        }
    }

    #[test]
    fn a_node_view_reads_readiness_version_cordon_and_pods() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "annotations": {CORDONED_AT_ANNOTATION: "1700"}},
            "spec": {"unschedulable": true},
            "status": {"nodeInfo": {"kubeletVersion": "v1.37.2", "architecture": "", "bootID": "",
                    "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                    "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": ""},
                "conditions": [{"type": "Ready", "status": "False", "message": "PLEG is not healthy",
                    "lastTransitionTime": "2026-01-01T00:00:10Z"}]},
        }))
        .unwrap();
        let pods = [
            pod("n1", json!({})),
            pod("n1", json!({"status": {"phase": "Succeeded"}})),
            pod("n2", json!({})),
        ];
        let view = node_view(&node, &pods);
        assert_eq!(
            view,
            NodeView {
                ready: false,
                ready_since: Some(1_767_225_610),
                kubelet_version: "1.37.2".into(),
                unschedulable: true,
                cordoned_at: Some(1700),
                pods_to_evict: 1,
                not_ready_message: Some("PLEG is not healthy".into()),
            }
        );
    }

    #[test]
    fn a_budget_is_healthy_once_observed_with_its_pods_back() {
        let budget = |generation: i64, observed: i64, current: i32, desired: i32| -> PodDisruptionBudget {
            serde_json::from_value(json!({"metadata": {"name": "b", "generation": generation},
                "spec": {}, "status": {"observedGeneration": observed, "currentHealthy": current,
                    "desiredHealthy": desired, "disruptionsAllowed": 0, "expectedPods": 2}}))
            .unwrap()
        };
        assert!(budget_healthy(&budget(1, 1, 2, 2)));
        assert!(!budget_healthy(&budget(1, 1, 1, 2)));
        assert!(!budget_healthy(&budget(2, 1, 2, 2)), "not observed yet");
        let no_status: PodDisruptionBudget =
            serde_json::from_value(json!({"metadata": {"name": "b"}})).unwrap();
        assert!(!budget_healthy(&no_status));
    }
}
