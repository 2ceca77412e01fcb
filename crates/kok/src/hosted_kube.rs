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

use flotilla_api::kok::HostedCluster;
use flotilla_core::conditions::{condition, Wanted};
use flotilla_kok_core::hosted_status::{self, Observed, Served};
use flotilla_kok_core::kube_runtime::{self as render, KubeRuntimeError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

use crate::hosted_operator::{ensure_certificates, etcd_ready, finish, HostedOperator};
use crate::kube_runtime::{self, ControlPlaneComponent};
use crate::Error;

/// One reconcile of a HostedCluster whose `spec.controlPlane.runtime` is
/// `Kubernetes`: etcd gate → certificates → apply into `kok-<name>` →
/// status. `decided` holds what the caller already decided (`Valid`).
pub(crate) async fn reconcile(
    client: &Client,
    hc: &HostedCluster,
    config: &HostedOperator,
    decided: Vec<Condition>,
    now: &Time,
) -> Result<Action, Error> {
    let name = hc.name_any();
    let previous = hc.status.clone().unwrap_or_default();
    let generation = hc.metadata.generation;
    let unread = BTreeMap::new();
    let mut observed = Observed {
        conditions: decided,
        served: Served::Deployments { endpoint: None, ready: false },
        upgrade: None,
        pki: &unread,
        issued: false,
        handled_rotation: None,
    };

    let Some((etcd_name, _)) = hc.spec.etcd.resolve() else {
        return Ok(Action::await_change());
    };
    let Some(etcd) = etcd_ready(client, hc, etcd_name, &mut observed.conditions, now).await? else {
        finish(client, hc, config, observed, now).await?;
        return Ok(Action::requeue(config.settle));
    };

    // Certificates: every kubeconfig points at the apiserver's Service
    // (the other components run in their own pods, so loopback reaches
    // nothing). The apply below rolls every component that reads them.
    let inputs = kube_runtime::pki_inputs(hc)?;
    let certificates = ensure_certificates(client, hc, &etcd, &inputs, config).await?;
    observed.issued = certificates.issued;
    observed.handled_rotation = certificates.handled_rotation.clone();
    let pki = &certificates.data;
    observed.pki = pki;

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
    let Some(versions) = versions else {
        // A fresh cluster whose spec.version is refused: nothing runs.
        return blocked(client, hc, config, observed, "VersionRefused", message, now).await;
    };
    let applied =
        kube_runtime::apply_versions(client, hc, pki, &etcd.client_urls, &config.kube_runtime, &versions)
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
        let message = format!(
            "Deployment {}/{}: {}",
            report.namespace,
            c.component.deployment_name(),
            c.readiness.message
        );
        let wanted =
            Wanted::new(c.component.condition_type(), c.readiness.ready, c.readiness.reason, message)
                .generation(generation);
        observed.conditions.push(condition(&previous.conditions, wanted, now));
    }
    observed.conditions.extend(hosted_status::skipped_by_runtime(hc, &report.endpoint, now));
    observed.served = Served::Deployments { endpoint: Some(report.endpoint.clone()), ready: report.ready() };
    let ready = finish(client, hc, config, observed, now).await?;
    Ok(Action::requeue(if ready { config.resync } else { config.settle }))
}

/// The control plane could not be applied: every component's condition
/// says why.
async fn blocked(
    client: &Client,
    hc: &HostedCluster,
    config: &HostedOperator,
    mut observed: Observed<'_>,
    reason: &str,
    message: String,
    now: &Time,
) -> Result<Action, Error> {
    tracing::warn!(cluster = %hc.name_any(), reason, %message, "hosted control plane not applied (kubernetes runtime)");
    let types = ControlPlaneComponent::ALL.iter().map(|c| c.condition_type());
    observed.conditions.extend(hosted_status::all_not_ready(hc, types, reason, &message, now));
    finish(client, hc, config, observed, now).await?;
    Ok(Action::requeue(config.resync))
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
