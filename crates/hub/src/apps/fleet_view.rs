//! The clusters as the binder sees them: snapshots for the scheduler, the
//! mass-disruption guard's verdict, and the Events that announce when
//! failover halts and resumes.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_api::cluster::ManagedCluster;
use flotilla_apps_core::failover;
use flotilla_apps_core::scheduler::ClusterSnapshot;
use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};

use super::index::{lock, ClusterView};
use super::state::Apps;

impl Apps {
    pub(crate) fn cluster_view(&self) -> Arc<ClusterView> {
        let mut cached = lock(&self.cluster_view);
        if let Some(view) = cached.as_ref() {
            return view.clone();
        }
        let snapshots =
            self.clusters.state().iter().map(|mc| ClusterSnapshot::from_managed_cluster(mc)).collect();
        let view = Arc::new(ClusterView::new(snapshots, &self.failover));
        *cached = Some(view.clone());
        view
    }
}

/// After a cluster changed: say (log and Events on the clusters) when
/// failover halts or resumes for some of them.
pub(crate) async fn announce_disruption(apps: &Apps, last: &mut BTreeMap<String, String>) {
    let view = apps.cluster_view();
    let now = &view.disruption.halted;
    if now == last {
        return;
    }
    for (cluster, why) in now.iter().filter(|(c, w)| last.get(*c) != Some(*w)) {
        tracing::warn!(%cluster, reason = %why, "failover halted");
        publish(apps, cluster, "Warning", "FailoverHalted", why).await;
    }
    for cluster in last.keys().filter(|c| !now.contains_key(*c)) {
        tracing::info!(%cluster, "failover resumed");
        let note = "fewer clusters are unhealthy now: failover follows the policies' tolerations again, \
                    counted from now for a cluster still unhealthy";
        restart_toleration_clock(apps, cluster).await;
        publish(apps, cluster, "Normal", "FailoverResumed", note).await;
    }
    *last = now.clone();
}

/// A cluster still unhealthy when a mass disruption ends gets a full
/// toleration from now (see `failover::restart_toleration_clock`).
async fn restart_toleration_clock(apps: &Apps, cluster: &str) {
    let reference = kube::runtime::reflector::ObjectRef::<ManagedCluster>::new(cluster);
    let Some(mc) = apps.clusters.get(&reference) else { return };
    let now = k8s_openapi::jiff::Timestamp::now();
    let Some(taints) = failover::restart_toleration_clock(&mc.spec.taints, now) else { return };
    let api: Api<ManagedCluster> = Api::all(apps.client.clone());
    // The health controller's own manager: it writes the whole list and
    // keeps the earliest time of an episode, which is now this one.
    let body = serde_json::json!({
        "apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
        "spec": {"taints": taints}
    });
    let params = kube::api::PatchParams::apply(crate::names::TAINT_FIELD_MANAGER).force();
    if let Err(e) = api.patch(cluster, &params, &kube::api::Patch::Apply(&body)).await {
        tracing::warn!(%cluster, error = %e, "could not restart the toleration clock");
    }
}

/// A core/v1 Event on a ManagedCluster. (Kubernetes before 1.22 refuses
/// events.k8s.io/v1 Events about cluster-scoped objects, so the kube-runtime
/// recorder cannot be used for them.)
async fn publish(apps: &Apps, cluster: &str, type_: &str, reason: &str, note: &str) {
    let reference = kube::runtime::reflector::ObjectRef::<ManagedCluster>::new(cluster);
    let Some(mc) = apps.clusters.get(&reference) else { return };
    let now = k8s_openapi::jiff::Timestamp::now();
    let event = CoreEvent {
        metadata: ObjectMeta {
            generate_name: Some(format!("{cluster}.")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        involved_object: mc.object_ref(&()),
        type_: Some(type_.into()),
        reason: Some(reason.into()),
        message: Some(note.chars().take(1000).collect()),
        action: Some("Failover".into()),
        source: Some(EventSource { component: Some("flotilla-hub".into()), host: None }),
        reporting_component: Some("flotilla-hub".into()),
        reporting_instance: Some("flotilla-hub".into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    };
    let api: Api<CoreEvent> = Api::namespaced(apps.client.clone(), "default");
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(cluster = %mc.name_any(), error = %e, "could not record an event");
    }
}
