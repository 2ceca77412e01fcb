//! A dependency's `conflictResolution` and `preserveResourcesOnDeletion`,
//! from the bindings of the templates that need it
//! (`flotilla_apps_core::dependency_policy::inherited` decides).

use flotilla_api::work::{BindingSnapshot, ResourceBinding};
use flotilla_apps_core::dependency_policy::{inherited, Inherited, Requirer};
use kube::runtime::reflector::ObjectRef;

use super::state::Apps;

/// Overwrite and preserve win, as in Karmada.
pub(super) fn for_dependency(apps: &Apps, namespace: &str, required_by: &[BindingSnapshot]) -> Inherited {
    let bindings: Vec<_> = required_by
        .iter()
        .filter_map(|b| {
            let r = ObjectRef::<ResourceBinding>::new(&b.name).within(namespace);
            apps.bindings.get(&r).map(|rb| (b.name.as_str(), rb))
        })
        .collect();
    let requirers: Vec<Requirer> = bindings
        .iter()
        .map(|(name, rb)| Requirer {
            binding: name,
            conflict_resolution: rb.spec.spec.conflict_resolution,
            preserve_resources_on_deletion: rb.spec.spec.preserve_resources_on_deletion,
        })
        .collect();
    inherited(&requirers)
}
