//! The FederatedHPA controller. Every sync period, per FederatedHPA: reads
//! the target's `/scale` on the hub and its Works' `status.usage` (each
//! member's agent reports its pods' usage there), asks
//! `flotilla_apps_core::autoscaling::decide`, writes the new total through
//! `/scale` (the binder divides it by the placement as usual), the status
//! with server-side apply, and Events. It labels the target's Works
//! `autoscaling.flotilla.io/report-usage` (its own field manager) so their
//! agents report, and unlabels Works no FederatedHPA targets any more.
//!
//! Level-triggered: everything it needs between syncs (recent
//! recommendations, scale events) is in the status, so a restarted hub
//! stabilises the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use flotilla_api::autoscaling::{
    conditions, FederatedHPA, FederatedHPAStatus, ManifestUsage, WorkloadUsage, REPORT_USAGE_LABEL,
};
use flotilla_api::cluster::ManagedCluster;
use flotilla_api::work::{keys, Work};
use flotilla_apps_core::autoscaling::{decide, Decision, Input};
use flotilla_apps_core::binding::template_key;
use flotilla_core::conditions::{self as condition, Wanted};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::error::Error;

/// Field manager of FederatedHPA statuses, the targets' `/scale` and the
/// Works' usage label; the Events' reporter.
pub const FIELD_MANAGER: &str = "flotilla-federated-hpa";
/// HPA's and Karmada's default sync period.
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(15);

/// A FederatedHPA is evaluated early, when a usage report of its target
/// changes, at most this often (besides every sync period): reports reach
/// the scale within seconds instead of waiting out the period, and the
/// recent recommendations stay few.
pub const EARLY_SYNC_INTERVAL: Duration = Duration::from_secs(5);

type Key = (String, String);

