//! The node agent's decisions: which components to start, stop or restart,
//! when an exited one may start again, what a component's files hold, and
//! the Machine status. No I/O: the agent observes processes and fetches
//! Secrets/ConfigMaps, then asks here what to do.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use flotilla_api::machine::{
    conditions, ComponentSpec, ComponentState, ComponentStatus, MachineStatus, RestartPolicy,
};
use flotilla_core::conditions::{condition, Wanted};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Lines of a component's log kept in its status after it exits.
pub const LOG_TAIL_LINES: usize = 20;
/// The longest wait before an exited component is started again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A process that ran this long before exiting starts again after the
/// shortest delay: its earlier crashes are history.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// Default permission bits of a rendered file: they often hold keys.
pub const DEFAULT_FILE_MODE: u32 = 0o600;

/// The delay before the next start of a component that has already been
/// restarted `restarts` times in a row: 1 s, 2 s, 4 s ... at most 60 s.
pub fn backoff(restarts: u32) -> Duration {
    let seconds = 1u64.checked_shl(restarts.min(16)).unwrap_or(u64::MAX);
    Duration::from_secs(seconds).min(MAX_BACKOFF)
}

/// The consecutive-restart count to use once a process exited after running
/// for `ran_for`: it goes back to zero after a long healthy run.
pub fn restarts_in_a_row(previous: u32, ran_for: Duration) -> u32 {
    if ran_for >= BACKOFF_RESET_AFTER {
        0
    } else {
        previous
    }
}

/// Whether a process that exited with `code` (None: unknown, e.g. an adopted
/// process whose parent we are not) is started again.
pub fn should_restart(policy: RestartPolicy, code: Option<i32>) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => code != Some(0),
        RestartPolicy::Never => false,
    }
}

/// Which kind of hub object a file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    Secret,
    ConfigMap,
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceKind::Secret => "Secret",
            SourceKind::ConfigMap => "ConfigMap",
        })
    }
}

/// A Secret or ConfigMap some component's files need.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceRef {
    pub kind: SourceKind,
    pub namespace: String,
    pub name: String,
}

/// The data of fetched Secrets and ConfigMaps (absent ones are simply not
/// in the map).
pub type Sources = BTreeMap<SourceRef, BTreeMap<String, Vec<u8>>>;

/// Every Secret and ConfigMap the components' files refer to, each once.
pub fn referenced_sources(components: &[ComponentSpec]) -> Vec<SourceRef> {
    let mut refs: Vec<SourceRef> = components
        .iter()
        .flat_map(|c| &c.files)
        .flat_map(|f| {
            let secret = f.secret_ref.as_ref().map(|r| (SourceKind::Secret, r));
            let config_map = f.config_map_ref.as_ref().map(|r| (SourceKind::ConfigMap, r));
            secret.into_iter().chain(config_map)
        })
        .map(|(kind, r)| SourceRef { kind, namespace: r.namespace.clone(), name: r.name.clone() })
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// A file ready to be written for a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("file {path}: exactly one of content, secretRef and configMapRef must be set")]
    Source { path: String },
    #[error("file {path}: the path must not be empty or contain `..`")]
    Path { path: String },
    #[error("file {path}: {kind} {namespace}/{name} not found")]
    MissingObject { path: String, kind: SourceKind, namespace: String, name: String },
    #[error("file {path}: {kind} {namespace}/{name} has no key {key}")]
    MissingKey { path: String, kind: SourceKind, namespace: String, name: String, key: String },
}

/// The component's files with their content, relative paths resolved under
/// `work_dir` (the component's working directory).
pub fn render_files(
    component: &ComponentSpec,
    work_dir: &Path,
    sources: &Sources,
) -> Result<Vec<RenderedFile>, RenderError> {
    let mut files = Vec::with_capacity(component.files.len());
    for file in &component.files {
        let path = Path::new(&file.path);
        if file.path.is_empty() || path.components().any(|c| c == Component::ParentDir) {
            return Err(RenderError::Path { path: file.path.clone() });
        }
        let content = match (&file.content, &file.secret_ref, &file.config_map_ref) {
            (Some(text), None, None) => text.clone().into_bytes(),
            (None, Some(r), None) | (None, None, Some(r)) => {
                let kind = if file.secret_ref.is_some() { SourceKind::Secret } else { SourceKind::ConfigMap };
                let source = SourceRef { kind, namespace: r.namespace.clone(), name: r.name.clone() };
                let Some(data) = sources.get(&source) else {
                    return Err(RenderError::MissingObject {
                        path: file.path.clone(),
                        kind,
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                    });
                };
                let Some(bytes) = data.get(&r.key) else {
                    return Err(RenderError::MissingKey {
                        path: file.path.clone(),
                        kind,
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                        key: r.key.clone(),
                    });
                };
                bytes.clone()
            }
            _ => return Err(RenderError::Source { path: file.path.clone() }),
        };
        files.push(RenderedFile {
            path: work_dir.join(path),
            content,
            mode: file.mode.unwrap_or(DEFAULT_FILE_MODE) & 0o777,
        });
    }
    Ok(files)
}

