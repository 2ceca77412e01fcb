use std::collections::BTreeMap;

use flotilla_api::cluster::{ManagedClusterSpec, ManagedClusterStatus, NodeSummary, SyncMode, TaintEffect};
use flotilla_api::work::{ObjectReference, PolicyReference, TargetCluster};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::*;

fn now() -> Timestamp {
    "2026-12-07T12:00:00Z".parse().unwrap()
}

fn cluster(name: &str) -> ManagedCluster {
    let mut mc = ManagedCluster::new(
        name,
        ManagedClusterSpec {
            sync_mode: SyncMode::Pull,
            hub_accepts_client: true,
            api_endpoint: Some("https://10.0.0.1:6443".into()),
            ..Default::default()
        },
    );
    mc.metadata.creation_timestamp = Some(Time("2026-12-07T11:00:00Z".parse().unwrap()));
    mc
}

fn condition(type_: &str, status: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        message: message.into(),
        reason: "R".into(),
        last_transition_time: Time(now()),
        observed_generation: None,
    }
}

#[test]
fn cluster_rows_with_and_without_wide() {
    let mut full = cluster("m1");
    full.metadata.labels =
        Some(BTreeMap::from([("env".into(), "prod".into()), ("region".into(), "eu".into())]));
    full.spec.taints = vec![
        Taint { key: "maintenance".into(), value: None, effect: TaintEffect::NoSchedule, time_added: None },
        Taint {
            key: "gpu".into(),
            value: Some("none".into()),
            effect: TaintEffect::NoExecute,
            time_added: None,
        },
    ];
    full.status = Some(ManagedClusterStatus {
        conditions: vec![condition("Available", "True", "")],
        kubernetes_version: Some("v1.37.2".into()),
        node_summary: Some(NodeSummary { total: 3, ready: 2, display: "2/3".into() }),
        ..Default::default()
    });
    let bare = cluster("m2");
    type Case<'a> = (&'a str, &'a ManagedCluster, bool, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        ("table", &full, false, vec!["m1", "Pull", "true", "True", "v1.37.2", "2/3", "", "", "60m"]),
        (
            "wide adds taints, endpoint, labels",
            &full,
            true,
            vec![
                "m1",
                "Pull",
                "true",
                "True",
                "v1.37.2",
                "2/3",
                "",
                "",
                "60m",
                "maintenance:NoSchedule,gpu=none:NoExecute",
                "https://10.0.0.1:6443",
                "env=prod,region=eu",
            ],
        ),
        (
            "no status yet: Unknown, and <none> in wide",
            &bare,
            true,
            vec![
                "m2",
                "Pull",
                "true",
                "Unknown",
                "",
                "",
                "",
                "",
                "60m",
                "<none>",
                "https://10.0.0.1:6443",
                "<none>",
            ],
        ),
    ];
    for (name, mc, wide, want) in cases {
        assert_eq!(cluster_row(mc, wide, now()), want, "{name}");
        assert_eq!(cluster_header(wide).len(), want.len(), "{name}: header and row agree");
    }
}

#[test]
fn binding_rows_with_and_without_wide() {
    let spec = BindingSpec {
        resource: ObjectReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
            uid: String::new(),
        },
        policy: Some(PolicyReference {
            kind: "PropagationPolicy".into(),
            namespace: "shop".into(),
            name: "p".into(),
        }),
        replicas: 3,
        clusters: vec![
            TargetCluster { name: "m1".into(), replicas: 2 },
            TargetCluster { name: "m2".into(), replicas: 1 },
        ],
        ..Default::default()
    };
    let long = "x".repeat(MESSAGE_COLUMNS + 20);
    let status = BindingStatus {
        conditions: vec![condition("Scheduled", "True", "ok"), condition("FullyApplied", "False", &long)],
        ..Default::default()
    };
    let cut = "x".repeat(MESSAGE_COLUMNS);
    type Case<'a> = (&'a str, Option<&'a BindingStatus>, bool, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "table cuts the message",
            Some(&status),
            false,
            vec!["shop", "Deployment/web", "p", "m1:2,m2:1", "True", "False", &cut],
        ),
        (
            "wide: API version and the whole message",
            Some(&status),
            true,
            vec!["shop", "Deployment/web", "apps/v1", "p", "m1:2,m2:1", "True", "False", &long],
        ),
        ("no status", None, false, vec!["shop", "Deployment/web", "p", "m1:2,m2:1", "", "", ""]),
    ];
    for (name, status, wide, want) in cases {
        assert_eq!(binding_row("shop", &spec, status, wide), want, "{name}");
        assert_eq!(binding_header(wide).len(), want.len(), "{name}: header and row agree");
    }
}

#[test]
fn ages_as_kubectl_shows_them() {
    let cases = [
        ("2026-12-07T11:59:30Z", "30s"),
        ("2026-12-07T11:00:00Z", "60m"),
        ("2026-12-06T12:00:00Z", "24h"),
        ("2026-11-07T12:00:00Z", "30d"),
    ];
    for (created, want) in cases {
        assert_eq!(age(Some(&Time(created.parse().unwrap())), now()), want, "{created}");
    }
    assert_eq!(age(None, now()), "-");
}

#[test]
fn flags_parse() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: GetCommand,
    }
    let Cli { command: GetCommand::Bindings(b) } =
        Cli::try_parse_from(["x", "bindings", "-n", "shop", "-o", "json", "-l", "a=b", "--context", "c"])
            .unwrap()
    else {
        panic!("not bindings")
    };
    assert_eq!(
        (b.namespace.as_deref(), b.list.output, b.list.selector.as_deref(), b.hub.context.as_deref()),
        (Some("shop"), Some(crate::output::OutputFormat::Json), Some("a=b"), Some("c"))
    );
    assert!(Cli::try_parse_from(["x", "bindings", "-n", "shop", "-A"]).is_err(), "-n and -A conflict");
    let Cli { command: GetCommand::Clusters(c) } =
        Cli::try_parse_from(["x", "clusters", "-o", "wide", "--kubeconfig", "/h"]).unwrap()
    else {
        panic!("not clusters")
    };
    assert!(c.list.wide());
    assert_eq!(c.hub.path.as_deref(), Some(std::path::Path::new("/h")));
}

#[test]
fn every_help_fits_in_100_columns() {
    use clap::CommandFactory;
    #[derive(clap::Parser)]
    #[command(name = "flotilla get")]
    struct Cli {
        #[command(subcommand)]
        command: GetCommand,
    }
    let mut cli = Cli::command();
    cli.build();
    let mut helps = vec![cli.render_help().to_string()];
    for sub in cli.get_subcommands_mut() {
        helps.push(sub.render_help().to_string());
        helps.push(sub.render_long_help().to_string());
    }
    let too_wide: Vec<&str> =
        helps.iter().flat_map(|h| h.lines()).filter(|l| l.chars().count() > 100).collect();
    assert!(too_wide.is_empty(), "{}", too_wide.join("\n"));
    assert!(helps.iter().any(|h| h.contains("$KUBECONFIG")), "the kubeconfig sources are explained");
}
