//! What is wrong with one pod, from its status as the kubelet and the
//! scheduler wrote it: the worst problem of its containers, or the pod's
//! own (failed, unschedulable, not ready), or that it is still starting.

use serde_json::Value;

/// How bad a problem is; the worst (smallest) one a workload has is what
/// its health detail says first. Problems a person must fix in the spec
/// (a crashing program, an image that cannot be had, a missing Secret)
/// come before those of the cluster (no room to schedule), which come
/// before the passing ones (a probe not answering yet, pods starting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The object itself failed for good (a Job's `Failed`, a custom
    /// resource's `Ready=False`).
    ObjectFailed,
    CrashLoop,
    Image,
    /// Another reason the kubelet gives a waiting container
    /// (`CreateContainerConfigError`, `RunContainerError`, ...).
    ContainerError,
    /// A container exited with a non-zero code (before a back-off).
    ContainerFailed,
    PodFailed,
    /// The controller cannot create pods (`ReplicaFailure`, e.g. a quota).
    ReplicaFailure,
    Unschedulable,
    NotReady,
    /// A Deployment past its progress deadline with no pod saying why.
    Stalled,
    /// Pods being created, scheduled or initialised.
    Starting,
}

/// `reason` of a crash-looping container.
pub const REASON_CRASH_LOOP: &str = "CrashLoopBackOff";
/// `reason` of images that cannot be pulled (the kubelet alternates
/// `ErrImagePull` and `ImagePullBackOff`; one word keeps the status still).
pub const REASON_IMAGE_PULL: &str = "ImagePullBackOff";
/// `reason` of a container that exited with a non-zero code.
pub const REASON_CONTAINER_FAILED: &str = "ContainerFailed";
/// `reason` of a pod in phase `Failed`.
pub const REASON_POD_FAILED: &str = "PodFailed";
/// `reason` of a pod the scheduler cannot place.
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";
/// `reason` of a pod whose containers run but are not ready.
pub const REASON_NOT_READY: &str = "ReadinessProbeFailing";
/// `reason` of an object on its way: nothing wrong, not there yet.
pub const REASON_PROGRESSING: &str = "Progressing";

/// One pod's worst problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProblem {
    pub severity: Severity,
    pub reason: String,
    /// About this pod, e.g. `container web restarted 5 times, last exit code 1`.
    pub detail: String,
    /// Restarts of the container the problem is about (0 for pod problems).
    pub restarts: i64,
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn int(value: &Value, pointer: &str) -> i64 {
    value.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// Whether a pod counts for its workload's health: not on its way out
/// (deleted, or finished its work).
pub fn counts(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)
        && text(pod, "/status/phase") != "Succeeded"
}

/// The most restarts of any one container of the pod.
pub fn restarts(pod: &Value) -> i64 {
    containers(pod).map(|(c, _)| int(c, "/restartCount")).max().unwrap_or(0)
}

/// Init containers first, then the others (`true`: an init container).
fn containers(pod: &Value) -> impl Iterator<Item = (&Value, bool)> {
    let list = |field: &str, init: bool| {
        pod["status"][field].as_array().into_iter().flatten().map(move |c| (c, init))
    };
    list("initContainerStatuses", true).chain(list("containerStatuses", false))
}

fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a Value> {
    pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"].as_str() == Some(kind))
}

/// The pod's worst problem; `None` when it is running and ready.
pub fn pod_problem(pod: &Value) -> Option<PodProblem> {
    let problem = |severity, reason: &str, detail: String| PodProblem {
        severity,
        reason: reason.into(),
        detail,
        restarts: 0,
    };
    if text(pod, "/status/phase") == "Failed" {
        let why = match (text(pod, "/status/reason"), text(pod, "/status/message")) {
            ("", "") => containers(pod)
                .find_map(|(c, _)| exited(c))
                .map_or_else(|| "failed".to_string(), |exit| format!("failed ({exit})")),
            (reason, "") => format!("failed: {reason}"),
            ("", message) => format!("failed: {message}"),
            (reason, message) => format!("failed: {reason}: {message}"),
        };
        let name = text(pod, "/metadata/name");
        return Some(problem(Severity::PodFailed, REASON_POD_FAILED, format!("pod {name} {why}")));
    }
    if let Some(scheduled) = condition(pod, "PodScheduled").filter(|c| c["status"] == "False") {
        return Some(match text(scheduled, "/reason") {
            REASON_UNSCHEDULABLE => {
                let message = text(scheduled, "/message");
                let detail = if message.is_empty() { "no node fits the pod" } else { message };
                problem(Severity::Unschedulable, REASON_UNSCHEDULABLE, detail.into())
            }
            "" => problem(Severity::Starting, REASON_PROGRESSING, "waiting to be scheduled".into()),
            other => {
                problem(Severity::Starting, REASON_PROGRESSING, format!("waiting to be scheduled ({other})"))
            }
        });
    }
    if text(pod, "/spec/nodeName").is_empty() {
        return Some(problem(Severity::Starting, REASON_PROGRESSING, "waiting to be scheduled".into()));
    }
    // The kubelet restarts a failed container unless the pod says Never.
    let restarted = text(pod, "/spec/restartPolicy") != "Never";
    let worst = containers(pod)
        .filter_map(|(c, init)| container_problem(c, init, restarted))
        .min_by_key(|p| p.severity);
    if worst.is_some() {
        return worst;
    }
    match text(pod, "/status/phase") {
        "Running" => {
            let ready = condition(pod, "Ready");
            if ready.is_some_and(|c| c["status"] != "True") {
                let why =
                    ready.map(|c| text(c, "/reason")).filter(|r| !r.is_empty()).unwrap_or("Ready is False");
                Some(problem(Severity::NotReady, REASON_NOT_READY, why.into()))
            } else {
                None
            }
        }
        "" | "Pending" => Some(problem(Severity::Starting, REASON_PROGRESSING, "Pending".into())),
        phase => Some(problem(Severity::Starting, REASON_PROGRESSING, phase.into())),
    }
}