/// Hash of everything the process sees when it starts: binary, args, env
/// and its rendered files. The health check and restart policy are left out,
/// so changing them restarts nothing.
pub fn spec_hash(component: &ComponentSpec, files: &[RenderedFile]) -> String {
    let mut files: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            serde_json::json!({
                "path": f.path.to_string_lossy(),
                "mode": f.mode,
                "sha256": hex::encode(Sha256::digest(&f.content)),
            })
        })
        .collect();
    files.sort_by_key(|f| f["path"].as_str().unwrap_or_default().to_string());
    let canonical = serde_json::json!({
        "binary": component.binary,
        "args": component.args,
        "env": component.env,
        "files": files,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    hex::encode(&digest[..8])
}

/// What the agent wants of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    /// None when the component cannot be rendered right now (a missing
    /// Secret, say): whatever runs is left alone and nothing new starts.
    pub spec_hash: Option<String>,
    pub restart_policy: RestartPolicy,
}

/// How an exited process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exit {
    /// The exit code, or 128 + signal; None when unknown (the process was
    /// not our child, or never started).
    pub code: Option<i32>,
    pub at: Timestamp,
}

/// The agent's record of one component's process: what it started, and what
/// it has seen of it since. Kept in the agent's state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningComponent {
    pub name: String,
    /// 0 if the process could not be started.
    pub pid: u32,
    /// The process's start time in clock ticks since boot
    /// (`/proc/<pid>/stat`): with the pid it identifies the process even if
    /// the pid is reused later.
    pub start_ticks: u64,
    pub spec_hash: String,
    pub started_at: Timestamp,
    /// Set once the process has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
    /// Starts after an exit, ever.
    #[serde(default)]
    pub restarts: u32,
    /// Starts after an exit since the last long run (drives the backoff).
    #[serde(default)]
    pub restarts_in_a_row: u32,
    /// The last exit of an earlier process of this component (kept across a
    /// restart, for status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<Exit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl RunningComponent {
    pub fn alive(&self) -> bool {
        self.exit.is_none()
    }

    /// When an exited process may start again.
    pub fn restart_at(&self) -> Option<Timestamp> {
        let exit = self.exit.as_ref()?;
        let delay = backoff(self.restarts_in_a_row);
        Some(add(exit.at, delay))
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    let ms = t.as_millisecond().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MAX)
}

/// Why a component is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// Its binary, args, env or files changed.
    SpecChanged,
    /// It exited and its backoff has passed.
    Exited,
}

/// One step of a reconcile. Components that need nothing do not appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing runs for this component yet.
    Start { name: String },
    /// Stop the process if it still runs, then start the component again.
    Restart { name: String, reason: RestartReason },
    /// Not in the spec any more: stop it and forget it.
    Stop { name: String },
    /// Exited and waiting for its backoff; reconcile again at `at`.
    Wait { name: String, at: Timestamp },
}

/// What to do to bring the running components in line with the spec.
pub fn plan(desired: &[Desired], running: &[RunningComponent], paused: bool, now: Timestamp) -> Vec<Action> {
    if paused {
        return Vec::new();
    }
    let mut actions = Vec::new();
    for want in desired {
        let Some(hash) = &want.spec_hash else { continue };
        let name = want.name.clone();
        let Some(have) = running.iter().find(|r| r.name == want.name) else {
            actions.push(Action::Start { name });
            continue;
        };
        if &have.spec_hash != hash {
            actions.push(Action::Restart { name, reason: RestartReason::SpecChanged });
            continue;
        }
        let Some(exit) = &have.exit else { continue };
        if !should_restart(want.restart_policy, exit.code) {
            continue;
        }
        match have.restart_at() {
            Some(at) if at > now => actions.push(Action::Wait { name, at }),
            _ => actions.push(Action::Restart { name, reason: RestartReason::Exited }),
        }
    }
    for have in running {
        if !desired.iter().any(|d| d.name == have.name) {
            actions.push(Action::Stop { name: have.name.clone() });
        }
    }
    actions
}

