//! What the hosted-cluster commands print: the list, the detail view, how
//! to use a Ready cluster. Every line fits in [`WIDTH`] columns.

use comfy_table::{ContentArrangement, Table};
use flotilla_api::kok::{EtcdCluster, HostedCluster};
use flotilla_kok_core::wait::{endpoint_of, one_line, phase_of};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// Every line this module prints fits in this many columns.
pub const WIDTH: usize = 100;

/// `s` cut to `width` characters (with an ellipsis when cut).
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` wrapped at word boundaries into lines of at most `width` characters,
/// lines after a wrap indented by `indent` spaces more than the line's own
/// leading spaces; nothing is cut (a word longer than a line stays whole)
/// and `s`'s own line breaks are kept.
pub fn wrap(s: &str, width: usize, indent: usize) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in s.lines() {
        let lead = line.chars().take_while(|c| *c == ' ').count();
        let mut current = " ".repeat(lead);
        let mut count = lead;
        for word in line.split_whitespace() {
            let len = word.chars().count();
            if count > lead && count + 1 + len > width {
                out.push(std::mem::take(&mut current));
                current = " ".repeat(lead + indent);
                count = lead + indent;
            } else if count > lead {
                current.push(' ');
                count += 1;
            }
            current.push_str(word);
            count += len;
        }
        out.push(current);
    }
    out.join("\n")
}

/// "5s", "3m", "2h", "4d".
pub fn age(created: Option<&Time>, now: Timestamp) -> String {
    let Some(created) = created else { return "-".into() };
    let secs = now.duration_since(created.0).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// What follows a command so that it reaches the same hub.
pub fn hub_flag(hub: &crate::hub_kubeconfig::HubKubeconfig) -> String {
    hub.hint_flags()
}

pub fn namespace_flag(namespace: &str) -> String {
    if namespace == "default" {
        String::new()
    } else {
        format!(" -n {namespace}")
    }
}

/// How to use a Ready cluster.
pub fn usage_hint(name: &str, namespace: &str, endpoint: &str, hub_flag: &str) -> String {
    let ns = namespace_flag(namespace);
    format!(
        "  API server: {endpoint}\n\
         Use it:\n  \
         flotilla cluster kubeconfig {name}{ns}{hub_flag} > {name}.kubeconfig\n  \
         kubectl --kubeconfig {name}.kubeconfig get nodes"
    )
}

/// A borderless table of [`WIDTH`] columns.
pub fn table(header: Vec<&str>) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(WIDTH as u16)
        .set_header(header);
    t
}

fn version_cell(hc: &HostedCluster) -> String {
    let running = hc.status.as_ref().and_then(|s| s.version.clone());
    match running {
        Some(v) if v == hc.spec.version => v,
        Some(v) => format!("{v} (→{})", hc.spec.version),
        None => format!("({})", hc.spec.version),
    }
}

fn nodes_cell(hc: &HostedCluster) -> String {
    let wanted = hc.spec.nodes.as_ref().map_or(0, |n| n.count);
    let ready = hc.status.as_ref().and_then(|s| s.ready_nodes).unwrap_or(0);
    format!("{ready}/{wanted}")
}

/// One row of the list: NAME, VERSION, PHASE, ENDPOINT, NODES, AGE
/// (NAMESPACE first with `all_namespaces`).
pub fn list_row(hc: &HostedCluster, all_namespaces: bool, now: Timestamp) -> Vec<String> {
    let mut row = Vec::new();
    if all_namespaces {
        row.push(hc.namespace().unwrap_or_default());
    }
    row.extend([
        hc.name_any(),
        version_cell(hc),
        phase_of(hc),
        endpoint_of(hc),
        nodes_cell(hc),
        age(hc.metadata.creation_timestamp.as_ref(), now),
    ]);
    row
}

/// The columns `-o wide` adds: ETCD (the EtcdCluster, `shared:PREFIX`
/// for a shared one), RUNTIME, REPLICAS (of each control-plane component).
pub fn wide_cells(hc: &HostedCluster) -> Vec<String> {
    let etcd = match (&hc.spec.etcd.cluster_ref, &hc.spec.etcd.shared) {
        (Some(name), _) => name.clone(),
        (None, Some(shared)) => format!("{} (shared:{})", shared.cluster_ref, shared.prefix),
        (None, None) => "-".into(),
    };
    vec![etcd, format!("{:?}", hc.spec.control_plane.runtime), hc.spec.control_plane.replicas.to_string()]
}

pub fn render_list(clusters: &[HostedCluster], all_namespaces: bool, wide: bool, now: Timestamp) -> String {
    let mut header = vec!["NAME", "VERSION", "PHASE", "ENDPOINT", "NODES", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    if wide {
        header.extend(["ETCD", "RUNTIME", "REPLICAS"]);
    }
    let mut t = table(header);
    for hc in clusters {
        let mut row = list_row(hc, all_namespaces, now);
        if wide {
            row.extend(wide_cells(hc));
        }
        t.add_row(row);
    }
    t.to_string()
}

/// "2027-01-01 12:00 (in 364d)".
fn expiry(not_after: &Time, now: Timestamp) -> String {
    let secs = not_after.0.duration_since(now).as_secs();
    let left = match secs {
        s if s <= 0 => "EXPIRED".to_string(),
        s if s < 7200 => format!("in {}m", s / 60),
        s if s < 172_800 => format!("in {}h", s / 3600),
        s => format!("in {}d", s / 86400),
    };
    format!("{} ({left})", not_after.0.strftime("%Y-%m-%d %H:%M UTC"))
}

/// How many certificates the detail view lists (soonest expiry first).
const CERTIFICATES_SHOWN: usize = 5;

/// The detail view of one cluster.
pub fn render_detail(hc: &HostedCluster, etcd: Option<&EtcdCluster>, now: Timestamp) -> String {
    let status = hc.status.clone().unwrap_or_default();
    let name = hc.name_any();
    let namespace = hc.namespace().unwrap_or_default();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("Name:        {namespace}/{name}"));
    line(format!("Phase:       {}", phase_of(hc)));
    line(format!("Version:     {} (spec {})", status.version.as_deref().unwrap_or("-"), hc.spec.version));
    line(format!("Endpoint:    {}", endpoint_of(hc)));
    line(format!(
        "Control:     {:?} runtime, {} replica(s)",
        hc.spec.control_plane.runtime, hc.spec.control_plane.replicas
    ));
    let etcd_name = hc.spec.etcd.resolve().map(|(e, _)| e.to_string()).unwrap_or_else(|| "-".into());
    let etcd_state = etcd
        .and_then(|e| e.status.as_ref())
        .map(|s| {
            format!(
                " ({}/{} members ready, {})",
                s.ready_members,
                etcd.map_or(0, |e| e.spec.members),
                s.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "no phase".into())
            )
        })
        .unwrap_or_else(|| if etcd.is_none() { " (not found)".into() } else { String::new() });
    line(format!("Etcd:        {etcd_name}{etcd_state}"));
    line(format!("Nodes:       {} Ready", nodes_cell(hc)));
    let addons: Vec<&str> = hc.spec.addons.iter().map(|a| a.name.as_str()).collect();
    line(format!("Add-ons:     {}", if addons.is_empty() { "-".into() } else { addons.join(", ") }));
    if let Some(secret) = &status.admin_kubeconfig_secret {
        line(format!("Kubeconfig:  Secret {secret} (`flotilla cluster kubeconfig {name}`)"));
    }

    if !status.instances.is_empty() {
        line(String::new());
        line("Instances:".into());
        let mut t = table(vec!["NAME", "MACHINE", "VERSION", "HEALTHY"]);
        for i in &status.instances {
            t.add_row(vec![
                i.name.clone(),
                i.machine.clone().unwrap_or_else(|| "-".into()),
                i.version.clone().unwrap_or_else(|| "-".into()),
                i.healthy.to_string(),
            ]);
        }
        line(t.to_string());
    }

    if !status.conditions.is_empty() {
        line(String::new());
        line("Conditions:".into());
        let mut t = table(vec!["TYPE", "STATUS", "REASON", "MESSAGE"]);
        for c in &status.conditions {
            t.add_row(vec![c.type_.clone(), c.status.clone(), c.reason.clone(), one_line(&c.message)]);
        }
        line(t.to_string());
    }

    if let Some(u) = &status.upgrade {
        line(String::new());
        let step = match (&u.component, u.instance) {
            (Some(c), Some(i)) => format!(", now {c}/{i}"),
            _ => String::new(),
        };
        line(format!("Upgrade:     {} → {}: {:?}{step}", u.from, u.to, u.state));
        if !u.done.is_empty() {
            line(format!("  done: {}", u.done.join(", ")));
        }
        if let Some(m) = &u.message {
            line(format!("  {}", one_line(m)));
        }
    }

    if !status.certificates.is_empty() {
        line(String::new());
        let mut certs = status.certificates.clone();
        certs.sort_by(|a, b| a.not_after.0.cmp(&b.not_after.0).then_with(|| a.name.cmp(&b.name)));
        line(format!(
            "Certificates (soonest expiry first, {} of {}):",
            certs.len().min(CERTIFICATES_SHOWN),
            certs.len()
        ));
        let mut t = table(vec!["NAME", "EXPIRES"]);
        for c in certs.iter().take(CERTIFICATES_SHOWN) {
            t.add_row(vec![c.name.clone(), expiry(&c.not_after, now)]);
        }
        line(t.to_string());
    }
    out.lines().map(|l| fit(l.trim_end(), WIDTH)).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::kok::{
        conditions, CertificateStatus, ControlPlaneInstanceStatus, HostedClusterPhase, HostedClusterStatus,
        Runtime, UpgradeState, UpgradeStatus,
    };
    use flotilla_api::kok_request::HostedClusterRequest;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn request() -> HostedClusterRequest {
        HostedClusterRequest {
            namespace: "team".into(),
            name: "c1".into(),
            version: "1.36.2".into(),
            etcd_members: 3,
            etcd_version: "3.7.4".into(),
            runtime: Runtime::Process,
            replicas: 1,
            nodes: 2,
            addons: true,
            machine_pool: None,
            node_pool: None,
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cond(type_: &str, status: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: if status == "True" { "Fine".into() } else { "NotYet".into() },
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: Time(ts("2024-01-01T00:00:00Z")),
        }
    }

    fn cluster(conditions: Vec<Condition>) -> HostedCluster {
        let mut hc = request().hosted_cluster();
        hc.metadata.generation = Some(1);
        hc.status = Some(HostedClusterStatus {
            phase: Some(HostedClusterPhase::Provisioning),
            observed_generation: Some(1),
            endpoint: Some("https://127.0.0.1:33000".into()),
            conditions,
            ..Default::default()
        });
        hc
    }

    #[test]
    fn wrap_breaks_at_words_indents_and_cuts_nothing() {
        // (text, width, indent, wanted)
        let table = [
            ("short line", 20, 2, "short line"),
            ("one two three four", 9, 2, "one two\n  three\n  four"),
            ("a verylongwordthatdoesnotfit b", 10, 0, "a\nverylongwordthatdoesnotfit\nb"),
            ("first\nsecond line here", 11, 1, "first\nsecond line\n here"),
            ("runs   of   spaces  ", 40, 0, "runs of spaces"),
            ("  led by spaces", 10, 2, "  led by\n    spaces"),
            ("", 10, 0, ""),
        ];
        for (text, width, indent, want) in table {
            assert_eq!(wrap(text, width, indent), want, "{text:?} at {width}");
        }
        let long = "EtcdReady (NotEnoughMachines, for 30s): EtcdCluster c2-etcd is not available: 2 of 3 \
                    members placed: too few Machines match spec.machineSelector without already running a member";
        let wrapped = wrap(long, WIDTH, 4);
        assert!(wrapped.lines().all(|l| l.chars().count() <= WIDTH), "{wrapped}");
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>(),
            long.split_whitespace().collect::<Vec<_>>()
        );
    }

    fn upgrading(state: UpgradeState, message: Option<&str>) -> HostedCluster {
        let mut hc = cluster(vec![cond(conditions::VALID, "True", ""), cond(conditions::READY, "True", "")]);
        hc.metadata.generation = Some(2);
        let status = hc.status.as_mut().unwrap();
        status.observed_generation = Some(2);
        status.version = Some("1.36.2".into());
        status.upgrade = Some(UpgradeStatus {
            from: "1.36.2".into(),
            to: "1.36.3".into(),
            state,
            component: Some("kube-controller-manager".into()),
            instance: Some(0),
            done: vec!["kube-apiserver/0".into()],
            message: message.map(String::from),
            ..Default::default()
        });
        hc
    }

    #[test]
    fn list_rows_show_version_phase_endpoint_nodes_and_age() {
        let now = ts("2024-01-01T01:00:00Z");
        let mut hc = cluster(vec![]);
        hc.metadata.creation_timestamp = Some(Time(ts("2024-01-01T00:30:00Z")));
        let status = hc.status.as_mut().unwrap();
        status.phase = Some(HostedClusterPhase::Ready);
        status.version = Some("1.36.2".into());
        status.ready_nodes = Some(1);
        assert_eq!(
            list_row(&hc, false, now),
            ["c1", "1.36.2", "Ready", "https://127.0.0.1:33000", "1/2", "30m"]
        );
        hc.spec.version = "1.36.3".into();
        assert_eq!(list_row(&hc, true, now)[..3], ["team", "c1", "1.36.2 (→1.36.3)"]);
        let mut fresh = request().hosted_cluster();
        assert_eq!(list_row(&fresh, false, now), ["c1", "(1.36.2)", "Pending", "-", "0/2", "-"]);
        fresh.metadata.deletion_timestamp = Some(Time(now));
        assert_eq!(list_row(&fresh, false, now)[2], "Deleting");
        let shown = render_list(&[hc.clone(), fresh.clone()], true, false, now);
        assert!(shown.lines().next().unwrap().trim_start().starts_with("NAMESPACE"), "{shown}");
        assert!(shown.lines().all(|l| l.chars().count() <= WIDTH), "{shown}");
        let wide = render_list(&[hc.clone(), fresh], true, true, now);
        assert!(wide.lines().next().unwrap().trim_end().ends_with("REPLICAS"), "{wide}");
        assert!(wide.lines().all(|l| l.chars().count() <= WIDTH), "{wide}");
        let etcd = hc.spec.etcd.resolve().unwrap().0.to_string();
        assert_eq!(
            wide_cells(&hc),
            [etcd, "Process".to_string(), hc.spec.control_plane.replicas.to_string()]
        );
    }

    #[test]
    fn age_is_short() {
        let now = ts("2024-01-10T00:00:00Z");
        let at = |s: &str| Some(Time(ts(s)));
        assert_eq!(age(at("2024-01-09T23:59:50Z").as_ref(), now), "10s");
        assert_eq!(age(at("2024-01-09T22:00:00Z").as_ref(), now), "2h");
        assert_eq!(age(at("2024-01-01T00:00:00Z").as_ref(), now), "9d");
        assert_eq!(age(None, now), "-");
    }

    #[test]
    fn detail_shows_everything_within_100_columns() {
        let now = ts("2024-01-01T00:00:00Z");
        let long = "kube-apiserver-0: not healthy yet on machine m1: Get https://127.0.0.1:33000/readyz: \
                    connection refused; kube-apiserver-1: CrashLoop on machine m2: exit code 1 after 3 restarts";
        let mut hc = cluster(vec![
            cond(conditions::KUBE_APISERVER_READY, "False", long),
            cond(conditions::ETCD_READY, "True", "EtcdCluster c1-etcd: 3 members"),
        ]);
        let status = hc.status.as_mut().unwrap();
        status.version = Some("1.36.2".into());
        status.admin_kubeconfig_secret = Some("c1-admin-kubeconfig".into());
        status.instances = vec![ControlPlaneInstanceStatus {
            name: "kube-apiserver-0".into(),
            machine: Some("m1".into()),
            version: Some("1.36.2".into()),
            healthy: false,
        }];
        status.upgrade = upgrading(UpgradeState::InProgress, None).status.unwrap().upgrade;
        status.certificates = (0..8)
            .map(|i| CertificateStatus {
                name: format!("cert-{i}"),
                not_after: Time(ts(&format!("2024-0{}-01T00:00:00Z", 9 - i))),
                issuer: None,
            })
            .collect();
        let shown = render_detail(&hc, None, now);
        for l in shown.lines() {
            assert!(l.chars().count() <= WIDTH, "{} columns: {l}", l.chars().count());
        }
        for want in [
            "Name:        team/c1",
            "Version:     1.36.2 (spec 1.36.2)",
            "Etcd:        c1-etcd (not found)",
            "kube-apiserver-0",
            "Upgrade:     1.36.2 → 1.36.3: InProgress, now kube-controller-manager/0",
            "done: kube-apiserver/0",
            "Certificates (soonest expiry first, 5 of 8):",
        ] {
            assert!(shown.contains(want), "{want:?} missing in:\n{shown}");
        }
        // The long message is wrapped, not cut: its last words are shown.
        assert!(shown.contains("restarts"), "{shown}");
        let certs: Vec<&str> =
            shown.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with("cert-"))).collect();
        assert_eq!(certs, ["cert-7", "cert-6", "cert-5", "cert-4", "cert-3"], "soonest first:\n{shown}");
        assert!(shown.contains("2024-02-01 00:00 UTC (in 31d)"), "{shown}");
    }

    #[test]
    fn usage_hint_names_the_namespace_and_hub_when_they_are_not_the_defaults() {
        let plain = usage_hint("c1", "default", "https://127.0.0.1:33000", "");
        assert!(plain.contains("flotilla cluster kubeconfig c1 > c1.kubeconfig"), "{plain}");
        assert!(plain.contains("kubectl --kubeconfig c1.kubeconfig get nodes"), "{plain}");
        assert!(plain.contains("https://127.0.0.1:33000"), "{plain}");
        let other = usage_hint("c1", "team", "e", " --kubeconfig /h.kc");
        assert!(
            other.contains("flotilla cluster kubeconfig c1 -n team --kubeconfig /h.kc > c1.kubeconfig"),
            "{other}"
        );
    }

    #[test]
    fn fit_cuts_long_lines_only() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("0123456789abc", 10), "012345678…");
        assert_eq!(fit("0123456789abc", 10).chars().count(), 10);
    }
}
