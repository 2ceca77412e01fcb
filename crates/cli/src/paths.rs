//! Where the command keeps its state by default.

use std::path::PathBuf;

/// `~/.flotilla`: the local fleet's state, the default hub kubeconfig and
/// the agents `join` starts.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/")).join(".flotilla")
}
