//! What deleting an EtcdCluster (process runtime) still has to do or wait
//! for: its members' components removed from the Machines, and the node
//! agents' word that they stopped them and removed their data.

use crate::etcd::{component_name, names, stale_for, EtcdOperatorConfig};
use flotilla_api::kok::EtcdCluster;
use flotilla_api::machine::Machine;
use k8s_openapi::jiff::Timestamp;

/// What deleting a cluster still has to do or wait for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Teardown {
    /// Machines whose spec still holds the cluster's component.
    pub remove_from: Vec<String>,
    /// Machines whose node agent still reports the component (it has not
    /// stopped it and deleted its working directory yet).
    pub waiting_for: Vec<String>,
    /// Machines that still report it but whose node agent has been silent
    /// beyond `member_dead_after`: not waited for. Their member's data
    /// stays until that agent comes back and removes it.
    pub abandoned: Vec<String>,
}

impl Teardown {
    /// Nothing left: the finalizer can go.
    pub fn done(&self) -> bool {
        self.remove_from.is_empty() && self.waiting_for.is_empty()
    }

    pub fn message(&self) -> String {
        let list = |v: &[String]| v.join(", ");
        let mut parts = Vec::new();
        if !self.remove_from.is_empty() {
            parts.push(format!("removing the members from {}", list(&self.remove_from)));
        }
        if !self.waiting_for.is_empty() {
            parts.push(format!("waiting for the node agents of {} to stop them", list(&self.waiting_for)));
        }
        if !self.abandoned.is_empty() {
            parts.push(format!(
                "not waiting for {} (node agent silent); their data is removed when it returns",
                list(&self.abandoned)
            ));
        }
        if parts.is_empty() {
            "every member is stopped and its data removed".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Deleting `cluster`: its components leave every Machine's spec, then
/// the node agents must report them gone.
pub fn teardown(
    cluster: &EtcdCluster,
    machines: &[Machine],
    config: &EtcdOperatorConfig,
    now: Timestamp,
) -> Teardown {
    let (name, namespace) = names(cluster);
    let component = component_name(namespace, name);
    let mut out = Teardown::default();
    for m in machines {
        let machine = m.metadata.name.clone().unwrap_or_default();
        if m.spec.components.iter().any(|c| c.name == component) {
            out.remove_from.push(machine);
        } else if m.status.iter().flat_map(|s| &s.components).any(|c| c.name == component) {
            if stale_for(m, now, config.member_dead_after).is_some() {
                out.abandoned.push(machine);
            } else {
                out.waiting_for.push(machine);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::tests::*;
    use flotilla_api::machine::MachineStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn teardown_removes_components_then_waits_for_the_agents_but_not_for_silent_ones() {
        let (c, mut machines, _) = running_three();
        let component = component_name("ns", "e");
        let cfg = config();
        let td = teardown(&c, &machines, &cfg, t(1000));
        assert_eq!(td.remove_from, ["m3", "m1", "m2"]);
        assert!(!td.done());
        let reported = |beat: i64| MachineStatus {
            last_heartbeat: Some(Time(t(beat))),
            components: vec![flotilla_api::machine::ComponentStatus {
                name: component.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        for m in &mut machines {
            m.spec.components.clear();
        }
        machines[0].status = Some(reported(990));
        machines[2].status = Some(reported(100));
        let td = teardown(&c, &machines, &cfg, t(1000));
        assert_eq!(
            (td.waiting_for.clone(), td.abandoned.clone()),
            (vec!["m3".to_string()], vec!["m1".to_string()])
        );
        assert!(td.message().contains("waiting for the node agents of m3"), "{}", td.message());
        machines[0].status = None;
        assert!(teardown(&c, &machines, &cfg, t(1000)).done());
    }
}
