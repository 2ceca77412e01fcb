//! Failover without harm: the decisions that keep a short blip or a
//! fleet-wide outage from reshuffling the fleet, and that bring replicas
//! back once a cluster is healthy again.
//!
//! - a default toleration of the hub's own taints (`not-ready`,
//!   `unreachable`) for policies that do not say otherwise;
//! - the mass-disruption guard: when too many clusters (or every cluster of
//!   one failure domain) are unhealthy together, the likelier cause is the
//!   hub's view or a shared dependency, so failover halts;
//! - the return after failover: once a cluster a binding left is healthy for
//!   a stabilisation period, the binding takes the division its policy asks
//!   for again;
//! - moves in steps bounded by a max-surge, new copies healthy before old
//!   ones shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_api::cluster::{taints, Taint, TaintEffect};
use flotilla_api::work::TargetCluster;
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::jiff::Timestamp;

use crate::scheduler::{toleration_for, ClusterSnapshot, Tolerance};

/// Karmada's and Kubernetes' default (`DefaultTolerationSeconds`): long
/// enough to ride out an API server restart, an etcd leader election or a
/// network blip of a minute or two, short enough that a cluster that is
/// really gone loses its replicas within minutes.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;
/// Kubernetes' node lifecycle controller uses the same share
/// (`--unhealthy-zone-threshold`).
pub const DEFAULT_DISRUPTION_SHARE: f64 = 0.55;
/// How long a cluster must be healthy again before replicas return to it.
pub const DEFAULT_RETURN_AFTER: Duration = Duration::from_secs(120);
/// Labels whose clusters share a failure domain: when every cluster with
/// one value is unhealthy at once, the domain (not the clusters) failed.
pub const DEFAULT_DOMAIN_LABELS: &[&str] =
    &["topology.kubernetes.io/zone", ETCD_DOMAIN_LABEL, MACHINE_POOL_DOMAIN_LABEL];
/// Label on a hosted member's ManagedCluster: the EtcdCluster it stores
/// its data in (`namespace.name`), shared by the members of one etcd.
pub const ETCD_DOMAIN_LABEL: &str = "kok.flotilla.io/etcd-cluster";
/// Label on a hosted member's ManagedCluster: the machine pool its control
/// plane runs in.
pub const MACHINE_POOL_DOMAIN_LABEL: &str = "kok.flotilla.io/machine-pool";

/// The failure-domain labels of a hosted member: its EtcdCluster and its
/// control plane's machine pool. Values that cannot be label values (over
/// 63 characters) are left out.
pub fn hosted_domain_labels(
    namespace: &str,
    etcd_cluster: &str,
    machine_pool: Option<&str>,
) -> BTreeMap<String, String> {
    let etcd = format!("{namespace}.{etcd_cluster}");
    [(ETCD_DOMAIN_LABEL, Some(etcd.as_str())), (MACHINE_POOL_DOMAIN_LABEL, machine_pool)]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.filter(|v| v.len() <= 63)?.to_string())))
        .collect()
}

/// Annotation on a propagation policy: `"false"` keeps replicas where
/// failover put them instead of returning them.
pub const RETURN_ANNOTATION: &str = "policy.flotilla.io/return-after-failover";

/// The hub's failover settings (flags of `flotilla hub run`).
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverSettings {
    /// Added to every placement that does not tolerate the hub's taints
    /// itself; `None` adds nothing (failover at once).
    pub default_toleration_seconds: Option<i64>,
    /// Failover halts when more than this share of the clusters is
    /// unhealthy (0.0..=1.0; 1.0 never halts on share alone).
    pub disruption_share: f64,
    /// Cluster labels that name a shared failure domain.
    pub domain_labels: Vec<String>,
    /// Healthy this long before replicas return to a cluster.
    pub return_after: Duration,
    /// How many replicas a move may run beyond the template's count.
    pub max_surge: MaxSurge,
}

impl Default for FailoverSettings {
    fn default() -> Self {
        Self {
            default_toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
            disruption_share: DEFAULT_DISRUPTION_SHARE,
            domain_labels: DEFAULT_DOMAIN_LABELS.iter().map(|s| s.to_string()).collect(),
            return_after: DEFAULT_RETURN_AFTER,
            max_surge: MaxSurge::Percent(25),
        }
    }
}

