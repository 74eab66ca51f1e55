//! Owns the probe kinds (`tcp`, `http`, `send_expect`): the bytes each one
//! sends ([`request_bytes`]), how much of the reply it reads and how that
//! reply is judged ([`judge_partial`] / [`judge_final`]), and the words a
//! failure is reported in. Pure: bytes in, verdict out. A new probe kind is
//! added here.
//!
//! `http` replies go through the data plane's parser
//! ([`crate::http::parse_response`]) and body framing
//! ([`crate::http::BodyTracker`]), never a hand-rolled one. The request stays
//! `HTTP/1.0` with `Connection: close`: every server closes after one
//! answer, and a probe needs no more than that.

use crate::config::{HealthKind, HttpCheck, duration};
use crate::http::{BodyKind, BodyTracker, ChunkError, Limits, parse_response};
use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Most bytes of an `http` reply that are read; a reply is judged on them.
pub const MAX_RESPONSE: usize = 16 * 1024;

/// Outcome of a probe: `Ok` or the reason it failed.
pub(super) type Verdict = Result<(), String>;

/// The bytes a probe writes once connected.
pub(super) fn request_bytes(kind: &HealthKind, addr: SocketAddr) -> Vec<u8> {
    match kind {
        HealthKind::Tcp => Vec::new(),
        HealthKind::Http(check) => {
            let host = match &check.host {
                Some(h) => h.clone(),
                None => addr.to_string(),
            };
            format!(
                "{} {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: lbctl-health\r\nConnection: close\r\n\r\n",
                check.method, check.path, host
            )
            .into_bytes()
        }
        HealthKind::SendExpect { send, .. } => send.clone(),
    }
}

/// Most reply bytes a probe of this kind reads; the reply is judged on them.
pub(super) fn read_limit(kind: &HealthKind) -> usize {
    match kind {
        HealthKind::Tcp => 0,
        HealthKind::Http(_) => MAX_RESPONSE,
        HealthKind::SendExpect { expect, .. } => expect.len(),
    }
}

/// Judges a reply read so far: `Some` once the outcome cannot change.
pub(super) fn judge_partial(kind: &HealthKind, reply: &[u8]) -> Option<Verdict> {
    match kind {
        HealthKind::Tcp => Some(Ok(())),
        HealthKind::Http(check) => http_judge(check, reply, false),
        HealthKind::SendExpect { expect, .. } => {
            if reply.len() >= expect.len() {
                Some(if reply.starts_with(expect) {
                    Ok(())
                } else {
                    Err("unexpected reply".to_string())
                })
            } else if !expect.starts_with(reply) {
                Some(Err("unexpected reply".to_string()))
            } else {
                None
            }
        }
    }
}

/// Judges a complete reply (the peer closed, or the read limit was reached).
pub(super) fn judge_final(kind: &HealthKind, reply: &[u8]) -> Verdict {
    if let HealthKind::Http(check) = kind {
        return http_judge(check, reply, true).unwrap_or_else(|| Err(BAD.to_string()));
    }
    if let Some(verdict) = judge_partial(kind, reply) {
        return verdict;
    }
    if reply.is_empty() {
        return Err("connection closed".to_string());
    }
    Err("unexpected reply".to_string())
}

const BAD: &str = "bad response";

