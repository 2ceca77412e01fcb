//! Which etcd releases the operator can run (process runtime): `etcd`
//! (whatever `etcd --version` says it is) and `etcd-X.Y.Z` in its bin
//! dir, which binary a member's component runs, and which version changes
//! etcd supports (one minor up at a time; down only within a minor).

use flotilla_api::machine::ComponentSpec;

/// One etcd release in the operator's bin dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdRelease {
    /// `3.7.4`.
    pub version: String,
    /// File name of its `etcd` binary in the bin dir.
    pub binary: String,
}

/// `major.minor.patch` of `3.7.4`, `v3.7.4` or `3.7.4-rc.1` (the suffix
/// ignored); `None` otherwise.
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let text = text.trim().trim_start_matches('v');
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

/// The version in `etcd --version`'s output (`etcd Version: 3.7.4`).
pub fn version_from_output(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        let v = l.trim().strip_prefix("etcd Version:")?.trim();
        parse_version(v).map(|_| v.trim_start_matches('v').to_string())
    })
}

/// The releases among the bin dir's file names: `etcd-X.Y.Z`, and `etcd`
/// as `unsuffixed` (its `--version`) unless a suffixed file has that
/// version already. Sorted by version.
pub fn releases(file_names: &[String], unsuffixed: Option<&str>) -> Vec<EtcdRelease> {
    let mut out: Vec<EtcdRelease> = file_names
        .iter()
        .filter_map(|f| {
            let v = f.strip_prefix("etcd-")?;
            parse_version(v).map(|_| EtcdRelease { version: v.to_string(), binary: f.clone() })
        })
        .collect();
    if let Some(v) = unsuffixed.filter(|v| parse_version(v).is_some()) {
        if file_names.iter().any(|f| f == "etcd") && !out.iter().any(|r| r.version == v) {
            out.push(EtcdRelease { version: v.to_string(), binary: "etcd".into() });
        }
    }
    out.sort_by_key(|r| parse_version(&r.version));
    out
}

/// The release of `version`.
pub fn release<'a>(releases: &'a [EtcdRelease], version: &str) -> Option<&'a EtcdRelease> {
    let wanted = version.trim_start_matches('v');
    releases.iter().find(|r| r.version == wanted)
}

/// "etcd 3.9.0 is not available here; this operator has 3.6.17, 3.7.4".
pub fn unknown_version_message(version: &str, releases: &[EtcdRelease]) -> String {
    let have: Vec<&str> = releases.iter().map(|r| r.version.as_str()).collect();
    let have = if have.is_empty() { "none".to_string() } else { have.join(", ") };
    format!("etcd {version} is not available to this operator; it has {have}")
}

/// The release a member's component runs: its binary, or (a restored
/// cluster's founding member runs a shell that execs etcd) the binary its
/// script execs.
pub fn release_of<'a>(
    component: &ComponentSpec,
    bin_dir: &std::path::Path,
    releases: &'a [EtcdRelease],
) -> Option<&'a EtcdRelease> {
    let path = |r: &EtcdRelease| bin_dir.join(&r.binary).display().to_string();
    releases.iter().find(|r| component.binary == path(r)).or_else(|| {
        let script = component.args.get(1).filter(|_| component.binary == "/bin/sh")?;
        releases.iter().find(|r| script.contains(&format!("exec '{}'", path(r))))
    })
}

/// `component` running `binary`: a restoring shell becomes plain etcd (its
/// data dir exists by now, so the restore step has nothing left to do).
pub fn with_binary(component: &ComponentSpec, binary: String) -> ComponentSpec {
    let mut out = component.clone();
    if out.binary == "/bin/sh" && out.args.len() >= 3 && out.args[0] == "-c" {
        out.args.drain(..3);
    }
    out.binary = binary;
    out
}

