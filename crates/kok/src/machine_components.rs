//! Components the operators put on Machines for one job (a snapshot, a
//! file removal, a key load), and giving a Machine's components of one
//! field manager up again. Shared by the EtcdCluster, EtcdBackup and
//! EtcdRestore controllers.

use flotilla_api::machine::{ComponentSpec, Machine};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::Error;

/// Puts a one-shot component (a backup, a file removal, a key load) on the
/// Machine under its own field manager; applied again, it replaces what
/// that manager had there.
pub(crate) async fn run_one_shot(
    machines: &Api<Machine>,
    manager: &str,
    machine: &str,
    component: &ComponentSpec,
) -> Result<(), Error> {
    let body = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": machine},
        "spec": {"components": [component]},
    });
    machines.patch(machine, &PatchParams::apply(manager).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Gives up everything `manager` owns on the Machine: its component
/// leaves the list (others' components stay: the list is merged by name),
/// and the node agent stops it and deletes its working directory.
pub(crate) async fn release_machine(
    machines: &Api<Machine>,
    manager: &str,
    machine: &str,
    component: &str,
) -> Result<(), Error> {
    let Some(current) = machines.get_opt(machine).await? else { return Ok(()) };
    let names: Vec<&str> = current.spec.components.iter().map(|c| c.name.as_str()).collect();
    if !names.contains(&component) {
        return Ok(());
    }
    if names.iter().all(|n| *n == component) {
        // Server-side apply (still on 1.37, see the hub's
        // `cluster_list_maps` test) leaves `spec: null` when an apply drops
        // the last item of the list, which the schema refuses: empty it with
        // a merge patch, on the version just read so a component someone
        // adds meanwhile is never erased.
        let body = json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "spec": {"components": []},
        });
        machines.patch(machine, &PatchParams::default(), &Patch::Merge(&body)).await?;
        return Ok(());
    }
    let body = json!({
        "apiVersion": "kok.flotilla.io/v1alpha1", "kind": "Machine",
        "metadata": {"name": machine}, "spec": {},
    });
    machines.patch(machine, &PatchParams::apply(manager).force(), &Patch::Apply(&body)).await?;
    Ok(())
}
