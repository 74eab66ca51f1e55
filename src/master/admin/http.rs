//! Owns the admin listener's tiny HTTP/1.x: parsing one request from the bytes
//! read so far (httparse; a head of at most [`MAX_HEAD`] bytes, a body of at
//! most [`MAX_BODY`] sent with `Content-Length`), the answers to bad ones, the
//! serialized response (always `Connection: close`), and the helpers the
//! routes need: percent-decoding, form fields, bearer tokens compared in
//! constant time, and `Accept` negotiation. Pure: bytes in, values out.

/// Most bytes of a request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most bytes of a request body (the actions' forms are a few dozen).
pub const MAX_BODY: usize = 4 * 1024;
/// Most header lines of a request head.
const MAX_HEADERS: usize = 32;

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, … as sent.
    pub method: String,
    /// The path, without the query string, not yet percent-decoded.
    pub path: String,
    /// The `Accept` header (empty when none).
    pub accept: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Content-Type` header (empty when none).
    pub content_type: String,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

/// What the bytes read so far amount to.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A whole request.
    Complete(Request),
    /// A request that cannot be served: answer this and close.
    Invalid(Response),
}

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return too_large_head(),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return too_large_head(),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return too_large_head(),
        Err(e) => return bad(&format!("malformed request: {e}")),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return bad("malformed request line");
    };
    if !target.starts_with('/') {
        return bad("expected a request target starting with '/'");
    }
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    let mut out = Request {
        method: method.to_string(),
        path,
        accept: String::new(),
        authorization: None,
        content_type: String::new(),
        body: Vec::new(),
    };
    let mut length: Option<usize> = None;
    for h in req.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            return bad("header values must be UTF-8");
        };
        let value = value.trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Ok(n) = value.parse::<usize>() else {
                return bad("invalid Content-Length");
            };
            if length.is_some_and(|l| l != n) {
                return bad("conflicting Content-Length headers");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Invalid(Response::text(
                411,
                "send the body with Content-Length, not Transfer-Encoding\n",
            ));
        } else if name.eq_ignore_ascii_case("accept") {
            if !out.accept.is_empty() {
                out.accept.push(',');
            }
            out.accept.push_str(value);
        } else if name.eq_ignore_ascii_case("authorization") {
            out.authorization = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-type") {
            out.content_type = value.to_string();
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Parsed::Invalid(Response::text(
            413,
            &format!("request body over {MAX_BODY} bytes\n"),
        ));
    }
    let Some(body) = buf.get(head_len..head_len + length) else {
        return Parsed::Partial;
    };
    out.body = body.to_vec();
    Parsed::Complete(out)
}

fn bad(why: &str) -> Parsed {
    Parsed::Invalid(Response::text(400, &format!("bad request: {why}\n")))
}

fn too_large_head() -> Parsed {
    Parsed::Invalid(Response::text(
        431,
        &format!("request head over {MAX_HEAD} bytes or {MAX_HEADERS} headers\n"),
    ))
}

/// One response; serialized with `Content-Length` and `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// More headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Response {
        Response::new(
            status,
            "text/plain; charset=utf-8",
            body.as_bytes().to_vec(),
        )
    }

    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Response::new(status, "application/json", body)
    }

    /// Any body.
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: &str) -> Response {
        self.headers.push((name, value.to_string()));
        self
    }

    /// The bytes on the wire; `head_only` (a `HEAD` request) leaves out the
    /// body but keeps its `Content-Length`.
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
             Connection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The value of field `name` in an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(&k.replace('+', " "))?;
        (k == name).then(|| percent_decode(&v.replace('+', " ")))?
    })
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether `a == b`, in a time that depends on their lengths only.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    // black_box keeps the loop from being turned into an early exit.
    std::hint::black_box(diff) == 0
}

/// Whether an `Accept` header prefers OpenMetrics to the Prometheus text
/// format: it lists `application/openmetrics-text` with a quality above 0
/// and at least that of any `text/plain`.
pub fn wants_openmetrics(accept: &str) -> bool {
    let (mut om, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            om = om.max(q);
        } else if media.eq_ignore_ascii_case("text/plain") {
            text = text.max(q);
        }
    }
    om > 0.0 && om >= text
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
