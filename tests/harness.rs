//! Owns the self-tests of the harness (no lbctl involved): backends, temp dir,
//! wait_until, the /proc process-tree cleanup the Master guard relies on, and
//! the HTTP kit (backend routes, keep-alive, pipelining, kill; the client).

use std::io::ErrorKind;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::backend::{Backend, refusing_addr};
use crate::util::http_backend::{HttpBackend, sha256_hex};
use crate::util::http_client::{HttpConn, build_request, get, try_get};
use crate::util::pseudo_random_bytes;
use crate::util::scripted::Scripted;
use crate::util::{
    TempDir, WAIT, children_of, connect, exchange, fetch, kill_master_tree, pid_alive, wait_until,
};

#[test]
fn harness_backends_behave_as_documented() {
    let echo = Backend::echo();
    assert_eq!(exchange(echo.addr(), b"abc").expect("echo"), b"abc");
    let late = Backend::echo_after_eof();
    assert_eq!(
        exchange(late.addr(), b"xyz").expect("echo after eof"),
        b"xyz"
    );
    let fixed = Backend::fixed("Hello, World!");
    assert_eq!(fetch(fixed.addr()).expect("fixed"), "Hello, World!");
    assert_eq!(fixed.accepted(), 1);
    assert!(connect(refusing_addr()).is_err(), "refusing addr accepted");

    let hold = Backend::hold();
    let mut s = connect(hold.addr()).expect("hold connect");
    assert!(wait_until(WAIT, || hold.open_connections() == 1));
    hold.release();
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut buf).expect("EOF after release");
    assert!(buf.is_empty());
}

/// What a connect to `addr` gets: refused (the wanted outcome of a stopped
/// backend), or connected (then whether the connection is reset).
fn connect_outcome(addr: std::net::SocketAddr) -> String {
    match connect(addr) {
        Err(e) => format!("{:?}", e.kind()),
        Ok(mut s) => {
            let mut buf = Vec::new();
            match std::io::Read::read_to_end(&mut s, &mut buf) {
                Ok(_) => format!("connected, then {:?}", String::from_utf8_lossy(&buf)),
                Err(e) => format!("connected, then {:?}", e.kind()),
            }
        }
    }
}

#[test]
fn harness_stopped_backends_refuse_even_while_their_listener_has_another_descriptor() {
    // The copy stands for a process another test forked and has not exec'd
    // yet: it holds every descriptor, and the listening socket with them.
    let scripted = Scripted::fixed("s");
    let addr = scripted.addr();
    assert_eq!(fetch(addr).expect("scripted before the kill"), "s");
    let copy = scripted.listener_copy();
    scripted.kill();
    let after_kill = connect_outcome(addr);
    drop(copy);
    assert_eq!(after_kill, "ConnectionRefused", "killed scripted backend");

    let backend = Backend::fixed("b");
    let addr = backend.addr();
    assert_eq!(fetch(addr).expect("backend before the drop"), "b");
    let copy = backend.listener_copy();
    drop(backend);
    let after_drop = connect_outcome(addr);
    drop(copy);
    assert_eq!(after_drop, "ConnectionRefused", "dropped backend");
}

