//! The HTTP server: routes, and starting it on a listener.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::auth::{Auth, Mode};
use crate::error::Error;
use crate::state::AppState;
use crate::tls::{self, TlsFiles};
use crate::watch::Watches;
use crate::{actions, api, assets, live};

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/app.js", get(assets::app_js))
        .route("/assets/style.css", get(assets::style_css))
        .route("/api/whoami", get(api::whoami))
        .route("/api/login", post(api::login))
        .route("/api/logout", post(api::logout))
        .route("/api/fleet", get(api::fleet))
        .route("/api/clusters/{name}", get(api::cluster))
        .route("/api/apps", get(api::apps))
        .route("/api/hosted", get(api::hosted))
        .route("/api/can", get(api::can))
        .route("/api/live", get(live::live))
        .route("/api/actions/cordon", post(actions::cordon))
        .route("/api/actions/etcd-backup", post(actions::etcd_backup))
        .route("/api/actions/rotate-certs", post(actions::rotate_certs))
        .route("/api/actions/pause-rollout", post(actions::pause_rollout))
        .with_state(state)
}

/// A dashboard ready to serve: its watches started, its listener bound.
pub struct Dashboard {
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<rustls::ServerConfig>,
}

impl Dashboard {
    /// `config`: the user's kubeconfig (local mode) or the server's own,
    /// read-only credentials for the shared watches (hub mode).
    pub async fn bind(config: kube::Config, mode: Mode, listen: SocketAddr) -> Result<Dashboard, Error> {
        Dashboard::bind_with(config, mode, listen, None).await
    }

    /// As `bind`, over TLS when `tls` is given (with a client CA: sign-in by
    /// client certificate too). Hub mode off the loopback needs TLS.
    pub async fn bind_with(
        config: kube::Config,
        mode: Mode,
        listen: SocketAddr,
        tls: Option<TlsFiles>,
    ) -> Result<Dashboard, Error> {
        tls::check_listen(mode == Mode::Hub, listen, tls.is_some())?;
        let tls = tls.as_ref().map(tls::server_config).transpose()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Listen { addr: listen.to_string(), source })?;
        let auth = Auth::new(mode, config.clone())?;
        let client = kube::Client::try_from(config).map_err(Error::Kube)?;
        let watches = Watches::start(client);
        let state = Arc::new(AppState { auth, watches, tls: tls.is_some() });
        Ok(Dashboard { listener, state, tls })
    }

    /// Whether it serves over TLS (`https://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(|source| Error::Listen { addr: "the bound socket".into(), source })
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, tls = self.tls.is_some(), "dashboard serving");
        if let Some(config) = self.tls {
            tls::serve(self.listener, config, router(self.state.clone()), shutdown).await;
            self.state.watches.stop();
            return Ok(());
        }
        let served = axum::serve(self.listener, router(self.state.clone()))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Listen { addr: addr.to_string(), source });
        self.state.watches.stop();
        served
    }
}
