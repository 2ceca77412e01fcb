//! `flotilla hub install`: CRDs and RBAC, applied with server-side apply so
//! running it again changes nothing.

use std::time::{Duration, Instant};

use flotilla_fleet_core::membership::BOOTSTRAP_GROUP;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::error::Error;
use crate::names::{FIELD_MANAGER, SYSTEM_NAMESPACE};

/// The ClusterRole bootstrap tokens from `flotilla token create` get: ask for
/// a certificate and read the answer, nothing else.
pub const BOOTSTRAP_ROLE: &str = "flotilla:bootstrap";

/// The ClusterRole that lets its subjects reach member clusters through the
/// hub (`proxy.flotilla.io` `clusters/proxy`, every verb: a proxied request
/// may be any request). Installed unbound: bind it to the users who need
/// it; the member's own RBAC still decides what each may do there.
pub const PROXY_ROLE: &str = "flotilla:cluster-proxy";

pub async fn install(client: &Client) -> Result<(), Error> {
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in flotilla_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &apply, &Patch::Apply(&crd)).await?;
    }
    for crd in flotilla_api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        wait_established(&crds, &name).await?;
    }

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            SYSTEM_NAMESPACE,
            &apply,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}}),
            ),
        )
        .await?;

    let roles: Api<ClusterRole> = Api::all(client.clone());
    let role = |name: &str, rules: serde_json::Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name}, "rules": rules})
    };
    let bootstrap = role(
        BOOTSTRAP_ROLE,
        json!([{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
            "verbs": ["create", "get", "list", "watch"]}]),
    );
    let proxy = role(
        PROXY_ROLE,
        json!([{"apiGroups": [flotilla_fleet_core::cluster_proxy::GROUP], "resources": ["clusters/proxy"],
            "verbs": ["*"]}]),
    );
    for (name, body) in [(BOOTSTRAP_ROLE, bootstrap), (PROXY_ROLE, proxy)] {
        roles.patch(name, &apply, &Patch::Apply(body)).await?;
    }
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    bindings
        .patch(
            BOOTSTRAP_ROLE,
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": BOOTSTRAP_ROLE},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": BOOTSTRAP_ROLE},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BOOTSTRAP_GROUP}]
            })),
        )
        .await?;
    Ok(())
}

async fn wait_established(crds: &Api<CustomResourceDefinition>, name: &str) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let crd = crds.get(name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout(format!("CustomResourceDefinition {name} to be established")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
