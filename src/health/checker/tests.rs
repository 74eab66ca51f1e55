//! Owns the checker's tests: a real mio loop around a [`Checker`] against
//! loopback servers (pass, refuse, wrong status or body, garbage, silence,
//! timeout, rise/fall flips, shutdown).

use super::*;
use crate::health::probe::tests::http_kind;
use mio::{Events, Poll};
use std::net::{TcpListener, TcpStream as StdStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

const TOKEN_BASE: usize = 100;
const ID: usize = 7;

fn config(kind: HealthKind) -> HealthConfig {
    HealthConfig {
        kind,
        interval: Duration::from_millis(10),
        timeout: Duration::from_secs(2),
        rise: 2,
        fall: 3,
    }
}

fn target(addr: SocketAddr, config: HealthConfig) -> Target {
    Target {
        id: ID,
        addr,
        config,
        send_proxy: None,
        tls: None,
    }
}

/// A real mio loop around a checker, the way the master drives it.
struct Harness {
    poll: Poll,
    events: Events,
    checker: Checker,
}

impl Harness {
    fn new(targets: Vec<Target>) -> Harness {
        Harness {
            poll: Poll::new().expect("create poll"),
            events: Events::with_capacity(64),
            checker: Checker::new(targets, TOKEN_BASE, Instant::now()),
        }
    }

    fn one(target: Target) -> Harness {
        Harness::new(vec![target])
    }

    /// Runs the loop until at least `n` reports arrived (or a generous guard
    /// expires, which the caller's assertions then expose).
    fn reports(&mut self, n: usize) -> Vec<Report> {
        let guard = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < guard {
            let now = Instant::now();
            self.checker.tick(self.poll.registry(), now, &mut out);
            if out.len() >= n {
                break;
            }
            let wait = self
                .checker
                .timeout(now)
                .map_or(Duration::from_millis(50), |t| {
                    t.min(Duration::from_millis(50))
                });
            self.poll.poll(&mut self.events, Some(wait)).expect("poll");
            let now = Instant::now();
            for event in self.events.iter() {
                assert!(self.checker.owns(event.token()), "foreign token {event:?}");
                self.checker
                    .event(self.poll.registry(), event, now, &mut out);
            }
        }
        assert!(out.len() >= n, "wanted {n} reports, got {out:?}");
        out
    }

    fn report(&mut self) -> Report {
        let mut got = self.reports(1);
        assert_eq!(
            got.len(),
            1,
            "one target gives one report at a time: {got:?}"
        );
        got.remove(0)
    }
}

/// A loopback server answering each connection, one at a time, with `handle`.
fn serve(handle: impl Fn(StdStream) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            // A stuck probe must never wedge the server thread.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            handle(stream);
        }
    });
    addr
}

/// Reads until the end of an HTTP request head (or EOF / error).
fn read_head(stream: &mut StdStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

fn http_server(reply: &'static [u8]) -> SocketAddr {
    serve(move |mut s| {
        read_head(&mut s);
        let _ = s.write_all(reply);
    })
}

fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr")
}

#[test]
fn checker_has_its_first_probe_due_at_once_and_owns_only_its_tokens() {
    let addr = closed_port();
    let checker = Checker::new(
        vec![
            target(addr, config(HealthKind::Tcp)),
            target(addr, config(HealthKind::Tcp)),
        ],
        TOKEN_BASE,
        Instant::now(),
    );
    assert_eq!(checker.timeout(Instant::now()), Some(Duration::ZERO));
    assert!(!checker.owns(Token(TOKEN_BASE - 1)));
    assert!(checker.owns(Token(TOKEN_BASE)));
    assert!(checker.owns(Token(TOKEN_BASE + 1)));
    assert!(!checker.owns(Token(TOKEN_BASE + 2)));
    assert!(!checker.owns(Token(0)));
}

#[test]
fn tcp_probe_passes_against_a_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let mut h = Harness::one(target(addr, config(HealthKind::Tcp)));
    let r = h.report();
    assert_eq!(r.id, ID);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "ok");
    assert_eq!(r.transition, None);
    assert!(r.state.up);
    assert_eq!(r.state.successes, 1);
    drop(listener);
}

#[test]
fn tcp_probe_fails_with_connect_refused_against_a_closed_port() {
    let mut h = Harness::one(target(closed_port(), config(HealthKind::Tcp)));
    let r = h.report();
    assert!(!r.ok);
    assert_eq!(r.detail, "connect refused");
    assert_eq!(r.state.failures, 1);
}

#[test]
fn http_probe_passes_on_200_and_sends_the_expected_request() {
    let (tx, rx) = mpsc::channel();
    let addr = serve(move |mut s| {
        let head = read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let _ = tx.send(head);
    });
    let mut h = Harness::one(target(addr, config(http_kind(None))));
    let r = h.report();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "ok");
    let head = rx.recv().expect("server saw the request");
    assert_eq!(
        String::from_utf8(head).expect("utf8"),
        format!(
            "GET /health HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: lbctl-health\r\nConnection: close\r\n\r\n"
        )
    );
}

