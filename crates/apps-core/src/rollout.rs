//! Progressive delivery across the fleet: which clusters form each wave of
//! a rollout, and the next step of a rollout from what the clusters report.
//! A change of what clusters receive is a new *revision*; it goes to the
//! first wave while every other cluster keeps the last good (*stable*)
//! revision, and to the next wave only once the wave is healthy on it and
//! has soaked. A failure (a cluster's health, or a wave not healthy by its
//! deadline) or an abort puts every cluster back on the stable revision and
//! marks the revision failed: it is not tried again until the desired
//! revision changes. Clusters of later waves never see a failed revision.
//!
//! Decisions (documented for users in the README):
//! - A template's first revision has nothing to protect: it goes
//!   everywhere at once and is the stable one.
//! - A second change during a rollout supersedes it and starts again at
//!   wave 1 from the stable revision: the first change's waves never
//!   proved it, so no cluster outside wave 1 keeps it.
//! - The waves are cut when a revision starts and kept: a cluster that
//!   joins (or comes back) mid-rollout goes in the last wave (with stages,
//!   its stage's wave if that is still ahead) and gets the stable revision
//!   until then; a cluster that leaves drops out of its wave.
//! - A cluster that cannot be reached (its agent stopped reporting) is not
//!   gated: it can neither pass nor fail a wave. A wave none of whose
//!   clusters can be reached waits, and fails at its deadline.

use std::collections::{BTreeMap, BTreeSet};

