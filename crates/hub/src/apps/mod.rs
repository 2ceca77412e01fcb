//! Applications across the fleet: templates + policies → bindings →
//! works, and the fleet-wide status back on the templates.
//!
//! Two queues keyed by template: the binder (detector, scheduler and binder
//! in one pass: pick the policy, choose clusters, write the binding and one
//! Work per cluster) and the status aggregator (works → binding status →
//! template status). Any kind can be a template, so templates are watched
//! dynamically, one metadata-only watch per kind a policy selects; nothing
//! caches whole templates (they are read when a reconcile needs them), which
//! keeps the hub's memory flat in the number of templates.

mod binder;
mod fleet_view;
mod policies;
mod queue;
mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::policy::{
    ClusterOverridePolicy, ClusterPropagationPolicy, OverridePolicy, PolicyStatus, PropagationPolicy,
};
use flotilla_api::work::{keys, BindingSpec, BindingStatus, ClusterResourceBinding, ResourceBinding, Work};
use flotilla_apps_core::binding::template_key;
use flotilla_apps_core::binding_status::Outcome;
use flotilla_apps_core::scheduler::ClusterSnapshot;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::discovery::ApiCapabilities;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};

use crate::Error;
use queue::Queue;

/// A template: an object on the hub that a policy may propagate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateKey {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped templates.
    pub namespace: String,
    pub name: String,
}

impl TemplateKey {
    fn hash_label(&self) -> String {
        template_key(&self.api_version, &self.kind, &self.namespace, &self.name)
    }
}

impl std::fmt::Display for TemplateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A kind of template the hub serves.
#[derive(Clone)]
struct Kind {
    resource: ApiResource,
    namespaced: bool,
    has_status: bool,
}

/// What the hub last saw of a template's metadata: enough to skip events
/// that do not change what is propagated (e.g. our own status writes).
#[derive(Clone, Copy)]
struct Seen {
    signature: u64,
    generation: Option<i64>,
}

pub(crate) struct Apps {
    client: Client,
    pps: Store<PropagationPolicy>,
    cpps: Store<ClusterPropagationPolicy>,
    ops: Store<OverridePolicy>,
    cops: Store<ClusterOverridePolicy>,
    clusters: Store<ManagedCluster>,
    bindings: Store<ResourceBinding>,
    cluster_bindings: Store<ClusterResourceBinding>,
    works: Store<Work>,
    kinds: Mutex<HashMap<(String, String), Kind>>,
    seen: Mutex<HashMap<TemplateKey, Seen>>,
    by_hash: Mutex<HashMap<String, TemplateKey>>,
    /// Template key label → its works by cluster (the Work cache, indexed).
    work_index: Mutex<HashMap<String, BTreeMap<String, reflector::ObjectRef<Work>>>>,
    /// Dependency template → names of the bindings (same namespace) needing it.
    dependents: Mutex<HashMap<TemplateKey, BTreeSet<String>>>,
    outcomes: Mutex<HashMap<TemplateKey, Outcome>>,
    /// Templates whose works the hub could not write: (reason, message),
    /// shown on the binding's `FullyApplied` until a write succeeds.
    refused: Mutex<HashMap<TemplateKey, (String, String)>>,
    /// Consecutive binder failures by template, with the last error.
    bind_failures: Mutex<HashMap<TemplateKey, (u32, String)>>,
    /// The last status write the API server refused, by template (logged once).
    status_refusals: Mutex<HashMap<TemplateKey, String>>,
    /// Last template status written, by template (hash of the JSON).
    written_status: Mutex<HashMap<TemplateKey, u64>>,
    cluster_view: Mutex<Option<Arc<fleet_view::ClusterView>>>,
    failover: flotilla_apps_core::failover::FailoverSettings,
    cluster_signatures: Mutex<HashMap<String, (u64, u64)>>,
    invalid_policies: Mutex<HashSet<(String, String, String)>>,
    /// True once every policy of the first list has been judged: until
    /// then the binder waits, so it never uses a policy written while no
    /// hub ran (the webhook fails open) before knowing whether it is valid.
    policies_judged: tokio::sync::watch::Sender<bool>,
    binder: Arc<Queue<TemplateKey>>,
    status: Arc<Queue<TemplateKey>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps are caches rebuilt from the API; a poisoned lock only means
    // a reconcile panicked mid-update, and the next event repairs it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// The API server's message when it refuses a write for what it holds
/// (invalid, too large): the same write would be refused again.
pub(crate) fn refusal(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if flotilla_apps_core::binding_status::is_refusal(s.code, &s.message) => {
            Some(s.message.clone())
        }
        _ => None,
    }
}

