//! Pure readings of what the kernel and the system say about the host:
//! `/proc` and `/sys` files, `/etc/os-release`, `containerd --version`.
//! [`super`] reads them; everything here is tested with their text.

use std::collections::BTreeMap;
use std::net::IpAddr;

use flotilla_api::machine::{MachineAddress, MachineAddressType};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x0001;
/// `RTF_REJECT`: an unreachable route (the kernel's IPv6 catch-all on `lo`).
const RTF_REJECT: u32 = 0x0200;

/// A route of either family: its interface, whether it is a usable default
/// route, and its metric.
struct Route<'a> {
    interface: &'a str,
    default: bool,
    metric: u32,
}

/// The interfaces holding a default route, lowest metric first, from the
/// text of `/proc/net/route` (IPv4) or `/proc/net/ipv6_route` (IPv6).
pub fn default_route_interfaces(proc_net_route: &str) -> Vec<String> {
    let mut routes: Vec<Route> = proc_net_route.lines().filter_map(route).filter(|r| r.default).collect();
    routes.sort_by_key(|r| r.metric);
    let mut out: Vec<String> = Vec::new();
    for r in routes {
        if !out.iter().any(|i| i == r.interface) {
            out.push(r.interface.to_string());
        }
    }
    out
}

fn hex(field: &str) -> Option<u32> {
    u32::from_str_radix(field, 16).ok()
}

/// One line of either route file; `None` for the IPv4 header or a line
/// neither format reads.
fn route(line: &str) -> Option<Route<'_>> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        // /proc/net/ipv6_route: dest, dest prefix, src, src prefix, next hop,
        // metric, refcount, use, flags, interface.
        [dest, dest_prefix, _, _, _, metric, _, _, flags, interface] if dest.len() == 32 => {
            let flags = hex(flags)?;
            let usable = flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && *interface != "lo";
            let anywhere = dest.bytes().all(|b| b == b'0') && hex(dest_prefix)? == 0;
            Some(Route { interface, default: usable && anywhere, metric: hex(metric)? })
        }
        // /proc/net/route: interface, destination, gateway, flags, refcount,
        // use, metric, mask, ...
        [interface, dest, _, flags, _, _, metric, mask, ..] if dest.len() == 8 => {
            let flags = hex(flags)?;
            let anywhere = hex(dest)? == 0 && hex(mask)? == 0;
            Some(Route { interface, default: flags & RTF_UP != 0 && anywhere, metric: metric.parse().ok()? })
        }
        _ => None,
    }
}

/// Whether other machines could reach the host at `ip`: not loopback,
/// link-local, multicast or unspecified.
fn global(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || link_local || v6.is_unspecified() || v6.is_multicast())
        }
    }
}

/// The host's IPs in the order they are reported: those of interfaces
/// holding a default route of their family first (IPv4 before IPv6, then
/// in the order given), then the other global ones; each once.
pub fn ordered_ips(
    interfaces: &[(String, IpAddr)],
    default_v4: &[String],
    default_v6: &[String],
) -> Vec<IpAddr> {
    let on_default = |name: &str, ip: &IpAddr| {
        let defaults = if ip.is_ipv4() { default_v4 } else { default_v6 };
        defaults.iter().position(|d| d == name)
    };
    let mut ranked: Vec<(bool, bool, usize, usize, IpAddr)> = interfaces
        .iter()
        .enumerate()
        .filter(|(_, (_, ip))| global(ip))
        .map(|(order, (name, ip))| {
            let route = on_default(name, ip);
            (route.is_none(), ip.is_ipv6(), route.unwrap_or(0), order, *ip)
        })
        .collect();
    ranked.sort();
    let mut out: Vec<IpAddr> = Vec::new();
    for (.., ip) in ranked {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// `status.addresses`: the InternalIPs (only `given` when there is one),
/// then the hostname.
pub fn addresses(ips: &[IpAddr], given: Option<IpAddr>, hostname: Option<&str>) -> Vec<MachineAddress> {
    let internal: Vec<IpAddr> = match given {
        Some(ip) => vec![ip],
        None => ips.to_vec(),
    };
    internal
        .iter()
        .map(|ip| MachineAddress::new(MachineAddressType::InternalIp, ip.to_string()))
        .chain(hostname.map(|h| MachineAddress::new(MachineAddressType::Hostname, h)))
        .collect()
}

/// The hostname as a Node would carry it: trimmed, lower case, `None` when
/// empty.
pub fn hostname(text: &str) -> Option<String> {
    let name = text.trim().to_lowercase();
    (!name.is_empty()).then_some(name)
}

/// How many CPUs a list like `/sys/devices/system/cpu/online` names
/// (`0-3,5,7-8` is 7).
pub fn cpu_count(list: &str) -> Option<u32> {
    let mut count: u32 = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let one = part.parse::<u32>().ok()?;
                (one, one)
            }
        };
        count = count.checked_add(last.checked_sub(first)?.checked_add(1)?)?;
    }
    (count > 0).then_some(count)
}

