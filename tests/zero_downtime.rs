//! Owns the zero-downtime tests: with client load running (short connections
//! checked reply by reply, long-lived echo streams checked byte by byte),
//! reloads (same file, servers added/removed/re-weighted, other strategies,
//! listeners added/removed, worker count changes, 20 in a row), binary
//! upgrades (command, SIGUSR2, broken binary), a killed worker, and an fd
//! flood against a low open-files limit fail no connection they should not.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::backend::Backend;
use crate::util::json::{array_of, str_of, u64_of, worker_rows};
use crate::util::load::{Load, LoadConfig, Side};
use crate::util::{
    CMD_TIMEOUT, Conf, DaemonGuard, Lbctl, ListenConf, Master, ServerConf, TempDir, WAIT, connect,
    exchange, fetch, fetch_ok, lbctl_bin, pid_alive, run_bin_in, signal, wait_until,
};

/// Long enough that no draining worker is killed while a test runs: every
/// long-lived connection must survive until the load stops.
const DRAIN: &str = "60s";

/// A config with two listens: `short` over `short` (fixed-reply backends) on
/// `conf.bind()`, and `long` over `long` (echo backends) on `listens[1]`.
fn two_listens(dir: &TempDir, short: &[SocketAddr], long: &[SocketAddr], workers: usize) -> Conf {
    let mut conf = Conf::new(dir, short).workers(workers).drain_timeout(DRAIN);
    conf.listens[0].name = "short".to_string();
    let mut l = ListenConf::new(long);
    l.name = "long".to_string();
    conf.listens.push(l);
    conf
}

/// The standard load on a [`two_listens`] config: 2 short-connection
/// threads, 4 long-lived streams.
fn standard_load(conf: &Conf, replies: &[&str]) -> Load {
    Load::start(
        LoadConfig::default()
            .short(conf.listens[0].bind, 2, replies)
            .long(conf.listens[1].bind, 4),
    )
}

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

/// One echo round trip on an open connection.
fn echo_round(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back == msg {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "echoed {back:?} instead of {msg:?}"
        )))
    }
}

/// Ends a connection cleanly: our EOF, then the peer's EOF with no byte.
fn finish(mut s: TcpStream) -> std::io::Result<()> {
    s.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{} stray bytes before EOF",
            rest.len()
        )))
    }
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

// ---------------------------------------------------------------------------
// 5. Binary upgrade
// ---------------------------------------------------------------------------

/// Puts `contents` at `path` through a rename (a running binary cannot be
/// written in place), executable.
fn replace_file(path: &Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("replacing");
    std::fs::write(&tmp, contents).expect("write replacement");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod +x");
    std::fs::rename(&tmp, path).expect("rename replacement");
}

/// The `master_pid` of a status answer.
fn master_pid(st: &serde_json::Value) -> i32 {
    i32::try_from(u64_of(st, "master_pid")).expect("pid fits i32")
}

/// Waits until status answers with a master pid that `accept` likes; returns
/// it (panics with the last answer otherwise).
#[track_caller]
fn wait_master(lbctl: &Lbctl, what: &str, accept: impl Fn(i32) -> bool) -> i32 {
    let mut last = None;
    let ok = wait_until(WAIT, || {
        last = lbctl.try_status_json();
        last.as_ref().is_some_and(|st| accept(master_pid(st)))
    });
    match (ok, last) {
        (true, Some(st)) => master_pid(&st),
        (_, last) => panic!("{what}: last status {last:#?}"),
    }
}

