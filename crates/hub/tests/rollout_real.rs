#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A bad release really fails and is rolled back: three members, the first
//! (wave 1) on a real node (containerd, a real kubelet), the others on
//! hollow nodes. A new revision whose container exits crash-loops on the
//! real node; the rollout fails wave 1, puts the member back on the stable
//! revision (its pod runs again), says which cluster and why on the
//! Rollout and in an Event, and waves 2 and 3 never see the bad revision.
//! It is not tried again; the next change rolls out normally.

use flotilla_testkit as support;

use std::time::Duration;

use flotilla_api::rollout::Rollout;
use flotilla_localkube::real_node::{RealNodes, BUSYBOX_IMAGE};
use flotilla_localkube::wait_for;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::json;
use support::rollout::{roll_out_web_in_waves, rollout_until, ROLLOUT};
use support::{apply, Fleet};

const NS: &str = "shop";
const WAIT: Duration = Duration::from_secs(180);

fn deployment(command: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
                    "image": BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", command]}]}}},
    })
}

async fn command_in(member: &kube::Client) -> Option<(String, i64)> {
    let d = Api::<Deployment>::namespaced(member.clone(), NS).get_opt("web").await.ok()??;
    let generation = d.metadata.generation?;
    let command = d.spec.template.spec?.containers.into_iter().next()?.command?.join(" ");
    Some((command, generation))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_release_stops_in_wave_one_on_a_real_node_and_rolls_back() {
    let mut nodes = RealNodes::reserve().unwrap();
    let fleet = Fleet::start_with_real_m1(&mut nodes, &["eu", "eu", "eu"]).await;
    let hub = fleet.hub.client();
    roll_out_web_in_waves(&hub, NS, false, json!({"waves": {"ratio": "1:2:7"}, "soakSeconds": 2, "progressDeadlineSeconds": 120, "maxRestarts": 2})).await;
    let rollouts: Api<Rollout> = Api::namespaced(hub.clone(), NS);
    const GOOD: &str = "exec sleep 3600";
    apply(&hub, deployment(GOOD)).await;
    rollout_until(&rollouts, WAIT, "completed revision 1", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "Complete" && s.revision_number == 1)
    })
    .await;
    let real = fleet.member("m1").client();
    wait_for("the release running on the real node", WAIT, || async {
        let d = Api::<Deployment>::namespaced(real.clone(), NS).get_opt("web").await.ok().flatten();
        d.and_then(|d| d.status?.available_replicas) == Some(1)
    })
    .await;
    let others = [fleet.member("m2").client(), fleet.member("m3").client()];
    let before = vec![command_in(&others[0]).await, command_in(&others[1]).await];
    assert!(before.iter().all(|c| c.as_ref().is_some_and(|(cmd, _)| cmd.ends_with(GOOD))), "{before:?}");

    // The bad release: its container exits at once.
    apply(&hub, deployment("echo this build is broken; exit 1")).await;
    let back = rollout_until(&rollouts, WAIT, "rolled back", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "RolledBack" && s.revision_number == 2)
    })
    .await;
    let status = back.status.unwrap();
    let failure = status.failure.clone().unwrap();
    assert_eq!(failure.cluster.as_deref(), Some("m1"), "{failure:?}");
    assert!(
        ["CrashLoopBackOff", "restarts", "ContainerFailed"].iter().any(|w| failure.reason.contains(w)),
        "the gate says what failed: {failure:?}"
    );
    assert!(status.message.starts_with("revision 2 rolled back to revision 1: m1: "), "{}", status.message);
    let m1 = status.clusters.iter().find(|c| c.name == "m1").unwrap();
    assert_eq!(m1.given, "stable");
    let rolled_back = support::event_with_reason(&hub, NS, "RolledBack").await;
    assert_eq!(rolled_back.type_.as_deref(), Some("Warning"));
    assert!(rolled_back.message.as_deref().unwrap_or_default().contains("(m1 failed)"), "{rolled_back:?}");

    // m1 runs the good release again; m2 and m3 never saw the bad one.
    wait_for("m1 back on the good release, available", WAIT, || async {
        let d = Api::<Deployment>::namespaced(real.clone(), NS).get_opt("web").await.ok().flatten();
        let command = command_in(&real).await.map(|(c, _)| c);
        command.is_some_and(|c| c.ends_with(GOOD))
            && d.and_then(|d| d.status).is_some_and(|s| {
                s.available_replicas == Some(1) && s.updated_replicas == Some(1) && s.replicas == Some(1)
            })
    })
    .await;
    let after = vec![command_in(&others[0]).await, command_in(&others[1]).await];
    assert_eq!(after, before, "waves 2 and 3 are untouched (same spec, same generation)");

    // Not tried again until the template changes; the next change rolls.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let still = rollouts.get(ROLLOUT).await.unwrap().status.unwrap();
    assert_eq!((still.phase.as_str(), still.revision_number), ("RolledBack", 2));
    assert!(command_in(&real).await.unwrap().0.ends_with(GOOD));
    const FIXED: &str = "exec sleep 7200";
    apply(&hub, deployment(FIXED)).await;
    rollout_until(&rollouts, WAIT, "completed the fixed release", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "Complete" && s.revision_number == 3)
    })
    .await;
    for m in ["m1", "m2", "m3"] {
        let client = fleet.member(m).client();
        wait_for(&format!("{m} on the fixed release"), WAIT, || async {
            command_in(&client).await.is_some_and(|(c, _)| c.ends_with(FIXED))
        })
        .await;
    }
    drop(fleet);
    drop(nodes);
}
