//! The clusters as the binder sees them: snapshots for the scheduler, the
//! mass-disruption guard's verdict, and the Events that announce when
//! failover halts and resumes.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_api::cluster::ManagedCluster;
use flotilla_apps_core::failover;
use flotilla_apps_core::scheduler::ClusterSnapshot;
use flotilla_core::events::Notice;
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
        // A hand-added NoExecute taint's toleration counts from when it
        // was first seen (its object is left as its author wrote it).
        let snapshots = self.failover_clocks.stamped(snapshots, k8s_openapi::jiff::Timestamp::now());
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
        // One series per distinct reason why, not merged under the first.
        publish(apps, cluster, Notice::warning("FailoverHalted", "Failover", why.clone()).distinct()).await;
    }
    for cluster in last.keys().filter(|c| !now.contains_key(*c)) {
        tracing::info!(%cluster, "failover resumed");
        let note = "fewer clusters are unhealthy now: failover follows the policies' tolerations again, \
                    counted from now for a cluster still unhealthy";
        restart_toleration_clock(apps, cluster).await;
        publish(apps, cluster, Notice::normal("FailoverResumed", "Failover", note)).await;
    }
    *last = now.clone();
}

/// A cluster still unhealthy when a mass disruption ends gets a full
/// toleration from now (see `failover::restart_toleration_clock`).
async fn restart_toleration_clock(apps: &Apps, cluster: &str) {
    let reference = kube::runtime::reflector::ObjectRef::<ManagedCluster>::new(cluster);
    let Some(mc) = apps.clusters.get(&reference) else { return };
    let now = k8s_openapi::jiff::Timestamp::now();
    let own = flotilla_fleet_core::taint_owner::owned_taints(
        &mc.spec.taints,
        mc.managed_fields(),
        crate::names::TAINT_FIELD_MANAGER,
    );
    let Some(taints) = failover::restart_toleration_clock(&own, now) else { return };
    let api: Api<ManagedCluster> = Api::all(apps.client.clone());
    // The health controller's own manager: it writes only its own taints and
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

/// An Event on a ManagedCluster, through the binder's recorder (a
/// cluster-scoped object's Events go to `default`).
async fn publish(apps: &Apps, cluster: &str, notice: Notice) {
    let reference = kube::runtime::reflector::ObjectRef::<ManagedCluster>::new(cluster);
    let Some(mc) = apps.clusters.get(&reference) else { return };
    crate::events::publish(&apps.events.binder, &mc.object_ref(&()), &notice).await;
}
