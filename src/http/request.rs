//! Owns parsing a request head ([`parse_request`] → [`RequestHead`]) and the
//! rules that decide its framing and connection handling: body length,
//! keep-alive, `Expect: 100-continue`, `Upgrade`, `Host` — and the refusals
//! that keep a front-end and its server agreeing on where a request ends
//! (request smuggling: CL + TE, conflicting CL, non-chunked TE, obs-fold).

use super::fields::{self, Coding, Field, Fields, SpareFields};
use super::{BodyKind, HeadError, Limits, Version};

/// A parsed request head, borrowed from the bytes it was parsed from (no
/// copy of any field; the field list is the one allocation, reused from the
/// previous head with [`parse_request_in`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// The method as sent (methods are case-sensitive: `GET`, not `get`).
    pub method: &'a str,
    /// The request-target as sent (origin-form `/path?q` usually).
    pub uri: &'a str,
    /// The client's protocol version.
    pub version: Version,
    /// Every field in order, name case as sent, value OWS-trimmed.
    pub headers: Vec<Field<'a>>,
    /// Bytes of the head, final CRLFCRLF included: the body (or the next
    /// pipelined request) starts at `buf[head_len]`.
    pub head_len: usize,
    /// How the body is delimited (never `UntilClose` for a request).
    pub body: BodyKind,
    /// Whether the client wants the connection kept after this exchange.
    pub keep_alive: bool,
    /// HTTP/1.1 `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The `Upgrade` value (e.g. `websocket`) when `Connection` lists
    /// `upgrade` (HTTP/1.1 only).
    pub upgrade: Option<String>,
    /// The `Host` value (required in HTTP/1.1; may be empty).
    pub host: Option<&'a str>,
}

impl<'a> RequestHead<'a> {
    /// Whether the method is idempotent (RFC 9110 §9.2.2), so a request that
    /// failed before any response byte may be retried on another server.
    pub fn idempotent(&self) -> bool {
        matches!(
            self.method,
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
        )
    }

    /// Whether this is a `HEAD` request (its response has no body).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The first field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        fields::values(&self.headers, name).next()
    }
}

const fn bad(reason: &'static str) -> HeadError {
    HeadError::new(400, reason)
}

/// Parses the request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more and call again with the whole buffer.
/// A head that cannot fit in `limits.header_bytes` is 431 as soon as the
/// buffer holds that many bytes without a complete head (so a buffer of
/// exactly that capacity never waits forever); a request-target longer than
/// `limits.uri_bytes` is 414 as soon as it is seen. Bytes after the head
/// (body, pipelined requests) are not looked at.
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<RequestHead<'a>>, HeadError> {
    parse_request_in(buf, limits, &mut SpareFields::new())
}

/// [`parse_request`] filling the allocation of `spare` with the fields (a session
/// hands back the list of its previous head: no allocation per head). The
/// list is taken from `spare` only once the head is complete.
pub fn parse_request_in<'a>(
    buf: &'a [u8],
    limits: &Limits,
    spare: &mut SpareFields,
) -> Result<Option<RequestHead<'a>>, HeadError> {
    if buf.is_empty() {
        // Nothing to parse yet (the session looks before every read): skip
        // the parser's setup.
        return Ok(None);
    }
    let window = buf.get(..limits.header_bytes).unwrap_or(buf);
    let mut slots = fields::HeaderSlots::new();
    let slots = slots.get(limits.headers);
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, window, slots);
    let head_len = match parsed {
        Err(e) => return Err(parse_error(e, window)),
        Ok(httparse::Status::Partial) => {
            if fields::target_len(window).is_some_and(|n| n > limits.uri_bytes) {
                return Err(HeadError::new(414, "request-target too long"));
            }
            if buf.len() >= limits.header_bytes.max(1) {
                return Err(HeadError::new(431, "request head too large"));
            }
            return Ok(None);
        }
        Ok(httparse::Status::Complete(n)) => n,
    };
    let (Some(method), Some(uri), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(bad("incomplete request line"));
    };
    if uri.len() > limits.uri_bytes {
        return Err(HeadError::new(414, "request-target too long"));
    }
    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(bad("unsupported HTTP version")),
    };
    // No obs-fold check here: httparse (default config, multi-line fields
    // not allowed) refuses a folded line as an invalid field name, so a
    // complete head has none; `parse_error` names the fold (the test
    // `httparse_refuses_every_folded_line` keeps that true).
    let mut headers: Vec<Field<'a>> = std::mem::take(spare).take();
    headers.extend(req.headers.iter().map(|h| (h.name, h.value)));
    let body = body_kind(&headers, version)?;
    let host = host(&headers, version)?;
    let close = fields::has_token(&headers, "connection", b"close");
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => !close && fields::has_token(&headers, "connection", b"keep-alive"),
    };
    let http11 = version == Version::Http11;
    let expect_continue = http11
        && fields::values(&headers, "expect")
            .any(|v| fields::trim_ows(v).eq_ignore_ascii_case(b"100-continue"));
    let upgrade = if http11 && fields::has_token(&headers, "connection", b"upgrade") {
        upgrade_value(&headers)
    } else {
        None
    };
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
        head_len,
        body,
        keep_alive,
        expect_continue,
        upgrade,
        host,
    }))
}

