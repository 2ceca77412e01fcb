//! The NodePool controller: a hosted cluster's real worker nodes. Each
//! reconcile reads the pool, its HostedCluster, the Machines (their
//! `spec.realNodes` entries are the record of the pool's nodes) and, inside
//! the cluster, the pool's Nodes, their pods and the PodDisruptionBudgets;
//! asks `flotilla_kok_core::node_pool` for the next steps; carries them out
//! (Machine entries by server-side apply under the pool's own field
//! manager, credentials into Secrets, cordon, eviction, Node deletion); and
//! writes the status. The node agents run what the entries declare.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::kok::HostedCluster;
use flotilla_api::machine::{KeyRef, Machine, RealNodeSpec, RepairPolicy};
use flotilla_api::node_pool::{NodePool, NodePoolStatus, POOL_LABEL};
use flotilla_core::conditions::{set, Wanted};
use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_core::pki::{CertificateAuthority, LeafSpec};
use flotilla_kok_core::hosted::{self as hosted_plan, OWNER_LABEL};
use flotilla_kok_core::node_pool::{
    self as plan, Action as Step, MachineView, ObservedNode, PoolInput, Target, Template,
    CORDONED_AT_ANNOTATION, REVISION_LABEL,
};
use flotilla_kok_core::node_pool_observe as observe;
use flotilla_kok_core::pki::keys;
use flotilla_kok_core::real_node::extra_images::cluster_images_dir;
use flotilla_kok_core::{addons, wait};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::hosted_addons::business_client;
use crate::hosted_operator::{read_secret, HostedOperator};
use crate::Error;

/// Field manager of the pools' status and Secrets.
pub const FIELD_MANAGER: &str = "flotilla-node-pool";

/// The field manager a pool writes its Machine entries with: server-side
/// apply then merges pools' entries by name and never touches another's.
pub fn entry_field_manager(namespace: &str, pool: &str) -> String {
    format!("flotilla-node-pool-{namespace}-{pool}")
}

struct Ctx {
    client: Client,
    config: HostedOperator,
    catalog: crate::catalog::VersionCatalog,
    recorder: Recorder,
}

