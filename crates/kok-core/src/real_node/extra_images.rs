//! Images added to running real nodes (`spec.realNodes[].extraImagesDir`):
//! where a hosted cluster's directory is, which names an image tarball
//! gives its images (as `ctr images import` names them), which files of
//! the directory a node imports next (each once, again when it changes),
//! what its status says, and what `flotilla images load` makes of the
//! nodes' statuses while it waits. No I/O: the node agent lists the
//! directory, reads the tarballs and runs ctr; the command copies the
//! files and reads the Machines.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::wait::Verdict;

/// The directory under the operator's node images directory holding one
/// directory per hosted cluster.
pub const CLUSTERS_DIR: &str = "clusters";
/// How often a node's directory is listed again.
pub const SCAN_EVERY_SECONDS: u64 = 3;
/// A file whose import failed is tried again after this long, even
/// unchanged (containerd may have been restarting).
pub const RETRY_FAILED_SECONDS: i64 = 30;
/// The annotation of an OCI index's manifest that names the image
/// (containerd's, written by `ctr images export` and `docker save`).
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation naming a manifest: ctr takes it as the image's name
/// when it is a full reference (`example.com/app:1`), not a bare tag.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// How a failed import starts in a node's status message, before the
/// file name.
const FAILED_PREFIX: &str = "cannot import ";
/// The longest error kept per file.
const MAX_ERROR: usize = 300;

/// Where the node images of hosted cluster `namespace/cluster` are:
/// `<node_images_dir>/clusters/<namespace>.<cluster>`.
pub fn cluster_images_dir(node_images_dir: &Path, namespace: &str, cluster: &str) -> PathBuf {
    node_images_dir.join(CLUSTERS_DIR).join(crate::hosted::owner_label_value(namespace, cluster))
}

/// Whether a file of the directory is a tarball to import: `*.tar`, not
/// hidden (a copy in progress is a hidden temporary file).
pub fn is_image_file(name: &str) -> bool {
    name.len() > ".tar".len() && name.ends_with(".tar") && !name.starts_with('.')
}

/// The name a tarball called `file_name` gets in a node images
/// directory: the same, made one the node agents import (not hidden,
/// ending in `.tar`); `None` for a name with nothing left.
pub fn file_name_in_dir(file_name: &str) -> Option<String> {
    let name = file_name.trim_start_matches('.');
    if name.is_empty() || name == "tar" || name.contains('/') {
        return None;
    }
    Some(if name.ends_with(".tar") { name.to_string() } else { format!("{name}.tar") })
}

/// A file of the directory as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub name: String,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: i64,
}

/// What the node agent did with one file of a node's directory; kept per
/// node in the agent's state, so a restarted agent imports nothing twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportedFile {
    pub file: String,
    pub size: u64,
    pub modified_ns: i64,
    /// The names of its images, once imported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Why it was not imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was last tried (seconds since the epoch).
    pub tried_at: i64,
}

/// The files to import now, by name: tarballs never tried, changed since
/// (size or modification time), or failed at least
/// [`RETRY_FAILED_SECONDS`] ago.
pub fn to_import(listing: &[ListedFile], record: &[ImportedFile], now: i64) -> Vec<ListedFile> {
    let mut out: Vec<ListedFile> = listing
        .iter()
        .filter(|f| is_image_file(&f.name))
        .filter(|f| match record.iter().find(|r| r.file == f.name) {
            None => true,
            Some(r) if r.size != f.size || r.modified_ns != f.modified_ns => true,
            Some(r) => r.error.is_some() && now - r.tried_at >= RETRY_FAILED_SECONDS,
        })
        .cloned()
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Records what importing `file` gave: its images, or why not.
pub fn record_outcome(
    record: &mut Vec<ImportedFile>,
    file: &ListedFile,
    outcome: Result<Vec<String>, String>,
    now: i64,
) {
    let (images, error) = match outcome {
        Ok(images) => (images, None),
        Err(e) => (Vec::new(), Some(one_line(&e))),
    };
    let entry = ImportedFile {
        file: file.name.clone(),
        size: file.size,
        modified_ns: file.modified_ns,
        images,
        error,
        tried_at: now,
    };
    match record.iter_mut().find(|r| r.file == file.name) {
        Some(r) => *r = entry,
        None => record.push(entry),
    }
    record.sort_by(|a, b| a.file.cmp(&b.file));
}

/// Forgets the failures of files no longer in the directory (their images
/// were never imported); imported files stay recorded, since their images
/// stay in the node's containerd.
pub fn forget_removed_failures(record: &mut Vec<ImportedFile>, listing: &[ListedFile]) {
    record.retain(|r| r.error.is_none() || listing.iter().any(|f| f.name == r.file));
}

/// What a node's status says of its extra images: the names imported
/// (sorted, once each) and the failures, one `cannot import FILE: ERROR`
/// each, joined by `; `.
pub fn node_status(record: &[ImportedFile]) -> (Vec<String>, Option<String>) {
    let mut images: Vec<String> = record.iter().flat_map(|r| r.images.iter().cloned()).collect();
    images.sort();
    images.dedup();
    let failures: Vec<String> = record
        .iter()
        .filter_map(|r| Some(format!("{FAILED_PREFIX}{}: {}", r.file, r.error.as_deref()?)))
        .collect();
    (images, (!failures.is_empty()).then(|| failures.join("; ")))
}

/// The failure a node's status message reports for `file`, if any.
pub fn failure_of(message: &str, file: &str) -> Option<String> {
    let start = format!("{FAILED_PREFIX}{file}: ");
    let at = message.find(&start)? + start.len();
    let rest = &message[at..];
    let end = rest.find(&format!("; {FAILED_PREFIX}")).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// An error on one line, cut to [`MAX_ERROR`] characters.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= MAX_ERROR {
        return joined;
    }
    let mut cut: String = joined.chars().take(MAX_ERROR - 1).collect();
    cut.push('…');
    cut
}

