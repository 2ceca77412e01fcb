//! The binder's descheduling step: what each cluster of a binding reports
//! unschedulable (from its Work, only when the status describes the Work
//! as written), the decision (`flotilla_apps_core::deschedule`), and the
//! Events that say what moved.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_api::policy::Placement;
use flotilla_api::work::{keys, DescheduledCluster, TargetCluster, UnschedulableReplicas, Work};
use flotilla_apps_core::deschedule::{decide, ClusterReplicas, DescheduleInput, Descheduled, Move};
use flotilla_apps_core::scheduler::{divides_by_capacity, ClusterSnapshot};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

use super::index::work_step;
use super::state::Apps;

const MANAGER: &str = "flotilla-descheduler";

/// What the binding's clusters report, decided (for a template with
/// replicas): the caps for the scheduler, the records to keep, the moves
/// to announce. Only capacity-driven divisions are descheduled (static weights would put
/// the replicas straight back, as in Karmada).
pub(super) fn descheduling(
    apps: &Apps,
    placement: &Placement,
    previous: &[TargetCluster],
    records: &[DescheduledCluster],
    works: &BTreeMap<String, Arc<Work>>,
    fleet: &[ClusterSnapshot],
    now: Timestamp,
) -> Descheduled {
    if !divides_by_capacity(placement) {
        return Descheduled::default();
    }
    let clusters: Vec<ClusterReplicas> = previous
        .iter()
        .map(|t| ClusterReplicas {
            name: &t.name,
            replicas: t.replicas,
            unschedulable: works.get(&t.name).and_then(|w| reported(w, t.replicas)),
        })
        .collect();
    decide(&DescheduleInput {
        clusters: &clusters,
        records,
        fleet,
        threshold: apps.deschedule.unschedulable_threshold,
        now,
    })
}

/// The template's unschedulable replicas as its Work reports them, only
/// when that status describes the Work as written and the Work carries the
/// binding's replicas (its step annotation, which divided Works always
/// have, equals them: not a step of a move): a stale count would move
/// replicas that already left.
fn reported(work: &Work, replicas: i32) -> Option<&UnschedulableReplicas> {
    let status = work.status.as_ref()?;
    let current = !status.observed_spec_hash.is_empty()
        && work.annotations().get(keys::SPEC_HASH) == Some(&status.observed_spec_hash)
        && work.metadata.deletion_timestamp.is_none()
        && work_step(work) == Some(replicas);
    if !current {
        return None;
    }
    status.manifest_statuses.iter().find(|m| m.identifier.ordinal == 0)?.unschedulable.as_ref()
}

/// One Event on the template per move.
pub(super) async fn announce(apps: &Apps, template: &DynamicObject, resource: &ApiResource, moves: &[Move]) {
    if moves.is_empty() {
        return;
    }
    let recorder =
        Recorder::new(apps.client.clone(), Reporter { controller: MANAGER.into(), instance: None });
    let reference = template.object_ref(resource);
    for m in moves {
        tracing::info!(template = %template.name_any(), cluster = %m.cluster, replicas = m.replicas,
            keeps = m.keeps, "descheduled unschedulable replicas");
        let event = Event {
            type_: EventType::Normal,
            reason: "Descheduled".into(),
            note: Some(m.message()),
            action: "Deschedule".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "publishing a descheduling event");
        }
    }
}
