//! Gradual migration, the I/O half (`flotilla promote`, `flotilla release`;
//! the decisions are `flotilla_apps_core::migration`'s).
//!
//! `promote` reads a workload running in a member, writes a clean hub
//! template of it and a policy that places it on that member and takes the
//! existing object over, and can wait until the member's applier has
//! adopted it: the pod template is unchanged, so nothing restarts.
//! `release` marks the template so its Works preserve their objects, marks
//! the Works so, waits until every member's agent observed that, then
//! deletes the template (the appliers let go of the objects and leave them
//! running) and the policy `promote` made if nothing else uses it.

use std::time::Duration;

use flotilla_api::cluster::{ManagedCluster, SyncMode};
use flotilla_api::work::{keys, ResourceBinding, Work};
use flotilla_apps_core::binding::{binding_name, spec_hash, work_name};
use flotilla_apps_core::migration::{
    names_resource, parse_object_arg, policy_fate, preserving, promoted_policy, template_from_member,
    PolicyFate, ResourceNames, PROMOTED_FROM, RELEASE_ANNOTATION,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::error::Error;

/// The field manager of what `promote` and `release` write on the hub.
pub const MANAGER: &str = "flotilla-migration";

/// A resource type as the API serves it.
#[derive(Debug, Clone)]
pub struct ResolvedType {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// Finds what `written` (`deployment`, `deployments.apps`, `deploy`) names
/// in `client`'s discovery (the core group first, then the groups in the
/// server's order, preferred versions).
pub async fn resolve_type(client: &Client, written: &str) -> Result<ResolvedType, Error> {
    let mut lists = vec![client.list_core_api_resources("v1").await?];
    for group in client.list_api_groups().await?.groups {
        let Some(version) = group.preferred_version.or_else(|| group.versions.first().cloned()) else {
            continue;
        };
        match client.list_api_group_resources(&version.group_version).await {
            Ok(list) => lists.push(list),
            Err(e) => tracing::debug!(group = %version.group_version, error = %e, "discovery failed"),
        }
    }
    for list in lists {
        let (group, version) = list.group_version.rsplit_once('/').unwrap_or(("", &list.group_version));
        for r in &list.resources {
            if r.name.contains('/') {
                continue;
            }
            let short = r.short_names.clone().unwrap_or_default();
            let names = ResourceNames { group, kind: &r.kind, plural: &r.name, short_names: &short };
            if names_resource(written, &names) {
                let gvk = GroupVersionKind::gvk(group, version, &r.kind);
                return Ok(ResolvedType {
                    resource: ApiResource::from_gvk_with_plural(&gvk, &r.name),
                    namespaced: r.namespaced,
                });
            }
        }
    }
    Err(Error::Other(format!("the server has no resource type `{written}`")))
}

fn api_for(client: &Client, t: &ResolvedType, namespace: &str) -> Api<DynamicObject> {
    if t.namespaced {
        Api::namespaced_with(client.clone(), namespace, &t.resource)
    } else {
        Api::all_with(client.clone(), &t.resource)
    }
}

fn describe(t: &ResolvedType, namespace: &str, name: &str) -> String {
    let kind = t.resource.kind.to_lowercase();
    if t.namespaced {
        format!("{kind}/{name} in namespace {namespace}")
    } else {
        format!("{kind}/{name}")
    }
}

/// A client for a member the hub holds a kubeconfig for (push mode); a
/// pull-mode member's kubeconfig must be given.
pub async fn member_client(hub: &Client, cluster: &str) -> Result<Client, Error> {
    let mc = Api::<ManagedCluster>::all(hub.clone())
        .get_opt(cluster)
        .await?
        .ok_or_else(|| Error::Other(format!("no cluster {cluster} in the fleet")))?;
    match (mc.spec.sync_mode, mc.spec.secret_ref) {
        (SyncMode::Push, Some(secret)) => {
            crate::push::member_client(hub, &secret.namespace, &secret.name).await
        }
        _ => Err(Error::Other(format!(
            "cluster {cluster} is in pull mode: the hub holds no credential for it; pass the member's \
             kubeconfig (--member-kubeconfig)"
        ))),
    }
}

/// What `promote` wrote.
#[derive(Debug, Clone)]
pub struct Promoted {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub cluster: String,
    /// `PropagationPolicy ns/name` or `ClusterPropagationPolicy name`.
    pub policy: String,
}

impl Promoted {
    /// The template's Work in its cluster's hub namespace.
    pub fn work(&self) -> (String, String) {
        let binding = binding_name(&self.api_version, &self.kind, &self.name);
        (ManagedCluster::hub_namespace(&self.cluster), work_name(&self.namespace, &binding))
    }
}

/// Adopts `object` (`TYPE/NAME`) running in `cluster` into the fleet.
pub async fn promote(
    hub: &Client,
    member: &Client,
    object: &str,
    namespace: &str,
    cluster: &str,
) -> Result<Promoted, Error> {
    let arg = parse_object_arg(object).map_err(|e| Error::Other(e.to_string()))?;
    if Api::<ManagedCluster>::all(hub.clone()).get_opt(cluster).await?.is_none() {
        return Err(Error::Other(format!("no cluster {cluster} in the fleet (see `flotilla get clusters`)")));
    }
    let resolved = resolve_type(member, &arg.resource).await?;
    let what = describe(&resolved, namespace, &arg.name);
    let found = api_for(member, &resolved, namespace)
        .get_opt(&arg.name)
        .await?
        .ok_or_else(|| Error::Other(format!("cluster {cluster} has no {what}")))?;
    let mut object = serde_json::to_value(&found)?;
    object["apiVersion"] = json!(resolved.resource.api_version);
    object["kind"] = json!(resolved.resource.kind);
    let template = template_from_member(&object, cluster)
        .map_err(|e| Error::Other(format!("cannot promote {what} from {cluster}: {e}")))?;

    let hub_type = resolve_type(hub, &resolved.resource.plural).await.map_err(|_| {
        Error::Other(format!(
            "the hub does not serve {} (install its CRD on the hub first)",
            resolved.resource.kind
        ))
    })?;
    let templates = api_for(hub, &hub_type, namespace);
    if let Some(existing) = templates.get_opt(&arg.name).await? {
        if existing.annotations().get(PROMOTED_FROM).map(String::as_str) != Some(cluster) {
            return Err(Error::Other(format!(
                "the hub already has a template {what}: it is in the fleet already (not promoted from {cluster})"
            )));
        }
    }
    if resolved.namespaced {
        ensure_namespace(hub, namespace).await?;
    }
    let policy = promoted_policy(&template, cluster);
    let policy_kind = policy["kind"].as_str().unwrap_or_default().to_string();
    let policy_name =
        policy.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let policy_type =
        resolve_type(hub, &format!("{}.{}", policy_kind.to_lowercase(), flotilla_api::policy::GROUP)).await?;
    let params = PatchParams::apply(MANAGER).force();
    api_for(hub, &policy_type, namespace).patch(&policy_name, &params, &Patch::Apply(&policy)).await?;
    templates.patch(&arg.name, &params, &Patch::Apply(&template)).await?;
    tracing::info!(object = %what, %cluster, policy = %policy_name, "promoted into the fleet");
    Ok(Promoted {
        api_version: resolved.resource.api_version.clone(),
        kind: resolved.resource.kind.clone(),
        namespace: if resolved.namespaced { namespace.to_string() } else { String::new() },
        name: arg.name,
        cluster: cluster.to_string(),
        policy: if resolved.namespaced {
            format!("{policy_kind} {namespace}/{policy_name}")
        } else {
            format!("{policy_kind} {policy_name}")
        },
    })
}

async fn ensure_namespace(hub: &Client, namespace: &str) -> Result<(), Error> {
    let api = Api::<Namespace>::all(hub.clone());
    if api.get_opt(namespace).await?.is_some() {
        return Ok(());
    }
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    api.patch(namespace, &PatchParams::apply(MANAGER), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Waits until the member's applier has applied the promoted template's
/// Work (it owns the object now). Fails with the Work's reason if it was
/// refused, or on timeout.
pub async fn wait_adopted(hub: &Client, promoted: &Promoted, timeout: Duration) -> Result<(), Error> {
    let (namespace, name) = promoted.work();
    let works = Api::<Work>::namespaced(hub.clone(), &namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = "the hub has not written its Work yet".to_string();
    while tokio::time::Instant::now() < deadline {
        if let Some(work) = works.get_opt(&name).await? {
            let hash = work.annotations().get(keys::SPEC_HASH).cloned().unwrap_or_default();
            let status = work.status.unwrap_or_default();
            let applied =
                status.conditions.iter().find(|c| c.type_ == flotilla_api::work::conditions::APPLIED);
            match applied {
                Some(c) if c.status == "True" && status.observed_spec_hash == hash => return Ok(()),
                Some(c) => last = format!("{}: {}", c.reason, c.message),
                None => last = format!("the agent of {} has not applied it yet", promoted.cluster),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(Error::Timeout(format!("{} to adopt {}/{} ({last})", promoted.cluster, promoted.kind, promoted.name)))
}

/// What `release` did.
#[derive(Debug, Clone, Default)]
pub struct Released {
    /// `kind/name in namespace ns`.
    pub template: String,
    /// The clusters whose objects were left in place.
    pub clusters: Vec<String>,
    /// Dependencies propagated with it (by name), whose member copies are
    /// kept too once nothing needs them.
    pub dependencies: Vec<String>,
    /// The policy deleted, if any.
    pub policy_deleted: Option<String>,
    /// The policy kept, and why.
    pub policy_kept: Option<(String, String)>,
}

/// Removes `object` (`TYPE/NAME`) from the fleet, leaving its member
/// objects in place (and those of the dependencies propagated with it).
/// Waits up to `timeout` for each member's agent.
pub async fn release(
    hub: &Client,
    object: &str,
    namespace: &str,
    timeout: Duration,
) -> Result<Released, Error> {
    let arg = parse_object_arg(object).map_err(|e| Error::Other(e.to_string()))?;
    let resolved = resolve_type(hub, &arg.resource).await?;
    let what = describe(&resolved, namespace, &arg.name);
    let templates = api_for(hub, &resolved, namespace);
    if templates.get_opt(&arg.name).await?.is_none() {
        return Err(Error::Other(format!("the hub has no template {what}")));
    }
    let namespace = if resolved.namespaced { namespace } else { "" };
    let binding = binding_name(&resolved.resource.api_version, &resolved.resource.kind, &arg.name);
    let spec = binding_spec(hub, namespace, &binding).await?;
    // 1. The binder keeps the Works preserving from now on: the template's,
    //    and its dependencies' (they go when nothing needs them any more).
    let mut marked = vec![(templates.clone(), arg.name.clone(), binding.clone())];
    for dep in spec.iter().flat_map(|s| s.dependencies.iter()) {
        let (group, _) = dep.api_version.rsplit_once('/').unwrap_or(("", ""));
        let written = if group.is_empty() {
            dep.kind.to_lowercase()
        } else {
            format!("{}.{group}", dep.kind.to_lowercase())
        };
        let dep_type = resolve_type(hub, &written).await?;
        let dep_binding = binding_name(&dep.api_version, &dep.kind, &dep.name);
        marked.push((api_for(hub, &dep_type, namespace), dep.name.clone(), dep_binding));
    }
    let mark = json!({"metadata": {"annotations": {RELEASE_ANNOTATION: "true"}}});
    for (api, name, _) in &marked {
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&mark)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // 2. Each Work preserves its objects, and its agent has seen that.
    let mut works: Vec<WorkAt> = Vec::new();
    for mc in Api::<ManagedCluster>::all(hub.clone()).list(&ListParams::default()).await? {
        let api = Api::<Work>::namespaced(hub.clone(), &ManagedCluster::hub_namespace(&mc.name_any()));
        for (i, (_, _, b)) in marked.iter().enumerate() {
            let name = work_name(namespace, b);
            if api.get_opt(&name).await?.is_some() {
                works.push(WorkAt { cluster: mc.name_any(), name, api: api.clone(), template: i == 0 });
            }
        }
    }
    wait_preserving(&works, timeout).await?;
    // 3. Which policy goes with it.
    let policy =
        spec.and_then(|s| s.policy).map(|p| PolicyRef { kind: p.kind, namespace: p.namespace, name: p.name });
    let fate = match &policy {
        Some(p) => Some((p.clone(), fate_of(hub, p, namespace, &binding).await?)),
        None => None,
    };
    // 4. The template goes; the appliers let go of the objects.
    templates.delete(&arg.name, &DeleteParams::default()).await?;
    let own: Vec<WorkAt> = works.iter().filter(|w| w.template).cloned().collect();
    wait_gone(&own, timeout).await?;
    let mut clusters: Vec<String> = own.iter().map(|w| w.cluster.clone()).collect();
    clusters.dedup();
    let mut released = Released {
        template: what.clone(),
        clusters,
        dependencies: marked.iter().skip(1).map(|(_, name, _)| name.clone()).collect(),
        ..Default::default()
    };
    match fate {
        Some((p, PolicyFate::Delete)) => {
            let api = policy_api(hub, &p)?;
            match api.delete(&p.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            released.policy_deleted = Some(p.describe());
        }
        Some((p, PolicyFate::Keep(why))) => released.policy_kept = Some((p.describe(), why)),
        None => {}
    }
    tracing::info!(object = %what, clusters = ?released.clusters, "released from the fleet");
    Ok(released)
}

/// One Work `release` waits on.
#[derive(Clone)]
struct WorkAt {
    cluster: String,
    name: String,
    api: Api<Work>,
    /// The released template's own (not a dependency's).
    template: bool,
}

async fn wait_preserving(works: &[WorkAt], timeout: Duration) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut waiting = Vec::new();
        for WorkAt { cluster, name, api, .. } in works {
            let Some(work) = api.get_opt(name).await? else { continue };
            if work.metadata.deletion_timestamp.is_some() && !work.spec.preserve_resources_on_deletion {
                return Err(Error::Other(format!(
                    "the Work {name} in {cluster} is already being deleted without preserving its objects"
                )));
            }
            let spec = serde_json::to_value(&work.spec)?;
            let (wanted, changed) = preserving(&spec);
            let hash = work.annotations().get(keys::SPEC_HASH).cloned().unwrap_or_default();
            if changed {
                let patch = json!({
                    "metadata": {"annotations": {keys::SPEC_HASH: spec_hash(&wanted)}},
                    "spec": {"preserveResourcesOnDeletion": true},
                });
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                waiting.push(cluster.clone());
            } else if work.status.as_ref().map(|s| s.observed_spec_hash.as_str()) != Some(hash.as_str()) {
                waiting.push(cluster.clone());
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            waiting.dedup();
            return Err(Error::Timeout(format!(
                "the agents of {} to confirm their Works preserve the objects (nothing was deleted; run \
                 release again once they are reachable)",
                waiting.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_gone(works: &[WorkAt], timeout: Duration) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut left = Vec::new();
        for WorkAt { cluster, name, api, .. } in works {
            if api.get_opt(name).await?.is_some() {
                left.push(cluster.clone());
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "the agents of {} to let go of the objects (the template is deleted; they will once reachable)",
                left.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PolicyRef {
    kind: String,
    namespace: String,
    name: String,
}

impl PolicyRef {
    fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

fn policy_api(hub: &Client, p: &PolicyRef) -> Result<Api<DynamicObject>, Error> {
    let plural = match p.kind.as_str() {
        "PropagationPolicy" => "propagationpolicies",
        "ClusterPropagationPolicy" => "clusterpropagationpolicies",
        other => return Err(Error::Other(format!("unknown policy kind {other}"))),
    };
    let gvk = GroupVersionKind::gvk(flotilla_api::policy::GROUP, "v1alpha1", &p.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    Ok(if p.namespace.is_empty() {
        Api::all_with(hub.clone(), &resource)
    } else {
        Api::namespaced_with(hub.clone(), &p.namespace, &resource)
    })
}

async fn binding_spec(
    hub: &Client,
    namespace: &str,
    binding: &str,
) -> Result<Option<flotilla_api::work::BindingSpec>, Error> {
    Ok(if namespace.is_empty() {
        Api::<flotilla_api::work::ClusterResourceBinding>::all(hub.clone())
            .get_opt(binding)
            .await?
            .map(|b| b.spec.spec)
    } else {
        Api::<ResourceBinding>::namespaced(hub.clone(), namespace)
            .get_opt(binding)
            .await?
            .map(|b| b.spec.spec)
    })
}

/// Whether the policy goes: only one `promote` made that no other binding uses.
async fn fate_of(hub: &Client, p: &PolicyRef, namespace: &str, binding: &str) -> Result<PolicyFate, Error> {
    let Some(policy) = policy_api(hub, p)?.get_opt(&p.name).await? else {
        return Ok(PolicyFate::Keep("it is gone already".into()));
    };
    let uses = |spec: &flotilla_api::work::BindingSpec| {
        spec.policy
            .as_ref()
            .is_some_and(|r| r.kind == p.kind && r.namespace == p.namespace && r.name == p.name)
    };
    let mut others = Vec::new();
    for b in Api::<ResourceBinding>::all(hub.clone()).list(&ListParams::default()).await? {
        let ns = b.namespace().unwrap_or_default();
        if uses(&b.spec.spec) && !(ns == namespace && b.name_any() == binding) {
            others.push(format!("{ns}/{}", b.name_any()));
        }
    }
    let cluster_bindings = Api::<flotilla_api::work::ClusterResourceBinding>::all(hub.clone());
    for b in cluster_bindings.list(&ListParams::default()).await? {
        if uses(&b.spec.spec) && !(namespace.is_empty() && b.name_any() == binding) {
            others.push(b.name_any());
        }
    }
    Ok(policy_fate(policy.labels(), &others))
}
