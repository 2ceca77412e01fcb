#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flotilla rollout` as a user runs it, against a hub and three members
//! (hollow nodes, one shared etcd; the hub's controllers and the agents
//! run in this process, as in the hub's tests): a RolloutStrategy `1:2`
//! (m1, then m2 and m3) with a long soak takes a Deployment; a new image
//! soaks in wave 1 (`status`), `pause` holds it, `resume` + `promote --all`
//! completes it (`status --watch` exits 0), `history` lists both revisions
//! with the image change, `undo` writes the old image back into the
//! template and it rolls out in waves again, `abort` rolls that back
//! (`status` exits 1), and the controls that make no sense are refused.

// The hub's fleet test environment (a hub, members, agents and the
// hub's controllers in this process), shared rather than copied.
use flotilla_testkit as support;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flotilla_api::rollout::Rollout;
use flotilla_apps_core::failover::FailoverSettings;
use flotilla_localkube::Cluster;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::json;
use support::rollout::{images, roll_out_web_in_waves};
use support::{apply, Fleet};

const NS: &str = "shop";
const WAIT: Duration = Duration::from_secs(120);

/// Waits until each member runs the image `want` names for it.
async fn wait_images(fleet: &Fleet, want: &[(&str, &str)]) {
    let want: BTreeMap<String, String> = want.iter().map(|(m, i)| (m.to_string(), i.to_string())).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let now = images(fleet, NS).await;
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "members never ran {want:?}; they run {now:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn deployment(image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS, "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": image}]}}},
    })
}

/// Runs `flotilla rollout ARGS -n shop --kubeconfig HUB`.
fn rollout(hub: &Cluster, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("rollout")
        .args(args)
        .args(["-n", NS, "--kubeconfig", hub.kubeconfig_path().to_str().unwrap()])
        .env_remove("FLOTILLA_HUB_KUBECONFIG")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `rollout ARGS` and expects it to succeed; its output.
fn ok(hub: &Cluster, args: &[&str]) -> String {
    let out = rollout(hub, args);
    eprintln!("$ flotilla rollout {}\n{}", args.join(" "), text(&out));
    assert!(out.status.success(), "flotilla rollout {args:?} failed:\n{}", text(&out));
    text(&out)
}

/// Runs `rollout ARGS` and expects it to fail; its output.
fn refused(hub: &Cluster, args: &[&str]) -> String {
    let out = rollout(hub, args);
    eprintln!("$ flotilla rollout {}\n{}", args.join(" "), text(&out));
    assert!(!out.status.success(), "flotilla rollout {args:?} succeeded:\n{}", text(&out));
    text(&out)
}

/// The cells of the status table's rows (after the header), by cluster.
fn rows(status: &str) -> BTreeMap<String, Vec<String>> {
    status
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("WAVE"))
        .skip(1)
        .filter_map(|l| {
            let cells: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            let cluster = cells.iter().find(|c| c.starts_with('m') && c[1..].parse::<u32>().is_ok())?.clone();
            Some((cluster, cells))
        })
        .collect()
}