/// The record of a process just started for `name`, carrying the history
/// of the one before it (if any).
pub fn started(
    previous: Option<&RunningComponent>,
    name: &str,
    pid: u32,
    start_ticks: u64,
    spec_hash: &str,
    reason: Option<RestartReason>,
    now: Timestamp,
) -> RunningComponent {
    let after_exit = reason == Some(RestartReason::Exited);
    let (restarts, in_a_row) = match previous {
        Some(p) if after_exit => (p.restarts + 1, p.restarts_in_a_row + 1),
        // A new spec may well fix what crashed: start the backoff afresh.
        Some(p) => (p.restarts, 0),
        None => (0, 0),
    };
    RunningComponent {
        name: name.to_string(),
        pid,
        start_ticks,
        spec_hash: spec_hash.to_string(),
        started_at: now,
        exit: None,
        restarts,
        restarts_in_a_row: in_a_row,
        last_exit: previous.and_then(|p| p.exit.clone().or_else(|| p.last_exit.clone())),
        log_tail: previous.map(|p| p.log_tail.clone()).unwrap_or_default(),
        message: None,
    }
}

/// The record once its process has exited.
pub fn exited(
    record: &RunningComponent,
    code: Option<i32>,
    log_tail: Vec<String>,
    now: Timestamp,
) -> RunningComponent {
    let ran_for = Duration::from_millis(
        u64::try_from(now.as_millisecond().saturating_sub(record.started_at.as_millisecond())).unwrap_or(0),
    );
    let message = match code {
        Some(c) if c > 128 => format!("killed by signal {}", c - 128),
        Some(c) => format!("exited with code {c}"),
        None => "exited (exit code unknown)".to_string(),
    };
    RunningComponent {
        exit: Some(Exit { code, at: now }),
        restarts_in_a_row: restarts_in_a_row(record.restarts_in_a_row, ran_for),
        log_tail,
        message: Some(message),
        ..record.clone()
    }
}

/// What the agent knows of a component beyond its record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// The last probe's verdict; None without a health check or before the
    /// first probe.
    pub healthy: Option<bool>,
    /// Whether any probe passed since the process started.
    pub ever_healthy: bool,
    pub has_health_check: bool,
    /// Why the component cannot be rendered or started, if so.
    pub problem: Option<String>,
}

/// The status of one component (`desired`: its spec entry, None while it is
/// being removed).
pub fn component_status(
    name: &str,
    desired: Option<&Desired>,
    record: Option<&RunningComponent>,
    seen: &Observation,
) -> ComponentStatus {
    let mut status = ComponentStatus { name: name.to_string(), ..Default::default() };
    let Some(record) = record else {
        status.state = if seen.problem.is_some() { ComponentState::Failed } else { ComponentState::Starting };
        status.message = seen.problem.clone();
        return status;
    };
    status.restarts = record.restarts;
    status.log_tail = record.log_tail.clone();
    status.spec_hash = Some(record.spec_hash.clone());
    let last_exit = record.exit.as_ref().or(record.last_exit.as_ref());
    status.last_exit_code = last_exit.and_then(|e| e.code);
    status.last_exit_time = last_exit.map(|e| Time(e.at));
    status.message = seen.problem.clone().or_else(|| record.message.clone());
    match (&record.exit, desired) {
        (None, _) => {
            status.pid = Some(record.pid);
            status.started_at = Some(Time(record.started_at));
            status.healthy = if seen.has_health_check { seen.healthy } else { None };
            status.state = if seen.has_health_check && !seen.ever_healthy {
                ComponentState::Starting
            } else {
                ComponentState::Running
            };
        }
        (Some(exit), Some(want)) if should_restart(want.restart_policy, exit.code) => {
            status.state = ComponentState::Backoff;
        }
        (Some(exit), _) if exit.code == Some(0) || desired.is_none() => {
            status.state = ComponentState::Stopped
        }
        (Some(_), _) => status.state = ComponentState::Failed,
    }
    status
}

