//! What Flotilla needs to know about built-in kinds: where a workload keeps
//! its pod template, its replica count and per-replica requests, what it
//! refers to, and what to strip before sending it to a member.

use std::collections::BTreeMap;

use flotilla_api::work::keys;
use k8s_openapi::api::core::v1::{NodeSelectorTerm, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Map, Value};

use crate::estimator::report::{amount, format_amount};
use crate::estimator::NodeConstraints;

/// The API group of an `apiVersion` (`""` for the core group).
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// The `apiVersion` and `kind` of an object (`""` when absent).
pub fn type_of(object: &Value) -> (&str, &str) {
    let field = |name| object.get(name).and_then(Value::as_str).unwrap_or_default();
    (field("apiVersion"), field("kind"))
}

/// The JSON pointer to the pod spec of a Pod or of a workload's pod
/// template, or `None` for kinds without one.
pub fn pod_spec_pointer(api_version: &str, kind: &str) -> Option<&'static str> {
    match (api_group(api_version), kind) {
        ("", "Pod") => Some("/spec"),
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some("/spec/template/spec")
        }
        ("batch", "Job") => Some("/spec/template/spec"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

fn pod_spec(object: &Value) -> Option<&Value> {
    let (api_version, kind) = type_of(object);
    object.pointer(pod_spec_pointer(api_version, kind)?)
}

/// Whether the kind has `spec.replicas` that Flotilla divides among clusters.
fn has_replicas(object: &Value) -> bool {
    let (api_version, kind) = type_of(object);
    matches!(
        (api_group(api_version), kind),
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "ReplicaSet")
    )
}

/// `spec.replicas` of a Deployment, StatefulSet or ReplicaSet (apps/v1,
/// extensions); 1 when unset, as the API server defaults it. `None` for
/// other kinds.
pub fn replicas(template: &Value) -> Option<i32> {
    if !has_replicas(template) {
        return None;
    }
    let replicas = template.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    Some(i32::try_from(replicas).unwrap_or(i32::MAX))
}

/// Sets `spec.replicas` of a Deployment, StatefulSet or ReplicaSet; does
/// nothing for other kinds.
pub fn set_replicas(manifest: &mut Value, replicas: i32) {
    if !has_replicas(manifest) {
        return;
    }
    if let Some(spec) =
        manifest.as_object_mut().map(|o| o.entry("spec").or_insert_with(|| Value::Object(Map::new())))
    {
        if let Some(spec) = spec.as_object_mut() {
            spec.insert("replicas".into(), replicas.into());
        }
    }
}

/// Resource amounts as integers: millicores for CPU, whole units otherwise.
type Amounts = BTreeMap<String, u128>;

/// A container's effective requests: its requests, and its limits for
/// resources it has no request for (the API server defaults a missing
/// request to the limit). Unparseable quantities are skipped; the API
/// server rejects them for built-in kinds anyway.
fn container_requests(container: &Value) -> Amounts {
    let mut amounts = Amounts::new();
    for source in ["/resources/limits", "/resources/requests"] {
        for (resource, q) in container.pointer(source).and_then(Value::as_object).into_iter().flatten() {
            if let Some(amount) = q.as_str().and_then(|q| amount(resource, q)) {
                amounts.insert(resource.clone(), amount);
            }
        }
    }
    amounts
}

/// Per-replica resource requests of a workload's pod template (or a Pod's),
/// computed as the scheduler does: the sum over containers, at least the
/// largest init container, plus the pod overhead. E.g. `{"cpu": "250m",
/// "memory": "64Mi"}`. Empty for kinds without a pod template.
pub fn replica_requirements(template: &Value) -> BTreeMap<String, Quantity> {
    pod_spec(template).map(pod_spec_requirements).unwrap_or_default()
}

