//! A `NodePool`'s decisions: which real nodes it has and where (names,
//! spread over Machines), which revision they should run, and the next
//! steps of scaling, rolling a new revision through the pool (cordon, drain,
//! update, Ready on the version, uncordon; `maxUnavailable` at a time, a new
//! node taken only while every PodDisruptionBudget is healthy), rolling back
//! a revision that failed, and replacing nodes that stayed NotReady or lost
//! their Machine. The controller (`flotilla_kok::node_pool`) observes the
//! Machines' `spec.realNodes`, the cluster's Nodes and PDBs, and carries
//! out [`Action`]s; the Machines' entries are the record of what exists.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_api::machine::RealNodeSpec;
use flotilla_api::node_pool::{KubeletSpec, NodePoolSpec, NodeRolloutStatus, PoolNodeStatus};
use flotilla_core::conditions::Wanted;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::upgrade::{check_kubelet_skew, KubeVersion};

/// Annotation the pool puts on a Node it cordons, with the time (seconds
/// since the epoch): it uncordons only Nodes it cordoned, and a node's
/// deadline counts from then.
pub const CORDONED_AT_ANNOTATION: &str = "kok.flotilla.io/cordoned-at";
/// Label of a Machine's `realNodes` entry (and so of its Node): the
/// revision the entry was written for.
pub const REVISION_LABEL: &str = "kok.flotilla.io/pool-revision";
/// Real nodes one Machine may hold (the Machine schema's limit).
pub const MAX_NODES_PER_MACHINE: usize = 16;
/// A real node's name is at most this long (the Machine schema's limit).
pub const MAX_NODE_NAME: usize = 45;

pub mod rollout_state {
    pub const COMPLETE: &str = "Complete";
    pub const PROGRESSING: &str = "Progressing";
    pub const ROLLED_BACK: &str = "RolledBack";
}

/// What a revision is: the nodes' version and kubelet configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub version: String,
    pub kubelet: KubeletSpec,
}

impl Template {
    /// The revision's name: a short hash of the version and configuration.
    pub fn revision(&self) -> String {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::json!({"version": self.version, "kubelet": self.kubelet});
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        hex::encode(digest)[..10].to_string()
    }
}

/// A node entry of the pool with `extraImagesDir` set to the cluster's
/// image directory, when it is not set so yet (entries written before
/// images could be loaded); `None` when it is. Nothing else changes: the
/// revision label stays, so the node is not rolled, and the node agent
/// restarts nothing for it.
pub fn with_images_dir(entry: &RealNodeSpec, dir: &str) -> Option<RealNodeSpec> {
    if entry.extra_images_dir.as_deref() == Some(dir) {
        return None;
    }
    Some(RealNodeSpec { extra_images_dir: Some(dir.to_string()), ..entry.clone() })
}

/// Why a pool's spec is not carried out; the message is for the person
/// who wrote it.
pub fn validate(
    spec: &NodePoolSpec,
    pool: &str,
    cluster_version: &str,
    known_versions: &BTreeSet<String>,
) -> Result<Template, String> {
    let version = spec.version.clone().unwrap_or_else(|| cluster_version.to_string());
    let version = version.trim_start_matches('v').to_string();
    KubeVersion::parse(&version).map_err(|e| e.to_string())?;
    check_kubelet_skew(cluster_version, &version).map_err(|e| e.to_string())?;
    if !known_versions.contains(&version) {
        let known: Vec<&str> = known_versions.iter().map(String::as_str).collect();
        return Err(format!(
            "no binaries for Kubernetes {version}: the operator has {}; build them with scripts/k8s-binaries.sh {version}",
            known.join(", ")
        ));
    }
    let longest = node_name(&spec.cluster_ref, pool, 999);
    if longest.len() > MAX_NODE_NAME {
        return Err(format!(
            "node names {longest:?} would be longer than {MAX_NODE_NAME} characters: use a shorter pool or cluster name"
        ));
    }
    Ok(Template { version, kubelet: spec.kubelet.clone() })
}

