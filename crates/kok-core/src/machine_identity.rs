//! The node agent's narrow hub credential: identity, the CSR decision and
//! the RBAC objects of one Machine. Pure functions of what the caller read.
//!
//! Same model as fleet membership (`membership`): a bootstrap token (group
//! [`BOOTSTRAP_GROUP`]) buys one certificate request for user
//! `flotilla:machine:<name>` in group [`MACHINE_GROUP`]; the hub creates the
//! Machine if it is missing and approves once the Machine is accepted; the
//! name is then bound to the first key that got a certificate for it.
//!
//! Acceptance: the Machine type has no spec field for it (its spec is what
//! runs there, written by people and operators), so acceptance is the
//! annotation [`ACCEPTED_ANNOTATION`]` = "true"`, set by an admin (or by the
//! hub itself when it runs with auto-accept). Annotations are not writable
//! by the node agent (it may only write `machines/status`), so it can never
//! accept itself.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_api::machine::MachineSpec;
use serde_json::json;

use crate::node::{self, SourceKind};
use flotilla_fleet_core::membership::{decide_identity_csr, identity_csr, IdentityKind};
pub use flotilla_fleet_core::membership::{
    CsrDecision, CsrFacts, HolderFacts, BOOTSTRAP_GROUP, CLIENT_SIGNER,
};

/// Every node agent's certificate carries this organization (its group).
pub const MACHINE_GROUP: &str = "flotilla:machines";
const MACHINE_USER_PREFIX: &str = "flotilla:machine:";
/// Set to `"true"` (by an admin, or by an auto-accepting hub) to let the
/// Machine's node agent get a certificate.
pub const ACCEPTED_ANNOTATION: &str = "kok.flotilla.io/accepted";
/// SHA-256 of the public key of the node agent that holds the name (written
/// by the hub at the first approval).
pub const AGENT_KEY_ANNOTATION: &str = "kok.flotilla.io/node-agent-key";
/// Label on a node agent's CSRs and on the Roles made for it: the Machine's
/// name. Only used to pick what to look at; decisions parse the request.
pub const MACHINE_LABEL: &str = "kok.flotilla.io/machine";

/// The Kubernetes user name of machine `name`'s node agent.
pub fn machine_user(name: &str) -> String {
    format!("{MACHINE_USER_PREFIX}{name}")
}

/// The machine a node agent user name belongs to.
pub fn machine_of_user(user: &str) -> Option<&str> {
    user.strip_prefix(MACHINE_USER_PREFIX).filter(|n| validate_machine_name(n).is_ok())
}

