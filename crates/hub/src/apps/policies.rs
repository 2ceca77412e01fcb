//! Policy validation by the controllers: the backstop of the fail-open
//! admission webhook. Each policy is judged as stored (unknown fields
//! included), its `Valid` condition written, and an invalid one ignored;
//! the binder starts only once every policy of the first list is judged.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Api;

use super::{lock, Apps, PolicyEvent};

/// Judges every policy of the first list, then lets the binder start.
pub(super) async fn judge(apps: Arc<Apps>) {
    apps.wait_ready().await;
    let events: Vec<PolicyEvent> = apps
        .pps
        .state()
        .iter()
        .map(|p| PolicyEvent::pp(p))
        .chain(apps.cpps.state().iter().map(|p| PolicyEvent::cpp(p)))
        .chain(apps.ops.state().iter().map(|p| PolicyEvent::op(p)))
        .chain(apps.cops.state().iter().map(|p| PolicyEvent::cop(p)))
        .collect();
    for event in &events {
        apps.validate_policy(event).await;
    }
    tracing::info!(policies = events.len(), "policies judged; binding starts");
    apps.policies_judged.send_replace(true);
}

impl Apps {
    pub(super) async fn wait_policies_judged(&self) {
        let mut judged = self.policies_judged.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = judged.wait_for(|j| *j).await;
    }

    /// The policy as stored, unknown fields included (the typed caches drop
    /// them, and they are what the webhook would have refused); the cached
    /// copy when the API does not answer.
    async fn raw_policy(
        &self,
        api: &Api<DynamicObject>,
        event: &PolicyEvent,
    ) -> (serde_json::Value, Option<i64>) {
        for attempt in 1..=3 {
            match api.get_opt(&event.name).await {
                Ok(Some(raw)) => {
                    let generation = raw.metadata.generation;
                    if let Ok(value) = serde_json::to_value(&raw) {
                        return (value, generation);
                    }
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(policy = %event.name, attempt, error = %e, "reading the stored policy failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        (event.object.clone(), event.generation)
    }

    pub(super) async fn validate_policy(&self, event: &PolicyEvent) {
        let plural = match event.kind {
            "PropagationPolicy" => "propagationpolicies",
            "ClusterPropagationPolicy" => "clusterpropagationpolicies",
            "OverridePolicy" => "overridepolicies",
            _ => "clusteroverridepolicies",
        };
        let gvk = GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", event.kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = if event.namespace.is_empty() {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &event.namespace, &resource)
        };
        let (object, generation) = self.raw_policy(&api, event).await;
        let errors = flotilla_core::validation::validate_policy(event.kind, &object);
        let id = (event.kind.to_string(), event.namespace.clone(), event.name.clone());
        if errors.is_empty() {
            lock(&self.invalid_policies).remove(&id);
        } else {
            lock(&self.invalid_policies).insert(id);
        }
        if !errors.is_empty() {
            tracing::info!(kind = event.kind, namespace = %event.namespace, name = %event.name,
                errors = %errors.join("; "), "policy is invalid; ignoring it");
        }
        let (status, reason, message) = if errors.is_empty() {
            ("True", "Valid", "the policy is in use".to_string())
        } else {
            ("False", "Invalid", errors.join("; "))
        };
        let current = event.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Valid"));
        if current.is_some_and(|c| {
            c.status == status && c.message == message && c.observed_generation == generation
        }) {
            return;
        }
        let body = serde_json::json!({
            "apiVersion": "policy.flotilla.io/v1alpha1",
            "kind": event.kind,
            "metadata": {"name": event.name},
            "status": {"conditions": [{
                "type": "Valid", "status": status, "reason": reason, "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
            }]}
        });
        let params = kube::api::PatchParams::apply("flotilla-hub-policy").force();
        if let Err(e) = api.patch_status(&event.name, &params, &kube::api::Patch::Apply(&body)).await {
            tracing::debug!(policy = %event.name, error = %e, "could not write policy status");
        }
    }

    pub(super) fn policy_is_invalid(&self, kind: &str, namespace: &str, name: &str) -> bool {
        lock(&self.invalid_policies).contains(&(kind.to_string(), namespace.to_string(), name.to_string()))
    }
}