/// Objects an event carries (deletions included).
fn touched<K>(event: &Event<K>) -> Option<&K> {
    match event {
        Event::Apply(k) | Event::InitApply(k) | Event::Delete(k) => Some(k),
        Event::Init | Event::InitDone => None,
    }
}

/// Starts a reflector for `api` and returns its store plus the stream of
/// events (already applied to the store).
fn reflect<K>(
    api: Api<K>,
    strip: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, impl Stream<Item = Event<K>> + Send)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        .filter_map(|r| async move {
            match r {
                Ok(event) => Some(event),
                Err(e) => {
                    tracing::debug!(error = %e, "watch error (retrying)");
                    None
                }
            }
        });
    (store, stream)
}

async fn wait_logged<F: std::future::Future>(what: &str, wait: F) {
    let mut wait = std::pin::pin!(wait);
    while tokio::time::timeout(Duration::from_secs(10), &mut wait).await.is_err() {
        tracing::info!(cache = what, "still waiting for the first list");
    }
}

fn strip_meta<K: Resource>(k: &mut K) {
    k.meta_mut().managed_fields = None;
    if let Some(a) = k.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Runs the application controllers until the process ends.
pub async fn run(
    client: Client,
    failover: flotilla_apps_core::failover::FailoverSettings,
) -> Result<(), Error> {
    let (pps, pp_events) = reflect(Api::<PropagationPolicy>::all(client.clone()), strip_meta);
    let (cpps, cpp_events) = reflect(Api::<ClusterPropagationPolicy>::all(client.clone()), strip_meta);
    let (ops, op_events) = reflect(Api::<OverridePolicy>::all(client.clone()), strip_meta);
    let (cops, cop_events) = reflect(Api::<ClusterOverridePolicy>::all(client.clone()), strip_meta);
    let (clusters, cluster_events) = reflect(Api::<ManagedCluster>::all(client.clone()), strip_meta);
    let (bindings, binding_events) = reflect(Api::<ResourceBinding>::all(client.clone()), strip_meta);
    let (cluster_bindings, cluster_binding_events) =
        reflect(Api::<ClusterResourceBinding>::all(client.clone()), strip_meta);
    // Works without their manifests: the hub only needs their labels,
    // annotations and status here.
    let (works, work_events) = reflect(Api::<Work>::all(client.clone()), |w: &mut Work| {
        strip_meta(w);
        w.spec.manifests.clear();
    });

    let apps = Arc::new(Apps {
        client,
        pps,
        cpps,
        ops,
        cops,
        clusters,
        bindings,
        cluster_bindings,
        works,
        kinds: Mutex::default(),
        seen: Mutex::default(),
        by_hash: Mutex::default(),
        work_index: Mutex::default(),
        dependents: Mutex::default(),
        outcomes: Mutex::default(),
        refused: Mutex::default(),
        status_refusals: Mutex::default(),
        bind_failures: Mutex::default(),
        written_status: Mutex::default(),
        cluster_view: Mutex::default(),
        failover,
        cluster_signatures: Mutex::default(),
        invalid_policies: Mutex::default(),
        policies_judged: tokio::sync::watch::Sender::new(false),
        binder: Queue::new(),
        status: Queue::new(),
    });

    let policy_events = futures::stream::select_all([
        pp_events.filter_map(|e| async move { PolicyEvent::of(&e, PolicyEvent::pp) }).boxed(),
        cpp_events.filter_map(|e| async move { PolicyEvent::of(&e, PolicyEvent::cpp) }).boxed(),
        op_events.filter_map(|e| async move { PolicyEvent::of(&e, PolicyEvent::op) }).boxed(),
        cop_events.filter_map(|e| async move { PolicyEvent::of(&e, PolicyEvent::cop) }).boxed(),
    ]);

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(on_policies(apps.clone(), policy_events));
    tasks.spawn(on_clusters(apps.clone(), cluster_events));
    tasks.spawn(on_bindings(apps.clone(), binding_events.map(BindingEvent::namespaced)));
    tasks.spawn(on_bindings(apps.clone(), cluster_binding_events.map(BindingEvent::cluster)));
    tasks.spawn(on_works(apps.clone(), work_events));
    tasks.spawn(watch_kinds(apps.clone()));
    tasks.spawn(policies::judge(apps.clone()));
    tasks.spawn(policies::recheck(apps.clone()));
    tasks.spawn(status::resync(apps.clone()));
    for _ in 0..8 {
        tasks.spawn(binder::worker(apps.clone()));
    }
    for _ in 0..4 {
        tasks.spawn(status::worker(apps.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            return Err(Error::Other(format!("application controller task failed: {e}")));
        }
    }
    Ok(())
}

/// A policy changed (or was deleted).
struct PolicyEvent {
    kind: &'static str,
    namespace: String,
    name: String,
    generation: Option<i64>,
    /// (apiVersion, kind) pairs selected; None = every template (an
    /// override policy without selectors).
    selects: Option<Vec<(String, String)>>,
    object: serde_json::Value,
    status: Option<PolicyStatus>,
    deleted: bool,
}

impl PolicyEvent {
    fn from<K: Resource<DynamicType = ()> + serde::Serialize>(
        k: &K,
        selects: Option<Vec<(String, String)>>,
        status: Option<PolicyStatus>,
    ) -> Self {
        let mut object = serde_json::to_value(k).unwrap_or_default();
        if let Some(o) = object.as_object_mut() {
            o.insert("apiVersion".into(), K::api_version(&()).into());
            o.insert("kind".into(), K::kind(&()).into());
        }
        Self {
            kind: static_kind::<K>(),
            namespace: k.meta().namespace.clone().unwrap_or_default(),
            name: k.meta().name.clone().unwrap_or_default(),
            generation: k.meta().generation,
            selects,
            object,
            status,
            deleted: false,
        }
    }
    fn of<K>(e: &Event<K>, f: fn(&K) -> Self) -> Option<Self> {
        let mut out = f(touched(e)?);
        out.deleted = matches!(e, Event::Delete(_));
        Some(out)
    }
    fn pp(p: &PropagationPolicy) -> Self {
        let s = &p.spec.spec;
        Self::from(p, Some(selected(&s.resource_selectors)), p.status.clone())
    }
    fn cpp(p: &ClusterPropagationPolicy) -> Self {
        let s = &p.spec.spec;
        Self::from(p, Some(selected(&s.resource_selectors)), p.status.clone())
    }
    fn op(p: &OverridePolicy) -> Self {
        let s = &p.spec.spec;
        let sel = (!s.resource_selectors.is_empty()).then(|| selected(&s.resource_selectors));
        Self::from(p, sel, p.status.clone())
    }
    fn cop(p: &ClusterOverridePolicy) -> Self {
        let s = &p.spec.spec;
        let sel = (!s.resource_selectors.is_empty()).then(|| selected(&s.resource_selectors));
        Self::from(p, sel, p.status.clone())
    }
}

fn static_kind<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "PropagationPolicy" => "PropagationPolicy",
        "ClusterPropagationPolicy" => "ClusterPropagationPolicy",
        "OverridePolicy" => "OverridePolicy",
        _ => "ClusterOverridePolicy",
    }
}

