//! Rendering kubeconfig files (the `clientcmd` v1 format) with embedded
//! credentials, so a kubeconfig is one self-contained file.

use base64::Engine as _;
use serde::Serialize;

/// The credential a kubeconfig presents.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A client certificate and key (PEM).
    ClientCert { cert_pem: String, key_pem: String },
    /// A bearer token (e.g. a bootstrap token `abcdef.0123456789abcdef`).
    Token(String),
}

/// Everything a single-context kubeconfig needs.
#[derive(Debug, Clone)]
pub struct KubeconfigSpec {
    /// Name used for the cluster, the user and the context.
    pub name: String,
    /// `https://host:port` of the API server.
    pub server: String,
    pub ca_pem: String,
    pub credential: Credential,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority_data: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[derive(Serialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct ClusterEntry {
    cluster: Cluster,
}
#[derive(Serialize)]
struct UserEntry {
    user: User,
}
#[derive(Serialize)]
struct ContextEntry {
    context: Context,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<ClusterEntry>>,
    users: Vec<Named<UserEntry>>,
    contexts: Vec<Named<ContextEntry>>,
    current_context: String,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// Renders the kubeconfig as YAML.
pub fn render(spec: &KubeconfigSpec) -> String {
    let user = match &spec.credential {
        Credential::ClientCert { cert_pem, key_pem } => User {
            client_certificate_data: Some(b64(cert_pem)),
            client_key_data: Some(b64(key_pem)),
            token: None,
        },
        Credential::Token(token) => {
            User { client_certificate_data: None, client_key_data: None, token: Some(token.clone()) }
        }
    };
    let config = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: spec.name.clone(),
            value: ClusterEntry {
                cluster: Cluster {
                    server: spec.server.clone(),
                    certificate_authority_data: b64(&spec.ca_pem),
                },
            },
        }],
        users: vec![Named { name: spec.name.clone(), value: UserEntry { user } }],
        contexts: vec![Named {
            name: spec.name.clone(),
            value: ContextEntry { context: Context { cluster: spec.name.clone(), user: spec.name.clone() } },
        }],
        current_context: spec.name.clone(),
    };
    // Serializing plain structs of strings cannot fail.
    #[allow(clippy::expect_used)]
    serde_saphyr::to_string(&config).expect("kubeconfig serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cert_kubeconfig_that_parses_back() {
        let yaml = render(&KubeconfigSpec {
            name: "member-1".into(),
            server: "https://127.0.0.1:6443".into(),
            ca_pem: "CA".into(),
            credential: Credential::ClientCert { cert_pem: "C".into(), key_pem: "K".into() },
        });
        let v: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(v["current-context"], "member-1");
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://127.0.0.1:6443");
        assert_eq!(v["clusters"][0]["cluster"]["certificate-authority-data"], b64("CA"));
        assert_eq!(v["users"][0]["user"]["client-key-data"], b64("K"));
        assert!(v["users"][0]["user"].get("token").is_none());
        assert_eq!(v["contexts"][0]["context"]["user"], "member-1");
    }

    #[test]
    fn renders_token_kubeconfig() {
        let yaml = render(&KubeconfigSpec {
            name: "hub".into(),
            server: "https://127.0.0.1:1".into(),
            ca_pem: "CA".into(),
            credential: Credential::Token("abcdef.0123456789abcdef".into()),
        });
        let v: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(v["users"][0]["user"]["token"], "abcdef.0123456789abcdef");
        assert!(v["users"][0]["user"].get("client-certificate-data").is_none());
    }
}
