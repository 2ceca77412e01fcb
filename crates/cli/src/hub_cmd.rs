//! `flotilla hub install | run`: Flotilla's resources on the hub, and the
//! hub's controllers and Kube-on-Kube operators (leader-elected), with the
//! policy admission webhook on every replica.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::hub_kubeconfig::HubKubeconfig;

#[derive(Subcommand, Debug)]
pub enum HubCommand {
    /// Apply Flotilla's CRDs and RBAC to the hub (idempotent).
    Install(HubKubeconfig),
    /// Run the hub controllers (leader-elected: extra replicas stand by).
    Run(Box<HubRunArgs>),
}

#[derive(Args, Debug)]
pub struct HubRunArgs {
    #[command(flatten)]
    pub hub: HubKubeconfig,
    /// Accept every cluster that asks to join, without `flotilla cluster accept`.
    #[arg(long)]
    pub auto_accept: bool,
    /// Seconds a heartbeat may be late (beyond the cluster's lease duration)
    /// before the cluster is marked Unknown and tainted unreachable.
    #[arg(long, default_value_t = 10)]
    pub grace_seconds: u64,
    /// Serve the admission webhook that rejects malformed policies (unknown
    /// or unsupported fields, inconsistent settings) on this address, e.g.
    /// 0.0.0.0:9443. Every replica serves it, leader or not.
    #[arg(long, value_name = "ADDR", requires = "webhook_url")]
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// How the hub's API server reaches the webhook: https://HOST:PORT, where
    /// HOST (an IP address or DNS name reaching every replica) is put in the
    /// webhook's serving certificate. Needs --webhook-listen.
    #[arg(long, value_name = "URL", requires = "webhook_listen")]
    pub webhook_url: Option<String>,
    /// Serve member clusters through the hub (the aggregated API
    /// proxy.flotilla.io: `kubectl --server https://HUB/apis/proxy.flotilla.io/v1alpha1/clusters/C/proxy`,
    /// `flotilla get pods --cluster C`) on this address, e.g. 0.0.0.0:9444.
    /// The leader serves it; the hub's API server needs the aggregation layer.
    #[arg(long, value_name = "ADDR", requires = "proxy_advertise")]
    pub proxy_listen: Option<std::net::SocketAddr>,
    /// The address the hub's API server reaches the proxy at (registered as
    /// its APIService's endpoint; not loopback). Needs --proxy-listen.
    #[arg(long, value_name = "IP", requires = "proxy_listen")]
    pub proxy_advertise: Option<std::net::IpAddr>,
    /// This replica's name in leader election (default: HOSTNAME-PID). It
    /// must differ between replicas that may run at the same time; a
    /// supervisor that restarts its one replica only after it exited may
    /// keep it fixed, so the restarted process takes its lease back at once
    /// instead of waiting for it to expire.
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    #[command(flatten)]
    pub failover: FailoverArgs,
    #[command(flatten)]
    pub opt_in: OptInArgs,
    /// How long replicas may stay Pending as unschedulable in a member
    /// before they move to clusters with room (divisions by available
    /// replicas only; Karmada's descheduler default), e.g. 30s, 5m, 1h.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub unschedulable_threshold: Duration,
    /// How a PropagationPolicy and a ClusterPropagationPolicy selecting the
    /// same template rank: `karmada` (default; any PropagationPolicy first,
    /// then priority within a kind) or `priority` (the highest priority of
    /// either kind, a PropagationPolicy first on a tie: Flotilla's order
    /// before Karmada parity). Preemption follows the same order.
    #[arg(long, value_enum, default_value_t = PolicyOrderArg::Karmada)]
    pub policy_order: PolicyOrderArg,
    /// How often each FederatedHPA is evaluated (HPA's and Karmada's 15 s);
    /// a changed usage report also brings it forward, at most every 5 s.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_sync_period)]
    pub autoscaling_sync: Duration,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g.
    /// 0.0.0.0:9464. Every replica serves it; the gauges read from the
    /// controllers' caches (clusters by condition, heartbeat age, etcd,
    /// certificates) come from the leader only. Off by default: tests and
    /// local fleets run several hubs on one host. Alert rules:
    /// deploy/prometheus/flotilla-alerts.yaml.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub kok: KokArgs,
}

/// `--policy-order`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyOrderArg {
    Karmada,
    Priority,
}

impl PolicyOrderArg {
    pub fn order(self) -> flotilla_apps_core::selection::PolicyOrder {
        match self {
            PolicyOrderArg::Karmada => flotilla_apps_core::selection::PolicyOrder::Karmada,
            PolicyOrderArg::Priority => flotilla_apps_core::selection::PolicyOrder::PriorityFirst,
        }
    }
}

