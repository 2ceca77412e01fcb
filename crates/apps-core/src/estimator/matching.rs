//! Which nodes a pod may land on: Kubernetes' node selector, required node
//! affinity and taint toleration rules, as kube-scheduler's NodeAffinity and
//! TaintToleration filters apply them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Toleration};

use super::constraints::{NodeConstraints, Taint, HOSTNAME_LABEL};

/// The one field node affinity may match on.
const NAME_FIELD: &str = "metadata.name";

/// Whether a toleration tolerates a taint (Kubernetes' `ToleratesTaint`):
/// an effect, if set, must equal the taint's; a key, if set, must equal
/// the taint's; `Exists` then matches any value, `Equal` (the default) the
/// same value.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect.as_str() {
            return false;
        }
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty()) {
        if key != taint.key {
            return false;
        }
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => toleration.value.as_deref().unwrap_or_default() == taint.value,
        "Exists" => true,
        _ => false,
    }
}

/// Every taint (all `NoSchedule` or `NoExecute`) is tolerated.
pub fn tolerates_all(tolerations: &[Toleration], taints: &[Taint]) -> bool {
    taints.iter().all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

/// Whether the answer for a node may depend on its name: a selector or a
/// term reads `kubernetes.io/hostname` (which the report stands the name
/// for) or matches fields.
pub fn depends_on_node_name(constraints: &NodeConstraints) -> bool {
    constraints.node_selector.contains_key(HOSTNAME_LABEL)
        || constraints.required_terms.iter().flatten().any(|term| {
            term.match_fields.as_ref().is_some_and(|f| !f.is_empty())
                || term.match_expressions.iter().flatten().any(|r| r.key == HOSTNAME_LABEL)
        })
}

/// The value of a node's label: `kubernetes.io/hostname` is the node's name
/// unless its profile says otherwise.
fn label<'a>(labels: &'a BTreeMap<String, String>, name: &'a str, key: &str) -> Option<&'a str> {
    match labels.get(key) {
        Some(value) => Some(value.as_str()),
        None if key == HOSTNAME_LABEL && !name.is_empty() => Some(name),
        None => None,
    }
}

/// NodeAffinity: every `nodeSelector` pair is a label of the node, and, if
/// there is required node affinity, one of its terms matches.
pub fn node_matches(constraints: &NodeConstraints, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let selected = constraints.node_selector.iter().all(|(k, v)| label(labels, name, k) == Some(v.as_str()));
    selected
        && constraints
            .required_terms
            .as_ref()
            .is_none_or(|terms| terms.iter().any(|term| term_matches(term, labels, name)))
}

/// A term with no requirement matches no node; otherwise all its
/// expressions and fields must match.
pub fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions.iter().all(|r| requirement_matches(r, label(labels, name, &r.key)))
        && fields.iter().all(|r| r.key == NAME_FIELD && requirement_matches(r, Some(name)))
}

/// One requirement against a label's value (`None`: the node lacks it).
/// `Gt`/`Lt` take one integer and compare the label read as an integer;
/// unknown operators and malformed values match nothing.
pub fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let [bound] = values else { return false };
            let (Ok(bound), Some(Ok(value))) = (bound.parse::<i64>(), value.map(str::parse::<i64>)) else {
                return false;
            };
            if requirement.operator == "Gt" {
                value > bound
            } else {
                value < bound
            }
        }
        _ => false,
    }
}
