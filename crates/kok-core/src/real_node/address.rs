//! The address plan of a group of real nodes: one slot `S` (0..=99) per
//! group, chosen free on the host, gives the bridge subnet 172.30.S.0/24
//! (the host is .1, node `i` is .(i+2)) and the cluster's pod range
//! 10.(100+S).0.0/16 (node `i` gets 10.(100+S).(i+1).0/24). Pods reach
//! other nodes' pods through a route per node: in every other node's
//! network namespace and on the host, that node's pod CIDR via its IP.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use super::RealNodeError;

/// Slots a group may take; see the module docs.
pub const SLOTS: std::ops::RangeInclusive<u8> = 0..=99;
/// Nodes one group holds at most (bridge addresses .2 to .201).
pub const MAX_NODES: u8 = 200;

/// An IPv4 network, `addr/prefix`, with `addr` its first address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// The network of `addr/prefix` (host bits cleared; prefix at most 32).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        Self { addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix }
    }

    /// `a.b.c.d/n`, `a.b.c.d` (a /32) or `default` (0.0.0.0/0), as `ip route`
    /// prints destinations.
    pub fn parse(text: &str) -> Option<Self> {
        if text == "default" {
            return Some(Self::new(Ipv4Addr::UNSPECIFIED, 0));
        }
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok().filter(|p| *p <= 32)?),
            None => (text, 32),
        };
        Some(Self::new(addr.parse().ok()?, prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The `n`-th address of the network (0 is the network itself).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// The addresses and host names of one group's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupAddresses {
    pub slot: u8,
}

/// One node's place in its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddresses {
    pub index: u8,
    pub ip: Ipv4Addr,
    pub pod_cidr: Ipv4Cidr,
    /// The node's network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// The host side of the node's veth pair (on the group's bridge).
    pub host_link: String,
    /// The node's end of the pair before it moves into the namespace and
    /// is renamed `eth0`.
    pub peer_link: String,
    /// The node's cgroup root, a top-level cgroup in every hierarchy.
    pub cgroup: String,
}

/// A route: `dst via via`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Cidr,
    pub via: Ipv4Addr,
}

/// Where a route goes: the host's main table or a node's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutePlace {
    Host,
    Node(u8),
}

impl GroupAddresses {
    pub fn for_slot(slot: u8) -> Option<Self> {
        SLOTS.contains(&slot).then_some(Self { slot })
    }

    /// The host bridge's subnet, 172.30.S.0/24.
    pub fn bridge_subnet(&self) -> Ipv4Cidr {
        Ipv4Cidr::new(Ipv4Addr::new(172, 30, self.slot, 0), 24)
    }

    /// The host's address on the bridge: the nodes' default gateway, and
    /// where they reach the API server.
    pub fn gateway(&self) -> Ipv4Addr {
        self.bridge_subnet().host(1)
    }

    /// Every pod address of the group, 10.(100+S).0.0/16 (kube-proxy's
    /// cluster CIDR).
    pub fn cluster_cidr(&self) -> Ipv4Cidr {
        Ipv4Cidr::new(Ipv4Addr::new(10, 100 + self.slot, 0, 0), 16)
    }

    /// The host bridge's name.
    pub fn bridge(&self) -> String {
        format!("flt{}br", self.slot)
    }

