//! Owns the tests of certificate files: what `check` and `reload` refuse
//! (a key of another certificate, an expired certificate, a missing file),
//! and a renewed certificate picked up by `reload` while clients keep
//! making TLS connections, none of them failing.

use super::pki::{Ca, tls_line, write_atomic};
use super::{client, with_tls};
use crate::util::http_backend::HttpBackend;
use crate::util::{Conf, Lbctl, Master, TempDir, wait_until};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[test]
fn check_reports_a_mismatched_key_an_expired_cert_and_a_missing_file() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let a = ca.leaf(dir.path(), "a", &["a.test"]);
    let b = ca.leaf(dir.path(), "b", &["b.test"]);
    let old = ca.expired_leaf(dir.path(), "old", &["old.test"]);
    let base = Conf::new(&dir, &["127.0.0.1:6001".parse().expect("addr")]);
    let line = format!(
        "tls = {{ certs = [ {{ cert = \"{}\", key = \"{}\" }} ] }}",
        a.cert.display(),
        b.key.display()
    );
    let path = with_tls(base.clone(), &line).write(&dir);
    Lbctl::new(&dir, &path)
        .run("check", &[])
        .assert_code(1)
        .assert_contains("listen[0].tls.certs[0].key")
        .assert_contains(&b.key.display().to_string())
        .assert_contains("does not match")
        .assert_contains("line");
    let path = with_tls(base.clone(), &tls_line(&[&a, &old])).write(&dir);
    Lbctl::new(&dir, &path)
        .run("check", &[])
        .assert_code(1)
        .assert_contains("listen[0].tls.certs[1].cert")
        .assert_contains(&old.cert.display().to_string())
        .assert_contains("expired");
    let line = format!(
        "tls = {{ certs = [ {{ cert = \"{}\", key = \"{}\" }} ] }}",
        dir.join("nowhere.pem").display(),
        a.key.display()
    );
    let path = with_tls(base.clone(), &line).write(&dir);
    Lbctl::new(&dir, &path)
        .run("check", &[])
        .assert_code(1)
        .assert_contains("listen[0].tls.certs[0].cert")
        .assert_contains("nowhere.pem")
        .assert_contains("cannot read");
    let path = with_tls(base, &tls_line(&[&a, &b])).write(&dir);
    Lbctl::new(&dir, &path).run("check", &[]).assert_success();
}

/// One HTTPS request on a new connection; the certificate it was served.
fn one_request(cfg: &Arc<rustls::ClientConfig>, bind: std::net::SocketAddr) -> Option<Vec<u8>> {
    let mut s = client::connect(cfg, bind, "a.test").ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    (text.starts_with("HTTP/1.1 200") && text.ends_with("A /\n")).then(|| client::served_cert(&s))
}

#[test]
fn reload_serves_a_renewed_certificate_without_failing_a_handshake() {
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let first = ca.leaf(dir.path(), "site", &["a.test"]);
    let backend = HttpBackend::start("A");
    let conf = with_tls(
        Conf::new(&dir, &[backend.addr()]).listen(|l| l.http()),
        &tls_line(&[&first]),
    );
    let path = conf.write(&dir);
    let _m = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let bind = conf.bind();
    let cfg = client::config(&ca.pem);
    assert_eq!(one_request(&cfg, bind), Some(first.der.clone()));

    // Clients make new TLS connections all through the reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, done, failed, cfg) =
                (stop.clone(), done.clone(), failed.clone(), cfg.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match one_request(&cfg, bind) {
                        Some(_) => done.fetch_add(1, Ordering::Relaxed),
                        None => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || done
        .load(Ordering::Relaxed)
        > 20));

    // A bad key (another certificate's) is refused; the old one serves.
    let other = ca.leaf(dir.path(), "other", &["a.test"]);
    let good_key = std::fs::read(&first.key).expect("key");
    write_atomic(&first.key, &std::fs::read(&other.key).expect("key"));
    lbctl
        .run("reload", &[])
        .assert_code(1)
        .assert_contains("listen[0].tls.certs[0].key")
        .assert_contains("does not match");
    write_atomic(&first.key, &good_key);
    assert_eq!(one_request(&cfg, bind), Some(first.der.clone()));

    // certbot-style renewal: new files at the same paths, then reload.
    let renewed = ca.leaf(dir.path(), "site", &["a.test"]);
    assert_ne!(renewed.der, first.der);
    lbctl.run("reload", &[]).assert_success();
    assert!(
        wait_until(Duration::from_secs(10), || one_request(&cfg, bind)
            == Some(renewed.der.clone())),
        "the renewed certificate was never served"
    );
    let before = done.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(10), || done
        .load(Ordering::Relaxed)
        > before + 20));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("load thread");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} requests done",
        done.load(Ordering::Relaxed)
    );
}

/// Kills the child on drop (a failed assertion leaves no wrk behind).
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_renewed_certificate_is_served_after_reload_under_wrk_load_with_zero_errors() {
    if super::tool("wrk", &["--version"]).is_none() {
        eprintln!("skipped: wrk is not installed");
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new(dir.path());
    let first = ca.leaf(dir.path(), "site", &["a.test"]);
    let backend = HttpBackend::start("A");
    let conf = with_tls(
        Conf::new(&dir, &[backend.addr()]).listen(|l| l.http()),
        &tls_line(&[&first]),
    );
    let path = conf.write(&dir);
    let _m = Master::start(&dir, &path);
    let bind = conf.bind();
    let wrk = std::process::Command::new("wrk")
        .args(["-t2", "-c16", "-d4s", "--timeout", "5s"])
        .arg(format!("https://{bind}/w"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run wrk");
    let mut guard = KillOnDrop(Some(wrk));
    assert!(
        wait_until(Duration::from_secs(10), || backend.requests() > 500),
        "the load did not reach the backend"
    );
    let renewed = ca.leaf(dir.path(), "site", &["a.test"]);
    Lbctl::new(&dir, &path).run("reload", &[]).assert_success();
    let cfg = client::config(&ca.pem);
    assert!(
        wait_until(Duration::from_secs(10), || one_request(&cfg, bind)
            == Some(renewed.der.clone())),
        "the renewed certificate was never served"
    );
    let out = guard
        .0
        .take()
        .expect("wrk child")
        .wait_with_output()
        .expect("wrk output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk: {text}");
    assert!(
        !text.contains("Socket errors"),
        "wrk saw socket errors: {text}"
    );
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw failed responses: {text}"
    );
}
