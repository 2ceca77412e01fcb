//! The fleet daemon's supervision of the processes it owns, once the fleet
//! is ready: the hub's etcd, kube-apiserver and kube-controller-manager,
//! `hub run` and the node agents.
//!
//! Every half second it reaps what exited (so no zombie is left), and
//! starts it again with the same command line after a backoff (1 s doubling
//! to 30 s, back to 1 s after a run of a minute). Each start rewrites
//! `fleet.json` (atomically) with the new pid, start time and restart count,
//! so `flotilla status` and `flotilla down` see the processes as they are.
//! What the node agents run is theirs to supervise.

use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_localkube::{Cluster, Etcd, ManagedProcess};

use super::state::{write_state, FleetState, ProcessRecord};

/// How often the daemon looks at its children.
const TICK: Duration = Duration::from_millis(500);
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(30);
/// A process that ran this long before exiting restarts after the shortest
/// delay: its earlier crashes are history.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The wait before starting a process again after its `failures`-th exit in
/// a row: 1 s, 2 s, 4 s ... at most 30 s.
pub fn restart_delay(failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
    FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

/// Exits in a row, counting one that came after running for `ran_for`.
pub fn failures_in_a_row(previous: u32, ran_for: Duration) -> u32 {
    if ran_for >= STABLE_AFTER {
        1
    } else {
        previous.saturating_add(1)
    }
}

/// Where a supervised process lives among what the daemon owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// The fleet's etcd.
    Etcd,
    /// A process of the hub cluster (kube-apiserver, kube-controller-manager).
    Hub(String),
    /// One of the daemon's other processes (`hub run`, node agents), by index.
    Own(usize),
}

/// Where its record is in `fleet.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordAt {
    Etcd,
    /// A cluster's process, by cluster index and process name.
    Cluster(usize, String),
    /// A machine's node agent, by machine index.
    Agent(usize),
}

/// One supervised process: its backoff state.
#[derive(Debug, Clone)]
pub struct Watched {
    pub slot: Slot,
    pub record: RecordAt,
    started: Instant,
    failures: u32,
    /// Set while it is down: when to start it again.
    restart_at: Option<Instant>,
}

impl Watched {
    pub fn new(slot: Slot, record: RecordAt, started: Instant) -> Self {
        Self { slot, record, started, failures: 0, restart_at: None }
    }

    /// It exited at `now`: schedules the restart and returns the delay.
    pub fn exited(&mut self, now: Instant) -> Duration {
        self.failures = failures_in_a_row(self.failures, now.saturating_duration_since(self.started));
        let delay = restart_delay(self.failures);
        self.restart_at = Some(now + delay);
        delay
    }

    /// True when it is down and its backoff has passed.
    pub fn due(&self, now: Instant) -> bool {
        self.restart_at.is_some_and(|at| at <= now)
    }

    pub fn down(&self) -> bool {
        self.restart_at.is_some()
    }

    /// It was started again at `now`.
    pub fn restarted(&mut self, now: Instant) {
        self.started = now;
        self.restart_at = None;
    }

    /// Starting it failed at `now`: try again after a longer wait.
    pub fn start_failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = restart_delay(self.failures);
        self.restart_at = Some(now + delay);
        delay
    }
}

/// What the daemon owns, borrowed for one round.
pub struct Owned<'a> {
    pub etcd: &'a mut Etcd,
    pub hub: &'a mut Cluster,
    /// `hub run` first, then one node agent per machine.
    pub processes: &'a mut [ManagedProcess],
}

/// Finds a supervised process by its slot.
pub trait Processes {
    fn process(&mut self, slot: &Slot) -> Option<&mut ManagedProcess>;
}

impl Processes for Owned<'_> {
    fn process(&mut self, slot: &Slot) -> Option<&mut ManagedProcess> {
        match slot {
            Slot::Etcd => Some(self.etcd.process_mut()),
            Slot::Hub(name) => self.hub.process_mut(name),
            Slot::Own(i) => self.processes.get_mut(*i),
        }
    }
}

