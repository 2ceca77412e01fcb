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

mod affinity_groups;
mod app_failover;
mod binder;
mod binder_binding;
mod binder_dispatch;
mod binder_outcome;
mod binder_pass;
mod binder_policy;
mod binder_schedule;
mod binder_writes;
mod claims;
mod dependency_policy;
mod dependent_overrides;
mod descheduler;
mod event_state;
mod events;
mod fleet_view;
mod fresh_clusters;
mod index;
mod interpreters;
mod metric_gates;
mod opt_in;
mod override_candidates;
mod policies;
mod pvc_protection;
mod queue;
mod rebalancer;
mod rollout_deps;
mod rollout_state;
mod rollouts;
mod served;
mod state;
mod status;
mod suspended;
mod work_state;
mod workload_groups;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::policy::{
    ClusterOverridePolicy, ClusterPropagationPolicy, OverridePolicy, PropagationPolicy,
};
use flotilla_api::rollout::{Rollout, RolloutStrategy};
use flotilla_api::work::{ClusterResourceBinding, ResourceBinding, Work};
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::discovery::ApiCapabilities;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};

use crate::error::Error;
use flotilla_apps_core::kind_discovery;
use index::{lock, selected, touched, BindingEvent, Index, Kind, PolicyEvent, Stores, TemplateKey};
use queue::Queue;
use state::Apps;

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
    opt_in: flotilla_apps_core::migration::OptIn,
    deschedule: flotilla_apps_core::deschedule::DescheduleSettings,
    policy_order: flotilla_apps_core::selection::PolicyOrder,
) -> Result<(), Error> {
    let (pps, pp_events) = reflect(Api::<PropagationPolicy>::all(client.clone()), strip_meta);
    let (cpps, cpp_events) = reflect(Api::<ClusterPropagationPolicy>::all(client.clone()), strip_meta);
    let (ops, op_events) = reflect(Api::<OverridePolicy>::all(client.clone()), strip_meta);
    let (cops, cop_events) = reflect(Api::<ClusterOverridePolicy>::all(client.clone()), strip_meta);
    // Clusters keep the taint manager's managed fields: which taints are the hub's.
    let (clusters, cluster_events) =
        reflect(Api::<ManagedCluster>::all(client.clone()), |mc: &mut ManagedCluster| {
            let mut own = mc.managed_fields().to_vec();
            flotilla_fleet_core::taint_owner::keep_only_manager(&mut own, crate::names::TAINT_FIELD_MANAGER);
            strip_meta(mc);
            mc.meta_mut().managed_fields = Some(own);
        });
    let (bindings, binding_events) = reflect(Api::<ResourceBinding>::all(client.clone()), strip_meta);
    let (cluster_bindings, cluster_binding_events) =
        reflect(Api::<ClusterResourceBinding>::all(client.clone()), strip_meta);
    // Works without their manifests: the hub only needs their labels,
    // annotations and status here.
    let (works, work_events) = reflect(Api::<Work>::all(client.clone()), |w: &mut Work| {
        strip_meta(w);
        w.spec.manifests.clear();
    });

    let (strategies, strategy_events) = reflect(Api::<RolloutStrategy>::all(client.clone()), strip_meta);
    let (rollout_objects, rollout_events) = reflect(Api::<Rollout>::all(client.clone()), strip_meta);
    let (interpreters, interpreter_events) =
        reflect(Api::<flotilla_api::interpreter::WorkloadInterpreter>::all(client.clone()), strip_meta);
    let (priority_classes, priority_class_events) =
        reflect(Api::<k8s_openapi::api::scheduling::v1::PriorityClass>::all(client.clone()), strip_meta);

    let (app_events, outgoing_events) = event_state::AppEvents::new(client.clone());
    let _gauges =
        crate::metrics::register(crate::metrics::RolloutGauges { rollouts: rollout_objects.clone() });
    let index = Index::new(Stores { pps, cpps, ops, cops, clusters, bindings, cluster_bindings, works });
    let apps = Arc::new(Apps {
        client: client.clone(),
        index,
        status_refusals: Mutex::default(),
        bind_failures: Mutex::default(),
        written_status: Mutex::default(),
        cluster_view: Mutex::default(),
        failover_clocks: Default::default(),
        workload_groups: Mutex::default(),
        failover,
        opt_in,
        deschedule,
        policies_judged: tokio::sync::watch::Sender::new(false),
        binder: Queue::new("binder"),
        status: Queue::new("status"),
        rollouts: rollout_state::Rollouts::new(client.clone(), strategies, rollout_objects),
        interpreters,
        events: app_events,
        priority_classes,
        policy_order,
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
    tasks.spawn(events::forward(apps.clone(), outgoing_events));
    tasks.spawn(on_rollouts(apps.clone(), strategy_events, rollout_events));
    tasks.spawn(interpreters::run(apps.clone(), interpreter_events));
    // The store is what matters; policies' conditions follow on recheck.
    tasks.spawn(priority_class_events.for_each(|_| async {}));
    tasks.spawn(watch_kinds(apps.clone()));
    tasks.spawn(rebalancer::run(apps.clone()));
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

/// The kinds of the objects a pod template may refer to (propagateDeps).
const DEPENDENCY_KINDS: [&str; 4] = ["ConfigMap", "Secret", "ServiceAccount", "PersistentVolumeClaim"];

async fn on_policies(apps: Arc<Apps>, events: impl Stream<Item = PolicyEvent> + Send) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if !event.deleted {
            apps.policy_status(&event).await;
        }
        apps.wake(apps.policy_changed(&event));
    }
}

/// Keeps one metadata watch per template kind any propagation policy
/// selects (and the dependency kinds when a policy propagates them). A
/// watch ends when the hub stops serving its kind (its CRD was deleted);
/// the kind is watched again once it is served again.
async fn watch_kinds(apps: Arc<Apps>) {
    apps.wait_ready().await;
    tracing::info!("application controllers have their caches");
    let mut started: HashSet<(String, String)> = HashSet::new();
    // Owned here, so the watches stop when this task does.
    let mut watches = tokio::task::JoinSet::new();
    let last_crd_change = served::LastCrdChange::default();
    let mut crd_watch = tokio::task::JoinSet::new();
    crd_watch.spawn(served::watch_crds(apps.client.clone(), last_crd_change.clone()));
    // Kinds discovery said the hub does not serve, and when.
    let mut missing: HashMap<(String, String), std::time::Instant> = HashMap::new();
    loop {
        while let Some(ended) = watches.try_join_next() {
            if let Ok(kind) = ended {
                started.remove(&kind);
                missing.insert(kind, std::time::Instant::now());
            }
        }
        let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
        let mut deps = false;
        for p in apps.pps.state() {
            wanted.extend(selected(&p.spec.spec.resource_selectors));
            deps |= p.spec.spec.propagates_deps();
        }
        for p in apps.cpps.state() {
            wanted.extend(selected(&p.spec.spec.resource_selectors));
            deps |= p.spec.spec.propagates_deps();
        }
        if deps {
            wanted.extend(DEPENDENCY_KINDS.iter().map(|k| ("v1".to_string(), k.to_string())));
        }
        tracing::trace!(kinds = wanted.len(), "template kinds wanted");
        for (api_version, kind) in wanted {
            if started.contains(&(api_version.clone(), kind.clone())) {
                continue;
            }
            let now = std::time::Instant::now();
            let last_change = *lock(&last_crd_change);
            let found_missing = missing.get(&(api_version.clone(), kind.clone()));
            if found_missing.is_some_and(|&found| !kind_discovery::ask_again(found, last_change, now)) {
                continue;
            }
            tracing::trace!(%api_version, %kind, "asking discovery about a template kind");
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
                    lock(&apps.kinds_gone).remove(&(api_version.clone(), kind.clone()));
                    missing.remove(&(api_version.clone(), kind.clone()));
                    started.insert((api_version.clone(), kind.clone()));
                    tracing::info!(%api_version, %kind, "watching templates");
                    watches.spawn(watch_templates(apps.clone(), api_version, kind, resource));
                }
                Err(e) if served::not_served(&e) => {
                    // E.g. a CRD not installed yet: asked again when CRDs change.
                    if missing.insert((api_version.clone(), kind.clone()), now).is_none() {
                        tracing::debug!(%api_version, %kind, error = %e,
                            "template kind not served by the hub (yet); asked again when a CRD changes");
                    }
                }
                Err(e) => {
                    tracing::debug!(%api_version, %kind, error = %e, "discovery failed; trying again");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn has_status(caps: &ApiCapabilities) -> bool {
    caps.subresources.iter().any(|(r, _)| r.plural == "status" || r.plural.ends_with("/status"))
}

/// Watches one kind's templates until the hub stops serving the kind;
/// returns the kind then.
async fn watch_templates(
    apps: Arc<Apps>,
    api_version: String,
    kind: String,
    resource: ApiResource,
) -> (String, String) {
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
                if !served::still_served(&apps, &api_version, &kind).await {
                    tracing::info!(%api_version, %kind, "the hub no longer serves this kind (its CRD is gone): \
                        its watch stops, its bindings clean up");
                    lock(&apps.kinds).remove(&(api_version.clone(), kind.clone()));
                    lock(&apps.kinds_gone).insert((api_version.clone(), kind.clone()));
                    apps.wake(apps.templates_listed(&api_version, &kind, &HashSet::new()));
                    return (api_version, kind);
                }
                tracing::debug!(%kind, error = %e, "template watch error (retrying)");
                continue;
            }
        };
        match event {
            Event::Init => listed.clear(),
            Event::Apply(obj) | Event::InitApply(obj) => {
                let key = key_of(&obj.metadata);
                listed.insert(key.clone());
                apps.wake(apps.template_seen(key, &obj.metadata));
            }
            Event::Delete(obj) => apps.wake(apps.template_gone(key_of(&obj.metadata))),
            Event::InitDone => {
                // Templates deleted while the hub was not watching: their
                // bindings remain; reconcile them (they clean up).
                apps.wake(apps.templates_listed(&api_version, &kind, &listed));
            }
        }
    }
    // A watcher's stream does not end; if it did, watch the kind afresh.
    (api_version, kind)
}

async fn on_bindings(apps: Arc<Apps>, events: impl Stream<Item = Option<BindingEvent>> + Send) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let Some(event) = event else { continue };
        apps.wake(apps.binding_changed(&event));
    }
}

