//! Where the `flotilla` binary is: the benchmarks run its commands (`up`,
//! `hub run`, `agent`, `node-agent`) as processes of their own.

use std::path::PathBuf;

use anyhow::{bail, Context};

/// `$FLOTILLA_BINARY`, else `flotilla` beside this binary (both are built
/// into the same target directory by `cargo build -p flotilla -p flotilla-bench`).
pub fn path() -> anyhow::Result<PathBuf> {
    if let Some(given) = std::env::var_os("FLOTILLA_BINARY") {
        return Ok(PathBuf::from(given));
    }
    let me = std::env::current_exe().context("finding the flotilla-bench binary")?;
    let beside = me.with_file_name("flotilla");
    if !beside.is_file() {
        bail!(
            "no flotilla binary at {}: build it (`cargo build --release -p flotilla`) or set FLOTILLA_BINARY",
            beside.display()
        );
    }
    Ok(beside)
}