fn record_mut<'s>(state: &'s mut FleetState, at: &RecordAt) -> Option<&'s mut ProcessRecord> {
    match at {
        RecordAt::Etcd => state.etcd.as_mut(),
        RecordAt::Cluster(i, name) => {
            state.clusters.get_mut(*i)?.processes.iter_mut().find(|p| &p.name == name)
        }
        RecordAt::Agent(i) => state.machines.get_mut(*i).map(|m| &mut m.agent),
    }
}

/// The processes to supervise: the hub's etcd and components (cluster 0 in
/// `state`), `hub run` (`processes[0]`) and the node agents (the rest, in
/// the order of `state.machines`).
pub fn watch_list(owned: &Owned<'_>, now: Instant) -> Vec<Watched> {
    let mut list = vec![Watched::new(Slot::Etcd, RecordAt::Etcd, now)];
    for name in owned.hub.process_names() {
        // The hub shares the fleet's etcd (supervised above).
        if name != "etcd" {
            list.push(Watched::new(Slot::Hub(name.clone()), RecordAt::Cluster(0, name), now));
        }
    }
    for (i, p) in owned.processes.iter().enumerate() {
        let record = match i {
            0 => RecordAt::Cluster(0, p.name().to_string()),
            _ => RecordAt::Agent(i - 1),
        };
        list.push(Watched::new(Slot::Own(i), record, now));
    }
    list
}

/// One round: reaps what exited and restarts what is due. True when
/// `state` changed.
pub fn round(
    owned: &mut impl Processes,
    watched: &mut [Watched],
    state: &mut FleetState,
    now: Instant,
) -> bool {
    let mut changed = false;
    for w in watched.iter_mut() {
        let Some(process) = owned.process(&w.slot) else { continue };
        let name = process.name().to_string();
        if !w.down() {
            // `exit_status` reaps the child.
            let Some(status) = process.exit_status() else { continue };
            let delay = w.exited(now);
            tracing::warn!(process = %name, status = %status, restart_in_ms = delay.as_millis() as u64,
                log = %process.log_path().display(), "fleet process exited; restarting it after a backoff");
            if let Some(record) = record_mut(state, &w.record) {
                record.last_exit = Some(status.to_string());
                changed = true;
            }
            continue;
        }
        if !w.due(now) {
            continue;
        }
        match process.restart() {
            Ok(()) => {
                w.restarted(now);
                let pid = process.pid().unwrap_or(0);
                tracing::info!(process = %name, pid, "fleet process restarted");
                if let Some(record) = record_mut(state, &w.record) {
                    let restarts = record.restarts + 1;
                    let last_exit = record.last_exit.take();
                    *record = ProcessRecord::of(&record.name, pid, process.log_path().to_path_buf());
                    record.restarts = restarts;
                    record.last_exit = last_exit;
                    changed = true;
                }
            }
            Err(e) => {
                let delay = w.start_failed(now);
                tracing::error!(process = %name, error = %e, retry_in_ms = delay.as_millis() as u64,
                    "could not restart a fleet process");
            }
        }
    }
    changed
}

