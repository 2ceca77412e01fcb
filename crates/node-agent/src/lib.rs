//! `flotilla node-agent`: runs on one machine, registers its `Machine` on the
//! hub, and runs the components its spec declares as supervised processes.
//!
//! Each reconcile: observe the recorded processes (exits, exit codes, log
//! tails), render every component's files and hash them, ask
//! [`flotilla_kok_core::node::plan`] what to start, stop or restart, do it,
//! probe health, and write the Machine status when it changed (or a
//! heartbeat is due).
//!
//! Components run detached from the agent ([`process`]) and are recorded in
//! `state.json` in the state directory (pid + start time + spec hash), so an
//! agent that restarts adopts them instead of starting them twice.
//!
//! The status also says what the host is ([`host`]): its addresses (where
//! Flotilla reaches it unless the spec gives one), capacity and software.
//!
//! Layout of the state directory: `state.json`, `logs/<component>.log`,
//! `components/<component>/` (working directory and relative files; deleted
//! when the component is removed from the spec, the log is kept).

mod error;
pub mod events;
pub mod extra_images;
mod files;
pub mod host;
pub mod probe;
pub mod process;
pub mod real_nodes;
pub mod register;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_api::machine::{ComponentSpec, ComponentStatus, Machine, MachineSpec, MachineStatus};
use flotilla_kok_core::node::{
    self, Action, Desired, Observation, RestartReason, RunningComponent, SourceKind,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::{Deserialize, Serialize};

use error::io_error;
pub use error::Error;
use files::{log_path, remove_work_dir, work_dir, write_files};
use register::{CONNECT_TIMEOUT, READ_TIMEOUT};

/// Field manager for the Machine status.
pub const FIELD_MANAGER: &str = "flotilla-node-agent";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const STATE_FILE: &str = "state.json";

/// What the node agent needs to run.
#[derive(Debug, Clone)]
pub struct NodeAgentConfig {
    /// The Machine's name.
    pub machine: String,
    /// An admin kubeconfig for the hub. When absent the agent works with
    /// its own narrow credential ([`register`]), kept in the state directory.
    pub hub_kubeconfig: Option<PathBuf>,
    /// Kubeconfig with a bootstrap token, used when the state directory holds
    /// no valid credential yet (first start, or after the certificate expired).
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Records, logs and working directories of the components.
    pub state_dir: PathBuf,
    /// How often the agent looks at its processes.
    pub tick: Duration,
    /// Status is written at least this often, even when nothing changed.
    pub heartbeat: Duration,
    /// How long a stopped component gets between SIGTERM and SIGKILL. It
    /// must cover a kube-apiserver's shutdown delay (3 s when it is one of
    /// several, so clients move away before it stops listening) plus the
    /// drain of its requests, or a rolling upgrade refuses requests.
    pub stop_grace: Duration,
    /// How often referenced Secrets and ConfigMaps are read again.
    pub resync: Duration,
    /// Reported as the machine's only InternalIP instead of the addresses
    /// found on its interfaces (`--address`).
    pub address: Option<IpAddr>,
    /// Where to serve `/metrics` (`flotilla node-agent --metrics-addr`);
    /// none by default, as several node agents may run on one host.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl NodeAgentConfig {
    /// An agent that uses `hub_kubeconfig` as it is (an admin credential).
    pub fn new(machine: impl Into<String>, hub_kubeconfig: PathBuf, state_dir: PathBuf) -> Self {
        Self { hub_kubeconfig: Some(hub_kubeconfig), ..Self::bootstrapped(machine, None, state_dir) }
    }

    /// An agent on its own narrow credential, bootstrapped (when it has no
    /// valid one yet) with the token in `bootstrap_kubeconfig`.
    pub fn bootstrapped(
        machine: impl Into<String>,
        bootstrap_kubeconfig: Option<PathBuf>,
        state_dir: PathBuf,
    ) -> Self {
        Self {
            machine: machine.into(),
            hub_kubeconfig: None,
            bootstrap_kubeconfig,
            state_dir,
            tick: Duration::from_millis(500),
            heartbeat: Duration::from_secs(20),
            stop_grace: Duration::from_secs(10),
            resync: Duration::from_secs(30),
            address: None,
            metrics_addr: None,
        }
    }
}

/// The agent's record of what it started, kept in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub machine: String,
    #[serde(default)]
    pub components: Vec<RunningComponent>,
    /// The sandboxes of `spec.realNodes` on this host.
    #[serde(default)]
    pub real_nodes: real_nodes::RealNodesState,
}

