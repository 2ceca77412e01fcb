//! The application controllers' Events: the binder's on bindings
//! (`apps_core::binding_events`), and the members' Warning Events about
//! propagated objects, which agents report on their Works
//! (`status.memberWarnings`) and the hub re-emits on the template, so
//! `kubectl describe` of a template on the hub shows
//! `m1: Pod/web-...: 0/3 nodes are available ...`.

use flotilla_api::work::{keys, MemberWarning, Work};
use flotilla_apps_core::member_events::{hub_message, to_forward};
use flotilla_core::events::Notice;
use futures::channel::mpsc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;

use super::event_state::Outgoing;
use super::index::lock;
use super::state::Apps;
use crate::events::publish;

/// Publishes what `observe` queued (one at a time: the recorder's series
/// cache wants its patches in order).
pub(super) async fn forward(apps: std::sync::Arc<Apps>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some((reference, notice)) = rx.next().await {
        publish(&apps.events.members, &reference, &notice).await;
    }
}

/// A Work changed: queue its member warnings not yet re-emitted as Events
/// on its template.
pub(super) fn observe(apps: &Apps, work: &Work, deleted: bool) {
    let id = format!("{}/{}", work.namespace().unwrap_or_default(), work.name_any());
    let current: Vec<MemberWarning> = if deleted {
        Vec::new()
    } else {
        work.status.as_ref().map(|s| s.member_warnings.clone()).unwrap_or_default()
    };
    let before = {
        let mut seen = lock(&apps.events.seen);
        if current.is_empty() {
            seen.remove(&id)
        } else {
            seen.insert(id, current.clone())
        }
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let new = to_forward(before.as_deref(), &current, now);
    if new.is_empty() {
        return;
    }
    let Some(cluster) =
        work.namespace().and_then(|ns| ns.strip_prefix("flotilla-cluster-").map(String::from))
    else {
        return;
    };
    let Some(template) = template_of(apps, work) else { return };
    for warning in new {
        let notice =
            Notice::warning(&warning.reason, &format!("Member {cluster}"), hub_message(&cluster, warning));
        tracing::debug!(%cluster, reason = %warning.reason, object = %warning.object, "member warning");
        // The receiver lives as long as the controllers.
        let _ = apps.events.outgoing.unbounded_send((template.clone(), notice));
    }
}

/// The template a Work carries, from its binding in the cache.
fn template_of(apps: &Apps, work: &Work) -> Option<ObjectReference> {
    let hash = work.labels().get(keys::TEMPLATE_KEY)?;
    let key = lock(&apps.by_hash).get(hash).cloned()?;
    let resource = apps.with_binding(&key, |spec, _, _| spec.resource.clone())?;
    Some(ObjectReference {
        api_version: Some(resource.api_version),
        kind: Some(resource.kind),
        namespace: (!resource.namespace.is_empty()).then_some(resource.namespace),
        name: Some(resource.name),
        uid: (!resource.uid.is_empty()).then_some(resource.uid),
        ..Default::default()
    })
}
