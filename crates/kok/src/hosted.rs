//! The HostedCluster operator, process runtime: certificates and
//! kubeconfigs into Secrets, the control plane and worker kubelets into
//! Machines (their node agents run them), add-ons into the cluster once its
//! API server answers, and the cluster registered in the fleet once Ready.
//!
//! Each reconcile is one pipeline: read (the HostedCluster, its
//! EtcdCluster, the Machines, the Secrets) → decide (`flotilla_kok_core`)
//! → write by server-side apply → status. Nothing is remembered between
//! reconciles except what the API holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::kok::{
    conditions, AddonStatus, EtcdCluster, HostedCluster, HostedClusterPhase, HostedClusterStatus, Runtime,
};
use flotilla_api::machine::{ComponentSpec, Machine};
use flotilla_kok_core::hosted::{self as plan, EtcdCa, HostedOperatorConfig, Part, Placement};
use flotilla_kok_core::pki::keys;
use flotilla_kok_core::{addons, upgrade};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::Error;

/// Field manager of the status, the Secrets and the ManagedCluster.
pub const FIELD_MANAGER: &str = "flotilla-kok";
/// Field manager of add-on objects inside the hosted cluster.
pub const ADDON_MANAGER: &str = "flotilla-addons";
/// Env var on every component naming its cluster (`<namespace>/<name>`),
/// so a Machine event wakes the right HostedCluster.
pub const CLUSTER_ENV: &str = "KOK_HOSTED_CLUSTER";

#[derive(Debug, Clone)]
pub struct HostedOperator {
    pub plan: HostedOperatorConfig,
    /// How often a Ready cluster is looked at while nothing changes.
    pub resync: Duration,
    /// How soon a cluster that is not Ready yet is looked at again.
    pub settle: Duration,
    /// Deadline for one upgrade step to become healthy before rolling back.
    pub upgrade_step_deadline: Duration,
    /// How the `kubernetes` runtime builds its pods (probes off only where
    /// no container really runs, e.g. hollow nodes in tests).
    pub kube_runtime: crate::kube_runtime::KubeRuntimeConfig,
}

impl Default for HostedOperator {
    fn default() -> Self {
        Self {
            plan: HostedOperatorConfig::default(),
            resync: Duration::from_secs(10),
            settle: Duration::from_secs(1),
            upgrade_step_deadline: Duration::from_secs(60),
            kube_runtime: crate::kube_runtime::KubeRuntimeConfig::default(),
        }
    }
}

struct Ctx {
    client: Client,
    config: HostedOperator,
    /// Held from reading the Machines to writing a cluster's components:
    /// clusters reconciled at the same time would otherwise be handed the
    /// same free ports.
    placing: tokio::sync::Mutex<()>,
}

