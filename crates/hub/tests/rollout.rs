#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Progressive delivery over ten members (hollow nodes, one shared etcd):
//! a RolloutStrategy `1:2:7` takes a Deployment; its first revision goes
//! everywhere at once, a new image goes wave by wave (wave 1 soaks while
//! waves 2 and 3 keep the old image), and the Rollout, its Events and its
//! kept revisions say so. Then the controls: paused holds the next wave,
//! promote finishes every wave, abort puts wave 1 back on the stable
//! revision and the revision is not tried again. Last, a member lost
//! mid-rollout is not gated (the others carry the waves through) and gets
//! the revision its wave reached once it is back.

use flotilla_testkit as support;

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_api::rollout::{control, Rollout, CHANGES_ANNOTATION, ROLLOUT_LABEL};
use flotilla_apps_core::failover::FailoverSettings;
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::json;
use support::rollout::{images, roll_out_web_in_waves, rollout_until, web_deployment, ROLLOUT};
use support::{apply, Fleet};

const NS: &str = "shop";
const WAIT: Duration = Duration::from_secs(120);

fn on(images: &BTreeMap<String, String>, image: &str) -> Vec<String> {
    images.iter().filter(|(_, i)| *i == image).map(|(m, _)| m.clone()).collect()
}

fn phase_is(r: &Rollout, phase: &str, wave: i32) -> bool {
    r.status.as_ref().is_some_and(|s| s.phase == phase && s.wave == wave)
}

