//! The EtcdCluster operator's decisions, `Kubernetes` runtime: the members
//! run as a StatefulSet `<cluster>` behind a headless Service `<cluster>`
//! in the EtcdCluster's namespace, so member `i` is always the pod
//! `<cluster>-<i>` at `<cluster>-<i>.<cluster>.<namespace>.svc`.
//!
//! This module renders the objects (JSON for server-side apply, each owned
//! by the EtcdCluster), the member certificates (signed by the same CA the
//! process runtime uses, kept in the cluster's `<cluster>-etcd-pki`
//! Secret), and the status read back from the StatefulSet and its pods;
//! `flotilla_kok::etcd_kube` does the I/O.
//!
//! The pods mount `<cluster>-etcd-members`, which holds the CA certificate
//! and every member's server and peer certificate, never the CA key or the
//! client certificate. Its checksum is a pod-template annotation: etcd
//! reads its certificates at start, so a change must roll the pods.
//!
//! Storage, chosen explicitly by `spec.storage.size`:
//! - set: a `volumeClaimTemplate` of that size (the meta cluster's default
//!   StorageClass provisions one PersistentVolume per member; a member's
//!   data survives its pod). The size is also the backend quota. The claims
//!   are deleted when the EtcdCluster is.
//! - absent: an `emptyDir`. A member's data lives as long as its pod: a
//!   restarted container keeps it, a deleted or evicted pod loses it. Good
//!   for tests and throwaway clusters (and the only choice where nothing
//!   provisions volumes, e.g. kubemark's hollow nodes); not for data you
//!   keep.
//!
//! Not done by this runtime yet: membership changes. The StatefulSet keeps
//! the member count it was created with (`--initial-cluster` names them
//! all); a changed `spec.members` is reported, not acted on. Health comes
//! from the pods' readiness (etcd's `/health` on the metrics port), not
//! from dialing the members: the operator may run outside the meta cluster,
//! where the members' DNS names do not resolve.

use std::collections::BTreeMap;

use base64::Engine as _;
use flotilla_api::kok::{conditions, EtcdCluster, EtcdClusterPhase, EtcdClusterStatus, EtcdMemberStatus};
use flotilla_core::conditions::{condition, Wanted};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::etcd::{self as process, member_name, secret_name, EtcdPlanError};
use crate::pki::{keys, leaves};
use crate::render::{self, etcd_args, EtcdMemberLayout, EtcdPeer, InitialClusterState};
use flotilla_core::pki::{CertificateAuthority, LeafSpec, Usage};

/// Label on every object of one cluster (its name); the StatefulSet selects
/// its pods on it.
pub const CLUSTER_LABEL: &str = "kok.flotilla.io/etcd-cluster";
/// Pod-template annotation: checksum of the members' Secret.
pub const TLS_CHECKSUM_ANNOTATION: &str = "kok.flotilla.io/tls-checksum";
pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;
/// Plain-HTTP `/health` and `/metrics` (the client port demands a client
/// certificate, which a kubelet probe does not present).
pub const METRICS_PORT: u16 = 2381;
/// Where the members' Secret is mounted.
pub const PKI_DIR: &str = "/etc/etcd/pki";
/// Where the data volume is mounted; etcd's data dir is `data` inside it.
pub const DATA_MOUNT: &str = "/var/lib/etcd";
pub const DEFAULT_IMAGE_REPOSITORY: &str = "gcr.io/etcd-development/etcd";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
const POD_NAME_ENV: &str = "POD_NAME";
/// What `--name` and the per-member flags say in the shared pod template:
/// the kubelet expands it to the pod's name, `<cluster>-<i>`.
const POD_NAME_REF: &str = "$(POD_NAME)";

#[derive(Debug, thiserror::Error)]
pub enum EtcdKubeError {
    #[error("the EtcdCluster has no name or namespace")]
    NoName,
    #[error("the EtcdCluster has no uid yet (not read from the API server)")]
    NoUid,
    #[error("spec.storage.size {0:?} is not a Kubernetes quantity, e.g. 8Gi")]
    BadSize(String),
    #[error("the certificates lack {0:?}")]
    MissingKey(String),
    #[error(transparent)]
    Plan(#[from] EtcdPlanError),
}

/// How the members' pods are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdKubeConfig {
    /// Image repository holding `:v<version>` tags (etcd's own releases).
    pub image_repository: String,
    /// `imagePullPolicy`; Kubernetes' default when `None`.
    pub pull_policy: Option<String>,
    /// Readiness and liveness probes. Off only where no container really
    /// runs (kubemark's hollow kubelets in tests).
    pub health_probes: bool,
}

