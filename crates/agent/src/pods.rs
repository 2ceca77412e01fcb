//! The member's pods, kept current by one watch shared by the collector
//! (inventory) and the applier (why a workload is unhealthy). The applier
//! follows the pods of the workloads that are not healthy: a change to one
//! of them reconciles the Work again, so what its status says about the
//! pods (a restart count, a pod that became ready) stays current without
//! polling.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_api::work::Work;
use flotilla_apps_core::affinity::label_selector_matches;
use flotilla_apps_core::health::diagnosis::PodSelection;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

/// Where the applier wants to hear of Works to reconcile.
pub type Listener = futures::channel::mpsc::UnboundedSender<ObjectRef<Work>>;

/// The member's pods (cheap to clone; the watch stops when the last clone
/// is dropped).
#[derive(Clone)]
pub struct MemberPods {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store<Pod>,
    followed: Arc<Mutex<Followed>>,
    _task: AbortOnDrop,
}

/// Stops the watch when the pods are no longer wanted.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one Work follows in one namespace, and whom to tell.
struct Follow {
    selections: Vec<PodSelection>,
    listener: Listener,
}

/// The pods the Works' unhealthy objects select, by namespace.
#[derive(Default)]
struct Followed {
    by_namespace: HashMap<String, HashMap<ObjectRef<Work>, Follow>>,
}

impl Followed {
    /// Replaces what `work` follows.
    fn set(&mut self, work: &ObjectRef<Work>, selections: Vec<PodSelection>, listener: &Listener) {
        for works in self.by_namespace.values_mut() {
            works.remove(work);
        }
        self.by_namespace.retain(|_, works| !works.is_empty());
        let mut by_namespace: BTreeMap<String, Vec<PodSelection>> = BTreeMap::new();
        for selection in selections {
            by_namespace.entry(selection.namespace.clone()).or_default().push(selection);
        }
        for (namespace, selections) in by_namespace {
            let follow = Follow { selections, listener: listener.clone() };
            self.by_namespace.entry(namespace).or_default().insert(work.clone(), follow);
        }
    }

    /// The Works following a pod in `namespace` with `labels`, with whom to
    /// tell.
    fn following(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<(ObjectRef<Work>, Listener)> {
        let Some(works) = self.by_namespace.get(namespace) else { return Vec::new() };
        works
            .iter()
            .filter(|(_, f)| f.selections.iter().any(|s| label_selector_matches(&s.selector, labels)))
            .map(|(work, f)| (work.clone(), f.listener.clone()))
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves plain data behind.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemberPods {
    /// Starts watching every pod of the member.
    pub fn start(member: Client) -> Self {
        let (store, writer) = reflector::store();
        let followed = Arc::new(Mutex::new(Followed::default()));
        let tell = followed.clone();
        let events = watcher(Api::<Pod>::all(member), watcher::Config::default())
            .default_backoff()
            // Nothing here reads who wrote which field.
            .modify(|pod: &mut Pod| pod.managed_fields_mut().clear())
            .reflect(writer)
            .touched_objects();
        let task = tokio::spawn(events.for_each(move |event| {
            match event {
                Ok(pod) => {
                    let namespace = pod.namespace().unwrap_or_default();
                    let following = lock(&tell).following(&namespace, pod.labels());
                    let mut told = HashSet::new();
                    for (work, listener) in following {
                        if told.insert(work.clone()) {
                            // Fails only when the applier is gone.
                            let _ = listener.unbounded_send(work);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "watching the member's pods"),
            }
            futures::future::ready(())
        }));
        MemberPods { inner: Arc::new(Inner { store, followed, _task: AbortOnDrop(task) }) }
    }

    /// Every pod, once the first list has arrived.
    pub fn store(&self) -> &Store<Pod> {
        &self.inner.store
    }

    /// Whether the first list has arrived.
    pub fn listed(&self) -> bool {
        self.inner.store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
    }

    /// The pods a selection selects, as JSON; `None` before the first list
    /// (an empty answer then would be a lie).
    pub fn selected(&self, selection: &PodSelection) -> Option<Vec<Value>> {
        if !self.listed() {
            return None;
        }
        let pods = self
            .inner
            .store
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(selection.namespace.as_str())
                    && label_selector_matches(&selection.selector, p.labels())
            })
            .filter_map(|p| serde_json::to_value(&*p).ok())
            .collect();
        Some(pods)
    }

    /// Makes `selections` what `work` follows (empty: nothing): a change to
    /// a pod one of them selects sends the Work to `listener`.
    pub fn follow(&self, work: &ObjectRef<Work>, selections: Vec<PodSelection>, listener: &Listener) {
        lock(&self.inner.followed).set(work, selections, listener);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn selection(namespace: &str, app: &str) -> PodSelection {
        PodSelection {
            namespace: namespace.into(),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            },
        }
    }

    fn labels(app: &str) -> BTreeMap<String, String> {
        [("app".to_string(), app.to_string()), ("pod-template-hash".to_string(), "x".to_string())].into()
    }

    fn names(found: Vec<(ObjectRef<Work>, Listener)>) -> Vec<String> {
        let mut names: Vec<String> = found.into_iter().map(|(w, _)| w.name).collect();
        names.sort();
        names
    }

    #[test]
    fn a_pod_change_reaches_the_works_whose_unhealthy_objects_select_it() {
        let (listener, _receiver) = futures::channel::mpsc::unbounded();
        let mut followed = Followed::default();
        let web = ObjectRef::new("web").within("flotilla-cluster-m1");
        let db = ObjectRef::new("db").within("flotilla-cluster-m1");
        followed.set(&web, vec![selection("demo", "web"), selection("other", "web")], &listener);
        followed.set(&db, vec![selection("demo", "db")], &listener);

        assert_eq!(names(followed.following("demo", &labels("web"))), ["web"]);
        assert_eq!(names(followed.following("other", &labels("web"))), ["web"]);
        assert_eq!(names(followed.following("demo", &labels("db"))), ["db"]);
        assert!(followed.following("demo", &labels("cache")).is_empty());
        assert!(followed.following("elsewhere", &labels("web")).is_empty());

        // Healthy again: it follows only what is still unhealthy, then nothing.
        followed.set(&web, vec![selection("demo", "web")], &listener);
        assert!(followed.following("other", &labels("web")).is_empty());
        assert!(!followed.by_namespace.contains_key("other"), "empty namespaces go");
        followed.set(&web, Vec::new(), &listener);
        assert!(followed.following("demo", &labels("web")).is_empty());
        assert_eq!(names(followed.following("demo", &labels("db"))), ["db"]);
    }
}