async fn annotate(rollouts: &Api<Rollout>, key: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    rollouts.patch(ROLLOUT, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_image_rolls_out_one_two_seven_with_soaks_and_obeys_pause_promote_and_abort() {
    let regions = ["eu"; 10];
    let mut fleet = Fleet::start_with(&regions, &[], FailoverSettings::default(), true).await;
    let hub = fleet.hub.client();
    roll_out_web_in_waves(
        &hub,
        NS,
        false,
        json!({"waves": {"ratio": "1:2:7"}, "soakSeconds": 4, "progressDeadlineSeconds": 120}),
    )
    .await;
    let rollouts: Api<Rollout> = Api::namespaced(hub.clone(), NS);

    // The first revision has nothing to protect: everywhere at once.
    apply(&hub, web_deployment(NS, "web:1")).await;
    rollout_until(&rollouts, WAIT, "completed revision 1", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "Complete" && s.revision_number == 1)
    })
    .await;
    flotilla_localkube::wait_for("every member on web:1", WAIT, || async {
        on(&images(&fleet, NS).await, "web:1").len() == 10
    })
    .await;

    // A new image: wave 1 is m1 alone (names sort m1, m10, m2, ...), it
    // soaks while everyone else keeps web:1.
    apply(&hub, web_deployment(NS, "web:2")).await;
    let soaking = rollout_until(&rollouts, WAIT, "soaked wave 1", |r| phase_is(r, "Soaking", 1)).await;
    let status = soaking.status.unwrap();
    assert_eq!(status.revision_number, 2);
    assert_eq!(status.stable_revision_number, Some(1));
    let waves: Vec<Vec<String>> = status.waves.iter().map(|w| w.clusters.clone()).collect();
    assert_eq!(waves[0], ["m1"]);
    assert_eq!(waves[1], ["m10", "m2"]);
    assert_eq!(waves[2].len(), 7);
    let now = images(&fleet, NS).await;
    assert_eq!(on(&now, "web:2"), ["m1"], "only wave 1 has the new image while it soaks: {now:?}");
    let m3 = status.clusters.iter().find(|c| c.name == "m3").unwrap();
    assert_eq!((m3.wave, m3.given.as_str()), (3, "stable"));

    // Wave 2, then wave 3, each after its soak; then every member.
    rollout_until(&rollouts, WAIT, "reached wave 2", |r| phase_is(r, "Soaking", 2)).await;
    let now = images(&fleet, NS).await;
    assert_eq!(on(&now, "web:2"), ["m1", "m10", "m2"], "{now:?}");
    let done = rollout_until(&rollouts, WAIT, "completed revision 2", |r| phase_is(r, "Complete", 3)).await;
    assert_eq!(done.status.unwrap().stable_revision_number, Some(2));
    flotilla_localkube::wait_for("every member on web:2", WAIT, || async {
        on(&images(&fleet, NS).await, "web:2").len() == 10
    })
    .await;
    for wanted in ["RolloutStarted", "WaveStarted", "RolloutComplete"] {
        support::event_with_reason(&hub, NS, wanted).await;
    }
    let kept = Api::<ControllerRevision>::namespaced(hub.clone(), NS)
        .list(&ListParams::default().labels(&format!("{ROLLOUT_LABEL}={ROLLOUT}")))
        .await
        .unwrap();
    let second = kept.items.iter().find(|r| r.revision == Some(2)).expect("revision 2 kept");
    let changed = second.metadata.annotations.as_ref().unwrap()[CHANGES_ANNOTATION].clone();
    assert_eq!(changed, "/spec/template/spec/containers/0/image: web:2");

    // Paused: wave 1 rolls and soaks, but wave 2 does not start.
    annotate(&rollouts, control::PAUSED, Some("true")).await;
    apply(&hub, web_deployment(NS, "web:3")).await;
    rollout_until(&rollouts, WAIT, "paused in wave 1", |r| phase_is(r, "Paused", 1)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let held = rollouts.get(ROLLOUT).await.unwrap();
    assert!(phase_is(&held, "Paused", 1), "{:?}", held.status);
    assert_eq!(on(&images(&fleet, NS).await, "web:3"), ["m1"]);
    // Resumed and promoted: every remaining wave at once.
    let revision = held.status.unwrap().revision;
    annotate(&rollouts, control::PAUSED, None).await;
    annotate(&rollouts, control::PROMOTE, Some(&format!("{revision}/all"))).await;
    rollout_until(&rollouts, WAIT, "completed revision 3", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "Complete" && s.revision_number == 3)
    })
    .await;
    flotilla_localkube::wait_for("every member on web:3", WAIT, || async {
        on(&images(&fleet, NS).await, "web:3").len() == 10
    })
    .await;

    // Abort: wave 1 goes back to web:3 and web:4 is not tried again.
    apply(&hub, web_deployment(NS, "web:4")).await;
    let rolling = rollout_until(&rollouts, WAIT, "rolled web:4 to wave 1", |r| {
        r.status.as_ref().is_some_and(|s| s.revision_number == 4 && s.wave == 1)
    })
    .await;
    flotilla_localkube::wait_for("m1 on web:4", WAIT, || async {
        on(&images(&fleet, NS).await, "web:4") == ["m1"]
    })
    .await;
    annotate(&rollouts, control::ABORT, Some(&rolling.status.unwrap().revision)).await;
    let back = rollout_until(&rollouts, WAIT, "rolled back", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "RolledBack")
    })
    .await;
    let status = back.status.unwrap();
    assert_eq!(status.failure.as_ref().map(|f| f.reason.as_str()), Some("aborted by the user"));
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "RolledBack"));
    flotilla_localkube::wait_for("every member back on web:3", WAIT, || async {
        on(&images(&fleet, NS).await, "web:3").len() == 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(on(&images(&fleet, NS).await, "web:4").is_empty(), "the aborted revision is not tried again");

    // m2 (wave 2) is lost: its agent stops. The next change goes through
    // every wave without it; m2 says it was not gated.
    fleet.agents.remove("m2").unwrap().abort();
    let clusters: Api<flotilla_api::cluster::ManagedCluster> = Api::all(hub.clone());
    flotilla_localkube::wait_for("m2 not Available", WAIT, || async {
        clusters.get("m2").await.unwrap().condition("Available").is_some_and(|c| c.status != "True")
    })
    .await;
    apply(&hub, web_deployment(NS, "web:5")).await;
    let done = rollout_until(&rollouts, WAIT, "completed revision 5 without m2", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "Complete" && s.revision_number == 5)
    })
    .await;
    let m2 = done.status.unwrap().clusters.into_iter().find(|c| c.name == "m2").unwrap();
    assert_eq!((m2.gate.as_str(), m2.given.as_str()), ("Unreachable", "new"), "{m2:?}");
    assert_eq!(on(&images(&fleet, NS).await, "web:5").len(), 9);
    // Back: it applies the revision its wave reached.
    fleet.start_agent(1, None);
    flotilla_localkube::wait_for("m2 on web:5 once back", WAIT, || async {
        on(&images(&fleet, NS).await, "web:5").len() == 10
    })
    .await;
}
