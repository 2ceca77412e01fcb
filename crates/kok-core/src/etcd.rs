//! The EtcdCluster operator's membership plan (process runtime): the one
//! membership change to make next (bootstrap, add a learner, promote it,
//! remove a dead or stray member), which members to write or drop, and why
//! the cluster is not yet as asked. What a member is on its Machine (name,
//! ports, URLs, certificates, component, the operator's settings) is
//! [`crate::etcd_member`]'s, re-exported here so callers name it
//! `etcd::…` as before.
//!
//! The Machines are the record: a member is the cluster's component on a
//! Machine, and its name, ports and URLs are read back from that
//! component's command line, so every decision is the same when made twice
//! or by a restarted operator. A member's component is written once and
//! rewritten only to run another etcd release (same flags, same data dir:
//! [`crate::etcd_upgrade`]); a member moves to another machine only by
//! being replaced (a new member, with a new name, a fresh data dir and
//! `--initial-cluster-state=existing`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_api::kok::EtcdCluster;
use flotilla_api::machine::{ComponentSpec, Machine};
use k8s_openapi::jiff::Timestamp;

use crate::etcd_gateway::{ListedMember, MemberState};
use crate::etcd_member::{arg, candidates, member_index, new_member};
pub use crate::etcd_member::{
    component_name, field_manager, initial_cluster, member_component, member_name, pki_data,
    recorded_members, restoring, secret_name, EtcdOperatorConfig, MemberPlan, CLIENT_LEAF, DEFAULT_PORTS,
};
pub(crate) use crate::etcd_member::{names, stale_for, PKI_DIR};
use crate::render::InitialClusterState;

/// Finalizer on every EtcdCluster: its members are removed from their
/// Machines (and their data with them) before the object goes.
pub const FINALIZER: &str = "kok.flotilla.io/etcd-members";

pub use crate::etcd_error::EtcdPlanError;

/// What the operator saw: the member list (from a member that answered
/// and knows a leader) and each member's own status, by member name
/// (absent: it did not answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub listed: Option<Vec<ListedMember>>,
    pub states: BTreeMap<String, MemberState>,
}

impl Observation {
    pub(crate) fn healthy(&self, member: &str) -> bool {
        self.states.get(member).is_some_and(|s| s.leader != 0)
    }
}

// ---------------------------------------------------------------- decisions

/// One change to the etcd membership, made through a healthy member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// `member add --learner`; its component is written once this worked.
    AddLearner { member: String, peer_url: String },
    /// `member promote`; etcd refuses until the learner has caught up.
    Promote { member: String, id: u64 },
    /// `member remove`, for `why`.
    Remove { member: String, id: u64, why: String },
}

impl MembershipChange {
    /// The gateway path and JSON body of the change. IDs are strings: the
    /// gateway reads 64-bit integers that way without losing precision.
    pub fn request(&self) -> (&'static str, String) {
        match self {
            MembershipChange::AddLearner { peer_url, .. } => (
                "/v3/cluster/member/add",
                serde_json::json!({"peerURLs": [peer_url], "isLearner": true}).to_string(),
            ),
            MembershipChange::Promote { id, .. } => {
                ("/v3/cluster/member/promote", serde_json::json!({"ID": id.to_string()}).to_string())
            }
            MembershipChange::Remove { id, .. } => {
                ("/v3/cluster/member/remove", serde_json::json!({"ID": id.to_string()}).to_string())
            }
        }
    }
}

/// Why the cluster is not (yet) as asked, for the Available condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub reason: String,
    pub message: String,
}

/// Reasons of a plan's progress, which an EtcdCluster's `Available` (and
/// through it a HostedCluster's `EtcdReady`) carries.
pub mod reasons {
    /// Fewer usable Machines than members: a Machine must be added (or
    /// come back), or `spec.members` lowered.
    pub const NOT_ENOUGH_MACHINES: &str = "NotEnoughMachines";
    /// `spec.members` below the voting members: not supported.
    pub const SCALE_DOWN_UNSUPPORTED: &str = "ScaleDownUnsupported";
    /// No Machine runs a member any more: only a restore brings the data back.
    pub const MEMBERS_LOST: &str = "MembersLost";
    /// A dead member cannot be removed without losing quorum.
    pub const QUORUM_AT_RISK: &str = "QuorumAtRisk";
    /// The Machine holding the snapshot to restore cannot host a member.
    pub const RESTORE_MACHINE_UNAVAILABLE: &str = "RestoreMachineUnavailable";
}