async fn on_clusters(apps: Arc<Apps>, events: impl Stream<Item = Event<ManagedCluster>> + Send) {
    let mut events = std::pin::pin!(events);
    let mut halted = BTreeMap::new();
    while let Some(event) = events.next().await {
        if matches!(event, Event::InitDone) {
            // A relist swaps the store only now, after its objects went by
            // (and a view may have been cached from the old store): look
            // again with the new one.
            *lock(&apps.cluster_view) = None;
            let mut keys: Vec<TemplateKey> = apps.binding_specs().into_iter().map(|(key, _)| key).collect();
            keys.extend(lock(&apps.seen).keys().cloned());
            for key in keys {
                apps.binder.add(key);
            }
            continue;
        }
        let Some(mc) = touched(&event) else { continue };
        let deleted = matches!(event, Event::Delete(_));
        *lock(&apps.cluster_view) = None;
        if apps.clusters.wait_until_ready().now_or_never().is_some() {
            fleet_view::announce_disruption(&apps, &mut halted).await;
        }
        apps.wake(apps.cluster_changed(mc, deleted));
    }
}

async fn on_works(apps: Arc<Apps>, events: impl Stream<Item = Event<Work>> + Send) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let Some(work) = touched(&event) else { continue };
        let deleted = matches!(event, Event::Delete(_));
        events::observe(&apps, work, deleted);
        apps.wake(apps.work_changed(work, deleted));
    }
}

