//! The HostedCluster operator, `kubernetes` runtime: the same gate (the
//! EtcdCluster) and the same certificates as the process runtime, but the
//! control plane runs as Deployments in the meta cluster namespace
//! `kok-<name>` (`crate::kube_runtime`), and each component's condition
//! comes from its Deployment's rollout.
//!
//! A `spec.version` change follows the process runtime's plan
//! (`flotilla_kok_core::upgrade`, through `kube_runtime::upgrade_plan`):
//! the same refusals (a minor downgrade, a skipped minor), the
//! kube-apiserver Deployment moved to the new image first and waited on
//! until it has rolled out and is available, then kube-controller-manager,
//! then kube-scheduler, each step rolled back when it is not available
//! within `HostedOperator::upgrade_step_deadline`; progress in
//! `status.upgrade` and the `Upgraded` condition.
//!
//! Add-ons, worker nodes and fleet registration all need to reach the
//! hosted API server, which this runtime serves only at its Service inside
//! the meta cluster (`https://kube-apiserver.kok-<name>.svc:6443`). The
//! operator may run anywhere (a laptop, another cluster), so it does not
//! assume it can: they are skipped, `AddonsApplied` (and `NodesReady` when
//! nodes are asked for) say so, and `Ready` means the control plane is
//! ready.

use std::collections::BTreeMap;

use flotilla_api::kok::{
    conditions, CertificateStatus, HostedCluster, HostedClusterPhase, HostedClusterStatus,
};
use flotilla_kok_core::hosted as plan;
use flotilla_kok_core::kube_runtime::{self as render, KubeRuntimeError};
use flotilla_kok_core::pki::ControlPlanePki;
use flotilla_kok_core::upgrade::UpgradePlan;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::hosted::{etcd_ready, secret_data, write_secret, HostedOperator, Outcome, FIELD_MANAGER};
use crate::kube_runtime::{self, ControlPlaneComponent};
use crate::Error;

/// Reason of the conditions for what this runtime does not do.
const SKIPPED: &str = "SkippedByRuntime";

/// What one reconcile learned, for the status.
struct Observed {
    conditions: Vec<Condition>,
    endpoint: Option<String>,
    /// The PKI Secret's data, once known (certificate expiries).
    pki: BTreeMap<String, Vec<u8>>,
    issued: bool,
    handled_rotation: Option<String>,
    /// Every Deployment rolled out and ready.
    control_plane_ready: bool,
    /// Which version each Deployment runs, and the upgrade status.
    upgrade: Option<UpgradePlan>,
}

