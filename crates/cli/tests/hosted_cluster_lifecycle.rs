#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A hosted cluster over time, with real processes: version changes the
//! skew rules forbid are refused; an upgrade to a broken version rolls back
//! and leaves the cluster healthy; an upgrade to a working one moves every
//! component one at a time, the worker kubelet last; a CA rotation issues new kubeconfigs that work
//! while the old ones are refused, and the worker node joins again.
//!
//! The cluster starts on the previous minor (1.36.3) and is upgraded for
//! real to the current one (1.37.2), both from the binary cache; `1.37.0`
//! is registered as a directory of stand-ins that exit at once (a broken
//! release).

mod kok_env;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use flotilla_api::kok::{HostedClusterPhase, UpgradeState, ROTATE_CERTS_ANNOTATION};
use flotilla_localkube::{wait_for, Binaries};
use kok_env::{kubectl, KokEnv, WAIT};
use kube::api::{Patch, PatchParams};
use serde_json::json;

/// The previous minor, and the current one (the cache's default).
const OLD: &str = "1.36.3";
const NEW: &str = "1.37.2";

const PARTS: [&str; 4] = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubemark"];

fn broken_release(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for part in PARTS {
        let path = dir.join(part);
        std::fs::write(&path, "#!/bin/sh\necho \"this build is broken\" >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

async fn set_version(env: &KokEnv, name: &str, version: &str) {
    env.clusters()
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": version}})))
        .await
        .unwrap();
}

fn condition<'a>(
    hc: &'a flotilla_api::kok::HostedCluster,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    hc.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrades_roll_back_or_complete_and_a_ca_rotation_replaces_every_credential() {
    let releases = tempfile::tempdir().unwrap();
    broken_release(&releases.path().join("broken"));
    let versions = BTreeMap::from([
        ("1.37.0".to_string(), releases.path().join("broken")),
        (OLD.to_string(), Binaries::locate_version(OLD).unwrap().dir().to_path_buf()),
    ]);
    let env = KokEnv::start(&["m1", "m2"], versions, |op| {
        // Generous: an apiserver on a loaded 2-core CI machine can take
        // tens of seconds to answer /readyz.
        op.upgrade_step_deadline = Duration::from_secs(45);
    })
    .await;
    env.create_cluster("c2", json!({"version": OLD, "nodes": {"count": 1}})).await;
    env.wait_phase("c2", HostedClusterPhase::Ready).await;
    let old_kubeconfig = env.kubeconfig("c2", "old.kubeconfig").await;
    let (ok, out) = kubectl(&old_kubeconfig, &["create", "configmap", "keep-me", "--from-literal=a=1"]).await;
    assert!(ok, "{out}");

    // Refused: a minor downgrade, and a skipped minor version. Nothing moves.
    for (version, words) in [("1.35.0", "downgrade"), ("1.38.0", "minor")] {
        set_version(&env, "c2", version).await;
        let hc = env
            .wait_cluster("c2", &format!("refuse {version}"), |hc| {
                condition(hc, "Upgraded")
                    .is_some_and(|c| c.reason == "Refused" && c.message.contains(version))
            })
            .await;
        let message = &condition(&hc, "Upgraded").unwrap().message;
        assert!(message.contains(words) && message.contains(version), "{message}");
        assert_eq!(hc.status.as_ref().unwrap().version.as_deref(), Some(OLD));
        assert!(hc.status.as_ref().unwrap().instances.iter().all(|i| i.version.as_deref() == Some(OLD)));
    }

    // A broken release: the apiserver never gets healthy on it, so after the
    // step deadline everything goes back to the old version.
    set_version(&env, "c2", "1.37.0").await;
    env.wait_cluster("c2", "start upgrading", |hc| {
        hc.status.as_ref().and_then(|s| s.phase) == Some(HostedClusterPhase::Upgrading)
    })
    .await;
    let hc = env
        .wait_cluster("c2", "roll back", |hc| {
            hc.status
                .as_ref()
                .and_then(|s| s.upgrade.as_ref())
                .is_some_and(|u| u.state == UpgradeState::RolledBack)
        })
        .await;
    let status = hc.status.clone().unwrap();
    assert_eq!(status.version.as_deref(), Some(OLD));
    let upgraded = condition(&hc, "Upgraded").unwrap();
    assert_eq!((upgraded.status.as_str(), upgraded.reason.as_str()), ("False", "RolledBack"), "{upgraded:?}");
    assert!(upgraded.message.contains("kube-apiserver"), "{upgraded:?}");
    env.wait_phase("c2", HostedClusterPhase::Ready).await;
    let (ok, out) =
        kubectl(&old_kubeconfig, &["get", "configmap", "keep-me", "-o", "jsonpath={.data.a}"]).await;
    assert!(ok && out == "1", "the cluster and its data survived the failed upgrade: {out}");

    // A working release: every component moves, apiserver first, kubelet last.
    set_version(&env, "c2", NEW).await;
    let hc = env
        .wait_cluster("c2", "finish the upgrade", |hc| {
            hc.status
                .as_ref()
                .and_then(|s| s.upgrade.as_ref())
                .is_some_and(|u| u.state == UpgradeState::Succeeded && u.to == NEW)
        })
        .await;
    let status = hc.status.clone().unwrap();
    assert_eq!(status.version.as_deref(), Some(NEW));
    assert_eq!(status.previous_version.as_deref(), Some(OLD));
    let done = &status.upgrade.as_ref().unwrap().done;
    assert_eq!(done.first().map(String::as_str), Some("kube-apiserver/0"), "{done:?}");
    assert_eq!(done.last().map(String::as_str), Some("kubelet/0"), "{done:?}");
    assert_eq!(done.len(), 4, "{done:?}");
    let hc = env
        .wait_cluster("c2", "run the new version everywhere and be Ready", |hc| {
            let s = hc.status.as_ref();
            s.and_then(|s| s.phase) == Some(HostedClusterPhase::Ready)
                && s.is_some_and(|s| {
                    s.instances.iter().all(|i| i.version.as_deref() == Some(NEW) && i.healthy)
                })
        })
        .await;
    assert_eq!(hc.status.unwrap().instances.len(), 4, "three control-plane components and the kubelet");
    let (ok, out) = kubectl(
        &old_kubeconfig,
        &["get", "nodes", "-o", "jsonpath={.items[*].status.nodeInfo.kubeletVersion}"],
    )
    .await;
    assert!(ok && out == format!("v{NEW}"), "the node runs the new kubelet: {out}");

    // CA rotation: new kubeconfigs work, the old ones are refused, and the
    // kubelet joins again with the new CA.
    env.clusters()
        .patch(
            "c2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ROTATE_CERTS_ANNOTATION: "ca/1"}}})),
        )
        .await
        .unwrap();
    env.wait_cluster("c2", "handle the rotation", |hc| {
        hc.status.as_ref().and_then(|s| s.handled_rotation.as_deref()) == Some("ca/1")
    })
    .await;
    let new_kubeconfig = env.kubeconfig("c2", "new.kubeconfig").await;
    assert_ne!(std::fs::read(&new_kubeconfig).unwrap(), std::fs::read(&old_kubeconfig).unwrap());
    wait_for("the old kubeconfig to be refused", WAIT, || async {
        !kubectl(&old_kubeconfig, &["get", "--raw", "/readyz"]).await.0
    })
    .await;
    let (ok, refused) = kubectl(&old_kubeconfig, &["get", "configmap", "keep-me"]).await;
    assert!(!ok, "{refused}");
    wait_for("the new kubeconfig to work and the node to be Ready again", WAIT, || async {
        let (ok, out) = kubectl(&new_kubeconfig, &["get", "nodes", "--no-headers"]).await;
        ok && out.contains(" Ready")
    })
    .await;
    let (ok, out) =
        kubectl(&new_kubeconfig, &["get", "configmap", "keep-me", "-o", "jsonpath={.data.a}"]).await;
    assert!(ok && out == "1", "{out}");
    env.wait_phase("c2", HostedClusterPhase::Ready).await;
}
