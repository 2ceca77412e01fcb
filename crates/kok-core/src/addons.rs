//! Add-ons a hosted cluster gets once its API server is Ready: the
//! bootstrap RBAC and token that let kubelets join (always), and the ones
//! `spec.addons` names (CoreDNS). Each is a list of manifests with a hash;
//! the operator applies an add-on only when its hash differs from the one
//! it last applied, so a user's edits inside the cluster survive until the
//! add-on itself changes.

use std::net::IpAddr;

use flotilla_api::kok::{Addon, HostedCluster};
use serde_json::{json, Value};

use crate::hosted::NODE_BOOTSTRAP_GROUP;
use crate::pki::first_service_ip;

/// Always installed: lets kubelets join with the cluster's bootstrap token.
pub const BOOTSTRAP: &str = "bootstrap";
pub const COREDNS: &str = "coredns";
/// Add-ons `spec.addons` may name.
pub const KNOWN: &[&str] = &[COREDNS];
/// CoreDNS version when the add-on names none: the one
/// `scripts/node-runtime.sh` builds into the local image
/// `flotilla.local/coredns:VERSION` (`scripts/images/coredns`).
pub const COREDNS_DEFAULT_VERSION: &str = "1.12.4";
/// Where CoreDNS images come from: no registry, images built on the machine
/// and loaded into each node's containerd (`flotilla images load`).
pub const COREDNS_IMAGE_REPOSITORY: &str = "flotilla.local/coredns";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddonError {
    #[error("unknown add-on {name:?}; known add-ons: {known}")]
    Unknown { name: String, known: String },
    #[error("invalid service CIDR {0:?}")]
    ServiceCidr(String),
}

/// The `n`-th address of a CIDR (the first service IP is `n = 1`; kubeadm
/// gives cluster DNS `n = 10`).
pub fn nth_service_ip(cidr: &str, n: u32) -> Result<IpAddr, AddonError> {
    let first = first_service_ip(cidr).map_err(|_| AddonError::ServiceCidr(cidr.to_string()))?;
    Ok(match first {
        IpAddr::V4(v4) => IpAddr::from(std::net::Ipv4Addr::from(u32::from(v4) + n - 1)),
        IpAddr::V6(v6) => IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) + u128::from(n) - 1)),
    })
}

/// The add-ons a cluster gets, in order: bootstrap first.
pub fn wanted(hc: &HostedCluster) -> Vec<Addon> {
    let mut out = vec![Addon { name: BOOTSTRAP.into(), version: None }];
    out.extend(hc.spec.addons.iter().filter(|a| a.name != BOOTSTRAP).cloned());
    out
}

/// Names `spec.addons` gives that Flotilla cannot install.
pub fn validate(hc: &HostedCluster) -> Result<(), AddonError> {
    for a in &hc.spec.addons {
        if a.name != BOOTSTRAP && !KNOWN.contains(&a.name.as_str()) {
            return Err(AddonError::Unknown { name: a.name.clone(), known: KNOWN.join(", ") });
        }
    }
    Ok(())
}

/// The manifests of one add-on. `token` is the node bootstrap token
/// (`<id>.<secret>`), for the bootstrap add-on.
pub fn manifests(addon: &Addon, hc: &HostedCluster, token: &str) -> Result<Vec<Value>, AddonError> {
    match addon.name.as_str() {
        BOOTSTRAP => Ok(bootstrap(token)),
        COREDNS => coredns(hc, addon.version.as_deref().unwrap_or(COREDNS_DEFAULT_VERSION)),
        other => Err(AddonError::Unknown { name: other.to_string(), known: KNOWN.join(", ") }),
    }
}

/// SHA-256 (hex) of an add-on's manifests.
pub fn hash(manifests: &[Value]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for m in manifests {
        hasher.update(m.to_string().as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

fn binding(name: &str, role: &str, group: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kok.flotilla.io/addon": BOOTSTRAP}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
    })
}

/// kubeadm's bootstrap RBAC: token holders may ask for a kubelet client
/// certificate, those requests are approved, and nodes may renew their own.
fn bootstrap(token: &str) -> Vec<Value> {
    let (id, secret) = token.split_once('.').unwrap_or((token, ""));
    vec![
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system",
                         "labels": {"kok.flotilla.io/addon": BOOTSTRAP}},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": {
                "token-id": id,
                "token-secret": secret,
                "usage-bootstrap-authentication": "true",
                "usage-bootstrap-signing": "true",
                "auth-extra-groups": NODE_BOOTSTRAP_GROUP,
                "description": "Flotilla: joins this cluster's worker nodes",
            },
        }),
        binding("kok:kubelet-bootstrap", "system:node-bootstrapper", NODE_BOOTSTRAP_GROUP),
        binding(
            "kok:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            NODE_BOOTSTRAP_GROUP,
        ),
        binding(
            "kok:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:nodes",
        ),
    ]
}