/// A Machine name must be a DNS label (it also names CSRs, Roles and a
/// label value, which all fit one).
pub fn validate_machine_name(name: &str) -> Result<(), String> {
    const MAX: usize = 63 - "flotilla-machine--renewal".len();
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() || name.len() > MAX || !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "invalid machine name {name:?}: use 1-{MAX} lower-case letters, digits or '-', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Name of the node agent's first CSR (unique per key, so a retry finds it).
pub fn bootstrap_csr_name(name: &str, key_sha256: &str) -> String {
    format!("flotilla-machine-{name}-{}", &key_sha256[..key_sha256.len().min(12)])
}

/// Name of the CSR a node agent renews its certificate with (fixed, so RBAC
/// can name it).
pub fn renewal_csr_name(name: &str) -> String {
    format!("flotilla-machine-{name}-renewal")
}

/// What the hub knows about the Machine a CSR names.
pub type MachineFacts = HolderFacts;

/// Node agents (`flotilla:machine:<name>`).
pub const NODE_AGENT: IdentityKind = IdentityKind {
    noun: "machine",
    holder: "node agent",
    group: MACHINE_GROUP,
    name_of_user: machine_of_user,
    being_deleted: |name| format!("machine {name} is being deleted"),
    name_taken: |name| {
        format!(
            "the machine name {name} is already held by another node agent key; use another \
             name, or delete the Machine first if that host is gone"
        )
    },
    not_accepted: |name| {
        format!(
            "machine {name} is waiting to be accepted: run \
             `kubectl annotate machine {name} {ACCEPTED_ANNOTATION}=true` on the hub"
        )
    },
};

/// Facts from a Machine's annotations and deletion state.
pub fn machine_facts(annotations: &BTreeMap<String, String>, being_deleted: bool) -> MachineFacts {
    MachineFacts {
        accepted: annotations.get(ACCEPTED_ANNOTATION).is_some_and(|v| v == "true"),
        agent_key: annotations.get(AGENT_KEY_ANNOTATION).cloned(),
        being_deleted,
    }
}

/// Whether to approve a node agent's client certificate request.
///
/// A request made with a bootstrap token may claim a name only if it is
/// free or already held by the same key; a request made by the machine's
/// own certificate (a renewal) may use a new key.
pub fn decide_csr(csr: &CsrFacts, machine: Option<&MachineFacts>) -> CsrDecision {
    decide_identity_csr(&NODE_AGENT, csr, machine)
}

/// A PEM certificate request for machine `name`'s node agent, signed by
/// `key_pem`.
pub fn machine_csr(name: &str, key_pem: &str) -> Result<String, String> {
    identity_csr(&NODE_AGENT, &machine_user(name), key_pem)
}

/// The certificate rules the node agent shares with the cluster agent.
pub use flotilla_core::certificate::{cert_validity, renew_at};

/// Name of the ClusterRole/ClusterRoleBinding and of the per-namespace
/// Roles/RoleBindings of machine `name`'s node agent.
pub fn role_name(name: &str) -> String {
    format!("flotilla:machine:{name}")
}

/// Where the Events about a Machine live: it is cluster-scoped, and the
/// Events of cluster-scoped objects go to `default`.
pub const MACHINE_EVENTS_NAMESPACE: &str = "default";

/// Name of the Role/RoleBinding in [`MACHINE_EVENTS_NAMESPACE`] that lets
/// machine `name`'s node agent record Events (apart from [`role_name`], so
/// pruning the Roles of unreferenced namespaces never revokes it).
pub fn events_role_name(name: &str) -> String {
    format!("flotilla:machine:{name}:events")
}

/// The Secrets and ConfigMaps the spec's components reference, per
/// namespace: (secret names, config map names).
pub fn referenced_by_namespace(spec: &MachineSpec) -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for r in node::referenced_sources(&spec.components) {
        let entry = out.entry(r.namespace).or_default();
        match r.kind {
            SourceKind::Secret => entry.0.insert(r.name),
            SourceKind::ConfigMap => entry.1.insert(r.name),
        };
    }
    // A real node's CA and kubeconfigs are Secrets the node agent reads too.
    for node in &spec.real_nodes {
        for r in [&node.ca_ref, &node.kubelet_kubeconfig_ref, &node.kube_proxy_kubeconfig_ref] {
            out.entry(r.namespace.clone()).or_default().0.insert(r.name.clone());
        }
    }
    out
}

/// The objects that give machine `name`'s node agent exactly what it needs:
/// get/list/watch its own Machine (by name), write that Machine's status,
/// create CSRs and get/delete its own renewal CSR (cluster-scoped), and get
/// exactly the Secrets and ConfigMaps its spec's components reference (a
/// Role per referenced namespace, by name), and create Events (and patch
/// them, which is how the recorder counts a repeat) in
/// [`MACHINE_EVENTS_NAMESPACE`] only. `owner` is the ownerReferences
/// list (the Machine), so deleting the Machine revokes it all.
///
/// Empty `resourceNames` would mean "all", so a rule is only emitted for a
/// kind that has at least one referenced name.
pub fn machine_access_objects(
    name: &str,
    owner: serde_json::Value,
    spec: &MachineSpec,
) -> Vec<serde_json::Value> {
    let user = machine_user(name);
    let role = role_name(name);
    let subject = json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]);
    let mut objects = vec![
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role, "ownerReferences": owner, "labels": {MACHINE_LABEL: name}},
        "rules": [
            {"apiGroups": ["kok.flotilla.io"], "resources": ["machines"],
                "resourceNames": [name], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["kok.flotilla.io"], "resources": ["machines/status"],
                "resourceNames": [name], "verbs": ["get", "update", "patch"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                "verbs": ["create"]},
            {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                "resourceNames": [renewal_csr_name(name)], "verbs": ["get", "delete"]}
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role, "ownerReferences": owner, "labels": {MACHINE_LABEL: name}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subject}),
    ];
    // Event names are generated, so these rules cannot name them.
    let events_role = events_role_name(name);
    objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": events_role, "namespace": MACHINE_EVENTS_NAMESPACE,
            "ownerReferences": owner, "labels": {MACHINE_LABEL: name}},
        "rules": [{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]}));
    objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": events_role, "namespace": MACHINE_EVENTS_NAMESPACE,
            "ownerReferences": owner, "labels": {MACHINE_LABEL: name}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": events_role},
        "subjects": subject}));
    for (namespace, (secrets, config_maps)) in referenced_by_namespace(spec) {
        let mut rules = Vec::new();
        if !secrets.is_empty() {
            rules.push(json!({"apiGroups": [""], "resources": ["secrets"],
                "resourceNames": secrets, "verbs": ["get"]}));
        }
        if !config_maps.is_empty() {
            rules.push(json!({"apiGroups": [""], "resources": ["configmaps"],
                "resourceNames": config_maps, "verbs": ["get"]}));
        }
        objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": role, "namespace": namespace, "ownerReferences": owner,
                "labels": {MACHINE_LABEL: name}},
            "rules": rules}));
        objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": namespace, "ownerReferences": owner,
                "labels": {MACHINE_LABEL: name}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": subject}));
    }
    objects
}

