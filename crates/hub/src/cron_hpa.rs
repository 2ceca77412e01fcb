//! The CronFederatedHPA controller: at each rule's tick, sets the target
//! hub template's replicas through its `/scale` subresource, or a
//! FederatedHPA's `minReplicas`/`maxReplicas` with a JSON merge patch (the
//! binder then divides the template's new replicas as usual).
//!
//! Level-triggered and restart-safe: the status is the record
//! (`flotilla_apps_core::cron_hpa` decides what is due from it and now),
//! written with server-side apply after the ticks ran; the controller
//! requeues itself for the soonest next tick.

use std::sync::Arc;
use std::time::Duration;

use flotilla_api::cron_hpa::{
    conditions as condition_types, CronFederatedHPA, CronFederatedHPAStatus, ScaleTargetRef,
    FEDERATED_HPA_KIND, FEDERATED_HPA_PLURAL,
};
use flotilla_apps_core::cron_hpa::{self as decide, Outcome, RuleStep, Scale};
use futures::StreamExt;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::error::Error;

/// Field manager of the CronFederatedHPA status and of the scale writes.
pub const FIELD_MANAGER: &str = "flotilla-cron-hpa";

/// Woken this much after a tick, so the tick is at or before `now`.
const TICK_MARGIN: Duration = Duration::from_millis(200);
/// Retry delay after a failed reconcile (hub errors).
const RETRY: Duration = Duration::from_secs(2);

struct Ctx {
    client: Client,
    recorder: Recorder,
}

/// Runs the controller until the process ends (or the future is dropped).
pub async fn run(client: Client) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter { controller: FIELD_MANAGER.into(), instance: None },
        ),
    });
    let api: Api<CronFederatedHPA> = Api::all(client);
    tracing::info!("CronFederatedHPA controller running");
    Controller::new(api, watcher::Config::default())
        .run(|o, c| flotilla_metrics::reconcile("cron-federated-hpa", o, c, reconcile), error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "CronFederatedHPA reconcile");
            }
        })
        .await;
}

fn error_policy(object: Arc<CronFederatedHPA>, error: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(cron_hpa = %object.name_any(), error = %error, "CronFederatedHPA reconcile failed; will retry");
    Action::requeue(RETRY)
}

/// Why a scale did not happen.
enum ScaleError {
    /// The target or the request is wrong: recorded as a failed execution.
    Refused(String),
    /// The hub failed: the tick stays due and the reconcile retries.
    Hub(kube::Error),
}

fn classify(error: kube::Error, target: &str) -> ScaleError {
    match error {
        kube::Error::Api(status) if status.code == 404 => {
            ScaleError::Refused(format!("{target} does not exist on the hub"))
        }
        kube::Error::Api(status)
            if (400..500).contains(&status.code) && status.code != 401 && status.code != 429 =>
        {
            ScaleError::Refused(format!("the hub refused to scale {target}: {}", status.message))
        }
        e => ScaleError::Hub(e),
    }
}

/// Applies `scale` to the target in `namespace`.
async fn apply_scale(
    client: &Client,
    namespace: &str,
    target: &ScaleTargetRef,
    scale: Scale,
) -> Result<(), ScaleError> {
    let described = format!("{} {namespace}/{}", target.kind, target.name);
    let (group, version) = target.api_version.rsplit_once('/').unwrap_or(("", &target.api_version));
    let gvk = GroupVersionKind::gvk(group, version, &target.kind);
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let patch = scale.merge_patch();
    if target.kind == FEDERATED_HPA_KIND {
        // The FederatedHPA type is not this module's: two fields, merged.
        let resource = ApiResource::from_gvk_with_plural(&gvk, FEDERATED_HPA_PLURAL);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        return api.patch(&target.name, &params, &Patch::Merge(&patch)).await.map(|_| ()).map_err(
            |e| match e {
                kube::Error::Api(s) if s.code == 404 => ScaleError::Refused(format!(
                    "{described} does not exist on the hub (or the hub does not serve {})",
                    target.api_version
                )),
                e => classify(e, &described),
            },
        );
    }
    let (resource, capabilities) = match kube::discovery::pinned_kind(client, &gvk).await {
        Ok(found) => found,
        Err(kube::Error::Discovery(_)) => {
            return Err(ScaleError::Refused(format!(
                "the hub does not serve {} {}",
                target.api_version, target.kind
            )))
        }
        Err(e) => return Err(classify(e, &described)),
    };
    if !capabilities.subresources.iter().any(|(sub, _)| sub.plural == "scale") {
        return Err(ScaleError::Refused(format!(
            "{} {} has no /scale subresource; a CronFederatedHPA scales a workload with one, or a FederatedHPA",
            target.api_version, target.kind
        )));
    }
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    api.patch_scale(&target.name, &params, &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| classify(e, &described))
}