/// Bound on the extra replicas during a move, as in a Deployment's
/// `maxSurge`: a count, or a share of the template's replicas (rounded
/// up). Always at least one, or nothing could ever move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxSurge {
    Count(i32),
    Percent(u32),
}

impl MaxSurge {
    pub fn limit(self, replicas: i32) -> i32 {
        let n = match self {
            MaxSurge::Count(n) => n,
            MaxSurge::Percent(p) => {
                let total = i64::from(replicas.max(0)) * i64::from(p);
                i32::try_from((total + 99) / 100).unwrap_or(i32::MAX)
            }
        };
        n.max(1)
    }
}

impl std::str::FromStr for MaxSurge {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid max surge {s:?}: use a count (e.g. 2) or a percentage (e.g. 25%)");
        match s.strip_suffix('%') {
            Some(p) => p.parse::<u32>().map(MaxSurge::Percent).map_err(|_| bad()),
            None => s.parse::<i32>().ok().filter(|n| *n >= 0).map(MaxSurge::Count).ok_or_else(bad),
        }
    }
}

/// The placement's tolerations plus the hub's default toleration of
/// `not-ready` and `unreachable`, each added only when the policy does not
/// already say how it treats that taint (its own toleration, limited or
/// not, wins).
pub fn with_default_tolerations(tolerations: &[Toleration], seconds: Option<i64>) -> Vec<Toleration> {
    let mut out = tolerations.to_vec();
    let Some(seconds) = seconds else { return out };
    for key in [taints::NOT_READY, taints::UNREACHABLE] {
        let taint = Taint { key: key.into(), value: None, effect: TaintEffect::NoExecute, time_added: None };
        if toleration_for(&taint, tolerations) != Tolerance::NotTolerated {
            continue;
        }
        out.push(Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: Some(seconds),
            value: None,
        });
    }
    out
}

/// Whether a cluster carries one of the hub's health taints.
pub fn hub_unhealthy(cluster: &ClusterSnapshot) -> bool {
    cluster.taints.iter().any(|t| {
        t.effect == TaintEffect::NoExecute && (t.key == taints::NOT_READY || t.key == taints::UNREACHABLE)
    })
}

/// The clusters whose failover is halted, each with why, and a one-line
/// summary for conditions and Events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Disruption {
    pub halted: BTreeMap<String, String>,
}

impl Disruption {
    pub fn is_halted(&self, cluster: &str) -> bool {
        self.halted.contains_key(cluster)
    }
    /// Why failover is halted for any of `clusters`, if it is.
    pub fn reason_for<'a>(&self, clusters: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let mut reasons: Vec<&str> =
            clusters.into_iter().filter_map(|c| self.halted.get(c).map(String::as_str)).collect();
        reasons.sort_unstable();
        reasons.dedup();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

/// The mass-disruption guard. Failover halts for every unhealthy cluster
/// when more than `share` of the fleet is unhealthy, and for the clusters
/// of a failure domain (a value of one of `domain_labels` held by at least
/// two clusters) when all of them are unhealthy. A one-cluster fleet never
/// halts: there is nowhere to fail over to anyway.
pub fn disruption(clusters: &[ClusterSnapshot], settings: &FailoverSettings) -> Disruption {
    let mut out = Disruption::default();
    let unhealthy: Vec<&ClusterSnapshot> = clusters.iter().filter(|c| hub_unhealthy(c)).collect();
    if unhealthy.is_empty() || clusters.len() < 2 {
        return out;
    }
    let share = unhealthy.len() as f64 / clusters.len() as f64;
    if share > settings.disruption_share {
        let why = format!(
            "{} of {} clusters are unhealthy at once (more than {:.0}%): more likely the hub's view \
             or a shared dependency than the clusters; failover is halted until fewer are",
            unhealthy.len(),
            clusters.len(),
            settings.disruption_share * 100.0
        );
        for c in &unhealthy {
            out.halted.insert(c.name.clone(), why.clone());
        }
        return out;
    }
    for label in &settings.domain_labels {
        let mut domains: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for c in clusters {
            if let Some(value) = c.labels.get(label) {
                let entry = domains.entry(value.as_str()).or_default();
                entry.0 += 1;
                entry.1 += usize::from(hub_unhealthy(c));
            }
        }
        for (value, (members, down)) in domains {
            if members < 2 || down < members {
                continue;
            }
            let why = format!(
                "all {members} clusters with {label}={value} are unhealthy at once: more likely \
                 their shared dependency than the clusters; failover is halted until one recovers"
            );
            for c in clusters.iter().filter(|c| c.labels.get(label).map(String::as_str) == Some(value)) {
                out.halted.entry(c.name.clone()).or_insert_with(|| why.clone());
            }
        }
    }
    out
}

/// The clusters as the scheduler should see them while failover is
/// halted: a halted cluster's health taints no longer move what runs there
/// (NoExecute becomes NoSchedule), but nothing new goes there either.
pub fn with_failover_halted(clusters: &[ClusterSnapshot], disruption: &Disruption) -> Vec<ClusterSnapshot> {
    clusters
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if disruption.is_halted(&c.name) {
                for t in &mut c.taints {
                    if t.effect == TaintEffect::NoExecute
                        && (t.key == taints::NOT_READY || t.key == taints::UNREACHABLE)
                    {
                        t.effect = TaintEffect::NoSchedule;
                    }
                }
            }
            c
        })
        .collect()
}

