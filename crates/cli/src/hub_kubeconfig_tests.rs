use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::*;

struct Case {
    name: &'static str,
    flag: Option<&'static str>,
    flotilla_env: Option<&'static str>,
    kubeconfig_env: Option<&'static str>,
    /// Files that exist.
    existing: &'static [&'static str],
    want: Result<Source, NotFound>,
}

const FLEET: &str = "/home/u/.flotilla/hub.kubeconfig";

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

#[test]
fn the_first_source_set_wins() {
    let cases = [
        Case {
            name: "the flag beats everything",
            flag: Some("/f"),
            flotilla_env: Some("/e"),
            kubeconfig_env: Some("/k"),
            existing: &["/e", "/k", FLEET],
            want: Ok(Source::Flag(p("/f"))),
        },
        Case {
            name: "FLOTILLA_HUB_KUBECONFIG beats KUBECONFIG",
            flag: None,
            flotilla_env: Some("/e"),
            kubeconfig_env: Some("/k"),
            existing: &["/e", "/k", FLEET],
            want: Ok(Source::FlotillaEnv(p("/e"))),
        },
        Case {
            name: "an empty FLOTILLA_HUB_KUBECONFIG is not set",
            flag: None,
            flotilla_env: Some(""),
            kubeconfig_env: Some("/k"),
            existing: &["/k"],
            want: Ok(Source::KubeconfigEnv(vec![p("/k")])),
        },
        Case {
            name: "KUBECONFIG beats the local fleet",
            flag: None,
            flotilla_env: None,
            kubeconfig_env: Some("/k"),
            existing: &["/k", FLEET],
            want: Ok(Source::KubeconfigEnv(vec![p("/k")])),
        },
        Case {
            name: "KUBECONFIG is a list: missing and empty entries are skipped, order kept",
            flag: None,
            flotilla_env: None,
            kubeconfig_env: Some("/missing::/b:/a"),
            existing: &["/a", "/b"],
            want: Ok(Source::KubeconfigEnv(vec![p("/b"), p("/a")])),
        },
        Case {
            name: "KUBECONFIG naming only missing files is an error, not the local fleet",
            flag: None,
            flotilla_env: None,
            kubeconfig_env: Some("/x:/y"),
            existing: &[FLEET],
            want: Err(NotFound::KubeconfigEnvMissing("/x:/y".into())),
        },
        Case {
            name: "an empty KUBECONFIG is not set",
            flag: None,
            flotilla_env: None,
            kubeconfig_env: Some(":"),
            existing: &[FLEET],
            want: Ok(Source::LocalFleet(p(FLEET))),
        },
        Case {
            name: "the local fleet last",
            flag: None,
            flotilla_env: None,
            kubeconfig_env: None,
            existing: &[FLEET],
            want: Ok(Source::LocalFleet(p(FLEET))),
        },
        Case {
            name: "nothing at all",
            flag: None,
            flotilla_env: None,
            kubeconfig_env: None,
            existing: &[],
            want: Err(NotFound::Nothing(p(FLEET))),
        },
        Case {
            name: "a named file is used even when missing (reading it reports that)",
            flag: Some("/gone"),
            flotilla_env: None,
            kubeconfig_env: None,
            existing: &[],
            want: Ok(Source::Flag(p("/gone"))),
        },
    ];
    for c in cases {
        let got = resolve(
            Inputs {
                flag: c.flag.map(Path::new),
                flotilla_env: c.flotilla_env.map(OsStr::new),
                kubeconfig_env: c.kubeconfig_env.map(OsStr::new),
                local_fleet: Path::new(FLEET),
            },
            |path| c.existing.iter().any(|e| Path::new(e) == path),
        );
        assert_eq!(got, c.want, "{}", c.name);
    }
}

#[test]
fn the_errors_say_what_was_tried_and_what_to_do() {
    let nothing = NotFound::Nothing(p(FLEET)).to_string();
    for wanted in ["--kubeconfig", "$FLOTILLA_HUB_KUBECONFIG", "$KUBECONFIG", FLEET, "flotilla up"] {
        assert!(nothing.contains(wanted), "{wanted} missing from: {nothing}");
    }
    let missing = NotFound::KubeconfigEnvMissing("/x:/y".into()).to_string();
    assert!(missing.contains("/x:/y") && missing.contains("--kubeconfig"), "{missing}");
}

#[test]
fn sources_describe_themselves_and_their_files() {
    let cases = [
        (Source::Flag(p("/f")), "/f (--kubeconfig)", vec![p("/f")]),
        (Source::FlotillaEnv(p("/e")), "/e ($FLOTILLA_HUB_KUBECONFIG)", vec![p("/e")]),
        (Source::KubeconfigEnv(vec![p("/a"), p("/b")]), "/a:/b ($KUBECONFIG)", vec![p("/a"), p("/b")]),
        (Source::LocalFleet(p(FLEET)), "/home/u/.flotilla/hub.kubeconfig (the local fleet)", vec![p(FLEET)]),
    ];
    for (source, shown, files) in cases {
        assert_eq!(source.to_string(), shown);
        assert_eq!(source.files(), files, "{shown}");
    }
}

#[test]
fn hints_repeat_only_the_flags_given() {
    let cases = [
        (HubKubeconfig::default(), ""),
        (HubKubeconfig::file("/h.kubeconfig"), " --kubeconfig /h.kubeconfig"),
        (HubKubeconfig { path: None, context: Some("prod".into()) }, " --context prod"),
        (
            HubKubeconfig { path: Some(p("/h")), context: Some("prod".into()) },
            " --kubeconfig /h --context prod",
        ),
    ];
    for (hub, want) in cases {
        assert_eq!(hub.hint_flags(), want, "{hub:?}");
    }
}
