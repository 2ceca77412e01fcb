#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A propagated dependency follows its template's rollout: a Deployment
//! whose policy propagates its ConfigMap, under a strategy of three waves.
//! A change of the ConfigMap alone is a new revision of the Deployment:
//! wave 1 gets the new data while waves 2 and 3 keep the old, then every
//! member; an aborted change puts wave 1's ConfigMap back.

use flotilla_testkit as support;

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_api::rollout::{control, Rollout, CHANGES_ANNOTATION, ROLLOUT_LABEL};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use support::rollout::{roll_out_web_in_waves, rollout_until, ROLLOUT};
use support::{apply, Fleet};

const NS: &str = "shop";
const WAIT: Duration = Duration::from_secs(120);

fn config(mode: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": NS},
           "data": {"mode": mode}})
}

/// Each member's ConfigMap `mode` (`-` when it has none yet).
async fn modes(fleet: &Fleet) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for m in &fleet.members {
        let cm = Api::<ConfigMap>::namespaced(m.client(), NS).get_opt("cfg").await.ok().flatten();
        let mode = cm.and_then(|c| c.data?.get("mode").cloned()).unwrap_or_else(|| "-".into());
        out.insert(m.name().to_string(), mode);
    }
    out
}

fn on(modes: &BTreeMap<String, String>, mode: &str) -> Vec<String> {
    modes.iter().filter(|(_, m)| *m == mode).map(|(c, _)| c.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_change_rolls_out_in_its_deployments_waves_and_rolls_back_with_it() {
    let fleet = Fleet::start(&["eu", "eu", "eu"], &[]).await;
    let hub = fleet.hub.client();
    roll_out_web_in_waves(
        &hub,
        NS,
        true,
        json!({"waves": {"ratio": "1:1:1"}, "soakSeconds": 4, "progressDeadlineSeconds": 120}),
    )
    .await;
    apply(&hub, config("a")).await;
    apply(
        &hub,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "main", "image": "web:1",
                        "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}}},
        }),
    )
    .await;
    let rollouts: Api<Rollout> = Api::namespaced(hub.clone(), NS);
    rollout_until(&rollouts, WAIT, "completed revision 1", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "Complete" && s.revision_number == 1)
    })
    .await;
    flotilla_localkube::wait_for("every member with mode a", WAIT, || async {
        on(&modes(&fleet).await, "a").len() == 3
    })
    .await;

    // The ConfigMap alone changes: a new revision, wave by wave.
    apply(&hub, config("b")).await;
    rollout_until(&rollouts, WAIT, "soaked wave 1 of revision 2", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "Soaking" && s.wave == 1 && s.revision_number == 2)
    })
    .await;
    let now = modes(&fleet).await;
    assert_eq!(on(&now, "b"), ["m1"], "only wave 1 has the new data while it soaks: {now:?}");
    rollout_until(&rollouts, WAIT, "completed revision 2", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "Complete" && s.revision_number == 2)
    })
    .await;
    flotilla_localkube::wait_for("every member with mode b", WAIT, || async {
        on(&modes(&fleet).await, "b").len() == 3
    })
    .await;
    let kept = Api::<ControllerRevision>::namespaced(hub.clone(), NS)
        .list(&ListParams::default().labels(&format!("{ROLLOUT_LABEL}={ROLLOUT}")))
        .await
        .unwrap();
    let second = kept.items.iter().find(|r| r.revision == Some(2)).expect("revision 2 kept");
    assert_eq!(second.metadata.annotations.as_ref().unwrap()[CHANGES_ANNOTATION], "ConfigMap cfg changed");

    // Aborted in wave 1: m1's ConfigMap goes back to b.
    apply(&hub, config("c")).await;
    let rolling = rollout_until(&rollouts, WAIT, "rolled revision 3 to wave 1", |r| {
        r.status.as_ref().is_some_and(|s| s.revision_number == 3 && s.wave == 1)
    })
    .await;
    flotilla_localkube::wait_for("m1 with mode c", WAIT, || async {
        on(&modes(&fleet).await, "c") == ["m1"]
    })
    .await;
    let patch = json!({"metadata": {"annotations": {control::ABORT: rolling.status.unwrap().revision}}});
    rollouts.patch(ROLLOUT, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    rollout_until(&rollouts, WAIT, "rolled back", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "RolledBack")
    })
    .await;
    flotilla_localkube::wait_for("every member back on mode b", WAIT, || async {
        on(&modes(&fleet).await, "b").len() == 3
    })
    .await;
}
