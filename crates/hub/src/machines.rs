//! Node agents' narrow credentials (Kube-on-Kube machines).
//!
//! - machine registration (primary: CertificateSigningRequests labelled
//!   `kok.flotilla.io/machine`): creates the Machine a node agent first asks
//!   for (accepted only if the hub auto-accepts), approves or denies its
//!   certificate requests (`kok_core::machine_identity::decide_csr`), binds the
//!   name to the first key, and grants access before approving;
//! - machine access (primary: Machine): keeps the node agent's RBAC in step
//!   with its spec (the Secrets and ConfigMaps its components reference),
//!   deleting Roles in namespaces the spec no longer names.
//!
//! Everything granted is owned by the Machine, so deleting it revokes all.

use std::sync::Arc;
use std::time::Duration;

use flotilla_api::machine::Machine;
use flotilla_kok_core::machine_identity::{self as identity, CsrDecision, MachineFacts, MACHINE_LABEL};
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::csr;
use crate::error::Error;
use crate::names::FIELD_MANAGER;

struct Ctx {
    client: Client,
    auto_accept: bool,
}

/// Runs both controllers until the process ends.
pub async fn run(client: Client, auto_accept: bool) {
    let ctx = Arc::new(Ctx { client: client.clone(), auto_accept });
    let machines: Api<Machine> = Api::all(client.clone());
    let csr_api: Api<CertificateSigningRequest> = Api::all(client.clone());

    // Only node agents' CSRs (the label picks them; the request decides).
    let (csr_store, csr_writer) = reflector::store();
    let csr_stream = watcher(csr_api, watcher::Config::default().labels(MACHINE_LABEL))
        .default_backoff()
        .modify(csr::trim_for_cache)
        .reflect(csr_writer)
        .touched_objects();
    let registration = Controller::for_stream(csr_stream, csr_store.clone())
        // Accepting a Machine (its annotation) decides its pending requests.
        .watches(machines.clone(), watcher::Config::default(), move |machine: Machine| {
            let name = machine.name_any();
            csr_store
                .state()
                .into_iter()
                .filter(|csr| {
                    csr.labels().get(MACHINE_LABEL).map(String::as_str) == Some(name.as_str())
                        && !csr::decided(csr)
                })
                .map(|csr| ObjectRef::from_obj(&*csr))
                .collect::<Vec<_>>()
        })
        .run(
            |o, c| flotilla_metrics::reconcile("machine-registration", o, c, reconcile_csr),
            |_, error, _| error_policy(error, "machine registration"),
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "machine registration reconcile failed");
            }
        });
    // Node agents write their Machine's status every few seconds; only the
    // spec (its generation) and the key binding change what is granted.
    let (machine_store, machine_writer) = reflector::store();
    let machine_stream = watcher(machines, watcher::Config::default())
        .default_backoff()
        .modify(|m: &mut Machine| m.managed_fields_mut().clear())
        .reflect(machine_writer)
        .applied_objects()
        .predicate_filter(access_inputs, Default::default());
    let access = Controller::for_stream(machine_stream, machine_store)
        .run(
            |o, c| flotilla_metrics::reconcile("machine-access", o, c, reconcile_access),
            |_, error, _| error_policy(error, "machine access"),
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "machine access reconcile failed");
            }
        });
    futures::join!(registration, access);
}

/// What the granted access depends on, hashed.
fn access_inputs(machine: &Machine) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    machine.metadata.generation.hash(&mut hasher);
    machine.annotations().get(identity::AGENT_KEY_ANNOTATION).hash(&mut hasher);
    Some(hasher.finish())
}

