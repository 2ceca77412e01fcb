//! Which policies take a template.
//!
//! Rules (Karmada's, made total so the choice never depends on list order):
//!
//! - A selector matches a template when its `apiVersion` and `kind` are
//!   equal to the template's, its `namespace` (if given) is the template's,
//!   and then: with a `name`, only that name matches (its `labelSelector` is
//!   ignored, as in Karmada); otherwise with a `labelSelector`, the
//!   template's labels must satisfy it; otherwise every name matches.
//! - A namespaced policy (PropagationPolicy, OverridePolicy) only ever sees
//!   templates in its own namespace: a selector `namespace` naming another
//!   namespace matches nothing, and an empty one means the policy's
//!   namespace. A cluster policy sees every namespace and cluster-scoped
//!   templates.
//! - How specific a match is: by name > by label selector > by kind only. A
//!   policy's specificity for a template is that of its best-matching
//!   selector.
//! - Propagation (Karmada's order): a matching PropagationPolicy always
//!   beats any ClusterPropagationPolicy, whatever their priorities; among
//!   policies of one kind the highest `priority` (absent = 0) wins, then the
//!   more specific match (Karmada's implicit priority), then the
//!   lexicographically smallest name, then namespace. Which policy keeps a
//!   template it already has (preemption) is `claim`'s decision.
//! - Overrides: every matching policy applies. ClusterOverridePolicies
//!   first, then OverridePolicies; within each, by ascending specificity and
//!   then name (and namespace), so the more specific policy is applied last
//!   and its values win. An override policy without `resourceSelectors`
//!   applies to every template it can see, as the least specific match.

use std::collections::BTreeMap;

use flotilla_api::policy::{OverrideSpec, PropagationSpec, ResourceSelector};

use crate::affinity::label_selector_matches;

/// The identity and labels of a template, as selectors see it.
#[derive(Debug, Clone, Copy)]
pub struct TemplateMeta<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    /// `""` for cluster-scoped templates.
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// How a selector matched a template, least specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Specificity {
    KindOnly,
    LabelSelector,
    Name,
}

/// How `sel` matches `t`, or `None` if it does not. Knows nothing of the
/// policy holding the selector (see [`policy_matches`] for that).
pub fn selector_matches(sel: &ResourceSelector, t: &TemplateMeta) -> Option<Specificity> {
    if sel.api_version != t.api_version || sel.kind != t.kind {
        return None;
    }
    if !sel.namespace.is_empty() && sel.namespace != t.namespace {
        return None;
    }
    if !sel.name.is_empty() {
        return (sel.name == t.name).then_some(Specificity::Name);
    }
    match &sel.label_selector {
        Some(labels) => label_selector_matches(labels, t.labels).then_some(Specificity::LabelSelector),
        None => Some(Specificity::KindOnly),
    }
}

/// Whether a policy is namespaced (PropagationPolicy, OverridePolicy) or
/// cluster-wide (ClusterPropagationPolicy, ClusterOverridePolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyScope {
    Namespaced,
    Cluster,
}

/// How the policy's best selector matches `t`, honouring the policy's scope;
/// `None` if the policy does not select the template. An empty selector
/// list matches nothing here: callers decide what "no selectors" means.
pub fn policy_matches(
    scope: PolicyScope,
    policy_namespace: &str,
    selectors: &[ResourceSelector],
    t: &TemplateMeta,
) -> Option<Specificity> {
    if !can_see(scope, policy_namespace, t) {
        return None;
    }
    selectors.iter().filter_map(|sel| selector_matches(sel, t)).max()
}

fn can_see(scope: PolicyScope, policy_namespace: &str, t: &TemplateMeta) -> bool {
    match scope {
        PolicyScope::Cluster => true,
        // A cluster-scoped template has namespace "", which no namespaced
        // policy has.
        PolicyScope::Namespaced => t.namespace == policy_namespace,
    }
}

/// A PropagationPolicy (`Namespaced`) or ClusterPropagationPolicy.
#[derive(Debug, Clone, Copy)]
pub struct PolicyCandidate<'a> {
    pub scope: PolicyScope,
    /// `""` for a ClusterPropagationPolicy.
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a PropagationSpec,
}

