//! Fleet membership commands: `hub install|run`, `token create`, `join`,
//! `agent`, `cluster accept`, `get clusters`, `unjoin`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use flotilla_api::cluster::ManagedCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

#[derive(Args, Debug, Clone)]
pub struct HubKubeconfig {
    /// Kubeconfig of the hub (admin rights).
    #[arg(long = "kubeconfig", env = "FLOTILLA_HUB_KUBECONFIG", default_value_os_t = crate::default_state_dir().join("hub.kubeconfig"))]
    pub path: PathBuf,
}

impl HubKubeconfig {
    pub async fn client(&self) -> anyhow::Result<Client> {
        let (client, _) =
            flotilla_agent::client_from_kubeconfig(&self.path).await.map_err(anyhow::Error::msg)?;
        Ok(client)
    }
}

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
    pub kok: KokArgs,
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
    /// kube-scheduler and kubemark. Repeat for several versions. Default:
    /// the version in Flotilla's binary cache.
    #[arg(long = "kok-version", value_name = "VERSION=DIR")]
    pub versions: Vec<String>,
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
                format!("--kok-version {v}: expected VERSION=DIR, e.g. 1.20.2=/opt/k8s/bin")
            })?;
            versions.insert(version.trim_start_matches('v').to_string(), PathBuf::from(dir));
        }
        if versions.is_empty() {
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
        Ok((etcd, hosted))
    }
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a bootstrap token that lets one or more clusters ask to join,
    /// and write a bootstrap kubeconfig for `flotilla join --hub-kubeconfig`.
    Create(TokenCreateArgs),
}

#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub hub: HubKubeconfig,
    /// How long the token stays valid, in hours.
    #[arg(long, default_value_t = 24)]
    pub ttl_hours: u64,
    /// Where to write the bootstrap kubeconfig.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum JoinMode {
    /// An agent in (or beside) the member pulls its work from the hub.
    Pull,
    /// The hub keeps the member's kubeconfig and does the agent's work itself.
    Push,
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The cluster's name in the fleet.
    pub name: String,
    /// Pull: the hub kubeconfig is a bootstrap kubeconfig from `flotilla token
    /// create`. Push: it is the hub's admin kubeconfig.
    #[arg(long)]
    pub hub_kubeconfig: PathBuf,
    #[arg(long, value_enum, default_value_t = JoinMode::Pull)]
    pub mode: JoinMode,
    /// Kubeconfig of the member cluster.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Where the agent keeps its key, certificate and log.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Give up waiting for acceptance after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The cluster's name in the fleet.
    #[arg(long)]
    pub cluster: String,
    /// Kubeconfig of the member cluster.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Bootstrap kubeconfig (needed only until the agent has its certificate).
    #[arg(long)]
    pub hub_kubeconfig: Option<PathBuf>,
    /// Where the agent keeps its key and certificate.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Let a cluster that asked to join in (sets hubAcceptsClient).
    Accept {
        name: String,
        #[command(flatten)]
        hub: HubKubeconfig,
    },
    // Hosted clusters: create, get, kubeconfig, upgrade, delete, rotate-certs (see kokctl).
    #[command(flatten)]
    Hosted(crate::kokctl::HostedCommand),
}

#[derive(Subcommand, Debug)]
pub enum GetCommand {
    /// The fleet's member clusters.
    Clusters(HubKubeconfig),
    /// Where each propagated template went: its policy, its clusters (with
    /// replicas), whether it is scheduled and applied, and why not.
    Bindings(HubKubeconfig),
}

#[derive(Args, Debug)]
pub struct UnjoinArgs {
    pub name: String,
    #[command(flatten)]
    pub hub: HubKubeconfig,
    /// Do not wait for the cluster's agent to acknowledge (e.g. it is unreachable).
    #[arg(long)]
    pub force: bool,
}

pub fn agent_state_dir(name: &str, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| crate::default_state_dir().join("agents").join(name))
}

pub async fn hub(cmd: HubCommand) -> anyhow::Result<bool> {
    match cmd {
        HubCommand::Install(hub) => {
            let client = hub.client().await?;
            flotilla_hub::install(&client)
                .await
                .with_context(|| format!("installing on the hub {}", hub.path.display()))?;
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
                        r = flotilla_kok::hosted::run(client, hosted) => r.map_err(anyhow::Error::from),
                    }
                }
            });
            let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = serve_webhook => {
                    r.context("serving the policy admission webhook")?;
                    bail!("the policy admission webhook stopped");
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

fn random_token_part(len: usize) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect())
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<bool> {
    let TokenCommand::Create(args) = cmd;
    let client = args.hub.client().await?;
    let output = args.output.clone();
    let (token, output) = create_token(&client, &args.hub.path, args.ttl_hours, output).await?;
    println!(
        "Token {token} (valid {}h) written as a bootstrap kubeconfig to {}.",
        args.ttl_hours,
        output.display()
    );
    println!(
        "Join a cluster with:\n  flotilla join NAME --hub-kubeconfig {} --kubeconfig MEMBER.kubeconfig",
        output.display()
    );
    Ok(true)
}

