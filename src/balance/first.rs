//! Owns `first` (placeholder: picks the first eligible server until implemented).

use super::{Balancer, ServerId, ServerView};

/// Placeholder strategy.
#[derive(Debug, Default)]
pub struct First;

impl First {
    /// New strategy.
    pub fn new() -> First {
        First
    }
}

impl Balancer for First {
    fn pick(&mut self, view: &dyn ServerView, _key: u64) -> Option<ServerId> {
        (0..view.len()).find(|&id| view.eligible(id))
    }
}
