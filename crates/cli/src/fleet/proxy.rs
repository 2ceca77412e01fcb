//! Where the local fleet's cluster proxy serves (`hub run
//! --proxy-listen/--proxy-advertise`, see `flotilla_hub::proxy`).
//!
//! The hub's API server reaches the proxy through an APIService whose
//! endpoint may not be a loopback address (Kubernetes refuses such
//! endpoints), so the proxy serves on an address of this host that is not
//! loopback: the real nodes' bridge when there is one, else the first
//! interface that is up.

use std::net::Ipv4Addr;

/// An IPv4 address of one of this host's interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    pub address: Ipv4Addr,
    pub up: bool,
}

/// The address the proxy serves and is advertised on: the real nodes'
/// bridge if the fleet has one, else the first interface that is up with an
/// address the API server may route to (not loopback, link-local or
/// unspecified). None when the host has no such address.
pub fn advertise_address(bridge: Option<Ipv4Addr>, interfaces: &[InterfaceAddress]) -> Option<Ipv4Addr> {
    bridge.or_else(|| {
        interfaces
            .iter()
            .find(|i| {
                i.up && !i.address.is_loopback() && !i.address.is_link_local() && !i.address.is_unspecified()
            })
            .map(|i| i.address)
    })
}

/// This host's IPv4 interface addresses, in the kernel's order.
pub fn interface_addresses() -> Vec<InterfaceAddress> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addresses
        .filter_map(|a| {
            let address = a.address?.as_sockaddr_in()?.ip();
            let up = a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
            Some(InterfaceAddress { interface: a.interface_name, address, up })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, address: [u8; 4], up: bool) -> InterfaceAddress {
        InterfaceAddress { interface: name.into(), address: address.into(), up }
    }

    #[test]
    fn the_proxy_serves_on_an_address_the_api_server_may_route_to() {
        let lo = iface("lo", [127, 0, 0, 1], true);
        let eth0 = iface("eth0", [192, 0, 2, 2], true);
        let down = iface("eth1", [10, 0, 0, 5], false);
        let link_local = iface("eth2", [169, 254, 1, 1], true);
        let bridge = Some(Ipv4Addr::new(10, 88, 0, 1));
        type Case = (&'static str, Option<Ipv4Addr>, Vec<InterfaceAddress>, Option<Ipv4Addr>);
        let cases: Vec<Case> = vec![
            ("the real nodes' bridge first", bridge, vec![lo.clone(), eth0.clone()], bridge),
            ("else the first interface up", None, vec![lo.clone(), eth0.clone()], Some(eth0.address)),
            ("never loopback", None, vec![lo.clone()], None),
            ("never an interface that is down", None, vec![down.clone(), eth0.clone()], Some(eth0.address)),
            ("never link-local", None, vec![link_local.clone(), down.clone()], None),
            ("no interface at all", None, vec![], None),
        ];
        for (name, bridge, interfaces, want) in cases {
            assert_eq!(advertise_address(bridge, &interfaces), want, "{name}");
        }
    }
}
