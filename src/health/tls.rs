//! Owns the TLS part of a health probe to a server with `tls = { verify,
//! ca, sni }`: the probe's rustls client state ([`ProbeTls`]), the
//! handshake stepped without blocking in the master's loop (after the TCP
//! connect and any PROXY header, within the probe's `timeout`; a failed
//! handshake — a certificate the `ca` does not sign, a wrong name — is a
//! failed probe), then the probe's request and reply as plaintext through
//! it. The record layer is the data plane's (`worker/tls/stream.rs`).

use crate::config::origin::OriginTls;
use crate::worker::buffer::Ready;
use crate::worker::tls::stream::{TlsClient, Wire, flush, pull};
use mio::net::TcpStream;
use rustls::ClientConnection;
use rustls::client::ClientConnectionData;
use std::io;
use std::net::SocketAddr;

/// A probe's TLS state.
#[derive(Debug)]
pub(super) struct ProbeTls {
    tls: ClientConnection,
    wire: Wire,
}

/// What a handshake step left.
pub(super) enum Handshake {
    /// Done: the request goes through [`ProbeTls::plain`].
    Done,
    /// Waiting for the socket.
    Pending,
    /// Failed, in words.
    Failed(String),
}

impl ProbeTls {
    /// The TLS state of a probe to `addr`.
    pub fn new(tls: &OriginTls, addr: SocketAddr) -> io::Result<ProbeTls> {
        Ok(ProbeTls {
            tls: tls.connect(addr.ip())?,
            wire: Wire::default(),
        })
    }

    /// Moves the handshake on as far as the socket allows.
    pub fn handshake(&mut self, tcp: &mut TcpStream) -> Handshake {
        let mut ready = always();
        let step = (|| {
            flush(&mut self.tls, tcp, &mut ready, &mut self.wire)?;
            pull(&mut self.tls, tcp, &mut ready, &mut self.wire)?;
            flush(&mut self.tls, tcp, &mut ready, &mut self.wire)
        })();
        if let Err(e) = step {
            return Handshake::Failed(format!("tls handshake: {e}"));
        }
        if !self.tls.is_handshaking() {
            return Handshake::Done;
        }
        if self.wire.eof {
            return Handshake::Failed("tls handshake: connection closed".to_string());
        }
        Handshake::Pending
    }

    /// The plaintext over `tcp` (a read or write that would block says so).
    pub fn plain<'a>(
        &'a mut self,
        tcp: &'a mut TcpStream,
        ready: &'a mut Ready,
    ) -> TlsClient<'a, ClientConnectionData> {
        *ready = always();
        TlsClient {
            tcp,
            ready,
            tls: &mut self.tls,
            wire: &mut self.wire,
        }
    }
}

fn always() -> Ready {
    Ready {
        read: true,
        write: true,
        ..Ready::default()
    }
}
