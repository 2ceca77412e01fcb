//! The hosted operator's version catalog at run time: the configured
//! versions plus the complete releases of the binary cache, re-read when a
//! HostedCluster names a version the catalog does not know (so a release
//! built while the hub runs is usable without a restart). Decisions in
//! `flotilla_kok_core::catalog`; this module reads the cache directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flotilla_kok_core::catalog::{self, CacheEntry, COMPLETE_STAMP};

#[derive(Debug)]
pub struct VersionCatalog {
    configured: BTreeMap<String, PathBuf>,
    cache_root: Option<PathBuf>,
    known: Mutex<BTreeMap<String, PathBuf>>,
}

impl VersionCatalog {
    /// The catalog of `configured` versions (they win) and the releases
    /// under `cache_root`, scanned once now.
    pub fn new(configured: BTreeMap<String, PathBuf>, cache_root: Option<PathBuf>) -> Self {
        let catalog = Self { known: Mutex::new(configured.clone()), configured, cache_root };
        catalog.scan();
        catalog
    }

    /// The versions known for a cluster wanting `wanted`: the cache is read
    /// again first if `wanted` is not among them.
    pub fn versions_for(&self, wanted: &str) -> BTreeMap<String, PathBuf> {
        let known = self.lock().clone();
        if catalog::needs_scan(&known, wanted) {
            self.scan()
        } else {
            known
        }
    }

    /// Reads the cache and merges what it holds into the catalog.
    pub fn scan(&self) -> BTreeMap<String, PathBuf> {
        let Some(root) = &self.cache_root else {
            return self.lock().clone();
        };
        let scanned = catalog::discovered(root, &read_cache(root));
        let mut known = self.lock();
        let merged = catalog::merge(&self.configured, &known, &scanned);
        if merged != *known {
            tracing::info!(cache = %root.display(), versions = ?catalog::listed(&merged), "hosted cluster versions");
        }
        *known = merged.clone();
        merged
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PathBuf>> {
        // The map is replaced whole under the lock: a panic elsewhere
        // cannot leave it half-written.
        self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The cache root's entries; a missing or unreadable root holds none.
fn read_cache(root: &Path) -> Vec<CacheEntry> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::debug!(cache = %root.display(), error = %e, "binary cache not readable");
            return Vec::new();
        }
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let complete = e.path().join("bin").join(COMPLETE_STAMP).is_file();
            CacheEntry { name, complete }
        })
        .collect()
}
