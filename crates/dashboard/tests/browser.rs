//! The dashboard in Debian's Chromium (playwright-core, `e2e/test.js`)
//! against a real fleet: a hub with its controllers and two members whose
//! agents joined. The page must show the real clusters, a change of the
//! fleet must appear without a reload, a user without rights is refused
//! (403 with the apiserver's message), an allowed cordon lands on the
//! cluster, the cluster page refreshes live, the applications page shows
//! the overrides applied per cluster, and screenshots are kept in
//! `$CARGO_TARGET_DIR/test-artefacts/dashboard`. The dashboard serves
//! HTTPS: token users sign in as before, a user whose client certificate
//! the hub's CA signed is signed in by it (acting through impersonation,
//! with the dashboard's own identity allowed only to read and to
//! impersonate) and refused what their rights forbid; a user with rights
//! on one cluster and one namespace sees only those objects; the cluster
//! page shows the condition history the hub recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flotilla_testkit as fleet;
use flotilla_testkit::browser as support;

use std::time::Duration;

use flotilla_api::cluster::ManagedCluster;
use flotilla_api::work::ResourceBinding;
use flotilla_core::pki::{CertificateAuthority, LeafSpec};
use flotilla_dashboard::{Dashboard, Mode, TlsFiles};
use flotilla_localkube::wait_for;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use support::{install_scoped_user_rbac, install_server_role, install_viewer_role, user_token, Script};

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

    // A second application, in a namespace the scoped user may not read.
    fleet::create_namespace(&hub, "ops").await;
    fleet::apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "api", "namespace": "ops"},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}],
                "placement": {"clusterAffinity": {"clusterNames": ["m2"]}}}
        }),
    )
    .await;
    fleet::apply(
        &hub,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "ops"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "api", "image": "registry.example/api:1"}]}}}
        }),
    )
    .await;
    let ops_bindings: Api<ResourceBinding> = Api::namespaced(hub.clone(), "ops");
    wait_for("the ops application bound", Duration::from_secs(120), || async {
        ops_bindings.get_opt("api-deployment").await.is_ok_and(|b| b.is_some())
    })
    .await;

    install_viewer_role(&hub).await;
    let viewer = user_token(&hub, "viewer", "flotilla-dashboard-viewer").await;
    let admin = user_token(&hub, "operator", "cluster-admin").await;
    // May get m1 only, and list bindings in `shop` only.
    install_scoped_user_rbac(&hub, "shopper", "m1", "shop").await;
    let shopper = user_token(&hub, "shopper", "dashboard-test-one-cluster").await;
    // The dashboard's own identity: reads for the shared watches, and
    // impersonation for certificate users; nothing else.
    install_server_role(&hub).await;
    let server_token = user_token(&hub, "dashboard-server", "flotilla-dashboard-server").await;
    let mut server_config = fleet.hub.admin_config().clone();
    server_config.auth_info = serde_json::from_value(json!({ "token": server_token })).unwrap();

    // A user with a client certificate from the hub's own client CA, whose
    // rights come from their group (the certificate's organisation).
    fleet::apply(&hub, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "dashboard-test-viewers-group"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flotilla-dashboard-viewer"},
        "subjects": [{"kind": "Group", "name": "flotilla-dashboard-viewers", "apiGroup": "rbac.authorization.k8s.io"}],
    }))
    .await;
    let alice = fleet.hub.ca().issue(&LeafSpec::client("alice", &["flotilla-dashboard-viewers"])).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (alice_cert, alice_key) = (certs.path().join("alice.crt"), certs.path().join("alice.key"));
    std::fs::write(&alice_cert, &alice.cert_pem).unwrap();
    std::fs::write(&alice_key, &alice.key_pem).unwrap();
    let serving_ca = CertificateAuthority::generate("dashboard-test-serving-ca").unwrap();
    let serving = serving_ca.issue(&LeafSpec::server("dashboard", &["127.0.0.1".into()])).unwrap();
    let tls = TlsFiles {
        cert_pem: serving.cert_pem,
        key_pem: serving.key_pem,
        client_ca_pem: Some(fleet.hub.ca().pem.cert_pem.clone()),
    };

    // Hub mode over TLS: the server's own watches use its read-only
    // identity; every request of the page acts as the signed-in user.
    let dashboard = Dashboard::bind_with(server_config, Mode::Hub, "127.0.0.1:0".parse().unwrap(), Some(tls))
        .await
        .unwrap();
    let url = format!("https://{}/", dashboard.local_addr().unwrap());
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
            ("SHOPPER_TOKEN", shopper),
            ("CLIENT_CERT", alice_cert.display().to_string()),
            ("CLIENT_KEY", alice_key.display().to_string()),
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
    script.expect("DONE scoped").await;
    script.expect("DONE certificate").await;

    // A real transition: m2 un-accepted (Joined False) and accepted again.
    script.expect("READY history").await;
    for accepted in [false, true] {
        let patch = json!({"spec": {"hubAcceptsClient": accepted}});
        clusters.patch("m2", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        let want = if accepted { "True" } else { "False" };
        wait_for(&format!("m2 Joined {want}"), Duration::from_secs(60), || async {
            let mc = clusters.get("m2").await.unwrap();
            mc.condition("Joined").is_some_and(|c| c.status == want)
        })
        .await;
    }
    let history = clusters.get("m2").await.unwrap().status.unwrap().condition_history;
    let joined: Vec<(&str, &str)> = history
        .iter()
        .filter(|t| t.type_ == "Joined")
        .map(|t| (t.status.as_str(), t.reason.as_str()))
        .collect();
    assert!(
        joined.ends_with(&[("True", "Joined"), ("False", "NotAccepted"), ("True", "Joined")]),
        "m2's history holds both transitions: {joined:?}"
    );
    assert!(
        ["Available", "MemberHealthy"].iter().all(|t| history.iter().any(|h| h.type_ == *t)),
        "every condition type has history: {history:?}"
    );
    script.say("PATCHED").await;
    script.expect("DONE history").await;
    assert!(script.wait().await, "the browser script failed (see its output above)");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    for shot in [
        "fleet.png",
        "forbidden.png",
        "cluster.png",
        "apps.png",
        "scoped.png",
        "certificate.png",
        "history.png",
    ] {
        let path = support::artefacts_dir().join(shot);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000),
            "screenshot {} was written",
            path.display()
        );
    }
}