fn selected(selectors: &[flotilla_api::policy::ResourceSelector]) -> Vec<(String, String)> {
    selectors.iter().map(|s| (s.api_version.clone(), s.kind.clone())).collect()
}

/// The kinds of the objects a pod template may refer to (propagateDeps).
const DEPENDENCY_KINDS: [&str; 4] = ["ConfigMap", "Secret", "ServiceAccount", "PersistentVolumeClaim"];

async fn on_policies(apps: Arc<Apps>, events: impl Stream<Item = PolicyEvent> + Send) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if !event.deleted {
            apps.policy_status(&event).await;
        }
        let wanted = match &event.selects {
            Some(kinds) => kinds.iter().cloned().collect::<HashSet<_>>(),
            None => HashSet::new(),
        };
        // Templates the policy may select now, and those it selected before.
        let keys: Vec<TemplateKey> = lock(&apps.seen)
            .keys()
            .filter(|k| event.selects.is_none() || wanted.contains(&(k.api_version.clone(), k.kind.clone())))
            .filter(|k| event.namespace.is_empty() || k.namespace == event.namespace)
            .cloned()
            .collect();
        for key in keys {
            apps.binder.add(key);
        }
        for key in apps.binding_keys() {
            apps.binder.add(key);
        }
    }
}

/// Keeps one metadata watch per template kind any propagation policy
/// selects (and the dependency kinds when a policy propagates them).
async fn watch_kinds(apps: Arc<Apps>) {
    apps.wait_ready().await;
    tracing::info!("application controllers have their caches");
    let mut started: HashSet<(String, String)> = HashSet::new();
    // Owned here, so the watches stop when this task does.
    let mut watches = tokio::task::JoinSet::new();
    loop {
        let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
        let mut deps = false;
        for p in apps.pps.state() {
            wanted.extend(selected(&p.spec.spec.resource_selectors));
            deps |= p.spec.spec.propagate_deps;
        }
        for p in apps.cpps.state() {
            wanted.extend(selected(&p.spec.spec.resource_selectors));
            deps |= p.spec.spec.propagate_deps;
        }
        if deps {
            wanted.extend(DEPENDENCY_KINDS.iter().map(|k| ("v1".to_string(), k.to_string())));
        }
        tracing::trace!(kinds = wanted.len(), "template kinds wanted");
        for (api_version, kind) in wanted {
            if started.contains(&(api_version.clone(), kind.clone())) {
                continue;
            }
            let (group, version) = match api_version.rsplit_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), api_version.clone()),
            };
            let gvk = GroupVersionKind::gvk(&group, &version, &kind);
            match kube::discovery::pinned_kind(&apps.client, &gvk).await {
                Ok((resource, caps)) => {
                    let entry = Kind {
                        namespaced: caps.scope == kube::discovery::Scope::Namespaced,
                        has_status: has_status(&caps),
                        resource: resource.clone(),
                    };
                    lock(&apps.kinds).insert((api_version.clone(), kind.clone()), entry);
                    started.insert((api_version.clone(), kind.clone()));
                    tracing::info!(%api_version, %kind, "watching templates");
                    watches.spawn(watch_templates(apps.clone(), api_version, kind, resource));
                }
                Err(e) => {
                    // E.g. a CRD not installed yet: try again on the next round.
                    tracing::debug!(%api_version, %kind, error = %e, "template kind not served by the hub yet");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn has_status(caps: &ApiCapabilities) -> bool {
    caps.subresources.iter().any(|(r, _)| r.plural == "status" || r.plural.ends_with("/status"))
}

async fn watch_templates(apps: Arc<Apps>, api_version: String, kind: String, resource: ApiResource) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(apps.client.clone(), &resource);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut listed: HashSet<TemplateKey> = HashSet::new();
    let key_of = |meta: &ObjectMeta| TemplateKey {
        api_version: api_version.clone(),
        kind: kind.clone(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    };
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(%kind, error = %e, "template watch error (retrying)");
                continue;
            }
        };
        match event {
            Event::Init => listed.clear(),
            Event::Apply(obj) | Event::InitApply(obj) => {
                let key = key_of(&obj.metadata);
                listed.insert(key.clone());
                let meta = &obj.metadata;
                // Objects with a generation change it only when their spec
                // changes; the others (ConfigMaps...) on every write.
                let change = match meta.generation {
                    Some(g) if g > 0 => g.to_string(),
                    _ => meta.resource_version.clone().unwrap_or_default(),
                };
                let signature =
                    hash_of(&(change, &meta.labels, &meta.annotations, meta.deletion_timestamp.is_some()));
                let previous = lock(&apps.seen)
                    .insert(key.clone(), Seen { signature, generation: meta.generation })
                    .map(|s| s.signature);
                if previous != Some(signature) && apps.may_concern(&key, meta) {
                    apps.binder.add(key);
                }
            }
            Event::Delete(obj) => {
                let key = key_of(&obj.metadata);
                lock(&apps.seen).remove(&key);
                apps.binder.add(key);
            }
            Event::InitDone => {
                // Templates deleted while the hub was not watching: their
                // bindings remain; reconcile them (they clean up).
                for key in apps.binding_keys() {
                    if key.api_version == api_version && key.kind == kind && !listed.contains(&key) {
                        lock(&apps.seen).remove(&key);
                        apps.binder.add(key);
                    }
                }
            }
        }
    }
}

