//! Figures from samples and from /proc.

use std::time::Duration;

pub fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let secs = |d: Duration| d.as_secs_f64();
    let median = samples[samples.len() / 2];
    format!(
        "min {:.2}s  median {:.2}s  max {:.2}s  (n={})",
        secs(samples[0]),
        secs(median),
        secs(samples[samples.len() - 1]),
        samples.len()
    )
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 overall (11 and 12 after the command).
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}
