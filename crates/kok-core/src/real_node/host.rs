//! Reading what the host says, as text in and values out: the routes `ip`
//! prints, the cgroup hierarchies `/proc/self/mountinfo` lists, a
//! process's start time in `/proc/PID/stat`, the pids in `cgroup.procs`.

use std::path::PathBuf;

use super::address::Ipv4Cidr;

/// The IPv4 destinations in `ip -j -4 route show table all`'s output
/// (entries without an IPv4 destination are skipped).
pub fn route_destinations(ip_json: &str) -> Result<Vec<Ipv4Cidr>, String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        dst: Option<String>,
    }
    let entries: Vec<Entry> =
        serde_json::from_str(ip_json).map_err(|e| format!("reading `ip -j route` output: {e}"))?;
    Ok(entries.iter().filter_map(|e| e.dst.as_deref().and_then(Ipv4Cidr::parse)).collect())
}

/// Where cgroup hierarchies are mounted, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// The v1 hierarchies (fs type `cgroup`).
    pub v1: Vec<PathBuf>,
    /// The unified hierarchy (fs type `cgroup2`): beside v1 ("hybrid"),
    /// runc creates every container's cgroup there too.
    pub unified: Vec<PathBuf>,
}

impl CgroupMounts {
    pub fn parse(mountinfo: &str) -> Self {
        let mut mounts = Self::default();
        for line in mountinfo.lines() {
            let Some((fields, rest)) = line.split_once(" - ") else {
                continue;
            };
            let (Some(fs_type), Some(mount_point)) =
                (rest.split_whitespace().next(), fields.split_whitespace().nth(4))
            else {
                continue;
            };
            let path = PathBuf::from(unescape_octal(mount_point));
            match fs_type {
                "cgroup" => mounts.v1.push(path),
                "cgroup2" => mounts.unified.push(path),
                _ => {}
            }
        }
        mounts
    }

    /// Every hierarchy: where a node's cgroups are created, joined, listed
    /// and removed.
    pub fn all(&self) -> Vec<PathBuf> {
        self.v1.iter().chain(&self.unified).cloned().collect()
    }
}

/// mountinfo writes space, tab, newline and backslash as `\NNN`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A process's start time (clock ticks after boot, field 22 of
/// `/proc/PID/stat`): with the pid, it names one process even after the
/// pid is reused. `None` for a zombie or an unreadable line.
pub fn process_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `state` is field 3; field 22 is 19 further.
    fields.nth(18)?.parse().ok()
}

/// The pids listed in a `cgroup.procs` file.
pub fn cgroup_pids(procs: &str) -> Vec<u32> {
    procs.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keep_ipv4_destinations() {
        let json = r#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]},
            {"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"192.0.2.2","flags":[]},
            {"type":"local","dst":"192.0.2.2","table":"local","dev":"eth0"},
            {"type":"broadcast","dst":"127.255.255.255","table":"local","dev":"lo"},
            {"dev":"weird"}]"#;
        let got: Vec<String> = route_destinations(json).unwrap().iter().map(|c| c.to_string()).collect();
        assert_eq!(got, ["0.0.0.0/0", "192.0.2.0/24", "192.0.2.2/32", "127.255.255.255/32"]);
        assert!(route_destinations("not json").unwrap_err().contains("ip -j route"));
        assert_eq!(route_destinations("[]").unwrap(), vec![]);
    }

    #[test]
    fn cgroup_mounts_are_v1_hierarchies_and_the_unified_one() {
        let mountinfo = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
33 30 0:29 / /sys/fs/cgroup/systemd rw,relatime shared:9 - cgroup cgroup rw,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/odd\\040dir rw - cgroup cgroup rw,memory
broken line
";
        let shown = |paths: &[PathBuf]| paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
        let mounts = CgroupMounts::parse(mountinfo);
        assert_eq!(
            shown(&mounts.v1),
            ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/odd dir"]
        );
        assert_eq!(shown(&mounts.unified), ["/sys/fs/cgroup/unified"]);
        assert_eq!(mounts.all().len(), 5);
        let v2_only = CgroupMounts::parse("40 1 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert!(v2_only.v1.is_empty());
        assert_eq!(shown(&v2_only.unified), ["/sys/fs/cgroup"]);
    }

    #[test]
    fn start_time_is_field_22_and_zombies_have_none() {
        let fields_after_name = |state: &str| {
            let mut f = vec![state.to_string()];
            f.extend((4..=21).map(|n| n.to_string()));
            f.push("987654".into());
            f.extend((23..=30).map(|n| n.to_string()));
            f.join(" ")
        };
        let cases = [
            (format!("1234 (sleep) {}", fields_after_name("S")), Some(987654)),
            (format!("1234 (a) b (c)) {}", fields_after_name("R")), Some(987654)),
            (format!("1234 (sleep) {}", fields_after_name("Z")), None),
            ("1234 (sleep) S 1 2".to_string(), None),
            ("garbage".to_string(), None),
        ];
        for (stat, want) in cases {
            assert_eq!(process_start_time(&stat), want, "{stat}");
        }
    }

    #[test]
    fn cgroup_procs_lists_pids() {
        assert_eq!(cgroup_pids("12\n345\n\n"), vec![12, 345]);
        assert!(cgroup_pids("").is_empty());
    }
}
