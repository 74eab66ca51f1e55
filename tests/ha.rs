//! Owns the backend high-availability tests: a backend killed under load costs
//! no client connection (active and passive detection) and is taken back when
//! it returns; `http` and `send_expect` checks judge the reply, not the port;
//! a hung server times its check out while the master keeps answering;
//! `lbctl server disable|drain|enable|list` at runtime, their errors, and how
//! runtime changes survive a worker respawn but not a reload.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::util::json::{servers, str_of, u64_of, worker_rows};
use crate::util::load::{Load, LoadConfig};
use crate::util::scripted::{Scripted, greet, whoami};
use crate::util::{
    CmdOutput, Conf, Lbctl, ListenConf, Master, ServerConf, TempDir, WAIT, exchange, pid_alive,
    signal, wait_until, write_file,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Writes `conf` with `extra` lines appended to its (only) `[[listen]]` table,
/// for keys the config writer does not know (`max_fails`, `fail_timeout`).
fn write_with_listen_keys(dir: &TempDir, conf: &Conf, extra: &str) -> PathBuf {
    assert_eq!(conf.listens.len(), 1, "extra keys go to the last table");
    let path = dir.join("lbctl.toml");
    write_file(&path, &format!("{}{extra}\n", conf.to_toml()));
    path
}

/// Starts a 2-worker balancer over `servers` (in that order), its listen
/// adjusted by `listen`; returns the config, the master and a command wrapper.
#[track_caller]
fn start_two_workers(
    dir: &TempDir,
    servers: &[SocketAddr],
    listen: impl FnOnce(ListenConf) -> ListenConf,
) -> (Conf, Master, Lbctl) {
    let conf = Conf::new(dir, servers).workers(2).listen(listen);
    let path = conf.write(dir);
    let master = Master::start(dir, &path);
    let lbctl = Lbctl::new(dir, &path);
    (conf, master, lbctl)
}

/// The status row of the server whose `name` or `addr` is `who`, in listen 0.
fn server_row(st: &Value, who: &str) -> Option<Value> {
    servers(st, 0)
        .iter()
        .find(|s| str_of(s, "name") == who || str_of(s, "addr") == who)
        .cloned()
}

/// Waits until the row of `who` satisfies `cond`; panics with the last row
/// (and the whole status) otherwise. Returns the matching row.
#[track_caller]
fn wait_server(lbctl: &Lbctl, who: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last: Option<Value> = None;
    let ok = wait_until(WAIT, || {
        let Some(st) = lbctl.try_status_json() else {
            return false;
        };
        let hit = server_row(&st, who).is_some_and(|row| cond(&row));
        last = Some(st);
        hit
    });
    let st = last.unwrap_or(Value::Null);
    match (ok, server_row(&st, who)) {
        (true, Some(row)) => row,
        _ => panic!("server {who}: never {what}; last status: {st:#}"),
    }
}

/// Waits until `who` is in `state`.
#[track_caller]
fn wait_state(lbctl: &Lbctl, who: &str, state: &str) -> Value {
    wait_server(lbctl, who, &format!("in state {state:?}"), |row| {
        str_of(row, "state") == state
    })
}

fn state_of(row: &Value) -> &str {
    str_of(row, "state")
}

fn check_of(row: &Value) -> &str {
    str_of(row, "check")
}

/// `lbctl server <args...>` (the `-c` goes right after `server`).
fn server_cmd(lbctl: &Lbctl, args: &[&str]) -> CmdOutput {
    lbctl.run("server", args)
}

/// Two client threads opening short connections to `bind`, every reply
/// checked against `valid`.
fn start_load(bind: SocketAddr, valid: &[&str]) -> Load {
    Load::start(LoadConfig::default().short(bind, 2, valid))
}

/// Waits until `n` more replies from `reply` arrived; panics (with the failed
/// connections) if a connection fails first or the replies do not come.
#[track_caller]
fn expect_replies(load: &Load, reply: &str, n: u64, what: &str) {
    let target = load.reply_count(reply) + n;
    let arrived = wait_until(WAIT, || {
        load.reply_count(reply) >= target || !load.failures().is_empty()
    });
    let failures = load.failures();
    assert!(
        failures.is_empty(),
        "{what}: {} failed client connections; first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        arrived,
        "{what}: fewer than {n} more {reply:?} replies (have {})",
        load.reply_count(reply)
    );
}

// ---------------------------------------------------------------------------
// 1. A backend dies under load and comes back
// ---------------------------------------------------------------------------

#[test]
fn backend_killed_under_load_fails_no_client_and_is_taken_back_when_it_returns() {
    let dir = TempDir::new();
    let a = Scripted::fixed("A");
    let b = Scripted::fixed("B");
    let a_addr = a.addr();
    let (conf, master, lbctl) = start_two_workers(&dir, &[a_addr, b.addr()], |l| {
        l.retries(2).health(
            "{ kind = \"tcp\", interval = \"100ms\", timeout = \"500ms\", rise = 1, fall = 2 }",
        )
    });
    let a_s = a_addr.to_string();
    wait_server(&lbctl, &a_s, "checked ok", |r| check_of(r) == "ok");

    let load = start_load(conf.bind(), &["A", "B", "A again"]);
    expect_replies(&load, "A", 20, "before the kill");
    a.kill();
    // A failed client connect may take it down first (passive); the check then
    // owns it and says why.
    wait_server(&lbctl, &a_s, "down with check \"connect refused\"", |r| {
        state_of(r) == "down" && check_of(r).contains("refused")
    });
    expect_replies(&load, "B", 50, "with A down");
    let b_row = server_row(&lbctl.status_json(), &b.addr().to_string()).expect("B row");
    assert_eq!(state_of(&b_row), "up", "{b_row:#}");

    // Restarted on the same address.
    let a2 = Scripted::fixed_at(a_addr, "A again");
    wait_state(&lbctl, &a_s, "up");
    expect_replies(&load, "A again", 20, "after A came back");
    let report = load.stop();
    drop(master);
    report.assert_no_failures("clients under load");
    assert!(a2.accepted() >= 20);
}

#[test]
fn passive_detection_alone_fails_no_client_when_a_backend_dies() {
    let dir = TempDir::new();
    let a = Scripted::fixed("A");
    let b = Scripted::fixed("B");
    let a_addr = a.addr();
    // No active check: only max_fails/fail_timeout and retries.
    let conf = Conf::new(&dir, &[a_addr, b.addr()])
        .workers(2)
        .listen(|l| l.retries(2));
    let path = write_with_listen_keys(&dir, &conf, "max_fails = 1\nfail_timeout = \"1s\"");
    let master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let a_s = a_addr.to_string();

    let load = start_load(conf.bind(), &["A", "B", "A again"]);
    expect_replies(&load, "A", 20, "before the kill");
    a.kill();
    let down = wait_state(&lbctl, &a_s, "down");
    assert!(
        check_of(&down).contains("passive"),
        "passively down server should say so: {down:#}"
    );
    expect_replies(&load, "B", 50, "with A dead");
    let failures = server_row(&lbctl.status_json(), &a_s)
        .map(|r| u64_of(&r, "failures"))
        .unwrap_or(0);
    assert!(failures >= 1, "A's failed connects were not counted");

    // Back on the same address: after fail_timeout A is tried again.
    let a2 = Scripted::fixed_at(a_addr, "A again");
    expect_replies(&load, "A again", 20, "after A came back");
    let report = load.stop();
    drop(master);
    report.assert_no_failures("clients under load");
    assert!(a2.accepted() >= 20);
}

// ---------------------------------------------------------------------------
// 2. http and send_expect checks judge the reply
// ---------------------------------------------------------------------------

#[test]
fn http_check_marks_a_503_backend_down_although_its_port_accepts() {
    let dir = TempDir::new();
    let bad = Scripted::http("503 Service Unavailable", "bad");
    let good = Scripted::http("200 OK", "good");
    let (conf, _master, lbctl) = start_two_workers(&dir, &[bad.addr(), good.addr()], |l| {
        l.retries(0).health(
            "{ kind = \"http\", path = \"/health\", expect_status = \"200-399\", interval = \"100ms\", timeout = \"1s\", rise = 1, fall = 1 }",
        )
    });

    let down = wait_state(&lbctl, &bad.addr().to_string(), "down");
    assert!(
        check_of(&down).contains("503"),
        "check detail should name the status: {down:#}"
    );
    // The port itself still accepts TCP: only the reply made it down.
    TcpStream::connect(bad.addr()).expect("the 503 backend still accepts TCP");
    let up = wait_server(&lbctl, &good.addr().to_string(), "checked ok", |r| {
        check_of(r) == "ok"
    });
    assert_eq!(state_of(&up), "up", "{up:#}");

    // With no retries, only the check keeps clients off the 503 server.
    for i in 0..10 {
        let reply = exchange(conf.bind(), b"GET / HTTP/1.0\r\n\r\n")
            .unwrap_or_else(|e| panic!("conn {i} through the balancer failed: {e}"));
        let text = String::from_utf8_lossy(&reply);
        assert!(
            text.starts_with("HTTP/1.0 200") && text.ends_with("good"),
            "conn {i} reached the 503 server: {text:?}"
        );
    }
    let row = server_row(&lbctl.status_json(), &bad.addr().to_string()).expect("bad row");
    assert_eq!(state_of(&row), "down", "{row:#}");
}

#[test]
fn send_expect_check_marks_an_err_reply_down_and_a_pong_reply_up() {
    let dir = TempDir::new();
    let err = Scripted::line_reply("-ERR unknown command\r\n");
    let pong = Scripted::line_reply("+PONG\r\n");
    let (_conf, _master, lbctl) = start_two_workers(&dir, &[err.addr(), pong.addr()], |l| {
        l.health(
            "{ kind = \"send_expect\", send = \"PING\\r\\n\", expect = \"+PONG\", interval = \"100ms\", timeout = \"1s\", rise = 1, fall = 1 }",
        )
    });

    let down = wait_state(&lbctl, &err.addr().to_string(), "down");
    assert!(
        check_of(&down).contains("unexpected reply"),
        "check detail should say the reply was wrong: {down:#}"
    );
    let up = wait_server(&lbctl, &pong.addr().to_string(), "checked ok", |r| {
        check_of(r) == "ok"
    });
    assert_eq!(state_of(&up), "up", "{up:#}");
    // Checks keep running; the verdicts stay.
    let probes = pong.accepted();
    assert!(
        wait_until(WAIT, || pong.accepted() >= probes + 3),
        "the PONG server is no longer probed"
    );
    let st = lbctl.status_json();
    let err_row = server_row(&st, &err.addr().to_string()).expect("err row");
    let pong_row = server_row(&st, &pong.addr().to_string()).expect("pong row");
    assert_eq!(state_of(&err_row), "down", "{st:#}");
    assert_eq!(state_of(&pong_row), "up", "{st:#}");
}

// ---------------------------------------------------------------------------
// 3. A hung server: the check times out, the master keeps answering
// ---------------------------------------------------------------------------

#[test]
fn hung_backend_times_its_check_out_while_the_master_keeps_answering() {
    let dir = TempDir::new();
    let hung = Scripted::silent();
    let good = Scripted::http("200 OK", "good");
    let (_conf, _master, lbctl) = start_two_workers(&dir, &[hung.addr(), good.addr()], |l| {
        l.health(
            "{ kind = \"http\", path = \"/health\", interval = \"100ms\", timeout = \"500ms\", rise = 1, fall = 1 }",
        )
    });

    let down = wait_state(&lbctl, &hung.addr().to_string(), "down");
    assert!(
        check_of(&down).contains("timeout"),
        "check detail should say timeout: {down:#}"
    );

    // While a probe hangs on the silent server (accepted, still open, and the
    // same one before and after), `lbctl status` is answered.
    let mut answered_during_hang = false;
    let mut last = None;
    for _ in 0..20 {
        assert!(
            wait_until(WAIT, || hung.open_connections() >= 1),
            "no probe reached the silent server"
        );
        let before = hung.accepted();
        let out = lbctl.run("status", &[]);
        out.assert_success();
        if hung.accepted() == before && hung.open_connections() >= 1 {
            answered_during_hang = true;
            break;
        }
        last = Some(out);
    }
    assert!(
        answered_during_hang,
        "status was never answered while a probe was outstanding; last: {:?}",
        last.map(|o| o.describe())
    );
    let json = lbctl.status_json();
    let good_row = server_row(&json, &good.addr().to_string()).expect("good row");
    assert_eq!(state_of(&good_row), "up", "{json:#}");
}

// ---------------------------------------------------------------------------
// 4. Runtime admin state
// ---------------------------------------------------------------------------

/// A running 2-worker round-robin balancer over greeters named `a` and `b`.
/// Fields drop in order: the master goes first, the temp dir last.
struct Pair {
    master: Master,
    lbctl: Lbctl,
    conf: Conf,
    a: Scripted,
    b: Scripted,
    _dir: TempDir,
}

impl Pair {
    #[track_caller]
    fn start() -> Pair {
        let dir = TempDir::new();
        let a = Scripted::greeter("a");
        let b = Scripted::greeter("b");
        let (conf, master, lbctl) = start_two_workers(&dir, &[], |l| {
            l.servers(vec![
                ServerConf::new(a.addr()).name("a"),
                ServerConf::new(b.addr()).name("b"),
            ])
        });
        Pair {
            master,
            lbctl,
            conf,
            a,
            b,
            _dir: dir,
        }
    }

    fn bind(&self) -> SocketAddr {
        self.conf.bind()
    }

    /// Which server each of `n` fresh connections reaches.
    fn names(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                whoami(self.bind())
                    .unwrap_or_else(|e| panic!("conn {i} through the balancer failed: {e}"))
            })
            .collect()
    }
}

