//! The binder: for one template, pick its policy, choose its clusters
//! (scheduler in `flotilla-core`), write its binding and one Work per
//! cluster with overrides applied, and remove what is no longer wanted.
//! `reconcile` runs one pass as steps, each in its own module: read
//! (`binder_pass`), policy (`binder_policy`), inputs (`binder_pass`),
//! scheduling (`binder_schedule`), binding (`binder_binding`), Works
//! (`binder_dispatch`); a step may end the pass (with a requeue).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use super::binder_pass::{self, Pass, Requeue};
use super::index::TemplateKey;
use super::state::Apps;
use crate::error::Error;

pub(super) async fn worker(apps: Arc<Apps>) {
    apps.wait_ready().await;
    apps.wait_policies_judged().await;
    loop {
        let key = apps.binder.next().await;
        let started = std::time::Instant::now();
        let object = flotilla_metrics::ObjectKey::new(Some(&key.namespace), &key.name);
        let result = flotilla_metrics::observe("binder", &object, reconcile(&apps, &key)).await;
        if let Some(after) = apps.bound(&key, result) {
            apps.binder.add_after(key.clone(), after);
        }
        tracing::debug!(template = %key, elapsed_ms = started.elapsed().as_millis() as u64, "bound");
        apps.binder.done(&key);
    }
}

/// Goes on with a step's result, or ends the pass with its requeue.
macro_rules! go_on {
    ($step:expr) => {
        match $step {
            ControlFlow::Continue(value) => value,
            ControlFlow::Break(requeue) => return Ok(requeue),
        }
    };
}

async fn reconcile(apps: &Apps, key: &TemplateKey) -> Result<Option<Duration>, Error> {
    let template = go_on!(binder_pass::read(apps, key).await?);
    let claim = go_on!(super::binder_policy::claim(apps, key, &template).await?);
    let inputs = go_on!(binder_pass::inputs(apps, key, &template));
    let pass = Pass { apps, key, template, claim, inputs };
    let mut requeue = Requeue::default();
    let placed = go_on!(super::binder_schedule::schedule(&pass, &mut requeue).await?);
    let bound = super::binder_binding::bind(&pass, placed, &mut requeue).await?;
    super::binder_dispatch::write_works(&pass, &bound, &mut requeue).await?;
    super::binder_dispatch::remove_unwanted(&pass, &bound).await?;
    apps.status.add(key.clone());
    Ok(requeue.after())
}
