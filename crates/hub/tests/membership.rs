#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fleet membership against real API servers: registration, acceptance,
//! isolation of agent credentials, heartbeats, health and leaving.

use flotilla_testkit as support;

use flotilla_localkube::wait_for;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_agent::{AgentConfig, Error as AgentError};
use flotilla_api::cluster::ManagedCluster;
use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_hub::HubConfig;
use flotilla_localkube::{Cluster, ClusterConfig};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::agent_config;
use support::clusters::join_push;

/// A real bootstrap token on the hub and a kubeconfig that uses it.
async fn bootstrap_kubeconfig(hub: &Cluster, dir: &Path, id: &str, extra_group: bool) -> PathBuf {
    let mut data = json!({
        "token-id": id, "token-secret": "0123456789abcdef",
        "usage-bootstrap-authentication": "true"
    });
    if extra_group {
        data["auth-extra-groups"] = json!(flotilla_fleet_core::membership::BOOTSTRAP_GROUP);
    }
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token", "stringData": data
    }))
    .unwrap();
    Api::<Secret>::namespaced(hub.client(), "kube-system")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    token_kubeconfig(hub.server(), hub, dir, &format!("{id}.0123456789abcdef"))
}

fn token_kubeconfig(server: &str, hub: &Cluster, dir: &Path, token: &str) -> PathBuf {
    let path = dir.join(format!("bootstrap-{}.kubeconfig", &token[..6]));
    std::fs::write(
        &path,
        kubeconfig::render(&KubeconfigSpec {
            name: "hub".into(),
            server: server.into(),
            ca_pem: hub.ca().pem.cert_pem.clone(),
            credential: Credential::Token(token.into()),
        }),
    )
    .unwrap();
    path
}

fn spawn_agent(config: AgentConfig) -> tokio::task::JoinHandle<Result<(), AgentError>> {
    tokio::spawn(flotilla_agent::run(config, std::future::pending()))
}

fn spawn_hub(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let config = HubConfig { auto_accept: false, grace: Duration::from_secs(2), ..Default::default() };
        flotilla_hub::run(client, config).await.unwrap();
    })
}

async fn available(api: &Api<ManagedCluster>, name: &str) -> Option<String> {
    let mc = api.get_opt(name).await.ok()??;
    mc.condition("Available").map(|c| c.status.clone())
}

async fn client_from(path: &Path) -> Client {
    flotilla_agent::client_from_kubeconfig(path).await.unwrap().0
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(e)) if e.code == 403)
}

