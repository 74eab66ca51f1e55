//! Owns the seam between the worker's event loop and the protocols it
//! carries. The loop owns everything shared — accept, the slab of
//! connections and their tokens, the client socket and its readiness, the
//! [`Upstream`] (server pick, non-blocking connect, retries, the queue),
//! buffers, timers and counters — and drives a [`Session`] through one small
//! interface once a connection is active: [`Session::advance`] after
//! readiness changed, [`Session::bytes`] and [`Session::state_name`] for
//! `lbctl connections`, [`Session::release`] at close. What a step left is a
//! value, [`Step`], never a flag the loop checks elsewhere.
//!
//! One variant per `mode`, each in its own file: [`TcpRelay`] (`tcp.rs`) is
//! `mode = "tcp"`, [`HttpSession`] (`http/`) is `mode = "http"`, which hands
//! over to the TCP relay after a `101` (websocket). A new protocol is a new file and a new variant here, never
//! a branch inside the TCP relay (sozu's session/state design, STYLE.md).
//! Dispatch is a `match` on an enum: no allocation per connection and no
//! indirect call per event.

use super::buffer::{Pool, Ready, Shutdown};
use super::conn::Upstream;
use super::http::{HttpSession, HttpStep};
use super::sockmap::SockmapRelay;
use super::tcp::TcpRelay;
use super::tls::TlsSession;
use crate::balance::ServerId;
use crate::config::{ListenConfig, Mode};
use crate::shm::{self, Region};
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// The client side a protocol reads and writes: the client's TCP socket
/// itself, or a TLS session's plaintext over it ([`super::tls`]). Protocols
/// are generic over it, so the plain path is compiled as before (no
/// indirect call, no branch per read or write).
pub trait ClientIo: Read + Write + Shutdown + AsFd {
    /// Whether bytes may go by `splice(2)` straight from and to the socket
    /// (false for TLS: the socket carries records, not the plaintext).
    const SPLICE: bool = true;
}

impl ClientIo for TcpStream {}

/// What the loop lends a session for one step: the client socket with its
/// readiness, the server side, the listen's settings and the clock.
#[derive(Debug)]
pub struct Io<'a, C = TcpStream> {
    /// The client socket (or the TLS plaintext over it).
    pub client: &'a mut C,
    /// The client socket's edge-triggered readiness.
    pub client_ready: &'a mut Ready,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// The server side (socket, readiness, picks so far).
    pub upstream: &'a mut Upstream,
    /// The listen the client came in on.
    pub listen: &'a ListenConfig,
    /// The loop's clock for this turn.
    pub now: Instant,
}

impl<C> Io<'_, C> {
    /// The same sockets and state, borrowed for a shorter call (so the
    /// caller can look at them again afterwards).
    pub fn reborrow(&mut self) -> Io<'_, C> {
        Io {
            client: &mut *self.client,
            client_ready: &mut *self.client_ready,
            client_addr: self.client_addr,
            upstream: &mut *self.upstream,
            listen: self.listen,
            now: self.now,
        }
    }
}

/// Where a session counts what it answered: this worker's cells of the
/// shared region.
#[derive(Debug, Clone, Copy)]
pub struct Counters<'a> {
    /// The generation's region.
    pub region: &'a Region,
    /// This worker's slot.
    pub slot: usize,
    /// Global index of the listen's first server.
    pub base: usize,
}

impl Counters<'_> {
    /// A response from `server` with `status` went to the client.
    pub fn response(&self, server: ServerId, status: u16) {
        let class = shm::status_class(status);
        let cell = self.region.slot_server(self.slot, self.base + server);
        cell.requests.fetch_add(1, Relaxed);
        cell.classes[class].fetch_add(1, Relaxed);
        let slot = self.region.slot(self.slot);
        slot.requests.fetch_add(1, Relaxed);
        slot.classes[class].fetch_add(1, Relaxed);
    }

    /// A response from the server `server` (if known) with `status`.
    pub fn response_of(&self, server: Option<ServerId>, status: u16) {
        match server {
            Some(id) => self.response(id, status),
            None => self.local(status),
        }
    }

    /// Bytes moved that no [`Step::Open`] reports (before a dispatch,
    /// retry or detach).
    pub fn bytes(&self, up: u64, down: u64) {
        let slot = self.region.slot(self.slot);
        slot.bytes_in.fetch_add(up, Relaxed);
        slot.bytes_out.fetch_add(down, Relaxed);
    }

    /// lbctl answered a request itself with `status`.
    pub fn local(&self, status: u16) {
        let class = shm::status_class(status);
        if self.region.servers() > self.base {
            self.region.slot_server(self.slot, self.base).local_classes[class]
                .fetch_add(1, Relaxed);
        }
        let slot = self.region.slot(self.slot);
        slot.requests.fetch_add(1, Relaxed);
        slot.classes[class].fetch_add(1, Relaxed);
    }

    /// A request went to another server after one failed it.
    pub fn retry(&self) {
        self.region.slot(self.slot).retries.fetch_add(1, Relaxed);
    }

    /// A request went over a reused (pooled) server connection.
    pub fn reused(&self) {
        self.region.slot(self.slot).reused.fetch_add(1, Relaxed);
    }
}