/// Creates a bootstrap token Secret and writes a bootstrap kubeconfig for
/// it (to `output`, or `bootstrap-<id>.kubeconfig`); returns both.
pub async fn create_token(
    client: &Client,
    hub_kubeconfig: &Path,
    ttl_hours: u64,
    output: Option<PathBuf>,
) -> anyhow::Result<(String, PathBuf)> {
    let id = random_token_part(6)?;
    let secret_part = random_token_part(16)?;
    let expiration = k8s_openapi::jiff::Timestamp::now()
        + k8s_openapi::jiff::SignedDuration::from_secs(ttl_hours as i64 * 3600);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {
            "token-id": id, "token-secret": secret_part,
            "expiration": expiration.to_string(),
            "usage-bootstrap-authentication": "true",
            "auth-extra-groups": flotilla_fleet_core::membership::BOOTSTRAP_GROUP,
            "description": "flotilla: lets clusters ask to join the fleet"
        }
    }))?;
    Api::<Secret>::namespaced(client.clone(), "kube-system").create(&PostParams::default(), &secret).await?;
    let token = format!("{id}.{secret_part}");
    let hub_config = kube::config::Kubeconfig::read_from(hub_kubeconfig)?;
    let (server, ca) = flotilla_agent::register::hub_endpoint(&hub_config)?;
    let kubeconfig = flotilla_core::kubeconfig::render(&flotilla_core::kubeconfig::KubeconfigSpec {
        name: "flotilla-bootstrap".into(),
        server,
        ca_pem: ca,
        credential: flotilla_core::kubeconfig::Credential::Token(token.clone()),
    });
    let output = output.unwrap_or_else(|| PathBuf::from(format!("bootstrap-{id}.kubeconfig")));
    std::fs::write(&output, kubeconfig)?;
    Ok((token, output))
}