impl Default for EtcdKubeConfig {
    fn default() -> Self {
        Self { image_repository: DEFAULT_IMAGE_REPOSITORY.into(), pull_policy: None, health_probes: true }
    }
}

impl EtcdKubeConfig {
    /// `<repository>:v<version>`; `version` may start with `v`.
    pub fn image(&self, version: &str) -> String {
        format!("{}:v{}", self.image_repository.trim_end_matches('/'), version.trim_start_matches('v'))
    }
}

/// The headless Service (and the StatefulSet) of `cluster`.
pub fn service_name(cluster: &str) -> String {
    cluster.to_string()
}

/// The Secret the pods mount: CA certificate and member certificates only.
pub fn member_secret_name(cluster: &str) -> String {
    format!("{cluster}-etcd-members")
}

/// `<cluster>-<i>.<cluster>.<namespace>.svc`.
pub fn member_host(cluster: &str, namespace: &str, index: u32) -> String {
    format!("{}.{}.{namespace}.svc", member_name(cluster, index), service_name(cluster))
}

pub fn client_url(cluster: &str, namespace: &str, index: u32) -> String {
    format!("https://{}:{CLIENT_PORT}", member_host(cluster, namespace, index))
}

pub fn peer_url(cluster: &str, namespace: &str, index: u32) -> String {
    format!("https://{}:{PEER_PORT}", member_host(cluster, namespace, index))
}

/// The client URLs of members `0..members`: `status.clientUrls`.
pub fn client_urls(cluster: &str, namespace: &str, members: i32) -> Vec<String> {
    (0..u32::try_from(members).unwrap_or(0)).map(|i| client_url(cluster, namespace, i)).collect()
}

/// Names a member's certificates carry: its pod's DNS names in every form a
/// client may use, the Service's (clients that pick any member), and
/// loopback.
pub fn member_sans(cluster: &str, namespace: &str, index: u32) -> Vec<String> {
    let pod = member_name(cluster, index);
    let svc = service_name(cluster);
    let mut out = Vec::new();
    for base in [format!("{pod}.{svc}"), svc.clone()] {
        out.extend([
            format!("{base}.{namespace}.svc"),
            format!("{base}.{namespace}.svc.cluster.local"),
            format!("{base}.{namespace}"),
            base.clone(),
        ]);
    }
    out.extend([pod, "localhost".into(), "127.0.0.1".into()]);
    out
}

fn names(cluster: &EtcdCluster) -> Result<(&str, &str), EtcdKubeError> {
    let name = cluster.metadata.name.as_deref().filter(|n| !n.is_empty());
    let namespace = cluster.metadata.namespace.as_deref().filter(|n| !n.is_empty());
    name.zip(namespace).ok_or(EtcdKubeError::NoName)
}

