//! Owns the lifecycle tests: `start -d` / `status` / `stop` leave no process or
//! pid file behind, and `stop -g` lets an open connection finish first.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use crate::util::backend::Backend;
use crate::util::json::{str_of, u64_of, worker_pids, worker_rows};
use crate::util::{
    Conf, DaemonGuard, Lbctl, Master, TempDir, WAIT, connect, fetch_ok, pid_alive, proc_stat,
    read_pid_file, wait_until,
};

#[test]
fn daemon_start_status_stop_leaves_no_process_and_no_pid_file() {
    let dir = TempDir::new();
    let backend = Backend::fixed("Hello, World!");
    let conf = Conf::new(&dir, &[backend.addr()]).workers(2);
    let path = conf.write(&dir);
    let lbctl = Lbctl::new(&dir, &path);
    let mut guard = DaemonGuard::new(&conf);

    lbctl.run("start", &["-d"]).assert_success();
    let master = read_pid_file(&conf.pid_file).unwrap_or_else(|| {
        panic!(
            "no pid in {} after start -d returned 0",
            conf.pid_file.display()
        )
    });
    guard.track(master);
    assert!(pid_alive(master), "daemon master {master} is not running");

    // start -d returns only once the workers accept.
    assert_eq!(fetch_ok(conf.bind()), "Hello, World!");

    let status = lbctl.status_json();
    assert_eq!(u64_of(&status, "master_pid"), master as u64, "{status:#}");
    let workers = worker_pids(&status);
    assert_eq!(workers.len(), 2, "{status:#}");
    for &w in &workers {
        let ppid = proc_stat(w).map(|s| s.1);
        assert_eq!(
            ppid,
            Some(master),
            "worker {w} is not a child of master {master}"
        );
    }
    lbctl
        .run("status", &[])
        .assert_success()
        .assert_contains(&master.to_string());

    lbctl.run("stop", &[]).assert_success();
    assert!(
        !conf.pid_file.exists(),
        "pid file {} still exists after stop",
        conf.pid_file.display()
    );
    assert!(
        !pid_alive(master),
        "master {master} still alive after stop returned"
    );
    let gone = wait_until(WAIT, || workers.iter().all(|&w| !pid_alive(w)));
    let left: Vec<i32> = workers.iter().copied().filter(|&w| pid_alive(w)).collect();
    assert!(gone, "workers {left:?} still alive after stop");
    lbctl.run("status", &[]).assert_code(2);
}

#[test]
fn graceful_stop_lets_an_open_connection_finish() {
    let dir = TempDir::new();
    let echo = Backend::echo();
    let conf = Conf::new(&dir, &[echo.addr()])
        .workers(2)
        .drain_timeout("30s");
    let path = conf.write(&dir);
    let mut master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let workers_before = master.workers();

    // A connection mid-exchange: one round trip done, more to come.
    let mut s = connect(conf.bind()).expect("connect to balancer");
    s.write_all(b"first-half;").expect("write first half");
    let mut buf = [0u8; 11];
    s.read_exact(&mut buf).expect("echo of first half");
    assert_eq!(&buf, b"first-half;");

    let stopper = {
        let lbctl = lbctl.clone();
        std::thread::spawn(move || lbctl.run_timeout("stop", &["-g"], Duration::from_secs(60)))
    };

    // Wait until the master is visibly stopping: phase changed, a worker
    // draining, or the control socket already closed.
    let mut last = None;
    let stopping = wait_until(WAIT, || match lbctl.try_status_json() {
        None => true,
        Some(st) => {
            let draining = worker_rows(&st).iter().any(|r| r.3 == "draining");
            let phase_changed = str_of(&st, "phase") != "running";
            last = Some(st);
            draining || phase_changed
        }
    });
    assert!(
        stopping,
        "status never showed the graceful stop; last status: {last:#?}"
    );

    assert!(
        !stopper.is_finished(),
        "stop -g returned while a connection was still open"
    );
    assert!(
        !master.has_exited(),
        "master exited while a connection was still open\n{}",
        master.describe()
    );

    // The open connection still works end to end.
    s.write_all(b"second-half")
        .expect("write second half during drain");
    s.shutdown(Shutdown::Write).expect("shutdown write");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("read the rest during drain");
    assert_eq!(rest, b"second-half", "reply during graceful stop");
    drop(s);

    let out = stopper.join().expect("stop thread");
    out.assert_success();
    let status = master.wait_exit(WAIT);
    assert!(
        status.is_some(),
        "master did not exit after stop -g returned"
    );
    assert!(
        wait_until(WAIT, || workers_before.iter().all(|&w| !pid_alive(w))),
        "workers outlived the graceful stop"
    );
    assert!(!conf.pid_file.exists(), "pid file left behind by stop -g");
}