/// How the target clusters are cut into waves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WavePlan {
    /// Shares of the clusters per wave, e.g. `1:2:7`; every wave gets at
    /// least one cluster (fewer clusters than waves: fewer waves).
    Ratio(Vec<u32>),
    /// One wave per label selector, in order (e.g. `env=test`, `env=pre`,
    /// `env=prod`); a cluster goes in the first stage it matches, and
    /// clusters matching none in a last wave of their own.
    Stages(Vec<BTreeMap<String, String>>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strategy {
    pub waves: WavePlan,
    /// Clusters always in the first wave, by name (ratio plans).
    pub canary_names: Vec<String>,
    /// Clusters always in the first wave, by labels (ratio plans; empty:
    /// none).
    pub canary_labels: BTreeMap<String, String>,
    /// How long a wave must stay healthy on the new revision before the
    /// next one starts.
    pub soak_seconds: i64,
    /// How long a wave may take to be healthy on the new revision.
    pub progress_deadline_seconds: i64,
}

/// The strategy a `RolloutStrategy` spec asks for; `Err` says what is
/// wrong, for its status (the schema refuses most of it already).
pub fn from_spec(spec: &flotilla_api::rollout::RolloutStrategySpec) -> Result<Strategy, String> {
    let waves = match (&spec.waves.ratio, &spec.waves.stages) {
        (Some(ratio), None) => WavePlan::Ratio(parse_ratio(ratio)?),
        (None, Some(stages)) if !stages.is_empty() => {
            WavePlan::Stages(stages.iter().map(|s| s.cluster_labels.clone()).collect())
        }
        _ => return Err("set exactly one of waves.ratio (e.g. \"1:2:7\") and waves.stages".into()),
    };
    if matches!(waves, WavePlan::Stages(_)) && !spec.canary.is_empty() {
        return Err(
            "canary clusters apply to ratio waves only: with stages, put the canaries in the first stage"
                .into(),
        );
    }
    Ok(Strategy {
        waves,
        canary_names: spec.canary.cluster_names.clone(),
        canary_labels: spec.canary.cluster_labels.clone(),
        soak_seconds: spec.soak_seconds.max(0),
        progress_deadline_seconds: spec.progress_deadline_seconds.max(1),
    })
}

/// `1:2:7` as shares.
pub fn parse_ratio(text: &str) -> Result<Vec<u32>, String> {
    let shares: Result<Vec<u32>, _> = text.split(':').map(|part| part.trim().parse::<u32>()).collect();
    match shares {
        Ok(shares) if !shares.is_empty() && shares.iter().all(|s| *s > 0) => Ok(shares),
        _ => Err(format!("waves.ratio {text:?} is not a ratio of positive whole numbers such as \"1:2:7\"")),
    }
}

/// A cluster the template is scheduled to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCluster {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The waves of a rollout: those recorded when its revision started (the
/// clusters that left dropped, those that joined added as the module says)
/// or, for a new revision, a fresh plan.
pub fn waves_for(
    strategy: &Strategy,
    targets: &[TargetCluster],
    record: Option<&Record>,
    revision: &str,
) -> Vec<Vec<String>> {
    let fresh = plan_waves(strategy, targets);
    let Some(record) = record.filter(|r| r.revision == revision && !r.waves.is_empty()) else {
        return fresh;
    };
    let mut waves: Vec<Vec<String>> = record
        .waves
        .iter()
        .map(|w| w.iter().filter(|c| targets.iter().any(|t| &t.name == *c)).cloned().collect())
        .collect();
    let last = waves.len() - 1;
    for (fresh_wave, clusters) in fresh.iter().enumerate() {
        for c in clusters {
            if waves.iter().any(|w| w.contains(c)) {
                continue;
            }
            let wave = match &strategy.waves {
                WavePlan::Stages(_) if fresh_wave > record.wave => fresh_wave.min(last),
                _ => last,
            };
            waves[wave].push(c.clone());
        }
    }
    waves
}

/// The clusters of each wave, in order; deterministic for the same
/// clusters whatever their order. Empty waves are left out.
pub fn plan_waves(strategy: &Strategy, targets: &[TargetCluster]) -> Vec<Vec<String>> {
    let mut sorted: Vec<&TargetCluster> = targets.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.dedup_by(|a, b| a.name == b.name);
    match &strategy.waves {
        WavePlan::Stages(stages) => {
            let mut waves: Vec<Vec<String>> = vec![Vec::new(); stages.len() + 1];
            for t in sorted {
                let stage = stages.iter().position(|s| matches(s, &t.labels)).unwrap_or(stages.len());
                waves[stage].push(t.name.clone());
            }
            waves.into_iter().filter(|w| !w.is_empty()).collect()
        }
        WavePlan::Ratio(shares) => {
            let is_canary = |t: &TargetCluster| {
                strategy.canary_names.contains(&t.name)
                    || (!strategy.canary_labels.is_empty() && matches(&strategy.canary_labels, &t.labels))
            };
            let (canaries, rest): (Vec<&TargetCluster>, Vec<&TargetCluster>) =
                sorted.into_iter().partition(|t| is_canary(t));
            let ordered: Vec<String> = canaries.iter().chain(rest.iter()).map(|t| t.name.clone()).collect();
            let sizes = wave_sizes(shares, ordered.len(), canaries.len());
            let mut waves = Vec::new();
            let mut start = 0;
            for size in sizes {
                waves.push(ordered[start..start + size].to_vec());
                start += size;
            }
            waves
        }
    }
}

/// Wave sizes for `n` clusters by `shares`: cumulative shares rounded up,
/// at least one cluster a wave, the first holding every canary.
pub fn wave_sizes(shares: &[u32], n: usize, canaries: usize) -> Vec<usize> {
    let shares: Vec<u64> = shares.iter().filter(|s| **s > 0).map(|s| u64::from(*s)).collect();
    if n == 0 {
        return Vec::new();
    }
    if shares.is_empty() {
        return vec![n];
    }
    let total: u64 = shares.iter().sum();
    let waves = shares.len().min(n);
    let mut bounds = Vec::with_capacity(waves);
    let mut cumulative = 0u64;
    let mut previous = 0usize;
    for (i, share) in shares.iter().take(waves).enumerate() {
        cumulative += share;
        let left_after = waves - i - 1;
        let mut bound = if i + 1 == waves { n } else { (n as u64 * cumulative).div_ceil(total) as usize };
        if i == 0 {
            bound = bound.max(canaries.min(n));
        }
        bound = bound.max(previous + 1).min(n - left_after);
        bounds.push(bound);
        previous = bound;
    }
    let mut sizes = Vec::with_capacity(waves);
    let mut start = 0;
    for b in bounds {
        if b > start {
            sizes.push(b - start);
        }
        start = b;
    }
    sizes
}

/// What a cluster reports of the revision it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Fully rolled out and healthy.
    Healthy,
    /// Still applying or rolling out.
    Progressing,
    /// A gate failed: why (the cluster's pod, the member's message).
    Failed(String),
    /// The cluster's agent stopped reporting: not gated.
    Unreachable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterReport {
    pub name: String,
    /// The revision the cluster runs now (what its Work carries and its
    /// member applied); `None` when unknown.
    pub revision: Option<String>,
    pub health: Health,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// The current wave rolls out.
    #[default]
    Progressing,
    /// The current wave is healthy and soaks.
    Soaking,
    /// Held by the user: no wave starts (a failure still rolls back).
    Paused,
    /// Every cluster runs the revision; it is the stable one.
    Complete,
    /// Every cluster went back to the stable revision.
    RolledBack,
}

/// Why a revision was rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub revision: String,
    /// The cluster whose gate failed; `None` for an abort.
    pub cluster: Option<String>,
    pub reason: String,
}

