//! Flotilla's resource types (kube-derive), and their CRDs.

pub mod cluster;
pub mod kok;
pub mod machine;
pub mod policy;
pub mod work;

use kube::CustomResourceExt;

pub use cluster::{ManagedCluster, ManagedClusterSpec, ManagedClusterStatus};
pub use machine::{Machine, MachineSpec, MachineStatus};
pub use policy::{ClusterOverridePolicy, ClusterPropagationPolicy, OverridePolicy, PropagationPolicy};
pub use work::{ClusterResourceBinding, ResourceBinding, Work};

/// Schema of a field holding any JSON value.
pub(crate) fn any_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Schema of a field holding any JSON object (a Kubernetes manifest).
pub(crate) fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

type Crd = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Every CustomResourceDefinition Flotilla installs on a hub.
pub fn crds() -> Vec<Crd> {
    [
        ManagedCluster::crd(),
        PropagationPolicy::crd(),
        ClusterPropagationPolicy::crd(),
        OverridePolicy::crd(),
        ClusterOverridePolicy::crd(),
        ResourceBinding::crd(),
        ClusterResourceBinding::crd(),
        Work::crd(),
        kok::EtcdCluster::crd(),
        kok::EtcdBackup::crd(),
        kok::EtcdRestore::crd(),
        kok::HostedCluster::crd(),
        Machine::crd(),
    ]
    .into_iter()
    .map(without_nullable)
    .map(|crd| if crd.spec.group == policy::GROUP { keeping_unknown_fields(crd) } else { crd })
    .collect()
}

/// Marks every object with declared properties in a CRD's schema with
/// `x-kubernetes-preserve-unknown-fields`. Kubernetes 1.20 prunes unknown
/// fields while decoding a request, before admission, so without this the
/// hub's policy webhook could never name a misspelt field: it would just
/// vanish. With it, the webhook (`flotilla_apps_core::validation`, which still
/// checks these objects against their declared properties) rejects them.
/// Only where no webhook is registered could unknown fields be stored, and
/// the policy types then ignore them as pruning would have.
fn keeping_unknown_fields(crd: Crd) -> Crd {
    fn mark(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if map.get("properties").is_some_and(serde_json::Value::is_object) {
                    map.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
                }
                map.values_mut().for_each(mark);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(mark),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else { return crd };
    if let Some(versions) = value.pointer_mut("/spec/versions").and_then(|v| v.as_array_mut()) {
        for version in versions {
            if let Some(schema) = version.pointer_mut("/schema/openAPIV3Schema") {
                mark(schema);
            }
        }
    }
    serde_json::from_value(value).unwrap_or(crd)
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
                // Option<enum> lists `null` among the values; same reason.
                if let Some(serde_json::Value::Array(values)) = map.get_mut("enum") {
                    values.retain(|v| !v.is_null());
                }
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
    fn a_karmada_propagation_policy_parses_after_changing_its_api_version() {
        let yaml = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/karmada/propagation-policy.yaml"
        ));
        let pp: PropagationPolicy = serde_saphyr::from_str(yaml).unwrap();
        let p = &pp.spec.spec;
        assert_eq!(p.priority, Some(10));
        let weights = &p.placement.replica_scheduling.as_ref().unwrap().weight_preference.as_ref().unwrap();
        assert_eq!(weights.static_weight_list[1].weight, 2);
        assert_eq!(p.placement.cluster_tolerations[0].toleration_seconds, Some(30));
    }

    #[test]
    fn a_karmada_override_policy_parses_after_changing_its_api_version() {
        let yaml =
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/karmada/override-policy.yaml"));
        let op: OverridePolicy = serde_saphyr::from_str(yaml).unwrap();
        let rule = &op.spec.spec.override_rules[0];
        assert_eq!(rule.overriders.plaintext[0].value, Some(serde_json::json!(3)));
        assert_eq!(rule.overriders.image_overrider[0].component, policy::ImageComponent::Registry);
    }

    #[test]
    fn policy_schemas_keep_unknown_fields_for_the_webhook_to_reject() {
        for crd in crds() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let placement = schema
                .pointer("/openAPIV3Schema/properties/spec/properties/placement/properties/clusterAffinity");
            let keeps = |v: Option<&serde_json::Value>| {
                v.and_then(|v| v.get("x-kubernetes-preserve-unknown-fields")) == Some(&true.into())
            };
            let root_keeps = keeps(schema.get("openAPIV3Schema"));
            assert_eq!(root_keeps, crd.spec.group == policy::GROUP, "{}", crd.spec.names.kind);
            if crd.spec.names.kind.ends_with("PropagationPolicy") {
                assert!(keeps(placement), "{}", crd.spec.names.kind);
            }
        }
    }

    #[test]
    fn enums_in_published_schemas_list_no_null() {
        for crd in crds() {
            let text = serde_json::to_string(&crd).unwrap();
            assert!(!text.contains(",null]"), "{}", crd.metadata.name.unwrap_or_default());
        }
    }

    #[test]
    fn unknown_spec_fields_are_not_silently_accepted() {
        let err = serde_json::from_value::<ManagedClusterSpec>(serde_json::json!({"syncMod": "Push"}));
        assert!(err.is_err());
    }
}
