//! Owns message framing for every unix-socket conversation lbctl has (the
//! control socket and the master↔worker channels): one JSON object per line,
//! a maximum line length checked before buffering more, and non-blocking
//! buffered reads and writes for use inside a mio loop.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{self, Read, Write};

/// Longest line accepted from a control client (64 KiB).
pub const MAX_LINE: usize = 64 * 1024;

/// Longest line accepted from a worker (its `connections` answer lists
/// every connection it holds: ~150 bytes each).
pub const MAX_WORKER_LINE: usize = 256 * 1024 * 1024;

/// A non-blocking, line-framed JSON connection.
#[derive(Debug)]
pub struct LineConn<S> {
    stream: S,
    rbuf: Vec<u8>,
    /// Bytes of `rbuf` already known to hold no newline.
    scanned: usize,
    wbuf: Vec<u8>,
    max_line: usize,
}

/// What reading produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The peer is still there.
    Open,
    /// The peer closed its side (or the connection failed).
    Closed,
    /// The peer sent a line longer than allowed; the connection is unusable.
    TooLong,
}

impl<S: Read + Write> LineConn<S> {
    /// Wraps a non-blocking stream.
    pub fn new(stream: S, max_line: usize) -> LineConn<S> {
        LineConn {
            stream,
            rbuf: Vec::new(),
            scanned: 0,
            wbuf: Vec::new(),
            max_line,
        }
    }

    /// The underlying stream (to register it with mio).
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Reads until WouldBlock and decodes every complete line into `out`
    /// (a line that is not a valid `T` becomes `Err(message)`).
    pub fn read_msgs<T: DeserializeOwned>(
        &mut self,
        out: &mut Vec<Result<T, String>>,
    ) -> ReadOutcome {
        self.read_some(out, usize::MAX)
    }

    /// Like [`LineConn::read_msgs`], but stops reading once `limit`
    /// messages were decoded (a client that floods lines is not drained).
    pub fn read_some<T: DeserializeOwned>(
        &mut self,
        out: &mut Vec<Result<T, String>>,
        limit: usize,
    ) -> ReadOutcome {
        let mut chunk = [0u8; 64 * 1024];
        let mut outcome = ReadOutcome::Open;
        while out.len() < limit {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    outcome = ReadOutcome::Closed;
                    break;
                }
                Ok(n) => {
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    self.take_lines(out);
                    if self.rbuf.len() > self.max_line {
                        return ReadOutcome::TooLong;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    outcome = ReadOutcome::Closed;
                    break;
                }
            }
        }
        outcome
    }

    fn take_lines<T: DeserializeOwned>(&mut self, out: &mut Vec<Result<T, String>>) {
        let mut start = 0;
        // Only bytes not scanned before are searched: a long line arriving
        // in many chunks costs linear time, not quadratic.
        let mut from = self.scanned;
        while let Some(pos) = self.rbuf[from..].iter().position(|&b| b == b'\n') {
            let end = from + pos;
            let line = &self.rbuf[start..end];
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push(serde_json::from_slice(line).map_err(|e| e.to_string()));
            }
            start = end + 1;
            from = start;
        }
        self.rbuf.drain(..start);
        self.scanned = self.rbuf.len();
    }

    /// Queues a message and writes as much as the socket takes.
    pub fn send<T: Serialize>(&mut self, msg: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.wbuf, msg).map_err(io::Error::other)?;
        self.wbuf.push(b'\n');
        self.flush().map(|_| ())
    }

    /// Writes queued bytes until done or WouldBlock; true when all are written.
    pub fn flush(&mut self) -> io::Result<bool> {
        while !self.wbuf.is_empty() {
            match self.stream.write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// True while queued bytes wait for the socket.
    pub fn has_pending_writes(&self) -> bool {
        !self.wbuf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn line_conn_round_trips_messages_and_rejects_long_lines() {
        let (a, b) = UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nb");
        b.set_nonblocking(true).expect("nb");
        let mut a = LineConn::new(a, 64);
        let mut b = LineConn::new(b, 64);
        a.send(&vec![1, 2, 3]).expect("send");
        a.send(&"x").expect("send");
        let mut got: Vec<Result<Vec<u32>, String>> = Vec::new();
        assert_eq!(b.read_msgs(&mut got), ReadOutcome::Open);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Ok(vec![1, 2, 3]));
        assert!(got[1].is_err());
        a.stream_mut().write_all(&[b'1'; 100]).expect("write");
        assert_eq!(b.read_msgs(&mut got), ReadOutcome::TooLong);
        drop(a);
        let mut c = LineConn::new(b.stream, 64);
        c.rbuf.clear();
        let mut none: Vec<Result<u8, String>> = Vec::new();
        assert_eq!(c.read_msgs(&mut none), ReadOutcome::Closed);
    }
}
