//! The hosted operator's version catalog: which Kubernetes versions it can
//! run and where their binaries are. Versions come from two places: the
//! ones the hub was started with (`--kok-version VERSION=DIR`, they win)
//! and the complete releases in the binary cache
//! (`<root>/vX.Y.Z/bin` with the `.complete` stamp the build script writes
//! last), so a release built while the hub runs becomes usable without a
//! restart. The directory reading is the caller's; this module decides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The stamp `scripts/k8s-binaries.sh` writes into a release's `bin`
/// directory once every binary is in place.
pub const COMPLETE_STAMP: &str = ".complete";

/// The oldest minor the cache offers: older releases (the cache may still
/// hold 1.20.2) take flags the renderer no longer writes. Versions given
/// explicitly are not checked (the operator trusts its configuration).
pub const OLDEST_DISCOVERED_MINOR: (u64, u64) = (1, 36);

/// One directory entry of the cache root, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The entry's name, e.g. `v1.37.2`.
    pub name: String,
    /// Whether `<name>/bin/.complete` exists.
    pub complete: bool,
}

/// The version a cache directory holds: `v1.37.2` → `1.37.2`. Anything
/// else (a lock file, a half-named directory, `latest`) is not a release.
pub fn release_version(dir_name: &str) -> Option<String> {
    let version = dir_name.strip_prefix('v')?;
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (parts.len() == 3 && parts.iter().all(numeric)).then(|| version.to_string())
}

/// `1.37.2` → `(1, 37)`.
fn minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split('.').map(str::parse::<u64>);
    Some((parts.next()?.ok()?, parts.next()?.ok()?))
}

/// The `bin` directory of a release in the cache.
pub fn release_bin_dir(root: &Path, version: &str) -> PathBuf {
    root.join(format!("v{version}")).join("bin")
}

/// The complete releases among `entries` of the cache at `root`: a
/// release still being built (no stamp yet) or older than
/// [`OLDEST_DISCOVERED_MINOR`] is left out.
pub fn discovered(root: &Path, entries: &[CacheEntry]) -> BTreeMap<String, PathBuf> {
    entries
        .iter()
        .filter(|e| e.complete)
        .filter_map(|e| release_version(&e.name))
        .filter(|v| minor(v) >= Some(OLDEST_DISCOVERED_MINOR))
        .map(|v| {
            let dir = release_bin_dir(root, &v);
            (v, dir)
        })
        .collect()
}

/// The catalog after a scan: the configured versions win over the cache;
/// a version known before stays known even if its directory went (clusters
/// may still run it, and their components must keep their paths).
pub fn merge(
    configured: &BTreeMap<String, PathBuf>,
    known: &BTreeMap<String, PathBuf>,
    scanned: &BTreeMap<String, PathBuf>,
) -> BTreeMap<String, PathBuf> {
    let mut all = known.clone();
    all.extend(scanned.iter().map(|(v, d)| (v.clone(), d.clone())));
    all.extend(configured.iter().map(|(v, d)| (v.clone(), d.clone())));
    all
}

/// Whether the catalog must look at the cache again: a cluster names a
/// version it does not know (`v` prefix tolerated).
pub fn needs_scan(known: &BTreeMap<String, PathBuf>, wanted: &str) -> bool {
    !known.contains_key(wanted.trim_start_matches('v'))
}

/// The known versions for a refusal message, oldest first by version
/// number (`1.9.0` before `1.10.0`).
pub fn listed(known: &BTreeMap<String, PathBuf>) -> Vec<String> {
    let mut versions: Vec<&String> = known.keys().collect();
    let key = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    versions.sort_by_key(|v| key(v));
    versions.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, PathBuf> {
        pairs.iter().map(|(v, d)| (v.to_string(), PathBuf::from(d))).collect()
    }

    #[test]
    fn release_directories_are_v_and_three_numbers() {
        let cases = [
            ("v1.37.2", Some("1.37.2")),
            ("v1.36.3", Some("1.36.3")),
            ("v1.20.2", Some("1.20.2")),
            ("1.37.2", None),
            ("v1.37", None),
            ("v1.37.2.1", None),
            ("v1.37.x", None),
            ("v1..2", None),
            ("v1.37.2-rc.0", None),
            (".build.lock", None),
            ("latest", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(release_version(name).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn only_complete_supported_releases_are_discovered() {
        let root = Path::new("/cache/kubernetes");
        let entries = [
            CacheEntry { name: "v1.37.2".into(), complete: true },
            CacheEntry { name: "v1.36.3".into(), complete: false },
            CacheEntry { name: "v1.38.0".into(), complete: true },
            CacheEntry { name: "v1.20.2".into(), complete: true },
            CacheEntry { name: "v1.35.9".into(), complete: true },
            CacheEntry { name: "tmp".into(), complete: true },
        ];
        assert_eq!(
            discovered(root, &entries),
            map(&[("1.37.2", "/cache/kubernetes/v1.37.2/bin"), ("1.38.0", "/cache/kubernetes/v1.38.0/bin")])
        );
        assert!(discovered(root, &[]).is_empty());
    }

    #[test]
    fn configured_versions_win_and_known_ones_stay() {
        let configured = map(&[("1.37.2", "/opt/k8s")]);
        let known = map(&[("1.35.0", "/cache/v1.35.0/bin"), ("1.36.3", "/old/v1.36.3/bin")]);
        let scanned = map(&[("1.37.2", "/cache/v1.37.2/bin"), ("1.36.3", "/cache/v1.36.3/bin")]);
        let cases = [
            (
                "all three",
                merge(&configured, &known, &scanned),
                map(&[
                    ("1.35.0", "/cache/v1.35.0/bin"),
                    ("1.36.3", "/cache/v1.36.3/bin"),
                    ("1.37.2", "/opt/k8s"),
                ]),
            ),
            ("nothing scanned", merge(&configured, &BTreeMap::new(), &BTreeMap::new()), configured.clone()),
            ("no configuration", merge(&BTreeMap::new(), &BTreeMap::new(), &scanned), scanned.clone()),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn an_unknown_version_asks_for_a_scan() {
        let known = map(&[("1.37.2", "/a")]);
        assert!(!needs_scan(&known, "1.37.2"));
        assert!(!needs_scan(&known, "v1.37.2"));
        assert!(needs_scan(&known, "1.36.3"));
        assert!(needs_scan(&BTreeMap::new(), "1.37.2"));
    }

    #[test]
    fn versions_are_listed_by_number() {
        let known = map(&[("1.10.0", "/a"), ("1.9.1", "/b"), ("1.37.2", "/c"), ("1.36.3", "/d")]);
        assert_eq!(listed(&known), ["1.9.1", "1.10.0", "1.36.3", "1.37.2"]);
    }
}
