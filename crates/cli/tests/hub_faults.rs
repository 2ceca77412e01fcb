#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Faults of the hub on real processes: `flotilla hub run` (real processes
//! of the binary) outliving its API server's restart, and a leader killed
//! mid-burst with a standby taking over. Members are API servers joined in
//! push mode, so everything propagated is applied by `hub run` itself.
//!
//! Every case ends by counting, once the fleet has settled, the replicas
//! lost (a template's Divided share missing on the members) and duplicated
//! (more on the members than the template asks for, or copies of no
//! template): both must be 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flotilla_localkube::{wait_for, Cluster, ClusterConfig, ManagedProcess, ProcessSpec};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(120);

fn flotilla(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla")).args(args).env("HOME", home).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

struct Env {
    hub: Cluster,
    members: Vec<Cluster>,
    tmp: tempfile::TempDir,
}

impl Env {
    /// A hub with Flotilla installed and two API-server-only members.
    async fn start() -> Env {
        let (hub, m1, m2) = tokio::join!(
            Cluster::start(ClusterConfig::hub("hub")),
            Cluster::start(ClusterConfig::apiserver_only("m1")),
            Cluster::start(ClusterConfig::apiserver_only("m2")),
        );
        let env = Env {
            hub: hub.unwrap(),
            members: vec![m1.unwrap(), m2.unwrap()],
            tmp: tempfile::tempdir().unwrap(),
        };
        let out = flotilla(&["hub", "install", "--kubeconfig", &env.hub_kc()], env.tmp.path());
        assert!(out.status.success(), "{}", text(&out));
        env
    }

    fn hub_kc(&self) -> String {
        self.hub.kubeconfig_path().to_str().unwrap().to_string()
    }

    /// A `flotilla hub run` replica.
    fn hub_run(&self, name: &str) -> ManagedProcess {
        let log = self.tmp.path().join(format!("{name}.log"));
        ManagedProcess::spawn(
            ProcessSpec::new(name, env!("CARGO_BIN_EXE_flotilla").into(), log)
                .args(["hub", "run", "--auto-accept", "--kubeconfig", &self.hub_kc()])
                .env("FLOTILLA_LOG", "info,kube_client=off")
                .env("HOME", self.tmp.path().display().to_string()),
        )
        .unwrap()
    }

    /// Joins both members in push mode (needs a running `hub run`), and
    /// divides every Deployment of `default` between them 1:1.
    async fn join_members_and_divide(&self) {
        for m in &self.members {
            let out = flotilla(
                &[
                    "join",
                    m.name(),
                    "--mode",
                    "push",
                    "--hub-kubeconfig",
                    &self.hub_kc(),
                    "--kubeconfig",
                    m.kubeconfig_path().to_str().unwrap(),
                    "--timeout",
                    "90",
                ],
                self.tmp.path(),
            );
            assert!(out.status.success(), "joining {}: {}", m.name(), text(&out));
        }
        let policy: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "divide", "namespace": "default"},
            "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment"}],
                "placement": {"clusterAffinity": {"clusterNames": ["m1", "m2"]},
                    "replicaScheduling": {"replicaSchedulingType": "Divided",
                        "replicaDivisionPreference": "Weighted",
                        "weightPreference": {"staticWeightList": [
                            {"targetCluster": {"clusterNames": ["m1"]}, "weight": 1},
                            {"targetCluster": {"clusterNames": ["m2"]}, "weight": 1}]}}}}
        }))
        .unwrap();
        policies(self.hub.client()).create(&PostParams::default(), &policy).await.unwrap();
    }

    /// Deployments `<prefix>-0 .. <prefix>-<count-1>` on the hub, with 2 to 5
    /// replicas each; returns the template replica counts by name.
    async fn burst(&self, prefix: &str, count: usize) -> BTreeMap<String, i32> {
        create_templates(self.hub.client(), prefix, count).await
    }

    /// Waits until no replica is lost or duplicated, then checks it stays so.
    async fn settle(&self, templates: &BTreeMap<String, i32>, case: &str) -> Duration {
        let started = Instant::now();
        let mut last = count(&self.members, templates).await;
        while !last.clean() && started.elapsed() < SETTLE {
            tokio::time::sleep(Duration::from_millis(250)).await;
            last = count(&self.members, templates).await;
        }
        let converged = started.elapsed();
        assert!(last.clean(), "{case}: not converged after {SETTLE:?}: {last:?}");
        // Nothing moves after settling (a late second writer would show here).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let last = count(&self.members, templates).await;
        assert!(last.clean(), "{case}: after settling: {last:?}");
        eprintln!(
            "{case}: {} templates converged after {:.1}s of waiting; 0 lost, 0 duplicated replicas",
            templates.len(),
            converged.as_secs_f64()
        );
        converged
    }
}

fn policies(client: Client) -> Api<DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", "PropagationPolicy");
    Api::namespaced_with(
        client,
        "default",
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "propagationpolicies"),
    )
}

fn template(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap()
}

