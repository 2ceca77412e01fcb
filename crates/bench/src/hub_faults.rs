//! `flotilla-bench hub-faults`: time to converge after each fault of the hub in
//! a local fleet (`flotilla up`, one member): `hub run` killed mid-burst of
//! templates (the fleet daemon restarts it), and the hub's kube-apiserver
//! killed (restarted by the daemon; `hub run` steps down and leads again).
//! After each, the replicas lost and duplicated on the member.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DynamicObject, PostParams};
use kube::Api;
use serde_json::json;

use flotilla_cli::fleet::{read_state, ProcessRecord};

#[derive(Args, Debug)]
pub struct HubFaultsArgs {
    /// Templates in each burst (half before the fault, half after).
    #[arg(long, default_value_t = 40)]
    pub templates: usize,
    /// Give up on convergence after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

pub async fn hub_faults(args: HubFaultsArgs) -> anyhow::Result<bool> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("fleet");
    let exe = crate::flotilla_binary::path()?;
    println!("starting a local fleet (1 member, 1 hollow node)...");
    let up = std::process::Command::new(&exe)
        .args(["up", "--clusters", "1", "--nodes", "1", "--state-dir"])
        .arg(&dir)
        .output()
        .context("running flotilla up")?;
    let result = if up.status.success() {
        measure(&dir, &args).await
    } else {
        Err(anyhow::anyhow!("flotilla up failed:\n{}", String::from_utf8_lossy(&up.stdout)))
    };
    let _ = std::process::Command::new(&exe).arg("down").arg("--state-dir").arg(&dir).output();
    result
}

async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let (client, _) = flotilla_agent::client_from_kubeconfig(kubeconfig).await.map_err(anyhow::Error::msg)?;
    Ok(client)
}

async fn measure(dir: &Path, args: &HubFaultsArgs) -> anyhow::Result<bool> {
    let hub = client(&dir.join("hub.kubeconfig")).await?;
    let member: Api<Deployment> =
        Api::namespaced(client(&dir.join("clusters/member-1.kubeconfig")).await?, "default");
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
        "metadata": {"name": "bench-faults", "namespace": "default"},
        "spec": {"resourceSelectors": [{"apiVersion": "apps/v1", "kind": "Deployment"}]}}))?;
    let gvk = kube::api::GroupVersionKind::gvk("policy.flotilla.io", "v1alpha1", "PropagationPolicy");
    Api::<DynamicObject>::namespaced_with(
        hub.clone(),
        "default",
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "propagationpolicies"),
    )
    .create(&PostParams::default(), &policy)
    .await
    .context("creating the policy")?;
    let templates: Api<Deployment> = Api::namespaced(hub, "default");
    let timeout = Duration::from_secs(args.timeout);
    let half = args.templates / 2;
    let mut made = Vec::new();
    let mut ok = true;

    // `hub run` killed mid-burst.
    burst(&templates, "fault-a", half, &mut made).await?;
    let old = hub_process(dir, "flotilla-hub")?;
    kill(&old)?;
    let killed = Instant::now();
    burst(&templates, "fault-b", args.templates - half, &mut made).await?;
    let back = wait_restarted(dir, "flotilla-hub", &old, timeout).await?;
    let (converged, lost, duplicated) = converge(&member, &made, killed, timeout).await?;
    println!(
        "hub run killed mid-burst of {}: restarted by the daemon after {:.1}s, all converged {:.1}s after the kill; lost {lost}, duplicated {duplicated} replicas",
        args.templates,
        back.as_secs_f64(),
        converged.as_secs_f64()
    );
    ok &= lost == 0 && duplicated == 0;

    // The hub's API server killed.
    let old = hub_process(dir, "kube-apiserver")?;
    kill(&old)?;
    let killed = Instant::now();
    let back = wait_restarted(dir, "kube-apiserver", &old, timeout).await?;
    burst(&templates, "fault-c", args.templates, &mut made).await?;
    let (converged, lost, duplicated) = converge(&member, &made, killed, timeout).await?;
    println!(
        "hub kube-apiserver killed: restarted by the daemon after {:.1}s, a burst of {} created once it was back converged {:.1}s after the kill; lost {lost}, duplicated {duplicated} replicas",
        back.as_secs_f64(),
        args.templates,
        converged.as_secs_f64()
    );
    ok &= lost == 0 && duplicated == 0;
    Ok(ok)
}

fn hub_process(dir: &Path, name: &str) -> anyhow::Result<ProcessRecord> {
    let Some(state) = read_state(dir)? else { bail!("no fleet state in {}", dir.display()) };
    state
        .clusters
        .iter()
        .filter(|c| c.role == "hub")
        .flat_map(|c| c.processes.iter())
        .find(|p| p.name == name)
        .cloned()
        .with_context(|| format!("no hub process {name} in the fleet's record"))
}

/// SIGKILLs a process of the fleet this benchmark started, if it is still
/// the recorded one.
fn kill(record: &ProcessRecord) -> anyhow::Result<()> {
    if !record.alive() {
        bail!("{} (pid {}) is not running", record.name, record.pid);
    }
    let pid = i32::try_from(record.pid).context("pid out of range")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
    Ok(())
}

async fn wait_restarted(
    dir: &Path,
    name: &str,
    old: &ProcessRecord,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let now = hub_process(dir, name)?;
        if now.pid != old.pid && now.alive() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("{name} was not restarted within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn burst(
    templates: &Api<Deployment>,
    prefix: &str,
    count: usize,
    made: &mut Vec<(String, i32)>,
) -> anyhow::Result<()> {
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        let replicas = 1 + i32::from(i % 2 == 1);
        let template: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}}))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match templates.create(&PostParams::default(), &template).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 => break,
                Err(e) if Instant::now() > deadline => return Err(e).context(format!("creating {name}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        made.push((name, replicas));
    }
    Ok(())
}

/// Waits until the member holds every template's replicas; the time since
/// `since`, and the replicas lost and duplicated after settling.
async fn converge(
    member: &Api<Deployment>,
    made: &[(String, i32)],
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<(Duration, i32, i32)> {
    loop {
        if let Ok((0, 0)) = lost_and_duplicated(member, made).await {
            break;
        }
        if since.elapsed() > timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converged = since.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (lost, duplicated) = lost_and_duplicated(member, made).await?;
    Ok((converged, lost, duplicated))
}

async fn lost_and_duplicated(member: &Api<Deployment>, made: &[(String, i32)]) -> anyhow::Result<(i32, i32)> {
    let list = member.list(&Default::default()).await?;
    let (mut lost, mut duplicated) = (0, 0);
    for (name, want) in made {
        let have: i32 = list
            .items
            .iter()
            .filter(|d| d.metadata.name.as_deref() == Some(name.as_str()))
            .map(|d| d.spec.replicas.unwrap_or(1))
            .sum();
        lost += (want - have).max(0);
        duplicated += (have - want).max(0);
    }
    Ok((lost, duplicated))
}
