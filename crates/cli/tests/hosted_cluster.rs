#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A business cluster from YAML, for real: a hub API server, three node
//! agents, the EtcdCluster and HostedCluster operators. The cluster's etcd
//! (three members), kube-apiserver, controller-manager and scheduler run as
//! processes on the machines, two hollow kubelets join with the bootstrap
//! token, and a Deployment runs in it. A killed apiserver is restarted and
//! nothing is lost; deleting the cluster removes its processes, Secrets and
//! etcd.

mod kok_env;

use std::collections::BTreeMap;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::kok::{EtcdCluster, HostedClusterPhase};
use flotilla_api::machine::Machine;
use flotilla_kok_core::hosted::{admin_secret_name, parse_component_name, pki_secret_name, Part};
use flotilla_localkube::wait_for;
use k8s_openapi::api::core::v1::Secret;
use kok_env::{kubectl, KokEnv, NS, WAIT};
use kube::api::DeleteParams;
use kube::Api;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hosted_cluster_runs_pods_survives_a_killed_apiserver_and_is_deleted_cleanly() {
    let env = KokEnv::start(&["m1", "m2", "m3"], BTreeMap::new(), |_| {}).await;
    let client = env.client.clone();
    // The YAML a platform engineer writes (what `flotilla cluster create` makes).
    // Three etcd members (one per machine) and two worker nodes.
    env.create_cluster_with_etcd("c1", 3, json!({"nodes": {"count": 2}, "addons": [{"name": "coredns"}]}))
        .await;
    let clusters = env.clusters();
    let ready = env.wait_phase("c1", HostedClusterPhase::Ready).await;
    let status = ready.status.clone().unwrap();
    assert_eq!(status.version.as_deref(), Some("1.37.2"));
    assert_eq!(status.ready_nodes, Some(2));
    let etcd = Api::<EtcdCluster>::namespaced(client.clone(), NS).get("c1-etcd").await.unwrap();
    assert_eq!(etcd.status.as_ref().unwrap().ready_members, 3, "{:?}", etcd.status);
    assert!(status.endpoint.as_deref().unwrap().starts_with("https://127.0.0.1:"), "{status:?}");
    assert_eq!(status.admin_kubeconfig_secret.as_deref(), Some(admin_secret_name("c1").as_str()));
    for c in [
        "Ready",
        "EtcdReady",
        "KubeApiserverReady",
        "KubeControllerManagerReady",
        "KubeSchedulerReady",
        "AddonsApplied",
        "NodesReady",
        "CertificatesReady",
    ] {
        let cond =
            status.conditions.iter().find(|x| x.type_ == c).unwrap_or_else(|| panic!("no {c}: {status:#?}"));
        assert_eq!(cond.status, "True", "{cond:?}");
    }
    let addons: Vec<&str> = status.addons.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(addons, ["bootstrap", "coredns"]);
    assert!(status.certificates.iter().any(|c| c.name == "apiserver"), "{:?}", status.certificates);

    // The admin kubeconfig works with kubectl; the node joined with the
    // bootstrap token is Ready; a Deployment's pods run on it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let kubeconfig = env.kubeconfig("c1", "c1.kubeconfig").await;
    let (ok, nodes) = kubectl(&kubeconfig, &["get", "nodes", "--no-headers"]).await;
    assert!(ok && nodes.contains("c1-node-0") && nodes.contains("c1-node-1"), "{nodes}");
    assert_eq!(nodes.lines().filter(|l| l.contains(" Ready ")).count(), 2, "{nodes}");
    let (ok, csrs) = kubectl(&kubeconfig, &["get", "csr", "--no-headers"]).await;
    assert!(ok && csrs.contains("system:bootstrap:") && csrs.contains("Approved,Issued"), "{csrs}");
    let (ok, out) =
        kubectl(&kubeconfig, &["create", "deployment", "web", "--image=nginx", "--replicas=2"]).await;
    assert!(ok, "{out}");
    wait_for("the Deployment's two replicas to be available", WAIT, || {
        let kubeconfig = kubeconfig.clone();
        async move {
            let (_, out) =
                kubectl(&kubeconfig, &["get", "deploy", "web", "-o", "jsonpath={.status.availableReplicas}"])
                    .await;
            out.trim() == "2"
        }
    })
    .await;
    let (ok, dns) =
        kubectl(&kubeconfig, &["-n", "kube-system", "get", "deploy", "coredns", "-o", "name"]).await;
    assert!(ok, "{dns}");

    // A user's edit of an add-on survives the operator's reconciles.
    let (ok, out) =
        kubectl(&kubeconfig, &["-n", "kube-system", "scale", "deploy", "coredns", "--replicas=1"]).await;
    assert!(ok, "{out}");

    // It is a member of the fleet (push mode, through its admin kubeconfig).
    let member = Api::<ManagedCluster>::all(client.clone()).get("c1").await.unwrap();
    assert_eq!(member.spec.sync_mode, flotilla_api::cluster::SyncMode::Push);
    assert_eq!(member.spec.secret_ref.as_ref().unwrap().name, admin_secret_name("c1"));

    // Repair: the apiserver process is killed; its node agent restarts it,
    // the cluster is Ready again and its objects are all there.
    let (machine, pid) = env.component_pid("c1", Part::Apiserver, 0).await.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    wait_for("the apiserver to be restarted", WAIT, || async {
        env.component_pid("c1", Part::Apiserver, 0).await.is_some_and(|(_, p)| p != pid)
    })
    .await;
    wait_for("the cluster to answer again", WAIT, || {
        let kubeconfig = kubeconfig.clone();
        async move { kubectl(&kubeconfig, &["get", "deploy", "web", "-o", "name"]).await.0 }
    })
    .await;
    let machine_status = Api::<Machine>::all(client.clone()).get(&machine).await.unwrap().status.unwrap();
    let apiserver = machine_status.components.iter().find(|c| c.name.starts_with("apiserver-")).unwrap();
    assert!(apiserver.restarts >= 1, "{apiserver:?}");
    env.wait_phase("c1", HostedClusterPhase::Ready).await;
    let (_, replicas) = kubectl(
        &kubeconfig,
        &["-n", "kube-system", "get", "deploy", "coredns", "-o", "jsonpath={.spec.replicas}"],
    )
    .await;
    assert_eq!(replicas.trim(), "1", "the user's edit of the add-on was kept");

    // Deletion: processes, Secrets, the fleet membership and its etcd go.
    clusters.delete("c1", &DeleteParams::default()).await.unwrap();
    wait_for("the HostedCluster to be gone", WAIT, || {
        let clusters = clusters.clone();
        async move { clusters.get_opt("c1").await.unwrap().is_none() }
    })
    .await;
    for m in ["m1", "m2", "m3"] {
        let spec = Api::<Machine>::all(client.clone()).get(m).await.unwrap().spec;
        assert!(
            spec.components.iter().all(|c| parse_component_name(&c.name, NS, "c1").is_none()),
            "{m}: {:?}",
            spec.components
        );
    }
    // Its own etcd goes too, a moment later (the etcd operator's finalizer
    // stops the members first).
    let etcd_component = flotilla_kok_core::etcd::component_name(NS, "c1-etcd");
    wait_for("the etcd cluster and its members to be gone", WAIT, || async {
        let gone =
            Api::<EtcdCluster>::namespaced(client.clone(), NS).get_opt("c1-etcd").await.unwrap().is_none();
        let machines = Api::<Machine>::all(client.clone()).list(&Default::default()).await.unwrap().items;
        gone && machines.iter().all(|m| m.spec.components.iter().all(|c| c.name != etcd_component))
    })
    .await;
    for secret in [pki_secret_name("c1"), admin_secret_name("c1")] {
        assert!(secrets.get_opt(&secret).await.unwrap().is_none(), "{secret}");
    }
    assert!(Api::<ManagedCluster>::all(client.clone()).get_opt("c1").await.unwrap().is_none());
}
