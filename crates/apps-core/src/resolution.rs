//! Whether the APIs a propagation policy selects exist: the
//! `ResourcesResolved` condition, decided from what discovery on the hub
//! returned and what the members report serving. (`Valid` is only about the
//! policy's own syntax and rules.)

use flotilla_core::conditions::Wanted;

pub const CONDITION: &str = "ResourcesResolved";
pub const REASON_RESOLVED: &str = "Resolved";
/// The hub does not serve a selected kind: no template of it can exist.
pub const REASON_KIND_NOT_SERVED: &str = "KindNotServed";
/// The hub serves it but no member does: its templates stay unscheduled.
pub const REASON_NOT_SERVED_BY_MEMBERS: &str = "KindNotServedByMembers";
pub const REASON_DISCOVERY_FAILED: &str = "DiscoveryFailed";

/// What the hub's discovery said of one selected kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnHub {
    /// Served, under this plural resource name.
    Served {
        plural: String,
    },
    NotServed,
    /// Discovery failed (e.g. the hub's API is briefly unavailable).
    Failed(String),
}

/// One selected `apiVersion`/`kind` and what is known about it.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub on_hub: &'a OnHub,
}

/// What a member reports serving (`status.apiEnablements`).
#[derive(Debug, Clone, Copy)]
pub struct MemberApis<'a> {
    pub name: &'a str,
    pub api_enablements: &'a [flotilla_api::cluster::ApiEnablement],
}

impl MemberApis<'_> {
    fn serves_group_version(&self, api_version: &str) -> bool {
        self.api_enablements.iter().any(|e| e.group_version == api_version)
    }
    fn serves(&self, api_version: &str, plural: &str) -> bool {
        self.api_enablements
            .iter()
            .any(|e| e.group_version == api_version && e.resources.iter().any(|r| r == plural))
    }
}

