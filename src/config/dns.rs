//! Owns the typed shape of servers found by DNS: the `[resolver]` section
//! ([`ResolverConfig`]), what one `{ addr = NAME, resolve = "10s" }` entry
//! asks for ([`DnsSpec`], [`Lookup`]) and the slot a [`super::ServerConfig`]
//! is of such an entry ([`DnsSlot`]). Validation is `validate/resolve.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// `[resolver]`: where the master's resolver thread asks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolverConfig {
    /// `nameservers = ["127.0.0.1:5353"]` (IP or IP:PORT, port 53 by
    /// default). Empty (the default): the `nameserver` lines of
    /// `/etc/resolv.conf`, read again before each lookup.
    pub nameservers: Vec<SocketAddr>,
    /// One query's wait for an answer, per nameserver. Default 2s.
    pub timeout: Duration,
}

/// What one entry resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// `addr = "api.internal:8080"`: A and AAAA records, this port.
    Host {
        /// The name, lower case, no final dot.
        name: String,
        /// The port every address gets.
        port: u16,
    },
    /// `addr = "_http._tcp.api.internal"`: SRV records (ports, weights,
    /// priorities), their targets' A/AAAA.
    Srv {
        /// The SRV name, lower case, no final dot.
        name: String,
    },
}

impl Lookup {
    /// As written in `addr` (normalised): the key of an entry's state.
    pub fn text(&self) -> String {
        match self {
            Lookup::Host { name, port } => format!("{name}:{port}"),
            Lookup::Srv { name } => name.clone(),
        }
    }
}

/// One `resolve` entry of a listen's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSpec {
    /// What to ask.
    pub lookup: Lookup,
    /// `resolve = "10s"`: time between two lookups (at least 1s).
    pub every: Duration,
    /// `max = 8`: slots (addresses at most) reserved for the entry.
    pub max: usize,
}

/// A server that is slot `nth` of a DNS entry: its address is the one the
/// master last wrote into its cell of the shared region (none: the slot is
/// empty and never picked); `addr` in its [`super::ServerConfig`] is a
/// placeholder never connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSlot {
    /// The entry (shared by its `max` slots).
    pub spec: Arc<DnsSpec>,
    /// Position in the entry, `0..spec.max`.
    pub nth: usize,
}
