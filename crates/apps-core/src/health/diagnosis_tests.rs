//! Tables of workloads and the pods they own (fixtures in
//! `testdata/health/pods.json`, statuses as the kubelet and scheduler
//! write them) and the verdict each gives.

use super::*;
use crate::health::interpret;
use serde_json::json;

const PODS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/health/pods.json"));

fn fixture(name: &str) -> Value {
    let all: Value = serde_json::from_str(PODS).unwrap();
    let pod = all[name].clone();
    assert!(pod.is_object(), "no pod fixture {name}");
    pod
}

fn pods(names: &[&str]) -> Vec<Value> {
    names.iter().map(|n| fixture(n)).collect()
}

fn deployment(replicas: i64, status: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "demo", "generation": 2},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}},
           "status": status})
}

/// Observed, `available` of `replicas` available, all updated.
fn deployment_short(replicas: i64, available: i64) -> Value {
    deployment(
        replicas,
        json!({"observedGeneration": 2, "replicas": replicas, "updatedReplicas": replicas,
               "readyReplicas": available, "availableReplicas": available}),
    )
}

fn with_condition(mut object: Value, type_: &str, status: &str, reason: &str, message: &str) -> Value {
    let condition = json!({"type": type_, "status": status, "reason": reason, "message": message});
    match object["status"]["conditions"].as_array_mut() {
        Some(list) => list.push(condition),
        None => object["status"]["conditions"] = json!([condition]),
    }
    object
}

fn job(conditions: Value, active: i64) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "pi", "namespace": "demo", "generation": 1},
           "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}},
           "status": {"active": active, "failed": 1, "conditions": conditions}})
}

const SCHEDULER_SAYS: &str = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
     preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";