/// A duration of at least a second (a sync period of 0 would spin).
fn parse_sync_period(s: &str) -> Result<Duration, String> {
    let period = parse_duration(s)?;
    if period.is_zero() {
        return Err(format!("{s:?}: the sync period must be at least 1s"));
    }
    Ok(period)
}

/// `90`, `90s`, `5m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => s.split_at(at),
        None => (s, "s"),
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?} is not a duration (e.g. 30s, 5m, 1h)")),
    };
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 5m, 1h)"))?;
    Ok(Duration::from_secs(n.saturating_mul(seconds)))
}

/// Which applications the fleet may manage (README "Migrating existing
/// workloads").
#[derive(Args, Debug, Clone)]
pub struct OptInArgs {
    /// Manage only opted-in applications: templates labelled
    /// `apps.flotilla.io/managed=true`, or in a namespace so labelled or
    /// listed with --opt-in-namespace (a template labelled `...=false`
    /// stays out). Others are not dispatched (reason `NotOptedIn` on their
    /// binding, or an Event on the template) and their members are left
    /// untouched. Off by default: every template a policy selects is managed.
    #[arg(long)]
    pub require_opt_in: bool,
    /// A namespace whose applications are opted in as a whole (repeat for
    /// several). Needs --require-opt-in.
    #[arg(long = "opt-in-namespace", value_name = "NAMESPACE", requires = "require_opt_in")]
    pub namespaces: Vec<String>,
}

impl OptInArgs {
    pub fn settings(&self) -> flotilla_apps_core::migration::OptIn {
        flotilla_apps_core::migration::OptIn {
            required: self.require_opt_in,
            namespaces: self.namespaces.iter().cloned().collect(),
        }
    }
}

/// How the hub treats unhealthy clusters (see README "Faults").
#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Seconds a template stays on a cluster tainted not-ready or
    /// unreachable before its replicas move, for policies that do not
    /// tolerate those taints themselves (Kubernetes' and Karmada's default,
    /// 300, rides out API restarts and network blips). 0 moves at once.
    #[arg(long, value_name = "SECONDS", default_value_t = flotilla_apps_core::failover::DEFAULT_TOLERATION_SECONDS)]
    pub default_toleration_seconds: i64,
    /// Halt failover while more than this share of the clusters is
    /// unhealthy at once (the hub's view or a shared dependency is the
    /// likelier cause). 1.0 never halts on share alone.
    #[arg(long, value_name = "SHARE", default_value_t = flotilla_apps_core::failover::DEFAULT_DISRUPTION_SHARE,
        value_parser = parse_share)]
    pub disruption_share: f64,
    /// Seconds a cluster must be healthy again before replicas that failed
    /// over from it return to the division their policy asks for.
    #[arg(long, value_name = "SECONDS", default_value_t = flotilla_apps_core::failover::DEFAULT_RETURN_AFTER.as_secs())]
    pub return_after_seconds: u64,
    /// Extra replicas a move may run beyond the template's count: a count
    /// or a percentage of the replicas (at least 1).
    #[arg(long, value_name = "N|P%", default_value = "25%")]
    pub max_surge: flotilla_apps_core::failover::MaxSurge,
}

impl FailoverArgs {
    pub fn settings(&self) -> flotilla_apps_core::failover::FailoverSettings {
        flotilla_apps_core::failover::FailoverSettings {
            default_toleration_seconds: Some(self.default_toleration_seconds),
            disruption_share: self.disruption_share,
            return_after: Duration::from_secs(self.return_after_seconds),
            max_surge: self.max_surge,
            ..Default::default()
        }
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share between 0.0 and 1.0 (e.g. 0.55)")),
    }
}