/// Runs an agent in the foreground until the cluster leaves the fleet.
pub async fn agent(args: AgentArgs) -> anyhow::Result<bool> {
    let mut config = flotilla_agent::AgentConfig::new(
        args.cluster.clone(),
        agent_state_dir(&args.cluster, args.state_dir),
        args.kubeconfig,
    );
    config.bootstrap_kubeconfig = args.hub_kubeconfig;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match flotilla_agent::run(config, shutdown).await {
        Ok(()) => Ok(true),
        Err(flotilla_agent::Error::Removed(name)) => {
            println!("Cluster {name} left the fleet; the agent's credentials are deleted.");
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Registers, then leaves an agent running in the background.
pub async fn join(args: JoinArgs) -> anyhow::Result<bool> {
    flotilla_fleet_core::membership::validate_cluster_name(&args.name).map_err(anyhow::Error::msg)?;
    let state_dir = agent_state_dir(&args.name, args.state_dir.clone());
    let mut config =
        flotilla_agent::AgentConfig::new(args.name.clone(), state_dir.clone(), args.kubeconfig.clone());
    config.bootstrap_kubeconfig = Some(args.hub_kubeconfig.clone());
    let (member, member_config) =
        flotilla_agent::client_from_kubeconfig(&args.kubeconfig).await.map_err(anyhow::Error::msg)?;
    flotilla_agent::collect::check_member(&member, &member_config).await?;
    if args.mode == JoinMode::Push {
        return join_push(&args, &member_config).await;
    }
    println!(
        "Asking the hub to admit cluster {} (waiting up to {}s for acceptance)...",
        args.name, args.timeout
    );
    match tokio::time::timeout(Duration::from_secs(args.timeout), flotilla_agent::register(&config)).await {
        Ok(r) => {
            r?;
        }
        Err(_) => bail!(
            "cluster {} was not accepted within {}s; on the hub run `flotilla cluster accept {}` and join again",
            args.name,
            args.timeout,
            args.name
        ),
    }
    let log = state_dir.join("agent.log");
    let pid = spawn_detached_agent(&args.name, &state_dir, &args.kubeconfig, &log)?;
    println!(
        "Cluster {} joined; its agent runs in the background (pid {pid}, log {}).",
        args.name,
        log.display()
    );
    Ok(true)
}

/// Push mode: store the member's credential on the hub and register the
/// cluster as accepted; the hub's controllers then report on it.
async fn join_push(args: &JoinArgs, member_config: &kube::Config) -> anyhow::Result<bool> {
    let hub = HubKubeconfig { path: args.hub_kubeconfig.clone() }.client().await?;
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    if let Some(existing) = clusters.get_opt(&args.name).await? {
        if existing.spec.sync_mode != flotilla_api::cluster::SyncMode::Push {
            bail!(
                "cluster {} is already in the fleet in pull mode; `flotilla unjoin {}` first",
                args.name,
                args.name
            );
        }
    }
    let secret_name = format!("cluster-{}-kubeconfig", args.name);
    let kubeconfig = std::fs::read_to_string(&args.kubeconfig)?;
    let apply = PatchParams::apply("flotilla-cli").force();
    Api::<Secret>::namespaced(hub.clone(), flotilla_hub::SYSTEM_NAMESPACE)
        .patch(
            &secret_name,
            &apply,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": secret_name, "namespace": flotilla_hub::SYSTEM_NAMESPACE},
                "stringData": {flotilla_hub::push::KUBECONFIG_KEY: kubeconfig}})),
        )
        .await
        .context("storing the member kubeconfig on the hub (is `flotilla hub install` done?)")?;
    clusters
        .patch(
            &args.name,
            &apply,
            &Patch::Apply(json!({"apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
                "metadata": {"name": args.name},
                "spec": {"syncMode": "Push", "hubAcceptsClient": true,
                    "apiEndpoint": member_config.cluster_url.to_string(),
                    "secretRef": {"namespace": flotilla_hub::SYSTEM_NAMESPACE, "name": secret_name}}})),
        )
        .await?;
    println!("Waiting up to {}s for the hub to report cluster {} Available...", args.timeout, args.name);
    let deadline = std::time::Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let mc = clusters.get(&args.name).await?;
        let available = mc.condition("Available");
        if available.is_some_and(|c| c.status == "True") {
            println!("Cluster {} joined in push mode.", args.name);
            return Ok(true);
        }
        if std::time::Instant::now() > deadline {
            let why = available.map(|c| c.message.clone()).unwrap_or_else(|| "no report yet".into());
            bail!("cluster {} is not Available: {why} (is `flotilla hub run` running?)", args.name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn spawn_detached_agent(name: &str, state_dir: &Path, member: &Path, log: &Path) -> anyhow::Result<u32> {
    let log_file = std::fs::File::create(log)?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .args(["agent", "--cluster", name, "--state-dir"])
        .arg(state_dir)
        .arg("--kubeconfig")
        .arg(std::fs::canonicalize(member)?)
        .env("FLOTILLA_LOG", std::env::var("FLOTILLA_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let child = crate::fleet::spawn_detached(&mut command)?;
    std::fs::write(state_dir.join("agent.pid"), child.id().to_string())?;
    Ok(child.id())
}

pub async fn cluster(cmd: ClusterCommand) -> anyhow::Result<bool> {
    let (name, hub) = match cmd {
        ClusterCommand::Accept { name, hub } => (name, hub),
        ClusterCommand::Hosted(hosted) => return crate::kokctl::run(hosted).await,
    };
    let api: Api<ManagedCluster> = Api::all(hub.client().await?);
    if api.get_opt(&name).await?.is_none() {
        bail!("no cluster named {name} has asked to join; see `flotilla get clusters`");
    }
    api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"hubAcceptsClient": true}})))
        .await?;
    println!("Cluster {name} accepted.");
    Ok(true)
}

fn age(mc: &ManagedCluster) -> String {
    let Some(created) = &mc.metadata.creation_timestamp else { return "-".into() };
    let secs = k8s_openapi::jiff::Timestamp::now().duration_since(created.0).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub async fn get(cmd: GetCommand) -> anyhow::Result<bool> {
    let hub = match cmd {
        GetCommand::Clusters(hub) => hub,
        GetCommand::Bindings(hub) => return get_bindings(hub).await,
    };
    let api: Api<ManagedCluster> = Api::all(hub.client().await?);
    let list = api.list(&ListParams::default()).await?;
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING).set_header(vec![
        "NAME",
        "MODE",
        "ACCEPTED",
        "AVAILABLE",
        "VERSION",
        "NODES",
        "CPU",
        "MEMORY",
        "AGE",
    ]);
    for mc in &list.items {
        let status = mc.status.clone().unwrap_or_default();
        let allocatable = status.resource_summary.as_ref().map(|r| r.allocatable.clone()).unwrap_or_default();
        table.add_row(vec![
            mc.name_any(),
            mc.spec.sync_mode.to_string(),
            mc.spec.hub_accepts_client.to_string(),
            mc.condition("Available").map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into()),
            status.kubernetes_version.clone().unwrap_or_default(),
            status.node_summary.as_ref().map(|n| n.display.clone()).unwrap_or_default(),
            allocatable.get("cpu").map(|q| q.0.clone()).unwrap_or_default(),
            allocatable.get("memory").map(|q| q.0.clone()).unwrap_or_default(),
            age(mc),
        ]);
    }
    if list.items.is_empty() {
        println!("No clusters. Join one with `flotilla token create` and `flotilla join`.");
    } else {
        println!("{table}");
    }
    Ok(true)
}

