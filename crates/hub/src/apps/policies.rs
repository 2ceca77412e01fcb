//! Policy status, the backstop of the fail-open admission webhook: `Valid`
//! (the policy's own syntax and rules, `flotilla_apps_core::validation`, judged
//! on the policy as stored, unknown fields included; an invalid policy is
//! ignored, and the binder starts only once every policy of the first list
//! is judged) on every policy kind, and, on propagation
//! policies, `ResourcesResolved` (whether the hub, and some member, serve
//! the kinds it selects: `flotilla_apps_core::resolution`) and, when it
//! names `dependentOverrides`, `DependentOverridesPresent`. Written on each
//! policy event and re-checked every `RECHECK`, since a CRD installed on the
//! hub or a member that starts serving an API raises no policy event.

use std::sync::Arc;
use std::time::Duration;

use flotilla_apps_core::resolution::{self, MemberApis, OnHub, Selected};
use flotilla_core::conditions::{self, Wanted};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::Api;

use super::index::PolicyEvent;
use super::state::{now, Apps};

const MANAGER: &str = "flotilla-hub-policy";
const VALID: &str = "Valid";
/// How often every propagation policy's `ResourcesResolved` is re-checked.
const RECHECK: Duration = Duration::from_secs(15);

/// Every cached (cluster) propagation policy, as an event to judge.
fn propagation_policy_events(apps: &Apps) -> Vec<PolicyEvent> {
    let pps = apps.pps.state().into_iter().map(|p| PolicyEvent::pp(&p));
    pps.chain(apps.cpps.state().into_iter().map(|p| PolicyEvent::cpp(&p))).collect()
}

/// Re-checks every propagation policy's conditions, forever.
pub(super) async fn recheck(apps: Arc<Apps>) {
    apps.wait_ready().await;
    loop {
        tokio::time::sleep(RECHECK).await;
        for event in propagation_policy_events(&apps) {
            apps.policy_status(&event).await;
        }
    }
}

/// Judges every policy of the first list, then lets the binder start.
pub(super) async fn judge(apps: Arc<Apps>) {
    apps.wait_ready().await;
    let mut events = propagation_policy_events(&apps);
    events.extend(apps.ops.state().iter().map(|p| PolicyEvent::op(p)));
    events.extend(apps.cops.state().iter().map(|p| PolicyEvent::cop(p)));
    for event in &events {
        apps.policy_status(event).await;
    }
    tracing::info!(policies = events.len(), "policies judged; binding starts");
    apps.policies_judged.send_replace(true);
}

impl Apps {
    /// Records whether a policy is usable and writes its conditions when
    /// they changed.
    pub(super) async fn policy_status(&self, event: &PolicyEvent) {
        let api = self.policy_api(event);
        let (object, generation) = self.raw_policy(&api, event).await;
        let errors = flotilla_apps_core::validation::validate_policy(event.kind, &object);
        let newly_invalid = self.judge_policy(event.kind, &event.namespace, &event.name, errors.is_empty());
        if newly_invalid {
            tracing::info!(kind = event.kind, namespace = %event.namespace, name = %event.name,
                errors = %errors.join("; "), "policy is invalid; ignoring it");
        }
        let valid = if errors.is_empty() {
            Wanted::new(VALID, true, "Valid", "the policy is in use")
        } else {
            Wanted::new(VALID, false, "Invalid", errors.join("; "))
        };
        let current: &[Condition] =
            event.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        let now = now();
        let mut wanted = vec![conditions::condition(current, valid.generation(generation), &now)];
        if event.kind.ends_with("PropagationPolicy") && errors.is_empty() {
            let written = super::claims::bindings_written(self, event.kind, &event.namespace, &event.name);
            wanted.push(conditions::condition(current, written.generation(generation), &now));
            if let Some(priority) = super::claims::priority_condition(self, &object) {
                wanted.push(conditions::condition(current, priority.generation(generation), &now));
            }
        }
        if let Some(selects) = event.selects.as_ref().filter(|_| event.kind.ends_with("PropagationPolicy")) {
            let resolved = self.resources_resolved(selects).await;
            match resolved {
                Some(r) => wanted.push(conditions::condition(current, r.generation(generation), &now)),
                // Discovery failed: keep what was found last.
                None => wanted.extend(current.iter().find(|c| c.type_ == resolution::CONDITION).cloned()),
            }
            let waiting =
                super::dependent_overrides::policy_condition(self, event.kind, &event.namespace, &object);
            wanted.extend(waiting.map(|w| conditions::condition(current, w.generation(generation), &now)));
        }
        let mut mine: Vec<Condition> =
            current.iter().filter(|c| wanted.iter().any(|w| w.type_ == c.type_)).cloned().collect();
        mine.sort_by(|a, b| a.type_.cmp(&b.type_));
        wanted.sort_by(|a, b| a.type_.cmp(&b.type_));
        if conditions::same(&mine, &wanted) && mine.len() == current.len() {
            return;
        }
        let body = serde_json::json!({
            "apiVersion": "policy.flotilla.io/v1alpha1",
            "kind": event.kind,
            "metadata": {"name": event.name},
            "status": {"conditions": wanted},
        });
        let params = PatchParams::apply(MANAGER).force();
        if let Err(e) = api.patch_status(&event.name, &params, &Patch::Apply(&body)).await {
            tracing::debug!(policy = %event.name, error = %e, "could not write policy status");
        }
    }

    /// The API of the policy's kind, in its namespace.
    fn policy_api(&self, event: &PolicyEvent) -> Api<DynamicObject> {
        let plural = match event.kind {
            "PropagationPolicy" => "propagationpolicies",
            "ClusterPropagationPolicy" => "clusterpropagationpolicies",
            "OverridePolicy" => "overridepolicies",
            _ => "clusteroverridepolicies",
        };
        let gvk = GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", event.kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        if event.namespace.is_empty() {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &event.namespace, &resource)
        }
    }

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

    /// `ResourcesResolved` for the kinds a propagation policy selects.
    async fn resources_resolved(&self, selects: &[(String, String)]) -> Option<Wanted> {
        let mut on_hub = Vec::with_capacity(selects.len());
        for (api_version, kind) in selects {
            on_hub.push(self.on_hub(api_version, kind).await);
        }
        let selected: Vec<Selected> = selects
            .iter()
            .zip(&on_hub)
            .map(|((api_version, kind), on_hub)| Selected { api_version, kind, on_hub })
            .collect();
        let clusters = self.clusters.state();
        let members: Vec<MemberApis> = clusters
            .iter()
            .map(|mc| MemberApis {
                name: mc.metadata.name.as_deref().unwrap_or_default(),
                api_enablements: mc.status.as_ref().map(|s| s.api_enablements.as_slice()).unwrap_or_default(),
            })
            .collect();
        resolution::resources_resolved(&selected, &members)
    }

    /// What the hub's discovery says of a kind (watched kinds are known).
    async fn on_hub(&self, api_version: &str, kind: &str) -> OnHub {
        if let Some(k) = self.kind(api_version, kind) {
            return OnHub::Served { plural: k.resource.plural };
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((resource, _)) => OnHub::Served { plural: resource.plural },
            Err(kube::Error::Discovery(_)) => OnHub::NotServed,
            Err(kube::Error::Api(e)) if e.code == 404 => OnHub::NotServed,
            Err(e) => OnHub::Failed(e.to_string()),
        }
    }
}