#[test]
fn binary_upgrade_by_command_and_sigusr2_fails_no_connection_and_a_broken_binary_changes_nothing() {
    let dir = TempDir::new();
    let (a, b) = (Backend::fixed("A"), Backend::fixed("B"));
    let e = Backend::echo();
    let conf = two_listens(&dir, &[a.addr(), b.addr()], &[e.addr()], 2);
    let path = conf.write(&dir);
    let bin_path: PathBuf = dir.join("lbctl");
    let good = std::fs::read(lbctl_bin()).expect("read the built binary");
    replace_file(&bin_path, &good);
    let mut guard = DaemonGuard::new(&conf);
    let mut cmd = Command::new(&bin_path);
    cmd.arg("start").arg("-c").arg(&path);
    let mut master = Master::spawn_command(&dir, &path, cmd);
    master.wait_accepting();
    let first = master.pid();
    guard.track(first);
    let lbctl = Lbctl::new(&dir, &path);
    let cfg = path.display().to_string();
    let load = standard_load(&conf, &["A", "B"]);
    assert!(
        load.wait_progress(20, WAIT),
        "no traffic before the upgrade"
    );

    // 1. `upgrade` through the copy's own CLI.
    let up = run_bin_in(&bin_path, dir.path(), &["upgrade", "-c", &cfg], CMD_TIMEOUT);
    up.assert_success()
        .assert_contains("upgraded: new master pid ");
    let second: i32 = up
        .stdout
        .split("upgraded: new master pid ")
        .nth(1)
        .and_then(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no pid after \"new master pid\"\n{}", up.describe()));
    guard.track(second);
    assert_ne!(second, first, "the upgrade kept the same master pid");
    let status_right_after = lbctl.try_status_json().map(|st| master_pid(&st));
    eprintln!(
        "upgrade: first status right after `upgrade` returned: master_pid {status_right_after:?}"
    );
    wait_master(&lbctl, "status never showed the new master", |p| {
        p == second
    });
    assert!(
        load.wait_progress(20, WAIT),
        "traffic stalled after the upgrade; failures: {:#?}",
        load.failures()
    );

    // 2. A broken binary on disk: the upgrade fails, the master keeps serving.
    replace_file(&bin_path, b"this is not an executable\n");
    let broken = lbctl.run("upgrade", &[]);
    broken.assert_failure().assert_contains("upgrade failed");
    let st = lbctl.status_json();
    assert_eq!(
        master_pid(&st),
        second,
        "a failed upgrade changed the master: {st:#}"
    );
    assert!(
        pid_alive(second),
        "master {second} died in a failed upgrade"
    );
    assert!(
        load.wait_progress(20, WAIT),
        "traffic stalled after the failed upgrade; failures: {:#?}",
        load.failures()
    );

    // 3. SIGUSR2 with a good binary back on disk.
    replace_file(&bin_path, &good);
    signal(second, Signal::SIGUSR2);
    let third = wait_master(&lbctl, "SIGUSR2 did not replace the master", |p| {
        p != second && p != first
    });
    guard.track(third);
    assert!(
        load.wait_progress(20, WAIT),
        "traffic stalled after the SIGUSR2 upgrade; failures: {:#?}",
        load.failures()
    );

    let report = load.stop();
    eprintln!("binary upgrades: {}", report.describe());
    report.assert_no_failures("binary upgrades");
    // The old masters leave once their workers drained.
    assert!(
        master.wait_exit(WAIT).is_some(),
        "the first master {first} outlived its upgrade"
    );
    assert!(
        wait_until(WAIT, || !pid_alive(second)),
        "the second master {second} outlived its upgrade"
    );
    let reply = fetch_ok(conf.bind());
    assert!(
        reply == "A" || reply == "B",
        "reply {reply:?} from the upgraded master"
    );
    lbctl.run("stop", &[]).assert_success();
    assert!(
        wait_until(WAIT, || !pid_alive(third)),
        "master {third} survived stop"
    );
}

// ---------------------------------------------------------------------------
// 6. Worker crash
// ---------------------------------------------------------------------------

/// Worker pid serving each long-lived connection (by client address), from
/// `lbctl connections --json`.
fn long_conn_workers(lbctl: &Lbctl, locals: &[SocketAddr]) -> Vec<Option<i32>> {
    let out = lbctl.run("connections", &["--json"]);
    out.assert_success();
    let v = out.json();
    let rows = array_of(&v, "connections");
    locals
        .iter()
        .map(|l| {
            rows.iter()
                .find(|r| str_of(r, "client") == l.to_string())
                .map(|r| i32::try_from(u64_of(r, "worker_pid")).expect("pid fits i32"))
        })
        .collect()
}

/// Two listens (short connections to a fixed reply, long-lived streams
/// through an echo backend) under load, 2 workers, and the worker holding the
/// most long-lived connections picked as the one to kill.
struct CrashSetup {
    _dir: TempDir,
    _backends: (Backend, Backend),
    master: Master,
    lbctl: Lbctl,
    load: Load,
    short_threads: usize,
    /// (slot, pid) of the worker to kill.
    slot: u64,
    victim: i32,
    /// Indexes of the long-lived connections that worker holds.
    victims_conns: Vec<usize>,
}