#[test]
fn harness_a_handshake_under_way_when_a_backend_is_killed_is_completed_and_served() {
    use socket2::{SockFilter, SockRef};
    let scripted = Scripted::fixed("s");
    let addr = scripted.addr();
    // Through a second descriptor, hold back the last ACK of handshakes
    // (drop packets with ACK set): a client connects, its handshake stays
    // under way on the server (SYN_RECV), as one caught mid-way by a kill.
    let copy = scripted.listener_copy();
    let drop_acks = [
        SockFilter::new(0x30, 0, 0, 13),       // ldb [13]: the flags
        SockFilter::new(0x54, 0, 0, 0x10),     // and #ACK
        SockFilter::new(0x15, 0, 1, 0x10),     // jeq #ACK ? next : skip one
        SockFilter::new(0x06, 0, 0, 0),        // ret #0: drop
        SockFilter::new(0x06, 0, 0, u32::MAX), // ret #all: keep
    ];
    SockRef::from(&copy)
        .attach_filter(&drop_acks)
        .expect("attach an ACK-dropping filter");
    let mut client = connect(addr).expect("the client's side of the handshake completes");
    assert_eq!(
        crate::util::handshakes::under_way(addr),
        1,
        "SYN_RECV on {addr}"
    );
    // Lifted at once (the kill's own wake-up connect must get through): the
    // held-back handshake finishes only when the server retransmits its
    // SYN-ACK, about a second later, well inside the kill.
    SockRef::from(&copy)
        .detach_filter()
        .expect("detach the ACK-dropping filter");
    drop(copy);
    // The kill waits for that handshake, then serves it.
    scripted.kill();
    let mut reply = Vec::new();
    let read = std::io::Read::read_to_end(&mut client, &mut reply).map_err(|e| e.kind());
    assert_eq!(
        (
            read.map(|_| ()),
            String::from_utf8_lossy(&reply).to_string()
        ),
        (Ok(()), "s".to_string()),
        "a client caught mid-handshake by the kill"
    );
    assert_eq!(connect_outcome(addr), "ConnectionRefused", "after the kill");
}

#[test]
fn harness_temp_dir_is_removed_on_drop() {
    let dir = TempDir::new();
    let p = dir.path().to_path_buf();
    std::fs::write(dir.join("f"), "x").expect("write");
    drop(dir);
    assert!(!p.exists());
}

#[test]
fn harness_kills_a_process_and_its_children() {
    // A parent that ignores SIGTERM, with two children: all must die.
    let mut child = TreeGuard(
        Command::new("sh")
            .arg("-c")
            .arg("trap '' TERM; sleep 100 & sleep 100 & wait")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sh"),
    );
    let pid = child.0.id() as i32;
    assert!(wait_until(WAIT, || children_of(pid).len() == 2));
    let kids = children_of(pid);
    kill_master_tree(pid, Duration::from_millis(200));
    let _ = child.0.wait();
    assert!(!pid_alive(pid));
    assert!(
        wait_until(WAIT, || kids.iter().all(|&k| !pid_alive(k))),
        "children survived: {kids:?}"
    );
}

/// Kills a child and its descendants on drop unless it was already reaped
/// (so a failed assertion leaves no `sh` or `sleep` behind).
struct TreeGuard(Child);

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            kill_master_tree(self.0.id() as i32, Duration::ZERO);
            let _ = self.0.wait();
        }
    }
}