/// `MemTotal` of `/proc/meminfo`, in KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") | None => Some(value),
            Some(_) => None,
        }
    })
}

/// A byte count as a Quantity, in `Ki` when it is whole KiB (as a Node's
/// capacity is written).
pub fn bytes_quantity(bytes: u64) -> Quantity {
    if bytes.is_multiple_of(1024) && bytes > 0 {
        Quantity(format!("{}Ki", bytes / 1024))
    } else {
        Quantity(bytes.to_string())
    }
}

/// `status.capacity`, leaving out what could not be read.
pub fn capacity(
    cpus: Option<u32>,
    memory_kib: Option<u64>,
    disk_bytes: Option<u64>,
) -> BTreeMap<String, Quantity> {
    let mut out = BTreeMap::new();
    if let Some(cpus) = cpus {
        out.insert("cpu".to_string(), Quantity(cpus.to_string()));
    }
    if let Some(kib) = memory_kib.filter(|k| *k > 0) {
        out.insert("memory".to_string(), Quantity(format!("{kib}Ki")));
    }
    if let Some(bytes) = disk_bytes.filter(|b| *b > 0) {
        out.insert("ephemeral-storage".to_string(), bytes_quantity(bytes));
    }
    out
}

/// `PRETTY_NAME` of an os-release file, unquoted.
pub fn os_image(os_release: &str) -> Option<String> {
    let value = os_release.lines().find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))?.trim();
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    (!unquoted.is_empty()).then(|| unquoted.to_string())
}

/// The architecture as Go (and so a Node) names it.
pub fn go_arch(rust_arch: &str) -> String {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
    .to_string()
}

/// `containerd://VERSION` from `containerd --version`
/// (`containerd github.com/containerd/containerd v1.7.0 <commit>`).
pub fn containerd_version(output: &str) -> Option<String> {
    let line = output.lines().next()?;
    let mut words = line.split_whitespace();
    if words.next()? != "containerd" {
        return None;
    }
    let version = words.nth(1)?;
    let version = version.strip_prefix('v').unwrap_or(version);
    version.starts_with(|c: char| c.is_ascii_digit()).then(|| format!("containerd://{version}"))
}

