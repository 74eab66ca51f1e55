//! Owns TLS origination to servers with `tls = { verify, ca, sni }`: the
//! [`Origin`] state a server connection ([`ServerConn`]) carries for its
//! whole life (pooled connections keep their session), the handshake run
//! while the connection is still `Connecting` (after the TCP connect and
//! any PROXY header, bounded by `timeouts.connect`; a failure is a connect
//! failure, retried on another server), and `Read`/`Write`/`Shutdown` of
//! the plaintext on `ServerConn` through rustls, so the protocols read and
//! write a server connection without knowing whether it is encrypted. A
//! plain connection costs one branch per read or write. The record layer
//! itself is the termination's (`tls/stream.rs`), generic over the side.

use super::buffer::{Ready, Shutdown};
use super::conn::{ConnectState, Phase, Upstream};
use super::tls::stream::{TlsClient, Wire, flush, pull};
use super::tokens::ServerConn;
use crate::config::origin::OriginTls;
use mio::net::TcpStream;
use rustls::ClientConnection;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

/// The TLS state of one server connection.
#[derive(Debug)]
pub struct Origin {
    tls: ClientConnection,
    wire: Wire,
    stage: Stage,
}

/// Where an originated connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The TCP connect runs.
    Tcp,
    /// The TCP connect (and PROXY header) is done: the handshake runs.
    Handshake,
    /// The handshake is done.
    Done,
}

/// Gives a new server connection to `addr` its TLS state when the server
/// has `tls` (an error here is a failed connect).
pub fn attach<'a>(
    server: &'a mut ServerConn,
    tls: Option<&OriginTls>,
    addr: SocketAddr,
) -> io::Result<&'a mut ServerConn> {
    if let Some(t) = tls {
        server.tls = Some(Box::new(Origin {
            tls: t.connect(addr.ip())?,
            wire: Wire::default(),
            stage: Stage::Tcp,
        }));
    }
    Ok(server)
}

/// The TCP connect is done (and a PROXY header written): true when the
/// server speaks TLS and the connection stays `Connecting` (until
/// `deadline`) for the handshake.
pub fn begin(up: &mut Upstream, phase: &mut Phase, deadline: std::time::Instant) -> bool {
    let Some(o) = up.server.as_mut().and_then(|s| s.tls.as_deref_mut()) else {
        return false;
    };
    if o.stage != Stage::Tcp {
        return false;
    }
    o.stage = Stage::Handshake;
    *phase = Phase::Connecting { deadline };
    // The socket is connected: the ClientHello can go at once.
    up.ready.write = true;
    true
}

/// True while the connection's TLS handshake runs (the loop calls
/// [`handshake`] instead of checking the TCP connect).
pub fn handshaking(up: &Upstream) -> bool {
    up.server
        .as_ref()
        .and_then(|s| s.tls.as_deref())
        .is_some_and(|o| o.stage == Stage::Handshake)
}

/// True once the connection's TLS handshake is done (false when plain).
pub fn tls_done(up: &Upstream) -> bool {
    up.server
        .as_ref()
        .and_then(|s| s.tls.as_deref())
        .is_some_and(|o| o.stage == Stage::Done)
}

/// Moves the handshake on: `Connected` (the phase turns `Active`) once it
/// is done, `Failed` on a TLS error (a bad certificate, an alert) or an
/// EOF, else `Pending` until the socket's next edge.
pub fn handshake(up: &mut Upstream, phase: &mut Phase) -> ConnectState {
    let Some(server) = up.server.as_mut() else {
        return ConnectState::Failed(io::ErrorKind::NotConnected.into());
    };
    let (tcp, Some(o)) = server.parts() else {
        return ConnectState::Failed(io::ErrorKind::NotConnected.into());
    };
    let ready = &mut up.ready;
    let step = (|| {
        flush(&mut o.tls, tcp, ready, &mut o.wire)?;
        pull(&mut o.tls, tcp, ready, &mut o.wire)?;
        flush(&mut o.tls, tcp, ready, &mut o.wire)
    })();
    if let Err(e) = step {
        return ConnectState::Failed(e);
    }
    if o.tls.is_handshaking() {
        if o.wire.eof || ready.read_closed {
            return ConnectState::Failed(io::ErrorKind::UnexpectedEof.into());
        }
        return ConnectState::Pending;
    }
    o.stage = Stage::Done;
    // Application bytes may have come with the last handshake records:
    // the session must try reading (spurious readiness is harmless).
    ready.read = true;
    ready.write = true;
    *phase = Phase::Active;
    ConnectState::Connected
}

/// Writes what rustls still holds for the server (records behind a short
/// write, a close_notify) once the socket takes more: run before each step
/// of the session. Nothing to do for a plain connection.
pub fn flush_pending(up: &mut Upstream) -> io::Result<()> {
    if let Some(server) = up.server.as_mut()
        && let (tcp, Some(o)) = server.parts()
    {
        flush(&mut o.tls, tcp, &mut up.ready, &mut o.wire)?;
    }
    Ok(())
}

impl ServerConn {
    /// True when the connection is encrypted (never spliced).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The plaintext view of an encrypted connection for one call. Its
    /// readiness is always set: a read or write that would block says so,
    /// and the caller's edge-triggered flags follow from that.
    fn plain<R>(
        &mut self,
        f: impl FnOnce(&mut TlsClient<'_, rustls::client::ClientConnectionData>) -> R,
    ) -> Option<R> {
        let (tcp, o) = self.parts();
        let o = o?;
        let mut ready = Ready {
            read: true,
            write: true,
            ..Ready::default()
        };
        let mut c = TlsClient {
            tcp,
            ready: &mut ready,
            tls: &mut o.tls,
            wire: &mut o.wire,
        };
        Some(f(&mut c))
    }

    fn tcp(&mut self) -> &mut TcpStream {
        self.parts().0
    }
}

impl Read for ServerConn {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tls.is_none() {
            return self.tcp().read(buf);
        }
        self.plain(|c| c.read(buf))
            .unwrap_or(Err(io::ErrorKind::NotConnected.into()))
    }
}

impl Write for ServerConn {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tls.is_none() {
            return self.tcp().write(buf);
        }
        self.plain(|c| c.write(buf))
            .unwrap_or(Err(io::ErrorKind::NotConnected.into()))
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.tls.is_none() {
            return self.tcp().write_vectored(bufs);
        }
        self.plain(|c| c.write_vectored(bufs))
            .unwrap_or(Err(io::ErrorKind::NotConnected.into()))
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.tls.is_none() {
            return Ok(());
        }
        self.plain(|c| c.flush()).unwrap_or(Ok(()))
    }
}

impl Shutdown for ServerConn {
    fn shutdown_write(&mut self) -> io::Result<()> {
        if self.tls.is_none() {
            return self.tcp().shutdown(std::net::Shutdown::Write);
        }
        self.plain(|c| c.shutdown_write()).unwrap_or(Ok(()))
    }

    fn write_before_fin(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        if self.tls.is_none() {
            return self.tcp().write_before_fin(buf);
        }
        None
    }
}

impl AsFd for ServerConn {
    /// The socket's fd (an encrypted connection is never spliced).
    fn as_fd(&self) -> BorrowedFd<'_> {
        (**self).as_fd()
    }
}
