//! What every handler shares: the rights model and the shared watches, and
//! who the request comes from.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::auth::{session_token, Auth, Caller};
use crate::tls::ClientIdentity;
use crate::watch::Watches;

pub struct AppState {
    pub auth: Auth,
    pub watches: Watches,
    /// Served over TLS: the session cookie is `Secure`.
    pub tls: bool,
}

/// The request's caller: the session cookie's token if the user signed in
/// with one (an explicit sign-in wins), else the user of the connection's
/// verified client certificate, else nobody.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, Infallible> {
        let cookie = parts.headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
        if let Some(token) = session_token(cookie) {
            return Ok(Caller::Token(token));
        }
        Ok(match parts.extensions.get::<ClientIdentity>() {
            Some(identity) => Caller::Certificate(identity.clone()),
            None => Caller::Anonymous,
        })
    }
}
