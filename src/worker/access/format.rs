//! Owns the two line formats of the access log, written into a reused
//! buffer without a per-field allocation: `text`, one HAProxy/nginx-like
//! line of space-separated fields (`-` for an absent one, the request line
//! quoted), and `json`, one object per line. The timestamp (UTC, ms) is
//! cached per second ([`Clock`]). Pure: bytes out, no I/O.
//!
//! text, tcp:  `TIME CLIENT LISTEN SERVER DURATION_MS BYTES_IN BYTES_OUT TERMINATION RETRIES`
//! text, http: `TIME CLIENT LISTEN SERVER "METHOD PATH" STATUS REQUEST_MS DURATION_MS BYTES_IN BYTES_OUT TERMINATION RETRIES`

use super::record::Cause;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The HTTP part of a line.
#[derive(Debug, Clone, Copy)]
pub struct HttpPart<'a> {
    /// The method as sent (empty: unknown, written `-`).
    pub method: &'a [u8],
    /// The request-target as sent (empty: unknown).
    pub path: &'a [u8],
    /// The status sent to the client (0: none, written `-`).
    pub status: u16,
    /// From the request's first byte to its end.
    pub request: Duration,
}

/// One line's fields.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// The listen's name.
    pub listen: &'a str,
    /// The server that served it (the last one tried), if any.
    pub server: Option<SocketAddr>,
    /// From accept to the line.
    pub duration: Duration,
    /// Bytes client → server.
    pub bytes_in: u64,
    /// Bytes server → client.
    pub bytes_out: u64,
    /// How it ended.
    pub cause: Cause,
    /// Servers tried after the first.
    pub retries: usize,
    /// Set in `mode = "http"`.
    pub http: Option<HttpPart<'a>>,
}

/// The wall clock, its `YYYY-MM-DDTHH:MM:SS` text cached per second.
#[derive(Debug, Default)]
pub struct Clock {
    sec: u64,
    text: [u8; 19],
}

impl Clock {
    /// Writes `YYYY-MM-DDTHH:MM:SS.mmmZ` for now.
    pub fn stamp(&mut self, out: &mut Vec<u8>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.stamp_at(now, out);
    }

    fn stamp_at(&mut self, since_epoch: Duration, out: &mut Vec<u8>) {
        let secs = since_epoch.as_secs();
        if secs != self.sec || self.text[0] == 0 {
            self.sec = secs;
            let (days, rem) = (secs / 86400, secs % 86400);
            let (y, m, d) = crate::master::daemon::civil_from_days(days as i64);
            let mut t = &mut self.text[..];
            let _ = write!(
                t,
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            );
        }
        out.extend_from_slice(&self.text);
        out.push(b'.');
        push_padded(out, u64::from(since_epoch.subsec_millis()), 3);
        out.push(b'Z');
    }
}

/// Appends the `text` line of `e` (newline included).
pub fn text(out: &mut Vec<u8>, clock: &mut Clock, e: &Entry<'_>) {
    clock.stamp(out);
    out.push(b' ');
    push_addr(out, e.client);
    out.push(b' ');
    push_word(out, e.listen.as_bytes());
    out.push(b' ');
    match e.server {
        Some(s) => push_addr(out, s),
        None => out.push(b'-'),
    }
    out.push(b' ');
    if let Some(h) = &e.http {
        out.push(b'"');
        if h.method.is_empty() {
            out.push(b'-');
        } else {
            push_quoted(out, h.method);
            out.push(b' ');
            push_quoted(out, h.path);
        }
        out.extend_from_slice(b"\" ");
        if h.status == 0 {
            out.push(b'-');
        } else {
            push_u64(out, u64::from(h.status));
        }
        out.push(b' ');
        push_ms(out, h.request);
        out.push(b' ');
    }
    push_ms(out, e.duration);
    out.push(b' ');
    push_u64(out, e.bytes_in);
    out.push(b' ');
    push_u64(out, e.bytes_out);
    out.push(b' ');
    out.extend_from_slice(e.cause.word().as_bytes());
    out.push(b' ');
    push_u64(out, e.retries as u64);
    out.push(b'\n');
}

/// Appends the `json` line of `e` (newline included).
pub fn json(out: &mut Vec<u8>, clock: &mut Clock, e: &Entry<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    clock.stamp(out);
    out.extend_from_slice(b"\",\"client\":\"");
    push_addr(out, e.client);
    out.extend_from_slice(b"\",\"listen\":\"");
    push_json(out, e.listen.as_bytes());
    out.extend_from_slice(b"\",\"server\":");
    match e.server {
        Some(s) => {
            out.push(b'"');
            push_addr(out, s);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"duration_ms\":");
    push_ms(out, e.duration);
    out.extend_from_slice(b",\"bytes_in\":");
    push_u64(out, e.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    push_u64(out, e.bytes_out);
    out.extend_from_slice(b",\"termination\":\"");
    out.extend_from_slice(e.cause.word().as_bytes());
    out.extend_from_slice(b"\",\"retries\":");
    push_u64(out, e.retries as u64);
    if let Some(h) = &e.http {
        out.extend_from_slice(b",\"method\":");
        push_json_or_null(out, h.method);
        out.extend_from_slice(b",\"path\":");
        push_json_or_null(out, h.path);
        out.extend_from_slice(b",\"status\":");
        if h.status == 0 {
            out.extend_from_slice(b"null");
        } else {
            push_u64(out, u64::from(h.status));
        }
        out.extend_from_slice(b",\"request_ms\":");
        push_ms(out, h.request);
    }
    out.extend_from_slice(b"}\n");
}

/// `IP:PORT` as `Display` writes it; IPv4 without the formatting machinery.
fn push_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            for (i, o) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(o));
            }
            out.push(b':');
            push_u64(out, u64::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{a}");
        }
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut n = n;
    let mut i = digits.len();
    while n > 0 && i > 0 {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = (digits.len() - width).min(i);
    out.extend_from_slice(&digits[start..]);
}

