//! The version-change state machine of a HostedCluster's control plane.
//!
//! Changing `spec.version` moves one control-plane instance at a time, in
//! Kubernetes' skew order (every kube-apiserver first, then the
//! controller-managers, then the schedulers), each step gated on the
//! instance being healthy on the new version. A step that is not healthy
//! within the deadline rolls back what was moved, newest first. Changes
//! Kubernetes does not support (minor downgrades, skipping a minor, a new
//! major) are refused before anything moves.
//!
//! [`plan`] is one pure function the controller calls on every reconcile:
//! it reads the spec's version, the current status and what the instances
//! report, and returns the version each instance must be configured with
//! plus the status fields to write. Feeding its output back with unchanged
//! observations returns the same plan, so it is safe to call as often as
//! the controller likes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use flotilla_api::kok::{conditions, HostedClusterPhase, HostedClusterStatus, UpgradeState, UpgradeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The order instances move in on an upgrade (and, reversed, on a
/// rollback). Kubernetes' version skew policy lets kube-controller-manager
/// and kube-scheduler be older than kube-apiserver, never newer.
pub const COMPONENT_ORDER: [&str; 3] = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"];

/// Reasons of the `Upgraded` condition.
pub mod reasons {
    /// True: the cluster runs its version and no change was ever made.
    pub const AT_VERSION: &str = "AtVersion";
    /// False: instances are moving to the new version.
    pub const UPGRADING: &str = "Upgrading";
    /// False: instances are moving back to the old version.
    pub const ROLLING_BACK: &str = "RollingBack";
    /// True: the last upgrade finished.
    pub const SUCCEEDED: &str = "Succeeded";
    /// False: the last upgrade was rolled back.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// False: the requested change breaks Kubernetes' version rules.
    pub const REFUSED: &str = "Refused";
    /// False: the operator has no binaries for the requested version.
    pub const UNKNOWN_VERSION: &str = "UnknownVersion";
}

/// A Kubernetes version: `1.20.2`, `v1.20.2`, `1.21.0-broken`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// Pre-release or build part with its leading `-` or `+`
    /// (`-rc.1`, `-broken`, `+k3s1`); empty when there is none.
    pub suffix: String,
}

impl KubeVersion {
    pub fn parse(text: &str) -> Result<Self, Refusal> {
        let unparsable = || Refusal::Unparsable { version: text.to_string() };
        let trimmed = text.trim();
        let bare = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let (numbers, suffix) = match bare.find(['-', '+']) {
            Some(at) => bare.split_at(at),
            None => (bare, ""),
        };
        // A lone `-` or `+` is a typo, not a suffix.
        if suffix.len() == 1 {
            return Err(unparsable());
        }
        let mut parts = numbers.split('.');
        let mut number = || -> Result<u32, Refusal> {
            let part = parts.next().ok_or_else(unparsable)?;
            // `u32::from_str` accepts a leading `+`; a version does not.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(unparsable());
            }
            part.parse().map_err(|_| unparsable())
        };
        let (major, minor, patch) = (number()?, number()?, number()?);
        if parts.next().is_some() {
            return Err(unparsable());
        }
        Ok(Self { major, minor, patch, suffix: suffix.to_string() })
    }
}

impl FromStr for KubeVersion {
    type Err = Refusal;
    fn from_str(text: &str) -> Result<Self, Refusal> {
        Self::parse(text)
    }
}

/// Without the leading `v`: the form status and instance versions use.
impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}{}", self.major, self.minor, self.patch, self.suffix)
    }
}

/// Why a version change is not made. The messages are written for the
/// person who edited `spec.version`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{version:?} is not a Kubernetes version: expected MAJOR.MINOR.PATCH such as 1.20.2 (a leading v and a suffix such as -rc.1 are allowed)")]
    Unparsable { version: String },
    #[error("cannot change from {from} to {to}: Kubernetes does not support changing the major version; set spec.version back to {}.{}.x", from.major, from.minor)]
    MajorChange { from: KubeVersion, to: KubeVersion },
    #[error("cannot downgrade from {from} to {to}: Kubernetes does not support minor version downgrades; set spec.version back to {}.{}.x", from.major, from.minor)]
    MinorDowngrade { from: KubeVersion, to: KubeVersion },
    #[error("cannot upgrade from {from} to {to} in one step: Kubernetes upgrades one minor version at a time; set spec.version to {}.{}.x first, then to {to}", from.major, from.minor + 1)]
    SkipsMinor { from: KubeVersion, to: KubeVersion },
}

