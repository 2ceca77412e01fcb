//! A HostedCluster's status, decided once for both runtimes from what one
//! reconcile observed: the conditions of the control plane's parts,
//! `CertificatesReady`, `Ready` and its message, the phase, which of the
//! stored status's conditions and fields survive, and `status.version`.
//! The operators (`flotilla_kok::hosted` and its `Kubernetes` runtime) only
//! compare the result with what is stored and patch it.

use std::collections::BTreeMap;

use flotilla_api::kok::{
    conditions, AddonStatus, CertificateStatus, ControlPlaneInstanceStatus, HostedCluster,
    HostedClusterPhase, HostedClusterStatus,
};
use flotilla_core::conditions::{condition, Wanted};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use time::OffsetDateTime;

use crate::hosted::{admin_secret_name, ComponentObservation, HostedOperatorConfig, Part, Placement};
use crate::hosted_pki::certificates_verdict;
use crate::pki::ControlPlanePki;
use crate::upgrade::UpgradePlan;

/// Reason of the conditions for what the `Kubernetes` runtime does not do.
pub const SKIPPED_BY_RUNTIME: &str = "SkippedByRuntime";
/// Reason of a part's (or `NodesReady`'s) condition when no usable Machine
/// is left for some of it: a Machine must be added or come back.
pub const NO_MACHINE: &str = "NoMachine";

/// Where the control plane runs, and what the reconcile saw of it.
#[derive(Debug, Clone)]
pub enum Served<'a> {
    /// The process runtime: components on Machines, add-ons and nodes
    /// inside the cluster.
    Machines {
        placement: &'a Placement,
        /// The cluster's components as the Machines report them (empty:
        /// not looked at this time).
        seen: &'a [ComponentObservation],
        /// The add-ons as applied (empty: not looked at this time).
        addons: Vec<AddonStatus>,
        /// Ready nodes inside the cluster, when counted.
        ready_nodes: Option<i32>,
    },
    /// The `Kubernetes` runtime: Deployments in `kok-<name>`; add-ons,
    /// nodes and fleet registration only when the operator reaches the
    /// API server (a NodePort), else skipped.
    Deployments {
        /// The apiserver's Service URL, or its NodePort's, once applied.
        endpoint: Option<String>,
        /// Every Deployment rolled out and available.
        ready: bool,
        /// What the operator did inside the cluster through its NodePort;
        /// `None` when the API is served inside the meta cluster only.
        inside: Option<Vec<AddonStatus>>,
    },
}

/// What one reconcile observed, and the conditions it decided on its way.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The conditions decided so far (`Valid`, `EtcdReady`,
    /// `AddonsApplied`, the Deployments' conditions, ...), in that order.
    pub conditions: Vec<Condition>,
    pub served: Served<'a>,
    /// The upgrade plan, when the reconcile got that far.
    pub upgrade: Option<UpgradePlan>,
    /// The PKI Secret's data (empty: not read this time).
    pub pki: &'a BTreeMap<String, Vec<u8>>,
    /// Certificates were (re)issued this time.
    pub issued: bool,
    /// The `rotate-certs` value this reconcile handled, if any.
    pub handled_rotation: Option<String>,
}

/// The status to store, and whether it says Ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub status: HostedClusterStatus,
    pub ready: bool,
}

