//! Owns failover in HTTP mode: a refusing server is skipped, and a backend
//! killed under keep-alive load fails no GET (requests it had not answered
//! are sent again to another server).

use super::start_http;
use crate::util::backend::refusing_addr;
use crate::util::http_backend::HttpBackend;
use crate::util::http_client::HttpConn;
use crate::util::{Conf, Master, TempDir};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[test]
fn a_refusing_server_is_skipped_for_every_request() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let conf = Conf::new(&dir, &[refusing_addr(), a.addr()]).listen(|l| l.http());
    let _m = Master::start(&dir, &conf.write(&dir));
    let mut c = HttpConn::connect(conf.bind()).expect("connect");
    for i in 0..6 {
        let r = c
            .request("GET", &format!("/{i}"), &[], None)
            .expect("response");
        assert_eq!(r.status, 200, "request {i}");
    }
}

#[test]
fn a_backend_killed_under_load_fails_no_get() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let b = HttpBackend::start("B");
    let c3 = HttpBackend::start("C");
    let (_m, bind) = start_http(&dir, &[&a, &b, &c3], |l| l.retries(2));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
            std::thread::spawn(move || -> Result<(), String> {
                let mut c = HttpConn::connect(bind).map_err(|e| e.to_string())?;
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) && i < 100_000 {
                    let r = c
                        .request("GET", &format!("/t{t}/{i}"), &[], None)
                        .map_err(|e| format!("client {t} request {i}: {e}"))?;
                    if r.status != 200 {
                        return Err(format!("client {t} request {i}: status {}", r.status));
                    }
                    ok.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    let wait_for =
        |n: u64| crate::util::wait_until(crate::util::WAIT, || ok.load(Ordering::SeqCst) >= n);
    assert!(wait_for(500), "load did not start");
    a.kill();
    let after_kill = ok.load(Ordering::SeqCst);
    assert!(wait_for(after_kill + 1000), "load stalled after the kill");
    stop.store(true, Ordering::SeqCst);
    let errors: Vec<String> = clients
        .into_iter()
        .filter_map(|c| match c.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("client panicked".into()),
        })
        .collect();
    assert!(errors.is_empty(), "failed GETs: {errors:#?}");
}

/// Keep-alive clients that, like browsers and curl, send a request again on
/// a new connection when a kept-alive one was closed before any byte of the
/// response came (the server may close an idle connection at any time);
/// every other error, and every non-200, is a failure.
fn keepalive_load(
    bind: std::net::SocketAddr,
    clients: usize,
    stop: &Arc<AtomicBool>,
    ok: &Arc<AtomicU64>,
) -> Vec<std::thread::JoinHandle<Result<(), String>>> {
    (0..clients)
        .map(|t| {
            let (stop, ok) = (Arc::clone(stop), Arc::clone(ok));
            std::thread::spawn(move || -> Result<(), String> {
                let mut c = HttpConn::connect(bind).map_err(|e| e.to_string())?;
                let mut fresh = true;
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) && i < 200_000 {
                    match c.request("GET", &format!("/t{t}/{i}"), &[], None) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            i += 1;
                            fresh = false;
                            if r.has_token("connection", "close") {
                                c = HttpConn::connect(bind).map_err(|e| e.to_string())?;
                                fresh = true;
                            }
                        }
                        Ok(r) => {
                            return Err(format!("client {t} request {i}: status {}", r.status));
                        }
                        Err(e) if !fresh && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            c = HttpConn::connect(bind).map_err(|e| e.to_string())?;
                            fresh = true;
                        }
                        Err(e) => return Err(format!("client {t} request {i}: {e}")),
                    }
                }
                Ok(())
            })
        })
        .collect()
}

#[test]
fn reloads_under_keepalive_load_fail_no_request() {
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let b = HttpBackend::start("B");
    let (_m, bind) = start_http(&dir, &[&a, &b], |l| l);
    let lbctl = crate::util::Lbctl::new(&dir, &dir.join("lbctl.toml"));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let clients = keepalive_load(bind, 4, &stop, &ok);
    let wait_for =
        |n: u64| crate::util::wait_until(crate::util::WAIT, || ok.load(Ordering::SeqCst) >= n);
    assert!(wait_for(200), "load did not start");
    let mut stalled = None;
    for round in 0..5 {
        lbctl.run("reload", &[]).assert_success();
        let now = ok.load(Ordering::SeqCst);
        if !wait_for(now + 200) {
            stalled = Some(round);
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let errors: Vec<String> = clients
        .into_iter()
        .filter_map(|c| match c.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("client panicked".into()),
        })
        .collect();
    assert!(
        errors.is_empty(),
        "failed requests across reloads: {errors:#?}"
    );
    assert_eq!(stalled, None, "the load stalled after reload number");
}
