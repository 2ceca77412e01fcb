//! `flotilla logs --cluster C POD` (and `exec`): a member's pods, reached
//! through the hub's cluster proxy as the hub user (as `karmadactl logs
//! --cluster`). The member's RBAC applies to that user.

use clap::Args;
use futures::AsyncBufReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::Api;

use crate::hub_kubeconfig::HubKubeconfig;
use crate::member_access::{member_client, member_failure};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The member cluster the pod runs in (reached through the hub, as your hub user)
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: String,
    /// The pod
    pub pod: String,
    /// The pod's namespace [default: the hub kubeconfig context's, else default]
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The container [default: the pod's only one]
    #[arg(long, short = 'c', value_name = "CONTAINER")]
    pub container: Option<String>,
    /// Keep streaming new lines until interrupted
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<i64>,
    /// The previous (crashed) instance of the container
    #[arg(long, short = 'p')]
    pub previous: bool,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<bool> {
    let client = member_client(&args.hub, &args.cluster).await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let params = LogParams {
        container: args.container.clone(),
        follow: args.follow,
        tail_lines: args.tail,
        previous: args.previous,
        ..Default::default()
    };
    let doing = format!("reading the log of pod {namespace}/{}", args.pod);
    let mut lines = pods
        .log_stream(&args.pod, &params)
        .await
        .map_err(|e| anyhow::anyhow!(member_failure(&args.cluster, &doing, &e)))?
        .lines();
    use futures::TryStreamExt as _;
    while let Some(line) = lines.try_next().await.map_err(|e| anyhow::anyhow!("{doing}: {e}"))? {
        println!("{line}");
    }
    Ok(true)
}