async fn reconcile(object: Arc<CronFederatedHPA>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let now = Timestamp::now();
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    let federated = decide::targets_federated_hpa(&object.spec);
    let previous = object.status.clone().unwrap_or_default();
    let history_of = |rule: &str| previous.execution_histories.iter().find(|h| h.rule_name == rule);
    let steps: Vec<RuleStep> = object
        .spec
        .rules
        .iter()
        .map(|rule| {
            // The system's tz database (jiff caches what it reads); UTC
            // even where the host has none.
            let zone_name = decide::zone_name(rule);
            let zone = k8s_openapi::jiff::tz::db()
                .get(zone_name)
                .ok()
                .or_else(|| (zone_name == decide::DEFAULT_ZONE).then_some(TimeZone::UTC));
            decide::step(rule, federated, zone.as_ref(), history_of(&rule.name), now)
        })
        .collect();

    let mut outcomes: Vec<Option<Outcome>> = steps
        .iter()
        .map(|s| match s {
            RuleStep::Skip { tick, message, .. } => {
                Some(Outcome::Failed { tick: *tick, message: message.clone() })
            }
            _ => None,
        })
        .collect();
    let mut hub_error = None;
    for i in decide::run_order(&steps) {
        let RuleStep::Run { tick, scale, .. } = steps[i] else { continue };
        let rule = &object.spec.rules[i].name;
        let target = &object.spec.scale_target_ref;
        match apply_scale(&ctx.client, &namespace, target, scale).await {
            Ok(()) => {
                let message = format!(
                    "rule {rule} (tick {tick}): set {} {} {}",
                    target.kind,
                    target.name,
                    scale.describe()
                );
                tracing::info!(cron_hpa = %name, namespace = %namespace, rule = %rule, %tick, "{message}");
                publish(&ctx, &object, EventType::Normal, "Scaled", &message).await;
                outcomes[i] = Some(Outcome::Succeeded { tick, scale });
            }
            Err(ScaleError::Refused(message)) => {
                publish(&ctx, &object, EventType::Warning, "ScaleFailed", &format!("rule {rule}: {message}"))
                    .await;
                outcomes[i] = Some(Outcome::Failed { tick, message });
            }
            Err(ScaleError::Hub(e)) => {
                // Record what ran; this tick stays due for the retry.
                hub_error = Some(e);
                break;
            }
        }
    }
    for (i, step) in steps.iter().enumerate() {
        if let (RuleStep::Skip { message, .. }, Some(_)) = (step, &outcomes[i]) {
            let rule = &object.spec.rules[i].name;
            publish(&ctx, &object, EventType::Warning, "TickSkipped", &format!("rule {rule}: {message}"))
                .await;
        }
    }

    let histories: Vec<_> = object
        .spec
        .rules
        .iter()
        .zip(&steps)
        .zip(outcomes)
        .map(|((rule, step), outcome)| {
            // A rule whose tick is still due keeps its announced tick.
            let next = match (step, &outcome) {
                (RuleStep::Run { .. }, None) => {
                    history_of(&rule.name).and_then(|h| h.next_execution_time.clone()).map(|t| t.0)
                }
                _ => step.next(),
            };
            decide::record(rule, history_of(&rule.name), next, outcome, now)
        })
        .collect();
    let invalid: Vec<String> = steps
        .iter()
        .filter_map(|s| match s {
            RuleStep::Invalid { message } => Some(message.clone()),
            _ => None,
        })
        .collect();
    let conditions =
        decide::conditions(&invalid, &histories, &previous.conditions, object.metadata.generation, now);
    let was_valid = previous.conditions.iter().find(|c| c.type_ == condition_types::VALID);
    if let Some(valid) = conditions.iter().find(|c| c.type_ == condition_types::VALID) {
        if valid.status == "False" && was_valid.is_none_or(|w| w.message != valid.message) {
            publish(&ctx, &object, EventType::Warning, "InvalidRule", &valid.message).await;
        }
    }
    let status = CronFederatedHPAStatus { execution_histories: histories, conditions };
    if object.status.as_ref() != Some(&status) {
        let api: Api<CronFederatedHPA> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": "autoscaling.flotilla.io/v1alpha1", "kind": "CronFederatedHPA", "status": status
        });
        match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(e) = hub_error {
        return Err(e.into());
    }
    Ok(match decide::requeue_after(&steps, now) {
        Some(wait) => Action::requeue(wait + TICK_MARGIN),
        None => Action::await_change(),
    })
}

async fn publish(ctx: &Ctx, object: &CronFederatedHPA, type_: EventType, reason: &str, message: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(message.chars().take(1000).collect()),
        action: "Scale".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(error = %e, "publishing a CronFederatedHPA event");
    }
}
