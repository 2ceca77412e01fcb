use std::path::{Path, PathBuf};

use crate::Error;

/// The Kubernetes release local clusters run unless told otherwise: the
/// newest minor `scripts/k8s-binaries.sh` builds.
pub const DEFAULT_K8S_VERSION: &str = "v1.37.2";
/// The minor before it, also built by the test script: hosted clusters
/// upgrade from it, and members on it join a hub on the default.
pub const PREVIOUS_K8S_VERSION: &str = "v1.36.3";

/// The directory holding etcd, kube-apiserver, kube-controller-manager,
/// kube-scheduler, kubemark and kubectl.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

const REQUIRED: &[&str] =
    &["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubemark"];

impl Binaries {
    /// `FLOTILLA_K8S_BIN` if set, else the cache's directory of
    /// [`DEFAULT_K8S_VERSION`].
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("FLOTILLA_K8S_BIN") {
            return PathBuf::from(dir);
        }
        Self::version_dir(DEFAULT_K8S_VERSION)
    }

    /// The cache holding every built release: `FLOTILLA_CACHE/kubernetes`,
    /// by default `~/.cache/flotilla/kubernetes`.
    pub fn cache_root() -> PathBuf {
        let cache = std::env::var_os("FLOTILLA_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/".into());
            home.join(".cache/flotilla")
        });
        cache.join("kubernetes")
    }

    /// Where `scripts/k8s-binaries.sh VERSION` puts a release (`v` optional).
    pub fn version_dir(version: &str) -> PathBuf {
        Self::cache_root().join(format!("v{}", version.trim_start_matches('v'))).join("bin")
    }

    /// The binaries of `version` in the cache.
    pub fn locate_version(version: &str) -> Result<Self, Error> {
        Self::in_dir(Self::version_dir(version))
    }

    /// Finds the binaries in [`default_dir`](Self::default_dir).
    pub fn locate() -> Result<Self, Error> {
        Self::in_dir(Self::default_dir())
    }

    /// Uses the binaries in `dir`, checking that each one is there.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        for name in REQUIRED {
            if !dir.join(name).is_file() {
                return Err(Error::BinariesMissing { dir, missing: (*name).to_string() });
            }
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_binary_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("etcd"), "").unwrap();
        let err = Binaries::in_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("kube-apiserver is missing"), "{err}");
        assert!(err.contains("scripts/k8s-binaries.sh"), "{err}");
    }
}
