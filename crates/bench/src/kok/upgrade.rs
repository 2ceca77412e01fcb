//! A real minor upgrade (the previous minor to the current one) of a
//! two-replica control plane and its kubelet, under a client that spreads
//! requests over both apiservers like a health-checking load balancer.

use std::time::{Duration, Instant};

use anyhow::Context;
use flotilla_api::kok::UpgradeState;
use flotilla_api::machine::Machine;
use flotilla_kok_core::hosted::admin_secret_name;
use flotilla_localkube::balanced::{endpoint_client, endpoint_ready, BalancedLoad, READY_CHECK_EVERY};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::env::*;
use super::report::*;

/// Each apiserver instance's URL, by index, from the Machines' components.
pub async fn apiserver_urls(client: &Client, cluster: &str, replicas: i32) -> anyhow::Result<Vec<String>> {
    let machines = Api::<Machine>::all(client.clone()).list(&ListParams::default()).await?.items;
    flotilla_kok_core::hosted::apiserver_urls(&machines, NS, cluster, replicas)
        .into_iter()
        .enumerate()
        .map(|(index, url)| url.with_context(|| format!("no apiserver {index} on any Machine")))
        .collect()
}

/// Requests of the load-balanced client: one every 50 ms.
const REQUEST_EVERY: Duration = Duration::from_millis(50);

pub async fn upgrade(env: &mut Env, nodes: i32, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    println!(
        "\nupgrade {PREVIOUS_VERSION} -> {VERSION} (real builds of both) of a cluster with 2 apiserver replicas on \
         2 machines and {nodes} hollow node(s), a client sending GET /api/v1/namespaces/default every {} ms \
         round robin to the apiservers whose /readyz passed (checked every {} ms), no retries:",
        REQUEST_EVERY.as_millis(),
        READY_CHECK_EVERY.as_millis()
    );
    let name = "upg";
    let mut run = [Run::new(name.into())];
    env.create_dedicated(name, nodes, 2, PREVIOUS_VERSION).await?;
    env.wait_ready(&mut run, Duration::from_secs(300)).await?;
    println!("  Ready on {PREVIOUS_VERSION} after {}", run[0].ready.map(secs).unwrap_or_default());
    let urls = apiserver_urls(&env.client, name, 2).await?;
    let secret = Api::<Secret>::namespaced(env.client.clone(), NS).get(&admin_secret_name(name)).await?;
    let admin = secret
        .data
        .and_then(|d| d.get("kubeconfig").map(|k| String::from_utf8_lossy(&k.0).into_owned()))
        .context("the admin kubeconfig Secret has no kubeconfig")?;
    let mut endpoints = Vec::new();
    for url in &urls {
        let c = endpoint_client(&admin, url).await?;
        wait_until(&format!("{url} to be ready"), Duration::from_secs(60), || {
            let c = c.clone();
            async move { endpoint_ready(&c).await }
        })
        .await?;
        endpoints.push((url.clone(), c));
    }
    println!("  endpoints: {}", urls.join(", "));

    let load = BalancedLoad::start(endpoints, "/api/v1/namespaces/default", REQUEST_EVERY).await;
    let started = Instant::now();
    env.clusters()
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": VERSION}})))
        .await?;
    let mut steps: Vec<(Duration, String)> = Vec::new();
    let deadline = started + Duration::from_secs(300);
    let outcome = loop {
        let hc = env.clusters().get(name).await?;
        let upgrade = hc.status.as_ref().and_then(|s| s.upgrade.clone()).filter(|u| u.to == VERSION);
        if let Some(u) = &upgrade {
            let step = match (&u.component, u.instance) {
                (Some(c), Some(i)) => format!("{c}/{i}"),
                _ => format!("{:?}", u.state),
            };
            if steps.last().map(|(_, s)| s) != Some(&step) {
                steps.push((started.elapsed(), step));
            }
            match u.state {
                UpgradeState::Succeeded => break Ok(started.elapsed()),
                UpgradeState::RolledBack => {
                    break Err(format!("rolled back: {}", u.message.clone().unwrap_or_default()))
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            break Err(format!("not Succeeded within 300 s; last upgrade status {upgrade:?}"));
        }
        env.check_running()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let report = load.stop().await;
    println!(
        "  steps (time since the spec change the step was first seen): {}",
        steps.iter().map(|(t, s)| format!("{} {:.1}", s, t.as_secs_f64())).collect::<Vec<_>>().join(", ")
    );
    let after = apiserver_urls(&env.client, name, 2).await?;
    if after != urls {
        println!("  note: the apiserver endpoints changed during the upgrade: {}", after.join(", "));
    }
    for e in &report.endpoints {
        println!("  {}: {} requests, {} failed", e.url, e.sent, e.failed);
    }
    println!(
        "  {} requests, {} failed ({} found no ready apiserver)",
        report.requests(),
        report.failed(),
        report.without_endpoint
    );
    for failure in &report.failures {
        println!("    {failure}");
    }
    match outcome {
        Ok(took) => rows.push(Row::new(
            format!("upgrade {PREVIOUS_VERSION} -> {VERSION}, spec change -> Succeeded (2 apiservers, {nodes} node(s))"),
            secs(took),
            "< 60 s",
            goal_verdict(took < Duration::from_secs(60)),
        )),
        Err(why) => {
            println!("  upgrade did not succeed: {why}");
            rows.push(Row::new(
                format!("upgrade {PREVIOUS_VERSION} -> {VERSION}, spec change -> Succeeded (2 apiservers)"),
                "failed",
                "< 60 s",
                Verdict::Missed,
            ));
        }
    }
    rows.push(Row::new(
        format!("  failed requests of the load-balanced client (of {})", report.requests()),
        report.failed().to_string(),
        "0",
        goal_verdict(report.failed() == 0),
    ));
    env.delete_all().await
}
