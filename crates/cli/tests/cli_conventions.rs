#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The CLI's kubectl conventions, run as a user runs them against a real
//! hub: which kubeconfig reaches the hub (`--kubeconfig`,
//! `$FLOTILLA_HUB_KUBECONFIG`, `$KUBECONFIG` merged, `--context`), the
//! `get` commands' `-o wide|json|yaml` and `-l`, and `flotilla completion`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flotilla_api::cluster::{ManagedCluster, ManagedClusterSpec};
use flotilla_api::kok::{EtcdCluster, HostedCluster, Runtime};
use flotilla_api::kok_request::HostedClusterRequest;
use flotilla_api::rollout::{Rollout, RolloutSpec, TemplateReference};
use flotilla_localkube::{Cluster, ClusterConfig};
use kube::api::PostParams;
use kube::config::{Kubeconfig, NamedCluster, NamedContext};
use kube::Api;
use serde_json::Value;

/// `flotilla ARGS` with HOME at `home` and exactly the variables given
/// (the test's own KUBECONFIG / FLOTILLA_HUB_KUBECONFIG never leak in).
fn flotilla(args: &[&str], home: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    command.args(args).env("HOME", home).env_remove("KUBECONFIG").env_remove("FLOTILLA_HUB_KUBECONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(args: &[&str], home: &Path, env: &[(&str, &str)]) -> String {
    let out = flotilla(args, home, env);
    assert!(out.status.success(), "flotilla {args:?} with {env:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str], home: &Path, env: &[(&str, &str)]) -> String {
    let out = flotilla(args, home, env);
    assert!(!out.status.success(), "flotilla {args:?} with {env:?} succeeded:\n{}", text(&out));
    text(&out)
}

/// The `metadata.name`s of a `kind: List` document.
fn names(list: &Value) -> Vec<String> {
    assert_eq!(list["kind"], "List", "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

fn yaml(s: &str) -> Value {
    serde_saphyr::from_str(s).unwrap_or_else(|e| panic!("not YAML ({e}):\n{s}"))
}

/// Kubeconfig files around the hub's own: `unreachable` has only a context
/// `broken` (current) whose server refuses connections; `reachable` has only
/// a context `hub` (current) to the real hub; `both` has the two, `broken`
/// current.
struct Kubeconfigs {
    unreachable: PathBuf,
    reachable: PathBuf,
    both: PathBuf,
}

fn write_kubeconfigs(hub: &Path, dir: &Path) -> Kubeconfigs {
    let original = Kubeconfig::read_from(hub).unwrap();
    let context = original.contexts[0].context.clone().unwrap();
    let cluster = original.clusters.iter().find(|c| c.name == context.cluster).unwrap().clone();
    let user = original.auth_infos.iter().find(|u| Some(&u.name) == context.user.as_ref()).unwrap().clone();
    let mut nowhere = cluster.cluster.clone().unwrap();
    // Port 1 on loopback: nothing listens, connections are refused at once.
    nowhere.server = Some("https://127.0.0.1:1".into());
    let reachable = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "hub-cluster".into(),
            cluster: cluster.cluster.clone(),
            ..cluster.clone()
        }],
        auth_infos: vec![user.clone()],
        contexts: vec![NamedContext {
            name: "hub".into(),
            context: Some(kube::config::Context { cluster: "hub-cluster".into(), ..context.clone() }),
            ..original.contexts[0].clone()
        }],
        current_context: Some("hub".into()),
        ..Default::default()
    };
    let unreachable = Kubeconfig {
        clusters: vec![NamedCluster { name: "nowhere".into(), cluster: Some(nowhere), ..cluster.clone() }],
        auth_infos: vec![user],
        contexts: vec![NamedContext {
            name: "broken".into(),
            context: Some(kube::config::Context { cluster: "nowhere".into(), ..context }),
            ..original.contexts[0].clone()
        }],
        current_context: Some("broken".into()),
        ..Default::default()
    };
    let both = unreachable.clone().merge(reachable.clone()).unwrap();
    let files = Kubeconfigs {
        unreachable: dir.join("unreachable.kubeconfig"),
        reachable: dir.join("reachable.kubeconfig"),
        both: dir.join("both.kubeconfig"),
    };
    for (path, config) in
        [(&files.unreachable, &unreachable), (&files.reachable, &reachable), (&files.both, &both)]
    {
        std::fs::write(path, serde_saphyr::to_string(config).unwrap()).unwrap();
    }
    files
}

#[tokio::test]
async fn kubeconfig_sources_contexts_outputs_and_selectors_reach_a_real_hub() {
    let hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let hub_kc = hub.kubeconfig_path().to_str().unwrap().to_string();
    ok(&["hub", "install", "--kubeconfig", &hub_kc], home, &[]);
    let client = hub.client();
    let clusters: Api<ManagedCluster> = Api::all(client.clone());
    for (name, env) in [("m1", "prod"), ("m2", "dev"), ("m3", "prod")] {
        let mut mc = ManagedCluster::new(name, ManagedClusterSpec::default());
        mc.metadata.labels = Some([("env".to_string(), env.to_string())].into());
        clusters.create(&PostParams::default(), &mc).await.unwrap();
    }

    // Where the hub's kubeconfig comes from.
    let files = write_kubeconfigs(hub.kubeconfig_path(), home);
    let (unreachable, reachable, both) = (
        files.unreachable.to_str().unwrap(),
        files.reachable.to_str().unwrap(),
        files.both.to_str().unwrap(),
    );
    let get = ["get", "clusters", "-o", "json"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        get.iter().copied().chain(extra.iter().copied()).collect()
    };
    // --kubeconfig, its current context (unreachable) and --context.
    let refused = fails(&[&get[..], &["--kubeconfig", both]].concat(), home, &[]);
    assert!(refused.contains("127.0.0.1:1") || refused.to_lowercase().contains("connect"), "{refused}");
    let listed = ok(&[&get[..], &["--kubeconfig", both, "--context", "hub"]].concat(), home, &[]);
    assert_eq!(names(&json(&listed)), ["m1", "m2", "m3"]);
    // A command that reads the kubeconfig itself follows --context too:
    // the bootstrap kubeconfig names the hub's server, not the current one.
    let bootstrap = home.join("bootstrap.kubeconfig");
    let token =
        ["token", "create", "--kubeconfig", both, "--context", "hub", "-o", bootstrap.to_str().unwrap()];
    ok(&token, home, &[]);
    let hub_server =
        Kubeconfig::read_from(hub.kubeconfig_path()).unwrap().clusters[0].cluster.clone().unwrap().server;
    let written = Kubeconfig::read_from(&bootstrap).unwrap();
    assert_eq!(written.clusters[0].cluster.clone().unwrap().server, hub_server);
    let unknown = fails(&[&get[..], &["--kubeconfig", both, "--context", "nope"]].concat(), home, &[]);
    assert!(unknown.contains("nope"), "an unknown context is named: {unknown}");
    // $KUBECONFIG: a list, missing files skipped, merged (the first file's
    // current-context wins, the second file's context is there for --context).
    let list = format!("{}:{unreachable}:{reachable}", home.join("missing.kubeconfig").display());
    fails(&get, home, &[("KUBECONFIG", &list)]);
    let listed = ok(&with(&["--context", "hub"]), home, &[("KUBECONFIG", &list)]);
    assert_eq!(names(&json(&listed)), ["m1", "m2", "m3"]);
    let only_missing = fails(&get, home, &[("KUBECONFIG", "/nonexistent/a:/nonexistent/b")]);
    assert!(
        only_missing.contains("$KUBECONFIG") && only_missing.contains("/nonexistent/a"),
        "{only_missing}"
    );
    // $FLOTILLA_HUB_KUBECONFIG beats $KUBECONFIG; --kubeconfig beats both.
    ok(&get, home, &[("KUBECONFIG", unreachable), ("FLOTILLA_HUB_KUBECONFIG", reachable)]);
    ok(&[&get[..], &["--kubeconfig", reachable]].concat(), home, &[("FLOTILLA_HUB_KUBECONFIG", unreachable)]);
    // The local fleet's file last, when nothing else is set.
    std::fs::create_dir_all(home.join(".flotilla")).unwrap();
    std::fs::copy(reachable, home.join(".flotilla/hub.kubeconfig")).unwrap();
    ok(&get, home, &[]);
    fails(&get, home, &[("KUBECONFIG", unreachable)]);

    // -o json | yaml | wide and -l, with the local fleet's kubeconfig.
    let prod = ok(&with(&["-l", "env=prod"]), home, &[]);
    assert_eq!(names(&json(&prod)), ["m1", "m3"]);
    let yaml_list = ok(&["get", "clusters", "-o", "yaml", "--selector", "env in (dev)"], home, &[]);
    let parsed = yaml(&yaml_list);
    assert_eq!(names(&parsed), ["m2"]);
    assert_eq!(parsed["items"][0]["kind"], "ManagedCluster", "{yaml_list}");
    assert!(parsed["items"][0]["metadata"].get("managedFields").is_none(), "{yaml_list}");
    let wide = ok(&["get", "clusters", "-o", "wide", "-l", "env=dev"], home, &[]);
    let lines: Vec<&str> = wide.lines().collect();
    assert!(lines[0].contains("TAINTS") && lines[0].contains("LABELS"), "{wide}");
    assert_eq!(lines.len(), 2, "a header and m2: {wide}");
    assert!(lines[1].contains("m2") && lines[1].contains("env=dev"), "{wide}");
    let table = ok(&["get", "clusters"], home, &[]);
    assert!(!table.contains("LABELS") && table.contains("m3"), "{table}");
    let none = ok(&["get", "clusters", "-l", "env=staging"], home, &[]);
    assert!(none.contains("No clusters matching -l env=staging"), "{none}");
    let bad = fails(&["get", "clusters", "-l", "env in prod"], home, &[]);
    assert!(bad.contains("label selector -l \"env in prod\" is not valid"), "the API server's reason: {bad}");
    let bindings = ok(&["get", "bindings", "-n", "shop", "-o", "yaml"], home, &[]);
    assert!(names(&yaml(&bindings)).is_empty(), "{bindings}");
    assert!(names(&json(&ok(&["get", "bindings", "-A", "-o", "json"], home, &[]))).is_empty());

    // `cluster get` (HostedClusters, namespaced): -A, -n, -l, -o.
    for (namespace, name, team) in [("default", "c1", "web"), ("default", "c2", "db"), ("team", "c3", "web")]
    {
        if namespace != "default" {
            let ns = k8s_openapi::api::core::v1::Namespace {
                metadata: kube::api::ObjectMeta { name: Some(namespace.into()), ..Default::default() },
                ..Default::default()
            };
            Api::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        }
        let request = HostedClusterRequest {
            namespace: namespace.into(),
            name: name.into(),
            version: "1.37.2".into(),
            etcd_members: 1,
            etcd_version: "3.6.0".into(),
            runtime: Runtime::Process,
            replicas: 1,
            nodes: 0,
            addons: false,
            machine_pool: None,
            node_pool: None,
        };
        let etcd = request.etcd_cluster(("test", "x".to_string()));
        Api::<EtcdCluster>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &etcd)
            .await
            .unwrap();
        let mut hc = request.hosted_cluster();
        hc.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        Api::<HostedCluster>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &hc)
            .await
            .unwrap();
    }
    let web = ok(&["cluster", "get", "-A", "-l", "team=web", "-o", "json"], home, &[]);
    assert_eq!(names(&json(&web)), ["c1", "c3"]);
    let default_ns = ok(&["cluster", "get", "-o", "yaml"], home, &[]);
    assert_eq!(names(&yaml(&default_ns)), ["c1", "c2"]);
    let in_team = ok(&["cluster", "get", "-n", "team", "-o", "json"], home, &[]);
    assert_eq!(names(&json(&in_team)), ["c3"]);
    let one = yaml(&ok(&["cluster", "get", "c2", "-o", "yaml"], home, &[]));
    assert_eq!((one["kind"].as_str(), one["metadata"]["name"].as_str()), (Some("HostedCluster"), Some("c2")));
    let wide = ok(&["cluster", "get", "-A", "-o", "wide", "-l", "team=db"], home, &[]);
    assert!(
        wide.lines().next().unwrap().contains("ETCD") && wide.contains("c2") && !wide.contains("c1"),
        "{wide}"
    );
    let both_given = fails(&["cluster", "get", "c1", "-l", "team=web"], home, &[]);
    assert!(both_given.contains("label selector"), "{both_given}");

    etcd_and_rollout_lists(&client, home).await;
}

