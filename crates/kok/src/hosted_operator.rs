//! What the HostedCluster operator's two runtimes share: the operator's
//! configuration, the cluster's Secrets, the etcd gate (`EtcdReady`), the
//! certificates (issued, renewed and rotated into the PKI Secret, the admin
//! kubeconfig beside them) and the status write. Both runtimes' controllers
//! (processes on Machines, and Deployments in the meta cluster) import this
//! module; it imports neither.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::kok::{conditions, EtcdCluster, HostedCluster, HostedClusterStatus};
use flotilla_core::conditions::{condition, Wanted};
use flotilla_kok_core::hosted::{self as plan, HostedOperatorConfig};
use flotilla_kok_core::hosted_pki::{self, EtcdCa};
use flotilla_kok_core::hosted_status::{self, Observed};
use flotilla_kok_core::pki::{keys, PkiInputs};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::Error;

/// Field manager of the status, the Secrets and the ManagedCluster.
pub const FIELD_MANAGER: &str = "flotilla-kok";

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
    /// A binary cache root (`<root>/vX.Y.Z/bin`, complete releases only)
    /// whose releases add to `plan.versions`, re-read when a cluster names
    /// a version not known yet (`crate::catalog`).
    pub version_cache: Option<std::path::PathBuf>,
    /// The directory of OCI image tarballs node pools' real nodes import
    /// (`scripts/node-runtime.sh` builds them; it holds the pause image).
    /// Each hosted cluster's nodes also import, while they run, the
    /// tarballs of `clusters/<namespace>.<cluster>` below it
    /// (`flotilla images load`).
    pub node_images_dir: std::path::PathBuf,
}

