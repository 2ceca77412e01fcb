//! Kube-on-Kube's gauges, read off the operators' caches at every scrape:
//! etcd clusters' voting members, health, leader, quorum and database
//! sizes; hosted clusters' soonest certificate expiry; upgrades in
//! progress and the age of their current step. The decisions are `flotilla_kok_core::kok_metrics`'s.
//!
//! Series: per etcd cluster four, plus two per member (a handful);
//! per hosted cluster one. Nothing is labelled by certificate.

use std::sync::Arc;

use flotilla_api::kok::{EtcdCluster, HostedCluster};
use flotilla_kok_core::kok_metrics;
use flotilla_metrics::{Gauge, StateSource};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;
use kube::ResourceExt;

fn key<K: kube::Resource>(object: &K) -> Vec<(&'static str, String)> {
    vec![("namespace", object.namespace().unwrap_or_default()), ("name", object.name_any())]
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

pub(crate) struct EtcdGauges {
    pub clusters: Store<EtcdCluster>,
}

impl StateSource for EtcdGauges {
    fn gauges(&self) -> Vec<Gauge> {
        let mut voting =
            Gauge::new("etcd_voting_members", "Voting members of the etcd cluster (learners excluded)");
        let mut healthy =
            Gauge::new("etcd_healthy_voting_members", "Voting members whose /health answered true");
        let mut leader =
            Gauge::new("etcd_has_leader", "1 when the etcd cluster reports a leader among its members");
        let mut quorum = Gauge::new("etcd_has_quorum", "1 when a majority of the voting members is healthy");
        let mut member_healthy =
            Gauge::new("etcd_member_healthy", "1 when the member's /health answered true");
        let mut db_size =
            Gauge::new("etcd_member_database_size_bytes", "Size of the member's backend database");
        let mut upgrading = Gauge::new(
            "etcd_upgrade_in_progress",
            "1 while the etcd cluster's version change is snapshotting or moving members",
        );
        let mut step = Gauge::new(
            "etcd_upgrade_step_seconds",
            "Seconds since the etcd upgrade in progress last moved a member (or began its snapshot)",
        );
        let now = Timestamp::now();
        for cluster in self.clusters.state() {
            let status = cluster.status.clone().unwrap_or_default();
            let health = kok_metrics::etcd_health(&status);
            voting.push(key(cluster.as_ref()), health.voting as f64);
            healthy.push(key(cluster.as_ref()), health.healthy_voting as f64);
            leader.push(key(cluster.as_ref()), flag(health.has_leader));
            quorum.push(key(cluster.as_ref()), flag(health.has_quorum));
            upgrading.push(key(cluster.as_ref()), flag(kok_metrics::etcd_upgrade_in_progress(&status)));
            if let Some(seconds) = kok_metrics::etcd_upgrade_step_seconds(&status, now) {
                step.push(key(cluster.as_ref()), seconds);
            }
            for member in &status.members {
                let mut labels = key(cluster.as_ref());
                labels.push(("member", member.name.clone()));
                member_healthy.push(labels.clone(), flag(member.healthy));
                if let Some(bytes) = member.db_size_bytes {
                    db_size.push(labels, bytes as f64);
                }
            }
        }
        vec![voting, healthy, leader, quorum, member_healthy, db_size, upgrading, step]
    }
}

pub(crate) struct HostedGauges {
    pub clusters: Store<HostedCluster>,
}

impl HostedGauges {
    fn gauges_at(&self, now: Timestamp) -> Vec<Gauge> {
        let mut expiry = Gauge::new(
            "hosted_cluster_certificate_expiry_seconds",
            "Seconds until the soonest of the hosted cluster's certificates expires (negative: expired)",
        );
        let mut upgrading = Gauge::new(
            "hosted_cluster_upgrade_in_progress",
            "1 while the hosted cluster's version change is moving components (forward or back)",
        );
        let mut step = Gauge::new(
            "hosted_cluster_upgrade_step_seconds",
            "Seconds since the current step of the hosted cluster's upgrade in progress began",
        );
        for cluster in self.clusters.state() {
            let status = cluster.status.clone().unwrap_or_default();
            if let Some(seconds) = kok_metrics::hosted_upgrade_step_seconds(&status, now) {
                step.push(key(cluster.as_ref()), seconds);
            }
            if let Some(seconds) = kok_metrics::soonest_certificate_expiry_seconds(&status, now) {
                expiry.push(key(cluster.as_ref()), seconds);
            }
            upgrading.push(key(cluster.as_ref()), flag(kok_metrics::hosted_upgrade_in_progress(&status)));
        }
        vec![expiry, upgrading, step]
    }
}

impl StateSource for HostedGauges {
    fn gauges(&self) -> Vec<Gauge> {
        self.gauges_at(Timestamp::now())
    }
}

/// Registers `source` for scrapes; the caller keeps the returned handle
/// for as long as its caches live.
pub(crate) fn register(source: impl StateSource) -> Arc<dyn StateSource> {
    let source: Arc<dyn StateSource> = Arc::new(source);
    flotilla_metrics::register_source(&source);
    source
}
