//! Owns `reopen-logs` for the daemon log of `start -d`: after a rename,
//! the master's own lines and its workers' (stderr) go to the new file.

use std::io::Read;

use crate::util::backend::Backend;
use crate::util::{Conf, DaemonGuard, Lbctl, TempDir, WAIT, connect, read_pid_file, wait_until};

#[test]
fn reopen_logs_moves_the_master_and_its_workers_to_a_new_daemon_log() {
    let dir = TempDir::new();
    let echo = Backend::echo();
    let conf = Conf::new(&dir, &[echo.addr()]).listen(|l| l.line("max_conns_per_client = 1"));
    let path = conf.write(&dir);
    let lbctl = Lbctl::new(&dir, &path);
    let mut guard = DaemonGuard::new(&conf);
    lbctl.run("start", &["-d"]).assert_success();
    guard.track(read_pid_file(&conf.pid_file).expect("pid file"));

    let rotated = dir.join("lbctl.log.1");
    std::fs::rename(&conf.log_file, &rotated).expect("rotate");
    lbctl
        .run("reopen-logs", &[])
        .assert_success()
        .assert_contains("reopened the daemon log");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        wait_until(WAIT, || read(&conf.log_file).contains("reopen-logs")),
        "the master did not write to the new log: {}",
        read(&conf.log_file)
    );
    // Every worker's stderr is the new file once it has reopened.
    let workers = crate::util::json::worker_pids(&lbctl.status_json());
    assert!(
        wait_until(WAIT, || workers.iter().all(|w| {
            std::fs::read_link(format!("/proc/{w}/fd/2")).is_ok_and(|t| t == conf.log_file)
        })),
        "workers {workers:?} kept stderr on the old log"
    );
    // A worker's own line: a client over its limit is refused and logged.
    let held = connect(conf.bind()).expect("first connection");
    assert!(
        wait_until(WAIT, || {
            let mut second = connect(conf.bind()).expect("connect");
            let mut buf = [0u8; 1];
            let _ = second.read(&mut buf);
            read(&conf.log_file).contains("refused 127.0.0.1")
        }),
        "no worker line in the new log: {}",
        read(&conf.log_file)
    );
    drop(held);
    assert!(
        !read(&rotated).contains("refused"),
        "a worker still writes to the old log"
    );
    lbctl.run("stop", &[]).assert_success();
}