/// The members of an image tarball that say what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// `oci-layout`: the tarball is an OCI image layout.
    OciLayout,
    /// `index.json`: an OCI layout's index.
    Index,
    /// `manifest.json`: a `docker save` archive's manifest.
    Manifest,
}

/// Which member a tar entry is, its path cleaned as ctr cleans it
/// (`./index.json` is `index.json`).
pub fn member(path: &str) -> Option<Member> {
    let mut clean = path;
    while let Some(rest) = clean.strip_prefix("./") {
        clean = rest;
    }
    match clean.trim_start_matches('/') {
        "oci-layout" => Some(Member::OciLayout),
        "index.json" => Some(Member::Index),
        "manifest.json" => Some(Member::Manifest),
        _ => None,
    }
}

/// The members [`member`] names, as read from a tarball.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveMembers {
    pub oci_layout: Option<Vec<u8>>,
    pub index: Option<Vec<u8>>,
    pub manifest: Option<Vec<u8>>,
}

/// Why a tarball is not an image archive ctr imports under a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "not an image archive: it holds neither oci-layout and index.json (an OCI image layout) \
         nor manifest.json (docker save)"
    )]
    NotAnImage,
    #[error("an OCI image layout of version {0:?}: ctr imports version 1.0.0")]
    LayoutVersion(String),
    #[error("an OCI image layout without index.json")]
    NoIndex,
    #[error("its {member} is not what it should be: {error}")]
    BadJson { member: &'static str, error: String },
    #[error(
        "its images have no name: annotate the manifests of index.json with \
         io.containerd.image.name (or org.opencontainers.image.ref.name as a full reference such \
         as example.com/app:1), or docker save a tagged image"
    )]
    NoName,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciLayout {
    #[serde(default)]
    image_layout_version: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
}

