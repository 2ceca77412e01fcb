//! The application controllers' in-memory index: the caches of policies,
//! clusters, bindings and works (reflector stores), and what the hub keeps
//! beside them — templates seen, bindings by template hash, works by
//! template, dependents of each dependency, the binder's outcomes, invalid
//! policies. Watch events go in ([`Index::binding_changed`],
//! [`Index::work_changed`], ...); what they wake comes out as a [`Wake`].
//! No I/O: the watch plumbing (`apps::run`) feeds it and queues the keys,
//! and its unit tests feed it events built in the test.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::policy::{
    ClusterOverridePolicy, ClusterPropagationPolicy, OverridePolicy, PolicyStatus, PropagationPolicy,
    ReplicaDivisionPreference, ReplicaSchedulingType,
};
use flotilla_api::work::{keys, BindingSpec, BindingStatus, ClusterResourceBinding, ResourceBinding, Work};
use flotilla_apps_core::binding::template_key;
use flotilla_apps_core::binding_status::Outcome;
use flotilla_apps_core::scheduler::ClusterSnapshot;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ApiResource;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};

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
    pub(super) fn hash_label(&self) -> String {
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
pub(super) struct Kind {
    pub(super) resource: ApiResource,
    pub(super) namespaced: bool,
    pub(super) has_status: bool,
}

/// What the hub last saw of a template's metadata: enough to skip events
/// that do not change what is propagated (e.g. our own status writes).
#[derive(Clone, Copy)]
pub(super) struct Seen {
    pub(super) signature: u64,
    pub(super) generation: Option<i64>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps are caches rebuilt from the API; a poisoned lock only means
    // a reconcile panicked mid-update, and the next event repairs it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn hash_of(value: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Objects an event carries (deletions included).
pub(super) fn touched<K>(event: &Event<K>) -> Option<&K> {
    match event {
        Event::Apply(k) | Event::InitApply(k) | Event::Delete(k) => Some(k),
        Event::Init | Event::InitDone => None,
    }
}

/// A binding changed: keep the indexes and wake the status writer.
pub(super) struct BindingEvent {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) spec: Option<BindingSpec>,
    pub(super) deleted: bool,
}

impl BindingEvent {
    pub(super) fn namespaced(e: Event<ResourceBinding>) -> Option<Self> {
        let deleted = matches!(e, Event::Delete(_));
        touched(&e).map(|b| Self {
            namespace: b.namespace().unwrap_or_default(),
            name: b.name_any(),
            spec: Some(b.spec.spec.clone()),
            deleted,
        })
    }
    pub(super) fn cluster(e: Event<ClusterResourceBinding>) -> Option<Self> {
        let deleted = matches!(e, Event::Delete(_));
        touched(&e).map(|b| Self {
            namespace: String::new(),
            name: b.name_any(),
            spec: Some(b.spec.spec.clone()),
            deleted,
        })
    }
}

pub(super) fn key_of_binding(spec: &BindingSpec) -> TemplateKey {
    TemplateKey {
        api_version: spec.resource.api_version.clone(),
        kind: spec.resource.kind.clone(),
        namespace: spec.resource.namespace.clone(),
        name: spec.resource.name.clone(),
    }
}

/// A policy changed (or was deleted).
pub(super) struct PolicyEvent {
    pub(super) kind: &'static str,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) generation: Option<i64>,
    /// (apiVersion, kind) pairs selected; None = every template (an
    /// override policy without selectors).
    pub(super) selects: Option<Vec<(String, String)>>,
    pub(super) object: serde_json::Value,
    pub(super) status: Option<PolicyStatus>,
    pub(super) deleted: bool,
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
    pub(super) fn of<K>(e: &Event<K>, f: fn(&K) -> Self) -> Option<Self> {
        let mut out = f(touched(e)?);
        out.deleted = matches!(e, Event::Delete(_));
        Some(out)
    }
    pub(super) fn pp(p: &PropagationPolicy) -> Self {
        let s = &p.spec.spec;
        Self::from(p, Some(selected(&s.resource_selectors)), p.status.clone())
    }
    pub(super) fn cpp(p: &ClusterPropagationPolicy) -> Self {
        let s = &p.spec.spec;
        Self::from(p, Some(selected(&s.resource_selectors)), p.status.clone())
    }
    pub(super) fn op(p: &OverridePolicy) -> Self {
        let s = &p.spec.spec;
        let sel = (!s.resource_selectors.is_empty()).then(|| selected(&s.resource_selectors));
        Self::from(p, sel, p.status.clone())
    }
    pub(super) fn cop(p: &ClusterOverridePolicy) -> Self {
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

pub(super) fn selected(selectors: &[flotilla_api::policy::ResourceSelector]) -> Vec<(String, String)> {
    selectors.iter().map(|s| (s.api_version.clone(), s.kind.clone())).collect()
}

/// The index. The stores are filled by their reflectors; the maps by the
/// `*_changed` methods, from the same events.
pub(crate) struct Index {
    pub(super) pps: Store<PropagationPolicy>,
    pub(super) cpps: Store<ClusterPropagationPolicy>,
    pub(super) ops: Store<OverridePolicy>,
    pub(super) cops: Store<ClusterOverridePolicy>,
    pub(super) clusters: Store<ManagedCluster>,
    pub(super) bindings: Store<ResourceBinding>,
    pub(super) cluster_bindings: Store<ClusterResourceBinding>,
    pub(super) works: Store<Work>,
    pub(super) kinds: Mutex<HashMap<(String, String), Kind>>,
    pub(super) seen: Mutex<HashMap<TemplateKey, Seen>>,
    pub(super) by_hash: Mutex<HashMap<String, TemplateKey>>,
    /// Template key label → its works by cluster (the Work cache, indexed).
    pub(super) work_index: Mutex<HashMap<String, BTreeMap<String, reflector::ObjectRef<Work>>>>,
    /// Dependency template → names of the bindings (same namespace) needing it.
    pub(super) dependents: Mutex<HashMap<TemplateKey, BTreeSet<String>>>,
    pub(super) outcomes: Mutex<HashMap<TemplateKey, Outcome>>,
    /// Templates whose works the hub could not write: (reason, message),
    /// shown on the binding's `FullyApplied` until a write succeeds.
    pub(super) refused: Mutex<HashMap<TemplateKey, (String, String)>>,
    /// Each cluster's (placement, capacity) signature, to tell what changed.
    pub(super) cluster_signatures: Mutex<HashMap<String, (u64, u64)>>,
    /// (kind, namespace, name) of the policies judged invalid.
    pub(super) invalid_policies: Mutex<HashSet<(String, String, String)>>,
}

/// The caches an index reads, as their reflectors fill them.
pub(crate) struct Stores {
    pub pps: Store<PropagationPolicy>,
    pub cpps: Store<ClusterPropagationPolicy>,
    pub ops: Store<OverridePolicy>,
    pub cops: Store<ClusterOverridePolicy>,
    pub clusters: Store<ManagedCluster>,
    pub bindings: Store<ResourceBinding>,
    pub cluster_bindings: Store<ClusterResourceBinding>,
    pub works: Store<Work>,
}

/// What an event wakes: templates to bind again, bindings whose status to
/// recompute.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Wake {
    pub binder: Vec<TemplateKey>,
    pub status: Vec<TemplateKey>,
}

/// Whether a binding's placement divides replicas by what clusters have
/// room for (so capacity changes concern it).
pub(super) fn uses_capacity(spec: &BindingSpec) -> bool {
    let Some(rs) = &spec.placement.replica_scheduling else { return false };
    rs.replica_scheduling_type.unwrap_or_default() == ReplicaSchedulingType::Divided
        && (rs.replica_division_preference == Some(ReplicaDivisionPreference::Aggregated)
            || rs.weight_preference.as_ref().is_some_and(|w| w.dynamic_weight.is_some()))
}

impl Index {
    pub(crate) fn new(stores: Stores) -> Self {
        let Stores { pps, cpps, ops, cops, clusters, bindings, cluster_bindings, works } = stores;
        Self {
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
            cluster_signatures: Mutex::default(),
            invalid_policies: Mutex::default(),
        }
    }

    /// A policy changed: the templates it may select now (or selected
    /// before) and every binding are bound again.
    pub(super) fn policy_changed(&self, event: &PolicyEvent) -> Wake {
        let wanted = match &event.selects {
            Some(kinds) => kinds.iter().cloned().collect::<HashSet<_>>(),
            None => HashSet::new(),
        };
        let mut binder: Vec<TemplateKey> = lock(&self.seen)
            .keys()
            .filter(|k| event.selects.is_none() || wanted.contains(&(k.api_version.clone(), k.kind.clone())))
            .filter(|k| event.namespace.is_empty() || k.namespace == event.namespace)
            .cloned()
            .collect();
        binder.extend(self.binding_keys());
        Wake { binder, status: Vec::new() }
    }

    /// Records whether a policy is valid. True when it just turned invalid.
    pub(super) fn judge_policy(&self, kind: &str, namespace: &str, name: &str, valid: bool) -> bool {
        let id = (kind.to_string(), namespace.to_string(), name.to_string());
        if valid {
            lock(&self.invalid_policies).remove(&id);
            false
        } else {
            lock(&self.invalid_policies).insert(id)
        }
    }

    pub(super) fn policy_is_invalid(&self, kind: &str, namespace: &str, name: &str) -> bool {
        lock(&self.invalid_policies).contains(&(kind.to_string(), namespace.to_string(), name.to_string()))
    }

    /// A template's metadata was seen: bound again when what is propagated
    /// may have changed and it may concern a policy or binding.
    pub(super) fn template_seen(&self, key: TemplateKey, meta: &ObjectMeta) -> Wake {
        // Objects with a generation change it only when their spec
        // changes; the others (ConfigMaps...) on every write.
        let change = match meta.generation {
            Some(g) if g > 0 => g.to_string(),
            _ => meta.resource_version.clone().unwrap_or_default(),
        };
        let signature =
            hash_of(&(change, &meta.labels, &meta.annotations, meta.deletion_timestamp.is_some()));
        let previous = lock(&self.seen)
            .insert(key.clone(), Seen { signature, generation: meta.generation })
            .map(|s| s.signature);
        let binder =
            if previous != Some(signature) && self.may_concern(&key, meta) { vec![key] } else { vec![] };
        Wake { binder, status: Vec::new() }
    }

    /// A template was deleted: its binding cleans up.
    pub(super) fn template_gone(&self, key: TemplateKey) -> Wake {
        lock(&self.seen).remove(&key);
        Wake { binder: vec![key], status: Vec::new() }
    }

    /// A kind's templates were listed: bindings of templates not listed
    /// (deleted while the hub was not watching) clean up.
    pub(super) fn templates_listed(
        &self,
        api_version: &str,
        kind: &str,
        listed: &HashSet<TemplateKey>,
    ) -> Wake {
        let mut binder = Vec::new();
        for key in self.binding_keys() {
            if key.api_version == api_version && key.kind == kind && !listed.contains(&key) {
                lock(&self.seen).remove(&key);
                binder.push(key);
            }
        }
        Wake { binder, status: Vec::new() }
    }

    /// A binding changed: its template by hash, the dependents of its
    /// dependencies; its status is recomputed, its dependencies bound again
    /// (they follow its clusters), and a deleted one recreated if its
    /// template still wants it.
    pub(super) fn binding_changed(&self, event: &BindingEvent) -> Wake {
        let Some(spec) = &event.spec else { return Wake::default() };
        let key = key_of_binding(spec);
        lock(&self.by_hash).insert(key.hash_label(), key.clone());
        let dependencies: Vec<TemplateKey> = spec
            .dependencies
            .iter()
            .map(|d| TemplateKey {
                api_version: d.api_version.clone(),
                kind: d.kind.clone(),
                namespace: event.namespace.clone(),
                name: d.name.clone(),
            })
            .collect();
        {
            let mut dependents = lock(&self.dependents);
            for deps in dependents.values_mut() {
                deps.remove(&event.name);
            }
            if !event.deleted {
                for dep in &dependencies {
                    dependents.entry(dep.clone()).or_default().insert(event.name.clone());
                }
            }
            dependents.retain(|_, v| !v.is_empty());
        }
        let mut binder = Vec::new();
        if event.deleted {
            binder.push(key.clone());
        }
        binder.extend(dependencies);
        Wake { binder, status: vec![key] }
    }

    /// A Work changed: indexed by template and cluster; its binding's status
    /// is recomputed, and its template bound again when the work is gone
    /// (written again if still wanted) or a failover waits for it.
    pub(super) fn work_changed(&self, work: &Work, deleted: bool) -> Wake {
        let Some(hash) = work.labels().get(keys::TEMPLATE_KEY) else { return Wake::default() };
        let Some(cluster) =
            work.namespace().and_then(|ns| ns.strip_prefix("flotilla-cluster-").map(String::from))
        else {
            return Wake::default();
        };
        {
            let mut index = lock(&self.work_index);
            if deleted {
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
        let Some(key) = lock(&self.by_hash).get(hash).cloned() else { return Wake::default() };
        let failover =
            || self.with_binding(&key, |s, _, _| !s.graceful_eviction_tasks.is_empty()) == Some(true);
        let binder = if deleted || failover() { vec![key.clone()] } else { Vec::new() };
        Wake { binder, status: vec![key] }
    }

    /// A cluster changed: bindings are bound again when its placement
    /// changed (and templates without a binding yet), or only those that use
    /// capacity (or failed) when only its capacity did.
    pub(super) fn cluster_changed(&self, mc: &ManagedCluster, deleted: bool) -> Wake {
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
            lock(&self.cluster_signatures).remove(&mc.name_any())
        } else {
            lock(&self.cluster_signatures).insert(mc.name_any(), (placement, capacity))
        };
        let placement_changed = before.map(|b| b.0) != Some(placement) || deleted;
        let capacity_changed = before.map(|b| b.1) != Some(capacity);
        if !placement_changed && !capacity_changed {
            return Wake::default();
        }
        let mut binder = Vec::new();
        for (key, spec) in self.binding_specs() {
            // A binding whose scheduling failed is looked at again on any
            // change of any cluster's placement or capacity, whatever its
            // placement uses: what was missing may be there now.
            if placement_changed || uses_capacity(&spec) || self.scheduling_failed(&key) {
                binder.push(key);
            }
        }
        if placement_changed {
            // Templates a policy selects but that have no binding yet
            // (e.g. nothing fitted before this cluster joined).
            binder.extend(lock(&self.seen).keys().cloned());
        }
        Wake { binder, status: Vec::new() }
    }

    /// Whether the binder's last outcome for a template was a failure.
    pub(super) fn scheduling_failed(&self, key: &TemplateKey) -> bool {
        lock(&self.outcomes).get(key).is_some_and(|o| !o.scheduled)
    }

    pub(super) fn kind(&self, api_version: &str, kind: &str) -> Option<Kind> {
        lock(&self.kinds).get(&(api_version.to_string(), kind.to_string())).cloned()
    }

    /// Whether a template event may matter: a policy could select it, it
    /// has a binding, or a binding depends on it.
    pub(super) fn may_concern(&self, key: &TemplateKey, meta: &ObjectMeta) -> bool {
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

    pub(super) fn binding_status(
        &self,
        key: &TemplateKey,
    ) -> Option<(BindingSpec, Option<BindingStatus>, ObjectMeta)> {
        self.with_binding(key, |spec, status, meta| (spec.clone(), status.cloned(), meta.clone()))
    }

    /// Looks at a template's binding (namespaced or cluster-scoped) in the
    /// cache, copying only what `f` takes.
    pub(super) fn with_binding<T>(
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

    pub(super) fn binding_specs(&self) -> Vec<(TemplateKey, BindingSpec)> {
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

    pub(super) fn binding_keys(&self) -> Vec<TemplateKey> {
        self.binding_specs().into_iter().map(|(key, _)| key).collect()
    }

    /// Works of a template, by cluster name.
    pub(super) fn works_of(&self, key: &TemplateKey) -> BTreeMap<String, Arc<Work>> {
        let refs = lock(&self.work_index).get(&key.hash_label()).cloned().unwrap_or_default();
        refs.into_iter().filter_map(|(cluster, r)| Some((cluster, self.works.get(&r)?))).collect()
    }
}
