//! Owns the balancing tests through the real binary with two workers:
//! weighted round robin shares, least connections avoiding a loaded server,
//! backup servers, `source_hash` stickiness across a reload, `max_conns` with
//! the listen queue (wait, serve, time out), weight 0 at start and at runtime,
//! and the per-server `weight`/`active`/`total` columns of `status`.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use serde_json::Value;

use crate::util::backend::Backend;
use crate::util::json::{array_of, servers, str_of, u64_of, worker_rows, workers};
use crate::util::loadgen::{Extra, count_of, fetch_from, open_n, tally};
use crate::util::scripted::Scripted;
use crate::util::{Conf, Lbctl, Master, ServerConf, TempDir, WAIT, connect, wait_until};

/// A health check that flips a server after one probe either way.
const FAST_TCP_CHECK: &str =
    "{ kind = \"tcp\", interval = \"100ms\", timeout = \"200ms\", rise = 1, fall = 1 }";

/// The server named `name` in the first listen of a status document.
#[track_caller]
fn server<'a>(st: &'a Value, name: &str) -> &'a Value {
    match servers(st, 0).iter().find(|s| str_of(s, "name") == name) {
        Some(s) => s,
        None => panic!("no server {name:?} in {st:#}"),
    }
}

/// A counter of the first listen (`queued`, `refused`).
#[track_caller]
fn listen_u64(st: &Value, key: &str) -> u64 {
    match array_of(st, "listens").first() {
        Some(l) => u64_of(l, key),
        None => panic!("no listens in {st:#}"),
    }
}

/// Waits until `cond` holds on a fresh `status --json`; panics with the last
/// document and `what` if it never does.
#[track_caller]
fn wait_status(lbctl: &Lbctl, what: &str, mut cond: impl FnMut(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(WAIT, || {
        let Some(st) = lbctl.try_status_json() else {
            return false;
        };
        let done = cond(&st);
        last = st;
        done
    });
    assert!(ok, "{what}; last status: {last:#}");
    last
}

/// Waits until a condition on backends holds; panics with `what` otherwise.
#[track_caller]
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(WAIT, cond), "{what}");
}

/// `lbctl server <args>`, which must succeed.
#[track_caller]
fn server_cmd(lbctl: &Lbctl, args: &[&str]) {
    let sub = args[0];
    let out = lbctl.run("server", args);
    out.assert_success();
    if sub == "weight" {
        out.assert_contains("weight set to");
    }
}

fn named(addr: SocketAddr, name: &str) -> ServerConf {
    ServerConf::new(addr).name(name)
}

/// Starts the master on the config file `path` (waiting until it accepts)
/// and returns it with a command wrapper on the same file.
#[track_caller]
fn start(dir: &TempDir, path: &Path) -> (Master, Lbctl) {
    (Master::start(dir, path), Lbctl::new(dir, path))
}

/// Opens `n` connections through `bind`; every one must be answered by `name`.
#[track_caller]
fn assert_all_served_by(bind: SocketAddr, n: usize, name: &str, what: &str) {
    let counts = tally(bind, n);
    assert_eq!(count_of(&counts, name), n, "{what}: {counts:?}");
}

/// Waits until the server `name` is in `state`.
#[track_caller]
fn wait_server_state(lbctl: &Lbctl, name: &str, state: &str) {
    wait_status(lbctl, &format!("{name} was never {state}"), |st| {
        str_of(server(st, name), "state") == state
    });
}