/// Whether the control plane may go from `current` to `desired`: any patch
/// change (up or down, suffixes included) within a minor, or the next minor.
pub fn check_change(current: &str, desired: &str) -> Result<(), Refusal> {
    let from = KubeVersion::parse(current)?;
    let to = KubeVersion::parse(desired)?;
    if to.major != from.major {
        Err(Refusal::MajorChange { from, to })
    } else if to.minor < from.minor {
        Err(Refusal::MinorDowngrade { from, to })
    } else if to.minor > from.minor + 1 {
        Err(Refusal::SkipsMinor { from, to })
    } else {
        Ok(())
    }
}

/// What one control-plane instance reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceObservation {
    /// One of [`COMPONENT_ORDER`].
    pub component: String,
    pub index: i32,
    /// The version the instance is configured with (what its Machine
    /// component or Deployment says now).
    pub version: String,
    /// Whether the instance configured with `version` answers its health
    /// check. The caller must not report the health of a process still
    /// running an older configuration as the health of `version`.
    pub healthy: bool,
}

/// Everything [`plan`] decides from.
#[derive(Debug, Clone)]
pub struct UpgradeInput<'a> {
    /// `spec.version`.
    pub desired: &'a str,
    /// Whether the operator has binaries (or images) for `desired`: a
    /// registry lookup done by the caller.
    pub desired_known: bool,
    /// The current status (None for an object never reconciled).
    pub status: Option<&'a HostedClusterStatus>,
    /// `metadata.generation`, copied into the condition.
    pub generation: Option<i64>,
    /// `spec.controlPlane.replicas`: instances of each component.
    pub replicas: i32,
    pub observed: &'a [InstanceObservation],
    pub now: Time,
    /// How long one upgrade step may take to become healthy before the
    /// upgrade rolls back. Rollback steps have no deadline.
    pub step_deadline: Duration,
}

/// What the controller does and writes after one [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct UpgradePlan {
    /// The version each `(component, index)` must be configured with now.
    /// Empty when no version can run yet (a fresh cluster whose version is
    /// unparsable or unknown).
    pub versions: BTreeMap<(String, i32), String>,
    /// `status.version` to write (None: the cluster has not run yet).
    pub version: Option<String>,
    /// `status.previousVersion` to write.
    pub previous_version: Option<String>,
    /// `status.upgrade` to write.
    pub upgrade: Option<UpgradeStatus>,
    /// The `Upgraded` condition (None: a fresh cluster that has not run
    /// yet has none; remove any).
    pub condition: Option<Condition>,
    /// Instances are moving (upgrade or rollback in flight).
    pub upgrading: bool,
}

impl UpgradePlan {
    /// `Some(Upgrading)` while instances move; otherwise the controller
    /// decides the phase from health.
    pub fn phase(&self) -> Option<HostedClusterPhase> {
        self.upgrading.then_some(HostedClusterPhase::Upgrading)
    }
}

/// Whether an upgrade record describes instances that are still moving.
pub fn is_upgrading(upgrade: Option<&UpgradeStatus>) -> bool {
    upgrade.is_some_and(|u| in_flight(u.state))
}

/// `Some(Upgrading)` while the status shows an upgrade or rollback in flight.
pub fn phase_of(status: &HostedClusterStatus) -> Option<HostedClusterPhase> {
    is_upgrading(status.upgrade.as_ref()).then_some(HostedClusterPhase::Upgrading)
}

fn in_flight(state: UpgradeState) -> bool {
    matches!(state, UpgradeState::InProgress | UpgradeState::RollingBack)
}

/// One control-plane instance, ordered the way an upgrade visits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Step {
    /// Position of the component in [`COMPONENT_ORDER`].
    rank: usize,
    index: i32,
}