    /// Node `index`'s addresses and names (index below [`MAX_NODES`]).
    pub fn node(&self, index: u8) -> Result<NodeAddresses, RealNodeError> {
        if index >= MAX_NODES {
            return Err(RealNodeError::TooManyNodes { index: u16::from(index), max: MAX_NODES });
        }
        let s = self.slot;
        Ok(NodeAddresses {
            index,
            ip: self.bridge_subnet().host(u32::from(index) + 2),
            pod_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 100 + s, index + 1, 0), 24),
            // Link names are at most 15 bytes: "flt99v199" is 9.
            netns: format!("flt{s}n{index}"),
            host_link: format!("flt{s}v{index}"),
            peer_link: format!("flt{s}p{index}"),
            cgroup: format!("flotilla-s{s}-n{index}"),
        })
    }

    /// The routes in node `me`'s namespace: the default route via the host,
    /// and each other member's pod CIDR via that member's IP.
    pub fn routes_in_node(&self, me: u8, members: &[u8]) -> Result<Vec<Route>, RealNodeError> {
        let mut routes = vec![Route { dst: Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0), via: self.gateway() }];
        for &peer in members.iter().filter(|&&m| m != me) {
            routes.push(self.route_to(peer)?);
        }
        Ok(routes)
    }

    /// The route to node `index`'s pods, via its IP.
    pub fn route_to(&self, index: u8) -> Result<Route, RealNodeError> {
        let node = self.node(index)?;
        Ok(Route { dst: node.pod_cidr, via: node.ip })
    }

    /// What changes when node `new` joins `existing` members: each of them
    /// and the host learn the route to its pods.
    pub fn routes_on_join(
        &self,
        existing: &[u8],
        new: u8,
    ) -> Result<Vec<(RoutePlace, Route)>, RealNodeError> {
        let route = self.route_to(new)?;
        let mut changes = vec![(RoutePlace::Host, route.clone())];
        for &member in existing.iter().filter(|&&m| m != new) {
            changes.push((RoutePlace::Node(member), route.clone()));
        }
        Ok(changes)
    }
}