/// Reconciles every HostedCluster until the watch ends.
pub async fn run(client: Client, config: HostedOperator) -> Result<(), Error> {
    let clusters: Api<HostedCluster> = Api::all(client.clone());
    let machines: Api<Machine> = Api::all(client.clone());
    let etcds: Api<EtcdCluster> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client, config, placing: tokio::sync::Mutex::new(()) });
    let controller = Controller::new(clusters, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(machines, watcher::Config::default(), |m: Machine| {
            let mut owners: Vec<ObjectRef<HostedCluster>> = m
                .spec
                .components
                .iter()
                .filter_map(|c| c.env.get(CLUSTER_ENV))
                .filter_map(|v| v.split_once('/'))
                .map(|(ns, name)| ObjectRef::new(name).within(ns))
                .collect();
            owners.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            owners.dedup();
            owners
        })
        .watches(etcds, watcher::Config::default(), move |e: EtcdCluster| {
            let (ns, name) = (e.namespace().unwrap_or_default(), e.name_any());
            store
                .state()
                .iter()
                .filter(|hc| {
                    hc.namespace().as_deref() == Some(ns.as_str())
                        && hc.spec.etcd.resolve().is_some_and(|(etcd, _)| etcd == name)
                })
                .map(|hc| ObjectRef::from_obj(hc.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "hosted cluster reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(hc: Arc<HostedCluster>, error: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(cluster = %hc.name_any(), error = %error, "hosted cluster reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn now_time() -> Time {
    Time(Timestamp::now())
}

fn owner(hc: &HostedCluster) -> OwnerReference {
    OwnerReference {
        api_version: HostedCluster::api_version(&()).into_owned(),
        kind: HostedCluster::kind(&()).into_owned(),
        name: hc.name_any(),
        uid: hc.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub(crate) fn secret_data(secret: Option<Secret>) -> BTreeMap<String, Vec<u8>> {
    secret.and_then(|s| s.data).unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
}

/// Writes a Secret owned by the cluster (server-side apply).
pub(crate) async fn write_secret(
    client: &Client,
    hc: &HostedCluster,
    name: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<(), Error> {
    let namespace = hc.namespace().unwrap_or_default();
    let mut secret = Secret {
        data: Some(data.iter().map(|(k, v)| (k.clone(), ByteString(v.clone()))).collect()),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    secret.metadata.name = Some(name.to_string());
    secret.metadata.namespace = Some(namespace.clone());
    secret.metadata.owner_references = Some(vec![owner(hc)]);
    secret.metadata.labels = Some(BTreeMap::from([(
        plan::OWNER_LABEL.to_string(),
        plan::owner_label_value(&namespace, &hc.name_any()),
    )]));
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret))
        .await?;
    Ok(())
}

/// What one reconcile learned, for the status.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) conditions: Vec<Condition>,
    placement: Placement,
    seen: Vec<plan::ComponentObservation>,
    pki: BTreeMap<String, Vec<u8>>,
    issued: bool,
    handled_rotation: Option<String>,
    addons: Vec<AddonStatus>,
    ready_nodes: Option<i32>,
    upgrade: Option<upgrade::UpgradePlan>,
}

async fn reconcile(hc: Arc<HostedCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let client = &ctx.client;
    if hc.metadata.deletion_timestamp.is_some() {
        return cleanup(client, &hc, &ctx.config).await;
    }
    if !hc.finalizers().iter().any(|f| f == plan::FINALIZER) {
        let mut finalizers = hc.finalizers().to_vec();
        finalizers.push(plan::FINALIZER.to_string());
        Api::<HostedCluster>::namespaced(client.clone(), &namespace)
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
            )
            .await?;
    }
    let now = now_time();
    let generation = hc.metadata.generation;
    let previous = hc.status.clone().unwrap_or_default();
    let mut out = Outcome::default();

    // Validate what the spec asks for before acting on any of it.
    let invalid = validate(&hc, &ctx.config.plan);
    out.conditions.push(plan::condition(
        &previous.conditions,
        conditions::VALID,
        invalid.is_none(),
        if invalid.is_none() { "Valid" } else { "Invalid" },
        invalid.clone().unwrap_or_else(|| "the spec can be acted on".into()),
        generation,
        &now,
    ));
    if let Some(message) = invalid {
        tracing::warn!(cluster = %name, %message, "hosted cluster spec is invalid");
        write_status(client, &hc, &ctx.config, out, &now).await?;
        return Ok(Action::await_change());
    }
    if hc.spec.control_plane.runtime == Runtime::Kubernetes {
        return reconcile_kubernetes_runtime(client, &hc, &ctx.config, out, &now).await;
    }

    // etcd first: nothing can start without it.
    let Some((etcd_name, _)) = hc.spec.etcd.resolve() else {
        return Ok(Action::await_change());
    };
    let Some(etcd) = etcd_ready(client, &hc, etcd_name, &mut out, &previous, &now).await? else {
        write_status(client, &hc, &ctx.config, out, &now).await?;
        return Ok(Action::requeue(ctx.config.settle));
    };

    let placing = ctx.placing.lock().await;
    let machines = Api::<Machine>::all(client.clone()).list(&ListParams::default()).await?.items;
    let placement = plan::place(&hc, &machines, &ctx.config.plan, time::OffsetDateTime::now_utc())
        .map_err(|e| Error::Other(e.to_string()))?;
    if placement.instances.is_empty() {
        out.conditions.push(plan::condition(
            &previous.conditions,
            conditions::KUBE_APISERVER_READY,
            false,
            "NoMachine",
            "no usable Machine for the control plane: start a node agent (`flotilla node-agent`), accept its \
             Machine, or relax spec.controlPlane.machineSelector"
                .into(),
            generation,
            &now,
        ));
        out.placement = placement;
        write_status(client, &hc, &ctx.config, out, &now).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }

    // Certificates and kubeconfigs.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let inputs = plan::pki_inputs(&hc, &placement).ok_or_else(|| Error::Other("no endpoint".into()))?;
    let existing = secret_data(secrets.get_opt(&plan::pki_secret_name(&name)).await?);
    let (rotation, rotation_value) = plan::requested_rotation(&hc);
    let update = plan::pki_data(
        &name,
        &existing,
        &etcd.ca,
        &inputs,
        rotation,
        time::OffsetDateTime::now_utc(),
        ctx.config.plan.renew_before,
    )
    .map_err(|e| Error::Other(e.to_string()))?;
    if !update.issued.is_empty() {
        write_secret(client, &hc, &plan::pki_secret_name(&name), &update.data).await?;
        tracing::info!(cluster = %name, issued = ?update.issued, "hosted cluster certificates written");
        out.issued = true;
    }
    let admin = plan::admin_kubeconfig(&update.data).unwrap_or_default();
    let admin_data = BTreeMap::from([("kubeconfig".to_string(), admin.clone())]);
    if secret_data(secrets.get_opt(&plan::admin_secret_name(&name)).await?) != admin_data {
        write_secret(client, &hc, &plan::admin_secret_name(&name), &admin_data).await?;
    }
    out.handled_rotation = rotation_value.or(previous.handled_rotation.clone());
    let ca_pem =
        String::from_utf8_lossy(update.data.get(keys::CA_CRT).map(Vec::as_slice).unwrap_or_default())
            .into_owned();
    let token = ensure_bootstrap(client, &hc, &placement, &ca_pem).await?;
    out.pki = update.data;

    // Which version each instance runs (upgrades move one at a time).
    let seen_before = plan::observe(&machines, &namespace, &name);
    // While a step runs, only a process started since the step began
    // counts: the one before it ran the old configuration.
    let step_started = previous
        .upgrade
        .as_ref()
        .filter(|_| upgrade::is_upgrading(previous.upgrade.as_ref()))
        .and_then(|u| u.step_started_at.clone());
    let known_version = previous.version.as_deref();
    let upgrade_plan = upgrade::plan(&upgrade::UpgradeInput {
        desired: &hc.spec.version,
        desired_known: ctx.config.plan.versions.contains_key(&hc.spec.version),
        status: hc.status.as_ref(),
        generation,
        replicas: hc.spec.control_plane.replicas.max(1),
        observed: &seen_before
            .iter()
            .filter(|o| o.part != Part::Kubelet)
            .map(|o| upgrade::InstanceObservation {
                component: o.part.upstream().to_string(),
                index: o.index,
                version: o.version.clone(),
                healthy: plan::counts_as_healthy(o, step_started.as_ref(), known_version),
            })
            .collect::<Vec<_>>(),
        now: now.clone(),
        step_deadline: ctx.config.upgrade_step_deadline,
    });
    let versions: BTreeMap<(Part, i32), String> = upgrade_plan
        .versions
        .iter()
        .filter_map(|((component, index), v)| Some(((Part::from_upstream(component)?, *index), v.clone())))
        .collect();
    let node_version = upgrade_plan.version.clone().unwrap_or_else(|| hc.spec.version.clone());

    // The processes, through the Machines.
    let rendered = plan::machine_components(&plan::RenderInputs {
        hc: &hc,
        placement: &placement,
        etcd_servers: &etcd.client_urls,
        versions: &versions,
        node_version: &node_version,
        config: &ctx.config.plan,
    });
    apply_components(client, &hc, &machines, rendered).await?;
    drop(placing);
    out.seen = seen_before;
    out.placement = placement;
    out.upgrade = Some(upgrade_plan);

    // Inside the cluster: add-ons and nodes, once its API answers.
    let api_up = out.seen.iter().any(|o| o.part == Part::Apiserver && o.healthy);
    if api_up {
        match business_client(&admin).await {
            Ok(member) => {
                inside_cluster(&member, &hc, &token, &previous, &mut out, &now).await;
            }
            Err(e) => out.conditions.push(plan::condition(
                &previous.conditions,
                conditions::ADDONS_APPLIED,
                false,
                "NoClient",
                format!("cannot use the admin kubeconfig: {e}"),
                generation,
                &now,
            )),
        }
    }
    let ready = write_status(client, &hc, &ctx.config, out, &now).await?;
    if ready {
        register_in_fleet(client, &hc).await?;
        Ok(Action::requeue(ctx.config.resync))
    } else {
        Ok(Action::requeue(ctx.config.settle))
    }
}

/// Why the spec cannot be acted on, if it cannot.
fn validate(hc: &HostedCluster, config: &HostedOperatorConfig) -> Option<String> {
    if hc.spec.etcd.resolve().is_none() {
        return Some("spec.etcd must set exactly one of clusterRef and shared".into());
    }
    if let Err(e) = addons::validate(hc) {
        return Some(format!("spec.addons: {e}"));
    }
    if let Err(e) = flotilla_kok_core::pki::first_service_ip(&hc.spec.network.service_cidr) {
        return Some(format!("spec.network.serviceCIDR: {e}"));
    }
    // A running cluster with an unknown target version is an upgrade
    // refusal (reported on Upgraded), not an invalid cluster.
    // The Kubernetes runtime runs images (`<registry>/kube-apiserver:v<version>`),
    // not binaries on Machines, so the binary registry does not apply.
    let fresh = hc.status.as_ref().and_then(|s| s.version.as_ref()).is_none();
    let runs_binaries = hc.spec.control_plane.runtime == Runtime::Process;
    if fresh && runs_binaries && !config.versions.contains_key(&hc.spec.version) {
        let known: Vec<&str> = config.versions.keys().map(String::as_str).collect();
        return Some(format!(
            "version {} is not available to this operator (it runs: {}); set spec.version to one of them",
            hc.spec.version,
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ));
    }
    None
}

/// The EtcdCluster's client URLs and CA.
pub(crate) struct ReadyEtcd {
    pub(crate) client_urls: Vec<String>,
    pub(crate) ca: EtcdCa,
}

pub(crate) async fn etcd_ready(
    client: &Client,
    hc: &HostedCluster,
    etcd_name: &str,
    out: &mut Outcome,
    previous: &HostedClusterStatus,
    now: &Time,
) -> Result<Option<ReadyEtcd>, Error> {
    let namespace = hc.namespace().unwrap_or_default();
    let generation = hc.metadata.generation;
    let mut say = |ok: bool, reason: &str, message: String| {
        out.conditions.push(plan::condition(
            &previous.conditions,
            conditions::ETCD_READY,
            ok,
            reason,
            message,
            generation,
            now,
        ))
    };
    let Some(etcd) = Api::<EtcdCluster>::namespaced(client.clone(), &namespace).get_opt(etcd_name).await?
    else {
        say(false, "NotFound", format!("EtcdCluster {etcd_name} does not exist in namespace {namespace}"));
        return Ok(None);
    };
    let status = etcd.status.clone().unwrap_or_default();
    let available = etcd.condition(conditions::ETCD_AVAILABLE);
    if available.map(|c| c.status.as_str()) != Some("True") || status.client_urls.is_empty() {
        let why = available.map(|c| c.message.clone()).unwrap_or_else(|| "no status yet".into());
        say(false, "NotAvailable", format!("EtcdCluster {etcd_name} is not available: {why}"));
        return Ok(None);
    }
    let secret_name =
        status.client_secret.clone().unwrap_or_else(|| flotilla_kok_core::etcd::secret_name(etcd_name));
    let data =
        secret_data(Api::<Secret>::namespaced(client.clone(), &namespace).get_opt(&secret_name).await?);
    let text = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
    let (Some(cert_pem), Some(key_pem)) = (text(keys::ETCD_CA_CRT), text(keys::ETCD_CA_KEY)) else {
        say(false, "NoCertificates", format!("Secret {secret_name} has no etcd CA yet"));
        return Ok(None);
    };
    say(true, "Available", format!("EtcdCluster {etcd_name}: {} members", status.client_urls.len()));
    Ok(Some(ReadyEtcd { client_urls: status.client_urls, ca: EtcdCa { cert_pem, key_pem } }))
}

/// The node bootstrap token (made once) and the kubelets' bootstrap
/// kubeconfig (rewritten when the CA or the endpoint changes).
async fn ensure_bootstrap(
    client: &Client,
    hc: &HostedCluster,
    placement: &Placement,
    ca_pem: &str,
) -> Result<String, Error> {
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let secret = plan::bootstrap_secret_name(&name);
    let existing = secret_data(Api::<Secret>::namespaced(client.clone(), &namespace).get_opt(&secret).await?);
    let token = match existing.get("token").map(|t| String::from_utf8_lossy(t).into_owned()) {
        Some(t) if t.contains('.') => t,
        _ => {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).map_err(|e| Error::Other(format!("no randomness: {e}")))?;
            plan::bootstrap_token(&hex::encode(bytes)).ok_or_else(|| Error::Other("token".into()))?
        }
    };
    let server = placement.endpoint().unwrap_or_default();
    let kubeconfig = plan::bootstrap_kubeconfig(&name, &server, ca_pem, &token);
    let data = BTreeMap::from([
        ("token".to_string(), token.clone().into_bytes()),
        ("kubeconfig".to_string(), kubeconfig.into_bytes()),
    ]);
    if data != existing {
        write_secret(client, hc, &secret, &data).await?;
    }
    Ok(token)
}

/// Server-side applies each machine's share of the cluster's components
/// (an empty list where it has none any more); machines already holding
/// exactly that are not written.
async fn apply_components(
    client: &Client,
    hc: &HostedCluster,
    machines: &[Machine],
    mut rendered: BTreeMap<String, Vec<ComponentSpec>>,
) -> Result<(), Error> {
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let tag = format!("{namespace}/{name}");
    for components in rendered.values_mut() {
        for c in components.iter_mut() {
            c.env.insert(CLUSTER_ENV.to_string(), tag.clone());
        }
        components.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let manager = plan::field_manager(&namespace, &name);
    let api: Api<Machine> = Api::all(client.clone());
    for m in machines {
        let machine = m.name_any();
        let mut current: Vec<ComponentSpec> = m
            .spec
            .components
            .iter()
            .filter(|c| plan::parse_component_name(&c.name, &namespace, &name).is_some())
            .cloned()
            .collect();
        current.sort_by(|a, b| a.name.cmp(&b.name));
        let want = rendered.remove(&machine).unwrap_or_default();
        if current == want {
            continue;
        }
        if want.is_empty() && current.len() == m.spec.components.len() {
            // Kubernetes 1.20's server-side apply turns a map-list whose
            // last items an apply drops into `null`, which the schema
            // rejects: empty it with a merge patch on the version just read,
            // so a component someone adds meanwhile is never erased.
            let body = json!({
                "metadata": {"resourceVersion": m.resource_version()},
                "spec": {"components": []},
            });
            api.patch(&machine, &PatchParams::default(), &Patch::Merge(&body)).await?;
            tracing::info!(cluster = %name, machine = %machine, "machine components removed");
            continue;
        }
        let body = json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": machine},
            "spec": {"components": want},
        });
        api.patch(&machine, &PatchParams::apply(&manager).force(), &Patch::Apply(&body)).await?;
        tracing::info!(cluster = %name, machine = %machine, components = want.len(), "machine components applied");
    }
    Ok(())
}

/// A client for the hosted cluster from its admin kubeconfig.
pub async fn business_client(kubeconfig: &[u8]) -> Result<Client, Error> {
    let text = String::from_utf8_lossy(kubeconfig);
    let parsed = kube::config::Kubeconfig::from_yaml(&text).map_err(|e| Error::Other(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .map_err(|e| Error::Other(e.to_string()))?;
    config.connect_timeout = Some(Duration::from_secs(3));
    config.read_timeout = Some(Duration::from_secs(10));
    Ok(Client::try_from(config)?)
}

/// Applies add-ons whose manifests changed since they were last applied,
/// and counts Ready nodes.
async fn inside_cluster(
    member: &Client,
    hc: &HostedCluster,
    token: &str,
    previous: &HostedClusterStatus,
    out: &mut Outcome,
    now: &Time,
) {
    let generation = hc.metadata.generation;
    let mut applied = Vec::new();
    let mut failure: Option<String> = None;
    for addon in addons::wanted(hc) {
        let manifests = match addons::manifests(&addon, hc, token) {
            Ok(m) => m,
            Err(e) => {
                failure = Some(e.to_string());
                continue;
            }
        };
        let hash = addons::hash(&manifests);
        let last = previous.addons.iter().find(|a| a.name == addon.name);
        if last.is_some_and(|a| a.hash == hash) {
            applied.push(last.cloned().unwrap_or_default());
            continue;
        }
        match apply_manifests(member, &manifests).await {
            Ok(()) => {
                tracing::info!(cluster = %hc.name_any(), addon = %addon.name, "add-on applied");
                applied.push(AddonStatus { name: addon.name.clone(), hash, applied_at: Some(now.clone()) });
            }
            Err(e) => {
                failure = Some(format!("add-on {}: {e}", addon.name));
                if let Some(last) = last {
                    applied.push(last.clone());
                }
            }
        }
    }
    out.addons = applied;
    out.conditions.push(plan::condition(
        &previous.conditions,
        conditions::ADDONS_APPLIED,
        failure.is_none(),
        if failure.is_none() { "Applied" } else { "ApplyFailed" },
        failure.unwrap_or_else(|| "every add-on is applied".into()),
        generation,
        now,
    ));
    let wanted = hc.spec.nodes.as_ref().map_or(0, |n| n.count.max(0));
    if wanted > 0 {
        match Api::<Node>::all(member.clone()).list(&ListParams::default()).await {
            Ok(nodes) => {
                let ready = nodes.items.iter().filter(|n| node_ready(n)).count();
                out.ready_nodes = Some(i32::try_from(ready).unwrap_or(i32::MAX));
            }
            Err(e) => tracing::debug!(cluster = %hc.name_any(), error = %e, "listing nodes failed"),
        }
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Server-side applies plain manifests (core and a few well-known groups).
pub async fn apply_manifests(client: &Client, manifests: &[serde_json::Value]) -> Result<(), Error> {
    for m in manifests {
        let api_version = m["apiVersion"].as_str().unwrap_or_default();
        let kind = m["kind"].as_str().unwrap_or_default();
        let name = m["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = m["metadata"]["namespace"].as_str();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let plural = format!("{}s", kind.to_lowercase());
        let resource = ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            plural,
        };
        let caps = ApiCapabilities {
            scope: if namespace.is_some() { Scope::Namespaced } else { Scope::Cluster },
            subresources: vec![],
            operations: vec![],
        };
        let api: Api<DynamicObject> = match (namespace, caps.scope) {
            (Some(ns), Scope::Namespaced) => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        };
        api.patch(name, &PatchParams::apply(ADDON_MANAGER).force(), &Patch::Apply(m)).await?;
    }
    Ok(())
}

/// CertificatesReady from the PKI Secret's data, when this reconcile read it.
pub(crate) fn certificates_condition(
    name: &str,
    pki: &BTreeMap<String, Vec<u8>>,
    previous: &[Condition],
    config: &HostedOperatorConfig,
    generation: Option<i64>,
    now: &Time,
) -> Option<Condition> {
    if pki.is_empty() {
        return None;
    }
    let (ok, reason, message) =
        plan::certificates_verdict(name, pki, time::OffsetDateTime::now_utc(), config.renew_before);
    Some(plan::condition(previous, conditions::CERTIFICATES_READY, ok, reason, message, generation, now))
}

/// Builds and writes the status; returns whether the cluster is Ready.
async fn write_status(
    client: &Client,
    hc: &HostedCluster,
    config: &HostedOperator,
    mut out: Outcome,
    now: &Time,
) -> Result<bool, Error> {
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let previous = hc.status.clone().unwrap_or_default();
    let generation = hc.metadata.generation;
    let valid =
        out.conditions.iter().find(|c| c.type_ == conditions::VALID).is_some_and(|c| c.status == "True");
    if valid && !out.seen.is_empty() {
        out.conditions.extend(plan::component_conditions(
            hc,
            &out.placement,
            &out.seen,
            out.ready_nodes.unwrap_or(0),
            now,
        ));
    }
    let upgrade = out.upgrade.take();
    if let Some(c) = upgrade.as_ref().and_then(|u| u.condition.clone()) {
        out.conditions.push(c);
    }
    if let Some(c) =
        certificates_condition(&name, &out.pki, &previous.conditions, &config.plan, generation, now)
    {
        out.conditions.push(c);
    }
    let ok = |t: &str| out.conditions.iter().any(|c| c.type_ == t && c.status == "True");
    let control_plane_ok = Part::CONTROL_PLANE.iter().all(|p| ok(p.condition_type()));
    let wants_nodes = hc.spec.nodes.as_ref().is_some_and(|n| n.count > 0);
    let all_ok = valid
        && ok(conditions::ETCD_READY)
        && control_plane_ok
        && ok(conditions::ADDONS_APPLIED)
        && (!wants_nodes || ok(conditions::NODES_READY));
    let ready_message = if all_ok {
        "the control plane, its add-ons and nodes are healthy".to_string()
    } else {
        out.conditions
            .iter()
            .filter(|c| c.status != "True" && c.type_ != conditions::UPGRADED)
            .map(|c| format!("{}: {}", c.type_, c.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    out.conditions.push(plan::condition(
        &previous.conditions,
        conditions::READY,
        all_ok,
        if all_ok { "Ready" } else { "NotReady" },
        if ready_message.is_empty() { "waiting for the first observation".into() } else { ready_message },
        generation,
        now,
    ));
    // Keep conditions this reconcile did not speak about (Upgraded from an
    // earlier step, CertificatesReady while etcd is away) only when nothing
    // replaced them.
    for c in &previous.conditions {
        let kept = c.type_ == conditions::UPGRADED || c.type_ == conditions::CERTIFICATES_READY;
        if kept && !out.conditions.iter().any(|n| n.type_ == c.type_) {
            out.conditions.push(c.clone());
        }
    }
    out.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    let upgrading = upgrade.as_ref().is_some_and(|u| u.upgrading);
    let was_ready = matches!(
        previous.phase,
        Some(HostedClusterPhase::Ready | HostedClusterPhase::Degraded | HostedClusterPhase::Upgrading)
    );
    let phase = plan::phase(false, upgrading, all_ok, was_ready);
    let certificates = if out.pki.is_empty() {
        previous.certificates.clone()
    } else {
        crate::hosted_kube::certificate_statuses(&name, &out.pki)
    };
    let status = HostedClusterStatus {
        phase: Some(phase),
        endpoint: out.placement.endpoint().or(previous.endpoint.clone()),
        admin_kubeconfig_secret: Some(plan::admin_secret_name(&name)),
        version: upgrade
            .as_ref()
            .and_then(|u| u.version.clone())
            .or(previous.version.clone())
            .or_else(|| all_ok.then(|| hc.spec.version.clone())),
        previous_version: upgrade
            .as_ref()
            .and_then(|u| u.previous_version.clone())
            .or(previous.previous_version.clone()),
        certificates,
        observed_generation: generation,
        upgrade: upgrade.as_ref().map_or(previous.upgrade.clone(), |u| u.upgrade.clone()),
        addons: if out.addons.is_empty() { previous.addons.clone() } else { out.addons },
        instances: if out.seen.is_empty() {
            previous.instances.clone()
        } else {
            plan::instance_statuses(&out.seen)
        },
        ready_nodes: out.ready_nodes.or(previous.ready_nodes),
        certificates_issued_at: if out.issued {
            Some(now.clone())
        } else {
            previous.certificates_issued_at.clone()
        },
        handled_rotation: out.handled_rotation.or(previous.handled_rotation.clone()),
        conditions: out.conditions,
    };
    if hc.status.as_ref() != Some(&status) {
        let body = json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster",
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        });
        Api::<HostedCluster>::namespaced(client.clone(), &namespace)
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await?;
        if hc.status.as_ref().and_then(|s| s.phase) != Some(phase) {
            tracing::info!(cluster = %name, phase = ?phase, "hosted cluster phase");
        }
    }
    Ok(all_ok)
}

/// The cluster joins the fleet as a push-mode member (the hub reaches it
/// with its admin kubeconfig Secret).
async fn register_in_fleet(client: &Client, hc: &HostedCluster) -> Result<(), Error> {
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let api: Api<ManagedCluster> = Api::all(client.clone());
    let label = plan::owner_label_value(&namespace, &name);
    // Members sharing an etcd or a machine pool fail together: the hub's
    // mass-disruption guard reads these labels.
    let mut labels = flotilla_apps_core::failover::hosted_domain_labels(
        &namespace,
        hc.spec.etcd.resolve().map_or("", |(etcd, _)| etcd),
        hc.spec.control_plane.machine_pool.as_deref(),
    );
    labels.insert(plan::OWNER_LABEL.to_string(), label.clone());
    if let Some(existing) = api.get_opt(&name).await? {
        let ours = existing.labels().get(plan::OWNER_LABEL) == Some(&label);
        if !ours {
            tracing::warn!(cluster = %name, "a ManagedCluster of this name exists and is not this hosted cluster's; not registering");
            return Ok(());
        }
        let labelled = labels.iter().all(|(k, v)| existing.labels().get(k) == Some(v));
        if labelled && existing.spec.api_endpoint == hc.status.as_ref().and_then(|s| s.endpoint.clone()) {
            return Ok(());
        }
    }
    let body = json!({
        "apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "syncMode": "Push",
            "hubAcceptsClient": true,
            "apiEndpoint": hc.status.as_ref().and_then(|s| s.endpoint.clone()),
            "secretRef": {"namespace": namespace, "name": plan::admin_secret_name(&name)},
        },
    });
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    tracing::info!(cluster = %name, "hosted cluster registered in the fleet");
    Ok(())
}

async fn reconcile_kubernetes_runtime(
    client: &Client,
    hc: &HostedCluster,
    config: &HostedOperator,
    out: Outcome,
    now: &Time,
) -> Result<Action, Error> {
    crate::hosted_kube::reconcile(client, hc, config, out, now).await
}

/// Deletion: the processes first (so nothing writes to etcd any more),
/// then the fleet membership, the data and the Secrets; the finalizer
/// goes last.
async fn cleanup(client: &Client, hc: &HostedCluster, config: &HostedOperator) -> Result<Action, Error> {
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    if !hc.finalizers().iter().any(|f| f == plan::FINALIZER) {
        return Ok(Action::await_change());
    }
    // The kubernetes runtime's control plane goes first (its namespace),
    // so nothing writes to etcd any more.
    if hc.spec.control_plane.runtime == Runtime::Kubernetes && !crate::hosted_kube::delete(client, hc).await?
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let machines = Api::<Machine>::all(client.clone()).list(&ListParams::default()).await?.items;
    apply_components(client, hc, &machines, BTreeMap::new()).await?;
    // Wait for the node agents to stop them (a lost machine runs nothing
    // we could wait for).
    let now = time::OffsetDateTime::now_utc();
    let still_running: Vec<String> = machines
        .iter()
        .filter(|m| plan::machine_usable(m, now, config.plan.machine_lost_after))
        .flat_map(|m| {
            m.status
                .iter()
                .flat_map(|s| s.components.iter())
                .filter(|c| plan::parse_component_name(&c.name, &namespace, &name).is_some())
                .map(move |c| format!("{}/{}", m.name_any(), c.name))
        })
        .collect();
    if !still_running.is_empty() {
        tracing::info!(cluster = %name, waiting_for = ?still_running, "waiting for components to stop");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let label = plan::owner_label_value(&namespace, &name);
    let fleet: Api<ManagedCluster> = Api::all(client.clone());
    if let Some(mc) = fleet.get_opt(&name).await? {
        if mc.labels().get(plan::OWNER_LABEL) == Some(&label) {
            fleet.delete(&name, &DeleteParams::default()).await?;
        }
    }
    delete_data(client, hc).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    for secret in
        [plan::pki_secret_name(&name), plan::admin_secret_name(&name), plan::bootstrap_secret_name(&name)]
    {
        match secrets.delete(&secret, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let finalizers: Vec<String> = hc.finalizers().iter().filter(|f| *f != plan::FINALIZER).cloned().collect();
    Api::<HostedCluster>::namespaced(client.clone(), &namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})))
        .await?;
    tracing::info!(cluster = %name, "hosted cluster deleted");
    Ok(Action::await_change())
}

/// A dedicated EtcdCluster made for this cluster (labelled as its own) is
/// deleted with it; a shared one loses only this cluster's key prefix.
async fn delete_data(client: &Client, hc: &HostedCluster) -> Result<(), Error> {
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let Some((etcd_name, prefix)) = hc.spec.etcd.resolve() else { return Ok(()) };
    let etcds: Api<EtcdCluster> = Api::namespaced(client.clone(), &namespace);
    let Some(etcd) = etcds.get_opt(etcd_name).await? else { return Ok(()) };
    let label = plan::owner_label_value(&namespace, &name);
    if hc.spec.etcd.cluster_ref.is_some() && etcd.labels().get(plan::OWNER_LABEL) == Some(&label) {
        etcds.delete(etcd_name, &DeleteParams::default()).await?;
        tracing::info!(cluster = %name, etcd = %etcd_name, "dedicated etcd cluster deleted");
        return Ok(());
    }
    if hc.spec.etcd.shared.is_none() {
        // A dedicated etcd the user made: theirs to delete.
        return Ok(());
    }
    let status = etcd.status.unwrap_or_default();
    let secret = status.client_secret.unwrap_or_else(|| flotilla_kok_core::etcd::secret_name(etcd_name));
    let data = secret_data(Api::<Secret>::namespaced(client.clone(), &namespace).get_opt(&secret).await?);
    let tls = crate::etcd::client_tls(&data)?;
    let start = format!("{}/", prefix.trim_end_matches('/'));
    let mut end = start.clone().into_bytes();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let body = json!({"key": b64(start.as_bytes()), "range_end": b64(&end)}).to_string();
    let mut last_error = None;
    for url in &status.client_urls {
        match crate::etcd::call(&tls, url, "/v3/kv/deleterange", &body, Duration::from_secs(10)).await {
            Ok(_) => {
                tracing::info!(cluster = %name, prefix = %start, "hosted cluster's etcd keys deleted");
                return Ok(());
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(Error::Other(format!(
        "cannot delete keys under {start} in EtcdCluster {etcd_name}: {}",
        last_error.unwrap_or_else(|| "it has no client URLs".into())
    )))
}