/// Per-replica requests of a pod spec (see [`replica_requirements`]).
pub(crate) fn pod_spec_requirements(spec: &Value) -> BTreeMap<String, Quantity> {
    let containers = |field| spec.get(field).and_then(Value::as_array).into_iter().flatten();
    let mut total = Amounts::new();
    for container in containers("containers") {
        for (resource, amount) in container_requests(container) {
            *total.entry(resource).or_default() += amount;
        }
    }
    for init in containers("initContainers") {
        for (resource, amount) in container_requests(init) {
            let current = total.entry(resource).or_default();
            *current = (*current).max(amount);
        }
    }
    for (resource, q) in spec.get("overhead").and_then(Value::as_object).into_iter().flatten() {
        if let Some(amount) = q.as_str().and_then(|q| amount(resource, q)) {
            *total.entry(resource.clone()).or_default() += amount;
        }
    }
    total
        .into_iter()
        .filter(|(_, amount)| *amount > 0)
        .map(|(resource, amount)| {
            let q = Quantity(format_amount(&resource, amount));
            (resource, q)
        })
        .collect()
}

/// What the pods of a workload's template (or a Pod) ask of nodes besides
/// room: `nodeSelector`, the terms of `affinity.nodeAffinity.
/// requiredDuringSchedulingIgnoredDuringExecution`, `tolerations`, and
/// whether a container uses a host port. Entries that do not parse are
/// skipped (the API server refuses them for built-in kinds). Unconstrained
/// for kinds without a pod template.
pub fn node_constraints(template: &Value) -> NodeConstraints {
    let Some(spec) = pod_spec(template) else {
        return NodeConstraints::default();
    };
    let node_selector = spec
        .get("nodeSelector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    let required_terms = spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .map(|terms| {
            terms.iter().filter_map(|t| serde_json::from_value::<NodeSelectorTerm>(t.clone()).ok()).collect()
        });
    let tolerations = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| serde_json::from_value::<Toleration>(t.clone()).ok())
        .collect();
    let host_ports = ["containers", "initContainers"].iter().any(|field| {
        spec.get(*field).and_then(Value::as_array).into_iter().flatten().any(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|p| p.get("hostPort").and_then(Value::as_i64).is_some_and(|port| port > 0))
        })
    });
    NodeConstraints { node_selector, required_terms, tolerations, host_ports }
}

/// An object a template refers to, in the template's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dependency {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl Dependency {
    fn v1(kind: &str, name: &str) -> Self {
        Dependency { api_version: "v1".into(), kind: kind.into(), name: name.into() }
    }
}

/// The ConfigMaps, Secrets, ServiceAccounts (other than `default`) and
/// PersistentVolumeClaims the pod template of a Pod, Deployment,
/// StatefulSet, DaemonSet, ReplicaSet, Job or CronJob refers to: volumes
/// (configMap, secret, persistentVolumeClaim, projected sources), env
/// `valueFrom` configMapKeyRef/secretKeyRef, `envFrom`, `imagePullSecrets`,
/// in containers, init containers and ephemeral containers. Sorted and
/// deduplicated. Optional references are included; a missing object is the
/// caller's to tolerate.
pub fn dependencies(template: &Value) -> Vec<Dependency> {
    pod_spec(template).map(pod_spec_dependencies).unwrap_or_default()
}

