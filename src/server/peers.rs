//! Live connections per client address, capped: a slot is taken at accept and
//! given back when the connection ends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// The live connections of every client address, shared by all workers.
#[derive(Debug)]
pub struct Peers {
    max_per_client: usize,
    live: Mutex<HashMap<IpAddr, usize>>,
}

/// One live connection of a client; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    peers: Arc<Peers>,
    client: IpAddr,
}

impl Peers {
    pub fn new(max_per_client: usize) -> Arc<Peers> {
        Arc::new(Peers {
            max_per_client,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a new connection from `address`, or `None` when that client
    /// already holds the most allowed.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Option<Slot> {
        let client = client_of(address);
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let count = live.entry(client).or_insert(0);
        if *count >= self.max_per_client {
            return None;
        }
        *count += 1;
        Some(Slot {
            peers: self.clone(),
            client,
        })
    }

    /// The live connections of the client of `address`.
    pub fn live(&self, address: IpAddr) -> usize {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(&client_of(address)).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut live = self
            .peers
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = live.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            // The table holds only clients with a live connection: it stays bounded.
            if *count == 0 {
                live.remove(&self.client);
            }
        }
    }
}

/// The client an address belongs to: an IPv4 address (IPv4-mapped IPv6
/// included) is one client; an IPv6 address is counted by its /64, the block
/// one host or site is usually given, so that rotating through it gains nothing.
fn client_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_client_gets_at_most_its_cap_and_a_closed_connection_frees_its_slot() {
        let peers = Peers::new(2);
        let first = peers.admit(ip("192.0.2.1")).unwrap();
        let _second = peers.admit(ip("192.0.2.1")).unwrap();
        assert!(peers.admit(ip("192.0.2.1")).is_none());
        assert!(peers.admit(ip("192.0.2.2")).is_some(), "another client");
        drop(first);
        assert_eq!(peers.live(ip("192.0.2.1")), 1);
        assert!(peers.admit(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn a_client_without_connections_leaves_no_entry() {
        let peers = Peers::new(1);
        drop(peers.admit(ip("192.0.2.1")).unwrap());
        assert!(peers.live.lock().unwrap().is_empty());
    }

    #[test]
    fn ipv6_addresses_of_one_64_are_one_client_and_mapped_ipv4_is_ipv4() {
        let peers = Peers::new(1);
        let _held = peers.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(peers.admit(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(peers.admit(ip("2001:db8:1:3::1")).is_some());
        let _v4 = peers.admit(ip("192.0.2.7")).unwrap();
        assert!(peers.admit(ip("::ffff:192.0.2.7")).is_none());
    }
}
