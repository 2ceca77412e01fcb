//! A dependency's suspension, from the bindings of the templates that need
//! it (`flotilla_apps_core::suspension::for_dependency` decides).

use flotilla_api::policy::Suspension;
use flotilla_api::work::{BindingSnapshot, ResourceBinding};
use kube::runtime::reflector::ObjectRef;

use super::state::Apps;

/// Suspended where every template needing it there is suspended.
pub(super) fn for_dependency(
    apps: &Apps,
    namespace: &str,
    required_by: &[BindingSnapshot],
) -> Option<Suspension> {
    let specs: Vec<(Option<Suspension>, Vec<String>)> = required_by
        .iter()
        .map(|b| {
            let r = ObjectRef::<ResourceBinding>::new(&b.name).within(namespace);
            (apps.bindings.get(&r).and_then(|rb| rb.spec.spec.suspension.clone()), b.clusters.clone())
        })
        .collect();
    let requirers: Vec<(Option<&Suspension>, &[String])> =
        specs.iter().map(|(s, clusters)| (s.as_ref(), clusters.as_slice())).collect();
    flotilla_apps_core::suspension::for_dependency(&requirers)
}
