//! What the integration tests share (the hub's, the CLI's and the
//! dashboard's): a hub and members with hollow nodes, the hub's
//! controllers and pull agents running in the test process, small helpers
//! to write objects, and (`browser`) the dashboard's Playwright driver.
//! Test code: a failed set-up panics with its cause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use flotilla_agent::AgentConfig;
use flotilla_api::cluster::ManagedCluster;
use flotilla_apps_core::failover::FailoverSettings;
use flotilla_core::kubeconfig::{self, Credential, KubeconfigSpec};
use flotilla_fleet_core::bootstrap_token::{self, BootstrapToken};
use flotilla_hub::HubConfig;
use flotilla_localkube::real_node::{RealNodeConfig, RealNodes};
use flotilla_localkube::{wait_for, Binaries, Cluster, ClusterConfig, Etcd};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

pub mod bindings;
pub mod browser;
pub mod clusters;
pub mod policies;
pub mod rollout;
pub mod workloads;

pub struct Fleet {
    pub hub: Cluster,
    pub members: Vec<Cluster>,
    /// The members' shared etcd, if they share one (dropped after them).
    pub etcd: Option<Etcd>,
    pub tmp: tempfile::TempDir,
    pub agents: BTreeMap<String, tokio::task::JoinHandle<Result<(), flotilla_agent::Error>>>,
    _controllers: tokio::task::JoinHandle<()>,
}