/// A binding changed: keep the indexes and wake the status writer.
struct BindingEvent {
    namespace: String,
    name: String,
    spec: Option<BindingSpec>,
    deleted: bool,
}

impl BindingEvent {
    fn namespaced(e: Event<ResourceBinding>) -> Option<Self> {
        let deleted = matches!(e, Event::Delete(_));
        touched(&e).map(|b| Self {
            namespace: b.namespace().unwrap_or_default(),
            name: b.name_any(),
            spec: Some(b.spec.spec.clone()),
            deleted,
        })
    }
    fn cluster(e: Event<ClusterResourceBinding>) -> Option<Self> {
        let deleted = matches!(e, Event::Delete(_));
        touched(&e).map(|b| Self {
            namespace: String::new(),
            name: b.name_any(),
            spec: Some(b.spec.spec.clone()),
            deleted,
        })
    }
}

async fn on_bindings(apps: Arc<Apps>, events: impl Stream<Item = Option<BindingEvent>> + Send) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let Some(event) = event else { continue };
        let Some(spec) = event.spec else { continue };
        let key = key_of_binding(&spec);
        lock(&apps.by_hash).insert(key.hash_label(), key.clone());
        {
            let mut dependents = lock(&apps.dependents);
            for deps in dependents.values_mut() {
                deps.remove(&event.name);
            }
            if !event.deleted {
                for d in &spec.dependencies {
                    let dep = TemplateKey {
                        api_version: d.api_version.clone(),
                        kind: d.kind.clone(),
                        namespace: event.namespace.clone(),
                        name: d.name.clone(),
                    };
                    dependents.entry(dep).or_default().insert(event.name.clone());
                }
            }
            dependents.retain(|_, v| !v.is_empty());
        }
        if event.deleted {
            // Recreate it if its template still wants one.
            apps.binder.add(key.clone());
        }
        // Its dependencies follow its clusters (and go when it goes).
        for d in &spec.dependencies {
            apps.binder.add(TemplateKey {
                api_version: d.api_version.clone(),
                kind: d.kind.clone(),
                namespace: event.namespace.clone(),
                name: d.name.clone(),
            });
        }
        apps.status.add(key);
    }
}