/// The name of the pool's node with ordinal `n`: `<cluster>-<pool>-<n>`,
/// unique on every Machine that hosts several clusters' pools; a pool
/// already named after its cluster (`<cluster>-...`) is not prefixed again.
pub fn node_name(cluster: &str, pool: &str, n: u32) -> String {
    if pool.strip_prefix(cluster).is_some_and(|rest| rest.starts_with('-')) {
        format!("{pool}-{n}")
    } else {
        format!("{cluster}-{pool}-{n}")
    }
}

fn ordinal(name: &str) -> u32 {
    name.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The revision the pool rolls to: the spec's, unless that one failed, in
/// which case the last good one (when there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Spec,
    /// The spec's revision failed; the pool holds the last good revision.
    LastGood(Template),
    /// The spec's revision failed and there is no good one to go back to.
    Hold,
}

pub fn choose_target(spec_revision: &str, status: Option<&NodeRolloutStatus>) -> Target {
    let Some(status) = status else { return Target::Spec };
    if status.failed_revision.as_deref() != Some(spec_revision) {
        return Target::Spec;
    }
    match (&status.last_good_version, &status.last_good_kubelet) {
        (Some(version), kubelet) => Target::LastGood(Template {
            version: version.clone(),
            kubelet: kubelet.clone().unwrap_or_default(),
        }),
        (None, _) => Target::Hold,
    }
}

/// A Machine the pool may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineView {
    pub name: String,
    /// Its node agent reports (its heartbeat is fresh).
    pub alive: bool,
    /// Real nodes on it, of every pool and cluster.
    pub real_nodes: usize,
}

/// A node of the pool as observed: its Machine entry and its Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedNode {
    pub name: String,
    pub machine: String,
    /// The revision its Machine entry was written for.
    pub revision: String,
    /// Its Machine's node agent reports.
    pub machine_alive: bool,
    pub node: Option<NodeView>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    pub ready: bool,
    /// Since when the Ready condition has its value (seconds).
    pub ready_since: Option<i64>,
    /// The kubelet's version, without a leading `v`.
    pub kubelet_version: String,
    pub unschedulable: bool,
    /// When the pool cordoned it ([`CORDONED_AT_ANNOTATION`]).
    pub cordoned_at: Option<i64>,
    /// Pods a drain still has to evict (not DaemonSet or mirror pods, not
    /// finished).
    pub pods_to_evict: u32,
    /// Why it is not Ready, from its Ready condition.
    pub not_ready_message: Option<String>,
}

/// Everything [`plan`] decides from.
#[derive(Debug, Clone)]
pub struct PoolInput<'a> {
    pub cluster: &'a str,
    pub pool: &'a str,
    pub spec: &'a NodePoolSpec,
    /// The revision the pool rolls to (after [`choose_target`]).
    pub target: &'a Template,
    pub nodes: &'a [ObservedNode],
    /// The Machines the selector picks.
    pub machines: &'a [MachineView],
    /// Every PodDisruptionBudget of the cluster has `currentHealthy` at
    /// least `desiredHealthy`: the pods of the last drained node are back.
    pub budgets_healthy: bool,
    pub now: i64,
}

/// One step for the controller, each idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Declare a new node on `machine` (its Machine entry, its credentials).
    Create { name: String, machine: String },
    /// Mark the Node unschedulable, with [`CORDONED_AT_ANNOTATION`].
    Cordon { name: String },
    /// Evict the pods on the Node through the Eviction API (refused while
    /// a PodDisruptionBudget allows no disruption: tried again later).
    Drain { name: String },
    /// Write its Machine entry for the target revision (the node agent
    /// restarts what changed).
    Update { name: String, machine: String },
    /// Mark the Node schedulable again and drop the annotation.
    Uncordon { name: String },
    /// Delete its Machine entry, its credentials and its Node.
    Remove { name: String, machine: String },
}

