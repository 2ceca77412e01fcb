//! The override policies a template may take, from the caches (those
//! judged invalid left out); `selection::applicable_overrides` picks and
//! orders those that apply.

use flotilla_apps_core::selection::{PolicyScope, TemplateMeta};
use kube::ResourceExt;

use super::state::Apps;

pub(super) type OwnedOverride = (PolicyScope, String, String, flotilla_api::policy::OverrideSpec);

pub(super) fn override_candidates(apps: &Apps, meta: &TemplateMeta) -> Vec<OwnedOverride> {
    let mut out: Vec<OwnedOverride> = Vec::new();
    for p in apps.cops.state() {
        if !apps.policy_is_invalid("ClusterOverridePolicy", "", &p.name_any()) {
            out.push((PolicyScope::Cluster, String::new(), p.name_any(), p.spec.spec.clone()));
        }
    }
    for p in apps.ops.state() {
        let ns = p.namespace().unwrap_or_default();
        if ns == meta.namespace && !apps.policy_is_invalid("OverridePolicy", &ns, &p.name_any()) {
            out.push((PolicyScope::Namespaced, ns, p.name_any(), p.spec.spec.clone()));
        }
    }
    out
}
