//! Getting the Kubernetes binaries: the build script and the hollow node's
//! source are embedded in the `flotilla` binary, so `flotilla up` works
//! from anywhere.

use std::path::PathBuf;

use anyhow::{bail, Context};

const SCRIPT: &str = include_str!("../../../scripts/k8s-binaries.sh");
const HOLLOW_NODE: &[(&str, &str)] = &[
    ("main.go", include_str!("../../../scripts/hollow-node/main.go")),
    ("cadvisor_1.36.go", include_str!("../../../scripts/hollow-node/cadvisor_1.36.go")),
    ("cadvisor_1.37.go", include_str!("../../../scripts/hollow-node/cadvisor_1.37.go")),
];

/// Builds the binaries of `version` (default: the newest supported) into
/// the cache if needed (the script is a no-op in under a second when the
/// cache is complete) and returns their directory.
pub fn ensure(version: Option<&str>) -> anyhow::Result<PathBuf> {
    let dir = tempfile::Builder::new().prefix("flotilla-k8s-").tempdir()?;
    std::fs::create_dir_all(dir.path().join("hollow-node"))?;
    let script = dir.path().join("k8s-binaries.sh");
    std::fs::write(&script, SCRIPT)?;
    for (name, text) in HOLLOW_NODE {
        std::fs::write(dir.path().join("hollow-node").join(name), text)?;
    }
    let output = std::process::Command::new("bash")
        .arg(&script)
        .args(version)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the Kubernetes binaries build script with bash")?;
    if !output.status.success() {
        bail!("could not get the Kubernetes binaries (the script's messages are above)");
    }
    let bin_dir = String::from_utf8_lossy(&output.stdout).trim().lines().last().unwrap_or("").to_string();
    if bin_dir.is_empty() {
        bail!("the Kubernetes binaries script printed no directory");
    }
    Ok(PathBuf::from(bin_dir))
}