/// Whether a plan's progress waits on a person (or a Machine that is not
/// there) rather than on the operator's next step.
pub fn waits_on_people(reason: &str) -> bool {
    [
        reasons::NOT_ENOUGH_MACHINES,
        reasons::SCALE_DOWN_UNSUPPORTED,
        reasons::MEMBERS_LOST,
        reasons::QUORUM_AT_RISK,
        reasons::RESTORE_MACHINE_UNAVAILABLE,
    ]
    .contains(&reason)
}

fn progress(reason: &str, message: impl Into<String>) -> Option<Progress> {
    Some(Progress { reason: reason.into(), message: message.into() })
}

/// Everything a decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub cluster: &'a EtcdCluster,
    pub machines: &'a [Machine],
    pub seen: &'a Observation,
    /// Recorded members that did not answer at the last probes, and since
    /// when. The caller keeps this in memory: after an operator restart it
    /// starts over, which only delays a replacement.
    pub down_since: &'a BTreeMap<String, Timestamp>,
    pub config: &'a EtcdOperatorConfig,
    pub now: Timestamp,
}

/// The next step for a cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The members the status reports on: those on Machines that are
    /// still in the membership, plus the one being added.
    pub members: Vec<MemberPlan>,
    /// Components to write: the founding members, or the learner being
    /// added (only once [`MembershipChange::AddLearner`] worked).
    pub write: Vec<(MemberPlan, ComponentSpec)>,
    /// Members whose component goes from its Machine: they are no longer
    /// in the membership (removed as dead, or an add that never joined).
    pub drop: Vec<MemberPlan>,
    pub change: Option<MembershipChange>,
    pub progress: Option<Progress>,
}

/// Whether the voters left after `removed` goes still have a quorum of
/// healthy members.
fn keeps_quorum(listed: &[ListedMember], healthy: &BTreeSet<u64>, removed: u64) -> bool {
    let voters: Vec<&ListedMember> = listed.iter().filter(|l| !l.is_learner && l.id != removed).collect();
    let up = voters.iter().filter(|l| healthy.contains(&l.id)).count();
    !voters.is_empty() && up > voters.len() / 2
}

/// The next index: past every member on the Machines, in the membership
/// or in the last status. A name whose add failed is taken again by the
/// next try (with the certificates already issued for it).
fn next_index(cluster: &EtcdCluster, recorded: &[MemberPlan], facts: &Facts) -> u32 {
    let (name, _) = names(cluster);
    let listed = facts.seen.listed.iter().flatten().map(|l| l.name.as_str());
    let reported = cluster.status.iter().flat_map(|s| &s.members).map(|m| m.name.as_str());
    recorded
        .iter()
        .map(|m| m.name.as_str())
        .chain(listed)
        .chain(reported)
        .filter_map(|m| member_index(name, m))
        .max()
        .map_or(0, |i| i.saturating_add(1))
}

/// Why a recorded member counts as dead, if it does.
fn dead(member: &MemberPlan, facts: &Facts) -> Option<String> {
    let limit = facts.config.member_dead_after;
    let machine = facts.machines.iter().find(|m| m.metadata.name.as_deref() == Some(&member.machine));
    if let Some(age) = machine.and_then(|m| stale_for(m, facts.now, limit)) {
        return Some(format!(
            "its Machine {}'s node agent has not reported for {}s",
            member.machine,
            age.as_secs()
        ));
    }
    let since = facts.down_since.get(&member.name)?;
    let down = u64::try_from(facts.now.as_second().saturating_sub(since.as_second())).unwrap_or(0);
    (Duration::from_secs(down) > limit).then(|| format!("it has not answered for {down}s"))
}