/// Milliseconds with three decimals (`12.345`).
fn push_ms(out: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros() as u64;
    push_u64(out, us / 1000);
    out.push(b'.');
    push_padded(out, us % 1000, 3);
}

/// A text field that must stay one field: bytes outside `!`..`~` (space
/// included) and the backslash as `\xHH`.
fn push_word(out: &mut Vec<u8>, b: &[u8]) {
    for &c in b {
        if c.is_ascii_graphic() && c != b'\\' {
            out.push(c);
        } else {
            push_hex_escape(out, c);
        }
    }
}

/// Inside the quoted request line: also `"` escaped.
fn push_quoted(out: &mut Vec<u8>, b: &[u8]) {
    for &c in b {
        if c.is_ascii_graphic() && c != b'\\' && c != b'"' {
            out.push(c);
        } else {
            push_hex_escape(out, c);
        }
    }
}

fn push_hex_escape(out: &mut Vec<u8>, c: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[b'\\', b'x', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
}

fn push_json_or_null(out: &mut Vec<u8>, b: &[u8]) {
    if b.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        push_json(out, b);
        out.push(b'"');
    }
}

/// A JSON string body: `"`, `\` and every byte outside printable ASCII
/// escaped (`\u00HH`), so any input gives valid JSON on one line.
fn push_json(out: &mut Vec<u8>, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &c in b {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(c),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(c >> 4) as usize],
                HEX[(c & 15) as usize],
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_entry() -> Entry<'static> {
        Entry {
            client: "127.0.0.1:40000".parse().expect("addr"),
            listen: "web",
            server: Some("127.0.0.1:6001".parse().expect("addr")),
            duration: Duration::from_micros(12_345),
            bytes_in: 120,
            bytes_out: 4096,
            cause: Cause::ClientClosed,
            retries: 1,
            http: None,
        }
    }

    fn line(f: fn(&mut Vec<u8>, &mut Clock, &Entry<'_>), e: &Entry<'_>) -> String {
        let mut out = Vec::new();
        f(&mut out, &mut Clock::default(), e);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [
            "127.0.0.1:40000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:80",
            "[fe80::1%2]:9",
        ] {
            let a: SocketAddr = a.parse().expect("addr");
            let mut out = Vec::new();
            push_addr(&mut out, a);
            assert_eq!(String::from_utf8(out).expect("utf-8"), a.to_string());
        }
    }

    #[test]
    fn the_clock_writes_utc_with_milliseconds_and_caches_per_second() {
        let mut c = Clock::default();
        let mut out = Vec::new();
        c.stamp_at(Duration::from_millis(1_764_694_273_045), &mut out);
        assert_eq!(out, b"2025-12-02T16:51:13.045Z");
        out.clear();
        c.stamp_at(Duration::from_millis(1_764_694_273_999), &mut out);
        assert_eq!(out, b"2025-12-02T16:51:13.999Z");
        out.clear();
        c.stamp_at(Duration::from_millis(1_764_694_274_000), &mut out);
        assert_eq!(out, b"2025-12-02T16:51:14.000Z");
    }

    #[test]
    fn a_tcp_text_line_has_its_fields_in_order() {
        let l = line(text, &tcp_entry());
        let f: Vec<&str> = l.trim_end().split(' ').collect();
        assert_eq!(
            &f[1..],
            [
                "127.0.0.1:40000",
                "web",
                "127.0.0.1:6001",
                "12.345",
                "120",
                "4096",
                "client_closed",
                "1"
            ]
        );
        assert!(l.ends_with('\n') && l.matches('\n').count() == 1);
    }

    #[test]
    fn an_http_text_line_quotes_the_request_and_escapes_what_would_split_it() {
        let mut e = tcp_entry();
        e.server = None;
        e.http = Some(HttpPart {
            method: b"GET",
            path: b"/a\"b c\\",
            status: 503,
            request: Duration::from_micros(7),
        });
        e.cause = Cause::NoServer;
        let l = line(text, &e);
        let rest = l.split_once(' ').expect("time").1;
        assert_eq!(
            rest,
            "127.0.0.1:40000 web - \"GET /a\\x22b\\x20c\\x5c\" 503 0.007 12.345 120 4096 no_server 1\n"
        );
        e.http = Some(HttpPart {
            method: b"",
            path: b"",
            status: 0,
            request: Duration::ZERO,
        });
        let l = line(text, &e);
        assert!(l.contains(" \"-\" - 0.000 "), "{l}");
    }

    #[test]
    fn json_lines_parse_and_escape_any_byte() {
        let mut e = tcp_entry();
        let v: serde_json::Value = serde_json::from_str(&line(json, &e)).expect("json");
        assert_eq!(v["bytes_in"], 120);
        assert_eq!(v["bytes_out"], 4096);
        assert_eq!(v["termination"], "client_closed");
        assert_eq!(v["server"], "127.0.0.1:6001");
        assert_eq!(v["duration_ms"], 12.345);
        assert!(v.get("status").is_none());
        e.server = None;
        e.listen = "we\"b";
        e.http = Some(HttpPart {
            method: b"POST",
            path: b"/\xff\n\"\\",
            status: 201,
            request: Duration::from_millis(3),
        });
        let l = line(json, &e);
        assert_eq!(l.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        assert_eq!(v["server"], serde_json::Value::Null);
        assert_eq!(v["listen"], "we\"b");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/\u{ff}\n\"\\");
        assert_eq!(v["status"], 201);
        assert_eq!(v["request_ms"], 3.0);
    }
}
