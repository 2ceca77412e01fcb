//! The scheduler: which member clusters a binding's template goes to and
//! how many replicas each one runs, with Karmada's semantics (filters,
//! spread constraints, `Duplicated`, `Divided` by static weights, by
//! available replicas or `Aggregated`).
//!
//! Stability is a goal of its own: a binding's clusters move only when
//! something that concerns the binding changes. Every tie therefore
//! prefers the clusters the binding already uses, then the cluster name,
//! and the capacity-driven strategies change only the replicas that were
//! added or removed (Karmada's scale-up / scale-down).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::time::Duration;

use flotilla_api::cluster::{Taint, TaintEffect};
use flotilla_api::policy::{Placement, StaticClusterWeight};
use flotilla_api::work::TargetCluster;
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;

use crate::affinity::cluster_matches;
use crate::estimator::NodeConstraints;

mod affinity_groups;
mod candidates;
mod freshness;
mod snapshot;
mod toleration;

pub use affinity_groups::{
    describe_group, group_change_notice, schedule_groups, start_index, term_placement, GroupDecision,
};
use candidates::*;
pub use freshness::{stale_for_placement, to_confirm, CONFIRMED_FOR};
use snapshot::{available_for, parse_requests};
pub use snapshot::{available_replicas, available_replicas_with, resource_amount, ClusterSnapshot};
use toleration::*;
pub use toleration::{stamp_first_seen, toleration_for, TaintsSeen, Tolerance};

/// Unschedulable messages stay around this length however many clusters
/// there are (they end up in a condition message).
const MESSAGE_LIMIT: usize = 480;
/// How many names a summarized message lists per reason.
const NAMES_PER_REASON: usize = 3;
/// The longest `requeue_after` the scheduler asks for; a later expiry is
/// found again by the run at that time.
const MAX_REQUEUE: Duration = Duration::from_secs(24 * 3600);

/// Everything one scheduling decision depends on, besides the clusters.
#[derive(Debug, Clone, Copy)]
pub struct SchedulingRequest<'a> {
    pub placement: &'a Placement,
    /// the template's replicas (0 for kinds without replicas)
    pub replicas: i32,
    /// per-replica resource requests (cpu, memory, ...), as Quantities
    pub requests: &'a BTreeMap<String, Quantity>,
    /// what the replicas' pods ask of nodes (node selector, required node
    /// affinity, tolerations), for the per-node estimate
    /// (`crate::estimator::UNCONSTRAINED` when nothing)
    pub node_constraints: &'a NodeConstraints,
    /// (group_version e.g. "apps/v1" or "v1", plural e.g. "deployments");
    /// None = do not check API enablement
    pub resource: Option<(&'a str, &'a str)>,
    /// the binding's current clusters (for stability)
    pub previous: &'a [TargetCluster],
    /// The most replicas a cluster may run, by cluster (descheduling,
    /// `crate::deschedule`): a capped cluster keeps at most that many of
    /// its current replicas and takes no new ones, so a capacity-driven
    /// division places the rest on the others. Static weights and
    /// duplication ignore it.
    pub caps: &'a BTreeMap<String, i32>,
    pub now: Timestamp,
}

/// Whether a placement divides replicas by what clusters have room for
/// (`dynamicWeight: AvailableReplicas` or `Aggregated`): the divisions
/// that `SchedulingRequest::caps` acts on.
pub fn divides_by_capacity(placement: &Placement) -> bool {
    Strategy::of(placement).needs_capacity()
}

/// The chosen clusters and their replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    /// Sorted by name.
    pub clusters: Vec<TargetCluster>,
    /// Run again after this long: a toleration with `tolerationSeconds`
    /// runs out then on a cluster that fits now.
    pub requeue_after: Option<Duration>,
}

/// No placement fits; `message` says why in one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Unschedulable {
    pub message: String,
    pub requeue_after: Option<Duration>,
}

impl Unschedulable {
    fn new(message: String) -> Self {
        Unschedulable { message: truncate(message, MESSAGE_LIMIT + 20), requeue_after: None }
    }
}

/// Why a cluster was filtered out. Ordered so equal reasons sort together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rejection<'a> {
    NotSchedulable,
    Affinity,
    Taint { key: &'a str, value: Option<&'a str>, effect: &'static str },
    ToleranceRanOut { key: &'a str, effect: &'static str, at: Timestamp },
    ApisNotReported,
    ApiNotServed { group_version: &'a str, plural: &'a str },
    NoSpreadKey { label: &'a str },
}

impl fmt::Display for Rejection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotSchedulable => f.write_str("not accepted by the hub or leaving the fleet"),
            Rejection::Affinity => f.write_str("excluded by clusterAffinity"),
            Rejection::Taint { key, value: Some(value), effect } => {
                write!(f, "taint {key}={value}:{effect} not tolerated")
            }
            Rejection::Taint { key, value: None, effect } => {
                write!(f, "taint {key}:{effect} not tolerated")
            }
            Rejection::ToleranceRanOut { key, effect, at } => {
                write!(f, "toleration of taint {key}:{effect} ran out at {at}")
            }
            Rejection::ApisNotReported => f.write_str("has not reported its APIs yet"),
            Rejection::ApiNotServed { group_version, plural } => {
                write!(f, "does not serve {group_version} {plural}")
            }
            Rejection::NoSpreadKey { label } => write!(f, "has no {label} label (spreadConstraints)"),
        }
    }
}

/// Chooses the clusters for a binding and divides its replicas.
pub fn schedule(req: &SchedulingRequest, clusters: &[ClusterSnapshot]) -> Result<Scheduled, Unschedulable> {
    let placement = req.placement;
    let strategy = Strategy::of(placement);
    let spread = SpreadPlan::new(&placement.spread_constraints);
    let previous = Previous::new(req.previous);
    let needs_capacity = strategy.needs_capacity() || !spread.is_empty();
    // Requests matter only where room does; elsewhere a bad one is not our concern.
    let requests =
        if needs_capacity { parse_requests(req.requests).map_err(Unschedulable::new)? } else { Vec::new() };

    let mut candidates = Vec::with_capacity(clusters.len());
    let mut earliest_expiry: Option<Timestamp> = None;
    for cluster in clusters {
        let prev = previous.get(&cluster.name);
        let Ok(expiry) = filter(req, &spread, cluster, prev.is_some()) else { continue };
        if let Some(at) = expiry {
            earliest_expiry = Some(earliest_expiry.map_or(at, |e| e.min(at)));
        }
        let cap = req.caps.get(&cluster.name).map(|&c| c.max(0));
        // A capped cluster takes nothing new, whatever it seems to have room for.
        let available = if needs_capacity && cap.is_none() {
            available_for(cluster, &requests, req.node_constraints)
        } else {
            0
        };
        candidates.push(Candidate {
            cluster,
            previous: match cap {
                Some(cap) => prev.map(|p| p.min(cap)),
                None => prev,
            },
            available,
            group_rank: 0,
            member_rank: 0,
            group_key: "",
        });
    }
    if candidates.is_empty() {
        let why = if clusters.is_empty() {
            "the fleet has no clusters".to_string()
        } else {
            rejections_summary(req, &spread, clusters, &previous, MESSAGE_LIMIT - 30)
        };
        return Err(Unschedulable::new(format!("0/{} clusters fit: {why}", clusters.len())));
    }
    let filtered_out = clusters.len() - candidates.len();
    let context = FailureContext { req, spread: &spread, clusters, previous: &previous, filtered_out };

    apply_spread(&spread, &mut candidates, &context)?;
    let mut targets = assign(req, strategy, &requests, &candidates, &context)?;
    targets.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let requeue_after = earliest_expiry
        .map(|at| Duration::try_from(at.duration_since(req.now)).unwrap_or(Duration::ZERO).min(MAX_REQUEUE));
    Ok(Scheduled { clusters: targets, requeue_after })
}

/// Runs the filters on one cluster: Ok with the time a limited toleration
/// runs out (if any), or the first reason it does not fit.
fn filter<'c>(
    req: &SchedulingRequest<'c>,
    spread: &SpreadPlan<'c>,
    cluster: &'c ClusterSnapshot,
    in_previous: bool,
) -> Result<Option<Timestamp>, Rejection<'c>> {
    if !cluster.schedulable {
        return Err(Rejection::NotSchedulable);
    }
    if let Some(affinity) = &req.placement.cluster_affinity {
        if !cluster_matches(affinity, &cluster.name, &cluster.labels) {
            return Err(Rejection::Affinity);
        }
    }
    let expiry = check_taints(&cluster.taints, &req.placement.cluster_tolerations, in_previous, req.now)?;
    if let Some((group_version, plural)) = req.resource {
        // Like Karmada, a cluster keeps what it runs while its API list is
        // not (re)reported; it only never gets new templates that way.
        if cluster.api_enablements.is_empty() {
            if !in_previous {
                return Err(Rejection::ApisNotReported);
            }
        } else if !cluster
            .api_enablements
            .iter()
            .any(|e| e.group_version == group_version && e.resources.iter().any(|r| r == plural))
        {
            return Err(Rejection::ApiNotServed { group_version, plural });
        }
    }
    if let Some(missing) = spread.groups.iter().find(|g| g.key_of(cluster).is_none()) {
        return Err(Rejection::NoSpreadKey { label: missing.label });
    }
    Ok(expiry)
}