/// `exited with code 1 (Error)` for a container whose current or last run
/// ended with a non-zero code.
fn exited(container: &Value) -> Option<String> {
    let terminated = &container["state"]["terminated"];
    let code = terminated["exitCode"].as_i64().filter(|c| *c != 0)?;
    let name = text(container, "/name");
    Some(match text(terminated, "/reason") {
        "" => format!("container {name} exited with code {code}"),
        reason => format!("container {name} exited with code {code} ({reason})"),
    })
}

/// `restarted`: whether the kubelet restarts this container when it fails.
fn container_problem(container: &Value, init: bool, restarted: bool) -> Option<PodProblem> {
    let name = text(container, "/name");
    let restarts = int(container, "/restartCount");
    let problem = |severity, reason: &str, detail: String| PodProblem {
        severity,
        reason: reason.into(),
        detail,
        restarts,
    };
    let state = &container["state"];
    if let Some(waiting) = state.get("waiting").filter(|w| w.is_object()) {
        let reason = text(waiting, "/reason");
        let message = text(waiting, "/message");
        // The kubelet's own words; the image when it has none.
        let said = |what: &str| match message {
            "" => format!("container {name}: {what} {}", text(container, "/image")),
            message => format!("container {name}: {message}"),
        };
        return Some(match reason {
            REASON_CRASH_LOOP => problem(
                Severity::CrashLoop,
                REASON_CRASH_LOOP,
                crash_loop(container, &container["lastState"]["terminated"]),
            ),
            "" | "ContainerCreating" | "PodInitializing" => {
                let doing = if reason.is_empty() { "waiting" } else { reason };
                problem(Severity::Starting, REASON_PROGRESSING, format!("container {name} {doing}"))
            }
            "ErrImagePull" | REASON_IMAGE_PULL => {
                problem(Severity::Image, REASON_IMAGE_PULL, said("cannot pull image"))
            }
            "ErrImageNeverPull"
            | "InvalidImageName"
            | "ErrImageInspect"
            | "RegistryUnavailable"
            | "SignatureValidationFailed" => problem(Severity::Image, reason, said("cannot use image")),
            other => problem(Severity::ContainerError, other, said("cannot start with image")),
        });
    }
    if let Some(exit) = exited(container) {
        // Failed again after a restart, and about to be restarted: a crash
        // loop, whether the kubelet says so yet (between its restarts it
        // shows the failed run as `terminated`, and only some of the time
        // `waiting: CrashLoopBackOff`).
        if restarted && restarts >= 1 {
            let detail = crash_loop(container, &state["terminated"]);
            return Some(problem(Severity::CrashLoop, REASON_CRASH_LOOP, detail));
        }
        return Some(problem(Severity::ContainerFailed, REASON_CONTAINER_FAILED, exit));
    }
    if state.get("running").is_some_and(Value::is_object) {
        if init {
            return Some(problem(
                Severity::Starting,
                REASON_PROGRESSING,
                format!("init container {name} running"),
            ));
        }
        if container["ready"] != true {
            let what = if container["started"] == false { "not started" } else { "not ready" };
            return Some(problem(
                Severity::NotReady,
                REASON_NOT_READY,
                format!("container {name} running, {what}"),
            ));
        }
    }
    None
}

/// `container web restarted 5 times, last exit code 1` (and the reason
/// when it says more than `Error`, e.g. `OOMKilled`), from `last`, the
/// container's last finished run.
fn crash_loop(container: &Value, last: &Value) -> String {
    let name = text(container, "/name");
    let restarts = int(container, "/restartCount");
    let times = if restarts == 1 { "once".to_string() } else { format!("{restarts} times") };
    match (last["exitCode"].as_i64(), text(last, "/reason")) {
        (None, _) => format!("container {name} restarted {times}"),
        (Some(code), "" | "Error") => format!("container {name} restarted {times}, last exit code {code}"),
        (Some(code), reason) => {
            format!("container {name} restarted {times}, last exit code {code} ({reason})")
        }
    }
}