pub(crate) fn key_of_binding(spec: &BindingSpec) -> TemplateKey {
    TemplateKey {
        api_version: spec.resource.api_version.clone(),
        kind: spec.resource.kind.clone(),
        namespace: spec.resource.namespace.clone(),
        name: spec.resource.name.clone(),
    }
}

async fn on_clusters(apps: Arc<Apps>, events: impl Stream<Item = Event<ManagedCluster>> + Send) {
    let mut events = std::pin::pin!(events);
    let mut halted = BTreeMap::new();
    while let Some(event) = events.next().await {
        let Some(mc) = touched(&event) else { continue };
        let deleted = matches!(event, Event::Delete(_));
        *lock(&apps.cluster_view) = None;
        if apps.clusters.wait_until_ready().now_or_never().is_some() {
            fleet_view::announce_disruption(&apps, &mut halted).await;
        }
        let snapshot = ClusterSnapshot::from_managed_cluster(mc);
        // What decides placement, and what only decides capacity.
        let placement = hash_of(&(
            &snapshot.labels,
            format!("{:?}", snapshot.taints),
            format!("{:?}", snapshot.api_enablements),
            snapshot.schedulable,
            // A return after failover waits for the cluster to be Available.
            snapshot.available_since.map(|t| t.as_second()),
            deleted,
        ));
        let capacity = hash_of(&(&snapshot.allocatable, &snapshot.allocated));
        let before = if deleted {
            lock(&apps.cluster_signatures).remove(&mc.name_any())
        } else {
            lock(&apps.cluster_signatures).insert(mc.name_any(), (placement, capacity))
        };
        let placement_changed = before.map(|b| b.0) != Some(placement) || deleted;
        let capacity_changed = before.map(|b| b.1) != Some(capacity);
        if !placement_changed && !capacity_changed {
            continue;
        }
        for (key, spec) in apps.binding_specs() {
            // A binding whose scheduling failed is looked at again on any
            // change of any cluster's placement or capacity, whatever its
            // placement uses: what was missing may be there now.
            if placement_changed || binder::uses_capacity(&spec) || apps.scheduling_failed(&key) {
                apps.binder.add(key);
            }
        }
        if placement_changed {
            // Templates a policy selects but that have no binding yet
            // (e.g. nothing fitted before this cluster joined).
            let keys: Vec<TemplateKey> = lock(&apps.seen).keys().cloned().collect();
            for key in keys {
                apps.binder.add(key);
            }
        }
    }
}

