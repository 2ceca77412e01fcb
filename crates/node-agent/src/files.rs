//! Where a component's files live on the machine: its log, its working
//! directory (removed with the component), and rendered files written
//! atomically with their modes.

use std::path::{Path, PathBuf};

use flotilla_kok_core::node::RenderedFile;

pub(crate) fn log_path(state_dir: &Path, component: &str) -> PathBuf {
    state_dir.join("logs").join(format!("{component}.log"))
}

pub(crate) fn work_dir(state_dir: &Path, component: &str) -> PathBuf {
    state_dir.join("components").join(component)
}

/// Deletes a removed component's working directory (its rendered files and
/// whatever it kept there, e.g. an etcd member's relative data dir), so a
/// component added again later starts clean. Only a name that is one plain
/// path element is acted on: nothing outside `<state_dir>/components/` is
/// ever deleted. The log is kept.
pub(crate) fn remove_work_dir(state_dir: &Path, component: &str) {
    let mut parts = Path::new(component).components();
    let plain = matches!((parts.next(), parts.next()), (Some(std::path::Component::Normal(_)), None));
    if !plain {
        tracing::warn!(component = %component, "not a plain name; its working directory is left alone");
        return;
    }
    let dir = work_dir(state_dir, component);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {
            tracing::info!(component = %component, dir = %dir.display(), "removed the working directory")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(component = %component, dir = %dir.display(), error = %e, "cannot remove the working directory")
        }
    }
}

/// Writes rendered files atomically with their modes.
pub(crate) fn write_files(files: &[RenderedFile]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    for file in files {
        if let Some(dir) = file.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = file.path.with_extension("flotilla-tmp");
        let mut out = std::fs::File::create(&tmp)?;
        out.set_permissions(std::fs::Permissions::from_mode(file.mode))?;
        out.write_all(&file.content)?;
        out.sync_all()?;
        std::fs::rename(&tmp, &file.path)?;
    }
    Ok(())
}
