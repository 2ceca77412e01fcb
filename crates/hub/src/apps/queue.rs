//! A deduplicating work queue: a key is queued at most once, and a key
//! added while it is being worked on is worked on again afterwards (so no
//! change is missed and no key runs twice at the same time). Keys wait in
//! priority order (higher first; Karmada's `schedulePriority`), first in
//! first out within a priority; a key's priority is what was last set for
//! it (0 until then).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

pub struct Queue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
    /// Keys waiting (not running), for `flotilla_queue_depth`.
    depth: flotilla_metrics::QueueGauge,
}

/// Where a waiting key sorts: higher priority first, then arrival.
type Slot = (Reverse<i32>, u64);

struct State<K> {
    pending: BTreeMap<Slot, K>,
    /// Waiting keys and their slot.
    queued: HashMap<K, Slot>,
    running: HashSet<K>,
    dirty: HashSet<K>,
    /// Each key's priority, as last set (absent: 0).
    priorities: HashMap<K, i32>,
    arrivals: u64,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Queue<K> {
    /// A queue whose depth the metrics report as `queue="<name>"`.
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                pending: BTreeMap::new(),
                queued: HashMap::new(),
                running: HashSet::new(),
                dirty: HashSet::new(),
                priorities: HashMap::new(),
                arrivals: 0,
            }),
            notify: Notify::new(),
            depth: flotilla_metrics::instruments().queue(name),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // A panic while holding this lock cannot leave the sets half
        // updated in a way that matters more than losing the queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.running.contains(&key) {
            s.dirty.insert(key);
        } else if !s.queued.contains_key(&key) {
            let priority = s.priorities.get(&key).copied().unwrap_or(0);
            s.arrivals += 1;
            let slot = (Reverse(priority), s.arrivals);
            s.queued.insert(key.clone(), slot);
            s.pending.insert(slot, key);
            self.depth.set(s.pending.len() as i64);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Sets a key's priority (`None`: back to 0, forgotten); a waiting key
    /// moves to its new place, keeping its arrival.
    pub fn set_priority(&self, key: &K, priority: Option<i32>) {
        let mut s = self.lock();
        let before = match priority {
            Some(p) if p != 0 => s.priorities.insert(key.clone(), p),
            _ => s.priorities.remove(key),
        }
        .unwrap_or(0);
        let now = priority.unwrap_or(0);
        if before == now {
            return;
        }
        if let Some(slot) = s.queued.get(key).copied() {
            if let Some(k) = s.pending.remove(&slot) {
                let moved = (Reverse(now), slot.1);
                s.pending.insert(moved, k);
                s.queued.insert(key.clone(), moved);
            }
        }
    }

    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Waits for the next key; the caller must call `done` with it.
    pub async fn next(&self) -> K {
        loop {
            {
                let mut s = self.lock();
                if let Some((_, key)) = s.pending.pop_first() {
                    s.queued.remove(&key);
                    s.running.insert(key.clone());
                    self.depth.set(s.pending.len() as i64);
                    if !s.pending.is_empty() {
                        // Let another worker pick up the rest.
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            self.notify.notified().await;
        }
    }

    pub fn done(&self, key: &K) {
        let again = {
            let mut s = self.lock();
            s.running.remove(key);
            s.dirty.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_rerun_when_added_while_running() {
        let q = Queue::new("queue-test");
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let first = q.next().await;
        assert_eq!(first, "a");
        q.add("a"); // while running
        assert_eq!(q.len(), 1);
        q.done(&first);
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, "b");
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test]
    async fn higher_priorities_go_first_then_first_in_first_out() {
        let q = Queue::new("queue-priority-test");
        q.set_priority(&"critical", Some(1000));
        q.set_priority(&"low", Some(-5));
        for key in ["a", "low", "b", "critical", "c"] {
            q.add(key);
        }
        // A waiting key moves when its priority changes.
        q.set_priority(&"c", Some(10));
        let mut order = Vec::new();
        for _ in 0..5 {
            let key = q.next().await;
            q.done(&key);
            order.push(key);
        }
        assert_eq!(order, ["critical", "c", "a", "b", "low"]);
        // Priorities are remembered for the next add; None forgets.
        q.set_priority(&"critical", None);
        q.add("a");
        q.add("critical");
        q.add("c");
        assert_eq!(q.next().await, "c");
        assert_eq!(q.next().await, "a");
        assert_eq!(q.next().await, "critical");
        assert_eq!(q.len(), 0);
    }
}
