//! A test host of its own: a network namespace joined to this one by a
//! veth pair, so a process can be cut off from the network and healed
//! (`ip` from Debian's iproute2; needs root). Deleted on drop, veth with it.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::{Error, Result};

/// A network namespace with one veth link to the host side.
pub struct NetnsHost {
    name: String,
    host_link: String,
    /// The host side's address, as the namespace reaches it.
    pub host_ip: Ipv4Addr,
    /// The namespace side's address.
    pub ns_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::Config(format!("running `ip {}`: {e} (install iproute2)", args.join(" "))))?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl NetnsHost {
    /// A namespace named after this process and `tag` (unique per test),
    /// with addresses in 10.213.N.0/30.
    pub fn create(tag: &str) -> Result<NetnsHost> {
        let pid = std::process::id();
        let name = format!("flt-{pid}-{tag}");
        // Link names are at most 15 bytes: derive short unique ones.
        let port =
            || crate::ports::free_port().map_err(|e| Error::Config(format!("picking a link name: {e}")));
        let short = format!("{:x}", port()?);
        let host_link = format!("fh{pid:x}{short}").chars().take(15).collect::<String>();
        let ns_link = format!("fn{pid:x}{short}").chars().take(15).collect::<String>();
        // Distinct enough for the few test hosts a run has at once.
        let subnet = (port()? % 250) as u8 + 1;
        let host_ip = Ipv4Addr::new(10, 213, subnet, 1);
        let ns_ip = Ipv4Addr::new(10, 213, subnet, 2);
        ip(&["netns", "add", &name])?;
        let host = NetnsHost { name, host_link, host_ip, ns_ip };
        ip(&["link", "add", &host.host_link, "type", "veth", "peer", "name", &ns_link])?;
        ip(&["link", "set", &ns_link, "netns", &host.name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host.host_link])?;
        ip(&["link", "set", &host.host_link, "up"])?;
        ip(&["-n", &host.name, "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_link])?;
        ip(&["-n", &host.name, "link", "set", &ns_link, "up"])?;
        ip(&["-n", &host.name, "link", "set", "lo", "up"])?;
        Ok(host)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cuts the namespace off (the host side of the link goes down).
    pub fn cut(&self) -> Result<()> {
        ip(&["link", "set", &self.host_link, "down"])
    }

    /// Heals the cut.
    pub fn heal(&self) -> Result<()> {
        ip(&["link", "set", &self.host_link, "up"])
    }

    /// The argument prefix that runs a program inside the namespace
    /// (`ip netns exec NAME ...`, which execs it: the pid is the program's).
    pub fn exec_prefix(&self) -> Vec<String> {
        vec!["netns".into(), "exec".into(), self.name.clone()]
    }
}

impl Drop for NetnsHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and the pair.
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
