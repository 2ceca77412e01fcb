//! The version-change state machine of a HostedCluster's control plane.
//!
//! Changing `spec.version` moves one instance at a time, in Kubernetes'
//! skew order (every kube-apiserver first, then the controller-managers,
//! then the schedulers, then the worker kubelets), each step gated on the
//! instance being healthy on the new version (for a kubelet: its Node
//! Ready and reporting that version, see `crate::kubelet_upgrade`). A step that is not healthy
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
//!
//! A controller, on every reconcile of a HostedCluster:
//! 1. builds one [`InstanceObservation`] per control-plane instance it
//!    finds: the version that instance is configured with now (its Machine
//!    component or Deployment) and whether that configuration is healthy;
//! 2. calls [`plan`] with `spec.version`, whether it has binaries for it,
//!    the current status, `metadata.generation`,
//!    `spec.controlPlane.replicas`, the observations, the current time and
//!    the per-step deadline;
//! 3. configures every `(component, index)` in [`UpgradePlan::versions`]
//!    with its version (an empty map: run nothing yet);
//! 4. writes `version`, `previousVersion`, `upgrade` and the `Upgraded`
//!    condition (removing it when the plan has none) to the status, and
//!    reports phase `Upgrading` while [`UpgradePlan::upgrading`].
//!
//! Version strings in the plan are written without a leading `v`, so the
//! caller's registry should be keyed the same way.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use flotilla_api::kok::{conditions, HostedClusterPhase, HostedClusterStatus, UpgradeState, UpgradeStatus};
use flotilla_core::conditions::Wanted;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The order instances move in on an upgrade (and, reversed, on a
/// rollback). Kubernetes' version skew policy lets kube-controller-manager
/// and kube-scheduler be older than kube-apiserver, never newer.
pub const COMPONENT_ORDER: [&str; 3] = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"];

/// The worker kubelets' component name in observations and plans. They
/// move after the whole control plane (a kubelet is never newer than an
/// apiserver) and, on a rollback, before it.
pub const KUBELET: &str = "kubelet";

/// Every component that moves, in upgrade order.
const STEP_ORDER: [&str; 4] = [COMPONENT_ORDER[0], COMPONENT_ORDER[1], COMPONENT_ORDER[2], KUBELET];

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
    #[error("kubelet {kubelet} cannot run against kube-apiserver {apiserver}: Kubernetes supports kubelets up to {MAX_KUBELET_MINORS_BEHIND} minor versions older than the apiserver, never newer; upgrade the nodes first or choose a version within that range")]
    KubeletSkew { apiserver: KubeVersion, kubelet: KubeVersion },
}

/// How many minor versions a kubelet may be older than kube-apiserver
/// (Kubernetes' version skew policy since 1.28).
pub const MAX_KUBELET_MINORS_BEHIND: u32 = 3;

/// Whether a kubelet on `kubelet` may talk to an apiserver on `apiserver`:
/// the same major, not a newer minor, at most
/// [`MAX_KUBELET_MINORS_BEHIND`] minors older. Patch versions do not count.
pub fn check_kubelet_skew(apiserver: &str, kubelet: &str) -> Result<(), Refusal> {
    let server = KubeVersion::parse(apiserver)?;
    let node = KubeVersion::parse(kubelet)?;
    let allowed = node.major == server.major
        && node.minor <= server.minor
        && server.minor - node.minor <= MAX_KUBELET_MINORS_BEHIND;
    if allowed {
        Ok(())
    } else {
        Err(Refusal::KubeletSkew { apiserver: server, kubelet: node })
    }
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
    /// One of [`COMPONENT_ORDER`], or [`KUBELET`].
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
    /// Worker kubelets (`spec.nodes.count`; 0 when the runtime runs none).
    pub nodes: i32,
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
    /// Position of the component in [`STEP_ORDER`].
    rank: usize,
    index: i32,
}

impl Step {
    fn component(self) -> &'static str {
        STEP_ORDER[self.rank]
    }

    fn from_record(record: &UpgradeStatus) -> Option<Step> {
        let component = record.component.as_deref()?;
        let rank = STEP_ORDER.iter().position(|c| *c == component)?;
        Some(Step { rank, index: record.instance? })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.component(), self.index)
    }
}

/// Every instance in upgrade order.
fn all_steps(replicas: i32, nodes: i32) -> Vec<Step> {
    // A control plane always has one instance of each component; the API
    // validates replicas >= 1, this only keeps a bad value from turning an
    // upgrade into an instant success.
    let replicas = replicas.max(1);
    let control_plane =
        (0..COMPONENT_ORDER.len()).flat_map(|rank| (0..replicas).map(move |index| Step { rank, index }));
    let kubelets = (0..nodes.max(0)).map(|index| Step { rank: COMPONENT_ORDER.len(), index });
    control_plane.chain(kubelets).collect()
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
        let previous = self.input.status.map(|s| s.conditions.as_slice()).unwrap_or_default();
        let wanted = match status {
            "True" => Wanted::new(conditions::UPGRADED, true, reason, message),
            "False" => Wanted::new(conditions::UPGRADED, false, reason, message),
            _ => Wanted::unknown(conditions::UPGRADED, reason, message),
        };
        flotilla_core::conditions::condition(
            previous,
            wanted.generation(self.input.generation),
            &self.input.now,
        )
    }
}

/// Decide, for one reconcile, the version of every instance and the
/// upgrade status. See the module documentation.
pub fn plan(input: &UpgradeInput) -> UpgradePlan {
    let context = Context { input, steps: all_steps(input.replicas, input.nodes) };
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
    // Not retried (no upgrade/rollback loop); the condition says how to.
    if let Some(last) = record.as_ref().filter(|r| r.state == UpgradeState::RolledBack && !r.retry_allowed) {
        return stay(rolled_back_condition(context, last));
    }
    if let Err(refusal) = check_change(&current, input.desired) {
        return stay(context.condition("False", reasons::REFUSED, refusal.to_string()));
    }
    // Kubelets move with the control plane, but one left behind (by an
    // older operator, or by hand) must not fall out of the skew window.
    let mut kubelets = input.observed.iter().filter(|o| o.component == KUBELET);
    if let Err(refusal) = kubelets.try_for_each(|o| check_kubelet_skew(input.desired, &o.version)) {
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
        Some(last) if last.state == UpgradeState::RolledBack => rolled_back_condition(context, last),
        _ => context.condition("True", reasons::AT_VERSION, format!("running {current}")),
    }
}

