//! `flotilla promote` and `flotilla release`: move a workload that already
//! runs in a member into the fleet without restarting it, and back out
//! leaving it running (`flotilla_hub::migration` does the work).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::hub_kubeconfig::HubKubeconfig;

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The workload, kubectl style: `deployment/web`, `deployments.apps/web`,
    /// `deploy/web`, `svc/web` (any type the member serves).
    #[arg(value_name = "TYPE/NAME")]
    pub object: String,
    /// Its namespace in the member (and of the hub template).
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// The member cluster it runs in.
    #[arg(long)]
    pub cluster: String,
    /// Kubeconfig of the member, to read the workload. Needed for a
    /// pull-mode member (the hub holds no credential for it); a push-mode
    /// member is read with the kubeconfig the hub holds.
    #[arg(long, value_name = "PATH")]
    pub member_kubeconfig: Option<PathBuf>,
    /// Seconds to wait for the member's agent to adopt the object (0: do
    /// not wait).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// The template, kubectl style: `deployment/web`.
    #[arg(value_name = "TYPE/NAME")]
    pub object: String,
    /// The template's namespace on the hub.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Seconds to wait for each member's agent, first to confirm its Work
    /// keeps the objects (nothing is deleted until all have), then to let
    /// go of them.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

/// `flotilla promote`.
pub async fn promote(args: PromoteArgs) -> anyhow::Result<bool> {
    flotilla_apps_core::migration::parse_object_arg(&args.object)?;
    let hub = args.hub.client().await.context("connecting to the hub")?;
    let member = match &args.member_kubeconfig {
        Some(path) => {
            let (client, _) = flotilla_agent::client_from_kubeconfig(path)
                .await
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("reading the member kubeconfig {}", path.display()))?;
            client
        }
        None => flotilla_hub::migration::member_client(&hub, &args.cluster).await?,
    };
    let promoted =
        flotilla_hub::migration::promote(&hub, &member, &args.object, &args.namespace, &args.cluster).await?;
    let what = if promoted.namespace.is_empty() {
        format!("{}/{}", promoted.kind.to_lowercase(), promoted.name)
    } else {
        format!("{}/{} in namespace {}", promoted.kind.to_lowercase(), promoted.name, promoted.namespace)
    };
    println!(
        "hub template {what} written from cluster {} (status and member-only fields left out)",
        promoted.cluster
    );
    println!(
        "{} places it on {} and takes the running object over (conflictResolution: Overwrite)",
        promoted.policy, promoted.cluster
    );
    if args.timeout == 0 {
        println!("not waiting for the member's agent (--timeout 0)");
        return Ok(true);
    }
    flotilla_hub::migration::wait_adopted(&hub, &promoted, Duration::from_secs(args.timeout)).await?;
    println!(
        "adopted: cluster {}'s agent applied it; the pod template is unchanged, so no pod restarted",
        promoted.cluster
    );
    Ok(true)
}

/// `flotilla release`.
pub async fn release(args: ReleaseArgs) -> anyhow::Result<bool> {
    flotilla_apps_core::migration::parse_object_arg(&args.object)?;
    let hub = args.hub.client().await.context("connecting to the hub")?;
    let released = flotilla_hub::migration::release(
        &hub,
        &args.object,
        &args.namespace,
        Duration::from_secs(args.timeout),
    )
    .await?;
    if released.clusters.is_empty() {
        println!("{} had no Work in any cluster", released.template);
    } else {
        println!(
            "the Works of {} in {} kept their objects: they run on, no longer managed by the fleet",
            released.template,
            released.clusters.join(", ")
        );
    }
    println!("hub template {} deleted", released.template);
    if !released.dependencies.is_empty() {
        println!(
            "its dependencies ({}) stay on the hub; their member copies are kept too once nothing needs them",
            released.dependencies.join(", ")
        );
    }
    if let Some(policy) = &released.policy_deleted {
        println!("{policy} (made by promote, used by nothing else) deleted");
    }
    if let Some((policy, why)) = &released.policy_kept {
        println!("{policy} kept: {why}");
    }
    Ok(true)
}
