//! Status conditions: one way to build them, so every writer keeps
//! `lastTransitionTime` while a condition's status holds, and never writes
//! a value the API server refuses.
//!
//! A condition's `reason` and `message` are required strings, and an empty
//! one makes the whole status write fail (Kubernetes 1.20, our first
//! target, even read `""` as `null`). [`condition`] fills them in instead.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as its writer decides it (no time yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
}

impl Wanted {
    pub fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.into(),
            status: if ok { "True" } else { "False" },
            reason: reason.into(),
            message: message.into(),
            observed_generation: None,
        }
    }

    /// With the status as a string (`True`, `False`, `Unknown`), for
    /// decisions that return one.
    pub fn with_status(type_: &str, status: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self { status, ..Self::new(type_, false, reason, message) }
    }

    pub fn unknown(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self { status: "Unknown", ..Self::new(type_, false, reason, message) }
    }

    pub fn generation(mut self, generation: Option<i64>) -> Self {
        self.observed_generation = generation;
        self
    }
}

/// The condition to write: `wanted`, since the previous condition of its
/// type when the status did not change (else since `now`). An empty reason
/// becomes `Unknown`, an empty message the reason.
pub fn condition(previous: &[Condition], wanted: Wanted, now: &Time) -> Condition {
    let reason = if wanted.reason.is_empty() { "Unknown".to_string() } else { wanted.reason };
    let message = if wanted.message.is_empty() { reason.clone() } else { wanted.message };
    let since = previous
        .iter()
        .find(|c| c.type_ == wanted.type_ && c.status == wanted.status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: wanted.type_,
        status: wanted.status.into(),
        reason,
        message,
        last_transition_time: since,
        observed_generation: wanted.observed_generation,
    }
}

/// Sets one condition in a list (replacing the one of its type, keeping
/// its transition time while its status holds). True when the list changed
/// in anything but time.
pub fn set(conditions: &mut Vec<Condition>, wanted: Wanted, now: &Time) -> bool {
    let new = condition(conditions, wanted, now);
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            let changed = !same(std::slice::from_ref(old), std::slice::from_ref(&new));
            *old = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Whether two condition lists say the same (times aside), in order.
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn the_transition_time_holds_while_the_status_does() {
        let first = condition(&[], Wanted::new("Ready", true, "Up", "all good"), &time(10));
        assert_eq!(first.last_transition_time, time(10));
        assert_eq!((first.status.as_str(), first.reason.as_str()), ("True", "Up"));

        // Same status, other message: the time is kept.
        let again = condition(
            std::slice::from_ref(&first),
            Wanted::new("Ready", true, "Up", "still good"),
            &time(20),
        );
        assert_eq!(again.last_transition_time, time(10));
        assert_eq!(again.message, "still good");

        // Flipped: a new time.
        let flipped =
            condition(std::slice::from_ref(&again), Wanted::new("Ready", false, "Down", "gone"), &time(30));
        assert_eq!(flipped.last_transition_time, time(30));
        // Unknown is a status of its own.
        let unknown =
            condition(std::slice::from_ref(&flipped), Wanted::unknown("Ready", "Lost", "no word"), &time(40));
        assert_eq!((unknown.status.as_str(), unknown.last_transition_time.clone()), ("Unknown", time(40)));

        // Another type's time is not borrowed.
        let other = condition(&[first], Wanted::new("Valid", true, "Valid", "ok"), &time(50));
        assert_eq!(other.last_transition_time, time(50));
    }

    #[test]
    fn a_status_given_as_a_string_is_the_same_condition() {
        let cases = [
            ("True", Wanted::new("Ready", true, "Up", "m")),
            ("False", Wanted::new("Ready", false, "Up", "m")),
            ("Unknown", Wanted::unknown("Ready", "Up", "m")),
        ];
        for (status, wanted) in cases {
            assert_eq!(Wanted::with_status("Ready", status, "Up", "m"), wanted, "{status}");
        }
    }

    #[test]
    fn empty_reasons_and_messages_are_never_written() {
        let c = condition(&[], Wanted::new("Ready", false, "", ""), &time(1));
        assert_eq!((c.reason.as_str(), c.message.as_str()), ("Unknown", "Unknown"));
        let c = condition(&[], Wanted::new("Ready", false, "Broken", ""), &time(1));
        assert_eq!(c.message, "Broken");
    }

    #[test]
    fn set_replaces_by_type_and_says_whether_anything_but_time_changed() {
        let mut list = Vec::new();
        assert!(set(&mut list, Wanted::new("A", true, "Ok", "a").generation(Some(1)), &time(1)));
        assert!(set(&mut list, Wanted::new("B", false, "No", "b"), &time(1)));
        assert!(!set(&mut list, Wanted::new("A", true, "Ok", "a").generation(Some(1)), &time(5)));
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].last_transition_time, time(1));
        assert!(set(&mut list, Wanted::new("A", true, "Ok", "a").generation(Some(2)), &time(6)));
        assert_eq!(list[0].last_transition_time, time(1), "same status keeps its time");
        assert!(set(&mut list, Wanted::new("B", true, "Yes", "b"), &time(7)));
        assert_eq!(list[1].last_transition_time, time(7));
        assert!(same(&list, &list.clone()));
        assert!(!same(&list, &list[..1]));
    }
}
