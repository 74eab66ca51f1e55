//! Owns the probe kinds (`tcp`, `http`, `send_expect`): the bytes each one
//! sends ([`request_bytes`]), how much of the reply it reads and how that
//! reply is judged ([`judge_partial`] / [`judge_final`]), and the words a
//! failure is reported in. Pure: bytes in, verdict out. A new probe kind is
//! added here.

use crate::config::{HealthKind, HttpCheck, duration};
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
        HealthKind::Http(check) => http_partial(check, reply),
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
    if let Some(verdict) = judge_partial(kind, reply) {
        return verdict;
    }
    if reply.is_empty() {
        return Err("connection closed".to_string());
    }
    match kind {
        HealthKind::Http(check) => {
            let line = &reply[..line_end(reply).unwrap_or(reply.len())];
            match parse_status(line) {
                None => Err("bad response".to_string()),
                Some(code) if !status_ok(check, code) => Err(format!("status {code}")),
                // A status line cut short by the close, and nothing else asked for.
                Some(_) if check.expect_body.is_none() => Ok(()),
                // The status passed, so the body is what is missing.
                Some(_) => Err("body mismatch".to_string()),
            }
        }
        _ => Err("unexpected reply".to_string()),
    }
}

fn http_partial(check: &HttpCheck, reply: &[u8]) -> Option<Verdict> {
    const PREFIX: &[u8] = b"HTTP/";
    let n = reply.len().min(PREFIX.len());
    if reply[..n] != PREFIX[..n] {
        return Some(Err("bad response".to_string()));
    }
    let end = line_end(reply)?;
    let Some(code) = parse_status(&reply[..end]) else {
        return Some(Err("bad response".to_string()));
    };
    if !status_ok(check, code) {
        return Some(Err(format!("status {code}")));
    }
    match &check.expect_body {
        None => Some(Ok(())),
        Some(want) => {
            let body = &reply[body_start(reply)?..];
            contains(body, want.as_bytes()).then_some(Ok(()))
        }
    }
}

fn status_ok(check: &HttpCheck, code: u16) -> bool {
    (check.expect_status.0..=check.expect_status.1).contains(&code)
}

fn line_end(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// Parses `HTTP/x.y NNN [reason]` (without its line ending) into `NNN`.
fn parse_status(line: &[u8]) -> Option<u16> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    if !parts.next()?.starts_with(b"HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0')))
}

/// Where the body starts: after the first empty line (`\r\n\r\n` or `\n\n`).
fn body_start(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
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