/// The policy that takes the template, or `None` (rules in the module doc).
pub fn pick_propagation_policy<'a, 'b>(
    t: &TemplateMeta,
    candidates: &'b [PolicyCandidate<'a>],
) -> Option<&'b PolicyCandidate<'a>> {
    best_of(t, candidates.iter())
}

/// How propagation policies of both kinds rank against each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PolicyOrder {
    /// Karmada's: any PropagationPolicy before any ClusterPropagationPolicy,
    /// then priority (the default).
    #[default]
    Karmada,
    /// Flotilla's before Karmada parity (`hub run --policy-order
    /// priority`): the highest priority of either kind first, a
    /// PropagationPolicy first on a tie.
    PriorityFirst,
}

impl PolicyOrder {
    /// The rank of a matching candidate: greater wins (names break ties).
    pub fn rank(self, c: &PolicyCandidate, specificity: Specificity) -> (bool, i32, bool, Specificity) {
        let namespaced = c.scope == PolicyScope::Namespaced;
        let priority = c.spec.priority.unwrap_or(0);
        match self {
            PolicyOrder::Karmada => (namespaced, priority, false, specificity),
            PolicyOrder::PriorityFirst => (false, priority, namespaced, specificity),
        }
    }
}

/// [`pick_propagation_policy`] over any candidates.
pub fn best_of<'a, 'b>(
    t: &TemplateMeta,
    candidates: impl Iterator<Item = &'b PolicyCandidate<'a>>,
) -> Option<&'b PolicyCandidate<'a>>
where
    'a: 'b,
{
    best_of_in(PolicyOrder::Karmada, t, candidates)
}

/// The best match of `candidates` in `order`.
pub fn best_of_in<'a, 'b>(
    order: PolicyOrder,
    t: &TemplateMeta,
    candidates: impl Iterator<Item = &'b PolicyCandidate<'a>>,
) -> Option<&'b PolicyCandidate<'a>>
where
    'a: 'b,
{
    candidates
        .filter_map(|c| {
            policy_matches(c.scope, c.namespace, &c.spec.resource_selectors, t).map(|spec| (c, spec))
        })
        .max_by(|(a, a_spec), (b, b_spec)| {
            order
                .rank(a, *a_spec)
                .cmp(&order.rank(b, *b_spec))
                // Smaller names win, so they compare as greater.
                .then_with(|| b.name.cmp(a.name))
                .then_with(|| b.namespace.cmp(a.namespace))
        })
        .map(|(c, _)| c)
}

/// An OverridePolicy (`Namespaced`) or ClusterOverridePolicy.
#[derive(Debug, Clone, Copy)]
pub struct OverrideCandidate<'a> {
    pub scope: PolicyScope,
    /// `""` for a ClusterOverridePolicy.
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a OverrideSpec,
}

impl OverrideCandidate<'_> {
    /// `OverridePolicy ns/name` or `ClusterOverridePolicy name`, for
    /// messages.
    pub fn display_name(&self) -> String {
        match self.scope {
            PolicyScope::Namespaced => format!("OverridePolicy {}/{}", self.namespace, self.name),
            PolicyScope::Cluster => format!("ClusterOverridePolicy {}", self.name),
        }
    }

    /// `ns/name` for an OverridePolicy, `name` for a ClusterOverridePolicy
    /// (unambiguous: cluster policy names have no slash).
    pub fn qualified_name(&self) -> String {
        match self.scope {
            PolicyScope::Namespaced => format!("{}/{}", self.namespace, self.name),
            PolicyScope::Cluster => self.name.to_string(),
        }
    }
}