/// Reconciles every NodePool until the watch ends.
pub async fn run(client: Client, config: HostedOperator) -> Result<(), Error> {
    let pools: Api<NodePool> = Api::all(client.clone());
    let machines: Api<Machine> = Api::all(client.clone());
    let clusters: Api<HostedCluster> = Api::all(client.clone());
    let catalog =
        crate::catalog::VersionCatalog::new(config.plan.versions.clone(), config.version_cache.clone());
    let recorder =
        Recorder::new(client.clone(), Reporter { controller: FIELD_MANAGER.into(), instance: None });
    let ctx = Arc::new(Ctx { client, config, catalog, recorder });
    let controller = Controller::new(pools, watcher::Config::default());
    let store = controller.store();
    let by_cluster = store.clone();
    controller
        .watches(machines, watcher::Config::default(), |m: Machine| {
            let mut owners: Vec<ObjectRef<NodePool>> = m
                .spec
                .real_nodes
                .iter()
                .filter_map(|n| Some((n.labels.get(POOL_LABEL)?, n.labels.get(OWNER_LABEL)?)))
                .filter_map(|(pool, owner)| Some(ObjectRef::new(pool).within(owner.split_once('.')?.0)))
                .collect();
            owners.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            owners.dedup();
            owners
        })
        .watches(clusters, watcher::Config::default(), move |hc: HostedCluster| {
            let (ns, name) = (hc.namespace().unwrap_or_default(), hc.name_any());
            by_cluster
                .state()
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && p.spec.cluster_ref == name)
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(|o, c| flotilla_metrics::reconcile("node-pool", o, c, reconcile), error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "node pool reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(pool: Arc<NodePool>, error: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(pool = %pool.name_any(), error = %error, "node pool reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// What a pool needs of its cluster: its version, where its API server is,
/// its CA, a client inside it, and its DNS Service's address.
struct ClusterAccess {
    version: String,
    /// The API server as the admin kubeconfig reaches it (a NodePort is
    /// checked against the Service's name).
    endpoint: String,
    tls_server_name: Option<String>,
    ca: CertificateAuthority,
    client: Client,
    dns: String,
}

async fn cluster_access(ctx: &Ctx, pool: &NodePool) -> Result<Result<ClusterAccess, String>, Error> {
    let namespace = pool.namespace().unwrap_or_default();
    let name = &pool.spec.cluster_ref;
    let Some(hc) = Api::<HostedCluster>::namespaced(ctx.client.clone(), &namespace).get_opt(name).await?
    else {
        return Ok(Err(format!("HostedCluster {namespace}/{name} does not exist")));
    };
    let status = hc.status.clone().unwrap_or_default();
    let (Some(version), Some(_)) = (status.version.clone(), status.endpoint.clone()) else {
        return Ok(Err(format!("HostedCluster {name} has no control plane serving yet")));
    };
    if !wait::is_ready(&hc) {
        return Ok(Err(format!("waiting for HostedCluster {name} to be Ready")));
    }
    let pki = read_secret(&ctx.client, &hc, &hosted_plan::pki_secret_name(name)).await?;
    let text = |key: &str| pki.get(key).map(|v| String::from_utf8_lossy(v).into_owned());
    let (Some(cert), Some(key)) = (text(keys::CA_CRT), text(keys::CA_KEY)) else {
        return Ok(Err(format!("HostedCluster {name}'s certificates are not issued yet")));
    };
    let ca = CertificateAuthority::from_pem(&cert, &key).map_err(|e| Error::Other(e.to_string()))?;
    let admin = read_secret(&ctx.client, &hc, &hosted_plan::admin_secret_name(name)).await?;
    let Some(kubeconfig) = admin.get("kubeconfig").or_else(|| admin.values().next()) else {
        return Ok(Err(format!("HostedCluster {name} has no admin kubeconfig yet")));
    };
    let parsed = kubeconfig::parse(&String::from_utf8_lossy(kubeconfig))
        .map_err(|e| Error::Other(format!("HostedCluster {name}'s admin kubeconfig: {e}")))?;
    let (endpoint, tls_server_name) = (parsed.server, parsed.tls_server_name);
    let client = business_client(kubeconfig).await?;
    let dns = addons::nth_service_ip(&hc.spec.network.service_cidr, 10)
        .map_err(|e| Error::Other(e.to_string()))?
        .to_string();
    Ok(Ok(ClusterAccess { version, endpoint, tls_server_name, ca, client, dns }))
}

async fn reconcile(cached: Arc<NodePool>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    // Read fresh: the status carries counters and times built on the last
    // one written, and a Machine event can start this reconcile before the
    // cache has the status the previous one wrote (which would lose them).
    let Some(pool) = Api::<NodePool>::namespaced(ctx.client.clone(), &namespace).get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let pool = Arc::new(pool);
    let now = Timestamp::now();
    let access = match cluster_access(&ctx, &pool).await? {
        Ok(access) => access,
        Err(why) => {
            write_status(&ctx, &pool, None, vec![Wanted::new("Ready", false, "ClusterNotReady", &why)])
                .await?;
            return Ok(Action::requeue(Duration::from_secs(3)));
        }
    };
    let known: BTreeSet<String> =
        ctx.catalog.versions_for(pool.spec.version.as_deref().unwrap_or("")).into_keys().collect();
    let spec_template = match plan::validate(&pool.spec, &name, &access.version, &known) {
        Ok(t) => t,
        Err(why) => {
            write_status(&ctx, &pool, None, plan::refused_conditions(&why)).await?;
            return Ok(Action::requeue(ctx.config.resync));
        }
    };
    let previous = pool.status.clone().unwrap_or_default();
    let target_choice = plan::choose_target(&spec_template.revision(), previous.rollout.as_ref());
    let target = match &target_choice {
        Target::LastGood(t) => t.clone(),
        Target::Spec | Target::Hold => spec_template.clone(),
    };

    // The record: the pool's entries on the Machines.
    let machines = Api::<Machine>::all(ctx.client.clone()).list(&ListParams::default()).await?.items;
    let owner = hosted_plan::owner_label_value(&namespace, &pool.spec.cluster_ref);
    let mine = |n: &RealNodeSpec| {
        n.labels.get(POOL_LABEL) == Some(&name) && n.labels.get(OWNER_LABEL) == Some(&owner)
    };
    let lost_after = ctx.config.plan.machine_lost_after;
    let now_odt = time::OffsetDateTime::from_unix_timestamp(now.as_second())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let alive = |m: &Machine| hosted_plan::machine_usable(m, now_odt, lost_after);
    let selected = |m: &Machine| {
        pool.spec.machine_selector.iter().all(|(k, v)| m.labels().get(k) == Some(v))
            && m.metadata.deletion_timestamp.is_none()
    };
    let views: Vec<MachineView> = machines
        .iter()
        .filter(|m| selected(m))
        .map(|m| MachineView { name: m.name_any(), alive: alive(m), real_nodes: m.spec.real_nodes.len() })
        .collect();

    // Inside the cluster: the pool's Nodes, their pods, the budgets.
    let nodes_api: Api<Node> = Api::all(access.client.clone());
    let cluster_nodes: BTreeMap<String, Node> = nodes_api
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={name}")))
        .await?
        .items
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    let pods = Api::<Pod>::all(access.client.clone()).list(&ListParams::default()).await?.items;
    let budgets =
        Api::<PodDisruptionBudget>::all(access.client.clone()).list(&ListParams::default()).await?.items;
    let budgets_healthy = budgets.iter().all(observe::budget_healthy);

    let mut observed = Vec::new();
    for m in &machines {
        for entry in m.spec.real_nodes.iter().filter(|n| mine(n)) {
            observed.push(ObservedNode {
                name: entry.name.clone(),
                machine: m.name_any(),
                revision: entry.labels.get(REVISION_LABEL).cloned().unwrap_or_default(),
                machine_alive: alive(m),
                node: cluster_nodes.get(&entry.name).map(|n| observe::node_view(n, &pods)),
            });
        }
    }
    let input = PoolInput {
        cluster: &pool.spec.cluster_ref,
        pool: &name,
        spec: &pool.spec,
        target: &target,
        nodes: &observed,
        machines: &views,
        budgets_healthy,
        now: now.as_second(),
    };
    let mut decided = plan::plan(&input);
    if target_choice == Target::Hold {
        // The spec's revision failed with nothing to go back to: take no
        // further node until the spec changes.
        decided.actions.retain(|a| !matches!(a, Step::Cordon { .. }));
    }

    let writer = EntryWriter { ctx: &ctx, pool: &pool, access: &access, target: &target, owner: &owner };
    for step in &decided.actions {
        if let Err(e) = writer.carry_out(step).await {
            tracing::warn!(pool = %name, step = ?step, error = %e, "node pool step failed");
        }
    }
    // Entries written before images could be loaded get the cluster's
    // image directory (the steps above wrote their own nodes' entries).
    let touched: BTreeSet<&str> = decided.actions.iter().map(step_node).collect();
    for m in &machines {
        for entry in m.spec.real_nodes.iter().filter(|n| mine(n) && !touched.contains(n.name.as_str())) {
            let Some(updated) = plan::with_images_dir(entry, &writer.images_dir()) else { continue };
            match writer.apply_entries(&m.name_any(), Some(updated), None).await {
                Ok(()) => {
                    tracing::info!(pool = %name, node = %entry.name, "node entry given the image directory")
                }
                Err(e) => {
                    tracing::warn!(pool = %name, node = %entry.name, error = %e, "cannot give a node entry the image directory")
                }
            }
        }
    }
    // Nodes that stay keep credentials for where the API server is now.
    for n in decided.nodes.iter().filter(|n| n.state != "Removing") {
        if let Err(e) = writer.ensure_credentials(&n.name).await {
            tracing::warn!(pool = %name, node = %n.name, error = %e, "refreshing a node's credentials");
        }
    }
    for why in &decided.replacements {
        writer.event(EventType::Warning, "NodeReplaced", why).await;
    }
    if let Some(failure) = &decided.failure {
        writer.event(EventType::Warning, "RolloutFailed", &failure.message).await;
    }

    let rollout = plan::rollout_status(
        previous.rollout.as_ref(),
        &spec_template,
        &target_choice,
        &decided,
        pool.spec.replicas,
        &Time(now),
    );
    if previous.rollout.as_ref().map(|r| r.state.as_str()) != Some(rollout.state.as_str())
        && rollout.state == plan::rollout_state::COMPLETE
    {
        writer
            .event(
                EventType::Normal,
                "RolloutComplete",
                &format!("every node on revision {}", rollout.revision),
            )
            .await;
    }
    let wanted = plan::conditions(&decided, &rollout, pool.spec.replicas);
    let complete = decided.complete(pool.spec.replicas);
    let status = NodePoolStatus {
        observed_generation: pool.metadata.generation,
        version: Some(target.version.clone()),
        nodes_count: decided.nodes.len() as i32,
        ready_nodes: decided.ready,
        updated_nodes: decided.updated,
        nodes: decided.nodes.clone(),
        rollout: Some(rollout),
        replacements: previous.replacements + decided.replacements.len() as u32,
        last_replacement: decided.replacements.last().cloned().or(previous.last_replacement.clone()),
        conditions: previous.conditions.clone(),
    };
    write_status(&ctx, &pool, Some(status), wanted).await?;
    Ok(Action::requeue(if complete { ctx.config.resync } else { Duration::from_secs(2) }))
}

/// The node a step is about.
fn step_node(step: &Step) -> &str {
    match step {
        Step::Create { name, .. }
        | Step::Cordon { name }
        | Step::Drain { name }
        | Step::Update { name, .. }
        | Step::Uncordon { name }
        | Step::Remove { name, .. } => name,
    }
}

/// A delete whose object is already gone did its job.
fn gone_is_fine<T>(result: Result<T, kube::Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn write_status(
    ctx: &Ctx,
    pool: &NodePool,
    status: Option<NodePoolStatus>,
    wanted: Vec<Wanted>,
) -> Result<(), Error> {
    let previous = pool.status.clone().unwrap_or_default();
    let mut status = status.unwrap_or_else(|| NodePoolStatus {
        observed_generation: pool.metadata.generation,
        ..previous.clone()
    });
    let now = Time(Timestamp::now());
    status.conditions = previous.conditions.clone();
    for w in wanted {
        set(&mut status.conditions, w.generation(pool.metadata.generation), &now);
    }
    if pool.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<NodePool> = Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let body = json!({"apiVersion": "kok.flotilla.io/v1alpha1", "kind": "NodePool", "status": status});
    api.patch_status(&pool.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    Ok(())
}

/// Carries out the plan's steps for one pool.
struct EntryWriter<'a> {
    ctx: &'a Ctx,
    pool: &'a NodePool,
    access: &'a ClusterAccess,
    target: &'a Template,
    owner: &'a str,
}

impl EntryWriter<'_> {
    fn namespace(&self) -> String {
        self.pool.namespace().unwrap_or_default()
    }

    /// The pool's Secret: the cluster CA and kube-proxy's kubeconfig.
    fn shared_secret_name(&self) -> String {
        format!("{}-{}-nodes", self.pool.spec.cluster_ref, self.pool.name_any())
    }

    /// The cluster's directory of images its nodes import while they run
    /// (`flotilla images load` copies tarballs there).
    fn images_dir(&self) -> String {
        cluster_images_dir(&self.ctx.config.node_images_dir, &self.namespace(), &self.pool.spec.cluster_ref)
            .display()
            .to_string()
    }

    fn kubelet_secret_name(node: &str) -> String {
        format!("{node}-kubelet")
    }

    async fn event(&self, type_: EventType, reason: &str, note: &str) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.ctx.recorder.publish(&event, &self.pool.object_ref(&())).await {
            tracing::debug!(error = %e, "publishing a node pool event");
        }
    }

    fn kubeconfig(&self, user: &str, groups: &[&str]) -> Result<String, Error> {
        let cert =
            self.access.ca.issue(&LeafSpec::client(user, groups)).map_err(|e| Error::Other(e.to_string()))?;
        let spec = KubeconfigSpec {
            name: self.pool.spec.cluster_ref.clone(),
            server: self.access.endpoint.clone(),
            ca_pem: self.access.ca.pem.cert_pem.clone(),
            credential: Credential::ClientCert { cert_pem: cert.cert_pem, key_pem: cert.key_pem },
        };
        Ok(kubeconfig::render_for(&spec, self.access.tls_server_name.as_deref()))
    }

    async fn write_secret(&self, name: &str, data: BTreeMap<String, String>) -> Result<(), Error> {
        let namespace = self.namespace();
        let mut secret = Secret {
            data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        secret.metadata.name = Some(name.to_string());
        secret.metadata.namespace = Some(namespace.clone());
        secret.metadata.owner_references = self.pool.controller_owner_ref(&()).map(|o| vec![o]);
        secret.metadata.labels = Some(BTreeMap::from([(POOL_LABEL.to_string(), self.pool.name_any())]));
        Api::<Secret>::namespaced(self.ctx.client.clone(), &namespace)
            .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret))
            .await?;
        Ok(())
    }

    /// The node's credentials, written once: a rewrite would issue a new
    /// certificate on every reconcile.
    async fn ensure_credentials(&self, node: &str) -> Result<(), Error> {
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace());
        let shared = self.shared_secret_name();
        let ca_pem = self.access.ca.pem.cert_pem.clone();
        let current = secrets.get_opt(&shared).await?;
        // The same CA, and the API server where the admin kubeconfig reaches
        // it now (a NodePort's node may change): else a rewrite, which
        // restarts the node's kubelet and kube-proxy on the new one.
        let same_ca = current
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get("ca.crt").map(|v| v.0 == ca_pem.as_bytes()))
            .unwrap_or(false)
            && self.points_here(current.as_ref(), "kube-proxy");
        if !same_ca {
            let proxy = self.kubeconfig("system:kube-proxy", &[])?;
            self.write_secret(
                &shared,
                BTreeMap::from([("ca.crt".into(), ca_pem), ("kube-proxy".into(), proxy)]),
            )
            .await?;
        }
        let kubelet = Self::kubelet_secret_name(node);
        let current = secrets.get_opt(&kubelet).await?;
        if current.is_none() || !same_ca || !self.points_here(current.as_ref(), "kubeconfig") {
            let config = self.kubeconfig(&format!("system:node:{node}"), &["system:nodes"])?;
            self.write_secret(&kubelet, BTreeMap::from([("kubeconfig".into(), config)])).await?;
        }
        Ok(())
    }

    /// Whether the kubeconfig under `key` of `secret` reaches the API server
    /// where the pool reaches it now.
    fn points_here(&self, secret: Option<&Secret>, key: &str) -> bool {
        let Some(text) = secret.and_then(|s| s.data.as_ref()?.get(key)) else { return false };
        kubeconfig::parse(&String::from_utf8_lossy(&text.0)).is_ok_and(|k| {
            k.server == self.access.endpoint && k.tls_server_name == self.access.tls_server_name
        })
    }

    fn entry(&self, node: &str) -> Result<RealNodeSpec, Error> {
        let namespace = self.namespace();
        let key = |name: String, key: &str| KeyRef { namespace: namespace.clone(), name, key: key.into() };
        let bin_dir = self
            .ctx
            .catalog
            .versions_for(&self.target.version)
            .get(&self.target.version)
            .cloned()
            .ok_or_else(|| Error::Other(format!("no binaries for {}", self.target.version)))?;
        let mut labels = self.target.kubelet.labels.clone();
        labels.insert(POOL_LABEL.into(), self.pool.name_any());
        labels.insert(OWNER_LABEL.into(), self.owner.to_string());
        labels.insert(REVISION_LABEL.into(), self.target.revision());
        Ok(RealNodeSpec {
            name: node.to_string(),
            bin_dir: bin_dir.display().to_string(),
            images_dir: self.ctx.config.node_images_dir.display().to_string(),
            extra_images_dir: Some(self.images_dir()),
            ca_ref: key(self.shared_secret_name(), "ca.crt"),
            kubelet_kubeconfig_ref: key(Self::kubelet_secret_name(node), "kubeconfig"),
            kube_proxy_kubeconfig_ref: key(self.shared_secret_name(), "kube-proxy"),
            max_pods: self.target.kubelet.max_pods,
            labels,
            cluster_dns: Some(self.access.dns.clone()),
            repair: Some(RepairPolicy { not_ready_seconds: self.pool.spec.repair.restart_after_seconds }),
        })
    }

    /// Applies the pool's entries on `machine`: `keep` (its entries now,
    /// minus `remove`) plus `put`.
    async fn apply_entries(
        &self,
        machine: &str,
        put: Option<RealNodeSpec>,
        remove: Option<&str>,
    ) -> Result<(), Error> {
        let api: Api<Machine> = Api::all(self.ctx.client.clone());
        // Read again: an earlier step of this reconcile may have written it.
        let Some(current) = api.get_opt(machine).await? else {
            return Ok(());
        };
        let pool = self.pool.name_any();
        let mut want: Vec<RealNodeSpec> = current
            .spec
            .real_nodes
            .iter()
            .filter(|n| {
                n.labels.get(POOL_LABEL) == Some(&pool)
                    && n.labels.get(OWNER_LABEL).map(String::as_str) == Some(self.owner)
            })
            .filter(|n| Some(n.name.as_str()) != remove && put.as_ref().is_none_or(|p| p.name != n.name))
            .cloned()
            .collect();
        want.extend(put);
        want.sort_by(|a, b| a.name.cmp(&b.name));
        if want.is_empty() && current.spec.real_nodes.iter().all(|n| Some(n.name.as_str()) == remove) {
            // Server-side apply leaves `null` where a list's last item went
            // (see the hub's `cluster_list_maps` test): empty it with a
            // merge patch on the version just read.
            let body = json!({
                "metadata": {"resourceVersion": current.resource_version()},
                "spec": {"realNodes": null},
            });
            api.patch(machine, &PatchParams::default(), &Patch::Merge(&body)).await?;
            return Ok(());
        }
        let body = json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": machine},
            "spec": {"realNodes": want},
        });
        let manager = entry_field_manager(&self.namespace(), &pool);
        api.patch(machine, &PatchParams::apply(&manager).force(), &Patch::Apply(&body)).await?;
        Ok(())
    }

    async fn carry_out(&self, step: &Step) -> Result<(), Error> {
        let nodes: Api<Node> = Api::all(self.access.client.clone());
        match step {
            Step::Create { name, machine } | Step::Update { name, machine } => {
                self.ensure_credentials(name).await?;
                let entry = self.entry(name)?;
                self.apply_entries(machine, Some(entry), None).await?;
                tracing::info!(pool = %self.pool.name_any(), node = %name, machine = %machine, revision = %self.target.revision(), "node entry written");
            }
            Step::Cordon { name } => {
                let now = Timestamp::now().as_second().to_string();
                let body = json!({"metadata": {"annotations": {CORDONED_AT_ANNOTATION: now}}, "spec": {"unschedulable": true}});
                nodes.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await?;
                tracing::info!(pool = %self.pool.name_any(), node = %name, "node cordoned");
            }
            Step::Uncordon { name } => {
                let body = json!({"metadata": {"annotations": {CORDONED_AT_ANNOTATION: null}}, "spec": {"unschedulable": null}});
                nodes.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await?;
                tracing::info!(pool = %self.pool.name_any(), node = %name, "node uncordoned");
            }
            Step::Drain { name } => self.drain(name).await?,
            Step::Remove { name, machine } => {
                gone_is_fine(nodes.delete(name, &DeleteParams::default()).await)?;
                self.apply_entries(machine, None, Some(name)).await?;
                let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace());
                gone_is_fine(
                    secrets.delete(&Self::kubelet_secret_name(name), &DeleteParams::default()).await,
                )?;
                tracing::info!(pool = %self.pool.name_any(), node = %name, machine = %machine, "node removed");
            }
        }
        Ok(())
    }

    /// Evicts the node's pods; a PodDisruptionBudget that allows no
    /// disruption now refuses (429), and the next reconcile tries again.
    async fn drain(&self, node: &str) -> Result<(), Error> {
        let pods = Api::<Pod>::all(self.access.client.clone())
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await?
            .items;
        for pod in pods.iter().filter(|p| observe::evictable(p)) {
            let api: Api<Pod> =
                Api::namespaced(self.access.client.clone(), &pod.namespace().unwrap_or_default());
            match api.evict(&pod.name_any(), &EvictParams::default()).await {
                Ok(_) => tracing::info!(node = %node, pod = %pod.name_any(), "pod evicted"),
                Err(kube::Error::Api(e)) if e.code == 429 => {
                    tracing::info!(node = %node, pod = %pod.name_any(), "eviction refused by a PodDisruptionBudget; later");
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
