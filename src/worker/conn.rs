//! Owns one proxied connection: the client socket, the server socket once a
//! server is picked, the two [`Pipe`]s, the edge-triggered readiness flags,
//! the connect-then-relay phase, and the half-close rules (EOF from one side
//! is forwarded as `shutdown(Write)` to the other while the other direction
//! keeps flowing; the connection ends when both directions are done).

use super::buffer::{Flow, Pipe, Pool, Ready};
use crate::balance::ServerId;
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
    /// Bytes flow both ways.
    Relaying,
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
    /// The client's address.
    pub client_addr: SocketAddr,
    /// The server socket, while connecting or relaying.
    pub server: Option<TcpStream>,
    /// The server picked (index in the listen's servers).
    pub server_id: Option<ServerId>,
    /// Servers already tried for this client (never retried).
    pub tried: Vec<ServerId>,
    /// Phase.
    pub phase: Phase,
    /// Client → server.
    pub up: Pipe,
    /// Server → client.
    pub down: Pipe,
    client_ready: Ready,
    server_ready: Ready,
    /// Waits in `again` for another turn (never listed twice).
    pub in_again: bool,
    /// Its queue deadline is armed (armed once, however often it requeues).
    pub queue_timer: bool,
    /// Which direction goes first next turn (so neither starves the other).
    flip: bool,
    /// When the client was accepted.
    pub accepted: Instant,
    /// Last event time (idle timeout).
    pub last_active: Instant,
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

/// What a relay step left.
#[derive(Debug, PartialEq, Eq)]
pub enum Relay {
    /// Still open; bytes moved (client → server, server → client) this step.
    Open(u64, u64),
    /// Both directions finished cleanly.
    Finished(u64, u64),
    /// The byte budget of one turn is spent and more may be ready: resume
    /// after the worker's other events (edge-triggered: no new event comes).
    Busy(u64, u64),
}

/// Bytes one connection may move per turn of the worker's loop.
pub const TURN_BUDGET: usize = 512 * 1024;

impl Conn {
    /// A freshly accepted client.
    pub fn new(
        serial: u64,
        listen: usize,
        client: TcpStream,
        client_addr: SocketAddr,
        now: Instant,
    ) -> Conn {
        Conn {
            serial,
            listen,
            client,
            client_addr,
            server: None,
            server_id: None,
            tried: Vec::new(),
            phase: Phase::Relaying,
            up: Pipe::default(),
            down: Pipe::default(),
            // The client may already have sent bytes before registration.
            client_ready: Ready {
                read: true,
                write: true,
                ..Ready::default()
            },
            server_ready: Ready::default(),
            in_again: false,
            queue_timer: false,
            flip: false,
            accepted: now,
            last_active: now,
        }
    }

    /// Records readiness from an event on one of the two sockets.
    pub fn on_event(&mut self, server_side: bool, ev: &Event) {
        let closed = ev.is_read_closed() || ev.is_error();
        let readable = ev.is_readable() || closed;
        let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
        let r = if server_side {
            &mut self.server_ready
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
    /// at once: one place for it, whichever way the connect completes).
    pub fn start_connect(
        &mut self,
        server_id: ServerId,
        addr: SocketAddr,
        deadline: Instant,
    ) -> io::Result<&mut TcpStream> {
        self.server = None;
        self.server_ready = Ready::default();
        self.server_id = Some(server_id);
        self.tried.push(server_id);
        self.phase = Phase::Connecting { deadline };
        let stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        Ok(self.server.insert(stream))
    }

    /// Checks the outcome of the connect in progress (mio's recipe:
    /// `take_error`, then `peer_addr`).
    pub fn check_connect(&mut self) -> ConnectState {
        let Some(server) = &self.server else {
            return ConnectState::Failed(io::ErrorKind::NotConnected.into());
        };
        if !self.server_ready.write && !self.server_ready.read {
            return ConnectState::Pending;
        }
        // A clean EPOLLOUT (no error, no hang-up) on a first attempt means
        // connected: skip the getsockopt and getpeername calls. A retry's
        // socket reuses the token of a failed one whose stale events may
        // still be in this batch, so retries check the slow way.
        if self.server_ready.write && !self.server_ready.read_closed && self.tried.len() == 1 {
            self.phase = Phase::Relaying;
            return ConnectState::Connected;
        }
        match server.take_error() {
            Ok(Some(e)) | Err(e) => return ConnectState::Failed(e),
            Ok(None) => {}
        }
        match server.peer_addr() {
            Ok(_) => {
                self.phase = Phase::Relaying;
                ConnectState::Connected
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                self.server_ready = Ready::default();
                ConnectState::Pending
            }
            Err(e) => ConnectState::Failed(e),
        }
    }

    /// Moves bytes both ways as far as readiness, buffers and the turn's
    /// budget allow. The direction that goes first alternates per turn.
    pub fn relay(&mut self, pool: &mut Pool) -> io::Result<Relay> {
        let Some(mut server) = self.server.take() else {
            return Ok(Relay::Open(0, 0));
        };
        let result = self.relay_with(&mut server, pool);
        self.server = Some(server);
        result
    }

    fn relay_with(&mut self, server: &mut TcpStream, pool: &mut Pool) -> io::Result<Relay> {
        let up_before = self.up.bytes;
        let down_before = self.down.bytes;
        let mut budget = TURN_BUDGET;
        self.flip = !self.flip;
        while budget > 0 {
            self.up.last = self.down.done();
            self.down.last = self.up.done();
            let (a, b) = if self.flip {
                let a = self.pump_up(server, pool, &mut budget)?;
                (a, self.pump_down(server, pool, &mut budget)?)
            } else {
                let b = self.pump_down(server, pool, &mut budget)?;
                (self.pump_up(server, pool, &mut budget)?, b)
            };
            if a == Flow::Idle && b == Flow::Idle {
                break;
            }
        }
        let moved_up = self.up.bytes - up_before;
        let moved_down = self.down.bytes - down_before;
        if self.up.done() && self.down.done() {
            Ok(Relay::Finished(moved_up, moved_down))
        } else if budget == 0 {
            Ok(Relay::Busy(moved_up, moved_down))
        } else {
            Ok(Relay::Open(moved_up, moved_down))
        }
    }

    /// Client → server.
    fn pump_up(
        &mut self,
        server: &mut TcpStream,
        pool: &mut Pool,
        budget: &mut usize,
    ) -> io::Result<Flow> {
        self.up.transfer(
            &mut self.client,
            &mut self.client_ready,
            server,
            &mut self.server_ready,
            pool,
            budget,
        )
    }

    /// Server → client.
    fn pump_down(
        &mut self,
        server: &mut TcpStream,
        pool: &mut Pool,
        budget: &mut usize,
    ) -> io::Result<Flow> {
        self.down.transfer(
            server,
            &mut self.server_ready,
            &mut self.client,
            &mut self.client_ready,
            pool,
            budget,
        )
    }

    /// Gives the buffers back (the connection is being dropped).
    pub fn release(&mut self, pool: &mut Pool) {
        self.up.release(pool);
        self.down.release(pool);
    }

    /// A word for `lbctl connections`.
    pub fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Queued { .. } => "queued",
            Phase::Connecting { .. } => "connecting",
            Phase::Relaying if self.up.eof || self.down.eof => "half-closed",
            Phase::Relaying => "relaying",
        }
    }
}
