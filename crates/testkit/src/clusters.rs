//! Acting on member clusters as a person would: editing their taints,
//! joining one in push mode.

use std::path::Path;

use flotilla_api::cluster::ManagedCluster;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::apply;

/// Sets a cluster's taints as a person would (`kubectl edit`), under
/// their own field manager.
pub async fn set_taints(clusters: &Api<ManagedCluster>, name: &str, taints: serde_json::Value) {
    let patch = json!({"spec": {"taints": taints}});
    let params = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    clusters.patch(name, &params, &Patch::Merge(&patch)).await.unwrap();
}

/// Writes what `flotilla join <name> --mode push` writes on the hub: the
/// member's kubeconfig (read from `kubeconfig`) in a Secret and a
/// ManagedCluster in push mode that refers to it.
pub async fn join_push(hub: &Client, name: &str, kubeconfig: &Path) {
    let secret = format!("cluster-{name}-kubeconfig");
    apply(
        hub,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret, "namespace": flotilla_hub::SYSTEM_NAMESPACE},
            "stringData": {"kubeconfig": std::fs::read_to_string(kubeconfig).unwrap()}}),
    )
    .await;
    apply(
        hub,
        json!({"apiVersion": "cluster.flotilla.io/v1alpha1", "kind": "ManagedCluster",
            "metadata": {"name": name},
            "spec": {"syncMode": "Push", "hubAcceptsClient": true,
                "secretRef": {"namespace": flotilla_hub::SYSTEM_NAMESPACE, "name": secret}}}),
    )
    .await;
}