/// Syncs every FederatedHPA every `period`, and one early when its
/// target's usage report changes, until dropped.
pub async fn run(client: Client, period: Duration) -> Result<(), Error> {
    let recorder =
        Recorder::new(client.clone(), Reporter { controller: FIELD_MANAGER.into(), instance: None });
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retries = tokio::time::interval(Duration::from_secs(1));
    let (changed, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let watch = watch_usage(client.clone(), changed);
    tokio::pin!(watch);
    // Which FederatedHPA each labelled Work serves; when each was last
    // evaluated; those waiting for their early sync.
    let mut targets: BTreeMap<Key, Key> = BTreeMap::new();
    let mut synced: BTreeMap<Key, Instant> = BTreeMap::new();
    let mut pending: BTreeSet<Key> = BTreeSet::new();
    tracing::info!(period_seconds = period.as_secs_f64(), "FederatedHPA controller running");
    loop {
        tokio::select! {
            _ = ticks.tick() => match sync_all(&client, &recorder).await {
                Ok(served) => {
                    let now = Instant::now();
                    synced = served.values().map(|hpa| (hpa.clone(), now)).collect();
                    targets = served;
                    pending.clear();
                }
                Err(e) => tracing::warn!(error = %e, "FederatedHPA sync"),
            },
            Some(work) = reports.recv() => {
                if let Some(hpa) = targets.get(&work) {
                    pending.insert(hpa.clone());
                }
            }
            _ = retries.tick() => {}
            () = &mut watch => {}
        }
        let due: Vec<Key> = pending
            .iter()
            .filter(|hpa| synced.get(*hpa).is_none_or(|at| at.elapsed() >= EARLY_SYNC_INTERVAL))
            .cloned()
            .collect();
        for hpa in due {
            pending.remove(&hpa);
            synced.insert(hpa.clone(), Instant::now());
            let api: Api<FederatedHPA> = Api::namespaced(client.clone(), &hpa.0);
            match api.get_opt(&hpa.1).await {
                Ok(Some(found)) => {
                    if let Err(e) = sync_one(&client, &recorder, &found).await {
                        tracing::warn!(hpa = %hpa.1, namespace = %hpa.0, error = %e, "FederatedHPA early sync");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(hpa = %hpa.1, namespace = %hpa.0, error = %e, "reading a FederatedHPA")
                }
            }
        }
    }
}

/// Sends the labelled Works whose `status.usage` changed.
async fn watch_usage(client: Client, changed: tokio::sync::mpsc::UnboundedSender<Key>) {
    let works: Api<Work> = Api::all(client);
    let config = watcher::Config::default().labels(&format!("{REPORT_USAGE_LABEL}=true"));
    let mut seen: BTreeMap<Key, Vec<ManifestUsage>> = BTreeMap::new();
    let mut events = watcher(works, config).default_backoff().applied_objects().boxed();
    while let Some(event) = events.next().await {
        let Ok(work) = event else { continue };
        let key = (work.namespace().unwrap_or_default(), work.name_any());
        let usage = work.status.map(|s| s.usage).unwrap_or_default();
        if seen.get(&key) != Some(&usage) {
            seen.insert(key.clone(), usage);
            // Fails only when the controller is gone.
            let _ = changed.send(key);
        }
    }
}

/// Syncs every FederatedHPA and (un)labels the Works; returns which
/// FederatedHPA each labelled Work serves.
async fn sync_all(client: &Client, recorder: &Recorder) -> Result<BTreeMap<Key, Key>, Error> {
    let hpas = Api::<FederatedHPA>::all(client.clone()).list(&ListParams::default()).await?;
    let mut served = BTreeMap::new();
    for hpa in &hpas.items {
        let key = (hpa.namespace().unwrap_or_default(), hpa.name_any());
        match sync_one(client, recorder, hpa).await {
            Ok(works) => served.extend(works.into_iter().map(|w| (w, key.clone()))),
            Err(e) => tracing::warn!(hpa = %key.1, namespace = %key.0, error = %e, "FederatedHPA"),
        }
    }
    let wanted: BTreeSet<Key> = served.keys().cloned().collect();
    label_works(client, &wanted).await?;
    Ok(served)
}

/// Labels the Works in `wanted` (namespace, name) and unlabels the others
/// this controller labelled.
async fn label_works(client: &Client, wanted: &BTreeSet<(String, String)>) -> Result<(), Error> {
    let labelled = Api::<Work>::all(client.clone())
        .list_metadata(&ListParams::default().labels(&format!("{REPORT_USAGE_LABEL}=true")))
        .await?;
    let have: BTreeSet<(String, String)> =
        labelled.items.iter().map(|w| (w.namespace().unwrap_or_default(), w.name_any())).collect();
    let params = PatchParams::apply(FIELD_MANAGER);
    for (namespace, name) in wanted.difference(&have) {
        let body = json!({"apiVersion": "work.flotilla.io/v1alpha1", "kind": "Work",
            "metadata": {"name": name, "namespace": namespace, "labels": {REPORT_USAGE_LABEL: "true"}}});
        apply_work(client, namespace, name, &params, &body).await;
    }
    for (namespace, name) in have.difference(wanted) {
        // Applying without the label drops it (it is this manager's).
        let body = json!({"apiVersion": "work.flotilla.io/v1alpha1", "kind": "Work",
            "metadata": {"name": name, "namespace": namespace}});
        apply_work(client, namespace, name, &params, &body).await;
    }
    Ok(())
}

async fn apply_work(
    client: &Client,
    namespace: &str,
    name: &str,
    params: &PatchParams,
    body: &serde_json::Value,
) {
    let works: Api<Work> = Api::namespaced(client.clone(), namespace);
    match works.patch(name, params, &Patch::Apply(body)).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => tracing::warn!(work = %name, %namespace, error = %e, "labelling a Work for usage reports"),
    }
}

/// One FederatedHPA; returns its target's Works (to label).
async fn sync_one(
    client: &Client,
    recorder: &Recorder,
    hpa: &FederatedHPA,
) -> Result<Vec<(String, String)>, Error> {
    let namespace = hpa.namespace().unwrap_or_default();
    let target = &hpa.spec.scale_target_ref;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let previous = hpa.status.clone().unwrap_or_default();
    let (group, version) = match target.api_version.rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", target.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &target.kind);
    let works = target_works(client, &namespace, &target.api_version, &target.kind, &target.name).await?;
    let work_keys: Vec<(String, String)> =
        works.iter().map(|(ns, name, _, _)| (ns.clone(), name.clone())).collect();

    let scale = match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, _)) => {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
            api.get_scale(&target.name).await.map(|s| (api, s))
        }
        Err(e) => Err(e),
    };
    let (api, scale) = match scale {
        Ok(found) => found,
        Err(e) => {
            let message = format!("the HPA controller was unable to get the target's current scale: {e}");
            publish(recorder, hpa, true, "FailedGetScale", &message).await;
            let mut status = previous.clone();
            condition::set(
                &mut status.conditions,
                Wanted::new(conditions::ABLE_TO_SCALE, false, "FailedGetScale", message),
                &now,
            );
            write_status(client, hpa, &status).await?;
            return Ok(work_keys);
        }
    };
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let observed = scale.status.as_ref().map(|s| s.replicas);

    let clusters = works.into_iter().map(|(_, _, cluster, usage)| (cluster, usage)).collect();
    let input = Input {
        spec: &hpa.spec,
        current,
        clusters,
        recommendations: &previous.recommendations,
        scale_events: &previous.scale_events,
        now: now.clone(),
    };
    let decision = decide(&input);
    for event in &decision.events {
        publish(recorder, hpa, event.warning, event.reason, &event.message).await;
    }
    let mut status = FederatedHPAStatus {
        observed_generation: hpa.metadata.generation,
        last_scale_time: previous.last_scale_time.clone(),
        current_replicas: observed.unwrap_or(current),
        desired_replicas: decision.desired,
        current_metrics: decision.current_metrics.clone(),
        clusters: decision.clusters.clone(),
        conditions: previous.conditions.clone(),
        recommendations: decision.recommendations.clone(),
        scale_events: previous.scale_events.clone(),
    };
    let mut able = decision.able_to_scale.clone();
    if decision.scales(current) {
        able = rescale(&api, recorder, hpa, &decision, current, &mut status, &now).await;
    }
    condition::set(&mut status.conditions, able, &now);
    condition::set(&mut status.conditions, decision.scaling_active.clone(), &now);
    if let Some(limited) = decision.scaling_limited.clone() {
        condition::set(&mut status.conditions, limited, &now);
    }
    write_status(client, hpa, &status).await?;
    Ok(work_keys)
}

