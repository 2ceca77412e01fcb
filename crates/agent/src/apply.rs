//! The work applier: applies the Works in a member's hub namespace to the
//! member (server-side apply), deletes what they no longer hold, and writes
//! back on each Work what was applied and how healthy it is.
//!
//! Runs in the pull agent (with its narrow hub credential) and in the hub
//! for push clusters. The decisions are in `flotilla_apps_core::apply` and
//! `flotilla_apps_core::health`; this module does the I/O.
//!
//! Triggers: Work changes that matter (spec, deletion, finalizer; not the
//! status this applier writes itself), and changes to the applied objects
//! in the member, seen by one metadata-only watch per applied kind (status
//! feedback and drift repair). Nothing is polled.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_api::policy::ConflictResolution;
use flotilla_api::work::{
    keys, Health, HealthDetail, Manifest, ManifestStatus, ResourceIdentifier, UnschedulableReplicas, Work,
    WorkStatus,
};
use flotilla_apps_core::apply::{self as decide, Ownership, Target};
use flotilla_apps_core::apply_latency;
use flotilla_apps_core::health::diagnosis::{self, PodSelection};
use flotilla_apps_core::health::unschedulable::unschedulable;
use futures::channel::mpsc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::Scope;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as FinalizerEvent};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::error::Error;
use crate::pods::MemberPods;

mod member_hpa;
mod member_watch;
mod namespaces;

use member_hpa::MemberHpas;
use member_watch::{lock, trigger, watch_key, KindObjects, ObjectKey, Seen, Watch};

/// Field manager of the objects applied in members.
pub const APPLY_FIELD_MANAGER: &str = "flotilla";
/// Field manager of Work statuses.
pub const STATUS_FIELD_MANAGER: &str = "flotilla-applier";

/// Works reconciled at once: enough to keep a large backlog moving (each
/// reconcile mostly waits on the member), few enough not to flood it.
const CONCURRENCY: u16 = 16;
/// Retry delays after a failed reconcile (member unreachable, hub errors).
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Applies the Works in `hub_namespace` to `member` until the process ends
/// (or the returned future is dropped).
///
/// `pods` (shared with the collector) say why a workload is unhealthy.
pub async fn run_applier(
    hub: Client,
    hub_namespace: String,
    member: Client,
    cluster: String,
    pods: MemberPods,
) -> Result<(), Error> {
    let works: Api<Work> = Api::namespaced(hub, &hub_namespace);
    let (reader, writer) = reflector::store();
    let work_events = watcher(works.clone(), watcher::Config::default())
        .default_backoff()
        // Of the managed fields, only the binder's entry's time is read
        // (the apply latency); its field set is dropped.
        .modify(|work: &mut Work| {
            let fields = work.managed_fields_mut();
            fields.retain(|m| m.manager.as_deref() == Some(apply_latency::BINDER_MANAGER));
            fields.iter_mut().for_each(|m| m.fields_v1 = None);
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(needs_apply, Default::default());
    let (triggers, triggered) = mpsc::unbounded();
    let hpas = MemberHpas::start(&member, hub_namespace.clone(), cluster.clone(), triggers.clone());
    let applier = Arc::new(Applier {
        works,
        hub_namespace,
        member,
        cluster,
        kinds: Mutex::default(),
        watches: Mutex::default(),
        triggers,
        failures: Mutex::default(),
        recorded: Mutex::default(),
        latency_counted: Mutex::default(),
        pods,
        hpas,
    });
    tracing::info!(cluster = %applier.cluster, namespace = %applier.hub_namespace, "work applier running");
    Controller::for_stream(work_events, reader)
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .reconcile_on(triggered)
        .run(|o, c| flotilla_metrics::reconcile("work-applier", o, c, reconcile), error_policy, applier)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "work applier");
            }
        })
        .await;
    Ok(())
}

