//! Owns the HTTP/1.1 framing shared by the test backend and the test client:
//! a buffered [`Wire`] that keeps bytes read past one message (pipelining),
//! body readers by length, chunked (decoded) or until close, chunked encoding
//! with varied chunk sizes, and header token lookups.

use std::io::{self, Read};

/// The longest request or response head either side accepts.
pub const MAX_HEAD: usize = 64 * 1024;

/// The longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// A reader that keeps what it has read but not yet consumed, so the bytes of
/// the next pipelined message (or of an upgraded stream) are never lost.
#[derive(Debug)]
pub struct Wire<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> Wire<R> {
    pub fn new(inner: R) -> Wire<R> {
        Wire {
            inner,
            buf: Vec::new(),
        }
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Bytes read and not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads once more into the buffer; returns how many bytes came (0 at EOF).
    pub fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = loop {
            match self.inner.read(&mut chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Removes and returns the first `n` buffered bytes.
    pub fn consume(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n.min(self.buf.len()));
        std::mem::replace(&mut self.buf, rest)
    }

    /// Removes and returns everything buffered.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Reads exactly `n` bytes (buffered ones first).
    pub fn read_exact_vec(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        self.read_length(n as u64, &mut |b| out.extend_from_slice(b))?;
        Ok(out)
    }

    /// Passes exactly `n` body bytes to `sink`, failing on an early EOF.
    pub fn read_length(&mut self, n: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let mut left = n;
        while left > 0 {
            if self.buf.is_empty() && self.fill()? == 0 {
                return Err(unexpected_eof(format!("{left} of {n} body bytes missing")));
            }
            let take = (self.buf.len() as u64).min(left) as usize;
            sink(&self.buf[..take]);
            self.buf.drain(..take);
            left -= take as u64;
        }
        Ok(())
    }

    /// Passes every byte until EOF to `sink`.
    pub fn read_until_close(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        loop {
            if !self.buf.is_empty() {
                sink(&self.buf);
                self.buf.clear();
            }
            if self.fill()? == 0 {
                return Ok(());
            }
        }
    }

    /// Decodes a chunked body into `sink`, then reads the trailer section.
    /// Returns the trailer lines (usually none).
    pub fn read_chunked(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<Vec<String>> {
        loop {
            let line = self.read_line()?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                break;
            }
            self.read_length(size, sink)?;
            let end = self.read_line()?;
            if !end.is_empty() {
                return Err(invalid(format!("chunk not followed by CRLF: {end:?}")));
            }
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                return Ok(trailers);
            }
            trailers.push(line);
        }
    }

    /// Reads one line ending in LF (CR before it dropped), without the ending.
    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line = self.consume(pos + 1);
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return String::from_utf8(line).map_err(|_| invalid("non-UTF-8 chunk line".into()));
            }
            if self.buf.len() > MAX_LINE {
                return Err(invalid(format!("chunk line longer than {MAX_LINE} bytes")));
            }
            if self.fill()? == 0 {
                return Err(unexpected_eof("EOF inside a chunked body".into()));
            }
        }
    }
}

/// How a message's body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// The framing that the headers announce; `None` when neither
/// Transfer-Encoding nor Content-Length is present (the caller decides what
/// that means: no body for a request, until close for a response).
pub fn framing_of(headers: &[(String, String)]) -> io::Result<Option<Framing>> {
    if let Some(te) = header(headers, "transfer-encoding") {
        let last = te.rsplit(',').next().unwrap_or("").trim();
        return if last.eq_ignore_ascii_case("chunked") {
            Ok(Some(Framing::Chunked))
        } else {
            Ok(Some(Framing::UntilClose))
        };
    }
    match header(headers, "content-length") {
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(|n| Some(Framing::Length(n)))
            .map_err(|_| invalid(format!("bad Content-Length {v:?}"))),
        None => Ok(None),
    }
}

/// Reads a body with the given framing into `sink`.
pub fn read_body<R: Read>(
    wire: &mut Wire<R>,
    framing: Framing,
    sink: &mut dyn FnMut(&[u8]),
) -> io::Result<()> {
    match framing {
        Framing::None => Ok(()),
        Framing::Length(n) => wire.read_length(n, sink),
        Framing::Chunked => wire.read_chunked(sink).map(|_| ()),
        Framing::UntilClose => wire.read_until_close(sink),
    }
}

/// The first value of header `name` (case-insensitive); values of repeated
/// headers are joined with ", ".
pub fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    if values.is_empty() {
        None
    } else {
        Some(values.join(", "))
    }
}

/// Whether header `name` lists `token` (comma-separated, case-insensitive),
/// as in `Connection: keep-alive, Upgrade`.
pub fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    header(headers, name)
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Header pairs from httparse, values as (lossy) text.
pub fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// Deterministic chunk sizes in `1..=max`, varied (small and large), distinct per seed.
#[derive(Debug, Clone)]
pub struct ChunkSizes {
    x: u64,
    max: usize,
}

impl ChunkSizes {
    pub fn new(seed: u64, max: usize) -> ChunkSizes {
        ChunkSizes {
            x: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            max: max.max(1),
        }
    }
}

impl Iterator for ChunkSizes {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        self.x ^= self.x >> 12;
        self.x ^= self.x << 25;
        self.x ^= self.x >> 27;
        let r = self.x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 16;
        // One in four chunks is tiny, so both 1-byte and 64 KiB chunks occur.
        let cap = if r.is_multiple_of(4) {
            16.min(self.max)
        } else {
            self.max
        };
        Some(1 + (r >> 2) as usize % cap)
    }
}

/// One chunk's framing: hex size, CRLF, data, CRLF.
pub fn chunk_frame(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The last chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// `data` as a whole chunked body (chunks of varied sizes up to `max_chunk`),
/// last chunk included.
pub fn encode_chunked(data: &[u8], max_chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 16);
    let mut rest = data;
    let mut sizes = ChunkSizes::new(data.len() as u64, max_chunk);
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).min(rest.len());
        out.extend_from_slice(&chunk_frame(&rest[..n]));
        rest = &rest[n..];
    }
    out.extend_from_slice(LAST_CHUNK);
    out
}

pub fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn unexpected_eof(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg)
}
