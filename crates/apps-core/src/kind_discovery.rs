//! When the hub asks its discovery again about a template kind it found
//! not served (a CRD not installed yet, or deleted): not on every round of
//! its kind loop (that asked every 2 s for hours after a CRD was deleted),
//! but when some CRD changed after the kind was found missing, for a short
//! while after any CRD change (discovery lags a CRD's creation a little),
//! and otherwise rarely (kinds served by aggregated APIs raise no CRD
//! event).

use std::time::{Duration, Instant};

/// How long after a CRD change the hub keeps asking about missing kinds.
pub const AFTER_CRD_CHANGE: Duration = Duration::from_secs(10);
/// How often it asks regardless.
pub const FALLBACK: Duration = Duration::from_secs(300);

/// Whether to ask about a kind found not served at `found_missing`, given
/// the last CRD change the hub saw (if any) and `now`.
pub fn ask_again(found_missing: Instant, last_crd_change: Option<Instant>, now: Instant) -> bool {
    let changed_since = last_crd_change.is_some_and(|c| c > found_missing);
    let changed_lately = last_crd_change.is_some_and(|c| now.saturating_duration_since(c) < AFTER_CRD_CHANGE);
    changed_since || changed_lately || now.saturating_duration_since(found_missing) >= FALLBACK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_kind_is_asked_about_again_only_when_crds_change_or_rarely() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let cases = [
            ("no CRD ever changed, just found", t0, None, t0 + s(2), false),
            ("no CRD change, a minute on", t0, None, t0 + s(60), false),
            ("a CRD changed long before", t0 + s(100), Some(t0), t0 + s(102), false),
            ("a CRD changed after it was found missing", t0, Some(t0 + s(1)), t0 + s(30), true),
            ("a CRD changed just before (discovery lags)", t0 + s(3), Some(t0), t0 + s(5), true),
            ("the fallback", t0, None, t0 + FALLBACK, true),
        ];
        for (name, found_missing, last_change, now, want) in cases {
            assert_eq!(ask_again(found_missing, last_change, now), want, "{name}");
        }
    }
}
