use super::behavior::{self, Policy, PolicyKind, Rules, Select, Timed};
use super::replicas::{self, Metric, Resource, Target};
use super::*;
use flotilla_api::autoscaling::{
    CrossVersionObjectReference, HPABehavior, HPAScalingPolicy, HPAScalingRules, MetricSpec, MetricTarget,
    ResourceMetricSource,
};

const NOW: i64 = 1_800_000_000;

fn time(at: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(at).unwrap())
}

/// `with_metrics` ready pods using `cpu` millicores in all, requesting
/// 100m each; `missing` more ready pods without metrics; `unready` pods.
fn cpu(with_metrics: i32, cpu: i64, missing: i32, unready: i32) -> WorkloadUsage {
    WorkloadUsage {
        pods: with_metrics + missing + unready,
        ready_pods: with_metrics + missing,
        pods_with_metrics: with_metrics,
        cpu_usage_millicores: cpu,
        cpu_requests_millicores: 100 * i64::from(with_metrics),
        memory_usage_bytes: 0,
        memory_requests_bytes: 0,
        metrics_time: Some(time(NOW - 10)),
        window_seconds: Some(15),
        message: String::new(),
    }
}

#[test]
fn replica_calculation() {
    let utilization = Metric { resource: Resource::Cpu, target: Target::Utilization(50) };
    let memory = Metric { resource: Resource::Memory, target: Target::AverageValue(100 << 20) };
    let memory_usage = WorkloadUsage {
        pods: 2,
        ready_pods: 2,
        pods_with_metrics: 2,
        memory_usage_bytes: 300 << 20,
        ..Default::default()
    };
    // (name, metric, usage, current, want replicas or error fragment)
    type Case = (&'static str, Metric, WorkloadUsage, i32, Result<i32, &'static str>);
    let cases: Vec<Case> = vec![
        ("above target scales up", utilization, cpu(3, 180, 0, 0), 3, Ok(4)),
        ("within the tolerance keeps current", utilization, cpu(3, 156, 0, 0), 3, Ok(3)),
        ("below target scales down", utilization, cpu(4, 40, 0, 0), 4, Ok(1)),
        (
            "missing pods at their request turn a scale down around: keep",
            utilization,
            cpu(2, 20, 2, 0),
            4,
            Ok(4),
        ),
        ("missing pods count as idle on a scale up", utilization, cpu(2, 300, 2, 0), 4, Ok(6)),
        (
            "missing idle pods bring a scale up within the tolerance: keep",
            utilization,
            cpu(2, 200, 2, 0),
            4,
            Ok(4),
        ),
        ("unready pods count as idle on a scale up", utilization, cpu(2, 300, 0, 2), 4, Ok(6)),
        ("unready pods are ignored on a scale down", utilization, cpu(2, 20, 0, 2), 4, Ok(1)),
        ("no metrics is an error", utilization, cpu(0, 0, 3, 0), 3, Err("did not receive cpu metrics")),
        (
            "no requests is an error for utilization",
            utilization,
            WorkloadUsage { cpu_requests_millicores: 0, ..cpu(2, 100, 0, 0) },
            2,
            Err("missing request for cpu"),
        ),
        ("memory average value", memory, memory_usage, 2, Ok(3)),
    ];
    for (name, metric, usage, current, want) in cases {
        let got = replicas::replicas_for(&metric, &usage, current);
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got.replicas, want, "{name}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{name}: {got}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn the_largest_metric_wins_and_an_unread_metric_blocks_a_scale_down() {
    let cpu_metric = Metric { resource: Resource::Cpu, target: Target::Utilization(50) };
    let memory_metric = Metric { resource: Resource::Memory, target: Target::Utilization(50) };
    let mut usage = cpu(4, 40, 0, 0);
    usage.memory_usage_bytes = 400;
    usage.memory_requests_bytes = 400;
    let (replicas, name, statuses) =
        replicas::replicas_for_metrics(&[cpu_metric, memory_metric], &usage, 4).unwrap();
    assert_eq!((replicas, statuses.len()), (8, 2));
    assert_eq!(name, "memory resource utilization (percentage of request)");
    let status = statuses[0].resource.as_ref().unwrap();
    assert_eq!((status.name.as_str(), status.current.average_utilization), ("cpu", Some(10)));
    // Memory requests missing: cpu alone would scale down; refused.
    usage.memory_requests_bytes = 0;
    let err = replicas::replicas_for_metrics(&[cpu_metric, memory_metric], &usage, 4).unwrap_err();
    assert!(err.iter().any(|e| e.contains("not scaling down")), "{err:?}");
}

#[test]
fn metrics_from_the_spec() {
    let spec =
        |type_: &str, name: &str, target: &str, utilization: Option<i32>, value: Option<&str>| MetricSpec {
            type_: type_.into(),
            resource: Some(ResourceMetricSource {
                name: name.into(),
                target: MetricTarget {
                    type_: target.into(),
                    average_utilization: utilization,
                    average_value: value.map(String::from),
                    value: None,
                },
            }),
            ..Default::default()
        };
    type Case = (&'static str, Vec<MetricSpec>, Result<Vec<Metric>, &'static str>);
    let cases: Vec<Case> = vec![
        ("none: 80% cpu", vec![], Ok(vec![replicas::DEFAULT_METRIC])),
        (
            "cpu utilisation and memory value",
            vec![
                spec("Resource", "cpu", "Utilization", Some(60), None),
                spec("Resource", "memory", "AverageValue", None, Some("64Mi")),
            ],
            Ok(vec![
                Metric { resource: Resource::Cpu, target: Target::Utilization(60) },
                Metric { resource: Resource::Memory, target: Target::AverageValue(64 << 20) },
            ]),
        ),
        (
            "cpu value in millicores",
            vec![spec("Resource", "cpu", "AverageValue", None, Some("250m"))],
            Ok(vec![Metric { resource: Resource::Cpu, target: Target::AverageValue(250) }]),
        ),
        (
            "pods metrics refused",
            vec![spec("Pods", "cpu", "Utilization", Some(60), None)],
            Err("not supported"),
        ),
        ("other resources refused", vec![spec("Resource", "gpu", "Utilization", Some(60), None)], Err("gpu")),
        (
            "a target without its value",
            vec![spec("Resource", "cpu", "Utilization", None, None)],
            Err("needs averageUtilization"),
        ),
    ];
    for (name, specs, want) in cases {
        match (replicas::metrics(&specs), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{name}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{name}: {got}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

fn rules(window: i64, select: Select, policies: &[(PolicyKind, i32, i64)]) -> Rules {
    Rules {
        window_seconds: window,
        select,
        policies: policies
            .iter()
            .map(|&(kind, value, period_seconds)| Policy { kind, value, period_seconds })
            .collect(),
    }
}

#[test]
fn defaults_are_hpa_v2s() {
    let up = behavior::scale_up(None);
    assert_eq!(up, rules(0, Select::Max, &[(PolicyKind::Pods, 4, 15), (PolicyKind::Percent, 100, 15)]));
    let down = behavior::scale_down(None);
    assert_eq!(down, rules(300, Select::Max, &[(PolicyKind::Percent, 100, 15)]));
    let given = HPABehavior {
        scale_up: None,
        scale_down: Some(HPAScalingRules {
            stabilization_window_seconds: Some(5),
            select_policy: Some("Disabled".into()),
            policies: vec![HPAScalingPolicy { type_: "Pods".into(), value: 1, period_seconds: 60 }],
        }),
    };
    assert_eq!(behavior::scale_down(Some(&given)), rules(5, Select::Disabled, &[(PolicyKind::Pods, 1, 60)]));
}

#[test]
fn stabilisation_windows() {
    let up = |window| rules(window, Select::Max, &[]);
    let down = |window| rules(window, Select::Max, &[]);
    let at = |replicas, ago| Timed { replicas, at: NOW - ago };
    // (name, recent, desired, current, up window, down window, want, reason)
    type Case = (&'static str, Vec<Timed>, i32, i32, i64, i64, i32, Option<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "a higher recent recommendation holds a scale down",
            vec![at(5, 100), at(3, 10)],
            2,
            4,
            0,
            300,
            4,
            Some("ScaleDownStabilized"),
        ),
        (
            "the highest recent one below current: down to it",
            vec![at(3, 100)],
            2,
            4,
            0,
            300,
            3,
            Some("ScaleDownStabilized"),
        ),
        ("recommendations out of the window are forgotten", vec![at(5, 400)], 2, 4, 0, 300, 2, None),
        (
            "an up window holds a scale up at the lowest recent",
            vec![at(3, 30), at(6, 20)],
            8,
            3,
            60,
            300,
            3,
            Some("ScaleUpStabilized"),
        ),
        ("no up window: up at once", vec![at(3, 30)], 8, 3, 0, 300, 8, None),
        ("nothing recent", vec![], 2, 4, 0, 300, 2, None),
    ];
    for (name, recent, desired, current, up_window, down_window, want, reason) in cases {
        let (got, why) =
            behavior::stabilize(&recent, desired, current, &up(up_window), &down(down_window), NOW);
        assert_eq!((got, why.map(|w| w.0)), (want, reason), "{name}");
    }
    // (name, recent, desired, up window, down window, limit, want kept)
    type Kept = (&'static str, Vec<Timed>, i32, i64, i64, usize, Vec<Timed>);
    let cases: Vec<Kept> = vec![
        ("out of the windows: gone", vec![at(5, 400)], 3, 0, 300, 10, vec![at(3, 0)]),
        (
            "a higher one in the down window stays",
            vec![at(5, 100)],
            3,
            0,
            300,
            10,
            vec![at(5, 100), at(3, 0)],
        ),
        ("a newer one as high replaces it", vec![at(3, 100), at(5, 50)], 5, 0, 300, 10, vec![at(5, 0)]),
        ("a steady load keeps one", vec![at(4, 45), at(4, 30), at(4, 15)], 4, 0, 3600, 10, vec![at(4, 0)]),
        ("a lower one in the up window stays", vec![at(2, 30)], 6, 60, 0, 10, vec![at(2, 30), at(6, 0)]),
        (
            "both windows: the extremes stay",
            vec![at(2, 40), at(8, 30), at(5, 20)],
            5,
            60,
            300,
            10,
            vec![at(2, 40), at(8, 30), at(5, 0)],
        ),
        ("bounded: the newest", vec![at(9, 20), at(8, 10)], 7, 0, 300, 2, vec![at(8, 10), at(7, 0)]),
    ];
    for (name, recent, desired, up_window, down_window, limit, want) in cases {
        let kept = behavior::remember(&recent, desired, &up(up_window), &down(down_window), NOW, limit);
        assert_eq!(kept, want, "{name}");
    }
}

#[test]
fn scaling_policies_and_limits() {
    let up = behavior::scale_up(None);
    let down = behavior::scale_down(None);
    let half_down = rules(0, Select::Max, &[(PolicyKind::Percent, 50, 15)]);
    let disabled = rules(0, Select::Disabled, &[]);
    let min_up = rules(0, Select::Min, &[(PolicyKind::Pods, 4, 15), (PolicyKind::Percent, 100, 15)]);
    let two_pods_down_min =
        rules(0, Select::Min, &[(PolicyKind::Pods, 2, 15), (PolicyKind::Percent, 50, 15)]);
    let event = |change, ago| Timed { replicas: change, at: NOW - ago };
    // (name, desired, current, min, max, events, up, down, want, reason)
    type Case<'a> = (&'a str, i32, i32, i32, i32, Vec<Timed>, &'a Rules, &'a Rules, i32, &'a str);
    let cases: Vec<Case> = vec![
        ("up: the larger of +4 and +100%", 20, 2, 1, 50, vec![], &up, &down, 6, "ScaleUpLimit"),
        (
            "up: the period's earlier scale counts",
            20,
            6,
            1,
            50,
            vec![event(4, 5)],
            &up,
            &down,
            6,
            "ScaleUpLimit",
        ),
        ("up: an old scale does not count", 20, 6, 1, 50, vec![event(4, 30)], &up, &down, 12, "ScaleUpLimit"),
        ("up: the maximum", 5, 2, 1, 4, vec![], &up, &down, 4, "TooManyReplicas"),
        ("up: within range", 5, 3, 1, 10, vec![], &up, &down, 5, "DesiredWithinRange"),
        ("up: select Min", 20, 2, 1, 50, vec![], &min_up, &down, 4, "ScaleUpLimit"),
        ("down: 50% per period", 1, 10, 1, 50, vec![], &up, &half_down, 5, "ScaleDownLimit"),
        (
            "down: 50% from the period's start",
            1,
            5,
            1,
            50,
            vec![event(-5, 3)],
            &up,
            &half_down,
            5,
            "ScaleDownLimit",
        ),
        ("down: the minimum", 1, 3, 2, 50, vec![], &up, &down, 2, "TooFewReplicas"),
        ("down: disabled", 1, 5, 1, 50, vec![], &up, &disabled, 5, "ScaleDownLimit"),
        (
            "down: select Min takes the smaller step",
            1,
            10,
            1,
            50,
            vec![],
            &up,
            &two_pods_down_min,
            8,
            "ScaleDownLimit",
        ),
        ("same: nothing to limit", 4, 4, 1, 50, vec![], &up, &down, 4, "DesiredWithinRange"),
    ];
    for (name, desired, current, min, max, events, up, down, want, reason) in cases {
        let (got, why, _) = behavior::limit_rate(desired, current, min, max, &events, up, down, NOW);
        assert_eq!((got, why), (want, reason), "{name}");
    }
    let kept = behavior::record_scale(&[event(2, 100), event(3, 5)], 5, 3, &up, &down, NOW, 10);
    assert_eq!(kept, vec![event(3, 5), event(-2, 0)], "kept within the longest period");
}

fn spec(min: i32, max: i32, down_window: i32) -> FederatedHPASpec {
    FederatedHPASpec {
        scale_target_ref: CrossVersionObjectReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
        },
        min_replicas: Some(min),
        max_replicas: max,
        metrics: vec![MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(50),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }],
        behavior: Some(HPABehavior {
            scale_up: None,
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(down_window),
                ..Default::default()
            }),
        }),
    }
}

