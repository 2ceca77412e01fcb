#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Back up, delete, restore, with real processes: a hosted cluster's etcd
//! is snapshotted to a directory on a Machine (`etcdctl snapshot save`, run
//! by its node agent), the cluster is deleted with its etcd, an EtcdRestore
//! founds a new EtcdCluster from the snapshot (its first member restores
//! the file before it starts), and a hosted cluster on the restored etcd
//! has the objects back. And one tenant of a shared EtcdCluster: a
//! prefixed backup (a key dump by `flotilla etcd-keys dump`) restored into
//! the same cluster brings that tenant's keys back without touching the
//! other's, and is refused once the tenant has changed.

mod kok_env;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use flotilla_api::kok::{EtcdBackup, EtcdCluster, EtcdRestore, HostedCluster, HostedClusterPhase, JobPhase};
use flotilla_api::machine::Machine;
use flotilla_kok::etcd_keys::Connection;
use flotilla_kok_core::etcd_keys::{self as keys, Kv};
use flotilla_localkube::wait_for;
use k8s_openapi::api::core::v1::Secret;
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
                 "template": {"members": 1, "version": "3.7.4"}},
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
        "spec": {"version": "1.37.2", "etcd": {"clusterRef": "c3-etcd-restored"}},
    }))
    .unwrap();
    env.clusters().create(&PostParams::default(), &hc).await.unwrap();
    env.wait_phase("c3", HostedClusterPhase::Ready).await;
    let kubeconfig = env.kubeconfig("c3", "c3-restored.kubeconfig").await;
    let (ok, out) =
        kubectl(&kubeconfig, &["get", "configmap", "precious", "-o", "jsonpath={.data.answer}"]).await;
    assert!(ok && out == "42", "the restored cluster has the object: {out}");
}

/// Through a member's gRPC gateway with the cluster's client certificate.
struct Gateway(Connection);

impl Gateway {
    async fn call(&self, path: &str, body: serde_json::Value) -> Vec<u8> {
        let Connection { tls, endpoints, timeout } = &self.0;
        flotilla_kok::etcd::call(tls, &endpoints[0], path, &body.to_string(), *timeout).await.unwrap()
    }

    async fn put(&self, key: &str, value: &[u8]) {
        self.call("/v3/kv/put", json!({"key": B64.encode(key), "value": B64.encode(value)})).await;
    }

    async fn get_prefix(&self, prefix: &str) -> Vec<Kv> {
        let body = keys::range_request(prefix.as_bytes(), None, None, 10_000);
        let page = keys::parse_range(&self.call("/v3/kv/range", serde_json::from_str(&body).unwrap()).await)
            .unwrap();
        assert!(!page.more);
        page.kvs
    }

    async fn delete_prefix(&self, prefix: &str) {
        let end = keys::range_end(prefix.as_bytes());
        self.call("/v3/kv/deleterange", json!({"key": B64.encode(prefix), "range_end": B64.encode(end)}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tenants_prefix_comes_back_into_the_shared_etcd_and_a_changed_tenant_is_refused() {
    let env = KokEnv::start(&["m1"], BTreeMap::new(), |_| {}).await;
    let client = env.client.clone();
    let etcds: Api<EtcdCluster> = Api::namespaced(client.clone(), NS);
    let shared: EtcdCluster = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "shared", "namespace": NS},
        "spec": {"members": 1, "version": "3.7.4"},
    }))
    .unwrap();
    etcds.create(&PostParams::default(), &shared).await.unwrap();
    wait_for("the shared etcd to run", WAIT, || async {
        let s = etcds.get("shared").await.unwrap().status.unwrap_or_default();
        s.ready_members == 1 && s.members.iter().all(|m| m.healthy)
    })
    .await;
    let url = etcds.get("shared").await.unwrap().status.unwrap().client_urls[0].clone();
    let pki = Api::<Secret>::namespaced(client.clone(), NS).get("shared-etcd-pki").await.unwrap();
    let data = pki.data.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect();
    let tls = flotilla_kok::etcd::client_tls(&data).unwrap();
    let etcd = Gateway(Connection { tls, endpoints: vec![url], timeout: Duration::from_secs(10) });

    // Two tenants: a has more keys than one transaction holds (and a
    // value that is not text), b a few.
    let mut tenant_a: Vec<Kv> =
        (0..300).map(|i| Kv::new(format!("/clusters/a/k{i:04}"), format!("value {i}"))).collect();
    tenant_a.push(Kv::new("/clusters/a/binary", vec![0u8, 159, 255]));
    for batch in keys::batches(&tenant_a, keys::MAX_TXN_OPS, keys::MAX_TXN_BYTES) {
        let answer = etcd.call("/v3/kv/txn", serde_json::from_str(&keys::txn_request(batch)).unwrap()).await;
        assert!(keys::parse_txn(&answer).unwrap().0);
    }
    for i in 0..3 {
        etcd.put(&format!("/clusters/b/k{i}"), format!("b {i}").as_bytes()).await;
    }
    let tenant_a = etcd.get_prefix("/clusters/a").await;
    let tenant_b = etcd.get_prefix("/clusters/b").await;
    assert_eq!((tenant_a.len(), tenant_b.len()), (301, 3));

