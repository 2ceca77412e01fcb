#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The hosted operator's version catalog at run time: a release built into
//! the binary cache while the operator runs is picked up without a restart.
//! The cache is a temp directory laid out like Flotilla's
//! (`ROOT/vX.Y.Z/bin`, the `.complete` stamp written last), holding links
//! to the real 1.37.2 and 1.36.3 builds; the operator knows no version
//! except through it.

mod kok_env;

use std::collections::BTreeMap;
use std::path::Path;

use flotilla_api::kok::HostedClusterPhase;
use flotilla_api::machine::Machine;
use flotilla_kok_core::hosted::{component_name, Part};
use flotilla_localkube::Binaries;
use kok_env::{KokEnv, NS};
use kube::Api;

/// Links every binary of `release` into `bin`, the stamp only if `complete`.
fn link_release(release: &Path, bin: &Path, complete: bool) {
    std::fs::create_dir_all(bin).unwrap();
    for entry in std::fs::read_dir(release).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".complete" {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), bin.join(&name)).unwrap();
    }
    if complete {
        std::fs::write(bin.join(".complete"), "test\n").unwrap();
    }
}

fn valid_message(hc: &flotilla_api::kok::HostedCluster) -> Option<(String, String)> {
    let c = hc.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Valid")?;
    Some((c.status.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_built_while_the_operator_runs_is_used_without_a_restart() {
    let new = Binaries::locate_version("1.37.2").unwrap();
    let old = Binaries::locate_version("1.36.3").unwrap();
    let cache = tempfile::tempdir().unwrap();
    link_release(new.dir(), &cache.path().join("v1.37.2/bin"), true);
    let root = cache.path().to_path_buf();
    let env = KokEnv::start(&["m1"], BTreeMap::new(), |hosted| {
        hosted.plan.versions.clear();
        hosted.version_cache = Some(root);
    })
    .await;

    // 1.36.3 is not in the cache: refused, naming what the operator runs
    // and how to add it.
    env.create_cluster("c1", serde_json::json!({"version": "1.36.3"})).await;
    let refused = env
        .wait_cluster("c1", "refused as an unknown version", |hc| {
            valid_message(hc).is_some_and(|(status, _)| status == "False")
        })
        .await;
    let (_, message) = valid_message(&refused).unwrap();
    assert!(message.contains("version 1.36.3 is not available"), "{message}");
    assert!(message.contains("it runs: 1.37.2)"), "{message}");
    assert!(message.contains("flotilla k8s-binaries 1.36.3"), "{message}");

    // `flotilla k8s-binaries 1.36.3` runs: binaries first, the stamp last
    // (a release without its stamp is never used: the catalog's unit
    // tests). The cluster comes up on it, from the cache's path.
    let bin = cache.path().join("v1.36.3/bin");
    link_release(old.dir(), &bin, false);
    std::fs::write(bin.join(".complete"), "test\n").unwrap();
    let ready = env.wait_phase("c1", HostedClusterPhase::Ready).await;
    assert_eq!(ready.status.as_ref().unwrap().version.as_deref(), Some("1.36.3"));
    let machine = Api::<Machine>::all(env.client.clone()).get("m1").await.unwrap();
    let apiserver = component_name(Part::Apiserver, NS, "c1", 0);
    let component = machine.spec.components.iter().find(|c| c.name == apiserver).unwrap();
    assert_eq!(component.binary, bin.join("kube-apiserver").display().to_string(), "{component:?}");
}
