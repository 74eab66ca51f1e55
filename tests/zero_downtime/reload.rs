//! Owns the reload tests under load: the same file, servers added, removed and
//! re-weighted, other strategies, listeners added and removed, worker count
//! changes, and twenty reloads in a row.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::util::backend::Backend;
use crate::util::json::{array_of, str_of, u64_of, worker_rows};
use crate::util::load::{Load, LoadConfig};
use crate::util::{
    Conf, Lbctl, ListenConf, Master, ServerConf, TempDir, WAIT, connect, fetch, pid_alive,
    wait_until,
};

use super::{echo_round, finish, standard_load, two_listens};

/// Runs `lbctl reload`, asserting exit 0 and "reloaded: generation N";
/// returns N.
#[track_caller]
fn reload(lbctl: &Lbctl) -> u64 {
    let out = lbctl.run("reload", &[]);
    out.assert_success();
    match reloaded_generation(&out.stdout) {
        Some(n) => n,
        None => panic!(
            "reload did not print \"reloaded: generation N\"\n{}",
            out.describe()
        ),
    }
}

/// N of "reloaded: generation N".
fn reloaded_generation(text: &str) -> Option<u64> {
    let rest = text.split("reloaded: generation ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// True if a connection to `addr` is refused (nothing listens).
fn refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

/// Status rows `(slot, pid, generation, state)` in state `draining`.
fn draining_rows(st: &serde_json::Value) -> Vec<(u64, i32, u64, String)> {
    worker_rows(st)
        .into_iter()
        .filter(|r| r.3 == "draining")
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Reload variants
// ---------------------------------------------------------------------------

#[test]
fn reloads_with_same_file_changed_servers_weights_and_strategies_fail_no_connection() {
    let dir = TempDir::new();
    let (a, b, c) = (
        Backend::fixed("A"),
        Backend::fixed("B"),
        Backend::fixed("C"),
    );
    let (e1, e2) = (Backend::echo(), Backend::echo());
    let base = two_listens(&dir, &[a.addr()], &[e1.addr()], 2);
    let path = base.write(&dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let load = standard_load(&base, &["A", "B", "C"]);
    assert!(
        load.wait_progress(20, WAIT),
        "no traffic before the reloads"
    );

    let with = |short: Vec<ServerConf>, long: Vec<ServerConf>, balance: &str| {
        let mut conf = base.clone();
        conf.listens[0] = conf.listens[0].clone().servers(short).balance(balance);
        conf.listens[1] = conf.listens[1].clone().servers(long).balance(balance);
        conf
    };
    let s = ServerConf::new;
    let mut variants: Vec<(String, Conf)> = vec![
        ("the same file".to_string(), base.clone()),
        (
            "servers added".to_string(),
            with(
                vec![s(a.addr()), s(b.addr()), s(c.addr())],
                vec![s(e1.addr()), s(e2.addr())],
                "round_robin",
            ),
        ),
        (
            // e1 carries the long-lived streams: they must outlive its removal.
            "servers removed".to_string(),
            with(
                vec![s(b.addr()), s(c.addr())],
                vec![s(e2.addr())],
                "round_robin",
            ),
        ),
        (
            "servers re-weighted".to_string(),
            with(
                vec![s(b.addr()).weight(5), s(c.addr()).weight(1)],
                vec![s(e2.addr()).weight(3)],
                "weighted_round_robin",
            ),
        ),
    ];
    for strategy in [
        "random",
        "least_connections",
        "power_of_two",
        "source_hash",
        "first",
        "round_robin",
    ] {
        variants.push((
            format!("strategy {strategy}"),
            with(
                vec![s(a.addr()), s(b.addr()), s(c.addr())],
                vec![s(e1.addr()), s(e2.addr())],
                strategy,
            ),
        ));
    }

    let mut expect = 1;
    for (what, conf) in &variants {
        conf.write_to(&path);
        expect += 1;
        let n = reload(&lbctl);
        assert_eq!(n, expect, "reload with {what}");
        assert!(
            load.wait_progress(10, WAIT),
            "traffic stalled after the reload with {what}; failures so far: {:#?}",
            load.failures()
        );
        let failures = load.failures();
        assert!(
            failures.is_empty(),
            "connections failed by the reload with {what}: {failures:#?}"
        );
    }
    let report = load.stop();
    eprintln!("reload variants: {}", report.describe());
    report.assert_no_failures("reloads with changed servers, weights and strategies");
    let st = lbctl.status_json();
    assert_eq!(u64_of(&st, "generation"), expect, "{st:#}");
}

// ---------------------------------------------------------------------------
// 2. Listeners added and removed by reload
// ---------------------------------------------------------------------------

#[test]
fn reload_adds_a_listener_that_accepts_and_removes_one_whose_connections_drain() {
    let dir = TempDir::new();
    let a = Backend::fixed("A");
    let n = Backend::fixed("N");
    let e = Backend::echo();
    let mut base = two_listens(&dir, &[a.addr()], &[e.addr()], 2);
    let mut old = ListenConf::new(&[e.addr()]);
    old.name = "old".to_string();
    let old_bind = old.bind;
    base.listens.push(old);
    let path = base.write(&dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let load = standard_load(&base, &["A"]);
    assert!(load.wait_progress(20, WAIT), "no traffic before the reload");

    let mut through_old = connect(old_bind).expect("connect through the listen to be removed");
    echo_round(&mut through_old, b"before the reload").expect("echo through the old listen");

    let mut conf2 = base.clone();
    conf2.listens.pop();
    let mut added = ListenConf::new(&[n.addr()]);
    added.name = "new".to_string();
    let new_bind = added.bind;
    conf2.listens.push(added);
    conf2.write_to(&path);
    assert_eq!(reload(&lbctl), 2);

    // The added listener accepts as soon as reload returns.
    for i in 0..5 {
        match fetch(new_bind) {
            Ok(r) => assert_eq!(r, "N", "conn {i} to the added listener {new_bind}"),
            Err(e) => panic!("conn {i} to the added listener {new_bind} failed: {e}"),
        }
    }
    // The removed listener's open connection drains: it keeps working.
    echo_round(&mut through_old, b"while draining")
        .expect("the connection through the removed listener was cut by the reload");
    // New connections to the removed port are refused (not accepted into a
    // queue nobody serves). Not counted as failures of the load.
    let refused_while_draining = wait_until(WAIT, || refused(old_bind));
    echo_round(&mut through_old, b"still draining").expect("echo after the refusal check");
    finish(through_old).expect("clean end of the drained connection");

    assert!(
        load.wait_progress(10, WAIT),
        "traffic stalled after the reload"
    );
    let report = load.stop();
    eprintln!("listeners added/removed: {}", report.describe());
    report.assert_no_failures("listener added and removed by reload");
    let st = lbctl.status_json();
    let binds: Vec<String> = array_of(&st, "listens")
        .iter()
        .map(|l| str_of(l, "bind").to_string())
        .collect();
    assert!(
        binds.contains(&new_bind.to_string()) && !binds.contains(&old_bind.to_string()),
        "status listens {binds:?}: expected {new_bind} and not {old_bind}"
    );
    // Once every old connection has ended the port is closed for sure.
    let refused_after_drain = wait_until(WAIT, || refused(old_bind));
    assert!(
        refused_after_drain,
        "the removed listener {old_bind} still accepts connections after the old generation drained"
    );
    assert!(
        refused_while_draining,
        "the removed listener {old_bind} kept accepting new connections (into a queue no worker \
         serves) while the old generation drained; it is only closed once every old worker exited"
    );
}

// ---------------------------------------------------------------------------
// 3. Worker count changes
// ---------------------------------------------------------------------------

#[test]
fn workers_4_to_2_to_4_by_reload_reset_no_queued_connection() {
    let dir = TempDir::new();
    let (a, b) = (Backend::fixed("A"), Backend::fixed("B"));
    let e = Backend::echo();
    let base = two_listens(&dir, &[a.addr(), b.addr()], &[e.addr()], 4);
    let path = base.write(&dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    // Bursts of 16 connections per thread: many sit in accept queues while
    // the workers change.
    let load = Load::start(
        LoadConfig::default()
            .short(base.bind(), 3, &["A", "B"])
            .batch(16)
            .long(base.listens[1].bind, 4),
    );
    assert!(
        load.wait_progress(50, WAIT),
        "no traffic before the reloads"
    );

    for (i, workers) in [2usize, 4].into_iter().enumerate() {
        base.clone().workers(workers).write_to(&path);
        let generation = reload(&lbctl);
        assert_eq!(generation, i as u64 + 2);
        let st = lbctl.status_json();
        let rows = worker_rows(&st);
        let mut slots: Vec<u64> = rows
            .iter()
            .filter(|r| r.2 == generation)
            .map(|r| r.0)
            .collect();
        slots.sort_unstable();
        let want: Vec<u64> = (0..workers as u64).collect();
        assert_eq!(
            slots, want,
            "generation {generation} should have slots {want:?}: {st:#}"
        );
        for (slot, pid, g, state) in &rows {
            if *g == generation {
                assert_eq!(state, "running", "new worker slot {slot} pid {pid}: {st:#}");
            } else {
                assert_eq!(
                    state, "draining",
                    "old worker slot {slot} pid {pid} (generation {g}) after reload: {st:#}"
                );
            }
        }
        assert!(
            load.wait_progress(50, WAIT),
            "traffic stalled with {workers} workers; failures: {:#?}",
            load.failures()
        );
    }
    let report = load.stop();
    eprintln!("workers 4->2->4: {}", report.describe());
    report.assert_no_failures("workers 4 -> 2 -> 4 by reload");
}

// ---------------------------------------------------------------------------
// 4. Twenty reloads in a row
// ---------------------------------------------------------------------------

#[test]
fn twenty_reloads_in_a_row_number_generations_and_old_workers_drain_until_they_exit() {
    let dir = TempDir::new();
    let (a, b) = (Backend::fixed("A"), Backend::fixed("B"));
    let e = Backend::echo();
    let base = two_listens(&dir, &[a.addr(), b.addr()], &[e.addr()], 2);
    let path = base.write(&dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let load = standard_load(&base, &["A", "B"]);
    assert!(
        load.wait_progress(20, WAIT),
        "no traffic before the reloads"
    );

    let mut last = 1;
    let mut draining_seen: Vec<i32> = Vec::new();
    for i in 0..20 {
        let n = reload(&lbctl);
        assert!(
            n > last,
            "reload {i}: generation {n} does not follow generation {last}"
        );
        assert_eq!(n, last + 1, "reload {i}: generations are numbered in order");
        last = n;
        if i == 0 {
            // The long-lived streams hold generation-1 workers open.
            let st = lbctl.status_json();
            let draining = draining_rows(&st);
            assert!(
                draining.iter().any(|r| r.2 == 1),
                "no generation-1 worker shows \"draining\" while long-lived connections are open: {st:#}"
            );
            for r in &draining {
                assert!(pid_alive(r.1), "draining worker {} is not alive", r.1);
            }
            draining_seen.extend(draining.iter().map(|r| r.1));
        }
    }
    assert!(
        load.wait_progress(20, WAIT),
        "traffic stalled after 20 reloads; failures: {:#?}",
        load.failures()
    );
    let report = load.stop();
    eprintln!("20 reloads: {}", report.describe());
    report.assert_no_failures("20 reloads in a row");

    // With the streams closed the draining workers exit and leave the report.
    let mut st = serde_json::Value::Null;
    let settled = wait_until(WAIT, || {
        let Some(s) = lbctl.try_status_json() else {
            return false;
        };
        st = s;
        let rows = worker_rows(&st);
        rows.len() == 2 && rows.iter().all(|r| r.2 == last && r.3 == "running")
    });
    assert!(
        settled,
        "old workers still listed after their connections closed: {st:#}"
    );
    for pid in draining_seen {
        assert!(
            wait_until(WAIT, || !pid_alive(pid)),
            "draining worker {pid} outlived its connections"
        );
    }
}
