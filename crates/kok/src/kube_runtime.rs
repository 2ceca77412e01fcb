//! The `kubernetes` runtime of a hosted control plane, the I/O half: the
//! objects `flotilla_kok_core::kube_runtime` renders are server-side
//! applied into the meta cluster (namespace `kok-<name>`), and each
//! component's readiness is read back from its Deployment's status.
//!
//! The HostedCluster controller calls [`apply`] on every reconcile: the
//! same inputs render the same objects, so applying again changes nothing
//! and rolls no pod; a changed certificate changes the pod-template
//! checksum of exactly the components that read it, and those roll.

use std::collections::BTreeMap;

use flotilla_api::kok::HostedCluster;
use flotilla_kok_core::kube_runtime::{self as render, KubeRuntimeError, RenderedControlPlane};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};

pub use flotilla_kok_core::kube_runtime::{
    endpoint, pki_inputs, ComponentReadiness, ComponentVersions, ControlPlaneComponent, ImageConfig,
    KubeRuntimeConfig,
};

use crate::Error;

/// Field manager of every object the runtime applies.
pub const FIELD_MANAGER: &str = "flotilla-kok-runtime";

/// One component as the meta cluster runs it now.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentReport {
    pub component: ControlPlaneComponent,
    /// From the Deployment's status (see `deployment_readiness`).
    pub readiness: ComponentReadiness,
    /// The checksum just applied to its pod template.
    pub config_checksum: String,
    /// The Deployment's `metadata.generation` after the apply: it moves
    /// only when the applied spec changed.
    pub generation: Option<i64>,
}

/// What [`apply`] did and found.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeRuntimeReport {
    /// `kok-<name>`.
    pub namespace: String,
    /// `https://kube-apiserver.kok-<name>.svc:6443`: the HostedCluster's
    /// `status.endpoint`.
    pub endpoint: String,
    /// The apiserver Service's cluster IP, once allocated.
    pub service_ip: Option<String>,
    /// In `ControlPlaneComponent::ALL` order.
    pub components: Vec<ComponentReport>,
}

impl KubeRuntimeReport {
    /// Every component has rolled out what was applied and is ready.
    pub fn ready(&self) -> bool {
        !self.components.is_empty() && self.components.iter().all(|c| c.readiness.ready)
    }

    pub fn component(&self, component: ControlPlaneComponent) -> Option<&ComponentReport> {
        self.components.iter().find(|c| c.component == component)
    }
}

fn hosted_cluster_name(hc: &HostedCluster) -> Result<&str, Error> {
    Ok(hc.metadata.name.as_deref().filter(|n| !n.is_empty()).ok_or(KubeRuntimeError::NoName)?)
}

/// Server-side applies `hc`'s control plane (namespace, one Secret per
/// component, the apiserver Service, three Deployments) with the default
/// pod configuration (health probes on) and reports each component's
/// readiness. `pki_data` is the control plane's whole Secret data
/// (`ControlPlanePki::to_secret_data`); each component's Secret receives
/// only its own keys.
pub async fn apply(
    client: &Client,
    hc: &HostedCluster,
    pki_data: &BTreeMap<String, Vec<u8>>,
    etcd_servers: &[String],
    images: &ImageConfig,
) -> Result<KubeRuntimeReport, Error> {
    let config = KubeRuntimeConfig { images: images.clone(), ..KubeRuntimeConfig::default() };
    apply_with(client, hc, pki_data, etcd_servers, &config).await
}

/// [`apply`] with every pod setting given (e.g. no health probes where no
/// container really runs).
pub async fn apply_with(
    client: &Client,
    hc: &HostedCluster,
    pki_data: &BTreeMap<String, Vec<u8>>,
    etcd_servers: &[String],
    config: &KubeRuntimeConfig,
) -> Result<KubeRuntimeReport, Error> {
    apply_versions(client, hc, pki_data, etcd_servers, config, &ComponentVersions::new()).await
}

