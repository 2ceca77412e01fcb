//! Which Rollout a command means: its own name (`web-deployment`) or its
//! template's `KIND/NAME` (`deployment/web`, `deploy/web`,
//! `Deployment/web`), as kubectl names objects.

use flotilla_apps_core::binding::binding_name;

/// What the user typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// A Rollout's name.
    Rollout(String),
    /// A template: the kind as typed and its name.
    Template { kind: String, name: String },
}

/// Reads NAME or KIND/NAME.
pub fn parse(arg: &str) -> Result<Wanted, String> {
    let bad = || format!("{arg:?} is neither a Rollout name nor KIND/NAME (e.g. deployment/web)");
    match arg.split_once('/') {
        None if !arg.is_empty() => Ok(Wanted::Rollout(arg.to_string())),
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() && !name.contains('/') => {
            // `deployment.apps/web`: the group is not needed to find it.
            let kind = kind.split_once('.').map_or(kind, |(k, _)| k);
            Ok(Wanted::Template { kind: kind.to_string(), name: name.to_string() })
        }
        _ => Err(bad()),
    }
}

/// The built-in kinds a user may name by kubectl's short names and plurals:
/// (names, apiVersion, Kind).
const KINDS: &[(&[&str], &str, &str)] = &[
    (&["deployment", "deployments", "deploy"], "apps/v1", "Deployment"),
    (&["statefulset", "statefulsets", "sts"], "apps/v1", "StatefulSet"),
    (&["daemonset", "daemonsets", "ds"], "apps/v1", "DaemonSet"),
    (&["replicaset", "replicasets"], "apps/v1", "ReplicaSet"),
    (&["job", "jobs"], "batch/v1", "Job"),
    (&["cronjob", "cronjobs", "cj"], "batch/v1", "CronJob"),
    (&["configmap", "configmaps", "cm"], "v1", "ConfigMap"),
    (&["secret", "secrets"], "v1", "Secret"),
    (&["service", "services", "svc"], "v1", "Service"),
    (&["serviceaccount", "serviceaccounts", "sa"], "v1", "ServiceAccount"),
];

/// The apiVersion and Kind of a built-in kind as typed (`deploy` →
/// `apps/v1`, `Deployment`); `None` for others (custom resources).
pub fn builtin(kind: &str) -> Option<(&'static str, &'static str)> {
    let typed = kind.to_ascii_lowercase();
    KINDS.iter().find(|(names, _, _)| names.contains(&typed.as_str())).map(|(_, v, k)| (*v, *k))
}

/// Whether a kind as typed names a template's Kind: the Kind itself in
/// any case, a built-in's short name or plural, or a plural made with `s`.
pub fn kind_matches(typed: &str, kind: &str) -> bool {
    if let Some((_, builtin_kind)) = builtin(typed) {
        return builtin_kind == kind;
    }
    let typed = typed.to_ascii_lowercase();
    let kind = kind.to_ascii_lowercase();
    typed == kind || typed == format!("{kind}s")
}

/// A Rollout as listed: its name and its template's kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub template_kind: String,
    pub template_name: String,
}

/// The Rollout meant, among those of the namespace.
pub fn find<'a>(wanted: &Wanted, listed: &'a [Listed]) -> Option<&'a Listed> {
    match wanted {
        Wanted::Rollout(name) => listed.iter().find(|r| r.name == *name),
        Wanted::Template { kind, name } => {
            listed.iter().find(|r| r.template_name == *name && kind_matches(kind, &r.template_kind))
        }
    }
}

/// The name the hub gives the Rollout of a template (like its binding),
/// for a built-in kind; for other kinds `<name>-<kind>` (exact unless the
/// name is too long, which needs the group).
pub fn expected(wanted: &Wanted) -> String {
    match wanted {
        Wanted::Rollout(name) => name.clone(),
        Wanted::Template { kind, name } => match builtin(kind) {
            Some((api_version, kind)) => binding_name(api_version, kind, name),
            None => format!("{name}-{}", kind.to_ascii_lowercase()),
        },
    }
}

/// How to say what was asked for: `Rollout web-deployment` or
/// `Deployment web`.
pub fn describe(wanted: &Wanted) -> String {
    match wanted {
        Wanted::Rollout(name) => format!("Rollout {name}"),
        Wanted::Template { kind, name } => {
            format!("{} {name}", builtin(kind).map_or(kind.as_str(), |(_, k)| k))
        }
    }
}

/// What the namespace holds, for saying why a Rollout was not found.
pub struct Lookup<'a> {
    pub namespace: &'a str,
    pub rollouts: &'a [Listed],
    /// The RolloutStrategies of the namespace, and whether each selects the
    /// template asked for (`false` when no template was asked for).
    pub strategies: &'a [(String, bool)],
    /// Whether the template asked for exists (`None`: not asked for, or
    /// its kind is unknown).
    pub template_exists: Option<bool>,
}

