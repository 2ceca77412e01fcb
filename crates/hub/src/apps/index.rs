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
use flotilla_apps_core::failover::{self, Disruption, FailoverSettings};
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
    /// It carries a rebalance request the binder has not honoured yet.
    pub(super) rebalance: bool,
}

fn rebalance_pending(meta: &ObjectMeta, spec: &BindingSpec) -> bool {
    let requested = meta.annotations.as_ref().and_then(|a| a.get(keys::REBALANCE)).map(String::as_str);
    flotilla_apps_core::rebalance::pending(requested, &spec.rebalanced).is_some()
}

impl BindingEvent {
    pub(super) fn namespaced(e: Event<ResourceBinding>) -> Option<Self> {
        let deleted = matches!(e, Event::Delete(_));
        touched(&e).map(|b| Self {
            namespace: b.namespace().unwrap_or_default(),
            name: b.name_any(),
            spec: Some(b.spec.spec.clone()),
            deleted,
            rebalance: rebalance_pending(&b.metadata, &b.spec.spec),
        })
    }
    pub(super) fn cluster(e: Event<ClusterResourceBinding>) -> Option<Self> {
        let deleted = matches!(e, Event::Delete(_));
        touched(&e).map(|b| Self {
            namespace: String::new(),
            name: b.name_any(),
            spec: Some(b.spec.spec.clone()),
            deleted,
            rebalance: rebalance_pending(&b.metadata, &b.spec.spec),
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

/// The move step a work carries (its `work.flotilla.io/replicas`), if any.
pub(super) fn work_step(work: &Work) -> Option<i32> {
    work.annotations().get(keys::REPLICAS).and_then(|v| v.parse().ok())
}

/// One consistent picture of the fleet, rebuilt when a cluster changes.
pub(crate) struct ClusterView {
    /// The clusters as they are, sorted by name.
    pub clusters: Vec<ClusterSnapshot>,
    /// Which clusters' failover is halted, and why.
    pub disruption: Disruption,
    /// What the scheduler sees: halted clusters keep what runs there.
    pub scheduling: Vec<ClusterSnapshot>,
    /// When a read from the API last confirmed this view of a cluster
    /// (`fresh_clusters`).
    pub confirmed: std::sync::Mutex<BTreeMap<String, std::time::Instant>>,
}

impl ClusterView {
    pub fn new(mut clusters: Vec<ClusterSnapshot>, settings: &FailoverSettings) -> Self {
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        let disruption = failover::disruption(&clusters, settings);
        let scheduling = failover::with_failover_halted(&clusters, &disruption);
        ClusterView { clusters, disruption, scheduling, confirmed: Default::default() }
    }
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
    /// Kinds watched until the hub stopped serving them (their CRD was
    /// deleted, and their objects with it): their templates are gone.
    pub(super) kinds_gone: Mutex<HashSet<(String, String)>>,
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
    /// Templates whose binding the API server refused: the policy that
    /// took them and the message (the policy's `BindingsWritten`).
    pub(super) binding_refusals: Mutex<HashMap<TemplateKey, (flotilla_api::work::PolicyReference, String)>>,
    /// Each cluster's (placement, capacity) signature, to tell what changed.
    pub(super) cluster_signatures: Mutex<HashMap<String, (u64, u64)>>,
    /// (kind, namespace, name) of the policies judged invalid.
    pub(super) invalid_policies: Mutex<HashSet<(String, String, String)>>,
    /// Templates a rollout strategy takes: their Works' status changes bind
    /// them again (a gate may have passed or failed, a cluster's row on the
    /// Rollout changed).
    pub(super) rolling: Mutex<HashSet<TemplateKey>>,
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
            kinds_gone: Mutex::default(),
            rolling: Mutex::default(),
            seen: Mutex::default(),
            by_hash: Mutex::default(),
            work_index: Mutex::default(),
            dependents: Mutex::default(),
            outcomes: Mutex::default(),
            refused: Mutex::default(),
            binding_refusals: Mutex::default(),
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
        if event.deleted || event.rebalance {
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
        // Evicting, or watching its copies' health (application failover).
        let failover = || {
            self.with_binding(&key, |s, _, _| {
                !s.graceful_eviction_tasks.is_empty()
                    || s.failover.as_ref().is_some_and(|f| f.application.is_some())
            }) == Some(true)
        };
        let rolling = || lock(&self.rolling).contains(&key);
        // Unschedulable replicas are the descheduler's concern.
        let stuck = || {
            work.status
                .as_ref()
                .is_some_and(|s| s.manifest_statuses.iter().any(|m| m.unschedulable.is_some()))
        };
        let binder =
            if deleted || failover() || rolling() || stuck() { vec![key.clone()] } else { Vec::new() };
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
        let capacity = hash_of(&(&snapshot.allocatable, &snapshot.allocated, snapshot.nodes.as_deref()));
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

#[cfg(test)]
mod tests {
    //! The index fed watch events built here (no server): what it keeps,
    //! and what each event wakes.

    use super::*;
    use kube::runtime::reflector::store::Writer;
    use serde_json::json;

    /// An index and the writers of its stores (what the reflectors hold).
    struct Fixture {
        index: Index,
        pps: Writer<PropagationPolicy>,
        clusters: Writer<ManagedCluster>,
        bindings: Writer<ResourceBinding>,
        works: Writer<Work>,
    }

    fn fixture() -> Fixture {
        let (pps, pp_writer) = reflector::store();
        let (cpps, _) = reflector::store();
        let (ops, _) = reflector::store();
        let (cops, _) = reflector::store();
        let (clusters, cluster_writer) = reflector::store();
        let (bindings, binding_writer) = reflector::store();
        let (cluster_bindings, _) = reflector::store();
        let (works, work_writer) = reflector::store();
        let index = Index::new(Stores { pps, cpps, ops, cops, clusters, bindings, cluster_bindings, works });
        Fixture {
            index,
            pps: pp_writer,
            clusters: cluster_writer,
            bindings: binding_writer,
            works: work_writer,
        }
    }

    fn deployment(name: &str) -> TemplateKey {
        TemplateKey {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn config_map(name: &str) -> TemplateKey {
        TemplateKey {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    /// The binding of deployment `name`, placed on `clusters`, needing
    /// config maps `deps`; `placement` as JSON.
    fn binding(
        name: &str,
        clusters: &[&str],
        deps: &[&str],
        placement: serde_json::Value,
    ) -> ResourceBinding {
        let key = deployment(name);
        serde_json::from_value(json!({
            "apiVersion": "work.flotilla.io/v1alpha1", "kind": "ResourceBinding",
            "metadata": {"name": flotilla_apps_core::binding::binding_name(&key.api_version, &key.kind, &key.name),
                         "namespace": "default"},
            "spec": {
                "resource": {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "default", "name": name},
                "placement": placement,
                "clusters": clusters.iter().map(|c| json!({"name": c, "replicas": 1})).collect::<Vec<_>>(),
                "dependencies": deps.iter().map(|d| json!({"apiVersion": "v1", "kind": "ConfigMap", "namespace": "default", "name": d})).collect::<Vec<_>>(),
            }
        }))
        .unwrap()
    }

    fn binding_event(b: &ResourceBinding, deleted: bool) -> BindingEvent {
        let event = if deleted { Event::Delete(b.clone()) } else { Event::Apply(b.clone()) };
        BindingEvent::namespaced(event).unwrap()
    }

    fn work(template: &TemplateKey, cluster: &str) -> Work {
        serde_json::from_value(json!({
            "apiVersion": "work.flotilla.io/v1alpha1", "kind": "Work",
            "metadata": {"name": format!("w-{}", template.name), "namespace": format!("flotilla-cluster-{cluster}"),
                         "labels": {keys::TEMPLATE_KEY: template.hash_label()}},
            "spec": {"manifests": []}
        }))
        .unwrap()
    }

    fn cluster(name: &str, labels: serde_json::Value, cpu: &str) -> ManagedCluster {
        serde_json::from_value(json!({
            "apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
            "metadata": {"name": name, "labels": labels},
            "spec": {"hubAcceptsClient": true},
            "status": {"resourceSummary": {"allocatable": {"cpu": cpu}, "allocated": {"cpu": "0"}}}
        }))
        .unwrap()
    }

    fn sorted(mut keys: Vec<TemplateKey>) -> Vec<TemplateKey> {
        keys.sort();
        keys
    }

    #[test]
    fn bindings_index_their_template_and_the_dependents_of_their_dependencies() {
        let mut f = fixture();
        let web = binding("web", &["m1"], &["settings", "certs"], json!({}));
        f.bindings.apply_watcher_event(&Event::Apply(web.clone()));
        let wake = f.index.binding_changed(&binding_event(&web, false));
        // Its status is recomputed; its dependencies follow its clusters.
        assert_eq!(wake.status, vec![deployment("web")]);
        assert_eq!(sorted(wake.binder), vec![config_map("certs"), config_map("settings")]);
        assert_eq!(lock(&f.index.by_hash).get(&deployment("web").hash_label()), Some(&deployment("web")));
        let web_name = web.metadata.name.clone().unwrap();
        assert_eq!(
            lock(&f.index.dependents).get(&config_map("settings")).cloned(),
            Some(BTreeSet::from([web_name.clone()]))
        );
        assert!(
            f.index.may_concern(&config_map("settings"), &ObjectMeta::default()),
            "a dependency concerns"
        );

        // A dependency dropped from the spec: it no longer has dependents.
        let web2 = binding("web", &["m1"], &["settings"], json!({}));
        f.index.binding_changed(&binding_event(&web2, false));
        assert!(!lock(&f.index.dependents).contains_key(&config_map("certs")));

        // Deleted: bound again (recreated if its template still wants it),
        // and its dependencies lose it.
        f.bindings.apply_watcher_event(&Event::Delete(web2.clone()));
        let wake = f.index.binding_changed(&binding_event(&web2, true));
        assert_eq!(wake.binder, vec![deployment("web"), config_map("settings")]);
        assert!(lock(&f.index.dependents).is_empty());
        assert!(!f.index.may_concern(&config_map("settings"), &ObjectMeta::default()));
    }

    #[test]
    fn works_are_indexed_by_template_and_cluster() {
        let mut f = fixture();
        let web = binding("web", &["m1", "m2"], &[], json!({}));
        f.bindings.apply_watcher_event(&Event::Apply(web.clone()));
        f.index.binding_changed(&binding_event(&web, false));

        let (w1, w2) = (work(&deployment("web"), "m1"), work(&deployment("web"), "m2"));
        for w in [&w1, &w2] {
            f.works.apply_watcher_event(&Event::Apply(w.clone()));
            let wake = f.index.work_changed(w, false);
            assert_eq!(wake, Wake { binder: vec![], status: vec![deployment("web")] });
        }
        assert_eq!(f.index.works_of(&deployment("web")).keys().collect::<Vec<_>>(), ["m1", "m2"]);

        // A work gone: the template is bound again (written again if still
        // wanted), and the index forgets it.
        f.works.apply_watcher_event(&Event::Delete(w2.clone()));
        let wake = f.index.work_changed(&w2, true);
        assert_eq!(wake, Wake { binder: vec![deployment("web")], status: vec![deployment("web")] });
        assert_eq!(f.index.works_of(&deployment("web")).keys().collect::<Vec<_>>(), ["m1"]);

        // A work of no known binding, or outside a cluster namespace: nothing.
        let stray = work(&deployment("other"), "m1");
        assert_eq!(f.index.work_changed(&stray, false), Wake::default());
        let mut elsewhere = work(&deployment("web"), "m1");
        elsewhere.metadata.namespace = Some("default".into());
        assert_eq!(f.index.work_changed(&elsewhere, false), Wake::default());
    }

    #[test]
    fn unschedulable_replicas_and_rebalance_requests_wake_the_binder() {
        let mut f = fixture();
        let mut web = binding("web", &["m1"], &[], json!({}));
        f.bindings.apply_watcher_event(&Event::Apply(web.clone()));
        assert_eq!(f.index.binding_changed(&binding_event(&web, false)).binder, Vec::<TemplateKey>::new());

        let mut stuck = work(&deployment("web"), "m1");
        stuck.status = Some(
            serde_json::from_value(
                json!({"manifestStatuses": [{"identifier": {"ordinal": 0}, "applied": true,
                "unschedulable": {"replicas": 2, "since": "2026-01-01T00:00:00Z"}}]}),
            )
            .unwrap(),
        );
        f.works.apply_watcher_event(&Event::Apply(stuck.clone()));
        assert_eq!(f.index.work_changed(&stuck, false).binder, vec![deployment("web")]);

        // A rebalance request wakes it until the binder records the token.
        let token = "2026-01-01T00:00:00Z/r1";
        web.metadata.annotations = Some([(keys::REBALANCE.to_string(), token.to_string())].into());
        assert_eq!(f.index.binding_changed(&binding_event(&web, false)).binder, vec![deployment("web")]);
        web.spec.spec.rebalanced = token.into();
        assert_eq!(f.index.binding_changed(&binding_event(&web, false)).binder, Vec::<TemplateKey>::new());
    }

    #[test]
    fn a_failover_in_progress_rebinds_on_every_work_change() {
        let mut f = fixture();
        let mut web = binding("web", &["m2"], &[], json!({}));
        web.spec.spec.graceful_eviction_tasks = vec![serde_json::from_value(json!({
            "fromCluster": "m1", "replicas": 1, "reason": "TaintUntolerated",
            "creationTimestamp": "2026-01-01T00:00:00Z"
        }))
        .unwrap()];
        f.bindings.apply_watcher_event(&Event::Apply(web.clone()));
        f.index.binding_changed(&binding_event(&web, false));
        let wake = f.index.work_changed(&work(&deployment("web"), "m2"), false);
        assert_eq!(wake.binder, vec![deployment("web")], "the failover waits for the new copy");
    }

    #[test]
    fn cluster_changes_wake_the_bindings_they_concern() {
        let mut f = fixture();
        let divided_by_capacity = json!({"replicaScheduling": {
            "replicaSchedulingType": "Divided", "replicaDivisionPreference": "Aggregated"}});
        let (web, api) =
            (binding("web", &["m1"], &[], json!({})), binding("api", &["m1"], &[], divided_by_capacity));
        for b in [&web, &api] {
            f.bindings.apply_watcher_event(&Event::Apply(b.clone()));
            f.index.binding_changed(&binding_event(b, false));
        }
        // A template with no binding yet.
        let meta = ObjectMeta { generation: Some(1), ..Default::default() };
        f.index.template_seen(deployment("new"), &meta);

        let m1 = cluster("m1", json!({"region": "eu"}), "4");
        f.clusters.apply_watcher_event(&Event::Apply(m1.clone()));
        let first = f.index.cluster_changed(&m1, false);
        assert_eq!(sorted(first.binder), vec![deployment("api"), deployment("new"), deployment("web")]);

        // Nothing that matters changed: nothing wakes.
        assert_eq!(f.index.cluster_changed(&m1, false), Wake::default());

        // Capacity only: the binding dividing by capacity.
        let more_cpu = cluster("m1", json!({"region": "eu"}), "8");
        assert_eq!(f.index.cluster_changed(&more_cpu, false).binder, vec![deployment("api")]);

        // ... and any binding whose scheduling failed.
        let failed = Outcome {
            scheduled: false,
            reason: "NoClusterFit".into(),
            message: String::new(),
            generation: None,
            affinity_name: None,
        };
        lock(&f.index.outcomes).insert(deployment("web"), failed);
        assert!(f.index.scheduling_failed(&deployment("web")));
        let less_cpu = cluster("m1", json!({"region": "eu"}), "2");
        assert_eq!(
            sorted(f.index.cluster_changed(&less_cpu, false).binder),
            vec![deployment("api"), deployment("web")]
        );

        // Placement (a label): every binding and the unbound template.
        let moved = cluster("m1", json!({"region": "us"}), "2");
        assert_eq!(f.index.cluster_changed(&moved, false).binder.len(), 3);
        // Deleted: the same, and the index forgets it.
        assert_eq!(f.index.cluster_changed(&moved, true).binder.len(), 3);
        assert!(lock(&f.index.cluster_signatures).is_empty());
    }

    #[test]
    fn templates_are_bound_when_what_is_propagated_changes_and_a_policy_may_select_them() {
        let mut f = fixture();
        let meta = |generation: i64, labels: serde_json::Value| ObjectMeta {
            generation: Some(generation),
            labels: serde_json::from_value(labels).unwrap(),
            ..Default::default()
        };
        // No policy, binding or dependent: seen, not bound.
        assert_eq!(f.index.template_seen(deployment("web"), &meta(1, json!({}))), Wake::default());
        assert_eq!(lock(&f.index.seen).get(&deployment("web")).and_then(|s| s.generation), Some(1));

        let pp: PropagationPolicy = serde_json::from_value(json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                            "labelSelector": {"matchLabels": {"app": "web"}}}]}
        }))
        .unwrap();
        f.pps.apply_watcher_event(&Event::Apply(pp.clone()));
        // Selected now (a label added).
        let labelled = meta(1, json!({"app": "web"}));
        assert_eq!(f.index.template_seen(deployment("web"), &labelled).binder, vec![deployment("web")]);
        // The same again (e.g. a status write): nothing.
        assert_eq!(f.index.template_seen(deployment("web"), &labelled), Wake::default());
        // A new generation: bound again.
        assert_eq!(f.index.template_seen(deployment("web"), &meta(2, json!({"app": "web"}))).binder.len(), 1);

        // The policy changed: the templates of the kinds it selects, in its
        // namespace, and every binding.
        let event = PolicyEvent::pp(&pp);
        f.index.template_seen(config_map("other"), &meta(1, json!({})));
        assert_eq!(f.index.policy_changed(&event).binder, vec![deployment("web")]);

        // Deleted, and listed again without a template: bound (cleanup).
        assert_eq!(f.index.template_gone(deployment("web")).binder, vec![deployment("web")]);
        assert!(!lock(&f.index.seen).contains_key(&deployment("web")));
    }

    #[test]
    fn bindings_of_templates_missing_from_a_list_clean_up() {
        let mut f = fixture();
        let (web, api) = (binding("web", &["m1"], &[], json!({})), binding("api", &["m1"], &[], json!({})));
        for b in [&web, &api] {
            f.bindings.apply_watcher_event(&Event::Apply(b.clone()));
        }
        let listed = HashSet::from([deployment("web")]);
        assert_eq!(
            f.index.templates_listed("apps/v1", "Deployment", &listed).binder,
            vec![deployment("api")]
        );
        assert!(f.index.templates_listed("v1", "ConfigMap", &HashSet::new()).binder.is_empty());
    }

    #[test]
    fn policy_validity_is_remembered_and_reported_once() {
        let f = fixture();
        assert!(!f.index.policy_is_invalid("PropagationPolicy", "default", "p"));
        assert!(f.index.judge_policy("PropagationPolicy", "default", "p", false), "newly invalid");
        assert!(!f.index.judge_policy("PropagationPolicy", "default", "p", false), "said once");
        assert!(f.index.policy_is_invalid("PropagationPolicy", "default", "p"));
        assert!(!f.index.policy_is_invalid("PropagationPolicy", "other", "p"));
        assert!(!f.index.judge_policy("PropagationPolicy", "default", "p", true));
        assert!(!f.index.policy_is_invalid("PropagationPolicy", "default", "p"));
    }
}
