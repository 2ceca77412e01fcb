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
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_server_name: Option<String>,
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
    render_for(spec, None)
}

/// [`render`] with `tls-server-name`: the name the API server's
/// certificate is checked against when `server` is an address its
/// certificate does not name (a NodePort on whichever node answers).
pub fn render_for(spec: &KubeconfigSpec, tls_server_name: Option<&str>) -> String {
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
                    tls_server_name: tls_server_name.map(str::to_string),
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

/// The parts of a single-context kubeconfig with embedded data (what
/// [`render`] writes) that Flotilla reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKubeconfig {
    pub server: String,
    pub ca_pem: String,
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<String>,
    pub token: Option<String>,
    pub tls_server_name: Option<String>,
}

/// Reads the current context's cluster and user of a kubeconfig with
/// embedded data; `Err` says what is missing.
pub fn parse(yaml: &str) -> Result<ParsedKubeconfig, String> {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).map_err(|e| format!("not a kubeconfig: {e}"))?;
    let current = v["current-context"].as_str().ok_or("no current-context")?;
    let named = |list: &str, name: &str| {
        v[list].as_array().and_then(|items| items.iter().find(|i| i["name"] == name)).cloned()
    };
    let context = named("contexts", current).ok_or_else(|| format!("no context {current}"))?;
    let cluster_name = context["context"]["cluster"].as_str().ok_or("context has no cluster")?;
    let user_name = context["context"]["user"].as_str().ok_or("context has no user")?;
    let cluster = named("clusters", cluster_name).ok_or_else(|| format!("no cluster {cluster_name}"))?;
    let user = named("users", user_name).ok_or_else(|| format!("no user {user_name}"))?;
    let decode = |value: &serde_json::Value| -> Result<Option<String>, String> {
        match value.as_str() {
            None => Ok(None),
            Some(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| format!("bad base64: {e}"))?;
                String::from_utf8(bytes).map(Some).map_err(|e| format!("not text: {e}"))
            }
        }
    };
    Ok(ParsedKubeconfig {
        server: cluster["cluster"]["server"].as_str().ok_or("cluster has no server")?.to_string(),
        ca_pem: decode(&cluster["cluster"]["certificate-authority-data"])?
            .ok_or("cluster has no certificate-authority-data")?,
        client_cert_pem: decode(&user["user"]["client-certificate-data"])?,
        client_key_pem: decode(&user["user"]["client-key-data"])?,
        token: user["user"]["token"].as_str().map(str::to_string),
        tls_server_name: cluster["cluster"]["tls-server-name"].as_str().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_server_name_is_written_and_read_back() {
        let spec = KubeconfigSpec {
            name: "c".into(),
            server: "https://172.30.4.2:31443".into(),
            ca_pem: "CA".into(),
            credential: Credential::Token("a.b".into()),
        };
        let parsed = parse(&render_for(&spec, Some("kube-apiserver.kok-c.svc"))).unwrap();
        assert_eq!(parsed.tls_server_name.as_deref(), Some("kube-apiserver.kok-c.svc"));
        assert_eq!(parsed.server, "https://172.30.4.2:31443");
        assert_eq!(parse(&render(&spec)).unwrap().tls_server_name, None);
        assert!(!render(&spec).contains("tls-server-name"));
    }

    #[test]
    fn parses_back_what_it_renders() {
        let spec = KubeconfigSpec {
            name: "c".into(),
            server: "https://127.0.0.1:6443".into(),
            ca_pem: "CA\n".into(),
            credential: Credential::ClientCert { cert_pem: "C".into(), key_pem: "K".into() },
        };
        let parsed = parse(&render(&spec)).unwrap();
        assert_eq!(parsed.server, "https://127.0.0.1:6443");
        assert_eq!(parsed.ca_pem, "CA\n");
        assert_eq!(parsed.client_cert_pem.as_deref(), Some("C"));
        assert_eq!(parsed.token, None);
        let token =
            parse(&render(&KubeconfigSpec { credential: Credential::Token("a.b".into()), ..spec })).unwrap();
        assert_eq!(token.token.as_deref(), Some("a.b"));
        assert!(parse("kind: Config").is_err());
    }

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