/// [`apply_with`] with each component on the version (image tag)
/// `versions` gives it (`spec.version` for one it does not name): what an
/// upgrade, one component at a time, applies.
pub async fn apply_versions(
    client: &Client,
    hc: &HostedCluster,
    pki_data: &BTreeMap<String, Vec<u8>>,
    etcd_servers: &[String],
    config: &KubeRuntimeConfig,
    versions: &ComponentVersions,
) -> Result<KubeRuntimeReport, Error> {
    let rendered = render::render_versions(hc, pki_data, etcd_servers, config, versions)?;
    let ns = rendered.namespace.as_str();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Some(existing) = namespaces.get_opt(ns).await? {
        render::check_namespace_owner(ns, existing.metadata.annotations.as_ref(), hc)?;
        if existing.metadata.deletion_timestamp.is_some() {
            return Err(Error::Other(format!(
                "namespace {ns} is being deleted; the control plane is applied again once it is gone"
            )));
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    namespaces.patch(ns, &params, &Patch::Apply(&rendered.namespace_object)).await?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for component in &rendered.components {
        secrets.patch(&component.component.secret_name(), &params, &Patch::Apply(&component.secret)).await?;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let service = services
        .patch(render::APISERVER_SERVICE, &params, &Patch::Apply(&rendered.apiserver_service))
        .await?;
    let service_ip = service.spec.and_then(|s| s.cluster_ip).filter(|ip| !ip.is_empty() && ip != "None");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut components = Vec::new();
    for component in &rendered.components {
        let name = component.component.deployment_name();
        let applied = deployments.patch(name, &params, &Patch::Apply(&component.deployment)).await?;
        let readiness = render::deployment_readiness(&applied);
        tracing::debug!(
            namespace = ns,
            deployment = name,
            generation = applied.metadata.generation,
            ready = readiness.ready,
            reason = readiness.reason,
            message = %readiness.message,
            "control-plane deployment applied"
        );
        components.push(ComponentReport {
            component: component.component,
            readiness,
            config_checksum: component.config_checksum.clone(),
            generation: applied.metadata.generation,
        });
    }
    let report = report(&rendered, service_ip, components);
    tracing::info!(
        namespace = ns,
        ready = report.ready(),
        "hosted control plane applied (kubernetes runtime)"
    );
    Ok(report)
}

/// The control plane's Deployments as they are now (`None`: not there),
/// in [`ControlPlaneComponent::ALL`] order: what an upgrade step is judged
/// on. Nothing when the namespace belongs to someone else.
pub async fn deployments(
    client: &Client,
    hc: &HostedCluster,
) -> Result<Vec<(ControlPlaneComponent, Option<Deployment>)>, Error> {
    let ns = render::namespace(hosted_cluster_name(hc)?);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mut out = Vec::new();
    for component in ControlPlaneComponent::ALL {
        out.push((component, deployments.get_opt(component.deployment_name()).await?));
    }
    // Only ours count (the owner annotation is on the namespace).
    if out.iter().any(|(_, d)| d.is_some()) {
        let namespace = Api::<Namespace>::all(client.clone()).get_opt(&ns).await?;
        let ours = namespace
            .is_some_and(|n| render::check_namespace_owner(&ns, n.metadata.annotations.as_ref(), hc).is_ok());
        if !ours {
            return Ok(Vec::new());
        }
    }
    Ok(out)
}

fn report(
    rendered: &RenderedControlPlane,
    service_ip: Option<String>,
    components: Vec<ComponentReport>,
) -> KubeRuntimeReport {
    KubeRuntimeReport {
        namespace: rendered.namespace.clone(),
        endpoint: rendered.endpoint.clone(),
        service_ip,
        components,
    }
}

/// Deletes `hc`'s control plane by deleting its namespace (everything the
/// runtime creates lives there). Returns whether it is all gone; call again
/// until it is (the namespace controller empties the namespace first). A
/// namespace of that name that belongs to someone else is left alone and
/// counts as gone: nothing of `hc`'s is in it.
pub async fn delete(client: &Client, hc: &HostedCluster) -> Result<bool, Error> {
    let ns = render::namespace(hosted_cluster_name(hc)?);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(existing) = namespaces.get_opt(&ns).await? else {
        return Ok(true);
    };
    if let Err(not_ours) = render::check_namespace_owner(&ns, existing.metadata.annotations.as_ref(), hc) {
        tracing::warn!(namespace = %ns, error = %not_ours, "not deleting a namespace another owner holds");
        return Ok(true);
    }
    if existing.metadata.deletion_timestamp.is_some() {
        return Ok(false);
    }
    match namespaces.delete(&ns, &DeleteParams::background()).await {
        Ok(_) => {
            tracing::info!(namespace = %ns, "deleting hosted control plane (kubernetes runtime)");
            Ok(false)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(true),
        Err(e) => Err(e.into()),
    }
}
