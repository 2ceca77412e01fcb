#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A lost machine, for real: a hosted cluster whose control plane runs in
//! machine pool `cp` (m1, m2) and whose etcd runs on m3. The machine that
//! holds the control plane dies (its node agent stops and its processes are
//! killed); the instance moves to the other machine of the pool (never to
//! m3, outside it), the cluster is Ready again through the same admin
//! kubeconfig's CA, and the objects written before are still there.

mod kok_env;

use std::collections::BTreeMap;

use flotilla_api::kok::{HostedClusterPhase, MACHINE_POOL_LABEL};
use flotilla_api::machine::Machine;
use flotilla_kok_core::hosted::{component_name, Part};
use kok_env::{kubectl, KokEnv, NS};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const MACHINES: [&str; 3] = ["m1", "m2", "m3"];

/// The machine whose spec holds the cluster's apiserver instance 0.
async fn apiserver_machine(env: &KokEnv) -> Option<String> {
    let wanted = component_name(Part::Apiserver, NS, "c1", 0);
    let machines = Api::<Machine>::all(env.client.clone()).list(&Default::default()).await.unwrap().items;
    let holding: Vec<String> = machines
        .iter()
        .filter(|m| m.spec.components.iter().any(|c| c.name == wanted))
        .map(|m| m.name_any())
        .collect();
    assert!(holding.len() <= 1, "apiserver 0 is on several machines: {holding:?}");
    holding.into_iter().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_machines_control_plane_moves_within_its_pool_and_nothing_is_lost() {
    let env = KokEnv::start(&MACHINES, BTreeMap::new(), |hosted| {
        // The agents report every 2 s; a machine silent for 6 s is lost.
        hosted.plan.machine_lost_after = time::Duration::seconds(6);
    })
    .await;
    let machines: Api<Machine> = Api::all(env.client.clone());
    for (name, labels) in [
        ("m1", json!({MACHINE_POOL_LABEL: "cp"})),
        ("m2", json!({MACHINE_POOL_LABEL: "cp"})),
        ("m3", json!({"role": "etcd"})),
    ] {
        let patch = json!({"metadata": {"labels": labels}});
        machines.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    env.create_cluster("c1", json!({"controlPlane": {"machinePool": "cp"}})).await;
    // Its etcd on m3 only, so that losing a pool machine loses no etcd member.
    let etcd_patch = json!({"spec": {"machineSelector": {"role": "etcd"}}});
    Api::<flotilla_api::kok::EtcdCluster>::namespaced(env.client.clone(), NS)
        .patch("c1-etcd", &PatchParams::default(), &Patch::Merge(&etcd_patch))
        .await
        .unwrap();
    env.wait_phase("c1", HostedClusterPhase::Ready).await;
    let first = apiserver_machine(&env).await.unwrap();
    assert!(first == "m1" || first == "m2", "the control plane left its pool: {first}");

    let kubeconfig = env.kubeconfig("c1", "c1.kubeconfig").await;
    let (ok, out) = kubectl(&kubeconfig, &["create", "configmap", "keep-me", "--from-literal=k=v"]).await;
    assert!(ok, "{out}");

    let lost = MACHINES.iter().position(|m| *m == first).unwrap();
    env.lose_machine(lost).await;
    let other = if first == "m1" { "m2" } else { "m1" };
    env.wait_cluster("c1", &format!("moved to {other} and Ready"), |hc| {
        let ready = hc.status.as_ref().and_then(|s| s.phase) == Some(HostedClusterPhase::Ready);
        let instances = hc.status.as_ref().map(|s| s.instances.clone()).unwrap_or_default();
        ready && !instances.is_empty() && instances.iter().all(|i| i.machine.as_deref() == Some(other))
    })
    .await;
    assert_eq!(apiserver_machine(&env).await.as_deref(), Some(other), "the lost machine still holds it");

    // The moved apiserver has a new endpoint: the refreshed admin
    // kubeconfig reaches it, and the object written before is there.
    let kubeconfig = env.kubeconfig("c1", "c1-moved.kubeconfig").await;
    let (ok, out) = kubectl(&kubeconfig, &["get", "configmap", "keep-me", "-o", "jsonpath={.data.k}"]).await;
    assert!(ok && out == "v", "{out}\n{}", env.logs());
}