/// The next step: found the cluster, or make at most one membership change
/// (remove a stray or dead member, promote a learner, add one), and drop
/// the components of members no longer in the membership.
pub fn decide(facts: &Facts) -> Plan {
    let cluster = facts.cluster;
    let (name, _) = names(cluster);
    let recorded = recorded_members(cluster, facts.machines);
    let wanted = usize::try_from(cluster.spec.members.max(0)).unwrap_or(0);
    let mut plan = Plan::default();

    let had_members = cluster.status.iter().flat_map(|s| &s.members).any(|m| m.id.is_some());
    let Some(listed) = facts.seen.listed.as_deref() else {
        plan.members = recorded;
        if !had_members && founding_interrupted(cluster, facts.machines, plan.members.len()) {
            // Too few founders were written to ever reach a quorum, so the
            // cluster never formed and holds no data: start founding over.
            plan.progress = progress(
                "FoundingInterrupted",
                "the founding members were only partly written; removing them to found the cluster again",
            );
            plan.drop = std::mem::take(&mut plan.members);
            return plan;
        }
        if !plan.members.is_empty() {
            plan.progress = progress(
                "NoQuorum",
                "no member answers with a leader yet (still starting, or quorum is lost); \
                 see the members' component status on their Machines",
            );
            return plan;
        }
        if had_members {
            plan.progress = progress(
                reasons::MEMBERS_LOST,
                "no Machine runs a member any more (were the Machines deleted?); the data is gone \
                 unless restored: restore an EtcdBackup into a new EtcdCluster",
            );
            return plan;
        }
        return found(facts, plan, wanted);
    };

    // The membership is the truth: a component whose member is not in it
    // any more (removed as dead, or added and removed again) goes.
    let listed_for = |m: &MemberPlan| listed.iter().find(|l| l.peer_urls.contains(&m.peer_url));
    let (kept, gone): (Vec<MemberPlan>, Vec<MemberPlan>) =
        recorded.into_iter().partition(|m| listed_for(m).is_some());
    plan.members = kept;
    plan.drop = gone;
    let healthy: BTreeSet<u64> =
        facts.seen.states.iter().filter(|(_, s)| s.leader != 0).map(|(_, s)| s.id).collect();

    // Members without a component: their Machine was deleted, or an add
    // was interrupted before its component was written.
    for l in listed {
        if plan.members.iter().any(|m| l.peer_urls.contains(&m.peer_url)) {
            continue;
        }
        let label = if l.name.is_empty() { l.peer_urls.join(",") } else { l.name.clone() };
        let why = if l.is_learner {
            format!("learner {label} runs on no Machine (an add that was interrupted)")
        } else {
            format!("member {label} runs on no Machine (its Machine was deleted?)")
        };
        if l.is_learner || keeps_quorum(listed, &healthy, l.id) {
            plan.progress = progress("ReplacingMember", format!("removing {why}; a new member replaces it"));
            plan.change = Some(MembershipChange::Remove { member: label, id: l.id, why });
        } else {
            plan.progress = progress(
                reasons::QUORUM_AT_RISK,
                format!("{why}, but removing it would leave no healthy quorum; bring members back"),
            );
        }
        return plan;
    }

    for m in &plan.members {
        let Some(why) = dead(m, facts) else { continue };
        let Some(l) = listed_for(m) else { continue };
        if l.is_learner || keeps_quorum(listed, &healthy, l.id) {
            plan.progress = progress(
                "ReplacingMember",
                format!("removing member {} on {}: {why}; a new member replaces it", m.name, m.machine),
            );
            plan.change = Some(MembershipChange::Remove { member: m.name.clone(), id: l.id, why });
            return plan;
        }
        plan.progress = progress(
            reasons::QUORUM_AT_RISK,
            format!(
                "member {} on {} is dead ({why}) but removing it would leave no healthy quorum",
                m.name, m.machine
            ),
        );
        return plan;
    }

    // One learner at a time: promote it before adding another.
    if let Some((m, l)) =
        plan.members.iter().find_map(|m| listed_for(m).filter(|l| l.is_learner).map(|l| (m, l)))
    {
        plan.progress = progress(
            "PromotingLearner",
            format!("learner {} on {} is promoted once it has caught up with the leader", m.name, m.machine),
        );
        plan.change = Some(MembershipChange::Promote { member: m.name.clone(), id: l.id });
        return plan;
    }

    let voters = listed.iter().filter(|l| !l.is_learner).count();
    if voters > wanted {
        plan.progress = progress(
            reasons::SCALE_DOWN_UNSUPPORTED,
            format!("{voters} voting members, spec.members is {wanted}: scaling down is not supported yet"),
        );
        return plan;
    }
    if voters == wanted {
        return plan;
    }
    let (free, refused) = candidates(cluster, facts.machines, facts.config, facts.now);
    let index = next_index(cluster, &plan.members, facts);
    let mut handed_out = BTreeMap::new();
    let member = free
        .iter()
        .find_map(|m| new_member(name, index, m, facts.machines, &mut handed_out, &facts.config.ports));
    let Some(member) = member else {
        plan.progress =
            progress(reasons::NOT_ENOUGH_MACHINES, not_enough(voters, wanted, &free, &refused, facts.config));
        return plan;
    };
    // The membership it joins: everyone listed (names from the Machines
    // when a member has not started yet), and itself.
    let mut initial: Vec<MemberPlan> = listed
        .iter()
        .filter_map(|l| {
            let recorded = plan.members.iter().find(|m| l.peer_urls.contains(&m.peer_url))?;
            Some(recorded.clone())
        })
        .collect();
    initial.push(member.clone());
    let component = member_component(cluster, &initial, &member, InitialClusterState::Existing, facts.config);
    plan.progress = progress(
        "AddingMember",
        format!(
            "adding member {} on {} as a learner ({voters} of {wanted} voting members)",
            member.name, member.machine
        ),
    );
    plan.change =
        Some(MembershipChange::AddLearner { member: member.name.clone(), peer_url: member.peer_url.clone() });
    plan.write.push((member.clone(), component));
    plan.members.push(member);
    plan
}