/// Whether a cluster running `from` may move to `to`: any patch within a
/// minor, one minor up; never a minor down (etcd's cluster version moved
/// once every member ran the newer minor), never two minors up, never
/// another major.
pub fn check_move(from: &str, to: &str) -> Result<(), String> {
    let (Some(f), Some(t)) = (parse_version(from), parse_version(to)) else {
        return Err(format!("{to} or {from} is not a version like 3.7.4"));
    };
    if f.0 != t.0 {
        return Err(format!("{from} -> {to} changes the major version; etcd does not support that"));
    }
    if t.1 < f.1 {
        return Err(format!(
            "{from} -> {to} is a downgrade across a minor: once every member ran {}.{}, etcd's cluster \
             version moved and cannot go back (restore an EtcdBackup into a new EtcdCluster instead)",
            f.0, f.1
        ));
    }
    if t.1 > f.1 + 1 {
        return Err(format!(
            "{from} -> {to} skips a minor: etcd upgrades one minor at a time (go to {}.{}.x first)",
            f.0,
            f.1 + 1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn releases_come_from_suffixed_files_and_the_plain_binarys_version() {
        let files =
            names(&["etcd", "etcdctl", "etcd-3.6.17", "etcdctl-3.6.17", "etcd-notaversion", "kubelet"]);
        let found = releases(&files, Some("3.7.4"));
        let got: Vec<(&str, &str)> = found.iter().map(|r| (r.version.as_str(), r.binary.as_str())).collect();
        assert_eq!(got, [("3.6.17", "etcd-3.6.17"), ("3.7.4", "etcd")]);
        // The plain binary's version is unknown: only the suffixed ones.
        assert_eq!(releases(&files, None).len(), 1);
        // A suffixed file of the same version wins over the plain one.
        let both = releases(&names(&["etcd", "etcd-3.7.4"]), Some("3.7.4"));
        assert_eq!(both, [EtcdRelease { version: "3.7.4".into(), binary: "etcd-3.7.4".into() }]);
        // No plain file: its version does not count.
        assert!(releases(&names(&["etcdctl"]), Some("3.7.4")).is_empty());
    }

    #[test]
    fn versions_parse_from_text_and_etcd_output() {
        for (text, want) in [
            ("3.7.4", Some((3, 7, 4))),
            ("v3.6.17", Some((3, 6, 17))),
            ("3.7.0-rc.1", Some((3, 7, 0))),
            ("3.7", None),
            ("3.7.4.1", None),
            ("latest", None),
        ] {
            assert_eq!(parse_version(text), want, "{text}");
        }
        let out = "etcd Version: 3.7.4\nGit SHA: GitNotFound\nGo Version: go1.25\nGo OS/Arch: linux/amd64\n";
        assert_eq!(version_from_output(out).as_deref(), Some("3.7.4"));
        assert_eq!(version_from_output("etcd: unknown flag"), None);
    }

    #[test]
    fn moves_one_minor_up_or_within_a_minor_only() {
        for (from, to, ok) in [
            ("3.6.17", "3.7.4", true),
            ("3.7.4", "3.7.4", true),
            ("3.7.4", "3.7.9", true),
            ("3.7.9", "3.7.4", true),
            ("3.7.4", "3.6.17", false),
            ("3.5.0", "3.7.4", false),
            ("3.7.4", "4.0.0", false),
            ("3.7.4", "latest", false),
        ] {
            assert_eq!(check_move(from, to).is_ok(), ok, "{from} -> {to}: {:?}", check_move(from, to));
        }
        assert!(check_move("3.7.4", "3.6.17").unwrap_err().contains("downgrade across a minor"));
        assert!(check_move("3.5.0", "3.7.4").unwrap_err().contains("skips a minor"));
    }

    #[test]
    fn a_component_tells_its_release_even_behind_a_restoring_shell() {
        let rs = releases(&names(&["etcd", "etcd-3.6.17"]), Some("3.7.4"));
        let bin = std::path::Path::new("/opt/k8s/bin");
        let plain = ComponentSpec {
            name: "etcd-ns-e".into(),
            binary: "/opt/k8s/bin/etcd-3.6.17".into(),
            args: names(&["--name=e-0"]),
            ..Default::default()
        };
        assert_eq!(release_of(&plain, bin, &rs).map(|r| r.version.as_str()), Some("3.6.17"));
        let shell = ComponentSpec {
            binary: "/bin/sh".into(),
            args: names(&["-c", "set -e\nexec '/opt/k8s/bin/etcd' \"$@\"\n", "etcd", "--name=e-0"]),
            ..plain.clone()
        };
        assert_eq!(release_of(&shell, bin, &rs).map(|r| r.version.as_str()), Some("3.7.4"));
        let moved = with_binary(&shell, "/opt/k8s/bin/etcd-3.6.17".into());
        assert_eq!(moved, plain, "the restoring shell becomes plain etcd with the member's flags");
        let other = ComponentSpec { binary: "/usr/bin/etcd".into(), ..plain };
        assert_eq!(release_of(&other, bin, &rs), None);
        assert_eq!(release(&rs, "v3.7.4").map(|r| r.binary.as_str()), Some("etcd"));
        assert_eq!(
            unknown_version_message("3.9.0", &rs),
            "etcd 3.9.0 is not available to this operator; it has 3.6.17, 3.7.4"
        );
    }
}
