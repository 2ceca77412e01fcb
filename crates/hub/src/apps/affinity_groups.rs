//! The binder's memory of the `clusterAffinities` group a binding uses
//! (decisions in `flotilla_apps_core::scheduler::affinity_groups`).

use flotilla_api::work::BindingStatus;

use super::index::{lock, TemplateKey};
use super::state::Apps;

/// The group the binding uses now: the binder's last outcome (fresher
/// than the stored status, which the status queue writes later), else the
/// binding's `status.schedulerObservingAffinityName` (after a restart).
pub(super) fn observed(apps: &Apps, key: &TemplateKey, stored: Option<&BindingStatus>) -> Option<String> {
    let remembered = lock(&apps.outcomes).get(key).and_then(|o| o.affinity_name.clone());
    remembered.or_else(|| stored.and_then(|s| s.scheduler_observed_affinity_name.clone()))
}

/// Records the group the binding uses now, for its status and the next
/// pass.
pub(super) fn set(apps: &Apps, key: &TemplateKey, name: Option<String>) {
    let changed = match lock(&apps.outcomes).get_mut(key) {
        Some(o) if o.affinity_name != name => {
            o.affinity_name = name;
            true
        }
        _ => false,
    };
    if changed {
        apps.status.add(key.clone());
    }
}
