//! `flotilla logs --cluster C POD` and `flotilla exec --cluster C POD --
//! CMD`: a member's pods, reached through the hub's cluster proxy as the
//! hub user (as `karmadactl logs|exec --cluster`). The member's RBAC
//! applies to that user.

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

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The member cluster the pod runs in (reached through the hub, as your hub user)
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: String,
    /// The pod
    pub pod: String,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// The pod's namespace [default: the hub kubeconfig context's, else default]
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The container [default: the pod's only one]
    #[arg(long, short = 'c', value_name = "CONTAINER")]
    pub container: Option<String>,
    /// Pass this command's standard input to the container's
    #[arg(long, short = 'i')]
    pub stdin: bool,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

/// Runs the command in the member's container (an upgraded WebSocket
/// stream end to end: user, hub API server, hub, member) and exits with
/// its status. No TTY.
pub async fn exec(args: ExecArgs) -> anyhow::Result<bool> {
    use kube::api::AttachParams;
    let client = member_client(&args.hub, &args.cluster).await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut params = AttachParams::default().stdin(args.stdin).stdout(true).stderr(true);
    if let Some(container) = &args.container {
        params = params.container(container.clone());
    }
    let doing = format!("running a command in pod {namespace}/{}", args.pod);
    let mut attached = pods
        .exec(&args.pod, args.command.clone(), &params)
        .await
        .map_err(|e| anyhow::anyhow!(member_failure(&args.cluster, &doing, &e)))?;
    let mut stdout = attached.stdout().ok_or_else(|| anyhow::anyhow!("{doing}: no standard output"))?;
    let mut stderr = attached.stderr().ok_or_else(|| anyhow::anyhow!("{doing}: no standard error"))?;
    let stdin = attached.stdin();
    let feed = async move {
        if let Some(mut writer) = stdin {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut writer).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut writer).await;
        }
    };
    let status = attached.take_status();
    let (mut our_stdout, mut our_stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let out = tokio::io::copy(&mut stdout, &mut our_stdout);
    let err = tokio::io::copy(&mut stderr, &mut our_stderr);
    tokio::spawn(feed);
    let (out, err) = tokio::join!(out, err);
    out.and(err).map_err(|e| anyhow::anyhow!("{doing}: {e}"))?;
    let status = match status {
        Some(status) => status.await,
        None => None,
    };
    attached.join().await.map_err(|e| anyhow::anyhow!("{doing}: {e}"))?;
    match status {
        Some(status) if status.status.as_deref() == Some("Failure") => {
            let message = status.message.unwrap_or_default();
            eprintln!("command failed in cluster {}: {message}", args.cluster);
            Ok(false)
        }
        _ => Ok(true),
    }
}
