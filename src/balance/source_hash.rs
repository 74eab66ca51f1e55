//! Owns `source_hash`: weighted rendezvous (highest random weight) hashing of
//! the client key, so a client sticks to one server, every worker process and
//! every restart agrees, and a server leaving or returning moves only the
//! clients that were (or will be) on it.

use super::{Balancer, ServerId, ServerView, eligible_from, fnv1a, mix64};
use crate::config::ServerConfig;

/// Weighted rendezvous hashing over eligible servers.
///
/// Each server has a seed, `fnv1a` of its address string, fixed at
/// construction from the config order. For a client key the server's score is
/// `weight / -ln(u)` with `u = mix64(key ^ seed)` mapped into (0, 1); the
/// highest score wins (the lowest id on an exact tie). A server wins with
/// probability `weight / total weight`, and changing one server's eligibility
/// or weight only moves keys to or from that server. Only fixed functions are
/// used (never `RandomState`), so results are identical in every process.
#[derive(Debug, Default)]
pub struct SourceHash {
    /// Per server, indexed by [`ServerId`].
    seeds: Vec<u64>,
}

impl SourceHash {
    /// Seeds each server from its address, in config order. A repeated
    /// address gets `fnv1a("ADDR#k")` for its k-th repeat, so duplicates
    /// still each receive a share.
    pub fn new(servers: &[ServerConfig]) -> SourceHash {
        let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
        let seeds = addrs
            .iter()
            .enumerate()
            .map(
                |(i, addr)| match addrs[..i].iter().filter(|a| *a == addr).count() {
                    0 => fnv1a(addr.as_bytes()),
                    k => fnv1a(format!("{addr}#{k}").as_bytes()),
                },
            )
            .collect();
        SourceHash { seeds }
    }

    /// The seed of `id`; ids past the config list (a view that does not match
    /// the config, which `build` never produces) get one from their index.
    fn seed(&self, id: ServerId) -> u64 {
        match self.seeds.get(id) {
            Some(&seed) => seed,
            None => mix64((id as u64) ^ 0x9e37_79b9_7f4a_7c15),
        }
    }
}

/// Weighted rendezvous score of `key` on a server with `seed` and `weight`.
fn score(key: u64, seed: u64, weight: u32) -> f64 {
    // The top 53 bits, centred in their bucket: strictly inside (0, 1), so
    // ln(u) is finite and negative.
    let u = ((mix64(key ^ seed) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight.max(1)) / -u.ln()
}

impl Balancer for SourceHash {
    fn pick(&mut self, view: &dyn ServerView, key: u64) -> Option<ServerId> {
        let mut best: Option<(ServerId, f64)> = None;
        for id in eligible_from(view, 0) {
            let s = score(key, self.seed(id), view.weight(id));
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((id, s));
            }
        }
        best.map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{VecView, client_key};
    use std::net::{IpAddr, Ipv4Addr};

    fn servers(n: usize) -> Vec<ServerConfig> {
        (0..n)
            .map(|i| ServerConfig {
                name: None,
                addr: format!("10.0.0.{}:6001", i + 1)
                    .parse()
                    .expect("valid test address"),
                weight: 1,
                backup: false,
                max_conns: None,
                slow_start: None,
                health: None,
                pool: None,
                send_proxy: None,
                dns: None,
                tls: None,
            })
            .collect()
    }

    /// 10,000 distinct client keys from 192.168.0.0/18.
    fn keys() -> Vec<u64> {
        (0..10_000u32)
            .map(|i| client_key(IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 + i))))
            .collect()
    }

    fn mapping(sh: &mut SourceHash, view: &VecView) -> Vec<ServerId> {
        keys()
            .into_iter()
            .map(|k| sh.pick(view, k).expect("a server is eligible"))
            .collect()
    }

    #[test]
    fn source_hash_maps_a_key_to_the_same_server_in_independent_instances() {
        let view = VecView::uniform(10);
        let mut a = SourceHash::new(&servers(10));
        let mut b = SourceHash::new(&servers(10));
        assert_eq!(mapping(&mut a, &view), mapping(&mut b, &view));
        assert_eq!(mapping(&mut a, &view), mapping(&mut a, &view));
    }

    #[test]
    fn source_hash_mapping_is_pinned_across_builds() {
        // Golden values: a change here means every deployed client moves.
        let view = VecView::uniform(10);
        let mut sh = SourceHash::new(&servers(10));
        let got: Vec<_> = [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.77",
            "::1",
            "2001:db8::5",
        ]
        .iter()
        .map(|ip| {
            let ip: IpAddr = ip.parse().expect("valid test address");
            sh.pick(&view, client_key(ip))
                .expect("a server is eligible")
        })
        .collect();
        assert_eq!(got, GOLDEN);
    }
    const GOLDEN: [ServerId; 5] = [3, 4, 0, 2, 3];

    #[test]
    fn source_hash_spreads_keys_evenly() {
        let view = VecView::uniform(10);
        let mut sh = SourceHash::new(&servers(10));
        let mut counts = [0u32; 10];
        for id in mapping(&mut sh, &view) {
            counts[id] += 1;
        }
        for &c in &counts {
            // expected 1000 each; sigma is about 30
            assert!((850..1150).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn source_hash_moves_only_the_removed_servers_keys_and_restores_them() {
        let mut view = VecView::uniform(10);
        let mut sh = SourceHash::new(&servers(10));
        let before = mapping(&mut sh, &view);
        view.servers[3].0 = false;
        let during = mapping(&mut sh, &view);
        let mut moved = 0;
        for (b, d) in before.iter().zip(&during) {
            if b != d {
                assert_eq!(*b, 3, "a key moved off a server that stayed");
                moved += 1;
            } else {
                assert_ne!(*d, 3);
            }
        }
        assert!(moved <= 1_200, "{moved} of 10000 keys moved");
        view.servers[3].0 = true;
        assert_eq!(mapping(&mut sh, &view), before);
    }

    #[test]
    fn source_hash_shares_keys_by_weight() {
        let view = VecView::weighted(&[1, 3]);
        let mut sh = SourceHash::new(&servers(2));
        let on_heavy = mapping(&mut sh, &view)
            .iter()
            .filter(|&&id| id == 1)
            .count();
        // expected 7500; sigma is about 43
        assert!((7_250..7_750).contains(&on_heavy), "{on_heavy}");
    }

    #[test]
    fn source_hash_weight_increase_only_moves_keys_onto_that_server() {
        let mut view = VecView::uniform(5);
        let mut sh = SourceHash::new(&servers(5));
        let before = mapping(&mut sh, &view);
        view.servers[2].1 = 2;
        let after = mapping(&mut sh, &view);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(*a, 2, "a key moved somewhere other than server 2");
                moved += 1;
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn source_hash_gives_duplicate_addresses_distinct_seeds() {
        let mut list = servers(2);
        list[1].addr = list[0].addr;
        let view = VecView::uniform(2);
        let mut sh = SourceHash::new(&list);
        let on_second = mapping(&mut sh, &view)
            .iter()
            .filter(|&&id| id == 1)
            .count();
        assert!((4_500..5_500).contains(&on_second), "{on_second}");
    }

    #[test]
    fn source_hash_returns_none_when_nothing_is_eligible() {
        let mut sh = SourceHash::new(&servers(2));
        assert_eq!(sh.pick(&VecView::weighted(&[0, 0]), 42), None);
        assert_eq!(sh.pick(&VecView::default(), 42), None);
    }
}
