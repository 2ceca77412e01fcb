//! What every handler shares: the rights model and the shared watches.

use axum::http::{header, HeaderMap};

use crate::auth::{session_token, Auth};
use crate::watch::Watches;

pub struct AppState {
    pub auth: Auth,
    pub watches: Watches,
}

/// The hub-mode session token of a request, if any.
pub fn request_token(headers: &HeaderMap) -> Option<String> {
    session_token(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()))
}
