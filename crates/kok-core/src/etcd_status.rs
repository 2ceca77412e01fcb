//! An EtcdCluster's status (process runtime), from the plan and what the
//! members answered: members, leader, version, phase and `Available`.

use crate::etcd::{names, secret_name, MembershipChange, Observation, Plan};
use flotilla_api::kok::{conditions, EtcdCluster, EtcdClusterPhase, EtcdClusterStatus, EtcdMemberStatus};
use flotilla_core::conditions::{condition, Wanted};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The cluster's status from the plan and what the members answered.
pub fn status(cluster: &EtcdCluster, plan: &Plan, seen: &Observation, now: Time) -> EtcdClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let listed = seen.listed.as_deref().unwrap_or_default();
    let mut out: Vec<EtcdMemberStatus> = plan
        .members
        .iter()
        .map(|m| {
            let listing = listed.iter().find(|l| l.peer_urls.contains(&m.peer_url) || l.name == m.name);
            let state = seen.states.get(&m.name);
            EtcdMemberStatus {
                name: m.name.clone(),
                machine: Some(m.machine.clone()),
                peer_url: Some(m.peer_url.clone()),
                client_url: Some(m.client_url.clone()),
                id: listing.map(|l| l.id).or(state.map(|s| s.id)).map(|id| format!("{id:x}")),
                is_learner: listing.is_some_and(|l| l.is_learner),
                healthy: seen.healthy(&m.name),
                db_size_bytes: state.map(|s| s.db_size),
                version: state.map(|s| s.version.clone()),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let leader_id = seen.states.values().map(|s| s.leader).find(|l| *l != 0);
    let leader = leader_id.and_then(|id| {
        listed
            .iter()
            .find(|l| l.id == id && !l.name.is_empty())
            .map(|l| l.name.clone())
            .or_else(|| seen.states.iter().find(|(_, s)| s.id == id).map(|(n, _)| n.clone()))
    });
    let ready = i32::try_from(out.iter().filter(|m| m.healthy && !m.is_learner).count()).unwrap_or(i32::MAX);
    let voters = out.iter().filter(|m| !m.is_learner).count();
    let version = out
        .iter()
        .filter_map(|m| m.version.clone())
        .filter(|v| !v.is_empty())
        .min_by(|a, b| version_key(a).cmp(&version_key(b)));
    let available = ready == cluster.spec.members
        && i64::try_from(voters).unwrap_or(i64::MAX) == i64::from(cluster.spec.members)
        && leader.is_some();
    let phase = if cluster.metadata.deletion_timestamp.is_some() {
        EtcdClusterPhase::Deleting
    } else if available && plan.change.is_none() {
        EtcdClusterPhase::Running
    } else if matches!(
        plan.change,
        Some(MembershipChange::AddLearner { .. } | MembershipChange::Promote { .. })
    ) {
        EtcdClusterPhase::Scaling
    } else if matches!(plan.change, Some(MembershipChange::Remove { .. }))
        || matches!(
            previous.phase,
            Some(EtcdClusterPhase::Running | EtcdClusterPhase::Degraded | EtcdClusterPhase::Scaling)
        )
    {
        EtcdClusterPhase::Degraded
    } else {
        EtcdClusterPhase::Provisioning
    };
    let (reason, message) = if available && plan.change.is_none() {
        (
            "AllMembersHealthy".to_string(),
            format!("{ready} healthy members, leader {}", leader.clone().unwrap_or_default()),
        )
    } else if let Some(p) = &plan.progress {
        (p.reason.clone(), p.message.clone())
    } else {
        let silent: Vec<&str> = out.iter().filter(|m| !m.healthy).map(|m| m.name.as_str()).collect();
        let mut message = format!("{ready}/{} members healthy", cluster.spec.members);
        if !silent.is_empty() {
            message.push_str(&format!(
                "; not answering: {} (see their component status on the Machines)",
                silent.join(", ")
            ));
        }
        ("MembersNotReady".to_string(), message)
    };
    let generation = cluster.metadata.generation;
    let wanted = Wanted::new(conditions::ETCD_AVAILABLE, available, &reason, message).generation(generation);
    let condition = condition(&previous.conditions, wanted, &now);
    let (name, _) = names(cluster);
    EtcdClusterStatus {
        phase: Some(phase),
        ready_members: ready,
        leader,
        version,
        client_urls: out.iter().filter(|m| !m.is_learner).filter_map(|m| m.client_url.clone()).collect(),
        client_secret: Some(secret_name(name)),
        observed_generation: generation,
        conditions: vec![condition],
        members: out,
        // The backup schedule's fields: `etcd_schedule::SchedulePlan::fill`.
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::tests::*;
    use crate::etcd::{initial_cluster, recorded_members, MemberPlan};

    #[test]
    fn status_reports_members_leader_version_and_phase() {
        let mut c = cluster(3);
        let members = check(&c, &three(), &Observation::default()).members;
        let plan = Plan { members: members.clone(), ..Default::default() };
        let t0 = Time(t(1000));
        let t1 = Time(t(2000));

        let s = status(&c, &plan, &Observation::default(), t0.clone());
        assert_eq!(
            (s.phase, s.ready_members, s.leader.clone()),
            (Some(EtcdClusterPhase::Provisioning), 0, None)
        );
        assert_eq!(s.conditions[0].status, "False");
        assert!(s.conditions[0].message.contains("not answering: e-0, e-1, e-2"), "{:?}", s.conditions[0]);

        let all = observed(&members, &[], &["e-0", "e-1", "e-2"]);
        let s = status(&c, &plan, &all, t0.clone());
        assert_eq!(s.phase, Some(EtcdClusterPhase::Running));
        assert_eq!((s.ready_members, s.leader.as_deref()), (3, Some("e-0")));
        assert_eq!(s.version.as_deref(), Some("3.4.12"), "the lowest version");
        assert_eq!(s.members[0].id.as_deref(), Some("64"));
        assert_eq!(s.members[0].machine.as_deref(), Some("m1"));
        assert_eq!(s.members[0].db_size_bytes, Some(4096));
        assert_eq!(s.client_urls.len(), 3);
        assert_eq!(s.client_secret.as_deref(), Some("e-etcd-pki"));
        assert_eq!((s.conditions[0].status.as_str(), s.observed_generation), ("True", Some(2)));
        c.status = Some(s);

        let s = status(&c, &plan, &all, t1.clone());
        assert_eq!(s.conditions[0].last_transition_time, t0, "no transition, no new time");

        let s = status(&c, &plan, &observed(&members, &[], &["e-0", "e-1"]), t1.clone());
        assert_eq!((s.phase, s.ready_members), (Some(EtcdClusterPhase::Degraded), 2));
        assert!(!s.members[2].healthy && s.members[2].id.is_some());
        assert_eq!(s.conditions[0].last_transition_time, t1);

        let mut deleting = cluster(3);
        deleting.metadata.deletion_timestamp = Some(t0);
        assert_eq!(status(&deleting, &plan, &all, t1).phase, Some(EtcdClusterPhase::Deleting));
    }

    #[test]
    fn a_member_whose_machine_was_deleted_is_removed_then_replaced_on_a_spare_machine() {
        let (c, mut machines, members) = running_three();
        machines.retain(|m| m.metadata.name.as_deref() != Some("m2"));
        // e-1 is still in the membership but runs nowhere: removed (2 of
        // the 2 voters left are healthy).
        let seen = observed(&members, &[], &["e-0", "e-2"]);
        let plan = check(&c, &machines, &seen);
        assert!(
            matches!(&plan.change, Some(MembershipChange::Remove { member, id: 101, why }) if member == "e-1" && why.contains("runs on no Machine")),
            "{plan:?}"
        );
        assert!(plan.write.is_empty());
        assert_eq!(status(&c, &plan, &seen, Time(t(1000))).phase, Some(EtcdClusterPhase::Degraded));

        // Removed: a learner e-3 (a new name, never e-1 again) is added on
        // m4 to join the running cluster.
        let left: Vec<MemberPlan> = members.iter().filter(|m| m.name != "e-1").cloned().collect();
        let seen = observed(&left, &[], &["e-0", "e-2"]);
        let plan = check(&c, &machines, &seen);
        let Some(MembershipChange::AddLearner { member, peer_url }) = &plan.change else {
            panic!("{plan:?}")
        };
        assert_eq!(member, "e-3");
        let (new, component) = &plan.write[0];
        assert_eq!((new.machine.as_str(), &new.peer_url), ("m4", peer_url));
        assert_eq!(flag(component, "--initial-cluster-state"), "existing");
        assert_eq!(
            flag(component, "--initial-cluster"),
            format!("{},e-3={peer_url}", initial_cluster(&left))
        );
        assert_eq!(flag(component, "--data-dir"), "data/e-3");
        let s = status(&c, &plan, &seen, Time(t(1000)));
        assert_eq!(s.phase, Some(EtcdClusterPhase::Scaling));
        assert_eq!(s.conditions[0].reason, "AddingMember");
        apply(&plan, &mut machines);

        // Joined as a learner: promoted (etcd refuses until it caught up).
        let now: Vec<MemberPlan> = recorded_members(&c, &machines);
        assert_eq!(placed(&now), [("e-0", "m1"), ("e-2", "m3"), ("e-3", "m4")]);
        let plan = check(&c, &machines, &observed(&now, &["e-3"], &["e-0", "e-2", "e-3"]));
        assert_eq!(plan.change, Some(MembershipChange::Promote { member: "e-3".into(), id: 103 }));
        // Promoted: done.
        let seen = observed(&now, &[], &["e-0", "e-2", "e-3"]);
        let plan = check(&c, &machines, &seen);
        assert_eq!((plan.change.clone(), plan.write.len()), (None, 0));
        let s = status(&c, &plan, &seen, Time(t(1000)));
        assert_eq!((s.phase, s.ready_members), (Some(EtcdClusterPhase::Running), 3));
    }
    #[test]
    fn a_lost_cluster_is_not_founded_again() {
        let (c, _, members) = running_three();
        let mut c = c;
        let seen = observed(&members, &[], &["e-0", "e-1", "e-2"]);
        let plan = Plan { members: members.clone(), ..Default::default() };
        c.status = Some(status(&c, &plan, &seen, Time(t(1000))));
        let plan = check(&c, &[machine("m9", "etcd")], &Observation::default());
        assert!(plan.write.is_empty());
        assert_eq!(plan.progress.unwrap().reason, "MembersLost");
    }
}
