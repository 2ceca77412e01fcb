//! The local images real nodes run (no registry): docker-archive tarballs
//! built by `scripts/node-runtime.sh`, imported into each node's
//! containerd. Pods use them with `imagePullPolicy: Never`.

use std::path::{Path, PathBuf};

use flotilla_kok_core::real_node::SANDBOX_IMAGE;

use super::host::run_async;
use crate::{Error, Result};

/// Busybox (`sh`, `sleep`, `httpd`, `wget` ...; PATH=/bin).
pub const BUSYBOX_IMAGE: &str = "flotilla.local/busybox:1";

/// The images in a directory, as its `images.list` names them.
#[derive(Debug, Clone)]
pub struct NodeImages {
    dir: PathBuf,
    images: Vec<(PathBuf, String)>,
}

impl NodeImages {
    /// `FLOTILLA_IMAGES` if set, else `FLOTILLA_CACHE/images` (by default
    /// `~/.cache/flotilla/images`), where the script puts them.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("FLOTILLA_IMAGES") {
            return PathBuf::from(dir);
        }
        crate::Binaries::cache_root().parent().map(|cache| cache.join("images")).unwrap_or_default()
    }

    /// The images in [`default_dir`](Self::default_dir).
    pub fn locate() -> Result<Self> {
        Self::in_dir(Self::default_dir())
    }

    /// The images listed in `dir/images.list`, which must hold the sandbox.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let missing = |what: String| {
            Error::Config(format!(
                "real nodes' images are missing: {what} in {}. Run scripts/node-runtime.sh to build them \
                 (or point FLOTILLA_IMAGES at a directory that has them)",
                dir.display()
            ))
        };
        if !dir.join(".complete").is_file() {
            return Err(missing(".complete".into()));
        }
        let list =
            std::fs::read_to_string(dir.join("images.list")).map_err(|_| missing("images.list".into()))?;
        let images = parse_list(&list);
        for (file, _) in &images {
            if !dir.join(file).is_file() {
                return Err(missing(file.display().to_string()));
            }
        }
        if !images.iter().any(|(_, tag)| tag == SANDBOX_IMAGE) {
            return Err(missing(SANDBOX_IMAGE.into()));
        }
        let images = images.into_iter().map(|(file, tag)| (dir.join(file), tag)).collect();
        Ok(Self { dir, images })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn tags(&self) -> Vec<&str> {
        self.images.iter().map(|(_, tag)| tag.as_str()).collect()
    }

    /// Imports every image (together) into the containerd listening on
    /// `socket` (namespace `k8s.io`, where the kubelet's runtime looks).
    pub async fn import(&self, ctr: &Path, socket: &Path) -> Result<()> {
        let address = socket.display().to_string();
        let imports = self.images.iter().map(|(file, _)| {
            let (address, file) = (address.clone(), file.display().to_string());
            async move {
                run_async(ctr, &["--address", &address, "--namespace", "k8s.io", "images", "import", &file])
                    .await
            }
        });
        futures::future::try_join_all(imports).await.map(|_| ())
    }
}

/// `images.list`: one `FILE TAG` per line.
fn parse_list(text: &str) -> Vec<(PathBuf, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((PathBuf::from(words.next()?), words.next()?.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_files_and_tags() {
        let got =
            parse_list("pause.tar flotilla.local/pause:1\n\nbusybox.tar flotilla.local/busybox:1\nlonely\n");
        assert_eq!(
            got,
            vec![
                (PathBuf::from("pause.tar"), "flotilla.local/pause:1".to_string()),
                (PathBuf::from("busybox.tar"), "flotilla.local/busybox:1".to_string()),
            ]
        );
    }

    #[test]
    fn a_directory_without_the_sandbox_image_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = NodeImages::in_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains(".complete") && err.contains("scripts/node-runtime.sh"), "{err}");
        std::fs::write(dir.path().join(".complete"), "").unwrap();
        std::fs::write(dir.path().join("images.list"), "busybox.tar flotilla.local/busybox:1\n").unwrap();
        std::fs::write(dir.path().join("busybox.tar"), "x").unwrap();
        let err = NodeImages::in_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains(SANDBOX_IMAGE), "{err}");
        std::fs::write(dir.path().join("images.list"), "pause.tar flotilla.local/pause:1\n").unwrap();
        let err = NodeImages::in_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("pause.tar"), "{err}");
        std::fs::write(dir.path().join("pause.tar"), "x").unwrap();
        let images = NodeImages::in_dir(dir.path()).unwrap();
        assert_eq!(images.tags(), [SANDBOX_IMAGE]);
    }
}
