//! The hub's validating admission webhook for policies and
//! `WorkloadInterpreter`s (whose CEL expressions must compile).
//!
//! The policy CRDs make the API server refuse most malformed policies itself
//! (unknown fields for strict clients, unsupported Karmada fields, CEL rules
//! across fields; see `flotilla_api::policy`). This webhook adds only what a
//! schema cannot say (`flotilla_apps_core::validation::
//! validate_policy_beyond_schema`: selectors outside a namespaced policy's
//! namespace, embedded label selectors and tolerations, `exclude` against
//! `clusterNames`). Every hub replica serves it, leader or not; they share
//! one serving certificate from a Secret, and each (re)registers the
//! ValidatingWebhookConfiguration that points the API server here.
//!
//! It fails open (`failurePolicy: Ignore`): policy writes never depend on a
//! `hub run` being up. A policy admitted while no replica answered is
//! judged by the hub's controllers instead, which mark it `Valid=False` on
//! its status and ignore it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Uri;
use axum::routing::post;
use axum::{Json, Router};
use flotilla_core::pki::{inspect_certificate, CertAndKey, CertificateAuthority, LeafSpec};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use kube::{Api, Client};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::error::Error;
use crate::names::{FIELD_MANAGER, SYSTEM_NAMESPACE};

/// The webhook's name; the API server quotes it when it denies a request.
pub const WEBHOOK_NAME: &str = "policies.flotilla.io";
/// The ValidatingWebhookConfiguration every replica applies.
pub const CONFIGURATION_NAME: &str = "flotilla-policy-validation";
/// Secret (in `flotilla-system`) with the webhook's CA and serving certificate.
pub const TLS_SECRET: &str = "flotilla-webhook-tls";
const PATH: &str = "/validate";
/// A serving certificate is replaced when it has less than this left.
const RENEW_BEFORE: time::Duration = time::Duration::days(30);
/// How often each replica re-applies the configuration (it may have been
/// deleted or edited; applying an unchanged one costs the API server nothing).
const REGISTER_INTERVAL: Duration = Duration::from_secs(300);
const REGISTER_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Address to listen on, e.g. `0.0.0.0:9443`.
    pub listen: SocketAddr,
    /// How the API server reaches the webhook, e.g. `https://127.0.0.1:9443`
    /// (`/validate` is appended). Its host must be an IP address or DNS name
    /// that reaches every replica; the serving certificate is issued for it.
    pub url: String,
}

/// Serves the webhook until the process ends. Fails at once if it cannot
/// bind or cannot set up its certificate.
pub async fn serve(client: Client, config: WebhookConfig) -> Result<(), Error> {
    let host = url_host(&config.url)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Other(format!("webhook cannot listen on {}: {e}", config.listen)))?;
    let tls = ensure_tls(&client, &host).await?;
    let acceptor = tls_acceptor(&tls.serving)?;
    tracing::info!(listen = %config.listen, url = %config.url, "policy admission webhook serving");

    let serving = accept_loop(listener, acceptor);
    tokio::pin!(serving);
    let url = webhook_url(&config.url);
    loop {
        let next = tokio::select! {
            () = &mut serving => return Ok(()),
            registered = register(&client, &url, &tls.ca_pem) => match registered {
                Ok(()) => {
                    tracing::debug!(url = %url, "webhook configuration applied");
                    REGISTER_INTERVAL
                }
                Err(e) => {
                    tracing::warn!(error = %e, "applying the webhook configuration failed; retrying");
                    REGISTER_RETRY
                }
            },
        };
        // Keep serving while waiting to re-apply.
        tokio::select! {
            () = &mut serving => return Ok(()),
            () = tokio::time::sleep(next) => {}
        }
    }
}

fn webhook_url(base: &str) -> String {
    format!("{}{PATH}", base.trim_end_matches('/'))
}

