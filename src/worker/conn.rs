//! Owns what every connection has, whatever its protocol: the client socket
//! and its readiness, the [`Upstream`] (the server side: socket, readiness,
//! the servers tried so far), the loop-managed [`Phase`] (waiting for a
//! PROXY header, queued, connecting, active), the non-blocking connect and
//! its check, and the bookkeeping the loop needs (serial, timers, idle
//! time). The protocol itself is the [`Session`] it carries.

use super::buffer::{Pool, Ready};
use super::session::{Counters, Io, Session, Step};
use super::tokens::{Holder, ServerConn, ServerTokens};
use crate::balance::ServerId;
use crate::config::{ListenConfig, Mode};
use mio::event::Event;
use mio::net::TcpStream;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a server below `max_conns`, until the deadline.
    Queued {
        /// When the connection gives up waiting.
        deadline: Instant,
    },
    /// Non-blocking connect in progress, until the deadline.
    Connecting {
        /// Connect timeout.
        deadline: Instant,
    },
    /// `accept_proxy`: waiting for the client's PROXY header, until the
    /// deadline (`worker/proxy_accept.rs`).
    ProxyHeader {
        /// `timeouts.proxy` after the accept.
        deadline: Instant,
    },
    /// Connected: the session runs.
    Active,
}

/// The server side of a connection.
#[derive(Debug, Default)]
pub struct Upstream {
    /// The server connection (its socket and lifelong token), while
    /// connecting or connected.
    pub server: Option<ServerConn>,
    /// The server picked (index in the listen's servers).
    pub server_id: Option<ServerId>,
    /// Servers already tried for this client (never retried).
    pub tried: Vec<ServerId>,
    /// The server socket's edge-triggered readiness.
    pub ready: Ready,
}

/// One client connection and its server side.
#[derive(Debug)]
pub struct Conn {
    /// Distinguishes reuses of the same slab slot (timers, stale events).
    pub serial: u64,
    /// Index of the listen it came in on.
    pub listen: usize,
    /// The client socket.
    pub client: TcpStream,
    /// The client's address (with `accept_proxy`, the one its PROXY header
    /// gave, once read).
    pub client_addr: SocketAddr,
    /// The address the client connected to, as its PROXY header gave it
    /// (`None`: the client socket's own local address).
    pub proxy_dst: Option<SocketAddr>,
    client_ready: Ready,
    /// The server side.
    pub upstream: Upstream,
    /// Phase.
    pub phase: Phase,
    /// The protocol.
    pub session: Session,
    /// Waits in `again` for another turn (never listed twice).
    pub in_again: bool,
    /// Its queue deadline is armed (armed once, however often it requeues).
    pub queue_timer: bool,
    /// When the client was accepted.
    pub accepted: Instant,
    /// When the current dispatch began (the queue timeout counts from it:
    /// accept in TCP mode, each request in HTTP mode).
    pub dispatch_since: Instant,
    /// Last event time (idle timeout).
    pub last_active: Instant,
    /// Its cell in the per-client table (`max_conns_per_client`, `rate`).
    pub client_cell: Option<usize>,
    /// The earliest deadline a timer entry is armed for (the session's own
    /// deadlines arm a new entry only when they come earlier).
    pub armed: Option<Instant>,
    /// Why the loop ends it (idle, queue timeout, no server), for the
    /// access log; None: the session's own end.
    pub end: Option<super::access::record::Cause>,
}

/// Result of checking a non-blocking connect.
#[derive(Debug)]
pub enum ConnectState {
    /// Not finished yet.
    Pending,
    /// Connected.
    Connected,
    /// Failed.
    Failed(io::Error),
}

impl Conn {
    /// A freshly accepted client of a listen in `mode`.
    pub fn new(
        serial: u64,
        listen: usize,
        mode: Mode,
        client: TcpStream,
        client_addr: SocketAddr,
        now: Instant,
    ) -> Conn {
        Conn {
            serial,
            listen,
            client,
            client_addr,
            proxy_dst: None,
            // The client may already have sent bytes before registration.
            client_ready: Ready {
                read: true,
                write: true,
                ..Ready::default()
            },
            upstream: Upstream::default(),
            phase: Phase::Active,
            session: Session::new(mode, now),
            in_again: false,
            queue_timer: false,
            accepted: now,
            dispatch_since: now,
            last_active: now,
            client_cell: None,
            armed: None,
            end: None,
        }
    }

    /// Records readiness from an event on one of the two sockets.
    pub fn on_event(&mut self, server_side: bool, ev: &Event) {
        let closed = ev.is_read_closed() || ev.is_error();
        let readable = ev.is_readable() || closed;
        let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
        let r = if server_side {
            &mut self.upstream.ready
        } else {
            &mut self.client_ready
        };
        r.read |= readable;
        r.write |= writable;
        r.read_closed |= closed;
        r.fin |= ev.is_read_closed() && !ev.is_error();
        r.urgent |= ev.is_priority();
    }