#[test]
fn http_probe_fails_on_503_although_tcp_accepts() {
    let addr = http_server(b"HTTP/1.0 503 Service Unavailable\r\n\r\ndown");
    let mut h = Harness::new(vec![
        target(addr, config(http_kind(None))),
        Target {
            id: ID + 1,
            ..target(addr, config(HealthKind::Tcp))
        },
    ]);
    let mut got = h.reports(2);
    got.sort_by_key(|r| r.id);
    assert!(!got[0].ok);
    assert_eq!(got[0].detail, "status 503");
    assert!(got[1].ok, "{:?}", got[1]);
}

#[test]
fn http_probe_checks_the_body() {
    let addr = http_server(b"HTTP/1.0 200 OK\r\n\r\nall systems alive\n");
    let mut h = Harness::one(target(addr, config(http_kind(Some("alive")))));
    assert_eq!(h.report().detail, "ok");

    let addr = http_server(b"HTTP/1.0 200 OK\r\n\r\nmaintenance\n");
    let mut h = Harness::one(target(addr, config(http_kind(Some("alive")))));
    assert_eq!(h.report().detail, "body mismatch");
}

/// Answers with `pieces` written one by one with pauses between them, then
/// keeps the connection open until the probe closes it.
fn http_server_in_pieces(pieces: &'static [&'static [u8]]) -> SocketAddr {
    serve(move |mut s| {
        read_head(&mut s);
        for piece in pieces {
            if s.write_all(piece).and_then(|()| s.flush()).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(30));
        }
        let mut sink = [0u8; 64];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    })
}

#[test]
fn http_probe_judges_a_chunked_reply_split_across_reads_by_its_framing() {
    const PIECES: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nTransfer-",
        b"Encoding: chunked\r\n\r\n4\r\nal",
        b"iv\r\n1\r\ne\r\n",
        b"0\r\n\r\n",
    ];
    // The server keeps the connection open: the framing, not the close,
    // ends the reply, well before the 2s timeout.
    for (needle, detail) in [("alive", "ok"), ("dead", "body mismatch")] {
        let addr = http_server_in_pieces(PIECES);
        let mut h = Harness::one(target(addr, config(http_kind(Some(needle)))));
        let started = Instant::now();
        let r = h.report();
        assert_eq!(r.detail, detail, "{needle}: {r:?}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{needle}: judged only after {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn http_probe_reports_garbage_and_silent_close() {
    let addr = http_server(b"220 smtp.example ESMTP\r\n");
    let mut h = Harness::one(target(addr, config(http_kind(None))));
    assert_eq!(h.report().detail, "bad response");

    let addr = serve(|mut s| {
        read_head(&mut s);
    });
    let mut h = Harness::one(target(addr, config(http_kind(None))));
    assert_eq!(h.report().detail, "connection closed");
}

#[test]
fn http_probe_stops_reading_a_huge_reply_at_the_bound() {
    let addr = serve(|mut s| {
        read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
        let junk = vec![b'x'; 64 * 1024];
        // The probe closes after MAX_RESPONSE bytes; the write then fails.
        for _ in 0..32 {
            if s.write_all(&junk).is_err() {
                break;
            }
        }
    });
    let mut h = Harness::one(target(addr, config(http_kind(Some("needle")))));
    assert_eq!(h.report().detail, "body mismatch");
}

#[test]
fn send_expect_probe_passes_on_the_expected_reply() {
    let addr = serve(|mut s| {
        let mut ping = [0u8; 6];
        if s.read_exact(&mut ping).is_ok() && &ping == b"PING\r\n" {
            let _ = s.write_all(b"+PONG\r\n");
        }
    });
    let kind = HealthKind::SendExpect {
        send: b"PING\r\n".to_vec(),
        expect: b"+PONG".to_vec(),
    };
    let mut h = Harness::one(target(addr, config(kind)));
    let r = h.report();
    assert!(r.ok, "{r:?}");
}

#[test]
fn send_expect_probe_fails_on_a_wrong_reply() {
    let addr = serve(|mut s| {
        let mut ping = [0u8; 6];
        let _ = s.read_exact(&mut ping);
        let _ = s.write_all(b"-ERR unknown command\r\n");
    });
    let kind = HealthKind::SendExpect {
        send: b"PING\r\n".to_vec(),
        expect: b"+PONG".to_vec(),
    };
    let mut h = Harness::one(target(addr, config(kind)));
    assert_eq!(h.report().detail, "unexpected reply");
}

#[test]
fn probe_of_a_server_that_never_answers_times_out() {
    let (tx, rx) = mpsc::channel();
    let addr = serve(move |s| {
        // Hold the connection open without a word.
        let _ = tx.send(s);
    });
    let mut cfg = config(http_kind(None));
    cfg.timeout = Duration::from_millis(200);
    let mut h = Harness::one(target(addr, cfg));
    let r = h.report();
    assert!(!r.ok);
    assert_eq!(r.detail, "timeout after 200ms");
    drop(rx);
}

#[test]
fn rise_and_fall_transitions_are_reported_once() {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&healthy);
    let addr = serve(move |mut s| {
        read_head(&mut s);
        let reply: &[u8] = if flag.load(Ordering::SeqCst) {
            b"HTTP/1.0 200 OK\r\n\r\n"
        } else {
            b"HTTP/1.0 500 Oops\r\n\r\n"
        };
        let _ = s.write_all(reply);
    });
    let mut cfg = config(http_kind(None));
    cfg.rise = 2;
    cfg.fall = 2;
    let mut h = Harness::one(target(addr, cfg));

    // Each probe starts only after the previous report, so flipping the
    // flag between reports decides the next probe's result.
    let mut step = |ok: bool| {
        healthy.store(ok, Ordering::SeqCst);
        let r = h.report();
        assert_eq!(r.ok, ok, "{r:?}");
        (r.transition, r.state.up)
    };
    assert_eq!(step(true), (None, true));
    assert_eq!(step(false), (None, true));
    assert_eq!(step(false), (Some(Transition::Down), false));
    assert_eq!(step(false), (None, false));
    assert_eq!(step(true), (None, false));
    assert_eq!(step(true), (Some(Transition::Up), true));
    assert_eq!(step(true), (None, true));
}