fn holds(list: &[Condition], type_: &str) -> bool {
    list.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// The stored conditions of `types` the list does not speak about:
/// `Upgraded` from an earlier step, `CertificatesReady` while etcd is away.
fn carried_over(previous: &HostedClusterStatus, list: &[Condition]) -> Vec<Condition> {
    previous
        .conditions
        .iter()
        .filter(|c| c.type_ == conditions::UPGRADED || c.type_ == conditions::CERTIFICATES_READY)
        .filter(|c| !list.iter().any(|n| n.type_ == c.type_))
        .cloned()
        .collect()
}

/// The status after a reconcile that observed `observed` (see the module
/// documentation).
pub fn status(hc: &HostedCluster, observed: Observed, config: &HostedOperatorConfig, now: &Time) -> Decided {
    let name = hc.metadata.name.as_deref().unwrap_or_default();
    let previous = hc.status.clone().unwrap_or_default();
    let generation = hc.metadata.generation;
    let Observed { conditions: mut list, served, upgrade, pki, issued, handled_rotation } = observed;
    let valid = holds(&list, conditions::VALID);
    if let Served::Machines { placement, seen, ready_nodes, .. } = &served {
        if valid && !seen.is_empty() {
            list.extend(component_conditions(hc, placement, seen, ready_nodes.unwrap_or(0), now));
        }
    }
    list.extend(upgrade.as_ref().and_then(|u| u.condition.clone()));
    list.extend(certificates_condition(name, pki, &previous.conditions, config, generation, now));
    let ready = match &served {
        Served::Machines { .. } => {
            let wants_nodes = hc.spec.nodes.as_ref().is_some_and(|n| n.count > 0);
            valid
                && holds(&list, conditions::ETCD_READY)
                && Part::CONTROL_PLANE.iter().all(|p| holds(&list, p.condition_type()))
                && holds(&list, conditions::ADDONS_APPLIED)
                && (!wants_nodes || holds(&list, conditions::NODES_READY))
        }
        Served::Deployments { ready, inside, .. } => {
            valid
                && holds(&list, conditions::ETCD_READY)
                && *ready
                && (inside.is_none() || holds(&list, conditions::ADDONS_APPLIED))
        }
    };
    // The Kubernetes runtime carries the stored conditions over before
    // Ready is judged (a stale CertificatesReady shows in its message);
    // the process runtime after.
    if let Served::Deployments { .. } = served {
        let kept = carried_over(&previous, &list);
        list.extend(kept);
    }
    let message = if ready {
        match served {
            Served::Machines { .. } => "the control plane, its add-ons and nodes are healthy".to_string(),
            Served::Deployments { inside: Some(_), .. } => {
                "the control plane and its add-ons are healthy (kubernetes runtime, reached through its NodePort)"
                    .to_string()
            }
            Served::Deployments { inside: None, .. } => {
                "the control plane is ready (kubernetes runtime: add-ons, nodes and fleet registration are \
                 skipped, see AddonsApplied)"
                    .to_string()
            }
        }
    } else {
        let waiting: Vec<String> = list
            .iter()
            .filter(|c| {
                c.status != "True" && c.reason != SKIPPED_BY_RUNTIME && c.type_ != conditions::UPGRADED
            })
            .map(|c| format!("{}: {}", c.type_, c.message))
            .collect();
        if waiting.is_empty() {
            "waiting for the first observation".to_string()
        } else {
            waiting.join("; ")
        }
    };
    let reason = if ready { "Ready" } else { "NotReady" };
    list.push(condition(
        &previous.conditions,
        Wanted::new(conditions::READY, ready, reason, message).generation(generation),
        now,
    ));
    if let Served::Machines { .. } = served {
        let kept = carried_over(&previous, &list);
        list.extend(kept);
    }
    list.sort_by(|a, b| a.type_.cmp(&b.type_));

    let upgrading = upgrade.as_ref().is_some_and(|u| u.upgrading);
    let was_ready = matches!(
        previous.phase,
        Some(HostedClusterPhase::Ready | HostedClusterPhase::Degraded | HostedClusterPhase::Upgrading)
    );
    let (endpoint, addons, instances, ready_nodes) = match served {
        Served::Machines { placement, seen, addons, ready_nodes } => (
            placement.endpoint(),
            if addons.is_empty() { previous.addons.clone() } else { addons },
            if seen.is_empty() { previous.instances.clone() } else { instance_statuses(seen) },
            ready_nodes.or(previous.ready_nodes),
        ),
        // Nothing of these is done by this runtime.
        Served::Deployments { endpoint, inside: None, .. } => (endpoint, Vec::new(), Vec::new(), None),
        Served::Deployments { endpoint, inside: Some(addons), .. } => {
            (endpoint, if addons.is_empty() { previous.addons.clone() } else { addons }, Vec::new(), None)
        }
    };
    let status = HostedClusterStatus {
        phase: Some(phase(false, upgrading, ready, was_ready)),
        endpoint: endpoint.or(previous.endpoint.clone()),
        admin_kubeconfig_secret: Some(admin_secret_name(name)),
        // The upgrade plan's, once an apiserver served a version; before,
        // the version is reached when the cluster is first Ready.
        version: upgrade
            .as_ref()
            .and_then(|u| u.version.clone())
            .or(previous.version.clone())
            .or_else(|| ready.then(|| hc.spec.version.clone())),
        previous_version: upgrade
            .as_ref()
            .and_then(|u| u.previous_version.clone())
            .or(previous.previous_version.clone()),
        certificates: if pki.is_empty() {
            previous.certificates.clone()
        } else {
            certificate_statuses(name, pki)
        },
        observed_generation: generation,
        upgrade: upgrade.as_ref().map_or(previous.upgrade.clone(), |u| u.upgrade.clone()),
        addons,
        instances,
        ready_nodes,
        certificates_issued_at: if issued {
            Some(now.clone())
        } else {
            previous.certificates_issued_at.clone()
        },
        handled_rotation: handled_rotation.or(previous.handled_rotation.clone()),
        conditions: list,
    };
    Decided { status, ready }
}

/// `CertificatesReady` from the PKI Secret's data, when this reconcile
/// read it.
pub fn certificates_condition(
    name: &str,
    pki: &BTreeMap<String, Vec<u8>>,
    previous: &[Condition],
    config: &HostedOperatorConfig,
    generation: Option<i64>,
    now: &Time,
) -> Option<Condition> {
    if pki.is_empty() {
        return None;
    }
    let at = OffsetDateTime::from_unix_timestamp_nanos(now.0.as_nanosecond())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (ok, reason, message) = certificates_verdict(name, pki, at, config.renew_before);
    Some(condition(
        previous,
        Wanted::new(conditions::CERTIFICATES_READY, ok, reason, message).generation(generation),
        now,
    ))
}

/// The certificates' expiries for `status.certificates`.
pub fn certificate_statuses(name: &str, pki: &BTreeMap<String, Vec<u8>>) -> Vec<CertificateStatus> {
    ControlPlanePki::from_secret_data(name, pki)
        .and_then(|p| p.expiries())
        .map(|list| {
            list.into_iter()
                .map(|e| CertificateStatus {
                    name: e.name,
                    not_after: Time(Timestamp::from_second(e.not_after.unix_timestamp()).unwrap_or_default()),
                    issuer: None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Under the `Kubernetes` runtime: `AddonsApplied` (and `NodesReady` when
/// nodes are asked for) say they are not done, and why.
pub fn skipped_by_runtime(hc: &HostedCluster, endpoint: &str, now: &Time) -> Vec<Condition> {
    let previous = hc.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let generation = hc.metadata.generation;
    let mut out = vec![condition(
        previous,
        Wanted::new(
            conditions::ADDONS_APPLIED,
            false,
            SKIPPED_BY_RUNTIME,
            format!(
                "not applied: under the kubernetes runtime the API server is served at {endpoint}, inside the \
                 meta cluster, which this operator does not assume it can reach; add-ons and fleet registration \
                 are skipped (the admin kubeconfig Secret works from inside the meta cluster)"
            ),
        )
        .generation(generation),
        now,
    )];
    if hc.spec.nodes.as_ref().is_some_and(|n| n.count > 0) {
        out.push(condition(
            previous,
            Wanted::new(
                conditions::NODES_READY,
                false,
                SKIPPED_BY_RUNTIME,
                format!(
                    "spec.nodes is not acted on under the kubernetes runtime: kubelets would join through \
                     {endpoint}, which only the meta cluster reaches"
                ),
            )
            .generation(generation),
            now,
        ));
    }
    out
}

/// The same False condition on each of `types` (the control plane's
/// parts, when it could not be applied at all).
pub fn all_not_ready<'t>(
    hc: &HostedCluster,
    types: impl IntoIterator<Item = &'t str>,
    reason: &str,
    message: &str,
    now: &Time,
) -> Vec<Condition> {
    let previous = hc.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    types
        .into_iter()
        .map(|t| {
            condition(
                previous,
                Wanted::new(t, false, reason, message).generation(hc.metadata.generation),
                now,
            )
        })
        .collect()
}

/// One condition per control-plane part (and NodesReady when nodes are
/// asked for), from what the machines report.
pub fn component_conditions(
    hc: &HostedCluster,
    placement: &Placement,
    seen: &[ComponentObservation],
    ready_nodes: i32,
    now: &Time,
) -> Vec<Condition> {
    let previous = hc.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let generation = hc.metadata.generation;
    let replicas = hc.spec.control_plane.replicas.max(1);
    let mut out = Vec::new();
    // A controller-manager or scheduler answers its health check before it
    // can reach the API; it is not ready until an apiserver is.
    let api_up = seen.iter().any(|o| o.part == Part::Apiserver && o.healthy);
    for part in Part::CONTROL_PLANE {
        let mine: Vec<&ComponentObservation> =
            seen.iter().filter(|o| o.part == part && o.index < replicas).collect();
        let healthy = mine.iter().filter(|o| o.healthy).count() as i32;
        let waits_for_api = part != Part::Apiserver && !api_up;
        let ok = healthy == replicas && !waits_for_api;
        let (reason, message) = if ok {
            ("Healthy", format!("{healthy}/{replicas} healthy"))
        } else if healthy == replicas {
            (
                "WaitingForApiserver",
                format!(
                    "{healthy}/{replicas} healthy, but no kube-apiserver is healthy yet, so it cannot act"
                ),
            )
        } else if mine.is_empty() && placement.unplaced_instances > 0 {
            (
                NO_MACHINE,
                with_reasons(
                    match hc.spec.control_plane.machine_pool.as_deref() {
                        Some(pool) => format!(
                            "no usable machine of pool {pool} (label {}={pool}) matches \
                         spec.controlPlane.machineSelector for {}",
                            flotilla_api::kok::MACHINE_POOL_LABEL,
                            part.upstream()
                        ),
                        None => format!(
                            "no usable machine matches spec.controlPlane.machineSelector for {}",
                            part.upstream()
                        ),
                    },
                    &placement.control_plane_unusable,
                ),
            )
        } else {
            let problems: Vec<String> = mine
                .iter()
                .filter_map(|o| o.problem.as_ref().map(|p| format!("{}-{}: {p}", part.upstream(), o.index)))
                .collect();
            ("NotHealthy", format!("{healthy}/{replicas} healthy; {}", problems.join("; ")))
        };
        out.push(condition(
            &previous,
            Wanted::new(part.condition_type(), ok, reason, message).generation(generation),
            now,
        ));
    }
    let wanted = hc.spec.nodes.as_ref().map_or(0, |n| n.count.max(0));
    if wanted > 0 {
        let ok = ready_nodes >= wanted;
        let message = if placement.unplaced_nodes > 0 {
            with_reasons(
                format!(
                    "{ready_nodes}/{wanted} nodes Ready; {} have no usable machine",
                    placement.unplaced_nodes
                ),
                &placement.nodes_unusable,
            )
        } else {
            format!("{ready_nodes}/{wanted} nodes Ready")
        };
        let reason = match (ok, placement.unplaced_nodes > 0) {
            (true, _) => "NodesReady",
            (false, true) => NO_MACHINE,
            (false, false) => "NodesNotReady",
        };
        out.push(condition(
            &previous,
            Wanted::new(conditions::NODES_READY, ok, reason, message).generation(generation),
            now,
        ));
    }
    out
}

/// `message`, then why the machines that could have served are unusable.
fn with_reasons(message: String, reasons: &[String]) -> String {
    if reasons.is_empty() {
        message
    } else {
        format!("{message} ({})", reasons.join("; "))
    }
}

/// The instances for the status.
pub fn instance_statuses(seen: &[ComponentObservation]) -> Vec<ControlPlaneInstanceStatus> {
    let mut out: Vec<ControlPlaneInstanceStatus> = seen
        .iter()
        .map(|o| ControlPlaneInstanceStatus {
            name: format!("{}-{}", o.part.upstream(), o.index),
            machine: Some(o.machine.clone()),
            version: Some(o.version.clone()),
            healthy: o.healthy,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// The phase from the conditions and what is going on.
pub fn phase(deleting: bool, upgrading: bool, all_healthy: bool, was_ready: bool) -> HostedClusterPhase {
    if deleting {
        HostedClusterPhase::Deleting
    } else if upgrading {
        HostedClusterPhase::Upgrading
    } else if all_healthy {
        HostedClusterPhase::Ready
    } else if was_ready {
        HostedClusterPhase::Degraded
    } else {
        HostedClusterPhase::Provisioning
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosted::tests::{apply, config, hc, machine, now};
    use crate::hosted::{observe, place};
    use flotilla_api::machine::{ComponentState, ComponentStatus};

    #[test]
    fn observation_and_conditions_say_what_is_wrong() {
        let mut machines = vec![machine("m1", true)];
        let hc = hc(1, 0);
        let placement = place(&hc, &machines, &config(), now()).unwrap();
        apply(&mut machines, &hc, &placement);
        let status = machines[0].status.as_mut().unwrap();
        status.components = vec![
            ComponentStatus {
                name: "apiserver-default-team-a-0".into(),
                state: ComponentState::Running,
                healthy: Some(true),
                ..Default::default()
            },
            ComponentStatus {
                name: "controller-manager-default-team-a-0".into(),
                state: ComponentState::Backoff,
                message: Some("exit code 1".into()),
                ..Default::default()
            },
        ];
        let seen = observe(&machines, "default", "team-a");
        assert_eq!(seen.len(), 3);
        assert!(seen[0].healthy && seen[0].version == "1.36.2");
        let t = Time(Timestamp::from_second(1_800_000_000).unwrap());
        let conds = component_conditions(&hc, &placement, &seen, 0, &t);
        let get = |ty: &str| conds.iter().find(|c| c.type_ == ty).unwrap();
        assert_eq!(get(conditions::KUBE_APISERVER_READY).status, "True");
        let cm = get(conditions::KUBE_CONTROLLER_MANAGER_READY);
        assert_eq!(cm.status, "False");
        assert!(cm.message.contains("Backoff on machine m1: exit code 1"), "{}", cm.message);
        assert!(get(conditions::KUBE_SCHEDULER_READY).message.contains("not started yet"));
        assert!(conds.iter().all(|c| c.type_ != conditions::NODES_READY));
        assert_eq!(instance_statuses(&seen).len(), 3);

        // A healthy controller-manager is not ready while no apiserver is.
        let status = machines[0].status.as_mut().unwrap();
        status.components[0].healthy = Some(false);
        status.components[1] = ComponentStatus {
            name: "controller-manager-default-team-a-0".into(),
            state: ComponentState::Running,
            healthy: Some(true),
            ..Default::default()
        };
        let seen = observe(&machines, "default", "team-a");
        let conds = component_conditions(&hc, &placement, &seen, 0, &t);
        let cm = conds.iter().find(|c| c.type_ == conditions::KUBE_CONTROLLER_MANAGER_READY).unwrap();
        assert_eq!((cm.status.as_str(), cm.reason.as_str()), ("False", "WaitingForApiserver"), "{cm:?}");
        assert!(cm.message.contains("no kube-apiserver is healthy yet"), "{}", cm.message);
    }

    #[test]
    fn no_usable_machine_in_the_pool_is_named_in_the_condition() {
        let pooled = |name: &str, pool: &str, alive: bool| {
            let mut m = machine(name, alive);
            m.metadata.labels =
                Some(BTreeMap::from([(flotilla_api::kok::MACHINE_POOL_LABEL.to_string(), pool.to_string())]));
            m
        };
        let machines = vec![pooled("m1", "cp", false), machine("m2", true), pooled("m3", "cp", false)];
        let mut hc = hc(1, 0);
        hc.spec.control_plane.machine_pool = Some("cp".into());
        let none = place(&hc, &machines, &config(), now()).unwrap();
        assert_eq!(none.unplaced_instances, 1);
        let conditions = component_conditions(&hc, &none, &[], 0, &Time(Timestamp::UNIX_EPOCH));
        let apiserver = conditions.iter().find(|c| c.type_ == "KubeApiserverReady").unwrap();
        assert!(apiserver.message.contains("pool cp"), "{}", apiserver.message);
        assert!(
            apiserver.message.ends_with(
                "(m1's node agent has not reported for 600s; m3's node agent has not reported for 600s)"
            ),
            "{}",
            apiserver.message
        );
    }

    #[test]
    fn machines_without_spec_address_are_used_at_their_reported_internal_ip_or_say_what_to_do() {
        use flotilla_api::machine::{MachineAddress, MachineAddressType};
        let reporting = |name: &str, addresses: &[(MachineAddressType, &str)]| {
            let mut m = machine(name, true);
            m.spec.address = None;
            if let Some(status) = m.status.as_mut() {
                status.addresses = addresses.iter().map(|(t, a)| MachineAddress::new(*t, *a)).collect();
            }
            m
        };
        let v6 = reporting(
            "m1",
            &[(MachineAddressType::Hostname, "h1"), (MachineAddressType::InternalIp, "fd00::2")],
        );
        let silent = {
            let mut m = machine("m2", true);
            m.spec.address = None;
            m.status = None;
            m
        };
        let hostname_only = reporting("m3", &[(MachineAddressType::Hostname, "h3")]);
        let machines = vec![v6, silent, hostname_only];
        let placement = place(&hc(1, 2), &machines, &config(), now()).unwrap();
        assert_eq!(placement.instances[0].apiserver_url(), "https://[fd00::2]:40000");
        let node_addresses: Vec<&str> = placement.nodes.iter().map(|n| n.address.as_str()).collect();
        assert_eq!(node_addresses, ["fd00::2", "fd00::2"]);
        let want = [
            "m2 has no address: set spec.address, or start its node agent, which reports status.addresses",
            "m3 has no address: set spec.address, or restart its node agent with --address: it reports no \
             InternalIP in status.addresses",
        ];
        assert_eq!(placement.control_plane_unusable, want);
        assert_eq!(placement.nodes_unusable, want);

        // None left: the conditions say why, per machine.
        let none = place(&hc(1, 1), &machines[1..], &config(), now()).unwrap();
        assert_eq!((none.unplaced_instances, none.unplaced_nodes), (1, 1));
        let conditions = component_conditions(&hc(1, 1), &none, &[], 0, &Time(Timestamp::UNIX_EPOCH));
        let explained: Vec<&Condition> = conditions
            .iter()
            .filter(|c| c.message.contains(want[0]) && c.message.contains(want[1]))
            .collect();
        let types: Vec<&str> = explained.iter().map(|c| c.type_.as_str()).collect();
        assert!(types.contains(&"KubeApiserverReady") && types.contains(&"NodesReady"), "{conditions:?}");
    }

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
    }

    fn said(type_: &str, ok: bool, reason: &str) -> Condition {
        condition(&[], Wanted::new(type_, ok, reason, format!("{type_} says {reason}")), &at(0))
    }

    const CONTROL_PLANE: [&str; 3] = [
        conditions::KUBE_APISERVER_READY,
        conditions::KUBE_CONTROLLER_MANAGER_READY,
        conditions::KUBE_SCHEDULER_READY,
    ];

    /// Valid, EtcdReady, the control plane's parts and AddonsApplied, all True.
    fn healthy() -> Vec<Condition> {
        let mut list =
            vec![said(conditions::VALID, true, "Valid"), said(conditions::ETCD_READY, true, "Available")];
        list.extend(CONTROL_PLANE.iter().map(|t| said(t, true, "Healthy")));
        list.push(said(conditions::ADDONS_APPLIED, true, "Applied"));
        list
    }

    fn upgrading_to(version: &str) -> UpgradePlan {
        UpgradePlan {
            versions: BTreeMap::new(),
            version: Some("1.36.2".into()),
            previous_version: None,
            upgrade: None,
            condition: Some(said(conditions::UPGRADED, false, "Upgrading")),
            upgrading: version != "1.36.2",
        }
    }

    #[derive(Clone, Copy)]
    enum Runtime {
        Process,
        Kubernetes {
            deployments_ready: bool,
        },
        /// Reached through a NodePort: add-ons count.
        KubernetesReached,
    }

    struct Case {
        name: &'static str,
        runtime: Runtime,
        /// Nodes asked for in the spec.
        nodes: i32,
        conditions: Vec<Condition>,
        upgrade: Option<UpgradePlan>,
        /// The stored status.
        previous: Option<HostedClusterStatus>,
        want_ready: bool,
        want_phase: HostedClusterPhase,
        want_version: Option<&'static str>,
        /// Words the Ready condition's message must hold.
        want_message: &'static str,
        /// Condition types the new status must (not) hold.
        want_types: &'static [&'static str],
        not_types: &'static [&'static str],
    }

    #[test]
    fn the_status_follows_from_what_the_reconcile_observed() {
        let was_ready = HostedClusterStatus {
            phase: Some(HostedClusterPhase::Ready),
            version: Some("1.36.2".into()),
            addons: vec![AddonStatus { name: "coredns".into(), hash: "h".into(), applied_at: None }],
            ready_nodes: Some(2),
            conditions: vec![
                said(conditions::UPGRADED, true, "Upgraded"),
                said(conditions::CERTIFICATES_READY, false, "Renewing"),
                said(conditions::NODES_READY, true, "NodesReady"),
            ],
            ..Default::default()
        };
        let mut without_addons = healthy();
        without_addons.pop();
        let cases = vec![
            Case {
                name: "a fresh process-runtime cluster waits for etcd",
                runtime: Runtime::Process,
                nodes: 0,
                conditions: vec![
                    said(conditions::VALID, true, "Valid"),
                    said(conditions::ETCD_READY, false, "NotFound"),
                ],
                upgrade: None,
                previous: None,
                want_ready: false,
                want_phase: HostedClusterPhase::Provisioning,
                want_version: None,
                want_message: "EtcdReady: EtcdReady says NotFound",
                want_types: &[conditions::READY, conditions::VALID, conditions::ETCD_READY],
                not_types: &[conditions::UPGRADED, conditions::CERTIFICATES_READY],
            },
            Case {
                name: "every part healthy: Ready, and the spec's version is reached",
                runtime: Runtime::Process,
                nodes: 0,
                conditions: healthy(),
                upgrade: None,
                previous: None,
                want_ready: true,
                want_phase: HostedClusterPhase::Ready,
                want_version: Some("1.36.2"),
                want_message: "the control plane, its add-ons and nodes are healthy",
                want_types: &[conditions::READY],
                not_types: &[],
            },
            Case {
                name: "nodes asked for and not reported: not Ready",
                runtime: Runtime::Process,
                nodes: 2,
                conditions: healthy(),
                upgrade: None,
                previous: None,
                want_ready: false,
                want_phase: HostedClusterPhase::Provisioning,
                want_version: None,
                want_message: "waiting for the first observation",
                want_types: &[],
                not_types: &[],
            },
            Case {
                name: "add-ons not applied: not Ready",
                runtime: Runtime::Process,
                nodes: 0,
                conditions: without_addons,
                upgrade: None,
                previous: None,
                want_ready: false,
                want_phase: HostedClusterPhase::Provisioning,
                want_version: None,
                want_message: "waiting for the first observation",
                want_types: &[],
                not_types: &[conditions::ADDONS_APPLIED],
            },
            Case {
                name: "a Ready cluster whose etcd went away is Degraded and keeps its version and last words",
                runtime: Runtime::Process,
                nodes: 0,
                conditions: vec![
                    said(conditions::VALID, true, "Valid"),
                    said(conditions::ETCD_READY, false, "NotAvailable"),
                ],
                upgrade: None,
                previous: Some(was_ready.clone()),
                want_ready: false,
                want_phase: HostedClusterPhase::Degraded,
                want_version: Some("1.36.2"),
                // The kept CertificatesReady is not in the process runtime's message.
                want_message: "EtcdReady: EtcdReady says NotAvailable",
                want_types: &[conditions::UPGRADED, conditions::CERTIFICATES_READY],
                not_types: &[conditions::NODES_READY],
            },
            Case {
                name: "an upgrade in flight: Upgrading, at the plan's version",
                runtime: Runtime::Process,
                nodes: 0,
                conditions: healthy(),
                upgrade: Some(upgrading_to("1.37.0")),
                previous: Some(was_ready.clone()),
                want_ready: true,
                want_phase: HostedClusterPhase::Upgrading,
                want_version: Some("1.36.2"),
                want_message: "healthy",
                want_types: &[conditions::UPGRADED],
                not_types: &[],
            },
            Case {
                name: "an invalid spec is never Ready",
                runtime: Runtime::Process,
                nodes: 0,
                conditions: {
                    let mut list = healthy();
                    list[0] = said(conditions::VALID, false, "Invalid");
                    list
                },
                upgrade: None,
                previous: None,
                want_ready: false,
                want_phase: HostedClusterPhase::Provisioning,
                want_version: None,
                want_message: "Valid: Valid says Invalid",
                want_types: &[],
                not_types: &[],
            },
            Case {
                name: "kubernetes runtime: Ready on the Deployments, whatever it skips",
                runtime: Runtime::Kubernetes { deployments_ready: true },
                nodes: 2,
                conditions: vec![
                    said(conditions::VALID, true, "Valid"),
                    said(conditions::ETCD_READY, true, "Available"),
                    said(conditions::ADDONS_APPLIED, false, SKIPPED_BY_RUNTIME),
                    said(conditions::NODES_READY, false, SKIPPED_BY_RUNTIME),
                ],
                upgrade: None,
                previous: Some(HostedClusterStatus { version: None, ..was_ready.clone() }),
                want_ready: true,
                want_phase: HostedClusterPhase::Ready,
                want_version: Some("1.36.2"),
                want_message: "kubernetes runtime",
                want_types: &[conditions::UPGRADED, conditions::CERTIFICATES_READY],
                not_types: &[],
            },
            Case {
                name: "kubernetes runtime through a NodePort: add-ons not applied yet, not Ready",
                runtime: Runtime::KubernetesReached,
                nodes: 0,
                conditions: vec![
                    said(conditions::VALID, true, "Valid"),
                    said(conditions::ETCD_READY, true, "Available"),
                    said(conditions::ADDONS_APPLIED, false, "ApplyFailed"),
                ],
                upgrade: None,
                previous: None,
                want_ready: false,
                want_phase: HostedClusterPhase::Provisioning,
                want_version: None,
                want_message: "AddonsApplied: AddonsApplied says ApplyFailed",
                want_types: &[],
                not_types: &[],
            },
            Case {
                name: "kubernetes runtime through a NodePort: Ready with its add-ons",
                runtime: Runtime::KubernetesReached,
                nodes: 0,
                conditions: vec![
                    said(conditions::VALID, true, "Valid"),
                    said(conditions::ETCD_READY, true, "Available"),
                    said(conditions::ADDONS_APPLIED, true, "Applied"),
                ],
                upgrade: None,
                previous: None,
                want_ready: true,
                want_phase: HostedClusterPhase::Ready,
                want_version: Some("1.36.2"),
                want_message: "reached through its NodePort",
                want_types: &[],
                not_types: &[],
            },
            Case {
                name: "kubernetes runtime: a stale CertificatesReady shows, what it skips does not",
                runtime: Runtime::Kubernetes { deployments_ready: false },
                nodes: 0,
                conditions: vec![
                    said(conditions::VALID, true, "Valid"),
                    said(conditions::ETCD_READY, true, "Available"),
                    said(conditions::ADDONS_APPLIED, false, SKIPPED_BY_RUNTIME),
                ],
                upgrade: None,
                previous: Some(was_ready.clone()),
                want_ready: false,
                want_phase: HostedClusterPhase::Degraded,
                want_version: Some("1.36.2"),
                want_message: "CertificatesReady: CertificatesReady says Renewing",
                want_types: &[conditions::UPGRADED],
                not_types: &[],
            },
        ];
        let placement = Placement::default();
        let pki = BTreeMap::new();
        for case in cases {
            let mut cluster = hc(1, case.nodes);
            cluster.status = case.previous.clone();
            let served = match case.runtime {
                Runtime::Process => Served::Machines {
                    placement: &placement,
                    seen: &[],
                    addons: Vec::new(),
                    ready_nodes: None,
                },
                Runtime::KubernetesReached => Served::Deployments {
                    endpoint: Some("https://172.30.0.2:31443".into()),
                    ready: true,
                    inside: Some(Vec::new()),
                },
                Runtime::Kubernetes { deployments_ready } => Served::Deployments {
                    inside: None,
                    endpoint: Some("https://kube-apiserver".into()),
                    ready: deployments_ready,
                },
            };
            let observed = Observed {
                conditions: case.conditions.clone(),
                served,
                upgrade: case.upgrade.clone(),
                pki: &pki,
                issued: false,
                handled_rotation: None,
            };
            let decided = status(&cluster, observed, &config(), &at(60));
            let s = &decided.status;
            assert_eq!(decided.ready, case.want_ready, "{}", case.name);
            assert_eq!(s.phase, Some(case.want_phase), "{}", case.name);
            assert_eq!(s.version.as_deref(), case.want_version, "{}", case.name);
            let ready = s.conditions.iter().find(|c| c.type_ == conditions::READY).expect(case.name);
            assert_eq!(ready.status, if case.want_ready { "True" } else { "False" }, "{}", case.name);
            assert!(ready.message.contains(case.want_message), "{}: {}", case.name, ready.message);
            for t in case.want_types {
                assert!(s.conditions.iter().any(|c| c.type_ == *t), "{}: no {t}", case.name);
            }
            for t in case.not_types {
                assert!(s.conditions.iter().all(|c| c.type_ != *t), "{}: {t} kept", case.name);
            }
            let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
            assert!(types.windows(2).all(|w| w[0] < w[1]), "{}: sorted, once each: {types:?}", case.name);
            // What only the process runtime records.
            match case.runtime {
                Runtime::KubernetesReached => {
                    assert_eq!(s.endpoint.as_deref(), Some("https://172.30.0.2:31443"), "{}", case.name);
                }
                Runtime::Process => {
                    let previous = case.previous.clone().unwrap_or_default();
                    assert_eq!(s.addons, previous.addons, "{}", case.name);
                    assert_eq!(s.ready_nodes, previous.ready_nodes, "{}", case.name);
                }
                Runtime::Kubernetes { .. } => {
                    assert!(
                        s.addons.is_empty() && s.instances.is_empty() && s.ready_nodes.is_none(),
                        "{}",
                        case.name
                    );
                    assert_eq!(s.endpoint.as_deref(), Some("https://kube-apiserver"), "{}", case.name);
                }
            }
        }
    }

    #[test]
    fn ready_keeps_its_transition_time_while_it_holds() {
        let mut cluster = hc(1, 0);
        let placement = Placement::default();
        let pki = BTreeMap::new();
        let observe = |cluster: &HostedCluster, now: &Time| {
            let served =
                Served::Machines { placement: &placement, seen: &[], addons: Vec::new(), ready_nodes: None };
            let observed = Observed {
                conditions: healthy(),
                served,
                upgrade: None,
                pki: &pki,
                issued: true,
                handled_rotation: None,
            };
            status(cluster, observed, &config(), now).status
        };
        let first = observe(&cluster, &at(10));
        assert_eq!(first.certificates_issued_at, Some(at(10)));
        cluster.status = Some(first);
        let second = observe(&cluster, &at(20));
        let ready = second.conditions.iter().find(|c| c.type_ == conditions::READY).unwrap();
        assert_eq!(ready.last_transition_time, at(10));
    }
}
