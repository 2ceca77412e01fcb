//! `flotilla images load`: local image tarballs onto a hosted cluster's
//! real nodes. Checks the files (image archives with names), finds the
//! cluster's real nodes on the Machines and the directory their entries
//! declare (`extraImagesDir`), copies the files there atomically, and waits
//! until every node reports every image. What a status means is
//! `flotilla_kok_core::real_node::extra_images`'s to say.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use flotilla_api::kok::HostedCluster;
use flotilla_api::machine::Machine;
use flotilla_kok_core::hosted::{owner_label_value, OWNER_LABEL};
use flotilla_kok_core::real_node::extra_images::{
    file_name_in_dir, load_rows, load_verdict, LoadRow, LoadedFile, NodeImages, SCAN_EVERY_SECONDS,
};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::args::LoadArgs;
use super::progress::wait_for;
use super::render::{hub_flag, namespace_flag, table};

/// How long after the copy a node's import failure counts: before that it
/// may be about the file the copy replaced, not yet looked at again.
const FAILURES_COUNT_AFTER: Duration = Duration::from_secs(3 * SCAN_EVERY_SECONDS + 1);

/// One file to load: where it is, its name in the cluster's directory,
/// its images.
struct Source {
    path: PathBuf,
    name: String,
    images: Vec<String>,
}

/// One real node of the cluster: its Machine entry.
struct Entry {
    node: String,
    machine: String,
    dir: Option<String>,
}

pub async fn load(args: LoadArgs) -> anyhow::Result<bool> {
    let (namespace, cluster) = (args.target.namespace.clone(), args.cluster.clone());
    let mut sources: Vec<Source> = Vec::new();
    for path in &args.files {
        let images = flotilla_node_agent::extra_images::read_archive(path).map_err(|e| anyhow!("{e}"))?;
        let base = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let name = file_name_in_dir(base).ok_or_else(|| anyhow!("{}: not a file name", path.display()))?;
        if sources.iter().any(|s| s.name == name) {
            bail!("two files would be {name} in the cluster's image directory: rename one");
        }
        sources.push(Source { path: path.clone(), name, images });
    }

    let client = args.target.client().await?;
    let hint = format!("{}{}", namespace_flag(&namespace), hub_flag(&args.target.hub));
    if Api::<HostedCluster>::namespaced(client.clone(), &namespace).get_opt(&cluster).await?.is_none() {
        bail!(
            "there is no HostedCluster {namespace}/{cluster} on the hub (`flotilla cluster get{hint}` \
             lists them); nothing was copied"
        );
    }
    let machines: Api<Machine> = Api::all(client);
    let owner = owner_label_value(&namespace, &cluster);
    let entries = cluster_entries(&machines, &owner).await?;
    if entries.is_empty() {
        bail!(
            "cluster {namespace}/{cluster} has no real nodes: add some with a NodePool \
             (apiVersion: kok.flotilla.io/v1alpha1, kind: NodePool, spec.clusterRef: {cluster}, \
             spec.replicas: 1; `flotilla up --real-nodes N` gives a local fleet's members one); \
             nothing was copied"
        );
    }
    let mut dirs = BTreeSet::new();
    for e in &entries {
        match &e.dir {
            Some(dir) => dirs.insert(PathBuf::from(dir)),
            None => bail!(
                "real node {} (Machine {}) declares no extraImagesDir: the hub's NodePool controller \
                 writes it, a hub older than `flotilla images load` does not; nothing was copied",
                e.node,
                e.machine
            ),
        };
    }

    for dir in &dirs {
        for s in &sources {
            copy_into(&s.path, dir, &s.name)?;
            tracing::info!(file = %s.path.display(), dir = %dir.display(), "copied");
        }
    }
    let copied = Instant::now();
    let files: Vec<LoadedFile> =
        sources.iter().map(|s| LoadedFile { file: s.name.clone(), images: s.images.clone() }).collect();
    let what = format!("loading the images onto {namespace}/{cluster}'s real nodes");
    let timeout = Duration::from_secs(args.timeout);
    wait_for(timeout, &what, || async {
        let rows = observe(&machines, &owner, &files, copied.elapsed() >= FAILURES_COUNT_AFTER).await?;
        Ok((load_verdict(&rows), render(&rows)))
    })
    .await?;
    let rows = observe(&machines, &owner, &files, true).await?;
    println!("{}", render(&rows));
    Ok(true)
}

/// The cluster's real nodes: the Machines' entries labelled for it.
async fn cluster_entries(machines: &Api<Machine>, owner: &str) -> anyhow::Result<Vec<Entry>> {
    let list = machines.list(&ListParams::default()).await.context("listing the Machines")?;
    let mut entries: Vec<Entry> = list
        .items
        .iter()
        .flat_map(|m| {
            m.spec
                .real_nodes
                .iter()
                .filter(|n| n.labels.get(OWNER_LABEL).map(String::as_str) == Some(owner))
                .map(|n| Entry {
                    node: n.name.clone(),
                    machine: m.name_any(),
                    dir: n.extra_images_dir.clone(),
                })
        })
        .collect();
    entries.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(entries)
}

/// Every image on every real node of the cluster, as the Machines say now.
async fn observe(
    machines: &Api<Machine>,
    owner: &str,
    files: &[LoadedFile],
    failures_count: bool,
) -> anyhow::Result<Vec<LoadRow>> {
    let list = machines.list(&ListParams::default()).await.context("listing the Machines")?;
    let mut nodes: Vec<NodeImages> = Vec::new();
    for m in &list.items {
        for entry in
            m.spec.real_nodes.iter().filter(|n| n.labels.get(OWNER_LABEL).map(String::as_str) == Some(owner))
        {
            let reported = m.status.as_ref().and_then(|s| s.real_nodes.iter().find(|r| r.name == entry.name));
            nodes.push(NodeImages {
                node: entry.name.clone(),
                machine: m.name_any(),
                images: reported.map(|r| r.images.clone()).unwrap_or_default(),
                message: reported.and_then(|r| r.message.clone()),
            });
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(load_rows(&nodes, files, failures_count))
}

fn render(rows: &[LoadRow]) -> String {
    let mut t = table(vec!["NODE", "MACHINE", "IMAGE", "STATUS"]);
    for r in rows {
        t.add_row(vec![r.node.clone(), r.machine.clone(), r.image.clone(), r.state.to_string()]);
    }
    t.to_string()
}

/// Copies `source` to `dir/name` so a reader sees the whole file or none:
/// a hidden temporary file in the same directory (which the node agents
/// ignore), synced, then renamed.
fn copy_into(source: &Path, dir: &Path, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let target = dir.join(name);
    let copy = || -> std::io::Result<()> {
        std::fs::copy(source, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("copying {} to {}: {e}", source.display(), target.display())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_appears_whole_under_its_name_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("hello.tar");
        std::fs::write(&source, b"image bytes").unwrap();
        let target_dir = dir.path().join("clusters/ns.c");
        copy_into(&source, &target_dir, "hello.tar").unwrap();
        copy_into(&source, &target_dir, "hello.tar").unwrap();
        let names: Vec<String> = std::fs::read_dir(&target_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["hello.tar"]);
        assert_eq!(std::fs::read(target_dir.join("hello.tar")).unwrap(), b"image bytes");
        let err = copy_into(&dir.path().join("missing.tar"), &target_dir, "missing.tar").unwrap_err();
        assert!(err.to_string().contains("missing.tar"), "{err}");
        assert_eq!(std::fs::read_dir(&target_dir).unwrap().count(), 1, "no temporary file left");
    }
}