    // Back up tenant a only: a key dump on m1.
    let backups_dir = env.dir.path().join("backups");
    let backup: EtcdBackup = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdBackup",
        "metadata": {"name": "tenant-a", "namespace": NS},
        "spec": {"cluster": "shared", "prefix": "/clusters/a",
                 "destination": {"machine": "m1", "path": backups_dir.display().to_string()}},
    }))
    .unwrap();
    let backups: Api<EtcdBackup> = Api::namespaced(client.clone(), NS);
    backups.create(&PostParams::default(), &backup).await.unwrap();
    wait_for("the prefixed backup to finish", WAIT, || async {
        let s = backups.get("tenant-a").await.unwrap().status.unwrap_or_default();
        assert_ne!(s.phase, Some(JobPhase::Failed), "{s:?}");
        s.phase == Some(JobPhase::Succeeded)
    })
    .await;
    let status = backups.get("tenant-a").await.unwrap().status.unwrap();
    let file = backups_dir.join("shared-tenant-a.keys.json");
    assert_eq!(status.path.as_deref(), Some(file.to_str().unwrap()));
    assert_eq!(status.size_bytes, Some(i64::try_from(std::fs::metadata(&file).unwrap().len()).unwrap()));
    let message = status.message.clone().unwrap();
    assert!(message.starts_with("301 keys under /clusters/a at revision"), "{message}");
    let dump = keys::decode(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!((dump.keys, Some(dump.revision)), (tenant_a.clone(), status.revision));

    // Tenant a loses its keys; a restore into the shared etcd brings them
    // back and leaves b alone.
    etcd.delete_prefix("/clusters/a").await;
    etcd.put("/clusters/b/k0", b"b changed after the backup").await;
    let tenant_b = etcd.get_prefix("/clusters/b").await;
    assert!(etcd.get_prefix("/clusters/a").await.is_empty());
    let restores: Api<EtcdRestore> = Api::namespaced(client.clone(), NS);
    let restore = |name: &str| {
        serde_json::from_value::<EtcdRestore>(json!({
            "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdRestore",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"backup": "tenant-a", "target": "shared"},
        }))
        .unwrap()
    };
    let finished = |name: &'static str| {
        let restores = restores.clone();
        async move {
            let mut last = None;
            let deadline = tokio::time::Instant::now() + WAIT;
            while tokio::time::Instant::now() < deadline {
                let s = restores.get(name).await.unwrap().status.unwrap_or_default();
                if matches!(s.phase, Some(JobPhase::Succeeded | JobPhase::Failed)) {
                    return s;
                }
                last = Some(s);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            panic!("restore {name} never finished; last status {last:?}");
        }
    };
    restores.create(&PostParams::default(), &restore("back")).await.unwrap();
    let done = finished("back").await;
    assert_eq!(done.phase, Some(JobPhase::Succeeded), "{done:?}");
    assert_eq!(done.revision, status.revision);
    assert!(done.message.as_deref().unwrap().starts_with("301 key(s) written, 0 already there"), "{done:?}");
    assert_eq!(etcd.get_prefix("/clusters/a").await, tenant_a, "tenant a is back, value for value");
    assert_eq!(etcd.get_prefix("/clusters/b").await, tenant_b, "tenant b is untouched");

    // Tenant a lives on and changes a key: restoring again is refused and
    // overwrites nothing.
    etcd.put("/clusters/a/k0007", b"changed by the tenant").await;
    restores.create(&PostParams::default(), &restore("again")).await.unwrap();
    let refused = finished("again").await;
    assert_eq!(refused.phase, Some(JobPhase::Failed), "{refused:?}");
    let message = refused.message.unwrap();
    assert!(
        message.contains("refusing to restore")
            && message.contains("/clusters/a/k0007 (differs from the backup)")
            && message.contains("never overwrites a live tenant"),
        "{message}"
    );
    let now = etcd.get_prefix("/clusters/a").await;
    assert_eq!(now.iter().find(|kv| kv.key == b"/clusters/a/k0007").unwrap().value, b"changed by the tenant");

    // The one-shot components left the Machine; the member stays.
    let machines: Api<Machine> = Api::all(client.clone());
    wait_for("the dump and load components to leave m1", WAIT, || async {
        let m = machines.get("m1").await.unwrap();
        m.spec.components.iter().map(|c| c.name.as_str()).collect::<Vec<_>>() == ["etcd-kok-test-shared"]
    })
    .await;
}
