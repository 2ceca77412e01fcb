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
use flotilla_api::kok::{conditions, EtcdCluster, HostedCluster, Runtime};
use flotilla_api::machine::{ComponentSpec, Machine};
use flotilla_core::conditions::{condition, Wanted};
use flotilla_kok_core::hosted::{self as plan, HostedOperatorConfig, Part, Placement};
use flotilla_kok_core::hosted_pki;
use flotilla_kok_core::hosted_status::{Observed, Served};
use flotilla_kok_core::pki::keys;
use flotilla_kok_core::{addons, upgrade, upgrade_observe};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::finalizing::{finalizer_error, pending};
use crate::hosted_addons::{business_client, inside_cluster};
use crate::hosted_operator::{
    ensure_bootstrap, ensure_certificates, etcd_ready, finish, register_in_fleet, secret_data,
};
pub use crate::hosted_operator::{HostedOperator, FIELD_MANAGER};
use crate::Error;

/// Env var on every component naming its cluster (`<namespace>/<name>`),
/// so a Machine event wakes the right HostedCluster.
pub const CLUSTER_ENV: &str = "KOK_HOSTED_CLUSTER";

struct Ctx {
    client: Client,
    config: HostedOperator,
    catalog: crate::catalog::VersionCatalog,
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
    let catalog =
        crate::catalog::VersionCatalog::new(config.plan.versions.clone(), config.version_cache.clone());
    let ctx = Arc::new(Ctx { client, config, catalog, placing: tokio::sync::Mutex::new(()) });
    let controller = Controller::new(clusters, watcher::Config::default());
    let store = controller.store();
    // Scraped while the controller runs.
    let _gauges = crate::metrics::register(crate::metrics::HostedGauges { clusters: store.clone() });
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
        .run(|o, c| flotilla_metrics::reconcile("hosted-cluster", o, c, reconcile), error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "hosted cluster reconcile failed");
            }
        })
        .await;
    Ok(())
}

impl Ctx {
    /// The operator's configuration with the catalog's versions for a
    /// cluster wanting `version`.
    fn config_for(&self, version: &str) -> HostedOperator {
        let mut config = self.config.clone();
        config.plan.versions = self.catalog.versions_for(version);
        config
    }
}

