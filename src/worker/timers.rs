//! Owns connection deadlines: a min-heap of (deadline, connection slot,
//! serial) with lazy invalidation. Pushing is O(log n) and happens only when
//! a connection starts a phase (connect attempt, relay), never per byte: an
//! idle deadline that fires early is re-armed from the connection's
//! last-activity time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Deadlines of one worker's connections.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Timers {
    /// No deadlines.
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Arms a deadline for connection `slot` with `serial`.
    pub fn push(&mut self, at: Instant, slot: usize, serial: u64) {
        self.heap.push(Reverse((at, slot, serial)));
    }

    /// Time until the earliest deadline.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _, _))| at.saturating_duration_since(now))
    }

    /// Pops the earliest deadline if it is due.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self
                .heap
                .pop()
                .map(|Reverse((_, slot, serial))| (slot, serial)),
            _ => None,
        }
    }

    /// Number of armed deadlines (including stale ones).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_pop_in_deadline_order_only_when_due() {
        let now = Instant::now();
        let mut t = Timers::new();
        t.push(now + Duration::from_secs(2), 1, 10);
        t.push(now + Duration::from_secs(1), 2, 20);
        assert_eq!(t.pop_due(now), None);
        assert_eq!(t.next_timeout(now), Some(Duration::from_secs(1)));
        let later = now + Duration::from_secs(3);
        assert_eq!(t.pop_due(later), Some((2, 20)));
        assert_eq!(t.pop_due(later), Some((1, 10)));
        assert!(t.is_empty());
    }
}
