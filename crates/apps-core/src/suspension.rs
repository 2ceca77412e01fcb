//! Suspension (Karmada's `spec.suspension` of a propagation policy): which
//! clusters the binder may dispatch to, and the `Dispatching` condition a
//! binding (and its template) shows.
//!
//! A suspended cluster's Work is neither written nor deleted: its member
//! keeps running what it has, untouched by template changes, failover or
//! scaling, and its agent still reports status. Scheduling goes on (the
//! binding says where the template would go), so resuming dispatches the
//! current decision at once.
//!
//! Suspended scheduling (`suspension.scheduling`) is the converse: the
//! binding keeps its clusters and replicas (a new template gets none), with
//! no failover, descheduling or rebalance, while dispatch goes on, so
//! template changes still reach the clusters it has.

use flotilla_api::policy::Suspension;
use flotilla_core::conditions::Wanted;

/// The binding's (and template's) condition about dispatch.
pub const CONDITION_DISPATCHING: &str = "Dispatching";
/// Its reason while dispatch is suspended (to every or some clusters).
pub const REASON_SUSPENDED: &str = "DispatchingSuspended";
/// Its reason once dispatch runs again after a suspension.
pub const REASON_DISPATCHING: &str = "Dispatching";

/// Whether dispatch to `cluster` is suspended.
pub fn dispatch_suspended(suspension: Option<&Suspension>, cluster: &str) -> bool {
    let Some(s) = suspension else { return false };
    s.dispatching == Some(true)
        || s.dispatching_on_clusters.as_ref().is_some_and(|c| c.cluster_names.iter().any(|n| n == cluster))
}

/// Whether the suspension halts anything at all.
pub fn any_suspended(suspension: Option<&Suspension>) -> bool {
    suspension.is_some_and(|s| {
        s.dispatching == Some(true)
            || s.dispatching_on_clusters.as_ref().is_some_and(|c| !c.cluster_names.is_empty())
    })
}

/// A dependency's suspension (it follows the templates that need it, with
/// no policy of its own): suspended on a cluster when every template that
/// needs it there is; to every cluster when every such template is
/// suspended everywhere. `requirers` holds each needing template's
/// suspension and the clusters it needs the dependency on.
pub fn for_dependency(requirers: &[(Option<&Suspension>, &[String])]) -> Option<Suspension> {
    if requirers.is_empty() {
        return None;
    }
    if requirers.iter().all(|(s, _)| s.is_some_and(|s| s.dispatching == Some(true))) {
        return Some(Suspension { dispatching: Some(true), ..Default::default() });
    }
    let mut names: Vec<String> =
        requirers.iter().flat_map(|(_, clusters)| clusters.iter().cloned()).collect();
    names.sort();
    names.dedup();
    names.retain(|cluster| {
        requirers
            .iter()
            .filter(|(_, clusters)| clusters.contains(cluster))
            .all(|(s, _)| dispatch_suspended(*s, cluster))
    });
    if names.is_empty() {
        return None;
    }
    Some(Suspension {
        dispatching_on_clusters: Some(flotilla_api::policy::SuspendClusters { cluster_names: names }),
        ..Default::default()
    })
}

/// The `Scheduled` reason while the policy halts scheduling.
pub const REASON_SCHEDULING_SUSPENDED: &str = "SchedulingSuspended";

/// Whether the policy halts scheduling (Karmada's `suspension.scheduling`):
/// the binding keeps the clusters and replicas it has.
pub fn scheduling_suspended(suspension: Option<&Suspension>) -> bool {
    suspension.is_some_and(|s| s.scheduling == Some(true))
}

/// The `Scheduled` condition while scheduling is suspended, given where
/// the template runs (`placed`, as the binding describes each cluster):
/// `True` when it keeps a placement, `False` when it has none yet.
pub fn scheduling_suspended_outcome(placed: &[String]) -> (bool, String) {
    const RESUME: &str = "remove spec.suspension.scheduling from the policy to schedule again";
    if placed.is_empty() {
        (
            false,
            format!("not scheduled: the policy suspends scheduling (spec.suspension.scheduling); {RESUME}"),
        )
    } else {
        (
            true,
            format!(
                "kept on {}: the policy suspends scheduling (spec.suspension.scheduling), so nothing is \
                 placed, moved or rescaled, while template changes still reach these clusters; {RESUME}",
                placed.join(", ")
            ),
        )
    }
}

