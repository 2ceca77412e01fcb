//! Typed constructors of what creating a hosted cluster writes: the
//! HostedCluster and the EtcdCluster it owns, from the few choices a user
//! makes (`flotilla cluster create`'s flags, `flotilla up`'s members).
//! Shared by the CLI, the local fleet and tests, so that they all send the
//! same objects.

use std::collections::BTreeMap;

use crate::kok::{
    Addon, ControlPlaneSpec, EtcdCluster, EtcdClusterSpec, HostedCluster, HostedClusterSpec, HostedEtcd,
    NodesSpec, Runtime, SharedEtcd,
};

/// The add-ons a new cluster gets unless it asks for none.
pub const DEFAULT_ADDONS: &[&str] = &["coredns"];

/// What a new hosted cluster is asked to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedClusterRequest {
    pub namespace: String,
    pub name: String,
    /// Kubernetes version of the control plane and the nodes.
    pub version: String,
    /// Members of its own EtcdCluster, and their etcd version.
    pub etcd_members: i32,
    pub etcd_version: String,
    /// Where the control plane (and its own etcd) runs.
    pub runtime: Runtime,
    /// Instances of each control-plane component.
    pub replicas: i32,
    /// Worker nodes; 0 for none.
    pub nodes: i32,
    /// The [`DEFAULT_ADDONS`], or none.
    pub addons: bool,
    /// Machine pool of the control plane, and of the nodes.
    pub machine_pool: Option<String>,
    pub node_pool: Option<String>,
}

/// The name of cluster `cluster`'s own EtcdCluster.
pub fn own_etcd_name(cluster: &str) -> String {
    format!("{cluster}-etcd")
}

impl HostedClusterRequest {
    /// The cluster's own EtcdCluster, beside the control plane (on the
    /// Machines, or in the meta cluster), labelled with `owner_label` (the
    /// operator's ownership label and its value for this cluster) so that
    /// the operator deletes it with the cluster and leaves any other alone.
    pub fn etcd_cluster(&self, owner_label: (&str, String)) -> EtcdCluster {
        let mut etcd = EtcdCluster::new(
            &own_etcd_name(&self.name),
            EtcdClusterSpec {
                members: self.etcd_members,
                version: self.etcd_version.clone(),
                runtime: self.runtime,
                ..Default::default()
            },
        );
        etcd.metadata.namespace = Some(self.namespace.clone());
        etcd.metadata.labels = Some(BTreeMap::from([(owner_label.0.to_string(), owner_label.1)]));
        etcd
    }

    /// The HostedCluster, storing its data in its own EtcdCluster
    /// ([`Self::etcd_cluster`]).
    pub fn hosted_cluster(&self) -> HostedCluster {
        self.hosted_cluster_on(HostedEtcd { cluster_ref: Some(own_etcd_name(&self.name)), shared: None })
    }

    /// The HostedCluster, storing its data under a prefix of its own in an
    /// EtcdCluster shared with other clusters (its etcd fields unused).
    pub fn hosted_cluster_sharing(&self, shared: SharedEtcd) -> HostedCluster {
        self.hosted_cluster_on(HostedEtcd { cluster_ref: None, shared: Some(shared) })
    }

    fn hosted_cluster_on(&self, etcd: HostedEtcd) -> HostedCluster {
        let addons = if self.addons {
            DEFAULT_ADDONS.iter().map(|name| Addon { name: name.to_string(), version: None }).collect()
        } else {
            Vec::new()
        };
        let mut hc = HostedCluster::new(
            &self.name,
            HostedClusterSpec {
                version: self.version.clone(),
                etcd,
                control_plane: ControlPlaneSpec {
                    replicas: self.replicas,
                    runtime: self.runtime,
                    machine_pool: self.machine_pool.clone(),
                    ..Default::default()
                },
                network: Default::default(),
                addons,
                nodes: (self.nodes > 0)
                    .then_some(NodesSpec { count: self.nodes, machine_pool: self.node_pool.clone() }),
            },
        );
        hc.metadata.namespace = Some(self.namespace.clone());
        hc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> HostedClusterRequest {
        HostedClusterRequest {
            namespace: "team".into(),
            name: "c1".into(),
            version: "1.36.2".into(),
            etcd_members: 3,
            etcd_version: "3.7.4".into(),
            runtime: Runtime::Process,
            replicas: 1,
            nodes: 2,
            addons: true,
            machine_pool: None,
            node_pool: None,
        }
    }

    fn owner() -> (&'static str, String) {
        ("example.io/owner", "team.c1".into())
    }

    #[test]
    fn a_cluster_and_the_etcd_it_owns_refer_to_each_other() {
        let etcd = request().etcd_cluster(owner());
        assert_eq!(etcd.metadata.name.as_deref(), Some("c1-etcd"));
        assert_eq!(etcd.metadata.namespace.as_deref(), Some("team"));
        assert_eq!((etcd.spec.members, etcd.spec.version.as_str()), (3, "3.7.4"));
        assert_eq!(
            etcd.metadata.labels.as_ref().and_then(|l| l.get("example.io/owner")).map(String::as_str),
            Some("team.c1")
        );

        let hc = request().hosted_cluster();
        assert_eq!(
            (hc.metadata.name.as_deref(), hc.metadata.namespace.as_deref()),
            (Some("c1"), Some("team"))
        );
        assert_eq!(hc.spec.version, "1.36.2");
        assert_eq!(hc.spec.etcd.resolve(), Some(("c1-etcd", "/registry")));
        assert_eq!(hc.spec.control_plane.replicas, 1);
        assert_eq!(hc.spec.control_plane.runtime, Runtime::Process);
        assert_eq!(hc.spec.nodes.as_ref().map(|n| n.count), Some(2));
        assert_eq!(hc.spec.addons.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["coredns"]);
        // What is sent is what the CRD's schema accepts (no unknown fields).
        let sent = serde_json::to_value(&hc.spec).unwrap();
        serde_json::from_value::<HostedClusterSpec>(sent).unwrap();
    }

    #[test]
    fn each_choice_changes_the_objects() {
        let req = HostedClusterRequest {
            addons: false,
            nodes: 0,
            replicas: 3,
            runtime: Runtime::Kubernetes,
            etcd_members: 1,
            ..request()
        };
        let hc = req.hosted_cluster();
        assert!(hc.spec.addons.is_empty());
        assert_eq!(hc.spec.nodes, None, "no nodes asked for: no node pool");
        assert_eq!(hc.spec.control_plane.replicas, 3);
        assert_eq!(hc.spec.control_plane.runtime, Runtime::Kubernetes);
        let pooled = HostedClusterRequest {
            machine_pool: Some("cp".into()),
            node_pool: Some("workers".into()),
            ..request()
        }
        .hosted_cluster();
        assert_eq!(pooled.spec.control_plane.machine_pool.as_deref(), Some("cp"));
        assert_eq!(pooled.spec.nodes.unwrap().machine_pool.as_deref(), Some("workers"));
        let etcd = req.etcd_cluster(owner());
        assert_eq!(etcd.spec.members, 1);
        assert_eq!(etcd.spec.runtime, Runtime::Kubernetes, "etcd runs where the control plane does");
    }

    #[test]
    fn a_cluster_on_a_shared_etcd_has_a_prefix_of_its_own() {
        let hc = request().hosted_cluster_sharing(SharedEtcd {
            cluster_ref: "fleet-etcd".into(),
            prefix: "/clusters/c1".into(),
        });
        assert_eq!(hc.spec.etcd.resolve(), Some(("fleet-etcd", "/clusters/c1")));
        assert_eq!(hc.spec.etcd.cluster_ref, None);
    }
}
