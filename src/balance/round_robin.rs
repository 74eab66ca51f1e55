//! Owns `round_robin`: each eligible server in turn, skipping the others.
//! The turn comes from the view's shared ticket when it has one (so all
//! worker processes rotate together, ticket modulo the eligible servers),
//! else from a per-instance cursor.

use super::{Balancer, ServerId, ServerView, eligible_from, nth_eligible};

/// A cursor over the server list; ineligible servers are skipped.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// Starts at the first server.
    pub fn new() -> RoundRobin {
        RoundRobin::default()
    }
}

impl Balancer for RoundRobin {
    fn pick(&mut self, view: &dyn ServerView, _key: u64) -> Option<ServerId> {
        let n = view.len();
        if n == 0 {
            return None;
        }
        if let Some(ticket) = view.ticket() {
            // Rotate over the eligible servers only, so a down server's turn
            // is spread evenly instead of doubling its successor's share.
            return nth_eligible(view, |count| (ticket % count as u64) as usize);
        }
        let id = eligible_from(view, self.next).next()?;
        self.next = (id + 1) % n;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::VecView;

    #[test]
    fn round_robin_cycles_in_order() {
        let mut rr = RoundRobin::new();
        let view = VecView::uniform(3);
        let seq: Vec<_> = (0..7).map(|_| rr.pick(&view, 0).unwrap()).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn round_robin_skips_down_servers() {
        let mut rr = RoundRobin::new();
        let mut view = VecView::uniform(3);
        view.servers[1].0 = false;
        let seq: Vec<_> = (0..4).map(|_| rr.pick(&view, 0).unwrap()).collect();
        assert_eq!(seq, vec![0, 2, 0, 2]);
    }

    /// A view whose tickets come from a shared counter.
    struct Ticketed(VecView, std::cell::Cell<u64>);
    impl ServerView for Ticketed {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn eligible(&self, id: ServerId) -> bool {
            self.0.eligible(id)
        }
        fn weight(&self, id: ServerId) -> u32 {
            self.0.weight(id)
        }
        fn active(&self, id: ServerId) -> u64 {
            self.0.active(id)
        }
        fn ticket(&self) -> Option<u64> {
            let t = self.1.get();
            self.1.set(t + 1);
            Some(t)
        }
    }

    #[test]
    fn round_robin_with_shared_tickets_rotates_over_eligible_servers_evenly() {
        let mut view = VecView::uniform(3);
        view.servers[2].0 = false;
        let view = Ticketed(view, std::cell::Cell::new(0));
        // Two balancers (two worker processes) share one ticket counter.
        let (mut a, mut b) = (RoundRobin::new(), RoundRobin::new());
        let seq: Vec<_> = (0..6)
            .map(|i| {
                let rr = if i % 3 == 0 { &mut a } else { &mut b };
                rr.pick(&view, 0).unwrap()
            })
            .collect();
        assert_eq!(seq, vec![0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn round_robin_returns_none_when_nothing_is_eligible() {
        let mut rr = RoundRobin::new();
        let mut view = VecView::uniform(2);
        view.servers[0].0 = false;
        view.servers[1].0 = false;
        assert_eq!(rr.pick(&view, 0), None);
        assert_eq!(rr.pick(&VecView::default(), 0), None);
    }
}
