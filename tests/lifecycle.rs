//! Owns the lifecycle tests: `start -d` / `status` / `stop` leave no process or
//! pid file behind, and `stop -g` lets an open connection finish first.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::time::Duration;

use crate::util::backend::Backend;
use crate::util::json::{str_of, u64_of, worker_pids, worker_rows};
use crate::util::{
    Conf, DaemonGuard, Lbctl, Master, TempDir, WAIT, connect, fetch_ok, pid_alive, proc_stat,
    read_pid_file, wait_until,
};

/// A 2-worker config over one backend, written in its own temp dir. Fields
/// drop in order: the temp dir (holding the logs a failing test prints) last;
/// a master or daemon guard a test declares after it is dropped before it.
struct Setup {
    lbctl: Lbctl,
    conf: Conf,
    path: PathBuf,
    backend: Backend,
    dir: TempDir,
}

impl Setup {
    fn new(backend: Backend, drain_timeout: &str) -> Setup {
        let dir = TempDir::new();
        let conf = Conf::new(&dir, &[backend.addr()])
            .workers(2)
            .drain_timeout(drain_timeout);
        let path = conf.write(&dir);
        Setup {
            lbctl: Lbctl::new(&dir, &path),
            conf,
            path,
            backend,
            dir,
        }
    }

    /// Over a backend replying "Hello, World!", with the default drain timeout.
    fn hello() -> Setup {
        Setup::new(Backend::fixed("Hello, World!"), "5s")
    }

    /// `start -d`; returns the daemon master's pid, tracked by `guard`.
    #[track_caller]
    fn start_daemon(&self, guard: &mut DaemonGuard) -> i32 {
        self.lbctl.run("start", &["-d"]).assert_success();
        let master = read_pid_file(&self.conf.pid_file).unwrap_or_else(|| {
            panic!(
                "no pid in {} after start -d returned 0",
                self.conf.pid_file.display()
            )
        });
        guard.track(master);
        master
    }

    /// A foreground master, once it accepts and runs both workers.
    #[track_caller]
    fn start_foreground(&self) -> Master {
        let master = Master::start(&self.dir, &self.path);
        assert!(wait_until(WAIT, || master.workers().len() == 2));
        master
    }
}

#[test]
fn daemon_start_status_stop_leaves_no_process_and_no_pid_file() {
    let s = Setup::hello();
    let (conf, lbctl) = (&s.conf, &s.lbctl);
    let mut guard = DaemonGuard::new(conf);

    let master = s.start_daemon(&mut guard);
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
        "master {master} still alive after stop returned: /proc stat {:?}",
        proc_stat(master)
    );
    let gone = wait_until(WAIT, || workers.iter().all(|&w| !pid_alive(w)));
    let left: Vec<i32> = workers.iter().copied().filter(|&w| pid_alive(w)).collect();
    assert!(gone, "workers {left:?} still alive after stop");
    lbctl.run("status", &[]).assert_code(2);
}

#[test]
fn graceful_stop_lets_an_open_connection_finish() {
    let setup = Setup::new(Backend::echo(), "30s");
    let (conf, lbctl) = (&setup.conf, &setup.lbctl);
    let mut master = Master::start(&setup.dir, &setup.path);
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

/// `Ok` if a read on `s` reports the connection closed (EOF or reset), `Err`
/// if it is still open (the read timed out).
fn closed_by_peer(s: &mut std::net::TcpStream) -> Result<(), String> {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("connection still open: {e}"));
            }
            Err(_) => return Ok(()),
        }
    }
}

