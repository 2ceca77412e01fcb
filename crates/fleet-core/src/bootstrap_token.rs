//! Bootstrap tokens: `<id>.<secret>`, which the API server accepts as a
//! bearer token while `kube-system/bootstrap-token-<id>` (a Secret of type
//! `bootstrap.kubernetes.io/token`) holds it. The one place their format,
//! names and Secret are made.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::membership::BOOTSTRAP_GROUP;

/// Where the API server looks for bootstrap token Secrets.
pub const NAMESPACE: &str = "kube-system";
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
const SECRET_PREFIX: &str = "bootstrap-token-";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
/// The characters of an id and a secret (`[a-z0-9]`).
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapTokenError {
    #[error("bootstrap token id {0:?} is not 6 characters of [a-z0-9]")]
    Id(String),
    // The secret itself is never put in a message.
    #[error("a bootstrap token secret must be 16 characters of [a-z0-9]")]
    Secret,
    #[error("a bootstrap token has the form <id>.<secret>")]
    Form,
}

/// A token's id (public: it names the Secret) and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

// The secret stays out of logs and panics.
impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken").field("id", &self.id).finish_non_exhaustive()
    }
}

fn well_formed(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl BootstrapToken {
    pub fn new(id: &str, secret: &str) -> Result<Self, BootstrapTokenError> {
        if !well_formed(id, ID_LEN) {
            return Err(BootstrapTokenError::Id(id.to_string()));
        }
        if !well_formed(secret, SECRET_LEN) {
            return Err(BootstrapTokenError::Secret);
        }
        Ok(Self { id: id.to_string(), secret: secret.to_string() })
    }

    /// Reads `<id>.<secret>`.
    pub fn parse(token: &str) -> Result<Self, BootstrapTokenError> {
        let (id, secret) = token.split_once('.').ok_or(BootstrapTokenError::Form)?;
        Self::new(id, secret)
    }

    /// A token from 22 random bytes (the caller reads them, e.g. from
    /// `/dev/urandom`): 6 for the id, 16 for the secret.
    pub fn from_random(bytes: &[u8; ID_LEN + SECRET_LEN]) -> Self {
        let text: String =
            bytes.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect();
        let (id, secret) = text.split_at(ID_LEN);
        Self { id: id.to_string(), secret: secret.to_string() }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bearer token, `<id>.<secret>`.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// Name of its Secret in [`NAMESPACE`].
    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.id)
    }

    /// Its Secret, for authentication only, in no extra group yet.
    pub fn secret(&self) -> TokenSecret<'_> {
        TokenSecret { token: self, groups: Vec::new(), expiration: None, description: None }
    }

    /// Its Secret as `flotilla token create` makes it: holders may ask to
    /// join the fleet ([`BOOTSTRAP_GROUP`]) and nothing else.
    pub fn fleet_secret(&self) -> TokenSecret<'_> {
        self.secret().group(BOOTSTRAP_GROUP)
    }
}

/// Builds a token's Secret.
#[derive(Debug, Clone)]
pub struct TokenSecret<'a> {
    token: &'a BootstrapToken,
    groups: Vec<String>,
    expiration: Option<Timestamp>,
    description: Option<String>,
}

impl TokenSecret<'_> {
    /// An extra group the token's user is in (`system:bootstrappers:...`).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }

    /// When the API server stops accepting it (and its token cleaner
    /// deletes the Secret).
    pub fn expires_at(mut self, at: Timestamp) -> Self {
        self.expiration = Some(at);
        self
    }

    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    pub fn build(self) -> Secret {
        let mut data = BTreeMap::from([
            ("token-id".to_string(), self.token.id.clone()),
            ("token-secret".to_string(), self.token.secret.clone()),
            ("usage-bootstrap-authentication".to_string(), "true".to_string()),
        ]);
        if !self.groups.is_empty() {
            data.insert("auth-extra-groups".to_string(), self.groups.join(","));
        }
        if let Some(at) = self.expiration {
            data.insert("expiration".to_string(), at.to_string());
        }
        if let Some(text) = self.description {
            data.insert("description".to_string(), text);
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(self.token.secret_name()),
                namespace: Some(NAMESPACE.to_string()),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.to_string()),
            string_data: Some(data),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_the_api_servers_format() {
        let cases: &[(&str, Result<&str, BootstrapTokenError>)] = &[
            ("abcdef.0123456789abcdef", Ok("abcdef")),
            ("a1b2c3.zzzzzzzzzzzzzzzz", Ok("a1b2c3")),
            ("ABCDEF.0123456789abcdef", Err(BootstrapTokenError::Id("ABCDEF".into()))),
            ("abcde.0123456789abcdef", Err(BootstrapTokenError::Id("abcde".into()))),
            ("abcdef.0123456789abcde", Err(BootstrapTokenError::Secret)),
            ("abcdef.0123456789abcde_", Err(BootstrapTokenError::Secret)),
            ("abcdef0123456789abcdef", Err(BootstrapTokenError::Form)),
        ];
        for (text, want) in cases {
            let got = BootstrapToken::parse(text);
            assert_eq!(got.as_ref().map(BootstrapToken::id).map_err(Clone::clone), want.clone(), "{text}");
            if let Ok(token) = got {
                assert_eq!(token.token(), *text);
                assert!(!format!("{token:?}").contains(&text[7..]), "the secret stays out of Debug");
            }
        }
    }

    #[test]
    fn random_bytes_make_a_well_formed_token() {
        for bytes in [[0u8; 22], [255u8; 22], std::array::from_fn(|i| (i * 37) as u8)] {
            let token = BootstrapToken::from_random(&bytes);
            assert_eq!(BootstrapToken::parse(&token.token()), Ok(token.clone()));
        }
        assert_eq!(BootstrapToken::from_random(&[0u8; 22]).token(), "aaaaaa.aaaaaaaaaaaaaaaa");
        assert_eq!(BootstrapToken::from_random(&[35u8; 22]).id(), "999999");
    }

    #[test]
    fn the_secret_is_what_the_api_server_reads() {
        let token = BootstrapToken::new("abcdef", "0123456789abcdef").unwrap();
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let data = |s: &Secret| s.string_data.clone().unwrap();
        struct Case {
            name: &'static str,
            secret: Secret,
            extra: &'static [(&'static str, &'static str)],
        }
        let cases = [
            Case { name: "plain", secret: token.secret().build(), extra: &[] },
            Case {
                name: "a fleet token",
                secret: token.fleet_secret().expires_at(at).description("flotilla: joins").build(),
                extra: &[
                    ("auth-extra-groups", BOOTSTRAP_GROUP),
                    ("description", "flotilla: joins"),
                    ("expiration", "2027-01-15T08:00:00Z"),
                ],
            },
            Case {
                name: "several groups",
                secret: token
                    .secret()
                    .group("system:bootstrappers:a")
                    .group("system:bootstrappers:b")
                    .build(),
                extra: &[("auth-extra-groups", "system:bootstrappers:a,system:bootstrappers:b")],
            },
        ];
        for Case { name, secret, extra } in cases {
            assert_eq!(secret.metadata.name.as_deref(), Some("bootstrap-token-abcdef"), "{name}");
            assert_eq!(secret.metadata.namespace.as_deref(), Some("kube-system"), "{name}");
            assert_eq!(secret.type_.as_deref(), Some("bootstrap.kubernetes.io/token"), "{name}");
            let want: BTreeMap<String, String> = [
                ("token-id", "abcdef"),
                ("token-secret", "0123456789abcdef"),
                ("usage-bootstrap-authentication", "true"),
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            assert_eq!(data(&secret), want, "{name}");
        }
    }
}
