//! A deduplicating work queue: a key is queued at most once, and a key
//! added while it is being worked on is worked on again afterwards (so no
//! change is missed and no key runs twice at the same time).

use std::collections::{HashSet, VecDeque};
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

struct State<K> {
    pending: VecDeque<K>,
    queued: HashSet<K>,
    running: HashSet<K>,
    dirty: HashSet<K>,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Queue<K> {
    /// A queue whose depth the metrics report as `queue="<name>"`.
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                queued: HashSet::new(),
                running: HashSet::new(),
                dirty: HashSet::new(),
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
        } else if s.queued.insert(key.clone()) {
            s.pending.push_back(key);
            self.depth.set(s.pending.len() as i64);
            drop(s);
            self.notify.notify_one();
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
                if let Some(key) = s.pending.pop_front() {
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
}
