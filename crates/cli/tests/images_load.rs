#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flotilla images load` puts an image built here onto a hosted cluster's
//! running real node: the real binary checks the tarball, copies it into
//! the cluster's image directory, the node agent imports it into the
//! node's containerd without restarting anything, the Machine status lists
//! it, and a pod with `imagePullPolicy: Never` runs it. Files that are not
//! named image archives, and a cluster without real nodes, are refused
//! with nothing copied; an archive ctr cannot import fails the command
//! with ctr's error, also in the node's status. Needs root and `scripts/node-runtime.sh`'s runtime,
//! like the `node_pool` test.

mod kok_env;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use flotilla_api::machine::Machine;
use flotilla_api::node_pool::NodePool;
use flotilla_kok_core::node_pool::rollout_state;
use flotilla_localkube::real_node::{NodeImages, RealNodes};
use k8s_openapi::api::core::v1::Pod;
use kok_env::{KokEnv, NS, WAIT};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use sha2::{Digest, Sha256};

const CLUSTER: &str = "il";
const POOL: &str = "workers";
const IMAGE: &str = "flotilla.local/hello:1";

/// The busybox image of `scripts/node-runtime.sh` (a `docker save`
/// archive) as an OCI image layout named `name` in its index.json.
fn oci_image(name: &str, out: &Path) {
    oci_archive(name, out, true)
}

/// [`oci_image`], its blobs left out when not `whole`: a named image ctr
/// cannot import.
fn oci_archive(name: &str, out: &Path, whole: bool) {
    let busybox = NodeImages::default_dir().join("busybox.tar");
    let mut archive = tar::Archive::new(std::fs::File::open(&busybox).unwrap());
    let (mut config, mut layer) = (Vec::new(), Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        match path.trim_start_matches("./") {
            "config.json" => entry.read_to_end(&mut config).unwrap(),
            "layer.tar" => entry.read_to_end(&mut layer).unwrap(),
            _ => 0,
        };
    }
    assert!(!config.is_empty() && !layer.is_empty(), "{} has no config or layer", busybox.display());
    let digest = |bytes: &[u8]| hex::encode(Sha256::digest(bytes));
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", digest(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{}", digest(&layer)), "size": layer.len()}],
        // A manifest of its own (the node has the others' blobs already).
        "annotations": {"flotilla.test/name": name},
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", digest(&manifest)), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": name}}],
    }))
    .unwrap();
    let mut builder = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut add = |path: String, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, bytes).unwrap();
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), &index);
    for blob in [&config, &layer, &manifest].into_iter().filter(|_| whole) {
        add(format!("blobs/sha256/{}", digest(blob)), blob);
    }
    builder.into_inner().unwrap().sync_all().unwrap();
}

