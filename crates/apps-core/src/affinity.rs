//! Matching clusters and objects against selectors: Kubernetes label
//! selectors and Karmada-style cluster affinities.

use std::collections::BTreeMap;

use flotilla_api::policy::{cluster_field_label, ClusterAffinity, FieldSelectorOperator};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy a Kubernetes label selector. An empty selector
/// matches everything. An unknown operator matches nothing (the API server
/// does not validate operators inside custom resources).
pub fn label_selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key).is_some_and(|v| v == value));
    by_labels
        && selector.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let current = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => current.is_some_and(|v| values.contains(v)),
                "NotIn" => current.is_none_or(|v| !values.contains(v)),
                "Exists" => current.is_some(),
                "DoesNotExist" => current.is_none(),
                _ => false,
            }
        })
}

/// Whether a cluster (by name and labels) is in the set a ClusterAffinity
/// describes. All given criteria must hold; `exclude` always wins.
pub fn cluster_matches(affinity: &ClusterAffinity, name: &str, labels: &BTreeMap<String, String>) -> bool {
    if affinity.exclude.iter().any(|n| n == name) {
        return false;
    }
    if !affinity.cluster_names.is_empty() && !affinity.cluster_names.iter().any(|n| n == name) {
        return false;
    }
    if let Some(selector) = &affinity.label_selector {
        if !label_selector_matches(selector, labels) {
            return false;
        }
    }
    if let Some(fields) = &affinity.field_selector {
        for req in &fields.match_expressions {
            let current = cluster_field_label(&req.key).and_then(|label| labels.get(label));
            let ok = match req.operator {
                FieldSelectorOperator::In => current.is_some_and(|v| req.values.contains(v)),
                FieldSelectorOperator::NotIn => current.is_none_or(|v| !req.values.contains(v)),
                FieldSelectorOperator::Exists => current.is_some(),
                FieldSelectorOperator::DoesNotExist => current.is_none(),
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::policy::{FieldSelector, FieldSelectorRequirement};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let l = labels(&[("env", "prod"), ("tier", "web")]);
        let check = |sel: LabelSelector| label_selector_matches(&sel, &l);
        assert!(check(LabelSelector::default()));
        assert!(check(LabelSelector {
            match_labels: Some(labels(&[("env", "prod")])),
            ..Default::default()
        }));
        assert!(!check(LabelSelector {
            match_labels: Some(labels(&[("env", "dev")])),
            ..Default::default()
        }));
        let with = |e| LabelSelector { match_expressions: Some(vec![e]), ..Default::default() };
        assert!(check(with(expr("env", "In", &["prod", "staging"]))));
        assert!(!check(with(expr("env", "NotIn", &["prod"]))));
        assert!(check(with(expr("region", "NotIn", &["eu"]))));
        assert!(check(with(expr("tier", "Exists", &[]))));
        assert!(!check(with(expr("tier", "DoesNotExist", &[]))));
        assert!(!check(with(expr("tier", "Bogus", &[]))));
    }

    #[test]
    fn cluster_affinity_combines_names_exclusions_labels_and_fields() {
        let l = labels(&[("topology.kubernetes.io/region", "eu"), ("env", "prod")]);
        let names = ClusterAffinity { cluster_names: vec!["a".into(), "b".into()], ..Default::default() };
        assert!(cluster_matches(&names, "a", &l));
        assert!(!cluster_matches(&names, "c", &l));
        let excluded = ClusterAffinity { exclude: vec!["a".into()], ..names.clone() };
        assert!(!cluster_matches(&excluded, "a", &l));
        assert!(cluster_matches(&ClusterAffinity::default(), "anything", &BTreeMap::new()));
        let region = |op, values: &[&str]| ClusterAffinity {
            field_selector: Some(FieldSelector {
                match_expressions: vec![FieldSelectorRequirement {
                    key: "region".into(),
                    operator: op,
                    values: values.iter().map(|v| v.to_string()).collect(),
                }],
            }),
            ..Default::default()
        };
        assert!(cluster_matches(&region(FieldSelectorOperator::In, &["eu"]), "a", &l));
        assert!(!cluster_matches(&region(FieldSelectorOperator::In, &["us"]), "a", &l));
        assert!(!cluster_matches(&region(FieldSelectorOperator::DoesNotExist, &[]), "a", &l));
        assert!(cluster_matches(&region(FieldSelectorOperator::NotIn, &["us"]), "a", &BTreeMap::new()));
        let by_label = ClusterAffinity {
            label_selector: Some(LabelSelector {
                match_labels: Some(labels(&[("env", "dev")])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!cluster_matches(&by_label, "a", &l));
    }

    #[test]
    fn an_empty_label_selector_matches_every_cluster_as_in_karmada() {
        // `labelSelector: {}` (and empty lists inside it) selects
        // everything, as a Kubernetes label selector does and Karmada reads
        // it; the affinity's other criteria still apply.
        let from_yaml: ClusterAffinity =
            serde_json::from_value(serde_json::json!({"labelSelector": {}})).unwrap();
        let empty_lists: ClusterAffinity = serde_json::from_value(
            serde_json::json!({"labelSelector": {"matchLabels": {}, "matchExpressions": []}}),
        )
        .unwrap();
        let named = ClusterAffinity { cluster_names: vec!["a".into()], ..from_yaml.clone() };
        /// (case, affinity, cluster, its labels, matches)
        type Case<'a> = (&'a str, &'a ClusterAffinity, &'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            ("no labels", &from_yaml, "a", &[], true),
            ("any labels", &from_yaml, "b", &[("env", "prod")], true),
            ("empty lists", &empty_lists, "c", &[("region", "eu")], true),
            ("with clusterNames: listed", &named, "a", &[], true),
            ("with clusterNames: not listed", &named, "b", &[], false),
        ];
        assert!(from_yaml.label_selector.is_some(), "`{{}}` is kept as a selector, not dropped");
        for (name, affinity, cluster, cluster_labels, want) in cases {
            assert_eq!(cluster_matches(affinity, cluster, &labels(cluster_labels)), *want, "{name}");
        }
    }
}
