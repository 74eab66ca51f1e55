//! Owns `mode = "tcp"`: the [`TcpRelay`] session, two [`Pipe`]s moving bytes
//! both ways with back-pressure, and the half-close rules (EOF from one side
//! is forwarded as `shutdown(Write)` to the other while the other direction
//! keeps flowing; the session finishes when both directions are done). In
//! STYLE terms it is the "pipe" state of a session: the loop connects the
//! server side ([`super::conn`]), then hands both sockets to it.

use super::access::record::{Cause, RequestLog};
use super::buffer::{Flow, Pipe, Pool};
use super::session::{ClientIo, Io, Step, TURN_BUDGET};
use std::io;

/// The relay state of one TCP connection.
#[derive(Debug, Default)]
pub struct TcpRelay {
    /// Client → server.
    pub up: Pipe,
    /// Server → client.
    pub down: Pipe,
    /// Which direction goes first next turn (so neither starves the other).
    flip: bool,
    /// The side whose EOF came first (true: the client's), once one did.
    first_eof: Option<bool>,
    /// The access-log state of the HTTP request this tunnel answered
    /// (`101`), logged when the tunnel ends.
    pub upgraded: Option<Box<RequestLog>>,
}

impl TcpRelay {
    /// A relay taking over a connection that already moved `up` and `down`
    /// bytes (an HTTP connection after `101 Switching Protocols`).
    pub fn resumed(up: u64, down: u64) -> TcpRelay {
        let mut t = TcpRelay::default();
        t.up.bytes = up;
        t.down.bytes = down;
        t
    }

    /// Moves bytes both ways as far as readiness, buffers and the turn's
    /// budget allow. The direction that goes first alternates per turn.
    pub fn advance<C: ClientIo>(&mut self, io: Io<'_, C>, pool: &mut Pool) -> io::Result<Step> {
        if !C::SPLICE {
            // TLS plaintext: bulk directions stay on read/write.
            self.up.no_splice = true;
            self.down.no_splice = true;
        }
        let Io {
            client,
            client_ready,
            upstream,
            ..
        } = io;
        let Some(server) = upstream.server.as_mut() else {
            return Ok(Step::Open(0, 0));
        };
        if server.is_tls() {
            // TLS to the server: its socket carries records, not bytes.
            self.up.no_splice = true;
            self.down.no_splice = true;
        }
        let server_ready = &mut upstream.ready;
        let up_before = self.up.bytes;
        let down_before = self.down.bytes;
        let mut budget = TURN_BUDGET;
        self.flip = !self.flip;
        while budget > 0 {
            self.up.last = self.down.done();
            // TLS: the client's EOF is a close_notify, always sent.
            self.down.last = self.up.done() && C::SPLICE;
            let (a, b) = if self.flip {
                let a = self.up.transfer(
                    client,
                    client_ready,
                    server,
                    server_ready,
                    pool,
                    &mut budget,
                )?;
                if self.up.eof {
                    self.first_eof.get_or_insert(true);
                }
                let b = self.down.transfer(
                    server,
                    server_ready,
                    client,
                    client_ready,
                    pool,
                    &mut budget,
                )?;
                if self.down.eof {
                    self.first_eof.get_or_insert(false);
                }
                (a, b)
            } else {
                let b = self.down.transfer(
                    server,
                    server_ready,
                    client,
                    client_ready,
                    pool,
                    &mut budget,
                )?;
                if self.down.eof {
                    self.first_eof.get_or_insert(false);
                }
                let a = self.up.transfer(
                    client,
                    client_ready,
                    server,
                    server_ready,
                    pool,
                    &mut budget,
                )?;
                if self.up.eof {
                    self.first_eof.get_or_insert(true);
                }
                (a, b)
            };
            if a == Flow::Idle && b == Flow::Idle {
                break;
            }
        }
        let moved_up = self.up.bytes - up_before;
        let moved_down = self.down.bytes - down_before;
        if self.up.done() && self.down.done() {
            Ok(Step::Finished(moved_up, moved_down))
        } else if budget == 0 {
            Ok(Step::Busy(moved_up, moved_down))
        } else {
            Ok(Step::Open(moved_up, moved_down))
        }
    }

    /// How the relay ended for the access log: the side that closed first.
    pub fn ended_by(&self) -> Cause {
        match self.first_eof {
            Some(false) => Cause::ServerClosed,
            _ => Cause::ClientClosed,
        }
    }

    /// Bytes relayed so far (client → server, server → client).
    pub fn bytes(&self) -> (u64, u64) {
        (self.up.bytes, self.down.bytes)
    }

    /// A word for `lbctl connections`.
    pub fn state_name(&self) -> &'static str {
        if self.up.eof || self.down.eof {
            "half-closed"
        } else {
            "relaying"
        }
    }

    /// Gives the buffers back (the connection is being dropped).
    pub fn release(&mut self, pool: &mut Pool) {
        self.up.release(pool);
        self.down.release(pool);
    }
}
