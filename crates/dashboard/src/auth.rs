//! Whose rights a request uses. Local mode: the user's own kubeconfig.
//! Hub mode: the bearer token the user logged in with (kept in an
//! HttpOnly cookie), or the user a verified client certificate names
//! (requests then go out with the dashboard's own credential and the
//! `Impersonate-User`/`Impersonate-Group` headers, so the apiserver
//! authorises them as that user). Every read is gated by the user's own
//! access review and every write is made as the user, so the apiserver's
//! authorisation decides, never the dashboard's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, SelfSubjectReviewStatus};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::error::Error;
use crate::tls::ClientIdentity;

/// The session cookie holding the hub-mode user's token.
pub const SESSION_COOKIE: &str = "flotilla_session";

/// How long an access review's answer is reused for the same user and
/// question (RBAC changes show within this).
const REVIEW_TTL: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every request uses the kubeconfig the server was started with.
    Local,
    /// Every request acts as the signed-in user: their bearer token, or
    /// the user their verified client certificate names.
    Hub,
}

/// A question for the apiserver's authoriser.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Access {
    pub fn new(verb: &str, group: &str, resource: &str) -> Access {
        Access {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: None,
            name: None,
        }
    }

    pub fn namespace(mut self, namespace: &str) -> Access {
        self.namespace = Some(namespace.into());
        self
    }

    pub fn name(mut self, name: &str) -> Access {
        self.name = Some(name.into());
        self
    }
}

/// Who a hub-mode request comes from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// No session and no client certificate.
    Anonymous,
    /// The bearer token of the session cookie.
    Token(String),
    /// The user a verified client certificate names.
    Certificate(ClientIdentity),
}

impl std::fmt::Debug for Caller {
    // Never print a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Anonymous => f.write_str("Anonymous"),
            Caller::Token(_) => f.write_str("Token(..)"),
            Caller::Certificate(id) => f.debug_tuple("Certificate").field(id).finish(),
        }
    }
}

impl Caller {
    /// How the user signed in, as the page says it.
    pub fn via(&self) -> &'static str {
        match self {
            Caller::Anonymous => "none",
            Caller::Token(_) => "token",
            Caller::Certificate(_) => "certificate",
        }
    }
}

type ReviewKey = (Caller, Access);

pub struct Auth {
    pub mode: Mode,
    base: kube::Config,
    local: Client,
    clients: Mutex<HashMap<Caller, Client>>,
    reviews: Mutex<HashMap<ReviewKey, (bool, String, Instant)>>,
}

impl Auth {
    /// `config` is the kubeconfig's: the user's own (local mode) or, in hub
    /// mode, the server's (only its server URL and CA are used for users).
    pub fn new(mode: Mode, config: kube::Config) -> Result<Auth, Error> {
        let local = Client::try_from(config.clone()).map_err(Error::Kube)?;
        Ok(Auth { mode, base: config, local, clients: Mutex::default(), reviews: Mutex::default() })
    }

    /// The client acting as the request's user: the kubeconfig's in local
    /// mode, the caller's in hub mode (none: not signed in).
    pub fn client(&self, caller: &Caller) -> Result<Client, Error> {
        match (self.mode, caller) {
            (Mode::Local, _) => Ok(self.local.clone()),
            (Mode::Hub, Caller::Anonymous) => Err(Error::Unauthenticated),
            (Mode::Hub, caller) => self.caller_client(caller),
        }
    }

    /// A client for `token` against the hub of `base`, with none of the
    /// base's own credentials.
    pub fn token_client(&self, token: &str) -> Result<Client, Error> {
        self.caller_client(&Caller::Token(token.to_string()))
    }

    fn caller_client(&self, caller: &Caller) -> Result<Client, Error> {
        let mut clients = self.clients.lock().map_err(|_| Error::Poisoned)?;
        if let Some(client) = clients.get(caller) {
            return Ok(client.clone());
        }
        let mut config = self.base.clone();
        match caller {
            Caller::Anonymous => return Err(Error::Unauthenticated),
            Caller::Token(token) => {
                // AuthInfo's token is a secrecy type; serde builds it
                // without a direct dependency on that crate.
                config.auth_info =
                    serde_json::from_value(serde_json::json!({ "token": token })).map_err(Error::Json)?;
            }
            // The dashboard's own credential (which needs only the right
            // to impersonate) asks to act as the user: the apiserver
            // authorises the request as the user alone.
            Caller::Certificate(identity) => {
                config.auth_info.impersonate = Some(identity.user.clone());
                config.auth_info.impersonate_groups =
                    Some(identity.groups.clone()).filter(|groups| !groups.is_empty());
            }
        }
        let client = Client::try_from(config).map_err(Error::Kube)?;
        if clients.len() > 1000 {
            clients.clear();
        }
        clients.insert(caller.clone(), client.clone());
        Ok(client)
    }

    /// Who the apiserver says the client is (`SelfSubjectReview`).
    pub async fn who_am_i(client: &Client) -> Result<String, Error> {
        let review: SelfSubjectReview = Api::all(client.clone())
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(Error::from_kube)?;
        let info = review.status.unwrap_or(SelfSubjectReviewStatus { user_info: None }).user_info;
        Ok(info.and_then(|u| u.username).unwrap_or_else(|| "(unknown)".into()))
    }

    /// Whether the user may do `access`, and the authoriser's reason;
    /// answers are reused for a short while per user.
    pub async fn allowed(&self, caller: &Caller, access: &Access) -> Result<(bool, String), Error> {
        let client = self.client(caller)?;
        let key = (caller.clone(), access.clone());
        if let Some((allowed, reason, at)) = self.reviews.lock().map_err(|_| Error::Poisoned)?.get(&key) {
            if at.elapsed() < REVIEW_TTL {
                return Ok((*allowed, reason.clone()));
            }
        }
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.clone()),
                    group: Some(access.group.clone()),
                    resource: Some(access.resource.clone()),
                    namespace: access.namespace.clone(),
                    name: access.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SelfSubjectAccessReview>::all(client)
            .create(&PostParams::default(), &review)
            .await
            .map_err(Error::from_kube)?;
        let status = answer.status.unwrap_or_default();
        let reason = status.reason.unwrap_or_default();
        let mut reviews = self.reviews.lock().map_err(|_| Error::Poisoned)?;
        if reviews.len() > 10_000 {
            reviews.clear();
        }
        reviews.insert(key, (status.allowed, reason.clone(), Instant::now()));
        Ok((status.allowed, reason))
    }
}

/// The session token from a `Cookie` header.
pub fn session_token(cookie_header: Option<&str>) -> Option<String> {
    cookie_header?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::session_token;

    #[test]
    fn the_session_token_is_read_from_the_cookie_header() {
        let cases = [
            ("no header", None, None),
            ("only ours", Some("flotilla_session=abc.def"), Some("abc.def")),
            ("among others", Some("theme=dark; flotilla_session=tok; lang=en"), Some("tok")),
            ("a cookie whose name ends like ours", Some("x_flotilla_session=evil"), None),
            ("emptied by logout", Some("flotilla_session="), None),
            ("other cookies only", Some("a=b; c=d"), None),
        ];
        for (name, header, want) in cases {
            assert_eq!(session_token(header).as_deref(), want, "{name}");
        }
    }
}
