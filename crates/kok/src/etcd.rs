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

use flotilla_api::kok::conditions;
use flotilla_api::kok::{EtcdCluster, Runtime};
use flotilla_api::machine::{ComponentSpec, Machine};
use flotilla_core::conditions::{condition, Wanted};
use flotilla_kok_core::etcd::{
    self as plan, EtcdOperatorConfig, Facts, MemberPlan, MembershipChange, Observation, Progress,
};
use flotilla_kok_core::etcd_versions::{self as versions, EtcdRelease};
use flotilla_kok_core::{etcd_gateway, etcd_status, etcd_teardown, ports};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use rustls::ClientConfig;
use serde_json::json;

pub use crate::etcd_client::{call, client_tls, client_tls_from_files, client_tls_from_pem};
use crate::etcd_operator::{read_pki, write_status, STEP};
pub use crate::etcd_operator::{EtcdOperator, FIELD_MANAGER};
use crate::finalizing::{finalizer_error, pending};
use crate::machine_components::release_machine;
use crate::Error;

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
    /// The etcd releases in the bin dir, found at start and again when a
    /// spec names a version not among them.
    releases: tokio::sync::Mutex<Vec<EtcdRelease>>,
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
    let releases = crate::etcd_upgrade::discover(&config.plan.bin_dir).await;
    let ctx = Arc::new(Ctx {
        client,
        config,
        down_since: Mutex::new(BTreeMap::new()),
        placing: tokio::sync::Mutex::new(()),
        releases: tokio::sync::Mutex::new(releases),
    });
    let controller = Controller::new(clusters, watcher::Config::default());
    // Scraped while the controller runs.
    let _gauges = crate::metrics::register(crate::metrics::EtcdGauges { clusters: controller.store() });
    controller
        .run(|o, c| flotilla_metrics::reconcile("etcd-cluster", o, c, reconcile), error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "etcd reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(cluster: Arc<EtcdCluster>, error: &Error, _: Arc<Ctx>) -> Action {
    if let Some(action) = pending(error) {
        return action;
    }
    tracing::warn!(cluster = %cluster.name_any(), error = %error, "etcd reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Both runtimes behind the finalizer [`plan::FINALIZER`]: deleting waits
/// for the members (and their data) to go.
async fn reconcile(cluster: Arc<EtcdCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let api: Api<EtcdCluster> = Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let kubernetes = cluster.spec.runtime == Runtime::Kubernetes;
    finalizer(&api, plan::FINALIZER, cluster, |event| async {
        match event {
            Event::Apply(cluster) if kubernetes => {
                crate::etcd_kube::reconcile(&ctx.client, &cluster, &ctx.config).await
            }
            Event::Apply(cluster) => apply(cluster, &ctx).await,
            Event::Cleanup(cluster) if kubernetes => crate::etcd_kube::tear_down(&ctx.client, &cluster).await,
            Event::Cleanup(cluster) => tear_down(&cluster, &ctx).await,
        }
    })
    .await
    .map_err(finalizer_error)
}

/// One reconcile of a process-runtime cluster.
async fn apply(cluster: Arc<EtcdCluster>, ctx: &Ctx) -> Result<Action, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let key = format!("{namespace}/{name}");
    let client = &ctx.client;
    let machine_api: Api<Machine> = Api::all(client.clone());
    let machines = machine_api.list(&ListParams::default()).await?.items;
    let existing = read_pki(client, &cluster).await?;

    let recorded = plan::recorded_members(&cluster, &machines);
    let releases = releases_for(ctx, &cluster.spec.version).await;
    let Some(config) = member_config(ctx, &cluster, &machines, &releases, recorded.is_empty()) else {
        // A new cluster of a version this operator cannot run: nothing is
        // founded until the spec names one it can.
        let message = versions::unknown_version_message(&cluster.spec.version, &releases);
        let decision = plan::Plan {
            progress: Some(Progress { reason: "UnknownVersion".into(), message: message.clone() }),
            ..Default::default()
        };
        let mut status =
            etcd_status::status(&cluster, &decision, &Observation::default(), Time(Timestamp::now()));
        let wanted = Wanted::new(conditions::UPGRADED, false, "UnknownVersion", message)
            .generation(cluster.metadata.generation);
        let previous = cluster.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        status.conditions.push(condition(previous, wanted, &Time(Timestamp::now())));
        write_status(client, &cluster, &status).await?;
        return Ok(Action::requeue(ctx.config.resync));
    };
    let config = &config;
    let seen = match client_tls(&existing) {
        Ok(tls) => observe(&recorded, &tls, ctx.config.probe_timeout).await,
        Err(_) => Observation::default(),
    };
    let now = Timestamp::now();
    let down = note_down(ctx, &key, &recorded, &seen, now);
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

    // Version changes only while the membership holds still.
    let steady = decision.change.is_none() && decision.write.is_empty() && decision.drop.is_empty();
    let upgrade = if steady && !decision.members.is_empty() {
        let inputs = crate::etcd_upgrade::UpgradeInputs {
            releases: &releases,
            members: &decision.members,
            machines: &machines,
            seen: &seen,
            config: &ctx.config,
        };
        Some(crate::etcd_upgrade::step(client, &cluster, &inputs).await?)
    } else {
        None
    };
    let mut status = etcd_status::status(&cluster, &decision, &seen, Time(Timestamp::now()));
    let previous = cluster.status.as_ref();
    status.upgrade = match &upgrade {
        Some(u) => u.record.clone(),
        None => previous.and_then(|s| s.upgrade.clone()),
    };
    let upgraded = match &upgrade {
        Some(u) => u.condition.clone(),
        None => previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::UPGRADED).cloned()),
    };
    status.conditions.extend(upgraded);
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
    let waiting_on_people = decision.progress.as_ref().is_some_and(|p| plan::waits_on_people(&p.reason));
    let busy = decision.change.is_some()
        || upgrade.as_ref().is_some_and(|u| u.busy)
        || !decision.drop.is_empty()
        || !decision.write.is_empty()
        || (decision.progress.is_some() && !waiting_on_people);
    let after = if busy { STEP } else { ctx.config.resync };
    Ok(Action::requeue(wake.map_or(after, |w| w.min(after))))
}

