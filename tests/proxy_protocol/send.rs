//! `send_proxy = "v1" | "v2"`: the server learns the client's address from
//! a header written before any client byte; health checks send UNKNOWN /
//! LOCAL and keep the server up; in http mode a pooled connection is only
//! reused by the client it was opened for.

use super::{ProxyBackend, Serve, read_line};
use crate::util::http_client::HttpConn;
use crate::util::loadgen::connect_from;
use crate::util::{Conf, Lbctl, Master, ServerConf, TempDir, WAIT, wait_until};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Connects from `src`, writes `hello` at once (before lbctl can have
/// connected the server), and returns the header line the backend echoed
/// first and the echo that follows.
fn through(bind: SocketAddr, src: IpAddr) -> (String, String) {
    let mut s = connect_from(src, bind).expect("connect");
    s.write_all(b"hello\n").expect("write");
    let header = read_line(&mut s);
    let echo = read_line(&mut s);
    (header, echo)
}

#[test]
fn tcp_servers_learn_the_client_address_in_v1_and_v2_and_checks_keep_them_up() {
    let dir = TempDir::new();
    let b1 = ProxyBackend::start(Serve::Echo);
    let b2 = ProxyBackend::start(Serve::Echo);
    let conf = Conf::new(&dir, &[]).listen(|l| {
        l.servers(vec![
            ServerConf::new(b1.addr()).key(r#"send_proxy = "v1""#),
            ServerConf::new(b2.addr()).key(r#"send_proxy = "v2""#),
        ])
        .health(r#"{ kind = "tcp", interval = "100ms", timeout = "1s", rise = 1, fall = 1 }"#)
    });
    let path = conf.write(&dir);
    let _m = Master::start(&dir, &path);
    let bind = conf.bind();

    let mut versions = Vec::new();
    for n in 2..6u8 {
        let src = ip(&format!("127.0.0.{n}"));
        let (header, echo) = through(bind, src);
        let f: Vec<&str> = header.split(' ').collect();
        assert_eq!(f.len(), 4, "{header}");
        assert_eq!(f[1], "TCP4", "{header}");
        let (s, d): (SocketAddr, SocketAddr) =
            (f[2].parse().expect("src"), f[3].parse().expect("dst"));
        assert_eq!(s.ip(), src, "{header}");
        assert_eq!(d, bind, "{header}");
        assert_eq!(echo, "hello", "the client's bytes came after the header");
        versions.push(f[0].to_string());
    }
    assert!(
        versions.contains(&"v1".into()) && versions.contains(&"v2".into()),
        "{versions:?}"
    );

    // The checks send what HAProxy's do: v1 UNKNOWN, v2 LOCAL.
    assert!(
        wait_until(WAIT, || b1.seen().iter().any(|h| h == "v1 UNKNOWN")
            && b2.seen().iter().any(|h| h == "v2 LOCAL")),
        "{:?} {:?}",
        b1.seen(),
        b2.seen()
    );
    for b in [&b1, &b2] {
        assert!(
            !b.seen().iter().any(|h| h.starts_with("bad")),
            "{:?}",
            b.seen()
        );
    }
    let st = Lbctl::new(&dir, &path).run("status", &["--json"]).json();
    for s in st["listens"][0]["servers"].as_array().expect("servers") {
        assert_eq!(s["state"], "up", "{st:#}");
    }
}

#[test]
fn ipv6_clients_are_sent_as_tcp6() {
    let Ok(probe) = TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback (::1) on this machine");
        return;
    };
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let dir = TempDir::new();
    let b1 = ProxyBackend::start_on("[::1]:0", Serve::Echo);
    let b2 = ProxyBackend::start_on("[::1]:0", Serve::Echo);
    let bind: SocketAddr = format!("[::1]:{port}").parse().expect("bind");
    let conf = Conf::new(&dir, &[]).listen(|mut l| {
        l.bind = bind;
        l.servers(vec![
            ServerConf::new(b1.addr()).key(r#"send_proxy = "v1""#),
            ServerConf::new(b2.addr()).key(r#"send_proxy = "v2""#),
        ])
    });
    let _m = Master::start(&dir, &conf.write(&dir));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (header, echo) = through(bind, ip("::1"));
        assert_eq!(echo, "hello");
        let f: Vec<&str> = header.split(' ').collect();
        assert_eq!(f[1], "TCP6", "{header}");
        assert_eq!(f[2].parse::<SocketAddr>().expect("src").ip(), ip("::1"));
        assert_eq!(f[3].parse::<SocketAddr>().expect("dst"), bind);
        seen.push(f[0].to_string());
    }
    seen.sort();
    assert_eq!(seen, ["v1", "v2"]);
}

/// One request on `c`; the backend's answer.
fn ask(c: &mut HttpConn) -> String {
    let r = c.request("GET", "/", &[], None).expect("response");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().trim_end().to_string()
}

fn field<'a>(answer: &'a str, name: &str) -> &'a str {
    answer
        .split('|')
        .find_map(|f| f.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {answer}"))
}

#[test]
fn http_pooled_connections_are_private_to_their_client() {
    let dir = TempDir::new();
    let b = ProxyBackend::start(Serve::Http);
    let conf = Conf::new(&dir, &[]).workers(1).listen(|l| {
        l.http()
            .servers(vec![ServerConf::new(b.addr()).key(r#"send_proxy = "v2""#)])
    });
    let _m = Master::start(&dir, &conf.write(&dir));
    let bind = conf.bind();
    let open = |src: &str| {
        HttpConn::from_stream(bind, connect_from(ip(src), bind).expect("connect")).expect("conn")
    };
    let mut a = open("127.0.0.2");
    let mut c = open("127.0.0.3");
    let a1 = ask(&mut a);
    let c1 = ask(&mut c);
    let a2 = ask(&mut a);
    let c2 = ask(&mut c);
    for (answer, src) in [
        (&a1, "127.0.0.2"),
        (&a2, "127.0.0.2"),
        (&c1, "127.0.0.3"),
        (&c2, "127.0.0.3"),
    ] {
        let header = answer.split('|').next().unwrap_or_default();
        assert!(header.starts_with(&format!("v2 TCP4 {src}:")), "{answer}");
        assert_eq!(field(answer, "xff="), src, "{answer}");
    }
    // Each client keeps its own server connection; none is shared.
    assert_eq!(field(&a1, "conn="), field(&a2, "conn="), "{a1} / {a2}");
    assert_eq!(field(&c1, "conn="), field(&c2, "conn="), "{c1} / {c2}");
    assert_ne!(field(&a1, "conn="), field(&c1, "conn="), "{a1} / {c1}");
    // A client that comes after A closed does not get A's connection.
    drop(a);
    let mut d = open("127.0.0.4");
    let d1 = ask(&mut d);
    assert!(d1.starts_with("v2 TCP4 127.0.0.4:"), "{d1}");
    assert_ne!(field(&d1, "conn="), field(&a1, "conn="));
}