/// After a rollback: why it happened, and, while spec.version still asks
/// for the rolled-back version, how to try it again.
fn rolled_back_condition(context: &Context, record: &UpgradeStatus) -> Condition {
    let why = record.message.as_deref().unwrap_or("the upgrade did not finish");
    let mut message = format!("rolled back from {} to {}: {why}", record.to, record.from);
    if !record.retry_allowed && same_version(context.input.desired, &record.to) {
        message.push_str(&format!(
            ". {} is not retried while spec.version still asks for it: set spec.version to {}, then to {} again to retry, or choose another version",
            record.to, record.from, record.to
        ));
    }
    context.condition("False", reasons::ROLLED_BACK, message)
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
            let condition = rolled_back_condition(context, &record);
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

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(60);
    const APISERVER: &str = "kube-apiserver";
    const KCM: &str = "kube-controller-manager";

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn observation(component: &str, index: i32, version: &str, healthy: bool) -> InstanceObservation {
        InstanceObservation { component: component.into(), index, version: version.into(), healthy }
    }

    fn input<'a>(
        desired: &'a str,
        status: Option<&'a HostedClusterStatus>,
        replicas: i32,
        observed: &'a [InstanceObservation],
        now: i64,
    ) -> UpgradeInput<'a> {
        UpgradeInput {
            desired,
            desired_known: true,
            status,
            generation: Some(3),
            replicas,
            nodes: 0,
            observed,
            now: at(now),
            step_deadline: DEADLINE,
        }
    }

    /// Every instance of every component on `version`.
    fn everyone(replicas: i32, version: &str, healthy: bool) -> Vec<InstanceObservation> {
        all_steps(replicas, 0).iter().map(|s| observation(s.component(), s.index, version, healthy)).collect()
    }

    fn running(version: &str) -> HostedClusterStatus {
        HostedClusterStatus { version: Some(version.into()), ..Default::default() }
    }

    fn upgraded(plan: &UpgradePlan) -> &Condition {
        plan.condition.as_ref().unwrap()
    }

    /// The status a controller writes from a plan.
    fn write(status: &mut HostedClusterStatus, plan: &UpgradePlan) {
        status.version = plan.version.clone();
        status.previous_version = plan.previous_version.clone();
        status.upgrade = plan.upgrade.clone();
        status.conditions = plan.condition.iter().cloned().collect();
    }

    /// A control plane whose instances take whatever version the plan
    /// says at once and are healthy unless `broken` says otherwise.
    struct Cluster {
        desired: String,
        replicas: i32,
        nodes: i32,
        status: HostedClusterStatus,
        configured: BTreeMap<(String, i32), String>,
        broken: fn(&str, &str) -> bool,
        now: i64,
    }

    impl Cluster {
        fn new(version: &str, replicas: i32, broken: fn(&str, &str) -> bool) -> Self {
            let steps = all_steps(replicas, 0);
            Cluster {
                desired: version.into(),
                replicas,
                nodes: 0,
                status: running(version),
                configured: steps.iter().map(|s| ((s.component().into(), s.index), version.into())).collect(),
                broken,
                now: 1000,
            }
        }

        fn observed(&self) -> Vec<InstanceObservation> {
            self.configured
                .iter()
                .map(|((component, index), version)| {
                    observation(component, *index, version, !(self.broken)(component, version))
                })
                .collect()
        }

        /// One reconcile: plan, write status, configure instances, let
        /// 10 seconds pass.
        fn tick(&mut self) -> UpgradePlan {
            let observed = self.observed();
            let input = UpgradeInput {
                nodes: self.nodes,
                ..input(&self.desired, Some(&self.status), self.replicas, &observed, self.now)
            };
            let plan = plan(&input);
            write(&mut self.status, &plan);
            self.configured = plan.versions.clone();
            self.now += 10;
            plan
        }

        /// Tick until nothing moves (at most `limit` times); the plans seen.
        fn run(&mut self, limit: usize) -> Vec<UpgradePlan> {
            let mut plans = Vec::new();
            for _ in 0..limit {
                let plan = self.tick();
                let upgrading = plan.upgrading;
                plans.push(plan);
                if !upgrading {
                    break;
                }
            }
            plans
        }

        fn record(&self) -> &UpgradeStatus {
            self.status.upgrade.as_ref().unwrap()
        }
    }

    fn never_broken(_: &str, _: &str) -> bool {
        false
    }

    /// The steps a run went through, in order, each once.
    fn visited(plans: &[UpgradePlan]) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for plan in plans {
            if let Some(record) = plan.upgrade.as_ref().filter(|r| in_flight(r.state)) {
                let step = format!("{}/{}", record.component.clone().unwrap(), record.instance.unwrap());
                if seen.last() != Some(&step) {
                    seen.push(step);
                }
            }
        }
        seen
    }

    /// Kubernetes' skew rule on a planned configuration: no
    /// controller-manager or scheduler newer than any apiserver, and the
    /// instances on `newer` form a prefix of the upgrade order.
    fn assert_skew(versions: &BTreeMap<(String, i32), String>, replicas: i32, newer: &str) {
        let on_newer: Vec<bool> = all_steps(replicas, 0)
            .iter()
            .map(|s| versions[&(s.component().to_string(), s.index)] == newer)
            .collect();
        let prefix = on_newer.iter().take_while(|n| **n).count();
        assert!(on_newer[prefix..].iter().all(|n| !n), "not a prefix of the order: {versions:?}");
        let apiservers_newer = versions.iter().filter(|((c, _), v)| c == APISERVER && *v == newer).count();
        let others_newer = versions.iter().filter(|((c, _), v)| c != APISERVER && *v == newer).count();
        assert!(others_newer == 0 || apiservers_newer == replicas as usize, "skew broken: {versions:?}");
    }

    #[test]
    fn parses_versions_and_prints_them_without_v() {
        fn check(text: &str, expected: Option<(u32, u32, u32, &str)>) {
            let parsed = KubeVersion::parse(text);
            match expected {
                Some((major, minor, patch, suffix)) => {
                    let version = parsed.unwrap_or_else(|e| panic!("{text}: {e}"));
                    assert_eq!(version, KubeVersion { major, minor, patch, suffix: suffix.into() }, "{text}");
                    let printed = version.to_string();
                    assert!(!printed.starts_with('v'), "{printed}");
                    assert_eq!(printed.parse::<KubeVersion>().unwrap(), version, "round trip of {text}");
                }
                None => {
                    assert_eq!(parsed, Err(Refusal::Unparsable { version: text.into() }), "{text}")
                }
            }
        }
        check("1.20.2", Some((1, 20, 2, "")));
        check("v1.20.2", Some((1, 20, 2, "")));
        check("1.21.0-broken", Some((1, 21, 0, "-broken")));
        check("v1.21.0-rc.1", Some((1, 21, 0, "-rc.1")));
        check("1.20.2+k3s1", Some((1, 20, 2, "+k3s1")));
        for bad in [
            "", "v", "1", "1.20", "1.20.2.1", "a.b.c", "1..2", "1.20.x", "1.20.+2", "1.20.2-", "1.20.-2",
            "V1.20.2",
        ] {
            check(bad, None);
        }
        assert_eq!(KubeVersion::parse("v1.21.0-broken").unwrap().to_string(), "1.21.0-broken");
    }

    #[test]
    fn version_changes_follow_the_skew_rules() {
        fn check(current: &str, desired: &str, expected: Result<(), &str>) {
            let got = check_change(current, desired).map_err(|refusal| match refusal {
                Refusal::Unparsable { .. } => "Unparsable",
                Refusal::MajorChange { .. } => "MajorChange",
                Refusal::MinorDowngrade { .. } => "MinorDowngrade",
                Refusal::SkipsMinor { .. } => "SkipsMinor",
                Refusal::KubeletSkew { .. } => "KubeletSkew",
            });
            assert_eq!(got, expected, "{current} -> {desired}");
        }
        check("1.20.2", "1.20.3", Ok(()));
        check("1.20.3", "1.20.2", Ok(()));
        check("1.20.2", "1.20.2-patched", Ok(()));
        check("1.20.2", "1.21.0", Ok(()));
        check("v1.20.2", "1.21.9", Ok(()));
        check("1.20.2", "1.21.0-broken", Ok(()));
        check("1.21.0", "1.20.2", Err("MinorDowngrade"));
        check("1.21.0", "1.19.0", Err("MinorDowngrade"));
        check("1.20.2", "1.22.0", Err("SkipsMinor"));
        check("1.20.2", "2.0.0", Err("MajorChange"));
        check("1.20.2", "0.20.2", Err("MajorChange"));
        check("1.20.2", "latest", Err("Unparsable"));
        check("garbage", "1.20.2", Err("Unparsable"));
    }

    #[test]
    fn refusals_say_what_to_do() {
        let message = |current: &str, desired: &str| check_change(current, desired).unwrap_err().to_string();
        assert_eq!(
            message("1.21.0", "1.20.2"),
            "cannot downgrade from 1.21.0 to 1.20.2: Kubernetes does not support minor version downgrades; set spec.version back to 1.21.x"
        );
        assert_eq!(
            message("1.20.2", "1.22.0"),
            "cannot upgrade from 1.20.2 to 1.22.0 in one step: Kubernetes upgrades one minor version at a time; set spec.version to 1.21.x first, then to 1.22.0"
        );
        assert!(message("1.20.2", "2.0.0").contains("set spec.version back to 1.20.x"));
        assert!(message("1.20.2", "1.20").contains("MAJOR.MINOR.PATCH"));
    }

    #[test]
    fn durations_read_like_kubernetes_ones() {
        for (duration, text) in [
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3725), "1h2m5s"),
        ] {
            assert_eq!(format_duration(duration), text);
        }
    }

    #[test]
    fn a_fresh_cluster_runs_the_desired_version_with_no_upgrade() {
        let starting = everyone(3, "1.20.2", false);
        let plan = plan(&input("v1.20.2", None, 3, &starting, 10));
        assert_eq!(plan.versions.len(), 9);
        assert!(plan.versions.values().all(|v| v == "1.20.2"), "{:?}", plan.versions);
        assert_eq!(plan.version, None, "nothing has served yet");
        assert_eq!((plan.upgrade, plan.condition, plan.upgrading), (None, None, false));

        // Once an apiserver serves on it the version is the cluster's.
        let mut serving = starting.clone();
        serving[1] = observation(APISERVER, 1, "1.20.2", true);
        let empty = HostedClusterStatus::default();
        let plan = super::plan(&input("1.20.2", Some(&empty), 3, &serving, 10));
        assert_eq!(plan.version.as_deref(), Some("1.20.2"));
        assert_eq!(upgraded(&plan).status, "True");
        assert_eq!(upgraded(&plan).reason, reasons::AT_VERSION);
        assert_eq!(plan.upgrade, None);

        // A healthy scheduler alone does not make it the cluster's version.
        let mut scheduling = starting;
        scheduling[8] = observation("kube-scheduler", 2, "1.20.2", true);
        assert_eq!(plan_fresh_version("1.20.2", &scheduling), None);
    }

    fn plan_fresh_version(desired: &str, observed: &[InstanceObservation]) -> Option<String> {
        plan(&input(desired, None, 3, observed, 10)).version
    }

    #[test]
    fn a_fresh_cluster_with_a_bad_or_unknown_version_runs_nothing() {
        let plan_bad = plan(&input("1.20", None, 1, &[], 10));
        assert!(plan_bad.versions.is_empty());
        assert_eq!(upgraded(&plan_bad).reason, reasons::REFUSED);
        assert!(upgraded(&plan_bad).message.contains("MAJOR.MINOR.PATCH"), "{}", upgraded(&plan_bad).message);

        let mut unknown = input("1.22.0", None, 1, &[], 10);
        unknown.desired_known = false;
        let plan_unknown = plan(&unknown);
        assert!(plan_unknown.versions.is_empty());
        assert_eq!(upgraded(&plan_unknown).status, "False");
        assert_eq!(upgraded(&plan_unknown).reason, reasons::UNKNOWN_VERSION);
        assert!(upgraded(&plan_unknown).message.contains("1.22.0"));
    }

    #[test]
    fn at_the_desired_version_everything_stays_and_the_last_outcome_stays_visible() {
        let observed = everyone(2, "1.21.0", true);
        let mut status = running("1.21.0");
        status.previous_version = Some("1.20.2".into());
        let last = UpgradeStatus {
            from: "1.20.2".into(),
            to: "1.21.0".into(),
            state: UpgradeState::Succeeded,
            done: vec!["kube-apiserver/0".into()],
            started_at: Some(at(10)),
            completed_at: Some(at(50)),
            ..Default::default()
        };
        status.upgrade = Some(last.clone());
        let plan = plan(&input("v1.21.0", Some(&status), 2, &observed, 500));
        assert!(plan.versions.values().all(|v| v == "1.21.0"));
        assert_eq!(plan.version.as_deref(), Some("1.21.0"));
        assert_eq!(plan.previous_version.as_deref(), Some("1.20.2"));
        assert_eq!(plan.upgrade, Some(last));
        assert_eq!(
            (upgraded(&plan).status.as_str(), upgraded(&plan).reason.as_str()),
            ("True", reasons::SUCCEEDED)
        );
        assert!(!plan.upgrading);
        assert_eq!(plan.phase(), None);

        let plain = running("1.21.0");
        let plan = super::plan(&input("1.21.0", Some(&plain), 2, &observed, 500));
        assert_eq!(plan.upgrade, None);
        assert_eq!(upgraded(&plan).reason, reasons::AT_VERSION);
        assert_eq!(upgraded(&plan).observed_generation, Some(3));
    }

    #[test]
    fn a_refused_or_unknown_change_moves_nothing() {
        let observed = everyone(1, "1.21.0", true);
        let status = running("1.21.0");
        let downgrade = plan(&input("1.20.2", Some(&status), 1, &observed, 10));
        assert!(downgrade.versions.values().all(|v| v == "1.21.0"));
        assert_eq!(downgrade.version.as_deref(), Some("1.21.0"));
        assert_eq!(downgrade.upgrade, None);
        assert!(!downgrade.upgrading);
        let condition = upgraded(&downgrade);
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", reasons::REFUSED));
        assert_eq!(condition.message, check_change("1.21.0", "1.20.2").unwrap_err().to_string());

        let mut unknown = input("1.22.0", Some(&status), 1, &observed, 10);
        unknown.desired_known = false;
        let unknown = plan(&unknown);
        assert!(unknown.versions.values().all(|v| v == "1.21.0"));
        assert_eq!(unknown.upgrade, None);
        assert_eq!(upgraded(&unknown).reason, reasons::UNKNOWN_VERSION);
        assert!(upgraded(&unknown).message.contains("back to 1.21.0"), "{}", upgraded(&unknown).message);
    }

    #[test]
    fn an_upgrade_moves_one_instance_at_a_time_apiservers_first() {
        for replicas in 1..=5 {
            let mut cluster = Cluster::new("1.20.2", replicas, never_broken);
            cluster.desired = "1.21.0".into();
            let started_at = cluster.now;
            let plans = cluster.run(100);
            for plan in &plans {
                assert_skew(&plan.versions, replicas, "1.21.0");
                // Only the instance being moved may be on `to` and not yet done.
                let record = plan.upgrade.as_ref().unwrap();
                let on_to = plan.versions.values().filter(|v| *v == "1.21.0").count();
                let moving = usize::from(record.state == UpgradeState::InProgress);
                assert_eq!(on_to, record.done.len() + moving, "{record:?}");
            }
            let expected: Vec<String> =
                all_steps(replicas, 0).iter().map(|s| format!("{}/{}", s.component(), s.index)).collect();
            assert_eq!(visited(&plans), expected, "replicas {replicas}");
            let last = plans.last().unwrap();
            let record = cluster.record();
            assert_eq!(record.state, UpgradeState::Succeeded);
            assert_eq!(record.done, expected);
            assert_eq!((record.component.as_ref(), record.instance), (None, None));
            assert_eq!(record.started_at, Some(at(started_at)));
            assert_eq!(record.completed_at, Some(at(cluster.now - 10)));
            assert_eq!(last.version.as_deref(), Some("1.21.0"));
            assert_eq!(last.previous_version.as_deref(), Some("1.20.2"));
            assert!(last.versions.values().all(|v| v == "1.21.0"));
            assert_eq!(
                (upgraded(last).status.as_str(), upgraded(last).reason.as_str()),
                ("True", reasons::SUCCEEDED)
            );
            assert!(!last.upgrading);
            // One tick to start plus one per instance: nothing waits longer
            // than its own instance takes.
            assert_eq!(plans.len(), expected.len() + 1, "replicas {replicas}");
        }
    }

    #[test]
    fn while_upgrading_the_status_keeps_the_old_version_and_says_what_it_waits_for() {
        let mut cluster = Cluster::new("1.20.2", 2, never_broken);
        cluster.desired = "1.21.0".into();
        let first = cluster.tick();
        assert!(first.upgrading);
        assert_eq!(first.phase(), Some(HostedClusterPhase::Upgrading));
        assert_eq!(phase_of(&cluster.status), Some(HostedClusterPhase::Upgrading));
        assert_eq!(first.version.as_deref(), Some("1.20.2"));
        let record = first.upgrade.as_ref().unwrap();
        assert_eq!((record.from.as_str(), record.to.as_str()), ("1.20.2", "1.21.0"));
        assert_eq!(record.state, UpgradeState::InProgress);
        assert_eq!((record.component.as_deref(), record.instance), (Some(APISERVER), Some(0)));
        assert_eq!(record.step_started_at, Some(at(1000)));
        let condition = upgraded(&first);
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", reasons::UPGRADING));
        assert_eq!(
            condition.message,
            "upgrading from 1.20.2 to 1.21.0: waiting for kube-apiserver/0 to be healthy on 1.21.0 (0 of 6 instances done, 1m0s per instance)"
        );
        let second = cluster.tick();
        let record = second.upgrade.as_ref().unwrap();
        assert_eq!(record.done, vec!["kube-apiserver/0".to_string()]);
        assert_eq!((record.component.as_deref(), record.instance), (Some(APISERVER), Some(1)));
        assert_eq!(record.step_started_at, Some(at(1010)), "the next step's clock starts when it starts");
        assert_eq!(record.started_at, Some(at(1000)));
    }

    #[test]
    fn an_instance_is_done_only_when_configured_with_the_new_version_and_healthy() {
        let mut status = running("1.20.2");
        status.upgrade = Some(UpgradeStatus {
            from: "1.20.2".into(),
            to: "1.21.0".into(),
            state: UpgradeState::InProgress,
            component: Some(APISERVER.into()),
            instance: Some(0),
            started_at: Some(at(0)),
            step_started_at: Some(at(0)),
            ..Default::default()
        });
        let rest = |first: Option<InstanceObservation>| {
            let mut observed = everyone(1, "1.20.2", true);
            observed.remove(0);
            observed.extend(first);
            observed
        };
        for (first, done) in [
            (Some(observation(APISERVER, 0, "1.21.0", true)), true),
            (Some(observation(APISERVER, 0, "v1.21.0", true)), true),
            (Some(observation(APISERVER, 0, "1.21.0", false)), false),
            (Some(observation(APISERVER, 0, "1.20.2", true)), false),
            (Some(observation(APISERVER, 1, "1.21.0", true)), false),
            (Some(observation(KCM, 0, "1.21.0", true)), false),
            (None, false),
        ] {
            let observed = rest(first.clone());
            let plan = plan(&input("1.21.0", Some(&status), 1, &observed, 30));
            let record = plan.upgrade.unwrap();
            assert_eq!(record.done == vec!["kube-apiserver/0".to_string()], done, "{first:?}");
            assert_eq!(record.component.as_deref() == Some(KCM), done, "{first:?}");
        }
    }

    #[test]
    fn a_step_not_healthy_by_its_deadline_rolls_back_newest_first() {
        fn broken_controller_manager(component: &str, version: &str) -> bool {
            component == KCM && version == "1.21.0"
        }
        let mut cluster = Cluster::new("1.20.2", 2, broken_controller_manager);
        cluster.desired = "1.21.0".into();
        let plans = cluster.run(100);
        for plan in &plans {
            assert_skew(&plan.versions, 2, "1.21.0");
        }
        assert_eq!(
            visited(&plans),
            [
                "kube-apiserver/0",
                "kube-apiserver/1",
                "kube-controller-manager/0",
                "kube-apiserver/1",
                "kube-apiserver/0"
            ]
        );
        // The moment it turned around: kube-controller-manager/0 started at
        // 1020 and was still unhealthy at 1080.
        let turn = plans
            .iter()
            .position(|p| p.upgrade.as_ref().unwrap().state == UpgradeState::RollingBack)
            .unwrap();
        let turned = plans[turn].upgrade.as_ref().unwrap();
        assert_eq!(turned.step_started_at, Some(at(1080)));
        assert_eq!(
            plans[turn - 1].upgrade.as_ref().unwrap().step_started_at,
            Some(at(1020)),
            "the failing step's clock"
        );
        assert_eq!(upgraded(&plans[turn]).reason, reasons::ROLLING_BACK);
        assert!(plans[turn].upgrading);
        assert_eq!(plans[turn].version.as_deref(), Some("1.20.2"));
        // Rollback steps are health-gated too: `done` grows as each is back.
        assert_eq!(
            plans[turn + 1].upgrade.as_ref().unwrap().done,
            vec!["kube-controller-manager/0".to_string()]
        );

        let record = cluster.record().clone();
        assert_eq!(record.state, UpgradeState::RolledBack);
        assert_eq!(record.done, ["kube-controller-manager/0", "kube-apiserver/1", "kube-apiserver/0"]);
        assert!(!record.retry_allowed);
        let last = plans.last().unwrap();
        assert_eq!(last.version.as_deref(), Some("1.20.2"));
        assert_eq!(last.previous_version, None);
        assert!(last.versions.values().all(|v| v == "1.20.2"));
        let condition = upgraded(last);
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", reasons::ROLLED_BACK));
        assert_eq!(
            condition.message,
            "rolled back from 1.21.0 to 1.20.2: kube-controller-manager/0 was not healthy on 1.21.0 within 1m0s. \
             1.21.0 is not retried while spec.version still asks for it: set spec.version to 1.20.2, \
             then to 1.21.0 again to retry, or choose another version"
        );

        // spec.version still says 1.21.0: no retry, however long we wait.
        for _ in 0..20 {
            let plan = cluster.tick();
            assert!(plan.versions.values().all(|v| v == "1.20.2"));
            assert_eq!(plan.upgrade.as_ref(), Some(&record));
            assert!(!plan.upgrading);
            assert!(upgraded(&plan).message.contains("not retried"), "{}", upgraded(&plan).message);
        }

        // Setting it to the running version and back is a new attempt.
        cluster.desired = "1.20.2".into();
        let accepted = cluster.tick();
        assert!(accepted.upgrade.as_ref().unwrap().retry_allowed);
        assert_eq!(upgraded(&accepted).reason, reasons::ROLLED_BACK, "the outcome stays visible");
        assert!(!upgraded(&accepted).message.contains("not retried"));
        cluster.desired = "1.21.0".into();
        let retry = cluster.tick();
        let record = retry.upgrade.as_ref().unwrap();
        assert_eq!(record.state, UpgradeState::InProgress);
        assert_eq!((record.component.as_deref(), record.instance), (Some(APISERVER), Some(0)));
        assert!(record.done.is_empty());
    }

    #[test]
    fn the_deadline_counts_from_the_step_start() {
        let mut status = running("1.20.2");
        status.upgrade = Some(UpgradeStatus {
            from: "1.20.2".into(),
            to: "1.21.0".into(),
            state: UpgradeState::InProgress,
            component: Some(KCM.into()),
            instance: Some(0),
            done: vec!["kube-apiserver/0".into()],
            started_at: Some(at(0)),
            step_started_at: Some(at(100)),
            ..Default::default()
        });
        let mut observed = everyone(1, "1.20.2", true);
        observed[0] = observation(APISERVER, 0, "1.21.0", true);
        observed[1] = observation(KCM, 0, "1.21.0", false);
        let state_at =
            |now: i64| plan(&input("1.21.0", Some(&status), 1, &observed, now)).upgrade.unwrap().state;
        assert_eq!(state_at(159), UpgradeState::InProgress);
        assert_eq!(state_at(160), UpgradeState::RollingBack);
        let rolling = plan(&input("1.21.0", Some(&status), 1, &observed, 160));
        let record = rolling.upgrade.as_ref().unwrap();
        assert_eq!(
            (record.component.as_deref(), record.instance),
            (Some(KCM), Some(0)),
            "the failing one goes back first"
        );
        assert_eq!(rolling.versions[&(KCM.to_string(), 0)], "1.20.2");
        assert_eq!(rolling.versions[&(APISERVER.to_string(), 0)], "1.21.0");
        assert_eq!(rolling.versions[&("kube-scheduler".to_string(), 0)], "1.20.2");
        assert_eq!(
            record.message.as_deref(),
            Some("kube-controller-manager/0 was not healthy on 1.21.0 within 1m0s")
        );
    }

    #[test]
    fn rollback_steps_have_no_deadline() {
        // The apiserver comes back unhealthy on the old version too (say,
        // its etcd is down): the rollback waits rather than giving up.
        fn broken_apiserver(component: &str, _: &str) -> bool {
            component == APISERVER
        }
        let mut cluster = Cluster::new("1.20.2", 1, broken_apiserver);
        cluster.desired = "1.21.0".into();
        let plans = cluster.run(200);
        let last = plans.last().unwrap();
        assert!(last.upgrading, "still rolling back after {} ticks", plans.len());
        let record = cluster.record();
        assert_eq!(record.state, UpgradeState::RollingBack);
        assert_eq!((record.component.as_deref(), record.instance), (Some(APISERVER), Some(0)));
        assert!(last.versions.values().all(|v| v == "1.20.2"));
        assert_eq!(record.step_started_at, Some(at(1060)));
    }

    #[test]
    fn setting_the_version_back_during_an_upgrade_rolls_back_and_allows_a_retry() {
        let mut cluster = Cluster::new("1.20.2", 1, never_broken);
        cluster.desired = "1.21.0".into();
        cluster.tick();
        cluster.tick();
        assert_eq!(cluster.record().component.as_deref(), Some(KCM));
        cluster.desired = "1.20.2".into();
        let turned = cluster.tick();
        let record = turned.upgrade.as_ref().unwrap();
        assert_eq!(record.state, UpgradeState::RollingBack);
        assert!(record.retry_allowed);
        assert!(upgraded(&turned).message.contains("set back to 1.20.2"), "{}", upgraded(&turned).message);
        let plans = cluster.run(20);
        assert!(!plans.last().unwrap().upgrading);
        assert_eq!(cluster.record().state, UpgradeState::RolledBack);
        assert_eq!(cluster.status.version.as_deref(), Some("1.20.2"));
        assert!(cluster.configured.values().all(|v| v == "1.20.2"));

        cluster.desired = "1.21.0".into();
        let again = cluster.tick();
        assert_eq!(again.upgrade.unwrap().state, UpgradeState::InProgress);
    }

    #[test]
    fn a_third_version_waits_for_the_current_upgrade() {
        let mut cluster = Cluster::new("1.20.2", 1, never_broken);
        cluster.desired = "1.20.3".into();
        cluster.tick();
        cluster.desired = "1.21.0".into();
        let plans = cluster.run(20);
        let during = &plans[0];
        assert_eq!(during.upgrade.as_ref().unwrap().to, "1.20.3");
        assert!(
            upgraded(during)
                .message
                .ends_with("spec.version is now 1.21.0: it is taken once this upgrade finishes"),
            "{}",
            upgraded(during).message
        );
        let finished = plans.last().unwrap();
        assert_eq!(finished.version.as_deref(), Some("1.20.3"));
        assert!(
            upgraded(finished).message.contains("1.21.0 is considered next"),
            "{}",
            upgraded(finished).message
        );
        let next = cluster.tick();
        let record = next.upgrade.as_ref().unwrap();
        assert_eq!(
            (record.from.as_str(), record.to.as_str(), record.state),
            ("1.20.3", "1.21.0", UpgradeState::InProgress)
        );
        assert_eq!(next.previous_version.as_deref(), Some("1.20.2"));
    }

    #[test]
    fn a_third_version_during_a_rollback_is_taken_after_it() {
        fn broken_new(component: &str, version: &str) -> bool {
            component == KCM && version == "1.21.0-broken"
        }
        let mut cluster = Cluster::new("1.20.2", 2, broken_new);
        cluster.desired = "1.21.0-broken".into();
        let plans = cluster.run(100);
        assert_eq!(cluster.record().state, UpgradeState::RolledBack);
        assert!(plans.iter().all(|p| !upgraded(p).message.contains("it is taken")));

        let mut cluster = Cluster::new("1.20.2", 2, broken_new);
        cluster.desired = "1.21.0-broken".into();
        while cluster.record_state() != Some(UpgradeState::RollingBack) {
            cluster.tick();
        }
        cluster.desired = "1.21.1".into();
        let rolling = cluster.tick();
        assert!(
            upgraded(&rolling).message.contains("spec.version is now 1.21.1"),
            "{}",
            upgraded(&rolling).message
        );
        cluster.run(20);
        assert_eq!(cluster.record().state, UpgradeState::RolledBack);
        let next = cluster.tick();
        let record = next.upgrade.as_ref().unwrap();
        assert_eq!(
            (record.from.as_str(), record.to.as_str(), record.state),
            ("1.20.2", "1.21.1", UpgradeState::InProgress)
        );
    }

    impl Cluster {
        fn record_state(&self) -> Option<UpgradeState> {
            self.status.upgrade.as_ref().map(|u| u.state)
        }
    }

    #[test]
    fn plans_are_idempotent_and_timestamps_move_only_with_steps() {
        fn slow(component: &str, version: &str) -> bool {
            component == KCM && version == "1.21.0"
        }
        let mut cluster = Cluster::new("1.20.2", 3, slow);
        cluster.desired = "1.21.0".into();
        for _ in 0..30 {
            let observed = cluster.observed();
            let once = plan(&input(&cluster.desired, Some(&cluster.status), 3, &observed, cluster.now));
            let twice = plan(&input(&cluster.desired, Some(&cluster.status), 3, &observed, cluster.now));
            assert_eq!(once, twice);
            // Fed back with the same observations a moment later, nothing
            // changes unless a deadline passed in between.
            let mut written = cluster.status.clone();
            write(&mut written, &once);
            let again = plan(&input(&cluster.desired, Some(&written), 3, &observed, cluster.now + 1));
            let record = once.upgrade.as_ref().unwrap();
            let deadline_at = record.step_started_at.as_ref().unwrap().0.as_second() + 60;
            if record.state == UpgradeState::RollingBack || cluster.now + 1 < deadline_at {
                assert_eq!(again, once, "at {}", cluster.now);
            }
            cluster.tick();
        }
        assert_eq!(cluster.record_state(), Some(UpgradeState::RolledBack));
    }

    #[test]
    fn the_condition_transition_time_moves_only_when_its_status_does() {
        let mut cluster = Cluster::new("1.20.2", 1, never_broken);
        cluster.tick();
        let settled_at = cluster.status.conditions[0].last_transition_time.clone();
        cluster.desired = "1.21.0".into();
        let started = cluster.tick();
        let started_at = upgraded(&started).last_transition_time.clone();
        assert_ne!(started_at, settled_at, "True -> False is a transition");
        let moving = cluster.tick();
        assert_eq!(upgraded(&moving).last_transition_time, started_at, "still False");
        let plans = cluster.run(10);
        let done = plans.last().unwrap();
        assert_eq!(upgraded(done).status, "True");
        assert_eq!(upgraded(done).last_transition_time, at(cluster.now - 10));
    }

    #[test]
    fn scaling_down_under_the_current_step_moves_on() {
        let mut status = running("1.20.2");
        status.upgrade = Some(UpgradeStatus {
            from: "1.20.2".into(),
            to: "1.21.0".into(),
            state: UpgradeState::InProgress,
            component: Some(APISERVER.into()),
            instance: Some(2),
            done: vec!["kube-apiserver/0".into(), "kube-apiserver/1".into()],
            started_at: Some(at(0)),
            step_started_at: Some(at(10)),
            ..Default::default()
        });
        let mut observed = everyone(2, "1.20.2", true);
        observed[0].version = "1.21.0".into();
        observed[1].version = "1.21.0".into();
        let plan = plan(&input("1.21.0", Some(&status), 2, &observed, 20));
        let record = plan.upgrade.as_ref().unwrap();
        assert_eq!((record.component.as_deref(), record.instance), (Some(KCM), Some(0)));
        assert_eq!(record.step_started_at, Some(at(20)));
        assert_eq!(plan.versions.len(), 6);
        assert_eq!(plan.versions[&(KCM.to_string(), 0)], "1.21.0");
        assert_eq!(plan.versions[&(KCM.to_string(), 1)], "1.20.2");
    }

    #[test]
    fn a_record_without_a_known_current_step_starts_from_the_right_end() {
        let observed = everyone(1, "1.20.2", true);
        let with_state = |state| {
            let mut status = running("1.20.2");
            status.upgrade = Some(UpgradeStatus {
                from: "1.20.2".into(),
                to: "1.21.0".into(),
                state,
                component: Some("kube-proxy".into()),
                instance: Some(0),
                ..Default::default()
            });
            status
        };
        let status = with_state(UpgradeState::InProgress);
        let upgrading = plan(&input("1.21.0", Some(&status), 1, &observed, 70)).upgrade.unwrap();
        assert_eq!((upgrading.component.as_deref(), upgrading.instance), (Some(APISERVER), Some(0)));
        assert_eq!(upgrading.step_started_at, Some(at(70)), "the deadline counts from now");

        // Rolling back starts from the last instance; here every one is
        // already on `from` and healthy, so it finishes at once.
        let status = with_state(UpgradeState::RollingBack);
        let rolled_back = plan(&input("1.21.0", Some(&status), 1, &observed, 70)).upgrade.unwrap();
        assert_eq!(rolled_back.state, UpgradeState::RolledBack);
        assert_eq!(rolled_back.done, ["kube-scheduler/0", "kube-controller-manager/0", "kube-apiserver/0"]);
    }

    #[test]
    fn upgrading_helper_follows_the_record_state() {
        for (state, upgrading) in [
            (UpgradeState::InProgress, true),
            (UpgradeState::RollingBack, true),
            (UpgradeState::Succeeded, false),
            (UpgradeState::RolledBack, false),
        ] {
            let record = UpgradeStatus { state, ..Default::default() };
            assert_eq!(is_upgrading(Some(&record)), upgrading, "{state:?}");
        }
        assert!(!is_upgrading(None));
        assert_eq!(phase_of(&running("1.20.2")), None);
    }

    impl Cluster {
        /// The same cluster with `nodes` kubelets on its version.
        fn with_nodes(mut self, nodes: i32) -> Self {
            let version = self.status.version.clone().unwrap();
            for index in 0..nodes {
                self.configured.insert((KUBELET.into(), index), version.clone());
            }
            self.nodes = nodes;
            self
        }
    }

    /// No kubelet on a version newer than any apiserver's, or more than
    /// three minors older.
    fn assert_kubelet_skew(versions: &BTreeMap<(String, i32), String>) {
        for ((_, index), kubelet) in versions.iter().filter(|((c, _), _)| c == KUBELET) {
            for apiserver in versions.iter().filter(|((c, _), _)| c == APISERVER).map(|(_, v)| v) {
                assert_eq!(check_kubelet_skew(apiserver, kubelet), Ok(()), "kubelet/{index}: {versions:?}");
            }
        }
    }

    #[test]
    fn kubelet_skew_allows_up_to_three_older_minors_and_never_a_newer_one() {
        for (apiserver, kubelet, allowed) in [
            ("1.37.2", "1.37.2", true),
            ("1.37.2", "1.37.9", true),
            ("1.37.2", "1.36.3", true),
            ("1.37.0", "1.34.0", true),
            ("1.37.0", "1.33.9", false),
            ("1.36.3", "1.37.2", false),
            ("2.0.0", "1.37.0", false),
            ("v1.37.2", "v1.35.0-rc.1", true),
        ] {
            let got = check_kubelet_skew(apiserver, kubelet);
            assert_eq!(got.is_ok(), allowed, "{apiserver} / {kubelet}: {got:?}");
            if let Err(refusal) = got {
                let text = refusal.to_string();
                assert!(text.contains(kubelet.trim_start_matches('v')) && text.contains("3 minor"), "{text}");
            }
        }
        assert!(matches!(check_kubelet_skew("1.37", "1.37.0"), Err(Refusal::Unparsable { .. })));
    }

    #[test]
    fn kubelets_move_after_the_control_plane_one_at_a_time_and_never_ahead_of_an_apiserver() {
        let mut cluster = Cluster::new("1.36.3", 2, never_broken).with_nodes(2);
        cluster.desired = "1.37.2".into();
        let plans = cluster.run(40);
        assert_eq!(
            visited(&plans),
            [
                "kube-apiserver/0",
                "kube-apiserver/1",
                "kube-controller-manager/0",
                "kube-controller-manager/1",
                "kube-scheduler/0",
                "kube-scheduler/1",
                "kubelet/0",
                "kubelet/1"
            ]
        );
        for plan in &plans {
            assert_kubelet_skew(&plan.versions);
            let moving = plan.versions.iter().filter(|((c, _), v)| c == KUBELET && *v == "1.37.2").count();
            assert!(moving <= 2, "{:?}", plan.versions);
        }
        assert_eq!(cluster.record().state, UpgradeState::Succeeded);
        assert_eq!(cluster.record().done.len(), 8);
        assert!(cluster.configured.values().all(|v| v == "1.37.2"), "{:?}", cluster.configured);
        assert!(upgraded(plans.last().unwrap()).message.contains("upgraded from 1.36.3 to 1.37.2"));
    }

    #[test]
    fn a_kubelet_not_ready_on_the_new_version_rolls_back_kubelets_first() {
        fn broken_kubelet(component: &str, version: &str) -> bool {
            component == KUBELET && version == "1.37.2"
        }
        let mut cluster = Cluster::new("1.36.3", 1, broken_kubelet).with_nodes(2);
        cluster.desired = "1.37.2".into();
        let plans = cluster.run(40);
        let steps = visited(&plans);
        assert_eq!(
            steps,
            [
                "kube-apiserver/0",
                "kube-controller-manager/0",
                "kube-scheduler/0",
                "kubelet/0",
                // Rolling back, newest first: the kubelet, then the control plane.
                "kube-scheduler/0",
                "kube-controller-manager/0",
                "kube-apiserver/0"
            ],
            "{steps:?}"
        );
        for plan in &plans {
            assert_kubelet_skew(&plan.versions);
            // The second kubelet never moved.
            assert_eq!(plan.versions[&(KUBELET.to_string(), 1)], "1.36.3");
        }
        let record = cluster.record();
        assert_eq!(record.state, UpgradeState::RolledBack);
        assert!(
            record.message.as_deref().unwrap().contains("kubelet/0 was not healthy on 1.37.2"),
            "{record:?}"
        );
        assert!(cluster.configured.values().all(|v| v == "1.36.3"), "{:?}", cluster.configured);
    }

    #[test]
    fn a_change_leaving_a_kubelet_more_than_three_minors_behind_is_refused() {
        let status = running("1.36.0");
        let mut observed = everyone(1, "1.36.0", true);
        observed.push(observation(KUBELET, 0, "1.33.4", true));
        let refused = plan(&UpgradeInput { nodes: 1, ..input("1.37.0", Some(&status), 1, &observed, 100) });
        let condition = upgraded(&refused);
        assert_eq!((condition.reason.as_str(), condition.status.as_str()), (reasons::REFUSED, "False"));
        assert!(condition.message.contains("kubelet 1.33.4"), "{}", condition.message);
        assert!(!refused.upgrading);
        assert!(refused.versions.values().all(|v| v == "1.36.0"), "{:?}", refused.versions);

        // Within the window it goes ahead.
        observed.pop();
        observed.push(observation(KUBELET, 0, "1.34.0", true));
        let allowed = plan(&UpgradeInput { nodes: 1, ..input("1.37.0", Some(&status), 1, &observed, 100) });
        assert!(allowed.upgrading, "{:?}", allowed.condition);
    }
}
