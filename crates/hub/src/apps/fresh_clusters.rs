//! Before a binding goes to a cluster it does not use yet, the binder
//! confirms its view of that cluster against the API (decision in
//! `flotilla_apps_core::scheduler::stale_for_placement`): the view comes
//! from a watch that can lag, and a `NoSchedule` taint it missed would
//! leave the template on the tainted cluster for good.

use std::time::{Duration, Instant};

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::work::TargetCluster;
use flotilla_apps_core::scheduler::{stale_for_placement, to_confirm, ClusterSnapshot};
use kube::Api;

use super::index::{lock, ClusterView, TemplateKey};
use super::state::Apps;
use crate::error::Error;

/// Up to this many newly chosen clusters are read one by one; more, with
/// one list.
const GETS_AT_MOST: usize = 16;

/// How soon the binder looks again when its view was stale (the watch
/// catches up meanwhile).
const STALE_RECHECK: Duration = Duration::from_millis(300);

/// The newly chosen clusters whose view is stale (empty: go ahead). When
/// some are, the cached view is dropped so the next pass rebuilds it.
/// Clusters this view had confirmed a moment ago are not read again.
async fn stale(apps: &Apps, view: &ClusterView, newly_chosen: &[&str]) -> Result<Vec<String>, Error> {
    let started = Instant::now();
    let newly_chosen = to_confirm(newly_chosen, &lock(&view.confirmed), started);
    if newly_chosen.is_empty() {
        return Ok(Vec::new());
    }
    let api: Api<ManagedCluster> = Api::all(apps.client.clone());
    let fresh: Vec<ClusterSnapshot> = if newly_chosen.len() <= GETS_AT_MOST {
        futures::future::try_join_all(newly_chosen.iter().map(|name| api.get_opt(name)))
            .await?
            .iter()
            .flatten()
            .map(ClusterSnapshot::from_managed_cluster)
            .collect()
    } else {
        api.list(&Default::default()).await?.items.iter().map(ClusterSnapshot::from_managed_cluster).collect()
    };
    let stale = stale_for_placement(&view.clusters, &fresh, &newly_chosen);
    if stale.is_empty() {
        // As of when the reading started: the API had it no later.
        lock(&view.confirmed).extend(newly_chosen.iter().map(|name| (name.to_string(), started)));
    } else {
        *lock(&apps.cluster_view) = None;
    }
    Ok(stale)
}

/// When `chosen` adds clusters to `previous` and the view of one of them
/// is stale: how soon to schedule again (nothing is written meanwhile).
pub(super) async fn recheck(
    apps: &Apps,
    key: &TemplateKey,
    view: &ClusterView,
    chosen: &[TargetCluster],
    previous: &[TargetCluster],
) -> Result<Option<Duration>, Error> {
    let newly_chosen: Vec<&str> = chosen
        .iter()
        .map(|c| c.name.as_str())
        .filter(|name| !previous.iter().any(|p| p.name == *name))
        .collect();
    let stale = stale(apps, view, &newly_chosen).await?;
    if stale.is_empty() {
        return Ok(None);
    }
    tracing::info!(template = %key, clusters = %stale.join(","),
        "the hub's view of the chosen clusters is behind the API; scheduling again");
    Ok(Some(STALE_RECHECK))
}
