//! The EtcdCluster operator, process runtime (the `Kubernetes` runtime is
//! [`crate::etcd_kube`]): certificates into a Secret,
//! one etcd component per member into its Machine's spec (the node agents
//! run them), membership changes through the members' gRPC gateway (dead
//! members replaced, learners added and promoted), status read from the
//! members themselves over TLS, and a finalizer that removes the members
//! (and their data) from the Machines before the object goes.
//!
//! Each reconcile reads the Machines, the Secret and the members, asks
//! [`flotilla_kok_core::etcd::decide`] for the next step, and does it.
//! With `spec.backup` it also runs the backup schedule
//! ([`crate::etcd_schedule`]) and wakes up again at its next tick.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_api::kok::{EtcdCluster, Runtime};
use flotilla_api::machine::{ComponentSpec, Machine};
use flotilla_kok_core::etcd::{
    self as plan, EtcdOperatorConfig, Facts, MemberPlan, MembershipChange, Observation, Progress,
};
use flotilla_kok_core::pki::keys;
use flotilla_kok_core::ports;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;

/// Field manager of the status and the Secret.
pub const FIELD_MANAGER: &str = "flotilla-etcd";
/// How soon a cluster is looked at again while it is changing.
pub(crate) const STEP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct EtcdOperator {
    pub plan: EtcdOperatorConfig,
    /// How often a cluster's members are probed while nothing changes.
    pub resync: Duration,
    /// How long one request to a member may take.
    pub probe_timeout: Duration,
    /// How the `Kubernetes` runtime builds the members' pods.
    pub kube: flotilla_kok_core::etcd_kube::EtcdKubeConfig,
}

impl Default for EtcdOperator {
    fn default() -> Self {
        Self {
            plan: EtcdOperatorConfig::default(),
            resync: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(3),
            kube: flotilla_kok_core::etcd_kube::EtcdKubeConfig::default(),
        }
    }
}

struct Ctx {
    client: Client,
    config: EtcdOperator,
    /// Per cluster (`namespace/name`): members seen not answering, and
    /// since when. In memory only: a restart starts the clocks over, which
    /// delays a replacement but never hastens one.
    down_since: Mutex<BTreeMap<String, BTreeMap<String, Timestamp>>>,
    /// Held from choosing ports to writing the components that use them, so
    /// two clusters reconciled at once never take the same free port of a
    /// shared address.
    placing: tokio::sync::Mutex<()>,
}

/// Reconciles every EtcdCluster (both runtimes), every EtcdBackup
/// ([`crate::etcd_backup`]) and every EtcdRestore ([`crate::etcd_restore`])
/// until the watches end.
pub async fn run(client: Client, config: EtcdOperator) -> Result<(), Error> {
    let (clusters, backups, restores) = futures::join!(
        run_clusters(client.clone(), config.clone()),
        crate::etcd_backup::run(client.clone(), config.clone()),
        crate::etcd_restore::run(client, config),
    );
    clusters.and(backups).and(restores)
}