/// What, on a Work, calls for applying it again: the spec, deletion, and
/// whether it holds the applier's finalizer (the finalizer helper adds it,
/// then applies on the change it makes); not the status this applier
/// writes (that would loop).
fn needs_apply(work: &Work) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    work.metadata.generation.hash(&mut hasher);
    work.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    work.finalizers().iter().any(|f| f == keys::WORK_FINALIZER).hash(&mut hasher);
    work.annotations().get(keys::SPEC_HASH).hash(&mut hasher);
    Some(hasher.finish())
}

/// A kind the member serves.
#[derive(Debug, Clone)]
struct Kind {
    resource: ApiResource,
    namespaced: bool,
}

struct Applier {
    works: Api<Work>,
    hub_namespace: String,
    member: Client,
    cluster: String,
    /// Discovery results; a miss asks the member again (a CRD installed later).
    kinds: Mutex<HashMap<GroupVersionKind, Kind>>,
    /// One watch per applied kind, keyed by `apiVersion/plural`.
    watches: Mutex<HashMap<String, Watch>>,
    /// Works to reconcile because one of their objects changed in the member.
    triggers: mpsc::UnboundedSender<ObjectRef<Work>>,
    /// Consecutive failures per Work, for the retry delay.
    failures: Mutex<HashMap<String, u32>>,
    /// The objects each Work's last status listed. The Work in the cache
    /// can lag behind the status just written (a spec change seen while
    /// applying); without this, an object applied then and dropped from
    /// the spec right after would never be deleted.
    recorded: Mutex<HashMap<String, Vec<ResourceIdentifier>>>,
    /// The generation of each Work whose apply latency was counted.
    latency_counted: Mutex<HashMap<String, i64>>,
    /// The member's pods: why an unhealthy workload is so, and a change
    /// to its pods reconciles its Work again.
    pods: MemberPods,
    /// The member's HPAs: a workload one scales keeps the member's replicas.
    hpas: MemberHpas,
}

async fn reconcile(work: Arc<Work>, applier: Arc<Applier>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = work.name_any();
    // The Work's finalizer is the applier's own: kube's helper adds it
    // before the first apply and removes it once the clean-up succeeded.
    let result = finalizer(&applier.works, keys::WORK_FINALIZER, work, |event| async {
        match event {
            FinalizerEvent::Apply(work) => applier.apply(&work).await,
            FinalizerEvent::Cleanup(work) => applier.clean_up(&work).await,
        }
    })
    .await;
    let result = match result {
        Ok(action) => Ok(action),
        Err(FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e)) => Err(e),
        // The Work went while its finalizer was being removed.
        Err(FinalizerError::RemoveFinalizer(e)) if is_not_found(&e) => Ok(Action::await_change()),
        Err(FinalizerError::AddFinalizer(e) | FinalizerError::RemoveFinalizer(e)) => Err(e.into()),
        Err(e) => Err(Error::Hub(e.to_string())),
    };
    if result.is_ok() {
        lock(&applier.failures).remove(&name);
    }
    tracing::debug!(
        cluster = %applier.cluster, work = %name, ok = result.is_ok(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "reconciled work"
    );
    result
}

