//! Owns `source_hash` (placeholder: picks the first eligible server until implemented).

use super::{Balancer, ServerId, ServerView};
use crate::config::ServerConfig;

/// Placeholder strategy.
#[derive(Debug, Default)]
pub struct SourceHash;

impl SourceHash {
    /// New strategy over the config's servers.
    pub fn new(_servers: &[ServerConfig]) -> SourceHash {
        SourceHash
    }
}

impl Balancer for SourceHash {
    fn pick(&mut self, view: &dyn ServerView, _key: u64) -> Option<ServerId> {
        (0..view.len()).find(|&id| view.eligible(id))
    }
}