#[test]
fn disable_drain_and_enable_steer_new_connections_at_once() {
    let p = Pair::start();
    let lbctl = &p.lbctl;
    let names = p.names(10);
    assert!(
        names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b"),
        "round robin should use both: {names:?}"
    );

    // `server list` prints both servers.
    let list = server_cmd(lbctl, &["list"]);
    list.assert_success()
        .assert_contains("web/a")
        .assert_contains("web/b")
        .assert_contains(&p.a.addr().to_string())
        .assert_contains(&p.b.addr().to_string());

    // disable: the very next connections all go to b.
    server_cmd(lbctl, &["disable", "web/a"]).assert_success();
    let names = p.names(10);
    assert!(names.iter().all(|n| n == "b"), "a still picked: {names:?}");
    let row = server_row(&lbctl.status_json(), "a").expect("a row");
    assert_eq!(state_of(&row), "disabled", "{row:#}");
    server_cmd(lbctl, &["list"])
        .assert_success()
        .assert_contains("disabled");

    // enable: a takes traffic again.
    server_cmd(lbctl, &["enable", "web/a"]).assert_success();
    let names = p.names(10);
    assert!(names.iter().any(|n| n == "a"), "a not back: {names:?}");
    assert_eq!(
        state_of(&server_row(&lbctl.status_json(), "a").expect("a row")),
        "up"
    );

    // drain: a connection held open on a keeps working, new ones go to b.
    let mut held = None;
    for _ in 0..4 {
        let (s, name) = greet(p.bind()).expect("connection through the balancer");
        if name == "a" {
            held = Some(s);
            break;
        }
    }
    let mut held = held.expect("no connection reached a in 4 tries");
    // Drain by address this time (SERVER is a name or an address).
    let target = format!("web/{}", p.a.addr());
    server_cmd(lbctl, &["drain", &target]).assert_success();
    let names = p.names(10);
    assert!(
        names.iter().all(|n| n == "b"),
        "draining a still picked: {names:?}"
    );
    let row = wait_server(lbctl, "a", "draining with 1 active", |r| {
        state_of(r) == "draining" && u64_of(r, "active") == 1
    });
    assert_eq!(str_of(&row, "addr"), p.a.addr().to_string());
    held.write_all(b"still here")
        .expect("write on the drained connection");
    let mut echo = [0u8; 10];
    held.read_exact(&mut echo)
        .expect("echo on the drained connection");
    assert_eq!(&echo, b"still here");
    drop(held);
    wait_server(lbctl, "a", "draining with 0 active", |r| {
        state_of(r) == "draining" && u64_of(r, "active") == 0
    });

    server_cmd(lbctl, &["enable", "web/a"]).assert_success();
    let names = p.names(10);
    assert!(
        names.iter().any(|n| n == "a"),
        "a not back after drain: {names:?}"
    );
}

