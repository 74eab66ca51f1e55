//! Owns the answers lbctl gives itself: 400 for each request-smuggling
//! shape, 414/431 past the limits, 503 with no usable server, 408 for a
//! slowloris client (while others are served), 504 for a silent server.

use super::start_http;
use crate::util::backend::refusing_addr;
use crate::util::http_backend::HttpBackend;
use crate::util::http_client::HttpConn;
use crate::util::{Conf, Master, TempDir, WAIT, wait_until};
use std::time::Instant;

fn answer_to(bind: std::net::SocketAddr, raw: &[u8]) -> u16 {
    let mut c = HttpConn::connect(bind).expect("connect");
    c.send_raw(raw).expect("send");
    let r = c.read_response().expect("an answer");
    r.status
}

#[test]
fn request_smuggling_shapes_get_400() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l);
    let cases: &[(&str, &[u8])] = &[
        (
            "CL and TE",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "differing CLs",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        ),
        (
            "bad chunk size",
            b"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "TE not ending in chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        ),
    ];
    for (what, raw) in cases {
        assert_eq!(answer_to(bind, raw), 400, "{what}");
    }
    // And the balancer still serves.
    let mut c = HttpConn::connect(bind).expect("connect");
    assert_eq!(c.request("GET", "/ok", &[], None).expect("ok").status, 200);
}

#[test]
fn limits_answer_414_and_431() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| {
        l.line(r#"limits = { header_bytes = "4KiB", headers = 10, uri_bytes = "1KiB" }"#)
    });
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
    assert_eq!(answer_to(bind, long_uri.as_bytes()), 414);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..20 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(answer_to(bind, many.as_bytes()), 431);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    assert_eq!(answer_to(bind, big.as_bytes()), 431);
}

#[test]
fn no_usable_server_answers_503() {
    let dir = TempDir::new();
    let conf = Conf::new(&dir, &[refusing_addr(), refusing_addr()]).listen(|l| l.http());
    let _m = Master::start(&dir, &conf.write(&dir));
    let mut c = HttpConn::connect(conf.bind()).expect("connect");
    let r = c.request("GET", "/", &[], None).expect("answer");
    assert_eq!(r.status, 503);
}

#[test]
fn a_slowloris_client_gets_408_after_the_header_timeout_while_others_are_served() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l.timeouts(r#"header = "1s""#));
    let mut slow = HttpConn::connect(bind).expect("connect");
    slow.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .expect("send");
    let started = Instant::now();
    // Everyone else is served meanwhile, on fresh and kept-alive connections.
    let mut other = HttpConn::connect(bind).expect("connect");
    for _ in 0..5 {
        assert_eq!(
            other.request("GET", "/fast", &[], None).expect("ok").status,
            200
        );
    }
    // The slow one keeps trickling bytes, yet is cut off by the deadline.
    slow.stream()
        .set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .expect("timeout");
    let mut got: Option<Result<u16, String>> = None;
    assert!(
        wait_until(WAIT, || {
            let _ = slow.send_raw(b"a");
            match slow.read_response() {
                Ok(r) => got = Some(Ok(r.status)),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => got = Some(Err(e.to_string())),
            }
            got.is_some()
        }),
        "the slow client was never answered"
    );
    assert_eq!(got, Some(Ok(408)));
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
}

#[test]
fn a_server_that_does_not_answer_in_time_gets_504() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l.timeouts(r#"server = "500ms""#));
    let mut c = HttpConn::connect(bind).expect("connect");
    let r = c
        .request("GET", "/slow?ms=3000", &[], None)
        .expect("answer");
    assert_eq!(r.status, 504);
}

#[test]
fn status_counts_requests_by_class_per_worker_listen_and_server() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l);
    let mut c = HttpConn::connect(bind).expect("connect");
    for _ in 0..5 {
        assert_eq!(c.request("GET", "/x", &[], None).expect("ok").status, 200);
    }
    assert_eq!(
        answer_to(
            bind,
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        ),
        400
    );
    let lbctl = crate::util::Lbctl::new(&dir, &dir.join("lbctl.toml"));
    let mut last = serde_json::Value::Null;
    let counted = wait_until(WAIT, || {
        let out = lbctl.run("status", &["--json"]);
        last = out.json();
        last["listens"][0]["requests"] == 6
    });
    assert!(counted, "requests not counted: {last:#}");
    let l = &last["listens"][0];
    assert_eq!(l["mode"], "http");
    assert_eq!(l["responses"]["2xx"], 5);
    assert_eq!(l["responses"]["4xx"], 1);
    assert_eq!(l["local"]["4xx"], 1);
    assert_eq!(l["servers"][0]["requests"], 5);
    assert_eq!(l["servers"][0]["responses"]["2xx"], 5);
    let per_worker: u64 = last["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(per_worker, 6);
    let text = lbctl.run("status", &[]).stdout;
    assert!(
        text.contains("web: 6 requests (2xx 5, 3xx 0, 4xx 1, 5xx 0)"),
        "{text}"
    );
}
