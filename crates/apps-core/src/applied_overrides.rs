//! Which override policies the binder applied to a cluster's copy of a
//! template, recorded on its Work (as Karmada records
//! `policy.karmada.io/applied-overrides`), so a person can see why a
//! member's object differs from the template.

use std::collections::BTreeMap;

use crate::affinity::cluster_matches;
use crate::selection::OverrideCandidate;

/// On a Work: the override policies applied to its manifest, in the order
/// applied, comma-separated: `namespace/name` for an OverridePolicy, `name`
/// for a ClusterOverridePolicy. Absent when none applied.
pub const APPLIED_OVERRIDES_ANNOTATION: &str = "apps.flotilla.io/applied-overrides";

/// The policies (in `policies`' order, the order they are applied) with a
/// rule whose `targetCluster` selects the cluster (absent: every cluster).
pub fn applied_overrides(
    cluster_name: &str,
    cluster_labels: &BTreeMap<String, String>,
    policies: &[&OverrideCandidate],
) -> Vec<String> {
    policies
        .iter()
        .filter(|p| {
            p.spec.rules().iter().any(|rule| {
                rule.target_cluster
                    .as_ref()
                    .is_none_or(|affinity| cluster_matches(affinity, cluster_name, cluster_labels))
            })
        })
        .map(|p| p.qualified_name())
        .collect()
}

/// The annotation's value, or `None` when no policy applied.
pub fn annotation_value(applied: &[String]) -> Option<String> {
    (!applied.is_empty()).then(|| applied.join(","))
}

/// The policies an annotation value names, in order.
pub fn parse_annotation(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::PolicyScope;
    use flotilla_api::policy::OverrideSpec;
    use serde_json::json;

    fn spec(rules: serde_json::Value) -> OverrideSpec {
        serde_json::from_value(json!({"overrideRules": rules})).unwrap()
    }

    #[test]
    fn records_the_policies_whose_rules_target_the_cluster_in_order() {
        let everywhere =
            spec(json!([{"overriders": {"labelsOverrider": [{"operator": "add", "value": {"a": "b"}}]}}]));
        let eu_only = spec(json!([{"targetCluster": {"labelSelector": {"matchLabels": {"region": "eu"}}},
            "overriders": {"labelsOverrider": [{"operator": "add", "value": {"eu": "yes"}}]}}]));
        let named = spec(json!([{"targetCluster": {"clusterNames": ["m2"]},
            "overriders": {"labelsOverrider": [{"operator": "add", "value": {"m2": "yes"}}]}}]));
        let no_rules = spec(json!([]));
        let policies = [
            OverrideCandidate {
                scope: PolicyScope::Cluster,
                namespace: "",
                name: "global",
                spec: &everywhere,
            },
            OverrideCandidate {
                scope: PolicyScope::Namespaced,
                namespace: "shop",
                name: "eu",
                spec: &eu_only,
            },
            OverrideCandidate { scope: PolicyScope::Namespaced, namespace: "shop", name: "m2", spec: &named },
            OverrideCandidate {
                scope: PolicyScope::Namespaced,
                namespace: "shop",
                name: "empty",
                spec: &no_rules,
            },
        ];
        let eu: BTreeMap<String, String> = [("region".to_string(), "eu".to_string())].into();
        let us: BTreeMap<String, String> = [("region".to_string(), "us".to_string())].into();
        struct Case<'a> {
            name: &'a str,
            cluster: &'a str,
            labels: &'a BTreeMap<String, String>,
            /// Indexes into `policies`, in the order applied.
            policies: Vec<usize>,
            want: Vec<&'a str>,
            want_annotation: Option<&'a str>,
        }
        let cases = [
            Case {
                name: "an eu cluster: the global one, then the eu one",
                cluster: "m1",
                labels: &eu,
                policies: vec![0, 1, 2, 3],
                want: vec!["global", "shop/eu"],
                want_annotation: Some("global,shop/eu"),
            },
            Case {
                name: "a cluster named by a rule",
                cluster: "m2",
                labels: &us,
                policies: vec![0, 1, 2, 3],
                want: vec!["global", "shop/m2"],
                want_annotation: Some("global,shop/m2"),
            },
            Case {
                name: "order kept as given",
                cluster: "m2",
                labels: &eu,
                policies: vec![3, 2, 1, 0],
                want: vec!["shop/m2", "shop/eu", "global"],
                want_annotation: Some("shop/m2,shop/eu,global"),
            },
            Case {
                name: "no rule targets the cluster",
                cluster: "m3",
                labels: &us,
                policies: vec![1, 2, 3],
                want: vec![],
                want_annotation: None,
            },
            Case {
                name: "no policy",
                cluster: "m1",
                labels: &eu,
                policies: vec![],
                want: vec![],
                want_annotation: None,
            },
        ];
        for c in cases {
            let given: Vec<&OverrideCandidate> = c.policies.iter().map(|&i| &policies[i]).collect();
            let got = applied_overrides(c.cluster, c.labels, &given);
            assert_eq!(got, c.want, "{}", c.name);
            let annotation = annotation_value(&got);
            assert_eq!(annotation.as_deref(), c.want_annotation, "{}", c.name);
            assert_eq!(
                parse_annotation(annotation.as_deref().unwrap_or("")),
                c.want,
                "{}: read back",
                c.name
            );
        }
    }
}
