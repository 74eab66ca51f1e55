//! Owns the status shape of servers found by DNS ([`DnsRow`], one per
//! `resolve` entry in `status --json`) and its line in the text report.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One `resolve` entry: what was looked up, how it went, what it gave.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct DnsRow {
    /// The listen it belongs to.
    pub listen: String,
    /// The name as written (`api.internal:8080`, `_http._tcp.api.internal`).
    pub name: String,
    /// `a` (A/AAAA) or `srv`.
    pub kind: String,
    /// Its slots (`max`).
    pub max: usize,
    /// When the last lookup finished (Unix seconds); none yet: `None`.
    pub last_resolve: Option<u64>,
    /// `ok`, `pending` or `failed: WHY` (the last good set is kept).
    pub result: String,
    /// Lookups that failed or came back empty.
    pub failures: u64,
    /// Addresses taking new connections.
    pub addresses: Vec<String>,
    /// Addresses that left the answer, still finishing connections.
    pub draining: Vec<String>,
}

impl DnsRow {
    /// `dns web/api.internal:8080 (a, max 8): ok 3s ago, 2 addresses: ...`.
    pub fn line(&self) -> String {
        let ago = match self.last_resolve {
            Some(t) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(t, |d| d.as_secs());
                format!(" {}s ago", now.saturating_sub(t))
            }
            None => String::new(),
        };
        let mut line = format!(
            "dns {}/{} ({}, max {}): {}{ago}, {} failed lookups; {} addresses: {}",
            self.listen,
            self.name,
            self.kind,
            self.max,
            self.result,
            self.failures,
            self.addresses.len(),
            if self.addresses.is_empty() {
                "-".to_string()
            } else {
                self.addresses.join(", ")
            }
        );
        if !self.draining.is_empty() {
            let _ = write!(line, "; draining: {}", self.draining.join(", "));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_entry_its_result_and_its_addresses() {
        let row = DnsRow {
            listen: "web".into(),
            name: "api.internal:8080".into(),
            kind: "a".into(),
            max: 4,
            last_resolve: None,
            result: "failed: no such name (NXDOMAIN)".into(),
            failures: 2,
            addresses: vec!["10.0.0.1:8080".into()],
            draining: vec!["10.0.0.2:8080".into()],
        };
        assert_eq!(
            row.line(),
            "dns web/api.internal:8080 (a, max 4): failed: no such name (NXDOMAIN), \
             2 failed lookups; 1 addresses: 10.0.0.1:8080; draining: 10.0.0.2:8080"
        );
    }
}
