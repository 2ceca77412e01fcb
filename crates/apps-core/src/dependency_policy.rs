//! What a dependency (an object that follows, by `propagateDeps`, the
//! templates that need it, with no policy of its own) inherits from those
//! templates' bindings: `conflictResolution` and
//! `preserveResourcesOnDeletion`.
//!
//! As in Karmada, when several templates with different policies share one
//! dependency, `Overwrite` wins over `Abort` and preserving wins over
//! deleting: a template whose policy takes over existing objects (or keeps
//! its objects when it goes) would otherwise lose its dependency to the
//! stricter one. The message names the bindings each setting came from, for
//! the dependency's binding.

use flotilla_api::policy::ConflictResolution;

/// One binding that needs the dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirer<'a> {
    /// The binding's name.
    pub binding: &'a str,
    pub conflict_resolution: ConflictResolution,
    pub preserve_resources_on_deletion: bool,
}

/// The dependency's settings and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    pub conflict_resolution: ConflictResolution,
    pub preserve_resources_on_deletion: bool,
    /// For the dependency's binding: which bindings it follows and where its
    /// settings came from.
    pub message: String,
}

/// The settings a dependency takes from the bindings that need it.
pub fn inherited(requirers: &[Requirer]) -> Inherited {
    let overwriting: Vec<&str> = requirers
        .iter()
        .filter(|r| r.conflict_resolution == ConflictResolution::Overwrite)
        .map(|r| r.binding)
        .collect();
    let preserving: Vec<&str> =
        requirers.iter().filter(|r| r.preserve_resources_on_deletion).map(|r| r.binding).collect();
    let mut names: Vec<&str> = requirers.iter().map(|r| r.binding).collect();
    names.sort_unstable();
    names.dedup();
    let mut message = if names.is_empty() {
        "follows the templates that need it".to_string()
    } else {
        format!("follows the templates that need it (bindings {})", names.join(", "))
    };
    if !overwriting.is_empty() {
        message.push_str(&format!("; conflictResolution Overwrite, from {}", sorted(overwriting.clone())));
    }
    if !preserving.is_empty() {
        message.push_str(&format!("; preserveResourcesOnDeletion, from {}", sorted(preserving.clone())));
    }
    Inherited {
        conflict_resolution: if overwriting.is_empty() {
            ConflictResolution::Abort
        } else {
            ConflictResolution::Overwrite
        },
        preserve_resources_on_deletion: !preserving.is_empty(),
        message,
    }
}

fn sorted(mut names: Vec<&str>) -> String {
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConflictResolution::{Abort, Overwrite};

    fn r(binding: &str, conflict_resolution: ConflictResolution, preserve: bool) -> Requirer<'_> {
        Requirer { binding, conflict_resolution, preserve_resources_on_deletion: preserve }
    }

    #[test]
    fn a_dependency_takes_overwrite_and_preserve_from_any_binding_that_needs_it() {
        struct Case<'a> {
            name: &'a str,
            requirers: Vec<Requirer<'a>>,
            want: (ConflictResolution, bool),
            message: &'a str,
        }
        let cases = [
            Case {
                name: "nothing needs it",
                requirers: vec![],
                want: (Abort, false),
                message: "follows the templates that need it",
            },
            Case {
                name: "one abort binding",
                requirers: vec![r("web-deployment", Abort, false)],
                want: (Abort, false),
                message: "follows the templates that need it (bindings web-deployment)",
            },
            Case {
                name: "one overwrite binding",
                requirers: vec![r("web-deployment", Overwrite, false)],
                want: (Overwrite, false),
                message: "follows the templates that need it (bindings web-deployment); \
                          conflictResolution Overwrite, from web-deployment",
            },
            Case {
                name: "overwrite wins over abort, preserve over delete",
                requirers: vec![r("b-deployment", Abort, true), r("a-deployment", Overwrite, false)],
                want: (Overwrite, true),
                message: "follows the templates that need it (bindings a-deployment, b-deployment); \
                          conflictResolution Overwrite, from a-deployment; \
                          preserveResourcesOnDeletion, from b-deployment",
            },
            Case {
                name: "both set by both",
                requirers: vec![r("b", Overwrite, true), r("a", Overwrite, true)],
                want: (Overwrite, true),
                message: "follows the templates that need it (bindings a, b); \
                          conflictResolution Overwrite, from a, b; preserveResourcesOnDeletion, from a, b",
            },
        ];
        for case in cases {
            let got = inherited(&case.requirers);
            assert_eq!(
                (got.conflict_resolution, got.preserve_resources_on_deletion),
                case.want,
                "{}",
                case.name
            );
            assert_eq!(got.message, case.message, "{}", case.name);
        }
    }
}