#[test]
fn weighted_round_robin_one_two_three_splits_600_connections_by_weight() {
    let dir = TempDir::new();
    let a = Backend::fixed("a");
    let b = Backend::fixed("b");
    let c = Backend::fixed("c");
    let conf = Conf::new(&dir, &[]).workers(2).listen(|l| {
        l.balance("weighted_round_robin").servers(vec![
            named(a.addr(), "a").weight(1),
            named(b.addr(), "b").weight(2),
            named(c.addr(), "c").weight(3),
        ])
    });
    let (_master, lbctl) = start(&dir, &conf.write(&dir));

    let counts = tally(conf.bind(), 600);
    assert_eq!(
        counts.values().sum::<usize>(),
        600,
        "unexpected replies: {counts:?}"
    );
    for (name, weight) in [("a", 1.0), ("b", 2.0), ("c", 3.0)] {
        let share = count_of(&counts, name) as f64 * 100.0 / 600.0;
        let want = weight * 100.0 / 6.0;
        assert!(
            (share - want).abs() <= 5.0,
            "server {name} got {share:.1}% of 600 connections, want {want:.1}% ± 5; all: {counts:?}"
        );
    }

    // The counters agree with what the clients saw, and both workers served.
    let st = wait_status(&lbctl, "server totals never matched the replies", |st| {
        ["a", "b", "c"]
            .iter()
            .all(|n| u64_of(server(st, n), "total") == count_of(&counts, n) as u64)
            && servers(st, 0).iter().all(|s| u64_of(s, "active") == 0)
    });
    let busy = workers(&st)
        .iter()
        .filter(|w| u64_of(w, "total") > 0)
        .count();
    assert_eq!(
        busy, 2,
        "both workers should have taken connections: {st:#}"
    );
}

#[test]
fn least_connections_sends_new_connections_away_from_a_server_holding_many() {
    let dir = TempDir::new();
    let holder = Backend::hold();
    let quick = Backend::fixed("quick");
    let conf = Conf::new(&dir, &[]).workers(2).listen(|l| {
        l.balance("least_connections").servers(vec![
            named(holder.addr(), "holder"),
            named(quick.addr(), "quick"),
        ])
    });
    let (_master, lbctl) = start(&dir, &conf.write(&dir));

    // Load the holder: with "quick" disabled every connection goes there.
    server_cmd(&lbctl, &["disable", "web/quick"]);
    let held = open_n(conf.bind(), 5);
    wait_for("the holding server never had 5 open connections", || {
        holder.open_connections() == 5
    });
    wait_status(&lbctl, "status never showed 5 active on the holder", |st| {
        u64_of(server(st, "holder"), "active") == 5
    });
    server_cmd(&lbctl, &["enable", "web/quick"]);

    assert_all_served_by(
        conf.bind(),
        30,
        "quick",
        "every short connection should go to the idle server",
    );
    assert_eq!(
        holder.accepted(),
        5,
        "the loaded server got new connections"
    );
    drop(held);
}

#[test]
fn backup_serves_only_while_both_primaries_are_down_and_hands_back_to_a_returning_one() {
    let dir = TempDir::new();
    // Killed below: a backend whose kill still answers what it accepted,
    // so only the balancer's behaviour is under test.
    let p1 = Scripted::fixed("p1");
    let p2 = Backend::fixed("p2");
    let spare = Backend::fixed("backup");
    let (p1_addr, p2_addr) = (p1.addr(), p2.addr());
    let conf = Conf::new(&dir, &[]).workers(2).listen(|l| {
        l.retries(2).health(FAST_TCP_CHECK).servers(vec![
            named(p1_addr, "p1"),
            named(p2_addr, "p2"),
            named(spare.addr(), "backup").backup(),
        ])
    });
    let (_master, lbctl) = start(&dir, &conf.write(&dir));

    let counts = tally(conf.bind(), 20);
    assert_eq!(
        count_of(&counts, "backup"),
        0,
        "backup used with both primaries up: {counts:?}"
    );
    assert!(
        count_of(&counts, "p1") > 0 && count_of(&counts, "p2") > 0,
        "both primaries should serve: {counts:?}"
    );

    // One primary stops: the other carries everything (retries cover the
    // moment before the check marks it down), the backup still nothing.
    p1.kill();
    let bind = conf.bind();
    assert_all_served_by(bind, 10, "p2", "one primary left");
    wait_server_state(&lbctl, "p1", "down");
    assert_all_served_by(bind, 10, "p2", "one primary marked down");

    // Both primaries stop: the backup takes over.
    drop(p2);
    assert_all_served_by(bind, 10, "backup", "no primary left");
    wait_server_state(&lbctl, "p2", "down");
    assert_all_served_by(bind, 10, "backup", "both primaries down");

    // p1 comes back on its address: once it is up, it has all the traffic.
    let p1_again = Backend::fixed_at(p1_addr, "p1-again");
    wait_server_state(&lbctl, "p1", "up");
    assert_all_served_by(
        bind,
        20,
        "p1-again",
        "a primary is back, the backup should be idle",
    );
    let st = lbctl.status_json();
    assert_eq!(str_of(server(&st, "p2"), "state"), "down", "{st:#}");
    drop(p1_again);
}