/// Judges an `http` reply with the data plane's parser
/// ([`crate::http::parse_response`]) and body framing
/// ([`crate::http::BodyTracker`]); `closed` when no more bytes will come.
///
/// The status decides first, as soon as its line is complete, so the
/// verdict does not depend on how the reply is split across reads: a
/// failing status fails (before the headers arrive), a passing one is
/// enough without `expect_body`. Otherwise the whole head is parsed (a
/// malformed or ambiguous one is a bad response), interim 1xx heads are
/// skipped, and `expect_body` is looked for in the body as its framing
/// delimits it — the `Content-Length` bytes, the chunks' data, or
/// everything until the close — and is missing once that body has ended.
fn http_judge(check: &HttpCheck, reply: &[u8], closed: bool) -> Option<Verdict> {
    let limits = Limits {
        header_bytes: MAX_RESPONSE,
        ..Limits::default()
    };
    let is_head = check.method.eq_ignore_ascii_case("HEAD");
    let mut rest = reply;
    loop {
        if closed && rest.is_empty() {
            return Some(Err("connection closed".to_string()));
        }
        let Ok(status) = status_of(rest, &limits, is_head, closed)? else {
            return Some(Err(BAD.to_string()));
        };
        if (100..200).contains(&status) && status != 101 {
            // An interim head (100 Continue, 103 Early Hints): the final
            // one follows it.
            match parse_response(rest, &limits, is_head) {
                Ok(Some(head)) => {
                    rest = rest.get(head.head_len..).unwrap_or_default();
                    continue;
                }
                Ok(None) if !closed => return None,
                _ => return Some(Err(BAD.to_string())),
            }
        }
        if !status_ok(check, status) {
            return Some(Err(format!("status {status}")));
        }
        let Some(want) = &check.expect_body else {
            return Some(Ok(()));
        };
        let head = match parse_response(rest, &limits, is_head) {
            Err(_) => return Some(Err(BAD.to_string())),
            // The status passed, so the body is what is missing.
            Ok(None) => return closed.then(|| Err("body mismatch".to_string())),
            Ok(Some(head)) => head,
        };
        let after = rest.get(head.head_len..).unwrap_or_default();
        let Ok((body, done)) = framed_body(head.body, after) else {
            return Some(Err(BAD.to_string()));
        };
        if contains(&body, want.as_bytes()) {
            return Some(Ok(()));
        }
        return (done || closed).then(|| Err("body mismatch".to_string()));
    }
}

