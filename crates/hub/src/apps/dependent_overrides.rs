//! A propagation policy's `dependentOverrides`, looked up in the caches
//! (`flotilla_apps_core::dependent_overrides` decides): the binder holds
//! the policy's templates while any is missing, and the policy's status
//! says which.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_apps_core::dependent_overrides::{condition, missing, waiting_message};
use flotilla_core::conditions::Wanted;
use kube::ResourceExt;

use super::state::Apps;

/// How often a template whose policy waits looks again (creating an
/// override policy that selects other templates wakes nothing).
pub(super) const RECHECK: Duration = Duration::from_secs(3);

/// The override kind a policy kind depends on, and where it is looked for.
fn looked_up(policy_kind: &str, namespace: &str) -> (&'static str, String) {
    match policy_kind {
        "PropagationPolicy" => ("OverridePolicy", format!("namespace {namespace}")),
        _ => ("ClusterOverridePolicy", "the hub".to_string()),
    }
}

fn missing_of(apps: &Apps, policy_kind: &str, namespace: &str, wanted: &[String]) -> Vec<String> {
    if wanted.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = match policy_kind {
        "PropagationPolicy" => apps
            .ops
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .map(|p| p.name_any())
            .collect(),
        _ => apps.cops.state().iter().map(|p| p.name_any()).collect(),
    };
    let present: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    missing(wanted, &present)
}

/// Why the policy's templates wait, if they do.
pub(super) fn waiting(apps: &Apps, policy_kind: &str, namespace: &str, wanted: &[String]) -> Option<String> {
    let absent = missing_of(apps, policy_kind, namespace, wanted);
    if absent.is_empty() {
        return None;
    }
    let (kind, scope) = looked_up(policy_kind, namespace);
    Some(waiting_message(&absent, kind, scope.as_str()))
}

/// The policy's `DependentOverridesPresent` condition, from the policy as
/// stored; `None` when it names none.
pub(super) fn policy_condition(
    apps: &Apps,
    policy_kind: &str,
    namespace: &str,
    object: &serde_json::Value,
) -> Option<Wanted> {
    let wanted: Vec<String> = object
        .pointer("/spec/dependentOverrides")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let absent = missing_of(apps, policy_kind, namespace, &wanted);
    let (kind, scope) = looked_up(policy_kind, namespace);
    condition(&wanted, &absent, kind, &scope)
}
