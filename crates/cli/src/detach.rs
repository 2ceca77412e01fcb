//! Processes this command leaves running after it exits (the fleet daemon,
//! `join`'s agent), and how it finds them again: by a lock the process
//! holds for its life (the agent) or a recorded pid and start time (the
//! fleet's processes, `fleet::ProcessRecord`), never by what their command
//! line says.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
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

/// A lock a long-running process holds on a file for its whole life, with
/// its pid written in the file. Another process tells from it whether that
/// process still runs (the lock is taken: the kernel releases it when the
/// holder exits, however it exits) and which one it is, so a pid that was
/// recorded once and reused since is never mistaken for it.
#[derive(Debug)]
pub struct PidLock {
    // Held open: closing it releases the lock.
    _file: File,
}

impl PidLock {
    /// Takes the lock for this process and writes its pid in the file;
    /// `None` when another process holds it.
    pub fn acquire(path: &Path) -> std::io::Result<Option<Self>> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(Some(Self { _file: file }))
    }

    /// The pid of the process holding the lock in `path`, if one does.
    pub fn holder(path: &Path) -> Option<u32> {
        let mut file = File::open(path).ok()?;
        match file.try_lock_shared() {
            // Nobody holds it (ours is released when `file` is dropped).
            Ok(()) => None,
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                file.read_to_string(&mut text).ok()?;
                text.trim().parse().ok().filter(|pid| *pid != 0)
            }
            Err(TryLockError::Error(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_names_its_holder_while_it_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.lock");
        assert_eq!(PidLock::holder(&path), None, "no file");
        let lock = PidLock::acquire(&path).unwrap().expect("free");
        assert_eq!(PidLock::holder(&path), Some(std::process::id()));
        assert!(PidLock::acquire(&path).unwrap().is_none(), "held already");
        drop(lock);
        assert_eq!(PidLock::holder(&path), None, "released: the pid left in the file names nobody");
        let again = PidLock::acquire(&path).unwrap().expect("free again");
        assert_eq!(PidLock::holder(&path), Some(std::process::id()));
        drop(again);
    }

    #[test]
    fn a_lock_left_by_a_process_that_exited_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.lock");
        // A pid file a dead process wrote, without the lock held.
        std::fs::write(&path, "1\n").unwrap();
        assert_eq!(PidLock::holder(&path), None);
    }
}