async fn create_templates(hub: Client, prefix: &str, count: usize) -> BTreeMap<String, i32> {
    let api: Api<Deployment> = Api::namespaced(hub, "default");
    let mut made = BTreeMap::new();
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        let replicas = 2 + (i % 4) as i32;
        // The hub may be restarting: try until it takes it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match api.create(&PostParams::default(), &template(&name, replicas)).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "creating {name}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        made.insert(name, replicas);
    }
    made
}

/// Replicas lost and duplicated across the members, and what is off.
#[derive(Debug, Default)]
struct Tally {
    lost: i32,
    duplicated: i32,
    /// Templates not on both members (Divided 1:1 with at least 2 replicas
    /// puts a share on each).
    misplaced: usize,
    off: Vec<String>,
}

impl Tally {
    fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.misplaced == 0
    }
}

async fn count(members: &[Cluster], templates: &BTreeMap<String, i32>) -> Tally {
    let mut on_members: BTreeMap<String, (i32, usize)> = BTreeMap::new();
    let mut tally = Tally::default();
    for m in members {
        match Api::<Deployment>::namespaced(m.client(), "default").list(&ListParams::default()).await {
            Ok(list) => {
                for d in list.items {
                    let entry = on_members.entry(d.metadata.name.clone().unwrap_or_default()).or_default();
                    entry.0 += d.spec.replicas.unwrap_or(1);
                    entry.1 += 1;
                }
            }
            Err(e) => {
                tally.misplaced += 1;
                tally.off.push(format!("{}: {e}", m.name()));
            }
        }
    }
    for (name, want) in templates {
        let (have, copies) = on_members.get(name).copied().unwrap_or_default();
        tally.lost += (want - have).max(0);
        tally.duplicated += (have - want).max(0);
        if copies != members.len() {
            tally.misplaced += 1;
        }
        if have != *want || copies != members.len() {
            tally.off.push(format!("{name}: {have}/{want} replicas in {copies} copies"));
        }
    }
    for (name, (have, _)) in &on_members {
        if !templates.contains_key(name) {
            tally.duplicated += have;
            tally.off.push(format!("{name}: {have} replicas of no template"));
        }
    }
    tally
}

/// The pid in the lease holder's identity (`<hostname>-<pid>`).
async fn leader_pid(hub: &Client) -> Option<u32> {
    let lease =
        Api::<Lease>::namespaced(hub.clone(), "flotilla-system").get_opt("flotilla-hub").await.ok()??;
    let holder = lease.spec?.holder_identity?;
    holder.rsplit_once('-')?.1.parse().ok()
}

fn log_of(p: &ManagedProcess) -> String {
    std::fs::read_to_string(p.log_path()).unwrap_or_default()
}

#[tokio::test]
async fn hub_run_outlives_a_hub_api_restart_and_keeps_reconciling() {
    let mut env = Env::start().await;
    let mut hub_run = env.hub_run("hub-run");
    env.join_members_and_divide().await;
    let before = env.burst("burst-a", 10).await;
    env.settle(&before, "before the fault").await;
    let pid = hub_run.pid().unwrap();
    let hub = env.hub.client();
    wait_for("hub run to lead", Duration::from_secs(30), || async { leader_pid(&hub).await == Some(pid) })
        .await;

    // The API is away for longer than a leader may go without renewing, so
    // `hub run` must step down (not exit), then lead again once it is back.
    env.hub.stop("kube-apiserver").unwrap();
    tokio::time::sleep(Duration::from_secs(13)).await;
    env.hub.restart("kube-apiserver").await.unwrap();
    let restarted = Instant::now();
    let after = env.burst("burst-b", 10).await;
    let mut all = before.clone();
    all.extend(after);
    env.settle(&all, "hub API restart").await;
    eprintln!("hub API restart: converged {:.1}s after the API was back", restarted.elapsed().as_secs_f64());

    assert!(hub_run.is_running(), "hub run exited:\n{}", log_of(&hub_run));
    let log = log_of(&hub_run);
    assert!(log.contains("lost the leader lease"), "hub run never stepped down:\n{log}");
    let hub = env.hub.client();
    wait_for("hub run to lead again", Duration::from_secs(30), || async {
        leader_pid(&hub).await == Some(pid)
    })
    .await;
}

#[tokio::test]
async fn a_standby_takes_over_when_the_leader_is_killed_mid_burst() {
    let env = Env::start().await;
    let mut first = env.hub_run("hub-run-1");
    let hub = env.hub.client();
    let first_pid = first.pid().unwrap();
    wait_for("the first replica to lead", Duration::from_secs(30), || async {
        leader_pid(&hub).await == Some(first_pid)
    })
    .await;
    let second = env.hub_run("hub-run-2");
    let second_pid = second.pid().unwrap();
    env.join_members_and_divide().await;
    let warm = env.burst("burst-warm", 2).await;
    env.settle(&warm, "before the fault").await;

    // A burst of 30; the leader dies after the first 10.
    let mut templates = warm;
    templates.extend(env.burst("burst-a", 10).await);
    first.stop(Duration::ZERO);
    let killed = Instant::now();
    templates.extend(env.burst("burst-b", 20).await);
    env.settle(&templates, "leader failover under a burst").await;
    eprintln!("leader failover: converged {:.1}s after the kill", killed.elapsed().as_secs_f64());
    assert_eq!(leader_pid(&hub).await, Some(second_pid));
}