/// The host part of an `https://` URL (IPv6 without brackets).
fn url_host(url: &str) -> Result<String, Error> {
    let uri: Uri = url.parse().map_err(|e| Error::Other(format!("webhook URL {url:?}: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(Error::Other(format!("webhook URL {url:?} must start with https://")));
    }
    let host = uri.host().filter(|h| !h.is_empty());
    let host = host.ok_or_else(|| Error::Other(format!("webhook URL {url:?} has no host")))?;
    Ok(host.trim_start_matches('[').trim_end_matches(']').to_string())
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor) {
    let app = Router::new().route(PATH, post(review));
    // When serving stops, kept-alive connections close too, and the API
    // server sees the webhook gone.
    flotilla_tls_serve::serve(listener, acceptor, "webhook", std::future::pending(), move |tls, peer| {
        let app = app.clone();
        async move {
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        }
    })
    .await
}

async fn review(Json(review): Json<AdmissionReview<DynamicObject>>) -> Json<AdmissionReview<DynamicObject>> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => {
            return Json(AdmissionResponse::invalid("an AdmissionReview without a request").into_review())
        }
    };
    let response = AdmissionResponse::from(&request);
    let response = match decide(&request) {
        Ok(()) => response,
        Err(message) => {
            tracing::info!(
                kind = %request.kind.kind, namespace = request.namespace.as_deref().unwrap_or(""),
                name = %request.name, user = request.user_info.username.as_deref().unwrap_or(""),
                reasons = %message, "policy denied"
            );
            response.deny(message)
        }
    };
    Json(response.into_review())
}

/// Allowed, or the message the API server shows the user.
fn decide(request: &AdmissionRequest<DynamicObject>) -> Result<(), String> {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Ok(());
    }
    let as_json = |object: &DynamicObject| {
        let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
        // A create's object may not carry the namespace yet; the request does.
        if let (Some(namespace), Some(metadata)) = (&request.namespace, value.get_mut("metadata")) {
            if metadata.get("namespace").is_none_or(|ns| ns.as_str().is_none_or(str::is_empty)) {
                metadata["namespace"] = json!(namespace);
            }
        }
        value
    };
    let Some(object) = request.object.as_ref().map(as_json) else {
        return Err("the request carries no object".into());
    };
    let old = request.old_object.as_ref().map(as_json);
    let kind = &request.kind.kind;
    let errors = if kind == "WorkloadInterpreter" {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(&request.name);
        interpreter_errors(name, &object)
    } else {
        flotilla_apps_core::validation::validate_policy_change(kind, old.as_ref(), &object)
    };
    if errors.is_empty() {
        return Ok(());
    }
    let name = match request.namespace.as_deref() {
        Some(namespace) if !namespace.is_empty() => format!("{namespace}/{}", request.name),
        _ => request.name.clone(),
    };
    Err(format!("{kind} {name} is invalid: {}", errors.join("; ")))
}

/// What is wrong with a `WorkloadInterpreter` beyond its schema: its CEL
/// expressions must compile within bounds (the same judgement the hub
/// makes of stored interpreters).
fn interpreter_errors(name: &str, object: &Value) -> Vec<String> {
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    match serde_json::from_value::<flotilla_api::interpreter::WorkloadInterpreterSpec>(spec) {
        Ok(spec) => {
            flotilla_apps_core::interpreter::Interpreter::from_spec(name, &spec).err().unwrap_or_default()
        }
        // The schema admitted it, so this is a field the types lack: the
        // API server prunes or refuses it; not this webhook's to judge.
        Err(_) => Vec::new(),
    }
}

/// The CA the API server trusts and the certificate this replica serves.
struct WebhookTls {
    ca_pem: String,
    serving: CertAndKey,
}

