//! The hub's fleet controllers.
//!
//! - registration (primary: CertificateSigningRequest): registers a cluster
//!   when its agent first asks, approves or denies agents' certificate
//!   requests (the decision is `core::membership::decide_csr`), and grants
//!   an approved agent access to exactly its own corner of the hub;
//! - health (primary: ManagedCluster, also triggered by heartbeat Leases):
//!   publishes `Joined` and `Available` and the NoExecute taints.
//!
//! Both are level-triggered: they read the current objects and converge.

use std::sync::Arc;
use std::time::Duration;

use flotilla_api::cluster::{keys, ManagedCluster};
use flotilla_core::conditions::{self, Wanted};
use flotilla_fleet_core::cluster_events::{cluster_events, ClusterHealth};
use flotilla_fleet_core::condition_history;
use flotilla_fleet_core::membership::{self, CsrDecision};
use flotilla_fleet_core::taint_owner;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::csr;
use crate::error::Error;
use crate::names::{FIELD_MANAGER, TAINT_FIELD_MANAGER};

pub use membership::HEARTBEAT_LABEL;

struct Ctx {
    client: Client,
    /// Accept every cluster that asks to join.
    auto_accept: bool,
    /// How long past its lease duration a heartbeat may be late.
    grace: Duration,
    leases: Store<Lease>,
    recorder: kube::runtime::events::Recorder,
}

/// The registration and health controllers (run by awaiting the future),
/// and their cache of ManagedClusters (which push mode reads too). Every
/// change the cache takes in is signalled on `changed` (after the cache
/// holds it), so push mode starts a new cluster's reporter at once.
pub(crate) fn run(
    client: Client,
    auto_accept: bool,
    grace: Duration,
    changed: Arc<tokio::sync::Notify>,
) -> (Store<ManagedCluster>, impl std::future::Future<Output = ()>) {
    let clusters_api: Api<ManagedCluster> = Api::all(client.clone());
    let csr_api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let lease_api: Api<Lease> = Api::all(client.clone());

    let (lease_store, lease_writer) = reflector::store();
    let leases = watcher(lease_api, watcher::Config::default().labels(HEARTBEAT_LABEL))
        .default_backoff()
        // Only the renew time matters here; keep the cache small.
        .modify(|lease| lease.managed_fields_mut().clear())
        .reflect(lease_writer)
        .touched_objects();

    // The caches hold only what the controllers read: no managed fields
    // (but the hub's taint manager's),
    // and no request or certificate once a CSR is decided. At 1,000
    // clusters that is most of the hub's memory.
    let (cluster_store, cluster_writer) = reflector::store();
    let cluster_stream = watcher(clusters_api.clone(), watcher::Config::default())
        .default_backoff()
        // Except the taint manager's: which taints are the hub's own.
        .modify(|mc: &mut ManagedCluster| {
            taint_owner::keep_only_manager(mc.managed_fields_mut(), TAINT_FIELD_MANAGER)
        })
        .reflect(cluster_writer)
        .touched_objects()
        .inspect(move |_| changed.notify_one());
    let health = Controller::for_stream(cluster_stream, cluster_store.clone());
    let gauges = crate::metrics::register(crate::metrics::FleetGauges {
        clusters: cluster_store.clone(),
        leases: lease_store.clone(),
    });
    let recorder = crate::events::recorder(client.clone(), crate::events::CLUSTER_CONTROLLER);
    let ctx = Arc::new(Ctx { client: client.clone(), auto_accept, grace, leases: lease_store, recorder });

    let (csr_store, csr_writer) = reflector::store();
    let csr_stream = watcher(csr_api, watcher::Config::default())
        .default_backoff()
        .modify(csr::trim_for_cache)
        .reflect(csr_writer)
        .touched_objects();
    let registration = Controller::for_stream(csr_stream, csr_store.clone());
    // A cluster's acceptance changes the fate of its pending requests.
    let registration = registration
        .watches(clusters_api, watcher::Config::default(), move |cluster: ManagedCluster| {
            let name = cluster.name_any();
            csr_store
                .state()
                .into_iter()
                // The annotation only picks what to look at (cheaply: this
                // runs on every ManagedCluster event); decisions parse the
                // request itself.
                .filter(|csr| {
                    csr.annotations().get(keys::CSR_CLUSTER).map(String::as_str) == Some(name.as_str())
                        && !csr::decided(csr)
                })
                .map(|csr| ObjectRef::from_obj(&*csr))
                .collect::<Vec<_>>()
        })
        .run(
            |o, c| flotilla_metrics::reconcile("registration", o, c, reconcile_csr),
            csr_error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "registration reconcile failed");
            }
        });

    let health = health
        .watches_stream(leases, |lease: Lease| {
            lease
                .namespace()
                .and_then(|ns| ns.strip_prefix("flotilla-cluster-").map(str::to_string))
                .map(|name| ObjectRef::new(&name))
        })
        .run(|o, c| flotilla_metrics::reconcile("health", o, c, reconcile_health), health_error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "health reconcile failed");
            }
        });
    (cluster_store, async move {
        // Scraped while the controllers run.
        let _gauges = gauges;
        futures::join!(registration, health);
    })
}