impl State {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// The state in `state_dir`, empty if there is none yet.
    pub fn load(state_dir: &Path) -> Result<State, Error> {
        let path = Self::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::State { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }

    /// Writes the state atomically (temporary file, fsync, rename), so a
    /// crash leaves either the old or the new record, never half of one.
    pub fn save(&self, state_dir: &Path) -> Result<(), Error> {
        use std::io::Write;
        std::fs::create_dir_all(state_dir).map_err(io_error(state_dir))?;
        let path = Self::path(state_dir);
        let tmp = state_dir.join(format!("{STATE_FILE}.tmp"));
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|source| Error::State { path: path.clone(), source })?;
        let mut file = std::fs::File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
        if let Ok(dir) = std::fs::File::open(state_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// SIGKILLs every recorded component process that is still the process
/// recorded (pid and start time). For tests and for tearing a machine down
/// by hand; the agent itself stops components through their spec.
pub fn kill_recorded(state_dir: &Path) {
    if let Ok(state) = State::load(state_dir) {
        for c in state.components.iter().filter(|c| c.alive()) {
            process::kill_now(c.pid, c.start_ticks);
        }
    }
}

/// Removes every real node the agent of `state_dir` recorded: their
/// sandboxes (the pods and shims in their cgroups too), and the group with
/// its bridge, journal entry and restored sysctls. For whoever stops an
/// agent for good (tests, `down`) after [`kill_recorded`]; the agent must
/// not be running.
pub fn remove_real_nodes(state_dir: &Path) {
    let Ok(mut state) = State::load(state_dir) else { return };
    if state.real_nodes.anchor.is_none() {
        return;
    }
    real_nodes::RealNodes::default().remove_unwanted(
        state_dir,
        &mut state.real_nodes,
        &MachineSpec::default(),
    );
    if let Err(e) = state.save(state_dir) {
        tracing::warn!(error = %e, "saving the state after removing the real nodes");
    }
}

/// A client for a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, Error> {
    Ok(flotilla_csr_client::client_from_kubeconfig(path, CONNECT_TIMEOUT, READ_TIMEOUT).await?)
}

/// Creates the Machine (with an empty spec) unless it exists.
async fn register(machines: &Api<Machine>, name: &str) -> Result<(), Error> {
    match machines.get_opt(name).await? {
        Some(_) => Ok(()),
        None => {
            let machine = Machine::new(name, MachineSpec::default());
            match machines.create(&PostParams::default(), &machine).await {
                Ok(_) => {
                    tracing::info!(machine = %name, "registered the Machine");
                    Ok(())
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Registers the Machine, adopts what still runs from an earlier agent, and
/// reconciles until `shutdown` resolves (components keep running) or the
/// Machine is deleted (components are stopped first).
///
/// Without an admin kubeconfig the agent first gets its own certificate
/// ([`register::register`]); when that is renewed (at 70% of its life) the
/// agent starts over with the new one, adopting its running components.
pub async fn run(
    config: NodeAgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    flotilla_metrics::serving(config.metrics_addr, run_agent(&config, shutdown)).await?
}

async fn run_agent(
    config: &NodeAgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    tokio::pin!(shutdown);
    if let Some(admin) = &config.hub_kubeconfig {
        let client = client_from_kubeconfig(admin).await?;
        return run_with(config, client, &mut shutdown).await;
    }
    loop {
        let registration =
            register::register(&config.machine, &config.state_dir, config.bootstrap_kubeconfig.as_deref())
                .await?;
        let _certificate = flotilla_metrics::register_certificate(flotilla_metrics::ClientCertificate {
            component: "node-agent",
            name: config.machine.clone(),
            not_after: registration.not_after,
        });
        tokio::select! {
            ran = run_with(config, registration.client.clone(), &mut shutdown) => return ran,
            renewed = register::renew_before_expiry(&config.machine, &config.state_dir, &registration) => {
                renewed?;
                tracing::info!(machine = %config.machine, "continuing with the renewed certificate");
            }
        }
    }
}

async fn run_with(
    config: &NodeAgentConfig,
    client: Client,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<(), Error> {
    let machines: Api<Machine> = Api::all(client.clone());
    register(&machines, &config.machine).await?;
    let container_runtime = host::container_runtime_version().await;
    let mut agent = Agent::new(config.clone(), client, container_runtime)?;
    let watch = watcher::Config::default().fields(&format!("metadata.name={}", config.machine));
    let mut events = watcher(machines, watch).boxed();
    let mut machine: Option<Machine> = None;
    let mut listed = false;
    loop {
        if listed {
            let deleted = machine.is_none();
            let spec = machine.as_ref().map(|m| m.spec.clone()).unwrap_or_default();
            let key = flotilla_metrics::ObjectKey::new(None, &config.machine);
            let reconciled = flotilla_metrics::observe("node-agent", &key, async {
                let regarding = machine.as_ref().map(|m| m.object_ref(&()));
                agent
                    .reconcile(&spec, machine.as_ref().and_then(|m| m.status.as_ref()), regarding.as_ref())
                    .await;
                // The reconcile reports its failures on the Machine's
                // status; none ends it.
                Ok::<(), std::convert::Infallible>(())
            });
            let Ok(()) = reconciled.await;
            if deleted && agent.state.components.is_empty() && agent.state.real_nodes.nodes.is_empty() {
                return Err(Error::Removed(config.machine.clone()));
            }
        } else {
            // Exits are still recorded before the spec is known.
            agent.observe();
        }
        tokio::select! {
            () = shutdown.as_mut() => {
                tracing::info!(machine = %config.machine, "node agent stopping; components keep running");
                return Ok(());
            }
            event = events.next() => match event {
                Some(Ok(watcher::Event::InitApply(m))) | Some(Ok(watcher::Event::Apply(m))) => {
                    tracing::debug!(machine = %config.machine, generation = ?m.metadata.generation, "Machine changed");
                    machine = Some(m);
                }
                Some(Ok(watcher::Event::Init)) => {}
                Some(Ok(watcher::Event::InitDone)) => listed = true,
                Some(Ok(watcher::Event::Delete(_))) => machine = None,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching the Machine failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => return Err(Error::Hub("the Machine watch ended".into())),
            },
            () = tokio::time::sleep(agent.config.tick) => {}
        }
    }
}

/// What the agent keeps in memory about a component's health.
#[derive(Debug, Clone, Default)]
struct Health {
    /// The process the verdict is about.
    pid: u32,
    healthy: Option<bool>,
    ever_healthy: bool,
    error: Option<String>,
    next: Option<Instant>,
    /// Failed probes in a row.
    failures: u32,
}

/// Failed probes in a row before a component that was healthy is reported
/// unhealthy: one slow answer on a loaded machine is not an outage.
const FAILURE_THRESHOLD: u32 = 3;

struct Agent {
    config: NodeAgentConfig,
    client: Client,
    state: State,
    sources: node::Sources,
    sources_for: Vec<node::SourceRef>,
    sources_read: Option<Instant>,
    health: HashMap<String, Health>,
    last_status: Option<MachineStatus>,
    last_write: Option<Instant>,
    real_nodes: real_nodes::RealNodes,
    /// What the host is, read again once per heartbeat.
    host: host::HostFacts,
    host_read: Option<Instant>,
    /// Found once when the agent starts.
    container_runtime: Option<String>,
    /// Publishes the Events on the Machine.
    recorder: kube::runtime::events::Recorder,
}

impl Agent {
    fn new(
        config: NodeAgentConfig,
        client: Client,
        container_runtime: Option<String>,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(&config.state_dir).map_err(io_error(&config.state_dir))?;
        let mut state = State::load(&config.state_dir)?;
        state.machine = config.machine.clone();
        for c in &state.components {
            if c.alive() && process::is_alive(c.pid, c.start_ticks) {
                tracing::info!(component = %c.name, pid = c.pid, "adopted a running component");
            }
        }
        let recorder = events::recorder(client.clone(), &config.machine);
        let mut agent = Agent {
            config,
            client,
            recorder,
            state,
            sources: Default::default(),
            sources_for: Vec::new(),
            sources_read: None,
            health: HashMap::new(),
            last_status: None,
            last_write: None,
            real_nodes: Default::default(),
            host: host::HostFacts::default(),
            host_read: None,
            container_runtime,
        };
        // Processes that died while no agent watched are recorded now; their
        // exit code is unknown unless they were still our children.
        agent.observe();
        Ok(agent)
    }

    fn save(&self) {
        if let Err(e) = self.state.save(&self.config.state_dir) {
            tracing::error!(error = %e, "cannot save the node agent state");
        }
    }

    /// Records the exits of recorded processes.
    fn observe(&mut self) {
        let now = Timestamp::now();
        let mut changed = false;
        for record in self.state.components.iter_mut().filter(|c| c.alive()) {
            if let Some(code) = process::check(record.pid, record.start_ticks) {
                let tail =
                    process::log_tail(&log_path(&self.config.state_dir, &record.name), node::LOG_TAIL_LINES);
                *record = node::exited(record, code, tail, now);
                tracing::warn!(component = %record.name, pid = record.pid, code = ?code, "component exited");
                changed = true;
            }
        }
        if changed {
            self.save();
        }
    }

    /// One pass; `regarding` is the Machine the Events are about (none once
    /// it is deleted).
    async fn reconcile(
        &mut self,
        declared: &MachineSpec,
        hub_status: Option<&MachineStatus>,
        regarding: Option<&ObjectReference>,
    ) {
        let before = self.state.components.clone();
        self.observe();
        // Real nodes: sandboxes first, then their components join the
        // declared ones (a declared component of the same name wins).
        let dir = self.config.state_dir.clone();
        if self.real_nodes.observe(&dir, &mut self.state.real_nodes, declared, &self.state.components).await {
            self.save();
        }
        let mut effective = declared.clone();
        for c in self.real_nodes.prepare(&dir, &mut self.state.real_nodes, declared) {
            if !effective.components.iter().any(|d| d.name == c.name) {
                effective.components.push(c);
            }
        }
        let spec = &effective;
        self.read_sources(&spec.components).await;
        let mut desired = Vec::with_capacity(spec.components.len());
        let mut rendered = HashMap::new();
        let mut problems: HashMap<String, String> = HashMap::new();
        for component in &spec.components {
            let dir = work_dir(&self.config.state_dir, &component.name);
            let spec_hash = match node::render_files(component, &dir, &self.sources) {
                Ok(files) => {
                    let hash = node::spec_hash(component, &files);
                    rendered.insert(component.name.clone(), files);
                    Some(hash)
                }
                Err(e) => {
                    problems.insert(component.name.clone(), e.to_string());
                    None
                }
            };
            desired.push(Desired {
                name: component.name.clone(),
                spec_hash,
                restart_policy: component.restart_policy,
            });
        }
        let now = Timestamp::now();
        for action in node::plan(&desired, &self.state.components, spec.paused, now) {
            match action {
                Action::Start { name } => self.start(spec, &name, &rendered, None).await,
                Action::Restart { name, reason } => self.start(spec, &name, &rendered, Some(reason)).await,
                Action::Stop { name } => self.stop(&name).await,
                Action::Wait { .. } => {}
            }
        }
        if let Some(machine) = regarding {
            let notices = flotilla_kok_core::component_events::component_events(
                &self.config.machine,
                &before,
                &self.state.components,
            );
            events::publish(&self.recorder, machine, &notices).await;
        }
        let before = self.state.real_nodes.clone();
        self.real_nodes.remove_unwanted(&dir, &mut self.state.real_nodes, spec);
        if self.state.real_nodes != before {
            self.save();
        }
        self.probe(&spec.components).await;
        let (health, running) = (&self.health, &self.state.components);
        let healthy = |name: &str| {
            health.get(name).is_some_and(|h| {
                h.healthy == Some(true)
                    && running.iter().any(|c| c.name == name && c.alive() && c.pid == h.pid)
            })
        };
        if self.real_nodes.import_images(&dir, &mut self.state.real_nodes, spec, &healthy) {
            self.save();
        }
        self.write_status(spec, &desired, &problems, hub_status).await;
    }

    /// Reads the Secrets and ConfigMaps the files refer to, when the set of
    /// references changed or a resync is due.
    async fn read_sources(&mut self, components: &[ComponentSpec]) {
        let refs = node::referenced_sources(components);
        let due = self.sources_read.is_none_or(|at| at.elapsed() >= self.config.resync);
        if refs == self.sources_for && !due {
            return;
        }
        let mut sources = node::Sources::new();
        for r in &refs {
            let data = match r.kind {
                SourceKind::Secret => Api::<Secret>::namespaced(self.client.clone(), &r.namespace)
                    .get_opt(&r.name)
                    .await
                    .map(|s| {
                        s.map(|s| s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect())
                    }),
                SourceKind::ConfigMap => Api::<ConfigMap>::namespaced(self.client.clone(), &r.namespace)
                    .get_opt(&r.name)
                    .await
                    .map(|c| {
                        c.map(|c| {
                            let text =
                                c.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes()));
                            let binary = c.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0));
                            text.chain(binary).collect::<BTreeMap<_, _>>()
                        })
                    }),
            };
            match data {
                Ok(Some(data)) => {
                    sources.insert(r.clone(), data);
                }
                Ok(None) => {}
                Err(e) => {
                    // Keep what was read before rather than calling the file
                    // missing because the hub hiccupped.
                    tracing::warn!(kind = %r.kind, namespace = %r.namespace, name = %r.name, error = %e, "cannot read a file source");
                    if let Some(old) = self.sources.get(r) {
                        sources.insert(r.clone(), old.clone());
                    }
                }
            }
        }
        self.sources = sources;
        self.sources_for = refs;
        self.sources_read = Some(Instant::now());
    }

    async fn start(
        &mut self,
        spec: &MachineSpec,
        name: &str,
        rendered: &HashMap<String, Vec<node::RenderedFile>>,
        reason: Option<RestartReason>,
    ) {
        let (Some(component), Some(files)) =
            (spec.components.iter().find(|c| c.name == name), rendered.get(name))
        else {
            return;
        };
        let dir = &self.config.state_dir;
        let log = log_path(dir, name);
        let index = self.state.components.iter().position(|c| c.name == name);
        let previous = index.map(|i| self.state.components[i].clone());
        if let Some(old) = previous.as_ref().filter(|p| p.alive()) {
            tracing::info!(component = %name, pid = old.pid, "stopping for a changed spec");
            process::note(
                &log,
                &format!("---- flotilla-node-agent: stopping {name} (pid {}): spec changed ----", old.pid),
            );
            process::stop(old.pid, old.start_ticks, self.config.stop_grace).await;
        }
        let hash = node::spec_hash(component, files);
        let now = Timestamp::now();
        process::note(
            &log,
            &format!("---- flotilla-node-agent: starting {name} (spec {hash}) at {now} ----"),
        );
        let result = write_files(files).and_then(|()| {
            process::spawn(
                Path::new(&component.binary),
                &component.args,
                &component.env,
                &work_dir(dir, name),
                &log,
            )
        });
        let record = match result {
            Ok(p) => {
                tracing::info!(component = %name, pid = p.pid, reason = ?reason, "started component");
                node::started(previous.as_ref(), name, p.pid, p.start_ticks, &hash, reason, now)
            }
            Err(e) => {
                tracing::error!(component = %name, error = %e, "cannot start component");
                process::note(&log, &format!("---- flotilla-node-agent: cannot start {name}: {e} ----"));
                // Recorded as an exit with an unknown code, so the backoff
                // paces the retries.
                let record = node::started(previous.as_ref(), name, 0, 0, &hash, reason, now);
                let mut failed =
                    node::exited(&record, None, process::log_tail(&log, node::LOG_TAIL_LINES), now);
                failed.message = Some(format!("cannot start {}: {e}", component.binary));
                failed
            }
        };
        self.health.remove(name);
        match index {
            Some(i) => self.state.components[i] = record,
            None => self.state.components.push(record),
        }
        self.save();
    }

    async fn stop(&mut self, name: &str) {
        let Some(index) = self.state.components.iter().position(|c| c.name == name) else { return };
        let record = self.state.components[index].clone();
        if record.alive() {
            let log = log_path(&self.config.state_dir, name);
            process::note(
                &log,
                &format!(
                    "---- flotilla-node-agent: stopping {name} (pid {}): removed from the spec ----",
                    record.pid
                ),
            );
            let code = process::stop(record.pid, record.start_ticks, self.config.stop_grace).await;
            tracing::info!(component = %name, pid = record.pid, code = ?code, "stopped component");
        }
        remove_work_dir(&self.config.state_dir, name);
        self.state.components.remove(index);
        self.health.remove(name);
        self.save();
    }

    /// Probes the components whose probe is due, all at once.
    async fn probe(&mut self, components: &[ComponentSpec]) {
        let now = Instant::now();
        let mut due = Vec::new();
        for component in components {
            let Some(check) = &component.health else { continue };
            let Some(record) = self.state.components.iter().find(|r| r.name == component.name && r.alive())
            else {
                continue;
            };
            let health = self.health.entry(component.name.clone()).or_default();
            if health.pid != record.pid {
                *health = Health { pid: record.pid, ..Default::default() };
            }
            if health.next.is_some_and(|next| next > now) {
                continue;
            }
            let period = Duration::from_secs(check.period_seconds.unwrap_or(2).into());
            health.next = Some(now + period);
            let dir = work_dir(&self.config.state_dir, &component.name);
            let timeout = period.min(Duration::from_secs(5));
            due.push(async move { (component.name.clone(), probe::probe(check, &dir, timeout).await) });
        }
        for (name, result) in futures::future::join_all(due).await {
            if let Some(health) = self.health.get_mut(&name) {
                health.failures = if result.is_ok() { 0 } else { health.failures + 1 };
                let tolerated = health.ever_healthy && health.failures < FAILURE_THRESHOLD;
                health.healthy = Some(result.is_ok() || tolerated);
                health.ever_healthy |= result.is_ok();
                if let Err(e) = &result {
                    tracing::debug!(component = %name, error = %e, "health probe failed");
                }
                health.error = result.err();
            }
        }
    }

    async fn write_status(
        &mut self,
        spec: &MachineSpec,
        desired: &[Desired],
        problems: &HashMap<String, String>,
        hub_status: Option<&MachineStatus>,
    ) {
        let mut components: Vec<ComponentStatus> = Vec::new();
        for want in desired {
            let record = self.state.components.iter().find(|r| r.name == want.name);
            let health = self.health.get(&want.name).filter(|h| record.is_some_and(|r| r.pid == h.pid));
            let has_check = spec.components.iter().any(|c| c.name == want.name && c.health.is_some());
            let seen = Observation {
                healthy: health.and_then(|h| h.healthy),
                ever_healthy: health.is_some_and(|h| h.ever_healthy),
                has_health_check: has_check,
                problem: problems
                    .get(&want.name)
                    .cloned()
                    .or_else(|| health.filter(|h| h.healthy == Some(false)).and_then(|h| h.error.clone())),
            };
            components.push(node::component_status(&want.name, Some(want), record, &seen));
        }
        let now = Timestamp::now();
        // After an agent restart, compare with what the hub holds so an
        // unchanged status is not rewritten just because we forgot it.
        let previous = self.last_status.as_ref().or(hub_status);
        let mut status = node::machine_status(components, VERSION, previous, now);
        status.real_nodes = self.real_nodes.statuses(&self.state.real_nodes, spec, &self.state.components);
        if self.host_read.is_none_or(|at| at.elapsed() >= self.config.heartbeat) {
            self.host =
                host::detect(&self.config.state_dir, self.config.address, self.container_runtime.clone());
            self.host_read = Some(Instant::now());
        }
        status.addresses = self.host.addresses.clone();
        status.capacity = self.host.capacity.clone();
        status.machine_info = Some(self.host.info.clone());
        let heartbeat_due = self.last_write.is_none_or(|at| at.elapsed() >= self.config.heartbeat);
        if !node::status_changed(previous, &status) && !heartbeat_due {
            return;
        }
        status.last_heartbeat = Some(Time(now));
        let machines: Api<Machine> = Api::all(self.client.clone());
        // Server-side apply (still on 1.37: `hub/tests/cluster_list_maps.rs`)
        // turns a map-list whose last item an apply drops into `null`, which
        // the schema then rejects (an explicit `[]` fares no better): empty
        // it with a merge patch first.
        if status.components.is_empty() && previous.is_some_and(|p| !p.components.is_empty()) {
            let empty = serde_json::json!({"status": {"components": []}});
            if let Err(e) = machines
                .patch_status(&self.config.machine, &PatchParams::default(), &Patch::Merge(&empty))
                .await
            {
                tracing::warn!(machine = %self.config.machine, error = %e, "emptying the component statuses failed");
            }
        }
        let patch = serde_json::json!({
            "apiVersion": "kok.flotilla.io/v1alpha1",
            "kind": "Machine",
            "status": status,
        });
        match machines
            .patch_status(
                &self.config.machine,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => {
                self.last_status = Some(status);
                self.last_write = Some(Instant::now());
            }
            // Server-side apply can leave `null` behind where an apply
            // drops a list's last item, which the schema rejects: a
            // rejected status must not stop the heartbeat, so write the
            // whole status by merge patch, which replaces each list
            // outright.
            Err(kube::Error::Api(e)) if e.code == 422 => {
                tracing::warn!(machine = %self.config.machine, error = %e.message,
                    "the Machine status apply was rejected; writing it by merge patch");
                let merge = serde_json::json!({ "status": status });
                match machines
                    .patch_status(&self.config.machine, &PatchParams::default(), &Patch::Merge(&merge))
                    .await
                {
                    Ok(_) => {
                        self.last_status = Some(status);
                        self.last_write = Some(Instant::now());
                    }
                    Err(e) => {
                        tracing::warn!(machine = %self.config.machine, error = %e, "writing the Machine status failed")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(machine = %self.config.machine, error = %e, "writing the Machine status failed")
            }
        }
    }
}