/// Reads the shared certificate from its Secret, creating or re-issuing it
/// if it is missing, does not name `host`, or is about to expire. The CA is
/// kept when it can be, so the registered caBundle stays valid for
/// replicas still serving the previous certificate.
async fn ensure_tls(client: &Client, host: &str) -> Result<WebhookTls, Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}});
    namespaces.patch(SYSTEM_NAMESPACE, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(namespace)).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let now = time::OffsetDateTime::now_utc();
    // Another replica may write the Secret at the same time: then re-read.
    for _ in 0..5 {
        let existing = secrets.get_opt(TLS_SECRET).await?;
        let stored = existing.as_ref().and_then(stored_tls);
        if let Some((ca, tls)) = &stored {
            let covers =
                inspect_certificate(&tls.serving.cert_pem).is_ok_and(|f| f.covers(host, now, RENEW_BEFORE));
            if covers {
                return Ok(WebhookTls { ca_pem: ca.pem.cert_pem.clone(), serving: tls.serving.clone() });
            }
        }
        let ca = match stored {
            Some((ca, _))
                if inspect_certificate(&ca.pem.cert_pem).is_ok_and(|f| f.not_after > now + RENEW_BEFORE) =>
            {
                ca
            }
            _ => CertificateAuthority::generate("flotilla-webhook-ca").map_err(pki_error)?,
        };
        let serving = ca.issue(&LeafSpec::server(WEBHOOK_NAME, &[host.to_string()])).map_err(pki_error)?;
        let secret = tls_secret(&ca, &serving, existing.and_then(|s| s.metadata.resource_version))?;
        let written = match &secret.metadata.resource_version {
            Some(_) => secrets.replace(TLS_SECRET, &PostParams::default(), &secret).await,
            None => secrets.create(&PostParams::default(), &secret).await,
        };
        match written {
            Ok(_) => {
                tracing::info!(host, "issued the webhook serving certificate");
                return Ok(WebhookTls { ca_pem: ca.pem.cert_pem, serving });
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Other(format!("Secret {SYSTEM_NAMESPACE}/{TLS_SECRET} kept changing while being written")))
}

fn pki_error(e: flotilla_core::pki::PkiError) -> Error {
    Error::Other(format!("webhook certificate: {e}"))
}

fn stored_tls(secret: &Secret) -> Option<(CertificateAuthority, WebhookTls)> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| data.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok());
    let ca = CertificateAuthority::from_pem(&text("ca.crt")?, &text("ca.key")?).ok()?;
    let serving = CertAndKey { cert_pem: text("tls.crt")?, key_pem: text("tls.key")? };
    Some((ca.clone(), WebhookTls { ca_pem: ca.pem.cert_pem, serving }))
}