#[tokio::test]
async fn clusters_join_only_when_accepted_and_each_agent_sees_only_its_own_corner() {
    let (hub, a, b) = tokio::join!(
        Cluster::start(ClusterConfig::hub("hub")),
        Cluster::start(ClusterConfig::new("a").with_nodes(1)),
        Cluster::start(ClusterConfig::apiserver_only("b")),
    );
    let (hub, a, b) = (hub.unwrap(), a.unwrap(), b.unwrap());
    let tmp = tempfile::tempdir().unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap(); // idempotent
    let _controllers = spawn_hub(hub.client());
    let bootstrap = bootstrap_kubeconfig(&hub, tmp.path(), "abcdef", true).await;
    let clusters: Api<ManagedCluster> = Api::all(hub.client());

    // Not accepted yet: registered, but its certificate request waits.
    let agent_a = spawn_agent(agent_config("a", &tmp.path().join("a"), &a, Some(bootstrap.clone())));
    wait_for("cluster a to register", Duration::from_secs(20), || async {
        clusters.get_opt("a").await.unwrap().is_some()
    })
    .await;
    let csrs: Api<CertificateSigningRequest> = Api::all(hub.client());
    wait_for("a's Joined=False NotAccepted", Duration::from_secs(10), || async {
        let mc = clusters.get("a").await.unwrap();
        mc.condition("Joined").is_some_and(|c| c.reason == "NotAccepted")
    })
    .await;
    let pending = csrs.list(&ListParams::default()).await.unwrap();
    let a_csr =
        pending.items.iter().find(|c| c.metadata.name.as_deref().unwrap().starts_with("flotilla-cluster-a-"));
    let a_csr = a_csr.expect("a's CSR exists");
    assert!(
        a_csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_none(),
        "approved before acceptance"
    );

    clusters
        .patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"hubAcceptsClient": true}})))
        .await
        .unwrap();
    wait_for("a Available", Duration::from_secs(30), || async {
        available(&clusters, "a").await.as_deref() == Some("True")
    })
    .await;
    // Inventory from the member.
    wait_for("a's inventory", Duration::from_secs(15), || async {
        let status = clusters.get("a").await.unwrap().status.unwrap_or_default();
        status.node_summary.as_ref().is_some_and(|n| n.display == "1/1")
            && status.kubernetes_version.as_deref() == Some(flotilla_localkube::DEFAULT_K8S_VERSION)
            && status
                .resource_summary
                .as_ref()
                .is_some_and(|r| r.allocatable.get("cpu").map(|q| q.0.as_str()) == Some("4"))
            && status
                .api_enablements
                .iter()
                .any(|e| e.group_version == "apps/v1" && e.resources.iter().any(|r| r == "deployments"))
    })
    .await;

    let agent_b = spawn_agent(agent_config("b", &tmp.path().join("b"), &b, Some(bootstrap.clone())));
    wait_for("b to register", Duration::from_secs(20), || async {
        clusters.get_opt("b").await.unwrap().is_some()
    })
    .await;
    clusters
        .patch("b", &PatchParams::default(), &Patch::Merge(json!({"spec": {"hubAcceptsClient": true}})))
        .await
        .unwrap();
    wait_for("b Available", Duration::from_secs(30), || async {
        available(&clusters, "b").await.as_deref() == Some("True")
    })
    .await;

    // a's credential: its own corner only.
    let as_a = client_from(&tmp.path().join("a/hub.kubeconfig")).await;
    let own_leases: Api<Lease> = Api::namespaced(as_a.clone(), "flotilla-cluster-a");
    assert!(own_leases.list(&ListParams::default()).await.is_ok());
    assert!(Api::<ManagedCluster>::all(as_a.clone()).get("a").await.is_ok());
    let b_leases: Api<Lease> = Api::namespaced(as_a.clone(), "flotilla-cluster-b");
    assert!(forbidden(b_leases.list(&ListParams::default()).await));
    assert!(forbidden(b_leases.get("cluster-heartbeat").await));
    let as_a_clusters: Api<ManagedCluster> = Api::all(as_a.clone());
    assert!(forbidden(as_a_clusters.get("b").await));
    assert!(forbidden(as_a_clusters.list(&ListParams::default()).await));
    let status_patch = json!({"status": {"conditions": [{"type": "MemberHealthy", "status": "False",
        "reason": "X", "message": "x", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}});
    assert!(forbidden(
        as_a_clusters.patch_status("b", &PatchParams::default(), &Patch::Merge(&status_patch)).await
    ));
    // Nor may it accept itself or change its own spec.
    assert!(forbidden(
        as_a_clusters
            .patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": []}})))
            .await
    ));
    assert!(forbidden(Api::<Namespace>::all(as_a.clone()).list(&ListParams::default()).await));
    assert!(forbidden(
        Api::<Secret>::namespaced(as_a.clone(), "kube-system").list(&ListParams::default()).await
    ));
    assert!(forbidden(
        Api::<Secret>::namespaced(as_a.clone(), "flotilla-cluster-b").list(&ListParams::default()).await
    ));

    // Another identity (another key) cannot take a's name.
    let impostor = flotilla_agent::register(&agent_config(
        "a",
        &tmp.path().join("impostor"),
        &b,
        Some(bootstrap.clone()),
    ))
    .await
    .err()
    .expect("impostor refused");
    assert!(impostor.to_string().contains("already held by another agent"), "{impostor}");

    // Bad input, each with a message that says what to do.
    let wrong_token = token_kubeconfig(hub.server(), &hub, tmp.path(), "abcdef.wrongwrongwrongw");
    let err = flotilla_agent::register(&agent_config("c", &tmp.path().join("c1"), &b, Some(wrong_token)))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("rejected the bootstrap token") && err.contains("flotilla token create"), "{err}");
    let node_token = bootstrap_kubeconfig(&hub, tmp.path(), "nodeok", false).await;
    let err = flotilla_agent::register(&agent_config("c", &tmp.path().join("c2"), &b, Some(node_token)))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("403 Forbidden"), "{err}");
    let nowhere = token_kubeconfig("https://127.0.0.1:1", &hub, tmp.path(), "zzzzzz.0123456789abcdef");
    let err = flotilla_agent::register(&agent_config("c", &tmp.path().join("c3"), &b, Some(nowhere)))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot reach the hub at https://127.0.0.1:1"), "{err}");
    let mut bad_member = agent_config("c", &tmp.path().join("c4"), &b, Some(bootstrap.clone()));
    let broken = tmp.path().join("broken-member.kubeconfig");
    std::fs::write(
        &broken,
        std::fs::read_to_string(b.kubeconfig_path()).unwrap().replace(b.server(), "https://127.0.0.1:1"),
    )
    .unwrap();
    bad_member.member_kubeconfig = broken;
    let err = flotilla_agent::run(bad_member, std::future::pending()).await.err().unwrap().to_string();
    assert!(err.contains("cannot use the member cluster at https://127.0.0.1:1"), "{err}");

    // Leaving: the agent stops and forgets its credentials; access is revoked.
    clusters.delete("b", &Default::default()).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), agent_b).await.unwrap().unwrap();
    assert!(matches!(outcome, Err(AgentError::Removed(_))), "{outcome:?}");
    assert!(!tmp.path().join("b/hub.kubeconfig").exists());
    assert!(!tmp.path().join("b/agent.key").exists());
    wait_for("b's namespace to go", Duration::from_secs(30), || async {
        Api::<Namespace>::all(hub.client())
            .get_opt("flotilla-cluster-b")
            .await
            .unwrap()
            .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())
    })
    .await;
    agent_a.abort();
}