impl Default for HostedOperator {
    fn default() -> Self {
        Self {
            plan: HostedOperatorConfig::default(),
            resync: Duration::from_secs(10),
            settle: Duration::from_secs(1),
            upgrade_step_deadline: Duration::from_secs(60),
            kube_runtime: crate::kube_runtime::KubeRuntimeConfig::default(),
            version_cache: None,
            node_images_dir: std::path::PathBuf::from("/var/cache/flotilla/images"),
        }
    }
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

/// Reads a Secret of the cluster's namespace (empty when there is none).
pub(crate) async fn read_secret(
    client: &Client,
    hc: &HostedCluster,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let namespace = hc.namespace().unwrap_or_default();
    Ok(secret_data(Api::<Secret>::namespaced(client.clone(), &namespace).get_opt(name).await?))
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

/// The EtcdCluster's client URLs and CA.
pub(crate) struct ReadyEtcd {
    pub(crate) client_urls: Vec<String>,
    pub(crate) ca: EtcdCa,
}

/// The etcd gate: the EtcdCluster, once Available and its CA readable.
/// `EtcdReady` goes into `out` either way.
pub(crate) async fn etcd_ready(
    client: &Client,
    hc: &HostedCluster,
    etcd_name: &str,
    out: &mut Vec<Condition>,
    now: &Time,
) -> Result<Option<ReadyEtcd>, Error> {
    let namespace = hc.namespace().unwrap_or_default();
    let previous = hc.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = hc.metadata.generation;
    let mut say = |ok: bool, reason: &str, message: String| {
        let wanted = Wanted::new(conditions::ETCD_READY, ok, reason, message).generation(generation);
        out.push(condition(previous, wanted, now))
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
        // The etcd's own reason (NotEnoughMachines, ...) when it says one,
        // so whoever waits on the HostedCluster can tell what it waits for.
        let reason = available
            .filter(|c| c.status != "True" && !c.reason.is_empty())
            .map_or("NotAvailable", |c| c.reason.as_str());
        say(false, reason, format!("EtcdCluster {etcd_name} is not available: {why}"));
        return Ok(None);
    }
    let secret_name =
        status.client_secret.clone().unwrap_or_else(|| flotilla_kok_core::etcd::secret_name(etcd_name));
    let data = read_secret(client, hc, &secret_name).await?;
    let text = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
    let (Some(cert_pem), Some(key_pem)) = (text(keys::ETCD_CA_CRT), text(keys::ETCD_CA_KEY)) else {
        say(false, "NoCertificates", format!("Secret {secret_name} has no etcd CA yet"));
        return Ok(None);
    };
    say(true, "Available", format!("EtcdCluster {etcd_name}: {} members", status.client_urls.len()));
    Ok(Some(ReadyEtcd { client_urls: status.client_urls, ca: EtcdCa { cert_pem, key_pem } }))
}

/// The certificates as this reconcile left them.
pub(crate) struct Certificates {
    /// The PKI Secret's data.
    pub(crate) data: BTreeMap<String, Vec<u8>>,
    /// Something was (re)issued.
    pub(crate) issued: bool,
    /// The `rotate-certs` value handled (this time or before).
    pub(crate) handled_rotation: Option<String>,
}

/// Issues, renews or rotates (when the annotation asks) what the PKI
/// Secret lacks for `inputs`, and keeps the admin kubeconfig Secret in
/// step with it (pointing at `reached_at`'s server, checked against its
/// name, when given).
pub(crate) async fn ensure_certificates(
    client: &Client,
    hc: &HostedCluster,
    etcd: &ReadyEtcd,
    inputs: &PkiInputs,
    config: &HostedOperator,
    reached_at: Option<(&str, &str)>,
) -> Result<Certificates, Error> {
    let name = hc.name_any();
    let existing = read_secret(client, hc, &plan::pki_secret_name(&name)).await?;
    let (rotation, rotation_value) = hosted_pki::requested_rotation(hc);
    let update = hosted_pki::pki_data(
        &name,
        &existing,
        &etcd.ca,
        inputs,
        rotation,
        time::OffsetDateTime::now_utc(),
        config.plan.renew_before,
    )
    .map_err(|e| Error::Other(e.to_string()))?;
    let issued = !update.issued.is_empty();
    if issued {
        write_secret(client, hc, &plan::pki_secret_name(&name), &update.data).await?;
        tracing::info!(cluster = %name, issued = ?update.issued, runtime = ?hc.spec.control_plane.runtime,
            "hosted cluster certificates written");
    }
    let mut admin = hosted_pki::admin_kubeconfig(&update.data).unwrap_or_default();
    // Clients outside the meta cluster reach it elsewhere (a NodePort).
    if let Some((server, tls_server_name)) = reached_at {
        admin = hosted_pki::reached_at(&admin, &name, server, tls_server_name).unwrap_or(admin);
    }
    let admin_data = BTreeMap::from([("kubeconfig".to_string(), admin)]);
    if read_secret(client, hc, &plan::admin_secret_name(&name)).await? != admin_data {
        write_secret(client, hc, &plan::admin_secret_name(&name), &admin_data).await?;
    }
    // The rotation is handled once its certificates are written.
    let handled = hc.status.as_ref().and_then(|s| s.handled_rotation.clone());
    Ok(Certificates { data: update.data, issued, handled_rotation: rotation_value.or(handled) })
}

/// Decides the status from what the reconcile observed
/// ([`hosted_status::status`]: one rule for both runtimes) and writes it;
/// returns whether it says Ready.
pub(crate) async fn finish(
    client: &Client,
    hc: &HostedCluster,
    config: &HostedOperator,
    observed: Observed<'_>,
    now: &Time,
) -> Result<bool, Error> {
    let decided = hosted_status::status(hc, observed, &config.plan, now);
    write_status(client, hc, &decided.status).await?;
    Ok(decided.ready)
}

/// Patches the status when it differs from the stored one.
async fn write_status(
    client: &Client,
    hc: &HostedCluster,
    status: &HostedClusterStatus,
) -> Result<(), Error> {
    if hc.status.as_ref() == Some(status) {
        return Ok(());
    }
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let body = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster",
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    });
    Api::<HostedCluster>::namespaced(client.clone(), &namespace)
        .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?;
    let notices = flotilla_kok_core::events::hosted_events(&name, hc.status.as_ref(), status);
    crate::events::publish(client, FIELD_MANAGER, &hc.object_ref(&()), &notices).await;
    if hc.status.as_ref().and_then(|s| s.phase) != status.phase {
        tracing::info!(cluster = %name, phase = ?status.phase, runtime = ?hc.spec.control_plane.runtime,
            "hosted cluster phase");
    }
    Ok(())
}

/// The node bootstrap token (made once) and the kubelets' bootstrap
/// kubeconfig (rewritten when the CA or the endpoint changes).
pub(crate) async fn ensure_bootstrap(
    client: &Client,
    hc: &HostedCluster,
    server: &str,
    ca_pem: &str,
) -> Result<String, Error> {
    let name = hc.name_any();
    let secret = plan::bootstrap_secret_name(&name);
    let existing = read_secret(client, hc, &secret).await?;
    let token = match existing.get("token").map(|t| String::from_utf8_lossy(t).into_owned()) {
        Some(t) if t.contains('.') => t,
        _ => {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).map_err(|e| Error::Other(format!("no randomness: {e}")))?;
            hosted_pki::bootstrap_token(&hex::encode(bytes)).ok_or_else(|| Error::Other("token".into()))?
        }
    };
    let kubeconfig = hosted_pki::bootstrap_kubeconfig(&name, server, ca_pem, &token);
    let data = BTreeMap::from([
        ("token".to_string(), token.clone().into_bytes()),
        ("kubeconfig".to_string(), kubeconfig.into_bytes()),
    ]);
    if data != existing {
        write_secret(client, hc, &secret, &data).await?;
    }
    Ok(token)
}

/// The cluster joins the fleet as a push-mode member (the hub reaches it
/// with its admin kubeconfig Secret).
pub(crate) async fn register_in_fleet(client: &Client, hc: &HostedCluster) -> Result<(), Error> {
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