    /// Starts a connect attempt to `server_id` at `addr` (TCP_NODELAY set
    /// at once: one place for it, whichever way the connect completes); the
    /// socket gets a token slot held by `holder` (this connection). `hold`
    /// says whether the handshake's last ACK waits for the first bytes
    /// written (`smart_connect`, or `defer_accept` with the client's bytes
    /// waiting: `worker/defer.rs`).
    pub fn start_connect(
        &mut self,
        server_id: ServerId,
        addr: SocketAddr,
        deadline: Instant,
        tokens: &mut ServerTokens,
        holder: Holder,
        hold: super::defer::HoldAck,
    ) -> io::Result<&mut ServerConn> {
        let hold_ack = hold.now(std::os::fd::AsRawFd::as_raw_fd(&self.client));
        let up = &mut self.upstream;
        up.server = None;
        up.ready = Ready::default();
        up.server_id = Some(server_id);
        up.tried.push(server_id);
        self.phase = Phase::Connecting { deadline };
        let stream = super::defer::connect(addr, hold_ack)?;
        let _ = stream.set_nodelay(true);
        Ok(up.server.insert(tokens.wrap(stream, holder)))
    }

    /// Checks the outcome of the connect in progress (mio's recipe:
    /// `take_error`, then `peer_addr`).
    pub fn check_connect(&mut self) -> ConnectState {
        let up = &mut self.upstream;
        let Some(server) = &up.server else {
            return ConnectState::Failed(io::ErrorKind::NotConnected.into());
        };
        if !up.ready.write && !up.ready.read {
            return ConnectState::Pending;
        }
        // A clean EPOLLOUT (no error, no hang-up) on a first attempt means
        // connected: skip the getsockopt and getpeername calls. A retry's
        // socket reuses the token of a failed one whose stale events may
        // still be in this batch, so retries check the slow way.
        if up.ready.write && !up.ready.read_closed && up.tried.len() == 1 {
            self.phase = Phase::Active;
            return ConnectState::Connected;
        }
        match server.take_error() {
            Ok(Some(e)) | Err(e) => return ConnectState::Failed(e),
            Ok(None) => {}
        }
        match server.peer_addr() {
            Ok(_) => {
                self.phase = Phase::Active;
                ConnectState::Connected
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                up.ready = Ready::default();
                ConnectState::Pending
            }
            Err(e) => ConnectState::Failed(e),
        }
    }

    /// [`Conn::check_connect`], or the TLS handshake to the server once
    /// the TCP connect is done (`worker/origin`).
    pub fn check_connect_or_handshake(&mut self) -> ConnectState {
        if super::origin::handshaking(&self.upstream) {
            return super::origin::handshake(&mut self.upstream, &mut self.phase);
        }
        self.check_connect()
    }

    /// True once the client closed its side (or the socket failed).
    pub fn client_closed(&self) -> bool {
        self.client_ready.read_closed
    }

    /// Runs the session one step (the connection is active).
    pub fn advance(
        &mut self,
        listen: &ListenConfig,
        now: Instant,
        pool: &mut Pool,
        counters: &Counters,
    ) -> io::Result<Step> {
        super::origin::flush_pending(&mut self.upstream)?;
        let io = Io {
            client: &mut self.client,
            client_ready: &mut self.client_ready,
            client_addr: self.client_addr,
            upstream: &mut self.upstream,
            listen,
            now,
        };
        self.session.advance(io, pool, counters)
    }

    /// Lets the server connection go (the request is done with it); the
    /// stream is returned for the idle pool.
    pub fn detach(&mut self) -> Option<ServerConn> {
        let up = &mut self.upstream;
        up.server_id = None;
        up.tried.clear();
        up.ready = Ready::default();
        up.server.take()
    }

    /// Attaches a pooled connection to `server_id` (already connected).
    pub fn attach(&mut self, server_id: ServerId, stream: ServerConn) -> &mut ServerConn {
        let up = &mut self.upstream;
        up.server_id = Some(server_id);
        up.tried.push(server_id);
        // Writable at once; a response raises a read edge.
        up.ready = Ready {
            write: true,
            ..Ready::default()
        };
        self.phase = Phase::Active;
        up.server.insert(stream)
    }

    /// Gives the buffers back (the connection is being dropped).
    pub fn release(&mut self, pool: &mut Pool) {
        self.session.release(pool);
    }

    /// A word for `lbctl connections`.
    pub fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Queued { .. } => "queued",
            Phase::Connecting { .. } => "connecting",
            Phase::ProxyHeader { .. } => "proxy-header",
            Phase::Active => self.session.state_name(),
        }
    }
}
