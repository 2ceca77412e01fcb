//! Leader election on a coordination.k8s.io Lease, so that several `flotilla
//! hub run` replicas are safe: only the holder runs controllers, and a holder
//! that cannot renew stops (its process exits) before anyone else may take
//! over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

use crate::{Error, SYSTEM_NAMESPACE};

pub const LEASE_NAME: &str = "flotilla-hub";
const LEASE_SECONDS: i32 = 15;
const RETRY: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_secs(4);

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn expired(lease: &Lease) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let (Some(renew), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else { return true };
    let age = k8s_openapi::jiff::Timestamp::now().duration_since(renew.0);
    age > k8s_openapi::jiff::SignedDuration::from_secs(seconds as i64)
}

/// Tries once to take or keep the lease; true when `identity` holds it.
async fn try_acquire(api: &Api<Lease>, identity: &str) -> Result<bool, Error> {
    match api.get_opt(LEASE_NAME).await? {
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": SYSTEM_NAMESPACE},
                "spec": {"holderIdentity": identity, "leaseDurationSeconds": LEASE_SECONDS,
                    "acquireTime": now(), "renewTime": now(), "leaseTransitions": 0}
            }))?;
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
        Some(mut lease) => {
            let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
            let mine = holder.as_deref() == Some(identity);
            if !mine && !expired(&lease) {
                return Ok(false);
            }
            let spec = lease.spec.get_or_insert_with(Default::default);
            if !mine {
                spec.acquire_time = Some(now());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(identity.to_string());
            spec.lease_duration_seconds = Some(LEASE_SECONDS);
            spec.renew_time = Some(now());
            // resourceVersion makes this a compare-and-swap.
            match api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Waits until `identity` leads, then keeps renewing in the background. The
/// returned future resolves if leadership is lost.
pub async fn lead(
    client: Client,
    identity: String,
) -> Result<impl std::future::Future<Output = Error>, Error> {
    let api: Api<Lease> = Api::namespaced(client, SYSTEM_NAMESPACE);
    let mut waiting_logged = false;
    loop {
        match try_acquire(&api, &identity).await {
            Ok(true) => break,
            Ok(false) if !waiting_logged => {
                tracing::info!(%identity, "another hub replica leads; standing by");
                waiting_logged = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
        }
        tokio::time::sleep(RETRY).await;
    }
    tracing::info!(%identity, "leading");
    Ok(async move {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(RENEW).await;
            match try_acquire(&api, &identity).await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => return Error::Other("another hub replica took the leader lease".into()),
                Err(e) => tracing::warn!(error = %e, "renewing the leader lease failed"),
            }
            // Stop well before the lease can expire for the others.
            if last_renewal.elapsed() > Duration::from_secs(LEASE_SECONDS as u64 - 5) {
                return Error::Other("could not renew the leader lease in time".into());
            }
        }
    })
}
