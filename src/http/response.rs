//! Owns parsing a response head ([`parse_response`] → [`ResponseHead`]) and
//! deciding how its body is delimited (RFC 9112 §6.3) and whether the server
//! connection can be reused. Whatever is malformed or ambiguous is a
//! [`HeadError`] with status 502: the client gets an error, never a response
//! we might have split wrongly.

use super::fields::{self, Coding, Field, Fields, SpareFields};
use super::{BodyKind, HeadError, Limits, Version};

/// A parsed response head, borrowed from the bytes it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead<'a> {
    /// The server's protocol version.
    pub version: Version,
    /// The status code, 100..=599.
    pub status: u16,
    /// The reason phrase as sent (empty when absent or not ASCII).
    pub reason: &'a str,
    /// Every field in order, name case as sent, value OWS-trimmed.
    pub headers: Vec<Field<'a>>,
    /// Bytes of the head, final CRLFCRLF included.
    pub head_len: usize,
    /// How the body is delimited.
    pub body: BodyKind,
    /// Whether the server connection can carry another request after this
    /// response (false for `UntilClose` bodies and for 101).
    pub keep_alive: bool,
}

impl<'a> ResponseHead<'a> {
    /// A 1xx other than 101 (e.g. `100 Continue`): forward it, then expect
    /// another head for the same request.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// `101 Switching Protocols`: after this head both connections are a raw
    /// tunnel.
    pub fn is_switching_protocols(&self) -> bool {
        self.status == 101
    }

    /// The first field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        fields::values(&self.headers, name).next()
    }
}

const fn bad(reason: &'static str) -> HeadError {
    HeadError::new(502, reason)
}

/// Parses the response head at the start of `buf`, for a request whose
/// method was `HEAD` when `request_method_is_head` (its response has no body
/// whatever its fields say).
///
/// `Ok(None)`: incomplete. Limits are those of [`super::parse_request`]
/// (`uri_bytes` aside); exceeding them is 502.
pub fn parse_response<'a>(
    buf: &'a [u8],
    limits: &Limits,
    request_method_is_head: bool,
) -> Result<Option<ResponseHead<'a>>, HeadError> {
    parse_response_in(buf, limits, request_method_is_head, &mut SpareFields::new())
}