/// Settings of the Kube-on-Kube operators (EtcdCluster, HostedCluster).
#[derive(Args, Debug, Clone)]
pub struct KokArgs {
    /// A Kubernetes version hosted clusters may run, and the directory on
    /// the machines holding its kube-apiserver, kube-controller-manager,
    /// kube-scheduler and kubemark. Repeat for several versions; these win
    /// over the binary cache's.
    #[arg(long = "kok-version", value_name = "VERSION=DIR")]
    pub versions: Vec<String>,
    /// A binary cache (`DIR/vX.Y.Z/bin`, as `flotilla k8s-binaries` builds
    /// it) whose complete releases hosted clusters may also run. It is read
    /// again when a cluster names a version not known yet, so a release
    /// built while the hub runs needs no restart. Default: Flotilla's cache
    /// (~/.cache/flotilla/kubernetes).
    #[arg(long, value_name = "DIR")]
    pub kok_version_cache: Option<PathBuf>,
    /// Directory holding etcd on the machines (default: the binary cache).
    #[arg(long, value_name = "DIR")]
    pub etcd_bin_dir: Option<PathBuf>,
    /// The flotilla binary on the machines (it joins worker kubelets and
    /// dumps and loads one tenant's etcd keys); default: this binary.
    #[arg(long, value_name = "PATH")]
    pub flotilla_binary: Option<PathBuf>,
    /// Ports the operators hand out on machines, FIRST-LAST.
    #[arg(long, value_name = "FIRST-LAST", default_value = "33000-39999")]
    pub kok_port_range: String,
    /// Ports the etcd operator hands out to members, FIRST-LAST.
    #[arg(long, value_name = "FIRST-LAST", default_value = "32000-32767")]
    pub etcd_port_range: String,
    /// Seconds an upgrade step may take to become healthy before the
    /// upgrade rolls back.
    #[arg(long, default_value_t = 60)]
    pub upgrade_step_seconds: u64,
    /// `Kubernetes`-runtime clusters: the registry of the control-plane
    /// images (`REGISTRY/kube-apiserver:vX.Y.Z` ...) and of etcd's
    /// (`REGISTRY/etcd:vX.Y.Z`). `flotilla.local` with
    /// `--kok-image-pull-policy Never` uses the local images of
    /// scripts/control-plane-images.sh on real nodes. Default: the upstream
    /// registries.
    #[arg(long, value_name = "REGISTRY")]
    pub kok_image_registry: Option<String>,
    /// `imagePullPolicy` of those images (Always, IfNotPresent, Never).
    #[arg(long, value_name = "POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub kok_image_pull_policy: Option<String>,
    /// How a `Kubernetes`-runtime cluster's API server is reached:
    /// `cluster-ip` (inside the meta cluster only; add-ons, nodes and fleet
    /// registration are skipped) or `node-port` (at a Ready meta node's
    /// address, so the operator applies add-ons, registers the cluster and
    /// NodePools can give it nodes).
    #[arg(long, value_name = "HOW", default_value = "cluster-ip", value_parser = ["cluster-ip", "node-port"])]
    pub kok_api_exposure: String,
}

impl KokArgs {
    /// The operators' configurations.
    pub fn operators(
        &self,
    ) -> anyhow::Result<(flotilla_kok::etcd::EtcdOperator, flotilla_kok::hosted::HostedOperator)> {
        let cache = flotilla_localkube::Binaries::default_dir();
        let mut versions = std::collections::BTreeMap::new();
        for v in &self.versions {
            let (version, dir) = v.split_once('=').with_context(|| {
                format!("--kok-version {v}: expected VERSION=DIR, e.g. 1.37.2=/opt/k8s/bin")
            })?;
            versions.insert(version.trim_start_matches('v').to_string(), PathBuf::from(dir));
        }
        // FLOTILLA_K8S_BIN names the default version's directory outside
        // the cache; without it the cache's releases are found by scanning.
        if versions.is_empty() && std::env::var_os("FLOTILLA_K8S_BIN").is_some() {
            versions.insert(
                flotilla_localkube::DEFAULT_K8S_VERSION.trim_start_matches('v').to_string(),
                cache.clone(),
            );
        }
        let range = |flag: &str, text: &str| {
            text.split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
                .filter(|(a, b)| a < b)
                .map(|(a, b)| a..=b)
                .with_context(|| format!("{flag} {text}: expected FIRST-LAST, e.g. 33000-39999"))
        };
        let ports = range("--kok-port-range", &self.kok_port_range)?;
        let etcd_ports = range("--etcd-port-range", &self.etcd_port_range)?;
        let flotilla_binary = match &self.flotilla_binary {
            Some(p) => p.clone(),
            None => std::env::current_exe().context("finding this binary")?,
        };
        let mut etcd = flotilla_kok::etcd::EtcdOperator::default();
        etcd.plan.bin_dir = self.etcd_bin_dir.clone().unwrap_or(cache);
        etcd.plan.ports = etcd_ports;
        etcd.plan.flotilla_binary = flotilla_binary.clone();
        let mut hosted = flotilla_kok::hosted::HostedOperator::default();
        hosted.plan.versions = versions;
        hosted.plan.port_range = ports;
        hosted.plan.flotilla_binary = flotilla_binary;
        hosted.upgrade_step_deadline = Duration::from_secs(self.upgrade_step_seconds);
        hosted.version_cache =
            Some(self.kok_version_cache.clone().unwrap_or_else(flotilla_localkube::Binaries::cache_root));
        hosted.node_images_dir = flotilla_localkube::real_node::NodeImages::default_dir();
        if let Some(registry) = &self.kok_image_registry {
            hosted.kube_runtime.images.registry = registry.clone();
            etcd.kube.image_repository = format!("{}/etcd", registry.trim_end_matches('/'));
        }
        if let Some(policy) = &self.kok_image_pull_policy {
            hosted.kube_runtime.images.pull_policy = Some(policy.clone());
            etcd.kube.pull_policy = Some(policy.clone());
        }
        if self.kok_api_exposure == "node-port" {
            hosted.kube_runtime.expose = flotilla_kok_core::kube_runtime::ApiExposure::NodePort;
        }
        Ok((etcd, hosted))
    }
}

