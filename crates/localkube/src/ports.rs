//! Free TCP ports on loopback.
//!
//! A port is found by binding port 0 and releasing it. Within one process a
//! port is never handed out twice; across processes a collision is possible
//! but rare, and callers retry start-up when a process reports the address in
//! use.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let mut used = handed_out().lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if used.insert(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free loopback port found"))
}

/// Where [`free_range`] looks: below Linux's default ephemeral range
/// (32768-60999), so no outgoing connection is ever given one of these
/// ports while a range sits unused, waiting for the process that will
/// listen on it (a port of the ephemeral range can be taken by any client
/// socket in the meantime, and the listener then fails "address in use").
pub const RANGE_PORTS: std::ops::Range<u16> = 20000..32000;

/// The first of `count` consecutive loopback ports, all free a moment ago,
/// for components that get their ports later (operators handing out ports
/// from a range). Starts at a random place, so concurrent test processes
/// try different ranges; within one process a port is never handed out
/// twice.
pub fn free_range(count: u16) -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    let span = RANGE_PORTS.end - RANGE_PORTS.start;
    if count == 0 || count > span {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("no range of {count} ports"),
        ));
    }
    let mut used = handed_out().lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let mut random = std::collections::hash_map::RandomState::new().build_hasher();
        random.write_u32(std::process::id());
        let offset = u16::try_from(random.finish() % u64::from(span - count + 1)).unwrap_or(0);
        let base = RANGE_PORTS.start + offset;
        let ports = base..base + count;
        if ports.clone().all(|p| !used.contains(&p) && TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            used.extend(ports);
            return Ok(base);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!(
            "no {count} free consecutive loopback ports between {} and {}",
            RANGE_PORTS.start, RANGE_PORTS.end
        ),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_are_below_the_ephemeral_ports_distinct_and_bindable() {
        let a = super::free_range(40).unwrap();
        let b = super::free_range(40).unwrap();
        for base in [a, b] {
            assert!(
                super::RANGE_PORTS.contains(&base) && super::RANGE_PORTS.contains(&(base + 39)),
                "{base}"
            );
        }
        assert!(a + 40 <= b || b + 40 <= a, "overlapping ranges {a} and {b}");
        std::net::TcpListener::bind(("127.0.0.1", a)).unwrap();
        assert!(super::free_range(0).is_err());
        assert!(super::free_range(u16::MAX).is_err());
    }

    #[test]
    fn ports_are_distinct_and_bindable() {
        let a = super::free_port().unwrap();
        let b = super::free_port().unwrap();
        assert_ne!(a, b);
        std::net::TcpListener::bind(("127.0.0.1", a)).unwrap();
    }
}