#[test]
fn harness_http_backend_keeps_connections_alive() {
    let b = HttpBackend::start("a");
    let mut c = HttpConn::connect(b.addr()).expect("connect");
    for path in ["/one", "/two?x=1"] {
        let r = c.request("GET", path, &[], None).expect("request");
        assert_eq!((r.status, r.text()), (200, format!("a {path}\n")));
        assert_eq!(r.header("x-backend").as_deref(), Some("a"));
        assert!(!r.has_token("connection", "close"), "{r:?}");
    }
    assert_eq!((b.connections(), b.requests()), (1, 2));

    // Connection: close on HTTP/1.1, and HTTP/1.0 without keep-alive, close.
    let r = c
        .request("GET", "/three", &[("Connection", "close")], None)
        .expect("request with close");
    assert!(r.has_token("connection", "close"), "{r:?}");
    assert!(c.at_eof().expect("eof after close"));
    let mut c = HttpConn::connect(b.addr()).expect("connect");
    c.send_raw(b"GET /old HTTP/1.0\r\n\r\n").expect("send");
    assert_eq!(c.read_response().expect("1.0 response").text(), "a /old\n");
    assert!(c.at_eof().expect("HTTP/1.0 closes"));
    // HTTP/1.0 with keep-alive stays open.
    let mut c = HttpConn::connect(b.addr()).expect("connect");
    for _ in 0..2 {
        c.send_raw(b"GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .expect("send");
        let r = c.read_response().expect("1.0 keep-alive response");
        assert!(r.has_token("connection", "keep-alive"), "{r:?}");
    }
    assert_eq!(b.connections(), 3);

    // /close closes; HEAD has no body; the one-shot get.
    let mut c = HttpConn::connect(b.addr()).expect("connect");
    let r = c.request("HEAD", "/h", &[], None).expect("HEAD");
    assert_eq!(
        (r.header("content-length").as_deref(), r.body.len()),
        (Some("5"), 0)
    );
    let r = c.request("GET", "/close", &[], None).expect("/close");
    assert_eq!(
        (r.text(), r.has_token("connection", "close")),
        ("a /close\n".into(), true)
    );
    assert!(c.at_eof().expect("/close closes"));
    assert_eq!(get(b.addr(), "/x").text(), "a /x\n");
}

#[test]
fn harness_http_backend_streams_a_chunked_download() {
    let b = HttpBackend::start("d");
    let len = 10 * 1024 * 1024;
    let mut c = HttpConn::connect(b.addr()).expect("connect");
    let r = c
        .request("GET", &format!("/download?bytes={len}&seed=7"), &[], None)
        .expect("download");
    assert!(
        r.chunked && r.header("content-length").is_none(),
        "{:?}",
        r.headers
    );
    assert!(r.body == pseudo_random_bytes(len, 7), "10 MiB body differs");
    let r = c
        .request("GET", "/download?bytes=0&seed=1", &[], None)
        .expect("empty download on the same connection");
    assert!(r.chunked && r.body.is_empty());
    assert_eq!(b.connections(), 1);

    // On the wire: chunks from a few bytes to 64 KiB, then the last chunk.
    let mut c = HttpConn::connect(b.addr()).expect("connect");
    c.send_raw(b"GET /download?bytes=2000000&seed=3 HTTP/1.1\r\nConnection: close\r\n\r\n")
        .expect("send");
    let raw = c.read_raw_to_end().expect("raw download");
    let start = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head end")
        + 4;
    let sizes = chunk_sizes(&raw[start..]);
    assert_eq!(sizes.iter().sum::<usize>(), 2_000_000);
    let (min, max) = (sizes.iter().min(), sizes.iter().max());
    assert!(
        min < Some(&64) && max > Some(&32_768) && max <= Some(&65_536),
        "{sizes:?}"
    );
}

/// The data sizes of a raw chunked body (the last, empty chunk not listed).
fn chunk_sizes(mut raw: &[u8]) -> Vec<usize> {
    let mut sizes = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk line");
        let line = std::str::from_utf8(&raw[..eol]).expect("ascii chunk line");
        let n = usize::from_str_radix(line, 16).expect("hex chunk size");
        if n == 0 {
            assert_eq!(&raw[eol..], b"\r\n\r\n", "after the last chunk");
            return sizes;
        }
        sizes.push(n);
        raw = &raw[eol + 2 + n + 2..];
    }
}

#[test]
fn harness_http_backend_hashes_uploads_by_length_and_chunked() {
    let b = HttpBackend::start("h");
    let data = pseudo_random_bytes(1024 * 1024 + 3, 11);
    let want = format!("{}\n", sha256_hex(&data));
    let mut c = HttpConn::connect(b.addr()).expect("connect");
    let r = c
        .request("POST", "/sha256", &[], Some(&data))
        .expect("upload by length");
    assert_eq!(r.text(), want);
    let r = c
        .request(
            "PUT",
            "/sha256",
            &[("Transfer-Encoding", "chunked")],
            Some(&data),
        )
        .expect("chunked upload");
    assert_eq!(r.text(), want);
    let r = c
        .request("POST", "/sha256", &[("Expect", "100-continue")], Some(b""))
        .expect("empty upload");
    assert_eq!(
        (r.interim.clone(), r.text()),
        (vec![100], format!("{}\n", sha256_hex(b"")))
    );
    assert_eq!(b.connections(), 1);
    // A chunked request really is chunked on the wire.
    let raw = build_request(
        b.addr(),
        "PUT",
        "/x",
        &[("Transfer-Encoding", "chunked")],
        Some(&data),
    );
    assert!(raw.ends_with(b"\r\n0\r\n\r\n") && raw.len() > data.len() + 64);
}

