//! `flotilla cluster create`: writes a HostedCluster and the EtcdCluster it
//! owns (built by [`HostedClusterRequest`]), then waits until it is Ready.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use flotilla_api::kok::{EtcdCluster, HostedCluster};
use flotilla_api::kok_request::HostedClusterRequest;
use flotilla_kok_core::blockers::{Blockers, NEEDS_ACTION_GRACE};
use flotilla_kok_core::hosted::{owner_label_value, OWNER_LABEL};
use flotilla_kok_core::wait::{create_verdict, endpoint_of, not_ready_summary, phase_of};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use super::args::CreateArgs;
use super::progress::wait_for;
use super::render::{hub_flag, namespace_flag, usage_hint};

/// The etcd version the local binary cache has.
fn cached_etcd_version() -> anyhow::Result<String> {
    let binary = flotilla_localkube::Binaries::default_dir().join("etcd");
    let output = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version to learn the etcd version", binary.display()))?;
    parse_etcd_version(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("{} --version printed no version", binary.display()))
}

/// The version in `etcd --version` output ("etcd Version: 3.7.4").
pub fn parse_etcd_version(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub async fn create(args: CreateArgs) -> anyhow::Result<bool> {
    flotilla_fleet_core::membership::validate_cluster_name(&args.name).map_err(anyhow::Error::msg)?;
    let namespace = args.target.namespace.clone();
    let etcd_version = match args.etcd_version.clone() {
        Some(v) => v,
        None => cached_etcd_version().context("pass --etcd-version to say which etcd to run")?,
    };
    let request = HostedClusterRequest {
        namespace: namespace.clone(),
        name: args.name.clone(),
        version: args.version.trim_start_matches('v').to_string(),
        etcd_members: args.etcd_members,
        etcd_version,
        runtime: args.runtime.into(),
        replicas: args.replicas,
        nodes: args.nodes,
        addons: !args.no_addons,
        machine_pool: args.machine_pool.clone(),
        node_pool: args.node_pool.clone(),
    };
    let client = args.target.client().await?;
    let clusters: Api<HostedCluster> = Api::namespaced(client.clone(), &namespace);
    let etcds: Api<EtcdCluster> = Api::namespaced(client.clone(), &namespace);
    if let Some(hc) = clusters
        .get_opt(&args.name)
        .await
        .context("reading HostedClusters (is `flotilla hub install` done?)")?
    {
        bail!(
            "hosted cluster {} exists already in namespace {namespace} (phase {}); \
             `flotilla cluster get {}` shows it, `flotilla cluster delete {}` removes it",
            args.name,
            phase_of(&hc),
            args.name,
            args.name
        );
    }

    let etcd = request.etcd_cluster((OWNER_LABEL, owner_label_value(&namespace, &args.name)));
    let etcd_name = etcd.name_any();
    let mut created_etcd = false;
    match etcds.get_opt(&etcd_name).await? {
        Some(e) if e.labels().get(OWNER_LABEL) != Some(&owner_label_value(&namespace, &args.name)) => bail!(
            "EtcdCluster {etcd_name} exists in namespace {namespace} and belongs to something else; \
             choose another cluster name"
        ),
        Some(e) if e.metadata.deletion_timestamp.is_some() => bail!(
            "EtcdCluster {etcd_name} of an earlier cluster {} is still being deleted; try again shortly",
            args.name
        ),
        // Left by an earlier `create` whose HostedCluster was never made.
        Some(_) => {}
        None => {
            etcds
                .create(&PostParams::default(), &etcd)
                .await
                .with_context(|| format!("creating EtcdCluster {etcd_name}"))?;
            created_etcd = true;
        }
    }
    let hc = request.hosted_cluster();
    if let Err(e) = clusters.create(&PostParams::default(), &hc).await {
        if created_etcd {
            let _ = etcds.delete(&etcd_name, &DeleteParams::default()).await;
        }
        if let kube::Error::Api(api) = &e {
            if api.code == 409 {
                bail!("hosted cluster {} was created by someone else meanwhile", args.name);
            }
        }
        return Err(e).context(format!("creating HostedCluster {}", args.name));
    }
    println!(
        "Created HostedCluster {namespace}/{} (Kubernetes {}, {} etcd member(s), {} node(s)).",
        args.name, request.version, request.etcd_members, request.nodes
    );
    if args.wait.no_wait {
        println!(
            "Not waiting; `flotilla cluster get {}{}` shows its progress.",
            args.name,
            namespace_flag(&namespace)
        );
        return Ok(true);
    }
    let name = args.name.clone();
    // What the earlier looks saw: a condition that waits on a person ends
    // the wait once it has held for the grace, not at the timeout.
    let blockers = Arc::new(Mutex::new(Blockers::default()));
    let started = Instant::now();
    let (_, elapsed) = wait_for(Duration::from_secs(args.wait.timeout), &format!("cluster {name}"), || {
        let (clusters, name, blockers) = (clusters.clone(), name.clone(), blockers.clone());
        async move {
            let hc = clusters.get(&name).await?;
            let mut blockers = blockers.lock().unwrap_or_else(|p| p.into_inner());
            let verdict = create_verdict(&hc, &mut blockers, started.elapsed(), NEEDS_ACTION_GRACE);
            Ok((verdict, not_ready_summary(&hc)))
        }
    })
    .await?;
    let hc = clusters.get(&args.name).await?;
    println!("Cluster {} is Ready after {}s.", args.name, elapsed.as_secs());
    println!("{}", usage_hint(&args.name, &namespace, &endpoint_of(&hc), &hub_flag(&args.target.hub)));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_version_comes_from_the_binary_output() {
        let out = "etcd Version: 3.7.4\nGit SHA: Not provided\nGo Version: go1.19.8\n";
        assert_eq!(parse_etcd_version(out).as_deref(), Some("3.7.4"));
        assert_eq!(parse_etcd_version("etcd Version: \n"), None);
        assert_eq!(parse_etcd_version("something else"), None);
    }
}