struct Case {
    name: &'static str,
    object: Value,
    pods: Vec<Value>,
    /// Health, reason, message, restart count.
    want: (Health, &'static str, String, Option<i32>),
}

fn unhealthy(
    reason: &'static str,
    message: impl Into<String>,
    restarts: Option<i32>,
) -> (Health, &'static str, String, Option<i32>) {
    (Health::Unhealthy, reason, message.into(), restarts)
}

#[test]
fn verdicts_name_the_worst_problem_first_with_counts_across_pods() {
    let crash = "container web restarted 5 times, last exit code 1";
    let pulling =
        "container web: Back-off pulling image \"flotilla.local/web:2\": ErrImagePull: failed to pull \
                   and unpack image \"flotilla.local/web:2\": not found";
    let cases = vec![
        Case {
            name: "a crash loop in one of two pods",
            object: deployment_short(2, 1),
            pods: pods(&["crash-loop", "running-ready"]),
            want: unhealthy("CrashLoopBackOff", format!("{crash} (1 of 2 pods)"), Some(5)),
        },
        Case {
            name: "crash loops in two pods: the most restarted one tells",
            object: deployment_short(3, 1),
            pods: pods(&["crash-loop-fewer", "running-ready", "crash-loop"]),
            want: unhealthy("CrashLoopBackOff", format!("{crash} (2 of 3 pods)"), Some(5)),
        },
        Case {
            name: "killed for memory says so",
            object: deployment_short(1, 0),
            pods: pods(&["crash-loop-oom"]),
            want: unhealthy(
                "CrashLoopBackOff",
                "container web restarted 3 times, last exit code 137 (OOMKilled) (1 of 1 pods)",
                Some(3),
            ),
        },
        Case {
            name: "a mixture: the crash loop first, then the others by severity",
            object: deployment_short(4, 0),
            pods: pods(&["unschedulable", "image-pull-backoff", "crash-loop", "not-ready"]),
            want: unhealthy(
                "CrashLoopBackOff",
                format!(
                    "{crash} (1 of 4 pods); also 1 pod ImagePullBackOff, 1 pod Unschedulable, \
                     1 pod ReadinessProbeFailing"
                ),
                Some(5),
            ),
        },
        Case {
            name: "ErrImagePull and ImagePullBackOff are one problem",
            object: deployment_short(2, 0),
            pods: pods(&["err-image-pull", "image-pull-backoff"]),
            want: unhealthy("ImagePullBackOff", format!("{pulling} (2 of 2 pods)"), None),
        },
        Case {
            name: "an image that is not on the node, never pulled",
            object: deployment_short(1, 0),
            pods: pods(&["err-image-never-pull"]),
            want: unhealthy(
                "ErrImageNeverPull",
                "container web: Container image \"flotilla.local/missing:1\" is not present with pull policy \
                 of Never (1 of 1 pods)",
                None,
            ),
        },
        Case {
            name: "a missing Secret",
            object: deployment_short(1, 0),
            pods: pods(&["config-error"]),
            want: unhealthy(
                "CreateContainerConfigError",
                "container web: secret \"db-password\" not found (1 of 1 pods)",
                None,
            ),
        },
        Case {
            name: "a container that exited once, before any restart",
            object: deployment_short(1, 0),
            pods: pods(&["first-crash"]),
            want: unhealthy("ContainerFailed", "container web exited with code 2 (Error) (1 of 1 pods)", None),
        },
        Case {
            name: "a restarted container that exited again, before the kubelet says CrashLoopBackOff",
            object: deployment_short(1, 0),
            pods: pods(&["just-crashed"]),
            want: unhealthy(
                "CrashLoopBackOff",
                "container web restarted once, last exit code 2 (1 of 1 pods)",
                Some(1),
            ),
        },
        Case {
            name: "an evicted pod",
            object: deployment_short(2, 1),
            pods: pods(&["evicted", "running-ready"]),
            want: unhealthy(
                "PodFailed",
                "pod web-5d8f7c9b6-ooooo failed: Evicted: The node was low on resource: memory. Threshold \
                 quantity: 100Mi, available: 90Mi. (1 of 2 pods)",
                None,
            ),
        },
        Case {
            name: "pods the scheduler cannot place carry its message",
            object: deployment_short(3, 1),
            pods: pods(&["unschedulable", "running-ready", "unschedulable-2"]),
            want: unhealthy("Unschedulable", format!("{SCHEDULER_SAYS} (2 of 3 pods)"), None),
        },
        Case {
            name: "a failing readiness probe",
            object: deployment_short(3, 2),
            pods: pods(&["running-ready", "not-ready", "running-ready"]),
            want: unhealthy(
                "ReadinessProbeFailing",
                "1 of 3 pods not ready (container web running, not ready)",
                None,
            ),
        },
        Case {
            name: "a startup probe not passed yet",
            object: deployment_short(1, 0),
            pods: pods(&["not-started"]),
            want: unhealthy(
                "ReadinessProbeFailing",
                "1 of 1 pods not ready (container web running, not started)",
                None,
            ),
        },
        Case {
            name: "a readiness gate",
            object: deployment_short(1, 0),
            pods: pods(&["readiness-gate"]),
            want: unhealthy("ReadinessProbeFailing", "1 of 1 pods not ready (ReadinessGatesNotReady)", None),
        },
        Case {
            name: "pods being created",
            object: deployment_short(2, 1),
            pods: pods(&["container-creating", "running-ready"]),
            want: unhealthy("Progressing", "1 of 2 pods starting (container web ContainerCreating)", None),
        },
        Case {
            name: "an init container running",
            object: deployment_short(1, 0),
            pods: pods(&["init-running"]),
            want: unhealthy("Progressing", "1 of 1 pods starting (init container migrate running)", None),
        },
        Case {
            name: "a pod not looked at by the scheduler yet",
            object: deployment_short(1, 0),
            pods: pods(&["not-yet-scheduled"]),
            want: unhealthy("Progressing", "1 of 1 pods starting (waiting to be scheduled)", None),
        },
        Case {
            name: "pods fine, rollout still replacing old replicas",
            object: deployment(
                3,
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 4}),
            ),
            pods: pods(&["running-ready", "running-ready"]),
            want: unhealthy("Progressing", "rollout in progress: 1 old replicas pending termination", None),
        },
        Case {
            name: "pods fine, new replicas still coming",
            object: deployment(
                3,
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3}),
            ),
            pods: pods(&["running-ready"]),
            want: unhealthy("Progressing", "rollout in progress: 1 of 3 new replicas updated", None),
        },
        Case {
            name: "pods fine, updated replicas not yet available",
            object: deployment(
                3,
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
            ),
            pods: pods(&["running-ready"]),
            want: unhealthy("Progressing", "rollout in progress: 2 of 3 updated replicas available", None),
        },
        Case {
            name: "a spec the controller has not seen",
            object: deployment(3, json!({"observedGeneration": 1})),
            pods: vec![],
            want: unhealthy("Progressing", "the Deployment controller has not observed generation 2 yet", None),
        },
        Case {
            name: "terminating pods do not count",
            object: deployment(
                1,
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}),
            ),
            pods: pods(&["terminating-crash-loop", "running-ready"]),
            want: unhealthy("Progressing", "rollout in progress: 1 old replicas pending termination", None),
        },
        Case {
            name: "past the progress deadline with pods still starting",
            object: with_condition(
                deployment_short(1, 0),
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                "ReplicaSet \"web-5d8f7c9b6\" has timed out progressing.",
            ),
            pods: pods(&["container-creating"]),
            want: unhealthy(
                "ProgressDeadlineExceeded",
                "ReplicaSet \"web-5d8f7c9b6\" has timed out progressing.; also 1 pod Progressing",
                None,
            ),
        },
        Case {
            name: "past the progress deadline, a crash loop says why",
            object: with_condition(
                deployment_short(1, 0),
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                "ReplicaSet \"web-5d8f7c9b6\" has timed out progressing.",
            ),
            pods: pods(&["crash-loop"]),
            want: unhealthy("CrashLoopBackOff", format!("{crash} (1 of 1 pods)"), Some(5)),
        },
        Case {
            name: "pods the controller cannot create",
            object: with_condition(
                deployment_short(3, 1),
                "ReplicaFailure",
                "True",
                "FailedCreate",
                "pods \"web-5d8f7c9b6-x\" is forbidden: exceeded quota: pods",
            ),
            pods: pods(&["running-ready", "unschedulable"]),
            want: unhealthy(
                "FailedCreate",
                "pods \"web-5d8f7c9b6-x\" is forbidden: exceeded quota: pods; also 1 pod Unschedulable",
                None,
            ),
        },
        Case {
            name: "a failed Job says its own reason, then its pods",
            object: job(
                json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit"}]),
                0,
            ),
            pods: pods(&["job-pod-failed", "job-pod-succeeded"]),
            want: unhealthy(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit; also 1 pod PodFailed",
                None,
            ),
        },
        Case {
            name: "a running Job whose pod failed stays unknown: it retries",
            object: job(json!([]), 1),
            pods: pods(&["job-pod-failed", "job-pod-succeeded"]),
            want: (
                Health::Unknown,
                "PodFailed",
                "pod pi-x7k2q failed (container pi exited with code 2 (Error)) (1 of 1 pods)".into(),
                None,
            ),
        },
        Case {
            name: "a running Job with nothing wrong",
            object: job(json!([]), 1),
            pods: pods(&["job-pod-succeeded"]),
            want: (Health::Unknown, "Progressing", "1 active, 0 succeeded, 1 failed".into(), None),
        },
        Case {
            name: "a bare pod that cannot pull its image is unhealthy, not unknown",
            object: fixture("image-pull-backoff"),
            pods: vec![],
            want: unhealthy("ImagePullBackOff", pulling, None),
        },
        Case {
            name: "a bare pod being created stays unknown",
            object: fixture("container-creating"),
            pods: vec![],
            want: (Health::Unknown, "Progressing", "container web ContainerCreating".into(), None),
        },
        Case {
            name: "a bare pod in a crash loop",
            object: fixture("crash-loop"),
            pods: vec![],
            want: unhealthy("CrashLoopBackOff", crash, Some(5)),
        },
        Case {
            name: "a StatefulSet with a pod not ready",
            object: json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                           "metadata": {"name": "db", "namespace": "demo", "generation": 1},
                           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "db"}}},
                           "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 2}}),
            pods: pods(&["running-ready", "not-ready"]),
            want: unhealthy(
                "ReadinessProbeFailing",
                "1 of 2 pods not ready (container web running, not ready)",
                None,
            ),
        },
        Case {
            name: "a DaemonSet rolling out",
            object: json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                           "metadata": {"name": "agent", "namespace": "demo", "generation": 3},
                           "spec": {"selector": {"matchLabels": {"app": "agent"}}},
                           "status": {"observedGeneration": 3, "desiredNumberScheduled": 4,
                                      "numberAvailable": 4, "updatedNumberScheduled": 2}}),
            pods: pods(&["running-ready"]),
            want: unhealthy("Progressing", "4 of 4 pods available, 2 updated", None),
        },
        Case {
            name: "a custom resource says why through Ready",
            object: json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
                           "status": {"conditions": [{"type": "Ready", "status": "False",
                                                      "reason": "NoBackend", "message": "backend b is down"}]}}),
            pods: vec![],
            want: unhealthy("NoBackend", "backend b is down", None),
        },
    ];
    for case in cases {
        let (health, _) = interpret(&case.object);
        let (health, detail) = diagnose(&case.object, health, &case.pods);
        let detail = detail.unwrap_or_else(|| panic!("{}: no detail", case.name));
        let got = (health, detail.reason.as_str(), detail.message.clone(), detail.restart_count);
        let want = (case.want.0, case.want.1, case.want.2.clone(), case.want.3);
        assert_eq!(got, want, "{}", case.name);
    }
}

