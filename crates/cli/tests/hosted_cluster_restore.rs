#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Back up, delete, restore, with real processes: a hosted cluster's etcd
//! is snapshotted to a directory on a Machine (`etcdctl snapshot save`, run
//! by its node agent), the cluster is deleted with its etcd, an EtcdRestore
//! founds a new EtcdCluster from the snapshot (its first member restores
//! the file before it starts), and a hosted cluster on the restored etcd
//! has the objects back.

mod kok_env;

use std::collections::BTreeMap;

use flotilla_api::kok::{EtcdBackup, EtcdCluster, EtcdRestore, HostedCluster, HostedClusterPhase, JobPhase};
use flotilla_testenv::wait_for;
use kok_env::{kubectl, KokEnv, NS, WAIT};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_cluster_comes_back_from_its_etcd_backup() {
    let env = KokEnv::start(&["m1", "m2"], BTreeMap::new(), |_| {}).await;
    let client = env.client.clone();
    env.create_cluster("c3", json!({})).await;
    env.wait_phase("c3", HostedClusterPhase::Ready).await;
    let kubeconfig = env.kubeconfig("c3", "c3.kubeconfig").await;
    let (ok, out) =
        kubectl(&kubeconfig, &["create", "configmap", "precious", "--from-literal=answer=42"]).await;
    assert!(ok, "{out}");

    // Back up the cluster's etcd to a directory on the machine running it.
    let etcds: Api<EtcdCluster> = Api::namespaced(client.clone(), NS);
    let member_machine =
        etcds.get("c3-etcd").await.unwrap().status.unwrap().members[0].machine.clone().unwrap();
    let backups_dir = env.dir.path().join("backups");
    let backup: EtcdBackup = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdBackup",
        "metadata": {"name": "before-delete", "namespace": NS},
        "spec": {"cluster": "c3-etcd", "destination": {"machine": member_machine, "path": backups_dir.display().to_string()}},
    }))
    .unwrap();
    let backups: Api<EtcdBackup> = Api::namespaced(client.clone(), NS);
    backups.create(&PostParams::default(), &backup).await.unwrap();
    wait_for("the backup to succeed", WAIT, || async {
        backups.get("before-delete").await.unwrap().status.and_then(|s| s.phase) == Some(JobPhase::Succeeded)
    })
    .await;
    let status = backups.get("before-delete").await.unwrap().status.unwrap();
    let file = status.path.clone().unwrap();
    assert!(std::path::Path::new(&file).is_file(), "{status:?}");
    assert!(status.size_bytes.unwrap() > 0, "{status:?}");

    // Delete the cluster: its own etcd goes with it, the snapshot stays.
    env.clusters().delete("c3", &DeleteParams::default()).await.unwrap();
    wait_for("the cluster and its etcd to be gone", WAIT, || async {
        env.clusters().get_opt("c3").await.unwrap().is_none()
            && etcds.get_opt("c3-etcd").await.unwrap().is_none()
    })
    .await;
    assert!(std::path::Path::new(&file).is_file());

    // Restore into a new EtcdCluster; the original spec is gone, so the
    // restore says which one to use.
    let restore: EtcdRestore = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdRestore",
        "metadata": {"name": "bring-back", "namespace": NS},
        "spec": {"backup": "before-delete", "target": "c3-etcd-restored",
                 "template": {"members": 1, "version": "3.4.23"}},
    }))
    .unwrap();
    let restores: Api<EtcdRestore> = Api::namespaced(client.clone(), NS);
    restores.create(&PostParams::default(), &restore).await.unwrap();
    wait_for("the restore to succeed", WAIT, || async {
        let s = restores.get("bring-back").await.unwrap().status.unwrap_or_default();
        assert_ne!(s.phase, Some(JobPhase::Failed), "{s:?}");
        s.phase == Some(JobPhase::Succeeded)
    })
    .await;
    assert_eq!(restores.get("bring-back").await.unwrap().status.unwrap().revision, status.revision);

    // A hosted cluster on the restored etcd has the object back.
    let hc: HostedCluster = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "HostedCluster",
        "metadata": {"name": "c3", "namespace": NS},
        "spec": {"version": "1.20.2", "etcd": {"clusterRef": "c3-etcd-restored"}},
    }))
    .unwrap();
    env.clusters().create(&PostParams::default(), &hc).await.unwrap();
    env.wait_phase("c3", HostedClusterPhase::Ready).await;
    let kubeconfig = env.kubeconfig("c3", "c3-restored.kubeconfig").await;
    let (ok, out) =
        kubectl(&kubeconfig, &["get", "configmap", "precious", "-o", "jsonpath={.data.answer}"]).await;
    assert!(ok && out == "42", "the restored cluster has the object: {out}");
}