/// Whether the Machines hold founding members (`--initial-cluster-state=new`)
/// only, fewer than a quorum of the founding membership they name: a write
/// of the founders failed halfway, and they can never elect a leader.
fn founding_interrupted(cluster: &EtcdCluster, machines: &[Machine], recorded: usize) -> bool {
    let (name, namespace) = names(cluster);
    let component = component_name(namespace, name);
    let founders: Vec<&ComponentSpec> =
        machines.iter().filter_map(|m| m.spec.components.iter().find(|c| c.name == component)).collect();
    let founding = founders.iter().all(|c| arg(c, "--initial-cluster-state") == Some("new"));
    let size = founders
        .iter()
        .filter_map(|c| arg(c, "--initial-cluster"))
        .map(|v| v.split(',').count())
        .max()
        .unwrap_or(0);
    recorded > 0 && founding && recorded <= size / 2
}

fn not_enough(
    have: usize,
    wanted: usize,
    free: &[&Machine],
    refused: &[String],
    config: &EtcdOperatorConfig,
) -> String {
    let mut message = format!(
        "{have} of {wanted} members placed: too few Machines match spec.machineSelector without already \
         running a member"
    );
    if !free.is_empty() {
        message.push_str(&format!(
            "; no two free ports in {}..={} on {}",
            config.ports.start(),
            config.ports.end(),
            free.iter().filter_map(|m| m.metadata.name.as_deref()).collect::<Vec<_>>().join(", ")
        ));
    }
    if !refused.is_empty() {
        message.push_str(&format!(" ({})", refused.join("; ")));
    }
    message
}

/// A cluster with no member yet: every founding member at once, on
/// distinct machines in name order, with `--initial-cluster-state=new`.
/// Fewer than wanted when machines are short; the rest join later as
/// learners.
fn found(facts: &Facts, mut plan: Plan, wanted: usize) -> Plan {
    let cluster = facts.cluster;
    let (name, _) = names(cluster);
    let (mut free, refused) = candidates(cluster, facts.machines, facts.config, facts.now);
    // A restore founds one member, on the machine holding the snapshot;
    // the others join it as learners once it runs.
    let restore = cluster.spec.restore_from.as_ref();
    let wanted = if restore.is_some() { wanted.min(1) } else { wanted };
    if let Some(snapshot) = restore {
        free.retain(|m| m.metadata.name.as_deref() == Some(snapshot.machine.as_str()));
        if free.is_empty() {
            plan.progress = progress(
                reasons::RESTORE_MACHINE_UNAVAILABLE,
                format!(
                    "the snapshot is on Machine {}, which cannot host a member now{}",
                    snapshot.machine,
                    if refused.is_empty() { String::new() } else { format!(" ({})", refused.join("; ")) }
                ),
            );
            return plan;
        }
    }
    let first = next_index(cluster, &[], facts);
    let mut handed_out = BTreeMap::new();
    let mut members: Vec<MemberPlan> = Vec::new();
    for m in &free {
        if members.len() == wanted {
            break;
        }
        let index = first.saturating_add(u32::try_from(members.len()).unwrap_or(u32::MAX));
        if let Some(member) = new_member(name, index, m, facts.machines, &mut handed_out, &facts.config.ports)
        {
            members.push(member);
        }
    }
    plan.write = members
        .iter()
        .map(|m| {
            let component = member_component(cluster, &members, m, InitialClusterState::New, facts.config);
            let component = match restore {
                Some(snapshot) => restoring(component, &snapshot.path, m, facts.config),
                None => component,
            };
            (m.clone(), component)
        })
        .collect();
    plan.progress = if members.len() < wanted {
        // The machines that got a member are not short of ports.
        let unused: Vec<&Machine> = free
            .iter()
            .copied()
            .filter(|m| !members.iter().any(|p| Some(p.machine.as_str()) == m.metadata.name.as_deref()))
            .collect();
        progress(
            reasons::NOT_ENOUGH_MACHINES,
            not_enough(members.len(), wanted, &unused, &refused, facts.config),
        )
    } else {
        progress("Bootstrapping", format!("starting {wanted} founding members"))
    };
    plan.members = members;
    plan
}

#[cfg(test)]
#[path = "etcd_tests.rs"]
pub(crate) mod tests;
