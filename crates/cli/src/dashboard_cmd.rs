//! `flotilla dashboard`: serves the web dashboard (`flotilla-dashboard`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use flotilla_dashboard::{Dashboard, Mode, TlsFiles};

use crate::hub_kubeconfig::HubKubeconfig;

/// The dashboard's default address: this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Address to serve on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Run beside the hub: every request acts as the signed-in user (their
    /// bearer token, kept in an HttpOnly cookie, or the user their client
    /// certificate names, see --client-ca) and each object is shown only if
    /// the user's own access reviews allow it. The kubeconfig's identity
    /// serves the shared watches (read-only) and, for certificate users,
    /// needs `impersonate` on users and groups. Off the loopback, hub mode
    /// needs --tls-cert and --tls-key.
    #[arg(long)]
    pub hub_mode: bool,
    /// PEM certificate (chain) to serve HTTPS with.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that signs users' client certificates (the hub's client CA):
    /// a browser presenting one it signed is signed in as the certificate's
    /// user (common name) and groups (organisations). Needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    #[command(flatten)]
    pub hub: HubKubeconfig,
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let config = args.hub.load()?.config().await?;
    let mode = if args.hub_mode { Mode::Hub } else { Mode::Local };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: args.client_ca.as_deref().map(read).transpose()?,
        }),
        _ => None,
    };
    let dashboard = Dashboard::bind_with(config, mode, args.listen, tls).await?;
    let addr = dashboard.local_addr()?;
    println!(
        "Flotilla dashboard on {}://{addr}/ ({} mode); Ctrl-C stops it",
        if dashboard.is_tls() { "https" } else { "http" },
        if args.hub_mode { "hub" } else { "local" }
    );
    dashboard
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
