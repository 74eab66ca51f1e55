//! Owns the worker-crash tests under load: a killed worker fails only its own
//! connections and is replaced; a worker crashing in a loop backs off.

use std::net::SocketAddr;
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::util::backend::Backend;
use crate::util::json::{array_of, str_of, u64_of, worker_rows};
use crate::util::load::{Load, LoadConfig, Side};
use crate::util::{Lbctl, Master, TempDir, WAIT, signal, wait_until};

use super::two_listens;

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