/// The `ResourcesResolved` condition of a propagation policy, or None when
/// discovery failed and nothing is known to be wrong (keep what is there).
pub fn resources_resolved(selected: &[Selected], members: &[MemberApis]) -> Option<Wanted> {
    let reporting: Vec<&MemberApis> = members.iter().filter(|m| !m.api_enablements.is_empty()).collect();
    let mut not_on_hub = Vec::new();
    let mut not_on_members = Vec::new();
    let mut failed = Vec::new();
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for s in selected {
        if seen.contains(&(s.api_version, s.kind)) {
            continue;
        }
        seen.push((s.api_version, s.kind));
        match s.on_hub {
            OnHub::NotServed => {
                let members: Vec<&str> = reporting
                    .iter()
                    .filter(|m| m.serves_group_version(s.api_version))
                    .map(|m| m.name)
                    .collect();
                let where_else = if members.is_empty() {
                    format!("no member cluster serves {} either", s.api_version)
                } else {
                    format!("member cluster(s) {} serve {}", members.join(", "), s.api_version)
                };
                not_on_hub.push(format!(
                    "{} {} is not served by the hub, so no template of that kind can exist ({where_else})",
                    s.api_version, s.kind
                ));
            }
            OnHub::Served { plural } => {
                if !reporting.is_empty() && !reporting.iter().any(|m| m.serves(s.api_version, plural)) {
                    not_on_members.push(format!("{} {}", s.api_version, s.kind));
                }
            }
            OnHub::Failed(error) => failed.push(format!("{} {}: {error}", s.api_version, s.kind)),
        }
    }
    if !not_on_hub.is_empty() {
        let message = format!(
            "{}; check the selector's apiVersion and kind, or install the CustomResourceDefinition on the hub \
             (and in the members that should run it)",
            not_on_hub.join("; ")
        );
        return Some(Wanted::new(CONDITION, false, REASON_KIND_NOT_SERVED, message));
    }
    if !failed.is_empty() {
        return None;
    }
    if !not_on_members.is_empty() {
        let message = format!(
            "no member cluster serves {}; its templates stay unscheduled until a member does \
             (install the CustomResourceDefinition in the members)",
            not_on_members.join(", ")
        );
        return Some(Wanted::new(CONDITION, false, REASON_NOT_SERVED_BY_MEMBERS, message));
    }
    Some(Wanted::new(CONDITION, true, REASON_RESOLVED, "the hub serves every selected kind"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::cluster::ApiEnablement;

    fn apis(list: &[(&str, &[&str])]) -> Vec<ApiEnablement> {
        list.iter()
            .map(|(gv, rs)| ApiEnablement {
                group_version: gv.to_string(),
                resources: rs.iter().map(|r| r.to_string()).collect(),
            })
            .collect()
    }

    #[test]
    fn the_condition_says_which_api_nobody_serves_and_what_to_do() {
        let deployments = OnHub::Served { plural: "deployments".into() };
        let widgets = OnHub::Served { plural: "widgets".into() };
        let failing = OnHub::Failed("timeout".into());
        let m1 = apis(&[("apps/v1", &["deployments"]), ("example.com/v1", &["widgets"])]);
        let m2 = apis(&[("apps/v1", &["deployments"])]);
        let fleet = [
            MemberApis { name: "m1", api_enablements: &m1 },
            MemberApis { name: "m2", api_enablements: &m2 },
        ];
        let only_m2 = [MemberApis { name: "m2", api_enablements: &m2 }];
        let sel = |api_version, kind, on_hub| Selected { api_version, kind, on_hub };
        type Case<'a> =
            (&'a str, Vec<Selected<'a>>, &'a [MemberApis<'a>], Option<(&'a str, &'a str, Vec<&'a str>)>);
        let cases: Vec<Case> = vec![
            (
                "served everywhere",
                vec![sel("apps/v1", "Deployment", &deployments)],
                &fleet[..],
                Some(("True", REASON_RESOLVED, vec![])),
            ),
            (
                "nonsense/v1",
                vec![
                    sel("apps/v1", "Deployment", &deployments),
                    sel("nonsense/v1", "Thing", &OnHub::NotServed),
                ],
                &fleet[..],
                Some((
                    "False",
                    REASON_KIND_NOT_SERVED,
                    vec![
                        "nonsense/v1 Thing is not served by the hub",
                        "no member cluster serves nonsense/v1 either",
                        "install the CustomResourceDefinition on the hub",
                    ],
                )),
            ),
            (
                "a CRD only in a member",
                vec![sel("example.com/v1", "Widget", &OnHub::NotServed)],
                &fleet[..],
                Some(("False", REASON_KIND_NOT_SERVED, vec!["member cluster(s) m1 serve example.com/v1"])),
            ),
            (
                "served by the hub, by no member",
                vec![sel("example.com/v1", "Widget", &widgets)],
                &only_m2[..],
                Some((
                    "False",
                    REASON_NOT_SERVED_BY_MEMBERS,
                    vec!["no member cluster serves example.com/v1 Widget"],
                )),
            ),
            (
                "no member has reported yet",
                vec![sel("example.com/v1", "Widget", &widgets)],
                &[][..],
                Some(("True", REASON_RESOLVED, vec![])),
            ),
            ("discovery failing", vec![sel("apps/v1", "Deployment", &failing)], &fleet[..], None),
            (
                "a known problem beats a failed lookup",
                vec![sel("apps/v1", "Deployment", &failing), sel("nonsense/v1", "Thing", &OnHub::NotServed)],
                &fleet[..],
                Some(("False", REASON_KIND_NOT_SERVED, vec!["nonsense/v1 Thing"])),
            ),
        ];
        for (what, selected, members, want) in cases {
            let got = resources_resolved(&selected, members);
            match (got, want) {
                (None, None) => {}
                (Some(c), Some((status, reason, needles))) => {
                    assert_eq!((c.status, c.reason.as_str()), (status, reason), "{what}: {}", c.message);
                    assert_eq!(c.type_, CONDITION);
                    for n in &needles {
                        assert!(c.message.contains(n), "{what}: {n:?} not in {}", c.message);
                    }
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }
}
