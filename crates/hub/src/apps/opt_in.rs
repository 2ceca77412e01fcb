//! `hub run --require-opt-in`: whether the binder may manage a template
//! (`flotilla_apps_core::migration::opted_in` decides; this reads the
//! namespace's labels and says why not, once, as an Event on the template).

use std::time::Duration;

use flotilla_api::work::BindingSnapshot;
use flotilla_apps_core::migration::{opted_in, REASON_NOT_OPTED_IN};
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DynamicObject, PostParams};
use kube::Api;

use super::index::{lock, TemplateKey};
use super::state::Apps;
use crate::error::Error;

/// How often a template that is not opted in is looked at again (the
/// namespace's labels are not watched).
pub(super) const RECHECK: Duration = Duration::from_secs(15);

/// `None` when the fleet may manage the template, else why not. The first
/// time a template without a binding is refused, an Event on it says why
/// (a bound one shows it on its binding's `Scheduled` condition).
pub(super) async fn refusal(
    apps: &Apps,
    key: &TemplateKey,
    template: &DynamicObject,
    required_by: &[BindingSnapshot],
) -> Result<Option<String>, Error> {
    if !apps.opt_in.required {
        return Ok(None);
    }
    let empty = Default::default();
    let labels = template.metadata.labels.as_ref().unwrap_or(&empty);
    let namespace_labels = if key.namespace.is_empty() {
        None
    } else {
        Api::<Namespace>::all(apps.client.clone())
            .get_opt(&key.namespace)
            .await?
            .and_then(|n| n.metadata.labels)
    };
    let Err(message) =
        opted_in(&apps.opt_in, &key.namespace, namespace_labels.as_ref(), labels, !required_by.is_empty())
    else {
        return Ok(None);
    };
    let said = lock(&apps.outcomes).get(key).is_some_and(|o| o.reason == REASON_NOT_OPTED_IN);
    if !said {
        tracing::info!(template = %key, reason = %message, "template not opted in; left alone");
        if apps.binding_status(key).is_none() {
            publish(apps, key, template, &message).await;
        }
    }
    Ok(Some(message))
}

async fn publish(apps: &Apps, key: &TemplateKey, template: &DynamicObject, message: &str) {
    let namespace = if key.namespace.is_empty() { "default".to_string() } else { key.namespace.clone() };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let event = CoreEvent {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", key.name)),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(key.api_version.clone()),
            kind: Some(key.kind.clone()),
            name: Some(key.name.clone()),
            namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
            uid: template.metadata.uid.clone(),
            ..Default::default()
        },
        type_: Some("Normal".into()),
        reason: Some(REASON_NOT_OPTED_IN.into()),
        message: Some(message.chars().take(1000).collect()),
        action: Some("Bind".into()),
        source: Some(EventSource { component: Some("flotilla-hub".into()), host: None }),
        reporting_component: Some("flotilla-hub".into()),
        reporting_instance: Some("flotilla-hub".into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<CoreEvent> = Api::namespaced(apps.client.clone(), &namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(template = %key, error = %e, "could not record an event");
    }
}
