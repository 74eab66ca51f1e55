//! Owns the tests of TLS origination to servers (`tls = { verify, ca, sni }`
//! on a server): HTTPS to the backend in http mode with pooled keep-alive
//! TLS connections, re-encryption in tcp mode, the configured SNI sent, a
//! server whose certificate the `ca` does not sign failed over (and a 502
//! when it is the only one), `verify = false` accepted, and health checks
//! that do the handshake.

use super::pki::Ca;
use super::tls_backend::TlsBackend;
use crate::util::http_client::{HttpConn, try_get};
use crate::util::json::{servers, str_of};
use crate::util::{Conf, Lbctl, Master, ServerConf, TempDir, WAIT, wait_until};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn tls_key(ca: &Path, sni: &str) -> String {
    format!(
        "tls = {{ verify = true, ca = \"{}\", sni = \"{sni}\" }}",
        ca.display()
    )
}

#[test]
fn http_mode_speaks_https_to_the_server_over_pooled_tls_connections() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let leaf = ca.leaf(dir.path(), "backend", &["backend.test"]);
    let backend = TlsBackend::start("B", &leaf);
    let server = ServerConf::new(backend.addr()).key(&tls_key(&ca.pem, "backend.test"));
    let conf = Conf::new(&dir, &[]).listen(|l| l.http().servers(vec![server]));
    let _m = Master::start(&dir, &conf.write(&dir));
    let mut c = HttpConn::connect(conf.bind()).expect("connect");
    let mut conns = Vec::new();
    for _ in 0..3 {
        let r = c.request("GET", "/", &[], None).expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "B");
        conns.push(r.header("x-conn").expect("x-conn"));
    }
    // Further clients, one request each: the pooled TLS connection serves
    // them too.
    for _ in 0..3 {
        let r = try_get(conf.bind(), "/").expect("get");
        assert_eq!(r.text(), "B");
        conns.push(r.header("x-conn").expect("x-conn"));
    }
    assert!(
        conns[..3].iter().all(|c| c == &conns[0]),
        "one kept-alive TLS connection for the keep-alive client: {conns:?}"
    );
    let handshakes = backend.handshakes.load(Ordering::SeqCst);
    assert!(
        handshakes <= 3,
        "pooled TLS connections reused: {handshakes} handshakes for 6 requests"
    );
    let snis = backend.snis();
    assert!(
        snis.iter().all(|s| s.as_deref() == Some("backend.test")),
        "{snis:?}"
    );
}

#[test]
fn tcp_mode_re_encrypts_to_the_server() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let leaf = ca.leaf(dir.path(), "backend", &["origin.test"]);
    let backend = TlsBackend::start("T", &leaf);
    let server = ServerConf::new(backend.addr()).key(&tls_key(&ca.pem, "origin.test"));
    let conf = Conf::new(&dir, &[]).listen(|l| l.servers(vec![server]));
    let _m = Master::start(&dir, &conf.write(&dir));
    let mut s = TcpStream::connect(conf.bind()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while !got.ends_with(b"\r\n\r\nT") {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "EOF after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
    assert_eq!(backend.snis(), vec![Some("origin.test".to_string())]);
}

#[test]
fn a_server_the_ca_does_not_sign_fails_over_and_alone_gets_a_502() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).expect("mkdir");
    let rogue_ca = Ca::new(&other_dir);
    let good_leaf = ca.leaf(dir.path(), "good", &["app.test"]);
    let bad_leaf = rogue_ca.leaf(&other_dir, "bad", &["app.test"]);
    let good = TlsBackend::start("good", &good_leaf);
    let bad = TlsBackend::start("bad", &bad_leaf);
    let key = tls_key(&ca.pem, "app.test");
    let servers = vec![
        ServerConf::new(bad.addr()).key(&key),
        ServerConf::new(good.addr()).key(&key),
    ];
    let conf = Conf::new(&dir, &[]).listen(|l| l.http().balance("round_robin").servers(servers));
    let m = Master::start(&dir, &conf.write(&dir));
    for _ in 0..4 {
        let r = try_get(conf.bind(), "/").expect("get");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "good", "the rogue server never answers");
    }
    assert_eq!(bad.handshakes.load(Ordering::SeqCst), 0);
    drop(m);
    // The rogue server alone: no server can be had.
    let dir2 = TempDir::new();
    let servers = vec![ServerConf::new(bad.addr()).key(&key)];
    let conf = Conf::new(&dir2, &[]).listen(|l| l.http().servers(servers));
    let _m = Master::start(&dir2, &conf.write(&dir2));
    let r = try_get(conf.bind(), "/").expect("get");
    assert!(r.status == 502 || r.status == 503, "status {}", r.status);
}

