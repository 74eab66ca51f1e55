//! Owns the tests of TLS termination on a listen.

use super::pki::{Ca, tls_line};
use super::{client, tool, with_tls};
use crate::util::backend::Backend;
use crate::util::http_backend::HttpBackend;
use crate::util::{Conf, Master, TempDir, wait_until};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn curl(ca: &std::path::Path, name: &str, bind: SocketAddr, path: &str) -> Option<String> {
    let resolve = format!("{name}:{}:127.0.0.1", bind.port());
    let url = format!("https://{name}:{}{path}", bind.port());
    let ca = ca.display().to_string();
    let out = tool(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            &url,
        ],
    )?;
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).to_lowercase())
}

#[test]
fn sni_picks_each_names_certificate_and_proto_is_https() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let a = ca.leaf(dir.path(), "a", &["a.test"]);
    let b = ca.leaf(dir.path(), "b", &["*.b.test"]);
    let backend = HttpBackend::start("A");
    let conf = with_tls(
        Conf::new(&dir, &[backend.addr()]).listen(|l| l.http()),
        &tls_line(&[&a, &b]),
    );
    let _m = Master::start(&dir, &conf.write(&dir));
    let bind = conf.bind();
    // curl checks the name against the certificate: each name is served
    // the certificate that carries it (the wildcard covers www.b.test).
    let Some(head) = curl(&ca.pem, "a.test", bind, "/headers") else {
        eprintln!("curl missing: skipped");
        return;
    };
    assert!(head.contains("x-forwarded-proto: https\r\n"), "{head}");
    curl(&ca.pem, "www.b.test", bind, "/headers").expect("curl");
    // Our own client sees which certificate came: SNI picks, an unknown
    // name gets the first (default) one.
    let cfg = client::config(&ca.pem);
    let s = client::connect(&cfg, bind, "www.b.test").expect("tls b");
    assert_eq!(client::served_cert(&s), b.der);
    let s = client::connect(&cfg, bind, "a.test").expect("tls a");
    assert_eq!(client::served_cert(&s), a.der);
    let ca_path = ca.pem.display().to_string();
    let addr = bind.to_string();
    let out = tool(
        "openssl",
        &[
            "s_client",
            "-connect",
            &addr,
            "-servername",
            "other.test",
            "-CAfile",
            &ca_path,
        ],
    )
    .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CN = a"),
        "default certificate for an unknown name: {text}"
    );
}

#[test]
fn tls_1_2_and_1_3_are_both_spoken_with_alpn_http_1_1() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let a = ca.leaf(dir.path(), "a", &["a.test"]);
    let backend = HttpBackend::start("A");
    let conf = with_tls(
        Conf::new(&dir, &[backend.addr()]).listen(|l| l.http()),
        &tls_line(&[&a]),
    );
    let _m = Master::start(&dir, &conf.write(&dir));
    let (addr, ca_path) = (conf.bind().to_string(), ca.pem.display().to_string());
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let Some(out) = tool(
            "openssl",
            &[
                "s_client",
                "-connect",
                &addr,
                "-servername",
                "a.test",
                "-CAfile",
                &ca_path,
                "-alpn",
                "http/1.1",
                flag,
                "-brief",
            ],
        ) else {
            eprintln!("openssl missing: skipped");
            return;
        };
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Protocol version: {version}")),
            "{flag}: {text}"
        );
        assert!(text.contains("Verification: OK"), "{flag}: {text}");
    }
    // ALPN: the http listen agrees on http/1.1.
    let mut cfg = (*client::config(&ca.pem)).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let s = client::connect(&std::sync::Arc::new(cfg), conf.bind(), "a.test").expect("tls");
    assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[test]
fn tcp_mode_offloads_tls_in_front_of_a_plain_service() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let a = ca.leaf(dir.path(), "a", &["a.test"]);
    let echo = Backend::echo();
    let conf = with_tls(Conf::new(&dir, &[echo.addr()]), &tls_line(&[&a]));
    let _m = Master::start(&dir, &conf.write(&dir));
    let cfg = client::config(&ca.pem);
    let mut s = client::connect(&cfg, conf.bind(), "a.test").expect("tls");
    // More than one TLS record and more than a relay buffer each way.
    let data = crate::util::pseudo_random_bytes(300_000, 17);
    let reader = {
        let want = data.len();
        let mut back = Vec::with_capacity(want);
        s.write_all(&data).expect("write");
        s.flush().expect("flush");
        let mut buf = [0u8; 16384];
        while back.len() < want {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "EOF after {} bytes", back.len());
            back.extend_from_slice(&buf[..n]);
        }
        back
    };
    assert!(reader == data, "echoed bytes differ");
    // The plain service saw one connection, made after the handshake.
    assert_eq!(echo.accepted(), 1);
}