/// The status of the reply starting at `rest`, from its status line alone
/// (given to the parser as a head of its own); `None` until that line is
/// complete (when `closed`, a line cut short is taken as it is); `Err` for a
/// line that is not a status line — as soon as its first bytes show it.
fn status_of(rest: &[u8], limits: &Limits, is_head: bool, closed: bool) -> Option<Result<u16, ()>> {
    let line = match line_end(rest) {
        Some(end) => &rest[..end],
        None if closed => rest,
        None => {
            return parse_response(rest, limits, is_head)
                .is_err()
                .then_some(Err(()));
        }
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut alone = line.to_vec();
    alone.extend_from_slice(b"\r\n\r\n");
    Some(match parse_response(&alone, limits, is_head) {
        Ok(Some(h)) => Ok(h.status),
        // An empty line where the status line should be, or garbage.
        Ok(None) | Err(_) => Err(()),
    })
}

/// The body in `after` (the bytes after a head) as `kind` frames it, with
/// chunked framing removed, and whether it has ended. Bytes past its end
/// are not body.
fn framed_body(kind: BodyKind, after: &[u8]) -> Result<(Cow<'_, [u8]>, bool), ChunkError> {
    let scan = BodyTracker::new(kind).advance(after)?;
    let framed = after.get(..scan.consumed).unwrap_or(after);
    let body = match kind {
        BodyKind::Chunked => Cow::Owned(dechunk(framed)),
        _ => Cow::Borrowed(framed),
    };
    Ok((body, scan.done))
}

/// The data of a chunked body that [`BodyTracker`] has validated (so every
/// size line is hex digits, maybe extensions, then CRLF), as far as it
/// goes: a chunk cut short gives the bytes that arrived; trailers are not
/// data.
fn dechunk(mut framed: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(eol) = line_end(framed) {
        let size = framed[..eol]
            .iter()
            .map_while(|&b| char::from(b).to_digit(16))
            .fold(0u64, |n, d| {
                n.saturating_mul(16).saturating_add(u64::from(d))
            });
        if size == 0 {
            break;
        }
        framed = &framed[eol + 1..];
        let take = usize::try_from(size).map_or(framed.len(), |n| n.min(framed.len()));
        data.extend_from_slice(&framed[..take]);
        // The CRLF after the data.
        framed = framed.get(take + 2..).unwrap_or_default();
    }
    data
}

fn status_ok(check: &HttpCheck, code: u16) -> bool {
    (check.expect_status.0..=check.expect_status.1).contains(&code)
}

fn line_end(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

pub(super) fn connect_detail(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        io::ErrorKind::TimedOut => "connect timed out".to_string(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_string(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_string(),
        _ => format!("connect failed: {e}"),
    }
}

pub(super) fn io_detail(op: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        io::ErrorKind::BrokenPipe => "connection closed".to_string(),
        _ => format!("{op} failed: {e}"),
    }
}

pub(super) fn timeout_detail(timeout: Duration) -> String {
    format!("timeout after {}", human_duration(timeout))
}

/// Formats a duration the way the config spells them: "1s", "200ms", "5m", "1h"
/// (the config's own [`duration::format`]).
pub fn human_duration(d: Duration) -> String {
    duration::format(d)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn http_check() -> HttpCheck {
        HttpCheck {
            method: "GET".into(),
            path: "/health".into(),
            host: None,
            expect_status: (200, 399),
            expect_body: None,
        }
    }

    /// An `http` check of `GET /health` expecting 2xx/3xx (and `expect_body`).
    pub(in crate::health) fn http_kind(expect_body: Option<&str>) -> HealthKind {
        HealthKind::Http(HttpCheck {
            expect_body: expect_body.map(str::to_string),
            ..http_check()
        })
    }

    #[test]
    fn http_status_line_alone_decides_without_expect_body() {
        let k = http_kind(None);
        assert_eq!(
            judge_partial(&k, b"HTTP/1.1 204 No Content\r\n"),
            Some(Ok(()))
        );
        assert_eq!(
            judge_partial(&k, b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(Err("status 503".into()))
        );
        assert_eq!(judge_partial(&k, b"HTTP/1.1 200"), None);
        assert_eq!(judge_partial(&k, b"HT"), None);
    }

    #[test]
    fn http_garbage_is_a_bad_response_as_soon_as_it_shows() {
        let k = http_kind(None);
        assert_eq!(
            judge_partial(&k, b"SSH-2.0"),
            Some(Err("bad response".into()))
        );
        assert_eq!(judge_partial(&k, b"X"), Some(Err("bad response".into())));
        assert_eq!(
            judge_partial(&k, b"HTTP/1.1 2x0 OK\r\n"),
            Some(Err("bad response".into()))
        );
        assert_eq!(
            judge_partial(&k, b"HTTP/1.1\r\n"),
            Some(Err("bad response".into()))
        );
        assert_eq!(
            judge_partial(&k, b"HTTP/1.1 \xff\xfe\xfd\r\n"),
            Some(Err("bad response".into()))
        );
    }

    #[test]
    fn http_body_must_contain_expect_body() {
        let k = http_kind(Some("alive"));
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(judge_partial(&k, head), None);
        let mut good = head.to_vec();
        good.extend_from_slice(b"I'm alive");
        assert_eq!(judge_partial(&k, &good), Some(Ok(())));
        let mut bad = head.to_vec();
        bad.extend_from_slice(b"I'm dead");
        assert_eq!(judge_partial(&k, &bad), None);
        assert_eq!(judge_final(&k, &bad), Err("body mismatch".into()));
        // The header block does not count as body.
        let in_header = b"HTTP/1.1 200 OK\r\nX-State: alive\r\n\r\nnope";
        assert_eq!(judge_final(&k, in_header), Err("body mismatch".into()));
        // Bare-LF responses are accepted.
        assert_eq!(judge_partial(&k, b"HTTP/1.0 200 OK\n\nalive"), Some(Ok(())));
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nI'm a\r\n5\r\nlive!\r\n0\r\nX-T: 1\r\n\r\n";

    #[test]
    fn http_chunked_body_is_matched_on_its_data_across_chunks() {
        // "alive" is only in the data once the framing is removed.
        assert!(!CHUNKED.windows(5).any(|w| w == b"alive"));
        assert_eq!(
            judge_partial(&http_kind(Some("alive")), CHUNKED),
            Some(Ok(()))
        );
        // The body ended without it: a mismatch at once, no close needed.
        assert_eq!(
            judge_partial(&http_kind(Some("dead")), CHUNKED),
            Some(Err("body mismatch".into()))
        );
        // Chunk sizes, extensions and trailers are not data.
        for framing in ["5;x=y", "X-T"] {
            assert_eq!(
                judge_partial(&http_kind(Some(framing)), CHUNKED),
                Some(Err("body mismatch".into())),
                "{framing}"
            );
        }
        let broken = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nalive\r\n";
        assert_eq!(
            judge_partial(&http_kind(Some("alive")), broken),
            Some(Err("bad response".into()))
        );
    }

    #[test]
    fn http_content_length_ends_the_body() {
        let k = http_kind(Some("alive"));
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnope alive";
        assert_eq!(judge_partial(&k, reply), Some(Err("body mismatch".into())));
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nalive";
        assert_eq!(judge_partial(&k, reply), Some(Err("bad response".into())));
        // A response to HEAD has no body, so nothing can match.
        let head = HealthKind::Http(HttpCheck {
            method: "HEAD".into(),
            expect_body: Some("alive".into()),
            ..http_check()
        });
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            judge_partial(&head, reply),
            Some(Err("body mismatch".into()))
        );
    }

    #[test]
    fn http_interim_responses_are_skipped() {
        let reply =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nalive";
        assert_eq!(
            judge_partial(&http_kind(Some("alive")), reply),
            Some(Ok(()))
        );
        assert_eq!(judge_partial(&http_kind(None), reply), Some(Ok(())));
        assert_eq!(
            judge_partial(&http_kind(None), b"HTTP/1.1 103 Early Hints\r\n"),
            None
        );
        let bad = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\n\r\n";
        assert_eq!(
            judge_partial(&http_kind(None), bad),
            Some(Err("status 503".into()))
        );
    }

    /// Every split point of `reply`: no verdict before `decided` bytes, then
    /// `want` — whatever the reads delivered.
    fn at_every_split(k: &HealthKind, reply: &[u8], decided: usize, want: &Verdict) {
        for i in 0..=reply.len() {
            let got = judge_partial(k, &reply[..i]);
            if i < decided {
                assert_eq!(got, None, "after {i} bytes");
            } else {
                assert_eq!(got.as_ref(), Some(want), "after {i} bytes");
            }
        }
    }

    #[test]
    fn http_reply_split_across_reads_is_judged_once_it_can_be() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nI'm alive";
        at_every_split(&http_kind(Some("alive")), reply, reply.len(), &Ok(()));
        at_every_split(
            &http_kind(Some("dead")),
            reply,
            reply.len(),
            &Err("body mismatch".into()),
        );
        // Without expect_body the status line decides.
        let line = b"HTTP/1.1 200 OK\r\n".len();
        at_every_split(&http_kind(None), reply, line, &Ok(()));
        let busy = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n";
        let line = b"HTTP/1.1 503 Busy\r\n".len();
        at_every_split(
            &http_kind(Some("alive")),
            busy,
            line,
            &Err("status 503".into()),
        );
        // A chunked reply: decided once the chunk completing "alive" is in.
        let decided = CHUNKED
            .windows(5)
            .position(|w| w == b"live!")
            .expect("chunk")
            + 4;
        at_every_split(&http_kind(Some("alive")), CHUNKED, decided, &Ok(()));
        at_every_split(
            &http_kind(Some("dead")),
            CHUNKED,
            CHUNKED.len(),
            &Err("body mismatch".into()),
        );
    }

    #[test]
    fn http_final_judgement_names_what_was_missing() {
        let k = http_kind(None);
        assert_eq!(judge_final(&k, b""), Err("connection closed".into()));
        assert_eq!(judge_final(&k, b"HTTP/1.0 200"), Ok(()));
        assert_eq!(judge_final(&k, b"HTTP/1.0 404"), Err("status 404".into()));
        assert_eq!(judge_final(&k, b"HTTP/1."), Err("bad response".into()));
    }

    #[test]
    fn send_expect_judges_the_reply_prefix() {
        let k = HealthKind::SendExpect {
            send: b"PING\r\n".to_vec(),
            expect: b"+PONG".to_vec(),
        };
        assert_eq!(judge_partial(&k, b"+PO"), None);
        assert_eq!(judge_partial(&k, b"+PONG"), Some(Ok(())));
        assert_eq!(
            judge_partial(&k, b"-ERR"),
            Some(Err("unexpected reply".into()))
        );
        assert_eq!(judge_final(&k, b"+PO"), Err("unexpected reply".into()));
        assert_eq!(judge_final(&k, b""), Err("connection closed".into()));
    }

    #[test]
    fn http_request_uses_the_configured_host_or_the_address() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let req = request_bytes(&http_kind(None), addr);
        assert_eq!(
            req,
            b"GET /health HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: lbctl-health\r\nConnection: close\r\n\r\n"
        );
        let k = HealthKind::Http(HttpCheck {
            method: "HEAD".into(),
            host: Some("example.test".into()),
            ..http_check()
        });
        let req = String::from_utf8(request_bytes(&k, addr)).expect("utf8");
        assert!(req.starts_with("HEAD /health HTTP/1.0\r\nHost: example.test\r\n"));
    }

    #[test]
    fn durations_are_formatted_like_the_config_spells_them() {
        assert_eq!(human_duration(Duration::from_secs(1)), "1s");
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(human_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human_duration(Duration::ZERO), "0s");
    }
}