/// The Machine status from its components' statuses (in spec order). The
/// Ready condition keeps its transition time while it does not change;
/// `lastHeartbeat` is left to the caller.
pub fn machine_status(
    components: Vec<ComponentStatus>,
    agent_version: &str,
    previous: Option<&MachineStatus>,
    now: Timestamp,
) -> MachineStatus {
    let not_ready: Vec<String> = components
        .iter()
        .filter(|c| c.state != ComponentState::Running || c.healthy == Some(false))
        .map(|c| match c.healthy {
            Some(false) if c.state == ComponentState::Running => format!("{} unhealthy", c.name),
            _ => format!("{} {}", c.name, c.state),
        })
        .collect();
    let running = components.iter().filter(|c| c.state == ComponentState::Running).count();
    let ready = if not_ready.is_empty() {
        Wanted::new(conditions::READY, true, "ComponentsRunning", format!("{running} components running"))
    } else {
        Wanted::new(conditions::READY, false, "ComponentsNotReady", not_ready.join(", "))
    };
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    MachineStatus {
        conditions: vec![condition(previous_conditions, ready, &Time(now))],
        node_agent_version: Some(agent_version.to_string()),
        last_heartbeat: previous.and_then(|p| p.last_heartbeat.clone()),
        component_summary: Some(format!("{running}/{}", components.len())),
        components,
        // The host's facts are the node agent's to add.
        ..Default::default()
    }
}

