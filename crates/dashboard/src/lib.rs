//! `flotilla-dashboard`: the fleet's web dashboard. An axum server whose
//! pages (hand-written HTML, CSS and JavaScript embedded in the binary)
//! read JSON built from one shared watch per resource kind and get changes
//! pushed over server-sent events. Local mode acts with the user's
//! kubeconfig; hub mode as each signed-in user (their token, or the user
//! their client certificate names), over TLS off the loopback.

pub mod actions;
pub mod api;
pub mod assets;
pub mod auth;
pub mod error;
pub mod gate;
pub mod live;
pub mod server;
pub mod state;
pub mod tls;
pub mod view;
pub mod watch;

pub use auth::Mode;
pub use error::Error;
pub use server::Dashboard;
pub use tls::TlsFiles;
