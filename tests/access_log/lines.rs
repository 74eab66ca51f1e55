//! Owns the fields of access-log lines: a tcp line per connection with the
//! byte counts the test sent and got back, the termination cause (client
//! closed, server closed, connect failed); an http line per request with
//! method, path and status; the text format field by field.

use std::io::{Read, Write};

use serde_json::Value;

use super::{access_log, json_lines, read_lines, wait_lines};
use crate::util::backend::{Backend, refusing_addr};
use crate::util::http_backend::HttpBackend;
use crate::util::http_client::HttpConn;
use crate::util::{Conf, ListenConf, Master, TempDir, connect, exchange, pseudo_random_bytes};

fn by_bytes(lines: &[Value], n: u64) -> &Value {
    lines
        .iter()
        .find(|l| l["bytes_in"] == n)
        .unwrap_or_else(|| panic!("no line with bytes_in {n}: {lines:#?}"))
}

#[test]
fn tcp_lines_carry_the_bytes_each_way_and_how_the_connection_ended() {
    let dir = TempDir::new();
    let echo = Backend::echo();
    let greeter = Backend::fixed("hello from the server\n");
    let json = dir.join("tcp.json.log");
    let text = dir.join("tcp.text.log");
    let mut conf =
        Conf::new(&dir, &[echo.addr()]).listen(|l| l.line(&access_log(&json, "json")).retries(0));
    let mut second = ListenConf::new(&[greeter.addr()]).line(&access_log(&text, "text"));
    second.name = "greet".to_string();
    let mut third = ListenConf::new(&[refusing_addr()])
        .line(&access_log(&json, "json"))
        .retries(0);
    third.name = "dead".to_string();
    conf.listens.push(second);
    conf.listens.push(third);
    let (greet_at, dead_at) = (conf.listens[1].bind, conf.listens[2].bind);
    let path = conf.write(&dir);
    let _m = Master::start(&dir, &path);

    let sizes = [1usize, 1000, 70_000, 1_000_000];
    for (i, n) in sizes.iter().enumerate() {
        let data = pseudo_random_bytes(*n, i as u64);
        let got = exchange(conf.bind(), &data).expect("echo through lbctl");
        assert_eq!(got.len(), data.len());
    }
    let reply = crate::util::fetch_ok(greet_at);
    // The refused connect: lbctl closes the client at once.
    let mut s = connect(dead_at).expect("connect");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);

    assert_eq!(wait_lines(&[&json], sizes.len() + 1), sizes.len() + 1);
    let lines = json_lines(&json);
    for n in sizes {
        let l = by_bytes(&lines, n as u64);
        assert_eq!(l["bytes_out"], n as u64, "{l}");
        assert_eq!(l["listen"], "web", "{l}");
        assert_eq!(l["server"], echo.addr().to_string(), "{l}");
        assert_eq!(l["termination"], "client_closed", "{l}");
        assert_eq!(l["retries"], 0, "{l}");
        assert!(
            l["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{l}"
        );
        assert!(l["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{l}");
        assert!(l["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
        assert!(
            l.get("status").is_none(),
            "tcp lines have no http fields: {l}"
        );
    }
    let dead = lines
        .iter()
        .find(|l| l["listen"] == "dead")
        .expect("a line for the refused connect");
    assert_eq!(dead["termination"], "connect_failed", "{dead}");
    assert_eq!(
        (dead["bytes_in"].as_u64(), dead["bytes_out"].as_u64()),
        (Some(0), Some(0))
    );

    assert_eq!(wait_lines(&[&text], 1), 1);
    let line = read_lines(&text).remove(0);
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        f.len(),
        9,
        "TIME CLIENT LISTEN SERVER DURATION IN OUT CAUSE RETRIES: {line}"
    );
    assert_eq!(f[2], "greet", "{line}");
    assert_eq!(f[3], greeter.addr().to_string(), "{line}");
    assert!(f[4].parse::<f64>().is_ok(), "{line}");
    assert_eq!(f[5], "0", "{line}");
    assert_eq!(f[6], reply.len().to_string(), "{line}");
    assert_eq!(f[7], "server_closed", "{line}");
    assert_eq!(f[8], "0", "{line}");
}

#[test]
fn http_lines_carry_method_path_and_status_per_request() {
    let dir = TempDir::new();
    let backend = HttpBackend::start("b1");
    let json = dir.join("http.json.log");
    let text = dir.join("http.text.log");
    let mut conf =
        Conf::new(&dir, &[backend.addr()]).listen(|l| l.http().line(&access_log(&json, "json")));
    let mut down = ListenConf::new(&[refusing_addr()])
        .http()
        .line(&access_log(&text, "text"))
        .retries(0);
    down.name = "down".to_string();
    conf.listens.push(down);
    let down_at = conf.listens[1].bind;
    let path = conf.write(&dir);
    let _m = Master::start(&dir, &path);

    // Three requests on one kept-alive connection: three lines.
    let mut c = HttpConn::connect(conf.bind()).expect("connect");
    let r = c.request("GET", "/a?x=1", &[], None).expect("GET");
    assert_eq!(r.status, 200);
    let body = pseudo_random_bytes(5000, 7);
    let r = c
        .request("POST", "/sha256", &[], Some(&body))
        .expect("POST");
    assert_eq!(r.status, 200);
    let r = c.request("HEAD", "/b", &[], None).expect("HEAD");
    assert_eq!(r.status, 200);
    drop(c);
    // A websocket: one line for the whole tunnel, status 101.
    let mut ws = HttpConn::connect(conf.bind()).expect("connect");
    let r = ws
        .request(
            "GET",
            "/ws",
            &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
            None,
        )
        .expect("upgrade");
    assert_eq!(r.status, 101);
    ws.send_raw(b"ping-pong").expect("send");
    assert_eq!(ws.read_raw(9).expect("echo"), b"ping-pong");
    ws.shutdown_write().expect("shutdown");
    let _ = ws.read_raw_to_end();
    drop(ws);
    assert_eq!(wait_lines(&[&json], 4), 4);
    // Lines of different connections (workers) may come in any order;
    // those of one connection come in its order.
    let all = json_lines(&json);
    let (ws_lines, lines): (Vec<Value>, Vec<Value>) =
        all.into_iter().partition(|l| l["path"] == "/ws");
    let want = [("GET", "/a?x=1"), ("POST", "/sha256"), ("HEAD", "/b")];
    assert_eq!((lines.len(), ws_lines.len()), (3, 1));
    for (l, (method, target)) in lines.iter().zip(want) {
        assert_eq!(l["method"], method, "{l}");
        assert_eq!(l["path"], target, "{l}");
        assert_eq!(l["status"], 200, "{l}");
        assert_eq!(l["termination"], "done", "{l}");
        assert_eq!(l["server"], backend.addr().to_string(), "{l}");
        assert!(l["request_ms"].as_f64().is_some(), "{l}");
        assert!(l["bytes_out"].as_u64().is_some_and(|b| b > 0), "{l}");
    }
    let ws = &ws_lines[0];
    assert_eq!(
        (ws["path"].as_str(), ws["status"].as_u64()),
        (Some("/ws"), Some(101)),
        "{ws}"
    );
    assert_eq!(ws["termination"], "client_closed", "{ws}");
    assert!(ws["bytes_in"].as_u64().is_some_and(|b| b > 9), "{ws}");
    let post = &lines[1];
    assert!(
        post["bytes_in"].as_u64().is_some_and(|b| b >= 5000),
        "{post}"
    );
    // One client, one connection: the same client address on every line.
    assert!(lines.iter().all(|l| l["client"] == lines[0]["client"]));

    // lbctl's own answer: 503, no server reachable.
    let mut c = HttpConn::connect(down_at).expect("connect");
    let r = c.request("GET", "/nothing", &[], None).expect("GET");
    assert_eq!(r.status, 503);
    drop(c);
    // And a request lbctl refuses to parse: 400, method and path unknown.
    let mut s = connect(down_at).expect("connect");
    s.write_all(b"GET /bad path HTTP/1.1\r\n\r\n")
        .expect("send");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    assert_eq!(wait_lines(&[&text], 2), 2);
    // Two connections, maybe two workers: in either order.
    let mut lines = read_lines(&text);
    lines.sort_by_key(|l| l.contains(" \"-\" "));
    let f: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(
        f.len(),
        13,
        "TIME CLIENT LISTEN SERVER \"METHOD PATH\" STATUS REQ DUR IN OUT CAUSE RETRIES: {}",
        lines[0]
    );
    assert_eq!(f[2], "down");
    assert_eq!(
        (f[4], f[5], f[6]),
        ("\"GET", "/nothing\"", "503"),
        "{}",
        lines[0]
    );
    assert_eq!(f[11], "connect_failed", "{}", lines[0]);
    let f: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!((f[4], f[5]), ("\"-\"", "400"), "{}", lines[1]);
    assert_eq!(f[10], "bad_request", "{}", lines[1]);
}

#[test]
fn a_bad_access_log_reload_keeps_the_old_log_and_a_good_one_moves_it() {
    let dir = TempDir::new();
    let backend = HttpBackend::start("b1");
    let (old, new) = (dir.join("old.log"), dir.join("new.log"));
    let conf = Conf::new(&dir, &[backend.addr()]);
    let with = |p: &std::path::Path| {
        conf.clone()
            .listen(|l| l.http().line(&access_log(p, "json")))
    };
    let path = with(&old).write(&dir);
    let _m = Master::start(&dir, &path);
    let lbctl = crate::util::Lbctl::new(&dir, &path);
    let get = |p: &str| {
        let mut c = HttpConn::connect(conf.bind()).expect("connect");
        assert_eq!(c.request("GET", p, &[], None).expect("GET").status, 200);
    };
    get("/one");
    assert_eq!(wait_lines(&[&old], 1), 1);

    with(&dir.join("missing").join("x.log")).write(&dir);
    lbctl
        .run("reload", &[])
        .assert_code(1)
        .assert_contains("listen[0].access_log.path");
    get("/two");
    assert_eq!(wait_lines(&[&old], 2), 2, "the old workers keep their log");

    with(&new).write(&dir);
    lbctl.run("reload", &[]).assert_success();
    get("/three");
    assert_eq!(wait_lines(&[&new], 1), 1);
    let paths: Vec<Value> = json_lines(&old)
        .into_iter()
        .chain(json_lines(&new))
        .collect();
    let paths: Vec<&str> = paths
        .iter()
        .map(|l| l["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["/one", "/two", "/three"]);
}