#[test]
fn forced_down_server_needs_rise_successes_to_come_back() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let mut h = Harness::one(target(addr, config(HealthKind::Tcp)));
    h.checker.force(ID, HealthState::new_down());
    assert_eq!(h.checker.state(ID), Some(HealthState::new_down()));
    assert_eq!(h.report().transition, None);
    let r = h.report();
    assert_eq!(r.transition, Some(Transition::Up));
    assert!(r.state.up);
    assert_eq!(h.checker.state(ID).map(|s| s.up), Some(true));
    drop(listener);
}

#[test]
fn shutdown_closes_probes_and_stops_scheduling() {
    let (tx, rx) = mpsc::channel();
    let addr = serve(move |s| {
        let _ = tx.send(s);
    });
    let mut h = Harness::one(target(addr, config(http_kind(None))));
    let mut out = Vec::new();
    h.checker.tick(h.poll.registry(), Instant::now(), &mut out);
    // The probe is in flight once the server has its connection.
    let mut server_side = rx.recv().expect("probe connected");
    h.checker.shutdown(h.poll.registry());
    assert_eq!(h.checker.timeout(Instant::now()), None);
    h.checker.tick(
        h.poll.registry(),
        Instant::now() + Duration::from_secs(60),
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
    // The probe's socket is closed: the server reads EOF (or a reset).
    let mut buf = [0u8; 256];
    loop {
        match server_side.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
                break;
            }
        }
    }
}

#[test]
fn send_proxy_probes_start_with_the_header_of_no_client() {
    use crate::proxy_protocol::Version;
    // tcp: the v2 LOCAL header is written before the probe passes.
    let (tx, rx) = mpsc::channel();
    let addr = serve(move |mut s| {
        let mut got = [0u8; 16];
        let _ = s.read_exact(&mut got);
        let _ = tx.send(got.to_vec());
    });
    let mut h = Harness::one(Target {
        send_proxy: Some(Version::V2),
        ..target(addr, config(HealthKind::Tcp))
    });
    assert!(h.report().ok);
    assert_eq!(
        rx.recv().expect("header"),
        b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"
    );
    // http: v1 UNKNOWN, then the request.
    let (tx, rx) = mpsc::channel();
    let addr = serve(move |mut s| {
        let head = read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let _ = tx.send(head);
    });
    let mut h = Harness::one(Target {
        send_proxy: Some(Version::V1),
        ..target(addr, config(http_kind(None)))
    });
    assert!(h.report().ok);
    let head = String::from_utf8(rx.recv().expect("request")).expect("utf8");
    assert!(
        head.starts_with("PROXY UNKNOWN\r\nGET /health HTTP/1.0\r\n"),
        "{head}"
    );
}

#[test]
fn a_retargeted_probe_keeps_its_proxy_header() {
    use crate::proxy_protocol::Version;
    // A DNS slot: paused until it gets an address, then probed there.
    let (tx, rx) = mpsc::channel();
    let addr = serve(move |mut s| {
        let head = read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let _ = tx.send(head);
    });
    let mut h = Harness::one(Target {
        send_proxy: Some(Version::V1),
        ..target(closed_port(), config(http_kind(None)))
    });
    h.checker.pause(ID);
    h.checker
        .retarget(h.poll.registry(), ID, Some(addr), Instant::now());
    assert!(h.report().ok);
    let head = String::from_utf8(rx.recv().expect("request")).expect("utf8");
    assert!(
        head.starts_with("PROXY UNKNOWN\r\nGET /health HTTP/1.0\r\n"),
        "{head}"
    );
}
