//! Owns a worker's pool of idle keep-alive server connections (HTTP mode):
//! per server (global index), the connections a finished response left
//! reusable, most recent first, bounded by the listen's `pool.max_idle` and
//! dropped after `pool.idle_timeout`. An idle connection stays registered in
//! the worker's poll under its own lifelong token (`tokens`), whose events
//! the loop brings here, so a server that closes it (or sends anything
//! unasked) is noticed and the connection is dropped, never handed to a
//! request. Nothing is ever reused that the server closed or half-closed.

use super::tokens::ServerConn;
use std::io::{self, Read};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Entry {
    stream: ServerConn,
    server: usize,
    since: Instant,
}

/// The idle connections of one worker.
#[derive(Debug, Default)]
pub struct IdlePool {
    slab: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// Per server: slab indices, oldest first.
    by_server: Vec<Vec<usize>>,
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
        });
        if let Some(list) = self.by_server.get_mut(server) {
            list.push(idx);
        }
        Some(idx)
    }

    /// The most recently idled connection to `server` that is younger than
    /// `idle_timeout`, if any (older ones are dropped on the way).
    pub fn take(
        &mut self,
        server: usize,
        now: Instant,
        idle_timeout: Duration,
    ) -> Option<ServerConn> {
        loop {
            let idx = self.by_server.get_mut(server)?.pop()?;
            let entry = self.slab.get_mut(idx).and_then(Option::take)?;
            self.free.push(idx);
            if now.duration_since(entry.since) < idle_timeout {
                return Some(entry.stream);
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