async fn run_clusters(client: Client, config: EtcdOperator) -> Result<(), Error> {
    let clusters: Api<EtcdCluster> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        config,
        down_since: Mutex::new(BTreeMap::new()),
        placing: tokio::sync::Mutex::new(()),
    });
    Controller::new(clusters, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "etcd reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(cluster: Arc<EtcdCluster>, error: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), error = %error, "etcd reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(cluster: Arc<EtcdCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if cluster.spec.runtime == Runtime::Kubernetes {
        return crate::etcd_kube::reconcile(&ctx.client, &cluster, &ctx.config).await;
    }
    if cluster.metadata.deletion_timestamp.is_some() {
        return tear_down(&cluster, &ctx).await;
    }
    ensure_finalizer(&ctx.client, &cluster).await?;
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let key = format!("{namespace}/{name}");
    let client = &ctx.client;
    let config = &ctx.config.plan;
    let machine_api: Api<Machine> = Api::all(client.clone());
    let machines = machine_api.list(&ListParams::default()).await?.items;
    let existing = read_pki(client, &cluster).await?;

    let recorded = plan::recorded_members(&cluster, &machines);
    let seen = match client_tls(&existing) {
        Ok(tls) => observe(&recorded, &tls, ctx.config.probe_timeout).await,
        Err(_) => Observation::default(),
    };
    let now = Timestamp::now();
    let down = note_down(&ctx, &key, &recorded, &seen, now);
    let facts = Facts { cluster: &cluster, machines: &machines, seen: &seen, down_since: &down, config, now };
    let mut decision = plan::decide(&facts);
    let mut placing = None;
    let fresh;
    if !decision.write.is_empty() {
        // Ports are chosen now: decide again on a fresh read, with every
        // other placement of this operator held off until ours is written.
        placing = Some(ctx.placing.lock().await);
        fresh = machine_api.list(&ListParams::default()).await?.items;
        decision = plan::decide(&Facts { machines: &fresh, ..facts });
    }
    let data = ensure_pki(client, &cluster, &existing, &decision.members).await?;

    let manager = plan::field_manager(&namespace, &name);
    let component = plan::component_name(&namespace, &name);
    let mut write = true;
    if let Some(change) = decision.change.clone() {
        let outcome = match client_tls(&data) {
            Ok(tls) => {
                change_membership(&change, &decision.members, &seen, &tls, ctx.config.probe_timeout).await
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(cluster = %name, change = ?change, "etcd membership changed");
                if let MembershipChange::Promote { member, .. } = &change {
                    decision.progress = Some(Progress {
                        reason: "PromotingLearner".into(),
                        message: format!("learner {member} promoted to a voting member"),
                    });
                }
            }
            Err(e) => {
                tracing::info!(cluster = %name, change = ?change, error = %e, "etcd membership change not made");
                write = false;
                decision.progress = Some(not_made(&change, &e));
                if let MembershipChange::AddLearner { member, .. } = &change {
                    decision.members.retain(|m| &m.name != member);
                }
            }
        }
    }
    if write {
        for (member, component) in &decision.write {
            write_component(&machine_api, &manager, member, component).await?;
            tracing::info!(cluster = %name, member = %member.name, machine = %member.machine,
                client_url = %member.client_url, peer_url = %member.peer_url, "etcd member placed");
        }
    }
    drop(placing);
    for member in &decision.drop {
        release_machine(&machine_api, &manager, &member.machine, &component).await?;
        tracing::info!(cluster = %name, member = %member.name, machine = %member.machine,
            "etcd member no longer in the membership: its component and data removed from the machine");
    }

    let mut status = plan::status(&cluster, &decision, &seen, Time(Timestamp::now()));
    // Scheduled backups; their condition and fields go into this status.
    let wake = match crate::etcd_schedule::step(client, &cluster, Timestamp::now()).await {
        Ok(Some(schedule)) => {
            schedule.fill(&mut status);
            // A moment past the tick, so the clock has surely reached it.
            schedule.requeue_after(Timestamp::now()).map(|d| d + Duration::from_millis(50))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(cluster = %name, error = %e, "etcd backup schedule not looked at; retrying");
            flotilla_kok_core::etcd_schedule::carry_over(&mut status, cluster.status.as_ref());
            Some(STEP)
        }
    };
    write_status(client, &cluster, &status).await?;
    // Soon again while something moves; at the resync pace while waiting
    // for something only a person (or a new Machine) can change.
    let waiting_on_people = decision.progress.as_ref().is_some_and(|p| {
        matches!(
            p.reason.as_str(),
            "NotEnoughMachines" | "ScaleDownUnsupported" | "MembersLost" | "QuorumAtRisk"
        )
    });
    let busy = decision.change.is_some()
        || !decision.drop.is_empty()
        || !decision.write.is_empty()
        || (decision.progress.is_some() && !waiting_on_people);
    let after = if busy { STEP } else { ctx.config.resync };
    Ok(Action::requeue(wake.map_or(after, |w| w.min(after))))
}

/// The condition text when etcd refused or did not answer a change.
fn not_made(change: &MembershipChange, error: &str) -> Progress {
    let (reason, message) = match change {
        MembershipChange::Promote { member, .. }
            if error.contains("not in sync") || error.contains("not ready") =>
        {
            ("PromotingLearner", format!("learner {member} is still catching up with the leader"))
        }
        MembershipChange::Promote { member, .. } => {
            ("PromotingLearner", format!("promoting learner {member} failed: {error}"))
        }
        MembershipChange::AddLearner { member, .. } => {
            ("AddingMember", format!("adding member {member} failed: {error}"))
        }
        MembershipChange::Remove { member, why, .. } => {
            ("ReplacingMember", format!("removing member {member} ({why}) failed: {error}"))
        }
    };
    Progress { reason: reason.into(), message }
}

/// Records which members did not answer, since when; returns this
/// cluster's record.
fn note_down(
    ctx: &Ctx,
    key: &str,
    recorded: &[MemberPlan],
    seen: &Observation,
    now: Timestamp,
) -> BTreeMap<String, Timestamp> {
    let mut all = ctx.down_since.lock().unwrap_or_else(|p| p.into_inner());
    let mine = all.entry(key.to_string()).or_default();
    mine.retain(|member, _| recorded.iter().any(|m| &m.name == member));
    for m in recorded {
        if seen.states.get(&m.name).is_some_and(|s| s.leader != 0) {
            mine.remove(&m.name);
        } else {
            mine.entry(m.name.clone()).or_insert(now);
        }
    }
    mine.clone()
}

/// Makes `change` through the leader if it answered, else another healthy
/// voter. Only one member is asked: an add that timed out may still have
/// happened, and asking a second would add twice.
async fn change_membership(
    change: &MembershipChange,
    members: &[MemberPlan],
    seen: &Observation,
    tls: &Arc<ClientConfig>,
    timeout: Duration,
) -> Result<(), String> {
    let listed = seen.listed.as_deref().unwrap_or_default();
    let voter = |m: &&MemberPlan| {
        seen.states.get(&m.name).is_some_and(|s| s.leader != 0)
            && listed.iter().any(|l| l.peer_urls.contains(&m.peer_url) && !l.is_learner)
    };
    let leader =
        members.iter().filter(voter).find(|m| seen.states.get(&m.name).is_some_and(|s| s.id == s.leader));
    let Some(via) = leader.or_else(|| members.iter().find(voter)) else {
        return Err("no healthy voting member to ask".into());
    };
    let (path, body) = change.request();
    call(tls, &via.client_url, path, &body, timeout).await.map(|_| ())
}

/// Writes a new member's component into its Machine with the cluster's
/// field manager. Right before, the Machine is read again and the
/// member's ports checked against what its other components use now; the
/// write carries that read's resourceVersion, so a component someone adds
/// in between makes it fail (and the reconcile start over) instead of
/// sharing a port.
async fn write_component(
    machines: &Api<Machine>,
    manager: &str,
    member: &MemberPlan,
    component: &ComponentSpec,
) -> Result<(), Error> {
    let fresh = machines.get(&member.machine).await?;
    let ours = ports::component_ports(component);
    let clash: BTreeSet<u16> =
        ports::used_ports(&fresh, &[component.name.as_str()]).intersection(&ours).copied().collect();
    if !clash.is_empty() {
        return Err(Error::Other(format!(
            "ports {clash:?} chosen for {} were taken on {} meanwhile; choosing again",
            member.name, member.machine
        )));
    }
    let body = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": member.machine, "resourceVersion": fresh.resource_version()},
        "spec": {"components": [component]},
    });
    machines.patch(&member.machine, &PatchParams::apply(manager).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Puts a one-shot component (a backup, a file removal, a key load) on the
/// Machine under its own field manager; applied again, it replaces what
/// that manager had there.
pub(crate) async fn run_one_shot(
    machines: &Api<Machine>,
    manager: &str,
    machine: &str,
    component: &ComponentSpec,
) -> Result<(), Error> {
    let body = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": machine},
        "spec": {"components": [component]},
    });
    machines.patch(machine, &PatchParams::apply(manager).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Gives up everything `manager` owns on the Machine: its component
/// leaves the list (others' components stay: the list is merged by name),
/// and the node agent stops it and deletes its working directory.
pub(crate) async fn release_machine(
    machines: &Api<Machine>,
    manager: &str,
    machine: &str,
    component: &str,
) -> Result<(), Error> {
    let Some(current) = machines.get_opt(machine).await? else { return Ok(()) };
    let names: Vec<&str> = current.spec.components.iter().map(|c| c.name.as_str()).collect();
    if !names.contains(&component) {
        return Ok(());
    }
    if names.iter().all(|n| *n == component) {
        // Kubernetes 1.20's server-side apply turns a map-list whose last
        // item an apply drops into `null`, which the schema rejects: empty
        // it with a merge patch, on the version just read so a component
        // someone adds meanwhile is never erased.
        let body = json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "spec": {"components": []},
        });
        machines.patch(machine, &PatchParams::default(), &Patch::Merge(&body)).await?;
        return Ok(());
    }
    let body = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": machine}, "spec": {},
    });
    machines.patch(machine, &PatchParams::apply(manager).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

pub(crate) async fn write_status(
    client: &Client,
    cluster: &EtcdCluster,
    status: &flotilla_api::kok::EtcdClusterStatus,
) -> Result<(), Error> {
    if cluster.status.as_ref() == Some(status) {
        return Ok(());
    }
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let body = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    });
    Api::<EtcdCluster>::namespaced(client.clone(), &namespace)
        .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    let condition = status.conditions.first();
    tracing::info!(
        cluster = %name, phase = ?status.phase, ready = status.ready_members, leader = ?status.leader,
        reason = ?condition.map(|c| &c.reason), message = ?condition.map(|c| &c.message), "etcd status"
    );
    Ok(())
}

