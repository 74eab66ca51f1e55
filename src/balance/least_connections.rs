//! Owns `least_connections` (placeholder: picks the first eligible server until implemented).

use super::{Balancer, ServerId, ServerView};

/// Placeholder strategy.
#[derive(Debug, Default)]
pub struct LeastConnections;

impl LeastConnections {
    /// New strategy.
    pub fn new() -> LeastConnections {
        LeastConnections
    }
}

impl Balancer for LeastConnections {
    fn pick(&mut self, view: &dyn ServerView, _key: u64) -> Option<ServerId> {
        (0..view.len()).find(|&id| view.eligible(id))
    }
}
