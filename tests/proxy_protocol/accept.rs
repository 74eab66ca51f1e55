//! `accept_proxy = true`: lbctl behind another balancer. The header's
//! client address is what source_hash, the per-client limits,
//! X-Forwarded-For, a `send_proxy` server and `lbctl connections` see;
//! bytes after the header in the same segment are relayed; a bad, missing,
//! slow or cut-off header closes that connection only and is counted.

use super::{ProxyBackend, Serve, V2_LOCAL, closed_by_peer, read_line, sa, v1, v2};
use crate::util::backend::Backend;
use crate::util::http_backend::HttpBackend;
use crate::util::http_client::{HttpConn, get};
use crate::util::json::array_of;
use crate::util::{Conf, Lbctl, Master, ServerConf, TempDir, WAIT, connect, free_addr, wait_until};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

/// Sends `first` in one write, then reads the backend's header line and
/// the echo of the `hello` that came in the same write.
fn relay(bind: SocketAddr, header: &[u8]) -> (TcpStream, String) {
    let mut s = connect(bind).expect("connect");
    let mut first = header.to_vec();
    first.extend_from_slice(b"hello\n");
    s.write_all(&first).expect("write");
    let learned = read_line(&mut s);
    assert_eq!(
        read_line(&mut s),
        "hello",
        "bytes after the header were lost"
    );
    (s, learned)
}