impl Step {
    fn component(self) -> &'static str {
        COMPONENT_ORDER[self.rank]
    }

    fn from_record(record: &UpgradeStatus) -> Option<Step> {
        let component = record.component.as_deref()?;
        let rank = COMPONENT_ORDER.iter().position(|c| *c == component)?;
        Some(Step { rank, index: record.instance? })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.component(), self.index)
    }
}

/// Every instance in upgrade order.
fn all_steps(replicas: i32) -> Vec<Step> {
    // A control plane always has one instance of each component; the API
    // validates replicas >= 1, this only keeps a bad value from turning an
    // upgrade into an instant success.
    let replicas = replicas.max(1);
    (0..COMPONENT_ORDER.len()).flat_map(|rank| (0..replicas).map(move |index| Step { rank, index })).collect()
}

/// Versions compared as Kubernetes versions (`v1.20.2` is `1.20.2`), or as
/// text when one does not parse.
fn same_version(a: &str, b: &str) -> bool {
    match (KubeVersion::parse(a), KubeVersion::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The form written to status and instance versions.
fn normalized(version: &str) -> String {
    KubeVersion::parse(version).map(|v| v.to_string()).unwrap_or_else(|_| version.to_string())
}

/// Go-style durations (`5m0s`), as Kubernetes users read them.
fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds == 0 {
        return format!("{}ms", duration.as_millis());
    }
    let (hours, minutes, seconds) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

struct Context<'a> {
    input: &'a UpgradeInput<'a>,
    steps: Vec<Step>,
}

impl Context<'_> {
    /// The instance is configured with `version` and healthy on it.
    fn settled(&self, step: Step, version: &str) -> bool {
        self.input.observed.iter().any(|o| {
            o.component == step.component()
                && o.index == step.index
                && o.healthy
                && same_version(&o.version, version)
        })
    }

    fn first_at_or_after(&self, step: Step) -> Option<Step> {
        self.steps.iter().copied().find(|s| *s >= step)
    }

    fn next_after(&self, step: Step) -> Option<Step> {
        self.steps.iter().copied().find(|s| *s > step)
    }

    fn last_at_or_before(&self, step: Step) -> Option<Step> {
        self.steps.iter().rev().copied().find(|s| *s <= step)
    }

    fn previous_before(&self, step: Step) -> Option<Step> {
        self.steps.iter().rev().copied().find(|s| *s < step)
    }

    fn deadline_passed(&self, step_started_at: Option<&Time>) -> bool {
        let Some(started) = step_started_at else { return false };
        // A deadline past the end of representable time never passes.
        started.0.checked_add(self.input.step_deadline).is_ok_and(|end| self.input.now.0 >= end)
    }

    fn every_instance(&self, version: &str) -> BTreeMap<(String, i32), String> {
        self.steps.iter().map(|s| ((s.component().to_string(), s.index), version.to_string())).collect()
    }

    /// The `Upgraded` condition; its transition time moves only when its
    /// status does.
    fn condition(&self, status: &str, reason: &str, message: String) -> Condition {
        let old = self
            .input
            .status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::UPGRADED))
            .filter(|c| c.status == status);
        Condition {
            type_: conditions::UPGRADED.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: self.input.generation,
            last_transition_time: old
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(self.input.now.clone()),
        }
    }
}

/// Decide, for one reconcile, the version of every instance and the
/// upgrade status. See the module documentation.
pub fn plan(input: &UpgradeInput) -> UpgradePlan {
    let context = Context { input, steps: all_steps(input.replicas) };
    let status = input.status;
    let Some(current) = status.and_then(|s| s.version.as_deref()) else {
        return plan_fresh(&context);
    };
    match status.and_then(|s| s.upgrade.clone()) {
        Some(record) if in_flight(record.state) => plan_in_flight(&context, record),
        record => plan_settled(&context, current, record),
    }
}

