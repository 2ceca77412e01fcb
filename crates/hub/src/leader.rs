//! Leader election on a coordination.k8s.io Lease, so that several `flotilla
//! hub run` replicas are safe: only the holder runs controllers.
//!
//! [`run_elected`] competes for the lease, runs one *term* of controllers
//! while it holds it, and when the lease is lost (taken by another replica,
//! or not renewed in time because the API went away) drops the term's
//! future, which stops every controller task, and competes again. It never
//! returns on a lost lease: a replica that loses its API comes back as
//! leader or standby once the API does. The controllers are level-triggered,
//! so a new term starts from the objects as they are.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

use crate::error::Error;
use crate::names::SYSTEM_NAMESPACE;

pub const LEASE_NAME: &str = "flotilla-hub";
const LEASE_SECONDS: i32 = 15;
/// How often a standby tries to take the lease.
const RETRY: Duration = Duration::from_secs(2);
/// How often the leader renews.
const RENEW: Duration = Duration::from_secs(4);
/// The leader steps down when it has not renewed for this long, well before
/// the lease (`LEASE_SECONDS`) expires for the others.
const STEP_DOWN_AFTER: Duration = Duration::from_secs(LEASE_SECONDS as u64 - 5);
/// One lease request may take at most this long (a hanging API must not
/// keep a leader from noticing it cannot renew).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

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

/// [`try_acquire`] bounded by `budget`.
async fn attempt(api: &Api<Lease>, identity: &str, budget: Duration) -> Attempt {
    match tokio::time::timeout(budget, try_acquire(api, identity)).await {
        Ok(Ok(true)) => Attempt::Held,
        Ok(Ok(false)) => Attempt::Taken,
        Ok(Err(e)) => Attempt::Failed(e.to_string()),
        Err(_) => Attempt::Failed(format!("no answer in {} ms", budget.as_millis())),
    }
}

/// The outcome of one try to take or renew the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease (taken or renewed).
    Held,
    /// Another replica holds it.
    Taken,
    /// The API did not answer, or refused for another reason.
    Failed(String),
}

/// What a leader does after a renewal attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Keep leading; the lease was last renewed at the given instant.
    Lead,
    /// Keep leading for now: the renewal failed but the lease is still ours
    /// for a while.
    Retry,
    /// Stop the controllers now, for this reason.
    StepDown(String),
}

/// When a leader tries to renew, `since` its last renewal: how long to wait
/// first, and how long the request may take. Both end by the step-down
/// deadline, so a leader that cannot renew stops its controllers
/// [`STEP_DOWN_AFTER`] after its last renewal, whatever the API does.
pub fn next_renewal(since: Duration) -> (Duration, Duration) {
    let left = STEP_DOWN_AFTER.saturating_sub(since);
    // Leave the last try a second if there is one.
    let wait = RENEW.min(left.saturating_sub(Duration::from_secs(1)));
    (wait, REQUEST_TIMEOUT.min(left - wait))
}

/// Whether a leader keeps leading after a renewal `attempt`, `since` the
/// last successful renewal (before this attempt).
pub fn after_renewal(attempt: &Attempt, since: Duration) -> Renewal {
    match attempt {
        Attempt::Held => Renewal::Lead,
        Attempt::Taken => Renewal::StepDown("another hub replica took the leader lease".into()),
        Attempt::Failed(error) if since >= STEP_DOWN_AFTER => Renewal::StepDown(format!(
            "could not renew the leader lease for {} s (last error: {error})",
            since.as_secs()
        )),
        Attempt::Failed(_) => Renewal::Retry,
    }
}

/// How long a replica waits before competing again after its `failures`-th
/// term in a row ended because its controllers failed (not because the
/// lease was lost): 1 s doubling to 30 s.
pub fn backoff(failures: u32) -> Duration {
    let seconds = 1u64.checked_shl(failures.saturating_sub(1)).unwrap_or(u64::MAX);
    Duration::from_secs(seconds.min(30))
}

