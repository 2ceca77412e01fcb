//! The dashboard's hosted-clusters page in Debian's Chromium
//! (playwright-core, `crates/dashboard/e2e/hosted.js`) against a real
//! hosted cluster: the smallest the kok site builds (one machine under a
//! real node agent, a one-member EtcdCluster, the control plane as
//! processes), its status written by the real EtcdCluster and
//! HostedCluster operators. The page must show the phase, each
//! component's instance on its machine, the etcd member as leader with its
//! database size, the certificates' time left and the machine's components
//! with restarts and the log tail of a killed scheduler's exit; an on-demand backup asked for on the page
//! is taken by the etcd operator and shows up without a reload. It lives
//! here, not in the dashboard crate, because the kok site runs the
//! `flotilla` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flotilla_testkit::browser as dashboard_support;
mod kok_env;

use std::collections::BTreeMap;

use flotilla_api::kok::{EtcdBackup, HostedClusterPhase, JobPhase};
use flotilla_dashboard::{Dashboard, Mode};
use flotilla_kok_core::hosted::Part;
use flotilla_localkube::wait_for;
use kok_env::{KokEnv, NS, WAIT};
use kube::Api;
use serde_json::json;

use dashboard_support::Script;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hosted_clusters_page_shows_a_real_hosted_cluster_and_takes_a_backup() {
    let env = KokEnv::start(&["m1"], BTreeMap::new(), |_| {}).await;
    env.create_cluster_with_etcd("c1", 1, json!({})).await;
    env.wait_phase("c1", HostedClusterPhase::Ready).await;
    // A scheduler that died once: its node agent restarts it and keeps the
    // log tail of the exit, which the Machines table shows.
    let (_, pid) = env.component_pid("c1", Part::Scheduler, 0).await.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    wait_for("the scheduler restarted", WAIT, || async {
        env.component_pid("c1", Part::Scheduler, 0).await.is_some_and(|(_, p)| p != pid)
    })
    .await;

    // Local mode: the page acts with the site's admin kubeconfig.
    let dashboard =
        Dashboard::bind(env.hub.admin_config().clone(), Mode::Local, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let url = format!("http://{}/", dashboard.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dashboard.serve(async {
        let _ = stopped.await;
    }));

    let backups_dir = env.dir.path().join("backups");
    std::fs::create_dir_all(&backups_dir).unwrap();
    let mut script = Script::start(
        "hosted.js",
        &[("DASHBOARD_URL", url), ("BACKUP_DIR", backups_dir.display().to_string())],
    );
    script.expect("BACKUP requested").await;
    let backups: Api<EtcdBackup> = Api::namespaced(env.client.clone(), NS);
    wait_for("the dashboard's backup taken", WAIT, || async {
        backups.list(&Default::default()).await.unwrap().items.iter().any(|b| {
            b.spec.cluster == "c1-etcd"
                && b.status.as_ref().is_some_and(|s| s.phase == Some(JobPhase::Succeeded))
        })
    })
    .await;
    let files = std::fs::read_dir(&backups_dir).unwrap().count();
    assert!(files > 0, "the snapshot is a file in {}", backups_dir.display());
    script.expect("DONE hosted").await;
    assert!(script.wait().await, "the browser script failed (see its output above)");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    for shot in ["hosted.png", "hosted-backup.png"] {
        let path = dashboard_support::artefacts_dir().join(shot);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000),
            "screenshot {} was written",
            path.display()
        );
    }
}
