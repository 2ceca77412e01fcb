//! What a command waiting on a HostedCluster makes of what it sees: not
//! there yet (and what it waits for, in one line), done, or failed (and
//! why). Pure: the CLI (`flotilla cluster create | upgrade | delete |
//! rotate-certs`), the local fleet and tests read the objects, then ask here.

use std::time::Duration;

use flotilla_api::kok::{conditions, HostedCluster, UpgradeState};
use flotilla_api::machine::{ComponentState, Machine};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::blockers::{Blockers, Outlook};
use crate::hosted::{parse_component_name, Part};
use crate::upgrade::reasons;

/// The readiness conditions, in the order the operator gets to them: the
/// first one not True is what a cluster is waiting for.
const READINESS_ORDER: &[&str] = &[
    conditions::VALID,
    conditions::ETCD_READY,
    conditions::CERTIFICATES_READY,
    conditions::KUBE_APISERVER_READY,
    conditions::KUBE_CONTROLLER_MANAGER_READY,
    conditions::KUBE_SCHEDULER_READY,
    conditions::ADDONS_APPLIED,
    conditions::NODES_READY,
];

/// What a waiting command makes of what it sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not there yet: what it waits for, in one line.
    Pending(String),
    /// Done, with a one-line summary.
    Done(String),
    /// It will not get there: why.
    Failed(String),
}

fn condition_true(c: Option<&Condition>) -> bool {
    c.is_some_and(|c| c.status == "True")
}

/// The status describes the current spec (the operator has seen the last change).
pub fn observed(hc: &HostedCluster) -> bool {
    let seen = hc.status.as_ref().and_then(|s| s.observed_generation);
    match hc.metadata.generation {
        Some(generation) => seen.is_some_and(|s| s >= generation),
        None => seen.is_some(),
    }
}

/// Ready, for the spec as it is now.
pub fn is_ready(hc: &HostedCluster) -> bool {
    observed(hc) && condition_true(hc.condition(conditions::READY))
}

pub fn phase_of(hc: &HostedCluster) -> String {
    // The operator writes no status while it cleans up, so the last phase
    // it wrote (often Ready) would hide the deletion.
    if hc.metadata.deletion_timestamp.is_some() {
        return "Deleting".into();
    }
    match hc.status.as_ref().and_then(|s| s.phase) {
        Some(p) => format!("{p:?}"),
        None => "Pending".into(),
    }
}

/// The first readiness condition that is not True, with its message.
pub fn first_not_ready(hc: &HostedCluster) -> Option<&Condition> {
    let status = hc.status.as_ref()?;
    READINESS_ORDER
        .iter()
        .filter_map(|t| status.conditions.iter().find(|c| c.type_ == *t))
        .find(|c| c.status != "True")
        .or_else(|| status.conditions.iter().find(|c| c.type_ == conditions::READY && c.status != "True"))
}

/// "Phase · Condition: message": what a cluster is waiting for.
pub fn waiting_for(hc: &HostedCluster) -> String {
    if hc.status.is_none() {
        return "Pending · waiting for the operator to pick it up (is `flotilla hub run` running?)".into();
    }
    let phase = phase_of(hc);
    match first_not_ready(hc) {
        Some(c) => format!("{phase} · {}: {}", c.type_, one_line(&c.message)),
        None if !observed(hc) => format!("{phase} · waiting for the operator to see the latest change"),
        None => phase,
    }
}

/// Every condition that is not True, one per line, for an error message.
pub fn not_ready_summary(hc: &HostedCluster) -> String {
    let Some(status) = hc.status.as_ref() else {
        return "  the operator has not written any status (is `flotilla hub run` running?)".into();
    };
    let lines: Vec<String> = status
        .conditions
        .iter()
        .filter(|c| c.status != "True")
        .map(|c| format!("  {} ({}): {}", c.type_, c.reason, one_line(&c.message)))
        .collect();
    if lines.is_empty() {
        "  every condition is True, but the operator has not seen the latest change yet".into()
    } else {
        lines.join("\n")
    }
}