/// Supervises until `stop` resolves.
pub async fn run(
    dir: &Path,
    state: &mut FleetState,
    mut owned: Owned<'_>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut watched = watch_list(&owned, Instant::now());
    tracing::info!(processes = watched.len(), "supervising the fleet's processes");
    let mut tick = tokio::time::interval(TICK);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            _ = tick.tick() => {
                if round(&mut owned, &mut watched, state, Instant::now()) {
                    write_state(dir, state)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::{ClusterRecord, Phase};
    use super::*;
    use flotilla_localkube::process::pid_alive;
    use flotilla_localkube::ProcessSpec;

    struct Children(Vec<ManagedProcess>);

    impl Processes for Children {
        fn process(&mut self, slot: &Slot) -> Option<&mut ManagedProcess> {
            match slot {
                Slot::Own(i) => self.0.get_mut(*i),
                _ => None,
            }
        }
    }

    fn state_with(record: ProcessRecord) -> FleetState {
        FleetState {
            phase: Phase::Ready,
            message: String::new(),
            daemon: record.clone(),
            started_at_unix: 0,
            hub_kubeconfig: "hub.kubeconfig".into(),
            etcd: None,
            clusters: vec![ClusterRecord {
                name: "hub".into(),
                role: "hub".into(),
                server: String::new(),
                kubeconfig: "hub.kubeconfig".into(),
                nodes: 0,
                processes: vec![record],
            }],
            machines: Vec::new(),
            hub_metrics_addr: None,
            hub_proxy_addr: None,
        }
    }

    /// A zombie still has a /proc entry, in state Z.
    fn zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
    }

    #[test]
    fn a_killed_child_is_reaped_restarted_after_its_backoff_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let spec =
            ProcessSpec::new("flotilla-hub", "/bin/sleep".into(), dir.path().join("sleep.log")).arg("300");
        let child = ManagedProcess::spawn(spec).unwrap();
        let first = child.pid().unwrap();
        let mut children = Children(vec![child]);
        let mut state = state_with(ProcessRecord::of("flotilla-hub", first, dir.path().join("sleep.log")));
        let t0 = Instant::now();
        let mut watched = vec![Watched::new(Slot::Own(0), RecordAt::Cluster(0, "flotilla-hub".into()), t0)];
        assert!(!round(&mut children, &mut watched, &mut state, t0), "nothing happened yet");

        nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), nix::sys::signal::Signal::SIGKILL)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !zombie(first) {
            assert!(Instant::now() < deadline, "the child never died");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Reaped and recorded at once; started again only after 1 s.
        assert!(round(&mut children, &mut watched, &mut state, t0));
        assert!(!zombie(first) && !pid_alive(first), "pid {first} left as a zombie");
        let record = state.clusters[0].processes[0].clone();
        assert_eq!((record.pid, record.restarts), (first, 0));
        assert!(record.last_exit.as_deref().is_some_and(|e| e.contains("SIGKILL")), "{record:?}");
        let almost = t0 + Duration::from_millis(999);
        assert!(!round(&mut children, &mut watched, &mut state, almost));
        assert!(children.0[0].pid().is_some_and(|p| p == first));

        assert!(round(&mut children, &mut watched, &mut state, t0 + Duration::from_secs(1)));
        let second = children.0[0].pid().unwrap();
        assert_ne!(second, first);
        let record = state.clusters[0].processes[0].clone();
        assert_eq!((record.pid, record.restarts), (second, 1));
        assert!(record.alive(), "the record does not match the running process: {record:?}");
        assert!(record.last_exit.is_some());
    }

    #[test]
    fn restart_delay_doubles_from_one_second_to_thirty() {
        let cases =
            [(0, 1), (1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (7, 30), (40, 30), (u32::MAX, 30)];
        for (failures, seconds) in cases {
            assert_eq!(restart_delay(failures), Duration::from_secs(seconds), "after {failures} exits");
        }
    }

    #[test]
    fn a_stable_run_resets_the_count() {
        let s = Duration::from_secs;
        let cases = [
            (0, s(0), 1),
            (1, s(2), 2),
            (5, s(59), 6),
            (5, s(60), 1),
            (9, s(3600), 1),
            (u32::MAX, s(1), u32::MAX),
        ];
        for (previous, ran_for, want) in cases {
            assert_eq!(failures_in_a_row(previous, ran_for), want, "{previous} then a run of {ran_for:?}");
        }
    }

    #[test]
    fn a_crash_loop_backs_off_and_a_failed_start_waits_longer() {
        let t0 = Instant::now();
        let mut w = Watched::new(Slot::Etcd, RecordAt::Etcd, t0);
        assert!(!w.down() && !w.due(t0));
        // Exits at once: 1 s, then 2 s, then 4 s.
        let mut now = t0;
        for want in [1, 2, 4] {
            assert_eq!(w.exited(now), Duration::from_secs(want));
            assert!(w.down());
            assert!(!w.due(now + Duration::from_secs(want) - Duration::from_millis(1)));
            now += Duration::from_secs(want);
            assert!(w.due(now));
            w.restarted(now);
            assert!(!w.down());
        }
        assert_eq!(w.start_failed(now), Duration::from_secs(8));
        // After a stable minute the next exit waits 1 s again.
        w.restarted(now);
        assert_eq!(w.exited(now + Duration::from_secs(61)), Duration::from_secs(1));
    }
}