impl CrashSetup {
    fn start() -> CrashSetup {
        let dir = TempDir::new();
        let a = Backend::fixed("A");
        let e = Backend::echo();
        let conf = two_listens(&dir, &[a.addr()], &[e.addr()], 2);
        let path = conf.write(&dir);
        let master = Master::start(&dir, &path);
        let lbctl = Lbctl::new(&dir, &path);
        let short_threads = 2;
        let load = Load::start(
            LoadConfig::default()
                .short(conf.bind(), short_threads, &["A"])
                .long(conf.listens[1].bind, 6),
        );
        assert!(load.wait_progress(20, WAIT), "no traffic before the kill");
        let owners = long_conn_workers(&lbctl, load.long_locals());
        assert!(
            owners.iter().all(Option::is_some),
            "some long-lived connection is missing from `connections`: {owners:?}"
        );
        let st = lbctl.status_json();
        let (slot, victim, _, _) = worker_rows(&st)
            .into_iter()
            .max_by_key(|r| owners.iter().filter(|o| **o == Some(r.1)).count())
            .expect("a worker row");
        let victims_conns = owners
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == Some(victim))
            .map(|(k, _)| k)
            .collect();
        assert!(master.workers().contains(&victim));
        CrashSetup {
            _dir: dir,
            _backends: (a, e),
            master,
            lbctl,
            load,
            short_threads,
            slot,
            victim,
            victims_conns,
        }
    }

    /// Stops the load and checks that only the victim's long-lived
    /// connections were cut and at most `max_short` short ones failed.
    fn finish(self, what: &str, max_short: usize) {
        assert!(
            self.load.wait_progress(20, WAIT),
            "traffic stalled after the {what}; failures: {:#?}",
            self.load.failures()
        );
        let report = self.load.stop();
        eprintln!(
            "{what}: victim {} held long conns {:?}; {}",
            self.victim,
            self.victims_conns,
            report.describe()
        );
        for f in report.failures_of(Side::Long) {
            assert!(
                self.victims_conns.contains(&f.index),
                "long-lived connection {} (not on the killed worker) was cut: {f}",
                f.index
            );
        }
        let short_failures = report.failures_of(Side::Short).len();
        assert!(
            short_failures <= max_short,
            "{short_failures} short connections failed, at most {max_short} expected: {}",
            report.describe()
        );
        assert!(
            report
                .long_rounds
                .iter()
                .enumerate()
                .all(|(k, r)| self.victims_conns.contains(&k) || *r > 0),
            "a surviving long-lived connection made no progress: {}",
            report.describe()
        );
    }
}

#[test]
fn killed_worker_fails_only_its_own_connections_and_is_replaced() {
    let setup = CrashSetup::start();
    let (slot, victim, lbctl) = (setup.slot, setup.victim, &setup.lbctl);
    let killed_at = Instant::now();
    signal(victim, Signal::SIGKILL);
    let mut last = None;
    let replaced = wait_until(WAIT, || {
        last = lbctl.try_status_json();
        last.as_ref().is_some_and(|s| {
            worker_rows(s)
                .iter()
                .any(|r| r.0 == slot && r.1 != victim && r.3 == "running")
        })
    });
    let running_after = killed_at.elapsed();
    assert!(
        replaced,
        "slot {slot} not refilled after killing {victim}: {last:#?}"
    );
    // "Serves": the replacement counted a connection of its own.
    let served = wait_until(WAIT, || {
        lbctl.try_status_json().is_some_and(|s| {
            crate::util::json::workers(&s).iter().any(|w| {
                u64_of(w, "slot") == slot
                    && u64_of(w, "pid") != victim as u64
                    && u64_of(w, "total") > 0
            })
        })
    });
    let serving_after = killed_at.elapsed();
    eprintln!(
        "worker crash: slot {slot} replacement running after {running_after:?}, serving a connection after {serving_after:?} (served: {served})"
    );
    assert!(
        served,
        "the replacement in slot {slot} never served a connection"
    );
    let max_short = setup.short_threads;
    setup.finish("worker crash", max_short);
}

