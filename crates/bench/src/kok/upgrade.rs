//! A rolling upgrade of a two-replica control plane under a client that
//! polls both apiservers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flotilla_api::kok::UpgradeState;
use flotilla_api::machine::Machine;
use flotilla_kok_core::hosted::{admin_secret_name, component_name, Part};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::env::*;
use super::report::*;

/// Each apiserver instance's URL, by index, from the Machines' components.
pub async fn apiserver_urls(client: &Client, cluster: &str, replicas: i32) -> anyhow::Result<Vec<String>> {
    let machines = Api::<Machine>::all(client.clone()).list(&ListParams::default()).await?.items;
    (0..replicas)
        .map(|index| {
            let name = component_name(Part::Apiserver, NS, cluster, index);
            machines
                .iter()
                .find_map(|m| {
                    let c = m.spec.components.iter().find(|c| c.name == name)?;
                    let port = flotilla_kok_core::ports::flag_port(c, "--secure-port")?;
                    Some(format!("https://{}:{port}", m.spec.address.as_deref()?))
                })
                .with_context(|| format!("no apiserver component {name} on any Machine"))
        })
        .collect()
}

/// A client of the business cluster that talks to `url` only.
pub async fn client_at(admin_kubeconfig: &str, url: &str) -> anyhow::Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(admin_kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    config.cluster_url = url.parse()?;
    config.connect_timeout = Some(Duration::from_secs(1));
    config.read_timeout = Some(Duration::from_secs(2));
    Ok(Client::try_from(config)?)
}

pub async fn answers(client: &Client) -> bool {
    let api: Api<Namespace> = Api::all(client.clone());
    matches!(tokio::time::timeout(Duration::from_secs(2), api.get("default")).await, Ok(Ok(_)))
}

/// Polls every 100 ms like a client behind a load balancer: round robin,
/// and a failed request is retried once on the other endpoint.
pub async fn poll_through_balancer(clients: Vec<Client>, stop: Arc<AtomicBool>) -> Vec<Poll> {
    let mut polls = Vec::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let n = clients.len().max(1);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let endpoint = polls.len() % n;
        let ok = answers(&clients[endpoint]).await;
        let failover_ok = if ok { None } else { Some(answers(&clients[(endpoint + 1) % n]).await) };
        polls.push(Poll { endpoint, ok, failover_ok });
    }
    polls
}

pub async fn upgrade(env: &mut Env, nodes: i32, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    println!(
        "\nupgrade {VERSION} -> {NEXT_VERSION} of a cluster with 2 apiserver replicas on 2 machines \
         ({NEXT_VERSION} is a directory of symlinks to the same binaries), a client polling every 100 ms \
         round robin over both apiservers with failover:"
    );
    let name = "upg";
    let mut run = [Run::new(name.into())];
    env.create_dedicated(name, nodes, 2).await?;
    env.wait_ready(&mut run, Duration::from_secs(300)).await?;
    println!("  Ready after {}", run[0].ready.map(secs).unwrap_or_default());
    let urls = apiserver_urls(&env.client, name, 2).await?;
    let secret = Api::<Secret>::namespaced(env.client.clone(), NS).get(&admin_secret_name(name)).await?;
    let admin = secret
        .data
        .and_then(|d| d.get("kubeconfig").map(|k| String::from_utf8_lossy(&k.0).into_owned()))
        .context("the admin kubeconfig Secret has no kubeconfig")?;
    let mut clients = Vec::new();
    for url in &urls {
        let c = client_at(&admin, url).await?;
        wait_until(&format!("{url} to answer"), Duration::from_secs(60), || {
            let c = c.clone();
            async move { answers(&c).await }
        })
        .await?;
        clients.push(c);
    }
    println!("  endpoints: {}", urls.join(", "));

    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_through_balancer(clients, stop.clone()));
    let started = Instant::now();
    env.clusters()
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": NEXT_VERSION}})))
        .await?;
    let mut steps: Vec<(Duration, String)> = Vec::new();
    let deadline = started + Duration::from_secs(300);
    let outcome = loop {
        let hc = env.clusters().get(name).await?;
        let upgrade = hc.status.as_ref().and_then(|s| s.upgrade.clone()).filter(|u| u.to == NEXT_VERSION);
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
    stop.store(true, Ordering::Relaxed);
    let polls = poller.await?;
    let stats = poll_stats(&polls, urls.len());
    println!(
        "  steps (time since the spec change the step was first seen): {}",
        steps.iter().map(|(t, s)| format!("{} {:.1}", s, t.as_secs_f64())).collect::<Vec<_>>().join(", ")
    );
    let after = apiserver_urls(&env.client, name, 2).await?;
    if after != urls {
        println!("  note: the apiserver endpoints changed during the upgrade: {}", after.join(", "));
    }
    for (i, url) in urls.iter().enumerate() {
        println!("  {url}: {} requests, {} failed", stats.attempts[i], stats.failures[i]);
    }
    println!("  {} polls, {} failed on both endpoints", stats.polls, stats.failed_after_failover);
    match outcome {
        Ok(took) => rows.push(Row::new(
            "upgrade, spec change -> Succeeded (2 replicas)",
            secs(took),
            "< 60 s",
            goal_verdict(took < Duration::from_secs(60)),
        )),
        Err(why) => {
            println!("  upgrade did not succeed: {why}");
            rows.push(Row::new(
                "upgrade, spec change -> Succeeded (2 replicas)",
                "failed",
                "< 60 s",
                Verdict::Missed,
            ));
        }
    }
    let raw: Vec<String> =
        stats.failures.iter().zip(&stats.attempts).map(|(f, a)| format!("{f}/{a}")).collect();
    rows.push(Row::info("  failed requests per endpoint (no failover)", raw.join(" + ")));
    rows.push(Row::new(
        format!("  failed polls with failover (of {}, every 100 ms)", stats.polls),
        stats.failed_after_failover.to_string(),
        "0",
        goal_verdict(stats.failed_after_failover == 0),
    ));
    env.delete_all().await
}
