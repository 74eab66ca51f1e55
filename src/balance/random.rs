//! Owns `random`: a uniform pick among eligible servers (the seed's strategy).

use super::{Balancer, ServerId, ServerView, nth_eligible};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// Uniform random choice among eligible servers.
#[derive(Debug)]
pub struct Random {
    rng: SmallRng,
}

impl Random {
    /// Seeds from the OS.
    pub fn new() -> Random {
        Random {
            rng: SmallRng::from_rng(&mut rand::rng()),
        }
    }
}

impl Default for Random {
    fn default() -> Self {
        Random::new()
    }
}

impl Balancer for Random {
    fn pick(&mut self, view: &dyn ServerView, _key: u64) -> Option<ServerId> {
        nth_eligible(view, |count| self.rng.random_range(0..count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::VecView;

    #[test]
    fn random_spreads_evenly_over_eligible_servers() {
        let mut r = Random::new();
        let mut view = VecView::uniform(4);
        view.servers[2].0 = false;
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            counts[r.pick(&view, 0).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        for &c in &[counts[0], counts[1], counts[3]] {
            // expected 3333 each; 5 sigma is about 235
            assert!((3000..3700).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn random_returns_none_when_nothing_is_eligible() {
        let mut r = Random::new();
        assert_eq!(r.pick(&VecView::default(), 0), None);
    }
}
