//! Owns one direction of an HTTP exchange ([`Half`]): the bytes read from the
//! source and not yet forwarded, how many of them are cleared to go on
//! verbatim (body bytes the framing tracker has counted), and a rewritten
//! head (or an answer of lbctl's own) that goes out before them. Heads are
//! parsed in place from the front of the buffer; bodies are streamed, never
//! held whole: the buffer's fixed capacity is the back-pressure bound (a side
//! is not read while it is full). Writes send the head and the cleared body
//! bytes together: one `send` when a small body is copied behind its head,
//! else one `writev`. Both buffers come from the worker's
//! [`Pool`] and go back to it while the direction holds nothing (between
//! keep-alive requests), so an idle client holds no buffer memory and a
//! request allocates none.

use crate::worker::buffer::{Pool, Ready};
use std::io::{self, IoSlice, Read, Write};

/// Cleared body bytes up to this size are copied behind a pending head so
/// both go out in one plain `send` (see [`Half::write_to`]).
const COALESCE_MAX: usize = 1024;

/// One direction: source bytes, the cleared part, and a head to send first.
#[derive(Debug, Default)]
pub struct Half {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes from `start` cleared to be forwarded verbatim.
    pass: usize,
    /// A head (rewritten) or an answer to write before the cleared bytes.
    pub out: Vec<u8>,
    out_pos: usize,
    /// The source sent EOF.
    pub eof: bool,
    /// Bytes written to the destination so far.
    pub bytes: u64,
}

/// Makes `out` a head buffer from the pool when it has no capacity (the
/// direction held nothing), so writing a head does not regrow it.
pub fn head_room(out: &mut Vec<u8>, pool: &mut Pool) {
    if out.capacity() == 0 {
        *out = pool.take_head();
    }
}

impl Half {
    /// The bytes read and not yet classified (a head being parsed, or body
    /// bytes the framing tracker has not counted yet).
    pub fn unclassified(&self) -> &[u8] {
        self.buf
            .get(self.start + self.pass..self.end)
            .unwrap_or(&[])
    }