/// Why the rollout failed: recorded as the failed revision's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutFailure {
    pub node: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPlan {
    pub actions: Vec<Action>,
    pub nodes: Vec<PoolNodeStatus>,
    /// Nodes Ready, schedulable and on the target revision.
    pub ready: i32,
    /// Nodes whose entry carries the target revision.
    pub updated: i32,
    /// Replacements started now, with why.
    pub replacements: Vec<String>,
    pub failure: Option<RolloutFailure>,
    /// What holds the pool back (a blocked drain, no room), for Progressing
    /// or Degraded.
    pub waiting: Vec<String>,
    /// Replicas that could not be placed on any Machine.
    pub unplaced: i32,
}

impl PoolPlan {
    /// Every node exists, is Ready and on the target revision, and nothing
    /// is left to do.
    pub fn complete(&self, replicas: i32) -> bool {
        self.actions.is_empty() && self.ready == replicas && self.nodes.len() as i32 == replicas
    }
}

fn on_target(n: &ObservedNode, target: &Template, revision: &str) -> bool {
    n.revision == revision
        && n.node
            .as_ref()
            .is_some_and(|v| v.ready && v.kubelet_version.trim_start_matches('v') == target.version)
}

/// Whether the node should be replaced now, and why.
fn replacement_reason(n: &ObservedNode, spec: &NodePoolSpec, revision: &str, now: i64) -> Option<String> {
    if !n.machine_alive {
        return Some(format!("node {} replaced: its Machine {} stopped reporting", n.name, n.machine));
    }
    let after = i64::from(spec.repair.replace_after_seconds);
    if after == 0 || n.revision != revision {
        // A node of another revision is the rollout's to update, and its
        // deadline decides about it.
        return None;
    }
    let view = n.node.as_ref()?;
    if view.ready || view.cordoned_at.is_some() {
        return None;
    }
    let since = view.ready_since?;
    (now - since >= after).then(|| {
        format!(
            "node {} replaced: NotReady for {}s (more than {after}s){}",
            n.name,
            now - since,
            view.not_ready_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        )
    })
}