/// Whether `next` says something `previous` did not (the heartbeat aside):
/// the agent writes status only then, or when a heartbeat is due.
pub fn status_changed(previous: Option<&MachineStatus>, next: &MachineStatus) -> bool {
    let Some(previous) = previous else { return true };
    let strip = |s: &MachineStatus| MachineStatus { last_heartbeat: None, ..s.clone() };
    strip(previous) != strip(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::machine::{ComponentFile, KeyRef};

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn want(name: &str, hash: &str) -> Desired {
        Desired { name: name.into(), spec_hash: Some(hash.into()), restart_policy: RestartPolicy::Always }
    }

    fn record(name: &str, hash: &str) -> RunningComponent {
        started(None, name, 100, 5, hash, None, ts(1_000))
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_long_run_resets_the_backoff() {
        assert_eq!(restarts_in_a_row(5, Duration::from_secs(599)), 5);
        assert_eq!(restarts_in_a_row(5, Duration::from_secs(600)), 0);
    }

    #[test]
    fn plan_starts_new_stops_removed_and_leaves_the_rest() {
        let desired = [want("a", "h1"), want("b", "h2")];
        let running = [record("a", "h1"), record("c", "h3")];
        let actions = plan(&desired, &running, false, ts(2_000));
        assert_eq!(
            actions,
            [Action::Start { name: "b".into() }, Action::Stop { name: "c".into() }],
            "a runs with its spec: left alone"
        );
    }

    #[test]
    fn plan_restarts_only_the_component_whose_hash_changed() {
        let desired = [want("a", "h1"), want("b", "new")];
        let running = [record("a", "h1"), record("b", "old")];
        assert_eq!(
            plan(&desired, &running, false, ts(2_000)),
            [Action::Restart { name: "b".into(), reason: RestartReason::SpecChanged }]
        );
    }

    #[test]
    fn plan_waits_for_the_backoff_then_restarts() {
        let desired = [want("a", "h1")];
        let mut r = record("a", "h1");
        r.restarts_in_a_row = 2; // 4 s
        let r = exited(&r, Some(1), vec![], ts(1_010));
        assert_eq!(
            plan(&desired, std::slice::from_ref(&r), false, ts(1_012)),
            [Action::Wait { name: "a".into(), at: ts(1_014) }]
        );
        assert_eq!(
            plan(&desired, &[r], false, ts(1_014)),
            [Action::Restart { name: "a".into(), reason: RestartReason::Exited }]
        );
    }

    #[test]
    fn restart_policy_decides_whether_an_exit_is_restarted() {
        for (policy, code, restarts) in [
            (RestartPolicy::Always, Some(0), true),
            (RestartPolicy::OnFailure, Some(0), false),
            (RestartPolicy::OnFailure, Some(137), true),
            (RestartPolicy::OnFailure, None, true),
            (RestartPolicy::Never, Some(1), false),
        ] {
            let desired = [Desired { restart_policy: policy, ..want("a", "h") }];
            let r = exited(&record("a", "h"), code, vec![], ts(1_000));
            let actions = plan(&desired, &[r], false, ts(5_000));
            assert_eq!(!actions.is_empty(), restarts, "{policy:?} {code:?}");
        }
    }

    #[test]
    fn paused_or_unrenderable_components_are_left_alone() {
        let running = [record("a", "h1")];
        assert!(plan(&[want("a", "h2"), want("b", "h")], &running, true, ts(0)).is_empty());
        let unrenderable = Desired { spec_hash: None, ..want("a", "") };
        assert!(plan(&[unrenderable], &running, false, ts(0)).is_empty());
    }

    #[test]
    fn records_count_restarts_after_exits_but_not_after_spec_changes() {
        let first = record("a", "h1");
        let dead = exited(&first, Some(137), vec!["bye".into()], ts(1_005));
        assert_eq!(dead.message.as_deref(), Some("killed by signal 9"));
        assert_eq!(dead.restart_at(), Some(ts(1_006)));
        let second = started(Some(&dead), "a", 101, 6, "h1", Some(RestartReason::Exited), ts(1_006));
        assert_eq!((second.restarts, second.restarts_in_a_row), (1, 1));
        assert_eq!(second.last_exit.as_ref().unwrap().code, Some(137));
        assert_eq!(second.log_tail, ["bye"]);
        let third = started(Some(&second), "a", 102, 7, "h2", Some(RestartReason::SpecChanged), ts(1_100));
        assert_eq!((third.restarts, third.restarts_in_a_row), (1, 0));
        // After ten minutes of running, the next crash restarts after 1 s.
        let late = exited(&second, Some(1), vec![], ts(1_006 + 600));
        assert_eq!(late.restarts_in_a_row, 0);
    }

    fn sources() -> Sources {
        let mut s = Sources::new();
        let secret = SourceRef { kind: SourceKind::Secret, namespace: "ns".into(), name: "pki".into() };
        s.insert(secret, BTreeMap::from([("ca.crt".to_string(), b"CA".to_vec())]));
        s
    }

    fn component_with_files(files: Vec<ComponentFile>) -> ComponentSpec {
        ComponentSpec { name: "etcd".into(), binary: "/bin/etcd".into(), files, ..Default::default() }
    }

    fn secret_file(path: &str, key: &str) -> ComponentFile {
        ComponentFile {
            path: path.into(),
            secret_ref: Some(KeyRef { namespace: "ns".into(), name: "pki".into(), key: key.into() }),
            ..Default::default()
        }
    }

    #[test]
    fn files_are_rendered_from_content_and_secrets() {
        let c = component_with_files(vec![
            ComponentFile {
                path: "/etc/x.conf".into(),
                content: Some("x".into()),
                mode: Some(0o644),
                ..Default::default()
            },
            secret_file("pki/ca.crt", "ca.crt"),
        ]);
        let files = render_files(&c, Path::new("/state/etcd"), &sources()).unwrap();
        assert_eq!(
            files[0],
            RenderedFile { path: "/etc/x.conf".into(), content: b"x".to_vec(), mode: 0o644 }
        );
        assert_eq!(files[1].path, Path::new("/state/etcd/pki/ca.crt"));
        assert_eq!((files[1].content.as_slice(), files[1].mode), (&b"CA"[..], 0o600));
        assert_eq!(
            referenced_sources(&[c.clone(), c]),
            [SourceRef { kind: SourceKind::Secret, namespace: "ns".into(), name: "pki".into() }]
        );
    }

    #[test]
    fn bad_files_are_named_in_errors() {
        let dir = Path::new("/w");
        let missing_key = component_with_files(vec![secret_file("ca", "nope")]);
        let err = render_files(&missing_key, dir, &sources()).unwrap_err().to_string();
        assert_eq!(err, "file ca: Secret ns/pki has no key nope");
        let mut cm = secret_file("cm", "k");
        cm.config_map_ref = cm.secret_ref.take();
        let err = render_files(&component_with_files(vec![cm]), dir, &sources()).unwrap_err().to_string();
        assert_eq!(err, "file cm: ConfigMap ns/pki not found");
        let escape =
            ComponentFile { path: "../x".into(), content: Some(String::new()), ..Default::default() };
        assert!(matches!(
            render_files(&component_with_files(vec![escape]), dir, &sources()),
            Err(RenderError::Path { .. })
        ));
        let both = ComponentFile { content: Some(String::new()), ..secret_file("b", "ca.crt") };
        assert!(matches!(
            render_files(&component_with_files(vec![both]), dir, &sources()),
            Err(RenderError::Source { .. })
        ));
    }

    #[test]
    fn spec_hash_changes_with_what_the_process_sees_only() {
        let base = ComponentSpec {
            name: "a".into(),
            binary: "/bin/a".into(),
            args: vec!["-x".into()],
            ..Default::default()
        };
        let h = spec_hash(&base, &[]);
        let mut args = base.clone();
        args.args.push("-y".into());
        let mut env = base.clone();
        env.env.insert("K".into(), "V".into());
        let mut policy = base.clone();
        policy.restart_policy = RestartPolicy::Never;
        policy.health = Some(Default::default());
        assert_ne!(spec_hash(&args, &[]), h);
        assert_ne!(spec_hash(&env, &[]), h);
        assert_eq!(spec_hash(&policy, &[]), h);
        let file =
            |content: &[u8]| RenderedFile { path: "/f".into(), content: content.to_vec(), mode: 0o600 };
        assert_ne!(spec_hash(&base, &[file(b"1")]), spec_hash(&base, &[file(b"2")]));
        assert_eq!(spec_hash(&base, &[file(b"1")]), spec_hash(&base, &[file(b"1")]));
    }

    #[test]
    fn component_states_follow_the_process_and_its_probe() {
        let want = want("a", "h1");
        let alive = record("a", "h1");
        let probing = Observation { has_health_check: true, ..Default::default() };
        let s = component_status("a", Some(&want), Some(&alive), &probing);
        assert_eq!((s.state, s.pid, s.healthy), (ComponentState::Starting, Some(100), None));
        let healthy = Observation { healthy: Some(true), ever_healthy: true, ..probing.clone() };
        assert_eq!(component_status("a", Some(&want), Some(&alive), &healthy).state, ComponentState::Running);
        let no_probe = component_status("a", Some(&want), Some(&alive), &Observation::default());
        assert_eq!((no_probe.state, no_probe.healthy), (ComponentState::Running, None));

        let dead = exited(&alive, Some(2), vec!["oops".into()], ts(1_001));
        let s = component_status("a", Some(&want), Some(&dead), &healthy);
        assert_eq!((s.state, s.pid, s.last_exit_code), (ComponentState::Backoff, None, Some(2)));
        assert_eq!(s.log_tail, ["oops"]);
        let never = Desired { restart_policy: RestartPolicy::Never, ..want.clone() };
        assert_eq!(component_status("a", Some(&never), Some(&dead), &healthy).state, ComponentState::Failed);
        let clean = exited(&alive, Some(0), vec![], ts(1_001));
        assert_eq!(
            component_status("a", Some(&never), Some(&clean), &healthy).state,
            ComponentState::Stopped
        );

        let broken =
            Observation { problem: Some("file x: Secret a/b not found".into()), ..Default::default() };
        let s = component_status("a", Some(&want), None, &broken);
        assert_eq!(
            (s.state, s.message.as_deref()),
            (ComponentState::Failed, Some("file x: Secret a/b not found"))
        );
    }

    #[test]
    fn machine_is_ready_when_every_component_runs_healthy_and_keeps_its_transition_time() {
        let running = |name: &str, healthy| ComponentStatus {
            name: name.into(),
            state: ComponentState::Running,
            healthy,
            ..Default::default()
        };
        let s1 = machine_status(vec![running("a", Some(true)), running("b", None)], "v1", None, ts(10));
        let ready = &s1.conditions[0];
        assert_eq!((ready.status.as_str(), ready.last_transition_time.0), ("True", ts(10)));
        assert_eq!(s1.component_summary.as_deref(), Some("2/2"));

        let s2 = machine_status(vec![running("a", Some(true)), running("b", None)], "v1", Some(&s1), ts(20));
        assert_eq!(s2.conditions[0].last_transition_time.0, ts(10));
        assert!(!status_changed(Some(&s1), &s2));

        let s3 = machine_status(vec![running("a", Some(false)), running("b", None)], "v1", Some(&s2), ts(30));
        let ready = &s3.conditions[0];
        assert_eq!((ready.status.as_str(), ready.message.as_str()), ("False", "a unhealthy"));
        assert_eq!(ready.last_transition_time.0, ts(30));
        assert!(status_changed(Some(&s2), &s3));

        let mut beat = s2.clone();
        beat.last_heartbeat = Some(Time(ts(99)));
        assert!(!status_changed(Some(&s2), &beat), "a heartbeat alone is no change");
    }
}
