//! Owns the pure rise/fall state machine of one server's health
//! ([`HealthState::observe`]) and the flips it reports ([`Transition`]);
//! no sockets, no clock.

/// A flip of a server's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Became healthy.
    Up,
    /// Became unhealthy.
    Down,
}

/// Rise/fall counters of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthState {
    /// Currently considered healthy.
    pub up: bool,
    /// Consecutive successful probes.
    pub successes: u32,
    /// Consecutive failed probes.
    pub failures: u32,
}

impl HealthState {
    /// A state that starts healthy (servers are assumed up until checked).
    pub fn new_up() -> HealthState {
        HealthState {
            up: true,
            successes: 0,
            failures: 0,
        }
    }

    /// A state that starts unhealthy: `rise` successes are needed to bring it up.
    pub fn new_down() -> HealthState {
        HealthState {
            up: false,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one probe result; returns the transition when it flips.
    ///
    /// A success resets the failure count and a failure the success count.
    /// An up server goes down on its `fall`-th consecutive failure, a down
    /// server comes up on its `rise`-th consecutive success; each flip is
    /// returned exactly once. Thresholds of 0 act as 1.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Transition> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.up && self.successes >= rise.max(1) {
                self.up = true;
                return Some(Transition::Up);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.up && self.failures >= fall.max(1) {
                self.up = false;
                return Some(Transition::Down);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        state: &mut HealthState,
        results: &[bool],
        rise: u32,
        fall: u32,
    ) -> Vec<Option<Transition>> {
        results
            .iter()
            .map(|&ok| state.observe(ok, rise, fall))
            .collect()
    }

    #[test]
    fn up_server_goes_down_on_the_fall_th_consecutive_failure() {
        let mut s = HealthState::new_up();
        let got = run(&mut s, &[false, false, false], 2, 3);
        assert_eq!(got, [None, None, Some(Transition::Down)]);
        assert!(!s.up);
        assert_eq!(s.failures, 3);
        assert_eq!(s.successes, 0);
    }

    #[test]
    fn down_server_comes_up_on_the_rise_th_consecutive_success() {
        let mut s = HealthState::new_down();
        let got = run(&mut s, &[true, true], 2, 3);
        assert_eq!(got, [None, Some(Transition::Up)]);
        assert!(s.up);
        assert_eq!(s.successes, 2);
        assert_eq!(s.failures, 0);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut s = HealthState::new_up();
        let got = run(&mut s, &[false, false, true, false, false], 2, 3);
        assert_eq!(got, [None; 5]);
        assert!(s.up);
        assert_eq!(s.failures, 2);
        assert_eq!(s.observe(false, 2, 3), Some(Transition::Down));
    }

    #[test]
    fn a_failure_resets_the_success_count() {
        let mut s = HealthState::new_down();
        let got = run(&mut s, &[true, false, true], 2, 3);
        assert_eq!(got, [None; 3]);
        assert!(!s.up);
        assert_eq!(s.successes, 1);
        assert_eq!(s.observe(true, 2, 3), Some(Transition::Up));
    }

    #[test]
    fn each_flip_is_reported_exactly_once() {
        let mut s = HealthState::new_up();
        let got = run(
            &mut s,
            &[false, false, false, false, true, true, true, true],
            2,
            2,
        );
        assert_eq!(
            got,
            [
                None,
                Some(Transition::Down),
                None,
                None,
                None,
                Some(Transition::Up),
                None,
                None
            ]
        );
    }

    #[test]
    fn successes_on_an_up_server_and_failures_on_a_down_server_flip_nothing() {
        let mut up = HealthState::new_up();
        assert_eq!(run(&mut up, &[true; 5], 1, 1), [None; 5]);
        assert_eq!(up.successes, 5);
        let mut down = HealthState::new_down();
        assert_eq!(run(&mut down, &[false; 5], 1, 1), [None; 5]);
        assert_eq!(down.failures, 5);
    }

    #[test]
    fn thresholds_of_zero_act_as_one() {
        let mut s = HealthState::new_up();
        assert_eq!(s.observe(false, 0, 0), Some(Transition::Down));
        assert_eq!(s.observe(true, 0, 0), Some(Transition::Up));
    }

    #[test]
    fn counters_saturate_instead_of_overflowing() {
        let mut s = HealthState {
            up: true,
            successes: u32::MAX,
            failures: 0,
        };
        assert_eq!(s.observe(true, 1, 1), None);
        assert_eq!(s.successes, u32::MAX);
    }
}
