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
//! hosted API server. With a ClusterIP Service (the default) it is served
//! only inside the meta cluster (`https://kube-apiserver.kok-<name>.svc:6443`)
//! and the operator, which may run anywhere, does not assume it can reach
//! it: they are skipped, `AddonsApplied` (and `NodesReady` when nodes are
//! asked for) say so, and `Ready` means the control plane is ready. With a
//! NodePort (`KubeRuntimeConfig::expose`) the operator reaches it at a
//! Ready meta node's address, the admin kubeconfig points there (checking
//! the certificate against the Service's name), add-ons are applied and
//! the cluster registers in the fleet as under the process runtime; a
//! NodePool gives it nodes.

use std::collections::BTreeMap;

use flotilla_api::kok::conditions;
use flotilla_api::kok::HostedCluster;
use flotilla_core::conditions::{condition, Wanted};
use flotilla_kok_core::hosted_pki;
use flotilla_kok_core::hosted_status::{self, Observed, Served};
use flotilla_kok_core::kube_runtime::{self as render, ApiExposure, KubeRuntimeError, MetaNode};
use flotilla_kok_core::pki::keys;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::Api;
use kube::{Client, ResourceExt};

use crate::hosted_addons::{business_client, inside_cluster, node_ready};
use crate::hosted_operator::{
    ensure_bootstrap, ensure_certificates, etcd_ready, finish, register_in_fleet, HostedOperator,
};
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
        served: Served::Deployments { endpoint: None, ready: false, inside: None },
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
    // Where clients outside the meta cluster reach the API server: its
    // NodePort on a Ready meta cluster node, once both exist; the admin
    // kubeconfig points there and checks the Service's name.
    let outside = match config.kube_runtime.expose {
        ApiExposure::NodePort => node_port_endpoint(client, &name).await?,
        ApiExposure::ClusterIp => None,
    };
    let server_name = render::apiserver_host(&name);
    let reached_at = outside.as_deref().map(|server| (server, server_name.as_str()));
    let certificates = ensure_certificates(client, hc, &etcd, &inputs, config, reached_at).await?;
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
    let Some(outside) = outside else {
        observed.conditions.extend(hosted_status::skipped_by_runtime(hc, &report.endpoint, now));
        observed.served = Served::Deployments {
            endpoint: Some(report.endpoint.clone()),
            ready: report.ready(),
            inside: None,
        };
        let ready = finish(client, hc, config, observed, now).await?;
        return Ok(Action::requeue(if ready { config.resync } else { config.settle }));
    };

    // Reached through its NodePort: add-ons and fleet registration as in
    // the process runtime, once the control plane is up.
    let mut addons = Vec::new();
    if report.ready() {
        let admin = hosted_pki::admin_kubeconfig(pki)
            .and_then(|a| hosted_pki::reached_at(&a, &name, &outside, &server_name))
            .unwrap_or_default();
        let ca_pem = String::from_utf8_lossy(pki.get(keys::CA_CRT).map(Vec::as_slice).unwrap_or_default())
            .into_owned();
        let token = ensure_bootstrap(client, hc, &outside, &ca_pem).await?;
        match business_client(&admin).await {
            Ok(member) => {
                let inside = inside_cluster(&member, hc, &token, now).await;
                observed.conditions.push(inside.condition);
                addons = inside.addons;
            }
            Err(e) => {
                let wanted = Wanted::new(
                    conditions::ADDONS_APPLIED,
                    false,
                    "NoClient",
                    format!("cannot reach the API server at {outside}: {e}"),
                )
                .generation(generation);
                observed.conditions.push(condition(&previous.conditions, wanted, now));
            }
        }
    } else {
        let wanted = Wanted::new(
            conditions::ADDONS_APPLIED,
            false,
            "WaitingForControlPlane",
            format!("add-ons are applied through {outside} once the control plane is ready"),
        )
        .generation(generation);
        observed.conditions.push(condition(&previous.conditions, wanted, now));
    }
    observed.served =
        Served::Deployments { endpoint: Some(outside), ready: report.ready(), inside: Some(addons) };
    let ready = finish(client, hc, config, observed, now).await?;
    if ready {
        register_in_fleet(client, hc).await?;
    }
    Ok(Action::requeue(if ready { config.resync } else { config.settle }))
}

/// The apiserver's NodePort at the first Ready meta cluster node's
/// InternalIP (`kube_runtime::external_endpoint`), once there are both.
async fn node_port_endpoint(client: &Client, cluster: &str) -> Result<Option<String>, Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), &render::namespace(cluster));
    let Some(service) = services.get_opt(render::APISERVER_SERVICE).await? else { return Ok(None) };
    let node_port = service.spec.and_then(|s| s.ports).and_then(|p| p.first().and_then(|p| p.node_port));
    let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await?.items;
    let nodes: Vec<MetaNode> = nodes
        .iter()
        .map(|n| {
            let status = n.status.as_ref();
            MetaNode {
                name: n.name_any(),
                ready: node_ready(n),
                internal_ip: status
                    .and_then(|s| s.addresses.as_ref())
                    .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
                    .map(|a| a.address.clone()),
            }
        })
        .collect();
    Ok(render::external_endpoint(node_port, &nodes))
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