fn cluster_facts(cluster: &ManagedCluster) -> membership::ClusterFacts {
    membership::ClusterFacts {
        accepted: cluster.spec.hub_accepts_client,
        agent_key: cluster.annotations().get(keys::AGENT_KEY).cloned(),
        being_deleted: cluster.metadata.deletion_timestamp.is_some(),
    }
}

async fn reconcile_csr(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if csr::decided(&csr) {
        return Ok(Action::await_change());
    }
    let Ok(facts) = csr::facts(&csr) else { return Ok(Action::await_change()) };
    let Some(name) = membership::cluster_of_agent_user(&facts.subject_common_name).map(str::to_string) else {
        return Ok(Action::await_change());
    };
    let clusters: Api<ManagedCluster> = Api::all(ctx.client.clone());
    let mut cluster = clusters.get_opt(&name).await?;

    // A first request from a valid bootstrap identity registers the cluster.
    if cluster.is_none() {
        let hypothetical = membership::ClusterFacts { accepted: true, agent_key: None, being_deleted: false };
        if membership::decide_csr(&facts, Some(&hypothetical)) == CsrDecision::Approve {
            let new: ManagedCluster = serde_json::from_value(json!({
                "apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
                "metadata": {"name": name},
                "spec": {"syncMode": "Pull", "hubAcceptsClient": ctx.auto_accept}
            }))?;
            match clusters.create(&PostParams::default(), &new).await {
                Ok(created) => {
                    tracing::info!(cluster = %name, auto_accept = ctx.auto_accept, "cluster registered");
                    cluster = Some(created);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => cluster = clusters.get_opt(&name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    let facts_of_cluster = cluster.as_ref().map(cluster_facts);
    match membership::decide_csr(&facts, facts_of_cluster.as_ref()) {
        CsrDecision::Ignore => Ok(Action::await_change()),
        CsrDecision::Pending(why) => {
            tracing::info!(cluster = %name, csr = %csr.name_any(), reason = %why, "certificate request pending");
            Ok(Action::await_change())
        }
        CsrDecision::Deny(why) => {
            tracing::warn!(cluster = %name, csr = %csr.name_any(), reason = %why, "certificate request denied");
            csr::decide(&ctx.client, &csr, "Denied", "FlotillaDenied", &why).await?;
            Ok(Action::await_change())
        }
        CsrDecision::Approve => {
            let Some(cluster) = cluster else { return Ok(Action::await_change()) };
            grant_agent_access(&ctx.client, &cluster).await?;
            let first_registration = facts.requester != facts.subject_common_name;
            if first_registration && cluster_facts(&cluster).agent_key.is_none() {
                clusters
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(
                            json!({"metadata": {"annotations": {keys::AGENT_KEY: facts.public_key_sha256}}}),
                        ),
                    )
                    .await?;
            }
            csr::decide(
                &ctx.client,
                &csr,
                "Approved",
                "FlotillaApproved",
                &format!("cluster {name} is accepted into the fleet"),
            )
            .await?;
            tracing::info!(cluster = %name, csr = %csr.name_any(), "certificate request approved");
            Ok(Action::await_change())
        }
    }
}

/// The cluster's namespace and the RBAC that lets its agent (and only it)
/// work there, read its own ManagedCluster and write its status. All are
/// owned by the ManagedCluster, so deleting it revokes everything.
async fn grant_agent_access(client: &Client, cluster: &ManagedCluster) -> Result<(), Error> {
    let name = cluster.name_any();
    let owner = json!([{
        "apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
        "name": name, "uid": cluster.uid().unwrap_or_default(), "blockOwnerDeletion": true
    }]);
    let objects = membership::agent_access_objects(&name, owner);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for object in objects {
        let gvk = kube::api::GroupVersionKind::try_from(&kube::core::TypeMeta {
            api_version: object["apiVersion"].as_str().unwrap_or_default().to_string(),
            kind: object["kind"].as_str().unwrap_or_default().to_string(),
        })
        .map_err(|e| Error::Other(e.to_string()))?;
        let (resource, _caps) = kube::discovery::pinned_kind(client, &gvk).await?;
        let object_name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let api: Api<kube::api::DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(&object_name, &apply, &Patch::Apply(&object)).await?;
    }
    Ok(())
}

fn csr_error_policy(_csr: Arc<CertificateSigningRequest>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "registration failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn health_error_policy(_c: Arc<ManagedCluster>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "health update failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// Finalizer that lets the hub revoke a leaving cluster's access.
pub const CLEANUP_FINALIZER: &str = "cluster.flotilla.io/cleanup";

async fn reconcile_health(cluster: Arc<ManagedCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    use kube::runtime::finalizer::{finalizer, Event};
    let api: Api<ManagedCluster> = Api::all(ctx.client.clone());
    finalizer(&api, CLEANUP_FINALIZER, cluster, |event| async {
        match event {
            Event::Apply(cluster) => update_health(cluster, ctx.clone()).await,
            Event::Cleanup(cluster) => revoke_access(cluster, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Other(e.to_string()))
}

/// A cluster leaves: delete its namespace (with its Works and Lease), its
/// cluster RBAC and its pending certificate requests. Idempotent.
async fn revoke_access(cluster: Arc<ManagedCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    revoke_cluster_access(&ctx.client, &cluster.name_any()).await?;
    Ok(Action::await_change())
}

/// What leaving the fleet takes away from cluster `name`: its hub namespace,
/// its cluster RBAC and its certificate requests. Idempotent; also used by
/// `flotilla unjoin --force` when no hub controller runs.
pub async fn revoke_cluster_access(client: &Client, name: &str) -> Result<(), Error> {
    let ignore_missing = |r: Result<_, kube::Error>| match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    };
    let dp = kube::api::DeleteParams::default();
    // The cluster's works wait for its agent to clean up the member; it
    // has left, so nobody will: release them, or the namespace never goes.
    let works: Api<flotilla_api::work::Work> =
        Api::namespaced(client.clone(), &ManagedCluster::hub_namespace(name));
    if let Ok(list) = works.list(&Default::default()).await {
        for work in list.items {
            let release = json!({"metadata": {"finalizers": null}});
            ignore_missing(
                works
                    .patch(&work.name_any(), &PatchParams::default(), &Patch::Merge(&release))
                    .await
                    .map(|_| ()),
            )?;
        }
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    ignore_missing(namespaces.delete(&ManagedCluster::hub_namespace(name), &dp).await.map(|_| ()))?;
    let role = format!("flotilla:cluster:{name}");
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    ignore_missing(roles.delete(&role, &dp).await.map(|_| ()))?;
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    ignore_missing(bindings.delete(&role, &dp).await.map(|_| ()))?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    for csr in csrs.list(&Default::default()).await?.items {
        if csr::cluster_of(&csr).as_deref() == Some(name) {
            ignore_missing(csrs.delete(&csr.name_any(), &dp).await.map(|_| ()))?;
        }
    }
    tracing::info!(cluster = %name, "cluster left the fleet; its access is revoked");
    Ok(())
}

async fn update_health(cluster: Arc<ManagedCluster>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // A push cluster has no agent to trigger its namespace: make it here.
    if cluster.spec.sync_mode == flotilla_api::cluster::SyncMode::Push && cluster.spec.hub_accepts_client {
        let name = cluster.name_any();
        let namespace = ManagedCluster::hub_namespace(&name);
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
        namespaces
            .patch(
                &namespace,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": namespace, "labels": {"cluster.flotilla.io/cluster": name}}})),
            )
            .await?;
    }
    // Never judge a heartbeat before the lease cache is complete: that is
    // what would make a restarted hub flap every cluster to Unknown.
    ctx.leases.wait_until_ready().await.map_err(|e| Error::Other(e.to_string()))?;
    let name = cluster.name_any();
    let now = k8s_openapi::jiff::Timestamp::now();
    let existing = cluster.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();

    let time = Time(now);
    let joined = if !cluster.spec.hub_accepts_client {
        Wanted::new(
            membership::JOINED,
            false,
            "NotAccepted",
            format!("waiting to be accepted: run `flotilla cluster accept {name}`"),
        )
    } else if cluster.annotations().contains_key(keys::AGENT_KEY)
        || cluster.spec.sync_mode == flotilla_api::cluster::SyncMode::Push
    {
        Wanted::new(membership::JOINED, true, "Joined", "the cluster is a member of the fleet")
    } else {
        Wanted::new(
            membership::JOINED,
            false,
            "WaitingForAgent",
            "accepted; waiting for the cluster's agent to request its certificate",
        )
    };
    let joined = conditions::condition(&existing, joined, &time);

    let lease =
        ctx.leases.get(&ObjectRef::new(membership::LEASE_NAME).within(&ManagedCluster::hub_namespace(&name)));
    let since_renewal = lease.as_ref().and_then(|l| l.spec.as_ref()?.renew_time.as_ref()).map(|t| {
        let age = now.duration_since(t.0);
        Duration::try_from(age).unwrap_or(Duration::ZERO)
    });
    let lease_seconds =
        cluster.spec.lease_duration_seconds.unwrap_or(membership::DEFAULT_LEASE_SECONDS).max(1);
    let report = cluster
        .condition(flotilla_api::cluster::conditions::MEMBER_HEALTHY)
        .map(|c| membership::MemberReport { healthy: c.status == "True", message: c.message.clone() });
    let availability = if joined.status == "True" {
        membership::availability(
            since_renewal,
            Duration::from_secs(lease_seconds as u64),
            ctx.grace,
            report.as_ref(),
        )
    } else {
        membership::Availability {
            status: "Unknown",
            reason: "NotJoined",
            message: "the cluster has not joined the fleet yet".into(),
            recheck_after: None,
        }
    };
    let available = conditions::condition(
        &existing,
        Wanted::with_status(
            membership::AVAILABLE,
            availability.status,
            availability.reason,
            availability.message.clone(),
        ),
        &time,
    );

    // Taints first, then the condition: whoever sees the new Available
    // status also sees the taints that go with it.
    // Only taints the hub applied are its own: one a person added, even
    // with a hub key, is theirs (never counted, rewritten or removed).
    let hub_keys = [flotilla_api::cluster::taints::UNREACHABLE, flotilla_api::cluster::taints::NOT_READY];
    let current_hub_taints: Vec<_> =
        taint_owner::owned_taints(&cluster.spec.taints, cluster.managed_fields(), TAINT_FIELD_MANAGER)
            .into_iter()
            .filter(|t| hub_keys.contains(&t.key.as_str()))
            .collect();
    // Since when the member has had this availability (the condition's
    // transition time, or now if it just changed).
    let unhealthy_since = existing
        .iter()
        .find(|c| c.type_ == membership::AVAILABLE && c.status == availability.status)
        .map_or(now, |c| c.last_transition_time.0);
    let hub_taints =
        membership::hub_taints(availability.status, unhealthy_since, &current_hub_taints, &now, ctx.grace);
    let desired = taint_owner::leave_others(hub_taints.taints, &cluster.spec.taints, &current_hub_taints);
    if desired != current_hub_taints {
        let api: Api<ManagedCluster> = Api::all(ctx.client.clone());
        // Only the hub's own taints (`spec.taints` is a list-map keyed by
        // key and effect): everyone else's entries stay untouched, and a
        // hub taint left out of this apply is removed, as its manager no
        // longer applies it. A manager of its own so that taint ownership
        // reads apart from the hub's other writes in `managedFields`.
        api.patch(
            &name,
            &PatchParams::apply(TAINT_FIELD_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
                "spec": {"taints": desired}
            })),
        )
        .await?;
    }
    let unchanged =
        |c: &Condition| membership::condition_is(&existing, &c.type_, &c.status, &c.reason, &c.message);
    // The history sees every condition as it stands after this pass (the
    // agent's too), so it is written with the hub's own.
    let old_history = cluster.status.as_ref().map(|s| s.condition_history.clone()).unwrap_or_default();
    let after_pass: Vec<Condition> = existing
        .iter()
        .filter(|c| c.type_ != joined.type_ && c.type_ != available.type_)
        .cloned()
        .chain([joined.clone(), available.clone()])
        .collect();
    let history =
        condition_history::next_history(&old_history, &after_pass, now, condition_history::PER_TYPE);
    if !unchanged(&joined) || !unchanged(&available) || history != old_history {
        tracing::info!(cluster = %name, available = availability.status, reason = availability.reason, "cluster availability");
        let api: Api<ManagedCluster> = Api::all(ctx.client.clone());
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
                "status": {"conditions": [joined, available], "conditionHistory": history}
            })),
        )
        .await?;
    }

    // Events only for what this pass changed (read state against written).
    let health_of = |conditions: &[Condition], taints: &[flotilla_api::cluster::Taint]| ClusterHealth {
        joined: conditions.iter().find(|c| c.type_ == membership::JOINED).map(|c| c.status.clone()),
        available: conditions
            .iter()
            .find(|c| c.type_ == membership::AVAILABLE)
            .map(|c| (c.status.clone(), c.reason.clone())),
        hub_taints: taints.iter().map(|t| t.key.clone()).collect(),
    };
    let before = health_of(&existing, &current_hub_taints);
    let after = health_of(&[joined.clone(), available.clone()], &desired);
    let notices = cluster_events(&name, &before, &after, &availability.message);
    if !notices.is_empty() {
        let reference = kube::Resource::object_ref(cluster.as_ref(), &());
        for notice in &notices {
            crate::events::publish(&ctx.recorder, &reference, notice).await;
        }
    }

    let recheck = [availability.recheck_after, hub_taints.recheck_after].into_iter().flatten().min();
    Ok(Action::requeue(recheck.unwrap_or(Duration::from_secs(60))))
}
