//! Owns the unit tests of `http.rs`: parsing whole, partial and bad
//! requests, the serialized response, and the helpers.

use super::*;

fn complete(raw: &[u8]) -> Request {
    match parse(raw) {
        Parsed::Complete(r) => r,
        other => panic!(
            "expected a request from {:?}: {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

fn invalid(raw: &[u8]) -> u16 {
    match parse(raw) {
        Parsed::Invalid(r) => r.status,
        other => panic!(
            "expected an error for {:?}: {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

#[test]
fn a_get_is_parsed_with_its_accept_header_and_without_its_query() {
    let r = complete(
        b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/metrics");
    assert_eq!(r.accept, "text/plain,*/*");
    assert!(r.body.is_empty());
}

#[test]
fn a_post_waits_for_its_whole_body() {
    let raw = b"POST /server/web/a/disable HTTP/1.1\r\nContent-Length: 11\r\n\
                Authorization: Bearer abc\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n\r\ntoken=abcde";
    for cut in 0..raw.len() {
        assert!(
            matches!(parse(&raw[..cut]), Parsed::Partial),
            "complete at {cut}"
        );
    }
    let r = complete(raw);
    assert_eq!(r.body, b"token=abcde");
    assert_eq!(r.authorization.as_deref(), Some("Bearer abc"));
    assert_eq!(r.content_type, "application/x-www-form-urlencoded");
}

#[test]
fn bad_and_oversized_requests_get_their_status() {
    assert_eq!(invalid(b"GET\r\n\r\n"), 400);
    assert_eq!(invalid(b"GET http://x/metrics HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(invalid(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
    assert_eq!(
        invalid(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        400
    );
    assert_eq!(
        invalid(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        411
    );
    let big = format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY + 1
    );
    assert_eq!(invalid(big.as_bytes()), 413);
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
    assert_eq!(invalid(long.as_bytes()), 431);
    let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        invalid(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
        431
    );
}

#[test]
fn responses_close_and_carry_their_length() {
    let r = Response::text(404, "no\n").header("Allow", "GET");
    let text = String::from_utf8(r.to_bytes(false)).expect("utf8");
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
    assert!(text.contains("\r\nContent-Length: 3\r\n"), "{text}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    assert!(text.contains("\r\nAllow: GET\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nno\n"), "{text}");
    let head = String::from_utf8(r.to_bytes(true)).expect("utf8");
    assert!(head.ends_with("\r\n\r\n"), "{head}");
}

#[test]
fn percent_escapes_and_form_fields_are_decoded() {
    assert_eq!(
        percent_decode("127.0.0.1%3A6001").as_deref(),
        Some("127.0.0.1:6001")
    );
    assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
    assert_eq!(percent_decode("%zz"), None);
    assert_eq!(percent_decode("%4"), None);
    assert_eq!(percent_decode("%ff"), None);
    assert_eq!(
        form_field(b"a=1&token=x%2By+z&b", "token").as_deref(),
        Some("x+y z")
    );
    assert_eq!(form_field(b"a=1", "token"), None);
}

#[test]
fn bearer_tokens_are_read_and_compared() {
    assert_eq!(bearer("Bearer abc"), Some("abc"));
    assert_eq!(bearer("bearer  abc "), Some("abc"));
    assert_eq!(bearer("Basic abc"), None);
    assert_eq!(bearer("Bearer "), None);
    assert!(same_secret(b"secret-token", b"secret-token"));
    assert!(!same_secret(b"secret-token", b"secret-tokeN"));
    assert!(!same_secret(b"secret-token", b"secret-token-longer"));
    assert!(!same_secret(b"", b"x"));
}

#[test]
fn openmetrics_is_chosen_only_when_asked_for_first() {
    let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
                      application/openmetrics-text;version=0.0.1;q=0.4,\
                      text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    assert!(wants_openmetrics(prometheus));
    assert!(wants_openmetrics("application/openmetrics-text"));
    assert!(!wants_openmetrics(""));
    assert!(!wants_openmetrics("*/*"));
    assert!(!wants_openmetrics("text/plain;version=0.0.4"));
    assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    assert!(!wants_openmetrics(
        "text/plain;q=0.9,application/openmetrics-text;q=0.5"
    ));
}
