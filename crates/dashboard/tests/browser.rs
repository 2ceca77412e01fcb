//! The dashboard in Debian's Chromium (playwright-core, `e2e/test.js`)
//! against a real fleet: a hub with its controllers and two members whose
//! agents joined. The page must show the real clusters, a change of the
//! fleet must appear without a reload, a user without rights is refused
//! (403 with the apiserver's message), an allowed cordon lands on the
//! cluster, the cluster page refreshes live, the applications page shows
//! the overrides applied per cluster, and screenshots are kept in
//! `$CARGO_TARGET_DIR/test-artefacts/dashboard`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../hub/tests/support/mod.rs"]
mod fleet;
mod support;

use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::work::ResourceBinding;
use flotilla_dashboard::{Dashboard, Mode};
use flotilla_localkube::wait_for;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use support::{install_viewer_role, user_token, Script};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_live_fleet_and_refuses_what_the_user_may_not_do() {
    let fleet = fleet::Fleet::start(&["eu", "us"], &[]).await;
    let hub = fleet.hub.client();

    // An application, so the applications page has placements to show.
    fleet::create_namespace(&hub, "shop").await;
    fleet::apply(&hub, json!({
        "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}],
            "placement": {"clusterAffinity": {"clusterNames": ["m1", "m2"]},
                "replicaScheduling": {"replicaSchedulingType": "Divided", "replicaDivisionPreference": "Weighted"}}}
    }))
    .await;
    // An override for m1 only, so the page has overrides applied to show.
    fleet::apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "OverridePolicy",
            "metadata": {"name": "web-m1-label", "namespace": "shop"},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}],
                "overrideRules": [{"targetCluster": {"clusterNames": ["m1"]},
                    "overriders": {"labelsOverrider": [{"operator": "add", "value": {"placed-on": "m1"}}]}}]}
        }),
    )
    .await;
    fleet::apply(
        &hub,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}}}
        }),
    )
    .await;

    let bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), "shop");
    wait_for("the application placed on both members", Duration::from_secs(120), || async {
        let Ok(Some(b)) = bindings.get_opt("web-deployment").await else { return false };
        b.spec.spec.clusters.len() == 2
    })
    .await;

    install_viewer_role(&hub).await;
    let viewer = user_token(&hub, "viewer", "flotilla-dashboard-viewer").await;
    let admin = user_token(&hub, "operator", "cluster-admin").await;

    // Hub mode: the server's own watches use the hub's admin kubeconfig;
    // every request of the page uses the logged-in user's token.
    let dashboard =
        Dashboard::bind(fleet.hub.admin_config().clone(), Mode::Hub, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let url = format!("http://{}/", dashboard.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dashboard.serve(async {
        let _ = stopped.await;
    }));

    let clusters: Api<ManagedCluster> = Api::all(hub.clone());
    let mut script = Script::start(
        "test.js",
        &[
            ("DASHBOARD_URL", url),
            ("VIEWER_TOKEN", viewer),
            ("ADMIN_TOKEN", admin),
            ("CLUSTERS", "m1,m2".into()),
        ],
    );

    // The page shows the real clusters; now the fleet changes under it.
    script.expect("READY change").await;
    let patch = json!({"metadata": {"labels": {"dashboard-test": "changed"}}});
    clusters.patch("m2", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    script.say("PATCHED").await;
    script.expect("SEEN change").await;

    // The viewer's cordon was refused by the apiserver; the cluster kept no
    // cordon taint. The operator's cordon went through.
    script.expect("DONE forbidden").await;
    script.expect("DONE cordon").await;
    wait_for("m1 cordoned by the operator", Duration::from_secs(30), || async {
        let mc = clusters.get("m1").await.unwrap();
        mc.spec.taints.iter().any(|t| t.key == flotilla_dashboard::actions::CORDON_TAINT)
    })
    .await;
    let m2 = clusters.get("m2").await.unwrap();
    assert!(
        !m2.spec.taints.iter().any(|t| t.key == flotilla_dashboard::actions::CORDON_TAINT),
        "the viewer's refused cordon left no taint: {:?}",
        m2.spec.taints
    );
    script.say("CHECKED").await;
    // The cluster page is open on m1: a taint added now appears there
    // without a reload.
    script.expect("READY cluster").await;
    let mut taints = serde_json::to_value(&clusters.get("m1").await.unwrap().spec.taints).unwrap();
    taints.as_array_mut().unwrap().push(json!({"key": "dashboard-test/live", "effect": "PreferNoSchedule"}));
    let patch = json!({"spec": {"taints": taints}});
    clusters.patch("m1", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    script.say("PATCHED").await;
    script.expect("SEEN cluster").await;
    script.expect("DONE pages").await;
    assert!(script.wait().await, "the browser script failed (see its output above)");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    for shot in ["fleet.png", "forbidden.png", "cluster.png", "apps.png"] {
        let path = support::artefacts_dir().join(shot);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000),
            "screenshot {} was written",
            path.display()
        );
    }
}