async fn rollout_until(
    api: &Api<Rollout>,
    what: &str,
    check: impl Fn(&flotilla_api::rollout::RolloutStatus) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(s) = api.get_opt("web-deployment").await.unwrap().and_then(|r| r.status) {
            if check(&s) {
                return;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the rollout never {what}; last status: {last:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pause_resume_promote_history_undo_and_abort_from_the_command_line() {
    // Members m1..m3 storing their data in one shared etcd.
    let fleet = Fleet::start_with(&["eu", "eu", "eu"], &[], FailoverSettings::default(), true).await;
    let hub = fleet.hub.client();
    roll_out_web_in_waves(
        &hub,
        NS,
        false,
        json!({"waves": {"ratio": "1:2"}, "soakSeconds": 60, "progressDeadlineSeconds": 120}),
    )
    .await;
    let rollouts: Api<Rollout> = Api::namespaced(hub.clone(), NS);
    let h = &fleet.hub;

    // Before any template: the strategy is named.
    let out = refused(h, &["status", "deployment/web"]);
    assert!(out.contains("no Deployment web in namespace shop"), "{out}");

    // The first revision goes everywhere at once; `status --watch` ends at once.
    apply(&hub, deployment("web:1")).await;
    rollout_until(&rollouts, "completed revision 1", |s| s.phase == "Complete").await;
    wait_images(&fleet, &[("m1", "web:1"), ("m2", "web:1"), ("m3", "web:1")]).await;
    let out = ok(h, &["status", "deployment/web", "--watch", "--timeout", "10"]);
    assert!(out.contains("Phase:     Complete: revision 1 is on every cluster"), "{out}");
    let out = refused(h, &["promote", "web-deployment"]);
    assert!(out.contains("revision 1 is complete on every cluster: nothing to promote"), "{out}");
    let out = refused(h, &["abort", "deploy/web"]);
    assert!(out.contains("nothing to abort") && out.contains("rollout undo web-deployment"), "{out}");
    let out = refused(h, &["history", "web"]);
    assert!(
        out.contains("no Rollout web in namespace shop; Rollouts there: web-deployment (deployment/web)"),
        "{out}"
    );

    // A new image: wave 1 (m1) soaks, m2 and m3 keep web:1.
    apply(&hub, deployment("web:2")).await;
    rollout_until(&rollouts, "soaked wave 1", |s| s.phase == "Soaking" && s.wave == 1).await;
    let out = ok(h, &["status", "deployment/web"]);
    assert!(out.contains("Revision:  2 (") && out.contains("stable: 1 ("), "{out}");
    assert!(
        out.contains("Phase:     Soaking: wave 1 of 2, ") && out.contains("left in the soak (of 1m00s)"),
        "{out}"
    );
    let table = rows(&out);
    assert_eq!(table["m1"], ["1/2", "soaking", "m1", "new", "(2)", "2", "Healthy"], "{out}");
    assert_eq!(table["m2"], ["2/2", "waiting", "m2", "stable", "(1)", "1", "Healthy"], "{out}");
    assert_eq!(table["m3"], ["m3", "stable", "(1)", "1", "Healthy"], "{out}");
    wait_images(&fleet, &[("m1", "web:2"), ("m2", "web:1"), ("m3", "web:1")]).await;

    // Paused: the status says so; resumed and promoted: every wave, complete.
    let out = ok(h, &["pause", "web-deployment"]);
    assert!(out.contains("rollout web-deployment paused: revision 2 stays on wave 1 of 2"), "{out}");
    rollout_until(&rollouts, "paused", |s| s.phase == "Paused" && s.wave == 1).await;
    let out = ok(h, &["status", "web-deployment", "--no-watch"]);
    assert!(out.contains("Phase:     Paused: wave 1 of 2"), "{out}");
    assert!(out.contains("Controls:  paused"), "{out}");
    assert_eq!(rows(&out)["m1"][1], "paused", "{out}");
    assert!(ok(h, &["pause", "web-deployment"]).contains("paused already"));
    let out = ok(h, &["resume", "web-deployment"]);
    assert!(out.contains("rollout web-deployment resumed: revision 2 goes on from wave 1"), "{out}");
    let out = refused(h, &["resume", "web-deployment"]);
    assert!(out.contains("is not paused"), "{out}");
    let out = ok(h, &["promote", "deployment/web", "--all"]);
    assert!(out.contains("promoted: revision 2 goes to every remaining wave (2 to 2) now"), "{out}");
    let out = ok(h, &["status", "deployment/web", "--watch", "--timeout", "120"]);
    assert!(out.contains("Phase:     Complete: revision 2 is on every cluster"), "{out}");
    wait_images(&fleet, &[("m1", "web:2"), ("m2", "web:2"), ("m3", "web:2")]).await;

    // History: both revisions, the image change, which is current.
    let out = ok(h, &["history", "deployment/web"]);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    let row = |n: &str| {
        lines.iter().find(|l| l.first() == Some(&n)).unwrap_or_else(|| panic!("no row {n}:\n{out}"))
    };
    assert_eq!(row("2")[3..], ["current", "/spec/template/spec/containers/0/image:", "web:2"], "{out}");
    assert_eq!(row("1")[3..], ["first", "revision"], "{out}");
    let first_hash = row("1")[1].to_string();

    // Undo: the template gets web:1 back (replicas kept), a new change
    // that rolls out in waves: m1 first.
    let out = ok(h, &["undo", "deployment/web"]);
    assert!(out.contains("Deployment web set back to revision 1"), "{out}");
    assert!(out.contains("/spec/template/spec/containers/0/image: web:1"), "{out}");
    let template = Api::<Deployment>::namespaced(hub.clone(), NS).get("web").await.unwrap();
    assert_eq!(template.spec.replicas, Some(2));
    assert_eq!(template.metadata.labels.as_ref().unwrap()["app"], "web");
    let image = template.spec.template.spec.unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("web:1"));
    rollout_until(&rollouts, "rolled the undone revision to wave 1", |s| {
        s.revision == first_hash && s.wave == 1 && s.phase == "Soaking"
    })
    .await;
    wait_images(&fleet, &[("m1", "web:1"), ("m2", "web:2"), ("m3", "web:2")]).await;
    let out = ok(h, &["history", "deployment/web"]);
    assert!(out.lines().any(|l| l.contains(&first_hash) && l.contains("current, rolling out")), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("2 ") && l.contains("stable")), "{out}");

    // Abort: m1 goes back to web:2; the status exits 1 and says why.
    let out = ok(h, &["abort", "web-deployment"]);
    assert!(
        out.contains("rollout web-deployment aborted") && out.contains("goes back to revision 2"),
        "{out}"
    );
    rollout_until(&rollouts, "rolled back", |s| s.phase == "RolledBack").await;
    wait_images(&fleet, &[("m1", "web:2"), ("m2", "web:2"), ("m3", "web:2")]).await;
    let out = refused(h, &["status", "deployment/web", "--watch"]);
    assert!(out.contains("Phase:     RolledBack:"), "{out}");
    assert!(out.contains("Failure:   revision") && out.contains("aborted by the user"), "{out}");
    let out = refused(h, &["promote", "web-deployment"]);
    assert!(out.contains("was rolled back already (aborted by the user): nothing to promote"), "{out}");
}