/// What one step of a session left.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Still open; bytes moved (client → server, server → client) this step.
    Open(u64, u64),
    /// Finished cleanly: the loop closes the connection.
    Finished(u64, u64),
    /// The byte budget of one turn is spent and more may be ready: resume
    /// after the worker's other events (edge-triggered: no new event comes).
    Busy(u64, u64),
    /// The session needs a server (a new request): the loop picks one,
    /// takes a pooled connection or connects, and advances it again.
    Dispatch,
    /// The server failed the request before answering and the request can
    /// be sent again: the loop counts the failure against the server, drops
    /// the connection and dispatches to another server.
    Retry,
    /// The request is done with its server: the loop lets the connection go
    /// (back to the idle pool when `reuse`) and advances the session again.
    Detach {
        /// The connection is clean and may serve another request.
        reuse: bool,
    },
}

/// Bytes one connection may move per turn of the worker's loop.
pub const TURN_BUDGET: usize = 512 * 1024;

/// The protocol state of one connection.
#[derive(Debug)]
pub enum Session {
    /// `mode = "tcp"`: bytes relayed both ways, half-close forwarded.
    Tcp(TcpRelay),
    /// `mode = "http"`: requests parsed, balanced one by one.
    Http(Box<HttpSession>),
    /// `mode = "tcp"` with `dataplane = "sockmap"`: the kernel relays.
    Sockmap(Box<SockmapRelay>),
    /// `tls = { certs = [...] }`: the TLS layer over the client socket,
    /// carrying a `Tcp` or `Http` session over its plaintext.
    Tls(Box<TlsSession>),
}

impl Session {
    /// The session a new client of a listen in `mode` starts with.
    pub fn new(mode: Mode, now: Instant) -> Session {
        match mode {
            Mode::Tcp => Session::Tcp(TcpRelay::default()),
            Mode::Http => Session::Http(Box::new(HttpSession::new(now))),
        }
    }

    /// The session of a new client of `listen` (TLS first when the listen
    /// terminates TLS: `tls` is its rustls config, built by the worker).
    pub fn for_listen(
        listen: &ListenConfig,
        tls: Option<&std::sync::Arc<rustls::ServerConfig>>,
        now: Instant,
    ) -> io::Result<Session> {
        let inner = Session::new(listen.mode, now);
        match tls {
            None => Ok(inner),
            Some(config) => Ok(Session::Tls(Box::new(TlsSession::new(
                config, inner, listen, now,
            )?))),
        }
    }

    /// True when the session needs a server as soon as the client is
    /// accepted (TCP); an HTTP session first reads a request (and a TLS
    /// session first finishes its handshake).
    pub fn connects_at_accept(&self) -> bool {
        matches!(self, Session::Tcp(_) | Session::Sockmap(_))
    }

    /// Moves the connection on after readiness changed. A peer's error is
    /// returned: the loop closes the connection and counts it, and nothing
    /// else is affected.
    pub fn advance(
        &mut self,
        io: Io<'_>,
        pool: &mut Pool,
        counters: &Counters,
    ) -> io::Result<Step> {
        match self {
            Session::Tls(t) => t.advance(io, pool, counters),
            Session::Sockmap(k) => k.advance(io, pool),
            _ => self.advance_over(io, pool, counters),
        }
    }

    /// [`Session::advance`] of a protocol over any client side (the socket,
    /// or a TLS session's plaintext). A TLS session inside TLS is not built.
    #[inline]
    pub fn advance_over<C: ClientIo>(
        &mut self,
        mut io: Io<'_, C>,
        pool: &mut Pool,
        counters: &Counters,
    ) -> io::Result<Step> {
        match self {
            Session::Tls(_) => Err(io::Error::other("TLS inside TLS")),
            Session::Tcp(t) => t.advance(io, pool),
            // Validation refuses `dataplane = "sockmap"` with `tls`.
            Session::Sockmap(_) => Err(io::Error::other("sockmap inside TLS")),
            Session::Http(h) => match h.advance(&mut io, pool, counters)? {
                HttpStep::Loop(step) => Ok(step),
                HttpStep::Pipe => {
                    // A `101`: everything buffered is flushed, and from now
                    // on the bytes are relayed as in TCP mode.
                    let (up, down) = h.bytes();
                    let log = h.take_log();
                    h.release(pool);
                    let mut relay = TcpRelay::resumed(up, down);
                    relay.upgraded = Some(log);
                    *self = Session::Tcp(relay);
                    match self {
                        Session::Tcp(t) => t.advance(io, pool),
                        _ => Ok(Step::Open(0, 0)),
                    }
                }
            },
        }
    }

