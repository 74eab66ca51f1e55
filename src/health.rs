//! Owns active health checking: the pure rise/fall state machine
//! ([`HealthState`]) and the non-blocking probes ([`Checker`]) that the
//! master's mio loop drives (placeholder until implemented).

use crate::config::HealthConfig;
use mio::event::Event;
use mio::{Registry, Token};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

    /// Records one probe result; returns the transition when it flips.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Transition> {
        let _ = (ok, rise, fall);
        None
    }
}

/// One server to probe.
#[derive(Debug, Clone)]
pub struct Target {
    /// Caller's id for the server (reported back in [`Report::id`]).
    pub id: usize,
    /// Address to probe.
    pub addr: SocketAddr,
    /// What and how often.
    pub config: HealthConfig,
}

/// The result of one finished probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The target's id.
    pub id: usize,
    /// Did the probe pass.
    pub ok: bool,
    /// Why, in words: "ok", "connect refused", "timeout after 1s", "status 503".
    pub detail: String,
    /// Set when this result flipped the server's health.
    pub transition: Option<Transition>,
    /// The state after this result.
    pub state: HealthState,
}

/// Runs the probes of one generation's servers inside the master's mio loop.
/// Tokens `token_base .. token_base + targets.len()` belong to it.
#[derive(Debug)]
pub struct Checker {
    token_base: usize,
    len: usize,
}

impl Checker {
    /// A checker for these targets; the first probe of each is due at once.
    pub fn new(targets: Vec<Target>, token_base: usize, now: Instant) -> Checker {
        let _ = now;
        Checker {
            token_base,
            len: targets.len(),
        }
    }

    /// Whether a token is one of this checker's.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && token.0 < self.token_base + self.len
    }

    /// Time until the next probe start or probe deadline, if any.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        let _ = now;
        None
    }

    /// Starts due probes and fails expired ones; pushes finished results.
    pub fn tick(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Report>) {
        let _ = (registry, now, out);
    }

    /// Advances the probe an event belongs to; pushes a result when it finishes.
    pub fn event(
        &mut self,
        registry: &Registry,
        event: &Event,
        now: Instant,
        out: &mut Vec<Report>,
    ) {
        let _ = (registry, event, now, out);
    }

    /// Forces a server's state (e.g. after a passive failure marked it down),
    /// so that `rise` successes are needed to bring it back.
    pub fn force(&mut self, id: usize, state: HealthState) {
        let _ = (id, state);
    }

    /// Deregisters and closes every probe socket.
    pub fn shutdown(&mut self, registry: &Registry) {
        let _ = registry;
    }
}