#[test]
fn healthy_objects_get_no_detail_whatever_their_pods_went_through() {
    let (health, detail) = diagnose(&deployment_short(2, 2), Health::Healthy, &pods(&["crash-loop"]));
    assert_eq!((health, detail), (Health::Healthy, None));
}

#[test]
fn the_same_pods_in_any_order_read_the_same() {
    let object = deployment_short(4, 0);
    let names = ["unschedulable", "crash-loop-fewer", "image-pull-backoff", "crash-loop", "not-ready"];
    let first = diagnose(&object, Health::Unhealthy, &pods(&names));
    let mut reversed = names;
    reversed.reverse();
    assert_eq!(diagnose(&object, Health::Unhealthy, &pods(&reversed)), first);
    // Ties of severity go to the problem more pods have, then by name.
    let (_, detail) = diagnose(&object, Health::Unhealthy, &pods(&["err-image-never-pull", "config-error"]));
    assert_eq!(detail.unwrap().reason, "ErrImageNeverPull", "image problems before config errors");
    let (_, detail) =
        diagnose(&object, Health::Unhealthy, &pods(&["err-image-never-pull", "image-pull-backoff"]));
    assert_eq!(detail.unwrap().reason, "ErrImageNeverPull", "one pod each: by name");
    let (_, detail) = diagnose(
        &object,
        Health::Unhealthy,
        &pods(&["err-image-never-pull", "image-pull-backoff", "err-image-pull"]),
    );
    assert_eq!(detail.unwrap().reason, "ImagePullBackOff", "two pods against one");
}

