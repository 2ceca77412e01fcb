//! Getting the Kubernetes binaries: the build script and its patches are
//! embedded in the `flotilla` binary, so `flotilla up` works from anywhere.

use std::path::PathBuf;

use anyhow::{bail, Context};

const SCRIPT: &str = include_str!("../../../scripts/k8s-binaries.sh");
const PATCHES: &[(&str, &str)] =
    &[("kubemark.patch", include_str!("../../../scripts/patches/kubemark.patch"))];

/// Builds the binaries into the cache if needed (the script is a no-op in
/// under a second when the cache is complete) and returns their directory.
pub fn ensure() -> anyhow::Result<PathBuf> {
    let dir = tempfile::Builder::new().prefix("flotilla-k8s-").tempdir()?;
    std::fs::create_dir_all(dir.path().join("patches"))?;
    let script = dir.path().join("k8s-binaries.sh");
    std::fs::write(&script, SCRIPT)?;
    for (name, text) in PATCHES {
        std::fs::write(dir.path().join("patches").join(name), text)?;
    }
    let output = std::process::Command::new("bash")
        .arg(&script)
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