/// The status for an httparse error: obs-fold and field errors are 400,
/// too many fields 431.
fn parse_error(e: httparse::Error, window: &[u8]) -> HeadError {
    if fields::has_obs_fold(window) {
        return bad("obsolete line folding");
    }
    match e {
        httparse::Error::TooManyHeaders => HeadError::new(431, "too many header fields"),
        httparse::Error::HeaderName => bad("invalid header name"),
        httparse::Error::HeaderValue => bad("invalid header value"),
        httparse::Error::NewLine => bad("invalid line ending"),
        httparse::Error::Version => bad("unsupported HTTP version"),
        httparse::Error::Token | httparse::Error::Status => bad("invalid request line"),
    }
}

/// RFC 9112 §6.3 for requests: chunked, else Content-Length, else no body;
/// anything ambiguous is refused.
fn body_kind(headers: &Fields<'_>, version: Version) -> Result<BodyKind, HeadError> {
    let framing = fields::framing(headers).map_err(bad)?;
    match (framing.length, framing.coding) {
        (Some(_), Some(_)) => Err(bad("both Content-Length and Transfer-Encoding")),
        (None, Some(_)) if version == Version::Http10 => {
            Err(bad("Transfer-Encoding in an HTTP/1.0 request"))
        }
        (None, Some(Coding::Chunked)) => Ok(BodyKind::Chunked),
        (None, Some(Coding::Other)) => Err(bad("Transfer-Encoding not ending in chunked")),
        (Some(n), None) => Ok(BodyKind::Length(n)),
        (None, None) => Ok(BodyKind::None),
    }
}

/// The bytes a `Host` value may hold (URI authority characters), as a table:
/// one lookup per byte instead of a search through the list.
const AUTHORITY: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~%!$&'()*+,;=:[]";
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
};

/// The single `Host` value (RFC 9112 §3.2): required in HTTP/1.1, never
/// repeated, made of URI authority characters.
fn host<'a>(headers: &Fields<'a>, version: Version) -> Result<Option<&'a str>, HeadError> {
    let mut hosts = fields::values(headers, "host");
    let Some(value) = hosts.next() else {
        return match version {
            Version::Http11 => Err(bad("missing Host")),
            Version::Http10 => Ok(None),
        };
    };
    if hosts.next().is_some() {
        return Err(bad("more than one Host"));
    }
    if !value.iter().all(|&b| AUTHORITY[usize::from(b)]) {
        return Err(bad("invalid Host"));
    }
    let value = std::str::from_utf8(value).map_err(|_| bad("invalid Host"))?;
    Ok(Some(value))
}