/// One reconcile of a HostedCluster whose `spec.controlPlane.runtime` is
/// `Kubernetes`: etcd gate → certificates → apply into `kok-<name>` →
/// status. `out` holds what the caller already decided (`Valid`).
pub(crate) async fn reconcile(
    client: &Client,
    hc: &HostedCluster,
    config: &HostedOperator,
    mut out: Outcome,
    now: &Time,
) -> Result<Action, Error> {
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let previous = hc.status.clone().unwrap_or_default();
    let generation = hc.metadata.generation;
    let mut observed = Observed {
        conditions: Vec::new(),
        endpoint: None,
        pki: BTreeMap::new(),
        issued: false,
        handled_rotation: None,
        control_plane_ready: false,
        upgrade: None,
    };

    let Some((etcd_name, _)) = hc.spec.etcd.resolve() else {
        return Ok(Action::await_change());
    };
    let Some(etcd) = etcd_ready(client, hc, etcd_name, &mut out, &previous, now).await? else {
        observed.conditions = std::mem::take(&mut out.conditions);
        write_status(client, hc, observed, now).await?;
        return Ok(Action::requeue(config.settle));
    };
    observed.conditions = std::mem::take(&mut out.conditions);

    // Certificates: every kubeconfig points at the apiserver's Service
    // (the other components run in their own pods, so loopback reaches
    // nothing).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let inputs = kube_runtime::pki_inputs(hc)?;
    let existing = secret_data(secrets.get_opt(&plan::pki_secret_name(&name)).await?);
    let (rotation, rotation_value) = plan::requested_rotation(hc);
    let update = plan::pki_data(
        &name,
        &existing,
        &etcd.ca,
        &inputs,
        rotation,
        time::OffsetDateTime::now_utc(),
        config.plan.renew_before,
    )
    .map_err(|e| Error::Other(e.to_string()))?;
    if !update.issued.is_empty() {
        write_secret(client, hc, &plan::pki_secret_name(&name), &update.data).await?;
        tracing::info!(cluster = %name, issued = ?update.issued, "hosted cluster certificates written (kubernetes runtime)");
        observed.issued = true;
    }
    let admin = plan::admin_kubeconfig(&update.data).unwrap_or_default();
    let admin_data = BTreeMap::from([("kubeconfig".to_string(), admin)]);
    if secret_data(secrets.get_opt(&plan::admin_secret_name(&name)).await?) != admin_data {
        write_secret(client, hc, &plan::admin_secret_name(&name), &admin_data).await?;
    }
    // The rotation is handled once its certificates are written; the
    // apply below rolls every component that reads them.
    observed.handled_rotation = rotation_value.or(previous.handled_rotation.clone());
    observed.conditions.extend(crate::hosted::certificates_condition(
        &name,
        &update.data,
        &previous.conditions,
        &config.plan,
        hc.metadata.generation,
        now,
    ));

    // Which version each Deployment runs: an upgrade moves one at a time,
    // judged on the Deployments as they are before this apply.
    let current = kube_runtime::deployments(client, hc).await?;
    let upgrade = render::upgrade_plan(hc, &current, now.clone(), config.upgrade_step_deadline);
    let versions = render::upgrade_versions(&upgrade);
    if let Some(u) = upgrade.upgrade.as_ref().filter(|_| upgrade.upgrading) {
        tracing::info!(cluster = %name, from = %u.from, to = %u.to, state = ?u.state,
            step = ?u.component, "hosted control plane upgrade (kubernetes runtime)");
    }
    let message = upgrade.condition.as_ref().map(|c| c.message.clone()).unwrap_or_default();
    observed.upgrade = Some(upgrade);
    observed.pki = update.data.clone();
    let Some(versions) = versions else {
        // A fresh cluster whose spec.version is refused: nothing runs.
        return blocked(client, hc, config, observed, "VersionRefused", message, now).await;
    };
    let applied = kube_runtime::apply_versions(
        client,
        hc,
        &update.data,
        &etcd.client_urls,
        &config.kube_runtime,
        &versions,
    )
    .await;
    let report = match applied {
        Ok(report) => report,
        // Only the user can resolve these (a namespace someone else holds,
        // a name too long, …), or they pass by themselves (a namespace
        // still terminating): say so on every component and look again
        // later rather than failing the reconcile over and over.
        Err(Error::KubeRuntime(e)) => {
            let reason = match e {
                KubeRuntimeError::NamespaceTaken { .. } => "NamespaceTaken",
                _ => "CannotRender",
            };
            return blocked(client, hc, config, observed, reason, e.to_string(), now).await;
        }
        Err(Error::Other(message)) => {
            return blocked(client, hc, config, observed, "NamespaceTerminating", message, now).await;
        }
        Err(e) => return Err(e),
    };

    for c in &report.components {
        observed.conditions.push(plan::condition(
            &previous.conditions,
            c.component.condition_type(),
            c.readiness.ready,
            c.readiness.reason,
            format!(
                "Deployment {}/{}: {}",
                report.namespace,
                c.component.deployment_name(),
                c.readiness.message
            ),
            generation,
            now,
        ));
    }
    skipped_conditions(hc, &report.endpoint, &previous, &mut observed.conditions, now);
    observed.control_plane_ready = report.ready();
    observed.endpoint = Some(report.endpoint.clone());
    let ready = write_status(client, hc, observed, now).await?;
    if ready {
        Ok(Action::requeue(config.resync))
    } else {
        Ok(Action::requeue(config.settle))
    }
}

/// The control plane could not be applied: every component's condition
/// says why.
async fn blocked(
    client: &Client,
    hc: &HostedCluster,
    config: &HostedOperator,
    mut observed: Observed,
    reason: &str,
    message: String,
    now: &Time,
) -> Result<Action, Error> {
    tracing::warn!(cluster = %hc.name_any(), reason, %message, "hosted control plane not applied (kubernetes runtime)");
    let previous = hc.status.clone().unwrap_or_default();
    for component in ControlPlaneComponent::ALL {
        observed.conditions.push(plan::condition(
            &previous.conditions,
            component.condition_type(),
            false,
            reason,
            message.clone(),
            hc.metadata.generation,
            now,
        ));
    }
    write_status(client, hc, observed, now).await?;
    Ok(Action::requeue(config.resync))
}

/// `AddonsApplied` (and `NodesReady` when nodes are asked for): not done
/// under this runtime, and why.
fn skipped_conditions(
    hc: &HostedCluster,
    endpoint: &str,
    previous: &HostedClusterStatus,
    out: &mut Vec<Condition>,
    now: &Time,
) {
    let generation = hc.metadata.generation;
    out.push(plan::condition(
        &previous.conditions,
        conditions::ADDONS_APPLIED,
        false,
        SKIPPED,
        format!(
            "not applied: under the kubernetes runtime the API server is served at {endpoint}, inside the meta \
             cluster, which this operator does not assume it can reach; add-ons and fleet registration are \
             skipped (the admin kubeconfig Secret works from inside the meta cluster)"
        ),
        generation,
        now,
    ));
    if hc.spec.nodes.as_ref().is_some_and(|n| n.count > 0) {
        out.push(plan::condition(
            &previous.conditions,
            conditions::NODES_READY,
            false,
            SKIPPED,
            format!(
                "spec.nodes is not acted on under the kubernetes runtime: kubelets would join through {endpoint}, \
                 which only the meta cluster reaches"
            ),
            generation,
            now,
        ));
    }
}

