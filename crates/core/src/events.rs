//! What a controller wants to tell a person about a decision, as a
//! Kubernetes Event: the domain crates decide *when* (on a transition, never
//! on every reconcile) and *what*; the I/O crates publish it with
//! kube-runtime's recorder.

/// Whether a decision is routine or needs a person's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// One Event to publish about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub severity: Severity,
    /// CamelCase, machine-readable (`Scheduled`, `ClusterUnreachable`).
    pub reason: String,
    /// What the controller did or observed (`Schedule`, `Heartbeat`). The
    /// recorder merges Events of one action and reason on one object into a
    /// series that keeps the first message: an action that names what
    /// differs keeps distinct messages apart.
    pub action: String,
    /// A sentence a person can act on.
    pub message: String,
}

impl Notice {
    pub fn normal(reason: &str, action: &str, message: impl Into<String>) -> Self {
        Notice {
            severity: Severity::Normal,
            reason: reason.into(),
            action: action.into(),
            message: message.into(),
        }
    }

    pub fn warning(reason: &str, action: &str, message: impl Into<String>) -> Self {
        Notice {
            severity: Severity::Warning,
            reason: reason.into(),
            action: action.into(),
            message: message.into(),
        }
    }

    /// The action with a digest of the message: Events of one reason whose
    /// messages differ (each step of an upgrade) stay apart instead of
    /// merging into a series under the first message.
    pub fn distinct(mut self) -> Self {
        // FNV-1a: stable across builds, which `DefaultHasher` is not.
        let digest = self
            .message
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
        self.action = format!("{} {digest:016x}", self.action);
        self
    }
}

/// The API server refuses an Event note over 1 kB: cut on a character
/// boundary.
pub fn bounded_note(message: &str) -> String {
    const MAX: usize = 1000;
    if message.len() <= MAX {
        return message.to_string();
    }
    let mut end = MAX - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_actions_follow_the_message() {
        let a = Notice::normal("UpgradeStep", "Upgrade", "kube-apiserver moved").distinct();
        let again = Notice::normal("UpgradeStep", "Upgrade", "kube-apiserver moved").distinct();
        let b = Notice::normal("UpgradeStep", "Upgrade", "kube-scheduler moved").distinct();
        assert_eq!(a.action, again.action);
        assert_ne!(a.action, b.action);
        assert!(a.action.starts_with("Upgrade "));
    }

    #[test]
    fn notes_are_bounded_on_character_boundaries() {
        let cases: Vec<(&str, String, usize)> = vec![
            ("short", "ok".into(), 2),
            ("exactly the limit", "a".repeat(1000), 1000),
            ("long ascii", "a".repeat(2000), 1000),
            ("long multibyte", "é".repeat(700), 999),
        ];
        for (name, input, want_len) in cases {
            let got = bounded_note(&input);
            assert_eq!(got.len(), want_len, "{name}");
            assert!(got.len() <= 1000, "{name}");
        }
    }
}