async fn on_works(apps: Arc<Apps>, events: impl Stream<Item = Event<Work>> + Send) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let Some(work) = touched(&event) else { continue };
        let Some(hash) = work.labels().get(keys::TEMPLATE_KEY) else { continue };
        let Some(cluster) =
            work.namespace().and_then(|ns| ns.strip_prefix("flotilla-cluster-").map(String::from))
        else {
            continue;
        };
        {
            let mut index = lock(&apps.work_index);
            if matches!(event, Event::Delete(_)) {
                if let Some(works) = index.get_mut(hash) {
                    works.remove(&cluster);
                    if works.is_empty() {
                        index.remove(hash);
                    }
                }
            } else {
                index.entry(hash.clone()).or_default().insert(cluster, reflector::ObjectRef::from_obj(work));
            }
        }
        let key = lock(&apps.by_hash).get(hash).cloned();
        if let Some(key) = key {
            let deleted = matches!(event, Event::Delete(_));
            if deleted
                || apps.with_binding(&key, |s, _, _| !s.graceful_eviction_tasks.is_empty()) == Some(true)
            {
                // A failover waits for the new copies to be healthy; a work
                // that finished deleting is written again if still wanted
                // (e.g. its cluster came back while it was going).
                apps.binder.add(key.clone());
            }
            apps.status.add(key);
        }
    }
}

impl Apps {
    /// Whether the binder's last outcome for a template was a failure.
    pub(super) fn scheduling_failed(&self, key: &TemplateKey) -> bool {
        lock(&self.outcomes).get(key).is_some_and(|o| !o.scheduled)
    }

