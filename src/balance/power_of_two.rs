//! Owns `power_of_two`: two distinct random eligible candidates, the less
//! loaded one (by `active / weight`) wins. Nearly as good as least
//! connections, without every worker herding onto the same server.

use super::least_connections::compare_load;
use super::{Balancer, ServerId, ServerView, eligible_from};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::cmp::Ordering;

/// Power of two random choices.
#[derive(Debug)]
pub struct PowerOfTwo {
    rng: SmallRng,
    /// Eligible ids of the current pick; kept to avoid allocating per pick.
    eligible: Vec<ServerId>,
}

impl PowerOfTwo {
    /// Seeds from the OS.
    pub fn new() -> PowerOfTwo {
        PowerOfTwo::from_rng(SmallRng::from_rng(&mut rand::rng()))
    }

    /// A reproducible sequence, for tests and tools.
    pub fn with_seed(seed: u64) -> PowerOfTwo {
        PowerOfTwo::from_rng(SmallRng::seed_from_u64(seed))
    }

    fn from_rng(rng: SmallRng) -> PowerOfTwo {
        PowerOfTwo {
            rng,
            eligible: Vec::new(),
        }
    }
}

impl Default for PowerOfTwo {
    fn default() -> Self {
        PowerOfTwo::new()
    }
}

impl Balancer for PowerOfTwo {
    fn pick(&mut self, view: &dyn ServerView, _key: u64) -> Option<ServerId> {
        self.eligible.clear();
        self.eligible.extend(eligible_from(view, 0));
        let n = self.eligible.len();
        if n < 2 {
            return self.eligible.first().copied();
        }
        let i = self.rng.random_range(0..n);
        let mut j = self.rng.random_range(0..n - 1);
        if j >= i {
            j += 1;
        }
        let (a, b) = (self.eligible[i], self.eligible[j]);
        // On a tie the first candidate wins; it is itself uniformly random.
        match compare_load(view, b, a) {
            Ordering::Less => Some(b),
            _ => Some(a),
        }
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
    fn power_of_two_always_picks_the_less_loaded_of_two_servers() {
        let mut p = PowerOfTwo::new();
        let v = view(&[(1, 9), (1, 3)]);
        for _ in 0..1_000 {
            assert_eq!(p.pick(&v, 0), Some(1));
        }
    }

    #[test]
    fn power_of_two_never_picks_the_most_loaded_server() {
        // Any two distinct candidates include one less loaded than server 2.
        let mut p = PowerOfTwo::with_seed(3);
        let mut v = view(&[(1, 1), (1, 2), (1, 50), (1, 0)]);
        v.servers[3].0 = false;
        let mut counts = [0u32; 4];
        for _ in 0..3_000 {
            counts[p.pick(&v, 0).expect("a server is eligible")] += 1;
        }
        assert_eq!((counts[2], counts[3]), (0, 0), "{counts:?}");
        // Server 0 wins both pairs it is in (2/3), server 1 one pair (1/3).
        assert!((1_800..2_200).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn power_of_two_compares_load_per_unit_of_weight() {
        let mut p = PowerOfTwo::new();
        // loads 8/4 = 2 and 3/1 = 3
        let v = view(&[(4, 8), (1, 3)]);
        for _ in 0..1_000 {
            assert_eq!(p.pick(&v, 0), Some(0));
        }
    }

    #[test]
    fn power_of_two_spreads_evenly_when_load_is_equal() {
        let mut p = PowerOfTwo::with_seed(7);
        let mut v = VecView::uniform(5);
        v.servers[4].0 = false;
        let mut counts = [0u32; 5];
        for _ in 0..10_000 {
            counts[p.pick(&v, 0).expect("a server is eligible")] += 1;
        }
        assert_eq!(counts[4], 0);
        for &c in &counts[..4] {
            // expected 2500 each; sigma is about 43, so ±250 is about 5.8 sigma
            assert!((2_250..2_750).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn power_of_two_picks_the_only_eligible_server() {
        let mut p = PowerOfTwo::new();
        let mut v = view(&[(1, 0), (1, 100), (1, 0)]);
        v.servers[0].0 = false;
        v.servers[2].0 = false;
        assert_eq!(p.pick(&v, 0), Some(1));
    }

    #[test]
    fn power_of_two_returns_none_when_nothing_is_eligible() {
        let mut p = PowerOfTwo::new();
        assert_eq!(p.pick(&VecView::weighted(&[0, 0]), 0), None);
        assert_eq!(p.pick(&VecView::default(), 0), None);
    }
}
