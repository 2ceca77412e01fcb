//! Ages and time left, written as `kubectl` writes them (`45s`, `12m`,
//! `3h`, `5d`), from timestamps and a `now` passed in.

use k8s_openapi::jiff::Timestamp;

/// Seconds between `then` and `now` written short; a timestamp in the
/// future (clock skew) is `0s`.
pub fn age(then: Timestamp, now: Timestamp) -> String {
    short_duration(now.as_second() - then.as_second())
}

/// A span in seconds written with its largest unit: `59s`, `1m`, `23h`,
/// `2d`; negative spans are written as `0s`.
pub fn short_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Time left until `deadline` (a certificate's `notAfter`): `expired` once
/// past, else the short span.
pub fn time_left(deadline: Timestamp, now: Timestamp) -> String {
    let left = deadline.as_second() - now.as_second();
    if left <= 0 {
        "expired".to_string()
    } else {
        short_duration(left)
    }
}
