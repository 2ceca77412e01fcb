//! The `/metrics` endpoint.

use std::net::SocketAddr;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening for metrics on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("serving metrics: {0}")]
    Serve(std::io::Error),
    #[error("the metrics endpoint stopped")]
    Stopped,
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics() -> impl IntoResponse {
    match crate::encode() {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics: {e}\n"),
        ),
    }
}

/// A bound endpoint: `addr` is the address it listens on (the port the
/// system chose for `:0`); `run` serves until dropped.
pub struct MetricsServer {
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
}

impl MetricsServer {
    pub async fn run(self) -> Result<(), Error> {
        let app = Router::new().route("/metrics", get(metrics));
        axum::serve(self.listener, app).await.map_err(Error::Serve)
    }
}

/// Binds the endpoint (so a bad address fails at start, not later).
pub async fn serve(addr: SocketAddr) -> Result<MetricsServer, Error> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
    tracing::info!(%addr, "serving metrics on /metrics");
    Ok(MetricsServer { addr, listener })
}

/// Runs `work` while serving `/metrics` on `addr` (when given): the
/// endpoint lives exactly as long as the component it describes.
pub async fn serving<T>(
    addr: Option<SocketAddr>,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Error> {
    let Some(addr) = addr else { return Ok(work.await) };
    let server = serve(addr).await?;
    tokio::select! {
        served = server.run() => Err(served.err().unwrap_or(Error::Stopped)),
        done = work => Ok(done),
    }
}