/// The `Dispatching` condition to write: `False`/`DispatchingSuspended`
/// naming what is halted while suspended; `True`/`Dispatching` once
/// resumed (only when the binding already has the condition, so a binding
/// that was never suspended shows no new condition).
pub fn dispatching_condition(suspension: Option<&Suspension>, had_condition: bool) -> Option<Wanted> {
    let Some(s) = suspension.filter(|s| any_suspended(Some(s))) else {
        return had_condition.then(|| {
            Wanted::new(
                CONDITION_DISPATCHING,
                true,
                REASON_DISPATCHING,
                "dispatch runs: template changes reach every chosen cluster".to_string(),
            )
        });
    };
    let message = if s.dispatching == Some(true) {
        "dispatch is suspended to every cluster (policy spec.suspension.dispatching): no Work is written \
         or deleted, members keep running what they have; remove the suspension to resume"
            .to_string()
    } else {
        let names =
            s.dispatching_on_clusters.as_ref().map(|c| c.cluster_names.join(", ")).unwrap_or_default();
        format!(
            "dispatch is suspended to {names} (policy spec.suspension.dispatchingOnClusters): their Works are \
             not written or deleted, their members keep running what they have; remove them to resume"
        )
    };
    Some(Wanted::new(CONDITION_DISPATCHING, false, REASON_SUSPENDED, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::policy::SuspendClusters;

    fn on(names: &[&str]) -> Suspension {
        Suspension {
            dispatching: None,
            dispatching_on_clusters: Some(SuspendClusters {
                cluster_names: names.iter().map(|n| n.to_string()).collect(),
            }),
            scheduling: None,
        }
    }

    fn all(value: bool) -> Suspension {
        Suspension { dispatching: Some(value), ..Default::default() }
    }

    #[test]
    fn which_clusters_are_suspended() {
        let cases: Vec<(&str, Option<Suspension>, &str, bool)> = vec![
            ("no suspension", None, "m1", false),
            ("empty suspension", Some(Suspension::default()), "m1", false),
            ("dispatching true halts every cluster", Some(all(true)), "m1", true),
            ("dispatching false halts nothing", Some(all(false)), "m1", false),
            ("a named cluster is halted", Some(on(&["m1", "m2"])), "m2", true),
            ("another cluster is not", Some(on(&["m1"])), "m2", false),
            ("an empty list halts nothing", Some(on(&[])), "m1", false),
            (
                "dispatching true wins over a list",
                Some(Suspension { dispatching: Some(true), ..on(&["m1"]) }),
                "m2",
                true,
            ),
        ];
        for (name, suspension, cluster, want) in cases {
            assert_eq!(dispatch_suspended(suspension.as_ref(), cluster), want, "{name}");
            if want {
                assert!(any_suspended(suspension.as_ref()), "{name}: any");
            }
        }
    }

    #[test]
    fn a_dependency_follows_the_templates_that_need_it() {
        let m1 = vec!["m1".to_string()];
        let m12 = vec!["m1".to_string(), "m2".to_string()];
        let (everywhere, on_m1, on_m2) = (all(true), on(&["m1"]), on(&["m2"]));
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vec<(Option<&Suspension>, &[String])>, Option<Suspension>)> = vec![
            ("needed by nothing", vec![], None),
            ("one template, not suspended", vec![(None, &m12)], None),
            ("one template, suspended everywhere", vec![(Some(&everywhere), &m12)], Some(all(true))),
            ("one template, suspended on m1", vec![(Some(&on_m1), &m12)], Some(on(&["m1"]))),
            (
                "two templates, one runs on m1",
                vec![(Some(&everywhere), &m12), (None, &m1)],
                Some(on(&["m2"])),
            ),
            (
                "two templates, both halted on m1",
                vec![(Some(&on_m1), &m12), (Some(&everywhere), &m1)],
                Some(on(&["m1"])),
            ),
            ("halted on different clusters", vec![(Some(&on_m1), &m12), (Some(&on_m2), &m12)], None),
            ("both everywhere", vec![(Some(&everywhere), &m1), (Some(&everywhere), &m12)], Some(all(true))),
        ];
        for (name, requirers, want) in cases {
            assert_eq!(for_dependency(&requirers), want, "{name}");
        }
    }

    #[test]
    fn the_dispatching_condition() {
        // (name, suspension, had the condition, want (status, reason, message contains))
        type Case<'a> = (&'a str, Option<Suspension>, bool, Option<(bool, &'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            ("never suspended: no condition", None, false, None),
            ("dispatching false, never suspended", Some(all(false)), false, None),
            ("suspended to all", Some(all(true)), false, Some((false, REASON_SUSPENDED, "every cluster"))),
            ("suspended to some", Some(on(&["m1", "m3"])), true, Some((false, REASON_SUSPENDED, "m1, m3"))),
            ("resumed", None, true, Some((true, REASON_DISPATCHING, "dispatch runs"))),
            (
                "resumed with an empty list",
                Some(on(&[])),
                true,
                Some((true, REASON_DISPATCHING, "dispatch runs")),
            ),
        ];
        for (name, suspension, had, want) in cases {
            let got = dispatching_condition(suspension.as_ref(), had);
            match (got, want) {
                (None, None) => {}
                (Some(c), Some((ok, reason, contains))) => {
                    assert_eq!(c.type_, CONDITION_DISPATCHING, "{name}");
                    assert_eq!(c.status, if ok { "True" } else { "False" }, "{name}");
                    assert_eq!(c.reason, reason, "{name}");
                    assert!(c.message.contains(contains), "{name}: {}", c.message);
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn scheduling_suspension() {
        let scheduling = |v: Option<bool>| Suspension { scheduling: v, ..Default::default() };
        // (name, suspension, suspended)
        let cases = [
            ("no suspension", None, false),
            ("scheduling true", Some(scheduling(Some(true))), true),
            ("scheduling false", Some(scheduling(Some(false))), false),
            ("scheduling unset", Some(scheduling(None)), false),
            ("dispatching only", Some(all(true)), false),
        ];
        for (name, suspension, want) in cases {
            assert_eq!(scheduling_suspended(suspension.as_ref()), want, "{name}");
        }
        // (name, placed, scheduled, message contains)
        let outcomes: [(&str, &[&str], bool, &str); 2] = [
            ("a new template is not placed", &[], false, "not scheduled: the policy suspends scheduling"),
            ("a placed one keeps its clusters", &["m1 (2)", "m2 (1)"], true, "kept on m1 (2), m2 (1)"),
        ];
        for (name, placed, scheduled, needle) in outcomes {
            let placed: Vec<String> = placed.iter().map(|s| s.to_string()).collect();
            let (got, message) = scheduling_suspended_outcome(&placed);
            assert_eq!(got, scheduled, "{name}");
            assert!(
                message.contains(needle) && message.contains("remove spec.suspension.scheduling"),
                "{name}: {message}"
            );
        }
    }

    #[test]
    fn policies_with_a_suspension() {
        let selectors = serde_json::json!([{"apiVersion": "apps/v1", "kind": "Deployment"}]);
        let policy = |suspension: serde_json::Value| {
            serde_json::json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
                "metadata": {"name": "p", "namespace": "default"},
                "spec": {"resourceSelectors": selectors, "suspension": suspension}})
        };
        // (name, suspension, want the errors to mention)
        let cases: Vec<(&str, serde_json::Value, Option<&str>)> = vec![
            ("dispatching", serde_json::json!({"dispatching": true}), None),
            ("on clusters", serde_json::json!({"dispatchingOnClusters": {"clusterNames": ["m1"]}}), None),
            ("empty", serde_json::json!({}), None),
            ("scheduling", serde_json::json!({"scheduling": true}), None),
            (
                "scheduling is a boolean",
                serde_json::json!({"scheduling": "yes"}),
                Some("spec.suspension.scheduling"),
            ),
            (
                "a typo",
                serde_json::json!({"dispatchin": true}),
                Some("spec.suspension.dispatchin: unknown field"),
            ),
        ];
        for (name, suspension, want) in cases {
            let errors = crate::validation::validate_policy("PropagationPolicy", &policy(suspension));
            match want {
                None => assert!(errors.is_empty(), "{name}: {errors:?}"),
                Some(needle) => assert!(errors.iter().any(|e| e.contains(needle)), "{name}: {errors:?}"),
            }
        }
    }
}