/// Writes the new total through `/scale`; the `AbleToScale` condition
/// that says how it went.
async fn rescale(
    api: &Api<DynamicObject>,
    recorder: &Recorder,
    hpa: &FederatedHPA,
    decision: &Decision,
    current: i32,
    status: &mut FederatedHPAStatus,
    now: &Time,
) -> Wanted {
    let patch = json!({"spec": {"replicas": decision.desired}});
    let name = &hpa.spec.scale_target_ref.name;
    match api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            tracing::info!(
                hpa = %hpa.name_any(), target = %name, from = current, to = decision.desired,
                reason = %decision.rescale_reason, "rescaled"
            );
            let message = format!("New size: {}; reason: {}", decision.desired, decision.rescale_reason);
            publish(recorder, hpa, false, "SuccessfulRescale", &message).await;
            status.last_scale_time = Some(now.clone());
            status.scale_events = decision.scale_events_after_scale.clone();
            Wanted::new(
                conditions::ABLE_TO_SCALE,
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {}", decision.desired),
            )
        }
        Err(e) => {
            let message =
                format!("New size: {}; reason: {}; error: {e}", decision.desired, decision.rescale_reason);
            publish(recorder, hpa, true, "FailedRescale", &message).await;
            status.desired_replicas = current;
            Wanted::new(
                conditions::ABLE_TO_SCALE,
                false,
                "FailedUpdateScale",
                format!("the HPA controller was unable to update the target scale: {e}"),
            )
        }
    }
}

/// The target's Works (namespace, name, cluster, its usage report for the
/// target's manifest), from the template-key label the binder puts on them.
async fn target_works(
    client: &Client,
    namespace: &str,
    api_version: &str,
    kind: &str,
    name: &str,
) -> Result<Vec<(String, String, String, Option<WorkloadUsage>)>, Error> {
    let key = template_key(api_version, kind, namespace, name);
    let works = Api::<Work>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{}={key}", keys::TEMPLATE_KEY)))
        .await?;
    let prefix = ManagedCluster::hub_namespace("");
    let mut found = BTreeMap::new();
    for work in works.items {
        if work.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let work_namespace = work.namespace().unwrap_or_default();
        let Some(cluster) = work_namespace.strip_prefix(&prefix).map(str::to_string) else { continue };
        let ordinal = work.spec.manifests.iter().position(|m| {
            m.0["kind"].as_str() == Some(kind) && m.0["metadata"]["name"].as_str() == Some(name)
        });
        let usage = ordinal.and_then(|ordinal| {
            let reports = work.status.as_ref().map(|s| s.usage.as_slice()).unwrap_or_default();
            reports.iter().find(|u| usize::try_from(u.ordinal).ok() == Some(ordinal)).map(|u| u.usage.clone())
        });
        found.insert(cluster.clone(), (work_namespace, work.name_any(), cluster, usage));
    }
    Ok(found.into_values().collect())
}

async fn write_status(client: &Client, hpa: &FederatedHPA, status: &FederatedHPAStatus) -> Result<(), Error> {
    let api: Api<FederatedHPA> = Api::namespaced(client.clone(), &hpa.namespace().unwrap_or_default());
    let patch =
        json!({"apiVersion": "autoscaling.flotilla.io/v1alpha1", "kind": "FederatedHPA", "status": status});
    match api
        .patch_status(&hpa.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn publish(recorder: &Recorder, hpa: &FederatedHPA, warning: bool, reason: &str, message: &str) {
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.into(),
        note: Some(message.chars().take(1000).collect()),
        action: "Scale".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &hpa.object_ref(&())).await {
        tracing::debug!(error = %e, "publishing a FederatedHPA event");
    }
}