    /// The balancing key of the request being dispatched, when the session
    /// has its own (`hash_key` header or cookie); else the client address.
    pub fn balance_key(&self) -> Option<u64> {
        match self {
            Session::Tls(t) => t.inner().balance_key(),
            Session::Tcp(_) | Session::Sockmap(_) => None,
            Session::Http(h) => h.balance_key(),
        }
    }

    /// The listen's server pool the next dispatch picks from (`pools[0]`,
    /// the listen's own servers, unless an HTTP route chose another).
    pub fn pool(&self) -> usize {
        match self {
            Session::Tls(t) => t.inner().pool(),
            Session::Tcp(_) | Session::Sockmap(_) => 0,
            Session::Http(h) => h.pool(),
        }
    }

    /// Whether the request may go over a pooled connection (idempotent
    /// ones only: a non-idempotent request always gets a fresh one, so a
    /// stale connection never forces a choice between losing it and sending
    /// it twice).
    pub fn may_reuse(&self) -> bool {
        match self {
            Session::Tls(t) => t.inner().may_reuse(),
            Session::Tcp(_) | Session::Sockmap(_) => false,
            Session::Http(h) => h.may_reuse(),
        }
    }

    /// No server can be had: true when the session answers the client
    /// itself (HTTP 502/503) and goes on, false when the loop closes it.
    pub fn answer_no_server(&mut self, counters: &Counters) -> bool {
        match self {
            Session::Tls(t) => t.answer_no_server(counters),
            Session::Tcp(_) | Session::Sockmap(_) => false,
            Session::Http(h) => h.answer_no_server(counters),
        }
    }

    /// The session's own next deadline beside the loop's idle timeout.
    pub fn deadline(&self, listen: &ListenConfig) -> Option<Instant> {
        match self {
            Session::Tls(t) => t.deadline(listen),
            Session::Tcp(_) => None,
            Session::Sockmap(k) => k.deadline(),
            Session::Http(h) => h.deadline(listen),
        }
    }

    /// The session's own deadline passed: true when the loop closes the
    /// connection now (an answer such as 408 or 504 is written best effort),
    /// false when the session goes on (a lingering close).
    pub fn on_timeout(
        &mut self,
        client: &mut TcpStream,
        counters: &Counters,
        now: Instant,
    ) -> bool {
        match self {
            Session::Tls(t) => t.on_timeout(client, counters, now),
            _ => self.on_timeout_over(client, counters, now),
        }
    }

    /// [`Session::on_timeout`] over any client side.
    pub fn on_timeout_over<C: ClientIo>(
        &mut self,
        client: &mut C,
        counters: &Counters,
        now: Instant,
    ) -> bool {
        match self {
            Session::Tls(_) => true,
            Session::Tcp(_) => true,
            // Its timers check FINs and refresh counters: it goes on.
            Session::Sockmap(_) => false,
            Session::Http(h) => h.on_timeout(client, counters, now),
        }
    }

    /// The worker drains: an HTTP session closes after its current (or
    /// next) response, an idle one after a short grace; TCP connections run
    /// to their end.
    pub fn on_drain(&mut self, now: Instant) {
        match self {
            Session::Http(h) => h.on_drain(now),
            Session::Tls(t) => t.on_drain(now),
            Session::Tcp(_) | Session::Sockmap(_) => {}
        }
    }

    /// Bytes moved so far (client → server, server → client).
    pub fn bytes(&self) -> (u64, u64) {
        match self {
            Session::Tls(t) => t.inner().bytes(),
            Session::Tcp(t) => t.bytes(),
            Session::Sockmap(k) => k.bytes(),
            Session::Http(h) => h.bytes(),
        }
    }

    /// A word for `lbctl connections` while the connection is active.
    pub fn state_name(&self) -> &'static str {
        match self {
            Session::Tls(t) => t.state_name(),
            Session::Tcp(t) => t.state_name(),
            Session::Sockmap(k) => k.state_name(),
            Session::Http(h) => h.state_name(),
        }
    }

    /// Gives buffers back (the connection is being dropped).
    pub fn release(&mut self, pool: &mut Pool) {
        match self {
            Session::Tls(t) => t.release(pool),
            Session::Tcp(t) => t.release(pool),
            Session::Sockmap(k) => k.release(pool),
            Session::Http(h) => h.release(pool),
        }
    }

    /// True while the kernel relays the connection (`lbctl connections`).
    pub fn kernel_relayed(&self) -> bool {
        matches!(self, Session::Sockmap(k) if k.kernel_relayed())
    }

    /// The kernel data plane's session, for what only it has (its own
    /// idle clock: the loop sees none of its bytes); None for the others.
    pub fn sockmap(&mut self) -> Option<&mut SockmapRelay> {
        match self {
            Session::Sockmap(k) => Some(k),
            Session::Tcp(_) | Session::Http(_) | Session::Tls(_) => None,
        }
    }
}