/// The names `ctr images import` gives the images of a tarball, in order:
/// an OCI layout's manifests by [`IMAGE_NAME_ANNOTATION`], else by
/// [`REF_NAME_ANNOTATION`] when that is a full reference (ctr makes a bare
/// tag `import-<date>:<tag>`, no name a pod could use); a `docker save`
/// archive's `RepoTags`, normalized as Docker does (`busybox` is
/// `docker.io/library/busybox:latest`). An OCI layout wins over a docker
/// manifest, as in ctr.
pub fn archive_images(members: &ArchiveMembers) -> Result<Vec<String>, ArchiveError> {
    let json =
        |member: &'static str, e: serde_json::Error| ArchiveError::BadJson { member, error: e.to_string() };
    let mut names = Vec::new();
    if let Some(layout) = &members.oci_layout {
        let layout: OciLayout = serde_json::from_slice(layout).map_err(|e| json("oci-layout", e))?;
        if layout.image_layout_version != "1.0.0" {
            return Err(ArchiveError::LayoutVersion(layout.image_layout_version));
        }
        let index = members.index.as_ref().ok_or(ArchiveError::NoIndex)?;
        let index: Index = serde_json::from_slice(index).map_err(|e| json("index.json", e))?;
        for m in &index.manifests {
            let by_name = m.annotations.get(IMAGE_NAME_ANNOTATION).filter(|n| !n.is_empty());
            let by_ref = m.annotations.get(REF_NAME_ANNOTATION).filter(|r| r.contains(['/', ':', '@']));
            names.extend(by_name.or(by_ref).cloned());
        }
    } else if let Some(manifest) = &members.manifest {
        let manifest: Vec<DockerManifest> =
            serde_json::from_slice(manifest).map_err(|e| json("manifest.json", e))?;
        names.extend(
            manifest.into_iter().flat_map(|m| m.repo_tags.unwrap_or_default()).filter_map(|t| normalize(&t)),
        );
    } else {
        return Err(ArchiveError::NotAnImage);
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    if names.is_empty() {
        return Err(ArchiveError::NoName);
    }
    Ok(names)
}

/// A reference as Docker (and the kubelet) normalizes it: the default
/// registry `docker.io` (and `library/` for a one-part name) when the first
/// part is not a host, `:latest` when there is no tag or digest.
pub fn normalize(reference: &str) -> Option<String> {
    let reference = reference.trim();
    if reference.is_empty() {
        return None;
    }
    let (name, suffix) = match reference.split_once('@') {
        Some((name, digest)) => (name, format!("@{digest}")),
        None => {
            let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
            match reference[last_slash..].rfind(':') {
                Some(i) => (&reference[..last_slash + i], reference[last_slash + i..].to_string()),
                None => (reference, ":latest".to_string()),
            }
        }
    };
    if name.is_empty() {
        return None;
    }
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let is_host = first.contains(['.', ':']) || first == "localhost";
    let full = match (is_host, first) {
        (true, _) if rest.contains('/') || first != "docker.io" => name.to_string(),
        (true, _) => format!("docker.io/library/{rest}"),
        (false, "") => format!("docker.io/library/{name}"),
        (false, _) => format!("docker.io/{name}"),
    };
    Some(format!("{full}{suffix}"))
}

/// One real node of the cluster as the hub shows it (its Machine entry
/// and status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeImages {
    pub node: String,
    pub machine: String,
    /// `status.realNodes[].images`; empty while the node is not reported.
    pub images: Vec<String>,
    pub message: Option<String>,
}

/// One file `flotilla images load` copied, and the images it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedFile {
    pub file: String,
    pub images: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    Loaded,
    Pending,
    Failed(String),
}

impl std::fmt::Display for LoadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadState::Loaded => f.write_str("Loaded"),
            LoadState::Pending => f.write_str("Pending"),
            LoadState::Failed(why) => write!(f, "Failed: {why}"),
        }
    }
}

/// One image on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRow {
    pub node: String,
    pub machine: String,
    pub image: String,
    pub state: LoadState,
}

/// Every image of `files` on every node: Loaded once the node reports it,
/// Failed when its message reports the file's import failed (only when
/// `failures_count`: right after a copy, a failure of the file the copy
/// replaced may still show), else Pending.
pub fn load_rows(nodes: &[NodeImages], files: &[LoadedFile], failures_count: bool) -> Vec<LoadRow> {
    let mut rows = Vec::new();
    for node in nodes {
        for file in files {
            let failure = node.message.as_deref().and_then(|m| failure_of(m, &file.file));
            for image in &file.images {
                let state = if node.images.contains(image) {
                    LoadState::Loaded
                } else if let Some(why) = failure.clone().filter(|_| failures_count) {
                    LoadState::Failed(why)
                } else {
                    LoadState::Pending
                };
                rows.push(LoadRow {
                    node: node.node.clone(),
                    machine: node.machine.clone(),
                    image: image.clone(),
                    state,
                });
            }
        }
    }
    rows
}

/// Done when every row is Loaded; Failed once nothing is Pending and a row
/// Failed; else Pending, naming what is waited for.
pub fn load_verdict(rows: &[LoadRow]) -> Verdict {
    let loaded = rows.iter().filter(|r| r.state == LoadState::Loaded).count();
    let pending: Vec<&LoadRow> = rows.iter().filter(|r| r.state == LoadState::Pending).collect();
    let failed: Vec<&LoadRow> = rows.iter().filter(|r| matches!(r.state, LoadState::Failed(_))).collect();
    let nodes = {
        let mut n: Vec<&str> = rows.iter().map(|r| r.node.as_str()).collect();
        n.sort();
        n.dedup();
        n.len()
    };
    if let Some(first) = pending.first() {
        return Verdict::Pending(format!(
            "{loaded} of {} images loaded; waiting for {} on node {}",
            rows.len(),
            first.image,
            first.node
        ));
    }
    match failed.first() {
        Some(first) => Verdict::Failed(format!(
            "{} of {} images not loaded; {} on node {}: {}",
            failed.len(),
            rows.len(),
            first.image,
            first.node,
            match &first.state {
                LoadState::Failed(why) => why.as_str(),
                _ => "",
            }
        )),
        None => Verdict::Done(format!("{loaded} images loaded on {nodes} nodes")),
    }
}

#[cfg(test)]
#[path = "extra_images_tests.rs"]
mod tests;
