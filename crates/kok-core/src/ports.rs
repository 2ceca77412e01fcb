//! Port allocation on a Machine. Several hosted clusters (and etcd
//! members) may share one machine, or many machines one address (a laptop,
//! CI), so operators pick ports that no component on the machine uses yet.
//! What a component listens on is read back from its own command line:
//! the Machine spec is the record, so an allocation survives operator
//! restarts and is the same when computed twice.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use flotilla_api::machine::{ComponentSpec, Machine};

/// Ports named by one component: `--…port=N` flags, `scheme://host:N`
/// URLs in any flag value (comma-separated lists included) and its TCP
/// health check.
pub fn component_ports(component: &ComponentSpec) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for arg in &component.args {
        let Some((flag, value)) = arg.split_once('=') else { continue };
        if flag.ends_with("port") {
            if let Ok(port) = value.parse::<u16>() {
                out.insert(port);
            }
        }
        for piece in value.split(',') {
            if let Some(port) = url_port(piece) {
                out.insert(port);
            }
        }
    }
    if let Some(tcp) = component.health.as_ref().and_then(|h| h.tcp.as_ref()) {
        out.insert(tcp.port);
    }
    out
}

/// The explicit port of `scheme://host:port[/path]`.
fn url_port(url: &str) -> Option<u16> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (_, port) = authority.rsplit_once(':')?;
    // `[::1]` alone has a colon but no port.
    if port.ends_with(']') {
        return None;
    }
    port.parse().ok()
}

/// Ports used on `machine` by every component except those named in
/// `except` (a cluster's own components, whose ports it is re-deriving).
pub fn used_ports(machine: &Machine, except: &[&str]) -> BTreeSet<u16> {
    machine
        .spec
        .components
        .iter()
        .filter(|c| !except.contains(&c.name.as_str()))
        .flat_map(component_ports)
        .collect()
}

/// `count` ports from `range` that are not in `used`, lowest first; `None`
/// when the range has fewer free ports.
pub fn allocate(used: &BTreeSet<u16>, range: RangeInclusive<u16>, count: usize) -> Option<Vec<u16>> {
    let picked: Vec<u16> = range.filter(|p| !used.contains(p)).take(count).collect();
    (picked.len() == count).then_some(picked)
}

/// The value of `--flag=` in a component's args, as a port.
pub fn flag_port(component: &ComponentSpec, flag: &str) -> Option<u16> {
    let prefix = format!("{flag}=");
    component.args.iter().find_map(|a| a.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
}

/// The port of the first URL in `--flag=` of a component's args.
pub fn flag_url_port(component: &ComponentSpec, flag: &str) -> Option<u16> {
    let prefix = format!("{flag}=");
    let value = component.args.iter().find_map(|a| a.strip_prefix(&prefix))?;
    value.split(',').find_map(url_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_api::machine::{HealthCheck, MachineSpec, TcpCheck};

    fn component(name: &str, args: &[&str]) -> ComponentSpec {
        ComponentSpec {
            name: name.into(),
            binary: "/bin/x".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn ports_come_from_port_flags_urls_and_tcp_checks() {
        let mut etcd = component(
            "etcd",
            &[
                "--listen-client-urls=https://127.0.0.1:20001,https://[::1]:20002",
                "--initial-cluster=a=https://127.0.0.1:20003,b=https://10.0.0.2:30000",
                "--data-dir=/var/lib/etcd",
                "--advertise-client-urls=https://[::1]",
            ],
        );
        etcd.health =
            Some(HealthCheck { tcp: Some(TcpCheck { host: None, port: 20009 }), ..Default::default() });
        let api = component("api", &["--secure-port=6443", "--v=1"]);
        assert_eq!(
            component_ports(&etcd).into_iter().collect::<Vec<_>>(),
            [20001, 20002, 20003, 20009, 30000]
        );
        assert_eq!(component_ports(&api).into_iter().collect::<Vec<_>>(), [6443]);
        assert_eq!(flag_port(&api, "--secure-port"), Some(6443));
        assert_eq!(flag_url_port(&etcd, "--listen-client-urls"), Some(20001));
        assert_eq!(flag_port(&api, "--missing"), None);
    }

    #[test]
    fn allocation_skips_used_ports_and_ignores_the_callers_own() {
        let m = Machine::new(
            "m1",
            MachineSpec {
                components: vec![
                    component("mine", &["--secure-port=20000"]),
                    component("other", &["--secure-port=20001", "--port=20003"]),
                ],
                ..Default::default()
            },
        );
        let used = used_ports(&m, &["mine"]);
        assert_eq!(allocate(&used, 20000..=20010, 3), Some(vec![20000, 20002, 20004]));
        let all = used_ports(&m, &[]);
        assert_eq!(allocate(&all, 20000..=20003, 2), None);
        assert_eq!(allocate(&all, 20000..=20004, 2), Some(vec![20002, 20004]));
    }
}