#[tokio::test]
async fn lost_agents_and_sick_members_are_noticed_and_recover_without_reregistering() {
    let (hub, member) = tokio::join!(
        Cluster::start(ClusterConfig::hub("hub")),
        Cluster::start(ClusterConfig::apiserver_only("m"))
    );
    let (hub, mut member) = (hub.unwrap(), member.unwrap());
    let tmp = tempfile::tempdir().unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    let controllers = spawn_hub(hub.client());
    let bootstrap = bootstrap_kubeconfig(&hub, tmp.path(), "tokenm", true).await;
    let clusters: Api<ManagedCluster> = Api::all(hub.client());
    let state = tmp.path().join("m");
    let agent = spawn_agent(agent_config("m", &state, &member, Some(bootstrap)));
    wait_for("m to register", Duration::from_secs(20), || async {
        clusters.get_opt("m").await.unwrap().is_some()
    })
    .await;
    clusters
        .patch("m", &PatchParams::default(), &Patch::Merge(json!({"spec": {"hubAcceptsClient": true}})))
        .await
        .unwrap();
    wait_for("m Available", Duration::from_secs(30), || async {
        available(&clusters, "m").await.as_deref() == Some("True")
    })
    .await;

    // A hub controller restart changes nothing.
    let before =
        clusters.get("m").await.unwrap().condition("Available").unwrap().last_transition_time.clone();
    controllers.abort();
    let controllers = spawn_hub(hub.client());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = clusters.get("m").await.unwrap();
    assert_eq!(after.condition("Available").unwrap().status, "True");
    assert_eq!(after.condition("Available").unwrap().last_transition_time, before, "Available flapped");

    // The agent dies: Unknown and tainted unreachable (lease 10s + grace 2s).
    agent.abort();
    wait_for("m Unknown", Duration::from_secs(30), || async {
        available(&clusters, "m").await.as_deref() == Some("Unknown")
    })
    .await;
    let mc = clusters.get("m").await.unwrap();
    assert!(
        mc.spec.taints.iter().any(|t| t.key == "cluster.flotilla.io/unreachable"),
        "{:?}",
        mc.spec.taints
    );
    assert!(mc.condition("Available").unwrap().message.contains("no heartbeat"));

    // It comes back with its stored certificate (no bootstrap token now).
    let agent = spawn_agent(agent_config("m", &state, &member, None));
    wait_for("m Available again", Duration::from_secs(30), || async {
        available(&clusters, "m").await.as_deref() == Some("True")
    })
    .await;
    let mc = clusters.get("m").await.unwrap();
    assert!(mc.spec.taints.is_empty(), "{:?}", mc.spec.taints);

    // The member's API goes down while its agent runs: False, with the reason.
    member.stop("kube-apiserver").unwrap();
    wait_for("m False", Duration::from_secs(30), || async {
        available(&clusters, "m").await.as_deref() == Some("False")
    })
    .await;
    let mc = clusters.get("m").await.unwrap();
    let message = mc.condition("Available").unwrap().message.clone();
    assert!(message.contains("/readyz"), "{message}");
    // Tainted only once the grace (2 s here) is over: a shorter blip taints nothing.
    wait_for("m tainted not-ready after the grace", Duration::from_secs(10), || async {
        let mc = clusters.get("m").await.unwrap();
        mc.spec.taints.iter().any(|t| t.key == "cluster.flotilla.io/not-ready")
    })
    .await;
    let mc = clusters.get("m").await.unwrap();
    let unhealthy_since = mc.condition("Available").unwrap().last_transition_time.0;
    let tainted_at = mc.spec.taints[0].time_added.as_ref().unwrap().0;
    assert!(
        tainted_at.duration_since(unhealthy_since) >= k8s_openapi::jiff::SignedDuration::from_secs(2),
        "tainted at {tainted_at}, unhealthy since {unhealthy_since}: before the grace ran out"
    );
    member.restart("kube-apiserver").await.unwrap();
    wait_for("m True after its API returns", Duration::from_secs(30), || async {
        available(&clusters, "m").await.as_deref() == Some("True")
    })
    .await;
    agent.abort();
    controllers.abort();
}

