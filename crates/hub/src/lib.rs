//! The hub: installs Flotilla's resources on a hub API server and runs its
//! controllers (thin: read, call `flotilla-core`, write with server-side
//! apply).

pub mod apps;
pub mod autoscaling;
pub mod controller;
pub mod cron_hpa;
mod csr;
mod error;
pub mod events;
pub mod install;
pub mod leader;
pub mod machines;
mod metrics;
pub mod migration;
mod names;
pub mod proxy;
pub mod push;
pub mod webhook;

pub use error::Error;
pub use install::install;
pub use names::{FIELD_MANAGER, SYSTEM_NAMESPACE, TAINT_FIELD_MANAGER};

use std::time::Duration;

use kube::Client;

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Accept every cluster that asks to join (no `flotilla cluster accept`).
    pub auto_accept: bool,
    /// How long past its lease duration a heartbeat may be late before the
    /// cluster turns Unknown.
    pub grace: Duration,
    /// Serve the policy admission webhook beside the controllers. (`flotilla
    /// hub run` serves it itself, before leader election, so that standby
    /// replicas answer too.)
    pub webhook: Option<webhook::WebhookConfig>,
    /// Default tolerations, the mass-disruption guard, returns and surge.
    pub failover: flotilla_apps_core::failover::FailoverSettings,
    /// Which applications the fleet may manage (default: every template a
    /// policy selects; `hub run --require-opt-in` only opted-in ones).
    pub opt_in: flotilla_apps_core::migration::OptIn,
    /// How often the FederatedHPA controller syncs (15 s, as HPA's).
    pub autoscaling_sync: Duration,
    /// When replicas unschedulable in a member move (`hub run
    /// --unschedulable-threshold`, default 5 minutes).
    pub deschedule: flotilla_apps_core::deschedule::DescheduleSettings,
    /// How propagation policies of both kinds rank (`hub run
    /// --policy-order`; Karmada's by default).
    pub policy_order: flotilla_apps_core::selection::PolicyOrder,
    /// Serve member clusters through the hub (`proxy`), if set.
    pub proxy: Option<proxy::ProxyConfig>,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            auto_accept: false,
            grace: Duration::from_secs(10),
            webhook: None,
            failover: Default::default(),
            opt_in: Default::default(),
            autoscaling_sync: autoscaling::DEFAULT_SYNC_PERIOD,
            deschedule: Default::default(),
            policy_order: Default::default(),
            proxy: None,
        }
    }
}

/// Runs the controllers (and the webhook, if configured) until the process
/// ends.
pub async fn run(client: Client, config: HubConfig) -> Result<(), Error> {
    match config.proxy.clone() {
        Some(proxy) => tokio::select! {
            served = proxy::serve(client.clone(), proxy) => served,
            ran = run_with_webhook(client, config) => ran,
        },
        None => run_with_webhook(client, config).await,
    }
}

async fn run_with_webhook(client: Client, config: HubConfig) -> Result<(), Error> {
    match config.webhook.clone() {
        Some(webhook) => tokio::select! {
            served = webhook::serve(client.clone(), webhook) => served,
            ran = run_controllers(client, config) => ran,
        },
        None => run_controllers(client, config).await,
    }
}

async fn run_controllers(client: Client, config: HubConfig) -> Result<(), Error> {
    let clusters_changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let (clusters, fleet) =
        controller::run(client.clone(), config.auto_accept, config.grace, clusters_changed.clone());
    let push = push::run(client.clone(), clusters, clusters_changed);
    let machines = machines::run(client.clone(), config.auto_accept);
    let cron_hpa = cron_hpa::run(client.clone());
    let autoscaling = autoscaling::run(client.clone(), config.autoscaling_sync);
    let apps = apps::run(client, config.failover, config.opt_in, config.deschedule, config.policy_order);
    let ((), push, apps, (), (), autoscaling) =
        futures::join!(fleet, push, apps, machines, cron_hpa, autoscaling);
    push.and(apps).and(autoscaling)
}