fn error_policy(hc: Arc<HostedCluster>, error: &Error, _: Arc<Ctx>) -> Action {
    if let Some(action) = pending(error) {
        return action;
    }
    tracing::warn!(cluster = %hc.name_any(), error = %error, "hosted cluster reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn now_time() -> Time {
    Time(Timestamp::now())
}

/// Both runtimes behind the finalizer [`plan::FINALIZER`]: deleting stops
/// the control plane and removes the cluster's data before the object goes.
async fn reconcile(hc: Arc<HostedCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let api: Api<HostedCluster> = Api::namespaced(ctx.client.clone(), &hc.namespace().unwrap_or_default());
    finalizer(&api, plan::FINALIZER, hc, |event| async {
        match event {
            Event::Apply(hc) => apply(&hc, &ctx).await,
            Event::Cleanup(hc) => cleanup(&ctx.client, &hc, &ctx.config).await,
        }
    })
    .await
    .map_err(finalizer_error)
}

/// One reconcile: validate, then the `Kubernetes` runtime
/// (`crate::hosted_kube`) or the processes on Machines.
async fn apply(hc: &HostedCluster, ctx: &Ctx) -> Result<Action, Error> {
    // The catalog as of now: a version built into the cache since the
    // last look is picked up here.
    let config = ctx.config_for(&hc.spec.version);
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let client = &ctx.client;
    let now = now_time();
    let generation = hc.metadata.generation;
    let previous = hc.status.clone().unwrap_or_default();
    let mut decided: Vec<Condition> = Vec::new();

    // Validate what the spec asks for before acting on any of it.
    let invalid = validate(hc, &config.plan);
    let (reason, message) = match &invalid {
        None => ("Valid", "the spec can be acted on".to_string()),
        Some(why) => ("Invalid", why.clone()),
    };
    let valid = Wanted::new(conditions::VALID, invalid.is_none(), reason, message).generation(generation);
    decided.push(condition(&previous.conditions, valid, &now));
    let unplaced = Placement::default();
    let unread = BTreeMap::new();
    let mut observed = Observed {
        conditions: decided,
        served: Served::Machines { placement: &unplaced, seen: &[], addons: Vec::new(), ready_nodes: None },
        upgrade: None,
        pki: &unread,
        issued: false,
        handled_rotation: None,
    };
    if let Some(message) = invalid {
        tracing::warn!(cluster = %name, %message, "hosted cluster spec is invalid");
        finish(client, hc, &config, observed, &now).await?;
        // A version missing from the catalog may be built into the cache
        // any time: look again later rather than wait for an edit.
        if !knows_version(hc, &config.plan) {
            return Ok(Action::requeue(UNKNOWN_VERSION_RECHECK));
        }
        return Ok(Action::await_change());
    }
    if hc.spec.control_plane.runtime == Runtime::Kubernetes {
        return crate::hosted_kube::reconcile(client, hc, &config, observed.conditions, &now).await;
    }

    // etcd first: nothing can start without it.
    let Some((etcd_name, _)) = hc.spec.etcd.resolve() else {
        return Ok(Action::await_change());
    };
    let Some(etcd) = etcd_ready(client, hc, etcd_name, &mut observed.conditions, &now).await? else {
        finish(client, hc, &config, observed, &now).await?;
        return Ok(Action::requeue(config.settle));
    };

    let placing = ctx.placing.lock().await;
    let machines = Api::<Machine>::all(client.clone()).list(&ListParams::default()).await?.items;
    let placement = plan::place(hc, &machines, &config.plan, time::OffsetDateTime::now_utc())
        .map_err(|e| Error::Other(e.to_string()))?;
    if placement.instances.is_empty() {
        let wanted = Wanted::new(
            conditions::KUBE_APISERVER_READY,
            false,
            flotilla_kok_core::hosted_status::NO_MACHINE,
            "no usable Machine for the control plane: start a node agent (`flotilla node-agent`), accept its \
             Machine, or relax spec.controlPlane.machineSelector",
        )
        .generation(generation);
        observed.conditions.push(condition(&previous.conditions, wanted, &now));
        observed.served =
            Served::Machines { placement: &placement, seen: &[], addons: Vec::new(), ready_nodes: None };
        finish(client, hc, &config, observed, &now).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }

    // Certificates and kubeconfigs.
    let inputs = hosted_pki::pki_inputs(hc, &placement).ok_or_else(|| Error::Other("no endpoint".into()))?;
    let certificates = ensure_certificates(client, hc, &etcd, &inputs, &config, None).await?;
    let admin = hosted_pki::admin_kubeconfig(&certificates.data).unwrap_or_default();
    let ca_pem =
        String::from_utf8_lossy(certificates.data.get(keys::CA_CRT).map(Vec::as_slice).unwrap_or_default())
            .into_owned();
    let token = ensure_bootstrap(client, hc, &placement.endpoint().unwrap_or_default(), &ca_pem).await?;
    observed.issued = certificates.issued;
    observed.handled_rotation = certificates.handled_rotation.clone();
    observed.pki = &certificates.data;

    // Which version each instance runs (upgrades move one at a time).
    let seen = plan::observe(&machines, &namespace, &name);
    // While a step runs, only a process started since the step began
    // counts: the one before it ran the old configuration.
    let step_started = previous
        .upgrade
        .as_ref()
        .filter(|_| upgrade::is_upgrading(previous.upgrade.as_ref()))
        .and_then(|u| u.step_started_at.clone());
    let known_version = previous.version.as_deref();
    // The kubelets' health on a version is their Nodes' word, read through
    // the cluster's API once it answers.
    let api_up = seen.iter().any(|o| o.part == Part::Apiserver && o.healthy);
    let member = if api_up { Some(business_client(&admin).await) } else { None };
    let nodes = match &member {
        Some(Ok(member)) if !placement.nodes.is_empty() => list_nodes(member, hc).await,
        _ => None,
    };
    let upgrade_plan = upgrade::plan(&upgrade::UpgradeInput {
        desired: &hc.spec.version,
        desired_known: config.plan.versions.contains_key(&hc.spec.version),
        status: hc.status.as_ref(),
        generation,
        replicas: hc.spec.control_plane.replicas.max(1),
        nodes: i32::try_from(placement.nodes.len()).unwrap_or(i32::MAX),
        observed: &upgrade_observe::upgrade_observations(
            &seen,
            &placement.nodes,
            nodes.as_ref(),
            step_started.as_ref(),
            known_version,
        ),
        now: now.clone(),
        step_deadline: config.upgrade_step_deadline,
    });
    let versions: BTreeMap<(Part, i32), String> = upgrade_plan
        .versions
        .iter()
        .filter_map(|((component, index), v)| Some(((Part::from_upstream(component)?, *index), v.clone())))
        .collect();
    let node_version = upgrade_plan.version.clone().unwrap_or_else(|| hc.spec.version.clone());

    // The processes, through the Machines.
    let rendered = plan::machine_components(&plan::RenderInputs {
        hc,
        placement: &placement,
        etcd_servers: &etcd.client_urls,
        versions: &versions,
        node_version: &node_version,
        config: &config.plan,
    });
    apply_components(client, hc, &machines, rendered).await?;
    drop(placing);
    observed.upgrade = Some(upgrade_plan);

    // Inside the cluster: add-ons and nodes, once its API answers.
    let mut addons = Vec::new();
    let mut ready_nodes = None;
    if let Some(member) = member {
        match member {
            Ok(member) => {
                let inside = inside_cluster(&member, hc, &token, &now).await;
                observed.conditions.push(inside.condition);
                addons = inside.addons;
                ready_nodes = inside.ready_nodes;
            }
            Err(e) => {
                let wanted = Wanted::new(
                    conditions::ADDONS_APPLIED,
                    false,
                    "NoClient",
                    format!("cannot use the admin kubeconfig: {e}"),
                )
                .generation(generation);
                observed.conditions.push(condition(&previous.conditions, wanted, &now));
            }
        }
    }
    observed.served = Served::Machines { placement: &placement, seen: &seen, addons, ready_nodes };
    let ready = finish(client, hc, &config, observed, &now).await?;
    if ready {
        register_in_fleet(client, hc).await?;
        Ok(Action::requeue(config.resync))
    } else {
        Ok(Action::requeue(config.settle))
    }
}

/// The cluster's Nodes as the upgrade plan reads them; None when they
/// cannot be listed (no kubelet counts as healthy then).
async fn list_nodes(
    member: &Client,
    hc: &HostedCluster,
) -> Option<BTreeMap<String, upgrade_observe::NodeReport>> {
    match Api::<Node>::all(member.clone()).list(&ListParams::default()).await {
        Ok(list) => Some(upgrade_observe::node_reports(&list.items)),
        Err(e) => {
            tracing::debug!(cluster = %hc.name_any(), error = %e, "listing nodes failed");
            None
        }
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
    let fresh = hc.status.as_ref().and_then(|s| s.version.as_ref()).is_none();
    if fresh && !knows_version(hc, config) {
        let known = flotilla_kok_core::catalog::listed(&config.versions);
        return Some(format!(
            "version {} is not available to this operator (it runs: {}); set spec.version to one of them, \
             or build it into the hub's binary cache (`flotilla k8s-binaries {}`) and it is picked up",
            hc.spec.version,
            if known.is_empty() { "none".to_string() } else { known.join(", ") },
            hc.spec.version,
        ));
    }
    None
}

/// How often a cluster naming an unknown version looks at the binary
/// cache again.
const UNKNOWN_VERSION_RECHECK: Duration = Duration::from_secs(10);

/// Whether the operator can run the cluster's version. The Kubernetes
/// runtime runs images (`<registry>/kube-apiserver:v<version>`), not
/// binaries on Machines: the catalog does not apply to it.
fn knows_version(hc: &HostedCluster, config: &HostedOperatorConfig) -> bool {
    hc.spec.control_plane.runtime != Runtime::Process || config.versions.contains_key(&hc.spec.version)
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
            // Server-side apply (still on 1.37, see the hub's
            // `cluster_list_maps` test) leaves `spec: null` when an apply
            // drops the last items of the list, which the schema refuses:
            // empty it with a merge patch on the version just read, so a
            // component someone adds meanwhile is never erased.
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

/// Deletion: the processes first (so nothing writes to etcd any more),
/// then the fleet membership, the data and the Secrets; the finalizer
/// goes last (the finalizer helper removes it once this returns `Ok`).
async fn cleanup(client: &Client, hc: &HostedCluster, config: &HostedOperator) -> Result<Action, Error> {
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    // The kubernetes runtime's control plane goes first (its namespace),
    // so nothing writes to etcd any more.
    if hc.spec.control_plane.runtime == Runtime::Kubernetes && !crate::hosted_kube::delete(client, hc).await?
    {
        return Err(Error::CleanupPending {
            after: Duration::from_secs(1),
            waiting_for: format!("namespace {}", HostedCluster::runtime_namespace(&name)),
        });
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
        return Err(Error::CleanupPending {
            after: Duration::from_secs(1),
            waiting_for: format!("components to stop: {}", still_running.join(", ")),
        });
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
    let tls = crate::etcd_client::client_tls(&data)?;
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
        match crate::etcd_client::call(&tls, url, "/v3/kv/deleterange", &body, Duration::from_secs(10)).await
        {
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
