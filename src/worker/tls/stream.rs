//! Owns [`TlsClient`]: the client side a protocol sees on a TLS listen —
//! `Read`/`Write`/`Shutdown` of plaintext over the client's TCP socket,
//! driving rustls without ever blocking (`read_tls` → `process_new_packets`
//! → plaintext; plaintext → records → `write_tls`). Reads and writes are
//! greedy, so a short one means what it means on a socket (nothing more
//! until the socket's next edge), which is what the protocols' edge-triggered
//! readiness rules assume. Also the two loops the handshake uses, [`pull`]
//! and [`flush`].

use crate::worker::buffer::{Ready, Shutdown};
use crate::worker::session::ClientIo;
use mio::net::TcpStream;
use rustls::ConnectionCommon;
use rustls::server::ServerConnectionData;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

/// What the TLS layer remembers about its socket between steps.
#[derive(Debug, Default)]
pub struct Wire {
    /// The client's TCP EOF was read.
    pub eof: bool,
    /// The EOF was handed to the protocol (a read returned 0).
    pub eof_delivered: bool,
    /// close_notify is queued: shut the socket's write side once flushed.
    pub shut_pending: bool,
}

/// Plaintext over the client socket, for one step of the protocol. (Also
/// the server side of an originated TLS connection, `D` being rustls's
/// client data: `worker/origin`.)
pub struct TlsClient<'a, D = ServerConnectionData> {
    /// The client's socket.
    pub tcp: &'a mut TcpStream,
    /// Its edge-triggered readiness.
    pub ready: &'a mut Ready,
    /// The TLS state.
    pub tls: &'a mut ConnectionCommon<D>,
    /// EOF and shutdown bookkeeping.
    pub wire: &'a mut Wire,
}

/// Writes queued TLS records to the socket until done or it would block;
/// true when nothing is left queued. A queued close_notify is followed by
/// `shutdown(SHUT_WR)` once written.
pub fn flush<D>(
    tls: &mut ConnectionCommon<D>,
    tcp: &mut TcpStream,
    ready: &mut Ready,
    wire: &mut Wire,
) -> io::Result<bool> {
    while tls.wants_write() {
        if !ready.write {
            return Ok(false);
        }
        match tls.write_tls(tcp) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.write = false;
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if wire.shut_pending {
        wire.shut_pending = false;
        let _ = tcp.shutdown(std::net::Shutdown::Write);
    }
    Ok(true)
}

/// Reads records while the socket has bytes and rustls wants them (the
/// handshake), processing each batch. A TLS error queues its alert, which
/// is flushed best effort, and is returned.
pub fn pull<D>(
    tls: &mut ConnectionCommon<D>,
    tcp: &mut TcpStream,
    ready: &mut Ready,
    wire: &mut Wire,
) -> io::Result<()> {
    while tls.is_handshaking() && ready.read && !wire.eof {
        read_some(tls, tcp, ready, wire)?;
    }
    Ok(())
}

/// One `read_tls` and its processing; true when bytes came in.
fn read_some<D>(
    tls: &mut ConnectionCommon<D>,
    tcp: &mut TcpStream,
    ready: &mut Ready,
    wire: &mut Wire,
) -> io::Result<bool> {
    match tls.read_tls(tcp) {
        Ok(0) => {
            wire.eof = true;
            Ok(false)
        }
        Ok(_) => {
            if let Err(e) = tls.process_new_packets() {
                let _ = flush(tls, tcp, ready, wire);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            ready.read = false;
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
        Err(e) => Err(e),
    }
}

impl<D> std::fmt::Debug for TlsClient<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("tcp", &self.tcp)
            .field("wire", &self.wire)
            .finish_non_exhaustive()
    }
}

impl<D> Read for TlsClient<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut filled = 0;
        loop {
            match self.tls.reader().read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // No plaintext buffered: take more records, if any.
                    if self.wire.eof || !self.ready.read {
                        if filled > 0 || self.wire.eof {
                            break;
                        }
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    read_some(self.tls, self.tcp, self.ready, self.wire)?;
                }
                // EOF without close_notify: taken as an EOF (as browsers
                // and most servers do); the bytes before it were
                // authenticated record by record.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        // Tickets, key updates: whatever rustls queued goes out.
        flush(self.tls, self.tcp, self.ready, self.wire)?;
        if filled == 0 {
            self.wire.eof_delivered = true;
        }
        Ok(filled)
    }
}

impl<D> Write for TlsClient<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        loop {
            // rustls takes what fits under its buffer limit (64 KiB).
            let k = self.tls.writer().write(&buf[n..])?;
            n += k;
            let drained = flush(self.tls, self.tcp, self.ready, self.wire)?;
            if n == buf.len() || (k == 0 && !drained) {
                break;
            }
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs.iter().filter(|b| !b.is_empty()) {
            match self.write(b) {
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && total > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        flush(self.tls, self.tcp, self.ready, self.wire).map(|_| ())
    }
}

impl<D> Shutdown for TlsClient<'_, D> {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        self.wire.shut_pending = true;
        flush(self.tls, self.tcp, self.ready, self.wire).map(|_| ())
    }
}

impl<D> AsFd for TlsClient<'_, D> {
    /// The socket's fd; never spliced ([`ClientIo::SPLICE`] is false).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tcp.as_fd()
    }
}

impl<D> ClientIo for TlsClient<'_, D> {
    const SPLICE: bool = false;
}