#[tokio::test]
async fn push_clusters_are_reported_by_the_hub_itself() {
    let (hub, member) = tokio::join!(
        Cluster::start(ClusterConfig::hub("hub")),
        Cluster::start(ClusterConfig::new("p").with_nodes(1))
    );
    let (hub, mut member) = (hub.unwrap(), member.unwrap());
    flotilla_hub::install(&hub.client()).await.unwrap();
    let controllers = spawn_hub(hub.client());
    // What `flotilla join p --mode push` writes.
    join_push(&hub.client(), "p", member.kubeconfig_path()).await;
    let clusters: Api<ManagedCluster> = Api::all(hub.client());
    wait_for("p Available", Duration::from_secs(30), || async {
        available(&clusters, "p").await.as_deref() == Some("True")
    })
    .await;
    wait_for("p's inventory", Duration::from_secs(15), || async {
        let status = clusters.get("p").await.unwrap().status.unwrap_or_default();
        status.node_summary.as_ref().is_some_and(|n| n.display == "1/1")
    })
    .await;
    assert_eq!(clusters.get("p").await.unwrap().condition("Joined").unwrap().status, "True");

    // The hub cannot reach the member: Unknown and unreachable.
    member.stop("kube-apiserver").unwrap();
    wait_for("p Unknown", Duration::from_secs(40), || async {
        available(&clusters, "p").await.as_deref() == Some("Unknown")
    })
    .await;
    let mc = clusters.get("p").await.unwrap();
    assert!(
        mc.spec.taints.iter().any(|t| t.key == "cluster.flotilla.io/unreachable"),
        "{:?}",
        mc.spec.taints
    );
    member.restart("kube-apiserver").await.unwrap();
    wait_for("p Available again", Duration::from_secs(30), || async {
        available(&clusters, "p").await.as_deref() == Some("True")
    })
    .await;
    controllers.abort();
}

#[tokio::test]
async fn agents_renew_their_certificate_before_it_expires() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()))
        .try_init();
    let mut hub_config = ClusterConfig::hub("hub");
    // The signer backdates certificates by 5 minutes but, for a duration
    // under 8 hours, counts it from now: a minute of validity puts renewal
    // (at 70% of what the agent was given) within the test.
    hub_config.csr_signing_duration = Some(Duration::from_secs(60));
    let (hub, member) =
        tokio::join!(Cluster::start(hub_config), Cluster::start(ClusterConfig::apiserver_only("r")));
    let (hub, member) = (hub.unwrap(), member.unwrap());
    let tmp = tempfile::tempdir().unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    let controllers = tokio::spawn({
        let client = hub.client();
        async move {
            let config = HubConfig { auto_accept: true, grace: Duration::from_secs(2), ..Default::default() };
            flotilla_hub::run(client, config).await.unwrap();
        }
    });
    let bootstrap = bootstrap_kubeconfig(&hub, tmp.path(), "renewr", true).await;
    let clusters: Api<ManagedCluster> = Api::all(hub.client());
    let state = tmp.path().join("r");
    let mut agent = spawn_agent(agent_config("r", &state, &member, Some(bootstrap)));
    // Registration needs the hub's kube-controller-manager to sign; on a
    // loaded 2-core CI machine its start can take most of 30 s.
    tokio::select! {
        stopped = &mut agent => panic!("the agent stopped before its cluster was Available: {stopped:?}"),
        () = wait_for("r Available", Duration::from_secs(90), || async {
            available(&clusters, "r").await.as_deref() == Some("True")
        }) => {}
    }
    let first = std::fs::read_to_string(state.join("agent.crt")).unwrap();
    wait_for("a renewed certificate", Duration::from_secs(75), || async {
        std::fs::read_to_string(state.join("agent.crt")).is_ok_and(|c| c != first)
    })
    .await;
    // The new credential works and the cluster never left.
    let renewed = client_from(&state.join("hub.kubeconfig")).await;
    assert!(Api::<ManagedCluster>::all(renewed).get("r").await.is_ok());
    assert_eq!(available(&clusters, "r").await.as_deref(), Some("True"));
    assert!(!agent.is_finished());
    agent.abort();
    controllers.abort();
}