/// The cluster's Secret data: `existing` plus what is missing (the CA and
/// the client certificate, as in the process runtime, then a server and a
/// peer certificate per member naming its stable DNS names). `None` when
/// nothing is missing.
pub fn pki_data(
    cluster: &str,
    namespace: &str,
    existing: &BTreeMap<String, Vec<u8>>,
    members: i32,
    now: OffsetDateTime,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, EtcdKubeError> {
    let mut data = process::pki_data(cluster, existing, &[], now)?.unwrap_or_else(|| existing.clone());
    let text = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
    let (Some(cert), Some(key)) = (text(keys::ETCD_CA_CRT), text(keys::ETCD_CA_KEY)) else {
        return Err(EtcdKubeError::MissingKey(keys::ETCD_CA_KEY.into()));
    };
    let ca = CertificateAuthority::from_pem(&cert, &key).map_err(EtcdPlanError::from)?;
    for index in 0..u32::try_from(members).unwrap_or(0) {
        let member = member_name(cluster, index);
        let host = member_host(cluster, namespace, index);
        let sans = member_sans(cluster, namespace, index);
        // etcd presents both certificates as a client too (peers, gateway).
        let spec = LeafSpec { usage: Usage::ServerAndClient, ..LeafSpec::server(member.clone(), &sans) };
        for leaf in [leaves::etcd_server(&member), leaves::etcd_peer(&member)] {
            let covers = data.get(&keys::crt(&leaf)).is_some_and(|pem| {
                flotilla_core::pki::inspect_certificate(&String::from_utf8_lossy(pem))
                    .is_ok_and(|c| c.covers(&host, now, time::Duration::ZERO))
            });
            if !covers || !data.contains_key(&keys::key(&leaf)) {
                let issued = ca.issue_at(&spec, now).map_err(EtcdPlanError::from)?;
                data.insert(keys::crt(&leaf), issued.cert_pem.into_bytes());
                data.insert(keys::key(&leaf), issued.key_pem.into_bytes());
            }
        }
    }
    Ok((data != *existing).then_some(data))
}

/// What the pods mount: the CA certificate and members `0..members`'
/// server and peer certificates (no CA key, no client certificate).
pub fn member_secret_data(
    cluster: &str,
    pki: &BTreeMap<String, Vec<u8>>,
    members: i32,
) -> Result<BTreeMap<String, Vec<u8>>, EtcdKubeError> {
    let mut wanted = vec![keys::ETCD_CA_CRT.to_string()];
    for index in 0..u32::try_from(members).unwrap_or(0) {
        let member = member_name(cluster, index);
        for leaf in [leaves::etcd_server(&member), leaves::etcd_peer(&member)] {
            wanted.extend([keys::crt(&leaf), keys::key(&leaf)]);
        }
    }
    wanted
        .into_iter()
        .map(|key| match pki.get(&key) {
            Some(value) => Ok((key, value.clone())),
            None => Err(EtcdKubeError::MissingKey(key)),
        })
        .collect()
}

/// How many members the StatefulSet runs, and why it is not `spec.members`
/// when it is not: a created cluster keeps its membership.
pub fn replicas(cluster: &EtcdCluster, existing: Option<&StatefulSet>) -> (i32, Option<String>) {
    let wanted = cluster.spec.members.max(1);
    let Some(running) = existing.and_then(|s| s.spec.replicas) else {
        return (wanted, None);
    };
    if running == wanted {
        return (wanted, None);
    }
    (
        running,
        Some(format!(
            "spec.members is {wanted} but the cluster was created with {running}: the Kubernetes runtime does \
             not change an etcd cluster's membership yet; set spec.members back to {running}, or restore a \
             backup into a new EtcdCluster with {wanted} members"
        )),
    )
}

/// The EtcdCluster as the owner (controller) of what is rendered for it:
/// the garbage collector deletes those objects with it.
pub fn owner_reference(cluster: &EtcdCluster) -> Result<Value, EtcdKubeError> {
    let (name, _) = names(cluster)?;
    let uid = cluster.metadata.uid.as_deref().filter(|u| !u.is_empty()).ok_or(EtcdKubeError::NoUid)?;
    Ok(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1",
        "kind": "EtcdCluster",
        "name": name,
        "uid": uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }))
}

/// Every object of one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedEtcd {
    /// `<cluster>-etcd-members`.
    pub member_secret: Value,
    /// Headless, publishing not-ready addresses (members find each other
    /// before any is ready).
    pub service: Value,
    pub statefulset: Value,
    /// On the pod template ([`TLS_CHECKSUM_ANNOTATION`]).
    pub tls_checksum: String,
    /// The args of the (one, shared) container.
    pub args: Vec<String>,
}

impl RenderedEtcd {
    /// In apply order: a pod never starts before the Secret it mounts.
    pub fn objects(&self) -> [&Value; 3] {
        [&self.member_secret, &self.service, &self.statefulset]
    }
}

/// The labels of every object, and the StatefulSet's selector.
pub fn selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CLUSTER_LABEL.to_string(), cluster.to_string())])
}

fn labels(cluster: &str) -> Value {
    json!({ CLUSTER_LABEL: cluster, MANAGED_BY_LABEL: "flotilla" })
}

fn probe(liveness: bool) -> Value {
    let mut probe = json!({
        "httpGet": { "path": "/health", "port": METRICS_PORT, "scheme": "HTTP" },
        "periodSeconds": 5,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    });
    if liveness {
        // A member catching up on a big snapshot must not be killed.
        probe["initialDelaySeconds"] = json!(10);
        probe["failureThreshold"] = json!(8);
    }
    probe
}

/// The container's command line: the process runtime's flags
/// (`render::etcd_args`) with the member's own name and URLs left to the
/// kubelet (`$(POD_NAME)`) and `--initial-cluster` naming every stable
/// member.
fn args(cluster: &str, namespace: &str, replicas: i32, quota: Option<u64>) -> Vec<String> {
    let svc = service_name(cluster);
    let me = EtcdPeer {
        name: POD_NAME_REF.into(),
        peer_url: format!("https://{POD_NAME_REF}.{svc}.{namespace}.svc:{PEER_PORT}"),
        client_url: format!("https://{POD_NAME_REF}.{svc}.{namespace}.svc:{CLIENT_PORT}"),
    };
    let layout = EtcdMemberLayout {
        data_dir: format!("{DATA_MOUNT}/data").into(),
        pki_dir: PKI_DIR.into(),
        listen_client_urls: vec![format!("https://0.0.0.0:{CLIENT_PORT}")],
        listen_peer_urls: vec![format!("https://0.0.0.0:{PEER_PORT}")],
        quota_backend_bytes: quota,
        cluster_token: format!("{namespace}-{cluster}"),
    };
    let initial: Vec<String> = (0..u32::try_from(replicas).unwrap_or(0))
        .map(|i| format!("{}={}", member_name(cluster, i), peer_url(cluster, namespace, i)))
        .collect();
    let mut args: Vec<String> = etcd_args(&me, &[], &layout, InitialClusterState::New)
        .into_iter()
        .map(|a| {
            if a.starts_with("--initial-cluster=") {
                format!("--initial-cluster={}", initial.join(","))
            } else {
                a
            }
        })
        .collect();
    args.push(format!("--listen-metrics-urls=http://0.0.0.0:{METRICS_PORT}"));
    args
}