    /// Waits until every cache the reconcilers read has its first full
    /// list, so a restart never acts on half a picture (e.g. deletes works
    /// it has not yet seen a binding for).
    async fn wait_ready(&self) {
        wait_logged("propagation policies", self.pps.wait_until_ready()).await;
        wait_logged("cluster propagation policies", self.cpps.wait_until_ready()).await;
        wait_logged("override policies", self.ops.wait_until_ready()).await;
        wait_logged("cluster override policies", self.cops.wait_until_ready()).await;
        wait_logged("clusters", self.clusters.wait_until_ready()).await;
        wait_logged("bindings", self.bindings.wait_until_ready()).await;
        wait_logged("cluster bindings", self.cluster_bindings.wait_until_ready()).await;
        wait_logged("works", self.works.wait_until_ready()).await;
    }

    fn kind(&self, api_version: &str, kind: &str) -> Option<Kind> {
        lock(&self.kinds).get(&(api_version.to_string(), kind.to_string())).cloned()
    }

    /// Whether a template event may matter: a policy could select it, it
    /// has a binding, or a binding depends on it.
    fn may_concern(&self, key: &TemplateKey, meta: &ObjectMeta) -> bool {
        if self.with_binding(key, |_, _, _| ()).is_some() || lock(&self.dependents).contains_key(key) {
            return true;
        }
        let empty = BTreeMap::new();
        let t = flotilla_apps_core::selection::TemplateMeta {
            api_version: &key.api_version,
            kind: &key.kind,
            namespace: &key.namespace,
            name: &key.name,
            labels: meta.labels.as_ref().unwrap_or(&empty),
        };
        let hit = |sels: &[flotilla_api::policy::ResourceSelector]| {
            sels.iter().any(|s| flotilla_apps_core::selection::selector_matches(s, &t).is_some())
        };
        self.pps.state().iter().any(|p| {
            p.namespace().as_deref() == Some(key.namespace.as_str()) && hit(&p.spec.spec.resource_selectors)
        }) || self.cpps.state().iter().any(|p| hit(&p.spec.spec.resource_selectors))
    }

    fn binding_status(&self, key: &TemplateKey) -> Option<(BindingSpec, Option<BindingStatus>, ObjectMeta)> {
        self.with_binding(key, |spec, status, meta| (spec.clone(), status.cloned(), meta.clone()))
    }

    /// Looks at a template's binding (namespaced or cluster-scoped) in the
    /// cache, copying only what `f` takes.
    fn with_binding<T>(
        &self,
        key: &TemplateKey,
        f: impl FnOnce(&BindingSpec, Option<&BindingStatus>, &ObjectMeta) -> T,
    ) -> Option<T> {
        let name = flotilla_apps_core::binding::binding_name(&key.api_version, &key.kind, &key.name);
        if key.namespace.is_empty() {
            let r = reflector::ObjectRef::<ClusterResourceBinding>::new(&name);
            self.cluster_bindings.get(&r).map(|b| f(&b.spec.spec, b.status.as_ref(), &b.metadata))
        } else {
            let r = reflector::ObjectRef::<ResourceBinding>::new(&name).within(&key.namespace);
            self.bindings.get(&r).map(|b| f(&b.spec.spec, b.status.as_ref(), &b.metadata))
        }
    }

    fn binding_specs(&self) -> Vec<(TemplateKey, BindingSpec)> {
        let mut out: Vec<(TemplateKey, BindingSpec)> = self
            .bindings
            .state()
            .iter()
            .map(|b| (key_of_binding(&b.spec.spec), b.spec.spec.clone()))
            .collect();
        out.extend(
            self.cluster_bindings.state().iter().map(|b| (key_of_binding(&b.spec.spec), b.spec.spec.clone())),
        );
        out
    }

    fn binding_keys(&self) -> Vec<TemplateKey> {
        self.binding_specs().into_iter().map(|(key, _)| key).collect()
    }

    /// Works of a template, by cluster name.
    fn works_of(&self, key: &TemplateKey) -> BTreeMap<String, Arc<Work>> {
        let refs = lock(&self.work_index).get(&key.hash_label()).cloned().unwrap_or_default();
        refs.into_iter().filter_map(|(cluster, r)| Some((cluster, self.works.get(&r)?))).collect()
    }
}