/// A cluster's taints once a mass disruption it was part of is over: the
/// hub's health taints count from now, so a cluster that recovers last is
/// not failed over at once because its toleration ran out while failover
/// was halted: the hub's taints, restamped (others are not the hub's to
/// write). `None` when it carries none (nothing to write).
pub fn restart_toleration_clock(cluster_taints: &[Taint], now: Timestamp) -> Option<Vec<Taint>> {
    let is_hub = |t: &Taint| {
        t.effect == TaintEffect::NoExecute && (t.key == taints::NOT_READY || t.key == taints::UNREACHABLE)
    };
    if !cluster_taints.iter().any(is_hub) {
        return None;
    }
    // Only the hub's own: the caller applies them under the hub's taint
    // manager, which must never come to own (or rewrite) anyone else's.
    Some(
        cluster_taints
            .iter()
            .filter(|t| is_hub(t))
            .map(|t| {
                let mut t = t.clone();
                t.time_added = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
                t
            })
            .collect(),
    )
}

/// Clusters a binding failed over from, after this reconcile: those it
/// had, plus every cluster that left `previous` while carrying a hub health
/// taint, minus those chosen again and those no longer in the fleet.
pub fn failed_over_from(
    before: &[String],
    previous: &[TargetCluster],
    chosen: &[TargetCluster],
    clusters: &[ClusterSnapshot],
) -> Vec<String> {
    let chosen: BTreeSet<&str> = chosen.iter().map(|c| c.name.as_str()).collect();
    let by_name: BTreeMap<&str, &ClusterSnapshot> = clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut out: BTreeSet<String> = before.iter().cloned().collect();
    for gone in previous.iter().filter(|p| !chosen.contains(p.name.as_str())) {
        if by_name.get(gone.name.as_str()).is_some_and(|c| hub_unhealthy(c)) {
            out.insert(gone.name.clone());
        }
    }
    out.retain(|name| !chosen.contains(name.as_str()) && by_name.contains_key(name.as_str()));
    out.into_iter().collect()
}

/// Whether a binding should give up its kept placement for the division
/// its policy asks for: yes once some cluster it failed over from is
/// healthy (no taint of the hub's, Available) for `return_after`. Otherwise
/// says when to look again, if one of them is on its way back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Return {
    Now(Vec<String>),
    CheckAfter(Duration),
    No,
}

pub fn should_return(
    failed_over_from: &[String],
    clusters: &[ClusterSnapshot],
    return_after: Duration,
    now: Timestamp,
) -> Return {
    let mut ready = Vec::new();
    let mut soonest: Option<Duration> = None;
    for name in failed_over_from {
        let Some(c) = clusters.iter().find(|c| &c.name == name) else { continue };
        let Some(since) = c.available_since.filter(|_| !hub_unhealthy(c) && c.schedulable) else { continue };
        let healthy_for = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
        if healthy_for >= return_after {
            ready.push(name.clone());
        } else {
            let left = return_after - healthy_for;
            soonest = Some(soonest.map_or(left, |s| s.min(left)));
        }
    }
    match (ready.is_empty(), soonest) {
        (false, _) => Return::Now(ready),
        (true, Some(after)) => Return::CheckAfter(after + Duration::from_millis(200)),
        (true, None) => Return::No,
    }
}

