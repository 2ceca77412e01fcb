//! The binder's memory of the `clusterAffinities` group a binding uses
//! (decisions in `flotilla_apps_core::scheduler::affinity_groups`).

use flotilla_api::work::BindingStatus;

use super::index::{lock, Index, TemplateKey};

/// The group the binding uses now: the binder's last outcome (fresher
/// than the stored status, which the status queue writes later), else the
/// binding's `status.schedulerObservingAffinityName` (after a restart).
pub(super) fn observed(apps: &Index, key: &TemplateKey, stored: Option<&BindingStatus>) -> Option<String> {
    let remembered = lock(&apps.outcomes).get(key).and_then(|o| o.affinity_name.clone());
    remembered.or_else(|| stored.and_then(|s| s.scheduler_observed_affinity_name.clone()))
}

/// Records the group the binding uses now, for its status and the next
/// pass; whether that changed the outcome (its status is to be written).
pub(super) fn set(apps: &Index, key: &TemplateKey, name: Option<String>) -> bool {
    match lock(&apps.outcomes).get_mut(key) {
        Some(o) if o.affinity_name != name => {
            o.affinity_name = name;
            true
        }
        _ => false,
    }
}