/// Sets the cluster's finalizers to `finalizers`, on the version read (a
/// concurrent change makes the patch fail and the reconcile retry).
pub(crate) async fn set_finalizers(
    client: &Client,
    cluster: &EtcdCluster,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let body = json!({"metadata": {"finalizers": finalizers, "resourceVersion": cluster.resource_version()}});
    Api::<EtcdCluster>::namespaced(client.clone(), &namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

pub(crate) async fn ensure_finalizer(client: &Client, cluster: &EtcdCluster) -> Result<(), Error> {
    if cluster.finalizers().iter().any(|f| f == plan::FINALIZER) {
        return Ok(());
    }
    let mut finalizers = cluster.finalizers().to_vec();
    finalizers.push(plan::FINALIZER.to_string());
    set_finalizers(client, cluster, finalizers).await
}

/// Deleting: remove the members from every Machine, wait until the node
/// agents report them gone (their working directories, with the default
/// data dirs, deleted), then let the object go.
async fn tear_down(cluster: &EtcdCluster, ctx: &Ctx) -> Result<Action, Error> {
    if !cluster.finalizers().iter().any(|f| f == plan::FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let machine_api: Api<Machine> = Api::all(ctx.client.clone());
    let machines = machine_api.list(&ListParams::default()).await?.items;
    let td = plan::teardown(cluster, &machines, &ctx.config.plan, Timestamp::now());
    let manager = plan::field_manager(&namespace, &name);
    let component = plan::component_name(&namespace, &name);
    for machine in &td.remove_from {
        release_machine(&machine_api, &manager, machine, &component).await?;
        tracing::info!(cluster = %name, machine = %machine, "etcd cluster deleted: member removed from the machine");
    }
    if td.done() {
        if !td.abandoned.is_empty() {
            tracing::warn!(cluster = %name, machines = ?td.abandoned,
                "etcd cluster deleted while these node agents were silent; they remove the members' data when they return");
        }
        let left: Vec<String> =
            cluster.finalizers().iter().filter(|f| *f != plan::FINALIZER).cloned().collect();
        set_finalizers(&ctx.client, cluster, left).await?;
        ctx.down_since.lock().unwrap_or_else(|p| p.into_inner()).remove(&format!("{namespace}/{name}"));
        tracing::info!(cluster = %name, "etcd cluster deleted: every member stopped and its data removed");
        return Ok(Action::await_change());
    }
    let decision = plan::Plan {
        members: plan::recorded_members(cluster, &machines),
        progress: Some(Progress { reason: "Deleting".into(), message: td.message() }),
        ..Default::default()
    };
    let status = plan::status(cluster, &decision, &Observation::default(), Time(Timestamp::now()));
    write_status(&ctx.client, cluster, &status).await?;
    Ok(Action::requeue(STEP))
}

/// The data of the cluster's Secret (empty before the first reconcile).
pub(crate) async fn read_pki(
    client: &Client,
    cluster: &EtcdCluster,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    Ok(secrets
        .get_opt(&plan::secret_name(&cluster.name_any()))
        .await?
        .and_then(|s| s.data)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

/// Adds what is missing to the cluster's Secret (the CA once, then
/// per-member and client certificates); returns the data in use.
async fn ensure_pki(
    client: &Client,
    cluster: &EtcdCluster,
    existing: &BTreeMap<String, Vec<u8>>,
    members: &[MemberPlan],
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let secret_name = plan::secret_name(&name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let Some(data) = plan::pki_data(&name, existing, members, time::OffsetDateTime::now_utc())? else {
        return Ok(existing.clone());
    };
    let owner = OwnerReference {
        api_version: EtcdCluster::api_version(&()).into_owned(),
        kind: EtcdCluster::kind(&()).into_owned(),
        name: name.clone(),
        uid: cluster.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut secret = Secret {
        data: Some(data.iter().map(|(k, v)| (k.clone(), ByteString(v.clone()))).collect()),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    secret.metadata.name = Some(secret_name.clone());
    secret.metadata.namespace = Some(namespace);
    secret.metadata.owner_references = Some(vec![owner]);
    secrets.patch(&secret_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret)).await?;
    tracing::info!(cluster = %name, secret = %secret_name, keys = data.len(), "etcd certificates written");
    Ok(data)
}

/// A TLS client that trusts the cluster's CA and presents its client
/// certificate.
pub fn client_tls(data: &BTreeMap<String, Vec<u8>>) -> Result<Arc<ClientConfig>, Error> {
    let get = |key: &str| data.get(key).ok_or_else(|| Error::Other(format!("the Secret has no {key}")));
    client_tls_from_pem(
        get(keys::ETCD_CA_CRT)?,
        get(&keys::crt(plan::CLIENT_LEAF))?,
        get(&keys::key(plan::CLIENT_LEAF))?,
    )
}

/// A TLS client from PEM files: the CA to trust, the client certificate
/// (chain) and its key (what `etcdctl --cacert --cert --key` take).
pub fn client_tls_from_files(
    cacert: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<ClientConfig>, Error> {
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| Error::Other(format!("{}: {e}", p.display())));
    client_tls_from_pem(&read(cacert)?, &read(cert)?, &read(key)?)
}

/// A TLS client from PEM bytes: the CA, the client certificate, its key.
pub fn client_tls_from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        let cert = cert.map_err(|e| Error::Other(format!("CA certificate: {e}")))?;
        roots.add(cert).map_err(|e| Error::Other(format!("CA certificate: {e}")))?;
    }
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Other(format!("client certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| Error::Other(format!("client key: {e}")))?;
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Other(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| Error::Other(format!("client certificate: {e}")))?;
    Ok(Arc::new(config))
}

/// POSTs `body` to `path` of an etcd member's gRPC gateway (`url` is its
/// `https://host:port` client URL) and returns the answer's body.
pub async fn call(
    tls: &Arc<ClientConfig>,
    url: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let exchange = async {
        let authority = url.strip_prefix("https://").ok_or_else(|| format!("{url}: not https"))?;
        let (host, port) = authority.rsplit_once(':').ok_or_else(|| format!("{url}: no port"))?;
        let port: u16 = port.parse().map_err(|_| format!("{url}: bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, port)).await.map_err(|e| format!("{url}: {e}"))?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{url}: {e}"))?;
        let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        // HTTP/1.0: the answer is never chunked and ends when the
        // connection closes.
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("{url}: {e}"))?;
        let mut answer = Vec::new();
        if let Err(e) = stream.read_to_end(&mut answer).await {
            // Servers may close without a TLS close_notify; what arrived counts.
            if e.kind() != std::io::ErrorKind::UnexpectedEof || answer.is_empty() {
                return Err(format!("{url}: {e}"));
            }
        }
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("{url}: no HTTP answer"))?;
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let code = head.split_whitespace().nth(1).unwrap_or_default();
        if code != "200" {
            let text = String::from_utf8_lossy(&answer[split + 4..]);
            return Err(format!("{url}{path}: HTTP {code}: {text}"));
        }
        Ok(answer[split + 4..].to_vec())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer in {timeout:?}")))
}

/// Asks every member for its status, and the first that answers and knows
/// a leader for the member list (a member cut off from the others may hold
/// an outdated one).
async fn observe(members: &[MemberPlan], tls: &Arc<ClientConfig>, timeout: Duration) -> Observation {
    let asks = members.iter().map(|m| async move {
        let state = call(tls, &m.client_url, "/v3/maintenance/status", "{}", timeout)
            .await
            .and_then(|body| plan::parse_status(&body).map_err(|e| e.to_string()));
        (m, state)
    });
    let mut seen = Observation::default();
    for (m, state) in futures::future::join_all(asks).await {
        match state {
            Ok(state) => {
                if seen.listed.is_none() && state.leader != 0 {
                    match call(tls, &m.client_url, "/v3/cluster/member/list", "{}", timeout)
                        .await
                        .and_then(|b| plan::parse_member_list(&b).map_err(|e| e.to_string()))
                    {
                        Ok(list) => seen.listed = Some(list),
                        Err(e) => tracing::debug!(member = %m.name, error = %e, "member list failed"),
                    }
                }
                seen.states.insert(m.name.clone(), state);
            }
            Err(e) => tracing::debug!(member = %m.name, error = %e, "member did not answer"),
        }
    }
    seen
}
