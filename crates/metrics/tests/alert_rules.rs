//! The alert rules in `deploy/prometheus` load and fire as their unit tests
//! say, checked by Debian's `promtool` (installed by `scripts/test-tools.sh`).

use std::path::PathBuf;
use std::process::Command;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool").args(args).current_dir(rules_dir()).output().unwrap_or_else(|e| {
        panic!("running promtool (scripts/test-tools.sh installs Debian's prometheus): {e}")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid_and_pass_their_unit_tests() {
    let checked = promtool(&["check", "rules", "flotilla-alerts.yaml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "flotilla-alerts-test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every metric an alert reads is one the code serves (a renamed metric
/// would leave an alert that can never fire).
#[test]
fn alerts_read_only_metrics_flotilla_serves() {
    let rules = std::fs::read_to_string(rules_dir().join("flotilla-alerts.yaml")).unwrap();
    let served = [
        "flotilla_cluster_available",
        "flotilla_etcd_has_quorum",
        "flotilla_etcd_has_leader",
        "flotilla_etcd_voting_members",
        "flotilla_hosted_cluster_certificate_expiry_seconds",
        "flotilla_reconcile_errors_total",
        "flotilla_reconciles_total",
        "flotilla_rollout_step_seconds",
        "flotilla_rollout_step_limit_seconds",
        "flotilla_hosted_cluster_upgrade_step_seconds",
        "flotilla_etcd_upgrade_step_seconds",
    ];
    let sources = [
        include_str!("../../hub/src/metrics.rs"),
        include_str!("../../kok/src/metrics.rs"),
        include_str!("../src/registry.rs"),
    ]
    .concat();
    let mut used: Vec<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("flotilla_"))
        .collect();
    used.sort();
    used.dedup();
    assert!(!used.is_empty());
    for name in used {
        assert!(served.contains(&name), "the alerts read {name}, not in the list of served metrics");
        // The name in code is without the prefix and, for counters, the
        // `_total` suffix the encoder adds.
        let in_code = name.trim_start_matches("flotilla_").trim_end_matches("_total");
        assert!(
            sources.contains(&format!("\"{in_code}\"")),
            "{name} ({in_code:?}) is not registered by the code"
        );
    }
}
