//! The member's HorizontalPodAutoscalers, as the applier needs them: who
//! owns a workload's replicas (then the applied object keeps the member's
//! replicas; the decision and the field-ownership reasoning are in
//! `flotilla_apps_core::member_hpa`), and, when an HPA appears, goes or
//! retargets, the Works that applied its workload apply again.
//!
//! One watch of every HPA in the member (autoscaling/v2; small objects).
//! No workload is applied with replicas before the HPAs are listed, so an
//! agent that restarts never reverts an HPA's replicas.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_api::work::Work;
use flotilla_apps_core::member_hpa::{
    changed_targets, replicas_owner, retain_replicas, scale_target, sets_replicas, HpaKey, ScaleTarget,
};
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::DynamicObject;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use super::member_watch::{lock, trigger};
use crate::error::Error;

/// How long an apply waits for the first list of the member's HPAs before
/// it gives up (and retries the Work later) rather than risk reverting one.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// Works that applied a workload with replicas, by workload (their
/// `applied-by` values).
type Followed = Arc<Mutex<HashMap<ScaleTarget, BTreeSet<String>>>>;

pub(super) struct MemberHpas {
    store: Store<HorizontalPodAutoscaler>,
    followed: Followed,
    cluster: String,
    _task: AbortOnDrop,
}

impl MemberHpas {
    /// Starts watching the member's HPAs.
    pub(super) fn start(
        member: &Client,
        hub_namespace: String,
        cluster: String,
        triggers: mpsc::UnboundedSender<ObjectRef<Work>>,
    ) -> Self {
        let (store, writer) = reflector::store();
        let followed = Followed::default();
        let api: Api<HorizontalPodAutoscaler> = Api::all(member.clone());
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|hpa: &mut HorizontalPodAutoscaler| hpa.managed_fields_mut().clear())
            .reflect(writer);
        let follower =
            Follower { followed: followed.clone(), triggers, hub_namespace, cluster: cluster.clone() };
        let task = tokio::spawn(follower.run(events));
        MemberHpas { store, followed, cluster, _task: AbortOnDrop(task) }
    }

    /// Keeps the member's replicas in `body` (the object about to be
    /// applied for `applied_by`) when an HPA owns them, and says which.
    /// `api` reaches the object's kind and namespace in the member.
    pub(super) async fn retain(
        &self,
        api: &Api<DynamicObject>,
        target: ScaleTarget,
        applied_by: &str,
        body: &mut Value,
    ) -> Result<Option<String>, Error> {
        if !sets_replicas(body) {
            return Ok(None);
        }
        lock(&self.followed).entry(target.clone()).or_default().insert(applied_by.to_string());
        match tokio::time::timeout(LIST_TIMEOUT, self.store.wait_until_ready()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(Error::Member(format!(
                    "cluster {}: the member's HorizontalPodAutoscalers are not listed yet; a workload whose \
                     replicas one may own is not applied before they are",
                    self.cluster
                )))
            }
        }
        let hpas = self.store.state();
        let Some(owner) = replicas_owner(hpas.iter().map(AsRef::as_ref), &target) else { return Ok(None) };
        if let Some(live) = api.get_opt(&target.name).await? {
            let live = serde_json::to_value(&live)?;
            if retain_replicas(body, Some(&live)) {
                tracing::debug!(
                    cluster = %self.cluster, workload = %target.name, namespace = %target.namespace,
                    owner = %owner, replicas = %body["spec"]["replicas"], "keeping the member's replicas"
                );
            }
        }
        Ok(Some(owner))
    }

    /// A Work is gone: its workloads are no longer followed.
    pub(super) fn forget(&self, applied_by: &str) {
        let mut followed = lock(&self.followed);
        followed.values_mut().for_each(|works| {
            works.remove(applied_by);
        });
        followed.retain(|_, works| !works.is_empty());
    }
}

struct Follower {
    followed: Followed,
    triggers: mpsc::UnboundedSender<ObjectRef<Work>>,
    hub_namespace: String,
    cluster: String,
}

impl Follower {
    async fn run(
        self,
        events: impl Stream<Item = Result<watcher::Event<HorizontalPodAutoscaler>, watcher::Error>>,
    ) {
        let mut events = std::pin::pin!(events);
        let mut known: HashMap<HpaKey, ScaleTarget> = HashMap::new();
        let mut listing: Option<HashMap<HpaKey, ScaleTarget>> = None;
        while let Some(event) = events.next().await {
            let changed = match event {
                Ok(watcher::Event::Init) => {
                    listing = Some(HashMap::new());
                    Vec::new()
                }
                Ok(watcher::Event::InitApply(hpa)) => {
                    if let Some(target) = scale_target(&hpa) {
                        listing.get_or_insert_with(HashMap::new).insert(key(&hpa), target);
                    }
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => {
                    // Also what changed while the watch was down.
                    let listed = listing.take().unwrap_or_default();
                    let changed = changed_targets(&known, &listed);
                    known = listed;
                    changed
                }
                Ok(watcher::Event::Apply(hpa)) => {
                    let now = scale_target(&hpa);
                    let before = match &now {
                        Some(target) => known.insert(key(&hpa), target.clone()),
                        None => known.remove(&key(&hpa)),
                    };
                    if before == now {
                        Vec::new()
                    } else {
                        before.into_iter().chain(now).collect()
                    }
                }
                Ok(watcher::Event::Delete(hpa)) => known.remove(&key(&hpa)).into_iter().collect(),
                Err(e) => {
                    tracing::debug!(cluster = %self.cluster, error = %e, "watching the member's HPAs");
                    Vec::new()
                }
            };
            let works: BTreeSet<String> = {
                let followed = lock(&self.followed);
                changed.iter().filter_map(|t| followed.get(t)).flatten().cloned().collect()
            };
            for applied_by in works {
                tracing::info!(
                    cluster = %self.cluster, work = %applied_by,
                    "a member HPA of a workload this work applies changed; applying it again"
                );
                trigger(&self.triggers, &self.hub_namespace, &applied_by);
            }
        }
    }
}

fn key(hpa: &HorizontalPodAutoscaler) -> HpaKey {
    (hpa.namespace().unwrap_or_default(), hpa.name_any())
}

/// Stops the watch when the applier goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
