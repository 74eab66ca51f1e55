//! Owns the per-client limits of a listen (`max_conns_per_client`, `rate`),
//! global across workers through the shared region: each worker counts its
//! own clients in its own table (open addressing over a hash of the client
//! address, one writer per cell), and a decision sums the cells with the
//! same key over every slot's table. Rate windows are aligned (monotonic ms
//! divided by `per`), so all workers count the same window. A table with no
//! room left admits untracked (fail open: a full table never refuses a
//! legitimate client). A dead worker's table is zeroed with its slot.

use crate::balance::fnv1a;
use crate::config::ClientLimits;
use crate::shm::{CLIENT_BUCKETS, ClientCell, Region};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

/// Cells probed from a key's home bucket.
const PROBES: usize = 16;

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It holds `max_conns_per_client` connections already.
    TooMany,
    /// It opened `rate.conns` connections in this window already.
    TooFast,
}

impl Refusal {
    /// The word for the log.
    pub fn word(self) -> &'static str {
        match self {
            Refusal::TooMany => "max_conns_per_client",
            Refusal::TooFast => "rate",
        }
    }
}

/// The key of a client address (never 0, the free mark).
pub fn key_of(ip: IpAddr) -> u64 {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let h = match ip {
        IpAddr::V4(v4) => fnv1a(&v4.octets()),
        IpAddr::V6(v6) => fnv1a(&v6.octets()),
    };
    h | 1
}

fn probe(
    region: &Region,
    slot: usize,
    listen: usize,
    key: u64,
) -> impl Iterator<Item = (usize, &ClientCell)> {
    let home = (key as usize) & (CLIENT_BUCKETS - 1);
    (0..PROBES).filter_map(move |i| {
        let b = (home + i) & (CLIENT_BUCKETS - 1);
        region.client(slot, listen, b).map(|c| (b, c))
    })
}

/// Decides on a new client of listen `listen` accepted by worker `slot`;
/// on admission counts it and returns the cell to release at close (None:
/// untracked).
pub fn admit(
    region: &Region,
    slot: usize,
    listen: usize,
    limits: &ClientLimits,
    ip: IpAddr,
    now_ms: u64,
) -> Result<Option<usize>, Refusal> {
    let key = key_of(ip);
    let window = limits
        .rate
        .map(|r| now_ms / (r.per.as_millis().max(1) as u64))
        .unwrap_or(0);
    let (mut active, mut recent) = (0u64, 0u64);
    for k in 0..region.slots() {
        if let Some((_, c)) =
            probe(region, k, listen, key).find(|(_, c)| c.key.load(Relaxed) == key)
        {
            active += u64::from(c.active.load(Relaxed));
            if c.window.load(Relaxed) == window {
                recent += u64::from(c.window_count.load(Relaxed));
            }
        }
    }
    if let Some(max) = limits.max_conns
        && active >= u64::from(max)
    {
        return Err(Refusal::TooMany);
    }
    if let Some(rate) = limits.rate
        && recent >= u64::from(rate.conns)
    {
        return Err(Refusal::TooFast);
    }
    // Our own cell: the key's, else a free one (never used, or holding no
    // connection and no count of this window).
    let own = probe(region, slot, listen, key)
        .find(|(_, c)| c.key.load(Relaxed) == key)
        .or_else(|| {
            probe(region, slot, listen, key).find(|(_, c)| {
                let k = c.key.load(Relaxed);
                k == 0 || (c.active.load(Relaxed) == 0 && c.window.load(Relaxed) != window)
            })
        });
    let Some((bucket, cell)) = own else {
        return Ok(None);
    };
    if cell.key.load(Relaxed) != key {
        cell.key.store(key, Relaxed);
        cell.active.store(0, Relaxed);
        cell.window_count.store(0, Relaxed);
    }
    cell.active.fetch_add(1, Relaxed);
    if cell.window.load(Relaxed) != window {
        cell.window.store(window, Relaxed);
        cell.window_count.store(0, Relaxed);
    }
    cell.window_count.fetch_add(1, Relaxed);
    Ok(Some(bucket))
}

/// A client admitted into `bucket` closed.
pub fn release(region: &Region, slot: usize, listen: usize, bucket: usize) {
    if let Some(c) = region.client(slot, listen, bucket) {
        let _ = c
            .active
            .fetch_update(Relaxed, Relaxed, |a| Some(a.saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimit;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn max_conns_per_client_counts_every_worker_and_frees_on_release() {
        let r = Region::with_clients(2, 1, 1).expect("region");
        let limits = ClientLimits {
            max_conns: Some(2),
            rate: None,
        };
        let a = admit(&r, 0, 0, &limits, ip(2), 0).expect("first");
        let _b = admit(&r, 1, 0, &limits, ip(2), 0).expect("second, other worker");
        assert_eq!(admit(&r, 0, 0, &limits, ip(2), 0), Err(Refusal::TooMany));
        assert!(
            admit(&r, 0, 0, &limits, ip(3), 0).is_ok(),
            "another client is not affected"
        );
        release(&r, 0, 0, a.expect("tracked"));
        assert!(
            admit(&r, 1, 0, &limits, ip(2), 0).is_ok(),
            "room again after a close"
        );
    }

    #[test]
    fn rate_counts_an_aligned_window_across_workers() {
        let r = Region::with_clients(2, 1, 1).expect("region");
        let limits = ClientLimits {
            max_conns: None,
            rate: Some(RateLimit {
                conns: 3,
                per: Duration::from_secs(1),
            }),
        };
        for k in [0, 1, 0] {
            assert!(admit(&r, k, 0, &limits, ip(9), 1_000).is_ok());
        }
        assert_eq!(
            admit(&r, 1, 0, &limits, ip(9), 1_999),
            Err(Refusal::TooFast)
        );
        assert!(
            admit(&r, 1, 0, &limits, ip(9), 2_000).is_ok(),
            "a new window"
        );
    }

    #[test]
    fn a_dead_workers_connections_stop_counting_when_its_slot_is_reset() {
        let r = Region::with_clients(2, 1, 1).expect("region");
        let limits = ClientLimits {
            max_conns: Some(1),
            rate: None,
        };
        admit(&r, 1, 0, &limits, ip(4), 0).expect("admitted");
        assert_eq!(admit(&r, 0, 0, &limits, ip(4), 0), Err(Refusal::TooMany));
        r.reset_slot(1);
        assert!(admit(&r, 0, 0, &limits, ip(4), 0).is_ok());
    }

    #[test]
    fn a_full_table_admits_untracked() {
        let r = Region::with_clients(1, 1, 1).expect("region");
        let limits = ClientLimits {
            max_conns: Some(5),
            rate: None,
        };
        let mut untracked = 0;
        for n in 0..=255u8 {
            for m in 0..8u8 {
                let ip = IpAddr::from([10, m, 0, n]);
                if admit(&r, 0, 0, &limits, ip, 0)
                    .expect("never refused")
                    .is_none()
                {
                    untracked += 1;
                }
            }
        }
        assert!(untracked > 0, "2048 clients in 1024 cells: some untracked");
    }
}