/// `NoSchedule` keeps new templates away (clusters already used keep
/// theirs, as in Karmada); `NoExecute` also moves templates away, at once
/// or when their `tolerationSeconds` run out; `PreferNoSchedule` is only a
/// preference and ignored.
fn check_taints<'c>(
    cluster_taints: &'c [Taint],
    tolerations: &[Toleration],
    in_previous: bool,
    now: Timestamp,
) -> Result<Option<Timestamp>, Rejection<'c>> {
    let mut earliest: Option<Timestamp> = None;
    for taint in cluster_taints {
        let effect = effect_name(taint.effect);
        let rejected = Rejection::Taint { key: &taint.key, value: taint.value.as_deref(), effect };
        match taint.effect {
            TaintEffect::PreferNoSchedule => {}
            TaintEffect::NoSchedule => {
                if !in_previous && toleration_for(taint, tolerations) == Tolerance::NotTolerated {
                    return Err(rejected);
                }
            }
            TaintEffect::NoExecute => match toleration_for(taint, tolerations) {
                Tolerance::NotTolerated => return Err(rejected),
                Tolerance::Always => {}
                Tolerance::Until(at) if at > now => earliest = Some(earliest.map_or(at, |e| e.min(at))),
                Tolerance::Until(at) => {
                    return Err(Rejection::ToleranceRanOut { key: &taint.key, effect, at })
                }
            },
        }
    }
    Ok(earliest)
}

/// What failure messages need to explain the clusters that were filtered.
struct FailureContext<'r, 'c> {
    req: &'r SchedulingRequest<'c>,
    spread: &'r SpreadPlan<'c>,
    clusters: &'c [ClusterSnapshot],
    previous: &'r Previous<'c>,
    filtered_out: usize,
}

impl FailureContext<'_, '_> {
    /// `message`, plus why the other clusters did not fit if any did not.
    fn fail(&self, message: String) -> Unschedulable {
        if self.filtered_out == 0 {
            return Unschedulable::new(message);
        }
        let budget = MESSAGE_LIMIT.saturating_sub(message.len() + 30).max(60);
        let others = rejections_summary(self.req, self.spread, self.clusters, self.previous, budget);
        Unschedulable::new(format!("{message}; {} other clusters do not fit: {others}", self.filtered_out))
    }
}

/// Why clusters were filtered, in about `budget` characters: each cluster
/// with its reason, or when that is too long, each reason with its count
/// and a few names. Only runs when scheduling fails.
fn rejections_summary(
    req: &SchedulingRequest,
    spread: &SpreadPlan,
    clusters: &[ClusterSnapshot],
    previous: &Previous,
    budget: usize,
) -> String {
    let mut rejected: Vec<(Rejection, &str)> = clusters
        .iter()
        .filter_map(|c| {
            let reason = filter(req, spread, c, previous.get(&c.name).is_some()).err()?;
            Some((reason, c.name.as_str()))
        })
        .collect();
    rejected.sort_unstable_by(|a, b| a.1.cmp(b.1));
    let mut detailed = String::new();
    for (reason, name) in &rejected {
        if !detailed.is_empty() {
            detailed.push_str("; ");
        }
        let _ = write!(detailed, "{name}: {reason}");
        if detailed.len() > budget {
            break;
        }
    }
    if detailed.len() <= budget {
        return detailed;
    }

    rejected.sort_unstable();
    let mut groups: Vec<(usize, &[(Rejection, &str)])> = Vec::new();
    for run in rejected.chunk_by(|a, b| a.0 == b.0) {
        groups.push((run.len(), run));
    }
    groups.sort_by_key(|(count, _)| Reverse(*count));
    let mut summary = String::new();
    for (count, run) in groups {
        let names: Vec<&str> = run.iter().take(NAMES_PER_REASON).map(|(_, n)| *n).collect();
        let more = if count > NAMES_PER_REASON { ", …" } else { "" };
        let part = format!("{}: {count} ({}{more})", run[0].0, names.join(", "));
        if !summary.is_empty() && summary.len() + part.len() + 2 > budget {
            summary.push_str("; …");
            break;
        }
        if !summary.is_empty() {
            summary.push_str("; ");
        }
        summary.push_str(&part);
    }
    truncate(summary, budget)
}

fn truncate(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut cut = limit.saturating_sub(3);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push('…');
    text
}

/// Up to `limit` items joined by ", ", with "… N more" after.
fn list_some<T: fmt::Display>(items: impl ExactSizeIterator<Item = T>, limit: usize) -> String {
    let total = items.len();
    let mut out = String::new();
    for (i, item) in items.take(limit).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{item}");
    }
    if total > limit {
        let _ = write!(out, ", … {} more", total - limit);
    }
    out
}

/// Narrows the candidates to what the spread constraints choose.
fn apply_spread(
    spread: &SpreadPlan,
    candidates: &mut Vec<Candidate>,
    context: &FailureContext,
) -> Result<(), Unschedulable> {
    let clusters_needed = spread.clusters.map_or(0, |(min, _)| min);
    for group in &spread.groups {
        choose_groups(group, clusters_needed, candidates, context)?;
    }
    let Some((min, max)) = spread.clusters else { return Ok(()) };
    if candidates.len() < min {
        return Err(context.fail(format!(
            "spreadConstraints need at least {min} clusters but only {} fit",
            candidates.len()
        )));
    }
    // As in Karmada (`selectBestClustersByRegion`), every chosen group
    // keeps its best cluster even where that is more than the cluster
    // limit: the group spread wins, the limit only bounds the extra ones.
    let groups_chosen = candidates.iter().map(|c| c.group_rank).collect::<BTreeSet<_>>().len();
    let max = if max == 0 { 0 } else { max.max(groups_chosen) };
    if max == 0 || candidates.len() <= max {
        return Ok(());
    }
    // Round robin over the chosen groups: the best cluster of every group
    // first, so a cluster limit does not undo a group spread.
    candidates.sort_unstable_by(|a, b| a.group_rank.cmp(&b.group_rank).then_with(|| preference(a, b)));
    let mut rank = 0;
    for i in 0..candidates.len() {
        rank = if i > 0 && candidates[i - 1].group_rank == candidates[i].group_rank { rank + 1 } else { 0 };
        candidates[i].member_rank = rank;
    }
    candidates.sort_by(|a, b| a.member_rank.cmp(&b.member_rank).then(a.group_rank.cmp(&b.group_rank)));
    candidates.truncate(max);
    for group in &spread.groups {
        let mut keys: Vec<&str> = candidates.iter().filter_map(|c| group.key_of(c.cluster)).collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.len() < group.min {
            return Err(context.fail(format!(
                "spreadConstraints need at least {} {} but at most {max} clusters",
                group.min, group.noun
            )));
        }
    }
    Ok(())
}

/// Keeps the candidates of the chosen groups of one group constraint:
/// groups already used first, then those with the most room, then by name.
/// As in Karmada (`selectRegions`), as few groups as satisfy the
/// constraint's `minGroups` and hold the `clusters_needed` of the cluster
/// constraint, never more than its `maxGroups`.
fn choose_groups<'c>(
    group: &GroupConstraint,
    clusters_needed: usize,
    candidates: &mut Vec<Candidate<'c>>,
    context: &FailureContext,
) -> Result<(), Unschedulable> {
    struct Group<'c> {
        key: &'c str,
        start: usize,
        end: usize,
        used: bool,
        room: i64,
    }
    for c in candidates.iter_mut() {
        c.group_key = group.key_of(c.cluster).unwrap_or_default();
    }
    candidates.sort_unstable_by(|a, b| a.group_key.cmp(b.group_key));
    let mut groups: Vec<Group> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if g.key == c.group_key => {
                g.end = i + 1;
                g.used |= c.in_previous();
                g.room = g.room.saturating_add(c.available);
            }
            _ => groups.push(Group {
                key: c.group_key,
                start: i,
                end: i + 1,
                used: c.in_previous(),
                room: c.available,
            }),
        }
    }
    if groups.len() < group.min {
        let names = list_some(groups.iter().map(|g| g.key), 10);
        return Err(context.fail(format!(
            "spreadConstraints need at least {} {} but the fitting clusters are in {} ({names})",
            group.min,
            group.noun,
            groups.len()
        )));
    }
    groups.sort_by(|a, b| b.used.cmp(&a.used).then(b.room.cmp(&a.room)).then_with(|| a.key.cmp(b.key)));
    let sizes: Vec<usize> = groups.iter().map(|g| g.end - g.start).collect();
    let chosen = groups_to_choose(&sizes, group.min, group.max, clusters_needed);
    for c in candidates.iter_mut() {
        c.group_rank = usize::MAX;
    }
    for (rank, g) in groups[..chosen].iter().enumerate() {
        for c in &mut candidates[g.start..g.end] {
            c.group_rank = rank;
        }
    }
    candidates.retain(|c| c.group_rank != usize::MAX);
    Ok(())
}

