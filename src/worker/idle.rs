//! Owns a worker's pool of idle keep-alive server connections (HTTP mode):
//! per server (global index), the connections a finished response left
//! reusable, most recent first, bounded by the listen's `pool.max_idle` and
//! dropped after `pool.idle_timeout`. An idle connection stays registered in
//! the worker's poll under its own lifelong token (`tokens`), whose events
//! the loop brings here, so a server that closes it (or sends anything
//! unasked) is noticed and the connection is dropped, never handed to a
//! request. Nothing is ever reused that the server closed or half-closed.
//!
//! A connection to a `send_proxy` server carries one client's PROXY header,
//! so it is private to that client connection (HAProxy does the same): it
//! is kept with its owner (the client connection's serial), handed only to
//! that owner's later requests, and dropped when the owner closes.

use super::tokens::ServerConn;
use std::io::{self, Read};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Entry {
    stream: ServerConn,
    server: usize,
    since: Instant,
    /// The client connection it is private to (`send_proxy`), if any.
    owner: Option<u64>,
}

/// The idle connections of one worker.
#[derive(Debug, Default)]
pub struct IdlePool {
    slab: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// Per server: slab indices, oldest first.
    by_server: Vec<Vec<usize>>,
    /// Entries with an owner (so closing a client scans only when needed).
    owned: usize,
}

impl IdlePool {
    /// A pool for `servers` servers (global indices).
    pub fn new(servers: usize) -> IdlePool {
        IdlePool {
            by_server: vec![Vec::new(); servers],
            ..IdlePool::default()
        }
    }

    /// Idle connections held to `server`.
    pub fn count(&self, server: usize) -> usize {
        self.by_server.get(server).map_or(0, Vec::len)
    }

    /// Keeps `stream` for reuse with `server`: its index here (the holder of
    /// its token from now on), or None (the stream is dropped, i.e. closed)
    /// when the server's share is full.
    pub fn put(
        &mut self,
        server: usize,
        stream: ServerConn,
        owner: Option<u64>,
        max_idle: usize,
        now: Instant,
    ) -> Option<usize> {
        let list = self.by_server.get(server)?;
        if list.len() >= max_idle {
            return None;
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slab.push(None);
                self.slab.len() - 1
            }
        };
        self.slab[idx] = Some(Entry {
            stream,
            server,
            since: now,
            owner,
        });
        self.owned += usize::from(owner.is_some());
        if let Some(list) = self.by_server.get_mut(server) {
            list.push(idx);
        }
        Some(idx)
    }

    /// The most recently idled connection to `server` with this `owner`
    /// (`None`: a shared one) that is younger than `idle_timeout`, if any
    /// (older ones are dropped on the way).
    pub fn take(
        &mut self,
        server: usize,
        owner: Option<u64>,
        now: Instant,
        idle_timeout: Duration,
    ) -> Option<ServerConn> {
        loop {
            let list = self.by_server.get_mut(server)?;
            let slab = &self.slab;
            let at = list.iter().rposition(|&i| {
                slab.get(i)
                    .and_then(Option::as_ref)
                    .is_some_and(|e| e.owner == owner)
            })?;
            let idx = list.remove(at);
            let entry = self.slab.get_mut(idx).and_then(Option::take)?;
            self.free.push(idx);
            self.owned -= usize::from(entry.owner.is_some());
            if now.duration_since(entry.since) < idle_timeout {
                return Some(entry.stream);
            }
        }
    }

    /// Drops the connections private to `owner` (that client closed).
    pub fn drop_owned(&mut self, owner: u64) {
        if self.owned == 0 {
            return;
        }
        for idx in 0..self.slab.len() {
            if self.slab[idx]
                .as_ref()
                .is_some_and(|e| e.owner == Some(owner))
            {
                self.remove(idx);
            }
        }
    }

    /// An event on the idle connection at `idx` whose token has `slot`:
    /// the server closed it or sent bytes nobody asked for. Either way it
    /// cannot be reused; it is checked with a non-blocking read (a stale
    /// event finds nothing, or another connection in that place).
    pub fn on_event(&mut self, idx: usize, slot: usize) {
        let Some(Some(entry)) = self.slab.get_mut(idx) else {
            return;
        };
        if entry.stream.slot() != slot {
            return;
        }
        let mut probe = [0u8; 1];
        match entry.stream.read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            _ => {}
        }
        self.remove(idx);
    }

    fn remove(&mut self, idx: usize) {
        if let Some(entry) = self.slab.get_mut(idx).and_then(Option::take) {
            self.owned -= usize::from(entry.owner.is_some());
            if let Some(list) = self.by_server.get_mut(entry.server) {
                list.retain(|&i| i != idx);
            }
            self.free.push(idx);
        }
    }

    /// Drops connections idle longer than their listen's timeout
    /// (`timeout_of(server)`).
    pub fn sweep(&mut self, now: Instant, timeout_of: impl Fn(usize) -> Duration) {
        for idx in 0..self.slab.len() {
            let expired = match &self.slab[idx] {
                Some(e) => now.duration_since(e.since) >= timeout_of(e.server),
                None => false,
            };
            if expired {
                self.remove(idx);
            }
        }
    }

    /// Drops every idle connection (the worker drains).
    pub fn clear(&mut self) {
        self.slab.clear();
        self.free.clear();
        self.owned = 0;
        for l in &mut self.by_server {
            l.clear();
        }
    }

    /// Idle connections held in all.
    pub fn len(&self) -> usize {
        self.by_server.iter().map(Vec::len).sum()
    }

    /// True when no idle connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