pub async fn hub(cmd: HubCommand) -> anyhow::Result<bool> {
    match cmd {
        HubCommand::Install(hub) => {
            let client = hub.client().await?;
            flotilla_hub::install(&client).await.with_context(|| {
                format!("installing on the hub {}", hub.source().map(|s| s.to_string()).unwrap_or_default())
            })?;
            println!("Flotilla's CRDs and RBAC are installed on the hub.");
            Ok(true)
        }
        HubCommand::Run(args) => {
            let client = args.hub.client().await?;
            let identity = args.identity.clone().unwrap_or_else(|| {
                format!(
                    "{}-{}",
                    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
                    std::process::id()
                )
            });
            let webhook = match (args.webhook_listen, args.webhook_url) {
                (Some(listen), Some(url)) => Some(flotilla_hub::webhook::WebhookConfig { listen, url }),
                _ => None,
            };
            let metrics = match args.metrics_addr {
                Some(addr) => Some(flotilla_metrics::serve(addr).await?),
                None => None,
            };
            let serve_metrics = async {
                match metrics {
                    Some(metrics) => metrics.run().await,
                    None => std::future::pending().await,
                }
            };
            // The webhook runs on every replica; the controllers only on the leader.
            let serve_webhook = async {
                match webhook {
                    Some(webhook) => flotilla_hub::webhook::serve(client.clone(), webhook).await,
                    None => std::future::pending().await,
                }
            };
            let config = flotilla_hub::HubConfig {
                auto_accept: args.auto_accept,
                grace: Duration::from_secs(args.grace_seconds),
                failover: args.failover.settings(),
                opt_in: args.opt_in.settings(),
                deschedule: flotilla_apps_core::deschedule::DescheduleSettings {
                    unschedulable_threshold: args.unschedulable_threshold,
                },
                autoscaling_sync: args.autoscaling_sync,
                policy_order: args.policy_order.order(),
                proxy: match (args.proxy_listen, args.proxy_advertise) {
                    (Some(listen), Some(advertise)) => {
                        Some(flotilla_hub::proxy::ProxyConfig { listen, advertise })
                    }
                    _ => None,
                },
                ..Default::default()
            };
            let (etcd, hosted) = args.kok.operators()?;
            // Only the leader runs the controllers. A leader that loses the
            // lease (the API went away, or another replica took it) stops
            // them and competes again; the process keeps running.
            let controllers = flotilla_hub::leader::run_elected(client.clone(), identity.clone(), || {
                let (client, config, etcd, hosted) =
                    (client.clone(), config.clone(), etcd.clone(), hosted.clone());
                async move {
                    tokio::select! {
                        r = flotilla_hub::run(client.clone(), config) => r.map_err(anyhow::Error::from),
                        r = flotilla_kok::etcd::run(client.clone(), etcd) => r.map_err(anyhow::Error::from),
                        r = flotilla_kok::hosted::run(client.clone(), hosted.clone()) => r.map_err(anyhow::Error::from),
                        r = flotilla_kok::node_pool::run(client, hosted) => r.map_err(anyhow::Error::from),
                    }
                }
            });
            let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = serve_webhook => {
                    r.context("serving the policy admission webhook")?;
                    bail!("the policy admission webhook stopped");
                }
                r = serve_metrics => {
                    r.context("serving metrics")?;
                    bail!("the metrics endpoint stopped");
                }
                () = controllers => {},
                _ = tokio::signal::ctrl_c() => {},
                _ = sigterm.recv() => {},
            }
            // The controllers have stopped (their future is dropped): a
            // standby may take over now.
            flotilla_hub::leader::release(client, &identity).await;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_read_as_durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("90", Some(90)),
            ("30s", Some(30)),
            ("5m", Some(300)),
            ("1h", Some(3600)),
            ("0", Some(0)),
            ("5d", None),
            ("m", None),
            ("-5m", None),
            ("", None),
        ];
        for (written, want) in cases {
            assert_eq!(parse_duration(written).ok().map(|d| d.as_secs()), *want, "{written}");
            let sync_period = parse_sync_period(written).ok().map(|d| d.as_secs());
            assert_eq!(sync_period, want.filter(|&s| s > 0), "{written} as a sync period");
        }
    }
}
