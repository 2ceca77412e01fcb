//! Warning Events of propagated objects, reported to the hub: watches the
//! member's Warning Events, keeps those about an object a Work applied (or
//! its ReplicaSet or pods, `apps_core::member_events::owner_candidates`) in
//! a bounded list per Work, and writes the list to the Work's
//! `status.memberWarnings` (field manager `flotilla-member-events`) when
//! `write_due` says so. The hub re-emits the entries as Events on the
//! template. Needs no hub right beyond the Work status writes the applier
//! already has. Runs in the pull agent and, for push clusters, in the hub.

use std::collections::HashMap;
use std::time::Duration;

use flotilla_api::work::{MemberWarning, Work};
use flotilla_apps_core::member_events::{owner_candidates, prune, record, write_due};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as MemberEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::error::Error;
use crate::pods::MemberPods;

/// Field manager of Works' `status.memberWarnings`.
pub const MEMBER_EVENTS_FIELD_MANAGER: &str = "flotilla-member-events";
/// How often gathered warnings are written.
const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// Observations kept between two flushes (an Event storm beyond it waits
/// for the next warnings).
const MAX_PENDING: usize = 500;

/// Reports the member's Warning Events about the Works of `hub_namespace`
/// until dropped.
pub async fn run_member_events(
    hub: Client,
    hub_namespace: String,
    member: Client,
    pods: MemberPods,
) -> Result<(), Error> {
    let works: Api<Work> = Api::namespaced(hub, &hub_namespace);
    let (store, writer) = reflector::store();
    let watch_works = watcher(works.clone(), watcher::Config::default())
        .default_backoff()
        .modify(|work: &mut Work| {
            work.managed_fields_mut().clear();
            work.spec.manifests.clear();
        })
        .reflect(writer)
        .for_each(|_| futures::future::ready(()));
    let warnings = Api::<MemberEvent>::all(member);
    let events = watcher(warnings, watcher::Config::default().fields("type=Warning"))
        .default_backoff()
        .applied_objects();
    let report = async {
        let mut reporter = Reporter { works, pods, lists: HashMap::new(), written: HashMap::new() };
        let mut pending: Vec<MemberEvent> = Vec::new();
        let mut events = std::pin::pin!(events);
        let mut ticks = tokio::time::interval(FLUSH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(e)) if pending.len() < MAX_PENDING => pending.push(e),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::debug!(error = %e, "member event watch error (retrying)"),
                    None => return,
                },
                _ = ticks.tick() => {
                    if store.wait_until_ready().await.is_ok() {
                        reporter.flush(&store, std::mem::take(&mut pending)).await;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = watch_works => Ok(()),
        () = report => Ok(()),
    }
}

struct Reporter {
    works: Api<Work>,
    pods: MemberPods,
    /// The current list per Work.
    lists: HashMap<String, Vec<MemberWarning>>,
    /// What was last written per Work, and when.
    written: HashMap<String, (Vec<MemberWarning>, Timestamp)>,
}

impl Reporter {
    async fn flush(&mut self, store: &Store<Work>, observed: Vec<MemberEvent>) {
        let now = Timestamp::now();
        let works = store.state();
        // Applied objects: (kind, namespace, name) -> (Work, manifest ordinal).
        let mut applied: HashMap<(String, String, String), (String, i32)> = HashMap::new();
        for work in &works {
            let name = work.name_any();
            let statuses = work.status.as_ref().map(|s| s.manifest_statuses.as_slice()).unwrap_or_default();
            for m in statuses.iter().filter(|m| m.applied) {
                let id = &m.identifier;
                applied.insert(
                    (id.kind.clone(), id.namespace.clone(), id.name.clone()),
                    (name.clone(), id.ordinal),
                );
            }
            // After a restart, go on from what the Work says.
            if !self.lists.contains_key(&name) {
                let on_work = work.status.as_ref().map(|s| s.member_warnings.clone()).unwrap_or_default();
                self.written.insert(name.clone(), (on_work.clone(), now));
                self.lists.insert(name, on_work);
            }
        }
        for event in observed {
            let Some((work, ordinal)) = self.applied_object(&applied, &event) else { continue };
            let involved = &event.involved_object;
            let seen = MemberWarning {
                ordinal,
                object: format!(
                    "{}/{}",
                    involved.kind.as_deref().unwrap_or_default(),
                    involved.name.as_deref().unwrap_or_default()
                ),
                reason: event.reason.clone().unwrap_or_default(),
                message: event.message.clone().unwrap_or_default(),
                count: 1,
                last_seen: Time(last_seen(&event).unwrap_or(now)),
            };
            let list = self.lists.entry(work).or_default();
            *list = record(list, seen, now);
        }
        let names: Vec<String> = works.iter().map(|w| w.name_any()).collect();
        self.lists.retain(|name, _| names.contains(name));
        self.written.retain(|name, _| names.contains(name));
        for (name, list) in self.lists.iter_mut() {
            *list = prune(std::mem::take(list), now);
            let (written, at) =
                self.written.get(name).map(|(l, at)| (l.as_slice(), Some(*at))).unwrap_or_default();
            if !write_due(written, list, at, now) {
                continue;
            }
            match write(&self.works, name, list).await {
                Ok(()) => {
                    tracing::debug!(work = %name, warnings = list.len(), "member warnings reported");
                    self.written.insert(name.clone(), (list.clone(), now));
                }
                Err(e) => tracing::warn!(work = %name, error = %e, "writing member warnings failed"),
            }
        }
    }

    /// The Work and manifest whose object (or whose workload's pod or
    /// ReplicaSet) `event` is about.
    fn applied_object(
        &self,
        applied: &HashMap<(String, String, String), (String, i32)>,
        event: &MemberEvent,
    ) -> Option<(String, i32)> {
        let involved = &event.involved_object;
        let kind = involved.kind.as_deref()?;
        let name = involved.name.as_deref()?;
        let namespace = involved.namespace.clone().unwrap_or_default();
        let pod = (kind == "Pod")
            .then(|| self.pods.store().get(&ObjectRef::new(name).within(&namespace)))
            .flatten();
        let owner = pod.as_ref().and_then(|p| {
            p.owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| (o.kind.clone(), o.name.clone()))
        });
        let hash = pod.as_ref().and_then(|p| p.labels().get("pod-template-hash").cloned());
        owner_candidates(kind, name, owner.as_ref().map(|(k, n)| (k.as_str(), n.as_str())), hash.as_deref())
            .into_iter()
            .find_map(|(kind, name)| applied.get(&(kind, namespace.clone(), name)).cloned())
    }
}

/// When the member last saw the Event (a series' last observation first).
fn last_seen(event: &MemberEvent) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

async fn write(works: &Api<Work>, name: &str, list: &[MemberWarning]) -> Result<(), Error> {
    // An empty list is left out: the field goes with this manager's claim.
    let status = if list.is_empty() { json!({}) } else { json!({"memberWarnings": list}) };
    let patch = json!({
        "apiVersion": "work.flotilla.io/v1alpha1", "kind": "Work",
        "metadata": {"name": name},
        "status": status,
    });
    match works
        .patch_status(name, &PatchParams::apply(MEMBER_EVENTS_FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