/// A strategy changed: the templates of its namespace are bound again; a
/// Rollout changed (the user's controls): its template is.
async fn on_rollouts(
    apps: Arc<Apps>,
    strategies: impl Stream<Item = Event<RolloutStrategy>> + Send,
    objects: impl Stream<Item = Event<Rollout>> + Send,
) {
    enum Changed {
        Strategy(String),
        Rollout(Box<Rollout>),
    }
    let strategies = strategies.filter_map(|e| async move {
        touched(&e).map(|s| Changed::Strategy(s.namespace().unwrap_or_default()))
    });
    let objects =
        objects.filter_map(|e| async move { touched(&e).map(|r| Changed::Rollout(Box::new(r.clone()))) });
    let mut events = std::pin::pin!(futures::stream::select(strategies.boxed(), objects.boxed()));
    // The controls are annotations: the hub's own status writes wake nothing.
    let mut controls: HashMap<(String, String), BTreeMap<String, String>> = HashMap::new();
    while let Some(changed) = events.next().await {
        let keys = match changed {
            Changed::Strategy(namespace) => rollouts::woken_by_strategy(&apps, &namespace),
            Changed::Rollout(r) => {
                let id = (r.namespace().unwrap_or_default(), r.name_any());
                if controls.insert(id, r.annotations().clone()).as_ref() == Some(r.annotations()) {
                    continue;
                }
                vec![rollouts::woken_by_rollout(&r)]
            }
        };
        for key in keys {
            apps.binder.add(key);
        }
    }
}
