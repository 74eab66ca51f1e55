//! Owns the responses lbctl answers by itself (a refused head, no server,
//! a timeout): [`error_response`] and the reason phrases of their statuses.

use std::io::Write;

/// The statuses lbctl answers by itself; any other asks for a 500.
const CANNED: [u16; 9] = [400, 408, 413, 414, 431, 500, 502, 503, 504];

/// The reason phrase of a status (RFC 9110 §15), or "" for one we do not name.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// A complete plain-text response for `status` (one of 400, 408, 413, 414,
/// 431, 500, 502, 503, 504; any other is answered as 500), with
/// `Connection: close` or `keep-alive`. The body is `"<code> <reason>\n"`.
pub fn error_response(status: u16, close: bool) -> Vec<u8> {
    let status = if CANNED.contains(&status) {
        status
    } else {
        500
    };
    let reason = reason_phrase(status);
    // "503 " + reason + "\n"
    let body_len = reason.len() + 5;
    let connection = if close { "close" } else { "keep-alive" };
    let mut out = Vec::with_capacity(128);
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {body_len}\r\n\
         Connection: {connection}\r\n\r\n{status} {reason}\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{BodyKind, Limits, parse_response};

    #[test]
    fn a_503_is_a_complete_plain_text_response() {
        assert_eq!(
            error_response(503, true),
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n\
              Connection: close\r\n\r\n503 Service Unavailable\n"
        );
    }

    #[test]
    fn every_canned_response_parses_with_its_exact_body_length() {
        for status in CANNED {
            for close in [true, false] {
                let raw = error_response(status, close);
                let head = parse_response(&raw, &Limits::default(), false);
                let head = head.ok().flatten().expect("parses");
                assert_eq!(head.status, status);
                assert_eq!(head.keep_alive, !close);
                let body = &raw[head.head_len..];
                assert_eq!(head.body, BodyKind::Length(body.len() as u64));
                assert_eq!(
                    body,
                    format!("{status} {}\n", reason_phrase(status)).as_bytes()
                );
            }
        }
    }

    #[test]
    fn an_unknown_status_is_answered_as_500() {
        assert_eq!(error_response(418, false), error_response(500, false));
    }
}