/// The first slot no live or stale group holds (`taken`) whose bridge
/// subnet and pod range overlap no host route other than a default route.
pub fn choose_slot(taken: &BTreeSet<u8>, host_routes: &[Ipv4Cidr]) -> Result<u8, RealNodeError> {
    SLOTS
        .filter(|slot| !taken.contains(slot))
        .find(|&slot| {
            let group = GroupAddresses { slot };
            let ours = [group.bridge_subnet(), group.cluster_cidr()];
            !host_routes.iter().filter(|r| r.prefix > 0).any(|r| ours.iter().any(|o| o.overlaps(r)))
        })
        .ok_or(RealNodeError::NoFreeSlot { slots: SLOTS.count() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        Ipv4Cidr::parse(s).unwrap()
    }

    #[test]
    fn cidrs_parse_as_ip_route_prints_them() {
        let cases: &[(&str, Option<(&str, u8)>)] = &[
            ("default", Some(("0.0.0.0", 0))),
            ("192.0.2.0/24", Some(("192.0.2.0", 24))),
            ("192.0.2.7/24", Some(("192.0.2.0", 24))),
            ("192.0.2.7", Some(("192.0.2.7", 32))),
            ("10.0.0.0/8", Some(("10.0.0.0", 8))),
            ("10.0.0.0/33", None),
            ("fe80::/64", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = Ipv4Cidr::parse(text).map(|c| (c.addr.to_string(), c.prefix));
            assert_eq!(got, want.map(|(a, p)| (a.to_string(), p)), "{text}");
        }
    }

    #[test]
    fn overlap_is_containment_either_way() {
        let cases = [
            ("10.0.0.0/8", "10.107.0.0/16", true),
            ("10.107.3.0/24", "10.0.0.0/8", true),
            ("10.107.0.0/16", "10.108.0.0/16", false),
            ("172.30.7.0/24", "172.30.7.9", true),
            ("172.30.7.0/24", "172.30.8.1", false),
            ("0.0.0.0/0", "1.2.3.4", true),
        ];
        for (a, b, want) in cases {
            assert_eq!(cidr(a).overlaps(&cidr(b)), want, "{a} {b}");
        }
    }

    #[test]
    fn a_slot_gives_a_group_its_subnets_and_names() {
        let g = GroupAddresses::for_slot(7).unwrap();
        assert_eq!(g.bridge_subnet().to_string(), "172.30.7.0/24");
        assert_eq!(g.gateway().to_string(), "172.30.7.1");
        assert_eq!(g.cluster_cidr().to_string(), "10.107.0.0/16");
        assert_eq!(g.bridge(), "flt7br");
        let n = g.node(0).unwrap();
        assert_eq!(n.ip.to_string(), "172.30.7.2");
        assert_eq!(n.pod_cidr.to_string(), "10.107.1.0/24");
        assert_eq!(
            (n.netns.as_str(), n.host_link.as_str(), n.peer_link.as_str()),
            ("flt7n0", "flt7v0", "flt7p0")
        );
        assert_eq!(n.cgroup, "flotilla-s7-n0");
        let last = GroupAddresses::for_slot(99).unwrap().node(MAX_NODES - 1).unwrap();
        assert_eq!(last.ip.to_string(), "172.30.99.201");
        assert_eq!(last.pod_cidr.to_string(), "10.199.200.0/24");
        assert!(last.host_link.len() <= 15 && last.peer_link.len() <= 15);
        assert_eq!(g.node(MAX_NODES), Err(RealNodeError::TooManyNodes { index: 200, max: MAX_NODES }));
        assert_eq!(GroupAddresses::for_slot(100), None);
    }

    #[test]
    fn every_pod_cidr_is_inside_the_cluster_cidr_and_apart() {
        let g = GroupAddresses::for_slot(3).unwrap();
        let nodes: Vec<_> = (0..MAX_NODES).map(|i| g.node(i).unwrap()).collect();
        for (i, a) in nodes.iter().enumerate() {
            assert!(g.cluster_cidr().contains(a.pod_cidr.addr), "{}", a.pod_cidr);
            assert!(g.bridge_subnet().contains(a.ip) && a.ip != g.gateway());
            for b in &nodes[i + 1..] {
                assert!(!a.pod_cidr.overlaps(&b.pod_cidr));
                assert_ne!(a.ip, b.ip);
            }
        }
    }

    #[test]
    fn nodes_route_to_each_others_pods_and_the_host_routes_to_all() {
        let g = GroupAddresses::for_slot(7).unwrap();
        let routes = g.routes_in_node(1, &[0, 1, 2]).unwrap();
        let shown: Vec<String> = routes.iter().map(|r| format!("{} via {}", r.dst, r.via)).collect();
        assert_eq!(
            shown,
            ["0.0.0.0/0 via 172.30.7.1", "10.107.1.0/24 via 172.30.7.2", "10.107.3.0/24 via 172.30.7.4"]
        );

        let changes = g.routes_on_join(&[0, 2], 5).unwrap();
        let shown: Vec<String> =
            changes.iter().map(|(place, r)| format!("{place:?}: {} via {}", r.dst, r.via)).collect();
        assert_eq!(
            shown,
            [
                "Host: 10.107.6.0/24 via 172.30.7.7",
                "Node(0): 10.107.6.0/24 via 172.30.7.7",
                "Node(2): 10.107.6.0/24 via 172.30.7.7"
            ]
        );
        assert_eq!(g.routes_on_join(&[], 0).unwrap().len(), 1);
    }

    #[test]
    fn the_chosen_slot_is_held_by_no_group_and_clashes_with_no_route() {
        struct Case {
            name: &'static str,
            taken: &'static [u8],
            routes: &'static [&'static str],
            want: Result<u8, RealNodeError>,
        }
        let all_held: Vec<u8> = (0..=99).collect();
        let no_slot = Err(RealNodeError::NoFreeSlot { slots: 100 });
        let cases = [
            Case { name: "empty host", taken: &[], routes: &["default", "192.0.2.0/24"], want: Ok(0) },
            Case { name: "held slots are skipped", taken: &[0, 1], routes: &[], want: Ok(2) },
            Case {
                name: "a route on a bridge subnet",
                taken: &[],
                routes: &["172.30.0.0/24", "172.30.1.5"],
                want: Ok(2),
            },
            Case { name: "a route inside a pod range", taken: &[], routes: &["10.100.3.0/24"], want: Ok(1) },
            Case {
                name: "a wide route covers every slot",
                taken: &[],
                routes: &["172.16.0.0/12"],
                want: no_slot.clone(),
            },
            Case {
                name: "a wide pod-side route too",
                taken: &[],
                routes: &["10.0.0.0/8"],
                want: no_slot.clone(),
            },
        ];
        for c in cases {
            let taken: BTreeSet<u8> = c.taken.iter().copied().collect();
            let routes: Vec<Ipv4Cidr> = c.routes.iter().map(|r| cidr(r)).collect();
            assert_eq!(choose_slot(&taken, &routes), c.want, "{}", c.name);
        }
        assert_eq!(choose_slot(&all_held.into_iter().collect(), &[]), no_slot, "all held");
    }
}
