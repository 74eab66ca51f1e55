//! Owns the tests of the admin listener's other answers: `/status.json` has
//! the shape of `status --json`; the actions need the token and act like
//! `lbctl server`; bad requests get 400/404/405/431; idle and half-sent
//! requests neither stall the master nor lock the page out; a reload moves
//! the listener and is counted; a binary upgrade hands it over.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{JsonBody, Setup, TOKEN, request, server_state};
use nix::sys::signal::Signal;

use crate::util::http_client::HttpConn;
use crate::util::{DaemonGuard, WAIT, free_addr, signal, wait_until};

/// Same keys at every level, same value kinds, same array lengths.
fn same_shape(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut kx: Vec<&String> = x.keys().collect();
            let mut ky: Vec<&String> = y.keys().collect();
            kx.sort();
            ky.sort();
            assert_eq!(kx, ky, "keys at {at}");
            for (k, v) in x {
                same_shape(v, &y[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "length at {at}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                same_shape(v, w, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Null, Value::Null) => {}
        _ => panic!("kinds differ at {at}: {a} vs {b}"),
    }
}

#[test]
fn status_json_is_the_object_of_status_json() {
    let setup = Setup::start(None);
    setup.send_connections(3);
    let r = setup.get("/status.json");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let web = r.json();
    let cli = setup.lbctl().status_json();
    same_shape(&web, &cli, "status");
    for key in [
        "master_pid",
        "generation",
        "phase",
        "config",
        "workers_configured",
    ] {
        assert_eq!(web[key], cli[key], "{key}");
    }
    assert_eq!(web["listens"][0]["servers"], cli["listens"][0]["servers"]);
    let pids = |v: &Value| -> Vec<u64> {
        let mut p: Vec<u64> = v["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .map(|w| w["pid"].as_u64().expect("pid"))
            .collect();
        p.sort_unstable();
        p
    };
    assert_eq!(pids(&web), pids(&cli));
}

#[test]
fn actions_need_the_token_and_change_the_server_like_lbctl_server() {
    let setup = Setup::start(Some(TOKEN));
    let name = setup.server_names()[0].clone();
    let path = |action: &str| format!("/server/web/{}/{action}", name.replace(':', "%3A"));
    let form = "application/x-www-form-urlencoded";
    let refused = [
        request(setup.admin, "POST", &path("disable"), &[], None),
        setup.request(
            "POST",
            &path("disable"),
            &[("Authorization", "Bearer wrong-token-0123456789")],
            None,
        ),
        setup.request(
            "POST",
            &path("disable"),
            &[("Authorization", &format!("Basic {TOKEN}"))],
            None,
        ),
        setup.request(
            "POST",
            &path("disable"),
            &[("Content-Type", form)],
            Some(b"token=wrong-token-0123456789"),
        ),
        setup.request(
            "POST",
            &path("disable"),
            &[("Content-Type", form)],
            Some(&format!("token={TOKEN}x").into_bytes()),
        ),
    ];
    for r in &refused {
        assert_eq!(r.status, 403, "{}", r.text());
    }
    let lbctl = setup.lbctl();
    assert_eq!(server_state(&lbctl.status_json(), &name), "up");

    let r = setup.request(
        "POST",
        &path("disable"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ok"], true);
    assert_eq!(server_state(&lbctl.status_json(), &name), "disabled");

    // The form field works too, and so does the unescaped name.
    let body = format!("token={TOKEN}");
    let r = setup.request(
        "POST",
        &format!("/server/web/{name}/drain"),
        &[("Content-Type", form)],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server_state(&lbctl.status_json(), &name), "draining");
    let auth = format!("Bearer {TOKEN}");
    let r = setup.request("POST", &path("enable"), &[("Authorization", &auth)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server_state(&lbctl.status_json(), &name), "up");
    assert!(setup.master.stderr().contains("disabled (runtime change"));

    let r = setup.request(
        "POST",
        "/server/web/nope/enable",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["ok"], false);
    let r = setup.request("POST", &path("reboot"), &[("Authorization", &auth)], None);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(setup.get(&path("enable")).status, 405);
}

#[test]
fn without_a_token_the_actions_are_forbidden() {
    let setup = Setup::start(None);
    let name = setup.server_names()[0].clone();
    let r = setup.request(
        "POST",
        &format!("/server/web/{name}/disable"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        None,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("token"), "{}", r.text());
    assert_eq!(server_state(&setup.lbctl().status_json(), &name), "up");
    let page = setup.get("/status").text();
    assert!(page.contains("const ACTIONS = false;"));
}

#[test]
fn refused_actions_in_a_loop_are_logged_once_a_second_and_cut_short() {
    let setup = Setup::start(Some(TOKEN));
    let name = setup.server_names()[0].clone();
    // A long path (the head limit is 8 KiB) and a wrong token, many times.
    let path = format!("/server/web/{}{}/disable", name, "x".repeat(6000));
    let wrong = [("Authorization", "Bearer wrong-token-0123456789")];
    let sent = 400u64;
    let t = Instant::now();
    for _ in 0..sent / 2 {
        let r = setup.request("POST", &format!("/server/web/{name}/disable"), &wrong, None);
        assert_eq!(r.status, 403, "{}", r.text());
        let r = setup.request("POST", &path, &wrong, None);
        assert_eq!(r.status, 403, "{}", r.text());
    }
    let elapsed = t.elapsed().as_secs();
    let mut lines = Vec::new();
    assert!(
        wait_until(WAIT, || {
            let err = setup.master.stderr();
            lines = err
                .lines()
                .filter(|l| l.contains("admin: refused POST"))
                .map(str::to_string)
                .collect::<Vec<_>>();
            !lines.is_empty()
        }),
        "no refusal logged\n{}",
        setup.master.describe()
    );
    // One line per started second at most, never the thousands sent.
    assert!(
        lines.len() as u64 <= elapsed + 2,
        "{} lines for {sent} refusals in {elapsed}s:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines.iter().all(|l| l.len() < 512),
        "a line quotes the whole path: {lines:?}"
    );
    if lines.len() > 1 {
        assert!(
            lines[1..]
                .iter()
                .all(|l| l.contains("more since the last such line")),
            "{lines:?}"
        );
    }
    assert_eq!(server_state(&setup.lbctl().status_json(), &name), "up");
}

/// Sends raw bytes, returns the status line of the answer.
fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(bytes).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    text.lines().next().unwrap_or("").to_string()
}

#[test]
fn bad_requests_get_400_unknown_paths_404_wrong_methods_405() {
    let setup = Setup::start(None);
    assert_eq!(
        raw(setup.admin, b"nonsense\r\n\r\n"),
        "HTTP/1.1 400 Bad Request"
    );
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(9000));
    assert_eq!(
        raw(setup.admin, long.as_bytes()),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    for path in ["/", "/metric", "/status/x", "/favicon.ico"] {
        assert_eq!(setup.get(path).status, 404, "{path}");
    }
    let r = setup.request("POST", "/metrics", &[], Some(b""));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    let r = setup.request("HEAD", "/metrics", &[], None);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // HTTP/1.0 is answered too.
    let line = raw(setup.admin, b"GET /status.json HTTP/1.0\r\n\r\n");
    assert_eq!(line, "HTTP/1.1 200 OK");
}

#[test]
fn idle_and_half_sent_requests_neither_stall_the_master_nor_lock_the_page_out() {
    let setup = Setup::start(None);
    let mut half = TcpStream::connect(setup.admin).expect("connect");
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    let opened = Instant::now();
    // More idle connections than the admin serves at once.
    let idle: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(setup.admin).expect("connect idle"))
        .collect();
    let t = Instant::now();
    let r = setup.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let st = setup.lbctl().status_json();
    assert_eq!(st["phase"], "running");
    setup.send_connections(2);
    // The half-sent request is closed without an answer, by eviction or at
    // the per-connection timeout (10 s).
    half.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = half.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(
        opened.elapsed() < Duration::from_secs(13),
        "{:?}",
        opened.elapsed()
    );
    drop(idle);
}

#[test]
fn a_reload_moves_the_admin_listener_and_is_counted() {
    let mut setup = Setup::start(None);
    let old = setup.admin;
    let new = free_addr();
    setup.conf = setup.conf.clone().admin(new, Some(TOKEN));
    setup.conf.write_to(&setup.path);
    let lbctl = setup.lbctl();
    lbctl.run("reload", &[]).assert_success();
    setup.admin = new;
    assert!(
        wait_until(WAIT, || TcpStream::connect(old).is_err()),
        "old admin address still accepts"
    );
    assert!(
        setup
            .get("/status")
            .text()
            .contains("const ACTIONS = true;")
    );
    let metrics = setup.get("/metrics").text();
    assert!(
        metrics.contains("lbctl_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("lbctl_generation 2"), "{metrics}");

    // A port someone else holds fails the reload; the listener stays.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr");
    setup.conf.clone().admin(busy, None).write_to(&setup.path);
    let out = lbctl.run("reload", &[]);
    out.assert_failure();
    out.assert_contains("[admin]");
    // A file that does not parse fails too (`lbctl reload` refuses it
    // itself, so the master is asked by SIGHUP).
    std::fs::write(&setup.path, "[admin\n").expect("write");
    signal(setup.master.pid(), Signal::SIGHUP);
    let failed_twice = wait_until(WAIT, || {
        setup
            .get("/metrics")
            .text()
            .contains("lbctl_reloads_total{result=\"failed\"} 2")
    });
    let metrics = setup.get("/metrics").text();
    assert!(failed_twice, "{metrics}");
    assert!(metrics.contains("lbctl_generation 2"), "{metrics}");

    // Without [admin] the listener closes.
    let mut conf = setup.conf.clone();
    conf.admin = None;
    conf.write_to(&setup.path);
    lbctl.run("reload", &[]).assert_success();
    assert!(
        wait_until(WAIT, || TcpStream::connect(new).is_err()),
        "admin still accepts without [admin]"
    );
}

#[test]
fn a_binary_upgrade_hands_the_admin_listener_to_the_new_master() {
    let setup = Setup::start(None);
    // Declared after the setup, so dropped first: kills the new master.
    let mut guard = DaemonGuard::new(&setup.conf);
    let first = setup.master.pid();
    guard.track(first);
    setup.lbctl().run("upgrade", &[]).assert_success();
    let mut last = None;
    let moved = wait_until(WAIT, || {
        let Ok(mut conn) = HttpConn::connect(setup.admin) else {
            return false;
        };
        let Ok(r) = conn.request("GET", "/status.json", &[("Connection", "close")], None) else {
            return false;
        };
        let pid = r.json()["master_pid"].as_i64();
        last = pid;
        pid.is_some_and(|p| p != i64::from(first))
    });
    assert!(moved, "admin still answered by master {first}: {last:?}");
    if let Some(p) = last {
        guard.track(p as i32);
    }
    assert_eq!(setup.get("/metrics").status, 200);
}