/// One step of a move from the replicas written now (`current`, by
/// cluster; absent = none) towards `target`, with at most `max_surge`
/// replicas beyond the target's total at any time, even while the members
/// apply the steps at their own pace.
///
/// A step either shrinks or grows, never both: the clusters above their
/// target shrink (never below the total) once every cluster that holds or
/// receives replicas is `settled` (its copy applied and healthy at what was
/// last written); otherwise the clusters below their target grow: up to
/// the total at once, and within the surge beyond it once every cluster
/// not growing is settled (so a shrink written before is in effect). Repeated, this converges; a new copy that
/// never gets healthy holds the move (bounded by the surge) instead of
/// losing replicas. Clusters not in `target` are not in the result (their
/// works go, or are kept by an eviction task).
pub fn next_step(
    current: &BTreeMap<String, i32>,
    target: &[TargetCluster],
    settled: &BTreeSet<String>,
    max_surge: i32,
) -> Vec<TargetCluster> {
    let total: i32 = target.iter().map(|t| t.replicas).sum();
    let mut step: Vec<TargetCluster> = target
        .iter()
        .map(|t| TargetCluster { name: t.name.clone(), replicas: current.get(&t.name).copied().unwrap_or(0) })
        .collect();
    let sum = |s: &[TargetCluster]| s.iter().map(|t| t.replicas).sum::<i32>();
    let all_settled = |s: &[TargetCluster], which: fn(i32, i32) -> bool| {
        target
            .iter()
            .zip(s)
            .filter(|(t, s)| s.replicas > 0 && which(s.replicas, t.replicas))
            .all(|(t, _)| settled.contains(&t.name))
    };

    let mut excess = (sum(&step) - total).max(0);
    if excess > 0 && all_settled(&step, |now, want| now <= want) {
        for (t, s) in target.iter().zip(step.iter_mut()) {
            let cut = (s.replicas - t.replicas).clamp(0, excess);
            s.replicas -= cut;
            excess -= cut;
        }
        return step;
    }
    // Growing up to the total is always safe; the surge beyond it waits
    // until every other copy is in effect (a shrink written before, say).
    let cap = if all_settled(&step, |now, want| now >= want) { total + max_surge.max(0) } else { total };
    let mut budget = cap - sum(&step);
    for (t, s) in target.iter().zip(step.iter_mut()) {
        let grow = (t.replicas - s.replicas).clamp(0, budget.max(0));
        s.replicas += grow;
        budget -= grow;
    }
    step
}