#[test]
fn server_command_on_an_unknown_server_fails_with_a_clear_message() {
    let p = Pair::start();
    let lbctl = &p.lbctl;

    server_cmd(lbctl, &["disable", "web/nope"])
        .assert_failure()
        .assert_contains("nope");
    server_cmd(lbctl, &["drain", "api/a"])
        .assert_failure()
        .assert_contains("api");
    server_cmd(lbctl, &["enable", "a"]).assert_failure();
    // Nothing changed.
    let names = p.names(10);
    assert!(
        names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b"),
        "{names:?}"
    );
    let st = lbctl.status_json();
    for s in servers(&st, 0) {
        assert_eq!(state_of(s), "up", "{st:#}");
    }
}

// ---------------------------------------------------------------------------
// 5. Runtime changes vs. worker respawn and reload
// ---------------------------------------------------------------------------

#[test]
fn runtime_disable_survives_a_worker_respawn_and_a_reload_resets_it() {
    let p = Pair::start();
    let lbctl = &p.lbctl;
    server_cmd(lbctl, &["disable", "web/a"]).assert_success();
    wait_state(lbctl, "a", "disabled");

    // kill -9 the worker in slot 0; wait for a new pid in that slot.
    let before = lbctl.status_json();
    let (slot, victim, _, _) = worker_rows(&before)
        .into_iter()
        .next()
        .expect("a worker row");
    assert!(
        p.master.workers().contains(&victim),
        "worker {victim} is not a child of the master"
    );
    signal(victim, Signal::SIGKILL);
    let mut last = before;
    let replaced = wait_until(WAIT, || {
        let Some(st) = lbctl.try_status_json() else {
            return false;
        };
        last = st;
        worker_rows(&last).iter().any(|(s, pid, _, state)| {
            *s == slot && *pid != victim && pid_alive(*pid) && state == "running"
        })
    });
    assert!(
        replaced,
        "slot {slot} not refilled after killing {victim}: {last:#}"
    );
    let row = server_row(&last, "a").expect("a row");
    assert_eq!(
        state_of(&row),
        "disabled",
        "respawn lost the runtime state: {last:#}"
    );
    // Both workers, the new one included, keep a out.
    let names = p.names(10);
    assert!(
        names.iter().all(|n| n == "b"),
        "a picked after respawn: {names:?}"
    );

    // A reload resets runtime changes to the file.
    lbctl
        .run("reload", &[])
        .assert_success()
        .assert_contains("reloaded: generation 2");
    wait_state(lbctl, "a", "up");
    let names = p.names(10);
    assert!(
        names.iter().any(|n| n == "a"),
        "a not back after reload: {names:?}"
    );
}