/// No version has run yet: everything runs `desired`, with no skew rules
/// to keep because no data has been written by any version.
fn plan_fresh(context: &Context) -> UpgradePlan {
    let input = context.input;
    let previous_version = input.status.and_then(|s| s.previous_version.clone());
    let nothing_runs = |reason: &str, message: String| UpgradePlan {
        versions: BTreeMap::new(),
        version: None,
        previous_version: previous_version.clone(),
        upgrade: None,
        condition: Some(context.condition("False", reason, message)),
        upgrading: false,
    };
    let desired = match KubeVersion::parse(input.desired) {
        Ok(version) => version.to_string(),
        Err(refusal) => return nothing_runs(reasons::REFUSED, format!("spec.version {refusal}")),
    };
    if !input.desired_known {
        return nothing_runs(reasons::UNKNOWN_VERSION, unknown_version_message(&desired, None));
    }
    // The version counts as the cluster's once an apiserver has served on
    // it: from then on etcd may hold objects in its storage format, which
    // is what the no-downgrade rule protects.
    let served = context.steps.iter().any(|s| s.rank == 0 && context.settled(*s, &desired));
    UpgradePlan {
        versions: context.every_instance(&desired),
        version: served.then(|| desired.clone()),
        condition: served
            .then(|| context.condition("True", reasons::AT_VERSION, format!("running {desired}"))),
        previous_version,
        upgrade: None,
        upgrading: false,
    }
}

fn unknown_version_message(desired: &str, current: Option<&str>) -> String {
    let back = current.map(|c| format!(" or back to {c}")).unwrap_or_default();
    format!(
        "spec.version {desired} is not a version this operator has binaries for; register it, or set spec.version to a registered version{back}"
    )
}

/// No instance is moving: stay on `current`, or start the change
/// `spec.version` asks for.
fn plan_settled(context: &Context, current: &str, mut record: Option<UpgradeStatus>) -> UpgradePlan {
    let input = context.input;
    let current = normalized(current);
    // Once spec.version leaves a rolled-back target, asking for it again
    // is a new attempt.
    if let Some(last) = record.as_mut() {
        if last.state == UpgradeState::RolledBack && !same_version(input.desired, &last.to) {
            last.retry_allowed = true;
        }
    }
    let stay = |condition: Condition| UpgradePlan {
        versions: context.every_instance(&current),
        version: Some(current.clone()),
        previous_version: input.status.and_then(|s| s.previous_version.clone()),
        upgrade: record.clone(),
        condition: Some(condition),
        upgrading: false,
    };
    if same_version(input.desired, &current) {
        return stay(outcome_condition(context, record.as_ref(), &current));
    }
    if let Some(last) = record.as_ref().filter(|r| r.state == UpgradeState::RolledBack && !r.retry_allowed) {
        let message = format!(
            "{}. {} is not retried while spec.version still asks for it: set spec.version to {current}, then to {} again to retry, or choose another version",
            rolled_back_message(last),
            last.to,
            last.to
        );
        return stay(context.condition("False", reasons::ROLLED_BACK, message));
    }
    if let Err(refusal) = check_change(&current, input.desired) {
        return stay(context.condition("False", reasons::REFUSED, refusal.to_string()));
    }
    let desired = normalized(input.desired);
    if !input.desired_known {
        return stay(context.condition(
            "False",
            reasons::UNKNOWN_VERSION,
            unknown_version_message(&desired, Some(&current)),
        ));
    }
    // `advance` points the new record at the first instance.
    let started = UpgradeStatus {
        from: current.clone(),
        to: desired,
        state: UpgradeState::InProgress,
        component: None,
        instance: None,
        done: Vec::new(),
        started_at: Some(input.now.clone()),
        step_started_at: Some(input.now.clone()),
        completed_at: None,
        message: None,
        retry_allowed: false,
    };
    plan_in_flight(context, started)
}

/// The condition when nothing moves and spec.version is the running one:
/// the last upgrade's outcome stays visible.
fn outcome_condition(context: &Context, record: Option<&UpgradeStatus>, current: &str) -> Condition {
    match record {
        Some(last) if last.state == UpgradeState::Succeeded => context.condition(
            "True",
            reasons::SUCCEEDED,
            format!("upgraded from {} to {}", last.from, last.to),
        ),
        Some(last) if last.state == UpgradeState::RolledBack => {
            context.condition("False", reasons::ROLLED_BACK, rolled_back_message(last))
        }
        _ => context.condition("True", reasons::AT_VERSION, format!("running {current}")),
    }
}

