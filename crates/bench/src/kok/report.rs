//! The figures of `flotilla-bench kok` from what it measured: percentiles,
//! memory per cluster, a polling client's failures, the stages of a
//! cluster's creation, the result table. Pure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_api::kok::conditions;

/// Conditions in the order a cluster normally reaches them.
pub const STAGES: [&str; 7] = [
    conditions::ETCD_READY,
    conditions::CERTIFICATES_READY,
    conditions::KUBE_APISERVER_READY,
    conditions::KUBE_CONTROLLER_MANAGER_READY,
    conditions::KUBE_SCHEDULER_READY,
    conditions::ADDONS_APPLIED,
    conditions::NODES_READY,
];

/// Nearest-rank percentile of sorted samples (`p` in 0..=1).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A `/proc/PID/status` field in bytes (the kernel reports kB).
pub fn status_field_bytes(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.split(':').next() == Some(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
}

pub fn parse_rss(status: &str) -> Option<Rss> {
    Some(Rss {
        total: status_field_bytes(status, "VmRSS")?,
        anon: status_field_bytes(status, "RssAnon").unwrap_or(0),
    })
}

pub fn rss_of(pid: u32) -> Option<Rss> {
    parse_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Growth per added cluster between a measurement at `n1` and one at `n2`
/// clusters (signed: memory can also go down).
pub fn per_cluster(rss1: u64, n1: usize, rss2: u64, n2: usize) -> f64 {
    if n2 <= n1 {
        return 0.0;
    }
    (rss2 as f64 - rss1 as f64) / (n2 - n1) as f64
}

pub fn mib(bytes: f64) -> String {
    format!("{:.2} MiB", bytes / (1u64 << 20) as f64)
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    Info,
}

pub struct Row {
    pub figure: String,
    pub value: String,
    pub goal: String,
    pub verdict: Verdict,
}

impl Row {
    pub fn new(
        figure: impl Into<String>,
        value: impl Into<String>,
        goal: impl Into<String>,
        verdict: Verdict,
    ) -> Self {
        Self { figure: figure.into(), value: value.into(), goal: goal.into(), verdict }
    }

    pub fn info(figure: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(figure, value, "", Verdict::Info)
    }
}

pub fn goal_verdict(met: bool) -> Verdict {
    if met {
        Verdict::Met
    } else {
        Verdict::Missed
    }
}

/// The figures as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let head = ("figure", "measured", "goal", "");
    let width = |f: &dyn Fn(&Row) -> usize, h: &str| rows.iter().map(f).chain([h.len()]).max().unwrap_or(0);
    let w0 = width(&|r| r.figure.chars().count(), head.0);
    let w1 = width(&|r| r.value.chars().count(), head.1);
    let w2 = width(&|r| r.goal.chars().count(), head.2);
    let line = |a: &str, b: &str, c: &str, d: &str| {
        format!("{a:<w0$}  {b:>w1$}  {c:<w2$}  {d}").trim_end().to_string()
    };
    let mut out = vec![line(head.0, head.1, head.2, head.3), "-".repeat(w0 + w1 + w2 + 12)];
    for r in rows {
        let verdict = match r.verdict {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::Info => "",
        };
        out.push(line(&r.figure, &r.value, &r.goal, verdict));
    }
    out.join("\n")
}

/// When each stage (condition) first turned True, relative to creation.
pub fn stages_line(first_true: &BTreeMap<String, Duration>) -> String {
    STAGES
        .iter()
        .filter_map(|s| first_true.get(*s).map(|d| format!("{} {:.1}", short_stage(s), d.as_secs_f64())))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn short_stage(condition: &str) -> &str {
    match condition {
        conditions::ETCD_READY => "etcd",
        conditions::CERTIFICATES_READY => "certs",
        conditions::KUBE_APISERVER_READY => "apiserver",
        conditions::KUBE_CONTROLLER_MANAGER_READY => "controller-manager",
        conditions::KUBE_SCHEDULER_READY => "scheduler",
        conditions::ADDONS_APPLIED => "addons",
        conditions::NODES_READY => "nodes",
        other => other,
    }
}

/// `FIRST-LAST` of `count` ports starting at `first`.
pub fn port_range_arg(first: u16, count: u16) -> String {
    format!("{first}-{}", first.saturating_add(count.saturating_sub(1)))
}

/// One cluster creation being timed.
pub struct Run {
    pub name: String,
    pub started: Instant,
    pub ready: Option<Duration>,
    pub first_true: BTreeMap<String, Duration>,
}

impl Run {
    pub fn new(name: String) -> Self {
        Self { name, started: Instant::now(), ready: None, first_true: BTreeMap::new() }
    }
}

pub fn ready_times(runs: &[Run]) -> Vec<Duration> {
    let mut t: Vec<Duration> = runs.iter().filter_map(|r| r.ready).collect();
    t.sort();
    t
}

/// Median time each stage was reached over `runs`.
pub fn median_stages(runs: &[Run]) -> BTreeMap<String, Duration> {
    STAGES
        .iter()
        .filter_map(|s| {
            let mut t: Vec<Duration> = runs.iter().filter_map(|r| r.first_true.get(*s).copied()).collect();
            t.sort();
            (!t.is_empty()).then(|| (s.to_string(), percentile(&t, 0.5)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let t = ms(&[100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
        assert_eq!(percentile(&t, 0.5), Duration::from_millis(500));
        assert_eq!(percentile(&t, 0.99), Duration::from_millis(1000));
        assert_eq!(percentile(&t, 0.0), Duration::from_millis(100));
        assert_eq!(percentile(&ms(&[7]), 0.5), Duration::from_millis(7));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn rss_is_read_from_proc_status() {
        let status = "Name:\tflotilla\nVmHWM:\t   90000 kB\nVmRSS:\t   81920 kB\nRssAnon:\t   40960 kB\nRssFile:\t   40960 kB\n";
        assert_eq!(parse_rss(status), Some(Rss { total: 81920 * 1024, anon: 40960 * 1024 }));
        assert_eq!(parse_rss("Name:\tx\n"), None);
        // A field is matched by its whole name, not a prefix.
        assert_eq!(status_field_bytes("VmRSSx:\t1 kB\nVmRSS:\t2 kB\n", "VmRSS"), Some(2048));
    }

    #[test]
    fn per_cluster_growth_divides_by_the_added_clusters() {
        let mib = 1u64 << 20;
        assert_eq!(per_cluster(40 * mib, 1, 59 * mib, 20), mib as f64);
        assert!(per_cluster(40 * mib, 1, 39 * mib, 20) < 0.0);
        assert_eq!(per_cluster(40 * mib, 5, 50 * mib, 5), 0.0);
    }

    #[test]
    fn the_table_aligns_columns_and_marks_missed_goals() {
        let rows = [
            Row::new("create", "9.5 s", "< 15 s", Verdict::Met),
            Row::new("memory per cluster", "1.20 MiB", "< 1 MiB", Verdict::Missed),
            Row::info("wall", "30.0 s"),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[2].ends_with("met"), "{text}");
        assert!(lines[3].ends_with("MISSED"), "{text}");
        assert!(!lines[4].ends_with(' '), "{text}");
        // Values are right-aligned in one column.
        let end = |l: &str, v: &str| l.find(v).map(|i| i + v.len());
        assert_eq!(end(lines[2], "9.5 s"), end(lines[3], "1.20 MiB"));
    }

    #[test]
    fn stages_are_listed_in_order_with_short_names() {
        let first_true = BTreeMap::from([
            (conditions::KUBE_APISERVER_READY.to_string(), Duration::from_millis(4200)),
            (conditions::ETCD_READY.to_string(), Duration::from_millis(1500)),
            ("Valid".to_string(), Duration::from_millis(100)),
        ]);
        assert_eq!(stages_line(&first_true), "etcd 1.5, apiserver 4.2");
    }

    #[test]
    fn port_ranges_are_inclusive() {
        assert_eq!(port_range_arg(20000, 500), "20000-20499");
    }
}