fn secret_object(cluster: &str, namespace: &str, owner: &Value, data: &BTreeMap<String, Vec<u8>>) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let data: serde_json::Map<String, Value> =
        data.iter().map(|(key, value)| (key.clone(), json!(b64.encode(value)))).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": member_secret_name(cluster),
            "namespace": namespace,
            "labels": labels(cluster),
            "ownerReferences": [owner],
        },
        "type": "Opaque",
        "data": data,
    })
}

/// Every object of `cluster` with `replicas` members (see [`replicas`]),
/// from the cluster's Secret data `pki` (see [`pki_data`]).
pub fn render(
    cluster: &EtcdCluster,
    pki: &BTreeMap<String, Vec<u8>>,
    replicas: i32,
    config: &EtcdKubeConfig,
) -> Result<RenderedEtcd, EtcdKubeError> {
    let (name, namespace) = names(cluster)?;
    let owner = owner_reference(cluster)?;
    let size = cluster.spec.storage.as_ref().and_then(|s| s.size.as_ref()).map(|q| q.0.clone());
    let quota = match &size {
        Some(size) => Some(
            flotilla_core::quantity::units(size)
                .ok()
                .and_then(|b| u64::try_from(b).ok())
                .ok_or_else(|| EtcdKubeError::BadSize(size.clone()))?,
        ),
        None => None,
    };
    let member_data = member_secret_data(name, pki, replicas)?;
    let tls_checksum = render::data_checksum(&member_data);
    let args = args(name, namespace, replicas, quota);
    let mut container = json!({
        "name": "etcd",
        "image": config.image(&cluster.spec.version),
        "command": ["etcd"],
        "args": args,
        "env": [{ "name": POD_NAME_ENV, "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.name" } } }],
        "ports": [
            { "name": "client", "containerPort": CLIENT_PORT, "protocol": "TCP" },
            { "name": "peer", "containerPort": PEER_PORT, "protocol": "TCP" },
            { "name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP" },
        ],
        "volumeMounts": [
            { "name": "pki", "mountPath": PKI_DIR, "readOnly": true },
            { "name": "data", "mountPath": DATA_MOUNT },
        ],
    });
    if let Some(policy) = &config.pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    if config.health_probes {
        container["readinessProbe"] = probe(false);
        container["livenessProbe"] = probe(true);
    }
    let mut volumes = vec![json!({
        "name": "pki",
        "secret": { "secretName": member_secret_name(name), "defaultMode": 0o400 },
    })];
    let mut claims = Vec::new();
    match &size {
        Some(size) => claims.push(json!({
            "metadata": { "name": "data", "labels": labels(name) },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": size } },
            },
        })),
        None => volumes.push(json!({ "name": "data", "emptyDir": {} })),
    }
    let selector = selector(name);
    let mut spec = json!({
        "serviceName": service_name(name),
        "replicas": replicas,
        // Every member at once: with OrderedReady, member 0 would wait for
        // a quorum that members 1.. never start to form.
        "podManagementPolicy": "Parallel",
        "selector": { "matchLabels": selector },
        "updateStrategy": { "type": "RollingUpdate" },
        "template": {
            "metadata": {
                "labels": labels(name),
                "annotations": { TLS_CHECKSUM_ANNOTATION: tls_checksum },
            },
            "spec": {
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "affinity": crate::kube_runtime::spread_over_nodes(&selector),
                "containers": [container],
                "volumes": volumes,
            },
        },
    });
    if !claims.is_empty() {
        spec["volumeClaimTemplates"] = json!(claims);
    }
    let statefulset = json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": service_name(name),
            "namespace": namespace,
            "labels": labels(name),
            "ownerReferences": [owner],
        },
        "spec": spec,
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name),
            "namespace": namespace,
            "labels": labels(name),
            "ownerReferences": [owner],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": selector,
            "ports": [
                { "name": "client", "port": CLIENT_PORT, "targetPort": CLIENT_PORT, "protocol": "TCP" },
                { "name": "peer", "port": PEER_PORT, "targetPort": PEER_PORT, "protocol": "TCP" },
            ],
        },
    });
    Ok(RenderedEtcd {
        member_secret: secret_object(name, namespace, &owner, &member_data),
        service,
        statefulset,
        tls_checksum,
        args,
    })
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The StatefulSet has seen its latest spec and every replica runs it.
fn rolled_out(set: &StatefulSet) -> bool {
    let desired = set.spec.replicas.unwrap_or(1);
    let status = set.status.clone().unwrap_or_default();
    status.observed_generation.unwrap_or(0) >= set.metadata.generation.unwrap_or(0)
        && status.updated_replicas.unwrap_or(0) >= desired
        && status.current_revision.is_some()
        && status.current_revision == status.update_revision
}