/// The rollout's record (kept on its status between steps).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The revision rolling out (or done, or rolled back).
    pub revision: String,
    /// The clusters of each wave, cut when the revision started.
    pub waves: Vec<Vec<String>>,
    /// The last good revision; `None` before the first one completed.
    pub stable: Option<String>,
    /// Index of the current wave.
    pub wave: usize,
    pub wave_started_at: i64,
    pub soak_started_at: Option<i64>,
    pub phase: Phase,
    pub failure: Option<Failure>,
}

/// What the user asks of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Control {
    pub paused: bool,
    /// Skip the current wave's soak.
    pub skip_soak: bool,
    /// Every remaining wave at once.
    pub finish: bool,
    /// Roll back now.
    pub abort: bool,
}

/// Which revision a cluster gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assigned {
    New,
    Stable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInput<'a> {
    pub waves: &'a [Vec<String>],
    /// The revision the template asks for now.
    pub revision: &'a str,
    pub record: Option<&'a Record>,
    pub reports: &'a [ClusterReport],
    pub control: Control,
    pub soak_seconds: i64,
    pub progress_deadline_seconds: i64,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub record: Record,
    pub assigned: BTreeMap<String, Assigned>,
    /// What happened now, for Events: (reason, message); a reason ending
    /// in `Failed` or `RolledBack` is a warning.
    pub events: Vec<(String, String)>,
}

fn assign(waves: &[Vec<String>], upto: Option<usize>) -> BTreeMap<String, Assigned> {
    waves
        .iter()
        .enumerate()
        .flat_map(|(i, w)| {
            let a = if upto.is_some_and(|u| i <= u) { Assigned::New } else { Assigned::Stable };
            w.iter().map(move |c| (c.clone(), a))
        })
        .collect()
}

