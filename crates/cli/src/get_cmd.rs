//! `flotilla get clusters | bindings | pods`: list fleet resources (and a
//! member's pods, `pods`) as kubectl
//! does, as a table (`-o wide` for more columns) or the objects themselves
//! (`-o json|yaml`), filtered by label selectors (`-l`).
//!
//! The rows are built by pure functions of the objects and `now`; here
//! they are only listed and printed.

use clap::{Args, Subcommand};
use flotilla_api::cluster::{ManagedCluster, Taint};
use flotilla_api::work::{BindingSpec, BindingStatus, ClusterResourceBinding, ResourceBinding};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt};
use serde::Serialize;

pub mod pods;

pub use crate::output::age;

use crate::hub_kubeconfig::HubKubeconfig;
use crate::output::{list_document, list_failure, render_document, table, ListArgs};

#[derive(Subcommand, Debug)]
pub enum GetCommand {
    /// The fleet's member clusters (ManagedClusters).
    ///
    /// Columns: NAME, MODE, ACCEPTED, AVAILABLE, VERSION, NODES, CPU,
    /// MEMORY, AGE; -o wide adds TAINTS, ENDPOINT and LABELS.
    ///
    /// Example: flotilla get clusters -l region=eu -o wide
    Clusters(GetClustersArgs),
    /// Where each propagated template went: its policy, its clusters (with
    /// replicas), whether it is scheduled and applied, and why not.
    ///
    /// Lists the ResourceBindings of every namespace and the
    /// ClusterResourceBindings (or, with -n, one namespace's
    /// ResourceBindings). -o wide adds the template's API version and shows
    /// the message whole.
    ///
    /// Example: flotilla get bindings -n shop -o yaml
    Bindings(GetBindingsArgs),
    /// A member cluster's pods, through the hub as your hub user (the
    /// member's RBAC applies).
    ///
    /// Columns: NAME, READY, STATUS, RESTARTS, AGE; -o wide adds IP and
    /// NODE, -A the NAMESPACE.
    ///
    /// Example: flotilla get pods --cluster m1 -n shop -o wide
    Pods(pods::GetPodsArgs),
}

