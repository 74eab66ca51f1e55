//! Owns header rewriting: X-Forwarded-For appended, X-Forwarded-Proto set,
//! RFC 7239 Forwarded when asked, Host kept, hop-by-hop headers removed.

use super::start_http;
use crate::util::TempDir;
use crate::util::http_backend::HttpBackend;
use crate::util::http_client::HttpConn;

fn head_seen(bind: std::net::SocketAddr, headers: &[(&str, &str)]) -> String {
    let mut c = HttpConn::connect(bind).expect("connect");
    let r = c
        .request("GET", "/headers", headers, None)
        .expect("response");
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).to_lowercase()
}

#[test]
fn x_forwarded_for_is_appended_and_proto_set() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l);
    let head = head_seen(
        bind,
        &[("X-Forwarded-For", "203.0.113.7"), ("Host", "site.test")],
    );
    assert!(
        head.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(head.contains("x-forwarded-proto: http\r\n"), "{head}");
    assert!(head.contains("host: site.test\r\n"), "{head}");
    let head = head_seen(bind, &[]);
    assert!(head.contains("x-forwarded-for: 127.0.0.1\r\n"), "{head}");
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l);
    let head = head_seen(
        bind,
        &[
            ("Connection", "X-Secret, keep-alive"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("X-Kept", "yes"),
        ],
    );
    for gone in ["x-secret", "keep-alive:", "te:", "connection: x-secret"] {
        assert!(!head.contains(gone), "{gone} was forwarded: {head}");
    }
    assert!(head.contains("x-kept: yes"), "{head}");
}

#[test]
fn forwarded_list_chooses_the_headers() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l.line(r#"forwarded = ["forwarded"]"#));
    let head = head_seen(bind, &[]);
    assert!(
        head.contains("forwarded: for=127.0.0.1;proto=http"),
        "{head}"
    );
    assert!(!head.contains("x-forwarded-for"), "{head}");
}