/// The next step of the rollout.
pub fn step(input: &StepInput<'_>) -> Step {
    let waves = input.waves;
    let last_wave = waves.len().saturating_sub(1);
    let mut events = Vec::new();
    let previous = input.record.cloned();

    // A revision that failed stays rolled back until the desired one changes.
    if let Some(p) = &previous {
        if p.phase == Phase::RolledBack && p.failure.as_ref().is_some_and(|f| f.revision == input.revision) {
            return Step { record: p.clone(), assigned: assign(waves, None), events };
        }
    }
    let mut record = match previous {
        Some(p) if p.revision == input.revision => p,
        Some(p) => {
            // A new revision: from the stable one, at wave 1. What the
            // superseded rollout reached is not proven.
            let stable = if p.phase == Phase::Complete { Some(p.revision.clone()) } else { p.stable.clone() };
            events.push((
                "RolloutStarted".into(),
                format!(
                    "revision {} rolls out in {} waves from {}",
                    input.revision,
                    waves.len(),
                    describe(&stable)
                ),
            ));
            Record {
                revision: input.revision.to_string(),
                waves: waves.to_vec(),
                stable,
                wave: 0,
                wave_started_at: input.now,
                soak_started_at: None,
                phase: Phase::Progressing,
                failure: None,
            }
        }
        None => Record {
            revision: input.revision.to_string(),
            stable: None,
            wave: 0,
            wave_started_at: input.now,
            ..Default::default()
        },
    };
    // Nothing to protect: a first revision goes everywhere at once.
    if record.stable.is_none() || record.phase == Phase::Complete {
        record.waves = waves.to_vec();
        if record.phase != Phase::Complete {
            events.push((
                "RolloutComplete".into(),
                format!("revision {} is on every cluster", record.revision),
            ));
        }
        record.phase = Phase::Complete;
        record.stable = Some(record.revision.clone());
        record.wave = last_wave;
        return Step { record, assigned: assign(waves, Some(last_wave)), events };
    }

    record.waves = waves.to_vec();
    let upto = |r: &Record| if input.control.finish { last_wave } else { r.wave.min(last_wave) };
    let wave_clusters: BTreeSet<&str> =
        waves.iter().take(upto(&record) + 1).flatten().map(String::as_str).collect();
    let report = |name: &str| input.reports.iter().find(|r| r.name == name);
    let reachable = |name: &str| !matches!(report(name).map(|r| &r.health), Some(Health::Unreachable));
    // The clusters that gate the waves reached; with none of the current
    // wave reachable, nothing proves it: it waits for them.
    let current: Vec<&str> = waves.get(upto(&record)).into_iter().flatten().map(String::as_str).collect();
    let current_reachable = current.iter().any(|c| reachable(c));
    let waiting_for = |revision: &str| -> Vec<String> {
        let mut waiting: Vec<String> = wave_clusters
            .iter()
            .filter(|c| reachable(c) && !healthy_on(report(c), revision))
            .map(|c| c.to_string())
            .collect();
        if !current_reachable {
            waiting.extend(current.iter().map(|c| format!("{c} (unreachable)")));
        }
        waiting
    };

    // Roll back on an abort, a failed cluster of the waves reached, or a
    // wave past its deadline.
    let failure = if input.control.abort {
        Some(Failure {
            revision: record.revision.clone(),
            cluster: None,
            reason: "aborted by the user".into(),
        })
    } else if let Some((cluster, why)) =
        wave_clusters.iter().find_map(|c| match report(c).map(|r| &r.health) {
            Some(Health::Failed(why)) => Some((c.to_string(), why.clone())),
            _ => None,
        })
    {
        Some(Failure { revision: record.revision.clone(), cluster: Some(cluster), reason: why })
    } else {
        let waiting = waiting_for(&record.revision);
        let late = record.soak_started_at.is_none()
            && input.now - record.wave_started_at >= input.progress_deadline_seconds
            && !waiting.is_empty();
        late.then(|| Failure {
            revision: record.revision.clone(),
            cluster: waiting.first().map(|c| c.trim_end_matches(" (unreachable)").to_string()),
            reason: format!(
                "wave {} not healthy {}s after it started (deadline {}s): {} still progressing",
                record.wave + 1,
                input.now - record.wave_started_at,
                input.progress_deadline_seconds,
                waiting.join(", ")
            ),
        })
    };
    if let Some(failure) = failure {
        events.push((
            "RolledBack".into(),
            format!(
                "revision {} rolled back to {}{}: {}",
                failure.revision,
                describe(&record.stable),
                failure.cluster.as_deref().map(|c| format!(" ({c} failed)")).unwrap_or_default(),
                failure.reason
            ),
        ));
        record.phase = Phase::RolledBack;
        record.failure = Some(failure);
        record.soak_started_at = None;
        return Step { record, assigned: assign(waves, None), events };
    }

    let all_healthy = waiting_for(&record.revision).is_empty();
    if input.control.paused {
        record.phase = Phase::Paused;
        return Step { assigned: assign(waves, Some(upto(&record))), record, events };
    }
    if input.control.finish {
        record.wave = last_wave;
    }
    if !all_healthy {
        record.phase = Phase::Progressing;
        record.soak_started_at = None;
        return Step { assigned: assign(waves, Some(record.wave.min(last_wave))), record, events };
    }
    let soak_started = *record.soak_started_at.get_or_insert(input.now);
    let soaked = input.control.skip_soak || input.now - soak_started >= input.soak_seconds;
    if !soaked {
        record.phase = Phase::Soaking;
        return Step { assigned: assign(waves, Some(record.wave)), record, events };
    }
    if record.wave >= last_wave {
        events.push(("RolloutComplete".into(), format!("revision {} is on every cluster", record.revision)));
        record.phase = Phase::Complete;
        record.stable = Some(record.revision.clone());
        record.soak_started_at = None;
        return Step { assigned: assign(waves, Some(last_wave)), record, events };
    }
    record.wave += 1;
    record.wave_started_at = input.now;
    record.soak_started_at = None;
    record.phase = Phase::Progressing;
    events.push((
        "WaveStarted".into(),
        format!("wave {} of {}: {}", record.wave + 1, waves.len(), waves[record.wave].join(", ")),
    ));
    Step { assigned: assign(waves, Some(record.wave)), record, events }
}