#[test]
fn sigterm_stops_the_foreground_master_and_its_workers() {
    let s = Setup::hello();
    let conf = &s.conf;
    let mut master = s.start_foreground();
    let workers = master.workers();
    assert!(conf.pid_file.exists(), "no pid file while running");

    master.signal(nix::sys::signal::Signal::SIGTERM);
    let status = master.wait_exit(WAIT);
    assert!(status.is_some(), "master ignored SIGTERM");
    assert!(
        status.is_some_and(|s| s.success()),
        "master exit status after SIGTERM: {status:?}"
    );
    assert!(
        wait_until(WAIT, || workers.iter().all(|&w| !pid_alive(w))),
        "workers outlived SIGTERM"
    );
    assert!(!conf.pid_file.exists(), "pid file left after SIGTERM");
    s.lbctl.run("status", &[]).assert_code(2);
}

#[test]
fn sigquit_stops_the_foreground_master_gracefully() {
    let s = Setup::hello();
    let mut master = s.start_foreground();
    let workers = master.workers();

    master.signal(nix::sys::signal::Signal::SIGQUIT);
    let status = master.wait_exit(WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "master exit status after SIGQUIT: {status:?}"
    );
    assert!(
        wait_until(WAIT, || workers.iter().all(|&w| !pid_alive(w))),
        "workers outlived SIGQUIT"
    );
}

#[test]
fn fast_stop_closes_open_connections() {
    let setup = Setup::new(Backend::hold(), "30s");
    let mut master = Master::start(&setup.dir, &setup.path);

    let mut s = connect(setup.conf.bind()).expect("connect to balancer");
    assert!(
        wait_until(WAIT, || setup.backend.open_connections() == 1),
        "connection never reached the backend"
    );
    setup.lbctl.run("stop", &[]).assert_success();
    assert!(
        master.wait_exit(WAIT).is_some(),
        "master still running after stop"
    );
    if let Err(e) = closed_by_peer(&mut s) {
        panic!("after a fast stop the client connection was not closed: {e}");
    }
}

#[test]
fn graceful_stop_gives_up_on_connections_after_drain_timeout() {
    let setup = Setup::new(Backend::hold(), "1s");
    let mut master = Master::start(&setup.dir, &setup.path);
    let workers = master.workers();

    let mut s = connect(setup.conf.bind()).expect("connect to balancer");
    assert!(
        wait_until(WAIT, || setup.backend.open_connections() == 1),
        "connection never reached the backend"
    );
    // The backend never closes: only the drain timeout can end this stop.
    setup
        .lbctl
        .run_timeout("stop", &["-g"], Duration::from_secs(30))
        .assert_success();
    assert!(
        master.wait_exit(WAIT).is_some(),
        "master still running after stop -g"
    );
    assert!(
        wait_until(WAIT, || workers.iter().all(|&w| !pid_alive(w))),
        "workers outlived the drain timeout"
    );
    if let Err(e) = closed_by_peer(&mut s) {
        panic!("after the drain timeout the client connection was not closed: {e}");
    }
}

#[test]
fn restart_replaces_a_daemon_with_a_new_master() {
    let s = Setup::hello();
    let (conf, lbctl) = (&s.conf, &s.lbctl);
    let mut guard = DaemonGuard::new(conf);

    let first = s.start_daemon(&mut guard);
    let first_workers = worker_pids(&lbctl.status_json());

    lbctl.run("restart", &["-d"]).assert_success();
    let second = read_pid_file(&conf.pid_file).expect("pid after restart -d");
    guard.track(second);
    assert_ne!(first, second, "restart kept the same master");
    assert!(
        !pid_alive(first),
        "old master {first} still alive after restart"
    );
    assert!(
        wait_until(WAIT, || first_workers.iter().all(|&w| !pid_alive(w))),
        "old workers outlived the restart"
    );
    assert_eq!(fetch_ok(conf.bind()), "Hello, World!");
    let st = lbctl.status_json();
    assert_eq!(u64_of(&st, "master_pid"), second as u64, "{st:#}");

    lbctl.run("stop", &[]).assert_success();
    assert!(
        !pid_alive(second),
        "master {second} still alive after stop returned: /proc stat {:?}",
        proc_stat(second)
    );
}