/// `create`: Ready, refused, blocked (a condition that waits on a person
/// held for `grace`; see [`crate::blockers`]), or what it waits for.
/// `blockers` is what the command saw in its earlier looks, `waited` how
/// long it has waited so far.
pub fn create_verdict(
    hc: &HostedCluster,
    blockers: &mut Blockers,
    waited: Duration,
    grace: Duration,
) -> Verdict {
    let valid = hc.condition(conditions::VALID);
    if observed(hc) && valid.is_some_and(|c| c.status == "False") {
        return Verdict::Failed(format!(
            "the spec is refused: {}",
            valid.map(|c| c.message.as_str()).unwrap_or("")
        ));
    }
    if is_ready(hc) {
        return Verdict::Done(format!("Ready at {}", endpoint_of(hc)));
    }
    let conditions = hc.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    // Only a status about the current spec says what becomes of it.
    let blocked = if observed(hc) { blockers.look(conditions, waited, grace) } else { None };
    match blocked {
        Some(b) if b.outlook == Outlook::NeedsAction => {
            let name = hc.metadata.name.as_deref().unwrap_or_default();
            Verdict::Failed(format!(
                "it cannot be built as things stand: {}\nThe cluster stays as created and goes on by itself once \
                 this is resolved (a Machine added or back, for instance): `flotilla cluster get {name}` shows \
                 it, `flotilla cluster delete {name}` removes it.",
                b.describe()
            ))
        }
        Some(b) => Verdict::Failed(format!("it cannot be built as asked: {}", b.describe())),
        None => Verdict::Pending(waiting_for(hc)),
    }
}

pub fn endpoint_of(hc: &HostedCluster) -> String {
    hc.status.as_ref().and_then(|s| s.endpoint.clone()).unwrap_or_else(|| "-".into())
}

/// `upgrade`: the outcome of moving to `target`, once the operator has seen
/// the spec at `generation`.
pub fn upgrade_verdict(hc: &HostedCluster, target: &str, generation: i64) -> Verdict {
    let Some(status) = hc.status.as_ref() else { return Verdict::Pending(waiting_for(hc)) };
    if status.observed_generation.is_none_or(|g| g < generation) {
        return Verdict::Pending(format!(
            "{} · waiting for the operator to see version {target}",
            phase_of(hc)
        ));
    }
    let upgraded = hc.condition(conditions::UPGRADED);
    if let Some(c) = upgraded.filter(|c| {
        c.status == "False" && (c.reason == reasons::REFUSED || c.reason == reasons::UNKNOWN_VERSION)
    }) {
        return Verdict::Failed(format!("refused ({}): {}", c.reason, c.message));
    }
    match status.upgrade.as_ref().filter(|u| u.to == target) {
        Some(u) if u.state == UpgradeState::Succeeded => {
            Verdict::Done(format!("upgraded from {} to {}", u.from, u.to))
        }
        Some(u) if u.state == UpgradeState::RolledBack => {
            let why = u
                .message
                .clone()
                .or_else(|| upgraded.map(|c| c.message.clone()))
                .unwrap_or_else(|| "no reason given".into());
            Verdict::Failed(format!(
                "rolled back to {}: {why} (it is not retried until spec.version is set to another version)",
                u.from
            ))
        }
        Some(u) => {
            let verb = if u.state == UpgradeState::RollingBack { "Rolling back" } else { "Upgrading" };
            let step = match (&u.component, u.instance) {
                (Some(c), Some(i)) => format!("{c}/{i}"),
                (Some(c), None) => c.clone(),
                _ => "next step".into(),
            };
            let done =
                if u.done.is_empty() { String::new() } else { format!(" (done: {})", u.done.join(", ")) };
            Verdict::Pending(format!("{verb} {} → {}: {step}{done}", u.from, u.to))
        }
        // No upgrade record for this target: a cluster that never ran another
        // version (still provisioning) is done once it is Ready at it.
        None if status.version.as_deref() == Some(target) && is_ready(hc) => {
            Verdict::Done(format!("runs {target}"))
        }
        None => Verdict::Pending(waiting_for(hc)),
    }
}