async fn get_bindings(hub: HubKubeconfig) -> anyhow::Result<bool> {
    use flotilla_api::work::{BindingSpec, BindingStatus, ClusterResourceBinding, ResourceBinding};
    let client = hub.client().await?;
    let namespaced = Api::<ResourceBinding>::all(client.clone()).list(&ListParams::default()).await?;
    let cluster_scoped = Api::<ClusterResourceBinding>::all(client).list(&ListParams::default()).await?;
    let rows: Vec<(String, &BindingSpec, Option<&BindingStatus>)> = namespaced
        .items
        .iter()
        .map(|b| (b.namespace().unwrap_or_default(), &b.spec.spec, b.status.as_ref()))
        .chain(cluster_scoped.items.iter().map(|b| (String::new(), &b.spec.spec, b.status.as_ref())))
        .collect();
    if rows.is_empty() {
        println!("No bindings. Create a template and a PropagationPolicy that selects it.");
        return Ok(true);
    }
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING).set_header(vec![
        "NAMESPACE",
        "TEMPLATE",
        "POLICY",
        "CLUSTERS",
        "SCHEDULED",
        "APPLIED",
        "MESSAGE",
    ]);
    for (namespace, spec, status) in rows {
        let condition = |t: &str| status.and_then(|s| s.conditions.iter().find(|c| c.type_ == t));
        let clusters: Vec<String> = spec
            .clusters
            .iter()
            .map(|c| if spec.replicas > 0 { format!("{}:{}", c.name, c.replicas) } else { c.name.clone() })
            .chain(spec.graceful_eviction_tasks.iter().map(|t| format!("{} (leaving)", t.from_cluster)))
            .collect();
        let problem = [condition("Scheduled"), condition("FullyApplied")]
            .into_iter()
            .flatten()
            .find(|c| c.status != "True")
            .map(|c| c.message.chars().take(80).collect::<String>())
            .unwrap_or_default();
        table.add_row(vec![
            namespace,
            format!("{}/{}", spec.resource.kind, spec.resource.name),
            spec.policy.as_ref().map(|p| p.name.clone()).unwrap_or_else(|| "(dependency)".into()),
            clusters.join(","),
            condition("Scheduled").map(|c| c.status.clone()).unwrap_or_default(),
            condition("FullyApplied").map(|c| c.status.clone()).unwrap_or_default(),
            problem,
        ]);
    }
    println!("{table}");
    Ok(true)
}

pub async fn unjoin(args: UnjoinArgs) -> anyhow::Result<bool> {
    let client = args.hub.client().await?;
    let api: Api<ManagedCluster> = Api::all(client.clone());
    match api.delete(&args.name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => println!("Cluster {} is not in the fleet.", args.name),
        Err(e) => return Err(e.into()),
    }
    // The hub's controller revokes the access and lets the object go; wait
    // for that, or with --force (no controller running, say) do it here.
    let deadline = std::time::Instant::now() + Duration::from_secs(if args.force { 3 } else { 30 });
    while api.get_opt(&args.name).await?.is_some() {
        if std::time::Instant::now() > deadline {
            if !args.force {
                bail!(
                    "cluster {} is still being removed: is `flotilla hub run` running? (--force removes it without the hub)",
                    args.name
                );
            }
            flotilla_hub::controller::revoke_cluster_access(&client, &args.name).await?;
            api.patch(
                &args.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A local agent (started by `join`) notices and deletes its credentials.
    let state_dir = agent_state_dir(&args.name, None);
    let pid_file = state_dir.join("agent.pid");
    if let Ok(pid) = std::fs::read_to_string(&pid_file).map(|p| p.trim().parse::<u32>().unwrap_or(0)) {
        let deadline = std::time::Instant::now() + Duration::from_secs(if args.force { 0 } else { 30 });
        while pid != 0 && flotilla_localkube::process::pid_alive(pid) && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if pid != 0 && flotilla_localkube::process::pid_alive(pid) {
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // Only the agent we started for this cluster.
            if cmdline.contains("agent") && cmdline.contains(&args.name) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        flotilla_agent::register::forget_credentials(&state_dir)?;
        let _ = std::fs::remove_file(&pid_file);
    }
    println!("Cluster {} removed from the fleet; its namespace and access are revoked.", args.name);
    Ok(true)
}