/// Runs `flotilla_hub::leader::run_elected` for `identity`, whose terms
/// report on `events`: `(identity, true)` when one starts, `(identity,
/// false)` when it is dropped.
fn replica(
    client: kube::Client,
    identity: &'static str,
    events: tokio::sync::mpsc::UnboundedSender<(&'static str, bool)>,
) -> tokio::task::JoinHandle<()> {
    struct Term(&'static str, tokio::sync::mpsc::UnboundedSender<(&'static str, bool)>);
    impl Drop for Term {
        fn drop(&mut self) {
            let _ = self.1.send((self.0, false));
        }
    }
    tokio::spawn(flotilla_hub::leader::run_elected(client, identity.to_string(), move || {
        let events = events.clone();
        async move {
            let _ = events.send((identity, true));
            let _term = Term(identity, events);
            std::future::pending::<Result<(), flotilla_hub::Error>>().await
        }
    }))
}

#[tokio::test]
async fn only_one_hub_replica_leads_and_a_dead_leader_is_replaced() {
    let hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let a = replica(hub.client(), "replica-a", tx.clone());
    assert_eq!(events.recv().await, Some(("replica-a", true)));
    let b = replica(hub.client(), "replica-b", tx);
    // While a keeps renewing, b stands by.
    let quiet = tokio::time::timeout(Duration::from_secs(8), events.recv()).await;
    assert!(quiet.is_err(), "while a leads: {quiet:?}");
    // a dies (as if its process crashed): b takes over once the lease runs out.
    a.abort();
    assert_eq!(events.recv().await, Some(("replica-a", false)));
    let next = tokio::time::timeout(Duration::from_secs(30), events.recv()).await.expect("b never took over");
    assert_eq!(next, Some(("replica-b", true)));
    let lease: Lease =
        Api::namespaced(hub.client(), flotilla_hub::SYSTEM_NAMESPACE).get("flotilla-hub").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("replica-b"));
    // b shuts down cleanly: it stops its controllers and gives the lease up.
    b.abort();
    assert_eq!(events.recv().await, Some(("replica-b", false)));
    flotilla_hub::leader::release(hub.client(), "replica-b").await;
    let lease: Lease =
        Api::namespaced(hub.client(), flotilla_hub::SYSTEM_NAMESPACE).get("flotilla-hub").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!((spec.holder_identity, spec.lease_duration_seconds), (None, Some(1)));
    // Another replica's release leaves the lease alone.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let c = replica(hub.client(), "replica-c", tx);
    assert_eq!(events.recv().await, Some(("replica-c", true)));
    flotilla_hub::leader::release(hub.client(), "replica-b").await;
    let lease: Lease =
        Api::namespaced(hub.client(), flotilla_hub::SYSTEM_NAMESPACE).get("flotilla-hub").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("replica-c"));
    c.abort();
}

#[tokio::test]
async fn a_leader_whose_api_goes_away_steps_down_and_leads_again() {
    let mut hub = Cluster::start(ClusterConfig::hub("hub")).await.unwrap();
    flotilla_hub::install(&hub.client()).await.unwrap();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let a = replica(hub.client(), "replica-a", tx);
    assert_eq!(events.recv().await, Some(("replica-a", true)));
    // The API is away longer than a leader may go without renewing: the
    // term is dropped (its controllers stop) while the API is still down.
    hub.stop("kube-apiserver").unwrap();
    let stepped_down = tokio::time::timeout(Duration::from_secs(20), events.recv()).await;
    assert_eq!(stepped_down.expect("the leader kept leading without its API"), Some(("replica-a", false)));
    assert!(!a.is_finished(), "run_elected returned");
    // Back: it competes again and leads a new term.
    hub.restart("kube-apiserver").await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(30), events.recv()).await;
    assert_eq!(again.expect("it never led again"), Some(("replica-a", true)));
    a.abort();
}