/// A single-line file's content, trimmed; `None` when empty.
pub fn line(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    const IPV6_ROUTE: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001       lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    #[test]
    fn default_routes_are_read_from_either_route_file() {
        let cases: &[(&str, String, &[&str])] = &[
            ("ipv4: the gateway route, not the subnet", ROUTE.to_string(), &["eth0"]),
            ("ipv6: the gateway route, not lo's unreachable catch-all", IPV6_ROUTE.to_string(), &["eth0"]),
            (
                "lowest metric first, each interface once",
                format!(
                    "{ROUTE}wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                     eth1\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                     eth1\t00000000\t0101A8C0\t0003\t0\t0\t700\t00000000\t0\t0\t0\n"
                ),
                &["eth0", "eth1", "wlan0"],
            ),
            (
                "a route that is down is no default",
                "eth9\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n".to_string(),
                &[],
            ),
            ("no default route at all", ROUTE.lines().take(1).collect::<String>(), &[]),
            ("garbage", "not a route file\n\n".to_string(), &[]),
        ];
        for (name, text, want) in cases {
            assert_eq!(default_route_interfaces(text), *want, "{name}");
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ips_on_default_route_interfaces_come_first_and_local_ones_never() {
        let host = |list: &[(&str, &str)]| -> Vec<(String, IpAddr)> {
            list.iter().map(|(i, a)| (i.to_string(), ip(a))).collect()
        };
        let names = |list: &[&str]| -> Vec<String> { list.iter().map(|n| n.to_string()).collect() };
        struct Case {
            name: &'static str,
            interfaces: Vec<(String, IpAddr)>,
            default_v4: Vec<String>,
            default_v6: Vec<String>,
            want: Vec<&'static str>,
        }
        let cases = [
            Case {
                name: "this machine: dual stack on eth0, loopback and link-local left out",
                interfaces: host(&[
                    ("lo", "127.0.0.1"),
                    ("lo", "::1"),
                    ("eth0", "192.0.2.2"),
                    ("eth0", "fd00::2"),
                    ("eth0", "fe80::fc:ff:fe00:1"),
                ]),
                default_v4: names(&["eth0"]),
                default_v6: names(&["eth0"]),
                want: vec!["192.0.2.2", "fd00::2"],
            },
            Case {
                name: "a bridge listed first still comes after the default route's interface",
                interfaces: host(&[("cni0", "10.88.0.1"), ("docker0", "172.17.0.1"), ("eth0", "192.0.2.2")]),
                default_v4: names(&["eth0"]),
                default_v6: vec![],
                want: vec!["192.0.2.2", "10.88.0.1", "172.17.0.1"],
            },
            Case {
                name: "an IPv6 address on an interface with only an IPv4 default route is not preferred",
                interfaces: host(&[("eth1", "2001:db8::5"), ("eth0", "2001:db8::9"), ("eth0", "192.0.2.2")]),
                default_v4: names(&["eth0"]),
                default_v6: names(&["eth1"]),
                want: vec!["192.0.2.2", "2001:db8::5", "2001:db8::9"],
            },
            Case {
                name: "default routes in metric order",
                interfaces: host(&[("eth0", "192.0.2.2"), ("eth1", "198.51.100.7")]),
                default_v4: names(&["eth1", "eth0"]),
                default_v6: vec![],
                want: vec!["198.51.100.7", "192.0.2.2"],
            },
            Case {
                name: "no default route: every global address in interface order, each once",
                interfaces: host(&[
                    ("eth0", "192.0.2.2"),
                    ("eth0:1", "192.0.2.2"),
                    ("eth1", "169.254.1.1"),
                    ("eth2", "10.0.0.4"),
                ]),
                default_v4: vec![],
                default_v6: vec![],
                want: vec!["192.0.2.2", "10.0.0.4"],
            },
            Case {
                name: "loopback only",
                interfaces: host(&[("lo", "127.0.0.1"), ("lo", "::1")]),
                default_v4: vec![],
                default_v6: vec![],
                want: vec![],
            },
        ];
        for case in cases {
            let want: Vec<IpAddr> = case.want.into_iter().map(ip).collect();
            assert_eq!(
                ordered_ips(&case.interfaces, &case.default_v4, &case.default_v6),
                want,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn addresses_list_the_internal_ips_or_only_the_given_one_then_the_hostname() {
        use MachineAddressType::{Hostname, InternalIp};
        let found = [ip("192.0.2.2"), ip("fd00::2")];
        struct Case {
            name: &'static str,
            given: Option<IpAddr>,
            hostname: Option<&'static str>,
            want: Vec<(MachineAddressType, &'static str)>,
        }
        let cases = [
            Case {
                name: "found",
                given: None,
                hostname: Some("m1"),
                want: vec![(InternalIp, "192.0.2.2"), (InternalIp, "fd00::2"), (Hostname, "m1")],
            },
            Case {
                name: "--address replaces them",
                given: Some(ip("127.0.0.1")),
                hostname: Some("m1"),
                want: vec![(InternalIp, "127.0.0.1"), (Hostname, "m1")],
            },
            Case {
                name: "no hostname",
                given: None,
                hostname: None,
                want: vec![(InternalIp, "192.0.2.2"), (InternalIp, "fd00::2")],
            },
        ];
        for case in cases {
            let want: Vec<MachineAddress> =
                case.want.into_iter().map(|(t, a)| MachineAddress::new(t, a)).collect();
            assert_eq!(addresses(&found, case.given, case.hostname), want, "{}", case.name);
        }
    }

    #[test]
    fn small_files_are_read_as_a_node_would_report_them() {
        let cpus: &[(&str, Option<u32>)] = &[
            ("0-1\n", Some(2)),
            ("0\n", Some(1)),
            ("0-3,5,7-8", Some(7)),
            ("", None),
            ("3-1", None),
            ("x", None),
        ];
        for (text, want) in cpus {
            assert_eq!(cpu_count(text), *want, "{text:?}");
        }
        let meminfo: &[(&str, Option<u64>)] = &[
            ("MemTotal:       16389012 kB\nMemFree:         1234 kB\n", Some(16_389_012)),
            ("MemFree:  1 kB\nMemTotal: 2048 kB\n", Some(2048)),
            ("MemTotal: 2048 MB\n", None),
            ("MemFree: 1 kB\n", None),
        ];
        for (text, want) in meminfo {
            assert_eq!(mem_total_kib(text), *want, "{text:?}");
        }
        let hostnames: &[(&str, Option<&str>)] = &[("Build-7\n", Some("build-7")), (" \n", None)];
        for (text, want) in hostnames {
            assert_eq!(hostname(text).as_deref(), *want, "{text:?}");
        }
        let releases: &[(&str, Option<&str>)] = &[
            (
                "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
                Some("Debian GNU/Linux 12 (bookworm)"),
            ),
            ("PRETTY_NAME='Alpine Linux v3.20'\n", Some("Alpine Linux v3.20")),
            ("PRETTY_NAME=Gentoo\n", Some("Gentoo")),
            ("PRETTY_NAME=\"\"\n", None),
            ("NAME=x\n", None),
        ];
        for (text, want) in releases {
            assert_eq!(os_image(text).as_deref(), *want, "{text:?}");
        }
        let runtimes: &[(&str, Option<&str>)] = &[
            (
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n",
                Some("containerd://1.6.20~ds1"),
            ),
            (
                "containerd github.com/containerd/containerd v1.7.0 1fbd70374134b891f97ce19c70b6e50c7b9f4e0d\n",
                Some("containerd://1.7.0"),
            ),
            ("containerd: command not found\n", None),
            ("runc version 1.1.5\n", None),
            ("", None),
        ];
        for (text, want) in runtimes {
            assert_eq!(containerd_version(text).as_deref(), *want, "{text:?}");
        }
        for (rust, go) in [("x86_64", "amd64"), ("aarch64", "arm64"), ("riscv64", "riscv64")] {
            assert_eq!(go_arch(rust), go);
        }
    }

    #[test]
    fn capacity_holds_what_was_read_in_node_units() {
        let q = |s: &str| Quantity(s.to_string());
        struct Case {
            name: &'static str,
            cpus: Option<u32>,
            memory_kib: Option<u64>,
            disk_bytes: Option<u64>,
            want: Vec<(&'static str, Quantity)>,
        }
        let cases = [
            Case {
                name: "everything",
                cpus: Some(2),
                memory_kib: Some(16_389_012),
                disk_bytes: Some(105_089_261_568),
                want: vec![
                    ("cpu", q("2")),
                    ("ephemeral-storage", q("102626232Ki")),
                    ("memory", q("16389012Ki")),
                ],
            },
            Case {
                name: "a disk size not in whole KiB stays in bytes",
                cpus: None,
                memory_kib: None,
                disk_bytes: Some(1000),
                want: vec![("ephemeral-storage", q("1000"))],
            },
            Case {
                name: "nothing readable",
                cpus: None,
                memory_kib: Some(0),
                disk_bytes: Some(0),
                want: vec![],
            },
        ];
        for case in cases {
            let want: BTreeMap<String, Quantity> =
                case.want.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            assert_eq!(capacity(case.cpus, case.memory_kib, case.disk_bytes), want, "{}", case.name);
        }
    }
}
