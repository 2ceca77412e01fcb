//! Flotilla's resource types (kube-derive), and their CRDs.

pub mod cluster;

use kube::CustomResourceExt;

pub use cluster::{ManagedCluster, ManagedClusterSpec, ManagedClusterStatus};

type Crd = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Every CustomResourceDefinition Flotilla installs on a hub.
pub fn crds() -> Vec<Crd> {
    vec![without_nullable(ManagedCluster::crd())]
}

/// Removes `nullable: true` from a CRD's schema. Kubernetes before 1.21
/// publishes a nullable field without its type, so server-side apply then
/// treats everything under it as atomic: two managers' list items (e.g. the
/// agent's and the hub's conditions) would overwrite each other. We never
/// send explicit nulls (absent fields are simply omitted), so the schema
/// loses nothing.
fn without_nullable(crd: Crd) -> Crd {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("nullable");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else { return crd };
    strip(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
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
    fn published_schemas_have_no_nullable_fields() {
        for crd in crds() {
            let text = serde_json::to_string(&crd).unwrap();
            assert!(!text.contains("nullable"), "{}", crd.metadata.name.unwrap_or_default());
        }
    }

    #[test]
    fn unknown_spec_fields_are_not_silently_accepted() {
        let err = serde_json::from_value::<ManagedClusterSpec>(serde_json::json!({"syncMod": "Push"}));
        assert!(err.is_err());
    }
}