/// What a pod spec refers to (see [`dependencies`]).
pub(crate) fn pod_spec_dependencies(spec: &Value) -> Vec<Dependency> {
    let mut deps = Vec::new();
    let mut add = |kind: &str, value: Option<&Value>| {
        if let Some(name) = value.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            deps.push(Dependency::v1(kind, name));
        }
    };
    let list = |value: &Value, field: &str| -> Vec<Value> {
        value.get(field).and_then(Value::as_array).cloned().unwrap_or_default()
    };

    // `serviceAccount` is the deprecated alias the API server still fills.
    let account = spec.get("serviceAccountName").or_else(|| spec.get("serviceAccount"));
    add("ServiceAccount", account.filter(|a| a.as_str() != Some("default")));
    for secret in list(spec, "imagePullSecrets") {
        add("Secret", secret.get("name"));
    }
    for volume in list(spec, "volumes") {
        add("ConfigMap", volume.pointer("/configMap/name"));
        add("Secret", volume.pointer("/secret/secretName"));
        add("PersistentVolumeClaim", volume.pointer("/persistentVolumeClaim/claimName"));
        for source in volume.pointer("/projected/sources").and_then(Value::as_array).into_iter().flatten() {
            add("ConfigMap", source.pointer("/configMap/name"));
            add("Secret", source.pointer("/secret/name"));
        }
    }
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        for container in list(spec, field) {
            for env in list(&container, "env") {
                add("ConfigMap", env.pointer("/valueFrom/configMapKeyRef/name"));
                add("Secret", env.pointer("/valueFrom/secretKeyRef/name"));
            }
            for from in list(&container, "envFrom") {
                add("ConfigMap", from.pointer("/configMapRef/name"));
                add("Secret", from.pointer("/secretRef/name"));
            }
        }
    }
    deps.sort();
    deps.dedup();
    deps
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Labels the API server puts on a Job's pod template with the selector it
/// generates (old and new spellings).
const JOB_GENERATED_LABELS: &[&str] =
    &["controller-uid", "job-name", "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name"];

/// The annotation `flotilla release` puts on a template: its Works keep
/// their objects in the members when it is deleted.
pub const RELEASE_ANNOTATION: &str = "apps.flotilla.io/release";

/// The object to send to a member: everything but `status`, with metadata
/// reduced to name, namespace, labels and annotations (so no uid,
/// resourceVersion, generation, creationTimestamp, managedFields,
/// ownerReferences, finalizers, selfLink, deletionTimestamp) and without
/// kubectl's last-applied annotation; plus the label
/// `app.flotilla.io/managed-by: flotilla`.
///
/// Values the hub's API server assigned and the member must assign itself
/// are dropped too: a Service's `clusterIP`/`clusterIPs` (kept when
/// headless, `None`), a Job's generated selector and pod template labels
/// (unless `spec.manualSelector`), and a ServiceAccount's references to the
/// hub's token Secrets (`<name>-token-*`).
pub fn prepare_for_member(template: &Value) -> Value {
    let Some(source) = template.as_object() else {
        return template.clone();
    };
    let mut out = Map::new();
    for (key, value) in source {
        if key != "status" && key != "metadata" {
            out.insert(key.clone(), value.clone());
        }
    }

    let mut metadata = Map::new();
    let meta = source.get("metadata");
    for field in ["name", "namespace"] {
        if let Some(value) = meta.and_then(|m| m.get(field)) {
            metadata.insert(field.into(), value.clone());
        }
    }
    let mut labels =
        meta.and_then(|m| m.get("labels")).and_then(Value::as_object).cloned().unwrap_or_default();
    labels.insert(keys::MANAGED_BY.into(), keys::MANAGED_BY_VALUE.into());
    metadata.insert("labels".into(), Value::Object(labels));
    let mut annotations =
        meta.and_then(|m| m.get("annotations")).and_then(Value::as_object).cloned().unwrap_or_default();
    annotations.remove(LAST_APPLIED);
    // `flotilla release`'s mark is for the hub's binder, not the members.
    annotations.remove(RELEASE_ANNOTATION);
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    out.insert("metadata".into(), Value::Object(metadata));

    let mut out = Value::Object(out);
    let (api_version, kind) = type_of(template);
    match (api_group(api_version), kind) {
        ("", "Service") => strip_cluster_ip(&mut out),
        ("batch", "Job") => strip_job_selector(&mut out),
        ("", "ServiceAccount") => strip_token_secrets(&mut out),
        _ => {}
    }
    out
}

pub(crate) fn strip_cluster_ip(service: &mut Value) {
    let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    // A headless Service says so with clusterIP None; that is intent, not an
    // allocation.
    if spec.get("clusterIP").and_then(Value::as_str) == Some("None") {
        return;
    }
    spec.remove("clusterIP");
    spec.remove("clusterIPs");
}