/// Every `Upgrade` value joined as one list, if it is printable ASCII.
fn upgrade_value(headers: &Fields<'_>) -> Option<String> {
    let mut out = String::new();
    for v in fields::values(headers, "upgrade") {
        let v = std::str::from_utf8(v).ok()?;
        if v.is_empty() {
            continue;
        }
        if !v
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        {
            return None;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(v);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<RequestHead<'_>>, HeadError> {
        parse_request(raw, &Limits::default())
    }

    fn head(raw: &[u8]) -> RequestHead<'_> {
        match parse(raw) {
            Ok(Some(h)) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn status(raw: &[u8]) -> u16 {
        match parse(raw) {
            Err(e) => e.status,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    const GET: &[u8] = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Custom: v1\r\n\r\n";

    #[test]
    fn a_simple_get_is_parsed_with_names_in_their_original_case() {
        let h = head(GET);
        assert_eq!((h.method, h.uri), ("GET", "/a?b=c"));
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.head_len, GET.len());
        assert_eq!(h.headers[1], ("X-Custom", &b"v1"[..]));
        assert_eq!(h.host, Some("example.com"));
        assert_eq!(h.header("x-custom"), Some(&b"v1"[..]));
        assert_eq!(h.body, BodyKind::None);
        assert!(h.keep_alive && !h.expect_continue && h.upgrade.is_none());
    }

    #[test]
    fn pipelined_bytes_after_a_head_are_not_consumed() {
        let mut raw = GET.to_vec();
        raw.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(head(&raw).head_len, GET.len());
    }

    #[test]
    fn a_partial_head_is_incomplete_at_every_split_point() {
        let raw = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
        for i in 0..raw.len() {
            assert_eq!(parse(&raw[..i]), Ok(None), "prefix of {i} bytes");
        }
        assert_eq!(head(raw).body, BodyKind::Length(3));
    }

    #[test]
    fn a_head_longer_than_the_limit_is_431_and_one_that_fits_exactly_is_accepted() {
        let limits = Limits {
            header_bytes: GET.len(),
            ..Limits::default()
        };
        assert!(matches!(parse_request(GET, &limits), Ok(Some(_))));
        let limits = Limits {
            header_bytes: GET.len() - 1,
            ..Limits::default()
        };
        assert_eq!(parse_request(GET, &limits).map_err(|e| e.status), Err(431));
        // Still incomplete while the buffer is under the limit.
        assert_eq!(parse_request(&GET[..10], &limits), Ok(None));
    }

    #[test]
    fn too_many_header_fields_is_431() {
        let limits = Limits {
            headers: 1,
            ..Limits::default()
        };
        assert_eq!(parse_request(GET, &limits).map_err(|e| e.status), Err(431));
        let limits = Limits {
            headers: 2,
            ..Limits::default()
        };
        assert!(matches!(parse_request(GET, &limits), Ok(Some(_))));
    }

    #[test]
    fn more_header_slots_than_the_stack_holds_use_the_heap() {
        let mut raw = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..fields::STACK_HEADERS + 10 {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        let limits = Limits {
            headers: fields::STACK_HEADERS + 20,
            ..Limits::default()
        };
        let h = parse_request(&raw, &limits).ok().flatten().expect("parsed");
        assert_eq!(h.headers.len(), fields::STACK_HEADERS + 11);
        assert_eq!(status(&raw), 431);
    }

    #[test]
    fn a_target_longer_than_the_limit_is_414_even_before_the_line_ends() {
        let limits = Limits {
            uri_bytes: 4,
            ..Limits::default()
        };
        let long = b"GET /abcd HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(parse_request(long, &limits).map_err(|e| e.status), Err(414));
        assert_eq!(
            parse_request(&long[..9], &limits).map_err(|e| e.status),
            Err(414)
        );
        assert_eq!(parse_request(&long[..8], &limits), Ok(None));
        let fits = b"GET /abc HTTP/1.1\r\nHost: h\r\n\r\n";
        assert!(matches!(parse_request(fits, &limits), Ok(Some(_))));
        // A 20 KiB target is 414, not 431, although the head is too large too.
        let mut huge = b"GET /".to_vec();
        huge.resize(20 * 1024, b'a');
        assert_eq!(status(&huge), 414);
    }

    #[test]
    fn httparse_refuses_every_folded_line() {
        // parse_request / parse_response rely on this instead of scanning
        // every complete head for a fold.
        for fold in [&b" two"[..], b"\ttwo", b" ", b"\t", b" \t x: y"] {
            for at in [0, 1, 2] {
                let mut lines: Vec<&[u8]> = vec![b"Host: h", b"X-A: one", b"X-B: b"];
                lines.insert(at, fold);
                let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
                let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
                for l in &lines {
                    for r in [&mut raw, &mut resp] {
                        r.extend_from_slice(l);
                        r.extend_from_slice(b"\r\n");
                    }
                }
                raw.extend_from_slice(b"\r\n");
                resp.extend_from_slice(b"Content-Length: 0\r\n\r\n");
                let mut h = [httparse::EMPTY_HEADER; 8];
                let req = httparse::Request::new(&mut h).parse(&raw);
                assert!(req.is_err(), "{:?}", String::from_utf8_lossy(&raw));
                let mut h = [httparse::EMPTY_HEADER; 8];
                let res = httparse::Response::new(&mut h).parse(&resp);
                assert!(res.is_err(), "{:?}", String::from_utf8_lossy(&resp));
                assert_eq!(status(&raw), 400);
            }
        }
    }

    #[test]
    fn obsolete_line_folding_is_400() {
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n two\r\n\r\n";
        assert_eq!(
            parse(raw).map_err(|e| (e.status, e.reason)),
            Err((400, "obsolete line folding"))
        );
        assert_eq!(status(b"GET / HTTP/1.1\r\n\tHost: h\r\n\r\n"), 400);
    }

    #[test]
    fn both_content_length_and_transfer_encoding_is_refused() {
        let raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(raw), 400);
    }

    #[test]
    fn duplicate_identical_content_lengths_are_accepted_and_differing_ones_refused() {
        let same =
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n";
        assert_eq!(head(same).body, BodyKind::Length(5));
        let differ =
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(status(differ), 400);
    }

    #[test]
    fn non_numeric_or_overflowing_content_length_is_refused() {
        for v in ["abc", "-1", "1e3", "99999999999999999999", ""] {
            let raw = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {v}\r\n\r\n");
            assert_eq!(status(raw.as_bytes()), 400, "{v:?}");
        }
    }

    #[test]
    fn transfer_encoding_must_end_in_chunked() {
        let te = |v: &str| format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {v}\r\n\r\n");
        assert_eq!(head(te("chunked").as_bytes()).body, BodyKind::Chunked);
        assert_eq!(head(te("gzip, chunked").as_bytes()).body, BodyKind::Chunked);
        for v in [
            "gzip",
            "chunked, gzip",
            "chunked, chunked",
            "identity",
            "chunked;x=1",
            "",
        ] {
            assert_eq!(status(te(v).as_bytes()), 400, "{v:?}");
        }
    }

    #[test]
    fn transfer_encoding_in_an_http_1_0_request_is_refused() {
        let raw = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(raw), 400);
    }

    #[test]
    fn invalid_header_names_are_refused() {
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX(y): v\r\n\r\n",
        ] {
            assert_eq!(status(raw), 400, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn host_is_required_once_in_http_1_1_and_optional_in_1_0() {
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
        assert_eq!(head(b"GET / HTTP/1.0\r\n\r\n").host, None);
        assert_eq!(head(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").host, Some(""));
        let h = head(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
        assert_eq!(h.host, Some("[::1]:8080"));
    }

    #[test]
    fn the_host_table_holds_exactly_the_authority_characters() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b);
            assert_eq!(AUTHORITY[usize::from(b)], expected, "byte {b}");
        }
    }

    #[test]
    fn get_and_head_without_a_length_have_no_body() {
        for m in ["GET", "HEAD", "POST"] {
            let raw = format!("{m} / HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(head(raw.as_bytes()).body, BodyKind::None);
        }
    }

    #[test]
    fn http_1_1_keeps_alive_unless_connection_close() {
        assert!(head(GET).keep_alive);
        let close = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n";
        assert!(!head(close).keep_alive);
    }

    #[test]
    fn http_1_0_closes_unless_connection_keep_alive() {
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        let both = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n";
        assert!(!head(both).keep_alive);
    }

    #[test]
    fn expect_100_continue_is_recognised_case_insensitively_in_http_1_1_only() {
        let raw = b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n";
        assert!(head(raw).expect_continue);
        assert!(!head(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn upgrade_is_reported_only_when_connection_lists_it() {
        let ws = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(head(ws).upgrade.as_deref(), Some("websocket"));
        let no_conn = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(head(no_conn).upgrade, None);
        let http10 = b"GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(head(http10).upgrade, None);
    }

    #[test]
    fn idempotent_methods_are_the_rfc_9110_ones() {
        for (m, idem) in [
            ("GET", true),
            ("HEAD", true),
            ("PUT", true),
            ("DELETE", true),
        ]
        .into_iter()
        .chain([
            ("OPTIONS", true),
            ("TRACE", true),
            ("POST", false),
            ("PATCH", false),
        ]) {
            let raw = format!("{m} / HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(head(raw.as_bytes()).idempotent(), idem, "{m}");
        }
    }

    #[test]
    fn other_versions_and_malformed_request_lines_are_400() {
        for raw in [
            &b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1 x\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\rX: y\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(status(raw), 400, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut raw = GET.to_vec();
            let at = (x % raw.len() as u64) as usize;
            raw[at] = (x >> 32) as u8;
            raw.truncate(((x >> 16) % (raw.len() as u64 + 1)) as usize);
            let _ = parse(&raw);
        }
    }
}