/// Builds and writes the status; returns whether the cluster is Ready.
/// Ready here is: valid, etcd ready and every control-plane Deployment
/// rolled out and ready (what this runtime skips does not count).
async fn write_status(
    client: &Client,
    hc: &HostedCluster,
    mut observed: Observed,
    now: &Time,
) -> Result<bool, Error> {
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let previous = hc.status.clone().unwrap_or_default();
    let generation = hc.metadata.generation;
    let upgrade = observed.upgrade.take();
    match upgrade.as_ref().and_then(|u| u.condition.clone()) {
        Some(c) => observed.conditions.push(c),
        // Not spoken about this time (etcd not ready yet): keep the last word.
        None => observed
            .conditions
            .extend(previous.conditions.iter().filter(|c| c.type_ == conditions::UPGRADED).cloned()),
    }
    if !observed.conditions.iter().any(|c| c.type_ == conditions::CERTIFICATES_READY) {
        observed.conditions.extend(
            previous.conditions.iter().filter(|c| c.type_ == conditions::CERTIFICATES_READY).cloned(),
        );
    }
    let upgrading = upgrade.as_ref().is_some_and(|u| u.upgrading);
    let ok = |t: &str| observed.conditions.iter().any(|c| c.type_ == t && c.status == "True");
    let ready = ok(conditions::VALID) && ok(conditions::ETCD_READY) && observed.control_plane_ready;
    let message = if ready {
        "the control plane is ready (kubernetes runtime: add-ons, nodes and fleet registration are skipped, see \
         AddonsApplied)"
            .to_string()
    } else {
        let waiting: Vec<String> = observed
            .conditions
            .iter()
            .filter(|c| c.status != "True" && c.reason != SKIPPED && c.type_ != conditions::UPGRADED)
            .map(|c| format!("{}: {}", c.type_, c.message))
            .collect();
        if waiting.is_empty() {
            "waiting for the first observation".to_string()
        } else {
            waiting.join("; ")
        }
    };
    observed.conditions.push(plan::condition(
        &previous.conditions,
        conditions::READY,
        ready,
        if ready { "Ready" } else { "NotReady" },
        message,
        generation,
        now,
    ));
    observed.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    let was_ready = matches!(
        previous.phase,
        Some(HostedClusterPhase::Ready | HostedClusterPhase::Degraded | HostedClusterPhase::Upgrading)
    );
    let phase = plan::phase(false, upgrading, ready, was_ready);
    // The upgrade plan's, once an apiserver served a version; before, the
    // version is reached when every Deployment has rolled out.
    let version = upgrade
        .as_ref()
        .and_then(|u| u.version.clone())
        .or(previous.version.clone())
        .or_else(|| ready.then(|| hc.spec.version.clone()));
    let previous_version =
        upgrade.as_ref().and_then(|u| u.previous_version.clone()).or(previous.previous_version.clone());
    let certificates = if observed.pki.is_empty() {
        previous.certificates.clone()
    } else {
        certificate_statuses(&name, &observed.pki)
    };
    let status = HostedClusterStatus {
        phase: Some(phase),
        endpoint: observed.endpoint.or(previous.endpoint.clone()),
        admin_kubeconfig_secret: Some(plan::admin_secret_name(&name)),
        version,
        previous_version,
        certificates,
        observed_generation: generation,
        upgrade: upgrade.as_ref().map_or(previous.upgrade.clone(), |u| u.upgrade.clone()),
        // Nothing of these is done by this runtime (see the module docs).
        addons: Vec::new(),
        instances: Vec::new(),
        ready_nodes: None,
        certificates_issued_at: if observed.issued {
            Some(now.clone())
        } else {
            previous.certificates_issued_at.clone()
        },
        handled_rotation: observed.handled_rotation.or(previous.handled_rotation.clone()),
        conditions: observed.conditions,
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
            tracing::info!(cluster = %name, phase = ?phase, runtime = "kubernetes", "hosted cluster phase");
        }
    }
    Ok(ready)
}

pub(crate) fn certificate_statuses(name: &str, pki: &BTreeMap<String, Vec<u8>>) -> Vec<CertificateStatus> {
    ControlPlanePki::from_secret_data(name, pki)
        .and_then(|p| p.expiries())
        .map(|list| {
            list.into_iter()
                .map(|e| CertificateStatus {
                    name: e.name,
                    not_after: Time(Timestamp::from_second(e.not_after.unix_timestamp()).unwrap_or_default()),
                    issuer: None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Deletion: removes `kok-<name>` (the control plane and everything it
/// read). Returns whether it is gone; the caller keeps the finalizer until
/// it is.
pub(crate) async fn delete(client: &Client, hc: &HostedCluster) -> Result<bool, Error> {
    let gone = kube_runtime::delete(client, hc).await?;
    if !gone {
        tracing::info!(
            cluster = %hc.name_any(),
            namespace = %HostedCluster::runtime_namespace(&hc.name_any()),
            "waiting for the control plane's namespace to go"
        );
    }
    Ok(gone)
}