/// Waits until `identity` holds the lease.
async fn acquire(api: &Api<Lease>, identity: &str) {
    let mut waiting_logged = false;
    loop {
        match attempt(api, identity, REQUEST_TIMEOUT).await {
            Attempt::Held => return,
            Attempt::Taken if !waiting_logged => {
                tracing::info!(%identity, "another hub replica leads; standing by");
                waiting_logged = true;
            }
            Attempt::Taken => {}
            Attempt::Failed(error) => {
                tracing::warn!(%identity, %error, "leader election attempt failed; retrying")
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Renews the lease while it can; returns why it lost it.
async fn hold(api: &Api<Lease>, identity: &str) -> String {
    let mut last_renewal = Instant::now();
    loop {
        let (wait, budget) = next_renewal(last_renewal.elapsed());
        tokio::time::sleep(wait).await;
        let outcome = if budget.is_zero() {
            Attempt::Failed("no time left to renew".into())
        } else {
            attempt(api, identity, budget).await
        };
        match after_renewal(&outcome, last_renewal.elapsed()) {
            Renewal::Lead => last_renewal = Instant::now(),
            Renewal::Retry => {
                if let Attempt::Failed(error) = &outcome {
                    tracing::warn!(%identity, %error, "renewing the leader lease failed; retrying");
                }
            }
            Renewal::StepDown(reason) => return reason,
        }
    }
}

/// Gives the lease up if `identity` holds it, so a standby takes over at
/// once instead of after the lease expires; for a replica shutting down
/// after its controllers stopped. Best effort: a lease it cannot release
/// simply expires.
pub async fn release(client: Client, identity: &str) {
    let api: Api<Lease> = Api::namespaced(client, SYSTEM_NAMESPACE);
    let released = async {
        let Some(mut lease) = api.get_opt(LEASE_NAME).await? else { return Ok(false) };
        let Some(spec) = lease.spec.as_mut() else { return Ok(false) };
        if spec.holder_identity.as_deref() != Some(identity) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        api.replace(LEASE_NAME, &PostParams::default(), &lease).await?;
        Ok::<bool, kube::Error>(true)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, released).await {
        Ok(Ok(true)) => tracing::info!(%identity, "released the leader lease"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::warn!(%identity, error = %e, "could not release the leader lease"),
        Err(_) => tracing::warn!(%identity, "could not release the leader lease in time"),
    }
}

/// Competes for the lease and, while `identity` holds it, runs the future
/// `term()` returns: the controllers. When the lease is lost the term is
/// dropped (every task it owns stops with it) and the replica competes
/// again. A term that ends by itself (its controllers failed) is logged,
/// and the replica competes again after [`backoff`]. Runs until the
/// process ends.
pub async fn run_elected<F, Fut, E>(client: Client, identity: String, mut term: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let api: Api<Lease> = Api::namespaced(client, SYSTEM_NAMESPACE);
    let mut failures = 0u32;
    loop {
        acquire(&api, &identity).await;
        tracing::info!(%identity, "leading: starting the controllers");
        let started = Instant::now();
        tokio::select! {
            reason = hold(&api, &identity) => {
                tracing::warn!(%identity, %reason, "lost the leader lease: stopped the controllers; competing again");
                failures = 0;
            }
            ended = term() => {
                // A term that ran for a while was not a crash loop.
                if started.elapsed() > Duration::from_secs(60) {
                    failures = 0;
                }
                failures += 1;
                let wait = backoff(failures);
                match ended {
                    Ok(()) => tracing::warn!(%identity, wait_s = wait.as_secs(), "the controllers stopped; competing again"),
                    Err(e) => tracing::error!(%identity, error = %format!("{e:#}"), wait_s = wait.as_secs(),
                        "the controllers failed; competing again"),
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_steps_down_when_the_lease_is_taken_or_too_old() {
        let failed = Attempt::Failed("connection refused".into());
        let cases = [
            (Attempt::Held, 0, Renewal::Lead),
            (Attempt::Held, 30, Renewal::Lead),
            (failed.clone(), 0, Renewal::Retry),
            (failed.clone(), 9, Renewal::Retry),
            (Attempt::Taken, 0, Renewal::StepDown("another hub replica took the leader lease".into())),
        ];
        for (attempt, since, want) in cases {
            assert_eq!(
                after_renewal(&attempt, Duration::from_secs(since)),
                want,
                "{attempt:?} after {since}s"
            );
        }
        let Renewal::StepDown(reason) = after_renewal(&failed, Duration::from_secs(10)) else {
            panic!("a leader that could not renew for 10s keeps leading");
        };
        assert!(reason.contains("for 10 s") && reason.contains("connection refused"), "{reason}");
    }

    #[test]
    fn renewals_end_by_the_step_down_deadline() {
        let ms = Duration::from_millis;
        let cases = [
            // since last renewal -> (wait, request budget)
            (0, (4000, 3000)),
            (4000, (4000, 2000)),
            (5000, (4000, 1000)),
            (6000, (3000, 1000)),
            (7000, (2000, 1000)),
            (9500, (0, 500)),
            (10_000, (0, 0)),
            (20_000, (0, 0)),
        ];
        for (since, (wait, budget)) in cases {
            assert_eq!(next_renewal(ms(since)), (ms(wait), ms(budget)), "{since} ms after the last renewal");
        }
        // Whatever the API does, a leader that cannot renew stops before the
        // lease expires for the others.
        for since in (0..=12_000).step_by(250) {
            let (wait, budget) = next_renewal(ms(since));
            assert!(ms(since) + wait + budget <= STEP_DOWN_AFTER.max(ms(since)), "{since}");
        }
        assert!(STEP_DOWN_AFTER < Duration::from_secs(LEASE_SECONDS as u64));
    }

    #[test]
    fn backoff_doubles_from_one_second_to_thirty() {
        let cases =
            [(0, 1), (1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (7, 30), (64, 30), (u32::MAX, 30)];
        for (failures, seconds) in cases {
            assert_eq!(backoff(failures), Duration::from_secs(seconds), "after {failures} failures");
        }
    }
}