/// Why the Rollout asked for is not there, and what is.
pub fn not_found(wanted: &Wanted, l: &Lookup) -> String {
    let ns = l.namespace;
    let what = describe(wanted);
    let names = |v: Vec<String>| v.join(", ");
    let strategies = names(l.strategies.iter().map(|(n, _)| n.clone()).collect());
    if l.template_exists == Some(false) {
        return format!("no {what} in namespace {ns}");
    }
    if l.strategies.is_empty() {
        return format!(
            "no Rollout {} in namespace {ns}: no RolloutStrategy there, so its templates change everywhere at              once (create a RolloutStrategy to roll them out in waves)",
            expected(wanted)
        );
    }
    match wanted {
        Wanted::Template { .. } => match l.strategies.iter().find(|(_, selects)| *selects) {
            Some((strategy, _)) => format!(
                "RolloutStrategy {strategy} selects {what}, but the hub has not written its Rollout {} yet (is                  `flotilla hub run` running, and does a PropagationPolicy select it?)",
                expected(wanted)
            ),
            None => format!(
                "no RolloutStrategy in namespace {ns} selects {what} (strategies there: {strategies}), so its                  changes go everywhere at once"
            ),
        },
        Wanted::Rollout(name) if l.rollouts.is_empty() => format!(
            "no Rollout {name} in namespace {ns}: there is none; RolloutStrategies there: {strategies} (the hub              writes a Rollout for each template one selects and a PropagationPolicy propagates)"
        ),
        Wanted::Rollout(name) => format!(
            "no Rollout {name} in namespace {ns}; Rollouts there: {}",
            names(
                l.rollouts
                    .iter()
                    .map(|r| format!("{} ({}/{})", r.name, r.template_kind.to_ascii_lowercase(), r.template_name))
                    .collect()
            )
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> Vec<Listed> {
        let r = |name: &str, kind: &str, template: &str| Listed {
            name: name.into(),
            template_kind: kind.into(),
            template_name: template.into(),
        };
        vec![
            r("web-deployment", "Deployment", "web"),
            r("web-configmap", "ConfigMap", "web"),
            r("db-statefulset", "StatefulSet", "db"),
            r("w1-widget", "Widget", "w1"),
        ]
    }

    #[test]
    fn a_rollout_is_named_by_its_name_or_its_templates_kind_and_name() {
        let cases: &[(&str, Option<&str>)] = &[
            ("web-deployment", Some("web-deployment")),
            ("deployment/web", Some("web-deployment")),
            ("deployments/web", Some("web-deployment")),
            ("deploy/web", Some("web-deployment")),
            ("Deployment/web", Some("web-deployment")),
            ("deployment.apps/web", Some("web-deployment")),
            ("cm/web", Some("web-configmap")),
            ("sts/db", Some("db-statefulset")),
            ("widget/w1", Some("w1-widget")),
            ("widgets/w1", Some("w1-widget")),
            ("Widget/w1", Some("w1-widget")),
            ("web", None),
            ("deployment/api", None),
            ("statefulset/web", None),
        ];
        let listed = listed();
        for (arg, want) in cases {
            let wanted = parse(arg).unwrap();
            assert_eq!(find(&wanted, &listed).map(|r| r.name.as_str()), *want, "{arg}");
        }
    }

    #[test]
    fn malformed_names_are_refused() {
        for arg in ["", "/web", "deployment/", "a/b/c"] {
            assert!(parse(arg).is_err(), "{arg:?}");
        }
    }

    #[test]
    fn the_expected_name_is_the_templates_binding_name() {
        let cases = [
            ("deployment/web", "web-deployment"),
            ("deploy/web", "web-deployment"),
            ("svc/front", "front-service"),
            ("web-deployment", "web-deployment"),
            ("widget/w1", "w1-widget"),
        ];
        for (arg, want) in cases {
            assert_eq!(expected(&parse(arg).unwrap()), want, "{arg}");
        }
        assert_eq!(describe(&parse("deploy/web").unwrap()), "Deployment web");
        assert_eq!(describe(&parse("web-deployment").unwrap()), "Rollout web-deployment");
    }

    #[test]
    fn not_found_says_what_is_there_instead() {
        let listed = listed();
        let none: &[Listed] = &[];
        let gray_no = [("gray".to_string(), false)];
        let gray_yes = [("gray".to_string(), true)];
        let l = |rollouts, strategies, template_exists| Lookup {
            namespace: "shop",
            rollouts,
            strategies,
            template_exists,
        };
        let cases: Vec<(&str, Lookup, &str)> = vec![
            ("deployment/api", l(&listed, &gray_no, Some(false)), "no Deployment api in namespace shop"),
            ("deployment/api", l(none, &[], Some(true)), "no Rollout api-deployment in namespace shop: no RolloutStrategy there"),
            ("deployment/api", l(&listed, &gray_no, Some(true)), "no RolloutStrategy in namespace shop selects Deployment api (strategies there: gray)"),
            ("deployment/api", l(&listed, &gray_yes, Some(true)), "RolloutStrategy gray selects Deployment api, but the hub has not written its Rollout api-deployment yet"),
            ("api", l(none, &gray_no, None), "no Rollout api in namespace shop: there is none; RolloutStrategies there: gray"),
            ("api", l(&listed[..2], &gray_no, None), "no Rollout api in namespace shop; Rollouts there: web-deployment (deployment/web), web-configmap (configmap/web)"),
        ];
        for (arg, lookup, want) in cases {
            let got = not_found(&parse(arg).unwrap(), &lookup);
            assert!(got.starts_with(want), "{arg}: {got}");
        }
    }
}
