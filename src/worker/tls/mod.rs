//! Owns TLS termination on a listen with `tls`: the [`TlsSession`], a
//! session state in front of the listen's protocol (`Tcp` or `Http`). It
//! drives the rustls handshake from the loop's readiness without blocking,
//! then runs its inner session over [`stream::TlsClient`] (plaintext in and
//! out through rustls), so the protocols know nothing of TLS. A handshake
//! must finish within `timeouts.header`; a TCP-mode session asks for its
//! server only once the handshake is done. `sni.rs` builds the rustls
//! config and picks certificates by SNI.

pub mod sni;
pub mod stream;
pub mod tickets;

use super::buffer::{Pool, Ready};
use super::session::{Counters, Io, Session, Step};
use crate::config::ListenConfig;
use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};
use std::io;
use std::sync::Arc;
use std::time::Instant;
use stream::{TlsClient, Wire, flush, pull};

/// The TLS state of one client connection and the protocol it carries.
#[derive(Debug)]
pub struct TlsSession {
    tls: ServerConnection,
    inner: Session,
    /// The plaintext readiness the inner session sees.
    ready: Ready,
    wire: Wire,
    /// While handshaking: when the handshake times out.
    handshake_until: Option<Instant>,
    /// The inner session finished; records (the last bytes, close_notify)
    /// still wait for the client's window before the loop may close.
    finished: bool,
}

impl TlsSession {
    /// A new client's TLS session carrying `inner`.
    pub fn new(
        config: &Arc<ServerConfig>,
        inner: Session,
        listen: &ListenConfig,
        now: Instant,
    ) -> io::Result<TlsSession> {
        let tls = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        Ok(TlsSession {
            tls,
            inner,
            ready: Ready::default(),
            wire: Wire::default(),
            handshake_until: Some(now + listen.timeouts.header),
            finished: false,
        })
    }

    /// The protocol carried.
    pub fn inner(&self) -> &Session {
        &self.inner
    }

    /// The protocol carried, to update (its access-log record).
    pub fn inner_mut(&mut self) -> &mut Session {
        &mut self.inner
    }

    /// Handshakes, then moves the inner session on over the plaintext.
    pub fn advance(
        &mut self,
        io: Io<'_>,
        pool: &mut Pool,
        counters: &Counters,
    ) -> io::Result<Step> {
        let Io {
            client,
            client_ready,
            client_addr,
            upstream,
            listen,
            now,
        } = io;
        let TlsSession {
            tls,
            inner,
            ready,
            wire,
            handshake_until,
            finished,
        } = self;
        let drained = flush(tls, client, client_ready, wire)?;
        if *finished {
            return Ok(if drained {
                Step::Finished(0, 0)
            } else {
                Step::Open(0, 0)
            });
        }
        if handshake_until.is_some() {
            pull(tls, client, client_ready, wire)?;
            flush(tls, client, client_ready, wire)?;
            if tls.is_handshaking() {
                if wire.eof {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                return Ok(Step::Open(0, 0));
            }
            *handshake_until = None;
            if matches!(inner, Session::Tcp(_)) && upstream.server.is_none() {
                // TLS offload: the server is connected now, not at accept.
                return Ok(Step::Dispatch);
            }
        }
        let mut step = Ok(Step::Open(0, 0));
        for _ in 0..2 {
            // Spurious readiness is harmless (a read or write that would
            // block says so); missing readiness would stall the session.
            ready.read = true;
            ready.write = true;
            ready.read_closed = wire.eof;
            let mut c = TlsClient {
                tcp: client,
                ready: client_ready,
                tls,
                wire,
            };
            let sub = Io {
                client: &mut c,
                client_ready: ready,
                client_addr,
                upstream,
                listen,
                now,
            };
            step = inner.advance_over(sub, pool, counters);
            // An EOF that came in behind the last bytes read: hand it over.
            let eof_behind = wire.eof
                && !wire.eof_delivered
                && !ready.read
                && matches!(step, Ok(Step::Open(..)));
            if !eof_behind {
                break;
            }
        }
        let drained = flush(tls, client, client_ready, wire)?;
        if let Ok(Step::Finished(up, down)) = step
            && !drained
        {
            // Closing now would drop what rustls still holds.
            *finished = true;
            return Ok(Step::Open(up, down));
        }
        step
    }

    /// The handshake deadline while handshaking, else the inner session's.
    pub fn deadline(&self, listen: &ListenConfig) -> Option<Instant> {
        let inner = self.inner.deadline(listen);
        match (self.handshake_until, inner) {
            (Some(h), Some(i)) => Some(h.min(i)),
            (h, i) => h.or(i),
        }
    }

    /// A deadline passed: a handshake not done closes the connection;
    /// after it, the inner session decides (and writes over TLS).
    pub fn on_timeout(
        &mut self,
        client: &mut TcpStream,
        counters: &Counters,
        now: Instant,
    ) -> bool {
        if self.handshake_until.is_some() {
            return true;
        }
        let mut ready = Ready {
            write: true,
            ..Ready::default()
        };
        let mut c = TlsClient {
            tcp: client,
            ready: &mut ready,
            tls: &mut self.tls,
            wire: &mut self.wire,
        };
        self.inner.on_timeout_over(&mut c, counters, now)
    }

    /// No server for the request: the inner session answers or not.
    pub fn answer_no_server(&mut self, counters: &Counters) -> bool {
        self.inner.answer_no_server(counters)
    }

    /// The worker drains.
    pub fn on_drain(&mut self, now: Instant) {
        self.inner.on_drain(now);
    }

    /// A word for `lbctl connections`.
    pub fn state_name(&self) -> &'static str {
        if self.handshake_until.is_some() {
            "handshake"
        } else {
            self.inner.state_name()
        }
    }

    /// Gives buffers back.
    pub fn release(&mut self, pool: &mut Pool) {
        self.inner.release(pool);
    }
}
