//! Owns `weighted_round_robin`: nginx's smooth weighted round robin, which
//! spreads each server's share evenly over the cycle instead of in bursts.

use super::{Balancer, ServerId, ServerView};

/// Smooth weighted round robin.
///
/// Each pick adds every eligible server's current effective weight
/// ([`ServerView::weight`], so slow start and runtime weight changes apply at
/// once) to its `current` score, picks the highest score (the first in config
/// order on a tie) and subtracts the total weight from the winner. Ineligible
/// servers are skipped and their score reset to 0, so a server that comes back
/// starts fresh instead of with a stale advantage or debt.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    /// Score per server, indexed by [`ServerId`]; resized if the view differs.
    current: Vec<i64>,
}

impl WeightedRoundRobin {
    /// New strategy sized for `n` servers (it adapts if the view has another
    /// length).
    pub fn new(n: usize) -> WeightedRoundRobin {
        WeightedRoundRobin {
            current: vec![0; n],
        }
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(&mut self, view: &dyn ServerView, _key: u64) -> Option<ServerId> {
        self.current.resize(view.len(), 0);
        // Scores stay within [-total, total]: with u32 weights and at most
        // usize servers an i64 cannot overflow in practice.
        let mut total: i64 = 0;
        let mut best: Option<(ServerId, i64)> = None;
        for (id, current) in self.current.iter_mut().enumerate() {
            if !view.eligible(id) {
                *current = 0;
                continue;
            }
            let weight = i64::from(view.weight(id).max(1));
            *current += weight;
            total += weight;
            if best.is_none_or(|(_, score)| *current > score) {
                best = Some((id, *current));
            }
        }
        let (id, _) = best?;
        self.current[id] -= total;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::VecView;

    fn picks(wrr: &mut WeightedRoundRobin, view: &VecView, n: usize) -> Vec<ServerId> {
        (0..n)
            .map(|_| wrr.pick(view, 0).expect("a server is eligible"))
            .collect()
    }

    #[test]
    fn weighted_round_robin_interleaves_five_one_one_smoothly() {
        let view = VecView::weighted(&[5, 1, 1]);
        let mut wrr = WeightedRoundRobin::new(3);
        let cycle = vec![0, 0, 1, 0, 2, 0, 0];
        for _ in 0..4 {
            assert_eq!(picks(&mut wrr, &view, 7), cycle);
        }
    }

    #[test]
    fn weighted_round_robin_gives_each_server_its_share() {
        let view = VecView::weighted(&[3, 2, 1, 4]);
        let mut wrr = WeightedRoundRobin::new(4);
        let mut counts = [0u32; 4];
        for id in picks(&mut wrr, &view, 100) {
            counts[id] += 1;
        }
        assert_eq!(counts, [30, 20, 10, 40]);
    }

    #[test]
    fn weighted_round_robin_skips_down_servers() {
        let mut view = VecView::weighted(&[5, 1, 1]);
        view.servers[0].0 = false;
        let mut wrr = WeightedRoundRobin::new(3);
        assert_eq!(picks(&mut wrr, &view, 6), vec![1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn weighted_round_robin_resumes_the_cycle_when_a_server_returns() {
        let mut view = VecView::weighted(&[5, 1, 1]);
        let mut wrr = WeightedRoundRobin::new(3);
        picks(&mut wrr, &view, 3);
        view.servers[0].0 = false;
        picks(&mut wrr, &view, 3);
        view.servers[0].0 = true;
        let mut counts = [0u32; 3];
        for id in picks(&mut wrr, &view, 70) {
            counts[id] += 1;
        }
        assert_eq!(counts, [50, 10, 10]);
    }

    #[test]
    fn weighted_round_robin_applies_weight_changes_at_once() {
        let mut view = VecView::weighted(&[1, 1]);
        let mut wrr = WeightedRoundRobin::new(2);
        assert_eq!(picks(&mut wrr, &view, 4), vec![0, 1, 0, 1]);
        view.servers[1].1 = 3;
        let mut counts = [0u32; 2];
        for id in picks(&mut wrr, &view, 40) {
            counts[id] += 1;
        }
        assert_eq!(counts, [10, 30]);
    }

    #[test]
    fn weighted_round_robin_adapts_to_a_view_of_another_length() {
        let mut wrr = WeightedRoundRobin::new(0);
        let view = VecView::weighted(&[2, 1]);
        assert_eq!(picks(&mut wrr, &view, 3), vec![0, 1, 0]);
    }

    #[test]
    fn weighted_round_robin_returns_none_when_nothing_is_eligible() {
        let mut wrr = WeightedRoundRobin::new(2);
        assert_eq!(wrr.pick(&VecView::weighted(&[0, 0]), 0), None);
        assert_eq!(wrr.pick(&VecView::default(), 0), None);
    }
}