/// Problems a rollout never waits out: the new revision fails its gate at
/// once in a cluster where a pod of it shows one.
pub const FATAL_REASONS: [&str; 10] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "ContainerFailed",
    "PodFailed",
    "ProgressDeadlineExceeded",
    "BackoffLimitExceeded",
];

/// A cluster's gate on the revision its Work carries, from what its agent
/// reported (`item`): failed on a fatal problem, more restarts than
/// `max_restarts`, or a Work the member refused; healthy once applied and
/// healthy; progressing otherwise (its deadline decides).
pub fn gate(item: &flotilla_api::work::AggregatedStatusItem, max_restarts: i32) -> Health {
    use flotilla_api::work::Health as Reported;
    let cluster = &item.cluster_name;
    if let Some(detail) = &item.health_detail {
        if FATAL_REASONS.contains(&detail.reason.as_str()) {
            return Health::Failed(format!("{cluster}: {}: {}", detail.reason, detail.message));
        }
        if let Some(restarts) = detail.restart_count.filter(|r| *r > max_restarts) {
            return Health::Failed(format!(
                "{cluster}: {restarts} restarts (more than {max_restarts}): {}",
                detail.message
            ));
        }
    }
    if !item.applied {
        return if item.applied_message.is_empty() {
            Health::Progressing
        } else {
            Health::Failed(format!("{cluster}: not applied: {}", item.applied_message))
        };
    }
    match item.health {
        Reported::Healthy => Health::Healthy,
        _ => Health::Progressing,
    }
}

/// The Work annotation naming the revision a Work carries.
pub const REVISION_ANNOTATION: &str = "rollout.flotilla.io/revision";

/// What a cluster reports of its rollout, from its Work: the revision its
/// member applied (none while the member has not applied the Work's current
/// spec) and its gate; `Unreachable` when its agent stopped reporting.
pub fn report_from_work(
    cluster: &str,
    work: Option<&flotilla_api::work::Work>,
    reachable: bool,
    max_restarts: i32,
) -> ClusterReport {
    if !reachable {
        return ClusterReport { name: cluster.to_string(), revision: None, health: Health::Unreachable };
    }
    let progress = crate::binding_status::work_progress(cluster, work);
    let (mut item, caught_up) = crate::binding_status::cluster_item(cluster, work, None, &progress);
    // Only a member's refusal of the Work's current spec fails the gate;
    // a Work not applied yet is still on its way.
    let refused = work.and_then(|w| w.status.as_ref()).is_some_and(|s| {
        let current = w_hash(work) == Some(s.observed_spec_hash.as_str());
        current && s.conditions.iter().any(|c| c.type_ == "Applied" && c.status == "False")
    });
    if !refused {
        item.applied_message.clear();
    }
    let revision = work
        .filter(|_| progress.applied)
        .and_then(|w| w.metadata.annotations.as_ref()?.get(REVISION_ANNOTATION).cloned());
    let health = match gate(&item, max_restarts) {
        // Healthy only once the member's controller caught up with it.
        Health::Healthy if !caught_up => Health::Progressing,
        other => other,
    };
    ClusterReport { name: cluster.to_string(), revision, health }
}

fn w_hash(work: Option<&flotilla_api::work::Work>) -> Option<&str> {
    work?.metadata.annotations.as_ref()?.get(flotilla_api::work::keys::SPEC_HASH).map(String::as_str)
}

fn healthy_on(report: Option<&ClusterReport>, revision: &str) -> bool {
    report.is_some_and(|r| r.health == Health::Healthy && r.revision.as_deref() == Some(revision))
}

fn describe(stable: &Option<String>) -> String {
    stable.as_deref().map_or_else(|| "nothing".to_string(), |s| format!("revision {s}"))
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