#[derive(Args, Debug)]
pub struct GetClustersArgs {
    #[command(flatten)]
    pub list: ListArgs,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

#[derive(Args, Debug)]
pub struct GetBindingsArgs {
    /// Only this namespace's ResourceBindings [default: every namespace's, and the ClusterResourceBindings]
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Every namespace (the default; as kubectl's -A)
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub list: ListArgs,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

pub async fn get(cmd: GetCommand) -> anyhow::Result<bool> {
    match cmd {
        GetCommand::Clusters(args) => get_clusters(args).await,
        GetCommand::Bindings(args) => get_bindings(args).await,
        GetCommand::Pods(args) => pods::get_pods(args).await,
    }
}

/// Prints `document` as -o json|yaml asked; false when a table is wanted.
fn print_document<T: Serialize>(items: &[T], list: &ListArgs) -> anyhow::Result<bool> {
    let document = list_document(items)?;
    match render_document(&document, list.output)? {
        Some(text) => {
            println!("{}", text.trim_end());
            Ok(true)
        }
        None => Ok(false),
    }
}

async fn get_clusters(args: GetClustersArgs) -> anyhow::Result<bool> {
    let api: Api<ManagedCluster> = Api::all(args.hub.client().await?);
    let mut items = api
        .list(&args.list.list_params())
        .await
        .map_err(|e| anyhow::anyhow!(list_failure("ManagedClusters", &args.list, e)))?
        .items;
    items.sort_by_key(|mc| mc.name_any());
    if print_document(&items, &args.list)? {
        return Ok(true);
    }
    if items.is_empty() {
        println!(
            "No clusters{}. Join one with `flotilla token create` and `flotilla join`.",
            args.list.matching()
        );
        return Ok(true);
    }
    let wide = args.list.wide();
    let mut t = table(cluster_header(wide));
    let now = Timestamp::now();
    for mc in &items {
        t.add_row(cluster_row(mc, wide, now));
    }
    println!("{t}");
    Ok(true)
}

pub fn cluster_header(wide: bool) -> Vec<&'static str> {
    let mut header =
        vec!["NAME", "MODE", "ACCEPTED", "AVAILABLE", "VERSION", "NODES", "CPU", "MEMORY", "AGE"];
    if wide {
        header.extend(["TAINTS", "ENDPOINT", "LABELS"]);
    }
    header
}

/// "key=value:Effect" as kubectl shows taints.
fn taint_text(t: &Taint) -> String {
    match &t.value {
        Some(v) => format!("{}={v}:{:?}", t.key, t.effect),
        None => format!("{}:{:?}", t.key, t.effect),
    }
}

fn or_none(parts: Vec<String>) -> String {
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

pub fn cluster_row(mc: &ManagedCluster, wide: bool, now: Timestamp) -> Vec<String> {
    let status = mc.status.clone().unwrap_or_default();
    let allocatable = status.resource_summary.as_ref().map(|r| r.allocatable.clone()).unwrap_or_default();
    let mut row = vec![
        mc.name_any(),
        mc.spec.sync_mode.to_string(),
        mc.spec.hub_accepts_client.to_string(),
        mc.condition("Available").map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into()),
        status.kubernetes_version.clone().unwrap_or_default(),
        status.node_summary.as_ref().map(|n| n.display.clone()).unwrap_or_default(),
        allocatable.get("cpu").map(|q| q.0.clone()).unwrap_or_default(),
        allocatable.get("memory").map(|q| q.0.clone()).unwrap_or_default(),
        age(mc.metadata.creation_timestamp.as_ref(), now),
    ];
    if wide {
        row.push(or_none(mc.spec.taints.iter().map(taint_text).collect()));
        row.push(mc.spec.api_endpoint.clone().unwrap_or_else(|| "<none>".into()));
        row.push(or_none(mc.labels().iter().map(|(k, v)| format!("{k}={v}")).collect()));
    }
    row
}

/// Namespaced bindings, and cluster-scoped ones unless one namespace is asked for.
async fn get_bindings(args: GetBindingsArgs) -> anyhow::Result<bool> {
    let client = args.hub.client().await?;
    let params = args.list.list_params();
    let namespaced_api: Api<ResourceBinding> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut namespaced = namespaced_api
        .list(&params)
        .await
        .map_err(|e| anyhow::anyhow!(list_failure("ResourceBindings", &args.list, e)))?
        .items;
    namespaced.sort_by_key(|b| (b.namespace(), b.name_any()));
    let mut cluster_scoped = match &args.namespace {
        Some(_) => Vec::new(),
        None => {
            Api::<ClusterResourceBinding>::all(client)
                .list(&params)
                .await
                .map_err(|e| anyhow::anyhow!(list_failure("ClusterResourceBindings", &args.list, e)))?
                .items
        }
    };
    cluster_scoped.sort_by_key(|b| b.name_any());
    let objects: Vec<serde_json::Value> = namespaced
        .iter()
        .map(serde_json::to_value)
        .chain(cluster_scoped.iter().map(serde_json::to_value))
        .collect::<Result<_, _>>()?;
    if print_document(&objects, &args.list)? {
        return Ok(true);
    }
    let rows: Vec<BindingRow> = namespaced
        .iter()
        .map(|b| (b.namespace().unwrap_or_default(), &b.spec.spec, b.status.as_ref()))
        .chain(cluster_scoped.iter().map(|b| (String::new(), &b.spec.spec, b.status.as_ref())))
        .collect();
    if rows.is_empty() {
        println!(
            "No bindings{}. Create a template and a PropagationPolicy that selects it.",
            args.list.matching()
        );
        return Ok(true);
    }
    let wide = args.list.wide();
    let mut t = table(binding_header(wide));
    for (namespace, spec, status) in rows {
        t.add_row(binding_row(&namespace, spec, status, wide));
    }
    println!("{t}");
    Ok(true)
}

type BindingRow<'a> = (String, &'a BindingSpec, Option<&'a BindingStatus>);

/// How much of a condition's message the table shows (-o wide: all).
const MESSAGE_COLUMNS: usize = 80;

pub fn binding_header(wide: bool) -> Vec<&'static str> {
    let mut header = vec!["NAMESPACE", "TEMPLATE", "POLICY", "CLUSTERS", "SCHEDULED", "APPLIED", "MESSAGE"];
    if wide {
        header.insert(2, "API VERSION");
    }
    header
}

pub fn binding_row(
    namespace: &str,
    spec: &BindingSpec,
    status: Option<&BindingStatus>,
    wide: bool,
) -> Vec<String> {
    let condition = |t: &str| status.and_then(|s| s.conditions.iter().find(|c| c.type_ == t));
    let clusters: Vec<String> = spec
        .clusters
        .iter()
        .map(|c| if spec.replicas > 0 { format!("{}:{}", c.name, c.replicas) } else { c.name.clone() })
        .chain(spec.graceful_eviction_tasks.iter().map(|t| format!("{} (leaving)", t.from_cluster)))
        .collect();
    let problem = [condition("Scheduled"), condition("FullyApplied")]
        .into_iter()
        .flatten()
        .find(|c| c.status != "True")
        .map(|c| if wide { c.message.clone() } else { c.message.chars().take(MESSAGE_COLUMNS).collect() })
        .unwrap_or_default();
    let mut row = vec![
        namespace.to_string(),
        format!("{}/{}", spec.resource.kind, spec.resource.name),
        spec.policy.as_ref().map(|p| p.name.clone()).unwrap_or_else(|| "(dependency)".into()),
        clusters.join(","),
        condition("Scheduled").map(|c| c.status.clone()).unwrap_or_default(),
        condition("FullyApplied").map(|c| c.status.clone()).unwrap_or_default(),
        problem,
    ];
    if wide {
        row.insert(2, spec.resource.api_version.clone());
    }
    row
}

#[cfg(test)]
#[path = "get_cmd_tests.rs"]
mod tests;