    /// Drops `n` classified bytes from the front of the unclassified part
    /// (a head that was parsed and rewritten into `out`). Only valid while
    /// nothing is cleared (`pass == 0`), which the session guarantees.
    pub fn consume(&mut self, n: usize) {
        debug_assert_eq!(self.pass, 0);
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Clears `n` more bytes of the unclassified part to go out verbatim.
    pub fn clear(&mut self, n: usize) {
        self.pass = (self.pass + n).min(self.end - self.start);
    }

    /// Clears everything read so far (a tunnel, or a body read until close).
    pub fn clear_all(&mut self) {
        self.pass = self.end - self.start;
    }

    /// Drops every unclassified byte (what a server sent past its response).
    pub fn discard_unclassified(&mut self) {
        self.end = self.start + self.pass;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops every byte read and not yet written (a lingering close reads
    /// and forgets).
    pub fn discard_all(&mut self) {
        self.start = 0;
        self.end = 0;
        self.pass = 0;
    }

    /// Nothing is waiting to be written.
    pub fn flushed(&self) -> bool {
        self.pass == 0 && self.out_pos >= self.out.len()
    }

    /// Nothing at all is held: no unwritten and no unclassified byte.
    pub fn empty(&self) -> bool {
        self.flushed() && self.start == self.end
    }

    /// Room left to read into (after compacting).
    pub fn room(&self, cap: usize) -> usize {
        cap.saturating_sub(self.end - self.start)
    }

    /// Reads once from `src` into the buffer (capacity `cap`); true when
    /// bytes or the EOF came in. The read flag is cleared on WouldBlock and
    /// after a short read (unless the peer's EOF or urgent data is pending,
    /// as in the TCP relay).
    pub fn read_from<R: Read>(
        &mut self,
        src: &mut R,
        ready: &mut Ready,
        cap: usize,
        pool: &mut Pool,
    ) -> io::Result<bool> {
        if self.eof || !ready.read {
            return Ok(false);
        }
        if self.buf.capacity() == 0 {
            self.buf = pool.take_bytes(cap);
        } else if self.buf.len() < cap {
            self.buf.resize(cap, 0);
        }
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let Some(space) = self.buf.get_mut(self.end..) else {
            return Ok(false);
        };
        if space.is_empty() {
            return Ok(false);
        }
        let want = space.len();
        let result = loop {
            match src.read(space) {
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
                if ready.urgent {
                } else if n < want && ready.fin {
                    self.eof = true;
                } else if n < want && !ready.read_closed {
                    ready.read = false;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.read = false;
                ready.urgent = false;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the head and the cleared bytes to `dst` (one `send` when the
    /// cleared bytes are few and were copied behind the head, else one
    /// `writev`); the
    /// bytes written, 0 when `dst` would block. Each byte written is also
    /// appended to `copy` when given (a retry's copy of the request).
    pub fn write_to<W: Write>(
        &mut self,
        dst: &mut W,
        ready: &mut Ready,
        copy: Option<&mut Vec<u8>>,
    ) -> io::Result<usize> {
        if self.flushed() || !ready.write {
            return Ok(0);
        }
        self.coalesce();
        let head = self.out.get(self.out_pos..).unwrap_or(&[]);
        let body = self
            .buf
            .get(self.start..self.start + self.pass)
            .unwrap_or(&[]);
        let want = head.len() + body.len();
        let result = loop {
            let r = if head.is_empty() {
                dst.write(body)
            } else if body.is_empty() {
                dst.write(head)
            } else {
                dst.write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match result {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let from_head = n.min(head.len());
                let from_body = n - from_head;
                if let Some(c) = copy {
                    c.extend_from_slice(&head[..from_head]);
                    c.extend_from_slice(&body[..from_body]);
                }
                self.out_pos += from_head;
                if self.out_pos >= self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                }
                self.start += from_body;
                self.pass -= from_body;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                self.bytes += n as u64;
                if n < want {
                    ready.write = false;
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.write = false;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// A small body already read with its head (a typical response) is
    /// moved behind the head in `out`, so the two go out with one plain
    /// `send` rather than a `writev`: the kernel's vectored path (iovec
    /// import, file-position lock) costs more than copying a few bytes.
    fn coalesce(&mut self) {
        if self.pass == 0 || self.pass > COALESCE_MAX || self.out_pos >= self.out.len() {
            return;
        }
        if let Some(body) = self.buf.get(self.start..self.start + self.pass) {
            self.out.extend_from_slice(body);
            self.start += self.pass;
            self.pass = 0;
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
        }
    }

    /// Puts `bytes` before everything still to be written (a retry resends
    /// what the failed server had been sent).
    pub fn resend(&mut self, bytes: Vec<u8>) {
        let rest = self.out.split_off(self.out_pos.min(self.out.len()));
        self.out = bytes;
        self.out.extend_from_slice(&rest);
        self.out_pos = 0;
    }

    /// The unclassified bytes (a head to parse) together with the head
    /// buffer its rewrite goes to: the parsed head borrows the first while
    /// it is written into the second.
    pub fn input_and_out(&mut self) -> (&[u8], &mut Vec<u8>) {
        let input = self
            .buf
            .get(self.start + self.pass..self.end)
            .unwrap_or(&[]);
        (input, &mut self.out)
    }

    /// Gives the buffers back to the pool when nothing is held (an idle
    /// keep-alive client holds none).
    pub fn shrink_if_empty(&mut self, pool: &mut Pool) {
        if self.empty() {
            self.release(pool);
        }
    }

    /// Gives the buffers back to the pool, whatever they hold (the
    /// connection is being dropped, or the direction is done with them).
    pub fn release(&mut self, pool: &mut Pool) {
        pool.give_bytes(std::mem::take(&mut self.buf));
        pool.give_head(std::mem::take(&mut self.out));
        self.start = 0;
        self.end = 0;
        self.pass = 0;
        self.out_pos = 0;
    }

    /// Forgets everything (the source is replaced, e.g. a new server).
    pub fn reset(&mut self) {
        let bytes = self.bytes;
        *self = Half {
            buf: std::mem::take(&mut self.buf),
            bytes,
            ..Half::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sink {
        out: Vec<u8>,
        cap: usize,
    }
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.cap == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.cap);
            self.out.extend_from_slice(&b[..n]);
            self.cap -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn ready() -> Ready {
        Ready {
            read: true,
            write: true,
            ..Ready::default()
        }
    }

    #[test]
    fn the_head_goes_before_the_cleared_body_bytes_and_unclassified_stay() {
        let mut h = Half::default();
        let mut src: &[u8] = b"HEADbodyNEXT";
        let mut r = ready();
        assert!(
            h.read_from(&mut src, &mut r, 64, &mut Pool::new())
                .expect("read")
        );
        h.consume(4);
        h.out.extend_from_slice(b"head\r\n");
        h.clear(4);
        assert_eq!(h.unclassified(), b"NEXT");
        let mut sink = Sink {
            out: Vec::new(),
            cap: usize::MAX,
        };
        let mut copy = Vec::new();
        // The sink's default write_vectored takes the first slice only: a
        // short write, after which the rest follows in order.
        while !h.flushed() {
            r.write = true;
            h.write_to(&mut sink, &mut r, Some(&mut copy))
                .expect("write");
        }
        assert_eq!(sink.out, b"head\r\nbody");
        assert_eq!(copy, b"head\r\nbody");
        assert!(h.flushed());
        assert_eq!(h.unclassified(), b"NEXT");
    }

    #[test]
    fn a_short_write_keeps_the_rest_in_order() {
        let mut h = Half::default();
        let mut src: &[u8] = b"0123456789";
        let mut r = ready();
        h.read_from(&mut src, &mut r, 64, &mut Pool::new())
            .expect("read");
        h.out.extend_from_slice(b"ab");
        h.clear_all();
        let mut sink = Sink {
            out: Vec::new(),
            cap: 5,
        };
        h.write_to(&mut sink, &mut r, None).expect("write");
        assert!(!r.write, "a short write means the socket is full");
        r.write = true;
        sink.cap = usize::MAX;
        h.write_to(&mut sink, &mut r, None).expect("write");
        assert_eq!(sink.out, b"ab0123456789");
        assert!(h.empty());
    }

    #[test]
    fn resend_puts_the_copy_before_what_is_still_pending() {
        let mut h = Half::default();
        h.out.extend_from_slice(b"rest");
        h.resend(b"sent-".to_vec());
        let mut r = ready();
        let mut sink = Sink {
            out: Vec::new(),
            cap: usize::MAX,
        };
        h.write_to(&mut sink, &mut r, None).expect("write");
        assert_eq!(sink.out, b"sent-rest");
    }

    #[test]
    fn an_emptied_half_gives_its_buffers_back_and_the_next_read_reuses_them() {
        let mut pool = Pool::new();
        let mut h = Half::default();
        let mut r = ready();
        let mut src: &[u8] = b"GET";
        h.read_from(&mut src, &mut r, 64, &mut pool).expect("read");
        let at = h.buf.as_ptr();
        h.consume(3);
        h.shrink_if_empty(&mut pool);
        assert_eq!(h.buf.capacity(), 0, "an idle direction holds no buffer");
        let mut src: &[u8] = b"NEXT";
        r.read = true;
        h.read_from(&mut src, &mut r, 64, &mut pool).expect("read");
        assert_eq!(h.buf.as_ptr(), at);
        assert_eq!(h.unclassified(), b"NEXT");
    }

    #[test]
    fn a_full_buffer_is_not_read_into() {
        let mut h = Half::default();
        let mut src: &[u8] = b"abcdefgh";
        let mut r = ready();
        h.read_from(&mut src, &mut r, 4, &mut Pool::new())
            .expect("read");
        assert_eq!(h.unclassified(), b"abcd");
        assert!(
            !h.read_from(&mut src, &mut r, 4, &mut Pool::new())
                .expect("read")
        );
        assert_eq!(h.room(4), 0);
    }
}
