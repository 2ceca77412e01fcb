//! The dashboard's errors and the HTTP answers they become.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log in first")]
    Unauthenticated,
    /// The apiserver's (or the access review's) refusal, shown as is.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Kube(#[source] kube::Error),
    #[error("{0}")]
    Json(#[source] serde_json::Error),
    #[error("a lock was poisoned by a panic")]
    Poisoned,
    #[error("TLS: {0}")]
    Tls(String),
    #[error(
        "hub mode on {0} (not this machine's loopback) would carry sign-in tokens in the clear: \
         give --tls-cert and --tls-key, or listen on 127.0.0.1"
    )]
    Insecure(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

impl Error {
    /// An apiserver error keeps its status code and message (a 403 stays a
    /// 403 with the authoriser's words).
    pub fn from_kube(error: kube::Error) -> Error {
        match &error {
            kube::Error::Api(status) if status.code == 403 => Error::Forbidden(status.message.clone()),
            kube::Error::Api(status) if status.code == 401 => Error::Unauthenticated,
            kube::Error::Api(status) if status.code == 404 => Error::NotFound(status.message.clone()),
            kube::Error::Api(status) if status.code == 400 || status.code == 422 => {
                Error::BadRequest(status.message.clone())
            }
            _ => Error::Kube(error),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::BadRequest(_) | Error::Json(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Kube(kube::Error::Api(s)) => {
                StatusCode::from_u16(s.code).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Error::Kube(_) => StatusCode::BAD_GATEWAY,
            Error::Poisoned | Error::Listen { .. } | Error::Tls(_) | Error::Insecure(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        (status, Json(serde_json::json!({ "error": self.to_string(), "code": status.as_u16() })))
            .into_response()
    }
}