#[test]
fn one_sync() {
    struct Case {
        name: &'static str,
        spec: FederatedHPASpec,
        current: i32,
        clusters: Vec<(&'static str, Option<WorkloadUsage>)>,
        recommendations: Vec<TimedReplicas>,
        want_desired: i32,
        want_active: (&'static str, &'static str),
        want_limited: Option<(&'static str, &'static str)>,
        want_able: &'static str,
    }
    let stale = WorkloadUsage { metrics_time: Some(time(NOW - 600)), ..cpu(2, 20, 0, 0) };
    let unreachable = WorkloadUsage { message: "metrics.k8s.io is not served".into(), ..Default::default() };
    let cases = [
        Case {
            name: "load in one member scales the fleet up",
            spec: spec(1, 10, 300),
            current: 4,
            clusters: vec![("a", Some(cpu(2, 300, 0, 0))), ("b", Some(cpu(2, 20, 0, 0)))],
            recommendations: vec![],
            // 320m of 400m requested: 80% against 50% -> ceil(1.6 * 4) = 7.
            want_desired: 7,
            want_active: ("True", "ValidMetricFound"),
            want_limited: Some(("False", "DesiredWithinRange")),
            want_able: "ReadyForNewScale",
        },
        Case {
            name: "idle after load: held by the down window",
            spec: spec(1, 10, 300),
            current: 7,
            clusters: vec![("a", Some(cpu(4, 40, 0, 0))), ("b", Some(cpu(3, 30, 0, 0)))],
            recommendations: vec![TimedReplicas { replicas: 7, time: time(NOW - 30) }],
            want_desired: 7,
            want_active: ("True", "ValidMetricFound"),
            want_limited: Some(("False", "DesiredWithinRange")),
            want_able: "ScaleDownStabilized",
        },
        Case {
            name: "idle past the window: down to the minimum",
            spec: spec(3, 10, 20),
            current: 7,
            // 10% against 50%: ceil(0.2 * 7) = 2, below the minimum.
            clusters: vec![("a", Some(cpu(4, 40, 0, 0))), ("b", Some(cpu(3, 30, 0, 0)))],
            recommendations: vec![TimedReplicas { replicas: 7, time: time(NOW - 30) }],
            want_desired: 3,
            want_active: ("True", "ValidMetricFound"),
            want_limited: Some(("True", "TooFewReplicas")),
            want_able: "ReadyForNewScale",
        },
        Case {
            name: "a stale member blocks a scale down",
            spec: spec(1, 10, 0),
            current: 4,
            clusters: vec![("a", Some(cpu(2, 20, 0, 0))), ("b", Some(stale.clone()))],
            recommendations: vec![],
            want_desired: 4,
            want_active: ("False", "FailedGetResourceMetric"),
            want_limited: None,
            want_able: "SucceededGetScale",
        },
        Case {
            name: "a member without a report does not block a scale up",
            spec: spec(1, 10, 0),
            current: 4,
            // a's two pods at 150% against 50%: ceil(3 * 2) = 6.
            clusters: vec![("a", Some(cpu(2, 300, 0, 0))), ("b", None)],
            recommendations: vec![],
            want_desired: 6,
            want_active: ("True", "ValidMetricFound"),
            want_limited: Some(("False", "DesiredWithinRange")),
            want_able: "ReadyForNewScale",
        },
        Case {
            name: "no member reads metrics",
            spec: spec(1, 10, 0),
            current: 4,
            clusters: vec![("a", Some(unreachable.clone())), ("b", None)],
            recommendations: vec![],
            want_desired: 4,
            want_active: ("False", "FailedGetResourceMetric"),
            want_limited: None,
            want_able: "SucceededGetScale",
        },
        Case {
            name: "zero replicas: scaling disabled",
            spec: spec(1, 10, 0),
            current: 0,
            clusters: vec![("a", Some(cpu(2, 300, 0, 0)))],
            recommendations: vec![],
            want_desired: 0,
            want_active: ("False", "ScalingDisabled"),
            want_limited: None,
            want_able: "SucceededGetScale",
        },
        Case {
            name: "above the maximum: down to it whatever the load",
            spec: spec(1, 3, 300),
            current: 5,
            clusters: vec![("a", Some(cpu(5, 500, 0, 0)))],
            recommendations: vec![],
            want_desired: 3,
            want_active: ("True", "ReplicasOutOfRange"),
            want_limited: Some(("True", "TooManyReplicas")),
            want_able: "SucceededGetScale",
        },
        Case {
            name: "below the minimum: up to it",
            spec: spec(3, 10, 300),
            current: 1,
            clusters: vec![],
            recommendations: vec![],
            want_desired: 3,
            want_active: ("True", "ReplicasOutOfRange"),
            want_limited: Some(("True", "TooFewReplicas")),
            want_able: "SucceededGetScale",
        },
    ];
    for c in cases {
        let input = Input {
            spec: &c.spec,
            current: c.current,
            clusters: c.clusters.iter().map(|(n, u)| (n.to_string(), u.clone())).collect(),
            recommendations: &c.recommendations,
            scale_events: &[],
            now: time(NOW),
        };
        let d = decide(&input);
        assert_eq!(d.desired, c.want_desired, "{}", c.name);
        assert_eq!((d.scaling_active.status, d.scaling_active.reason.as_str()), c.want_active, "{}", c.name);
        assert_eq!(
            d.scaling_limited.as_ref().map(|w| (w.status, w.reason.as_str())),
            c.want_limited,
            "{}",
            c.name
        );
        assert_eq!(d.able_to_scale.reason, c.want_able, "{}", c.name);
        assert!(!d.scaling_active.message.is_empty(), "{}", c.name);
        if d.desired != c.current {
            assert!(!d.rescale_reason.is_empty(), "{}", c.name);
            let last = d.scale_events_after_scale.last().unwrap();
            assert_eq!(last.replicas, d.desired - c.current, "{}", c.name);
        } else {
            assert_eq!(d.scale_events_after_scale, Vec::<TimedReplicas>::new(), "{}", c.name);
        }
        if c.want_active.1 == "FailedGetResourceMetric" {
            assert!(
                d.events.iter().any(|e| e.warning && e.reason == "FailedGetResourceMetric"),
                "{}",
                c.name
            );
        }
    }
}