/// How many of the groups (in order of preference, `sizes` their
/// clusters) to choose: the fewest that reach `min` groups (at least one)
/// and hold `clusters_needed` clusters, at most `max` (0: no limit) and
/// the groups there are. Where even that many cannot hold the clusters
/// needed, the cluster constraint's own check says so.
fn groups_to_choose(sizes: &[usize], min: usize, max: usize, clusters_needed: usize) -> usize {
    let limit = if max > 0 { max.min(sizes.len()) } else { sizes.len() };
    let mut held = 0;
    for (i, size) in sizes.iter().enumerate().take(limit) {
        held += size;
        if i + 1 >= min.max(1) && held >= clusters_needed {
            return i + 1;
        }
    }
    limit
}

/// A cluster's share while dividing replicas.
#[derive(Debug)]
struct Share<'c> {
    name: &'c str,
    weight: i64,
    /// Its replicas in the current placement, if it is there.
    previous: Option<i32>,
    replicas: i64,
}

/// Adds `total` replicas to the shares in proportion to their weights; the
/// rest after rounding down goes to the largest remainders, ties to the
/// higher weight, then to clusters already used (those with more replicas
/// first), then by name.
fn divide(total: i64, shares: &mut [Share]) {
    let sum: i128 = shares.iter().map(|s| i128::from(s.weight.max(0))).sum();
    if sum == 0 || total <= 0 {
        return;
    }
    let mut given: i128 = 0;
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(shares.len());
    for (i, share) in shares.iter_mut().enumerate() {
        let product = i128::from(total) * i128::from(share.weight.max(0));
        let whole = product / sum;
        share.replicas += i64::try_from(whole).unwrap_or(0);
        given += whole;
        if share.weight > 0 {
            remainders.push((product % sum, i));
        }
    }
    let left = usize::try_from(i128::from(total) - given).unwrap_or(0);
    if left == 0 {
        return;
    }
    let order = |a: &(i128, usize), b: &(i128, usize)| {
        let (sa, sb) = (&shares[a.1], &shares[b.1]);
        b.0.cmp(&a.0)
            .then(sb.weight.cmp(&sa.weight))
            .then(sb.previous.cmp(&sa.previous))
            .then_with(|| sa.name.cmp(sb.name))
    };
    if left < remainders.len() {
        remainders.select_nth_unstable_by(left, order);
    }
    for &(_, i) in remainders.iter().take(left) {
        shares[i].replicas += 1;
    }
}

fn target(name: &str, replicas: i64) -> TargetCluster {
    TargetCluster { name: name.to_string(), replicas: i32::try_from(replicas).unwrap_or(i32::MAX) }
}

fn assign(
    req: &SchedulingRequest,
    strategy: Strategy,
    requests: &[(&str, u128)],
    candidates: &[Candidate],
    context: &FailureContext,
) -> Result<Vec<TargetCluster>, Unschedulable> {
    let replicas = i64::from(req.replicas.max(0));
    match strategy {
        Strategy::Duplicated => return Ok(candidates.iter().map(|c| target(c.name(), replicas)).collect()),
        // Templates without replicas go to every chosen cluster (Karmada).
        _ if replicas == 0 => return Ok(candidates.iter().map(|c| target(c.name(), 0)).collect()),
        _ => {}
    }
    let shares = match strategy {
        Strategy::StaticWeights(list) => by_static_weights(list, replicas, candidates, context)?,
        Strategy::AvailableReplicas | Strategy::Aggregated => by_capacity(
            matches!(strategy, Strategy::Aggregated),
            replicas,
            requests,
            candidates,
            req,
            context,
        )?,
        Strategy::Duplicated => Vec::new(),
    };
    Ok(shares.into_iter().filter(|s| s.replicas > 0).map(|s| target(s.name, s.replicas)).collect())
}

fn by_static_weights<'c>(
    list: &[StaticClusterWeight],
    replicas: i64,
    candidates: &[Candidate<'c>],
    context: &FailureContext,
) -> Result<Vec<Share<'c>>, Unschedulable> {
    let weight_of = |c: &Candidate| {
        if list.is_empty() {
            return 1;
        }
        list.iter()
            .find(|w| cluster_matches(&w.target_cluster, c.name(), &c.cluster.labels))
            .map_or(0, |w| w.weight.max(0))
    };
    let mut shares: Vec<Share> = candidates
        .iter()
        .filter_map(|c| {
            let weight = weight_of(c);
            (weight > 0).then(|| Share { name: &c.cluster.name, weight, previous: c.previous, replicas: 0 })
        })
        .collect();
    if shares.is_empty() {
        let names = list_some(candidates.iter().map(|c| c.name()), 10);
        return Err(context.fail(format!("no fitting cluster matches staticWeightList (fitting: {names})")));
    }
    divide(replicas, &mut shares);
    Ok(shares)
}

/// Divided by available replicas (`AvailableReplicas`, and `Aggregated`
/// which first narrows to as few clusters as hold the replicas). As in
/// Karmada, the current placement is the base: the same count keeps it,
/// fewer replicas shrink every cluster in proportion, more replicas place
/// only the increment.
fn by_capacity<'c>(
    aggregated: bool,
    replicas: i64,
    requests: &[(&str, u128)],
    candidates: &[Candidate<'c>],
    req: &SchedulingRequest,
    context: &FailureContext,
) -> Result<Vec<Share<'c>>, Unschedulable> {
    let share = |c: &Candidate<'c>, weight: i64, replicas: i64| Share {
        name: &c.cluster.name,
        weight,
        previous: c.previous,
        replicas,
    };
    let current = |c: &Candidate| i64::from(c.previous.unwrap_or(0).max(0));
    let assigned: i64 = candidates.iter().map(current).sum();
    if assigned == replicas {
        return Ok(candidates.iter().map(|c| share(c, 0, current(c))).collect());
    }
    if assigned > replicas {
        let mut shares: Vec<Share> =
            candidates.iter().filter(|c| current(c) > 0).map(|c| share(c, current(c), 0)).collect();
        divide(replicas, &mut shares);
        return Ok(shares);
    }

    let increment = replicas - assigned;
    let room: i64 = candidates.iter().map(|c| c.available).sum();
    if room < increment {
        let mut by_room: Vec<&Candidate> = candidates.iter().collect();
        by_room.sort_unstable_by(|a, b| b.available.cmp(&a.available).then_with(|| a.name().cmp(b.name())));
        let per_replica = if requests.is_empty() {
            String::new()
        } else {
            let list =
                req.requests.iter().map(|(r, q)| format!("{r} {}", q.0)).collect::<Vec<_>>().join(", ");
            format!(" at {list} per replica")
        };
        let clusters = list_some(by_room.iter().map(|c| format!("{} {}", c.name(), c.available)), 8);
        return Err(context.fail(format!(
            "not enough capacity: {increment} more replicas to place{per_replica} but the fitting clusters \
             hold {room} more ({clusters})"
        )));
    }
    let mut shares: Vec<Share> = candidates.iter().map(|c| share(c, c.available, current(c))).collect();
    if aggregated {
        // As few clusters as hold the increment, those already used first.
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_unstable_by(|&a, &b| preference(&candidates[a], &candidates[b]));
        let mut held = 0;
        for &i in &order {
            if held >= increment {
                shares[i].weight = 0;
            }
            held += candidates[i].available;
        }
    }
    divide(increment, &mut shares);
    Ok(shares)
}

