#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
//! What the `flotilla up`/`down` tests share: running the binary, its
//! output, a fleet stopped however the test ends, a client from a
//! kubeconfig file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Runs `flotilla`; a fleet it starts stops by itself if this test process
/// dies without running its destructors.
pub fn flotilla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env(flotilla_cli::fleet::daemon::OWNER_PID_ENV, std::process::id().to_string())
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `flotilla down` when the test ends, however it ends.
pub struct Fleet {
    pub dir: PathBuf,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.dir.join("fleet.json").exists() {
            let _ = flotilla(&["down", "--state-dir", self.dir.to_str().unwrap()]);
        }
    }
}

pub async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}