fn rolled_back_message(record: &UpgradeStatus) -> String {
    let why = record.message.as_deref().unwrap_or("the upgrade did not finish");
    format!("rolled back from {} to {}: {why}", record.to, record.from)
}

/// Move the upgrade (or rollback) on as far as the observations allow,
/// then describe it.
fn plan_in_flight(context: &Context, mut record: UpgradeStatus) -> UpgradePlan {
    advance(context, &mut record);
    describe(context, record)
}

fn advance(context: &Context, record: &mut UpgradeStatus) {
    let input = context.input;
    let now = &input.now;
    if record.step_started_at.is_none() {
        // A record written without one (by hand): the deadline counts from
        // when it was first seen.
        record.step_started_at = Some(now.clone());
    }
    loop {
        match record.state {
            UpgradeState::InProgress => {
                // No (or an unknown) current step: start from the beginning;
                // instances already on `to` and healthy pass at once.
                let cursor = match Step::from_record(record) {
                    Some(step) => context.first_at_or_after(step),
                    None => context.steps.first().copied(),
                };
                let Some(step) = cursor else {
                    succeed(record, now);
                    return;
                };
                point_at(record, step, now);
                if same_version(input.desired, &record.from) && !same_version(&record.from, &record.to) {
                    start_rollback(
                        record,
                        now,
                        format!(
                            "spec.version was set back to {} during the upgrade to {}",
                            record.from, record.to
                        ),
                        true,
                    );
                    continue;
                }
                if context.settled(step, &record.to) {
                    record.done.push(step.to_string());
                    match context.next_after(step) {
                        Some(next) => point_at(record, next, now),
                        None => {
                            succeed(record, now);
                            return;
                        }
                    }
                    continue;
                }
                if context.deadline_passed(record.step_started_at.as_ref()) {
                    let cause = format!(
                        "{step} was not healthy on {} within {}",
                        record.to,
                        format_duration(input.step_deadline)
                    );
                    let retry_allowed = !same_version(input.desired, &record.to);
                    start_rollback(record, now, cause, retry_allowed);
                    continue;
                }
                return;
            }
            UpgradeState::RollingBack => {
                if !same_version(input.desired, &record.to) {
                    record.retry_allowed = true;
                }
                // No (or an unknown) current step: go back from the end;
                // instances already on `from` and healthy pass at once.
                let cursor = match Step::from_record(record) {
                    Some(step) => context.last_at_or_before(step),
                    None => context.steps.last().copied(),
                };
                let Some(step) = cursor else {
                    finish_rollback(record, now);
                    return;
                };
                point_at(record, step, now);
                if context.settled(step, &record.from) {
                    record.done.push(step.to_string());
                    match context.previous_before(step) {
                        Some(previous) => point_at(record, previous, now),
                        None => {
                            finish_rollback(record, now);
                            return;
                        }
                    }
                    continue;
                }
                return;
            }
            UpgradeState::Succeeded | UpgradeState::RolledBack => return,
        }
    }
}

/// Make `step` the current one; its clock starts only if it is a new step,
/// so repeated reconciles do not move timestamps.
fn point_at(record: &mut UpgradeStatus, step: Step, now: &Time) {
    if Step::from_record(record) != Some(step) {
        record.component = Some(step.component().to_string());
        record.instance = Some(step.index);
        record.step_started_at = Some(now.clone());
    }
}

/// Turn around on the current step: it is the newest instance on `to`, so
/// it goes back first.
fn start_rollback(record: &mut UpgradeStatus, now: &Time, cause: String, retry_allowed: bool) {
    record.state = UpgradeState::RollingBack;
    record.done.clear();
    record.step_started_at = Some(now.clone());
    record.message = Some(cause);
    record.retry_allowed = retry_allowed;
}