/// Namespaces holding a Role of the machine that its spec no longer
/// references (their Role and RoleBinding are to be deleted).
pub fn stale_namespaces<'a>(existing: impl IntoIterator<Item = &'a str>, spec: &MachineSpec) -> Vec<String> {
    let wanted = referenced_by_namespace(spec);
    let mut stale: Vec<String> =
        existing.into_iter().filter(|ns| !wanted.contains_key(*ns)).map(str::to_string).collect();
    stale.sort();
    stale.dedup();
    stale
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::machine::{ComponentFile, ComponentSpec, KeyRef};

    fn csr(requester: &str, groups: &[&str], cn: &str) -> CsrFacts {
        CsrFacts {
            requester: requester.into(),
            requester_groups: groups.iter().map(|g| g.to_string()).collect(),
            signer: CLIENT_SIGNER.into(),
            usages: vec!["digital signature".into(), "key encipherment".into(), "client auth".into()],
            subject_common_name: cn.into(),
            subject_organizations: vec![MACHINE_GROUP.into()],
            public_key_sha256: "key-a".into(),
        }
    }

    fn machine(accepted: bool, key: Option<&str>) -> MachineFacts {
        MachineFacts { accepted, agent_key: key.map(Into::into), being_deleted: false }
    }

    const BOOT: &[&str] = &["system:bootstrappers", BOOTSTRAP_GROUP, "system:authenticated"];

    #[test]
    fn names() {
        assert_eq!(machine_user("m1"), "flotilla:machine:m1");
        assert_eq!(machine_of_user("flotilla:machine:m1"), Some("m1"));
        assert_eq!(machine_of_user("flotilla:cluster:m1"), None);
        assert_eq!(renewal_csr_name("m1"), "flotilla-machine-m1-renewal");
        assert_eq!(bootstrap_csr_name("m1", "0123456789abcdef"), "flotilla-machine-m1-0123456789ab");
        for bad in ["", "M1", "a.b", "-a", "a-", &"x".repeat(39)] {
            assert!(validate_machine_name(bad).is_err(), "{bad}");
        }
        assert!(validate_machine_name(&"x".repeat(38)).is_ok());
    }

    #[test]
    fn acceptance_comes_from_the_annotation() {
        let mut a = BTreeMap::new();
        assert!(!machine_facts(&a, false).accepted);
        a.insert(ACCEPTED_ANNOTATION.to_string(), "false".to_string());
        assert!(!machine_facts(&a, false).accepted);
        a.insert(ACCEPTED_ANNOTATION.to_string(), "true".to_string());
        a.insert(AGENT_KEY_ANNOTATION.to_string(), "k".to_string());
        let f = machine_facts(&a, true);
        assert!(f.accepted && f.being_deleted);
        assert_eq!(f.agent_key.as_deref(), Some("k"));
    }

    #[test]
    fn bootstrap_csr_waits_for_acceptance_then_is_approved() {
        let c = csr("system:bootstrap:abcdef", BOOT, "flotilla:machine:m1");
        assert!(matches!(decide_csr(&c, None), CsrDecision::Pending(_)));
        match decide_csr(&c, Some(&machine(false, None))) {
            CsrDecision::Pending(m) => assert!(m.contains(ACCEPTED_ANNOTATION), "{m}"),
            d => panic!("{d:?}"),
        }
        assert_eq!(decide_csr(&c, Some(&machine(true, None))), CsrDecision::Approve);
        assert_eq!(decide_csr(&c, Some(&machine(true, Some("key-a")))), CsrDecision::Approve);
    }

    #[test]
    fn name_is_bound_to_the_first_key_but_renewals_may_change_it() {
        let c = csr("system:bootstrap:abcdef", BOOT, "flotilla:machine:m1");
        match decide_csr(&c, Some(&machine(true, Some("key-b")))) {
            CsrDecision::Deny(m) => assert!(m.contains("already held"), "{m}"),
            d => panic!("{d:?}"),
        }
        let mut renewal = csr("flotilla:machine:m1", &[MACHINE_GROUP], "flotilla:machine:m1");
        renewal.public_key_sha256 = "key-new".into();
        assert_eq!(decide_csr(&renewal, Some(&machine(true, Some("key-a")))), CsrDecision::Approve);
        let deleting = MachineFacts { being_deleted: true, ..machine(true, None) };
        assert!(matches!(decide_csr(&c, Some(&deleting)), CsrDecision::Deny(_)));
    }

    #[test]
    fn other_identities_and_shapes_are_refused_or_ignored() {
        // Machine m2's agent cannot get a certificate for m1.
        let c = csr("flotilla:machine:m2", &[MACHINE_GROUP], "flotilla:machine:m1");
        assert!(matches!(decide_csr(&c, Some(&machine(true, None))), CsrDecision::Deny(_)));
        // A cluster agent cannot either.
        let c = csr("flotilla:cluster:a", &["flotilla:clusters"], "flotilla:machine:m1");
        assert!(matches!(decide_csr(&c, Some(&machine(true, None))), CsrDecision::Deny(_)));
        // A kubeadm-style token (no Flotilla group) cannot register.
        let c = csr("system:bootstrap:abcdef", &["system:bootstrappers"], "flotilla:machine:m1");
        assert!(matches!(decide_csr(&c, Some(&machine(true, None))), CsrDecision::Deny(_)));
        let mut c = csr("system:bootstrap:abcdef", BOOT, "flotilla:machine:m1");
        c.subject_organizations.push("system:masters".into());
        assert!(matches!(decide_csr(&c, Some(&machine(true, None))), CsrDecision::Deny(_)));
        // The cluster group is not the machine group.
        let mut c = csr("system:bootstrap:abcdef", BOOT, "flotilla:machine:m1");
        c.subject_organizations = vec!["flotilla:clusters".into()];
        assert!(matches!(decide_csr(&c, Some(&machine(true, None))), CsrDecision::Deny(_)));
        let mut c = csr("system:bootstrap:abcdef", BOOT, "flotilla:machine:m1");
        c.usages.push("server auth".into());
        assert!(matches!(decide_csr(&c, Some(&machine(true, None))), CsrDecision::Deny(_)));
        // Cluster agents' and others' CSRs are not ours to decide.
        let c = csr("system:bootstrap:abcdef", BOOT, "flotilla:cluster:a");
        assert_eq!(decide_csr(&c, None), CsrDecision::Ignore);
        let mut c = csr("system:bootstrap:abcdef", BOOT, "flotilla:machine:m1");
        c.signer = "kubernetes.io/kubelet-serving".into();
        assert_eq!(decide_csr(&c, Some(&machine(true, None))), CsrDecision::Ignore);
    }

    #[test]
    fn machine_csr_round_trips_through_the_parser() {
        let key = flotilla_core::pki::generate_key_pair().unwrap();
        let pem = machine_csr("m1", &key.private_pem).unwrap();
        let subject = flotilla_fleet_core::membership::parse_csr(pem.as_bytes()).unwrap();
        assert_eq!(subject.common_name, "flotilla:machine:m1");
        assert_eq!(subject.organizations, vec![MACHINE_GROUP.to_string()]);
        assert_eq!(
            subject.public_key_sha256,
            flotilla_fleet_core::membership::public_key_sha256(&key.private_pem).unwrap()
        );
    }

    fn file(secret: Option<(&str, &str)>, config_map: Option<(&str, &str)>) -> ComponentFile {
        let r = |(ns, n): (&str, &str)| KeyRef { namespace: ns.into(), name: n.into(), key: "k".into() };
        ComponentFile {
            path: "f".into(),
            secret_ref: secret.map(r),
            config_map_ref: config_map.map(r),
            ..Default::default()
        }
    }

    fn spec(files: Vec<ComponentFile>) -> MachineSpec {
        MachineSpec {
            components: vec![ComponentSpec {
                name: "c".into(),
                binary: "/bin/true".into(),
                files,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn access_objects_name_exactly_what_the_spec_references() {
        let s = spec(vec![
            file(Some(("kok-a", "etcd-certs")), None),
            file(Some(("kok-a", "ca")), Some(("kok-a", "config"))),
            file(None, Some(("other", "settings"))),
        ]);
        let objects = machine_access_objects("m1", json!([]), &s);
        let cluster_role = &objects[0];
        assert_eq!(cluster_role["kind"], "ClusterRole");
        for rule in cluster_role["rules"].as_array().unwrap() {
            let resource = rule["resources"][0].as_str().unwrap();
            if resource.starts_with("machines") {
                assert_eq!(rule["resourceNames"], json!(["m1"]));
            }
        }
        let roles: Vec<_> = objects
            .iter()
            .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == role_name("m1"))
            .collect();
        assert_eq!(roles.len(), 2);
        assert_eq!(roles[0]["metadata"]["namespace"], "kok-a");
        assert_eq!(
            roles[0]["rules"],
            json!([
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ca", "etcd-certs"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["config"], "verbs": ["get"]}
            ])
        );
        // No secrets referenced in "other": no secrets rule at all (an empty
        // resourceNames would grant every Secret).
        assert_eq!(
            roles[1]["rules"],
            json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["get"]}])
        );
        assert_eq!(objects.iter().filter(|o| o["kind"] == "RoleBinding").count(), 3);
        for o in &objects {
            assert!(o.to_string().contains("\"verbs\"") || o["kind"].as_str().unwrap().ends_with("Binding"));
            assert!(!o.to_string().contains("\"*\""), "no wildcards: {o}");
        }
        // No references: the cluster-scoped pair and the Events pair.
        assert_eq!(machine_access_objects("m1", json!([]), &MachineSpec::default()).len(), 4);
    }

    #[test]
    fn events_are_granted_in_the_events_namespace_only() {
        let objects = machine_access_objects("m1", json!([]), &MachineSpec::default());
        let events_role: Vec<_> =
            objects.iter().filter(|o| o["metadata"]["name"] == events_role_name("m1")).collect();
        assert_eq!(events_role.len(), 2, "a Role and its RoleBinding");
        for o in &events_role {
            assert_eq!(o["metadata"]["namespace"], MACHINE_EVENTS_NAMESPACE);
        }
        assert_eq!(
            events_role[0]["rules"],
            json!([{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}])
        );
        // No other object grants anything about Events.
        let others = objects.iter().filter(|o| o["metadata"]["name"] != events_role_name("m1"));
        assert!(others.into_iter().all(|o| !o.to_string().contains("events")));
        // Pruning by the per-namespace Role's name never touches it.
        assert_ne!(events_role_name("m1"), role_name("m1"));
    }

    #[test]
    fn a_real_nodes_secrets_are_referenced_too() {
        let r = |ns: &str, n: &str| KeyRef { namespace: ns.into(), name: n.into(), key: "value".into() };
        let mut s = spec(vec![file(Some(("kok-a", "etcd-certs")), None)]);
        s.real_nodes = vec![flotilla_api::machine::RealNodeSpec {
            name: "n1".into(),
            ca_ref: r("kok-a", "ca"),
            kubelet_kubeconfig_ref: r("kok-a", "n1-kubelet"),
            kube_proxy_kubeconfig_ref: r("kok-b", "proxy"),
            ..Default::default()
        }];
        let got = referenced_by_namespace(&s);
        let secrets = |ns: &str| got[ns].0.iter().cloned().collect::<Vec<_>>();
        assert_eq!(secrets("kok-a"), ["ca", "etcd-certs", "n1-kubelet"]);
        assert_eq!(secrets("kok-b"), ["proxy"]);
    }

    #[test]
    fn stale_namespaces_are_the_unreferenced_ones() {
        let s = spec(vec![file(Some(("kok-a", "x")), None)]);
        assert_eq!(stale_namespaces(["kok-a", "kok-b", "kok-b"], &s), vec!["kok-b".to_string()]);
        assert!(stale_namespaces(["kok-a"], &s).is_empty());
    }
}
