//! metrics-server (`sigs.k8s.io/metrics-server`, built by
//! `scripts/metrics-server.sh`) as a host process beside a cluster with
//! real nodes, registered as the `v1beta1.metrics.k8s.io` APIService: it
//! scrapes the real kubelets (`/metrics/resource`) at their InternalIP and
//! the cluster's API serves `metrics.k8s.io` through the aggregation layer
//! (the cluster needs [`crate::ClusterConfig::with_aggregation`]). Killed
//! with its process group on drop.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::Api;
use serde_json::json;

use crate::process::{ManagedProcess, ProcessSpec};
use crate::{Cluster, Error, Result};

/// The release `scripts/metrics-server.sh` builds by default.
pub const METRICS_SERVER_VERSION: &str = "v0.9.1";
/// The shortest `--metric-resolution` metrics-server accepts.
pub const MIN_RESOLUTION: Duration = Duration::from_secs(10);
const FIELD_MANAGER: &str = "flotilla-localkube";
const NAMESPACE: &str = "kube-system";
const NAME: &str = "metrics-server";

/// A running metrics-server and its registration.
pub struct MetricsServer {
    process: ManagedProcess,
    address: Ipv4Addr,
    port: u16,
}

impl MetricsServer {
    /// `$FLOTILLA_METRICS_SERVER`, else the cache's build of
    /// [`METRICS_SERVER_VERSION`] (`FLOTILLA_CACHE` or
    /// `~/.cache/flotilla`, then `metrics-server/<version>/metrics-server`).
    pub fn locate() -> Result<PathBuf> {
        if let Some(path) = std::env::var_os("FLOTILLA_METRICS_SERVER") {
            return Ok(PathBuf::from(path));
        }
        let cache = std::env::var_os("FLOTILLA_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
            home.join(".cache/flotilla")
        });
        let path = cache.join("metrics-server").join(METRICS_SERVER_VERSION).join("metrics-server");
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Config(format!(
                "metrics-server not found at {}: run scripts/metrics-server.sh to build it, \
                 or point FLOTILLA_METRICS_SERVER at a binary",
                path.display()
            )))
        }
    }

    /// Starts metrics-server for `cluster`, listening on `address` (a host
    /// address the cluster's apiserver reaches and that is not loopback,
    /// which an APIService's endpoints may not be: the real nodes' bridge
    /// address), registers it, and waits until the APIService is
    /// Available.
    pub async fn start(cluster: &Cluster, address: Ipv4Addr, resolution: Duration) -> Result<MetricsServer> {
        let program = Self::locate()?;
        let port = crate::ports::free_port().map_err(|e| Error::io(cluster.dir(), e))?;
        let dir = cluster.dir().join("metrics-server");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let kubeconfig = cluster.kubeconfig_path().display().to_string();
        let resolution = resolution.max(MIN_RESOLUTION);
        let spec = ProcessSpec::new(NAME, program, cluster.dir().join("logs/metrics-server.log")).args([
            format!("--secure-port={port}"),
            format!("--bind-address={address}"),
            format!("--cert-dir={}", dir.display()),
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--kubelet-insecure-tls".into(),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--kubelet-use-node-status-port".into(),
            format!("--metric-resolution={}s", resolution.as_secs()),
            format!("--kubelet-request-timeout={}s", (resolution.as_secs() * 8 / 10).max(1)),
            "--v=1".into(),
        ]);
        let process = ManagedProcess::spawn(spec)?;
        let server = MetricsServer { process, address, port };
        server.register(cluster).await?;
        crate::api_service::wait_available(
            &cluster.client(),
            "v1beta1.metrics.k8s.io",
            Duration::from_secs(120),
        )
        .await?;
        Ok(server)
    }

    pub fn address(&self) -> (Ipv4Addr, u16) {
        (self.address, self.port)
    }

    pub fn process(&mut self) -> &mut ManagedProcess {
        &mut self.process
    }

    /// A selector-less Service whose endpoints are this process, and the
    /// APIService pointing at it (TLS unverified: metrics-server serves a
    /// self-signed certificate).
    async fn register(&self, cluster: &Cluster) -> Result<()> {
        let client = cluster.client();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.port}]},
        });
        let endpoints = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "subsets": [{"addresses": [{"ip": self.address.to_string()}],
                         "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}]}],
        });
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": NAME,
                                    "endpointslice.kubernetes.io/managed-by": "flotilla-localkube"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [self.address.to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
        });
        let apiservice = json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                     "service": {"namespace": NAMESPACE, "name": NAME, "port": 443},
                     "insecureSkipTLSVerify": true,
                     "groupPriorityMinimum": 100, "versionPriority": 100},
        });
        let objects = [
            (resource("", "v1", "Service", "services"), Some(NAMESPACE), service, NAME),
            (resource("", "v1", "Endpoints", "endpoints"), Some(NAMESPACE), endpoints, NAME),
            (
                resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
                Some(NAMESPACE),
                slice,
                NAME,
            ),
            (
                resource("apiregistration.k8s.io", "v1", "APIService", "apiservices"),
                None,
                apiservice,
                "v1beta1.metrics.k8s.io",
            ),
        ];
        for (resource, namespace, body, name) in objects {
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                None => Api::all_with(client.clone(), &resource),
            };
            api.patch(name, &params, &Patch::Apply(&body)).await?;
        }
        Ok(())
    }
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}