#[cfg(test)]
#[path = "scheduler/node_estimate_tests.rs"]
mod node_estimate_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::cluster::{taints, ApiEnablement, ManagedCluster};
    use flotilla_api::policy::{
        DynamicWeightFactor, ReplicaDivisionPreference, ReplicaSchedulingType, SpreadByField,
        SpreadConstraint,
    };

    use flotilla_api::policy::{
        ClusterAffinity, ClusterPreferences, FieldSelector, FieldSelectorOperator, FieldSelectorRequirement,
        ReplicaSchedulingStrategy,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    const REGION: &str = "topology.kubernetes.io/region";

    fn ts(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn cluster(name: &str) -> ClusterSnapshot {
        ClusterSnapshot {
            name: name.into(),
            schedulable: true,
            api_enablements: vec![
                ApiEnablement { group_version: "apps/v1".into(), resources: vec!["deployments".into()] },
                ApiEnablement { group_version: "v1".into(), resources: vec!["configmaps".into()] },
            ],
            // Room for 10 replicas of 1 cpu / 1Gi, 100 pods.
            allocatable: [("cpu", 10_000), ("memory", 10 << 30), ("pods", 100)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            allocated: BTreeMap::new(),
            ..Default::default()
        }
    }

    fn with_label(mut c: ClusterSnapshot, key: &str, value: &str) -> ClusterSnapshot {
        c.labels.insert(key.into(), value.into());
        c
    }

    /// A cluster with room for `n` replicas of `one_cpu()`.
    fn with_room(mut c: ClusterSnapshot, n: u128) -> ClusterSnapshot {
        c.allocatable.insert("cpu".into(), n * 1000);
        c
    }

    fn with_taint(
        mut c: ClusterSnapshot,
        key: &str,
        effect: TaintEffect,
        added: Option<i64>,
    ) -> ClusterSnapshot {
        c.taints.push(Taint { key: key.into(), value: None, effect, time_added: added.map(|s| Time(ts(s))) });
        c
    }

    fn one_cpu() -> BTreeMap<String, Quantity> {
        [("cpu".to_string(), Quantity("1".into())), ("memory".to_string(), Quantity("1Gi".into()))]
            .into_iter()
            .collect()
    }

    fn toleration(key: &str, op: &str, effect: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.to_string()),
            operator: Some(op.into()),
            effect: (!effect.is_empty()).then(|| effect.to_string()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    fn divided(preference: ReplicaDivisionPreference, weights: Option<ClusterPreferences>) -> Placement {
        Placement {
            replica_scheduling: Some(ReplicaSchedulingStrategy {
                replica_scheduling_type: Some(ReplicaSchedulingType::Divided),
                replica_division_preference: Some(preference),
                weight_preference: weights,
            }),
            ..Default::default()
        }
    }

    fn dynamic() -> Placement {
        divided(
            ReplicaDivisionPreference::Weighted,
            Some(ClusterPreferences {
                dynamic_weight: Some(DynamicWeightFactor::AvailableReplicas),
                ..Default::default()
            }),
        )
    }

    fn aggregated() -> Placement {
        divided(ReplicaDivisionPreference::Aggregated, None)
    }

    fn names(list: &[&str]) -> ClusterAffinity {
        ClusterAffinity { cluster_names: list.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    fn static_weights(weights: &[(&[&str], i64)]) -> Placement {
        divided(
            ReplicaDivisionPreference::Weighted,
            Some(ClusterPreferences {
                static_weight_list: weights
                    .iter()
                    .map(|(n, w)| StaticClusterWeight { target_cluster: names(n), weight: *w })
                    .collect(),
                ..Default::default()
            }),
        )
    }

    fn targets(list: &[(&str, i32)]) -> Vec<TargetCluster> {
        list.iter().map(|(n, r)| TargetCluster { name: n.to_string(), replicas: *r }).collect()
    }

    struct Run<'a> {
        placement: &'a Placement,
        replicas: i32,
        requests: BTreeMap<String, Quantity>,
        resource: Option<(&'a str, &'a str)>,
        previous: Vec<TargetCluster>,
        caps: BTreeMap<String, i32>,
        now: Timestamp,
    }

    fn run(placement: &Placement, replicas: i32) -> Run<'_> {
        Run {
            placement,
            replicas,
            requests: one_cpu(),
            resource: Some(("apps/v1", "deployments")),
            previous: Vec::new(),
            caps: BTreeMap::new(),
            now: ts(10_000),
        }
    }

    impl Run<'_> {
        fn previous(mut self, list: &[(&str, i32)]) -> Self {
            self.previous = targets(list);
            self
        }
        fn capped(mut self, list: &[(&str, i32)]) -> Self {
            self.caps = list.iter().map(|(n, c)| (n.to_string(), *c)).collect();
            self
        }
        fn at(mut self, second: i64) -> Self {
            self.now = ts(second);
            self
        }
        fn on(&self, clusters: &[ClusterSnapshot]) -> Result<Scheduled, Unschedulable> {
            let req = SchedulingRequest {
                placement: self.placement,
                replicas: self.replicas,
                requests: &self.requests,
                node_constraints: &crate::estimator::UNCONSTRAINED,
                resource: self.resource,
                previous: &self.previous,
                caps: &self.caps,
                now: self.now,
            };
            schedule(&req, clusters)
        }
        fn placed(&self, clusters: &[ClusterSnapshot]) -> Vec<(String, i32)> {
            self.on(clusters).unwrap().clusters.into_iter().map(|t| (t.name, t.replicas)).collect()
        }
        fn error(&self, clusters: &[ClusterSnapshot]) -> String {
            self.on(clusters).unwrap_err().message
        }
    }

    fn pairs(list: &[(&str, i32)]) -> Vec<(String, i32)> {
        list.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    }

    fn three() -> Vec<ClusterSnapshot> {
        vec![cluster("m1"), cluster("m2"), cluster("m3")]
    }

    #[test]
    fn without_replica_scheduling_every_cluster_gets_every_replica() {
        let placement = Placement::default();
        assert_eq!(run(&placement, 3).placed(&three()), pairs(&[("m1", 3), ("m2", 3), ("m3", 3)]));
        let duplicated = Placement {
            replica_scheduling: Some(ReplicaSchedulingStrategy {
                replica_scheduling_type: Some(ReplicaSchedulingType::Duplicated),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(run(&duplicated, 2).placed(&three()), pairs(&[("m1", 2), ("m2", 2), ("m3", 2)]));
    }

    #[test]
    fn results_are_sorted_by_name_whatever_the_input_order() {
        let placement = Placement::default();
        let clusters = vec![cluster("b"), cluster("c"), cluster("a")];
        assert_eq!(run(&placement, 1).placed(&clusters), pairs(&[("a", 1), ("b", 1), ("c", 1)]));
    }

    #[test]
    fn unaccepted_or_leaving_clusters_do_not_fit() {
        let placement = Placement::default();
        let mut clusters = three();
        clusters[1].schedulable = false;
        assert_eq!(run(&placement, 1).placed(&clusters), pairs(&[("m1", 1), ("m3", 1)]));
        // Even when already used.
        assert_eq!(
            run(&placement, 1).previous(&[("m2", 1)]).placed(&clusters),
            pairs(&[("m1", 1), ("m3", 1)])
        );
    }

    #[test]
    fn cluster_affinity_filters() {
        let placement = Placement { cluster_affinity: Some(names(&["m1", "m3"])), ..Default::default() };
        assert_eq!(run(&placement, 1).placed(&three()), pairs(&[("m1", 1), ("m3", 1)]));
        let by_region = Placement {
            cluster_affinity: Some(ClusterAffinity {
                field_selector: Some(FieldSelector {
                    match_expressions: vec![FieldSelectorRequirement {
                        key: "region".into(),
                        operator: FieldSelectorOperator::In,
                        values: vec!["eu".into()],
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let clusters = vec![with_label(cluster("m1"), REGION, "us"), with_label(cluster("m2"), REGION, "eu")];
        assert_eq!(run(&by_region, 1).placed(&clusters), pairs(&[("m2", 1)]));
    }

    #[test]
    fn toleration_matching_follows_kubernetes() {
        let taint = |key: &str, value: Option<&str>, effect| Taint {
            key: key.into(),
            value: value.map(String::from),
            effect,
            time_added: None,
        };
        let t = taint("dedicated", Some("gpu"), TaintEffect::NoSchedule);
        let equal = |value: &str, effect: &str| Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some(value.into()),
            effect: (!effect.is_empty()).then(|| effect.to_string()),
            toleration_seconds: None,
        };
        assert_eq!(toleration_for(&t, &[equal("gpu", "NoSchedule")]), Tolerance::Always);
        assert_eq!(toleration_for(&t, &[equal("gpu", "")]), Tolerance::Always);
        assert_eq!(toleration_for(&t, &[equal("cpu", "")]), Tolerance::NotTolerated);
        assert_eq!(toleration_for(&t, &[equal("gpu", "NoExecute")]), Tolerance::NotTolerated);
        // Operator defaults to Equal.
        let mut default_op = equal("gpu", "");
        default_op.operator = None;
        assert_eq!(toleration_for(&t, &[default_op]), Tolerance::Always);
        assert_eq!(toleration_for(&t, &[toleration("dedicated", "Exists", "", None)]), Tolerance::Always);
        assert_eq!(toleration_for(&t, &[toleration("other", "Exists", "", None)]), Tolerance::NotTolerated);
        // Empty key with Exists tolerates everything.
        assert_eq!(toleration_for(&t, &[toleration("", "Exists", "", None)]), Tolerance::Always);
        assert_eq!(
            toleration_for(&t, &[toleration("dedicated", "Bogus", "", None)]),
            Tolerance::NotTolerated
        );
        assert_eq!(toleration_for(&t, &[]), Tolerance::NotTolerated);
        // A taint without a value equals an empty value.
        let bare = taint("k", None, TaintEffect::NoSchedule);
        let empty_value =
            Toleration { key: Some("k".into()), value: Some(String::new()), ..Default::default() };
        assert_eq!(toleration_for(&bare, &[empty_value]), Tolerance::Always);
    }

    #[test]
    fn toleration_seconds_count_from_time_added_for_no_execute_only() {
        let mut t = Taint {
            key: taints::UNREACHABLE.into(),
            value: None,
            effect: TaintEffect::NoExecute,
            time_added: Some(Time(ts(1_000))),
        };
        let limited = |s| toleration(taints::UNREACHABLE, "Exists", "NoExecute", Some(s));
        assert_eq!(toleration_for(&t, &[limited(300)]), Tolerance::Until(ts(1_300)));
        // The shortest of several matching limits wins; unlimited ones do not extend it.
        let unlimited = toleration(taints::UNREACHABLE, "Exists", "", None);
        assert_eq!(
            toleration_for(&t, &[unlimited.clone(), limited(600), limited(60)]),
            Tolerance::Until(ts(1_060))
        );
        assert_eq!(toleration_for(&t, &[unlimited]), Tolerance::Always);
        assert_eq!(toleration_for(&t, &[limited(-5)]), Tolerance::Until(ts(1_000)));
        t.time_added = None;
        assert_eq!(toleration_for(&t, &[limited(300)]), Tolerance::Until(ts(300)));
        // tolerationSeconds means nothing for NoSchedule.
        t.effect = TaintEffect::NoSchedule;
        assert_eq!(
            toleration_for(&t, &[toleration(taints::UNREACHABLE, "Exists", "", Some(5))]),
            Tolerance::Always
        );
    }

    #[test]
    fn karmada_taint_keys_are_read_as_flotilla_keys() {
        let t = Taint {
            key: taints::NOT_READY.into(),
            value: None,
            effect: TaintEffect::NoExecute,
            time_added: Some(Time(ts(0))),
        };
        let karmada = toleration("cluster.karmada.io/not-ready", "Exists", "NoExecute", None);
        assert_eq!(toleration_for(&t, &[karmada]), Tolerance::Always);
        let unreachable = Taint { key: taints::UNREACHABLE.into(), ..t.clone() };
        let karmada = toleration("cluster.karmada.io/unreachable", "Exists", "NoExecute", None);
        assert_eq!(toleration_for(&unreachable, std::slice::from_ref(&karmada)), Tolerance::Always);
        assert_eq!(toleration_for(&t, &[karmada]), Tolerance::NotTolerated);

        let placement = Placement {
            cluster_tolerations: vec![toleration(
                "cluster.karmada.io/unreachable",
                "Exists",
                "NoExecute",
                None,
            )],
            ..Default::default()
        };
        let clusters = vec![
            with_taint(cluster("m1"), taints::UNREACHABLE, TaintEffect::NoExecute, Some(0)),
            with_taint(cluster("m2"), taints::NOT_READY, TaintEffect::NoExecute, Some(0)),
        ];
        assert_eq!(run(&placement, 1).placed(&clusters), pairs(&[("m1", 1)]));
    }

    #[test]
    fn no_schedule_taints_keep_clusters_already_used() {
        let placement = Placement::default();
        let clusters =
            vec![cluster("m1"), with_taint(cluster("m2"), "maintenance", TaintEffect::NoSchedule, None)];
        assert_eq!(run(&placement, 1).placed(&clusters), pairs(&[("m1", 1)]));
        assert_eq!(
            run(&placement, 1).previous(&[("m1", 1), ("m2", 1)]).placed(&clusters),
            pairs(&[("m1", 1), ("m2", 1)])
        );
        let tolerating = Placement {
            cluster_tolerations: vec![toleration("maintenance", "Exists", "NoSchedule", None)],
            ..Default::default()
        };
        assert_eq!(run(&tolerating, 1).placed(&clusters), pairs(&[("m1", 1), ("m2", 1)]));
    }

    #[test]
    fn no_execute_taints_evict_and_prefer_no_schedule_is_ignored() {
        let placement = Placement::default();
        let clusters = vec![
            with_taint(cluster("m1"), "soft", TaintEffect::PreferNoSchedule, None),
            with_taint(cluster("m2"), taints::UNREACHABLE, TaintEffect::NoExecute, Some(0)),
        ];
        // Already used or not, an untolerated NoExecute taint moves the template away.
        assert_eq!(run(&placement, 1).previous(&[("m2", 1)]).placed(&clusters), pairs(&[("m1", 1)]));
    }

    #[test]
    fn toleration_seconds_keep_a_cluster_until_they_run_out_and_ask_for_a_requeue() {
        let placement = Placement {
            cluster_tolerations: vec![toleration(taints::UNREACHABLE, "Exists", "NoExecute", Some(300))],
            replica_scheduling: divided(ReplicaDivisionPreference::Weighted, None).replica_scheduling,
            ..Default::default()
        };
        let clusters = vec![
            cluster("m1"),
            with_taint(cluster("m2"), taints::UNREACHABLE, TaintEffect::NoExecute, Some(1_000)),
        ];
        let before = run(&placement, 4).previous(&[("m1", 2), ("m2", 2)]).at(1_100).on(&clusters).unwrap();
        assert_eq!(before.clusters, targets(&[("m1", 2), ("m2", 2)]));
        assert_eq!(before.requeue_after, Some(Duration::from_secs(200)));

        let after = run(&placement, 4).previous(&[("m1", 2), ("m2", 2)]).at(1_300).on(&clusters).unwrap();
        assert_eq!(after.clusters, targets(&[("m1", 4)]));
        assert_eq!(after.requeue_after, None);

        let none_left = run(&placement, 4).at(1_300).error(&clusters[1..]);
        assert!(
            none_left.contains("m2: toleration of taint cluster.flotilla.io/unreachable:NoExecute ran out")
        );
        // No taint, no requeue.
        assert_eq!(run(&placement, 4).on(&clusters[..1]).unwrap().requeue_after, None);
    }

    #[test]
    fn api_enablement_is_checked_when_asked() {
        let placement = Placement::default();
        let mut clusters = three();
        clusters[1].api_enablements.retain(|e| e.group_version != "apps/v1");
        clusters[2].api_enablements.clear();
        assert_eq!(run(&placement, 1).placed(&clusters), pairs(&[("m1", 1)]));
        let message = run(&placement, 1).error(&clusters[1..]);
        assert_eq!(
            message,
            "0/2 clusters fit: m2: does not serve apps/v1 deployments; m3: has not reported its APIs yet"
        );
        // A cluster already used keeps its template while it has not reported.
        assert_eq!(
            run(&placement, 1).previous(&[("m3", 1)]).placed(&clusters),
            pairs(&[("m1", 1), ("m3", 1)])
        );
        let mut no_check = run(&placement, 1);
        no_check.resource = None;
        assert_eq!(no_check.placed(&clusters).len(), 3);
    }

    #[test]
    fn the_unschedulable_message_names_each_cluster_and_reason() {
        let placement = Placement {
            cluster_affinity: Some(ClusterAffinity { exclude: vec!["m3".into()], ..Default::default() }),
            ..Default::default()
        };
        let mut clusters = vec![
            with_taint(cluster("m1"), taints::UNREACHABLE, TaintEffect::NoExecute, Some(0)),
            cluster("m2"),
            cluster("m3"),
        ];
        clusters[1].api_enablements.retain(|e| e.group_version != "apps/v1");
        assert_eq!(
            run(&placement, 1).error(&clusters),
            "0/3 clusters fit: m1: taint cluster.flotilla.io/unreachable:NoExecute not tolerated; \
             m2: does not serve apps/v1 deployments; m3: excluded by clusterAffinity"
        );
        assert_eq!(run(&placement, 1).error(&[]), "0/0 clusters fit: the fleet has no clusters");
    }

    #[test]
    fn the_unschedulable_message_is_summarized_for_many_clusters() {
        let placement = Placement { cluster_affinity: Some(names(&["nowhere"])), ..Default::default() };
        let mut clusters: Vec<ClusterSnapshot> = (0..5000).map(|i| cluster(&format!("c{i:04}"))).collect();
        for c in clusters.iter_mut().take(40) {
            c.schedulable = false;
        }
        let message = run(&placement, 1).error(&clusters);
        assert!(message.len() <= 500, "{} chars: {message}", message.len());
        assert!(
            message.starts_with(
                "0/5000 clusters fit: excluded by clusterAffinity: 4960 (c0040, c0041, c0042, …); "
            ),
            "{message}"
        );
        assert!(message.contains("not accepted by the hub or leaving the fleet: 40 (c0000, c0001, c0002, …)"));
    }

    #[test]
    fn static_weights_divide_exactly() {
        let placement = static_weights(&[(&["m1"], 1), (&["m2"], 2), (&["m3"], 2)]);
        assert_eq!(run(&placement, 10).placed(&three()), pairs(&[("m1", 2), ("m2", 4), ("m3", 4)]));
        // Remainders: largest fraction first (7 * 1/5 = 1.4, 7 * 2/5 = 2.8).
        assert_eq!(run(&placement, 7).placed(&three()), pairs(&[("m1", 1), ("m2", 3), ("m3", 3)]));
        // Ties go to the higher weight, then to clusters already used, then by name.
        assert_eq!(run(&placement, 1).placed(&three()), pairs(&[("m2", 1)]));
        assert_eq!(run(&placement, 1).previous(&[("m3", 1)]).placed(&three()), pairs(&[("m3", 1)]));
        let even = static_weights(&[(&["m1", "m2", "m3"], 1)]);
        assert_eq!(run(&even, 4).placed(&three()), pairs(&[("m1", 2), ("m2", 1), ("m3", 1)]));
    }

    #[test]
    fn static_weights_use_the_first_matching_entry_and_drop_unweighted_clusters() {
        let placement = static_weights(&[(&["m1"], 3), (&["m1", "m2"], 1)]);
        assert_eq!(run(&placement, 8).placed(&three()), pairs(&[("m1", 6), ("m2", 2)]));
        let nowhere = static_weights(&[(&["elsewhere"], 1)]);
        assert_eq!(
            run(&nowhere, 8).error(&three()),
            "no fitting cluster matches staticWeightList (fitting: m1, m2, m3)"
        );
    }

    #[test]
    fn without_weight_preference_weights_are_equal() {
        let placement = divided(ReplicaDivisionPreference::Weighted, None);
        assert_eq!(run(&placement, 10).placed(&three()), pairs(&[("m1", 4), ("m2", 3), ("m3", 3)]));
        // The extra replica stays where it is.
        assert_eq!(
            run(&placement, 10).previous(&[("m1", 3), ("m2", 3), ("m3", 4)]).placed(&three()),
            pairs(&[("m1", 3), ("m2", 3), ("m3", 4)])
        );
        // Divided: clusters with no replicas are left out.
        assert_eq!(run(&placement, 2).placed(&three()), pairs(&[("m1", 1), ("m2", 1)]));
        // A type-only strategy defaults to Divided/Weighted.
        let bare = Placement { replica_scheduling: Some(Default::default()), ..Default::default() };
        assert_eq!(run(&bare, 3).placed(&three()), pairs(&[("m1", 1), ("m2", 1), ("m3", 1)]));
    }

    #[test]
    fn templates_without_replicas_go_to_every_chosen_cluster() {
        for placement in [static_weights(&[(&["m1"], 1)]), dynamic(), aggregated()] {
            assert_eq!(run(&placement, 0).placed(&three()), pairs(&[("m1", 0), ("m2", 0), ("m3", 0)]));
        }
    }

    #[test]
    fn available_replicas_are_the_tightest_resource() {
        let mut c = cluster("m1");
        assert_eq!(available_replicas(&c, &one_cpu()), 10);
        c.allocated.insert("cpu".into(), 2_500);
        assert_eq!(available_replicas(&c, &one_cpu()), 7);
        c.allocated.insert("memory".into(), 8 << 30);
        assert_eq!(available_replicas(&c, &one_cpu()), 2);
        c.allocated.insert("pods".into(), 99);
        assert_eq!(available_replicas(&c, &one_cpu()), 1);
        // Over-committed clusters have no room, not negative room.
        c.allocated.insert("pods".into(), 150);
        assert_eq!(available_replicas(&c, &one_cpu()), 0);
        // No requests: pods alone limit.
        assert_eq!(available_replicas(&cluster("m1"), &BTreeMap::new()), 100);
        // A resource the cluster does not have.
        let gpu: BTreeMap<String, Quantity> = [("nvidia.com/gpu".to_string(), Quantity("1".into()))].into();
        assert_eq!(available_replicas(&cluster("m1"), &gpu), 0);
        // No resource summary.
        assert_eq!(available_replicas(&ClusterSnapshot::default(), &BTreeMap::new()), 0);
        let bad: BTreeMap<String, Quantity> = [("cpu".to_string(), Quantity("lots".into()))].into();
        assert_eq!(available_replicas(&cluster("m1"), &bad), 0);
        let milli: BTreeMap<String, Quantity> = [("cpu".to_string(), Quantity("250m".into()))].into();
        assert_eq!(available_replicas(&with_room(cluster("m1"), 1), &milli), 4);
    }

    #[test]
    fn dynamic_weights_follow_available_replicas() {
        let placement = dynamic();
        let clusters =
            vec![with_room(cluster("m1"), 2), with_room(cluster("m2"), 6), with_room(cluster("m3"), 0)];
        assert_eq!(run(&placement, 4).placed(&clusters), pairs(&[("m1", 1), ("m2", 3)]));
        assert_eq!(run(&placement, 8).placed(&clusters), pairs(&[("m1", 2), ("m2", 6)]));
        let message = run(&placement, 9).error(&clusters);
        assert_eq!(
            message,
            "not enough capacity: 9 more replicas to place at cpu 1, memory 1Gi per replica but the \
             fitting clusters hold 8 more (m2 6, m1 2, m3 0)"
        );
    }

    #[test]
    fn dynamic_scale_up_places_only_the_increment() {
        let placement = dynamic();
        // m1 runs 6 already and has room for 2 more; m2 has room for 6.
        let clusters = vec![with_room(cluster("m1"), 2), with_room(cluster("m2"), 6)];
        let previous = [("m1", 6), ("m2", 2)];
        assert_eq!(run(&placement, 12).previous(&previous).placed(&clusters), pairs(&[("m1", 7), ("m2", 5)]));
        // Same count: nothing moves even though the room changed.
        assert_eq!(run(&placement, 8).previous(&previous).placed(&clusters), pairs(&[("m1", 6), ("m2", 2)]));
        // The increment must fit.
        assert!(run(&placement, 20)
            .previous(&previous)
            .error(&clusters)
            .contains("12 more replicas to place"));
    }

    #[test]
    fn a_capped_cluster_keeps_at_most_its_cap_and_the_others_take_the_rest() {
        type Case<'a> =
            (&'a str, Placement, i32, &'a [(&'a str, i32)], &'a [(&'a str, i32)], &'a [(&'a str, i32)]);
        // m1 seems to have room for 8 (its summary misleads), m2 for 6, m3 for 2.
        let clusters =
            vec![with_room(cluster("m1"), 8), with_room(cluster("m2"), 6), with_room(cluster("m3"), 2)];
        let cases: Vec<Case> = vec![
            (
                "descheduled: the stuck replicas move",
                dynamic(),
                6,
                &[("m1", 4), ("m2", 2)],
                &[("m1", 2)],
                &[("m1", 2), ("m2", 4)],
            ),
            (
                "a cap of zero empties the cluster",
                dynamic(),
                6,
                &[("m1", 4), ("m2", 2)],
                &[("m1", 0)],
                &[("m2", 5), ("m3", 1)],
            ),
            (
                "not refilled on a scale-up",
                dynamic(),
                9,
                &[("m1", 2), ("m2", 5)],
                &[("m1", 2)],
                &[("m1", 2), ("m2", 7)],
            ),
            ("not chosen afresh", dynamic(), 4, &[], &[("m1", 0)], &[("m2", 3), ("m3", 1)]),
            (
                "a cap above what it runs changes nothing",
                dynamic(),
                6,
                &[("m1", 4), ("m2", 2)],
                &[("m1", 9)],
                &[("m1", 4), ("m2", 2)],
            ),
            (
                "a scale-down shrinks from the capped count",
                dynamic(),
                2,
                &[("m1", 4), ("m2", 2)],
                &[("m1", 2)],
                &[("m1", 1), ("m2", 1)],
            ),
            ("aggregated", aggregated(), 6, &[("m1", 6)], &[("m1", 3)], &[("m1", 3), ("m2", 3)]),
            (
                "static weights ignore caps",
                static_weights(&[(&["m1", "m2"], 1)]),
                4,
                &[],
                &[("m1", 0)],
                &[("m1", 2), ("m2", 2)],
            ),
        ];
        for (name, placement, replicas, previous, caps, want) in cases {
            let got = run(&placement, replicas).previous(previous).capped(caps).placed(&clusters);
            assert_eq!(got, pairs(want), "{name}");
        }
        // No room left for what the cap sends away: says so.
        let message =
            run(&dynamic(), 16).previous(&[("m1", 8), ("m2", 4)]).capped(&[("m1", 2)]).error(&clusters);
        assert!(message.contains("not enough capacity: 10 more replicas"), "{message}");
    }

    #[test]
    fn dynamic_scale_down_shrinks_in_proportion() {
        let placement = dynamic();
        let clusters = vec![with_room(cluster("m1"), 0), with_room(cluster("m2"), 9), cluster("m3")];
        assert_eq!(
            run(&placement, 4).previous(&[("m1", 6), ("m2", 2)]).placed(&clusters),
            pairs(&[("m1", 3), ("m2", 1)])
        );
        assert_eq!(
            run(&placement, 5).previous(&[("m1", 6), ("m2", 2)]).placed(&clusters),
            pairs(&[("m1", 4), ("m2", 1)])
        );
    }

    #[test]
    fn replicas_on_a_lost_cluster_move_to_the_others() {
        let placement = dynamic();
        let clusters = vec![
            with_room(cluster("m1"), 3),
            with_taint(cluster("m2"), taints::UNREACHABLE, TaintEffect::NoExecute, Some(0)),
            with_room(cluster("m3"), 1),
        ];
        assert_eq!(
            run(&placement, 8).previous(&[("m1", 4), ("m2", 4)]).placed(&clusters),
            pairs(&[("m1", 7), ("m3", 1)])
        );
    }

    #[test]
    fn aggregated_uses_as_few_clusters_as_fit() {
        let placement = aggregated();
        let clusters =
            vec![with_room(cluster("m1"), 3), with_room(cluster("m2"), 8), with_room(cluster("m3"), 5)];
        assert_eq!(run(&placement, 6).placed(&clusters), pairs(&[("m2", 6)]));
        // 10 > 8: m2 and the next largest, divided by room (8:5).
        assert_eq!(run(&placement, 10).placed(&clusters), pairs(&[("m2", 6), ("m3", 4)]));
        assert_eq!(
            run(&placement, 17).error(&clusters),
            "not enough capacity: 17 more replicas to place at cpu 1, memory 1Gi per replica but the \
             fitting clusters hold 16 more (m2 8, m3 5, m1 3)"
        );
    }

    #[test]
    fn aggregated_keeps_and_extends_the_current_placement() {
        let placement = aggregated();
        let clusters =
            vec![with_room(cluster("m1"), 3), with_room(cluster("m2"), 8), with_room(cluster("m3"), 5)];
        // Unchanged count: keep it, although m2 has more room now.
        assert_eq!(run(&placement, 4).previous(&[("m1", 4)]).placed(&clusters), pairs(&[("m1", 4)]));
        // Scale up: the cluster already used first.
        assert_eq!(run(&placement, 6).previous(&[("m1", 4)]).placed(&clusters), pairs(&[("m1", 6)]));
        // More than m1 holds: m1 and the next largest share the increment by room (3:8).
        assert_eq!(
            run(&placement, 9).previous(&[("m1", 4)]).placed(&clusters),
            pairs(&[("m1", 5), ("m2", 4)])
        );
    }

    #[test]
    fn capacity_changes_elsewhere_do_not_move_static_or_steady_placements() {
        let weighted = static_weights(&[(&["m1"], 1), (&["m2", "m3"], 2)]);
        let mut clusters = three();
        let before = run(&weighted, 10).placed(&clusters);
        clusters[0] = with_room(clusters[0].clone(), 1);
        clusters[2] = with_label(clusters[2].clone(), "env", "prod");
        clusters.push(with_label(cluster("m4"), "env", "dev"));
        assert_eq!(run(&weighted, 10).placed(&clusters), before);

        let placement = dynamic();
        let previous = [("m1", 5), ("m2", 5)];
        let clusters =
            vec![with_room(cluster("m1"), 0), with_room(cluster("m2"), 1), with_room(cluster("m3"), 50)];
        assert_eq!(run(&placement, 10).previous(&previous).placed(&clusters), pairs(&previous));
    }

    #[test]
    fn a_new_cluster_outside_the_affinity_changes_nothing() {
        let placement = Placement {
            cluster_affinity: Some(ClusterAffinity {
                label_selector: Some(LabelSelector {
                    match_labels: Some([("env".to_string(), "prod".to_string())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..divided(ReplicaDivisionPreference::Weighted, None)
        };
        let mut clusters: Vec<ClusterSnapshot> =
            ["m1", "m2"].iter().map(|n| with_label(cluster(n), "env", "prod")).collect();
        let before = run(&placement, 5).placed(&clusters);
        clusters.insert(0, with_label(cluster("a0"), "env", "dev"));
        assert_eq!(run(&placement, 5).placed(&clusters), before);
        assert_eq!(run(&placement, 5).placed(&clusters), run(&placement, 5).placed(&clusters));
    }

    fn regional() -> Vec<ClusterSnapshot> {
        vec![
            with_room(with_label(cluster("eu-1"), REGION, "eu"), 4),
            with_room(with_label(cluster("eu-2"), REGION, "eu"), 4),
            with_room(with_label(cluster("us-1"), REGION, "us"), 10),
            with_room(with_label(cluster("ap-1"), REGION, "ap"), 1),
            with_room(cluster("nowhere"), 2),
        ]
    }

    fn spread(constraints: Vec<SpreadConstraint>, base: Placement) -> Placement {
        Placement { spread_constraints: constraints, ..base }
    }

    fn by(field: SpreadByField, min: i32, max: i32) -> SpreadConstraint {
        SpreadConstraint {
            spread_by_field: Some(field),
            spread_by_label: None,
            min_groups: min,
            max_groups: max,
        }
    }

    #[test]
    fn spread_by_region_chooses_groups_by_room_then_name() {
        // As in Karmada, as few regions as the constraints allow: us (10)
        // has the most room, then eu (8); `nowhere` has no region.
        let placement = spread(vec![by(SpreadByField::Region, 1, 2)], Placement::default());
        assert_eq!(run(&placement, 1).placed(&regional()), pairs(&[("us-1", 1)]));
        let two = spread(vec![by(SpreadByField::Region, 2, 3)], Placement::default());
        assert_eq!(run(&two, 1).placed(&regional()), pairs(&[("eu-1", 1), ("eu-2", 1), ("us-1", 1)]));
        // Groups already used come first.
        assert_eq!(
            run(&two, 1).previous(&[("ap-1", 1)]).placed(&regional()),
            pairs(&[("ap-1", 1), ("us-1", 1)])
        );
        assert_eq!(run(&placement, 1).previous(&[("ap-1", 1)]).placed(&regional()), pairs(&[("ap-1", 1)]));
        // The cluster constraint's minimum takes in more regions, up to maxGroups.
        let three_clusters = spread(
            vec![by(SpreadByField::Region, 1, 3), by(SpreadByField::Cluster, 3, 3)],
            Placement::default(),
        );
        assert_eq!(
            run(&three_clusters, 1).placed(&regional()),
            pairs(&[("eu-1", 1), ("eu-2", 1), ("us-1", 1)])
        );
        let capped = spread(
            vec![by(SpreadByField::Region, 1, 1), by(SpreadByField::Cluster, 3, 3)],
            Placement::default(),
        );
        assert!(run(&capped, 1)
            .error(&regional())
            .starts_with("spreadConstraints need at least 3 clusters but only 1 fit"));
    }

    #[test]
    fn as_few_groups_as_the_constraints_allow() {
        // (clusters per group in order of preference, min, max, clusters needed, groups chosen)
        let cases: &[(&[usize], usize, usize, usize, usize)] = &[
            (&[1, 2, 5], 1, 3, 0, 1),
            (&[1, 2, 5], 0, 0, 0, 1),
            (&[1, 2, 5], 2, 3, 0, 2),
            (&[1, 2, 5], 1, 3, 3, 2),
            (&[1, 2, 5], 1, 3, 4, 3),
            (&[1, 2, 5], 1, 2, 8, 2),
            (&[1, 2, 5], 1, 0, 9, 3),
            (&[1], 2, 3, 0, 1),
            (&[], 1, 1, 0, 0),
        ];
        for (sizes, min, max, needed, want) in cases {
            assert_eq!(groups_to_choose(sizes, *min, *max, *needed), *want, "{sizes:?} {min} {max} {needed}");
        }
    }

    #[test]
    fn spread_min_groups_fails_with_a_clear_message() {
        let placement = spread(vec![by(SpreadByField::Region, 4, 0)], Placement::default());
        assert_eq!(
            run(&placement, 1).error(&regional()),
            "spreadConstraints need at least 4 regions but the fitting clusters are in 3 (ap, eu, us); \
             1 other clusters do not fit: nowhere: has no topology.kubernetes.io/region label (spreadConstraints)"
        );
        let clusters = spread(vec![by(SpreadByField::Cluster, 6, 0)], Placement::default());
        assert!(run(&clusters, 1)
            .error(&regional())
            .starts_with("spreadConstraints need at least 6 clusters but only 5 fit"));
    }

    #[test]
    fn spread_by_cluster_limits_clusters_round_robin_over_groups() {
        let placement = spread(
            vec![by(SpreadByField::Cluster, 1, 2), by(SpreadByField::Region, 2, 2)],
            divided(ReplicaDivisionPreference::Weighted, None),
        );
        // Regions us and eu; then one cluster of each, not both of eu.
        assert_eq!(run(&placement, 4).placed(&regional()), pairs(&[("eu-1", 2), ("us-1", 2)]));
        let only_cluster = spread(vec![by(SpreadByField::Cluster, 1, 2)], aggregated());
        assert_eq!(run(&only_cluster, 4).placed(&regional()), pairs(&[("us-1", 4)]));
    }

    #[test]
    fn a_region_spread_keeps_one_cluster_per_region_whatever_the_cluster_limit() {
        // Karmada's rule (`selectBestClustersByRegion`): the best cluster
        // of each chosen region, then more by the cluster limit if any.
        /// (case, constraints, base placement, replicas, placed)
        type Case<'a> = (&'a str, Vec<SpreadConstraint>, Placement, i32, Vec<(&'a str, i32)>);
        let cases: Vec<Case> = vec![
            (
                "2 regions, at most 1 cluster: one per region",
                vec![by(SpreadByField::Region, 2, 2), by(SpreadByField::Cluster, 1, 1)],
                dynamic(),
                4,
                vec![("eu-1", 1), ("us-1", 3)],
            ),
            (
                "at least 2 regions, at most 1 cluster: one in each of 2",
                vec![by(SpreadByField::Cluster, 1, 1), by(SpreadByField::Region, 2, 0)],
                Placement::default(),
                1,
                vec![("eu-1", 1), ("us-1", 1)],
            ),
            (
                "a cluster limit above the regions adds the next best",
                vec![by(SpreadByField::Region, 2, 2), by(SpreadByField::Cluster, 1, 3)],
                Placement::default(),
                1,
                vec![("eu-1", 1), ("eu-2", 1), ("us-1", 1)],
            ),
            (
                "one region, at most 1 cluster: its best",
                vec![by(SpreadByField::Region, 1, 1), by(SpreadByField::Cluster, 1, 1)],
                Placement::default(),
                1,
                vec![("us-1", 1)],
            ),
        ];
        for (name, constraints, base, replicas, want) in cases {
            let placement = spread(constraints, base);
            assert_eq!(run(&placement, replicas).placed(&regional()), pairs(&want), "{name}");
        }
    }

    #[test]
    fn spread_by_label_groups_by_the_label_value() {
        let placement = spread(
            vec![SpreadConstraint {
                spread_by_label: Some("env".into()),
                max_groups: 1,
                ..Default::default()
            }],
            Placement::default(),
        );
        let clusters = vec![
            with_room(with_label(cluster("a"), "env", "dev"), 1),
            with_room(with_label(cluster("b"), "env", "prod"), 5),
            with_room(with_label(cluster("c"), "env", "prod"), 5),
        ];
        assert_eq!(run(&placement, 1).placed(&clusters), pairs(&[("b", 1), ("c", 1)]));
    }

    #[test]
    fn invalid_requests_are_reported() {
        let placement = dynamic();
        let mut r = run(&placement, 1);
        r.requests = [("cpu".to_string(), Quantity("lots".into()))].into();
        assert_eq!(r.error(&three()), "resource request cpu: \"lots\" is not a valid Kubernetes quantity");
        let duplicated = Placement::default();
        let mut r = run(&duplicated, 1);
        r.requests = [("cpu".to_string(), Quantity("lots".into()))].into();
        assert_eq!(r.placed(&three()).len(), 3);
    }

    #[test]
    fn snapshot_from_managed_cluster() {
        use flotilla_api::cluster::{ManagedClusterSpec, ManagedClusterStatus, ResourceSummary};
        let mut mc = ManagedCluster::new(
            "m1",
            ManagedClusterSpec {
                hub_accepts_client: true,
                taints: vec![Taint {
                    key: "k".into(),
                    value: None,
                    effect: TaintEffect::NoSchedule,
                    time_added: None,
                }],
                ..Default::default()
            },
        );
        mc.metadata.labels = Some([(REGION.to_string(), "eu".to_string())].into());
        let q = |s: &str| Quantity(s.into());
        mc.status = Some(ManagedClusterStatus {
            resource_summary: Some(ResourceSummary {
                allocatable: [("cpu".into(), q("4")), ("memory".into(), q("8Gi")), ("pods".into(), q("110"))]
                    .into(),
                allocated: [("cpu".into(), q("1500m")), ("memory".into(), q("bad")), ("pods".into(), q("3"))]
                    .into(),
            }),
            api_enablements: vec![ApiEnablement {
                group_version: "v1".into(),
                resources: vec!["pods".into()],
            }],
            ..Default::default()
        });
        let snap = ClusterSnapshot::from_managed_cluster(&mc);
        assert_eq!(snap.name, "m1");
        assert!(snap.schedulable);
        assert_eq!(snap.labels.get(REGION).map(String::as_str), Some("eu"));
        assert_eq!(snap.taints.len(), 1);
        assert_eq!(snap.allocatable.get("cpu"), Some(&4000));
        assert_eq!(snap.allocatable.get("memory"), Some(&(8 << 30)));
        assert_eq!(snap.allocated.get("cpu"), Some(&1500));
        assert_eq!(snap.allocated.get("memory"), None);
        assert_eq!(snap.api_enablements.len(), 1);
        mc.metadata.deletion_timestamp = Some(Time(ts(0)));
        assert!(!ClusterSnapshot::from_managed_cluster(&mc).schedulable);
        mc.metadata.deletion_timestamp = None;
        mc.spec.hub_accepts_client = false;
        assert!(!ClusterSnapshot::from_managed_cluster(&mc).schedulable);
    }

    #[test]
    fn same_inputs_same_output_at_scale() {
        let clusters: Vec<ClusterSnapshot> = (0..1000)
            .map(|i| {
                let c = with_label(cluster(&format!("c{i:04}")), REGION, ["eu", "us", "ap"][i % 3]);
                with_room(c, (i % 17) as u128)
            })
            .collect();
        for placement in [
            dynamic(),
            aggregated(),
            divided(ReplicaDivisionPreference::Weighted, None),
            spread(vec![by(SpreadByField::Region, 2, 2), by(SpreadByField::Cluster, 2, 100)], dynamic()),
        ] {
            let first = run(&placement, 500).on(&clusters).unwrap();
            let total: i32 = first.clusters.iter().map(|t| t.replicas).sum();
            assert_eq!(total, 500);
            let mut reversed = clusters.clone();
            reversed.reverse();
            assert_eq!(run(&placement, 500).on(&reversed).unwrap(), first);
            // Fed its own result back, nothing moves.
            let previous: Vec<(String, i32)> =
                first.clusters.iter().map(|t| (t.name.clone(), t.replicas)).collect();
            let previous: Vec<(&str, i32)> = previous.iter().map(|(n, r)| (n.as_str(), *r)).collect();
            assert_eq!(run(&placement, 500).previous(&previous).on(&clusters).unwrap(), first);
        }
    }
}