/// Which server (by reply) answers each client address.
#[track_caller]
fn replies_by_client(bind: SocketAddr, clients: &[IpAddr]) -> Vec<String> {
    clients
        .iter()
        .map(|ip| match fetch_from(*ip, bind) {
            Ok(r) => r,
            Err(e) => panic!("fetch from {ip} through {bind} failed: {e}"),
        })
        .collect()
}

#[test]
fn source_hash_keeps_each_client_on_its_server_across_a_reload() {
    let dir = TempDir::new();
    let a = Backend::fixed("a");
    let b = Backend::fixed("b");
    let c = Backend::fixed("c");
    let conf = Conf::new(&dir, &[]).workers(2).listen(|l| {
        l.balance("source_hash").servers(vec![
            named(a.addr(), "a"),
            named(b.addr(), "b"),
            named(c.addr(), "c"),
        ])
    });
    let (_master, lbctl) = start(&dir, &conf.write(&dir));
    let clients: Vec<IpAddr> = (2..=25)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();

    let first = replies_by_client(conf.bind(), &clients);
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "{} clients all hashed to one server: {first:?}",
        clients.len()
    );
    // Sticky within a generation, whichever worker takes the connection.
    for round in 0..3 {
        let again = replies_by_client(conf.bind(), &clients);
        assert_eq!(
            again, first,
            "round {round}: a client moved (clients {clients:?})"
        );
    }

    let out = lbctl.run("reload", &[]);
    out.assert_success().assert_contains("generation 2");
    wait_status(&lbctl, "the first generation never left", |st| {
        let rows = worker_rows(st);
        !rows.is_empty() && rows.iter().all(|r| r.2 == 2)
    });

    let after = replies_by_client(conf.bind(), &clients);
    assert_eq!(
        after, first,
        "clients moved across the reload (clients {clients:?})"
    );
}

#[test]
fn max_conns_skips_a_full_server_then_queues_until_a_held_connection_is_released() {
    let dir = TempDir::new();
    let a = Backend::hold();
    let b = Backend::hold();
    let conf = Conf::new(&dir, &[]).workers(2).listen(|l| {
        l.balance("first")
            .servers(vec![named(a.addr(), "a"), named(b.addr(), "b")])
    });
    let path = Extra::new()
        .listen("queue = { size = 8, timeout = \"8s\" }")
        .server(a.addr(), "max_conns = 2")
        .server(b.addr(), "max_conns = 2")
        .write(&conf, &dir);
    let (_master, lbctl) = start(&dir, &path);
    let bind = conf.bind();

    // `first` fills a up to its max_conns ...
    let mut held = open_n(bind, 1);
    wait_for("a never got the 1st connection", || {
        a.open_connections() == 1
    });
    held.extend(open_n(bind, 1));
    wait_for("a never got the 2nd connection", || {
        a.open_connections() == 2
    });
    // ... then, with a full, the next ones go to b.
    held.extend(open_n(bind, 1));
    wait_for("b never got the 3rd connection", || {
        b.open_connections() == 1
    });
    held.extend(open_n(bind, 1));
    wait_for("b never got the 4th connection", || {
        b.open_connections() == 2
    });
    assert_eq!(a.accepted(), 2, "a went past max_conns = 2");
    let st = lbctl.status_json();
    assert_eq!(u64_of(server(&st, "a"), "active"), 2, "{st:#}");
    assert_eq!(u64_of(server(&st, "b"), "active"), 2, "{st:#}");

    // Every server is full: the 5th waits in the queue.
    let waiting = connect(bind).expect("connect the 5th client");
    wait_status(&lbctl, "the 5th connection never showed as queued", |st| {
        listen_u64(st, "queued") == 1
    });
    assert_eq!(
        a.accepted() + b.accepted(),
        4,
        "a server went past max_conns"
    );

    // A held connection to a ends: the waiting one is served by a.
    drop(held.remove(0));
    wait_for("the queued connection never reached a", || {
        a.accepted() == 3
    });
    let st = wait_status(&lbctl, "the queue never emptied", |st| {
        listen_u64(st, "queued") == 0
    });
    assert_eq!(listen_u64(&st, "refused"), 0, "{st:#}");
    assert_eq!(b.accepted(), 2, "b went past max_conns");
    wait_for("a should hold the 2nd and the dequeued connection", || {
        a.open_connections() == 2
    });
    drop(waiting);
    drop(held);
}