fn coredns(hc: &HostedCluster, version: &str) -> Result<Vec<Value>, AddonError> {
    let dns_ip = nth_service_ip(&hc.spec.network.service_cidr, 10)?;
    let domain = hc.spec.network.cluster_domain.trim_matches('.');
    let labels = json!({"k8s-app": "kube-dns", "kok.flotilla.io/addon": COREDNS});
    let corefile = format!(
        ".:53 {{\n    errors\n    health {{\n       lameduck 5s\n    }}\n    ready\n    \
         kubernetes {domain} in-addr.arpa ip6.arpa {{\n       pods insecure\n       \
         fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }}\n    prometheus :9153\n    \
         forward . /etc/resolv.conf\n    cache 30\n    loop\n    reload\n    loadbalance\n}}\n"
    );
    Ok(vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels}}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:coredns", "labels": labels},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
                // CoreDNS 1.8 and later read EndpointSlices, not Endpoints.
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns", "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        }),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
               "data": {"Corefile": corefile}}),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        // The node's resolver, not the cluster's: CoreDNS
                        // forwarding to itself is a loop its `loop` plugin
                        // stops by exiting (as kubeadm's manifest does).
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        "containers": [{
                            "name": "coredns",
                            "image": format!("{COREDNS_IMAGE_REPOSITORY}:{version}"),
                            // A local image, loaded into every real node's
                            // containerd; a node without it fails to pull
                            // from the unresolvable flotilla.local, and
                            // hollow nodes "pull" it as they pull anything.
                            "imagePullPolicy": "IfNotPresent",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "ports": [
                                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                            ],
                            "resources": {"requests": {"cpu": "100m", "memory": "70Mi"},
                                          "limits": {"memory": "170Mi"}},
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": true}],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "selector": {"k8s-app": "kube-dns"},
                "clusterIP": dns_ip.to_string(),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    {"name": "metrics", "port": 9153, "protocol": "TCP"},
                ],
            },
        }),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::kok::{HostedClusterSpec, HostedEtcd};

    fn hc(addons: &[&str]) -> HostedCluster {
        HostedCluster::new(
            "a",
            HostedClusterSpec {
                version: "1.36.2".into(),
                etcd: HostedEtcd { cluster_ref: Some("e".into()), shared: None },
                addons: addons.iter().map(|n| Addon { name: n.to_string(), version: None }).collect(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn bootstrap_is_always_first_and_unknown_addons_are_named() {
        let names: Vec<String> = wanted(&hc(&["coredns"])).into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["bootstrap", "coredns"]);
        assert_eq!(wanted(&hc(&[])).len(), 1);
        let err = validate(&hc(&["coredns", "kube-proxy"])).unwrap_err();
        assert_eq!(err.to_string(), "unknown add-on \"kube-proxy\"; known add-ons: coredns");
        assert!(validate(&hc(&["coredns"])).is_ok());
    }

    #[test]
    fn bootstrap_token_secret_and_rbac() {
        let m =
            manifests(&Addon { name: BOOTSTRAP.into(), version: None }, &hc(&[]), "abcdef.0123456789abcdef")
                .unwrap();
        assert_eq!(m[0]["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(m[0]["stringData"]["token-secret"], "0123456789abcdef");
        assert_eq!(m[0]["stringData"]["auth-extra-groups"], NODE_BOOTSTRAP_GROUP);
        let roles: Vec<&str> = m[1..].iter().map(|b| b["roleRef"]["name"].as_str().unwrap()).collect();
        assert!(roles.contains(&"system:certificates.k8s.io:certificatesigningrequests:nodeclient"));
        let other =
            manifests(&Addon { name: BOOTSTRAP.into(), version: None }, &hc(&[]), "zzzzzz.0123456789abcdef")
                .unwrap();
        assert_ne!(hash(&m), hash(&other), "a new token is a new add-on revision");
    }

    #[test]
    fn coredns_follows_the_network_and_its_version() {
        let mut cluster = hc(&["coredns"]);
        cluster.spec.network.service_cidr = "10.100.0.0/16".into();
        cluster.spec.network.cluster_domain = "corp.local".into();
        let addon = Addon { name: COREDNS.into(), version: None };
        let m = manifests(&addon, &cluster, "t.t").unwrap();
        let svc = m.iter().find(|o| o["kind"] == "Service").unwrap();
        assert_eq!(svc["spec"]["clusterIP"], "10.100.0.10");
        let cm = m.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
        assert!(cm["data"]["Corefile"].as_str().unwrap().contains("kubernetes corp.local in-addr.arpa"));
        let dep = m.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"][0]["image"],
            "flotilla.local/coredns:1.12.4"
        );
        assert_eq!(dep["spec"]["template"]["spec"]["dnsPolicy"], "Default", "no forwarding loop");
        let role = m.iter().find(|o| o["kind"] == "ClusterRole").unwrap();
        assert!(role["rules"].as_array().unwrap().iter().any(|r| r["resources"][0] == "endpointslices"));
        let newer =
            manifests(&Addon { name: COREDNS.into(), version: Some("1.8.0".into()) }, &cluster, "t.t")
                .unwrap();
        assert_ne!(hash(&m), hash(&newer));
        assert_eq!(hash(&m), hash(&manifests(&addon, &cluster, "t.t").unwrap()));
        assert_eq!(nth_service_ip("fd00::/108", 10).unwrap().to_string(), "fd00::a");
    }
}
