//! Images added to running real nodes: the tarballs of a node's
//! `extraImagesDir`, imported into its containerd (`ctr images import`,
//! namespace `k8s.io`) while it runs. The directory is listed again every
//! few seconds; which files to import, and what the status says, is
//! decided by `flotilla_kok_core::real_node::extra_images`. Imports run in
//! a task of their own per node, so a large tarball does not hold up the
//! agent's reconcile; their outcomes are recorded in the node's record of
//! `state.json`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_kok_core::real_node::extra_images::{
    archive_images, member, ArchiveMembers, ListedFile, Member, SCAN_EVERY_SECONDS,
};
use futures::FutureExt;
use tokio::task::JoinHandle;

use crate::error::Error;

/// The longest a member that names images may be (an index.json of a
/// thousand images is far smaller).
const MAX_MEMBER: u64 = 4 << 20;
/// How long one `ctr images import` may take.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);

/// The image names `ctr images import` gives the images of the tarball at
/// `path` (see `archive_images`): an error when it is not an image
/// archive or its images have no name.
pub fn read_archive(path: &Path) -> Result<Vec<String>, Error> {
    let io = |source: std::io::Error| Error::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut archive = tar::Archive::new(file);
    let mut members = ArchiveMembers::default();
    for entry in archive.entries_with_seek().map_err(io)? {
        let entry = entry.map_err(io)?;
        let Some(which) = entry.path().ok().and_then(|p| p.to_str().and_then(member)) else { continue };
        let mut content = Vec::new();
        entry.take(MAX_MEMBER).read_to_end(&mut content).map_err(io)?;
        match which {
            Member::OciLayout => members.oci_layout = Some(content),
            Member::Index => members.index = Some(content),
            Member::Manifest => members.manifest = Some(content),
        }
    }
    archive_images(&members).map_err(|source| Error::Archive { path: path.to_path_buf(), source })
}

/// The files of `dir` (none when it does not exist yet).
pub fn list(dir: &Path) -> Result<Vec<ListedFile>, std::io::Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(String::from) else { continue };
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        out.push(ListedFile { name, size: meta.len(), modified_ns });
    }
    Ok(out)
}

/// One file's import: its images, or why not.
#[derive(Debug)]
pub struct Outcome {
    pub file: ListedFile,
    pub result: Result<Vec<String>, String>,
}

/// The imports running, one task per node, and when each node's directory
/// was last listed.
#[derive(Default)]
pub struct Importer {
    running: HashMap<String, JoinHandle<Vec<Outcome>>>,
    scanned: HashMap<String, Instant>,
}

impl Importer {
    /// The outcomes of the nodes' imports that finished since the last call.
    pub fn finished(&mut self) -> Vec<(String, Vec<Outcome>)> {
        let done: Vec<String> =
            self.running.iter().filter(|(_, job)| job.is_finished()).map(|(n, _)| n.clone()).collect();
        let mut out = Vec::new();
        for node in done {
            let Some(job) = self.running.remove(&node) else { continue };
            match job.now_or_never() {
                Some(Ok(outcomes)) => out.push((node, outcomes)),
                Some(Err(e)) => tracing::warn!(%node, error = %e, "an image import task ended abnormally"),
                None => {}
            }
        }
        out
    }

    /// Whether `node`'s directory is to be listed now: no import of it
    /// running, and not listed within the last few seconds.
    pub fn scan_due(&mut self, node: &str) -> bool {
        if self.running.contains_key(node) {
            return false;
        }
        let due =
            self.scanned.get(node).is_none_or(|at| at.elapsed() >= Duration::from_secs(SCAN_EVERY_SECONDS));
        if due {
            self.scanned.insert(node.to_string(), Instant::now());
        }
        due
    }

