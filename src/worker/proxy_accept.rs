//! Owns `accept_proxy = true` in the worker: a client accepted on such a
//! listen starts in [`Phase::ProxyHeader`] and nothing else happens to it
//! (no server, no session step) until its PROXY header is read here.
//!
//! The header is read with `MSG_PEEK` and parsed by the pure
//! [`crate::proxy_protocol::parse`]; once it is complete exactly its bytes
//! are consumed, so whatever the client sent after it (in the same segment
//! or not) stays in the socket for the session, as if the header had never
//! been there — nothing is copied or buffered per connection. An incomplete
//! header waits for the next readiness edge (new bytes raise one); the
//! phase's deadline (`timeouts.proxy`) closes a client that is too slow.
//!
//! With a PROXY command the header's source becomes the connection's client
//! address (what `source_hash`, the per-client limits, X-Forwarded-For and
//! `lbctl connections` use) and its destination is what a `send_proxy`
//! server is told; LOCAL (the sending balancer's own health check) and
//! UNKNOWN keep the real peer. The per-client limits are applied here, to
//! that address. A bad header, a timeout, or a client that closes first is
//! counted per listen (`status`, `/metrics`), logged at most once a second,
//! and closes only that connection.

use super::Worker;
use super::conn::Phase;
use super::session::Session;
use crate::proxy_protocol::{self, MAX_HEADER, Parsed};
use crate::shm;
use std::io::{self, Read};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Why a client's PROXY header was refused; the index of its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Not a PROXY header, or one that breaks the spec or lbctl's bounds.
    Invalid = 0,
    /// Not complete within `timeouts.proxy`.
    Timeout = 1,
    /// The client closed (or reset) before the header was complete.
    Closed = 2,
}

impl Refused {
    /// The word in status and metrics.
    pub(super) const WORDS: [&'static str; 3] = ["invalid", "timeout", "closed"];
}

/// What reading the header led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeaderStep {
    /// Incomplete: wait for more bytes (or the deadline); or the connection
    /// was closed.
    Wait,
    /// Read: the session runs now (HTTP reads its first request).
    Active,
    /// Read: the session needs a server now (TCP); the connection's serial.
    Dispatch(u64),
}

impl Worker {
    /// Reads the PROXY header of the connection at `idx` as far as its
    /// bytes allow.
    pub(super) fn read_proxy_header(&mut self, idx: usize) -> HeaderStep {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return HeaderStep::Wait;
        };
        let mut buf = [0u8; MAX_HEADER];
        let n = loop {
            match conn.client.peek(&mut buf) {
                Ok(0) => return self.proxy_refused(idx, Refused::Closed, None),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HeaderStep::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.proxy_refused(idx, Refused::Closed, None),
            }
        };
        let (header, len) = match proxy_protocol::parse(&buf[..n]) {
            // Peeked bytes stay unread, so a client that closed after part
            // of a header is seen by its hang-up, not by a read of 0.
            Ok(Parsed::Incomplete) if conn.client_closed() => {
                return self.proxy_refused(idx, Refused::Closed, None);
            }
            Ok(Parsed::Incomplete) => return HeaderStep::Wait,
            Ok(Parsed::Done { header, len }) => (header, len),
            Err(e) => return self.proxy_refused(idx, Refused::Invalid, Some(e.0)),
        };
        // Consume the header's bytes only: they were peeked, so they are
        // there to read.
        let mut left = len;
        while left > 0 {
            match conn.client.read(&mut buf[..left]) {
                Ok(0) => return self.proxy_refused(idx, Refused::Closed, None),
                Ok(k) => left -= k.min(left),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.proxy_refused(idx, Refused::Closed, None),
            }
        }
        if let Some((src, dst)) = header.addresses() {
            conn.client_addr = src;
            conn.proxy_dst = Some(dst);
        }
        let listen_idx = conn.listen;
        let listen = &self.config.listens[listen_idx];
        let limits = &listen.client_limits;
        if limits.max_conns.is_some() || limits.rate.is_some() {
            let addr = conn.client_addr;
            match crate::limits::admit(
                &self.region,
                self.slot,
                listen_idx,
                limits,
                addr.ip(),
                shm::now_ms(),
            ) {
                Ok(cell) => conn.client_cell = cell,
                Err(why) => {
                    self.refuse_client(listen_idx, addr, why);
                    self.close(idx, false);
                    return HeaderStep::Wait;
                }
            }
        }
        // The session starts now: an HTTP header timeout counts from here.
        conn.session.release(&mut self.pool);
        conn.session = Session::new(listen.mode, self.now);
        if self.draining {
            conn.session.on_drain(self.now);
        }
        conn.phase = Phase::Active;
        conn.dispatch_since = self.now;
        let base = self.listens[listen_idx].base;
        if self.region.servers() > base {
            self.region
                .server(base)
                .proxy_accepted
                .fetch_add(1, Relaxed);
        }
        if conn.session.connects_at_accept() {
            HeaderStep::Dispatch(conn.serial)
        } else {
            HeaderStep::Active
        }
    }

    /// Closes the connection at `idx` for its PROXY header: counted per
    /// listen, logged at most once a second (with how many went unlogged).
    pub(super) fn proxy_refused(
        &mut self,
        idx: usize,
        why: Refused,
        detail: Option<&str>,
    ) -> HeaderStep {
        let Some(conn) = self.conns.get(idx).and_then(Option::as_ref) else {
            return HeaderStep::Wait;
        };
        let (listen, peer) = (conn.listen, conn.client_addr);
        let base = self.listens[listen].base;
        if self.region.servers() > base {
            self.region.server(base).proxy_refused[why as usize].fetch_add(1, Relaxed);
        }
        self.proxy_unlogged += 1;
        if self
            .proxy_logged_at
            .is_none_or(|t| self.now.duration_since(t) >= Duration::from_secs(1))
        {
            eprintln!(
                "lbctl worker {}: listen {}: closed {peer}: PROXY header {}{}{}",
                self.pid,
                self.config.listens[listen].name,
                Refused::WORDS[why as usize],
                detail.map(|d| format!(" ({d})")).unwrap_or_default(),
                if self.proxy_unlogged > 1 {
                    format!("; {} closed since the last line", self.proxy_unlogged)
                } else {
                    String::new()
                }
            );
            self.proxy_logged_at = Some(self.now);
            self.proxy_unlogged = 0;
        }
        self.close(idx, true);
        HeaderStep::Wait
    }
}
