//! Owns server selection: the small [`Balancer`] trait every strategy
//! implements (one file each), the [`ServerView`] through which a strategy sees
//! live server state, and [`build`], the one place a [`BalanceKind`] becomes a
//! strategy.
//!
//! Strategies only rank candidates. Whether a server may be picked at all
//! (healthy, enabled, not already tried for this client, below `max_conns`,
//! primary-or-backup tier, effective weight after slow start) is decided by the
//! view, outside the algorithms, so that `retries` always go to another server
//! and every strategy honours server state the same way.

pub mod first;
pub mod least_connections;
pub mod power_of_two;
pub mod random;
pub mod round_robin;
pub mod source_hash;
pub mod weighted_round_robin;

use crate::config::{BalanceKind, ServerConfig};

/// Index of a server inside its listen's `servers` list (config order).
pub type ServerId = usize;

/// Live state of one listen's servers, as seen at the moment of a pick.
pub trait ServerView {
    /// Number of servers in the listen (usable or not).
    fn len(&self) -> usize;
    /// True when there are no servers at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// May this server be picked now? False for down, disabled, draining,
    /// already-tried, full, zero-weight servers, and for backups while a
    /// primary is usable.
    fn eligible(&self, id: ServerId) -> bool;
    /// Effective weight (after runtime changes and slow start); at least 1
    /// whenever `eligible(id)` is true.
    fn weight(&self, id: ServerId) -> u32;
    /// Active connections to this server, summed over all worker processes.
    fn active(&self, id: ServerId) -> u64;
    /// A ticket from a counter shared by every worker process of the listen
    /// (so `round_robin` rotates globally, not per process); `None` when the
    /// view has no shared counter.
    fn ticket(&self) -> Option<u64> {
        None
    }
}

/// A balancing strategy. One instance per listen per worker process, so
/// cursors are plain fields behind `&mut self`.
pub trait Balancer: Send + std::fmt::Debug {
    /// Picks an eligible server, or `None` when no server is eligible.
    /// `key` is a hash of the client's IP address (used by `source_hash`).
    fn pick(&mut self, view: &dyn ServerView, key: u64) -> Option<ServerId>;
}

/// Eligible servers in config order, starting at `start` and wrapping
/// around (`start` 0 for plain config order). The one eligibility scan every
/// strategy uses; it does not allocate.
pub fn eligible_from(view: &dyn ServerView, start: usize) -> impl Iterator<Item = ServerId> + '_ {
    let n = view.len();
    (0..n)
        .map(move |step| (start + step) % n)
        .filter(move |&id| view.eligible(id))
}

/// The `choose(count)`-th eligible server in config order, where `count` is
/// the number of eligible servers (at least 1); `None` when none is
/// eligible. Used by `random` and by `round_robin`'s shared-ticket rotation.
pub fn nth_eligible(
    view: &dyn ServerView,
    choose: impl FnOnce(usize) -> usize,
) -> Option<ServerId> {
    let count = eligible_from(view, 0).count();
    if count == 0 {
        return None;
    }
    // The view is live (other workers change it): if a server left between
    // the passes, fall back to the first eligible one rather than failing
    // the client.
    eligible_from(view, 0)
        .nth(choose(count))
        .or_else(|| eligible_from(view, 0).next())
}

/// Builds the strategy for a listen. The one `match` over [`BalanceKind`].
pub fn build(kind: BalanceKind, servers: &[ServerConfig]) -> Box<dyn Balancer> {
    match kind {
        BalanceKind::Random => Box::new(random::Random::new()),
        BalanceKind::RoundRobin => Box::new(round_robin::RoundRobin::new()),
        BalanceKind::WeightedRoundRobin => {
            Box::new(weighted_round_robin::WeightedRoundRobin::new(servers.len()))
        }
        BalanceKind::LeastConnections => Box::new(least_connections::LeastConnections::new()),
        BalanceKind::PowerOfTwo => Box::new(power_of_two::PowerOfTwo::new()),
        BalanceKind::SourceHash => Box::new(source_hash::SourceHash::new(servers)),
        BalanceKind::First => Box::new(first::First::new()),
    }
}

/// Hashes a client IP address with a fixed function, identical in every
/// process and every run (never `RandomState`), for `source_hash`.
pub fn client_key(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => fnv1a(&v4.octets()),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => fnv1a(&v4.octets()),
            None => fnv1a(&v6.octets()),
        },
    }
}

/// 64-bit FNV-1a followed by a murmur3 finaliser (good avalanche, fixed seed).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// murmur3's 64-bit finaliser.
pub fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// A plain in-memory view, for unit tests and tools.
#[derive(Debug, Clone, Default)]
pub struct VecView {
    /// Per server: (eligible, weight, active).
    pub servers: Vec<(bool, u32, u64)>,
}

impl VecView {
    /// `n` eligible servers of weight 1 and no active connections.
    pub fn uniform(n: usize) -> VecView {
        VecView {
            servers: vec![(true, 1, 0); n],
        }
    }

    /// Eligible servers with the given (weight, active connections).
    pub fn loaded(servers: &[(u32, u64)]) -> VecView {
        VecView {
            servers: servers.iter().map(|&(w, a)| (true, w, a)).collect(),
        }
    }

    /// Eligible servers with the given weights.
    pub fn weighted(weights: &[u32]) -> VecView {
        VecView {
            servers: weights.iter().map(|&w| (w > 0, w, 0)).collect(),
        }
    }
}

impl ServerView for VecView {
    fn len(&self) -> usize {
        self.servers.len()
    }
    fn eligible(&self, id: ServerId) -> bool {
        self.servers.get(id).is_some_and(|s| s.0 && s.1 > 0)
    }
    fn weight(&self, id: ServerId) -> u32 {
        self.servers.get(id).map_or(0, |s| s.1)
    }
    fn active(&self, id: ServerId) -> u64 {
        self.servers.get(id).map_or(0, |s| s.2)
    }
}
