//! What the binder says of a template: its outcome (the binding's
//! `Scheduled` condition, written by the status queue), recorded by every
//! step that ends or decides a pass.

use flotilla_api::work::TargetCluster;
use flotilla_apps_core::binding_status::Outcome;

use super::index::{lock, TemplateKey};
use super::state::Apps;

/// Records the binder's outcome for a template; the status queue is woken
/// only when it changed.
pub(super) fn record(
    apps: &Apps,
    key: &TemplateKey,
    scheduled: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let mut outcomes = lock(&apps.outcomes);
    // The group in use is the scheduler's to change (`set_affinity_group`).
    let affinity_name = outcomes.get(key).and_then(|o| o.affinity_name.clone());
    let outcome =
        Outcome { scheduled, reason: reason.into(), message: message.into(), generation, affinity_name };
    let changed = outcomes.insert(key.clone(), outcome.clone()) != Some(outcome);
    drop(outcomes);
    if changed {
        apps.status.add(key.clone());
    }
}

/// A cluster as outcome messages name it (with its replicas when divided).
pub(super) fn describe(c: &TargetCluster, has_replicas: bool) -> String {
    if has_replicas {
        format!("{} ({})", c.name, c.replicas)
    } else {
        c.name.clone()
    }
}
