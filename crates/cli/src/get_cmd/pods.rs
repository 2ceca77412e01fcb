//! `flotilla get pods --cluster C`: a member's pods, read through the hub's
//! cluster proxy as the hub user (as `karmadactl get pods --cluster`).
//! Columns as kubectl's: NAME, READY, STATUS, RESTARTS, AGE; -o wide adds
//! IP and NODE; -A adds NAMESPACE first.

use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Api;

use crate::hub_kubeconfig::HubKubeconfig;
use crate::member_access::{member_client, member_failure};
use crate::output::{age, list_document, render_document, table, ListArgs, NamespaceScope};

#[derive(Args, Debug)]
pub struct GetPodsArgs {
    /// The member cluster to list pods in (reached through the hub, as your hub user)
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: String,
    #[command(flatten)]
    pub scope: NamespaceScope,
    #[command(flatten)]
    pub list: ListArgs,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

pub async fn get_pods(args: GetPodsArgs) -> anyhow::Result<bool> {
    let client = member_client(&args.hub, &args.cluster).await?;
    let context = client.default_namespace().to_string();
    let api: Api<Pod> = args.scope.api(client);
    let mut items = api
        .list(&args.list.list_params())
        .await
        .map_err(|e| anyhow::anyhow!(member_failure(&args.cluster, "listing pods", &e)))?
        .items;
    items.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    if let Some(text) = render_document(&list_document(&items)?, args.list.output)? {
        println!("{}", text.trim_end());
        return Ok(true);
    }
    if items.is_empty() {
        let place = args.scope.place(&context);
        println!("No pods in {place} of cluster {}{}.", args.cluster, args.list.matching());
        return Ok(true);
    }
    let wide = args.list.wide();
    let mut t = table(pod_header(wide, args.scope.all_namespaces));
    let now = Timestamp::now();
    for pod in &items {
        t.add_row(pod_row(pod, wide, args.scope.all_namespaces, now));
    }
    println!("{t}");
    Ok(true)
}

pub fn pod_header(wide: bool, namespaces: bool) -> Vec<&'static str> {
    let mut header = Vec::new();
    if namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    if wide {
        header.extend(["IP", "NODE"]);
    }
    header
}

/// One pod as kubectl prints it. STATUS: Terminating while deleted, else
/// the reason a container waits or ended with (CrashLoopBackOff,
/// ErrImagePull, Error, Completed), else the pod's phase.
pub fn pod_row(pod: &Pod, wide: bool, namespaces: bool, now: Timestamp) -> Vec<String> {
    let spec_containers = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let status = pod.status.as_ref();
    let statuses = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    let ready = statuses.iter().filter(|c| c.ready).count();
    let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
    let reason = statuses.iter().find_map(|c| {
        let state = c.state.as_ref()?;
        let waiting = state.waiting.as_ref().and_then(|w| w.reason.clone());
        let terminated = state
            .terminated
            .as_ref()
            .map(|t| t.reason.clone().unwrap_or_else(|| format!("ExitCode:{}", t.exit_code)));
        waiting.or(terminated)
    });
    let shown = if pod.metadata.deletion_timestamp.is_some() {
        "Terminating".to_string()
    } else {
        reason
            .or_else(|| status.and_then(|s| s.reason.clone()))
            .or_else(|| status.and_then(|s| s.phase.clone()))
            .unwrap_or_else(|| "Unknown".into())
    };
    let mut row = Vec::new();
    if namespaces {
        row.push(pod.metadata.namespace.clone().unwrap_or_default());
    }
    row.extend([
        pod.metadata.name.clone().unwrap_or_default(),
        format!("{ready}/{spec_containers}"),
        shown,
        restarts.to_string(),
        age(pod.metadata.creation_timestamp.as_ref(), now),
    ]);
    if wide {
        row.push(status.and_then(|s| s.pod_ip.clone()).unwrap_or_else(|| "<none>".into()));
        row.push(pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "<none>".into()));
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn pods_print_as_kubectl_does() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let base = |status: serde_json::Value, deleting: bool| {
            let mut metadata =
                json!({"name": "web", "namespace": "shop", "creationTimestamp": "2026-12-07T11:58:00Z"});
            if deleting {
                metadata["deletionTimestamp"] = json!("2026-12-07T11:59:59Z");
            }
            pod(json!({"metadata": metadata,
                "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]}, "status": status}))
        };
        let running = |restarts: i32| {
            json!({"name": "a", "ready": true, "restartCount": restarts, "image": "i", "imageID": "",
            "state": {"running": {}}})
        };
        let cases: Vec<(&str, Pod, bool, bool, Vec<&str>)> = vec![
            (
                "running",
                base(
                    json!({"phase": "Running", "podIP": "10.0.0.5",
                "containerStatuses": [running(1), running(2)]}),
                    false,
                ),
                false,
                false,
                vec!["web", "2/2", "Running", "3", "2m"],
            ),
            (
                "crash looping",
                base(
                    json!({"phase": "Running", "containerStatuses": [running(0),
                {"name": "b", "ready": false, "restartCount": 4, "image": "i", "imageID": "",
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
                    false,
                ),
                false,
                false,
                vec!["web", "1/2", "CrashLoopBackOff", "4", "2m"],
            ),
            (
                "terminated without a reason",
                base(
                    json!({"phase": "Failed", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                 "state": {"terminated": {"exitCode": 3}}}]}),
                    false,
                ),
                false,
                false,
                vec!["web", "0/2", "ExitCode:3", "0", "2m"],
            ),
            (
                "pending, wide, all namespaces",
                base(json!({"phase": "Pending"}), false),
                true,
                true,
                vec!["shop", "web", "0/2", "Pending", "0", "2m", "<none>", "n1"],
            ),
            (
                "terminating",
                base(json!({"phase": "Running", "containerStatuses": [running(0)]}), true),
                false,
                false,
                vec!["web", "1/2", "Terminating", "0", "2m"],
            ),
        ];
        for (name, pod, wide, namespaces, want) in cases {
            assert_eq!(pod_row(&pod, wide, namespaces, now), want, "{name}");
            assert_eq!(pod_header(wide, namespaces).len(), want.len(), "{name}: header and row agree");
        }
    }
}
