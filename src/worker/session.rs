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
//! `mode = "tcp"`. A new protocol is a new file and a new variant here, never
//! a branch inside the TCP relay (sozu's session/state design, STYLE.md).
//! Dispatch is a `match` on an enum: no allocation per connection and no
//! indirect call per event.

use super::buffer::{Pool, Ready};
use super::conn::Upstream;
use super::tcp::TcpRelay;
use crate::config::Mode;
use mio::net::TcpStream;
use std::io;

/// What the loop lends a session for one step: the client socket with its
/// readiness, and the server side.
#[derive(Debug)]
pub struct Io<'a> {
    /// The client socket.
    pub client: &'a mut TcpStream,
    /// The client socket's edge-triggered readiness.
    pub client_ready: &'a mut Ready,
    /// The server side (socket, readiness, picks so far).
    pub upstream: &'a mut Upstream,
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
}

/// Bytes one connection may move per turn of the worker's loop.
pub const TURN_BUDGET: usize = 512 * 1024;

/// The protocol state of one connection.
#[derive(Debug)]
pub enum Session {
    /// `mode = "tcp"`: bytes relayed both ways, half-close forwarded.
    Tcp(TcpRelay),
}

impl Session {
    /// The session a new client of a listen in `mode` starts with.
    pub fn new(mode: Mode) -> Session {
        match mode {
            // The HTTP session is being written on its own branch; until it
            // lands an http listen is relayed like a tcp one.
            Mode::Tcp | Mode::Http => Session::Tcp(TcpRelay::default()),
        }
    }

    /// Moves the connection on after readiness changed (the server side is
    /// connected). A peer's error is returned: the loop closes the
    /// connection and counts it, and nothing else is affected.
    pub fn advance(&mut self, io: Io<'_>, pool: &mut Pool) -> io::Result<Step> {
        match self {
            Session::Tcp(t) => t.advance(io, pool),
        }
    }

    /// Bytes moved so far (client → server, server → client).
    pub fn bytes(&self) -> (u64, u64) {
        match self {
            Session::Tcp(t) => t.bytes(),
        }
    }

    /// A word for `lbctl connections` while the connection is active.
    pub fn state_name(&self) -> &'static str {
        match self {
            Session::Tcp(t) => t.state_name(),
        }
    }

    /// Gives buffers back (the connection is being dropped).
    pub fn release(&mut self, pool: &mut Pool) {
        match self {
            Session::Tcp(t) => t.release(pool),
        }
    }
}