#[test]
fn messages_are_bounded() {
    let mut pod = fixture("config-error");
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = json!("x".repeat(5000));
    let (_, detail) = diagnose(&deployment_short(1, 0), Health::Unhealthy, &[pod]);
    let message = detail.unwrap().message;
    assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
    assert!(message.ends_with('…'));
    assert_eq!(bounded("short", 10), "short");
    assert_eq!(bounded("ééééé", 3), "éé…");
}

#[test]
fn workloads_select_their_pods_by_selector_and_other_kinds_do_not() {
    let selection = pod_selection(&deployment_short(1, 1)).unwrap();
    assert_eq!(selection.namespace, "demo");
    let labels = fixture("running-ready")["metadata"]["labels"].clone();
    let labels = serde_json::from_value(labels).unwrap();
    assert!(crate::affinity::label_selector_matches(&selection.selector, &labels));

    let job = pod_selection(&job(json!([]), 1)).unwrap();
    assert_eq!(
        job.selector.match_labels.unwrap().get("batch.kubernetes.io/controller-uid").map(String::as_str),
        Some("u1")
    );
    let no_namespace = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r"},
                              "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}});
    assert_eq!(pod_selection(&no_namespace).unwrap().namespace, "default");

    for object in [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        fixture("running-ready"),
        json!({"apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"selector": {"matchLabels": {"app": "x"}}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"selector": {}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}}),
    ] {
        assert_eq!(pod_selection(&object), None, "{object}");
    }
}
