//! What the applier knows of the objects it applied in the member: one
//! metadata-only watch per applied kind, which reconciles the owning Work
//! when an object changes in a way the applier did not just cause itself
//! (status feedback, drift repair, a takeover).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_api::work::{keys, Work};
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use kube::api::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};

/// Locks a mutex; a panic elsewhere while holding it leaves plain data
/// behind, so a poisoned lock is still usable.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `(namespace, name)` of an object in the member (namespace empty when
/// cluster-scoped).
pub(super) type ObjectKey = (String, String);

/// What the applier remembers about an object carrying Flotilla's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Seen {
    /// The `applied-by` annotation (empty when absent).
    pub(super) applied_by: String,
    pub(super) resource_version: String,
}

/// The Flotilla-labelled objects of one kind in the member.
#[derive(Debug, Default)]
pub(super) struct KindObjects {
    pub(super) objects: HashMap<ObjectKey, Seen>,
    /// Objects the applier is applying right now, with what the watch saw
    /// of them meanwhile: whether that was the apply itself (no need to
    /// reconcile again) is known only once the apply answers.
    pub(super) applying: HashMap<ObjectKey, Vec<Seen>>,
    synced: bool,
}

impl KindObjects {
    /// Records what the watch saw of an object (`None`: deleted) and
    /// returns the Works to reconcile for it.
    pub(super) fn observe(&mut self, key: ObjectKey, now: Option<Seen>) -> Vec<String> {
        let previous = match &now {
            Some(seen) => self.objects.insert(key.clone(), seen.clone()),
            None => self.objects.remove(&key),
        };
        if previous == now {
            return Vec::new();
        }
        if let Some(seen_meanwhile) = self.applying.get_mut(&key) {
            let deleted = || Seen { applied_by: String::new(), resource_version: String::new() };
            let owner_now = now.as_ref().map(|n| n.applied_by.clone()).unwrap_or_default();
            seen_meanwhile.push(now.unwrap_or_else(deleted));
            // A previous owner that lost it learns so now.
            return previous.map(|p| p.applied_by).filter(|p| *p != owner_now).into_iter().collect();
        }
        // The current owner, and a previous one that lost it (taken over).
        let mut owners: Vec<String> =
            now.map(|n| n.applied_by).into_iter().chain(previous.map(|p| p.applied_by)).collect();
        owners.dedup();
        owners
    }

    /// The apply of an object answered (`None`: it failed). Returns the
    /// Works to reconcile for what the watch saw meanwhile that was not
    /// this apply (a status update right after it, someone else's change).
    pub(super) fn applied(&mut self, key: &ObjectKey, ours: Option<Seen>) -> Vec<String> {
        let seen_meanwhile = self.applying.remove(key).unwrap_or_default();
        let mut owners: Vec<String> = Vec::new();
        for seen in &seen_meanwhile {
            if ours.as_ref().is_some_and(|o| o.resource_version == seen.resource_version) {
                continue;
            }
            owners.extend(ours.iter().map(|o| o.applied_by.clone()));
            if !seen.applied_by.is_empty() {
                owners.push(seen.applied_by.clone());
            }
        }
        if let Some(ours) = ours {
            // Unless the watch already saw something newer than this apply.
            if owners.is_empty() {
                self.objects.insert(key.clone(), ours);
            }
        }
        owners.sort();
        owners.dedup();
        owners
    }
}

/// One kind's watch and what it knows.
pub(super) struct Watch {
    pub(super) objects: Arc<Mutex<KindObjects>>,
    _task: AbortOnDrop,
}

impl Watch {
    /// Starts watching a kind's Flotilla-labelled objects in the member.
    pub(super) fn start(
        member: &Client,
        resource: &ApiResource,
        triggers: mpsc::UnboundedSender<ObjectRef<Work>>,
        hub_namespace: String,
        cluster: String,
    ) -> Self {
        let kind = watch_key(resource);
        let objects = Arc::new(Mutex::new(KindObjects::default()));
        // Metadata only: the watch decides what to reconcile; the status fed
        // back comes from the apply that follows.
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(member.clone(), resource);
        let config =
            watcher::Config::default().labels(&format!("{}={}", keys::MANAGED_BY, keys::MANAGED_BY_VALUE));
        let events = watcher(api, config).default_backoff();
        tracing::debug!(cluster = %cluster, kind = %kind, "watching applied objects");
        let follower = Follower { objects: objects.clone(), triggers, hub_namespace, cluster, kind };
        let task = tokio::spawn(follower.run(events));
        Watch { objects, _task: AbortOnDrop(task) }
    }
}

/// Stops a spawned task when the applier goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The key of a kind's watch: `apiVersion/plural`.
pub(super) fn watch_key(resource: &ApiResource) -> String {
    format!("{}/{}", resource.api_version, resource.plural)
}

/// Follows one kind's watch: keeps what is known of each object and
/// reconciles the owning Work when an object changes in a way the applier
/// did not just cause itself.
struct Follower {
    objects: Arc<Mutex<KindObjects>>,
    triggers: mpsc::UnboundedSender<ObjectRef<Work>>,
    hub_namespace: String,
    cluster: String,
    kind: String,
}

