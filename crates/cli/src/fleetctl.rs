//! Fleet membership commands: `token create`, `join`, `agent`, `cluster
//! accept`, `unjoin` (`get clusters` and `get bindings` are `get_cmd`'s).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use flotilla_api::cluster::{ManagedCluster, ManagedClusterSpec, SecretRef, SyncMode};
use flotilla_fleet_core::bootstrap_token::{self, BootstrapToken};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::detach::PidLock;
use crate::hub_kubeconfig::HubKubeconfig;

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
    /// Serve the background agent's Prometheus metrics on this address
    /// (`GET /metrics`), e.g. 0.0.0.0:9465. Off by default: several agents
    /// may run on one host.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
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
    /// Serve the agent's Prometheus metrics on this address (`GET
    /// /metrics`), e.g. 0.0.0.0:9465. Off by default: several agents may
    /// run on one host.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
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

/// The lock an agent holds in its state directory while it runs, with its pid.
pub const AGENT_LOCK: &str = "agent.lock";

pub fn agent_state_dir(name: &str, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| crate::paths::default_state_dir().join("agents").join(name))
}

/// A new token from the kernel's random numbers.
fn random_token() -> anyhow::Result<BootstrapToken> {
    let mut bytes = [0u8; 22];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(BootstrapToken::from_random(&bytes))
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<bool> {
    let TokenCommand::Create(args) = cmd;
    let client = args.hub.client().await?;
    let output = args.output.clone();
    let hub_config = args.hub.load()?.with_context_current();
    let (token, output) = create_token_for(&client, &hub_config, args.ttl_hours, output).await?;
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
    let hub_config = kube::config::Kubeconfig::read_from(hub_kubeconfig)?;
    create_token_for(client, &hub_config, ttl_hours, output).await
}

/// [`create_token`] for a hub kubeconfig already read: the bootstrap
/// kubeconfig names the server and CA of its current context.
pub async fn create_token_for(
    client: &Client,
    hub_config: &kube::config::Kubeconfig,
    ttl_hours: u64,
    output: Option<PathBuf>,
) -> anyhow::Result<(String, PathBuf)> {
    let bootstrap = random_token()?;
    let expiration = k8s_openapi::jiff::Timestamp::now()
        + k8s_openapi::jiff::SignedDuration::from_secs(ttl_hours as i64 * 3600);
    let secret = bootstrap
        .fleet_secret()
        .expires_at(expiration)
        .description("flotilla: lets clusters and machines ask to join the fleet")
        .build();
    Api::<Secret>::namespaced(client.clone(), bootstrap_token::NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await?;
    let token = bootstrap.token();
    let (server, ca) = flotilla_agent::register::hub_endpoint(hub_config)?;
    let kubeconfig = flotilla_core::kubeconfig::render(&flotilla_core::kubeconfig::KubeconfigSpec {
        name: "flotilla-bootstrap".into(),
        server,
        ca_pem: ca,
        credential: flotilla_core::kubeconfig::Credential::Token(token.clone()),
    });
    let output = output.unwrap_or_else(|| PathBuf::from(format!("bootstrap-{}.kubeconfig", bootstrap.id())));
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
    config.metrics_addr = args.metrics_addr;
    // Held while the agent runs: `unjoin` finds this very process by it.
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    let lock_path = config.state_dir.join(AGENT_LOCK);
    let _lock =
        match PidLock::acquire(&lock_path).with_context(|| format!("locking {}", lock_path.display()))? {
            Some(lock) => Some(lock),
            None => {
                tracing::warn!(
                    state_dir = %config.state_dir.display(),
                    holder = ?PidLock::holder(&lock_path),
                    "another agent runs with this state directory"
                );
                None
            }
        };
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
    let pid = spawn_detached_agent(&args.name, &state_dir, &args.kubeconfig, &log, args.metrics_addr)?;
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
    let hub = HubKubeconfig::file(args.hub_kubeconfig.clone()).client().await?;
    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    if let Some(existing) = clusters.get_opt(&args.name).await? {
        if existing.spec.sync_mode != SyncMode::Push {
            bail!(
                "cluster {} is already in the fleet in pull mode; `flotilla unjoin {}` first",
                args.name,
                args.name
            );
        }
    }
    let secret_name = format!("cluster-{}-kubeconfig", args.name);
    let kubeconfig = std::fs::read_to_string(&args.kubeconfig)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(flotilla_hub::SYSTEM_NAMESPACE.into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(flotilla_hub::push::KUBECONFIG_KEY.to_string(), kubeconfig)])),
        ..Default::default()
    };
    let cluster = ManagedCluster::new(
        &args.name,
        ManagedClusterSpec {
            sync_mode: SyncMode::Push,
            hub_accepts_client: true,
            api_endpoint: Some(member_config.cluster_url.to_string()),
            secret_ref: Some(SecretRef {
                namespace: flotilla_hub::SYSTEM_NAMESPACE.into(),
                name: secret_name.clone(),
            }),
            ..Default::default()
        },
    );
    let apply = PatchParams::apply("flotilla-cli").force();
    Api::<Secret>::namespaced(hub.clone(), flotilla_hub::SYSTEM_NAMESPACE)
        .patch(&secret_name, &apply, &Patch::Apply(&secret))
        .await
        .context("storing the member kubeconfig on the hub (is `flotilla hub install` done?)")?;
    clusters.patch(&args.name, &apply, &Patch::Apply(&cluster)).await?;
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

fn spawn_detached_agent(
    name: &str,
    state_dir: &Path,
    member: &Path,
    log: &Path,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<u32> {
    let log_file = std::fs::File::create(log)?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .args(["agent", "--cluster", name, "--state-dir"])
        .arg(state_dir)
        .arg("--kubeconfig")
        .arg(std::fs::canonicalize(member)?)
        .args(metrics_addr.map(|addr| format!("--metrics-addr={addr}")))
        .env("FLOTILLA_LOG", std::env::var("FLOTILLA_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let child = crate::detach::spawn_detached(&mut command)?;
    std::fs::write(state_dir.join("agent.pid"), child.id().to_string())?;
    Ok(child.id())
}

/// `cluster accept`: lets a cluster that asked to join in.
pub async fn accept(name: String, hub: HubKubeconfig) -> anyhow::Result<bool> {
    let api: Api<ManagedCluster> = Api::all(hub.client().await?);
    if api.get_opt(&name).await?.is_none() {
        bail!("no cluster named {name} has asked to join; see `flotilla get clusters`");
    }
    api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"hubAcceptsClient": true}})))
        .await?;
    println!("Cluster {name} accepted.");
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
    let lock = state_dir.join(AGENT_LOCK);
    if pid_file.exists() || lock.exists() {
        let deadline = std::time::Instant::now() + Duration::from_secs(if args.force { 0 } else { 30 });
        while PidLock::holder(&lock).is_some() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Only the agent running for this cluster: the process that holds
        // the lock in its state directory, whatever its pid was at `join`.
        if let Some(pid) = PidLock::holder(&lock) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        flotilla_agent::register::forget_credentials(&state_dir)?;
        let _ = std::fs::remove_file(&pid_file);
    }
    println!("Cluster {} removed from the fleet; its namespace and access are revoked.", args.name);
    Ok(true)
}