/// The releases known, found again first when `version` is not among them.
async fn releases_for(ctx: &Ctx, version: &str) -> Vec<EtcdRelease> {
    let mut known = ctx.releases.lock().await;
    if versions::release(&known, version).is_none() {
        *known = crate::etcd_upgrade::discover(&ctx.config.plan.bin_dir).await;
    }
    known.clone()
}

/// The operator's settings with the binary new members run: the release
/// the members run (the oldest, mid-upgrade), or for a new cluster the
/// spec's. `None`: a new cluster of a version there is no binary for.
fn member_config(
    ctx: &Ctx,
    cluster: &EtcdCluster,
    machines: &[Machine],
    releases: &[EtcdRelease],
    founding: bool,
) -> Option<EtcdOperatorConfig> {
    let config = &ctx.config.plan;
    let component = plan::component_name(&cluster.namespace().unwrap_or_default(), &cluster.name_any());
    let running = machines
        .iter()
        .filter_map(|m| m.spec.components.iter().find(|c| c.name == component))
        .filter_map(|c| versions::release_of(c, &config.bin_dir, releases))
        .min_by_key(|r| versions::parse_version(&r.version));
    let release = match running {
        Some(r) => r,
        None if founding => versions::release(releases, &cluster.spec.version)?,
        // Members on binaries the operator does not know: new ones get the
        // plain `etcd`.
        None => return Some(config.clone()),
    };
    Some(EtcdOperatorConfig { etcd_binary: release.binary.clone(), ..config.clone() })
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

/// Deleting: remove the members from every Machine, wait until the node
/// agents report them gone (their working directories, with the default
/// data dirs, deleted), then let the object go.
async fn tear_down(cluster: &EtcdCluster, ctx: &Ctx) -> Result<Action, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let machine_api: Api<Machine> = Api::all(ctx.client.clone());
    let machines = machine_api.list(&ListParams::default()).await?.items;
    let td = etcd_teardown::teardown(cluster, &machines, &ctx.config.plan, Timestamp::now());
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
        ctx.down_since.lock().unwrap_or_else(|p| p.into_inner()).remove(&format!("{namespace}/{name}"));
        tracing::info!(cluster = %name, "etcd cluster deleted: every member stopped and its data removed");
        return Ok(Action::await_change());
    }
    let decision = plan::Plan {
        members: plan::recorded_members(cluster, &machines),
        progress: Some(Progress { reason: "Deleting".into(), message: td.message() }),
        ..Default::default()
    };
    let status = etcd_status::status(cluster, &decision, &Observation::default(), Time(Timestamp::now()));
    write_status(&ctx.client, cluster, &status).await?;
    Err(Error::CleanupPending { after: STEP, waiting_for: td.message() })
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

/// Asks every member for its status, and the first that answers and knows
/// a leader for the member list (a member cut off from the others may hold
/// an outdated one).
async fn observe(members: &[MemberPlan], tls: &Arc<ClientConfig>, timeout: Duration) -> Observation {
    let asks = members.iter().map(|m| async move {
        let state = call(tls, &m.client_url, "/v3/maintenance/status", "{}", timeout)
            .await
            .and_then(|body| etcd_gateway::parse_status(&body).map_err(|e| e.to_string()));
        (m, state)
    });
    let mut seen = Observation::default();
    for (m, state) in futures::future::join_all(asks).await {
        match state {
            Ok(state) => {
                if seen.listed.is_none() && state.leader != 0 {
                    match call(tls, &m.client_url, "/v3/cluster/member/list", "{}", timeout)
                        .await
                        .and_then(|b| etcd_gateway::parse_member_list(&b).map_err(|e| e.to_string()))
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
