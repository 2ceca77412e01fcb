//! The dependencies (`propagateDeps`) of a template a strategy takes
//! follow its rollout: the template's revision keeps each dependency as it
//! is now (so a ConfigMap's change is a new revision of the template that
//! needs it, rolled out in its waves and gated on its health), and each
//! cluster gets the dependencies of the revision it is given.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::work::{BindingSnapshot, ObjectReference, ResourceBinding};
use flotilla_apps_core::revision::{KeptDependency, RevisionContent};
use flotilla_apps_core::selection::{applicable_overrides, OverrideCandidate, TemplateMeta};
use kube::api::DynamicObject;
use kube::runtime::reflector::ObjectRef;
use kube::Api;

use super::index::{lock, TemplateKey};
use super::rollouts::Given;
use super::state::Apps;
use crate::error::Error;

/// How soon a dependency looks again while the template it follows has
/// not given its clusters a revision yet (e.g. just after a restart).
const WAIT_FOR_TEMPLATE: Duration = Duration::from_secs(1);

/// The dependencies as they are now, each with the overrides that apply
/// to it; those not found are left out (the binding says they are missing).
pub(super) async fn kept(
    apps: &Apps,
    namespace: &str,
    dependencies: &[ObjectReference],
) -> Result<Vec<KeptDependency>, Error> {
    let mut out = Vec::new();
    for d in dependencies {
        let Some(kind) = apps.kind(&d.api_version, &d.kind) else { continue };
        let api: Api<DynamicObject> = Api::namespaced_with(apps.client.clone(), namespace, &kind.resource);
        let Some(object) = api.get_opt(&d.name).await? else { continue };
        let mut json = serde_json::to_value(&object)?;
        if let Some(o) = json.as_object_mut() {
            o.insert("apiVersion".into(), d.api_version.clone().into());
            o.insert("kind".into(), d.kind.clone().into());
        }
        let labels = object.metadata.labels.clone().unwrap_or_default();
        let meta = TemplateMeta {
            api_version: &d.api_version,
            kind: &d.kind,
            namespace,
            name: &d.name,
            labels: &labels,
        };
        let owned = super::override_candidates::override_candidates(apps, &meta);
        let candidates: Vec<OverrideCandidate> = owned
            .iter()
            .map(|(scope, ns, name, spec)| OverrideCandidate { scope: *scope, namespace: ns, name, spec })
            .collect();
        let applicable = applicable_overrides(&meta, &candidates);
        out.push(KeptDependency {
            api_version: d.api_version.clone(),
            kind: d.kind.clone(),
            name: d.name.clone(),
            content: RevisionContent::of(&json, &applicable),
        });
    }
    Ok(out)
}

/// The template a binding is for.
fn template_of(apps: &Apps, namespace: &str, binding: &str) -> Option<TemplateKey> {
    let b = apps.bindings.get(&ObjectRef::<ResourceBinding>::new(binding).within(namespace))?;
    let r = &b.spec.spec.resource;
    Some(TemplateKey {
        api_version: r.api_version.clone(),
        kind: r.kind.clone(),
        namespace: namespace.to_string(),
        name: r.name.clone(),
    })
}

/// What a dependency's clusters get when a template that needs it is under
/// a strategy: per cluster, the dependency as the revision that template
/// gives the cluster keeps it. `None` when no such template needs it (it
/// changes everywhere at once, as before). A dependency that changed wakes
/// the templates following it, whose next revision then holds it.
pub(super) fn follow(
    apps: &Apps,
    key: &TemplateKey,
    current: &RevisionContent,
    required_by: &[BindingSnapshot],
) -> Option<Given> {
    let following: Vec<TemplateKey> = required_by
        .iter()
        .filter_map(|b| template_of(apps, &key.namespace, &b.name))
        .filter(|t| lock(&apps.rolling).contains(t))
        .collect();
    if following.is_empty() {
        return None;
    }
    let mut per_cluster = BTreeMap::new();
    let mut waiting = false;
    for template in &following {
        let Some((desired, given)) = apps.rollouts.given_of(template) else {
            waiting = true;
            continue;
        };
        if desired.dependency(&key.api_version, &key.kind, &key.name) != Some(current) {
            // Its next pass keeps this dependency as it is now.
            apps.binder.add(template.clone());
        }
        for (cluster, (revision, content)) in given {
            let Some(dependency) = content.dependency(&key.api_version, &key.kind, &key.name) else {
                continue;
            };
            per_cluster.entry(cluster).or_insert_with(|| (revision, Arc::new(dependency.clone())));
        }
    }
    Some(Given::following(per_cluster, waiting.then_some(WAIT_FOR_TEMPLATE)))
}
