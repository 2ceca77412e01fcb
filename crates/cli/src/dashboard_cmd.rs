//! `flotilla dashboard`: serves the web dashboard (`flotilla-dashboard`).

use std::net::SocketAddr;

use clap::Args;
use flotilla_dashboard::{Dashboard, Mode};

use crate::hub_kubeconfig::HubKubeconfig;

/// The dashboard's default address: this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Address to serve on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Run beside the hub: every request acts as the logged-in user (their
    /// bearer token, kept in an HttpOnly cookie) and reads are gated by the
    /// user's own access reviews. The kubeconfig's credentials are used only
    /// for the shared watches (give it a read-only identity). Put TLS in
    /// front of it: the login carries a token.
    #[arg(long)]
    pub hub_mode: bool,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let config = args.hub.load()?.config().await?;
    let mode = if args.hub_mode { Mode::Hub } else { Mode::Local };
    let dashboard = Dashboard::bind(config, mode, args.listen).await?;
    let addr = dashboard.local_addr()?;
    println!(
        "Flotilla dashboard on http://{addr}/ ({} mode); Ctrl-C stops it",
        if args.hub_mode { "hub" } else { "local" }
    );
    dashboard
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
