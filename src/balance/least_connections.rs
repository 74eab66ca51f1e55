//! Owns `least_connections`: the eligible server with the fewest active
//! connections per unit of weight, with ties taken in turn; and
//! [`compare_load`], the load order `power_of_two` shares.

use super::{Balancer, ServerId, ServerView, eligible_from};
use std::cmp::Ordering;

/// Orders two servers by load, `active / weight`, without division: compares
/// `active_a * weight_b` with `active_b * weight_a` in `u128`, which cannot
/// overflow. A weight of 0 counts as 1 (an eligible server always has ≥ 1).
pub fn compare_load(view: &dyn ServerView, a: ServerId, b: ServerId) -> Ordering {
    let load_a = u128::from(view.active(a)) * u128::from(view.weight(b).max(1));
    let load_b = u128::from(view.active(b)) * u128::from(view.weight(a).max(1));
    load_a.cmp(&load_b)
}

/// Minimum `active / weight` among eligible servers. The scan starts at a
/// cursor that moves past each pick, so equally loaded servers take turns
/// instead of the first one always winning.
#[derive(Debug, Default)]
pub struct LeastConnections {
    next: usize,
}

impl LeastConnections {
    /// Starts the tie rotation at the first server.
    pub fn new() -> LeastConnections {
        LeastConnections::default()
    }
}

impl Balancer for LeastConnections {
    fn pick(&mut self, view: &dyn ServerView, _key: u64) -> Option<ServerId> {
        let n = view.len();
        let mut best: Option<ServerId> = None;
        for id in eligible_from(view, self.next) {
            if best.is_none_or(|b| compare_load(view, id, b) == Ordering::Less) {
                best = Some(id);
            }
        }
        let id = best?;
        self.next = (id + 1) % n;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::VecView;

    fn view(servers: &[(u32, u64)]) -> VecView {
        VecView::loaded(servers)
    }

    #[test]
    fn least_connections_picks_the_least_loaded_server() {
        let mut lc = LeastConnections::new();
        let v = view(&[(1, 7), (1, 2), (1, 5)]);
        for _ in 0..3 {
            assert_eq!(lc.pick(&v, 0), Some(1));
        }
    }

    #[test]
    fn least_connections_divides_active_by_weight() {
        let mut lc = LeastConnections::new();
        // loads 10/5 = 2, 3/1 = 3, 9/3 = 3
        let v = view(&[(5, 10), (1, 3), (3, 9)]);
        assert_eq!(lc.pick(&v, 0), Some(0));
        // loads 12/5 = 2.4, 2/1 = 2, 9/3 = 3
        let v = view(&[(5, 12), (1, 2), (3, 9)]);
        assert_eq!(lc.pick(&v, 0), Some(1));
    }

    #[test]
    fn least_connections_spreads_new_connections_by_weight() {
        let mut lc = LeastConnections::new();
        let mut v = view(&[(3, 0), (1, 0)]);
        for _ in 0..40 {
            let id = lc.pick(&v, 0).expect("a server is eligible");
            v.servers[id].2 += 1;
        }
        assert_eq!((v.servers[0].2, v.servers[1].2), (30, 10));
    }

    #[test]
    fn least_connections_takes_turns_among_equal_servers() {
        let mut lc = LeastConnections::new();
        let v = view(&[(1, 4), (1, 2), (1, 2), (1, 2)]);
        let seq: Vec<_> = (0..6).map(|_| lc.pick(&v, 0).unwrap()).collect();
        assert_eq!(seq, vec![1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn least_connections_skips_ineligible_servers() {
        let mut lc = LeastConnections::new();
        let mut v = view(&[(1, 0), (1, 5), (1, 9)]);
        v.servers[0].0 = false;
        assert_eq!(lc.pick(&v, 0), Some(1));
        v.servers[1].0 = false;
        assert_eq!(lc.pick(&v, 0), Some(2));
    }

    #[test]
    fn least_connections_handles_huge_counts_without_overflow() {
        let mut lc = LeastConnections::new();
        let v = view(&[(u32::MAX, u64::MAX), (1, u64::MAX / 2)]);
        assert_eq!(lc.pick(&v, 0), Some(0));
    }

    #[test]
    fn least_connections_returns_none_when_nothing_is_eligible() {
        let mut lc = LeastConnections::new();
        assert_eq!(lc.pick(&VecView::weighted(&[0, 0]), 0), None);
        assert_eq!(lc.pick(&VecView::default(), 0), None);
    }
}
