//! What the upgrade plan (`crate::upgrade::plan`) is told about a hosted
//! cluster's instances under the process runtime: control-plane instances
//! from their Machine components, worker kubelets from their Machine
//! components and their Nodes inside the cluster.
//!
//! A kubelet counts as healthy on a version only when its process (started
//! since the step began) answers its health check *and* its Node is Ready
//! and reports that version in `status.nodeInfo.kubeletVersion`: the
//! apiserver's view, which is what the skew rules are about.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::hosted::{counts_as_healthy, ComponentObservation, NodePlan, Part};
use crate::upgrade::{InstanceObservation, KubeVersion, KUBELET};

/// What a Node says about its kubelet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeReport {
    /// Its `Ready` condition is True.
    pub ready: bool,
    /// `status.nodeInfo.kubeletVersion` (`v1.37.2`).
    pub kubelet_version: Option<String>,
}

/// The Nodes by name.
pub fn node_reports(nodes: &[Node]) -> BTreeMap<String, NodeReport> {
    nodes
        .iter()
        .filter_map(|node| {
            let name = node.metadata.name.clone()?;
            let status = node.status.as_ref();
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let kubelet_version =
                status.and_then(|s| s.node_info.as_ref()).map(|i| i.kubelet_version.clone());
            Some((name, NodeReport { ready, kubelet_version }))
        })
        .collect()
}

/// Whether a Node shows its kubelet Ready on `version` (`v` or not).
pub fn node_ready_on(report: Option<&NodeReport>, version: &str) -> bool {
    let Some(report) = report.filter(|r| r.ready) else { return false };
    let (Some(reported), Ok(wanted)) = (report.kubelet_version.as_deref(), KubeVersion::parse(version))
    else {
        return false;
    };
    KubeVersion::parse(reported).is_ok_and(|v| v == wanted)
}

/// One observation per instance the Machines run. `nodes` is None when the
/// Nodes could not be listed (no kubelet then counts as healthy);
/// `step_started` and `known_version` are as for [`counts_as_healthy`].
pub fn upgrade_observations(
    seen: &[ComponentObservation],
    node_plans: &[NodePlan],
    nodes: Option<&BTreeMap<String, NodeReport>>,
    step_started: Option<&Time>,
    known_version: Option<&str>,
) -> Vec<InstanceObservation> {
    seen.iter()
        .map(|o| {
            let process_healthy = counts_as_healthy(o, step_started, known_version);
            let (component, healthy) = match o.part {
                Part::Kubelet => {
                    let node = node_plans.iter().find(|n| n.index == o.index);
                    let report = node.and_then(|n| nodes?.get(&n.name));
                    (KUBELET, process_healthy && node_ready_on(report, &o.version))
                }
                part => (part.upstream(), process_healthy),
            };
            InstanceObservation {
                component: component.to_string(),
                index: o.index,
                version: o.version.clone(),
                healthy,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus, NodeSystemInfo};
    use k8s_openapi::jiff::Timestamp;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn node(name: &str, ready: &str, version: Option<&str>) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        node.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            }]),
            node_info: version.map(|v| NodeSystemInfo { kubelet_version: v.into(), ..Default::default() }),
            ..Default::default()
        });
        node
    }

    fn component(part: Part, index: i32, version: &str, healthy: bool, started: i64) -> ComponentObservation {
        ComponentObservation {
            part,
            index,
            machine: "m1".into(),
            version: version.into(),
            healthy,
            problem: None,
            started_at: Some(at(started)),
        }
    }

    fn node_plan(index: i32, name: &str) -> NodePlan {
        NodePlan {
            index,
            name: name.into(),
            machine: "m1".into(),
            address: "127.0.0.1".into(),
            kubelet_port: 1,
            read_only_port: 2,
        }
    }

    #[test]
    fn nodes_are_read_by_name_with_readiness_and_kubelet_version() {
        let reports = node_reports(&[
            node("a", "True", Some("v1.37.2")),
            node("b", "False", Some("v1.36.3")),
            node("c", "Unknown", None),
        ]);
        assert_eq!(reports["a"], NodeReport { ready: true, kubelet_version: Some("v1.37.2".into()) });
        assert_eq!(reports["b"], NodeReport { ready: false, kubelet_version: Some("v1.36.3".into()) });
        assert_eq!(reports["c"], NodeReport { ready: false, kubelet_version: None });
    }

    #[test]
    fn a_node_counts_only_when_ready_on_exactly_that_version() {
        let report = |ready: bool, version: Option<&str>| NodeReport {
            ready,
            kubelet_version: version.map(str::to_string),
        };
        for (case, node, version, expected) in [
            ("ready on it, v prefix", Some(report(true, Some("v1.37.2"))), "1.37.2", true),
            ("ready on it, no prefix", Some(report(true, Some("1.37.2"))), "v1.37.2", true),
            ("ready on the old version", Some(report(true, Some("v1.36.3"))), "1.37.2", false),
            ("another patch", Some(report(true, Some("v1.37.1"))), "1.37.2", false),
            ("not ready", Some(report(false, Some("v1.37.2"))), "1.37.2", false),
            ("no version reported", Some(report(true, None)), "1.37.2", false),
            ("unparsable report", Some(report(true, Some("v0.0.0-master+$Format"))), "1.37.2", false),
            ("no node", None, "1.37.2", false),
        ] {
            assert_eq!(node_ready_on(node.as_ref(), version), expected, "{case}");
        }
    }

    #[test]
    fn kubelets_are_healthy_when_process_and_node_agree() {
        let plans = [node_plan(0, "n-0"), node_plan(1, "n-1"), node_plan(2, "n-2")];
        let nodes = node_reports(&[
            node("n-0", "True", Some("v1.37.2")),
            node("n-1", "True", Some("v1.36.3")),
            node("n-2", "True", Some("v1.37.2")),
        ]);
        let seen = [
            component(Part::Apiserver, 0, "1.37.2", true, 100),
            component(Part::Kubelet, 0, "1.37.2", true, 100),
            // The Node still shows the old kubelet.
            component(Part::Kubelet, 1, "1.37.2", true, 100),
            // The process is the one from before the step.
            component(Part::Kubelet, 2, "1.37.2", true, 10),
        ];
        let step = at(50);
        let got = upgrade_observations(&seen, &plans, Some(&nodes), Some(&step), None);
        let summary: Vec<(&str, i32, bool)> =
            got.iter().map(|o| (o.component.as_str(), o.index, o.healthy)).collect();
        assert_eq!(
            summary,
            [("kube-apiserver", 0, true), ("kubelet", 0, true), ("kubelet", 1, false), ("kubelet", 2, false)]
        );
        assert!(got.iter().all(|o| o.version == "1.37.2"));

        // Nodes that could not be listed: no kubelet counts, the control plane does.
        let blind = upgrade_observations(&seen, &plans, None, Some(&step), None);
        assert_eq!(blind.iter().filter(|o| o.healthy).count(), 1, "{blind:?}");
    }
}
