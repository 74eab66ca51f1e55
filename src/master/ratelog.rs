//! Owns rate-limited logging of what a network peer can trigger at will (a
//! refused admin `POST`, a DNS lookup that keeps failing): at most one line
//! per [`EVERY`] (or the interval given), saying how many were not logged
//! since, and never more than
//! [`MAX_QUOTED`] characters of a peer's bytes in a line. Without it, a peer
//! in a loop would decide how much the master writes to its log.

use std::time::{Duration, Instant};

/// One line per this long at most.
pub const EVERY: Duration = Duration::from_secs(1);
/// Characters of a peer's text quoted in a line at most.
pub const MAX_QUOTED: usize = 128;

/// The state of one kind of line.
#[derive(Debug, Clone)]
pub struct RateLog {
    every: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl Default for RateLog {
    fn default() -> RateLog {
        RateLog::every(EVERY)
    }
}

impl RateLog {
    /// At most one line per `every`; the first one is due at once.
    pub fn every(every: Duration) -> RateLog {
        RateLog {
            every,
            last: None,
            unlogged: 0,
        }
    }

    /// One more event at `now`: `Some(n)` when a line is due, `n` being the
    /// events since the last line that were not logged; `None` to stay quiet.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Logs `line` (with the count of quiet ones since the last) when due.
    pub fn log(&mut self, now: Instant, line: impl FnOnce() -> String) {
        if let Some(n) = self.note(now) {
            let more = if n > 0 {
                format!("; {n} more since the last such line")
            } else {
                String::new()
            };
            super::log(&format!("{}{more}", line()));
        }
    }
}

/// `text` escaped for a log line, cut to [`MAX_QUOTED`] characters.
pub fn quoted(text: &str) -> String {
    let mut s: String = text.escape_debug().take(MAX_QUOTED).collect();
    if text.escape_debug().nth(MAX_QUOTED).is_some() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second_counts_the_quiet_ones() {
        let mut r = RateLog::default();
        let t0 = Instant::now();
        assert_eq!(r.note(t0), Some(0));
        for i in 1..=999u64 {
            assert_eq!(r.note(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.note(t0 + EVERY), Some(999));
        assert_eq!(r.note(t0 + EVERY + Duration::from_millis(1)), None);
        assert_eq!(r.note(t0 + EVERY * 5), Some(1));
    }

    #[test]
    fn an_interval_of_its_own_holds_lines_that_long() {
        let mut r = RateLog::every(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(r.note(t0), Some(0));
        assert_eq!(r.note(t0 + Duration::from_secs(59)), None);
        assert_eq!(r.note(t0 + Duration::from_secs(60)), Some(1));
    }

    #[test]
    fn quoted_text_is_escaped_and_cut() {
        assert_eq!(quoted("/server/a\nb"), "/server/a\\nb");
        let long = "x".repeat(10_000);
        let q = quoted(&long);
        assert_eq!(q.chars().count(), MAX_QUOTED + 1);
        assert!(q.ends_with('…'));
        assert_eq!(quoted(&"y".repeat(MAX_QUOTED)), "y".repeat(MAX_QUOTED));
    }
}
