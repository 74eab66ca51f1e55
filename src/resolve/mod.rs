//! Owns finding servers by DNS off the master's loop: the [`Resolver`]
//! thread that looks up every `resolve` entry at its interval and hands each
//! result to the master through a channel (waking its loop), so the loop
//! never waits on the network. The DNS client is our own small one over
//! UDP (`wire.rs`: the packets, `client.rs`: one lookup), which needs no
//! async runtime and asks exactly the nameservers the config names;
//! `slots.rs` maps an answer onto an entry's fixed slots.
//!
//! Fork safety: the master forks its workers while this thread runs. A
//! forked child has only the forking thread, so it must never need a lock
//! this thread may hold: the thread never prints, never reads the
//! environment and shares only channels (the child never touches them) and
//! the waker's eventfd (closed in the child). glibc's malloc is fork-safe.

pub mod client;
pub mod slots;
pub mod wire;

pub use crate::config::Lookup;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// One address of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The SRV weight (1..=1000); `None` for A/AAAA (the entry's own weight).
    pub weight: Option<u32>,
    /// From an SRV record of a priority above the lowest one.
    pub backup: bool,
}

/// What the thread is to resolve, and with which nameservers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Each lookup with its interval (the shortest when several entries
    /// share it).
    pub lookups: Vec<(Lookup, Duration)>,
    /// Empty: `/etc/resolv.conf`'s, read before each lookup.
    pub nameservers: Vec<SocketAddr>,
    /// One query's timeout.
    pub timeout: Duration,
}

/// One finished lookup.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What was asked.
    pub lookup: Lookup,
    /// The members, or why there are none.
    pub result: Result<Vec<Member>, String>,
    /// When the lookup finished (wall clock, for status).
    pub at: SystemTime,
}

/// The master's handle on the resolver thread. Dropping it ends the thread
/// (after the lookup in progress, if any).
#[derive(Debug)]
pub struct Resolver {
    plans: Sender<Plan>,
    /// Results, in the order the lookups finish.
    pub outcomes: Receiver<Outcome>,
}

impl Resolver {
    /// Starts the thread; `wake` is called after each result is sent.
    pub fn spawn(wake: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Resolver> {
        let (plans, plan_rx) = crossbeam_channel::unbounded();
        let (out_tx, outcomes) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("lbctl-resolver".into())
            .spawn(move || run(plan_rx, out_tx, wake))?;
        Ok(Resolver { plans, outcomes })
    }

    /// Replaces what the thread resolves. A lookup not in the previous plan
    /// is due at once; one that stays keeps its schedule.
    pub fn set_plan(&self, plan: Plan) {
        // The thread only ends when this handle is dropped.
        let _ = self.plans.send(plan);
    }
}

fn run(plans: Receiver<Plan>, out: Sender<Outcome>, wake: Arc<dyn Fn() + Send + Sync>) {
    let mut plan = Plan {
        lookups: Vec::new(),
        nameservers: Vec::new(),
        timeout: Duration::from_secs(2),
    };
    let mut due: HashMap<Lookup, Instant> = HashMap::new();
    loop {
        let now = Instant::now();
        let next = plan
            .lookups
            .iter()
            .filter_map(|(l, _)| due.get(l))
            .min()
            .copied();
        let wait = next.map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(now)
        });
        match plans.recv_timeout(wait) {
            Ok(p) => {
                let now = Instant::now();
                due.retain(|l, _| p.lookups.iter().any(|(m, _)| m == l));
                for (l, every) in &p.lookups {
                    let at = due.entry(l.clone()).or_insert(now);
                    *at = (*at).min(now + *every);
                }
                plan = p;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        let system;
        let servers = if plan.nameservers.is_empty() {
            system = client::system_nameservers();
            &system
        } else {
            &plan.nameservers
        };
        for (lookup, every) in &plan.lookups {
            if due.get(lookup).is_some_and(|t| *t <= now) {
                let result = client::resolve(lookup, servers, plan.timeout);
                due.insert(lookup.clone(), Instant::now() + *every);
                let outcome = Outcome {
                    lookup: lookup.clone(),
                    result,
                    at: SystemTime::now(),
                };
                if out.send(outcome).is_err() {
                    return;
                }
                wake();
            }
        }
    }
}
