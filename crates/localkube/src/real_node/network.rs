//! A group's network on the host: its bridge, and per node a network
//! namespace joined to the bridge by a veth pair, with the routes of the
//! address plan (`flotilla_kok_core::real_node::address`).

use flotilla_kok_core::real_node::{GroupAddresses, NodeAddresses, Route, RoutePlace};

use super::host::ip;
use crate::Result;

/// Creates the group's bridge with the host's gateway address (replacing a
/// leftover of the same name).
pub fn create_bridge(group: &GroupAddresses) -> Result<()> {
    let bridge = group.bridge();
    if link_exists(&bridge) {
        ip(&["link", "del", &bridge])?;
    }
    ip(&["link", "add", &bridge, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{}/{}", group.gateway(), group.bridge_subnet().prefix), "dev", &bridge])?;
    ip(&["link", "set", &bridge, "up"])?;
    Ok(())
}

/// Creates node `node`'s namespace and link, with its routes to the host
/// and to `members`' pods, and teaches the host and the members the route
/// to its own pods.
pub fn create_node(group: &GroupAddresses, node: &NodeAddresses, members: &[u8]) -> Result<()> {
    let ns = node.netns.as_str();
    // Leftovers of the same name (a crash between creating them and
    // recording them) go first.
    delete_node(node);
    ip(&["netns", "add", ns])?;
    ip(&["link", "add", &node.host_link, "type", "veth", "peer", "name", &node.peer_link])?;
    ip(&["link", "set", &node.host_link, "master", &group.bridge()])?;
    ip(&["link", "set", &node.host_link, "up"])?;
    ip(&["link", "set", &node.peer_link, "netns", ns])?;
    ip(&["-n", ns, "link", "set", &node.peer_link, "name", "eth0"])?;
    ip(&["-n", ns, "addr", "add", &format!("{}/{}", node.ip, group.bridge_subnet().prefix), "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    let mut all = members.to_vec();
    all.push(node.index);
    for route in group.routes_in_node(node.index, &all)? {
        add_route(Some(ns), &route)?;
    }
    for (place, route) in group.routes_on_join(members, node.index)? {
        match place {
            RoutePlace::Host => add_route(None, &route)?,
            RoutePlace::Node(member) => add_route(Some(&group.node(member)?.netns), &route)?,
        }
    }
    Ok(())
}

/// Takes node `node` out of the group's routes (the host's and
/// `members`'), best effort.
pub fn forget_node_routes(group: &GroupAddresses, node: &NodeAddresses, members: &[u8]) {
    let Ok(changes) = group.routes_on_join(members, node.index) else {
        return;
    };
    for (place, route) in changes {
        let netns = match place {
            RoutePlace::Host => None,
            RoutePlace::Node(member) => match group.node(member) {
                Ok(n) => Some(n.netns),
                Err(_) => continue,
            },
        };
        let _ = del_route(netns.as_deref(), &route);
    }
}

/// Deletes a node's namespace and link (whichever exist).
pub fn delete_node(node: &NodeAddresses) {
    delete_netns_and_link(&node.netns, &node.host_link);
}

/// Deletes a namespace and a host link by name, if they exist. The
/// namespace's end of the pair goes with it; deleting the host end too
/// covers a pair whose other end never moved.
pub fn delete_netns_and_link(netns: &str, host_link: &str) {
    if netns_exists(netns) {
        if let Err(e) = ip(&["netns", "del", netns]) {
            tracing::warn!(%netns, error = %e, "deleting a real node's network namespace");
        }
    }
    if link_exists(host_link) {
        if let Err(e) = ip(&["link", "del", host_link]) {
            tracing::warn!(link = %host_link, error = %e, "deleting a real node's link");
        }
    }
}

/// Deletes a bridge, if it exists (its routes go with it).
pub fn delete_bridge(bridge: &str) {
    if link_exists(bridge) {
        if let Err(e) = ip(&["link", "del", bridge]) {
            tracing::warn!(%bridge, error = %e, "deleting a real-node bridge");
        }
    }
}

pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

fn add_route(netns: Option<&str>, route: &Route) -> Result<()> {
    let (dst, via) = (route.dst.to_string(), route.via.to_string());
    match netns {
        Some(ns) => ip(&["-n", ns, "route", "replace", &dst, "via", &via]),
        None => ip(&["route", "replace", &dst, "via", &via]),
    }
    .map(|_| ())
}

fn del_route(netns: Option<&str>, route: &Route) -> Result<()> {
    let (dst, via) = (route.dst.to_string(), route.via.to_string());
    match netns {
        Some(ns) => ip(&["-n", ns, "route", "del", &dst, "via", &via]),
        None => ip(&["route", "del", &dst, "via", &via]),
    }
    .map(|_| ())
}