/// [`parse_response`] filling the allocation of `spare` with the fields (a session
/// hands back the list of its previous head: no allocation per head). The
/// list is taken from `spare` only once the head is complete.
pub fn parse_response_in<'a>(
    buf: &'a [u8],
    limits: &Limits,
    request_method_is_head: bool,
    spare: &mut SpareFields,
) -> Result<Option<ResponseHead<'a>>, HeadError> {
    if buf.is_empty() {
        // Nothing to parse yet (the session looks before every read): skip
        // the parser's setup.
        return Ok(None);
    }
    let window = buf.get(..limits.header_bytes).unwrap_or(buf);
    let mut slots = fields::HeaderSlots::new();
    let slots = slots.get(limits.headers);
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, window, slots);
    let head_len = match parsed {
        Err(e) => return Err(parse_error(e, window)),
        Ok(httparse::Status::Partial) if buf.len() >= limits.header_bytes.max(1) => {
            return Err(bad("response head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(n)) => n,
    };
    let (Some(minor), Some(status), Some(reason)) = (resp.version, resp.code, resp.reason) else {
        return Err(bad("incomplete status line"));
    };
    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(bad("unsupported HTTP version")),
    };
    if !(100..=599).contains(&status) {
        return Err(bad("invalid status code"));
    }
    // No obs-fold check here: httparse (default config, multi-line fields
    // not allowed) refuses a folded line as an invalid field name, so a
    // complete head has none; `parse_error` names the fold (the test
    // `httparse_refuses_every_folded_line` keeps that true).
    let mut headers: Vec<Field<'a>> = std::mem::take(spare).take();
    headers.extend(resp.headers.iter().map(|h| (h.name, h.value)));
    let body = body_kind(&headers, version, status, request_method_is_head)?;
    let close = fields::has_token(&headers, "connection", b"close");
    let persistent = match version {
        Version::Http11 => !close,
        Version::Http10 => !close && fields::has_token(&headers, "connection", b"keep-alive"),
    };
    let keep_alive = persistent && body != BodyKind::UntilClose && status != 101;
    Ok(Some(ResponseHead {
        version,
        status,
        reason,
        headers,
        head_len,
        body,
        keep_alive,
    }))
}

fn parse_error(e: httparse::Error, window: &[u8]) -> HeadError {
    if fields::has_obs_fold(window) {
        return bad("obsolete line folding");
    }
    match e {
        httparse::Error::TooManyHeaders => bad("too many header fields"),
        httparse::Error::HeaderName => bad("invalid header name"),
        httparse::Error::HeaderValue => bad("invalid header value"),
        httparse::Error::NewLine => bad("invalid line ending"),
        httparse::Error::Version => bad("unsupported HTTP version"),
        httparse::Error::Status | httparse::Error::Token => bad("invalid status line"),
    }
}

/// RFC 9112 §6.3 for responses, in its order: no body for HEAD, 1xx, 204 and
/// 304 (their framing fields describe another message and are not checked);
/// chunked when it is the final coding, else until close; else
/// Content-Length; else until close. CL together with TE is refused (the RFC
/// allows TE to win but calls it a likely splitting attempt), and so is TE
/// from an HTTP/1.0 server (its framing is "faulty").
fn body_kind(
    headers: &Fields<'_>,
    version: Version,
    status: u16,
    head: bool,
) -> Result<BodyKind, HeadError> {
    if head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(BodyKind::None);
    }
    let framing = fields::framing(headers).map_err(bad)?;
    match (framing.length, framing.coding) {
        (Some(_), Some(_)) => Err(bad("both Content-Length and Transfer-Encoding")),
        (None, Some(_)) if version == Version::Http10 => {
            Err(bad("Transfer-Encoding in an HTTP/1.0 response"))
        }
        (None, Some(Coding::Chunked)) => Ok(BodyKind::Chunked),
        (None, Some(Coding::Other)) => Ok(BodyKind::UntilClose),
        (Some(n), None) => Ok(BodyKind::Length(n)),
        (None, None) => Ok(BodyKind::UntilClose),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<ResponseHead<'_>>, HeadError> {
        parse_response(raw, &Limits::default(), false)
    }

    fn head(raw: &[u8]) -> ResponseHead<'_> {
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

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\n";

    #[test]
    fn a_response_with_content_length_is_parsed() {
        let h = head(OK);
        assert_eq!(
            (h.version, h.status, h.reason),
            (Version::Http11, 200, "OK")
        );
        assert_eq!((h.head_len, h.body), (OK.len(), BodyKind::Length(5)));
        assert_eq!(h.header("x-a"), Some(&b"b"[..]));
        assert!(h.keep_alive && !h.is_interim());
    }

    #[test]
    fn body_bytes_after_the_head_are_not_consumed() {
        let mut raw = OK.to_vec();
        raw.extend_from_slice(b"hello");
        assert_eq!(head(&raw).head_len, OK.len());
    }

    #[test]
    fn a_partial_response_head_is_incomplete_at_every_split_point() {
        for i in 0..OK.len() {
            assert_eq!(parse(&OK[..i]), Ok(None), "prefix of {i} bytes");
        }
    }

    #[test]
    fn interim_no_content_and_not_modified_responses_have_no_body() {
        for code in [100, 102, 103, 204, 304] {
            let raw = format!("HTTP/1.1 {code} X\r\nContent-Length: 10\r\n\r\n");
            assert_eq!(head(raw.as_bytes()).body, BodyKind::None, "{code}");
        }
        assert!(head(b"HTTP/1.1 100 Continue\r\n\r\n").is_interim());
        assert!(head(b"HTTP/1.1 103 Early Hints\r\n\r\n").is_interim());
    }

    #[test]
    fn a_response_to_head_has_no_body_whatever_its_fields_say() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let h = parse_response(raw, &Limits::default(), true);
        assert_eq!(h.ok().flatten().map(|h| h.body), Some(BodyKind::None));
    }

    #[test]
    fn switching_protocols_has_no_body_and_ends_reuse() {
        let h = head(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(h.is_switching_protocols() && !h.is_interim() && !h.keep_alive);
        assert_eq!(h.body, BodyKind::None);
    }

    #[test]
    fn chunked_as_final_coding_is_chunked_and_any_other_reads_until_close() {
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (BodyKind::Chunked, true));
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (BodyKind::UntilClose, false));
    }

    #[test]
    fn no_length_means_until_close_and_no_reuse() {
        let h = head(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (BodyKind::UntilClose, false));
    }

    #[test]
    fn conflicting_or_ambiguous_framing_is_502() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n",
        ] {
            assert_eq!(status(raw), 502, "{:?}", String::from_utf8_lossy(raw));
        }
        let same = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(same.body, BodyKind::Length(5));
    }

    #[test]
    fn malformed_heads_and_limits_are_502() {
        for raw in [
            &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 600 High\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: b\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert_eq!(status(raw), 502, "{:?}", String::from_utf8_lossy(raw));
        }
        let small = Limits {
            header_bytes: 8,
            ..Limits::default()
        };
        assert_eq!(
            parse_response(OK, &small, false).map_err(|e| e.status),
            Err(502)
        );
        let few = Limits {
            headers: 1,
            ..Limits::default()
        };
        assert_eq!(
            parse_response(OK, &few, false).map_err(|e| e.status),
            Err(502)
        );
    }

    #[test]
    fn http_1_0_servers_are_reused_only_with_keep_alive_and_a_length() {
        let h = head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(h.keep_alive);
        let h = head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
    }

    #[test]
    fn an_empty_reason_phrase_is_accepted() {
        assert_eq!(head(b"HTTP/1.1 204 \r\n\r\n").reason, "");
        assert_eq!(head(b"HTTP/1.1 204\r\n\r\n").status, 204);
    }
}
