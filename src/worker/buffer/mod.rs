//! Owns the per-direction relay buffer ([`Pipe`]): a fixed-capacity byte
//! buffer taken from a per-worker [`Pool`] when data arrives and given back
//! as soon as it is empty, so an idle connection holds no buffer memory and
//! the data path allocates nothing in the steady state. The fixed capacity is
//! the back-pressure bound: a side is not read while its peer's buffer is full.
//!
//! Bulk transfers switch to `splice(2)` through a kernel pipe (also pooled):
//! once one read fills the whole buffer, the direction is "bulk", and as soon
//! as its buffer is empty the bytes go socket → pipe → socket without being
//! copied through user space. Small messages stay on plain read/write, which
//! costs less per message (measured: about 8% less CPU per keep-alive request
//! than splice), and a direction goes back to read/write once a burst ends
//! small. Spliced bytes carry SPLICE_F_MORE only while the source has more,
//! and a burst that ends corked is pushed at once (a short tail would
//! otherwise wait for a ~200 ms probe timer).
//!
//! Each pump call spends from a byte budget, so one fast connection cannot
//! hold the worker's loop: the caller resumes it after the other events.
//!
//! Readiness is edge-triggered: a flag is cleared on WouldBlock, and also
//! after a short read or write (the socket is then known to be drained or
//! full, so the syscall that would return WouldBlock is skipped) — except
//! when the peer's EOF is already pending, which must still be read.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

/// Bytes buffered per direction at most.
pub const BUF_SIZE: usize = 16 * 1024;

type Block = Box<[u8; BUF_SIZE]>;

/// Edge-triggered readiness of one socket.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ready {
    /// A read may return data (or EOF).
    pub read: bool,
    /// A write may be accepted.
    pub write: bool,
    /// The peer's EOF (or an error) is pending: keep reading until it shows.
    pub read_closed: bool,
    /// The peer's FIN had arrived when epoll reported it (no error): every
    /// byte before it was already queued, so a short read reached the EOF
    /// and the read that would return 0 is skipped.
    pub fin: bool,
    /// Urgent (out-of-band) data is pending (EPOLLPRI): recv(2) stops short
    /// at the urgent mark, so a short read proves neither "drained" nor
    /// "EOF"; read on until WouldBlock or 0. The urgent byte itself is not
    /// relayed (no SO_OOBINLINE), as with HAProxy and nginx.
    pub urgent: bool,
}

/// One direction of a relayed connection.
#[derive(Debug, Default)]
pub struct Pipe {
    buf: Option<Block>,
    start: usize,
    end: usize,
    /// A read once filled the whole buffer: use splice when empty.
    bulk: bool,
    /// The kernel pipe while splicing, and bytes in it.
    spliced: Option<(OwnedFd, OwnedFd)>,
    in_pipe: usize,
    /// The source sent EOF.
    pub eof: bool,
    /// EOF was forwarded to the destination (shutdown(Write)).
    pub shut: bool,
    /// Bytes moved so far.
    pub bytes: u64,
    /// Never splice (one side is TLS: its socket carries records).
    pub no_splice: bool,
    /// The other direction is finished: EOF here ends the connection, whose
    /// close sends the FIN, so the shutdown(2) call is skipped.
    pub last: bool,
}

/// What one pump step reported.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Flow {
    /// Nothing more can happen until a readiness change.
    Idle,
    /// Bytes moved.
    Moved,
}

