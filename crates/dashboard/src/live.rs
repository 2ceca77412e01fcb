//! The live channel: server-sent events. The fleet page gets a snapshot of
//! its rows (filtered by its label selector) and then row deltas from the
//! shared ManagedCluster watch; every page gets `changed` notices naming a
//! kind, on which it refetches its JSON (built from the stores).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::api::{readable_clusters, SelectorQuery, Shared};
use crate::auth::Caller;
use crate::error::Error;
use crate::gate;
use crate::view::fleet::fleet_row;
use crate::view::selector::Selector;
use crate::watch::FleetDelta;

struct Subscriber {
    state: Shared,
    /// Rows are sent only for clusters this caller may read.
    caller: Caller,
    selector: Selector,
    fleet: broadcast::Receiver<FleetDelta>,
    changed: broadcast::Receiver<&'static str>,
    /// The first event is the snapshot.
    snapshot_due: bool,
}

pub async fn live(
    State(state): State<Shared>,
    caller: Caller,
    Query(query): Query<SelectorQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Error> {
    readable_clusters(&state, &caller).await?;
    let selector = Selector::parse(&query.selector).map_err(|e| Error::BadRequest(e.to_string()))?;
    // Subscribed before the snapshot is read, so no change falls between.
    let subscriber = Subscriber {
        fleet: state.watches.fleet.subscribe(),
        changed: state.watches.changed.subscribe(),
        state,
        caller,
        selector,
        snapshot_due: true,
    };
    let stream = futures::stream::unfold(subscriber, |mut s| async move {
        let event = next_event(&mut s).await?;
        Some((Ok(event), s))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn next_event(s: &mut Subscriber) -> Option<Event> {
    loop {
        if s.snapshot_due {
            s.snapshot_due = false;
            return Some(snapshot(s).await);
        }
        tokio::select! {
            delta = s.fleet.recv() => match delta {
                // Not the caller's to read: as if it did not exist (a
                // failed review sends nothing either).
                Ok(FleetDelta::Upsert(row)) if !may_read(s, &row.name).await => {
                    return Some(Event::default().event("remove").data(row.name.clone()));
                }
                Ok(FleetDelta::Upsert(row)) if s.selector.matches(&row.labels) => {
                    // A row always serialises; a failure would only skip it.
                    return Some(Event::default().event("upsert").json_data(&*row).unwrap_or_default());
                }
                // A row that no longer matches leaves the page.
                Ok(FleetDelta::Upsert(row)) => {
                    return Some(Event::default().event("remove").data(row.name.clone()));
                }
                Ok(FleetDelta::Remove(name)) => return Some(Event::default().event("remove").data(name)),
                Ok(FleetDelta::Resync) | Err(RecvError::Lagged(_)) => s.snapshot_due = true,
                Err(RecvError::Closed) => return None,
            },
            kind = s.changed.recv() => match kind {
                Ok(kind) => return Some(Event::default().event("changed").data(kind)),
                Err(RecvError::Lagged(_)) => return Some(Event::default().event("changed").data("*")),
                Err(RecvError::Closed) => return None,
            },
        }
    }
}

async fn may_read(s: &Subscriber, name: &str) -> bool {
    gate::names(&s.state.auth, &s.caller, gate::MANAGED_CLUSTERS, [name.to_string()])
        .await
        .is_ok_and(|readable| readable.contains(name))
}

async fn snapshot(s: &Subscriber) -> Event {
    let now = Timestamp::now();
    // A failed review shows nothing rather than everything.
    let readable =
        readable_clusters(&s.state, &s.caller).await.unwrap_or(gate::Readable::Only(Default::default()));
    let mut rows: Vec<_> = s
        .state
        .watches
        .clusters
        .state()
        .iter()
        .filter(|mc| readable.contains(&mc.name_any()) && s.selector.matches(mc.labels()))
        .map(|mc| fleet_row(mc, now))
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Event::default().event("snapshot").json_data(json!({ "rows": rows })).unwrap_or_else(|_| Event::default())
}