/// What a binding's move still has to do, for its status: the clusters
/// whose Work does not yet carry their share (`written`, from the Works'
/// step annotations) and the clusters being failed over from (their old
/// copies run until the new ones are healthy). `None` when settled.
pub fn move_in_progress(
    target: &[TargetCluster],
    written: &BTreeMap<String, i32>,
    evicting: &[String],
) -> Option<String> {
    let steps: Vec<String> = target
        .iter()
        .filter_map(|t| {
            let now = written.get(&t.name).copied()?;
            (now != t.replicas).then(|| format!("{} {now} of {}", t.name, t.replicas))
        })
        .collect();
    let mut parts = Vec::new();
    if !steps.is_empty() {
        parts.push(format!("replicas moving in steps within the max-surge: {}", steps.join(", ")));
    }
    if !evicting.is_empty() {
        parts.push(format!(
            "failing over from {} (old copies run until the new ones are healthy; the template's status \
             counts only the chosen clusters)",
            evicting.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    fn cluster(name: &str, tainted: bool, labels: &[(&str, &str)]) -> ClusterSnapshot {
        ClusterSnapshot {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            taints: if tainted {
                vec![Taint {
                    key: taints::UNREACHABLE.into(),
                    value: None,
                    effect: TaintEffect::NoExecute,
                    time_added: None,
                }]
            } else {
                Vec::new()
            },
            schedulable: true,
            ..Default::default()
        }
    }

    fn targets(list: &[(&str, i32)]) -> Vec<TargetCluster> {
        list.iter().map(|(n, r)| TargetCluster { name: n.to_string(), replicas: *r }).collect()
    }

    #[test]
    fn default_tolerations_are_added_only_where_the_policy_is_silent() {
        let karmada = toleration("cluster.karmada.io/not-ready", Some(30));
        let any_key = Toleration { operator: Some("Exists".into()), ..Default::default() };
        type Case<'a> = (&'a str, Vec<Toleration>, Option<i64>, Vec<(&'a str, Option<i64>)>);
        let cases: Vec<Case> = vec![
            (
                "silent policy gets both",
                vec![],
                Some(300),
                vec![(taints::NOT_READY, Some(300)), (taints::UNREACHABLE, Some(300))],
            ),
            ("no default configured", vec![], None, vec![]),
            (
                "own not-ready toleration wins (Karmada key too)",
                vec![karmada],
                Some(300),
                vec![("cluster.karmada.io/not-ready", Some(30)), (taints::UNREACHABLE, Some(300))],
            ),
            (
                "tolerating forever wins",
                vec![toleration(taints::UNREACHABLE, None)],
                Some(300),
                vec![(taints::UNREACHABLE, None), (taints::NOT_READY, Some(300))],
            ),
            ("tolerating everything adds nothing", vec![any_key], Some(300), vec![("", None)]),
            (
                "zero seconds is the policy's own choice",
                vec![toleration(taints::NOT_READY, Some(0)), toleration(taints::UNREACHABLE, Some(0))],
                Some(300),
                vec![(taints::NOT_READY, Some(0)), (taints::UNREACHABLE, Some(0))],
            ),
        ];
        for (name, given, seconds, want) in cases {
            let got: Vec<(String, Option<i64>)> = with_default_tolerations(&given, seconds)
                .into_iter()
                .map(|t| (t.key.unwrap_or_default(), t.toleration_seconds))
                .collect();
            let want: Vec<(String, Option<i64>)> =
                want.into_iter().map(|(k, s)| (k.to_string(), s)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn disruption_halts_on_share_and_on_whole_domains() {
        let settings = FailoverSettings::default();
        let etcd = |v| [("kok.flotilla.io/etcd-cluster", v)];
        let cases: Vec<(&str, Vec<ClusterSnapshot>, Vec<&str>)> = vec![
            ("all healthy", vec![cluster("a", false, &[]), cluster("b", false, &[])], vec![]),
            (
                "one of three is a real failure",
                vec![cluster("a", true, &[]), cluster("b", false, &[]), cluster("c", false, &[])],
                vec![],
            ),
            (
                "two of three is more than 55%",
                vec![cluster("a", true, &[]), cluster("b", true, &[]), cluster("c", false, &[])],
                vec!["a", "b"],
            ),
            ("every cluster at once", vec![cluster("a", true, &[]), cluster("b", true, &[])], vec!["a", "b"]),
            ("a one-cluster fleet never halts", vec![cluster("a", true, &[])], vec![]),
            (
                "a whole shared etcd down",
                vec![
                    cluster("a", true, &etcd("e1")),
                    cluster("b", true, &etcd("e1")),
                    cluster("c", false, &etcd("e2")),
                    cluster("d", false, &etcd("e2")),
                    cluster("e", false, &[]),
                ],
                vec!["a", "b"],
            ),
            (
                "half a domain is a real failure",
                vec![
                    cluster("a", true, &etcd("e1")),
                    cluster("b", false, &etcd("e1")),
                    cluster("c", false, &[]),
                ],
                vec![],
            ),
            (
                "a one-cluster domain is just a cluster",
                vec![cluster("a", true, &etcd("e1")), cluster("b", false, &[]), cluster("c", false, &[])],
                vec![],
            ),
        ];
        for (name, clusters, want) in cases {
            let got = disruption(&clusters, &settings);
            let halted: Vec<&str> = got.halted.keys().map(String::as_str).collect();
            assert_eq!(halted, want, "{name}");
        }
        let all = disruption(&[cluster("a", true, &[]), cluster("b", true, &[])], &settings);
        assert!(all.halted["a"].contains("2 of 2 clusters are unhealthy"), "{:?}", all.halted);
        assert_eq!(all.reason_for(["b", "x"]).as_deref(), Some(all.halted["b"].as_str()));
        assert_eq!(all.reason_for(["x"]), None);
    }

    #[test]
    fn halted_clusters_keep_what_runs_but_take_nothing_new() {
        let clusters = [cluster("a", true, &[]), cluster("b", true, &[])];
        let halted = Disruption { halted: [("a".to_string(), "why".to_string())].into() };
        let seen = with_failover_halted(&clusters, &halted);
        assert_eq!(seen[0].taints[0].effect, TaintEffect::NoSchedule);
        assert_eq!(seen[1].taints[0].effect, TaintEffect::NoExecute);
    }

    #[test]
    fn after_a_mass_disruption_the_toleration_counts_from_its_end() {
        let now = Timestamp::from_second(5_000).unwrap();
        let mut tainted = cluster("a", true, &[]);
        tainted.taints.push(Taint {
            key: "team".into(),
            value: None,
            effect: TaintEffect::NoSchedule,
            time_added: None,
        });
        let restamped = restart_toleration_clock(&tainted.taints, now).unwrap();
        assert_eq!(restamped[0].time_added.as_ref().unwrap().0, now);
        assert_eq!(restamped.len(), 1, "other taints are not the hub's to write: {restamped:?}");
        assert_eq!(restart_toleration_clock(&cluster("b", false, &[]).taints, now), None);
    }

    #[test]
    fn clusters_failed_over_from_are_remembered_until_chosen_again_or_gone() {
        let fleet = [cluster("a", true, &[]), cluster("b", false, &[]), cluster("c", false, &[])];
        type Case<'a> = (&'a str, Vec<&'a str>, Vec<TargetCluster>, Vec<TargetCluster>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "a tainted cluster left",
                vec![],
                targets(&[("a", 2), ("b", 2)]),
                targets(&[("b", 4)]),
                vec!["a"],
            ),
            (
                "a healthy cluster left (a policy change)",
                vec![],
                targets(&[("b", 2), ("c", 2)]),
                targets(&[("b", 4)]),
                vec![],
            ),
            (
                "remembered across reconciles",
                vec!["a"],
                targets(&[("b", 4)]),
                targets(&[("b", 4)]),
                vec!["a"],
            ),
            ("chosen again", vec!["a"], targets(&[("b", 4)]), targets(&[("a", 2), ("b", 2)]), vec![]),
            ("gone from the fleet", vec!["x"], targets(&[("b", 4)]), targets(&[("b", 4)]), vec![]),
        ];
        for (name, before, previous, chosen, want) in cases {
            let before: Vec<String> = before.into_iter().map(String::from).collect();
            assert_eq!(failed_over_from(&before, &previous, &chosen, &fleet), want, "{name}");
        }
    }

    #[test]
    fn replicas_return_once_the_cluster_is_healthy_for_the_stabilisation_period() {
        let now = Timestamp::from_second(10_000).unwrap();
        let ago = |s: i64| Some(now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(s)).unwrap());
        let with_since = |mut c: ClusterSnapshot, since| {
            c.available_since = since;
            c
        };
        let wait = Duration::from_secs(60);
        let failed = vec!["a".to_string()];
        let cases: Vec<(&str, ClusterSnapshot, Return)> = vec![
            (
                "healthy long enough",
                with_since(cluster("a", false, &[]), ago(61)),
                Return::Now(failed.clone()),
            ),
            (
                "healthy, not long enough",
                with_since(cluster("a", false, &[]), ago(20)),
                Return::CheckAfter(Duration::from_millis(40_200)),
            ),
            ("still tainted", with_since(cluster("a", true, &[]), ago(600)), Return::No),
            ("not Available", with_since(cluster("a", false, &[]), None), Return::No),
        ];
        for (name, a, want) in cases {
            assert_eq!(should_return(&failed, &[a], wait, now), want, "{name}");
        }
        assert_eq!(should_return(&[], &[], wait, now), Return::No);
    }

    #[test]
    fn moves_grow_first_and_shrink_only_once_the_new_copies_are_healthy() {
        let cur = |list: &[(&str, i32)]| -> BTreeMap<String, i32> {
            list.iter().map(|(n, r)| (n.to_string(), *r)).collect()
        };
        let set = |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
        let target = targets(&[("a", 2), ("b", 4), ("c", 4)]);
        type Case<'a> = (&'a str, BTreeMap<String, i32>, BTreeSet<String>, i32, Vec<TargetCluster>);
        let cases: Vec<Case> = vec![
            (
                "a first placement grows at once",
                cur(&[]),
                set(&[]),
                1,
                targets(&[("a", 2), ("b", 4), ("c", 4)]),
            ),
            (
                "a return grows the returning cluster by the surge",
                cur(&[("b", 5), ("c", 5)]),
                set(&["b", "c"]),
                1,
                targets(&[("a", 1), ("b", 5), ("c", 5)]),
            ),
            (
                "old copies wait for the new one",
                cur(&[("a", 1), ("b", 5), ("c", 5)]),
                set(&["b", "c"]),
                1,
                targets(&[("a", 1), ("b", 5), ("c", 5)]),
            ),
            (
                "then the old copies shrink",
                cur(&[("a", 1), ("b", 5), ("c", 5)]),
                set(&["a", "b", "c"]),
                1,
                targets(&[("a", 1), ("b", 4), ("c", 5)]),
            ),
            (
                "growth waits for the shrink to be in effect",
                cur(&[("a", 1), ("b", 4), ("c", 5)]),
                set(&["a", "c"]),
                1,
                targets(&[("a", 1), ("b", 4), ("c", 5)]),
            ),
            (
                "then grows again",
                cur(&[("a", 1), ("b", 4), ("c", 5)]),
                set(&["a", "b", "c"]),
                1,
                targets(&[("a", 2), ("b", 4), ("c", 5)]),
            ),
            (
                "a wide surge grows in one go",
                cur(&[("b", 5), ("c", 5)]),
                set(&["b", "c"]),
                10,
                targets(&[("a", 2), ("b", 5), ("c", 5)]),
            ),
            (
                "a scale-down shrinks at once",
                cur(&[("a", 4), ("b", 8), ("c", 8)]),
                set(&[]),
                1,
                targets(&[("a", 2), ("b", 4), ("c", 4)]),
            ),
            ("settled is settled", cur(&[("a", 2), ("b", 4), ("c", 4)]), set(&[]), 1, target.clone()),
            (
                "growing up to the total waits for nothing (a first placement cut short)",
                cur(&[("a", 1), ("b", 4)]),
                set(&[]),
                1,
                targets(&[("a", 2), ("b", 4), ("c", 4)]),
            ),
            (
                "but the surge beyond it does",
                cur(&[("a", 1), ("b", 5), ("c", 4)]),
                set(&["b"]),
                1,
                targets(&[("a", 1), ("b", 5), ("c", 4)]),
            ),
        ];
        for (name, current, settled, surge, want) in cases {
            let got = next_step(&current, &target, &settled, surge);
            assert_eq!(got, want, "{name}");
            let extra = got.iter().map(|t| t.replicas).sum::<i32>() - 10;
            assert!(extra <= surge, "{name}: {extra} extra replicas with a surge of {surge}");
        }
    }

    #[test]
    fn hosted_members_are_labelled_with_their_etcd_and_machine_pool() {
        let labels = hosted_domain_labels("flotilla-system", "fleet-etcd", Some("pool-a"));
        assert_eq!(labels[ETCD_DOMAIN_LABEL], "flotilla-system.fleet-etcd");
        assert_eq!(labels[MACHINE_POOL_DOMAIN_LABEL], "pool-a");
        let long = "x".repeat(70);
        let labels = hosted_domain_labels("ns", &long, None);
        assert!(labels.is_empty(), "{labels:?}");
    }

    #[test]
    fn a_move_in_progress_is_described() {
        let target = targets(&[("a", 2), ("b", 4)]);
        let written = |l: &[(&str, i32)]| -> BTreeMap<String, i32> {
            l.iter().map(|(n, r)| (n.to_string(), *r)).collect()
        };
        assert_eq!(move_in_progress(&target, &written(&[("a", 2), ("b", 4)]), &[]), None);
        assert_eq!(move_in_progress(&target, &written(&[("b", 4)]), &[]), None, "no work yet is not a move");
        let m = move_in_progress(&target, &written(&[("a", 1), ("b", 5)]), &[]).unwrap();
        assert!(m.contains("a 1 of 2, b 5 of 4"), "{m}");
        let m = move_in_progress(&target, &written(&[("a", 2), ("b", 4)]), &["c".to_string()]).unwrap();
        assert!(m.contains("failing over from c"), "{m}");
    }

    #[test]
    fn max_surge_parses_and_is_at_least_one() {
        let cases = [("25%", 10, Some(3)), ("25%", 1, Some(1)), ("0", 10, Some(1)), ("3", 10, Some(3))];
        for (text, replicas, want) in cases {
            let got = text.parse::<MaxSurge>().ok().map(|m| m.limit(replicas));
            assert_eq!(got, want, "{text} of {replicas}");
        }
        assert!("x%".parse::<MaxSurge>().unwrap_err().contains("25%"));
        assert!("-1".parse::<MaxSurge>().is_err());
    }
}