/// The next steps for the pool.
pub fn plan(input: &PoolInput<'_>) -> PoolPlan {
    let revision = input.target.revision();
    let replicas = input.spec.replicas.max(0) as usize;
    let mut actions = Vec::new();
    let mut states: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut waiting = Vec::new();
    let mut replacements = Vec::new();

    // 1. Replacements: removed at once (a dead or stuck kubelet cannot be
    // drained; deleting its Node lets the controllers recreate its pods).
    let mut kept: Vec<&ObservedNode> = Vec::new();
    for n in input.nodes {
        match replacement_reason(n, input.spec, &revision, input.now) {
            Some(why) if replacements.is_empty() || !n.machine_alive => {
                replacements.push(why);
                actions.push(Action::Remove { name: n.name.clone(), machine: n.machine.clone() });
                states.insert(n.name.clone(), "Removing");
            }
            _ => kept.push(n),
        }
    }

    // 2. Scale down: the nodes to remove, those already on their way out
    // first so the choice holds from one reconcile to the next.
    let excess = kept.len().saturating_sub(replicas);
    let mut by_removal = kept.clone();
    by_removal.sort_by_key(|n| {
        let view = n.node.as_ref();
        (
            view.and_then(|v| v.cordoned_at).is_none(),
            n.revision == revision,
            view.is_some_and(|v| v.ready),
            std::cmp::Reverse(ordinal(&n.name)),
        )
    });
    let leaving: BTreeSet<&str> = by_removal.iter().take(excess).map(|n| n.name.as_str()).collect();
    for n in by_removal.iter().take(excess) {
        let (state, action) = match &n.node {
            None => ("Removing", Action::Remove { name: n.name.clone(), machine: n.machine.clone() }),
            Some(v) if v.cordoned_at.is_none() => ("Cordoned", Action::Cordon { name: n.name.clone() }),
            Some(v) if v.pods_to_evict > 0 => {
                waiting.push(format!("draining {} to remove it: {} pods left", n.name, v.pods_to_evict));
                ("Draining", Action::Drain { name: n.name.clone() })
            }
            Some(_) => ("Removing", Action::Remove { name: n.name.clone(), machine: n.machine.clone() }),
        };
        states.insert(n.name.clone(), state);
        actions.push(action);
    }
    let staying: Vec<&ObservedNode> =
        kept.iter().copied().filter(|n| !leaving.contains(n.name.as_str())).collect();

    // 3. Scale up: new nodes on the target revision, on the Machines with
    // the fewest of the pool's nodes, then the fewest real nodes.
    let missing = replicas.saturating_sub(staying.len());
    let mut unplaced = 0;
    let taken: BTreeSet<u32> = input.nodes.iter().map(|n| ordinal(&n.name)).collect();
    let mut next_ordinal = (0u32..).filter(|i| !taken.contains(i));
    let mut load: BTreeMap<&str, (usize, usize)> =
        input.machines.iter().filter(|m| m.alive).map(|m| (m.name.as_str(), (0, m.real_nodes))).collect();
    for n in &staying {
        if let Some(l) = load.get_mut(n.machine.as_str()) {
            l.0 += 1;
        }
    }
    // A machine whose node is being replaced is not the new node's first
    // choice.
    let replaced_on: BTreeSet<&str> = input
        .nodes
        .iter()
        .filter(|n| states.get(&n.name) == Some(&"Removing") && !leaving.contains(n.name.as_str()))
        .map(|n| n.machine.as_str())
        .collect();
    for _ in 0..missing {
        let choice = load
            .iter()
            .filter(|(_, (_, all))| *all < MAX_NODES_PER_MACHINE)
            .min_by_key(|(name, (pool, all))| (replaced_on.contains(*name), *pool, *all, **name))
            .map(|(name, _)| *name);
        let (Some(machine), Some(n)) = (choice, next_ordinal.next()) else {
            unplaced += 1;
            continue;
        };
        if let Some(l) = load.get_mut(machine) {
            l.0 += 1;
            l.1 += 1;
        }
        let name = node_name(input.cluster, input.pool, n);
        states.insert(name.clone(), "Joining");
        actions.push(Action::Create { name, machine: machine.to_string() });
    }
    if unplaced > 0 {
        waiting.push(format!(
            "{unplaced} of {replicas} nodes have no Machine: {} Machines match the selector, {} of them reporting, at most {MAX_NODES_PER_MACHINE} real nodes each",
            input.machines.len(),
            input.machines.iter().filter(|m| m.alive).count()
        ));
    }

    // 4. The rollout over the nodes that stay.
    let mut failure = None;
    let deadline = i64::from(input.spec.rollout.node_deadline_seconds);
    let mut unavailable = 0usize;
    let mut candidates: Vec<&ObservedNode> = Vec::new();
    for n in &staying {
        let view = n.node.as_ref();
        let cordoned_at = view.and_then(|v| v.cordoned_at);
        let ready = view.is_some_and(|v| v.ready);
        if cordoned_at.is_some() || !ready {
            unavailable += 1;
        }
        let state = if n.revision == revision {
            if on_target(n, input.target, &revision) {
                if cordoned_at.is_some() {
                    actions.push(Action::Uncordon { name: n.name.clone() });
                    "Cordoned"
                } else {
                    "Running"
                }
            } else {
                if let Some(at) = cordoned_at.filter(|at| input.now - at >= deadline) {
                    let why = view
                        .and_then(|v| v.not_ready_message.clone())
                        .unwrap_or_else(|| "no Node registered".to_string());
                    failure.get_or_insert(RolloutFailure {
                        node: n.name.clone(),
                        message: format!(
                            "node {} not Ready on {} {}s after it was cordoned (deadline {deadline}s): {why}",
                            n.name,
                            input.target.version,
                            input.now - at
                        ),
                    });
                }
                if view.is_none() {
                    "Joining"
                } else if cordoned_at.is_some() {
                    "Updating"
                } else {
                    "NotReady"
                }
            }
        } else {
            match (view, cordoned_at) {
                (Some(v), Some(_)) if v.pods_to_evict > 0 => {
                    actions.push(Action::Drain { name: n.name.clone() });
                    "Draining"
                }
                (Some(_), Some(_)) => {
                    actions.push(Action::Update { name: n.name.clone(), machine: n.machine.clone() });
                    "Updating"
                }
                // No Node to cordon or drain: nothing runs there to move.
                (None, _) => {
                    actions.push(Action::Update { name: n.name.clone(), machine: n.machine.clone() });
                    "Updating"
                }
                (Some(_), None) => {
                    candidates.push(n);
                    "Running"
                }
            }
        };
        states.insert(n.name.clone(), state);
    }
    // Cordon the next nodes while the budget allows and every disruption
    // budget is healthy again; NotReady ones first (they are unavailable
    // already), then by name.
    if !candidates.is_empty() && failure.is_none() {
        candidates.sort_by_key(|n| (n.node.as_ref().is_some_and(|v| v.ready), ordinal(&n.name)));
        let budget = (input.spec.rollout.max_unavailable.max(1) as usize).saturating_sub(unavailable);
        if !input.budgets_healthy {
            waiting.push("waiting for every PodDisruptionBudget to be healthy before the next node".into());
        } else {
            let mut free = budget;
            for n in candidates {
                let already_unavailable = !n.node.as_ref().is_some_and(|v| v.ready);
                if free == 0 && !already_unavailable {
                    break;
                }
                if !already_unavailable {
                    free -= 1;
                }
                actions.push(Action::Cordon { name: n.name.clone() });
                states.insert(n.name.clone(), "Cordoned");
            }
        }
    }

    let mut nodes: Vec<PoolNodeStatus> = input
        .nodes
        .iter()
        .map(|n| {
            let view = n.node.as_ref();
            PoolNodeStatus {
                name: n.name.clone(),
                machine: n.machine.clone(),
                revision: n.revision.clone(),
                version: view.map(|v| v.kubelet_version.trim_start_matches('v').to_string()),
                ready: view.is_some_and(|v| v.ready),
                state: states.get(&n.name).copied().unwrap_or("Running").to_string(),
            }
        })
        .collect();
    nodes.sort_by_key(|n| ordinal(&n.name));
    let ready = staying
        .iter()
        .filter(|n| {
            on_target(n, input.target, &revision) && n.node.as_ref().is_some_and(|v| !v.unschedulable)
        })
        .count() as i32;
    let updated = staying.iter().filter(|n| n.revision == revision).count() as i32;
    PoolPlan { actions, nodes, ready, updated, replacements, failure, waiting, unplaced }
}