#[test]
fn verify_false_accepts_any_certificate_and_sni_defaults_to_none_for_an_ip() {
    let dir = TempDir::new();
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let rogue_ca = Ca::new(&other);
    let leaf = rogue_ca.leaf(&other, "any", &["whatever.test"]);
    let backend = TlsBackend::start("any", &leaf);
    let server = ServerConf::new(backend.addr()).key("tls = { verify = false }");
    let conf = Conf::new(&dir, &[]).listen(|l| l.http().servers(vec![server]));
    let _m = Master::start(&dir, &conf.write(&dir));
    let r = try_get(conf.bind(), "/").expect("get");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "any");
    assert_eq!(backend.snis(), vec![None]);
}

fn server_state(lbctl: &Lbctl, addr: &str) -> Option<String> {
    let st = lbctl.try_status_json()?;
    servers(&st, 0)
        .iter()
        .find(|s| str_of(s, "addr") == addr)
        .map(|s| str_of(s, "state").to_string())
}

#[test]
fn health_checks_do_the_handshake_and_mark_a_wrong_certificate_down() {
    for kind in ["tcp", "http"] {
        let dir = TempDir::new();
        let ca = Ca::new(dir.path());
        let other_dir = dir.path().join("other");
        std::fs::create_dir_all(&other_dir).expect("mkdir");
        let rogue_ca = Ca::new(&other_dir);
        let good = TlsBackend::start("good", &ca.leaf(dir.path(), "good", &["app.test"]));
        let bad = TlsBackend::start("bad", &rogue_ca.leaf(&other_dir, "bad", &["app.test"]));
        let key = tls_key(&ca.pem, "app.test");
        let servers = vec![
            ServerConf::new(bad.addr()).key(&key),
            ServerConf::new(good.addr()).key(&key),
        ];
        let health = format!(
            "{{ kind = \"{kind}\", interval = \"100ms\", timeout = \"500ms\", rise = 1, fall = 1 }}"
        );
        let conf = Conf::new(&dir, &[]).listen(|l| {
            let l = if kind == "http" { l.http() } else { l };
            l.retries(0).servers(servers).health(&health)
        });
        let path = conf.write(&dir);
        let _m = Master::start(&dir, &path);
        let lbctl = Lbctl::new(&dir, &path);
        let mut last = None;
        assert!(
            wait_until(WAIT, || {
                last = server_state(&lbctl, &bad.addr().to_string());
                last.as_deref() == Some("down")
            }),
            "{kind}: the server with a certificate the ca does not sign stays {last:?}"
        );
        // The good one passes its TLS checks (handshakes seen) and stays up.
        assert!(
            wait_until(WAIT, || good.handshakes.load(Ordering::SeqCst) >= 2),
            "{kind}: no TLS probe reached the good server"
        );
        assert_eq!(
            server_state(&lbctl, &good.addr().to_string()).as_deref(),
            Some("up"),
            "{kind}"
        );
    }
}

#[test]
fn check_and_reload_refuse_a_bad_ca_and_the_old_config_keeps_serving() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let backend = TlsBackend::start("B", &ca.leaf(dir.path(), "b", &["b.test"]));
    let conf_with = |key: &str| {
        let server = ServerConf::new(backend.addr()).key(key);
        Conf::new(&dir, &[]).listen(|l| l.http().servers(vec![server]))
    };
    let good = conf_with(&tls_key(&ca.pem, "b.test"));
    let path = good.write(&dir);
    let _m = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    assert_eq!(try_get(good.bind(), "/").expect("get").text(), "B");
    // Not PEM, missing, and verify without ca: each refused by check and
    // by reload, naming the key and line.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    for (key, words) in [
        (tls_key(&junk, "b.test"), "holds no CERTIFICATE"),
        (tls_key(&dir.join("nowhere.pem"), "b.test"), "cannot read"),
        ("tls = { verify = true }".to_string(), "needs ca"),
    ] {
        conf_with(&key).write_to(&path);
        lbctl
            .run("check", &[])
            .assert_code(1)
            .assert_contains("listen[0].servers[0].tls.ca")
            .assert_contains(words)
            .assert_contains("line");
        lbctl
            .run("reload", &[])
            .assert_code(1)
            .assert_contains("listen[0].servers[0].tls.ca");
        assert_eq!(try_get(good.bind(), "/").expect("get").text(), "B");
    }
}
