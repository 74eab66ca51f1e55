//! Owns the per-direction relay buffer ([`Pipe`]): a fixed-capacity byte
//! buffer taken from a per-worker [`Pool`] when data arrives and given back
//! as soon as it is empty, so an idle connection holds no buffer memory and
//! the data path allocates nothing in the steady state. The fixed capacity is
//! the back-pressure bound: a side is not read while its peer's buffer is full.

use std::io::{self, Read, Write};

/// Bytes buffered per direction at most.
pub const BUF_SIZE: usize = 16 * 1024;

type Block = Box<[u8; BUF_SIZE]>;

/// Free buffers of one worker.
#[derive(Debug, Default)]
pub struct Pool {
    free: Vec<Block>,
}

/// Free buffers kept for reuse at most (the rest are freed).
const POOL_KEEP: usize = 256;

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool::default()
    }

    fn take(&mut self) -> Block {
        self.free.pop().unwrap_or_else(|| Box::new([0u8; BUF_SIZE]))
    }

    fn give(&mut self, b: Block) {
        if self.free.len() < POOL_KEEP {
            self.free.push(b);
        }
    }
}

/// One direction of a relayed connection.
#[derive(Debug, Default)]
pub struct Pipe {
    buf: Option<Block>,
    start: usize,
    end: usize,
    /// The source sent EOF.
    pub eof: bool,
    /// EOF was forwarded to the destination (shutdown(Write)).
    pub shut: bool,
    /// Bytes moved so far.
    pub bytes: u64,
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
        self.end - self.start
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
        src_ready: &mut bool,
        dst: &mut W,
        dst_ready: &mut bool,
        pool: &mut Pool,
    ) -> io::Result<Flow> {
        let mut flow = Flow::Idle;
        loop {
            let mut progress = false;
            if self.pending() > 0 && *dst_ready {
                let buf = match &self.buf {
                    Some(b) => &b[self.start..self.end],
                    None => &[][..],
                };
                match dst.write(buf) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.start += n;
                        self.bytes += n as u64;
                        progress = true;
                        if self.start == self.end {
                            self.start = 0;
                            self.end = 0;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => *dst_ready = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            if !self.eof && *src_ready && self.end < BUF_SIZE {
                let buf = self.buf.get_or_insert_with(|| pool.take());
                match src.read(&mut buf[self.end..]) {
                    Ok(0) => {
                        self.eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        self.end += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => *src_ready = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            if progress {
                flow = Flow::Moved;
            } else {
                break;
            }
        }
        if self.pending() == 0 {
            if let Some(b) = self.buf.take() {
                pool.give(b);
            }
            if self.eof && !self.shut {
                self.shut = true;
                // A peer that is already gone makes this fail; the other
                // direction reports that error itself.
                let _ = dst.shutdown_write();
            }
        }
        Ok(flow)
    }

    /// Returns the buffer to the pool (the connection is closing).
    pub fn release(&mut self, pool: &mut Pool) {
        if let Some(b) = self.buf.take() {
            pool.give(b);
        }
        self.start = 0;
        self.end = 0;
    }
}

/// Half-close of a stream's write side.
pub trait Shutdown {
    /// `shutdown(SHUT_WR)`.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Shutdown for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

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
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(self.input.len()).min(5000);
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

    #[test]
    fn pipe_stops_reading_when_the_destination_is_full() {
        let mut pool = Pool::new();
        let mut src = Fake {
            input: vec![7; 100_000],
            ..Fake::default()
        };
        let mut dst = Fake::default();
        let (mut sr, mut dr) = (true, true);
        let mut p = Pipe::default();
        p.pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        // Destination took nothing: exactly one buffer was read, no more.
        assert_eq!(src.input.len(), 100_000 - BUF_SIZE);
        assert!(sr, "source is still readable: it was not drained");
        assert!(!dr);
        dst.write_budget = usize::MAX;
        dr = true;
        src.eof = true;
        p.pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert_eq!(dst.out.len(), 100_000);
        assert!(dst.shut && p.done());
        assert_eq!(p.bytes, 100_000);
        assert!(p.buf.is_none(), "an empty pipe holds no buffer");
    }

    #[test]
    fn pipe_forwards_eof_only_after_pending_bytes() {
        let mut pool = Pool::new();
        let mut src = Fake {
            input: b"hello".to_vec(),
            eof: true,
            ..Fake::default()
        };
        let mut dst = Fake {
            write_budget: 2,
            ..Fake::default()
        };
        let (mut sr, mut dr) = (true, true);
        let mut p = Pipe::default();
        p.pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert!(p.eof && !dst.shut);
        dst.write_budget = 10;
        dr = true;
        p.pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pool)
            .expect("pump");
        assert_eq!(dst.out, b"hello");
        assert!(dst.shut);
    }
}
