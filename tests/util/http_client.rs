//! Owns the minimal blocking HTTP/1.1 client of the http-mode tests: one
//! [`HttpConn`] per TcpStream for keep-alive and pipelining (send raw bytes,
//! read responses one by one, in order), a parsed [`Response`] whose body is
//! read by Content-Length, chunked (decoded) or until close, raw access after
//! an upgrade, and the one-shot [`get`]. Every read times out (10 s), so a
//! broken proxy fails the test instead of hanging it.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use super::http_wire::{
    Framing, MAX_HEAD, Wire, encode_chunked, framing_of, has_token, header, invalid, owned_headers,
    read_body,
};

/// How long any read or write may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunk framing removed).
    pub body: Vec<u8>,
    /// The raw head bytes, status line to the empty line included.
    pub head: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// Statuses of the interim (1xx other than 101) responses skipped before it.
    pub interim: Vec<u16>,
}

impl Response {
    /// The value of header `name` (case-insensitive; repeats joined with ", ").
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name)
    }

    /// Whether header `name` lists `token`, e.g. `("connection", "close")`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        has_token(&self.headers, name, token)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that can carry many requests.
#[derive(Debug)]
pub struct HttpConn {
    addr: SocketAddr,
    wire: Wire<TcpStream>,
}

impl HttpConn {
    /// Connects with a 5 s connect timeout and [`IO_TIMEOUT`] on reads and writes.
    pub fn connect(addr: SocketAddr) -> io::Result<HttpConn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.set_nodelay(true)?;
        Ok(HttpConn {
            addr,
            wire: Wire::new(s),
        })
    }

    /// Wraps a stream connected to `addr` by other means (a chosen source
    /// address, bytes already sent), with [`IO_TIMEOUT`] on reads and writes.
    pub fn from_stream(addr: SocketAddr, s: TcpStream) -> io::Result<HttpConn> {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.set_nodelay(true)?;
        Ok(HttpConn {
            addr,
            wire: Wire::new(s),
        })
    }

    /// Where it connected.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The socket (e.g. to change its timeouts or read its local address).
    pub fn stream(&self) -> &TcpStream {
        self.wire.inner()
    }

    /// Sends bytes as they are (pipelined requests, broken requests, or data
    /// after an upgrade).
    pub fn send_raw(&mut self, data: &[u8]) -> io::Result<()> {
        self.wire.inner_mut().write_all(data)
    }

    /// Sends one request built by [`build_request`] and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        let raw = build_request(self.addr, method, path, headers, body);
        self.send_raw(&raw)?;
        self.read_response_for(method)
    }

    /// Reads the next response, as to a GET.
    pub fn read_response(&mut self) -> io::Result<Response> {
        self.read_response_for("GET")
    }

    /// Reads the next response to a request with `method` (a HEAD's response
    /// has no body whatever its headers say). 1xx interim responses are
    /// skipped (listed in `interim`), except 101, which is returned at once:
    /// what follows belongs to the upgraded protocol ([`HttpConn::read_raw`]).
    pub fn read_response_for(&mut self, method: &str) -> io::Result<Response> {
        let mut interim = Vec::new();
        loop {
            let (status, reason, minor, headers, head) = self.read_head()?;
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let no_body = method.eq_ignore_ascii_case("HEAD")
                || (100..200).contains(&status)
                || status == 204
                || status == 304;
            let framing = if no_body {
                Framing::None
            } else {
                framing_of(&headers)?.unwrap_or(Framing::UntilClose)
            };
            let mut body = Vec::new();
            read_body(&mut self.wire, framing, &mut |b| body.extend_from_slice(b))?;
            return Ok(Response {
                status,
                reason,
                minor,
                headers,
                body,
                head,
                chunked: framing == Framing::Chunked,
                interim,
            });
        }
    }

    #[allow(clippy::type_complexity)]
    fn read_head(&mut self) -> io::Result<(u16, String, u8, Vec<(String, String)>, Vec<u8>)> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(self.wire.buffered()) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let reason = resp.reason.unwrap_or("").to_string();
                    let minor = resp.version.unwrap_or(1);
                    let headers = owned_headers(resp.headers);
                    let head = self.wire.consume(n);
                    return Ok((status, reason, minor, headers, head));
                }
                Ok(httparse::Status::Partial) if self.wire.buffered().len() > MAX_HEAD => {
                    return Err(invalid(format!("response head over {MAX_HEAD} bytes")));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    let start = String::from_utf8_lossy(self.wire.buffered());
                    return Err(invalid(format!("bad response head ({e}): {start:.200?}")));
                }
            }
            if self.wire.fill()? == 0 {
                let got = self.wire.buffered().len();
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed before a response head ({got} bytes of it)"),
                ));
            }
        }
    }

    /// Reads exactly `n` raw bytes (those already buffered first).
    pub fn read_raw(&mut self, n: usize) -> io::Result<Vec<u8>> {
        self.wire.read_exact_vec(n)
    }

    /// Reads raw bytes until the peer closes.
    pub fn read_raw_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.wire
            .read_until_close(&mut |b| out.extend_from_slice(b))?;
        Ok(out)
    }

    /// Waits until the peer closes (true) or sends something (false, the
    /// bytes stay buffered for the next read).
    pub fn at_eof(&mut self) -> io::Result<bool> {
        if !self.wire.buffered().is_empty() {
            return Ok(false);
        }
        Ok(self.wire.fill()? == 0)
    }

    /// Closes the write side (the peer reads EOF).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.wire.inner().shutdown(Shutdown::Write)
    }
}

/// The bytes of one HTTP/1.1 request. Adds `Host: <addr>` unless `headers`
/// has one; with a body, adds `Content-Length` unless `headers` gives a
/// length or a Transfer-Encoding. With `Transfer-Encoding: chunked` in
/// `headers`, the body is sent chunked (sizes varied, up to 16 KiB).
pub fn build_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body
        && !has("content-length")
        && !has("transfer-encoding")
    {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    match body {
        Some(b) if chunked => out.extend_from_slice(&encode_chunked(b, 16 * 1024)),
        Some(b) => out.extend_from_slice(b),
        None => {}
    }
    out
}

/// One `GET path` on a new connection (`Connection: close`), panicking with
/// the address, path and error if it fails.
#[track_caller]
pub fn get(addr: SocketAddr, path: &str) -> Response {
    match try_get(addr, path) {
        Ok(r) => r,
        Err(e) => panic!("GET {path} via {addr} failed: {e}"),
    }
}

/// [`get`] returning the error instead (for tests that expect one).
pub fn try_get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut conn = HttpConn::connect(addr)?;
    conn.request("GET", path, &[("Connection", "close")], None)
}