fn tls_secret(
    ca: &CertificateAuthority,
    serving: &CertAndKey,
    resource_version: Option<String>,
) -> Result<Secret, Error> {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": TLS_SECRET, "namespace": SYSTEM_NAMESPACE},
        "type": "kubernetes.io/tls",
    }))?;
    secret.metadata.resource_version = resource_version;
    secret.data = Some(
        [
            ("ca.crt", bytes(&ca.pem.cert_pem)),
            ("ca.key", bytes(&ca.pem.key_pem)),
            ("tls.crt", bytes(&serving.cert_pem)),
            ("tls.key", bytes(&serving.key_pem)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    Ok(secret)
}

fn tls_acceptor(serving: &CertAndKey) -> Result<TlsAcceptor, Error> {
    let tls_error = |e: &dyn std::fmt::Display| Error::Other(format!("webhook TLS: {e}"));
    let chain = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(&e))?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).map_err(|e| tls_error(&e))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(&e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| tls_error(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Points the API server at the webhook for every policy create and update.
async fn register(client: &Client, url: &str, ca_pem: &str) -> Result<(), Error> {
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    configurations
        .patch(
            CONFIGURATION_NAME,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(configuration(url, ca_pem)),
        )
        .await?;
    Ok(())
}

fn configuration(url: &str, ca_pem: &str) -> Value {
    use base64::Engine as _;
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION_NAME},
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "clientConfig": {
                "url": url,
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
            "rules": [{
                "apiGroups": [flotilla_api::policy::GROUP],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": [
                    "propagationpolicies", "clusterpropagationpolicies",
                    "overridepolicies", "clusteroverridepolicies",
                ],
                "scope": "*",
            }, {
                "apiGroups": [flotilla_api::interpreter::GROUP],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["workloadinterpreters"],
                "scope": "*",
            }],
            // Fail open: see the module docs.
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            // Failing open, a slow answer admits the policy: wait as long as
            // the API server's default rather than 5 s.
            "timeoutSeconds": 10,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(operation: &str, object: Value, old: Option<Value>) -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "policy.flotilla.io", "version": "v1alpha1", "kind": object["kind"]},
                "resource": {"group": "policy.flotilla.io", "version": "v1alpha1", "resource": "propagationpolicies"},
                "name": object["metadata"]["name"], "namespace": "apps",
                "operation": operation, "userInfo": {"username": "alice"},
                "object": object, "oldObject": old, "dryRun": false,
            }
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    fn policy(placement: Value) -> Value {
        json!({"apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "p"},
            "spec": {"resourceSelectors": [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": "apps"}],
                "placement": placement}})
    }

    #[test]
    fn denies_with_every_reason_and_names_the_policy() {
        // Two problems no schema can state: a selector outside the policy's
        // namespace, and an exclude list that leaves no cluster.
        let mut bad = policy(json!({"clusterAffinity": {"clusterNames": ["a"], "exclude": ["a"]}}));
        bad["spec"]["resourceSelectors"][0]["namespace"] = json!("other");
        let message = decide(&request("CREATE", bad, None)).unwrap_err();
        assert!(message.starts_with("PropagationPolicy apps/p is invalid: "), "{message}");
        assert!(
            message.contains(
                "spec.resourceSelectors[0].namespace: a PropagationPolicy selects only in its own namespace"
            ),
            "{message}"
        );
        assert!(
            message.contains("spec.placement.clusterAffinity.exclude: excludes every cluster"),
            "{message}"
        );
        assert!(message.contains("; "), "{message}");
    }

    #[test]
    fn the_request_namespace_stands_in_for_a_missing_one() {
        // The selector names namespace "apps", the policy's own (from the request).
        assert_eq!(decide(&request("CREATE", policy(json!({})), None)), Ok(()));
        let mut elsewhere = policy(json!({}));
        elsewhere["spec"]["resourceSelectors"][0]["namespace"] = json!("other");
        assert!(decide(&request("CREATE", elsewhere, None)).is_err());
    }

    #[test]
    fn updates_keep_old_problems_and_deletes_pass() {
        let old = policy(json!({"clusterAffinity": {"clusterNames": ["a"], "exclude": ["a"]}}));
        assert!(decide(&request("CREATE", old.clone(), None)).is_err(), "the old policy has a problem");
        let mut labelled = old.clone();
        labelled["metadata"]["labels"] = json!({"a": "b"});
        assert_eq!(decide(&request("UPDATE", labelled, Some(old.clone()))), Ok(()));
        assert_eq!(decide(&request("DELETE", old.clone(), Some(old))), Ok(()));
    }

    #[test]
    fn interpreters_with_expressions_that_do_not_compile_are_denied() {
        let interpreter = |expression: &str| {
            json!({"apiVersion": "config.flotilla.io/v1alpha1", "kind": "WorkloadInterpreter",
                "metadata": {"name": "cloneset.v1alpha1.apps.kruise.io"},
                "spec": {"target": {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet"},
                    "replicasPath": "spec.replicas",
                    "health": {"expression": expression}}})
        };
        let review = |object: Value| {
            let mut r = request("CREATE", object, None);
            r.kind.kind = "WorkloadInterpreter".into();
            r.namespace = None;
            r
        };
        assert_eq!(
            decide(&review(interpreter("object.status.readyReplicas >= object.spec.replicas"))),
            Ok(())
        );
        let message = decide(&review(interpreter("object.status.readyReplicas >="))).unwrap_err();
        assert!(
            message.starts_with(
                "WorkloadInterpreter cloneset.v1alpha1.apps.kruise.io is invalid: spec.health.expression: \
                 does not compile"
            ),
            "{message}"
        );
    }

    #[test]
    fn urls_give_the_certificate_host() {
        assert_eq!(url_host("https://127.0.0.1:9443").unwrap(), "127.0.0.1");
        assert_eq!(url_host("https://[::1]:9443/").unwrap(), "::1");
        assert_eq!(url_host("https://hub.example.com").unwrap(), "hub.example.com");
        assert!(url_host("http://127.0.0.1:9443").is_err());
        assert!(url_host("127.0.0.1:9443").is_err());
        assert_eq!(webhook_url("https://h:1/"), "https://h:1/validate");
    }

    #[test]
    fn configuration_covers_the_four_policies_and_fails_open() {
        let config = configuration("https://h:1/validate", "PEM");
        let webhook = &config["webhooks"][0];
        assert_eq!(webhook["name"], WEBHOOK_NAME);
        assert_eq!(webhook["failurePolicy"], "Ignore");
        assert_eq!(webhook["timeoutSeconds"], 10);
        assert_eq!(webhook["rules"][0]["resources"].as_array().unwrap().len(), 4);
        assert_eq!(webhook["rules"][1]["resources"], json!(["workloadinterpreters"]));
        assert_eq!(webhook["clientConfig"]["caBundle"], "UEVN");
    }
}