/// The status from the StatefulSet (as just applied, or `None` before the
/// first apply), its pods and a note from [`replicas`]. Members are the
/// pods `<cluster>-0 .. <cluster>-<replicas-1>`; a member is healthy when
/// its pod is Ready.
pub fn status(
    cluster: &EtcdCluster,
    set: Option<&StatefulSet>,
    pods: &[Pod],
    replicas: i32,
    note: Option<&str>,
    now: Time,
) -> EtcdClusterStatus {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let previous = cluster.status.clone().unwrap_or_default();
    let members: Vec<EtcdMemberStatus> = (0..u32::try_from(replicas).unwrap_or(0))
        .map(|i| {
            let member = member_name(name, i);
            let pod = pods.iter().find(|p| p.metadata.name.as_deref() == Some(member.as_str()));
            EtcdMemberStatus {
                name: member,
                peer_url: Some(peer_url(name, namespace, i)),
                client_url: Some(client_url(name, namespace, i)),
                healthy: pod.is_some_and(pod_ready),
                ..Default::default()
            }
        })
        .collect();
    let ready = i32::try_from(members.iter().filter(|m| m.healthy).count()).unwrap_or(i32::MAX);
    let rolled = set.is_some_and(rolled_out);
    let available = set.is_some() && ready == replicas && replicas > 0;
    let phase = if cluster.metadata.deletion_timestamp.is_some() {
        EtcdClusterPhase::Deleting
    } else if available && rolled && note.is_none() {
        EtcdClusterPhase::Running
    } else if matches!(
        previous.phase,
        Some(EtcdClusterPhase::Running | EtcdClusterPhase::Degraded | EtcdClusterPhase::Scaling)
    ) {
        EtcdClusterPhase::Degraded
    } else {
        EtcdClusterPhase::Provisioning
    };
    let set_name = service_name(name);
    let (reason, message) = if let Some(note) = note {
        ("ScaleUnsupported".to_string(), note.to_string())
    } else if available && rolled {
        (
            "AllMembersReady".to_string(),
            format!("{ready} of {replicas} member pods of StatefulSet {set_name} ready"),
        )
    } else if available {
        ("RollingUpdate".to_string(), format!("StatefulSet {set_name} is rolling out a new pod template"))
    } else {
        let waiting: Vec<&str> = members.iter().filter(|m| !m.healthy).map(|m| m.name.as_str()).collect();
        (
            "MembersNotReady".to_string(),
            format!(
                "{ready} of {replicas} member pods of StatefulSet {set_name} ready; waiting for {} (see `kubectl \
                 -n {namespace} describe pod`)",
                waiting.join(", ")
            ),
        )
    };
    // Clients may use a cluster whose members are all ready, also while
    // its membership differs from spec.members.
    let wanted = Wanted::new(conditions::ETCD_AVAILABLE, available, &reason, message)
        .generation(cluster.metadata.generation);
    let condition = condition(&previous.conditions, wanted, &now);
    let version = set
        .and_then(|s| s.spec.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .and_then(|image| image.rsplit_once(':'))
        .map(|(_, tag)| tag.trim_start_matches('v').to_string())
        .filter(|_| available);
    EtcdClusterStatus {
        phase: Some(phase),
        ready_members: ready,
        leader: None,
        version,
        client_urls: client_urls(name, namespace, replicas),
        client_secret: Some(secret_name(name)),
        observed_generation: cluster.metadata.generation,
        conditions: vec![condition],
        members,
        // Scheduled backups run for the process runtime only.
        ..Default::default()
    }
}

/// The status when the cluster cannot be rendered (a bad size, …): what
/// [`status`] says of the StatefulSet, with `Available` telling why only
/// the user can fix it.
pub fn unrenderable_status(
    cluster: &EtcdCluster,
    set: Option<&StatefulSet>,
    replicas: i32,
    error: &str,
    now: Time,
) -> EtcdClusterStatus {
    let mut status = status(cluster, set, &[], replicas, None, now.clone());
    let previous = cluster.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    for c in status.conditions.iter_mut().filter(|c| c.type_ == conditions::ETCD_AVAILABLE) {
        let wanted = Wanted::new(conditions::ETCD_AVAILABLE, c.status == "True", "CannotRender", error)
            .generation(cluster.metadata.generation);
        *c = condition(previous, wanted, &now);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::kok::EtcdClusterSpec;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;

    fn cluster(spec: Value) -> EtcdCluster {
        let mut base = json!({"members": 3, "version": "3.7.4", "runtime": "Kubernetes"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), spec.as_object()) {
            base.extend(extra.clone());
        }
        let spec: EtcdClusterSpec = serde_json::from_value(base).unwrap();
        let mut c = EtcdCluster::new("main", spec);
        c.metadata.namespace = Some("tenants".into());
        c.metadata.uid = Some("uid-1".into());
        c.metadata.generation = Some(1);
        c
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn pki(members: i32) -> BTreeMap<String, Vec<u8>> {
        pki_data("main", "tenants", &BTreeMap::new(), members, now()).unwrap().unwrap()
    }

    fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        let prefix = format!("{flag}=");
        args.iter().find_map(|a| a.strip_prefix(&prefix))
    }

    #[test]
    fn members_have_stable_names_and_urls() {
        assert_eq!(member_host("main", "tenants", 2), "main-2.main.tenants.svc");
        assert_eq!(
            client_urls("main", "tenants", 2),
            ["https://main-0.main.tenants.svc:2379", "https://main-1.main.tenants.svc:2379"]
        );
        assert_eq!(peer_url("main", "tenants", 0), "https://main-0.main.tenants.svc:2380");
        let sans = member_sans("main", "tenants", 1);
        for name in
            ["main-1.main.tenants.svc", "main-1.main.tenants.svc.cluster.local", "main-1", "main.tenants.svc"]
        {
            assert!(sans.contains(&name.to_string()), "{name}: {sans:?}");
        }
    }

    #[test]
    fn certificates_name_each_member_and_are_issued_once() {
        let data = pki(3);
        for i in 0..3 {
            let member = member_name("main", i);
            for leaf in [leaves::etcd_server(&member), leaves::etcd_peer(&member)] {
                let facts = flotilla_core::pki::inspect_certificate(&String::from_utf8_lossy(
                    &data[&keys::crt(&leaf)],
                ))
                .unwrap();
                assert!(facts.covers(&member_host("main", "tenants", i), now(), time::Duration::ZERO));
                assert!(facts.covers("main.tenants.svc", now(), time::Duration::ZERO));
            }
        }
        // The process runtime's CA and client certificate are there too.
        assert!(data.contains_key(keys::ETCD_CA_KEY) && data.contains_key(&keys::crt(process::CLIENT_LEAF)));
        assert!(pki_data("main", "tenants", &data, 3, now()).unwrap().is_none());
        // A certificate issued for another namespace is reissued, with the same CA.
        let moved = pki_data("main", "other", &data, 3, now()).unwrap().unwrap();
        assert_eq!(moved[keys::ETCD_CA_CRT], data[keys::ETCD_CA_CRT]);
        let leaf = keys::crt(&leaves::etcd_server("main-0"));
        assert_ne!(moved[&leaf], data[&leaf]);
    }

    #[test]
    fn the_pods_mount_no_ca_key_and_no_client_certificate() {
        let data = member_secret_data("main", &pki(3), 3).unwrap();
        assert_eq!(data.len(), 1 + 3 * 4);
        assert!(data.contains_key(keys::ETCD_CA_CRT));
        assert!(!data.contains_key(keys::ETCD_CA_KEY));
        assert!(!data.contains_key(&keys::key(process::CLIENT_LEAF)));
        assert!(matches!(member_secret_data("main", &pki(1), 3), Err(EtcdKubeError::MissingKey(_))));
    }

    #[test]
    fn renders_a_headless_service_and_a_statefulset_owned_by_the_cluster() {
        let c = cluster(json!({}));
        let r = render(&c, &pki(3), 3, &EtcdKubeConfig::default()).unwrap();
        for object in r.objects() {
            assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], "uid-1", "{object}");
            assert_eq!(object["metadata"]["ownerReferences"][0]["kind"], "EtcdCluster");
            assert_eq!(object["metadata"]["namespace"], "tenants");
        }
        assert_eq!(r.service["spec"]["clusterIP"], "None");
        assert_eq!(r.service["spec"]["publishNotReadyAddresses"], true);
        let sts = &r.statefulset;
        assert_eq!(
            (sts["metadata"]["name"].as_str(), sts["spec"]["serviceName"].as_str()),
            (Some("main"), Some("main"))
        );
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        let template = &sts["spec"]["template"];
        assert_eq!(template["metadata"]["annotations"][TLS_CHECKSUM_ANNOTATION], r.tls_checksum.as_str());
        let container = &template["spec"]["containers"][0];
        assert_eq!(container["image"], "gcr.io/etcd-development/etcd:v3.7.4");
        assert_eq!(container["readinessProbe"]["httpGet"]["port"], METRICS_PORT);
        assert_eq!(
            flag(&r.args, "--initial-cluster"),
            Some(
                "main-0=https://main-0.main.tenants.svc:2380,main-1=https://main-1.main.tenants.svc:2380,\
                 main-2=https://main-2.main.tenants.svc:2380"
            )
        );
        assert_eq!(flag(&r.args, "--name"), Some("$(POD_NAME)"));
        assert_eq!(
            flag(&r.args, "--advertise-client-urls"),
            Some("https://$(POD_NAME).main.tenants.svc:2379")
        );
        assert_eq!(flag(&r.args, "--listen-client-urls"), Some("https://0.0.0.0:2379"));
        assert_eq!(flag(&r.args, "--cert-file"), Some("/etc/etcd/pki/etcd-member-$(POD_NAME)-server.crt"));
        assert_eq!(flag(&r.args, "--initial-cluster-state"), Some("new"));
        assert_eq!(flag(&r.args, "--initial-cluster-token"), Some("tenants-main"));
        // The per-member file names the args expand to are keys of the mounted Secret.
        let keys_mounted = r.member_secret["data"].as_object().unwrap();
        assert!(keys_mounted.contains_key("etcd-member-main-2-server.crt"));
        assert!(keys_mounted.contains_key("etcd-member-main-2-peer.key"));
        // No size: an emptyDir, no claim, no quota.
        let volumes = template["spec"]["volumes"].as_array().unwrap();
        assert!(volumes.iter().any(|v| v["name"] == "data" && v["emptyDir"].is_object()));
        assert!(sts["spec"].get("volumeClaimTemplates").is_none());
        assert_eq!(flag(&r.args, "--quota-backend-bytes"), None);

        let config =
            EtcdKubeConfig { health_probes: false, pull_policy: Some("Never".into()), ..Default::default() };
        let r = render(&c, &pki(3), 3, &config).unwrap();
        let container = &r.statefulset["spec"]["template"]["spec"]["containers"][0];
        assert!(container.get("readinessProbe").is_none() && container.get("livenessProbe").is_none());
        assert_eq!(container["imagePullPolicy"], "Never");
    }

    #[test]
    fn a_size_asks_for_a_claim_per_member_and_sets_the_quota() {
        let c = cluster(json!({"storage": {"size": "2Gi"}}));
        let r = render(&c, &pki(3), 3, &EtcdKubeConfig::default()).unwrap();
        let claims = r.statefulset["spec"]["volumeClaimTemplates"].as_array().unwrap();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0]["metadata"]["name"], "data");
        assert_eq!(claims[0]["spec"]["resources"]["requests"]["storage"], "2Gi");
        let volumes = r.statefulset["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        assert!(!volumes.iter().any(|v| v["name"] == "data"));
        assert_eq!(flag(&r.args, "--quota-backend-bytes"), Some("2147483648"));
        let bad = cluster(json!({"storage": {"size": "lots"}}));
        assert!(matches!(
            render(&bad, &pki(3), 3, &EtcdKubeConfig::default()),
            Err(EtcdKubeError::BadSize(_))
        ));
    }

    #[test]
    fn the_checksum_follows_the_member_certificates_only() {
        let c = cluster(json!({}));
        let data = pki(3);
        let base = render(&c, &data, 3, &EtcdKubeConfig::default()).unwrap();
        assert_eq!(render(&c, &data, 3, &EtcdKubeConfig::default()).unwrap(), base);
        let mut client_renewed = data.clone();
        client_renewed.insert(keys::crt(process::CLIENT_LEAF), b"renewed".to_vec());
        assert_eq!(
            render(&c, &client_renewed, 3, &EtcdKubeConfig::default()).unwrap().tls_checksum,
            base.tls_checksum
        );
        let mut member_renewed = data;
        member_renewed.insert(keys::crt(&leaves::etcd_peer("main-1")), b"renewed".to_vec());
        assert_ne!(
            render(&c, &member_renewed, 3, &EtcdKubeConfig::default()).unwrap().tls_checksum,
            base.tls_checksum
        );
    }

    #[test]
    fn unowned_or_unnamed_clusters_are_refused() {
        let mut c = cluster(json!({}));
        c.metadata.uid = None;
        assert!(matches!(render(&c, &pki(3), 3, &EtcdKubeConfig::default()), Err(EtcdKubeError::NoUid)));
        c.metadata.namespace = None;
        assert!(matches!(owner_reference(&c), Err(EtcdKubeError::NoName)));
    }

    fn statefulset(replicas: i32, ready: bool) -> StatefulSet {
        let mut s: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "main", "generation": 2},
            "spec": {"replicas": replicas, "serviceName": "main", "selector": {}, "template": {
                "spec": {"containers": [{"name": "etcd", "image": "gcr.io/etcd-development/etcd:v3.7.4"}]}}},
        }))
        .unwrap();
        s.status = Some(StatefulSetStatus {
            observed_generation: Some(if ready { 2 } else { 1 }),
            replicas,
            updated_replicas: Some(replicas),
            ready_replicas: Some(replicas),
            current_revision: Some("r1".into()),
            update_revision: Some("r1".into()),
            ..Default::default()
        });
        s
    }

    fn pod(name: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    #[test]
    fn status_comes_from_the_pods() {
        let c = cluster(json!({}));
        let t = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
        let set = statefulset(3, true);
        let pods = [pod("main-0", true), pod("main-1", false), pod("main-2", true)];
        let s = status(&c, Some(&set), &pods, 3, None, t.clone());
        assert_eq!((s.phase, s.ready_members), (Some(EtcdClusterPhase::Provisioning), 2));
        assert_eq!(s.conditions[0].status, "False");
        assert!(s.conditions[0].message.contains("waiting for main-1"), "{}", s.conditions[0].message);
        assert_eq!(s.client_urls.len(), 3);
        assert_eq!(s.client_secret.as_deref(), Some("main-etcd-pki"));
        assert_eq!(s.version, None);

        let pods = [pod("main-0", true), pod("main-1", true), pod("main-2", true)];
        let mut running = c.clone();
        running.status = Some(status(&c, Some(&set), &pods, 3, None, t.clone()));
        let s = running.status.clone().unwrap();
        assert_eq!((s.phase, s.ready_members), (Some(EtcdClusterPhase::Running), 3));
        assert_eq!(
            (s.conditions[0].status.as_str(), s.conditions[0].reason.as_str()),
            ("True", "AllMembersReady")
        );
        assert_eq!(s.version.as_deref(), Some("3.7.4"));
        assert!(s.members.iter().all(|m| m.healthy && m.client_url.is_some()));

        // A member lost after running: degraded; the transition time moves.
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_100).unwrap());
        let s = status(&running, Some(&set), &pods[..2], 3, None, later.clone());
        assert_eq!(s.phase, Some(EtcdClusterPhase::Degraded));
        assert_eq!(s.conditions[0].last_transition_time, later);
        // Rolling a new template with every pod ready: available, not Running.
        let s = status(&running, Some(&statefulset(3, false)), &pods, 3, None, later.clone());
        assert_eq!(
            (s.conditions[0].status.as_str(), s.conditions[0].reason.as_str()),
            ("True", "RollingUpdate")
        );
        assert_eq!(s.conditions[0].last_transition_time, t);
        // Nothing applied yet.
        let s = status(&c, None, &[], 3, None, t);
        assert_eq!((s.phase, s.ready_members), (Some(EtcdClusterPhase::Provisioning), 0));
    }

    #[test]
    fn a_created_cluster_keeps_its_membership() {
        let c = cluster(json!({}));
        assert_eq!(replicas(&c, None), (3, None));
        assert_eq!(replicas(&c, Some(&statefulset(3, true))), (3, None));
        let (n, note) = replicas(&c, Some(&statefulset(1, true)));
        assert_eq!(n, 1);
        let note = note.unwrap();
        assert!(note.contains("set spec.members back to 1"), "{note}");
        let t = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
        let s = status(&c, Some(&statefulset(1, true)), &[pod("main-0", true)], 1, Some(&note), t);
        assert_eq!(s.conditions[0].reason, "ScaleUnsupported");
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.phase, Some(EtcdClusterPhase::Provisioning));
    }

    #[test]
    fn an_unrenderable_cluster_says_why() {
        let c = cluster(json!({}));
        let t = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
        let s = unrenderable_status(&c, None, 3, "spec.storage: bad size", t.clone());
        assert_eq!(
            (
                s.conditions[0].status.as_str(),
                s.conditions[0].reason.as_str(),
                s.conditions[0].message.as_str()
            ),
            ("False", "CannotRender", "spec.storage: bad size")
        );
        assert_eq!(s.conditions[0].last_transition_time, t);
        assert_eq!(s.phase, Some(EtcdClusterPhase::Provisioning));
    }
}