impl Follower {
    async fn run(
        self,
        events: impl Stream<Item = Result<watcher::Event<PartialObjectMeta<DynamicObject>>, watcher::Error>>,
    ) {
        let mut events = std::pin::pin!(events);
        let mut listing: Option<HashMap<ObjectKey, Seen>> = None;
        while let Some(event) = events.next().await {
            let mut owners: Vec<String> = Vec::new();
            match event {
                Ok(watcher::Event::Init) => listing = Some(HashMap::new()),
                Ok(watcher::Event::InitApply(meta)) => {
                    let (key, seen) = seen(&meta);
                    listing.get_or_insert_with(HashMap::new).insert(key, seen);
                }
                Ok(watcher::Event::InitDone) => {
                    let listed = listing.take().unwrap_or_default();
                    let mut state = lock(&self.objects);
                    for (key, seen) in &listed {
                        // On the first list, objects the applier has not
                        // touched yet are reconciled with their Works anyway.
                        match state.objects.get(key) {
                            Some(known) if known != seen => owners.push(seen.applied_by.clone()),
                            None if state.synced => owners.push(seen.applied_by.clone()),
                            _ => {}
                        }
                    }
                    if state.synced {
                        // Gone while the watch was down.
                        for (key, known) in &state.objects {
                            if !listed.contains_key(key) {
                                owners.push(known.applied_by.clone());
                            }
                        }
                        state.objects = listed;
                    } else {
                        // Keep what was applied while listing; the watch
                        // reports it next.
                        state.objects.extend(listed);
                        state.synced = true;
                    }
                }
                Ok(watcher::Event::Apply(meta)) => {
                    let (key, seen) = seen(&meta);
                    owners = lock(&self.objects).observe(key, Some(seen));
                }
                Ok(watcher::Event::Delete(meta)) => {
                    let (key, _) = seen(&meta);
                    owners = lock(&self.objects).observe(key, None);
                }
                Err(e) => {
                    tracing::debug!(cluster = %self.cluster, kind = %self.kind, error = %e, "watching applied objects")
                }
            }
            owners.sort();
            owners.dedup();
            for owner in owners {
                trigger(&self.triggers, &self.hub_namespace, &owner);
            }
        }
    }
}

/// Reconciles the Work an `applied-by` annotation names, if it is one of
/// this applier's.
pub(super) fn trigger(
    triggers: &mpsc::UnboundedSender<ObjectRef<Work>>,
    hub_namespace: &str,
    applied_by: &str,
) {
    let Some((namespace, name)) = applied_by.split_once('/') else { return };
    if namespace == hub_namespace && !name.is_empty() {
        // Only fails when the applier is gone.
        let _ = triggers.unbounded_send(ObjectRef::new(name).within(namespace));
    }
}

fn seen(meta: &PartialObjectMeta<DynamicObject>) -> (ObjectKey, Seen) {
    let key = (meta.namespace().unwrap_or_default(), meta.name_any());
    let applied_by = meta.annotations().get(keys::APPLIED_BY_WORK).cloned().unwrap_or_default();
    (key, Seen { applied_by, resource_version: meta.resource_version().unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ("default".into(), name.into())
    }

    fn seen(owner: &str, version: &str) -> Seen {
        Seen { applied_by: owner.into(), resource_version: version.into() }
    }

    #[test]
    fn changes_seen_by_the_watch_reconcile_their_owners_once() {
        let mut objects = KindObjects::default();
        assert_eq!(objects.observe(key("a"), Some(seen("ns/w", "1"))), ["ns/w"]);
        assert!(objects.observe(key("a"), Some(seen("ns/w", "1"))).is_empty(), "already known");
        assert_eq!(objects.observe(key("a"), Some(seen("ns/w", "2"))), ["ns/w"]);
        // Taken over: both Works hear of it.
        assert_eq!(objects.observe(key("a"), Some(seen("ns/v", "3"))), ["ns/v", "ns/w"]);
        assert_eq!(objects.observe(key("a"), None), ["ns/v"]);
        assert!(objects.observe(key("a"), None).is_empty(), "already gone");
    }

    #[test]
    fn the_echo_of_an_apply_does_not_reconcile_again_but_what_follows_does() {
        let mut objects = KindObjects::default();
        objects.observe(key("a"), Some(seen("ns/w", "1")));

        // The watch reports the apply before the apply answers.
        objects.applying.insert(key("a"), Vec::new());
        assert!(objects.observe(key("a"), Some(seen("ns/w", "2"))).is_empty());
        assert!(objects.applied(&key("a"), Some(seen("ns/w", "2"))).is_empty());
        // ... or after.
        objects.applying.insert(key("a"), Vec::new());
        assert!(objects.applied(&key("a"), Some(seen("ns/w", "3"))).is_empty());
        assert!(objects.observe(key("a"), Some(seen("ns/w", "3"))).is_empty());

        // A status update right after the apply, seen before it answered.
        objects.applying.insert(key("a"), Vec::new());
        assert!(objects.observe(key("a"), Some(seen("ns/w", "4"))).is_empty());
        assert!(objects.observe(key("a"), Some(seen("ns/w", "5"))).is_empty());
        assert_eq!(objects.applied(&key("a"), Some(seen("ns/w", "4"))), ["ns/w"]);
        assert_eq!(objects.objects[&key("a")], seen("ns/w", "5"), "the newer word kept");

        // A failed apply: what was seen meanwhile is someone else's doing.
        objects.applying.insert(key("a"), Vec::new());
        assert!(objects.observe(key("a"), Some(seen("ns/w", "6"))).is_empty());
        assert_eq!(objects.applied(&key("a"), None), ["ns/w"]);
    }
}