#[test]
fn a_stalled_handshake_is_closed_by_the_timeout_while_others_are_served() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let a = ca.leaf(dir.path(), "a", &["a.test"]);
    let echo = Backend::echo();
    let conf = with_tls(
        Conf::new(&dir, &[echo.addr()])
            .workers(1)
            .listen(|l| l.timeouts("header = \"1s\"")),
        &tls_line(&[&a]),
    );
    let _m = Master::start(&dir, &conf.write(&dir));
    // Half a ClientHello header, then silence.
    let mut stalled = TcpStream::connect(conf.bind()).expect("connect");
    stalled.write_all(&[0x16, 0x03, 0x01]).expect("write");
    stalled
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    // The one worker serves another client meanwhile.
    let cfg = client::config(&ca.pem);
    let mut s = client::connect(&cfg, conf.bind(), "a.test").expect("tls");
    s.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"ping");
    // Then the stalled one is closed by the server (EOF or reset).
    let mut one = [0u8; 1];
    let closed = match stalled.read(&mut one) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => {
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut
        }
    };
    assert!(closed, "the stalled handshake was not closed");
    assert!(wait_until(Duration::from_secs(5), || echo.accepted() == 1));
}

#[test]
fn status_and_metrics_show_each_certificates_expiry() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let a = ca.leaf(dir.path(), "a", &["a.test"]);
    let b = ca.leaf(dir.path(), "b", &["*.b.test", "b.test"]);
    let admin = crate::util::free_addr();
    let conf = with_tls(
        Conf::new(&dir, &["127.0.0.1:6001".parse().expect("addr")]).admin(admin, None),
        &tls_line(&[&a, &b]),
    );
    let path = conf.write(&dir);
    let _m = Master::start(&dir, &path);
    let st = crate::util::Lbctl::new(&dir, &path).status_json();
    let certs = &st["listens"][0]["tls_certificates"];
    assert_eq!(certs[0]["name"], "a.test", "{st:#}");
    assert_eq!(certs[1]["names"][0], "*.b.test", "{st:#}");
    assert_eq!(certs[1]["names"][1], "b.test", "{st:#}");
    // rcgen's default notAfter is 4096-01-01.
    assert_eq!(
        certs[0]["not_after"].as_i64(),
        Some(67_090_118_400),
        "{st:#}"
    );
    assert!(
        certs[1]["expires_in_secs"].as_i64().unwrap_or(0) > 0,
        "{st:#}"
    );
    let mut c = crate::util::http_client::HttpConn::connect(admin).expect("admin");
    let r = c.request("GET", "/metrics", &[], None).expect("metrics");
    let text = r.text();
    let line = format!(
        "lbctl_tls_certificate_expiry_seconds{{listen=\"web\",name=\"a.test\",cert=\"{}\"}} 67090118400",
        a.cert.display()
    );
    assert!(text.contains(&line), "{text}");
    assert!(text.contains("name=\"*.b.test\""), "{text}");
}

#[test]
fn sessions_resume_on_whichever_worker_the_client_reaches() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let a = ca.leaf(dir.path(), "a", &["a.test"]);
    let echo = Backend::echo();
    let conf = with_tls(Conf::new(&dir, &[echo.addr()]).workers(4), &tls_line(&[&a]));
    let _m = Master::start(&dir, &conf.write(&dir));
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[versions])
        .expect("versions")
        .with_root_certificates(std::sync::Arc::new(root_store(&ca.pem)))
        .with_no_client_auth();
        let cfg = std::sync::Arc::new(cfg);
        // Each new connection lands on a worker picked by the kernel (one
        // SO_REUSEPORT socket per worker): with per-worker keys most of
        // them would fall back to a full handshake.
        let mut s = client::connect(&cfg, conf.bind(), "a.test").expect("first");
        s.write_all(b"x").expect("write");
        let mut one = [0u8; 1];
        s.read_exact(&mut one).expect("echo");
        drop(s);
        for i in 0..12 {
            let mut s = client::connect(&cfg, conf.bind(), "a.test").expect("again");
            s.write_all(b"x").expect("write");
            s.read_exact(&mut one).expect("echo");
            assert_eq!(
                s.conn.handshake_kind(),
                Some(rustls::HandshakeKind::Resumed),
                "{versions:?}: connection {i} was not resumed"
            );
        }
    }
}

fn root_store(ca: &std::path::Path) -> rustls::RootCertStore {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA") {
        roots.add(c.expect("pem")).expect("CA cert");
    }
    roots
}

#[test]
fn the_last_bytes_before_a_close_reach_a_slow_reader_whole() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let a = ca.leaf(dir.path(), "a", &["a.test"]);
    let len = 8 << 20;
    let reply: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let backend = Backend::fixed(&reply);
    let conf = with_tls(Conf::new(&dir, &[backend.addr()]), &tls_line(&[&a]));
    let _m = Master::start(&dir, &conf.write(&dir));
    let cfg = client::config(&ca.pem);
    let mut s = client::connect(&cfg, conf.bind(), "a.test").expect("tls");
    // The client is done sending: both directions end once the server's
    // reply is relayed, while records may still wait for the client's
    // window (a slow reader: the socket buffers fill before it reads).
    s.conn.send_close_notify();
    s.flush().expect("close_notify");
    assert!(wait_until(Duration::from_secs(10), || backend.accepted() == 1));
    std::thread::sleep(Duration::from_millis(300));
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read after {} bytes: {e}", out.len()),
        }
    }
    assert_eq!(out.len(), len, "reply truncated");
    assert!(out == reply.as_bytes(), "reply differs");
}