fn succeed(record: &mut UpgradeStatus, now: &Time) {
    record.state = UpgradeState::Succeeded;
    record.component = None;
    record.instance = None;
    record.completed_at = Some(now.clone());
    record.message = None;
}

fn finish_rollback(record: &mut UpgradeStatus, now: &Time) {
    record.state = UpgradeState::RolledBack;
    record.component = None;
    record.instance = None;
    record.completed_at = Some(now.clone());
}

/// The versions and status an upgrade record implies.
fn describe(context: &Context, record: UpgradeStatus) -> UpgradePlan {
    let input = context.input;
    let status_previous = input.status.and_then(|s| s.previous_version.clone());
    let (versions, version, previous_version, condition, upgrading) = match record.state {
        UpgradeState::InProgress => {
            let cursor = Step::from_record(&record);
            // Instances before the current one are already on `to`; the
            // current one is being moved; the rest wait on `from`.
            let versions = context
                .steps
                .iter()
                .map(|s| {
                    let version = if cursor.is_some_and(|c| *s <= c) { &record.to } else { &record.from };
                    ((s.component().to_string(), s.index), version.clone())
                })
                .collect();
            let step = cursor.map(|c| c.to_string()).unwrap_or_default();
            // spec.version back on `from` turned this into a rollback, so
            // any other value is a third version waiting its turn.
            let next = if same_version(input.desired, &record.to) {
                String::new()
            } else {
                format!("; spec.version is now {}: it is taken once this upgrade finishes", input.desired)
            };
            let message = format!(
                "upgrading from {} to {}: waiting for {step} to be healthy on {} ({} of {} instances done, {} per instance){}",
                record.from,
                record.to,
                record.to,
                record.done.len(),
                context.steps.len(),
                format_duration(input.step_deadline),
                next,
            );
            let condition = context.condition("False", reasons::UPGRADING, message);
            (versions, Some(record.from.clone()), status_previous, condition, true)
        }
        UpgradeState::RollingBack => {
            let cursor = Step::from_record(&record);
            // Instances before the current one are still on `to`; the
            // current one and everything after it are (going) back on `from`.
            let versions = context
                .steps
                .iter()
                .map(|s| {
                    let version = if cursor.is_some_and(|c| *s < c) { &record.to } else { &record.from };
                    ((s.component().to_string(), s.index), version.clone())
                })
                .collect();
            let step = cursor.map(|c| c.to_string()).unwrap_or_default();
            let remaining = context.steps.iter().filter(|s| cursor.is_some_and(|c| **s <= c)).count();
            // A rolled-back `to` that spec.version still asks for is not
            // "taken" afterwards, so say so only when it will be.
            let next = if record.retry_allowed && !same_version(input.desired, &record.from) {
                format!("; spec.version is now {}: it is taken once this rollback finishes", input.desired)
            } else {
                String::new()
            };
            let message = format!(
                "rolling back from {} to {}: {}; waiting for {step} to be healthy on {} ({} moved back, {remaining} to go){next}",
                record.to,
                record.from,
                record.message.as_deref().unwrap_or("rollback requested"),
                record.from,
                record.done.len(),
            );
            let condition = context.condition("False", reasons::ROLLING_BACK, message);
            (versions, Some(record.from.clone()), status_previous, condition, true)
        }
        UpgradeState::Succeeded => {
            let next = if same_version(input.desired, &record.to) {
                String::new()
            } else {
                format!("; spec.version {} is considered next", input.desired)
            };
            let message = format!("upgraded from {} to {}{next}", record.from, record.to);
            let condition = context.condition("True", reasons::SUCCEEDED, message);
            (
                context.every_instance(&record.to),
                Some(record.to.clone()),
                Some(record.from.clone()),
                condition,
                false,
            )
        }
        UpgradeState::RolledBack => {
            let condition = context.condition("False", reasons::ROLLED_BACK, rolled_back_message(&record));
            (
                context.every_instance(&record.from),
                Some(record.from.clone()),
                status_previous,
                condition,
                false,
            )
        }
    };
    UpgradePlan {
        versions,
        version,
        previous_version,
        upgrade: Some(record),
        condition: Some(condition),
        upgrading,
    }
}
