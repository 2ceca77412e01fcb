#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A hosted cluster with two apiservers is upgraded for real from the
//! previous minor (1.36.3) to the current one (1.37.2) while a client
//! spreads requests over both apiservers the way a health-checking load
//! balancer does (only to endpoints whose /readyz passes, re-checked every
//! 100 ms, never retried): not one request fails. Every instance moves one
//! at a time, the worker kubelet last, and its Node then reports the new
//! version.

mod kok_env;

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_api::kok::{HostedClusterPhase, UpgradeState};
use flotilla_api::machine::Machine;
use flotilla_localkube::balanced::{endpoint_client, endpoint_ready, BalancedLoad};
use flotilla_localkube::{wait_for, Binaries};
use kok_env::{kubectl, KokEnv, NS, WAIT};
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

const OLD: &str = "1.36.3";
const NEW: &str = "1.37.2";

/// Each apiserver instance's URL, from its Machine component.
async fn apiserver_urls(env: &KokEnv, cluster: &str, replicas: i32) -> Vec<String> {
    let machines = Api::<Machine>::all(env.client.clone()).list(&Default::default()).await.unwrap().items;
    flotilla_kok_core::hosted::apiserver_urls(&machines, NS, cluster, replicas)
        .into_iter()
        .enumerate()
        .map(|(index, url)| url.unwrap_or_else(|| panic!("no apiserver {index} on any Machine")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_of_two_apiservers_fails_no_balanced_request_and_moves_the_kubelet_last() {
    let versions =
        BTreeMap::from([(OLD.to_string(), Binaries::locate_version(OLD).unwrap().dir().to_path_buf())]);
    let env = KokEnv::start(&["m1", "m2"], versions, |op| {
        // Generous: an apiserver on a loaded 2-core CI machine can take
        // tens of seconds to answer /readyz.
        op.upgrade_step_deadline = Duration::from_secs(90);
    })
    .await;
    env.create_cluster("r2", json!({"version": OLD, "nodes": {"count": 1}, "controlPlane": {"replicas": 2}}))
        .await;
    env.wait_phase("r2", HostedClusterPhase::Ready).await;
    let kubeconfig = env.kubeconfig("r2", "admin.kubeconfig").await;
    let admin = std::fs::read_to_string(&kubeconfig).unwrap();

    let urls = apiserver_urls(&env, "r2", 2).await;
    assert_ne!(urls[0], urls[1]);
    let mut endpoints = Vec::new();
    for url in &urls {
        let client = endpoint_client(&admin, url).await.unwrap();
        wait_for(&format!("{url} to be ready"), WAIT, || {
            let client = client.clone();
            async move { endpoint_ready(&client).await }
        })
        .await;
        endpoints.push((url.clone(), client));
    }
    let load = BalancedLoad::start(endpoints, "/api/v1/namespaces/default", Duration::from_millis(50)).await;

    env.clusters()
        .patch("r2", &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": NEW}})))
        .await
        .unwrap();
    let hc = env
        .wait_cluster("r2", "finish the upgrade", |hc| {
            let upgrade = hc.status.as_ref().and_then(|s| s.upgrade.as_ref());
            upgrade.is_some_and(|u| u.to == NEW && !matches!(u.state, UpgradeState::InProgress))
        })
        .await;
    let report = load.stop().await;

    let upgrade = hc.status.as_ref().unwrap().upgrade.clone().unwrap();
    assert_eq!(upgrade.state, UpgradeState::Succeeded, "{upgrade:?}");
    assert_eq!(
        upgrade.done,
        [
            "kube-apiserver/0",
            "kube-apiserver/1",
            "kube-controller-manager/0",
            "kube-controller-manager/1",
            "kube-scheduler/0",
            "kube-scheduler/1",
            "kubelet/0"
        ]
    );
    assert_eq!(urls, apiserver_urls(&env, "r2", 2).await, "the endpoints stayed where they were");
    assert_eq!(report.failed(), 0, "failed requests during the upgrade: {report:?}");
    assert!(report.endpoints.iter().all(|e| e.sent > 0), "both apiservers served: {report:?}");

    let hc = env
        .wait_cluster("r2", "run the new version everywhere and be Ready", |hc| {
            let s = hc.status.as_ref();
            s.and_then(|s| s.phase) == Some(HostedClusterPhase::Ready)
                && s.is_some_and(|s| {
                    s.instances.iter().all(|i| i.version.as_deref() == Some(NEW) && i.healthy)
                })
        })
        .await;
    assert_eq!(hc.status.unwrap().instances.len(), 7, "two of each control-plane component and the kubelet");
    let (ok, out) =
        kubectl(&kubeconfig, &["get", "nodes", "-o", "jsonpath={.items[*].status.nodeInfo.kubeletVersion}"])
            .await;
    assert!(ok && out == format!("v{NEW}"), "{out}");
}