#[test]
fn harness_http_backend_echoes_the_request_head() {
    let b = HttpBackend::start("e");
    let mut c = HttpConn::connect(b.addr()).expect("connect");
    let headers = [("X-Forwarded-For", "10.0.0.1"), ("Keep-Alive", "timeout=5")];
    let sent = build_request(b.addr(), "GET", "/headers", &headers, None);
    c.send_raw(&sent).expect("send");
    let r = c.read_response().expect("/headers");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), String::from_utf8_lossy(&sent));
    assert!(r.text().contains(&format!("Host: {}\r\n", b.addr())));
    assert_eq!(b.last_head(), sent);
}

#[test]
fn harness_http_backend_upgrades_to_an_echoing_websocket() {
    let b = HttpBackend::start("w");
    let mut c = HttpConn::connect(b.addr()).expect("connect");
    let r = c
        .request(
            "GET",
            "/ws",
            &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
            None,
        )
        .expect("upgrade");
    assert_eq!(r.status, 101, "{r:?}");
    assert!(r.has_token("upgrade", "websocket") && r.has_token("connection", "upgrade"));
    let data = pseudo_random_bytes(300_000, 3);
    c.send_raw(&data).expect("send after upgrade");
    assert!(
        c.read_raw(data.len()).expect("echo") == data,
        "echo differs"
    );
    c.shutdown_write().expect("shutdown");
    assert!(c.read_raw_to_end().expect("EOF after ours").is_empty());
    // Without the upgrade headers: 426.
    assert_eq!(get(b.addr(), "/ws").status, 426);
}

#[test]
fn harness_http_backend_kill_refuses_and_resets_open_connections() {
    let b = HttpBackend::start("k");
    let mut idle = HttpConn::connect(b.addr()).expect("connect idle");
    idle.request("GET", "/", &[], None).expect("first request");
    let mut busy = HttpConn::connect(b.addr()).expect("connect busy");
    busy.send_raw(b"GET /download?bytes=33554432&seed=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send download");
    assert_eq!(busy.read_raw(1000).expect("download starts").len(), 1000);
    let slow = std::thread::spawn({
        let addr = b.addr();
        move || try_get(addr, "/slow?ms=60000")
    });
    assert!(wait_until(WAIT, || b.requests() == 3));

    let t0 = Instant::now();
    b.kill();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "kill took {:?}",
        t0.elapsed()
    );
    assert!(connect(b.addr()).is_err(), "connect accepted after kill");
    assert_eq!(b.open_connections(), 0);
    let err = idle
        .at_eof()
        .expect_err("idle connection was closed, not reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let err = busy.read_raw_to_end().expect_err("download ended cleanly");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let err = slow
        .join()
        .expect("slow thread")
        .expect_err("slow answered");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    b.kill();
}

#[test]
fn harness_http_backend_answers_pipelined_requests_in_order() {
    let b = HttpBackend::start("p");
    let mut c = HttpConn::connect(b.addr()).expect("connect");
    let mut raw = Vec::new();
    let mut want = Vec::new();
    for i in 0..20 {
        if i % 5 == 4 {
            let body = pseudo_random_bytes(i * 1000, i as u64);
            raw.extend(build_request(b.addr(), "POST", "/sha256", &[], Some(&body)));
            want.push(format!("{}\n", sha256_hex(&body)));
        } else {
            raw.extend(build_request(b.addr(), "GET", &format!("/p{i}"), &[], None));
            want.push(format!("p /p{i}\n"));
        }
    }
    c.send_raw(&raw).expect("send 20 requests at once");
    for (i, w) in want.iter().enumerate() {
        let r = c.read_response().expect("pipelined response");
        assert_eq!(&r.text(), w, "response {i}");
    }
    assert_eq!((b.connections(), b.requests()), (1, 20));
}

#[test]
fn harness_http_backend_slow_waits_and_a_restart_reuses_the_address() {
    let b = HttpBackend::start("s");
    let t0 = Instant::now();
    assert_eq!(get(b.addr(), "/slow?ms=300").text(), "s /slow?ms=300\n");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let addr = b.addr();
    b.kill();
    let again = HttpBackend::start_at("s2", addr);
    assert_eq!(get(addr, "/").text(), "s2 /\n");
    drop(again);
    assert!(connect(addr).is_err(), "dropped backend still accepts");
}
