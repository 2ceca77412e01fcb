//! Hosted clusters created one after another, at once, and many for the
//! operator's memory per cluster.

use std::time::{Duration, Instant};

use serde_json::json;

use super::env::*;
use super::report::*;

pub async fn sequential(env: &mut Env, n: usize, nodes: i32, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    println!(
        "\ncreate -> Ready on {VERSION}, {n} clusters one after another (each deleted before the next):"
    );
    let mut runs = Vec::new();
    for i in 0..n {
        let mut run = [Run::new(format!("seq-{i}"))];
        env.create_dedicated(&run[0].name, nodes, 1, VERSION).await?;
        env.wait_ready(&mut run, Duration::from_secs(300)).await?;
        let [run] = run;
        println!(
            "  {:<7} {:>6}   (first True at: {})",
            run.name,
            run.ready.map(secs).unwrap_or_default(),
            stages_line(&run.first_true)
        );
        runs.push(run);
        env.delete_all().await?;
    }
    let t = ready_times(&runs);
    let (p50, max) = (percentile(&t, 0.5), t.last().copied().unwrap_or_default());
    println!(
        "  p50 {}  max {}   median stages: {}",
        secs(p50),
        secs(max),
        stages_line(&median_stages(&runs))
    );
    rows.push(Row::new(
        format!("create -> Ready on {VERSION}, 1 cluster, p50 of {n} in a row"),
        secs(p50),
        "< 10 s",
        goal_verdict(p50 < Duration::from_secs(10)),
    ));
    rows.push(Row::new(
        format!("create -> Ready on {VERSION}, 1 cluster, max of {n} in a row"),
        secs(max),
        "< 15 s",
        goal_verdict(max < Duration::from_secs(15)),
    ));
    Ok(())
}

pub async fn concurrent(env: &mut Env, n: usize, nodes: i32, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    println!("\ncreate -> Ready, {n} clusters at once (each with its own etcd):");
    let started = Instant::now();
    let mut runs: Vec<Run> = (0..n).map(|i| Run::new(format!("batch-{i}"))).collect();
    for run in &mut runs {
        run.started = Instant::now();
        env.create_dedicated(&run.name, nodes, 1, VERSION).await?;
    }
    env.wait_ready(&mut runs, Duration::from_secs(600)).await?;
    let wall = started.elapsed();
    for run in &runs {
        println!(
            "  {:<9} {:>6}   (first True at: {})",
            run.name,
            run.ready.map(secs).unwrap_or_default(),
            stages_line(&run.first_true)
        );
    }
    let t = ready_times(&runs);
    let (p50, max) = (percentile(&t, 0.5), t.last().copied().unwrap_or_default());
    println!(
        "  p50 {}  max {}  wall {}   median stages: {}",
        secs(p50),
        secs(max),
        secs(wall),
        stages_line(&median_stages(&runs))
    );
    rows.push(Row::info(format!("create -> Ready, {n} at once, p50"), secs(p50)));
    rows.push(Row::info(format!("create -> Ready, {n} at once, max"), secs(max)));
    rows.push(Row::info(format!("create -> Ready, {n} at once, wall time of the batch"), secs(wall)));
    env.delete_all().await
}

pub async fn memory(env: &mut Env, n: usize, batch: usize, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    println!(
        "\noperator memory: RSS of the `flotilla hub run` process (hub controllers + etcd and hosted-cluster \
         operators) with 1 and with {n} hosted clusters Ready; these have 0 nodes and share one EtcdCluster \
         under distinct key prefixes (spec.etcd.shared)"
    );
    let settle = Duration::from_secs(15);
    env.create_etcd("shared-etcd", None).await?;
    let shared = |i: usize| json!({"shared": {"clusterRef": "shared-etcd", "prefix": format!("/clusters/mem-{i:02}")}});
    let mut first = [Run::new("mem-00".into())];
    env.create_cluster(&first[0].name, shared(0), 0, 1, VERSION).await?;
    env.wait_ready(&mut first, Duration::from_secs(300)).await?;
    tokio::time::sleep(settle).await;
    let rss1 = env.operator_rss()?;
    println!(
        "  1 cluster Ready ({}): RSS {} (anonymous {})",
        first[0].ready.map(secs).unwrap_or_default(),
        mib(rss1.total as f64),
        mib(rss1.anon as f64)
    );

    let started = Instant::now();
    let names: Vec<usize> = (1..n).collect();
    for batch in names.chunks(batch.max(1)) {
        let mut runs: Vec<Run> = Vec::new();
        for &i in batch {
            let run = Run::new(format!("mem-{i:02}"));
            env.create_cluster(&run.name, shared(i), 0, 1, VERSION).await?;
            runs.push(run);
        }
        env.wait_ready(&mut runs, Duration::from_secs(600)).await?;
    }
    println!("  {} more Ready, {} at a time, after {}", n - 1, batch.max(1), secs(started.elapsed()));
    // Steady state, several samples: the figure should not catch a reconcile burst.
    tokio::time::sleep(settle).await;
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.push(env.operator_rss()?);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    samples.sort_by_key(|r| r.total);
    let rssn = samples[samples.len() / 2];
    let growth = per_cluster(rss1.total, 1, rssn.total, n);
    println!(
        "  {n} clusters Ready: RSS {} (anonymous {}); median of 5 samples, range {} .. {}",
        mib(rssn.total as f64),
        mib(rssn.anon as f64),
        mib(samples[0].total as f64),
        mib(samples[samples.len() - 1].total as f64)
    );
    rows.push(Row::info("operator RSS, 1 hosted cluster", mib(rss1.total as f64)));
    rows.push(Row::info(
        format!("operator RSS, {n} hosted clusters (0 nodes, shared etcd)"),
        mib(rssn.total as f64),
    ));
    rows.push(Row::new(
        format!("operator RSS per hosted cluster (RSS{n} - RSS1)/{}", n - 1),
        mib(growth),
        "< 1 MiB (Kamaji ~6 MiB)",
        goal_verdict(growth < (1u64 << 20) as f64),
    ));
    env.delete_all().await
}
