//! `flotilla-bench kok etcd-upgrade`: a three-member process-runtime
//! EtcdCluster moved from etcd 3.6.17 to 3.7.4 by the operator (snapshot,
//! then one member at a time, health-gated) while a client writes
//! sequential keys throughout; the time from the spec change to `Upgraded`
//! Succeeded, and how many acknowledged writes do not read back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use flotilla_api::kok::{EtcdCluster, EtcdClusterStatus};
use flotilla_api::machine::Machine;
use flotilla_kok::etcd_writes::{lost_writes, write_until};
use flotilla_kok_core::etcd::secret_name;
use flotilla_localkube::{ManagedProcess, ProcessSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use super::env::*;
use super::report::*;

const NAME: &str = "etcd-upgrade";
const FROM: &str = "3.6.17";
const TO: &str = "3.7.4";
/// Members go to distinct Machines: the environment's two and this one.
const THIRD_MACHINE: &str = "m3";

fn upgraded(status: &EtcdClusterStatus) -> Option<(String, String)> {
    let c = status.conditions.iter().find(|c| c.type_ == "Upgraded")?;
    Some((c.reason.clone(), c.message.clone()))
}

fn all_on(status: &EtcdClusterStatus, version: &str) -> bool {
    status.ready_members == 3
        && status.leader.is_some()
        && status.members.len() == 3
        && status.members.iter().all(|m| m.healthy && m.version.as_deref() == Some(version))
}

async fn wait_status(
    env: &mut Env,
    what: &str,
    timeout: Duration,
    done: impl Fn(&EtcdClusterStatus) -> bool,
) -> anyhow::Result<EtcdClusterStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = env.etcds().get(NAME).await?.status.unwrap_or_default();
        if done(&status) {
            return Ok(status);
        }
        env.check_running()?;
        if Instant::now() > deadline {
            bail!(
                "{what}: not within {}s; last status {status:?}; logs in {}",
                timeout.as_secs(),
                env.dir.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A third Machine and its node agent, owned by `env` from then on (so
/// dropping it stops them too).
async fn add_machine(env: &mut Env) -> anyhow::Result<()> {
    let machine: Machine = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": THIRD_MACHINE}, "spec": {"address": "127.0.0.1"}}))?;
    Api::<Machine>::all(env.client.clone()).create(&PostParams::default(), &machine).await?;
    let exe = crate::flotilla_binary::path()?;
    let kubeconfig = env.hub.kubeconfig_path().display().to_string();
    let state_dir = env.dir.join("machines").join(THIRD_MACHINE);
    env.state_dirs.push(state_dir.clone());
    env.agents.push(ManagedProcess::spawn(
        ProcessSpec::new(
            format!("node-agent-{THIRD_MACHINE}"),
            exe,
            env.dir.join(format!("logs/node-agent-{THIRD_MACHINE}.log")),
        )
        .args(["node-agent", "--machine", THIRD_MACHINE, "--kubeconfig", &kubeconfig, "--heartbeat", "5"])
        .arg("--state-dir")
        .arg(state_dir.display().to_string()),
    )?);
    Ok(())
}

pub async fn etcd_upgrade(env: &mut Env, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    println!("\netcd upgrade: 3 members {FROM} -> {TO} under a sequential writer");
    add_machine(env).await?;
    // The snapshot before the upgrade goes to the backup destination; a
    // yearly schedule never fires during the bench (no tick before the
    // cluster existed is taken).
    let snapshots = env.dir.join("etcd-snapshots");
    let cluster: EtcdCluster = serde_json::from_value(json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"members": 3, "version": FROM, "backup": {"schedule": "@yearly",
                 "destination": {"machine": MACHINES[0], "path": snapshots.display().to_string()}}},
    }))?;
    env.etcds().create(&PostParams::default(), &cluster).await?;
    let created = Instant::now();
    let status =
        wait_status(env, "3 members on 3.6.17", Duration::from_secs(180), |s| all_on(s, FROM)).await?;
    rows.push(Row::info(format!("etcd {FROM}, 3 members: create -> all healthy"), secs(created.elapsed())));

    let secret = Api::<Secret>::namespaced(env.client.clone(), NS).get(&secret_name(NAME)).await?;
    let data: BTreeMap<String, Vec<u8>> =
        secret.data.context("the cluster's Secret has no data")?.into_iter().map(|(k, v)| (k, v.0)).collect();
    let tls = flotilla_kok::etcd::client_tls(&data)?;
    let endpoints = status.client_urls.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let prefix = "/bench-upgrade/";
    let writer = tokio::spawn(write_until(
        tls.clone(),
        endpoints.clone(),
        prefix.into(),
        Duration::from_secs(2),
        stopped,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let patch = json!({"spec": {"version": TO}});
    env.etcds().patch(NAME, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let outcome = wait_status(env, "Upgraded", Duration::from_secs(300), |s| {
        upgraded(s).is_some_and(|(r, _)| r == "Succeeded" || r == "RolledBack" || r == "SnapshotFailed")
    })
    .await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    let tally = writer.await?;
    let lost = lost_writes(&tls, &endpoints, prefix, &tally.acked, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;

    let status = outcome?;
    let (reason, message) = upgraded(&status).unwrap_or_default();
    let record = status.upgrade.clone().unwrap_or_default();
    println!("  Upgraded: {reason}: {message}");
    println!(
        "  members moved in order: {}; snapshot: {}",
        record.moved.join(", "),
        record.snapshot.unwrap_or_default()
    );
    println!(
        "  writer: {} acknowledged puts, {} retried on another member, longest gap between acknowledgements {}",
        tally.acked.len(),
        tally.retries,
        secs(tally.longest_gap)
    );
    let succeeded = reason == "Succeeded";
    rows.push(Row::new(
        format!("etcd upgrade {FROM} -> {TO}, 3 members: spec change -> Succeeded"),
        if succeeded { secs(took) } else { format!("{reason} after {}", secs(took)) },
        "< 30 s",
        goal_verdict(succeeded && took < Duration::from_secs(30)),
    ));
    rows.push(Row::new(
        format!("  lost acknowledged writes (of {})", tally.acked.len()),
        lost.len().to_string(),
        "0",
        goal_verdict(lost.is_empty()),
    ));
    rows.push(Row::info("  longest write gap (client retrying on any member)", secs(tally.longest_gap)));
    if succeeded {
        wait_status(env, "every member on 3.7.4", Duration::from_secs(60), |s| all_on(s, TO)).await?;
    }
    env.delete_all().await
}
