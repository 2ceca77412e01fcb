//! Member health and inventory, reported on the ManagedCluster's status.
//!
//! Nodes and pods are kept current by watches (reflector stores), not by
//! re-listing; the status is written only when what it would say changes.
//! Besides the sums (`resourceSummary`), each Ready node's free room goes
//! to `nodeCapacity` (`flotilla_apps_core::estimator`), for the hub's
//! per-node capacity estimate.

use std::time::Duration;

use flotilla_api::cluster::{conditions, ApiEnablement, ManagedCluster, NodeCapacity};
use flotilla_apps_core::estimator::{report, NodeRooms};
use flotilla_core::conditions::Wanted;
use flotilla_fleet_core::membership;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::json;

use crate::config::FIELD_MANAGER;
use crate::error::Error;
use crate::pods::MemberPods;

/// The agent's condition on its ManagedCluster: what its last probe of the
/// member's API said, and since when it has said so (kept from the last
/// written condition while the status holds).
fn member_healthy_condition(health: &Result<(), String>, previous: &[Condition], now: &Time) -> Condition {
    let wanted = match health {
        Ok(()) => {
            Wanted::new(conditions::MEMBER_HEALTHY, true, "ReadyzOk", "the cluster's API answers /readyz ok")
        }
        Err(e) => Wanted::new(conditions::MEMBER_HEALTHY, false, "ReadyzFailed", e.clone()),
    };
    flotilla_core::conditions::condition(previous, wanted, now)
}

/// Fails with an actionable message if the member's API does not answer.
pub async fn check_member(member: &Client, config: &kube::Config) -> Result<(), Error> {
    probe(member).await.map_err(|e| {
        Error::Member(format!(
            "cannot use the member cluster at {}: {e}. Check the member kubeconfig (--kubeconfig)",
            config.cluster_url
        ))
    })
}

/// `Ok` if `/readyz` answers `ok`, else what went wrong.
pub async fn probe(member: &Client) -> Result<(), String> {
    let request = http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(3), member.request_text(request)).await {
        Ok(Ok(body)) if body.trim() == "ok" => Ok(()),
        Ok(Ok(body)) => Err(format!("/readyz answered {:?}", body.trim())),
        Ok(Err(kube::Error::Api(s))) => Err(format!("/readyz failed: {} {}", s.code, s.message)),
        Ok(Err(e)) => Err(format!("/readyz failed: {e}")),
        Err(_) => Err("/readyz did not answer within 3s".into()),
    }
}

fn store_of<K>(api: Api<K>) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let driver =
        watcher(api, watcher::Config::default()).default_backoff().reflect(writer).for_each(|_| async {});
    (reader, driver)
}

async fn enablements(member: &Client) -> Option<Vec<ApiEnablement>> {
    let discovery = kube::discovery::Discovery::new(member.clone()).run().await.ok()?;
    let mut list = Vec::new();
    for group in discovery.groups() {
        for version in group.versions() {
            let resources =
                group.versioned_resources(version).into_iter().map(|(r, _)| r.plural).collect::<Vec<_>>();
            let group_version = if group.name().is_empty() {
                version.to_string()
            } else {
                format!("{}/{version}", group.name())
            };
            list.push(ApiEnablement { group_version, resources });
        }
    }
    Some(membership::normalize_enablements(list))
}

/// Probes after the member answers again (or first) at which the version
/// and API list are read each time: an API server that just started
/// registers its CustomResourceDefinitions' APIs over a few seconds, and
/// scheduling must not wait a minute for the rest.
const REREADS_AFTER_RECOVERY: u32 = 5;

/// A change of the nodes' room alone is reported at most once per this
/// many probes (10 s at the default 2 s): room changes with every pod.
const ROOM_REPORT_EVERY: u32 = 5;

