//! Owns `weighted_round_robin` (placeholder: picks the first eligible server until implemented).

use super::{Balancer, ServerId, ServerView};

/// Placeholder strategy.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin;

impl WeightedRoundRobin {
    /// New strategy.
    pub fn new(_n: usize) -> WeightedRoundRobin {
        WeightedRoundRobin
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(&mut self, view: &dyn ServerView, _key: u64) -> Option<ServerId> {
        (0..view.len()).find(|&id| view.eligible(id))
    }
}
