//! Owns the open-files-limit flood test: processes and established connections
//! survive, and the balancer recovers once the flood ends.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::backend::Backend;
use crate::util::{
    Conf, Lbctl, ListenConf, Master, TempDir, WAIT, connect, exchange, lbctl_bin, pid_alive,
    wait_until,
};

use super::{echo_round, finish};

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
