//! Owns per-request balancing: one keep-alive client connection spread over
//! the servers, server connections reused from the pool, pipelined requests
//! answered in order.

use super::start_http;
use crate::util::TempDir;
use crate::util::http_backend::HttpBackend;
use crate::util::http_client::HttpConn;

#[test]
fn one_keepalive_connection_alternates_between_servers_per_request() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let b = HttpBackend::start("B");
    let (_m, bind) = start_http(&dir, &[&a, &b], |l| l);
    let mut c = HttpConn::connect(bind).expect("connect");
    let mut names = Vec::new();
    for i in 0..6 {
        let r = c
            .request("GET", &format!("/r{i}"), &[], None)
            .expect("response");
        assert_eq!(r.status, 200);
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(body.ends_with(&format!(" /r{i}\n")), "body {body:?}");
        names.push(body.split(' ').next().unwrap_or("").to_string());
    }
    for w in names.windows(2) {
        assert_ne!(
            w[0], w[1],
            "consecutive requests went to one server: {names:?}"
        );
    }
    // Server connections are reused from the pool: far fewer than requests.
    assert!(
        a.connections() + b.connections() <= 4,
        "server connections not reused: {} + {}",
        a.connections(),
        b.connections()
    );
}

#[test]
fn twenty_pipelined_requests_are_answered_in_order() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let b = HttpBackend::start("B");
    let (_m, bind) = start_http(&dir, &[&a, &b], |l| l);
    let mut c = HttpConn::connect(bind).expect("connect");
    let mut raw = Vec::new();
    for i in 0..20 {
        raw.extend_from_slice(format!("GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    c.send_raw(&raw).expect("send");
    for i in 0..20 {
        let r = c.read_response().expect("response");
        assert_eq!(r.status, 200);
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(
            body.ends_with(&format!(" /p{i}\n")),
            "response {i}: {body:?}"
        );
    }
}

#[test]
fn http_10_client_gets_its_answer_and_the_connection_closes() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l);
    let mut c = HttpConn::connect(bind).expect("connect");
    c.send_raw(b"GET /old HTTP/1.0\r\n\r\n").expect("send");
    let r = c.read_response().expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body), "A /old\n");
    assert!(
        c.at_eof().expect("read"),
        "an HTTP/1.0 client without keep-alive is closed"
    );
}
