//! Certificate requests as both registration controllers (clusters'
//! agents, machines' node agents) read and decide them: whether one is
//! decided, its facts for the pure decision in core, and the approval or
//! denial written back.

use flotilla_fleet_core::membership::{self, CsrFacts};
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

use crate::error::Error;

/// Whether a request is approved or denied already.
pub(crate) fn decided(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Approved" || c.type_ == "Denied"))
}

/// What a controller's cache keeps of a request: no managed fields, and no
/// request or certificate once it is decided (at 1,000 clusters that is
/// most of the hub's memory).
pub(crate) fn trim_for_cache(csr: &mut CertificateSigningRequest) {
    csr.managed_fields_mut().clear();
    if decided(csr) {
        csr.spec.request = k8s_openapi::ByteString(Vec::new());
        if let Some(status) = csr.status.as_mut() {
            status.certificate = None;
        }
    }
}

/// The cluster a Flotilla agent CSR is for (from the request's subject).
pub(crate) fn cluster_of(csr: &CertificateSigningRequest) -> Option<String> {
    let subject = membership::parse_csr(&csr.spec.request.0).ok()?;
    membership::cluster_of_agent_user(&subject.common_name).map(str::to_string)
}

/// The request as the core decisions read it.
pub(crate) fn facts(csr: &CertificateSigningRequest) -> Result<CsrFacts, String> {
    let subject = membership::parse_csr(&csr.spec.request.0)?;
    Ok(CsrFacts {
        requester: csr.spec.username.clone().unwrap_or_default(),
        requester_groups: csr.spec.groups.clone().unwrap_or_default(),
        signer: csr.spec.signer_name.clone(),
        usages: csr.spec.usages.clone().unwrap_or_default(),
        subject_common_name: subject.common_name,
        subject_organizations: subject.organizations,
        public_key_sha256: subject.public_key_sha256,
    })
}

/// Approves or denies a request (`type_`: `Approved` or `Denied`).
pub(crate) async fn decide(
    client: &Client,
    csr: &CertificateSigningRequest,
    type_: &str,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut updated = csr.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    status.conditions.get_or_insert_with(Vec::new).push(CertificateSigningRequestCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..Default::default()
    });
    api.replace_subresource("approval", &csr.name_any(), &PostParams::default(), &updated).await?;
    Ok(())
}