/// The override policies that apply to the template, in the order they
/// must be applied (rules in the module doc).
pub fn applicable_overrides<'a, 'b>(
    t: &TemplateMeta,
    candidates: &'b [OverrideCandidate<'a>],
) -> Vec<&'b OverrideCandidate<'a>> {
    let mut matched: Vec<(&'b OverrideCandidate<'a>, Specificity)> = candidates
        .iter()
        .filter_map(|c| {
            if c.spec.resource_selectors.is_empty() {
                can_see(c.scope, c.namespace, t).then_some((c, Specificity::KindOnly))
            } else {
                policy_matches(c.scope, c.namespace, &c.spec.resource_selectors, t).map(|s| (c, s))
            }
        })
        .collect();
    matched.sort_by(|(a, a_spec), (b, b_spec)| {
        let scope_order = |c: &OverrideCandidate| match c.scope {
            PolicyScope::Cluster => 0,
            PolicyScope::Namespaced => 1,
        };
        (scope_order(a), *a_spec, a.name, a.namespace).cmp(&(scope_order(b), *b_spec, b.name, b.namespace))
    });
    matched.into_iter().map(|(c, _)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn deploy<'a>(
        namespace: &'a str,
        name: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> TemplateMeta<'a> {
        TemplateMeta { api_version: "apps/v1", kind: "Deployment", namespace, name, labels }
    }

    fn by_kind() -> ResourceSelector {
        ResourceSelector { api_version: "apps/v1".into(), kind: "Deployment".into(), ..Default::default() }
    }

    fn by_name(name: &str) -> ResourceSelector {
        ResourceSelector { name: name.into(), ..by_kind() }
    }

    fn by_labels(pairs: &[(&str, &str)]) -> ResourceSelector {
        ResourceSelector {
            label_selector: Some(LabelSelector { match_labels: Some(labels(pairs)), ..Default::default() }),
            ..by_kind()
        }
    }

    fn propagation(selectors: Vec<ResourceSelector>, priority: Option<i32>) -> PropagationSpec {
        PropagationSpec { resource_selectors: selectors, priority, ..Default::default() }
    }

    #[test]
    fn selectors_match_kind_namespace_name_and_labels() {
        let l = labels(&[("app", "web")]);
        let t = deploy("shop", "web", &l);
        assert_eq!(selector_matches(&by_kind(), &t), Some(Specificity::KindOnly));
        assert_eq!(selector_matches(&by_name("web"), &t), Some(Specificity::Name));
        assert_eq!(selector_matches(&by_name("api"), &t), None);
        assert_eq!(selector_matches(&by_labels(&[("app", "web")]), &t), Some(Specificity::LabelSelector));
        assert_eq!(selector_matches(&by_labels(&[("app", "api")]), &t), None);
        // A name makes the label selector irrelevant.
        let name_and_wrong_labels = ResourceSelector { name: "web".into(), ..by_labels(&[("app", "api")]) };
        assert_eq!(selector_matches(&name_and_wrong_labels, &t), Some(Specificity::Name));
        // apiVersion and kind are exact.
        let v1beta1 = ResourceSelector { api_version: "apps/v1beta1".into(), ..by_kind() };
        assert_eq!(selector_matches(&v1beta1, &t), None);
        let sts = ResourceSelector { kind: "StatefulSet".into(), ..by_kind() };
        assert_eq!(selector_matches(&sts, &t), None);
        let in_shop = ResourceSelector { namespace: "shop".into(), ..by_kind() };
        let in_other = ResourceSelector { namespace: "other".into(), ..by_kind() };
        assert_eq!(selector_matches(&in_shop, &t), Some(Specificity::KindOnly));
        assert_eq!(selector_matches(&in_other, &t), None);
    }

    #[test]
    fn namespaced_policies_see_only_their_namespace() {
        let l = BTreeMap::new();
        let t = deploy("shop", "web", &l);
        let sels = [by_kind()];
        assert!(policy_matches(PolicyScope::Namespaced, "shop", &sels, &t).is_some());
        assert!(policy_matches(PolicyScope::Namespaced, "other", &sels, &t).is_none());
        // A selector naming another namespace matches nothing, even in a
        // namespaced policy of that other namespace.
        let elsewhere = [ResourceSelector { namespace: "other".into(), ..by_kind() }];
        assert!(policy_matches(PolicyScope::Namespaced, "shop", &elsewhere, &t).is_none());
        assert!(policy_matches(PolicyScope::Namespaced, "other", &elsewhere, &t).is_none());
        assert!(policy_matches(PolicyScope::Cluster, "", &sels, &t).is_some());
        // Cluster-scoped templates: only cluster policies.
        let ns =
            TemplateMeta { api_version: "v1", kind: "Namespace", namespace: "", name: "shop", labels: &l };
        let ns_sel =
            [ResourceSelector { api_version: "v1".into(), kind: "Namespace".into(), ..Default::default() }];
        assert!(policy_matches(PolicyScope::Cluster, "", &ns_sel, &ns).is_some());
        assert!(policy_matches(PolicyScope::Namespaced, "shop", &ns_sel, &ns).is_none());
        // The best selector counts.
        let mixed = [by_kind(), by_name("web")];
        assert_eq!(policy_matches(PolicyScope::Cluster, "", &mixed, &t), Some(Specificity::Name));
    }

    #[test]
    fn namespaced_wins_then_highest_priority_then_specificity_then_name() {
        let l = labels(&[("app", "web")]);
        let t = deploy("shop", "web", &l);
        let kind_p0 = propagation(vec![by_kind()], None);
        let kind_p5 = propagation(vec![by_kind()], Some(5));
        let name_p0 = propagation(vec![by_name("web")], Some(0));
        let labels_p0 = propagation(vec![by_labels(&[("app", "web")])], None);
        let pick = |cands: &[PolicyCandidate]| pick_propagation_policy(&t, cands).map(|c| c.name.to_string());
        let pp =
            |name, spec| PolicyCandidate { scope: PolicyScope::Namespaced, namespace: "shop", name, spec };
        let cpp = |name, spec| PolicyCandidate { scope: PolicyScope::Cluster, namespace: "", name, spec };

        // A PropagationPolicy beats any ClusterPropagationPolicy, whatever
        // their priorities (Karmada).
        assert_eq!(pick(&[pp("a-name", &name_p0), cpp("z-kind", &kind_p5)]).as_deref(), Some("a-name"));
        assert_eq!(pick(&[pp("z-kind", &kind_p0), cpp("a-name", &name_p0)]).as_deref(), Some("z-kind"));
        // Within a kind, priority beats specificity.
        assert_eq!(pick(&[pp("a-name", &name_p0), pp("z-kind", &kind_p5)]).as_deref(), Some("z-kind"));
        assert_eq!(pick(&[cpp("a-name", &name_p0), cpp("z-kind", &kind_p5)]).as_deref(), Some("z-kind"));
        // Same priority and scope: name > labels > kind.
        assert_eq!(pick(&[pp("a", &kind_p0), pp("b", &labels_p0), pp("c", &name_p0)]).as_deref(), Some("c"));
        assert_eq!(pick(&[pp("a", &kind_p0), pp("b", &labels_p0)]).as_deref(), Some("b"));
        // Full tie: smallest name, whatever the input order.
        assert_eq!(pick(&[pp("b", &kind_p0), pp("a", &kind_p0)]).as_deref(), Some("a"));
        assert_eq!(pick(&[pp("a", &kind_p0), pp("b", &kind_p0)]).as_deref(), Some("a"));
        // Policies that do not match are never picked.
        let other_ns =
            PolicyCandidate { scope: PolicyScope::Namespaced, namespace: "other", name: "x", spec: &kind_p5 };
        assert_eq!(pick(&[other_ns, pp("b", &kind_p0)]).as_deref(), Some("b"));
        assert_eq!(pick(&[other_ns]), None);
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn priority_first_order_ranks_priority_across_kinds() {
        let l = BTreeMap::new();
        let t = deploy("shop", "web", &l);
        let kind_p0 = propagation(vec![by_kind()], None);
        let kind_p5 = propagation(vec![by_kind()], Some(5));
        let name_p0 = propagation(vec![by_name("web")], None);
        let pp =
            |name, spec| PolicyCandidate { scope: PolicyScope::Namespaced, namespace: "shop", name, spec };
        let cpp = |name, spec| PolicyCandidate { scope: PolicyScope::Cluster, namespace: "", name, spec };
        let pick = |order, cands: &[PolicyCandidate]| {
            best_of_in(order, &t, cands.iter()).map(|c| c.name.to_string())
        };
        let cases: [(&str, PolicyOrder, Vec<PolicyCandidate>, &str); 4] = [
            (
                "Karmada: namespaced first",
                PolicyOrder::Karmada,
                vec![pp("pp", &name_p0), cpp("cpp", &kind_p5)],
                "pp",
            ),
            (
                "priority first: the cluster policy's priority wins",
                PolicyOrder::PriorityFirst,
                vec![pp("pp", &name_p0), cpp("cpp", &kind_p5)],
                "cpp",
            ),
            (
                "priority first: a tie goes to the namespaced one",
                PolicyOrder::PriorityFirst,
                vec![cpp("cpp", &name_p0), pp("pp", &kind_p0)],
                "pp",
            ),
            (
                "priority first: then specificity",
                PolicyOrder::PriorityFirst,
                vec![pp("a", &kind_p0), pp("b", &name_p0)],
                "b",
            ),
        ];
        for (name, order, cands, want) in cases {
            assert_eq!(pick(order, &cands).as_deref(), Some(want), "{name}");
        }
    }

    #[test]
    fn cluster_policies_tie_break_on_the_smallest_name() {
        let l = BTreeMap::new();
        let t = deploy("shop", "web", &l);
        let spec = propagation(vec![by_kind()], None);
        let cands = [
            PolicyCandidate { scope: PolicyScope::Cluster, namespace: "", name: "zeta", spec: &spec },
            PolicyCandidate { scope: PolicyScope::Cluster, namespace: "", name: "alpha", spec: &spec },
        ];
        assert_eq!(pick_propagation_policy(&t, &cands).map(|c| c.name), Some("alpha"));
    }

    #[test]
    fn overrides_cluster_first_then_ascending_specificity_then_name() {
        let l = labels(&[("app", "web")]);
        let t = deploy("shop", "web", &l);
        let all = OverrideSpec::default();
        let kind = OverrideSpec { resource_selectors: vec![by_kind()], ..Default::default() };
        let name = OverrideSpec { resource_selectors: vec![by_name("web")], ..Default::default() };
        let label =
            OverrideSpec { resource_selectors: vec![by_labels(&[("app", "web")])], ..Default::default() };
        let miss = OverrideSpec { resource_selectors: vec![by_name("api")], ..Default::default() };
        let op =
            |name, spec| OverrideCandidate { scope: PolicyScope::Namespaced, namespace: "shop", name, spec };
        let cop = |name, spec| OverrideCandidate { scope: PolicyScope::Cluster, namespace: "", name, spec };
        let cands = [
            op("n-name", &name),
            op("n-all", &all),
            op("n-label", &label),
            op("n-kind-b", &kind),
            op("n-kind-a", &kind),
            cop("c-name", &name),
            cop("c-kind", &kind),
            op("n-miss", &miss),
            OverrideCandidate {
                scope: PolicyScope::Namespaced,
                namespace: "other",
                name: "foreign",
                spec: &all,
            },
        ];
        let order: Vec<_> = applicable_overrides(&t, &cands).iter().map(|c| c.name).collect();
        assert_eq!(order, ["c-kind", "c-name", "n-all", "n-kind-a", "n-kind-b", "n-label", "n-name"]);
    }

    #[test]
    fn selectorless_override_policies_apply_to_what_they_can_see() {
        let l = BTreeMap::new();
        let ns =
            TemplateMeta { api_version: "v1", kind: "Namespace", namespace: "", name: "shop", labels: &l };
        let all = OverrideSpec::default();
        let cands = [
            OverrideCandidate { scope: PolicyScope::Namespaced, namespace: "shop", name: "op", spec: &all },
            OverrideCandidate { scope: PolicyScope::Cluster, namespace: "", name: "cop", spec: &all },
        ];
        let names: Vec<_> = applicable_overrides(&ns, &cands).iter().map(|c| c.name).collect();
        assert_eq!(names, ["cop"]);
        assert_eq!(cands[0].display_name(), "OverridePolicy shop/op");
        assert_eq!(cands[1].display_name(), "ClusterOverridePolicy cop");
        assert_eq!(cands[0].qualified_name(), "shop/op");
        assert_eq!(cands[1].qualified_name(), "cop");
    }
}