/// The pool's rollout record after this reconcile: the revision it rolls
/// to, the last good one (kept so a failure can go back to it), a failure
/// and its reason, when it started and completed.
pub fn rollout_status(
    previous: Option<&NodeRolloutStatus>,
    spec_template: &Template,
    target: &Target,
    plan: &PoolPlan,
    replicas: i32,
    now: &Time,
) -> NodeRolloutStatus {
    let spec_revision = spec_template.revision();
    let mut status = previous.cloned().unwrap_or_default();
    let same_revision = previous.is_some_and(|p| p.revision == spec_revision);
    if !same_revision {
        // A new spec revision: a fresh rollout (a failed one is forgotten
        // once the spec changes).
        status.revision = spec_revision.clone();
        status.started_at = Some(now.clone());
        status.completed_at = None;
        status.message = None;
        if status.failed_revision.as_deref() != Some(spec_revision.as_str()) {
            status.failed_revision = None;
        }
    }
    if let (Some(failure), Target::Spec) = (&plan.failure, target) {
        status.failed_revision = Some(spec_revision.clone());
        status.message = Some(failure.message.clone());
        status.completed_at = None;
        status.state = if status.last_good_version.is_some() {
            rollout_state::ROLLED_BACK.into()
        } else {
            rollout_state::PROGRESSING.into()
        };
        return status;
    }
    let complete = plan.complete(replicas) && plan.failure.is_none();
    match target {
        Target::Spec if complete => {
            if status.state != rollout_state::COMPLETE || status.completed_at.is_none() {
                status.completed_at = Some(now.clone());
            }
            status.state = rollout_state::COMPLETE.into();
            status.last_good_revision = Some(spec_revision);
            status.last_good_version = Some(spec_template.version.clone());
            status.last_good_kubelet = Some(spec_template.kubelet.clone());
            status.message = None;
        }
        Target::Spec => {
            status.state = rollout_state::PROGRESSING.into();
            status.completed_at = None;
        }
        Target::LastGood(_) => {
            status.state = rollout_state::ROLLED_BACK.into();
            if complete && status.completed_at.is_none() {
                status.completed_at = Some(now.clone());
            }
        }
        Target::Hold => status.state = rollout_state::ROLLED_BACK.into(),
    }
    status
}

