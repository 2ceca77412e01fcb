//! What the proxy's parts share: the response body type, a forwarded
//! request, and the responses the proxy writes itself.

use bytes::Bytes;
use flotilla_fleet_core::cluster_proxy::{self, Identity};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(super) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// What a forwarded request is, without its body.
pub(super) struct Forward {
    pub cluster: String,
    pub identity: Identity,
    pub method: String,
    /// Path and query in the member.
    pub target: String,
    /// The user's headers as received (filtered where they are used).
    pub headers: Vec<(String, String)>,
}

pub(super) fn status(code: StatusCode, message: &str) -> Response<ProxyBody> {
    let reason = code.canonical_reason().unwrap_or("Error").replace(' ', "");
    json(code, &cluster_proxy::status_body(code.as_u16(), &reason, message))
}

pub(super) fn json(code: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

pub(super) fn text(code: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = code;
    response
}

pub(super) fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A response with the member's status and the headers the user may see.
pub(super) fn member_response(
    status_code: u16,
    headers: &[(String, String)],
    body: ProxyBody,
) -> Response<ProxyBody> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status_code).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in cluster_proxy::user_response_headers(status_code, headers) {
        if let (Ok(name), Ok(value)) =
            (hyper::header::HeaderName::try_from(name), hyper::header::HeaderValue::try_from(value))
        {
            response.headers_mut().append(name, value);
        }
    }
    response
}
