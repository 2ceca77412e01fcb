//! Member clusters through the hub (the hub's cluster proxy,
//! `flotilla_hub::proxy`): a client whose requests reach member `C` as the
//! hub user, and what its failures mean. Shared by `get pods`, `logs` and
//! `exec`.

use flotilla_fleet_core::cluster_proxy;
use kube::Client;

use crate::hub_kubeconfig::HubKubeconfig;

/// A client for member `cluster` through the hub, as the hub kubeconfig's
/// user (the member's RBAC applies to that user). No read timeout: logs
/// and watches stream.
pub async fn member_client(hub: &HubKubeconfig, cluster: &str) -> anyhow::Result<Client> {
    flotilla_fleet_core::membership::validate_cluster_name(cluster).map_err(|e| anyhow::anyhow!(e))?;
    let loaded = hub.load()?;
    let mut config = loaded.config().await?;
    config.read_timeout = None;
    let base = config.cluster_url.to_string();
    let url = format!("{}{}", base.trim_end_matches('/'), cluster_proxy::proxy_path(cluster, ""));
    config.cluster_url = url.parse().map_err(|e| anyhow::anyhow!("the hub URL {base}: {e}"))?;
    Client::try_from(config).map_err(|e| anyhow::anyhow!("hub kubeconfig {}: {e}", loaded.source))
}

/// Why `doing` (e.g. "listing pods") in `cluster` failed, said so that a
/// person can act on it.
pub fn member_failure(cluster: &str, doing: &str, error: &kube::Error) -> String {
    let kube::Error::Api(status) = error else {
        return format!("{doing} in cluster {cluster}: {error}");
    };
    let message = &status.message;
    match status.code {
        403 if message.contains("clusters/proxy") => format!(
            "the hub does not let you reach member clusters (RBAC: {} clusters/proxy): {message}",
            cluster_proxy::GROUP
        ),
        403 => {
            format!("cluster {cluster} refused {doing} (forbidden by its RBAC for your hub user): {message}")
        }
        404 if message.contains("is not a member of the fleet") => {
            format!("{message} (`flotilla get clusters` lists the members)")
        }
        404 if message.contains("the server could not find the requested resource") => format!(
            "the hub serves no cluster proxy ({}/{} is not registered): run `flotilla hub run` \
             with --proxy-listen and --proxy-advertise",
            cluster_proxy::GROUP,
            cluster_proxy::VERSION
        ),
        503 if message.contains("is not connected") => message.clone(),
        503 if message.contains(cluster_proxy::API_SERVICE) || message.contains("service unavailable") => {
            format!(
                "the hub's cluster proxy does not answer (APIService {}): {message}",
                cluster_proxy::API_SERVICE
            )
        }
        _ => format!("{doing} in cluster {cluster}: {message} ({})", status.code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure(message, "").with_code(code).boxed())
    }

    #[test]
    fn failures_say_what_to_do() {
        let cases: Vec<(&str, kube::Error, &str)> = vec![
            ("member RBAC", api(403, "pods is forbidden: User \"bob\" cannot list resource \"pods\""),
                "cluster m1 refused listing pods (forbidden by its RBAC for your hub user): pods is forbidden"),
            ("hub RBAC", api(403, "clusters.proxy.flotilla.io \"m1\" is forbidden: User \"carol\" cannot get resource \"clusters/proxy\""),
                "the hub does not let you reach member clusters (RBAC: proxy.flotilla.io clusters/proxy)"),
            ("unknown cluster", api(404, "cluster m1 is not a member of the fleet"), "`flotilla get clusters` lists the members"),
            ("no proxy", api(404, "the server could not find the requested resource"), "--proxy-listen"),
            ("not connected", api(503, "cluster m1 is not connected: its agent has no tunnel open"), "cluster m1 is not connected"),
            ("other", api(500, "boom"), "listing pods in cluster m1: boom (500)"),
        ];
        for (name, error, want) in cases {
            let got = member_failure("m1", "listing pods", &error);
            assert!(got.contains(want), "{name}: {got}");
        }
    }
}
