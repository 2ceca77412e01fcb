//! The hub's gauges, read off its caches at every scrape (no API call):
//! clusters by condition, each cluster's Available status and heartbeat
//! age, rollouts by phase, and how long each moving rollout's step has
//! run against its limit (two series per rollout under way). The decisions are
//! `flotilla_fleet_core::fleet_metrics`'s; the instruments that count
//! events (reconciles, queues, failovers) are `flotilla_metrics`'s.
//!
//! Series per cluster are two (Available, heartbeat age): 2,000 at 1,000
//! clusters, which Prometheus holds easily; nothing is labelled by
//! template or binding.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_api::cluster::{conditions, ManagedCluster};
use flotilla_api::rollout::Rollout;
use flotilla_fleet_core::fleet_metrics;
use flotilla_fleet_core::membership;
use flotilla_metrics::{Gauge, StateSource};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

/// The fleet's clusters, from the health controller's caches.
pub(crate) struct FleetGauges {
    pub clusters: Store<ManagedCluster>,
    pub leases: Store<Lease>,
}

impl FleetGauges {
    fn gauges_at(&self, now: Timestamp) -> Vec<Gauge> {
        let clusters = self.clusters.state();
        let mut by_condition = Gauge::new(
            "clusters",
            "Clusters by condition type and status (every pair, zeros included; no condition counts as Unknown)",
        );
        for c in fleet_metrics::clusters_by_condition(clusters.iter().map(Arc::as_ref)) {
            by_condition.push(
                vec![("condition", c.condition.to_string()), ("status", c.status.to_string())],
                c.clusters as f64,
            );
        }
        let mut available = Gauge::new(
            "cluster_available",
            "1 for each cluster, labelled with the status of its Available condition (Unknown: not heard from)",
        );
        let mut heartbeat = Gauge::new(
            "cluster_heartbeat_age_seconds",
            "Seconds since the cluster's agent last renewed its heartbeat Lease (pull-mode clusters)",
        );
        for cluster in &clusters {
            let name = cluster.name_any();
            let status = fleet_metrics::condition_status(cluster, conditions::AVAILABLE);
            available.push(vec![("cluster", name.clone()), ("status", status.to_string())], 1.0);
            let lease = self
                .leases
                .get(&ObjectRef::new(membership::LEASE_NAME).within(&ManagedCluster::hub_namespace(&name)));
            if let Some(renewed) = lease.as_ref().and_then(|l| l.spec.as_ref()?.renew_time.as_ref()) {
                heartbeat.push(vec![("cluster", name)], fleet_metrics::heartbeat_age_seconds(renewed.0, now));
            }
        }
        vec![by_condition, available, heartbeat]
    }
}

impl StateSource for FleetGauges {
    fn gauges(&self) -> Vec<Gauge> {
        self.gauges_at(Timestamp::now())
    }
}

/// Every phase a Rollout reports (`apps_core::rollout_status::phase_name`).
const ROLLOUT_PHASES: [&str; 5] = ["Progressing", "Soaking", "Paused", "Complete", "RolledBack"];

/// Rollouts (progressive delivery) by phase: Progressing, Soaking and
/// Paused are in progress; and the step each moving one is in.
pub(crate) struct RolloutGauges {
    pub rollouts: Store<Rollout>,
}

impl StateSource for RolloutGauges {
    fn gauges(&self) -> Vec<Gauge> {
        let now = Timestamp::now();
        let mut counts: BTreeMap<&str, usize> = ROLLOUT_PHASES.iter().map(|p| (*p, 0)).collect();
        let mut step = Gauge::new(
            "rollout_step_seconds",
            "Seconds the rollout's current wave (Progressing) or soak (Soaking) has run",
        );
        let mut limit = Gauge::new(
            "rollout_step_limit_seconds",
            "Seconds the current step is given: the wave's progress deadline or the soak",
        );
        for rollout in self.rollouts.state() {
            let phase = rollout.status.as_ref().map_or("", |s| s.phase.as_str());
            if let Some(count) = counts.get_mut(phase) {
                *count += 1;
            }
            if let Some(s) = rollout.status.as_ref().and_then(|s| fleet_metrics::rollout_step(s, now)) {
                let labels = vec![
                    ("namespace", rollout.namespace().unwrap_or_default()),
                    ("name", rollout.name_any()),
                    ("phase", s.phase.to_string()),
                ];
                step.push(labels.clone(), s.seconds);
                limit.push(labels, s.limit_seconds);
            }
        }
        let mut gauge =
            Gauge::new("rollouts", "Rollouts by phase (Progressing, Soaking and Paused are in progress)");
        for (phase, count) in counts {
            gauge.push(vec![("phase", phase.to_string())], count as f64);
        }
        vec![gauge, step, limit]
    }
}

/// Registers `source` for scrapes; the caller keeps the returned handle
/// for as long as its caches live.
pub(crate) fn register(source: impl StateSource) -> Arc<dyn StateSource> {
    let source: Arc<dyn StateSource> = Arc::new(source);
    flotilla_metrics::register_source(&source);
    source
}
