//! Owns generation switches: building a [`Generation`] from a validated
//! config (bind what is new, map a fresh region seeded from the file, create
//! the health checker), and undoing the binds of a generation that could not
//! start. The master's loop forks its workers and, once they all accept,
//! retires the previous generation (see `Master::finish_reload`).

use super::listeners::Listeners;
use super::supervisor::{Generation, Identity, ServerNote, Slot, WorkerState};
use crate::config::{Config, ListenConfig, ServerConfig};
use crate::health::{Checker, Target};
use crate::shm::{HEALTH_UP, MEMBER_EMPTY, Region};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// Every server of `config` with its listen, numbered by global server index
/// (the order of the server cells in a generation's shared region).
pub fn servers(config: &Config) -> impl Iterator<Item = (usize, &ListenConfig, &ServerConfig)> {
    config
        .listens
        .iter()
        .flat_map(|l| l.servers.iter().map(move |s| (l, s)))
        .enumerate()
        .map(|(i, (l, s))| (i, l, s))
}

/// Binds what `config` needs; returns the binds made (to undo on failure).
pub fn bind_all(
    listeners: &mut Listeners,
    config: &Config,
) -> Result<Vec<(SocketAddr, usize)>, (SocketAddr, std::io::Error)> {
    let mut made = Vec::new();
    for l in &config.listens {
        match listeners.ensure(l.bind, config.master.workers.get()) {
            Ok(n) => made.push((l.bind, n)),
            Err(e) => {
                undo_binds(listeners, &made);
                return Err((l.bind, e));
            }
        }
    }
    Ok(made)
}

/// Closes sockets made by [`bind_all`].
pub fn undo_binds(listeners: &mut Listeners, made: &[(SocketAddr, usize)]) {
    for &(addr, n) in made {
        listeners.undo(addr, n);
    }
}

/// Carries health over a reload: a server present in both generations (same
/// listen name and address) keeps its known state, check history and
/// slow-start clock, so a reload never sends traffic to a server known to be
/// down, nor resets the rise/fall counting. Admin state and weights are not
/// carried: a reload resets them to the file.
pub fn inherit_health(old: &Generation, new: &mut Generation) {
    // DNS slots are left out on both sides: a new one starts empty and is
    // filled from the last good answer; an old one's state is its resolved
    // address's, not its placeholder `addr`'s.
    let index = |g: &Generation| -> Vec<(String, std::net::SocketAddr, usize)> {
        servers(&g.config)
            .filter(|(_, _, s)| s.dns.is_none())
            .map(|(i, l, s)| (l.name.clone(), s.addr, i))
            .collect()
    };
    let old_index = index(old);
    for (listen, addr, i) in index(new) {
        let Some(&(_, _, j)) = old_index
            .iter()
            .find(|(l, a, _)| *l == listen && *a == addr)
        else {
            continue;
        };
        let (from, to) = (old.region.server(j), new.region.server(i));
        to.up_since_ms
            .store(from.up_since_ms.load(Relaxed), Relaxed);
        to.down_until_ms
            .store(from.down_until_ms.load(Relaxed), Relaxed);
        // Only a server still checked keeps a "down" verdict: without a
        // check nothing would ever bring it back.
        if let (Some(oc), Some(nc)) = (&old.checker, &mut new.checker)
            && let Some(state) = oc.state(j)
            && nc.state(i).is_some()
        {
            nc.force(i, state);
            to.health.store(from.health.load(Relaxed), Relaxed);
            if let (Some(n), Some(o)) = (new.notes.get_mut(i), old.notes.get(j)) {
                *n = o.clone();
            }
        }
    }
}

/// A generation for `config`, with a fresh region and no workers forked yet.
pub fn new_generation(
    number: u64,
    config: Arc<Config>,
    identity: Identity,
    now: Instant,
) -> Result<Generation, crate::shm::ShmError> {
    let slots = config.master.workers.get();
    let region = Region::with_clients(slots, servers(&config).count(), config.listens.len())?;
    let mut targets = Vec::new();
    let mut notes = Vec::new();
    for (g, _, s) in servers(&config) {
        let cell = region.server(g);
        cell.weight.store(s.weight, Relaxed);
        cell.health.store(HEALTH_UP, Relaxed);
        if s.dns.is_some() {
            cell.member.store(MEMBER_EMPTY, Relaxed);
        }
        if let Some(h) = &s.health {
            targets.push(Target {
                id: g,
                addr: s.addr,
                config: h.clone(),
                send_proxy: s.send_proxy,
                tls: s.tls.clone(),
            });
        }
        notes.push(ServerNote {
            check: if s.health.is_some() {
                "not checked yet".into()
            } else {
                "no check".into()
            },
            since: now,
            ok_in_row: 0,
            failed_in_row: 0,
        });
    }
    let checker = if targets.is_empty() {
        None
    } else {
        let mut c = Checker::new(targets, super::tokens::health_base(number), now);
        // A DNS slot is probed only while it holds an address.
        for (g, _, s) in servers(&config) {
            if s.dns.is_some() {
                c.pause(g);
            }
        }
        Some(c)
    };
    let slots = (0..slots)
        .map(|_| Slot {
            pid: None,
            state: WorkerState::Restarting { at: now },
            channel: None,
            restarts: 0,
            streak: 0,
            started: now,
        })
        .collect();
    Ok(Generation {
        number,
        config,
        region: Arc::new(region),
        slots,
        checker,
        notes,
        retiring: false,
        binds: Vec::new(),
        identity,
    })
}
