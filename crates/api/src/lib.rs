//! Flotilla's resource types (kube-derive), and their CRDs.

pub mod cluster;

use kube::CustomResourceExt;

pub use cluster::{ManagedCluster, ManagedClusterSpec, ManagedClusterStatus};

/// Every CustomResourceDefinition Flotilla installs on a hub.
pub fn crds(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    vec![ManagedCluster::crd()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_cluster_crd_has_printer_columns_and_status_subresource() {
        let crd = ManagedCluster::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<&str> =
            v.additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
        for want in ["Mode", "Available", "Version", "Nodes", "CPU", "Memory", "Age"] {
            assert!(cols.contains(&want), "{cols:?}");
        }
    }

    #[test]
    fn unknown_spec_fields_are_not_silently_accepted() {
        let err = serde_json::from_value::<ManagedClusterSpec>(serde_json::json!({"syncMod": "Push"}));
        assert!(err.is_err());
    }
}