pub(crate) fn strip_job_selector(job: &mut Value) {
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    spec.remove("selector");
    let labels = spec.get_mut("template").and_then(|t| t.pointer_mut("/metadata/labels"));
    let Some(labels) = labels.and_then(Value::as_object_mut) else {
        return;
    };
    for label in JOB_GENERATED_LABELS {
        labels.remove(*label);
    }
}

fn strip_token_secrets(account: &mut Value) {
    let prefix =
        format!("{}-token-", account.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default());
    let Some(object) = account.as_object_mut() else {
        return;
    };
    let Some(secrets) = object.get_mut("secrets").and_then(Value::as_array_mut) else {
        return;
    };
    secrets.retain(|s| !s.get("name").and_then(Value::as_str).is_some_and(|n| n.starts_with(&prefix)));
    if secrets.is_empty() {
        object.remove("secrets");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(pod_spec: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}
            }
        })
    }

    #[test]
    fn node_constraints_come_from_the_pod_template() {
        let d = deployment(json!({
            "containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}]}],
            "nodeSelector": {"zone": "z1", "bad": 3},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}
            ]}}},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}, {"key": 7}]
        }));
        let got = node_constraints(&d);
        assert_eq!(got.node_selector, [("zone".to_string(), "z1".to_string())].into());
        let terms = got.required_terms.expect("required terms");
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[0].match_expressions.as_ref().unwrap()[0].key, "disk");
        assert_eq!(terms[1].match_fields.as_ref().unwrap()[0].values, Some(vec!["n1".to_string()]));
        assert_eq!(got.tolerations.len(), 1, "the malformed toleration is skipped");
        assert_eq!(got.tolerations[0].value.as_deref(), Some("db"));
        assert!(got.host_ports);

        let plain = node_constraints(&deployment(
            json!({"containers": [{"name": "a", "ports": [{"containerPort": 80}]}]}),
        ));
        assert_eq!(plain, NodeConstraints::default());
        assert_eq!(
            node_constraints(&json!({"apiVersion": "v1", "kind": "ConfigMap"})),
            NodeConstraints::default()
        );
    }

    #[test]
    fn pod_spec_locations_by_kind() {
        assert_eq!(pod_spec_pointer("v1", "Pod"), Some("/spec"));
        assert_eq!(pod_spec_pointer("apps/v1", "Deployment"), Some("/spec/template/spec"));
        assert_eq!(pod_spec_pointer("extensions/v1beta1", "DaemonSet"), Some("/spec/template/spec"));
        assert_eq!(pod_spec_pointer("batch/v1", "Job"), Some("/spec/template/spec"));
        assert_eq!(
            pod_spec_pointer("batch/v1beta1", "CronJob"),
            Some("/spec/jobTemplate/spec/template/spec")
        );
        assert_eq!(pod_spec_pointer("v1", "ConfigMap"), None);
        // A custom resource that happens to be called Deployment is not one.
        assert_eq!(pod_spec_pointer("example.com/v1", "Deployment"), None);
    }

    #[test]
    fn replicas_of_replicated_kinds_only() {
        let mut d = deployment(json!({"containers": []}));
        assert_eq!(replicas(&d), Some(3));
        set_replicas(&mut d, 7);
        assert_eq!(d["spec"]["replicas"], 7);
        assert_eq!(replicas(&d), Some(7));

        let mut sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}});
        assert_eq!(replicas(&sts), Some(1), "unset replicas default to 1");
        set_replicas(&mut sts, 2);
        assert_eq!(sts["spec"]["replicas"], 2);
        let rs = json!({"apiVersion": "extensions/v1beta1", "kind": "ReplicaSet", "spec": {"replicas": 0}});
        assert_eq!(replicas(&rs), Some(0));

        let mut ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "spec": {}});
        assert_eq!(replicas(&ds), None);
        set_replicas(&mut ds, 4);
        assert_eq!(ds, json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "spec": {}}));
        assert_eq!(replicas(&json!({"apiVersion": "v1", "kind": "ConfigMap"})), None);
    }

    #[test]
    fn requirements_sum_containers_and_take_the_largest_init_container() {
        let d = deployment(json!({
            "initContainers": [
                {"name": "migrate", "resources": {"requests": {"cpu": "1", "memory": "32Mi"}}},
                {"name": "warm", "resources": {"requests": {"cpu": "100m"}}}
            ],
            "containers": [
                {"name": "app", "resources": {"requests": {"cpu": "200m", "memory": "48Mi"}}},
                // Only limits: the request defaults to the limit.
                {"name": "sidecar", "resources": {"limits": {"cpu": "50m", "memory": "16Mi"}}},
                {"name": "bare"}
            ]
        }));
        let req = replica_requirements(&d);
        let expected: BTreeMap<String, Quantity> = [("cpu", "1"), ("memory", "64Mi")]
            .into_iter()
            .map(|(k, v)| (k.into(), Quantity(v.into())))
            .collect();
        assert_eq!(req, expected);

        let small_init = deployment(json!({
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "100m"}}}],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "150m", "memory": "64Mi"},
                                            "limits": {"cpu": "1", "nvidia.com/gpu": "1"}}},
                {"name": "b", "resources": {"requests": {"cpu": "100m"}}}
            ],
            "overhead": {"memory": "1Mi"}
        }));
        let req = replica_requirements(&small_init);
        assert_eq!(req["cpu"], Quantity("250m".into()));
        assert_eq!(req["memory"], Quantity("65Mi".into()));
        assert_eq!(req["nvidia.com/gpu"], Quantity("1".into()));
    }

    #[test]
    fn requirements_of_pods_cronjobs_and_other_kinds() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
            {"name": "a", "resources": {"requests": {"memory": "1Gi"}}}]}});
        assert_eq!(replica_requirements(&pod)["memory"], Quantity("1Gi".into()));
        let cron = json!({"apiVersion": "batch/v1beta1", "kind": "CronJob", "spec": {"jobTemplate": {"spec": {
            "template": {"spec": {"containers": [
                {"name": "a", "resources": {"requests": {"cpu": "0.5"}}}]}}}}}});
        assert_eq!(replica_requirements(&cron)["cpu"], Quantity("500m".into()));
        assert!(replica_requirements(&json!({"apiVersion": "v1", "kind": "Service"})).is_empty());
        assert!(replica_requirements(&deployment(json!({"containers": [{"name": "a"}]}))).is_empty());
    }

    #[test]
    fn dependencies_cover_volumes_env_pull_secrets_and_service_accounts() {
        let d = deployment(json!({
            "serviceAccountName": "web-sa",
            "serviceAccount": "web-sa",
            "imagePullSecrets": [{"name": "registry-creds"}],
            "volumes": [
                {"name": "conf", "configMap": {"name": "web-config"}},
                {"name": "tls", "secret": {"secretName": "web-tls"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}},
                {"name": "all", "projected": {"sources": [
                    {"configMap": {"name": "proj-cm"}},
                    {"secret": {"name": "proj-secret"}},
                    {"serviceAccountToken": {"path": "token"}}
                ]}},
                {"name": "scratch", "emptyDir": {}}
            ],
            "initContainers": [{"name": "init", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
            "containers": [{
                "name": "app",
                "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "web-config", "key": "a"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "b"}}},
                    {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "D", "value": "plain"}
                ],
                "envFrom": [{"configMapRef": {"name": "env-cm"}}]
            }]
        }));
        let got: Vec<(String, String)> = dependencies(&d).into_iter().map(|d| (d.kind, d.name)).collect();
        let want: Vec<(String, String)> = [
            ("ConfigMap", "env-cm"),
            ("ConfigMap", "proj-cm"),
            ("ConfigMap", "web-config"),
            ("PersistentVolumeClaim", "web-data"),
            ("Secret", "db-password"),
            ("Secret", "init-env"),
            ("Secret", "proj-secret"),
            ("Secret", "registry-creds"),
            ("Secret", "web-tls"),
            ("ServiceAccount", "web-sa"),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
        assert_eq!(got, want);
        assert!(dependencies(&d).iter().all(|d| d.api_version == "v1"));
    }

    #[test]
    fn default_service_account_and_non_workloads_have_no_dependencies() {
        let d = deployment(
            json!({"serviceAccountName": "default", "serviceAccount": "default", "containers": []}),
        );
        assert!(dependencies(&d).is_empty());
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"volumes": "x"}});
        assert!(dependencies(&cm).is_empty());
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
            "containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "s"}}]}]}}}});
        assert_eq!(dependencies(&job), vec![Dependency::v1("Secret", "s")]);
    }

    #[test]
    fn member_copy_drops_server_state_and_is_labelled() {
        let d = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "shop",
                "uid": "1234", "resourceVersion": "99", "generation": 4,
                "creationTimestamp": "2024-01-01T00:00:00Z", "selfLink": "/apis/apps/v1/x",
                "managedFields": [{"manager": "kubectl"}],
                "ownerReferences": [{"kind": "X", "name": "y", "uid": "z", "apiVersion": "v1"}],
                "finalizers": ["example.com/f"], "deletionTimestamp": "2024-01-02T00:00:00Z",
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "a"}
            },
            "spec": {"replicas": 2},
            "status": {"readyReplicas": 2}
        });
        let member = prepare_for_member(&d);
        assert_eq!(
            member,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": "web", "namespace": "shop",
                    "labels": {"app": "web", "app.flotilla.io/managed-by": "flotilla"},
                    "annotations": {"team": "a"}
                },
                "spec": {"replicas": 2}
            })
        );
        // Only the last-applied annotation: no annotations at all.
        let bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}, "data": {"k": "v"}});
        assert_eq!(
            prepare_for_member(&bare),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"},
                   "metadata": {"name": "c", "labels": {"app.flotilla.io/managed-by": "flotilla"}}})
        );
    }

    #[test]
    fn member_copy_of_services_drops_the_hub_cluster_ip_unless_headless() {
        let svc = |ip: &str| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                   "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80}]}})
        };
        let member = prepare_for_member(&svc("10.0.0.12"));
        assert_eq!(member["spec"], json!({"ports": [{"port": 80}]}));
        let headless = prepare_for_member(&svc("None"));
        assert_eq!(headless["spec"]["clusterIP"], "None");
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    }

    #[test]
    fn member_copy_of_jobs_drops_the_generated_selector() {
        let job = |manual: bool| {
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
            "spec": {
                "manualSelector": manual,
                "selector": {"matchLabels": {"controller-uid": "abc"}},
                "template": {"metadata": {"labels": {
                    "controller-uid": "abc", "job-name": "pi", "app": "pi"}},
                    "spec": {"containers": [{"name": "pi", "image": "perl"}], "restartPolicy": "Never"}}
            }})
        };
        let member = prepare_for_member(&job(false));
        assert!(member["spec"].get("selector").is_none());
        assert_eq!(member["spec"]["template"]["metadata"]["labels"], json!({"app": "pi"}));
        let manual = prepare_for_member(&job(true));
        assert_eq!(manual["spec"]["selector"], job(true)["spec"]["selector"]);
        assert_eq!(manual["spec"]["template"]["metadata"]["labels"]["controller-uid"], "abc");
    }

    #[test]
    fn member_copy_of_service_accounts_drops_hub_token_secrets() {
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web"},
            "secrets": [{"name": "web-token-x7k2p"}, {"name": "extra"}]});
        assert_eq!(prepare_for_member(&sa)["secrets"], json!([{"name": "extra"}]));
        let only_token = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web"},
            "secrets": [{"name": "web-token-x7k2p"}]});
        assert!(prepare_for_member(&only_token).get("secrets").is_none());
    }
}
