//! `flotilla rebalance KIND/NAME`: divide a template's replicas again from
//! scratch (e.g. after a cluster came back: a divided binding otherwise
//! keeps its clusters). Writes a `WorkloadRebalancer`, the resource GitOps
//! would write, and optionally waits for the hub's result.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use flotilla_api::rebalancer::{
    RebalanceResult, RebalanceWorkload, WorkloadRebalancer, WorkloadRebalancerSpec,
};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};

use crate::hub_kubeconfig::HubKubeconfig;

#[derive(Args, Debug)]
pub struct RebalanceArgs {
    /// The template on the hub, kubectl style: `deployment/web`,
    /// `deploy/web`, `statefulsets.apps/db`.
    #[arg(value_name = "KIND/NAME")]
    pub object: String,
    /// The template's namespace on the hub.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Wait for the hub's result and print it (exit 1 when it failed).
    #[arg(long)]
    pub wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Seconds the WorkloadRebalancer is kept after it finished.
    #[arg(long, default_value_t = 300)]
    pub ttl_seconds: i32,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

/// `flotilla rebalance`.
pub async fn rebalance(args: RebalanceArgs) -> anyhow::Result<bool> {
    let object = flotilla_apps_core::migration::parse_object_arg(&args.object)?;
    let hub = args.hub.client().await.context("connecting to the hub")?;
    let resolved = flotilla_hub::migration::resolve_type(&hub, &object.resource).await?;
    let workload = RebalanceWorkload {
        api_version: resolved.resource.api_version.clone(),
        kind: resolved.resource.kind.clone(),
        name: object.name.clone(),
        namespace: if resolved.namespaced { args.namespace.clone() } else { String::new() },
    };
    let rebalancer = WorkloadRebalancer {
        metadata: ObjectMeta { generate_name: Some("rebalance-".into()), ..Default::default() },
        spec: WorkloadRebalancerSpec {
            workloads: vec![workload],
            ttl_seconds_after_finished: Some(args.ttl_seconds),
        },
        status: None,
    };
    let api: Api<WorkloadRebalancer> = Api::all(hub);
    let created =
        api.create(&PostParams::default(), &rebalancer).await.context("creating the WorkloadRebalancer")?;
    let name = created.name_any();
    println!("workloadrebalancer.apps.flotilla.io/{name} created");
    if !args.wait {
        return Ok(true);
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let current = api.get_opt(&name).await?;
        let finished = current.as_ref().and_then(|r| r.status.as_ref()).filter(|s| s.finish_time.is_some());
        if let Some(status) = finished {
            let mut ok = true;
            for o in &status.observed_workloads {
                let w = &o.workload;
                let what = match w.namespace.as_str() {
                    "" => format!("{}/{}", w.kind.to_lowercase(), w.name),
                    ns => format!("{}/{} in namespace {ns}", w.kind.to_lowercase(), w.name),
                };
                match o.result {
                    Some(RebalanceResult::Successful) => println!("{what}: divided again from scratch"),
                    _ => {
                        ok = false;
                        println!(
                            "{what}: failed: {}",
                            if o.reason.is_empty() { "unknown" } else { &o.reason }
                        );
                    }
                }
            }
            return Ok(ok);
        }
        if current.is_none() {
            anyhow::bail!("{name} was deleted before it finished");
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{name} did not finish within {}s", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
