//! Component processes: started detached, identified by pid and start time,
//! stopped by process group.
//!
//! Unlike `flotilla_localkube::process` children, a component must outlive
//! its node agent (so the agent can be restarted or upgraded without taking
//! etcd or an API server down): it gets its own session, hence its own
//! process group, and no parent-death signal. The agent finds it again
//! through its record (pid + start time) and adopts it.
//!
//! A pid is only ever signalled while `/proc/<pid>/stat` still shows the
//! start time we recorded: a pid reused by an unrelated process is left
//! alone.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// PATH for components that set none (they inherit no environment).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A started process: its pid and start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    pub pid: u32,
    pub start_ticks: u64,
}

/// What `/proc` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcState {
    /// No such process, or a different one now holds the pid.
    Gone,
    /// Exited but not yet reaped by its parent (its pid is still held).
    Zombie,
    Alive,
}

/// The start time (`/proc/<pid>/stat` field 22) and whether it is a zombie.
fn stat(pid: u32) -> Option<(u64, bool)> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesised and may contain spaces: count
    // fields after its closing parenthesis. starttime is the 20th of them.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state == "Z"))
}

/// The start time of a running process, for records.
pub fn start_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|(start, _)| start)
}

fn proc_state(pid: u32, start_ticks: u64) -> ProcState {
    match stat(pid) {
        Some((start, zombie)) if start == start_ticks => {
            if zombie {
                ProcState::Zombie
            } else {
                ProcState::Alive
            }
        }
        _ => ProcState::Gone,
    }
}

/// True while the recorded process (this pid with this start time) exists
/// and has not exited.
pub fn is_alive(pid: u32, start_ticks: u64) -> bool {
    proc_state(pid, start_ticks) == ProcState::Alive
}

/// Starts `binary` in its own session with stdout and stderr appended to
/// `log_path`, in `work_dir`, with exactly `env` (plus a default PATH).
pub fn spawn(
    binary: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
    work_dir: &Path,
    log_path: &Path,
) -> std::io::Result<Spawned> {
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::create_dir_all(work_dir)?;
    let log = OpenOptions::new().create(true).append(true).open(log_path)?;
    let log_err = log.try_clone()?;
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(env)
        .current_dir(work_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: setsid is async-signal-safe; the closure runs between fork and
    // exec and does nothing else.
    unsafe {
        command.pre_exec(|| {
            // Its own session and process group: it survives the agent, and
            // stopping the group stops whatever it forked.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    let pid = child.id();
    // Dropping a std Child neither kills nor reaps it: exits are collected
    // with waitpid in `check`, which also works after an agent restart for
    // processes that are still our children.
    drop(child);
    let start_ticks = start_ticks(pid).ok_or_else(|| {
        std::io::Error::other(format!("process {pid} vanished before its start time could be read"))
    })?;
    Ok(Spawned { pid, start_ticks })
}

/// Whether the recorded process still runs: `None` while it does, else
/// `Some(exit code)` (128 + signal when a signal ended it; `None` inside
/// when the code is unknown because the process was not our child).
pub fn check(pid: u32, start_ticks: u64) -> Option<Option<i32>> {
    match proc_state(pid, start_ticks) {
        // Our own exited children stay zombies until we reap them, so a
        // vanished process was someone else's to reap: its code is unknown.
        ProcState::Gone => Some(None),
        ProcState::Zombie | ProcState::Alive => {
            match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Some(Some(code)),
                Ok(WaitStatus::Signaled(_, signal, _)) => Some(Some(128 + signal as i32)),
                Ok(_) => None,
                // Not our child (adopted after an agent restart): its parent
                // (init) reaps it, so a zombie is as good as gone.
                Err(_) => {
                    if proc_state(pid, start_ticks) == ProcState::Alive {
                        None
                    } else {
                        Some(None)
                    }
                }
            }
        }
    }
}

/// Stops the recorded process and its group: SIGTERM, then SIGKILL after
/// `grace`. Returns its exit code when known. Does nothing if the pid no
/// longer holds the recorded process.
pub async fn stop(pid: u32, start_ticks: u64, grace: Duration) -> Option<i32> {
    if proc_state(pid, start_ticks) == ProcState::Gone {
        return None;
    }
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && proc_state(pid, start_ticks) == ProcState::Alive {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While the leader is alive or a zombie its pid (and so the group id)
    // cannot be reused: SIGKILL takes down anything left in the group.
    if proc_state(pid, start_ticks) != ProcState::Gone {
        let _ = killpg(group, Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(code) = check(pid, start_ticks) {
            return code;
        }
        if Instant::now() > deadline {
            tracing::warn!(pid, "process did not die after SIGKILL");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs the recorded process's group at once, if it is still that
/// process. For emergencies and test cleanup.
pub fn kill_now(pid: u32, start_ticks: u64) {
    if proc_state(pid, start_ticks) != ProcState::Gone {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
    }
}

/// Appends a line to a component's log (the agent's own notes: starts,
/// stops), so the log tells when each process began.
pub fn note(log_path: &Path, line: &str) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut log = OpenOptions::new().create(true).append(true).open(log_path)?;
        log.write_all(format!("{line}\n").as_bytes())
    };
    if let Err(e) = write() {
        tracing::warn!(log = %log_path.display(), error = %e, "cannot write to the component log");
    }
}

/// The last `lines` non-blank lines of a log (reads at most its last 64
/// KiB). Blank lines are left out: they say nothing (and Kubernetes 1.20,
/// our first target, read `""` in a CRD's string list as `null`, which
/// failed the whole Machine status write, heartbeat included).
pub fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].iter().map(|l| l.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, script: &str) -> Spawned {
        spawn(
            Path::new("/bin/sh"),
            &["-c".into(), script.into()],
            &BTreeMap::new(),
            &dir.join("work"),
            &dir.join("log"),
        )
        .unwrap()
    }

    async fn wait_exit(p: Spawned) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(code) = check(p.pid, p.start_ticks) {
                return code;
            }
            assert!(Instant::now() < deadline, "process {} did not exit", p.pid);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn exit_codes_and_output_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let p = sh(dir.path(), "echo out; echo; echo err >&2; pwd; echo \"FOO=$FOO\"; exit 3");
        assert_eq!(wait_exit(p).await, Some(3));
        let tail = log_tail(&dir.path().join("log"), 10);
        let work = dir.path().join("work").canonicalize().unwrap();
        assert_eq!(
            tail,
            ["out", "err", work.to_str().unwrap(), "FOO="],
            "runs in its work dir with no inherited env; blank lines are left out"
        );
    }

    #[tokio::test]
    async fn stop_terminates_the_whole_group_and_a_stale_record_signals_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let p = sh(dir.path(), &format!("sleep 300 & echo $! > {}; wait", pidfile.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&pidfile).map(|s| s.trim().is_empty()).unwrap_or(true) {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let grandchild: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let grandchild_ticks = start_ticks(grandchild).unwrap();
        assert!(is_alive(p.pid, p.start_ticks));
        // A record whose start time does not match is never signalled.
        assert_eq!(stop(p.pid, p.start_ticks + 1, Duration::ZERO).await, None);
        assert!(is_alive(p.pid, p.start_ticks));

        let code = stop(p.pid, p.start_ticks, Duration::from_secs(5)).await;
        assert_eq!(code, Some(128 + libc::SIGTERM));
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_alive(grandchild, grandchild_ticks) {
            assert!(Instant::now() < deadline, "the grandchild survived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