const WIDGET_CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "widgets.example.com"},
  "spec": {"group": "example.com", "scope": "Namespaced",
    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
    "versions": [{"name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object",
        "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}
}"#;

pub async fn install_widget_crd(client: Client) {
    let crd: CustomResourceDefinition = serde_json::from_str(WIDGET_CRD).unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch("widgets.example.com", &PatchParams::apply("test"), &Patch::Apply(&crd))
        .await
        .unwrap();
    let widgets = widget_api(client, "default");
    wait_for("the Widget CRD to be served", Duration::from_secs(20), || async {
        widgets.list(&Default::default()).await.is_ok()
    })
    .await;
}

pub fn widget_api(client: Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    Api::namespaced_with(client, ns, &ApiResource::from_gvk_with_plural(&gvk, "widgets"))
}

/// Creates the bootstrap token `token_id` on the hub and writes a
/// kubeconfig that uses it to `path` (what `flotilla token create` does).
pub async fn write_bootstrap_kubeconfig(hub: &Cluster, token_id: &str, path: &Path) {
    let token = BootstrapToken::new(token_id, "0123456789abcdef").unwrap();
    Api::<Secret>::namespaced(hub.client(), bootstrap_token::NAMESPACE)
        .create(&PostParams::default(), &token.fleet_secret().build())
        .await
        .unwrap();
    let spec = KubeconfigSpec {
        name: "hub".into(),
        server: hub.server().into(),
        ca_pem: hub.ca().pem.cert_pem.clone(),
        credential: Credential::Token(token.token()),
    };
    std::fs::write(path, kubeconfig::render(&spec)).unwrap();
}

pub fn agent_config(
    name: &str,
    state: &Path,
    member: &Cluster,
    bootstrap: Option<std::path::PathBuf>,
) -> AgentConfig {
    let mut config = AgentConfig::new(name, state.to_path_buf(), member.kubeconfig_path().to_path_buf());
    config.bootstrap_kubeconfig = bootstrap;
    config.health_interval = Duration::from_millis(500);
    config
}

impl Fleet {
    /// A hub and `regions.len()` members (one hollow node each), joined and
    /// Available, each labelled with its region. Members whose index is in
    /// `with_widgets` serve the Widget CRD.
    pub async fn start(regions: &[&str], with_widgets: &[usize]) -> Fleet {
        Fleet::start_with(regions, with_widgets, FailoverSettings::default(), false).await
    }

    /// Like `start`, with the hub's failover settings, and optionally the
    /// members storing their data in one shared etcd (as the local fleet's
    /// members do).
    pub async fn start_with(
        regions: &[&str],
        with_widgets: &[usize],
        failover: FailoverSettings,
        shared_etcd: bool,
    ) -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let etcd = match shared_etcd {
            true => Some(
                // In memory, as each member's own etcd is: ten members
                // writing through one fsync-bound etcd time out on a busy
                // machine.
                Etcd::start_in_memory(&Binaries::locate().unwrap(), &tmp.path().join("shared-etcd"))
                    .await
                    .unwrap(),
            ),
            false => None,
        };
        let configs = (0..regions.len())
            .map(|i| {
                let name = format!("m{}", i + 1);
                let mut config = ClusterConfig::new(name.clone()).with_nodes(1);
                if let Some(etcd) = &etcd {
                    config = config.with_etcd(etcd.client_url());
                    config.etcd_prefix = Some(format!("/clusters/{name}"));
                }
                config
            })
            .collect();
        let hub = HubConfig { failover, ..Default::default() };
        Fleet::start_members(tmp, etcd, configs, regions, with_widgets, hub).await
    }

    /// Like `start`, with the hub's controllers configured from `hub`
    /// (auto-accept and a short grace are set here), e.g. `opt_in`.
    pub async fn start_with_hub(regions: &[&str], hub: HubConfig) -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let configs =
            (0..regions.len()).map(|i| ClusterConfig::new(format!("m{}", i + 1)).with_nodes(1)).collect();
        Fleet::start_members(tmp, None, configs, regions, &[], hub).await
    }

    /// A hub and members started from `configs` (named `m1`, `m2`, ... in
    /// order, one per region), e.g. members serving real nodes
    /// (`ClusterConfig::for_real_nodes`), whose nodes the caller starts.
    pub async fn start_with_members(configs: Vec<ClusterConfig>, regions: &[&str]) -> Fleet {
        Fleet::start_with_members_and_hub(configs, regions, HubConfig::default()).await
    }

    /// A hub and members named after `regions`: `m1` on one real node
    /// (`m1-real-1`, from `nodes`, started and Ready), the others with one
    /// hollow node each.
    pub async fn start_with_real_m1(nodes: &mut RealNodes, regions: &[&str]) -> Fleet {
        let mut members = vec![ClusterConfig::new("m1").for_real_nodes(nodes.gateway())];
        members.extend((2..=regions.len()).map(|i| ClusterConfig::new(format!("m{i}")).with_nodes(1)));
        let fleet = Fleet::start_with_members(members, regions).await;
        nodes
            .start(fleet.member("m1"), vec![RealNodeConfig::new("m1-real-1")], Duration::from_secs(120))
            .await
            .unwrap();
        fleet
    }

    /// Like `start_with_members`, with the hub's controllers configured
    /// from `hub` (e.g. a short FederatedHPA sync period).
    pub async fn start_with_members_and_hub(
        configs: Vec<ClusterConfig>,
        regions: &[&str],
        hub: HubConfig,
    ) -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        Fleet::start_members(tmp, None, configs, regions, &[], hub).await
    }

    /// Like `start_with_members_and_hub`, with the hub cluster started
    /// from `hub_cluster` (e.g. with the aggregation layer).
    pub async fn start_with_hub_cluster(
        hub_cluster: ClusterConfig,
        configs: Vec<ClusterConfig>,
        regions: &[&str],
        hub: HubConfig,
    ) -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        Fleet::start_members_on(hub_cluster, tmp, None, configs, regions, &[], hub).await
    }

    async fn start_members(
        tmp: tempfile::TempDir,
        etcd: Option<Etcd>,
        configs: Vec<ClusterConfig>,
        regions: &[&str],
        with_widgets: &[usize],
        hub_config: HubConfig,
    ) -> Fleet {
        let hub = ClusterConfig::hub("hub");
        Fleet::start_members_on(hub, tmp, etcd, configs, regions, with_widgets, hub_config).await
    }

    async fn start_members_on(
        hub_cluster: ClusterConfig,
        tmp: tempfile::TempDir,
        etcd: Option<Etcd>,
        configs: Vec<ClusterConfig>,
        regions: &[&str],
        with_widgets: &[usize],
        hub_config: HubConfig,
    ) -> Fleet {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(flotilla_localkube::TEST_LOG_DIRECTIVES)
            }))
            .with_test_writer()
            .try_init();
        assert_eq!(configs.len(), regions.len(), "one member per region");
        for (i, config) in configs.iter().enumerate() {
            assert_eq!(config.name, format!("m{}", i + 1), "members are named m1, m2, ... in order");
        }
        let hub = Cluster::start(hub_cluster);
        let members = futures::future::join_all(configs.into_iter().map(Cluster::start));
        let (hub, members) = tokio::join!(hub, members);
        let hub = hub.unwrap();
        let members: Vec<Cluster> = members.into_iter().map(|m| m.unwrap()).collect();
        flotilla_hub::install(&hub.client()).await.unwrap();
        install_widget_crd(hub.client()).await;
        for &i in with_widgets {
            // Before the agents start, so their first discovery sees it.
            install_widget_crd(members[i].client()).await;
        }
        let client = hub.client();
        let controllers = tokio::spawn(async move {
            let config = HubConfig { auto_accept: true, grace: Duration::from_secs(2), ..hub_config };
            flotilla_hub::run(client, config).await.unwrap();
        });
        let bootstrap = tmp.path().join("bootstrap.kubeconfig");
        write_bootstrap_kubeconfig(&hub, "appsab", &bootstrap).await;
        let mut fleet = Fleet { hub, members, etcd, tmp, agents: BTreeMap::new(), _controllers: controllers };
        for i in 0..regions.len() {
            fleet.start_agent(i, Some(bootstrap.clone()));
        }
        let managed: Api<ManagedCluster> = Api::all(fleet.hub.client());
        for (i, region) in regions.iter().enumerate() {
            let name = format!("m{}", i + 1);
            // Set-up, not a figure under test (benchmarks measure joins):
            // generous, for a machine running several fleets at once.
            wait_for(
                &format!("{name} Available with its APIs reported"),
                Duration::from_secs(120),
                || async {
                    let Some(mc) = managed.get_opt(&name).await.unwrap() else { return false };
                    mc.condition("Available").is_some_and(|c| c.status == "True")
                        && mc.status.as_ref().is_some_and(|s| !s.api_enablements.is_empty())
                },
            )
            .await;
            let mut labels = json!({"metadata": {"labels": {"topology.kubernetes.io/region": region}}});
            if fleet.etcd.is_some() {
                labels["metadata"]["labels"][flotilla_apps_core::failover::ETCD_DOMAIN_LABEL] =
                    json!("shared");
            }
            managed.patch(&name, &PatchParams::default(), &Patch::Merge(labels)).await.unwrap();
        }
        fleet
    }

    pub fn start_agent(&mut self, i: usize, bootstrap: Option<std::path::PathBuf>) {
        let name = format!("m{}", i + 1);
        let config = agent_config(&name, &self.tmp.path().join(&name), &self.members[i], bootstrap);
        self.agents.insert(name, tokio::spawn(flotilla_agent::run(config, std::future::pending())));
    }

    pub fn member(&self, name: &str) -> &Cluster {
        self.members.iter().find(|m| m.name() == name).unwrap()
    }
}

pub async fn apply(client: &Client, object: serde_json::Value) {
    let api_version = object["apiVersion"].as_str().unwrap().to_string();
    let kind = object["kind"].as_str().unwrap().to_string();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let gvk = GroupVersionKind::gvk(group, version, &kind);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    };
    api.patch(&name, &PatchParams::apply("test").force(), &Patch::Apply(&object)).await.unwrap();
}

pub async fn create_namespace(client: &Client, name: &str) {
    apply(client, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})).await;
}

/// The first Event in `ns` with `reason`, waited for: Events are published
/// after the status they go with is written.
pub async fn event_with_reason(client: &Client, ns: &str, reason: &str) -> k8s_openapi::api::core::v1::Event {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let find = || async {
        let listed = events.list(&Default::default()).await.ok()?;
        listed.items.into_iter().find(|e| e.reason.as_deref() == Some(reason))
    };
    wait_for(&format!("a {reason} Event in {ns}"), Duration::from_secs(60), || async {
        find().await.is_some()
    })
    .await;
    find().await.expect("the Event just seen")
}