/// `etcd list|status` and `rollout list|status|history`: -A, -n, -l, -o on
/// the EtcdClusters made above and on Rollouts made here (as the hub
/// writes them, with a status).
async fn etcd_and_rollout_lists(client: &kube::Client, home: &Path) {
    use kube::api::{Patch, PatchParams};
    let etcds = Api::<EtcdCluster>::namespaced(client.clone(), "default");
    let params = PatchParams::default();
    etcds
        .patch("c2-etcd", &params, &Patch::Merge(serde_json::json!({"metadata": {"labels": {"tier": "db"}}})))
        .await
        .unwrap();
    let members = serde_json::json!([{
        "name": "c2-etcd-0", "machine": "m1", "clientURL": "https://10.0.0.1:2379", "id": "8e9e05c52164694d",
        "isLearner": false, "healthy": true, "dbSizeBytes": 2_097_152, "version": "3.6.0",
    }]);
    let status = serde_json::json!({"status": {
        "phase": "Running", "readyMembers": 1, "leader": "c2-etcd-0", "version": "3.6.0", "members": members,
    }});
    etcds.patch_status("c2-etcd", &params, &Patch::Merge(status)).await.unwrap();
    let all = ok(&["etcd", "list", "-A", "-o", "json"], home, &[]);
    assert_eq!(names(&json(&all)), ["c1-etcd", "c2-etcd", "c3-etcd"]);
    assert_eq!(names(&yaml(&ok(&["etcd", "list", "-l", "tier=db", "-o", "yaml"], home, &[]))), ["c2-etcd"]);
    let wide = ok(&["etcd", "list", "-o", "wide"], home, &[]);
    let header = wide.lines().next().unwrap();
    assert!(
        header.contains("LEADER") && header.contains("DB SIZE") && !header.contains("NAMESPACE"),
        "{wide}"
    );
    let c2 = wide.lines().find(|l| l.contains("c2-etcd")).unwrap();
    assert!(c2.contains("1/1") && c2.contains("c2-etcd-0") && c2.contains("2.0 MiB"), "{wide}");
    assert!(!wide.contains("c3-etcd"), "-n default only:\n{wide}");
    let shown = ok(&["etcd", "status", "c2-etcd", "-o", "wide"], home, &[]);
    for want in ["1 of 1 members ready, leader c2-etcd-0", "leader", "m1", "8e9e05c52164694d", "CLIENT URL"] {
        assert!(shown.contains(want), "wants {want:?}:\n{shown}");
    }
    let one = yaml(&ok(&["etcd", "status", "c3-etcd", "-n", "team", "-o", "yaml"], home, &[]));
    assert_eq!(
        (one["kind"].as_str(), one["metadata"]["name"].as_str()),
        (Some("EtcdCluster"), Some("c3-etcd"))
    );
    let selected = ok(&["etcd", "status", "-l", "tier=db"], home, &[]);
    assert!(selected.contains("EtcdCluster default/c2-etcd") && !selected.contains("c1-etcd"), "{selected}");
    let missing = fails(&["etcd", "status", "nope"], home, &[]);
    assert!(missing.contains("no EtcdCluster nope in namespace default"), "{missing}");

    let rollouts = Api::<Rollout>::namespaced(client.clone(), "default");
    for (name, kind, team) in
        [("web-deployment", "Deployment", "web"), ("db-statefulset", "StatefulSet", "db")]
    {
        let template = TemplateReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.split('-').next().unwrap().into(),
        };
        let mut r = Rollout::new(name, RolloutSpec { template, strategy: "waves".into() });
        r.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        rollouts.create(&PostParams::default(), &r).await.unwrap();
    }
    let status = serde_json::json!({"status": {
        "phase": "Progressing", "revision": "abc", "revisionNumber": 2, "stableRevisionNumber": 1,
        "wave": 1, "waveText": "1/2",
        "clusters": [{"name": "m1", "wave": 1, "given": "new", "gate": "Healthy"},
                     {"name": "m2", "wave": 2, "given": "stable", "gate": "Healthy"}],
    }});
    rollouts.patch_status("web-deployment", &params, &Patch::Merge(status)).await.unwrap();
    let web = ok(&["rollout", "list", "-A", "-l", "team=web", "-o", "json"], home, &[]);
    assert_eq!(names(&json(&web)), ["web-deployment"]);
    let table = ok(&["rollout", "get", "-o", "wide"], home, &[]);
    let row = table.lines().find(|l| l.contains("web-deployment")).unwrap();
    for want in ["deployment/web", "Progressing", "1/2", "1/1 of 2", "waves"] {
        assert!(row.contains(want), "wants {want:?}:\n{table}");
    }
    assert!(
        table.contains("db-statefulset") && table.lines().next().unwrap().contains("TIME LEFT"),
        "{table}"
    );
    let none = ok(&["rollout", "list", "-n", "team"], home, &[]);
    assert!(none.starts_with("No Rollouts in namespace team"), "{none}");
    let one = json(&ok(&["rollout", "status", "deployment/web", "-o", "json"], home, &[]));
    assert_eq!((one["kind"].as_str(), one["status"]["revisionNumber"].as_i64()), (Some("Rollout"), Some(2)));
    assert!(names(&yaml(&ok(&["rollout", "history", "web-deployment", "-o", "yaml"], home, &[]))).is_empty());
}