/// Runs the `flotilla` binary: whether it succeeded, stdout, stderr.
async fn flotilla(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env_remove("FLOTILLA_HUB_KUBECONFIG")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_load_puts_a_new_image_on_a_running_real_node() {
    let api_bridge = RealNodes::reserve().unwrap();
    // The node images directory of the test's own (the cached images
    // linked into it), so the cluster's image directory is one too.
    let images = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(NodeImages::default_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tar") {
            std::os::unix::fs::symlink(&path, images.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let node_images_dir = images.path().to_path_buf();
    let cluster_dir = node_images_dir.join("clusters").join(format!("{NS}.{CLUSTER}"));
    let env = KokEnv::start_at(&["m1"], &api_bridge.gateway().to_string(), BTreeMap::new(), |hosted| {
        hosted.node_images_dir = node_images_dir.clone();
    })
    .await;
    env.create_cluster(CLUSTER, json!({})).await;

    let hub = env.hub.kubeconfig_path().display().to_string();
    let files = tempfile::tempdir().unwrap();
    let hello = files.path().join("hello.tar");
    oci_image(IMAGE, &hello);
    let hello = hello.display().to_string();
    let load = |file: String| {
        let hub = hub.clone();
        async move {
            flotilla(&["images", "load", "--cluster", CLUSTER, "-n", NS, "--kubeconfig", &hub, &file]).await
        }
    };

    // Refused, nothing copied: a tarball that is no image, and a cluster
    // without real nodes.
    let plain = files.path().join("plain.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&plain).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(2);
    header.set_cksum();
    builder.append_data(&mut header, "hello.txt", &b"hi"[..]).unwrap();
    builder.finish().unwrap();
    drop(builder);
    let (ok, _, err) = load(plain.display().to_string()).await;
    assert!(!ok && err.contains("plain.tar") && err.contains("not an image archive"), "{err}");
    let (ok, _, err) = load(hello.clone()).await;
    assert!(!ok && err.contains("has no real nodes") && err.contains("NodePool"), "{err}");
    assert!(!cluster_dir.exists(), "nothing is copied");

    // One real node.
    let pools: Api<NodePool> = Api::namespaced(env.client.clone(), NS);
    let pool: NodePool = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "NodePool",
        "metadata": {"name": POOL, "namespace": NS},
        "spec": {"clusterRef": CLUSTER, "replicas": 1},
    }))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.unwrap();
    let machines: Api<Machine> = Api::all(env.client.clone());
    let complete = |p: &NodePool| {
        p.status.as_ref().is_some_and(|s| {
            s.rollout.as_ref().is_some_and(|r| r.state == rollout_state::COMPLETE) && s.ready_nodes == 1
        })
    };
    flotilla_localkube::wait_for("the pool's node Ready", WAIT, || async {
        pools.get(POOL).await.ok().is_some_and(|p| complete(&p))
    })
    .await;
    let ready = pools.get(POOL).await.ok().filter(complete);
    let status = ready.unwrap().status.unwrap();
    let (node, revision) = (status.nodes[0].name.clone(), status.rollout.unwrap().revision);
    let m1 = machines.get("m1").await.unwrap();
    let entry = m1.spec.real_nodes.iter().find(|n| n.name == node).unwrap();
    assert_eq!(entry.extra_images_dir.as_deref(), Some(cluster_dir.to_str().unwrap()));
    let kubelet = format!("{node}-kubelet");
    let pid_of = |m: &Machine, name: &str| {
        m.status.as_ref().unwrap().components.iter().find(|c| c.name == name).and_then(|c| c.pid)
    };
    let kubelet_pid = pid_of(&m1, &kubelet).unwrap();

    // The load: copied, imported, reported.
    let (ok, out, err) = load(hello.clone()).await;
    assert!(ok, "images load failed:\n{out}\n{err}\n{}", env.logs());
    println!("flotilla images load:\n{err}{out}");
    let row = out.lines().find(|l| l.contains(IMAGE)).unwrap_or_else(|| panic!("no row for {IMAGE}:\n{out}"));
    for want in [node.as_str(), "m1", "Loaded"] {
        assert!(row.contains(want), "{want} missing: {out}");
    }
    assert!(out.lines().next().is_some_and(|h| h.contains("NODE") && h.contains("STATUS")), "{out}");
    assert!(cluster_dir.join("hello.tar").is_file());
    let m1 = machines.get("m1").await.unwrap();
    let reported = m1.status.as_ref().unwrap().real_nodes.iter().find(|n| n.name == node).unwrap();
    assert_eq!(reported.images, [IMAGE], "{reported:?}");
    assert_eq!(reported.message, None, "{reported:?}");
    assert_eq!(pid_of(&m1, &kubelet), Some(kubelet_pid), "loading restarts nothing");
    let pool = pools.get(POOL).await.unwrap().status.unwrap();
    assert_eq!(pool.rollout.unwrap().revision, revision, "loading images rolls nothing");

    // A pod runs the image.
    let inside: Client = {
        let path = env.kubeconfig(CLUSTER, "il.kubeconfig").await;
        flotilla_kok::hosted_addons::business_client(&std::fs::read(path).unwrap()).await.unwrap()
    };
    let pods: Api<Pod> = Api::namespaced(inside, "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main",
            "image": IMAGE, "imagePullPolicy": "Never", "command": ["sh", "-c", "exec sleep 3600"]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    flotilla_localkube::wait_for("the pod of the loaded image Running", WAIT, || async {
        let phase = pods.get("hello").await.ok().and_then(|p| p.status?.phase);
        phase.as_deref() == Some("Running")
    })
    .await;
    let pod = pods.get("hello").await.unwrap();
    assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some(node.as_str()));

    // An archive ctr cannot import: the command fails with ctr's error,
    // which the node's status reports with the file's name.
    let broken = files.path().join("broken.tar");
    oci_archive("flotilla.local/broken:1", &broken, false);
    let (ok, out, err) = load(broken.display().to_string()).await;
    assert!(!ok, "a broken image loaded:\n{out}\n{err}");
    println!("flotilla images load (broken):\n{err}");
    assert!(err.contains("flotilla.local/broken:1") && err.contains("Failed: "), "{err}");
    let m1 = machines.get("m1").await.unwrap();
    let reported = m1.status.as_ref().unwrap().real_nodes.iter().find(|n| n.name == node).unwrap();
    let message = reported.message.clone().unwrap_or_default();
    assert!(message.starts_with("cannot import broken.tar: "), "{reported:?}");
    assert_eq!(reported.images, [IMAGE], "{reported:?}");

    drop(env);
    drop(api_bridge);
    drop(images);
}