fn error_policy(error: &Error, what: &str) -> Action {
    tracing::warn!(%error, controller = what, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn machine_facts(machine: &Machine) -> MachineFacts {
    identity::machine_facts(machine.annotations(), machine.metadata.deletion_timestamp.is_some())
}

async fn reconcile_csr(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if csr::decided(&csr) {
        return Ok(Action::await_change());
    }
    let Ok(facts) = csr::facts(&csr) else { return Ok(Action::await_change()) };
    let Some(name) = identity::machine_of_user(&facts.subject_common_name).map(str::to_string) else {
        return Ok(Action::await_change());
    };
    let machines: Api<Machine> = Api::all(ctx.client.clone());
    let mut machine = machines.get_opt(&name).await?;

    // A first request from a valid bootstrap identity registers the Machine
    // (empty spec; accepted only when the hub auto-accepts).
    if machine.is_none() {
        let hypothetical = MachineFacts { accepted: true, agent_key: None, being_deleted: false };
        if identity::decide_csr(&facts, Some(&hypothetical)) == CsrDecision::Approve {
            let mut new = Machine::new(&name, Default::default());
            if ctx.auto_accept {
                new.annotations_mut().insert(identity::ACCEPTED_ANNOTATION.into(), "true".into());
            }
            match machines.create(&PostParams::default(), &new).await {
                Ok(created) => {
                    tracing::info!(machine = %name, auto_accept = ctx.auto_accept, "machine registered");
                    machine = Some(created);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => machine = machines.get_opt(&name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    match identity::decide_csr(&facts, machine.as_ref().map(machine_facts).as_ref()) {
        CsrDecision::Ignore => Ok(Action::await_change()),
        CsrDecision::Pending(why) => {
            tracing::info!(machine = %name, csr = %csr.name_any(), reason = %why, "machine certificate request pending");
            Ok(Action::await_change())
        }
        CsrDecision::Deny(why) => {
            tracing::warn!(machine = %name, csr = %csr.name_any(), reason = %why, "machine certificate request denied");
            csr::decide(&ctx.client, &csr, "Denied", "FlotillaDenied", &why).await?;
            Ok(Action::await_change())
        }
        CsrDecision::Approve => {
            let Some(machine) = machine else { return Ok(Action::await_change()) };
            // Access first, so the node agent can work as soon as it has
            // its certificate.
            grant_access(&ctx.client, &machine).await?;
            let first = facts.requester != facts.subject_common_name;
            if first && machine_facts(&machine).agent_key.is_none() {
                let key = json!({"metadata": {"annotations": {
                    identity::AGENT_KEY_ANNOTATION: facts.public_key_sha256}}});
                machines.patch(&name, &PatchParams::default(), &Patch::Merge(key)).await?;
            }
            csr::decide(
                &ctx.client,
                &csr,
                "Approved",
                "FlotillaApproved",
                &format!("machine {name} is accepted"),
            )
            .await?;
            tracing::info!(machine = %name, csr = %csr.name_any(), "machine certificate request approved");
            Ok(Action::await_change())
        }
    }
}

/// Keeps the RBAC of a Machine whose node agent holds (or once held) a
/// certificate in step with its spec.
async fn reconcile_access(machine: Arc<Machine>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let facts = machine_facts(&machine);
    if facts.being_deleted || facts.agent_key.is_none() {
        // Never granted (or going away: the garbage collector revokes).
        return Ok(Action::await_change());
    }
    grant_access(&ctx.client, &machine).await.map(|missing| {
        if missing {
            Action::requeue(Duration::from_secs(10))
        } else {
            Action::await_change()
        }
    })
}

/// Applies the node agent's access objects and deletes Roles the spec no
/// longer needs. Returns whether some namespace did not exist yet (its Role
/// is written on a later pass).
async fn grant_access(client: &Client, machine: &Machine) -> Result<bool, Error> {
    let name = machine.name_any();
    let owner = json!([{
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
        "name": name, "uid": machine.uid().unwrap_or_default(), "blockOwnerDeletion": true
    }]);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let mut missing_namespace = false;
    for object in identity::machine_access_objects(&name, owner, &machine.spec) {
        let gvk = kube::api::GroupVersionKind::try_from(&kube::core::TypeMeta {
            api_version: object["apiVersion"].as_str().unwrap_or_default().to_string(),
            kind: object["kind"].as_str().unwrap_or_default().to_string(),
        })
        .map_err(|e| Error::Other(e.to_string()))?;
        let resource = kube::api::ApiResource::from_gvk(&gvk);
        let object_name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let namespace = object["metadata"]["namespace"].as_str();
        let api: Api<kube::api::DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        match api.patch(&object_name, &apply, &Patch::Apply(&object)).await {
            Ok(_) => {}
            // A namespace the spec names before it exists (its operator
            // creates it): try again later.
            Err(kube::Error::Api(e)) if e.code == 404 && namespace.is_some() => {
                tracing::info!(machine = %name, namespace = ?namespace, "namespace missing; its Role waits");
                missing_namespace = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let roles: Api<Role> = Api::all(client.clone());
    let selector = ListParams::default().labels(&format!("{MACHINE_LABEL}={name}"));
    let existing = roles.list_metadata(&selector).await?;
    let role_name = identity::role_name(&name);
    let stale = identity::stale_namespaces(
        existing
            .items
            .iter()
            .filter(|r| r.name_any() == role_name)
            .filter_map(|r| r.metadata.namespace.as_deref()),
        &machine.spec,
    );
    for ns in stale {
        tracing::info!(machine = %name, namespace = %ns, "revoking access the spec no longer needs");
        for result in [
            Api::<RoleBinding>::namespaced(client.clone(), &ns)
                .delete(&role_name, &DeleteParams::default())
                .await
                .map(|_| ()),
            Api::<Role>::namespaced(client.clone(), &ns)
                .delete(&role_name, &DeleteParams::default())
                .await
                .map(|_| ()),
        ] {
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(missing_namespace)
}