/// Kills a slot's worker again as soon as each replacement appears, five
/// times: the slot is restarted with a growing back-off (logged as quick
/// crashes), the other worker's connections are untouched, and clients keep
/// being served.
#[test]
fn worker_crashing_in_a_loop_backs_off_and_the_other_worker_keeps_its_connections() {
    const KILLS: usize = 5;
    let setup = CrashSetup::start();
    let (slot, lbctl) = (setup.slot, &setup.lbctl);
    let mut victim = setup.victim;
    let mut killed = Vec::new();
    let mut last_kill = Instant::now();
    for i in 0..KILLS {
        signal(victim, Signal::SIGKILL);
        last_kill = Instant::now();
        killed.push(victim);
        if i + 1 == KILLS {
            break;
        }
        let mut last = None;
        let next = wait_until(WAIT, || {
            last = lbctl.try_status_json();
            last.as_ref().is_some_and(|st| {
                worker_rows(st)
                    .iter()
                    .any(|r| r.0 == slot && r.1 > 0 && !killed.contains(&r.1))
            })
        });
        assert!(next, "slot {slot} not respawned after kill {i}: {last:#?}");
        victim = last
            .as_ref()
            .and_then(|st| {
                worker_rows(st)
                    .into_iter()
                    .find(|r| r.0 == slot && r.1 > 0 && !killed.contains(&r.1))
            })
            .map(|r| r.1)
            .expect("the new worker's pid");
    }
    let mut last = None;
    let back = wait_until(WAIT, || {
        last = lbctl.try_status_json();
        last.as_ref().is_some_and(|st| {
            worker_rows(st)
                .iter()
                .any(|r| r.0 == slot && r.3 == "running" && !killed.contains(&r.1))
        })
    });
    eprintln!(
        "crash loop: slot {slot} running again {:?} after the last of {KILLS} kills (back: {back})",
        last_kill.elapsed()
    );
    assert!(back, "slot {slot} never came back: {last:#?}");
    let log = setup.master.stderr();
    assert!(
        log.contains("quick crashes in a row"),
        "the back-off is not logged\n{log}"
    );
    let max_short = KILLS * setup.short_threads;
    setup.finish("crash loop", max_short);
}

// ---------------------------------------------------------------------------
// 8. Open-files limit flood
// ---------------------------------------------------------------------------

/// utime + stime of a process in seconds.
fn cpu_seconds(pid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = text.rfind(')')?;
    let mut f = text.get(close + 1..)?.split_whitespace();
    // Fields after the comm start at field 3; utime and stime are 14 and 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some((utime + stime) as f64 / tick)
}

/// The soft "Max open files" of a process.
fn open_files_limit(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Open descriptors of a process.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// How many of `conns` (non-blocking) the balancer has closed (EOF or reset).
fn closed_by_peer(conns: &[TcpStream]) -> usize {
    let mut b = [0u8; 1];
    conns
        .iter()
        .filter(|s| match s.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != ErrorKind::WouldBlock,
        })
        .count()
}

