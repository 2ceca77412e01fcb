//! The EtcdCluster operator, process runtime: certificates into a Secret,
//! one etcd component per member into its Machine's spec (the node agents
//! run them), and status read from the members themselves over TLS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::kok::{EtcdCluster, Runtime};
use flotilla_api::machine::Machine;
use flotilla_core::kok::etcd::{self as plan, EtcdOperatorConfig, MemberPlan, Observation};
use flotilla_core::kok::pki::keys;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
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

#[derive(Debug, Clone)]
pub struct EtcdOperator {
    pub plan: EtcdOperatorConfig,
    /// How often a cluster's members are probed while nothing changes.
    pub resync: Duration,
    /// How long one request to a member may take.
    pub probe_timeout: Duration,
}

impl Default for EtcdOperator {
    fn default() -> Self {
        Self {
            plan: EtcdOperatorConfig::default(),
            resync: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(3),
        }
    }
}

struct Ctx {
    client: Client,
    config: EtcdOperator,
}

/// Reconciles every EtcdCluster (process runtime) until the watch ends.
pub async fn run(client: Client, config: EtcdOperator) -> Result<(), Error> {
    let clusters: Api<EtcdCluster> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client, config });
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
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    if cluster.spec.runtime != Runtime::Process || cluster.metadata.deletion_timestamp.is_some() {
        // The Kubernetes runtime and deletion are not built yet.
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let machines = Api::<Machine>::all(client.clone()).list(&ListParams::default()).await?.items;
    let members = plan::place(&cluster, &machines, &ctx.config.plan)?;
    let data = ensure_pki(client, &cluster, &members).await?;

    let manager = plan::field_manager(&namespace, &name);
    let component = plan::component_name(&namespace, &name);
    let machine_api: Api<Machine> = Api::all(client.clone());
    for member in &members {
        let want = plan::member_component(&cluster, &members, member, &ctx.config.plan);
        let current = machines.iter().find(|m| m.metadata.name.as_deref() == Some(&member.machine));
        if current.is_some_and(|m| m.spec.components.contains(&want)) {
            continue;
        }
        let body = json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
            "metadata": {"name": member.machine},
            "spec": {"components": [want]},
        });
        machine_api
            .patch(&member.machine, &PatchParams::apply(&manager).force(), &Patch::Apply(&body))
            .await?;
        tracing::info!(cluster = %name, member = %member.name, machine = %member.machine, "etcd member placed");
    }
    // Machines that no longer host a member: giving up our fields removes
    // the component (and only ours: the list is merged by name).
    for m in &machines {
        let machine = m.metadata.name.clone().unwrap_or_default();
        let ours = m.spec.components.iter().any(|c| c.name == component);
        if ours && !members.iter().any(|p| p.machine == machine) {
            let body = json!({
                "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
                "metadata": {"name": machine}, "spec": {},
            });
            machine_api.patch(&machine, &PatchParams::apply(&manager).force(), &Patch::Apply(&body)).await?;
            tracing::info!(cluster = %name, machine = %machine, "etcd member removed from machine");
        }
    }

    let seen = match client_tls(&data) {
        Ok(tls) => observe(&members, &tls, ctx.config.probe_timeout).await,
        Err(e) => {
            tracing::warn!(cluster = %name, error = %e, "no usable client certificate");
            Observation::default()
        }
    };
    let status = plan::status(&cluster, &members, &seen, Time(k8s_openapi::jiff::Timestamp::now()));
    if cluster.status.as_ref() != Some(&status) {
        let body = json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        });
        Api::<EtcdCluster>::namespaced(client.clone(), &namespace)
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
            .await?;
        tracing::info!(
            cluster = %name, phase = ?status.phase, ready = status.ready_members,
            leader = ?status.leader, "etcd status"
        );
    }
    Ok(Action::requeue(ctx.config.resync))
}

/// Reads the cluster's Secret and adds what is missing (the CA once, then
/// per-member and client certificates); returns the data in use.
async fn ensure_pki(
    client: &Client,
    cluster: &EtcdCluster,
    members: &[MemberPlan],
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let secret_name = plan::secret_name(&name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let existing: BTreeMap<String, Vec<u8>> = secrets
        .get_opt(&secret_name)
        .await?
        .and_then(|s| s.data)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let Some(data) = plan::pki_data(&name, &existing, members, time::OffsetDateTime::now_utc())? else {
        return Ok(existing);
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
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(get(keys::ETCD_CA_CRT)?) {
        let cert = cert.map_err(|e| Error::Other(format!("CA certificate: {e}")))?;
        roots.add(cert).map_err(|e| Error::Other(format!("CA certificate: {e}")))?;
    }
    let chain = CertificateDer::pem_slice_iter(get(&keys::crt(plan::CLIENT_LEAF))?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Other(format!("client certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(get(&keys::key(plan::CLIENT_LEAF))?)
        .map_err(|e| Error::Other(format!("client key: {e}")))?;
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

/// Asks every member for its status, and the first that answers for the
/// member list.
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
                if seen.listed.is_none() {
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