impl Pipe {
    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.end - self.start + self.in_pipe
    }

    /// True when the next pump should use splice.
    pub fn splicing(&self) -> bool {
        self.spliced.is_some() || (self.bulk && self.end == self.start)
    }

    /// True once EOF was read and forwarded: this direction is finished.
    pub fn done(&self) -> bool {
        self.shut
    }

    /// Moves bytes from `src` to `dst` until both would block, the buffer is
    /// full and `dst` blocks, or EOF is forwarded. `src_ready`/`dst_ready` are
    /// the edge-triggered readiness flags, cleared on WouldBlock. A peer's
    /// error is returned (the caller closes the connection).
    pub fn pump<R: Read, W: Write + Shutdown>(
        &mut self,
        src: &mut R,
        src_ready: &mut Ready,
        dst: &mut W,
        dst_ready: &mut Ready,
        pool: &mut Pool,
        budget: &mut usize,
    ) -> io::Result<Flow> {
        let mut flow = Flow::Idle;
        while *budget > 0 {
            let mut progress = false;
            if self.end > self.start && dst_ready.write {
                let n = self.write_step(dst, dst_ready)?;
                if n > 0 {
                    *budget = budget.saturating_sub(n);
                    progress = true;
                }
            }
            if !self.eof && src_ready.read && self.end < BUF_SIZE && !self.splicing() {
                progress |= self.read_step(src, src_ready, pool)?;
            }
            if progress {
                flow = Flow::Moved;
            } else {
                break;
            }
        }
        self.finish_step(dst, pool);
        Ok(flow)
    }

    /// One read into the buffer; true when bytes or the EOF came in.
    fn read_step<R: Read>(
        &mut self,
        src: &mut R,
        src_ready: &mut Ready,
        pool: &mut Pool,
    ) -> io::Result<bool> {
        let buf = self.buf.get_or_insert_with(|| pool.take());
        let want = BUF_SIZE - self.end;
        let result = loop {
            match src.read(&mut buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match result {
            Ok(0) => {
                self.eof = true;
                Ok(true)
            }
            Ok(n) => {
                self.end += n;
                if n == BUF_SIZE && !self.no_splice {
                    self.bulk = true;
                }
                if src_ready.urgent {
                    // Possibly stopped at the urgent mark: read on.
                } else if n < want && src_ready.fin {
                    // Short read with the FIN already queued behind the
                    // data: that is the EOF.
                    self.eof = true;
                } else if n < want && !src_ready.read_closed {
                    // Short read: the socket is drained; a new arrival
                    // raises a new edge.
                    src_ready.read = false;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                src_ready.read = false;
                src_ready.urgent = false;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// One write of the buffered bytes; 0 when `dst` would block. The
    /// write flag is cleared on WouldBlock and after a short write (the send
    /// buffer is full). With the source's EOF already read, these are the
    /// last bytes before the shutdown that `finish_step` makes in the same
    /// turn: written so that the FIN leaves with them (one segment, not
    /// two; [`Shutdown::write_before_fin`]). Not when `last`: the close
    /// that ends the connection sends that FIN.
    fn write_step<W: Write + Shutdown>(
        &mut self,
        dst: &mut W,
        dst_ready: &mut Ready,
    ) -> io::Result<usize> {
        let buf = match &self.buf {
            Some(b) => &b[self.start..self.end],
            None => &[][..],
        };
        let want = buf.len();
        let before_fin = self.eof && !self.last && self.in_pipe == 0;
        loop {
            let written = match before_fin.then(|| dst.write_before_fin(buf)).flatten() {
                Some(r) => r,
                None => dst.write(buf),
            };
            return match written {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.start += n;
                    self.bytes += n as u64;
                    if n < want {
                        dst_ready.write = false;
                    }
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                    }
                    Ok(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    dst_ready.write = false;
                    Ok(0)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Returns idle resources and forwards EOF once everything is written.
    fn finish_step<W: Shutdown>(&mut self, dst: &mut W, pool: &mut Pool) {
        if self.pending() == 0 {
            if let Some(b) = self.buf.take() {
                pool.give(b);
            }
            if let Some(p) = self.spliced.take() {
                pool.give_pipe(p);
            }
            if self.eof && !self.shut {
                self.shut = true;
                if !self.last {
                    // A peer that is already gone makes this fail; the other
                    // direction reports that error itself.
                    let _ = dst.shutdown_write();
                }
            }
        }
    }

    /// Moves bytes by splice while the direction is bulk, else by copy; a
    /// direction that leaves splice during the turn (a small burst, urgent
    /// data) goes on by copy at once.
    pub fn transfer<S, D>(
        &mut self,
        src: &mut S,
        src_ready: &mut Ready,
        dst: &mut D,
        dst_ready: &mut Ready,
        pool: &mut Pool,
        budget: &mut usize,
    ) -> io::Result<Flow>
    where
        S: Read + AsFd + Shutdown,
        D: Write + AsFd + Shutdown,
    {
        let mut flow = Flow::Idle;
        if self.splicing() {
            flow = self.pump_splice(&*src, src_ready, dst, dst_ready, pool, budget)?;
            if self.splicing() {
                return Ok(flow);
            }
        }
        let copied = self.pump(src, src_ready, dst, dst_ready, pool, budget)?;
        Ok(if copied == Flow::Moved { copied } else { flow })
    }

    /// Returns the buffer to the pool (the connection is closing). A pipe
    /// still holding bytes is closed, not pooled.
    pub fn release(&mut self, pool: &mut Pool) {
        if let Some(b) = self.buf.take() {
            pool.give(b);
        }
        if let Some(p) = self.spliced.take()
            && self.in_pipe == 0
        {
            pool.give_pipe(p);
        }
        self.start = 0;
        self.end = 0;
        self.in_pipe = 0;
    }
}

/// Half-close of a stream's write side.
pub trait Shutdown {
    /// `shutdown(SHUT_WR)`.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Writes `buf`, the last bytes before a `shutdown_write` that follows
    /// at once: a TCP socket holds a short last segment back (MSG_MORE)
    /// for the FIN to join it. `None` where the stream has no such write
    /// (TLS carries records); the caller then writes plainly.
    fn write_before_fin(&mut self, _buf: &[u8]) -> Option<io::Result<usize>> {
        None
    }
}

impl Shutdown for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }

    fn write_before_fin(&mut self, buf: &[u8]) -> Option<io::Result<usize>> {
        let flags = nix::libc::MSG_MORE | nix::libc::MSG_NOSIGNAL;
        Some(socket2::SockRef::from(&*self).send_with_flags(buf, flags))
    }
}

mod pool;
mod splice;

pub use pool::{PIPE_CAP, Pool};

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake socket: reads from `input` in chunks, accepts `cap` bytes per
    /// write call, would-block when exhausted.
    #[derive(Default)]
    struct Fake {
        input: Vec<u8>,
        eof: bool,
        out: Vec<u8>,
        write_budget: usize,
        shut: bool,
        reads: usize,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.input.is_empty() {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Ok(n)
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.write_budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.write_budget);
            self.out.extend_from_slice(&buf[..n]);
            self.write_budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shutdown for Fake {
        fn shutdown_write(&mut self) -> io::Result<()> {
            self.shut = true;
            Ok(())
        }
    }

    /// A pipe between two fake sockets, with their readiness flags.
    struct Rig {
        pool: Pool,
        src: Fake,
        dst: Fake,
        sr: Ready,
        dr: Ready,
        p: Pipe,
    }

    impl Rig {
        fn new(input: &[u8], eof: bool, write_budget: usize) -> Rig {
            let ready = Ready {
                read: true,
                write: true,
                ..Ready::default()
            };
            Rig {
                pool: Pool::new(),
                src: Fake {
                    input: input.to_vec(),
                    eof,
                    ..Fake::default()
                },
                dst: Fake {
                    write_budget,
                    ..Fake::default()
                },
                sr: ready,
                dr: ready,
                p: Pipe::default(),
            }
        }

        fn pump_with(&mut self, mut budget: usize) -> usize {
            self.p
                .pump(
                    &mut self.src,
                    &mut self.sr,
                    &mut self.dst,
                    &mut self.dr,
                    &mut self.pool,
                    &mut budget,
                )
                .expect("pump");
            budget
        }

        fn pump(&mut self) {
            self.pump_with(usize::MAX);
        }
    }

    #[test]
    fn pipe_stops_when_the_turn_budget_is_spent() {
        let mut r = Rig::new(&[3; 100_000], false, usize::MAX);
        assert_eq!(r.pump_with(4_000), 0);
        assert!(r.sr.read, "work is left: the readiness flag is kept");
        assert_eq!(r.dst.out.len(), BUF_SIZE, "one buffer, then the turn ended");
    }

    #[test]
    fn pipe_stops_reading_when_the_destination_is_full() {
        let mut r = Rig::new(&[7; 100_000], false, 0);
        r.pump();
        // Destination took nothing: exactly one buffer was read, no more.
        assert_eq!(r.src.input.len(), 100_000 - BUF_SIZE);
        assert!(r.sr.read, "source is still readable: it was not drained");
        assert!(!r.dr.write);
        r.dst.write_budget = usize::MAX;
        r.dr.write = true;
        r.pump();
        assert_eq!(r.dst.out.len(), BUF_SIZE);
        assert!(r.p.splicing(), "a full read marks the direction as bulk");
        assert!(r.p.buf.is_none(), "an empty pipe holds no buffer");
    }

    #[test]
    fn pipe_skips_the_read_after_a_short_one_unless_eof_is_pending() {
        let mut r = Rig::new(&[1; 100], true, usize::MAX);
        r.pump();
        assert_eq!(r.dst.out.len(), 100);
        assert!(!r.sr.read && !r.p.eof, "EOF not read: no read was wasted");
        r.sr.read = true;
        r.sr.read_closed = true;
        r.src.input = vec![2; 50];
        r.pump();
        assert!(
            r.p.eof && r.dst.shut,
            "a pending EOF is read after a short read"
        );
        assert_eq!(r.p.bytes, 150);
    }

    #[test]
    fn pipe_takes_a_short_read_after_a_fin_as_the_eof() {
        let mut r = Rig::new(&[1; 100], true, usize::MAX);
        r.sr.read_closed = true;
        r.sr.fin = true;
        r.pump();
        assert!(r.p.eof && r.dst.shut, "EOF forwarded");
        assert_eq!(r.src.reads, 1, "no read was spent on the EOF");
        assert_eq!(r.dst.out.len(), 100);
    }

    #[test]
    fn pipe_reads_on_after_a_full_read_even_with_a_fin() {
        let mut r = Rig::new(&[1; BUF_SIZE + 10], true, 0);
        r.sr.read_closed = true;
        r.sr.fin = true;
        r.pump();
        assert!(!r.p.eof, "a read that filled the buffer is not the EOF");
        assert!(r.sr.read, "bytes before the FIN are still to be read");
    }

    #[test]
    fn pipe_forwards_eof_only_after_pending_bytes() {
        let mut r = Rig::new(b"hello", true, 2);
        r.sr.read_closed = true;
        r.pump();
        assert!(r.p.eof && !r.dst.shut);
        r.dst.write_budget = 10;
        r.dr.write = true;
        r.pump();
        assert_eq!(r.dst.out, b"hello");
        assert!(r.dst.shut);
    }

    /// Real loopback sockets: the sender's FIN is queued (epoll reports
    /// EPOLLIN|EPOLLRDHUP, no error, so `fin` is set as Conn::on_event
    /// does), but an urgent byte in the middle makes recv(2) stop short at
    /// the urgent mark. That short read is not the EOF.
    #[test]
    fn a_short_read_at_the_urgent_mark_is_not_the_eof() {
        use mio::{Events, Interest, Poll, Token};
        use std::net::{TcpListener, TcpStream};
        let l = TcpListener::bind("127.0.0.1:0").expect("socket setup");
        let client = socket2::Socket::from(
            TcpStream::connect(l.local_addr().expect("socket setup")).expect("socket setup"),
        );
        let (server, _) = l.accept().expect("socket setup");
        server.set_nonblocking(true).expect("socket setup");
        let mut server = mio::net::TcpStream::from_std(server);
        let mut poll = Poll::new().expect("socket setup");
        poll.registry()
            .register(
                &mut server,
                Token(1),
                Interest::READABLE | Interest::PRIORITY,
            )
            .expect("socket setup");
        client.send(b"abc").expect("socket setup");
        client.send_out_of_band(b"X").expect("socket setup");
        client.send(b"def").expect("socket setup");
        client
            .shutdown(std::net::Shutdown::Write)
            .expect("socket setup");
        let mut sr = Ready::default();
        let mut events = Events::with_capacity(8);
        while !sr.read_closed {
            poll.poll(&mut events, None).expect("socket setup");
            for ev in events.iter() {
                sr.read |= ev.is_readable() || ev.is_read_closed();
                sr.read_closed |= ev.is_read_closed() || ev.is_error();
                sr.fin |= ev.is_read_closed() && !ev.is_error();
                sr.urgent |= ev.is_priority();
            }
        }
        assert!(sr.fin);
        let mut dst = Fake {
            write_budget: usize::MAX,
            ..Fake::default()
        };
        let mut dr = Ready {
            read: true,
            write: true,
            ..Ready::default()
        };
        let mut p = Pipe::default();
        let mut pool = Pool::new();
        let mut budget = usize::MAX;
        while !p.shut {
            p.pump(
                &mut server,
                &mut sr,
                &mut dst,
                &mut dr,
                &mut pool,
                &mut budget,
            )
            .expect("socket setup");
        }
        assert_eq!(
            String::from_utf8_lossy(&dst.out),
            "abcdef",
            "bytes after the urgent mark were dropped (EOF forwarded early)"
        );
    }
}