/// The pool's `Ready`, `Progressing` and `Degraded` conditions.
pub fn conditions(plan: &PoolPlan, rollout: &NodeRolloutStatus, replicas: i32) -> Vec<Wanted> {
    let ready = plan.ready == replicas && plan.nodes.len() as i32 == replicas;
    let mut out = vec![Wanted::new(
        "Ready",
        ready,
        if ready { "NodesReady" } else { "NodesNotReady" },
        format!("{} of {replicas} nodes Ready and schedulable on revision {}", plan.ready, rollout.revision),
    )];
    let busy = !plan.actions.is_empty() || !plan.complete(replicas);
    let (reason, mut message) = if !plan.replacements.is_empty() {
        ("Replacing", plan.replacements.join("; "))
    } else if rollout.state == rollout_state::ROLLED_BACK {
        ("RollingBack", rollout.message.clone().unwrap_or_default())
    } else if plan.updated < plan.nodes.len() as i32 {
        (
            "RollingOut",
            format!("{} of {} nodes on revision {}", plan.updated, plan.nodes.len(), rollout.revision),
        )
    } else if busy {
        ("Scaling", format!("{} nodes, {replicas} wanted", plan.nodes.len()))
    } else {
        ("Complete", format!("{replicas} nodes on revision {}", rollout.revision))
    };
    if busy && !plan.waiting.is_empty() {
        message = format!("{message}; {}", plan.waiting.join("; "));
    }
    out.push(Wanted::new("Progressing", busy, reason, message));
    let degraded = if let Some(failed) = &rollout.failed_revision {
        Some((
            "RolledBack",
            format!(
                "revision {failed} failed and is not tried again until the spec changes: {}",
                rollout.message.as_deref().unwrap_or("no reason recorded")
            ),
        ))
    } else if plan.unplaced > 0 {
        Some(("Unplaced", plan.waiting.join("; ")))
    } else {
        None
    };
    out.push(match degraded {
        Some((reason, message)) => Wanted::new("Degraded", true, reason, message),
        None => Wanted::new("Degraded", false, "AsExpected", "the pool carries out its spec"),
    });
    out
}

/// The conditions of a pool whose spec is refused.
pub fn refused_conditions(message: &str) -> Vec<Wanted> {
    vec![
        Wanted::new("Ready", false, "InvalidSpec", message),
        Wanted::new("Progressing", false, "InvalidSpec", message),
        Wanted::new("Degraded", true, "InvalidSpec", message),
    ]
}

#[cfg(test)]
#[path = "node_pool_tests.rs"]
mod tests;
