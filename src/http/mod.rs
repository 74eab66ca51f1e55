//! Owns the pure HTTP/1.1 message-framing layer the `mode = "http"` session
//! is built on: bytes in, decisions out, with no I/O, no sockets and no mio.
//!
//! - [`parse_request`] / [`parse_response`] turn the bytes of a head into a
//!   [`RequestHead`] / [`ResponseHead`] borrowed from them, copying no field
//!   (or `Ok(None)`: more bytes needed),
//!   refusing what could desynchronise us from the peer (request smuggling,
//!   response splitting) with a [`HeadError`] that carries the status to
//!   answer.
//! - [`BodyTracker`] (over [`ChunkedScanner`] for chunked bodies) says how many
//!   of the bytes that follow a head belong to its body and when it ends; the
//!   body itself is forwarded verbatim, never decoded.
//! - [`write_request`] / [`write_response`] serialize a head for forwarding:
//!   hop-by-hop fields removed, `X-Forwarded-*` / `Forwarded` added.
//! - [`error_response`] is the canned response lbctl answers by itself.
//!
//! Nothing here panics on any input: every index is bounds-checked and every
//! length is checked arithmetic, so the parsers can be fuzzed as they are.

mod body;
mod chunked;
mod errors;
mod fields;
mod request;
mod response;
mod rewrite;

pub use body::BodyTracker;
pub use chunked::{ChunkError, ChunkedScanner, Scan};
pub use errors::{error_response, reason_phrase};
pub use fields::{Field, SpareFields};
pub use request::{RequestHead, parse_request, parse_request_in};
pub use response::{ResponseHead, parse_response, parse_response_in};
pub use rewrite::{Forwarding, write_request, write_response};

use std::fmt;

/// The protocol version of a message (HTTP/1.0 or HTTP/1.1; anything else is
/// refused by the parsers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`: connections close after each message unless asked.
    Http10,
    /// `HTTP/1.1`: connections persist unless `Connection: close`.
    Http11,
}

impl Version {
    /// The version as written on a start line.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// Bounds on a head, applied by both parsers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a whole head (start line, fields, final CRLF) at most; more is
    /// 431 for a request, 502 for a response. Default 16 KiB.
    pub header_bytes: usize,
    /// Header fields per head at most; more is 431 (502 for a response).
    /// Default 100.
    pub headers: usize,
    /// Bytes of a request-target at most; more is 414. Default 8 KiB.
    pub uri_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_bytes: 16 * 1024,
            headers: 100,
            uri_bytes: 8 * 1024,
        }
    }
}

/// How the body that follows a head is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body: the next message starts right after the head.
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`: ends after the last chunk and trailers.
    Chunked,
    /// Responses only: the body runs until the server closes the connection,
    /// so neither side's connection can be reused.
    UntilClose,
}

/// A head that cannot be forwarded, with the status to answer the client:
/// 400, 414 or 431 for a request, 502 for a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadError {
    /// The HTTP status to answer with.
    pub status: u16,
    /// What was wrong, for the log.
    pub reason: &'static str,
}

impl HeadError {
    pub(crate) const fn new(status: u16, reason: &'static str) -> Self {
        HeadError { status, reason }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status,
            reason_phrase(self.status),
            self.reason
        )
    }
}

impl std::error::Error for HeadError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_are_16k_of_head_100_fields_and_8k_of_uri() {
        let l = Limits::default();
        assert_eq!((l.header_bytes, l.headers, l.uri_bytes), (16384, 100, 8192));
    }

    #[test]
    fn head_error_displays_status_phrase_and_reason() {
        let e = HeadError::new(431, "too many header fields");
        assert_eq!(
            e.to_string(),
            "431 Request Header Fields Too Large: too many header fields"
        );
    }
}