/// A component of cluster `namespace/name` on a Machine, as its node agent
/// reports it.
struct RunningComponent<'a> {
    machine: String,
    part: Part,
    name: &'a str,
    state: ComponentState,
    healthy: bool,
    started_at: Option<&'a Time>,
}

fn running_components<'a>(machines: &'a [Machine], namespace: &str, name: &str) -> Vec<RunningComponent<'a>> {
    machines
        .iter()
        .flat_map(|m| {
            let machine = m.metadata.name.clone().unwrap_or_default();
            m.status.iter().flat_map(|s| s.components.iter()).filter_map(move |c| {
                let (part, _) = parse_component_name(&c.name, namespace, name)?;
                Some(RunningComponent {
                    machine: machine.clone(),
                    part,
                    name: &c.name,
                    state: c.state,
                    healthy: c.healthy == Some(true),
                    started_at: c.started_at.as_ref(),
                })
            })
        })
        .collect()
}

/// Components of the cluster (and of its own etcd) that Machines still
/// declare or run, as `machine/component`.
pub fn leftover_components(
    machines: &[Machine],
    namespace: &str,
    name: &str,
    etcd: Option<&str>,
) -> Vec<String> {
    let etcd_component = etcd.map(|e| crate::etcd::component_name(namespace, e));
    let ours =
        |c: &str| parse_component_name(c, namespace, name).is_some() || etcd_component.as_deref() == Some(c);
    let mut out: Vec<String> = machines
        .iter()
        .flat_map(|m| {
            let machine = m.metadata.name.clone().unwrap_or_default();
            let declared = m.spec.components.iter().map(|c| c.name.as_str());
            let running = m.status.iter().flat_map(|s| s.components.iter()).map(|c| c.name.as_str());
            declared
                .chain(running)
                .filter(|c| ours(c))
                .map(move |c| format!("{machine}/{c}"))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `rotate-certs`: done once the operator handled `value` by issuing
/// certificates no earlier than `requested_at` (unix seconds), every
/// control-plane process restarted since (so it uses them), and the
/// cluster is Ready.
pub fn rotation_verdict(hc: &HostedCluster, machines: &[Machine], value: &str, requested_at: i64) -> Verdict {
    let Some(status) = hc.status.as_ref() else { return Verdict::Pending(waiting_for(hc)) };
    if status.handled_rotation.as_deref() != Some(value) {
        return Verdict::Pending(format!(
            "{} · waiting for the operator to reissue the certificates",
            phase_of(hc)
        ));
    }
    let Some(issued) = status.certificates_issued_at.as_ref().filter(|t| t.0.as_second() >= requested_at)
    else {
        return Verdict::Pending(format!("{} · waiting for the new certificates", phase_of(hc)));
    };
    let namespace = hc.metadata.namespace.clone().unwrap_or_default();
    let stale: Vec<String> =
        running_components(machines, &namespace, hc.metadata.name.as_deref().unwrap_or_default())
            .into_iter()
            .filter(|c| c.part != Part::Kubelet)
            .filter(|c| {
                c.state != ComponentState::Running
                    || !c.healthy
                    || c.started_at.is_none_or(|s| s.0 < issued.0)
            })
            .map(|c| format!("{} on {}", c.name, c.machine))
            .collect();
    if !stale.is_empty() {
        return Verdict::Pending(format!("restarting with the new certificates: {}", stale.join(", ")));
    }
    if !is_ready(hc) {
        return Verdict::Pending(waiting_for(hc));
    }
    Verdict::Done(format!("certificates reissued ({value})"))
}

/// `delete`: done once the HostedCluster and its own EtcdCluster are gone.
pub fn deletion_verdict(
    hc: Option<&HostedCluster>,
    etcd_left: Option<&str>,
    machines: &[Machine],
    namespace: &str,
    name: &str,
) -> Verdict {
    let left = leftover_components(machines, namespace, name, etcd_left);
    let mut on: Vec<&str> = left.iter().filter_map(|l| l.split_once('/')).map(|(m, _)| m).collect();
    on.dedup();
    let components = format!("{} component(s) on {}", left.len(), on.join(", "));
    match (hc, etcd_left) {
        (Some(_), _) if !left.is_empty() => {
            Verdict::Pending(format!("Deleting · the operator is stopping {components}"))
        }
        (Some(_), _) => Verdict::Pending("Deleting · the operator is removing data and Secrets".into()),
        (None, Some(etcd)) if !left.is_empty() => {
            Verdict::Pending(format!("Deleting · EtcdCluster {etcd} is stopping {components}"))
        }
        (None, Some(etcd)) => Verdict::Pending(format!("Deleting · EtcdCluster {etcd} is being removed")),
        (None, None) => Verdict::Done("deleted".into()),
    }
}

/// `s` on one line, its runs of white space made single spaces.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosted::component_name;
    use flotilla_api::kok::{HostedClusterPhase, HostedClusterStatus, Runtime, UpgradeStatus};
    use flotilla_api::kok_request::HostedClusterRequest;
    use flotilla_api::machine::{ComponentSpec, ComponentStatus, MachineSpec, MachineStatus};
    use k8s_openapi::jiff::Timestamp;

    fn request() -> HostedClusterRequest {
        HostedClusterRequest {
            namespace: "team".into(),
            name: "c1".into(),
            version: "1.36.2".into(),
            etcd_members: 3,
            etcd_version: "3.7.4".into(),
            runtime: Runtime::Process,
            replicas: 1,
            nodes: 2,
            addons: true,
            machine_pool: None,
            node_pool: None,
        }
    }

    /// `create_verdict` of a first look.
    fn create(hc: &HostedCluster) -> Verdict {
        create_verdict(hc, &mut Blockers::default(), Duration::ZERO, Duration::from_secs(30))
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cond(type_: &str, status: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: if status == "True" { "Fine".into() } else { "NotYet".into() },
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: Time(ts("2024-01-01T00:00:00Z")),
        }
    }

    fn cluster(conditions: Vec<Condition>) -> HostedCluster {
        let mut hc = request().hosted_cluster();
        hc.metadata.generation = Some(1);
        hc.status = Some(HostedClusterStatus {
            phase: Some(HostedClusterPhase::Provisioning),
            observed_generation: Some(1),
            endpoint: Some("https://127.0.0.1:33000".into()),
            conditions,
            ..Default::default()
        });
        hc
    }

    #[test]
    fn progress_names_the_first_condition_that_is_not_true() {
        let hc = cluster(vec![
            cond(conditions::READY, "False", "EtcdReady: no leader"),
            cond(conditions::KUBE_APISERVER_READY, "False", "0/1 healthy"),
            cond(conditions::ETCD_READY, "False", "EtcdCluster c1-etcd is not available: no leader"),
            cond(conditions::VALID, "True", "ok"),
        ]);
        assert_eq!(
            waiting_for(&hc),
            "Provisioning · EtcdReady: EtcdCluster c1-etcd is not available: no leader"
        );
        assert_eq!(create(&hc), Verdict::Pending(waiting_for(&hc)));

        let later = cluster(vec![
            cond(conditions::VALID, "True", "ok"),
            cond(conditions::ETCD_READY, "True", "ok"),
            cond(conditions::KUBE_APISERVER_READY, "True", "1/1"),
            cond(conditions::ADDONS_APPLIED, "True", "ok"),
            cond(conditions::NODES_READY, "False", "0/2 nodes\n Ready"),
            cond(conditions::READY, "False", "NodesReady: 0/2 nodes Ready"),
        ]);
        assert_eq!(waiting_for(&later), "Provisioning · NodesReady: 0/2 nodes Ready");
        let summary = not_ready_summary(&later);
        assert!(summary.contains("NodesReady (NotYet): 0/2 nodes Ready"), "{summary}");
        assert!(summary.contains("Ready (NotYet)"), "{summary}");
        assert!(!summary.contains("EtcdReady"), "{summary}");

        // Only Ready is False (e.g. a condition the CLI does not know yet).
        let only_ready =
            cluster(vec![cond(conditions::VALID, "True", ""), cond(conditions::READY, "False", "x: y")]);
        assert_eq!(waiting_for(&only_ready), "Provisioning · Ready: x: y");

        let mut fresh = request().hosted_cluster();
        fresh.metadata.generation = Some(1);
        assert!(waiting_for(&fresh).contains("is `flotilla hub run` running?"));
        assert!(
            not_ready_summary(&fresh).contains("has not written any status"),
            "{}",
            not_ready_summary(&fresh)
        );
    }

    #[test]
    fn create_is_done_on_a_current_ready_and_fails_on_an_invalid_spec() {
        let mut ready =
            cluster(vec![cond(conditions::VALID, "True", ""), cond(conditions::READY, "True", "")]);
        assert_eq!(create(&ready), Verdict::Done("Ready at https://127.0.0.1:33000".into()));
        // A Ready about an older generation does not count.
        ready.metadata.generation = Some(2);
        assert!(matches!(create(&ready), Verdict::Pending(_)));
        assert!(waiting_for(&ready).contains("latest change"), "{}", waiting_for(&ready));

        let invalid = cluster(vec![
            cond(conditions::VALID, "False", "version 1.99.0 is not available to this operator"),
            cond(conditions::READY, "False", "Valid: ..."),
        ]);
        assert_eq!(
            create(&invalid),
            Verdict::Failed("the spec is refused: version 1.99.0 is not available to this operator".into())
        );
    }

    #[test]
    fn create_gives_up_on_too_few_machines_once_it_held_and_says_it_whole() {
        let long = "EtcdCluster c1-etcd is not available: 2 of 3 members placed: too few Machines match \
                    spec.machineSelector without already running a member";
        let mut short = cond(conditions::ETCD_READY, "False", long);
        short.reason = crate::etcd::reasons::NOT_ENOUGH_MACHINES.into();
        let hc =
            cluster(vec![cond(conditions::VALID, "True", ""), short, cond(conditions::READY, "False", "x")]);
        let grace = Duration::from_secs(30);
        let mut blockers = Blockers::default();
        let at = |s: u64| Duration::from_secs(s);
        // (seconds waited, the cluster seen, whether the verdict is Failed)
        let mut stale = hc.clone();
        stale.metadata.generation = Some(2);
        let looks = [(0, &hc, false), (29, &hc, false), (30, &stale, false), (31, &hc, true)];
        let mut last = Verdict::Pending(String::new());
        for (waited, seen, failed) in looks {
            last = create_verdict(seen, &mut blockers, at(waited), grace);
            assert_eq!(matches!(last, Verdict::Failed(_)), failed, "at {waited}s: {last:?}");
        }
        let Verdict::Failed(why) = last else { unreachable!() };
        assert!(why.contains(&format!("EtcdReady (NotEnoughMachines, for 31s): {long}")), "{why}");
        assert!(why.contains("flotilla cluster delete c1"), "{why}");
    }

    fn upgrading(state: UpgradeState, message: Option<&str>) -> HostedCluster {
        let mut hc = cluster(vec![cond(conditions::VALID, "True", ""), cond(conditions::READY, "True", "")]);
        hc.metadata.generation = Some(2);
        let status = hc.status.as_mut().unwrap();
        status.observed_generation = Some(2);
        status.version = Some("1.36.2".into());
        status.upgrade = Some(UpgradeStatus {
            from: "1.36.2".into(),
            to: "1.36.3".into(),
            state,
            component: Some("kube-controller-manager".into()),
            instance: Some(0),
            done: vec!["kube-apiserver/0".into()],
            message: message.map(String::from),
            ..Default::default()
        });
        hc
    }

    #[test]
    fn upgrade_reports_progress_and_each_outcome() {
        assert_eq!(
            upgrade_verdict(&upgrading(UpgradeState::InProgress, None), "1.36.3", 2),
            Verdict::Pending(
                "Upgrading 1.36.2 → 1.36.3: kube-controller-manager/0 (done: kube-apiserver/0)".into()
            )
        );
        assert!(matches!(
            upgrade_verdict(&upgrading(UpgradeState::RollingBack, None), "1.36.3", 2),
            Verdict::Pending(l) if l.starts_with("Rolling back")
        ));
        assert_eq!(
            upgrade_verdict(&upgrading(UpgradeState::Succeeded, None), "1.36.3", 2),
            Verdict::Done("upgraded from 1.36.2 to 1.36.3".into())
        );
        let Verdict::Failed(why) = upgrade_verdict(
            &upgrading(UpgradeState::RolledBack, Some("kube-apiserver/0 not healthy in 60s")),
            "1.36.3",
            2,
        ) else {
            panic!("a rollback is a failure")
        };
        assert!(why.starts_with("rolled back to 1.36.2: kube-apiserver/0 not healthy in 60s"), "{why}");

        // The operator has not seen the new spec yet: an old Succeeded is not this one.
        assert!(matches!(
            upgrade_verdict(&upgrading(UpgradeState::Succeeded, None), "1.36.3", 3),
            Verdict::Pending(l) if l.contains("waiting for the operator")
        ));
        // A record of another target does not count either.
        assert!(matches!(
            upgrade_verdict(&upgrading(UpgradeState::Succeeded, None), "1.37.0", 2),
            Verdict::Pending(_)
        ));

        let mut refused = upgrading(UpgradeState::Succeeded, None);
        let mut c = cond(conditions::UPGRADED, "False", "spec.version skips a minor version");
        c.reason = reasons::REFUSED.into();
        refused.status.as_mut().unwrap().conditions.push(c);
        assert_eq!(
            upgrade_verdict(&refused, "1.38.0", 2),
            Verdict::Failed("refused (Refused): spec.version skips a minor version".into())
        );

        // A cluster that never ran another version is done when Ready at it.
        let mut fresh = upgrading(UpgradeState::Succeeded, None);
        let status = fresh.status.as_mut().unwrap();
        status.upgrade = None;
        status.version = Some("1.36.3".into());
        assert_eq!(upgrade_verdict(&fresh, "1.36.3", 2), Verdict::Done("runs 1.36.3".into()));
    }

    fn machine(name: &str, components: &[(&str, ComponentState, Option<&str>)]) -> Machine {
        let mut m = Machine::new(
            name,
            MachineSpec {
                address: Some("127.0.0.1".into()),
                components: components
                    .iter()
                    .map(|(c, _, _)| ComponentSpec { name: c.to_string(), ..Default::default() })
                    .collect(),
                ..Default::default()
            },
        );
        m.status = Some(MachineStatus {
            components: components
                .iter()
                .map(|(c, state, started)| ComponentStatus {
                    name: c.to_string(),
                    state: *state,
                    healthy: Some(*state == ComponentState::Running),
                    started_at: started.map(|s| Time(ts(s))),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        m
    }

    #[test]
    fn rotation_waits_for_the_operator_then_for_every_control_plane_process_to_restart() {
        // The annotation value `flotilla cluster rotate-certs` wrote at 1_700_000_000.
        let value = "leaves/1700000000".to_string();
        let apiserver = component_name(Part::Apiserver, "team", "c1", 0);
        let scheduler = component_name(Part::Scheduler, "team", "c1", 0);
        let kubelet = component_name(Part::Kubelet, "team", "c1", 0);
        let other = component_name(Part::Apiserver, "team", "c2", 0);
        let issued = "2023-11-14T22:13:25Z"; // 1_700_000_005
        let mut hc = cluster(vec![cond(conditions::VALID, "True", ""), cond(conditions::READY, "True", "")]);
        let machines = |scheduler_started: &str| {
            vec![
                machine("m1", &[(&apiserver, ComponentState::Running, Some("2023-11-14T22:13:30Z"))]),
                machine(
                    "m2",
                    &[
                        (&scheduler, ComponentState::Running, Some(scheduler_started)),
                        // Kubelets keep their own credential; other clusters are not ours.
                        (&kubelet, ComponentState::Running, Some("2020-01-01T00:00:00Z")),
                        (&other, ComponentState::Running, Some("2020-01-01T00:00:00Z")),
                    ],
                ),
            ]
        };
        let done_machines = machines("2023-11-14T22:13:31Z");
        assert!(matches!(rotation_verdict(&hc, &done_machines, &value, 1_700_000_000), Verdict::Pending(l)
            if l.contains("reissue")));
        let status = hc.status.as_mut().unwrap();
        status.handled_rotation = Some(value.clone());
        status.certificates_issued_at = Some(Time(ts("2023-11-14T22:13:19Z"))); // before the request
        assert!(matches!(rotation_verdict(&hc, &done_machines, &value, 1_700_000_000), Verdict::Pending(l)
            if l.contains("new certificates")));
        hc.status.as_mut().unwrap().certificates_issued_at = Some(Time(ts(issued)));
        let stale = machines("2023-11-14T22:00:00Z");
        assert_eq!(
            rotation_verdict(&hc, &stale, &value, 1_700_000_000),
            Verdict::Pending(format!("restarting with the new certificates: {scheduler} on m2"))
        );
        assert_eq!(
            rotation_verdict(&hc, &done_machines, &value, 1_700_000_000),
            Verdict::Done("certificates reissued (leaves/1700000000)".into())
        );
        hc.status.as_mut().unwrap().conditions =
            vec![cond(conditions::READY, "False", "KubeSchedulerReady: 0/1")];
        assert!(matches!(rotation_verdict(&hc, &done_machines, &value, 1_700_000_000), Verdict::Pending(l)
            if l.contains("KubeSchedulerReady")));
    }

    #[test]
    fn deletion_waits_for_the_cluster_and_its_etcd_and_names_what_is_left() {
        let apiserver = component_name(Part::Apiserver, "team", "c1", 0);
        let etcd = crate::etcd::component_name("team", "c1-etcd");
        let machines = vec![machine(
            "m1",
            &[
                (&apiserver, ComponentState::Running, None),
                (&etcd, ComponentState::Running, None),
                ("etcd-team-other", ComponentState::Running, None),
            ],
        )];
        assert_eq!(
            leftover_components(&machines, "team", "c1", Some("c1-etcd")),
            vec![format!("m1/{apiserver}"), format!("m1/{etcd}")]
        );
        let hc = cluster(vec![]);
        let pending = |s: &str| Verdict::Pending(s.to_string());
        // (the HostedCluster, its own EtcdCluster, what Machines still run) -> verdict
        type Case<'a> = (Option<&'a HostedCluster>, Option<&'a str>, &'a [Machine], Verdict);
        let table: [Case; 5] = [
            (
                Some(&hc),
                Some("c1-etcd"),
                &machines,
                pending("Deleting · the operator is stopping 2 component(s) on m1"),
            ),
            (
                Some(&hc),
                Some("c1-etcd"),
                &[],
                pending("Deleting · the operator is removing data and Secrets"),
            ),
            (
                None,
                Some("c1-etcd"),
                &machines,
                pending("Deleting · EtcdCluster c1-etcd is stopping 2 component(s) on m1"),
            ),
            (None, Some("c1-etcd"), &[], pending("Deleting · EtcdCluster c1-etcd is being removed")),
            (None, None, &[], Verdict::Done("deleted".into())),
        ];
        for (hc, etcd, machines, want) in table {
            assert_eq!(
                deletion_verdict(hc, etcd, machines, "team", "c1"),
                want,
                "cluster {:?}, etcd {etcd:?}, {} machine(s)",
                hc.is_some(),
                machines.len()
            );
        }
    }
}
