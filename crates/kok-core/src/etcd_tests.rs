use super::*;
use crate::etcd_gateway::{parse_member_list, parse_status};
use flotilla_api::kok::{EtcdClusterSpec, EtcdStorage};
use flotilla_api::machine::{MachineSpec, MachineStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use time::OffsetDateTime;

pub(crate) fn machine(name: &str, pool: &str) -> Machine {
    let mut m = Machine::new(name, MachineSpec { address: Some("127.0.0.1".into()), ..Default::default() });
    m.metadata.labels = Some(BTreeMap::from([("pool".to_string(), pool.to_string())]));
    m
}

pub(crate) fn cluster_named(name: &str, members: i32) -> EtcdCluster {
    let mut c = EtcdCluster::new(
        name,
        EtcdClusterSpec {
            members,
            version: "3.4.13".into(),
            machine_selector: BTreeMap::from([("pool".to_string(), "etcd".to_string())]),
            ..Default::default()
        },
    );
    c.metadata.namespace = Some("ns".into());
    c.metadata.generation = Some(2);
    c
}

pub(crate) fn cluster(members: i32) -> EtcdCluster {
    cluster_named("e", members)
}

pub(crate) fn config() -> EtcdOperatorConfig {
    EtcdOperatorConfig {
        bin_dir: "/opt/bin".into(),
        etcd_binary: "etcd".into(),
        ports: 3000..=3009,
        member_dead_after: Duration::from_secs(60),
        flotilla_binary: "/opt/bin/flotilla".into(),
    }
}

pub(crate) fn t(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

/// Decides with no member answering and no history.
pub(crate) fn check(c: &EtcdCluster, machines: &[Machine], seen: &Observation) -> Plan {
    let (cfg, down) = (config(), BTreeMap::new());
    decide(&Facts { cluster: c, machines, seen, down_since: &down, config: &cfg, now: t(1000) })
}

/// Writes what the plan writes into the machines (as the operator's
/// apply would).
pub(crate) fn apply(plan: &Plan, machines: &mut [Machine]) {
    for (member, component) in &plan.write {
        let m = machines.iter_mut().find(|m| m.metadata.name.as_deref() == Some(&member.machine)).unwrap();
        m.spec.components.retain(|c| c.name != component.name);
        m.spec.components.push(component.clone());
    }
    for member in &plan.drop {
        let m = machines.iter_mut().find(|m| m.metadata.name.as_deref() == Some(&member.machine)).unwrap();
        m.spec.components.retain(|c| arg(c, "--name") != Some(member.name.as_str()));
    }
}

pub(crate) fn placed(plan: &[MemberPlan]) -> Vec<(&str, &str)> {
    plan.iter().map(|m| (m.name.as_str(), m.machine.as_str())).collect()
}

pub(crate) fn flag(c: &ComponentSpec, flag: &str) -> String {
    arg(c, flag).unwrap().to_string()
}

/// Every member listed (ids 100 + index, the given ones learners),
/// the `answering` ones with a leader.
pub(crate) fn observed(members: &[MemberPlan], learners: &[&str], answering: &[&str]) -> Observation {
    let listed = members
        .iter()
        .map(|m| ListedMember {
            id: 100 + u64::from(m.index),
            name: m.name.clone(),
            peer_urls: vec![m.peer_url.clone()],
            client_urls: vec![m.client_url.clone()],
            is_learner: learners.contains(&m.name.as_str()),
        })
        .collect();
    let states = members
        .iter()
        .filter(|m| answering.contains(&m.name.as_str()))
        .map(|m| {
            let v = if m.index == 2 { "3.4.12" } else { "3.4.13" };
            let state =
                MemberState { id: 100 + u64::from(m.index), leader: 100, db_size: 4096, version: v.into() };
            (m.name.clone(), state)
        })
        .collect();
    Observation { listed: Some(listed), states }
}

pub(crate) fn three() -> Vec<Machine> {
    vec![machine("m3", "etcd"), machine("w1", "workers"), machine("m1", "etcd"), machine("m2", "etcd")]
}

#[test]
fn founding_members_go_to_distinct_selected_machines_with_ports_free_on_the_shared_address() {
    let mut machines = three();
    // Someone else's component on m2 holds 3001 (a URL) and 3003 (a port flag).
    machines[3].spec.components.push(ComponentSpec {
        name: "other".into(),
        binary: "/bin/x".into(),
        args: vec!["--listen=http://127.0.0.1:3001".into(), "--secure-port=3003".into()],
        ..Default::default()
    });
    let plan = check(&cluster(3), &machines, &Observation::default());
    assert_eq!(placed(&plan.members), [("e-0", "m1"), ("e-1", "m2"), ("e-2", "m3")]);
    let urls: Vec<(&str, &str)> =
        plan.members.iter().map(|m| (m.client_url.as_str(), m.peer_url.as_str())).collect();
    assert_eq!(
        urls,
        [
            ("https://127.0.0.1:3000", "https://127.0.0.1:3002"),
            ("https://127.0.0.1:3004", "https://127.0.0.1:3005"),
            ("https://127.0.0.1:3006", "https://127.0.0.1:3007"),
        ],
        "machines sharing an address never share a port"
    );
    assert_eq!(plan.change, None);
    assert_eq!(plan.progress.as_ref().unwrap().reason, "Bootstrapping");
    for (_, c) in &plan.write {
        assert_eq!(flag(c, "--initial-cluster-state"), "new");
        assert_eq!(flag(c, "--initial-cluster"), initial_cluster(&plan.members));
    }
}

#[test]
fn a_restored_cluster_founds_one_member_on_the_snapshot_machine_that_restores_first() {
    let mut machines = three();
    let mut c = cluster(3);
    c.spec.restore_from =
        Some(flotilla_api::kok::SnapshotFile { machine: "m2".into(), path: "/b/e-1.db".into() });
    let plan = check(&c, &machines, &Observation::default());
    assert_eq!(placed(&plan.members), [("e-0", "m2")]);
    let (_, component) = &plan.write[0];
    assert_eq!(component.binary, "/bin/sh");
    let script = &component.args[1];
    assert!(script.contains("snapshot restore '/b/e-1.db' --name 'e-0'"), "{script}");
    assert!(script.contains("if [ ! -d 'data/e-0' ]"), "restores only without data: {script}");
    assert!(script.contains("exec '/opt/bin/etcd' \"$@\""), "{script}");
    assert_eq!(flag(component, "--initial-cluster"), initial_cluster(&plan.members));
    // The member reads back from its Machine like any other.
    apply(&plan, &mut machines);
    assert_eq!(recorded_members(&c, &machines), plan.members);
    // The snapshot's machine is gone: nothing is founded elsewhere.
    c.spec.restore_from.as_mut().unwrap().machine = "m9".into();
    let waiting = check(&c, &three(), &Observation::default());
    assert!(waiting.write.is_empty());
    assert_eq!(waiting.progress.unwrap().reason, "RestoreMachineUnavailable");
}

#[test]
fn a_second_cluster_on_the_same_machines_takes_other_ports_and_both_read_theirs_back() {
    let mut machines = three();
    let a = cluster_named("a", 3);
    let plan_a = check(&a, &machines, &Observation::default());
    apply(&plan_a, &mut machines);
    let b = cluster_named("b", 3);
    let plan_b = check(&b, &machines, &Observation::default());
    apply(&plan_b, &mut machines);
    let ports = |p: &Plan| -> Vec<String> {
        p.members.iter().flat_map(|m| [m.client_url.clone(), m.peer_url.clone()]).collect()
    };
    let (pa, pb) = (ports(&plan_a), ports(&plan_b));
    assert!(pa.iter().all(|u| !pb.contains(u)), "{pa:?} {pb:?}");
    // Read back from the Machines: the same members, the same URLs, and
    // nothing to write again.
    assert_eq!(recorded_members(&a, &machines), plan_a.members);
    assert_eq!(recorded_members(&b, &machines), plan_b.members);
    let again = check(&a, &machines, &observed(&plan_a.members, &[], &["a-0", "a-1", "a-2"]));
    assert_eq!((again.write.len(), again.drop.len(), again.change.clone()), (0, 0, None));
    assert_eq!(again.members, plan_a.members);
    // The range is full: a third cluster says so, and where.
    let c = cluster_named("c", 1);
    let plan_c = check(&c, &machines, &Observation::default());
    let p = plan_c.progress.unwrap();
    assert_eq!(p.reason, "NotEnoughMachines");
    assert!(p.message.contains("no two free ports in 3000..=3009"), "{}", p.message);
}

#[test]
fn too_few_usable_machines_found_fewer_members_and_say_why() {
    let mut bare = machine("m2", "etcd");
    bare.spec.address = None;
    let mut silent = machine("m3", "etcd");
    silent.status = Some(MachineStatus { last_heartbeat: Some(Time(t(100))), ..Default::default() });
    let plan = check(&cluster(3), &[machine("m1", "etcd"), bare, silent], &Observation::default());
    assert_eq!(placed(&plan.members), [("e-0", "m1")]);
    assert_eq!(flag(&plan.write[0].1, "--initial-cluster"), initial_cluster(&plan.members));
    let p = plan.progress.unwrap();
    assert_eq!(p.reason, "NotEnoughMachines");
    assert!(
        p.message.contains("1 of 3")
            && p.message.contains("too few Machines match spec.machineSelector")
            && p.message.contains(
                "m2 has no address: set spec.address, or start its node agent, which reports \
                 status.addresses"
            ),
        "{}",
        p.message
    );
    assert!(p.message.contains("m3's node agent has not reported for 900s"), "{}", p.message);
    // m1 got its member: it is not short of ports.
    assert!(!p.message.contains("free ports"), "{}", p.message);
}

#[test]
fn a_machine_without_spec_address_hosts_a_member_at_its_first_reported_internal_ip() {
    use flotilla_api::machine::{MachineAddress, MachineAddressType};
    let reported = |name: &str, addresses: Vec<MachineAddress>| {
        let mut m = machine(name, "etcd");
        m.spec.address = None;
        m.status =
            Some(MachineStatus { last_heartbeat: Some(Time(t(990))), addresses, ..Default::default() });
        m
    };
    let v4 = reported(
        "m1",
        vec![
            MachineAddress::new(MachineAddressType::Hostname, "host-1"),
            MachineAddress::new(MachineAddressType::InternalIp, "192.0.2.2"),
            MachineAddress::new(MachineAddressType::InternalIp, "fd00::2"),
        ],
    );
    let v6 = reported("m2", vec![MachineAddress::new(MachineAddressType::InternalIp, "fd00::3")]);
    let hostname_only = reported("m3", vec![MachineAddress::new(MachineAddressType::Hostname, "host-3")]);
    let machines = [v4, v6, hostname_only];
    let plan = check(&cluster(3), &machines, &Observation::default());
    assert_eq!(placed(&plan.members), [("e-0", "m1"), ("e-1", "m2")]);
    let urls: Vec<(&str, &str)> =
        plan.members.iter().map(|m| (m.address.as_str(), m.client_url.as_str())).collect();
    assert_eq!(urls, [("192.0.2.2", "https://192.0.2.2:3000"), ("fd00::3", "https://[fd00::3]:3000")]);
    let p = plan.progress.clone().unwrap();
    assert_eq!(p.reason, "NotEnoughMachines");
    assert!(
        p.message.contains(
            "m3 has no address: set spec.address, or restart its node agent with --address: it \
             reports no InternalIP in status.addresses"
        ),
        "{}",
        p.message
    );
    // Read back from the Machines, the members keep the reported address.
    let mut written = machines.clone();
    apply(&plan, &mut written);
    let recorded = recorded_members(&cluster(3), &written);
    assert_eq!(recorded, plan.members);
}

#[test]
fn members_keep_their_machines_and_ports() {
    let c = cluster(3);
    let mut machines = three();
    let plan = check(&c, &machines, &Observation::default());
    apply(&plan, &mut machines);
    // A new machine sorting first, and m3 no longer matching, change
    // nothing: running members are never moved.
    machines.insert(0, machine("a0", "etcd"));
    machines.iter_mut().find(|m| m.metadata.name.as_deref() == Some("m3")).unwrap().metadata.labels = None;
    let all = ["e-0", "e-1", "e-2"];
    let again = check(&c, &machines, &observed(&plan.members, &[], &all));
    assert_eq!(again.members, plan.members);
    assert!(again.write.is_empty() && again.change.is_none());
    // While nobody answers, nothing is founded again.
    let silent = check(&c, &machines, &Observation::default());
    assert!(silent.write.is_empty());
    assert_eq!(silent.progress.unwrap().reason, "NoQuorum");
}

#[test]
fn component_runs_etcd_with_tls_files_and_data_in_its_working_directory() {
    let c = cluster(3);
    let plan = check(&c, &three(), &Observation::default());
    let (member, comp) = &plan.write[1];
    assert_eq!(member.name, "e-1");
    assert_eq!(comp.name, "etcd-ns-e");
    assert_eq!(comp.binary, "/opt/bin/etcd");
    assert_eq!(flag(comp, "--name"), "e-1");
    assert_eq!(flag(comp, "--data-dir"), "data/e-1", "relative: removed with the component");
    assert_eq!(flag(comp, "--advertise-client-urls"), member.client_url);
    assert_eq!(flag(comp, "--cert-file"), "pki/etcd-member-e-1-server.crt");
    assert_eq!(flag(comp, "--trusted-ca-file"), "pki/etcd-ca.crt");
    let paths: Vec<&str> = comp.files.iter().map(|f| f.path.as_str()).collect();
    assert!(paths.contains(&"pki/etcd-member-e-1-peer.key"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("ca.key") || p.contains("e-0")), "least privilege: {paths:?}");
    let r = comp.files[0].secret_ref.as_ref().unwrap();
    assert_eq!((r.namespace.as_str(), r.name.as_str()), ("ns", "e-etcd-pki"));
    assert_eq!(comp.health.as_ref().unwrap().tcp.as_ref().unwrap().port, 3002);
    assert_eq!(field_manager("ns", "e"), "flotilla-etcd-ns-e");

    let mut own = cluster(1);
    own.spec.storage = Some(EtcdStorage { data_dir: Some("/srv/etcd".into()), size: None });
    let plan = check(&own, &three(), &Observation::default());
    assert_eq!(flag(&plan.write[0].1, "--data-dir"), "/srv/etcd/e-0");
}

#[test]
fn certificates_are_made_once_and_only_missing_ones_added() {
    let plan = check(&cluster(3), &three(), &Observation::default()).members;
    let now = OffsetDateTime::now_utc();
    let first = pki_data("e", &BTreeMap::new(), &plan[..1], now).unwrap().unwrap();
    assert!(first.contains_key("etcd-ca.key") && first.contains_key("client.crt"));
    assert!(
        first.contains_key("etcd-member-e-0-server.crt") && !first.contains_key("etcd-member-e-1-peer.crt")
    );
    assert_eq!(pki_data("e", &first, &plan[..1], now).unwrap(), None, "nothing missing, nothing changes");
    let second = pki_data("e", &first, &plan, now).unwrap().unwrap();
    assert_eq!(second.get("etcd-ca.crt"), first.get("etcd-ca.crt"), "the CA is kept");
    assert_eq!(second.get("etcd-member-e-0-server.crt"), first.get("etcd-member-e-0-server.crt"));
    assert!(second.contains_key("etcd-member-e-2-peer.key"));
    // The same name on a machine with another address: new certificates.
    let mut moved = plan[2].clone();
    moved.address = "10.0.0.7".into();
    let third = pki_data("e", &second, &[moved], now).unwrap().unwrap();
    assert_ne!(third.get("etcd-member-e-2-peer.crt"), second.get("etcd-member-e-2-peer.crt"));
    assert_eq!(third.get("etcd-member-e-1-peer.crt"), second.get("etcd-member-e-1-peer.crt"));
    let facts = flotilla_core::pki::inspect_certificate(
        &String::from_utf8(second["etcd-member-e-2-server.crt"].clone()).unwrap(),
    )
    .unwrap();
    assert!(facts.covers("127.0.0.1", now, time::Duration::ZERO));
}

#[test]
fn gateway_answers_parse_and_requests_carry_ids_as_strings() {
    let list = br#"{"header":{"cluster_id":"1","member_id":"2"},"members":[
        {"ID":"10276657743932975437","name":"e-0","peerURLs":["https://127.0.0.1:4000"],"clientURLs":["https://127.0.0.1:3000"]},
        {"ID":"5","name":"e-1","peerURLs":["https://127.0.0.1:4010"],"isLearner":true}]}"#;
    let members = parse_member_list(list).unwrap();
    assert_eq!(members[0].id, 10276657743932975437);
    assert!(!members[0].is_learner && members[1].is_learner);
    assert!(members[1].client_urls.is_empty());
    let status = br#"{"header":{"member_id":"5","raft_term":"2"},"version":"3.4.13","dbSize":"20480","leader":"10276657743932975437","raftIndex":"9"}"#;
    assert_eq!(
        parse_status(status).unwrap(),
        MemberState { id: 5, leader: 10276657743932975437, db_size: 20480, version: "3.4.13".into() }
    );
    assert!(parse_status(b"not json").is_err());

    let add = MembershipChange::AddLearner { member: "e-3".into(), peer_url: "https://h:1".into() };
    assert_eq!(
        add.request(),
        ("/v3/cluster/member/add", r#"{"isLearner":true,"peerURLs":["https://h:1"]}"#.into())
    );
    let id = 10276657743932975437;
    let promote = MembershipChange::Promote { member: "e-3".into(), id };
    assert_eq!(promote.request(), ("/v3/cluster/member/promote", r#"{"ID":"10276657743932975437"}"#.into()));
    let remove = MembershipChange::Remove { member: "e-1".into(), id: 5, why: String::new() };
    assert_eq!(remove.request().0, "/v3/cluster/member/remove");
}

/// Three founded members running on m1..m3, and a spare m4.
pub(crate) fn running_three() -> (EtcdCluster, Vec<Machine>, Vec<MemberPlan>) {
    let c = cluster(3);
    let mut machines = three();
    machines.push(machine("m4", "etcd"));
    let plan = check(&c, &machines, &Observation::default());
    apply(&plan, &mut machines);
    (c, machines, plan.members)
}

#[test]
fn a_silent_machine_or_a_long_silent_member_is_replaced_only_past_the_threshold_and_with_quorum() {
    let (c, mut machines, members) = running_three();
    let cfg = config();
    let seen = observed(&members, &[], &["e-0", "e-2"]);
    let decide_at = |machines: &[Machine], down: &BTreeMap<String, Timestamp>, seen: &Observation, now| {
        decide(&Facts { cluster: &c, machines, seen, down_since: down, config: &cfg, now })
    };
    // Down for 30 s of the 60 s allowed: wait.
    let down = BTreeMap::from([("e-1".to_string(), t(970))]);
    assert_eq!(decide_at(&machines, &down, &seen, t(1000)).change, None);
    // Down for 61 s: removed.
    let plan = decide_at(&machines, &down, &seen, t(1031));
    assert!(
        matches!(&plan.change, Some(MembershipChange::Remove { id: 101, why, .. }) if why.contains("not answered for 61s")),
        "{plan:?}"
    );
    // Its machine's agent silent for 90 s: removed as well.
    let m2 = machines.iter_mut().find(|m| m.metadata.name.as_deref() == Some("m2")).unwrap();
    m2.status = Some(MachineStatus { last_heartbeat: Some(Time(t(910))), ..Default::default() });
    let plan = decide_at(&machines, &BTreeMap::new(), &seen, t(1000));
    assert!(
        matches!(&plan.change, Some(MembershipChange::Remove { why, .. }) if why.contains("m2's node agent has not reported for 90s")),
        "{plan:?}"
    );
    // Two of three down: removing one would leave 1 of 2 healthy.
    let seen = observed(&members, &[], &["e-0"]);
    let plan = decide_at(&machines, &down, &seen, t(1100));
    assert_eq!(plan.change, None);
    assert_eq!(plan.progress.unwrap().reason, "QuorumAtRisk");
    // Once removed, its component goes from m2 (its data with it), and
    // the replacement avoids the silent m2.
    let left: Vec<MemberPlan> = members.iter().filter(|m| m.name != "e-1").cloned().collect();
    let plan = decide_at(&machines, &BTreeMap::new(), &observed(&left, &[], &["e-0", "e-2"]), t(1000));
    assert_eq!(placed(&plan.drop), [("e-1", "m2")]);
    assert_eq!(placed(&plan.write.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>()), [("e-3", "m4")]);
}

#[test]
fn a_learner_without_a_component_is_removed() {
    let (c, machines, members) = running_three();
    let mut seen = observed(&members, &[], &["e-0", "e-1", "e-2"]);
    seen.listed.as_mut().unwrap().push(ListedMember {
        id: 7,
        name: String::new(),
        peer_urls: vec!["https://127.0.0.1:3009".into()],
        client_urls: vec![],
        is_learner: true,
    });
    let plan = check(&c, &machines, &seen);
    assert!(
        matches!(&plan.change, Some(MembershipChange::Remove { id: 7, why, .. }) if why.contains("interrupted")),
        "{plan:?}"
    );
}

#[test]
fn scaling_up_adds_one_learner_at_a_time() {
    let c1 = cluster(1);
    let mut machines = three();
    let plan = check(&c1, &machines, &Observation::default());
    assert_eq!(placed(&plan.members), [("e-0", "m1")]);
    apply(&plan, &mut machines);
    let c3 = cluster(3);
    let mut steps = Vec::new();
    for _ in 0..4 {
        let members = recorded_members(&c3, &machines);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        // The newest member is a learner until promoted (a step later).
        let learner: Vec<&str> = match steps.last() {
            Some(MembershipChange::AddLearner { member, .. }) => vec![member.as_str()],
            _ => vec![],
        };
        let plan = check(&c3, &machines, &observed(&members, &learner, &names));
        apply(&plan, &mut machines);
        steps.push(plan.change.unwrap());
    }
    let kinds: Vec<String> = steps
        .iter()
        .map(|s| match s {
            MembershipChange::AddLearner { member, .. } => format!("add {member}"),
            MembershipChange::Promote { member, .. } => format!("promote {member}"),
            MembershipChange::Remove { member, .. } => format!("remove {member}"),
        })
        .collect();
    assert_eq!(kinds, ["add e-1", "promote e-1", "add e-2", "promote e-2"]);
    assert_eq!(placed(&recorded_members(&c3, &machines)), [("e-0", "m1"), ("e-1", "m2"), ("e-2", "m3")]);
    let members = recorded_members(&c3, &machines);
    let plan = check(&c3, &machines, &observed(&members, &[], &["e-0", "e-1", "e-2"]));
    assert_eq!(plan.change, None);
    // More voters than asked: said, not done.
    let plan = check(&c1, &machines, &observed(&members, &[], &["e-0", "e-1", "e-2"]));
    assert_eq!((plan.change, plan.progress.unwrap().reason.as_str()), (None, "ScaleDownUnsupported"));
}

#[test]
fn founders_written_only_in_part_are_removed_and_founded_again() {
    let c = cluster(3);
    let mut machines = three();
    let mut plan = check(&c, &machines, &Observation::default());
    // Only e-0's write went through: it can never find a quorum.
    plan.write.truncate(1);
    apply(&plan, &mut machines);
    let stuck = check(&c, &machines, &Observation::default());
    assert_eq!(placed(&stuck.drop), [("e-0", "m1")]);
    assert_eq!(stuck.progress.as_ref().unwrap().reason, "FoundingInterrupted");
    apply(&stuck, &mut machines);
    assert_eq!(check(&c, &machines, &Observation::default()).write.len(), 3);
    // Two of three written: they form a quorum; nothing is undone.
    let mut plan = check(&c, &machines, &Observation::default());
    plan.write.truncate(2);
    apply(&plan, &mut machines);
    let waiting = check(&c, &machines, &Observation::default());
    assert!(waiting.drop.is_empty());
    assert_eq!(waiting.progress.unwrap().reason, "NoQuorum");
}
