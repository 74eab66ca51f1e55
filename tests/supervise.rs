//! Owns the supervision tests: a worker killed with SIGKILL is replaced in its
//! slot, and workers do not outlive a master killed with SIGKILL.

use nix::sys::signal::Signal;

use crate::util::backend::Backend;
use crate::util::json::{u64_of, worker_rows, workers};
use crate::util::{Conf, Lbctl, Master, TempDir, WAIT, fetch, pid_alive, signal, wait_until};

#[test]
fn killed_worker_is_replaced_in_its_slot_and_traffic_continues() {
    let dir = TempDir::new();
    let backend = Backend::fixed("Hello, World!");
    let conf = Conf::new(&dir, &[backend.addr()]).workers(2);
    let path = conf.write(&dir);
    let master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);

    let before = lbctl.status_json();
    let rows = worker_rows(&before);
    assert_eq!(rows.len(), 2, "two workers expected: {before:#}");
    let (slot, victim, _, _) = rows[0].clone();
    assert!(
        master.workers().contains(&victim),
        "worker pid {victim} from status is not a child of the master {}",
        master.pid()
    );

    signal(victim, Signal::SIGKILL);
    assert!(
        wait_until(WAIT, || !pid_alive(victim)),
        "worker {victim} survived SIGKILL"
    );

    let mut last = before.clone();
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
        "slot {slot} was not refilled after killing {victim}; last status: {last:#}"
    );
    let new_pid = worker_rows(&last)
        .iter()
        .find(|r| r.0 == slot)
        .map(|r| r.1)
        .expect("slot row");
    assert!(
        master.workers().contains(&new_pid),
        "replacement {new_pid} is not a child of the master; children: {:?}",
        master.workers()
    );
    let restarts = workers(&last)
        .iter()
        .find(|w| u64_of(w, "slot") == slot)
        .map(|w| u64_of(w, "restarts"))
        .expect("slot row");
    assert!(
        restarts >= 1,
        "restarts not counted for slot {slot}: {last:#}"
    );

    for i in 0..10 {
        match fetch(conf.bind()) {
            Ok(r) => assert_eq!(r, "Hello, World!", "conn {i}"),
            Err(e) => panic!("conn {i} after the worker respawn failed: {e}"),
        }
    }
}

#[test]
fn workers_exit_when_the_master_is_killed_and_start_works_again() {
    let dir = TempDir::new();
    let backend = Backend::fixed("Hello, World!");
    let conf = Conf::new(&dir, &[backend.addr()]).workers(2);
    let path = conf.write(&dir);
    let mut master = Master::start(&dir, &path);
    assert!(
        wait_until(WAIT, || master.workers().len() == 2),
        "expected 2 worker processes, found {:?}",
        master.workers()
    );
    let worker_pids = master.workers();

    master.signal(Signal::SIGKILL);
    assert!(master.wait_exit(WAIT).is_some(), "master survived SIGKILL");
    let gone = wait_until(WAIT, || worker_pids.iter().all(|&p| !pid_alive(p)));
    let left: Vec<i32> = worker_pids
        .iter()
        .copied()
        .filter(|&p| pid_alive(p))
        .collect();
    assert!(gone, "workers {left:?} outlived the killed master");
    drop(master);

    // The stale pid file and control socket must not block a new start.
    let _again = Master::start(&dir, &path);
    assert_eq!(
        fetch(conf.bind()).expect("connection through the restarted balancer"),
        "Hello, World!"
    );
    Lbctl::new(&dir, &path).run("status", &[]).assert_success();
}
