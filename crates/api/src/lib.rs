//! Flotilla's resource types (kube-derive), and their CRDs.

pub mod autoscaling;
pub mod claim;
pub mod cluster;
pub mod cron_hpa;
pub mod interpreter;
pub mod kok;
pub mod kok_request;
pub mod machine;
pub mod misplaced;
pub mod node_pool;
pub mod policy;
pub mod policy_failover;
pub mod rebalancer;
pub mod rollout;
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
        node_pool::NodePool::crd(),
        rollout::RolloutStrategy::crd(),
        rollout::Rollout::crd(),
        cron_hpa::CronFederatedHPA::crd(),
        interpreter::with_name_rule(interpreter::WorkloadInterpreter::crd()),
        autoscaling::FederatedHPA::crd(),
        rebalancer::WorkloadRebalancer::crd(),
    ]
    .into_iter()
    .map(without_nullable)
    .map(|crd| if crd.spec.group == policy::GROUP { refusing_misplaced_fields(crd) } else { crd })
    .collect()
}

/// Declares `misplaced::MISPLACED_FIELDS`, refused with where they belong.
fn refusing_misplaced_fields(crd: Crd) -> Crd {
    let Ok(mut value) = serde_json::to_value(&crd) else { return crd };
    let kind = crd.spec.names.kind.clone();
    if let Some(versions) = value.pointer_mut("/spec/versions").and_then(|v| v.as_array_mut()) {
        for version in versions {
            if let Some(schema) = version.pointer_mut("/schema/openAPIV3Schema") {
                misplaced::declare(&kind, schema);
            }
        }
    }
    serde_json::from_value(value).unwrap_or(crd)
}

/// Removes `nullable: true` from a CRD's schema, so the API server drops an
/// explicit `null` instead of storing it: readers and CEL rules then see a
/// field either absent or of its type (`has()` is enough; a rule comparing a
/// stored null would fail to evaluate). Flotilla never sends explicit nulls
/// (absent fields are omitted), so the schema loses nothing.
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
    fn policy_schemas_refuse_unsupported_karmada_fields_by_name_and_keep_no_unknown_fields() {
        for crd in crds() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let root = &schema["openAPIV3Schema"];
            assert_eq!(root.get("x-kubernetes-preserve-unknown-fields"), None, "{}", crd.spec.names.kind);
            if crd.spec.group != policy::GROUP {
                continue;
            }
            let rules =
                |path: &str| root.pointer(path).and_then(|v| v.as_array()).cloned().unwrap_or_default();
            let messages: Vec<String> = [
                "/properties/spec/x-kubernetes-validations",
                "/properties/spec/properties/placement/x-kubernetes-validations",
                "/properties/spec/properties/overrideRules/items/properties/overriders/x-kubernetes-validations",
            ]
            .iter()
            .flat_map(|p| rules(p))
            .map(|r| format!("{} => {}", r["rule"], r["message"]))
            .collect();
            let kind = &crd.spec.names.kind;
            if kind.ends_with("PropagationPolicy") {
                // Every Karmada policy field is implemented: no rule refuses one.
                assert!(
                    !messages.iter().any(|m| m.contains(policy::UNSUPPORTED_KARMADA_FIELD)),
                    "{kind}: {messages:#?}"
                );
                // Declared, so this one keeps its enum instead.
                let weights = "/properties/spec/properties/placement/properties/replicaScheduling/properties/weightPreference/properties/dynamicWeight/enum";
                assert_eq!(root.pointer(weights), Some(&serde_json::json!(["AvailableReplicas"])));
            } else {
                // Implemented (fieldOverrider, the deprecated spec-level
                // shape): declared by the types, refused by no rule.
                assert!(
                    !messages.iter().any(|m| m.contains(policy::UNSUPPORTED_KARMADA_FIELD)),
                    "{kind}: {messages:#?}"
                );
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