#[test]
fn tcp_headers_v1_v2_local_and_unknown_give_the_address_lbctl_uses() {
    let dir = TempDir::new();
    let b = ProxyBackend::start(Serve::Echo);
    let conf = Conf::new(&dir, &[]).listen(|l| {
        l.servers(vec![ServerConf::new(b.addr()).key(r#"send_proxy = "v1""#)])
            .line("accept_proxy = true")
    });
    let path = conf.write(&dir);
    let _m = Master::start(&dir, &path);
    let bind = conf.bind();

    let (held, learned) = relay(bind, &v1(sa("203.0.113.9:4444"), sa("192.0.2.1:80")));
    assert_eq!(learned, "v1 TCP4 203.0.113.9:4444 192.0.2.1:80");
    let (_s, learned) = relay(bind, &v2(sa("198.51.100.7:5555"), sa("192.0.2.1:443")));
    assert_eq!(learned, "v1 TCP4 198.51.100.7:5555 192.0.2.1:443");
    // LOCAL and UNKNOWN: the real peer and the address it connected to.
    for header in [V2_LOCAL, b"PROXY UNKNOWN\r\n"] {
        let (s, learned) = relay(bind, header);
        let me = s.local_addr().expect("local");
        assert_eq!(learned, format!("v1 TCP4 {me} {bind}"));
    }
    // `connections` lists the header's client.
    let lbctl = Lbctl::new(&dir, &path);
    let mut last = Value::Null;
    assert!(
        wait_until(WAIT, || {
            last = lbctl.run("connections", &["--json"]).json();
            array_of(&last, "connections")
                .iter()
                .any(|c| c["client"] == "203.0.113.9:4444")
        }),
        "{last:#}"
    );
    drop(held);
    let st = lbctl.run("status", &["--json"]).json();
    assert_eq!(st["listens"][0]["proxy"]["accepted"], 4, "{st:#}");
}

/// Fetches the fixed reply for a client whose header says `src`.
fn fetch_as(bind: SocketAddr, src: &str) -> String {
    let mut s = connect(bind).expect("connect");
    s.write_all(&v1(sa(src), sa("192.0.2.1:80")))
        .expect("write");
    let _ = s.shutdown(Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn source_hash_hashes_the_header_address() {
    let dir = TempDir::new();
    let a = Backend::fixed("A");
    let b = Backend::fixed("B");
    let conf = Conf::new(&dir, &[a.addr(), b.addr()])
        .listen(|l| l.balance("source_hash").line("accept_proxy = true"));
    let _m = Master::start(&dir, &conf.write(&dir));
    let bind = conf.bind();
    // Every real connection comes from 127.0.0.1; the headers differ.
    let replies: BTreeSet<String> = (1..=16)
        .map(|n| fetch_as(bind, &format!("10.1.0.{n}:1000")))
        .collect();
    assert_eq!(
        replies,
        BTreeSet::from(["A".to_string(), "B".to_string()]),
        "16 header addresses did not spread"
    );
    for n in [3, 11] {
        let first = fetch_as(bind, &format!("10.1.0.{n}:1"));
        for port in 2..6 {
            assert_eq!(fetch_as(bind, &format!("10.1.0.{n}:{port}")), first);
        }
    }
}

#[test]
fn per_client_limits_count_the_header_address() {
    let dir = TempDir::new();
    let echo = Backend::echo();
    let conf = Conf::new(&dir, &[echo.addr()]).listen(|l| {
        l.line("accept_proxy = true")
            .line("max_conns_per_client = 1")
    });
    let path = conf.write(&dir);
    let _m = Master::start(&dir, &path);
    let bind = conf.bind();
    let served = |src: &str| {
        let mut s = connect(bind).expect("connect");
        let mut first = v2(sa(src), sa("192.0.2.1:80"));
        first.extend_from_slice(b"ping");
        s.write_all(&first).expect("write");
        let mut buf = [0u8; 4];
        let ok = matches!(s.read_exact(&mut buf), Ok(()) if &buf == b"ping");
        (s, ok)
    };
    let (_held, ok) = served("10.2.0.1:1000");
    assert!(ok, "the first connection of 10.2.0.1 was refused");
    let (_s, ok) = served("10.2.0.1:1001");
    assert!(!ok, "a second connection of 10.2.0.1 was served");
    let (_s, ok) = served("10.2.0.2:1000");
    assert!(ok, "10.2.0.2 (same real peer 127.0.0.1) was limited too");
    let st = Lbctl::new(&dir, &path).run("status", &["--json"]).json();
    assert_eq!(st["listens"][0]["limited"], 1, "{st:#}");
}

#[test]
fn bad_missing_slow_and_cut_headers_are_closed_and_counted_while_others_are_served() {
    let dir = TempDir::new();
    let echo = Backend::echo();
    let admin = free_addr();
    let conf = Conf::new(&dir, &[echo.addr()])
        .admin(admin, None)
        .listen(|l| l.line("accept_proxy = true").timeouts(r#"proxy = "300ms""#));
    let path = conf.write(&dir);
    let _m = Master::start(&dir, &path);
    let bind = conf.bind();

    // Slow and missing headers are open while a good client is served.
    let mut silent = connect(bind).expect("connect");
    let mut slow = connect(bind).expect("connect");
    slow.write_all(b"PROXY TCP4 10.0.").expect("write");
    let mut good = connect(bind).expect("connect");
    let mut first = v1(sa("10.3.0.1:1"), sa("192.0.2.1:80"));
    first.extend_from_slice(b"ok");
    good.write_all(&first).expect("write");
    let mut buf = [0u8; 2];
    good.read_exact(&mut buf)
        .expect("the good client was not served");
    assert_eq!(&buf, b"ok");

    let mut garbage = connect(bind).expect("connect");
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    assert!(closed_by_peer(&mut garbage), "garbage was not closed");
    let mut long = connect(bind).expect("connect");
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(200, b'x');
    long.write_all(&line).expect("write");
    assert!(
        closed_by_peer(&mut long),
        "a 200-byte v1 line was not closed"
    );
    let mut cut = connect(bind).expect("connect");
    cut.write_all(b"PROXY TCP4 10.0.0.1").expect("write");
    cut.shutdown(Shutdown::Write).expect("shutdown");
    assert!(closed_by_peer(&mut cut), "a cut header was not closed");
    assert!(
        closed_by_peer(&mut silent),
        "a silent client was not closed"
    );
    assert!(closed_by_peer(&mut slow), "a slow header was not closed");
    // The good client is still relayed.
    good.write_all(b"ok").expect("write");
    good.read_exact(&mut buf).expect("the good client was cut");

    let lbctl = Lbctl::new(&dir, &path);
    let st = lbctl.run("status", &["--json"]).json();
    let p = &st["listens"][0]["proxy"];
    assert_eq!(
        (&p["accepted"], &p["invalid"], &p["timeout"], &p["closed"]),
        (&1.into(), &2.into(), &2.into(), &1.into()),
        "{st:#}"
    );
    let text = lbctl.run("status", &[]).stdout;
    assert!(
        text.contains("web: 1 PROXY headers read, 5 connections closed for theirs (invalid 2, timeout 2, closed 1)"),
        "{text}"
    );
    let metrics = get(admin, "/metrics").text();
    for want in [
        r#"lbctl_listen_proxy_headers_total{listen="web"} 1"#,
        r#"lbctl_listen_proxy_header_errors_total{listen="web",reason="invalid"} 2"#,
        r#"lbctl_listen_proxy_header_errors_total{listen="web",reason="timeout"} 2"#,
        r#"lbctl_listen_proxy_header_errors_total{listen="web",reason="closed"} 1"#,
    ] {
        assert!(metrics.contains(want), "{want} not in:\n{metrics}");
    }
}

#[test]
fn http_mode_uses_the_header_address_for_xff_and_for_a_send_proxy_server() {
    let dir = TempDir::new();
    let web = HttpBackend::start("A");
    let conf = Conf::new(&dir, &[web.addr()]).listen(|l| l.http().line("accept_proxy = true"));
    let _m = Master::start(&dir, &conf.write(&dir));
    let bind = conf.bind();
    let mut c = HttpConn::connect(bind).expect("connect");
    c.send_raw(&v2(sa("198.51.100.4:777"), sa("192.0.2.1:80")))
        .expect("header");
    for _ in 0..2 {
        let r = c.request("GET", "/headers", &[], None).expect("response");
        let head = r.text().to_lowercase();
        assert!(head.contains("x-forwarded-for: 198.51.100.4\r\n"), "{head}");
    }
    drop(_m);

    // Both ways: accept_proxy on the listen, send_proxy to the server.
    let dir = TempDir::new();
    let b = ProxyBackend::start(Serve::Http);
    let conf = Conf::new(&dir, &[]).listen(|l| {
        l.http()
            .line("accept_proxy = true")
            .servers(vec![ServerConf::new(b.addr()).key(r#"send_proxy = "v2""#)])
    });
    let _m = Master::start(&dir, &conf.write(&dir));
    let bind = conf.bind();
    let mut c = HttpConn::connect(bind).expect("connect");
    c.send_raw(&v1(sa("203.0.113.50:6000"), sa("192.0.2.8:8443")))
        .expect("header");
    let r = c.request("GET", "/", &[], None).expect("response");
    assert_eq!(
        r.text().trim_end(),
        "v2 TCP4 203.0.113.50:6000 192.0.2.8:8443|conn=1|xff=203.0.113.50"
    );
}