    /// Imports `files` of `dir` into the containerd at `socket`, one after
    /// the other, in a task of the node's own.
    pub fn start(&mut self, node: &str, ctr: PathBuf, socket: PathBuf, dir: PathBuf, files: Vec<ListedFile>) {
        let name = node.to_string();
        let job = tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for file in files {
                let path = dir.join(&file.name);
                let result = import(&ctr, &socket, &path).await;
                match &result {
                    Ok(images) => {
                        tracing::info!(node = %name, file = %file.name, ?images, "imported an image tarball")
                    }
                    Err(e) => {
                        tracing::warn!(node = %name, file = %file.name, error = %e, "cannot import an image tarball")
                    }
                }
                outcomes.push(Outcome { file, result });
            }
            outcomes
        });
        self.running.insert(node.to_string(), job);
    }

    /// Stops whatever runs for a node that is gone.
    pub fn forget(&mut self, node: &str) {
        if let Some(job) = self.running.remove(node) {
            job.abort();
        }
        self.scanned.remove(node);
    }
}

impl Drop for Importer {
    /// An agent that stops (or starts over with a renewed credential)
    /// leaves no import running: the next one imports what was not
    /// recorded.
    fn drop(&mut self) {
        for job in self.running.values() {
            job.abort();
        }
    }
}

/// Reads the tarball's image names, then imports it.
async fn import(ctr: &Path, socket: &Path, path: &Path) -> Result<Vec<String>, String> {
    let archive = path.to_path_buf();
    let images = tokio::task::spawn_blocking(move || read_archive(&archive))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| match e {
            Error::Archive { source, .. } => source.to_string(),
            other => other.to_string(),
        })?;
    let run = tokio::process::Command::new(ctr)
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(IMPORT_TIMEOUT, run)
        .await
        .map_err(|_| format!("ctr images import did not finish in {}s", IMPORT_TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot run {}: {e}", ctr.display()))?;
    if output.status.success() {
        return Ok(images);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = stderr.trim().trim_start_matches("ctr: ").trim();
    Err(if error.is_empty() {
        format!("ctr images import failed ({})", output.status)
    } else {
        error.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(dir: &Path, name: &str, members: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join(name);
        let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (member, content) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, member, *content).unwrap();
        }
        builder.finish().unwrap();
        path
    }

    #[test]
    fn an_archive_is_read_for_its_image_names() {
        let dir = tempfile::tempdir().unwrap();
        let index = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:ab","size":1,
            "annotations":{"io.containerd.image.name":"flotilla.local/hello:1"}}]}"#;
        let blob = vec![7u8; 100_000];
        let oci = tarball(
            dir.path(),
            "oci.tar",
            &[
                ("./oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
                ("blobs/sha256/ab", &blob),
                ("./index.json", index),
            ],
        );
        assert_eq!(read_archive(&oci).unwrap(), ["flotilla.local/hello:1"]);
        let docker = tarball(
            dir.path(),
            "docker.tar",
            &[("manifest.json", br#"[{"RepoTags":["flotilla.local/a:1"]}]"#)],
        );
        assert_eq!(read_archive(&docker).unwrap(), ["flotilla.local/a:1"]);
        let plain = tarball(dir.path(), "plain.tar", &[("hello.txt", b"hi")]);
        let err = read_archive(&plain).unwrap_err().to_string();
        assert!(err.contains("plain.tar") && err.contains("not an image archive"), "{err}");
        let text = dir.path().join("text.tar");
        std::fs::write(&text, "not a tarball at all, and long enough to be read as a header?").unwrap();
        assert!(read_archive(&text).is_err());
        assert!(read_archive(&dir.path().join("missing.tar"))
            .unwrap_err()
            .to_string()
            .contains("missing.tar"));
    }

    #[test]
    fn a_directory_not_made_yet_lists_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("clusters/ns.c")).unwrap().is_empty());
        std::fs::write(dir.path().join("a.tar"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub.tar")).unwrap();
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed.len(), 1, "files only: {listed:?}");
        assert_eq!((listed[0].name.as_str(), listed[0].size), ("a.tar", 1));
        assert!(listed[0].modified_ns > 0);
    }
}