/// Two listens over one echo backend, so each worker's fd table holds an
/// odd number of fixed entries: the last free descriptor can go to an
/// accepted client whose server socket then cannot be created (both cases of
/// a full table are exercised: accept fails, or the server socket fails).
#[test]
fn fd_limit_flood_keeps_processes_and_established_connections_and_recovers() {
    const LIMIT: u64 = 256;
    const FLOOD: usize = 400;
    let dir = TempDir::new();
    let e = Backend::echo();
    let mut conf = Conf::new(&dir, &[e.addr()]).workers(2);
    // The test's backend is itself flooded (its accept queue overflows and
    // the kernel drops SYNs, retried after 1s): give connects time, so that
    // only the balancer's own descriptor shortage is under test.
    conf.listens[0].connect_timeout = "5s".to_string();
    let mut other = ListenConf::new(&[e.addr()]);
    other.name = "other".to_string();
    other.connect_timeout = "5s".to_string();
    conf.listens.push(other);
    let path = conf.write(&dir);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {LIMIT} && exec \"$0\" start -c \"$1\""))
        .arg(lbctl_bin())
        .arg(&path);
    let mut master = Master::spawn_command(&dir, &path, cmd);
    master.wait_accepting();
    let lbctl = Lbctl::new(&dir, &path);
    assert_eq!(
        open_files_limit(master.pid()),
        Some(LIMIT),
        "the master does not run with the low limit"
    );
    let workers = master.workers();
    assert_eq!(workers.len(), 2, "workers: {workers:?}");

    let mut established: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut s = connect(conf.bind()).expect("established connection");
            echo_round(&mut s, format!("hello {i}").as_bytes()).expect("echo before the flood");
            s
        })
        .collect();

    let mut flood = Vec::new();
    let mut flood_errors = 0;
    for _ in 0..FLOOD {
        match TcpStream::connect_timeout(&conf.bind(), Duration::from_secs(2)) {
            Ok(s) => {
                s.set_nonblocking(true).expect("non-blocking flood socket");
                flood.push(s);
            }
            Err(_) => flood_errors += 1,
        }
    }
    // Settled: every worker's fd table is full, or every flood connection is
    // either relayed to the backend or closed by the balancer.
    let settled = wait_until(WAIT, || {
        workers.iter().all(|&w| fd_count(w) as u64 >= LIMIT - 1)
            || e.open_connections().saturating_sub(4) + closed_by_peer(&flood) >= flood.len()
    });
    let before: Vec<Option<f64>> = workers.iter().map(|&w| cpu_seconds(w)).collect();
    let window = Instant::now();
    // A measurement window, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(1));
    let elapsed = window.elapsed().as_secs_f64();
    let cpu: Vec<f64> = workers
        .iter()
        .zip(&before)
        .map(|(&w, b)| match (cpu_seconds(w), b) {
            (Some(after), Some(b)) => after - b,
            _ => f64::NAN,
        })
        .collect();
    let fds: Vec<usize> = workers.iter().map(|&w| fd_count(w)).collect();
    let closed = closed_by_peer(&flood);
    let st = lbctl.status_json();
    let server = crate::util::json::servers(&st, 0)[0].clone();
    eprintln!(
        "fd flood: {} connected ({flood_errors} connect errors), settled {settled}, {} relayed, \
         {closed} closed by the balancer; worker fds {fds:?}; worker CPU over {elapsed:.2}s: {cpu:?}; \
         server {server}",
        flood.len(),
        e.open_connections().saturating_sub(4),
    );

    assert!(
        pid_alive(master.pid()),
        "the master died in the flood\n{}",
        master.describe()
    );
    assert_eq!(
        master.workers(),
        workers,
        "workers died or were replaced during the flood"
    );
    for (i, s) in established.iter_mut().enumerate() {
        echo_round(s, format!("during the flood {i}").as_bytes())
            .unwrap_or_else(|err| panic!("established connection {i} broken by the flood: {err}"));
    }
    for (w, c) in workers.iter().zip(&cpu) {
        assert!(
            *c < 0.9,
            "worker {w} used {c:.2}s of CPU in a {elapsed:.2}s window: it spins on the full fd table"
        );
    }

    drop(flood);
    assert!(
        wait_until(WAIT, || e.open_connections() <= 4),
        "{} backend connections still open after the flood was released",
        e.open_connections()
    );
    for (i, s) in established.iter_mut().enumerate() {
        echo_round(s, format!("after the flood {i}").as_bytes()).unwrap_or_else(|err| {
            panic!("established connection {i} broken after the flood: {err}")
        });
    }
    // New connections succeed again: the very first one, and every one after.
    let first = exchange(conf.bind(), b"first after the flood");
    let st = lbctl.status_json();
    let server_after = crate::util::json::servers(&st, 0)[0].clone();
    let released = Instant::now();
    let recovered = wait_until(WAIT, || {
        exchange(conf.bind(), b"probe").is_ok_and(|r| r == b"probe")
    });
    eprintln!(
        "fd flood: first connection after the release: {first:?}; new connections work again after {:?} (recovered {recovered})",
        released.elapsed()
    );
    let mut failed = Vec::new();
    for i in 0..20 {
        let msg = format!("after the flood {i}");
        match exchange(conf.bind(), msg.as_bytes()) {
            Ok(r) if r == msg.as_bytes() => {}
            Ok(r) => failed.push(format!("conn {i}: got {} bytes", r.len())),
            Err(err) => failed.push(format!("conn {i}: {err}")),
        }
    }
    for s in established {
        finish(s).expect("clean end of an established connection");
    }
    assert!(pid_alive(master.pid()), "the master died after the flood");
    assert!(
        recovered && failed.is_empty(),
        "new connections still fail after the flood was released: {failed:?}"
    );
    assert!(
        first.as_ref().is_ok_and(|r| r == b"first after the flood"),
        "the first connection after the flood was released failed ({first:?}): running out of \
         descriptors in the balancer was counted against the backend, now {server_after}"
    );
}
