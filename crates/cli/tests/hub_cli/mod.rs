#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]
//! What the tests of the hub's commands share: running `flotilla` with a
//! HOME of its own, its output, and a hub and one member with `hub
//! install` done and `hub run` running.

use std::path::Path;
use std::process::{Command, Output};

use flotilla_localkube::{Cluster, ClusterConfig, ManagedProcess, ProcessSpec};

/// Runs `flotilla` with `home` as its HOME.
pub fn flotilla(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla")).args(args).env("HOME", home).output().unwrap()
}

/// A command's stdout then stderr, as text.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A hub and a member `m1` (one hollow node), the hub installed and its
/// controllers running as `flotilla hub run`. Fields drop in order: the
/// controllers stop first, the clusters last.
pub struct HubAndMember {
    pub controllers: ManagedProcess,
    pub home: tempfile::TempDir,
    pub member: Cluster,
    pub hub: Cluster,
    pub hub_kc: String,
    pub member_kc: String,
}

impl HubAndMember {
    /// Starts both clusters, runs `hub install` and starts `hub run` with
    /// `hub_run_args` after its kubeconfig.
    pub async fn start(hub_run_args: &[&str]) -> HubAndMember {
        let (hub, member) = tokio::join!(
            Cluster::start(ClusterConfig::hub("hub")),
            Cluster::start(ClusterConfig::new("m1").with_nodes(1))
        );
        let (hub, member) = (hub.unwrap(), member.unwrap());
        let home = tempfile::tempdir().unwrap();
        let hub_kc = hub.kubeconfig_path().to_str().unwrap().to_string();
        let member_kc = member.kubeconfig_path().to_str().unwrap().to_string();

        let out = flotilla(&["hub", "install", "--kubeconfig", &hub_kc], home.path());
        assert!(out.status.success(), "{}", text(&out));
        let mut args = vec!["hub", "run", "--kubeconfig", hub_kc.as_str()];
        args.extend_from_slice(hub_run_args);
        let controllers = ManagedProcess::spawn(
            ProcessSpec::new("hub", env!("CARGO_BIN_EXE_flotilla").into(), home.path().join("hub.log"))
                .args(args),
        )
        .unwrap();
        HubAndMember { controllers, home, member, hub, hub_kc, member_kc }
    }

    /// Joins `m1` in push mode (`flotilla join m1 --mode push`); it must succeed.
    pub fn join_push(&self) {
        let out = flotilla(
            &[
                "join",
                "m1",
                "--mode",
                "push",
                "--hub-kubeconfig",
                &self.hub_kc,
                "--kubeconfig",
                &self.member_kc,
            ],
            self.home.path(),
        );
        assert!(out.status.success(), "{}", text(&out));
    }
}
