//! Supervised child processes that cannot outlive their owner.
//!
//! Every child is started
//! - in its own process group, so stopping it also stops anything it forked;
//! - with `PR_SET_PDEATHSIG(SIGKILL)`, so the kernel kills it when its parent
//!   dies, even by SIGKILL. The signal fires when the *thread* that forked the
//!   child exits, so all children are forked by one spawner thread that lives
//!   as long as the process (not by short-lived test or tokio threads);
//! - with stdout and stderr appended to its own log file.
//!
//! Dropping a [`ManagedProcess`] kills its process group and reaps it; when the
//! drop happens during a panic the tail of its log is printed to stderr.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::Error;

/// How to start a process; kept so the same process can be started again.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Short name, unique within its cluster (e.g. `kube-apiserver`).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log_path: PathBuf,
    /// Whether the kernel should kill the process when its parent dies.
    pub die_with_parent: bool,
    /// Cgroup directories the process joins before it runs (one per
    /// hierarchy), so whatever it forks, daemons included, stays findable.
    pub cgroups: Vec<PathBuf>,
}

impl ProcessSpec {
    pub fn new(name: impl Into<String>, program: PathBuf, log_path: PathBuf) -> Self {
        Self {
            name: name.into(),
            program,
            args: Vec::new(),
            env: Vec::new(),
            log_path,
            die_with_parent: true,
            cgroups: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

/// The one thread that forks children (see the module docs for why).
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("flotilla-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop runs until the
                // process exits.
                for mut request in rx {
                    let _ = request.reply.send(request.command.spawn());
                }
            })
            // Without a spawner thread nothing can be started at all.
            .unwrap_or_else(|e| panic!("cannot start the process spawner thread: {e}"));
        Mutex::new(tx)
    })
}

fn spawn_on_spawner(command: Command) -> std::io::Result<Child> {
    let (reply, answer) = mpsc::channel();
    {
        let sender = spawner().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sender
            .send(SpawnRequest { command, reply })
            .map_err(|_| std::io::Error::other("process spawner thread is gone"))?;
    }
    answer.recv().map_err(|_| std::io::Error::other("process spawner thread is gone"))?
}

/// A running child process that is killed (with its process group) on drop.
#[derive(Debug)]
pub struct ManagedProcess {
    spec: ProcessSpec,
    child: Option<Child>,
}

impl ManagedProcess {
    /// Starts the process described by `spec`.
    pub fn spawn(spec: ProcessSpec) -> Result<Self, Error> {
        if let Some(parent) = spec.log_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(|e| Error::io(&spec.log_path, e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(&spec.log_path, e))?;

        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let die_with_parent = spec.die_with_parent;
        let parent_pid = std::process::id() as libc::pid_t;
        // Built before the fork: the child may not allocate.
        let cgroup_procs = spec
            .cgroups
            .iter()
            .map(|dir| {
                std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes())
                    .map_err(|e| Error::Config(format!("cgroup path {}: {e}", dir.display())))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe system calls.
        unsafe {
            command.pre_exec(move || {
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for procs in &cgroup_procs {
                    // Writing 0 moves the writer itself.
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let error = std::io::Error::last_os_error();
                    libc::close(fd);
                    if written != 1 {
                        return Err(error);
                    }
                }
                if die_with_parent {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent may have died before prctl took effect.
                    if libc::getppid() != parent_pid {
                        libc::_exit(1);
                    }
                }
                Ok(())
            });
        }
        let child = spawn_on_spawner(command)
            .map_err(|e| Error::Spawn { program: spec.program.clone(), source: e })?;
        tracing::debug!(name = %spec.name, pid = child.id(), log = %spec.log_path.display(), "started process");
        Ok(Self { spec, child: Some(child) })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// The pid, while the process has not been stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log_path
    }

    /// `Some(status)` once the process has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// Fails with the log tail if the process has exited.
    pub fn check_running(&mut self) -> Result<(), Error> {
        match self.exit_status() {
            None if self.child.is_some() => Ok(()),
            status => Err(Error::Exited {
                name: self.spec.name.clone(),
                status: status.map(|s| s.to_string()).unwrap_or_else(|| "stopped".into()),
                log_path: self.spec.log_path.clone(),
                log_tail: log_tail(&self.spec.log_path, 15),
            }),
        }
    }

    /// Sends SIGTERM to the process group, waits up to `grace`, then SIGKILLs
    /// what is left. A zero grace kills at once.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        if !grace.is_zero() {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Also kills anything the process forked into its group.
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        tracing::debug!(name = %self.spec.name, "stopped process");
    }

    /// Starts the process again with the same spec (after [`stop`](Self::stop)).
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop(Duration::ZERO);
        let again = ManagedProcess::spawn(self.spec.clone())?;
        *self = again;
        Ok(())
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "---- last lines of {} ({}) ----\n{}",
                self.spec.name,
                self.spec.log_path.display(),
                log_tail(&self.spec.log_path, 20)
            );
        }
        self.stop(Duration::ZERO);
    }
}

/// The last `lines` lines of a log file (reads at most the last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// True if a process with this pid exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, dir: &Path) -> ProcessSpec {
        ProcessSpec::new("sh", PathBuf::from("/bin/sh"), dir.join("sh.log")).args(["-c", script])
    }

    #[test]
    fn output_goes_to_log_and_drop_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let mut p = ManagedProcess::spawn(sh(
            &format!("echo hello; sleep 300 & echo $! > {}; wait", pidfile.display()),
            dir.path(),
        ))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            assert!(Instant::now() < deadline, "grandchild never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        let grandchild: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let pid = p.pid().unwrap();
        assert!(p.is_running());
        assert!(pid_alive(grandchild));
        drop(p);
        assert!(!pid_alive(pid));
        // The grandchild is reparented to init when the shell dies, so it is
        // reaped by init; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid_alive(grandchild) {
            assert!(Instant::now() < deadline, "grandchild {grandchild} survived");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(log_tail(&dir.path().join("sh.log"), 5), "hello");
    }

    #[test]
    fn exited_process_reports_status_and_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = ManagedProcess::spawn(sh("echo boom >&2; exit 3", dir.path())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.is_running() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        let err = p.check_running().unwrap_err().to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("boom"), "{err}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ProcessSpec::new("x", PathBuf::from("/nonexistent/bin"), dir.path().join("x.log"));
        let err = ManagedProcess::spawn(spec).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/bin"), "{err}");
    }

    #[test]
    fn log_tail_takes_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        assert_eq!(log_tail(&p, 2), "c\nd");
        assert_eq!(log_tail(&p, 10), "a\nb\nc\nd");
    }
}
