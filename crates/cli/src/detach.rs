//! Processes this command leaves running after it exits (the fleet daemon,
//! `join`'s agent), and how it finds them again: by the pid *and* start
//! time it recorded, never by what their command line says.

use std::os::unix::process::CommandExt;
use std::path::Path;

/// Starts `command` in a session of its own, detached from our terminal, so
/// it outlives the command that started it (the fleet daemon, `join`'s agent).
pub fn spawn_detached(command: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// A started process as a pid file records it: the pid and the process's
/// start time (clock ticks since boot), which together name that one
/// process even after its pid is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: u32,
    pub start_ticks: u64,
}

impl PidRecord {
    /// The record of process `pid`, if it is running.
    pub fn of(pid: u32) -> Option<Self> {
        flotilla_node_agent::process::start_ticks(pid).map(|start_ticks| Self { pid, start_ticks })
    }

    /// "PID START_TICKS", the pid file's one line.
    pub fn to_line(self) -> String {
        format!("{} {}\n", self.pid, self.start_ticks)
    }

    /// A pid file's line; `None` for anything else (also for a bare pid
    /// without its start time: that process cannot be told from a later one).
    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        let pid = fields.next()?.parse().ok().filter(|p| *p != 0)?;
        let start_ticks = fields.next()?.parse().ok()?;
        fields.next().is_none().then_some(Self { pid, start_ticks })
    }

    pub fn write(self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_line())
    }

    /// The record in `path`, if there is a well-formed one.
    pub fn read(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// True while the recorded process (not a later one with its pid) runs.
    pub fn alive(self) -> bool {
        flotilla_node_agent::process::is_alive(self.pid, self.start_ticks)
    }

    /// SIGTERM to the recorded process, if it is still that process.
    pub fn terminate(self) {
        if self.alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_lines() {
        let record = PidRecord { pid: 42, start_ticks: 1234 };
        for (line, want) in [
            (record.to_line(), Some(record)),
            ("42 1234".to_string(), Some(record)),
            // A bare pid (as `join` once wrote) names no process for sure.
            ("42\n".to_string(), None),
            ("0 1234\n".to_string(), None),
            ("42 1234 7\n".to_string(), None),
            ("agent 1234\n".to_string(), None),
            (String::new(), None),
        ] {
            assert_eq!(PidRecord::parse(&line), want, "{line:?}");
        }
    }

    #[test]
    fn a_record_names_this_process_only() {
        let me = PidRecord::of(std::process::id()).unwrap();
        assert!(me.alive());
        assert!(!PidRecord { start_ticks: me.start_ticks + 1, ..me }.alive(), "another start time");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.pid");
        me.write(&path).unwrap();
        assert_eq!(PidRecord::read(&path), Some(me));
        assert_eq!(PidRecord::read(&dir.path().join("missing.pid")), None);
    }
}