#[test]
fn queued_connection_is_closed_at_the_queue_timeout_and_counted_as_refused() {
    let dir = TempDir::new();
    let a = Backend::hold();
    let b = Backend::hold();
    let conf = Conf::new(&dir, &[])
        .workers(2)
        .listen(|l| l.servers(vec![named(a.addr(), "a"), named(b.addr(), "b")]));
    let path = Extra::new()
        .listen("queue = { size = 8, timeout = \"100ms\" }")
        .server(a.addr(), "max_conns = 1")
        .server(b.addr(), "max_conns = 1")
        .write(&conf, &dir);
    let (_master, lbctl) = start(&dir, &path);
    let bind = conf.bind();

    let held = open_n(bind, 2);
    wait_for("the two servers never held one connection each", || {
        a.open_connections() == 1 && b.open_connections() == 1
    });
    let st = lbctl.status_json();
    assert_eq!(listen_u64(&st, "refused"), 0, "{st:#}");

    let mut late = connect(bind).expect("connect the 3rd client");
    let mut buf = [0u8; 16];
    match late.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("the refused client got {n} bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the queued client was not closed at the queue timeout: {e}"),
    }
    let st = wait_status(&lbctl, "refused never counted the timed-out client", |st| {
        listen_u64(st, "refused") == 1 && listen_u64(st, "queued") == 0
    });
    assert_eq!(
        a.accepted() + b.accepted(),
        2,
        "a server went past max_conns: {st:#}"
    );
    drop(held);
}

#[test]
fn weight_zero_gets_nothing_and_a_runtime_weight_stops_and_restores_traffic() {
    let dir = TempDir::new();
    let a = Backend::fixed("a");
    let b = Backend::fixed("b");
    let c = Backend::fixed("c");
    let conf = Conf::new(&dir, &[]).workers(2).listen(|l| {
        l.balance("weighted_round_robin").servers(vec![
            named(a.addr(), "a").weight(0),
            named(b.addr(), "b"),
            named(c.addr(), "c"),
        ])
    });
    let (_master, lbctl) = start(&dir, &conf.write(&dir));

    let counts = tally(conf.bind(), 40);
    assert_eq!(
        count_of(&counts, "a"),
        0,
        "weight 0 got traffic: {counts:?}"
    );
    assert!(
        count_of(&counts, "b") > 0 && count_of(&counts, "c") > 0,
        "{counts:?}"
    );

    server_cmd(&lbctl, &["weight", "web/b", "0"]);
    let st = lbctl.status_json();
    assert_eq!(u64_of(server(&st, "b"), "weight"), 0, "{st:#}");
    assert_all_served_by(
        conf.bind(),
        30,
        "c",
        "after weight web/b 0 only c may serve",
    );

    server_cmd(&lbctl, &["weight", "web/b", "3"]);
    let st = lbctl.status_json();
    assert_eq!(u64_of(server(&st, "b"), "weight"), 3, "{st:#}");
    let counts = tally(conf.bind(), 80);
    assert_eq!(count_of(&counts, "a"), 0, "{counts:?}");
    // b:c = 3:1, so about 60 of 80.
    let b_n = count_of(&counts, "b");
    assert!(
        (50..=70).contains(&b_n),
        "after weight web/b 3, b should take about 3/4 of 80: {counts:?}"
    );
}