/// Probes the member every `interval` and writes the status when it changes.
/// The version and API list are read on each of the first
/// `REREADS_AFTER_RECOVERY` healthy probes after an unhealthy one, then
/// every 30 probes.
///
/// Pods come from `pods`, the watch the applier shares.
pub async fn report_status(
    member: Client,
    hub: Client,
    cluster: String,
    interval: Duration,
    pods: MemberPods,
) -> Result<(), Error> {
    let (nodes, drive_nodes) = store_of::<Node>(Api::all(member.clone()));
    let report = async {
        let clusters: Api<ManagedCluster> = Api::all(hub.clone());
        let mut last_written: Option<serde_json::Value> = None;
        let mut last_member_healthy: Vec<Condition> = Vec::new();
        let mut version: Option<String> = None;
        let mut apis: Option<Vec<ApiEnablement>> = None;
        let mut tick: u64 = 0;
        // Version and API reads that succeeded since the member last became
        // healthy.
        let mut reads_since_healthy: u32 = 0;
        // The node report last chosen, and when.
        let mut last_capacity: Option<(NodeCapacity, std::time::Instant)> = None;
        loop {
            let health = probe(&member).await;
            if health.is_err() {
                reads_since_healthy = 0;
            } else if reads_since_healthy < REREADS_AFTER_RECOVERY || tick.is_multiple_of(30) {
                let read_version = member.apiserver_version().await.map(|info| info.git_version).ok();
                let read_apis = enablements(&member).await;
                if read_version.is_some() && read_apis.is_some() {
                    reads_since_healthy = reads_since_healthy.saturating_add(1);
                }
                version = read_version.or(version);
                apis = read_apis.or(apis);
            }
            tick += 1;
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let member_healthy = member_healthy_condition(&health, &last_member_healthy, &now);
            last_member_healthy = vec![member_healthy.clone()];
            // Only this entry of the list-map: the hub's conditions, applied
            // by its own manager, stay as they are.
            let mut status = json!({"conditions": [member_healthy]});
            if let Some(v) = &version {
                status["kubernetesVersion"] = json!(v);
            }
            if let Some(a) = &apis {
                status["apiEnablements"] = json!(a);
            }
            // Only once both caches hold a full list: never report a
            // half-listed member as empty.
            if nodes.wait_until_ready().now_or_never().is_some() && pods.listed() {
                // Summed straight from the caches, without copying objects.
                let (node_list, pod_list) = (nodes.state(), pods.store().state());
                let (node_summary, resource_summary) =
                    membership::summarize(node_list.iter().map(|n| &**n), pod_list.iter().map(|p| &**p));
                status["nodeSummary"] = json!(node_summary);
                status["resourceSummary"] = json!(resource_summary);
                // Each Ready node's free room, for the hub's per-node
                // estimate; grouped, so it changes only when room does, and
                // a change of room alone goes out at most every few probes.
                let states =
                    report::node_states(node_list.iter().map(|n| &**n), pod_list.iter().map(|p| &**p));
                let next = NodeRooms::from_states(&states).to_api();
                let since = last_capacity.as_ref().map_or(Duration::MAX, |(_, at)| at.elapsed());
                let min_interval = interval.saturating_mul(ROOM_REPORT_EVERY);
                if report::report_due(last_capacity.as_ref().map(|(c, _)| c), &next, since, min_interval) {
                    last_capacity = Some((next, std::time::Instant::now()));
                }
                if let Some((capacity, _)) = &last_capacity {
                    status["nodeCapacity"] = json!(capacity);
                }
            }
            if last_written.as_ref() != Some(&status) {
                let patch = json!({"apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster", "status": status});
                match clusters
                    .patch_status(&cluster, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
                    .await
                {
                    Ok(_) => last_written = Some(status),
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => {
                        return Err(Error::Removed(cluster.clone()));
                    }
                    Err(e) => tracing::warn!(error = %e, "writing the cluster status failed"),
                }
            }
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        r = report => r,
        () = drive_nodes => Ok(()),
    }
}

use futures::FutureExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    /// (case, previous condition as (healthy, since), probe result, wanted (status, reason, since)).
    type Case = (&'static str, Option<(bool, i64)>, Result<(), String>, (&'static str, &'static str, i64));

    #[test]
    fn member_healthy_keeps_its_time_while_the_status_holds() {
        let failed = || Err::<(), String>("/readyz did not answer within 3s".into());
        let cases: Vec<Case> = vec![
            ("first probe ok", None, Ok(()), ("True", "ReadyzOk", 100)),
            ("first probe failed", None, failed(), ("False", "ReadyzFailed", 100)),
            ("still ok", Some((true, 10)), Ok(()), ("True", "ReadyzOk", 10)),
            ("still failing", Some((false, 10)), failed(), ("False", "ReadyzFailed", 10)),
            ("recovers", Some((false, 10)), Ok(()), ("True", "ReadyzOk", 100)),
            ("fails", Some((true, 10)), failed(), ("False", "ReadyzFailed", 100)),
        ];
        for (case, previous, health, (status, reason, since)) in cases {
            let previous: Vec<Condition> = previous
                .map(|(ok, t)| member_healthy_condition(&if ok { Ok(()) } else { failed() }, &[], &at(t)))
                .into_iter()
                .collect();
            let got = member_healthy_condition(&health, &previous, &at(100));
            assert_eq!(
                (got.status.as_str(), got.reason.as_str(), got.last_transition_time),
                (status, reason, at(since)),
                "{case}"
            );
            assert_eq!(got.type_, conditions::MEMBER_HEALTHY, "{case}");
            assert!(!got.message.is_empty(), "{case}");
        }
    }
}