fn error_policy(work: Arc<Work>, error: &Error, applier: Arc<Applier>) -> Action {
    let name = work.name_any();
    let failures = {
        let mut failures = lock(&applier.failures);
        let count = failures.entry(name.clone()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = RETRY_FIRST.saturating_mul(1 << failures.min(8).saturating_sub(1)).min(RETRY_MAX);
    tracing::warn!(
        cluster = %applier.cluster, work = %name, error = %error, failures,
        retry_in_ms = delay.as_millis() as u64, "applying a work failed; will retry"
    );
    Action::requeue(delay)
}

/// The message of an API error that is about the manifest itself (the
/// member refused it), as opposed to the member or the credential failing,
/// which aborts the reconcile and retries.
fn refusal(error: &kube::Error) -> Option<String> {
    match error {
        kube::Error::Api(status)
            if (400..500).contains(&status.code) && status.code != 401 && status.code != 429 =>
        {
            Some(status.message.clone())
        }
        _ => None,
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 404)
}

/// Now, to the second (what the API server stores), so a rewritten
/// condition compares equal to the stored one.
fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn not_applied(identifier: ResourceIdentifier, reason: &str, message: String) -> ManifestStatus {
    ManifestStatus { identifier, applied: false, reason: reason.into(), message, ..Default::default() }
}

impl Applier {
    /// Observes the Work's apply latency when this apply made a new
    /// generation Applied (`flotilla_work_apply_latency_seconds`).
    fn count_latency(&self, work: &Work, status: &WorkStatus) {
        let name = work.name_any();
        let written = apply_latency::written_at(work.metadata.managed_fields.as_deref().unwrap_or_default());
        let mut counted = lock(&self.latency_counted);
        let latency = apply_latency::apply_latency(
            written,
            work.metadata.generation,
            work.status.as_ref(),
            status,
            counted.get(&name).copied(),
            k8s_openapi::jiff::Timestamp::now(),
        );
        if let (Some(seconds), Some(generation)) = (latency, work.metadata.generation) {
            flotilla_metrics::instruments().work_apply_latency.observe(seconds);
            counted.insert(name, generation);
        }
    }

    async fn apply(&self, work: &Work) -> Result<Action, Error> {
        let name = work.name_any();
        let applied_by = decide::applied_by(&self.hub_namespace, &name);
        let manifests = &work.spec.manifests;
        let mut statuses = Vec::with_capacity(manifests.len());
        let mut unhealthy_pods = Vec::new();
        for index in decide::apply_order(manifests) {
            let ordinal = i32::try_from(index).unwrap_or(i32::MAX);
            let manifest = &manifests[index];
            let resolution = work.spec.conflict_resolution;
            let status = self
                .apply_manifest(
                    ordinal,
                    manifest,
                    &applied_by,
                    resolution,
                    &work.spec.health_rules,
                    &mut unhealthy_pods,
                )
                .await?;
            statuses.push(status);
        }
        self.pods.follow(&self.work_ref(&name), unhealthy_pods, &self.triggers);

        // Objects applied before whose manifests are gone: delete them
        // (after applying, so a replacement exists before the old one goes).
        let current: Vec<ResourceIdentifier> = statuses.iter().map(|s| s.identifier.clone()).collect();
        let previous = self.previously_applied(work);
        for gone in decide::removed_from_spec(&previous, &current) {
            match self.remove(gone, &applied_by, false).await {
                Ok(()) => {}
                Err(e) => {
                    let Some(message) = refusal(&e) else { return Err(e.into()) };
                    let identifier = ResourceIdentifier { ordinal: decide::ORDINAL_REMOVED, ..gone.clone() };
                    statuses.push(ManifestStatus {
                        identifier,
                        applied: true,
                        reason: decide::REASON_DELETE_FAILED.into(),
                        message: format!("cluster {} refused to delete it: {message}", self.cluster),
                        ..Default::default()
                    });
                }
            }
        }

        // Look again at manifests that could not be applied for reasons
        // that go away without any event the applier sees.
        let recheck = statuses.iter().filter_map(|s| decide::recheck_after(&s.reason)).min();
        let spec_hash = work.annotations().get(keys::SPEC_HASH).map_or("", String::as_str);
        let status = decide::work_status(
            &self.cluster,
            statuses,
            spec_hash,
            work.metadata.generation,
            work.status.as_ref(),
            &now(),
        );
        let mut recheck = recheck;
        let status = if work.status.as_ref() == Some(&status) {
            status
        } else {
            match self.write_status(&name, &status).await {
                Ok(()) => status,
                // The hub refused the status itself: say so on the Work, once,
                // instead of retrying a write that cannot succeed.
                Err(Error::Kube(e)) => {
                    let Some(message) = refusal(&e) else { return Err(e.into()) };
                    tracing::warn!(
                        cluster = %self.cluster, work = %name, error = %message,
                        "the hub refused this work's status; reporting that instead"
                    );
                    let fallback = decide::status_refused(
                        &self.cluster,
                        &status,
                        work.status.as_ref(),
                        &message,
                        &now(),
                    );
                    if work.status.as_ref() != Some(&fallback) {
                        self.write_status(&name, &fallback).await?;
                    }
                    // Only a change of the Work or its objects tries again.
                    recheck = None;
                    fallback
                }
                Err(e) => return Err(e),
            }
        };
        self.count_latency(work, &status);
        let listed = status.manifest_statuses.iter().map(|s| s.identifier.clone()).collect();
        lock(&self.recorded).insert(name, listed);
        Ok(recheck.map_or_else(Action::await_change, Action::requeue))
    }

    async fn apply_manifest(
        &self,
        ordinal: i32,
        Manifest(manifest): &Manifest,
        applied_by: &str,
        resolution: ConflictResolution,
        health_rules: &[flotilla_api::interpreter::KindHealthRule],
        unhealthy_pods: &mut Vec<PodSelection>,
    ) -> Result<ManifestStatus, Error> {
        let target = match decide::target(manifest) {
            Ok(target) => target,
            Err(message) => {
                let identifier = ResourceIdentifier {
                    ordinal,
                    kind: manifest["kind"].as_str().unwrap_or_default().into(),
                    name: manifest
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    ..Default::default()
                };
                let message = format!("manifest {ordinal} of this work: {message}");
                return Ok(not_applied(identifier, decide::REASON_INVALID, message));
            }
        };
        let mut identifier = ResourceIdentifier {
            ordinal,
            group: target.group.clone(),
            version: target.version.clone(),
            kind: target.kind.clone(),
            resource: String::new(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
        };
        let Some(kind) = self.kind(&target).await? else {
            let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
            let message = format!(
                "cluster {} does not serve {api_version} {}; install its CustomResourceDefinition in the member",
                self.cluster, target.kind
            );
            return Ok(not_applied(identifier, decide::REASON_UNKNOWN_KIND, message));
        };
        identifier.resource = kind.resource.plural.clone();
        let namespace = kind.namespaced.then(|| match target.namespace.as_str() {
            "" => "default".to_string(),
            ns => ns.to_string(),
        });
        identifier.namespace = namespace.clone().unwrap_or_default();
        let api = self.api(&kind, namespace.as_deref());

        let owner = match self.ownership(&kind, &api, &identifier.namespace, &target.name, applied_by).await {
            Ok(owner) => owner,
            Err(e) => return self.refused(identifier, &target, e),
        };
        if !decide::may_apply(&owner, resolution) {
            let message = decide::conflict_message(&target, &self.cluster, &owner);
            return Ok(not_applied(identifier, decide::REASON_CONFLICT, message));
        }
        if !matches!(owner, Ownership::Ours | Ownership::Absent) {
            tracing::info!(
                cluster = %self.cluster, object = %target.describe(), work = applied_by, previous = ?owner,
                "taking over an object"
            );
        }
        let mut body = decide::prepare(manifest, namespace.as_deref(), applied_by);
        let scaled = flotilla_apps_core::member_hpa::ScaleTarget {
            namespace: identifier.namespace.clone(),
            group: target.group.clone(),
            kind: target.kind.clone(),
            name: target.name.clone(),
        };
        let replicas_owner = self.hpas.retain(&api, scaled, applied_by, &mut body).await?;
        let objects = self.watch(&kind);
        let key = (identifier.namespace.clone(), target.name.clone());
        lock(&objects).applying.insert(key.clone(), Vec::new());
        let result = self.server_side_apply(&api, &target.name, &body, namespace.as_deref()).await;
        let ours = result.as_ref().ok().map(|applied| Seen {
            applied_by: applied_by.to_string(),
            resource_version: applied.resource_version().unwrap_or_default(),
        });
        let owners = lock(&objects).applied(&key, ours);
        for owner in owners {
            trigger(&self.triggers, &self.hub_namespace, &owner);
        }
        let mut applied = match result {
            Ok(applied) => applied,
            // The member's HPA scaled since its replicas were read: read again.
            Err(kube::Error::Api(s)) if s.code == 409 && replicas_owner.is_some() => {
                return Err(kube::Error::Api(s).into())
            }
            Err(e) => return self.refused(identifier, &target, e),
        };
        applied.managed_fields_mut().clear();
        let generation = applied.metadata.generation;
        let object = serde_json::to_value(&applied)?;
        let (health, status) = flotilla_apps_core::health::interpret(&object);
        // A custom kind whose WorkloadInterpreter has a health rule (the hub
        // copied it into the Work) is judged by it, and says why itself.
        let (health, health_detail, unschedulable) =
            match flotilla_apps_core::interpreter::judge_health(&object, health_rules) {
                Some((health, detail)) => (health, detail, None),
                None => self.diagnose(&object, health, unhealthy_pods),
            };
        Ok(ManifestStatus {
            identifier,
            applied: true,
            reason: String::new(),
            message: String::new(),
            health,
            health_detail,
            status,
            generation,
            replicas_owner,
            unschedulable,
        })
    }

    /// Why an object that is not healthy is not, from its pods (followed
    /// from now on, in `unhealthy_pods`), and how many of its replicas
    /// the member cannot schedule (for the hub's descheduling). No detail
    /// before the pods are listed: the first list reconciles the followed
    /// Works.
    fn diagnose(
        &self,
        object: &Value,
        health: Health,
        unhealthy_pods: &mut Vec<PodSelection>,
    ) -> (Health, Option<HealthDetail>, Option<UnschedulableReplicas>) {
        if health == Health::Healthy {
            return (health, None, None);
        }
        let Some(selection) = diagnosis::pod_selection(object) else {
            // A bare Pod is its own pod; other kinds say why themselves.
            let (health, detail) = diagnosis::diagnose(object, health, &[]);
            return (health, detail, None);
        };
        let pods = self.pods.selected(&selection);
        unhealthy_pods.push(selection);
        match pods {
            Some(pods) => {
                let (health, detail) = diagnosis::diagnose(object, health, &pods);
                (health, detail, unschedulable(object, &pods))
            }
            None => (health, None, None),
        }
    }

    fn work_ref(&self, name: &str) -> ObjectRef<Work> {
        ObjectRef::new(name).within(&self.hub_namespace)
    }

    /// A manifest status for an error that is the manifest's own, or the
    /// error (to retry the whole Work) when the member or hub failed.
    fn refused(
        &self,
        identifier: ResourceIdentifier,
        target: &Target,
        error: kube::Error,
    ) -> Result<ManifestStatus, Error> {
        match refusal(&error) {
            Some(message) => {
                let message = format!("cluster {} refused {}: {message}", self.cluster, target.describe());
                Ok(not_applied(identifier, decide::REASON_APPLY_FAILED, message))
            }
            None => Err(error.into()),
        }
    }

    fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.member.clone(), ns, &kind.resource),
            None => Api::all_with(self.member.clone(), &kind.resource),
        }
    }

    /// Server-side apply; creates the object's namespace when it is missing
    /// (a missing namespace is the only way an apply can answer 404).
    async fn server_side_apply(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        body: &Value,
        namespace: Option<&str>,
    ) -> Result<DynamicObject, kube::Error> {
        let params = PatchParams::apply(APPLY_FIELD_MANAGER).force();
        match (api.patch(name, &params, &Patch::Apply(body)).await, namespace) {
            (Err(e), Some(namespace)) if is_not_found(&e) => {
                self.create_namespace(namespace).await?;
                api.patch(name, &params, &Patch::Apply(body)).await
            }
            (result, _) => result,
        }
    }

    /// Creates a namespace an object needs. It carries Flotilla's label but
    /// no Work's annotation: a Work that lists the namespace itself may
    /// adopt it, and no Work deletes it unless it does.
    async fn create_namespace(&self, name: &str) -> Result<(), kube::Error> {
        let namespace: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {keys::MANAGED_BY: keys::MANAGED_BY_VALUE}}
        }))
        .map_err(kube::Error::SerdeError)?;
        match Api::<Namespace>::all(self.member.clone()).create(&PostParams::default(), &namespace).await {
            Ok(_) => {
                tracing::info!(cluster = %self.cluster, namespace = name, "created a namespace in the member");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The kind a manifest names, from the member's discovery (cached).
    /// `None` when the member does not serve it.
    async fn kind(&self, target: &Target) -> Result<Option<Kind>, Error> {
        let gvk = GroupVersionKind::gvk(&target.group, &target.version, &target.kind);
        if let Some(kind) = lock(&self.kinds).get(&gvk) {
            return Ok(Some(kind.clone()));
        }
        match kube::discovery::pinned_kind(&self.member, &gvk).await {
            Ok((resource, capabilities)) => {
                let kind = Kind { resource, namespaced: capabilities.scope == Scope::Namespaced };
                lock(&self.kinds).insert(gvk, kind.clone());
                Ok(Some(kind))
            }
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Who an object belongs to: from the kind's watch when it knows the
    /// object (no request), else from the member.
    async fn ownership(
        &self,
        kind: &Kind,
        api: &Api<DynamicObject>,
        namespace: &str,
        name: &str,
        applied_by: &str,
    ) -> Result<Ownership, kube::Error> {
        let key = (namespace.to_string(), name.to_string());
        let known = lock(&self.watches)
            .get(&watch_key(&kind.resource))
            .and_then(|w| lock(&w.objects).objects.get(&key).map(|seen| seen.applied_by.clone()));
        if let Some(owner) = known {
            return Ok(decide::managed_ownership(&owner, applied_by));
        }
        Ok(match api.get_metadata_opt(name).await? {
            None => Ownership::Absent,
            Some(meta) => decide::ownership(meta.labels(), meta.annotations(), applied_by),
        })
    }

    /// Deletes one object of this Work from the member (or, preserving,
    /// removes Flotilla's marks so it stays, unmanaged). Objects that are
    /// not this Work's are left alone.
    async fn remove(
        &self,
        id: &ResourceIdentifier,
        applied_by: &str,
        preserve: bool,
    ) -> Result<(), kube::Error> {
        let gvk = GroupVersionKind::gvk(&id.group, &id.version, &id.kind);
        let kind = Kind {
            resource: ApiResource::from_gvk_with_plural(&gvk, &id.resource),
            namespaced: !id.namespace.is_empty(),
        };
        let namespace = kind.namespaced.then_some(id.namespace.as_str());
        let api = self.api(&kind, namespace);
        let owner = self.ownership(&kind, &api, &id.namespace, &id.name, applied_by).await?;
        if !decide::may_remove(&owner) {
            if owner != Ownership::Absent {
                tracing::info!(
                    cluster = %self.cluster, object = %describe(id), work = applied_by, owner = ?owner,
                    "not removing an object that is no longer this work's"
                );
            }
            return Ok(());
        }
        // Forget it first, so the watch does not answer our own change by
        // reconciling the Work again.
        self.forget(&kind, &(id.namespace.clone(), id.name.clone()));
        let result = if preserve {
            let unmark = json!({"metadata": {
                "labels": {keys::MANAGED_BY: null},
                "annotations": {keys::APPLIED_BY_WORK: null}
            }});
            api.patch(&id.name, &PatchParams::default(), &Patch::Merge(&unmark)).await.map(|_| ())
        } else {
            api.delete(&id.name, &DeleteParams::background()).await.map(|_| ())
        };
        match result {
            Ok(()) => {
                tracing::info!(
                    cluster = %self.cluster, object = %describe(id), work = applied_by, preserved = preserve,
                    "removed an object from the member"
                );
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A Work being deleted: remove its objects from the member (then the
    /// finalizer helper lets the Work go). Failures keep the finalizer and
    /// retry, so a member that comes back still gets cleaned up.
    async fn clean_up(&self, work: &Work) -> Result<Action, Error> {
        let name = work.name_any();
        let applied_by = decide::applied_by(&self.hub_namespace, &name);
        let mut objects: Vec<ResourceIdentifier> =
            self.previously_applied(work).into_iter().filter(|id| !id.resource.is_empty()).collect();
        // Also what the spec holds (a status write may have been lost).
        for Manifest(manifest) in &work.spec.manifests {
            let Ok(target) = decide::target(manifest) else { continue };
            let Some(kind) = self.kind(&target).await? else { continue };
            let namespace = match (kind.namespaced, target.namespace.as_str()) {
                (false, _) => String::new(),
                (true, "") => "default".into(),
                (true, ns) => ns.into(),
            };
            let id = ResourceIdentifier {
                ordinal: 0,
                group: target.group,
                version: target.version,
                kind: target.kind,
                resource: kind.resource.plural,
                namespace,
                name: target.name,
            };
            if !objects.iter().any(|o| decide::same_object(o, &id)) {
                objects.push(id);
            }
        }
        let preserve = work.spec.preserve_resources_on_deletion;
        for id in &objects {
            self.remove(id, &applied_by, preserve).await?;
        }
        lock(&self.recorded).remove(&name);
        self.hpas.forget(&applied_by);
        self.pods.follow(&self.work_ref(&name), Vec::new(), &self.triggers);
        tracing::info!(
            cluster = %self.cluster, work = %name, objects = objects.len(), preserved = preserve,
            "work deleted; its objects are removed from the member"
        );
        // A namespace the applier created for them may be unused now.
        self.sweep_namespaces().await;
        Ok(Action::await_change())
    }

    /// What the Work's status lists (as cached) and what this applier last
    /// wrote there.
    fn previously_applied(&self, work: &Work) -> Vec<ResourceIdentifier> {
        let mut previous: Vec<ResourceIdentifier> = work
            .status
            .iter()
            .flat_map(|s| s.manifest_statuses.iter().map(|m| m.identifier.clone()))
            .collect();
        if let Some(recorded) = lock(&self.recorded).get(&work.name_any()) {
            for identifier in recorded {
                if !previous.iter().any(|p| decide::same_object(p, identifier)) {
                    previous.push(identifier.clone());
                }
            }
        }
        previous
    }

    async fn write_status(&self, name: &str, status: &WorkStatus) -> Result<(), Error> {
        let patch = json!({"apiVersion": "work.flotilla.io/v1alpha1", "kind": "Work", "status": status});
        match self
            .works
            .patch_status(name, &PatchParams::apply(STATUS_FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn forget(&self, kind: &Kind, key: &ObjectKey) {
        if let Some(watch) = lock(&self.watches).get(&watch_key(&kind.resource)) {
            lock(&watch.objects).objects.remove(key);
        }
    }

    /// Starts watching a kind's Flotilla-labelled objects in the member,
    /// once per kind.
    fn watch(&self, kind: &Kind) -> Arc<Mutex<KindObjects>> {
        let key = watch_key(&kind.resource);
        let mut watches = lock(&self.watches);
        if let Some(watch) = watches.get(&key) {
            return watch.objects.clone();
        }
        let watch = Watch::start(
            &self.member,
            &kind.resource,
            self.triggers.clone(),
            self.hub_namespace.clone(),
            self.cluster.clone(),
        );
        let objects = watch.objects.clone();
        watches.insert(key, watch);
        objects
    }
}

fn describe(id: &ResourceIdentifier) -> String {
    if id.namespace.is_empty() {
        format!("{} {}", id.kind, id.name)
    } else {
        format!("{} {}/{}", id.kind, id.namespace, id.name)
    }
}