#[test]
fn status_shows_each_servers_weight_active_and_total() {
    let dir = TempDir::new();
    let a = Backend::hold();
    let b = Backend::hold();
    let conf = Conf::new(&dir, &[]).workers(2).listen(|l| {
        l.servers(vec![
            named(a.addr(), "a").weight(2),
            named(b.addr(), "b").weight(5),
        ])
    });
    let (_master, lbctl) = start(&dir, &conf.write(&dir));

    let st = lbctl.status_json();
    for (name, weight) in [("a", 2), ("b", 5)] {
        let s = server(&st, name);
        assert_eq!(u64_of(s, "weight"), weight, "{st:#}");
        assert_eq!(u64_of(s, "active"), 0, "{st:#}");
        assert_eq!(u64_of(s, "total"), 0, "{st:#}");
    }

    // 4 held connections, spread by round robin.
    let held = open_n(conf.bind(), 4);
    wait_for("the backends never held 4 connections", || {
        a.open_connections() + b.open_connections() == 4
    });
    let st = wait_status(&lbctl, "active never matched the held connections", |st| {
        u64_of(server(st, "a"), "active") == a.open_connections() as u64
            && u64_of(server(st, "b"), "active") == b.open_connections() as u64
    });
    for (name, backend) in [("a", &a), ("b", &b)] {
        let s = server(&st, name);
        assert_eq!(u64_of(s, "total"), backend.accepted() as u64, "{st:#}");
    }
    let (a_active, b_active) = (
        u64_of(server(&st, "a"), "active"),
        u64_of(server(&st, "b"), "active"),
    );
    assert_eq!(a_active + b_active, 4, "{st:#}");

    // The text forms carry the same numbers.
    let list = lbctl.run("server", &["list"]);
    list.assert_success();
    list.assert_contains(&format!(
        "web/a\t{}\tup\tweight 2\tactive {a_active}\ttotal {a_active}",
        a.addr()
    ));
    list.assert_contains(&format!(
        "web/b\t{}\tup\tweight 5\tactive {b_active}\ttotal {b_active}",
        b.addr()
    ));
    let text = lbctl.run("status", &[]);
    text.assert_success();
    for (name, addr, weight, active) in [("a", a.addr(), 2, a_active), ("b", b.addr(), 5, b_active)]
    {
        let row = text
            .stdout
            .lines()
            .find(|l| l.contains(&addr.to_string()) && l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("no row for server {name}\n{}", text.describe()));
        let cols: Vec<&str> = row.split_whitespace().collect();
        let at = cols
            .iter()
            .position(|c| *c == addr.to_string())
            .unwrap_or_else(|| panic!("row without the address: {row}"));
        // server NAME ADDR | state weight active total
        let want = vec![
            "up".to_string(),
            weight.to_string(),
            active.to_string(),
            active.to_string(),
        ];
        let got: Vec<String> = cols
            .iter()
            .skip(at + 1)
            .take(4)
            .map(|c| c.to_string())
            .collect();
        assert_eq!(got, want, "row: {row}\n{}", text.describe());
    }

    // Closing the clients brings active back to 0; totals stay.
    drop(held);
    let st = wait_status(&lbctl, "active never fell back to 0", |st| {
        servers(st, 0).iter().all(|s| u64_of(s, "active") == 0)
    });
    assert_eq!(
        u64_of(server(&st, "a"), "total") + u64_of(server(&st, "b"), "total"),
        4,
        "{st:#}"
    );

    // A runtime weight shows at once.
    server_cmd(&lbctl, &["weight", "web/a", "7"]);
    let st = lbctl.status_json();
    assert_eq!(u64_of(server(&st, "a"), "weight"), 7, "{st:#}");
}