#[test]
fn without_any_kubeconfig_the_error_says_what_was_tried() {
    let home = tempfile::tempdir().unwrap();
    for args in [&["get", "clusters"][..], &["cluster", "get"], &["rollout", "status", "web"]] {
        let out = fails(args, home.path(), &[]);
        for wanted in [
            "--kubeconfig",
            "$KUBECONFIG",
            "$FLOTILLA_HUB_KUBECONFIG",
            "flotilla up",
            ".flotilla/hub.kubeconfig",
        ] {
            assert!(out.contains(wanted), "flotilla {args:?}: {wanted} missing from:\n{out}");
        }
    }
}

#[test]
fn completion_scripts_cover_the_command_tree() {
    let home = tempfile::tempdir().unwrap();
    let cases = [("bash", "_flotilla()"), ("zsh", "#compdef flotilla"), ("fish", "complete -c flotilla")];
    for (shell, marker) in cases {
        let script = ok(&["completion", shell], home.path(), &[]);
        assert!(script.contains(marker), "{shell}: no {marker}");
        // Nested subcommands and the get commands' flags are completed.
        for word in ["clusters", "bindings", "rotate-certs", "selector", "kubeconfig", "context"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
    }
    let help = ok(&["completion", "--help"], home.path(), &[]);
    for wanted in ["bash-completion", "fpath", "~/.config/fish/completions/flotilla.fish"] {
        assert!(help.contains(wanted), "{wanted} missing from:\n{help}");
    }
    fails(&["completion", "tcsh"], home.path(), &[]);
}
