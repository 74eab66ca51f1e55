//! Owns `power_of_two` (placeholder: picks the first eligible server until implemented).

use super::{Balancer, ServerId, ServerView};

/// Placeholder strategy.
#[derive(Debug, Default)]
pub struct PowerOfTwo;

impl PowerOfTwo {
    /// New strategy.
    pub fn new() -> PowerOfTwo {
        PowerOfTwo
    }
}

impl Balancer for PowerOfTwo {
    fn pick(&mut self, view: &dyn ServerView, _key: u64) -> Option<ServerId> {
        (0..view.len()).find(|&id| view.eligible(id))
    }
}
