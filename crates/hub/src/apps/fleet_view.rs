//! The clusters as the binder sees them: snapshots for the scheduler, the
//! mass-disruption guard's verdict, and the Events that announce when
//! failover halts and resumes.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_api::cluster::ManagedCluster;
use flotilla_core::failover::{self, Disruption, FailoverSettings};
use flotilla_core::scheduler::ClusterSnapshot;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

use super::{lock, Apps};

/// One consistent picture of the fleet, rebuilt when a cluster changes.
pub(crate) struct ClusterView {
    /// The clusters as they are, sorted by name.
    pub clusters: Vec<ClusterSnapshot>,
    /// Which clusters' failover is halted, and why.
    pub disruption: Disruption,
    /// What the scheduler sees: halted clusters keep what runs there.
    pub scheduling: Vec<ClusterSnapshot>,
}

impl ClusterView {
    pub fn new(mut clusters: Vec<ClusterSnapshot>, settings: &FailoverSettings) -> Self {
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        let disruption = failover::disruption(&clusters, settings);
        let scheduling = failover::with_failover_halted(&clusters, &disruption);
        ClusterView { clusters, disruption, scheduling }
    }
}

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
pub(crate) async fn announce_disruption(
    apps: &Apps,
    recorder: &Recorder,
    last: &mut BTreeMap<String, String>,
) {
    let view = apps.cluster_view();
    let now = &view.disruption.halted;
    if now == last {
        return;
    }
    for (cluster, why) in now.iter().filter(|(c, w)| last.get(*c) != Some(*w)) {
        tracing::warn!(%cluster, reason = %why, "failover halted");
        publish(apps, recorder, cluster, EventType::Warning, "FailoverHalted", why).await;
    }
    for cluster in last.keys().filter(|c| !now.contains_key(*c)) {
        tracing::info!(%cluster, "failover resumed");
        let note = "fewer clusters are unhealthy now: failover follows the policies' tolerations again";
        publish(apps, recorder, cluster, EventType::Normal, "FailoverResumed", note).await;
    }
    *last = now.clone();
}

async fn publish(
    apps: &Apps,
    recorder: &Recorder,
    cluster: &str,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let reference = kube::runtime::reflector::ObjectRef::<ManagedCluster>::new(cluster);
    let Some(mc) = apps.clusters.get(&reference) else { return };
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Failover".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &mc.object_ref(&())).await {
        tracing::debug!(cluster = %mc.name_any(), error = %e, "could not record an event");
    }
}

pub(crate) fn recorder(apps: &Apps) -> Recorder {
    Recorder::new(apps.client.clone(), Reporter { controller: "flotilla-hub".into(), instance: None })
}
