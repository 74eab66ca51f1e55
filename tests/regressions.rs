//! Owns regression tests for bugs found in review: `connections` with many
//! connections, a reload signal during a stop, a stop during a binary
//! upgrade, a client waiting in the `max_conns` queue across a reload, a
//! second balancer on the same port, paths pointing at the config file, a
//! syntax error at reload, reload of another file, odd control clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::backend::Backend;
use crate::util::loadgen::{Extra, open_n};
use crate::util::{
    Conf, DaemonGuard, Lbctl, Master, ServerConf, TempDir, WAIT, connect, kill_master_tree,
    proc_stat, wait_until, write_file,
};

/// Opens `n` echo connections through the balancer, each checked once.
fn open_echo(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = connect(addr).unwrap_or_else(|e| panic!("connect {i}: {e}"));
            s.write_all(b"x").expect("write");
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("echo");
            s
        })
        .collect()
}

/// A running 1-worker balancer over one echo backend. Fields drop in order:
/// the master goes first, the temp dir last.
struct EchoBalancer {
    master: Master,
    lbctl: Lbctl,
    path: PathBuf,
    conf: Conf,
    echo: Backend,
    dir: TempDir,
}

/// Starts an [`EchoBalancer`]; `drain` sets `master.drain_timeout`.
#[track_caller]
fn start_echo(drain: Option<&str>) -> EchoBalancer {
    let dir = TempDir::new();
    let echo = Backend::echo();
    let mut conf = Conf::new(&dir, &[echo.addr()]).workers(1);
    if let Some(d) = drain {
        conf = conf.drain_timeout(d);
    }
    let path = conf.write(&dir);
    let master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    EchoBalancer {
        master,
        lbctl,
        path,
        conf,
        echo,
        dir,
    }
}

/// How many of `conns` still echo a byte.
fn still_relaying(conns: &mut [TcpStream]) -> usize {
    let mut ok = 0;
    for s in conns.iter_mut() {
        let mut b = [0u8; 1];
        if s.write_all(b"y").is_ok() && s.read_exact(&mut b).is_ok() {
            ok += 1;
        }
    }
    ok
}

#[test]
fn connections_lists_hundreds_of_connections_without_disturbing_the_worker() {
    let b = start_echo(None);
    let workers = b.master.workers();
    let mut conns = open_echo(b.conf.bind(), 600);
    let out = b.lbctl.run("connections", &["--json"]);
    out.assert_success();
    let rows = out.json()["connections"].as_array().map_or(0, |a| a.len());
    assert_eq!(rows, 600, "every connection listed");
    assert_eq!(b.master.workers(), workers, "the worker was replaced");
    assert_eq!(still_relaying(&mut conns), 600);
}

#[test]
fn a_reload_signal_during_a_graceful_stop_does_not_cancel_it() {
    let mut b = start_echo(Some("2s"));
    let _open = open_echo(b.conf.bind(), 1);
    b.master.signal(Signal::SIGQUIT);
    b.master.signal(Signal::SIGHUP);
    assert!(
        b.master.wait_exit(Duration::from_secs(15)).is_some(),
        "master still running after SIGQUIT + SIGHUP:\n{}",
        b.master.stderr()
    );
}

#[test]
fn a_reload_signal_after_a_fast_stop_does_not_cancel_it() {
    let mut b = start_echo(None);
    b.master.signal(Signal::SIGTERM);
    b.master.signal(Signal::SIGHUP);
    assert!(
        b.master.wait_exit(Duration::from_secs(15)).is_some(),
        "master still running after SIGTERM + SIGHUP:\n{}",
        b.master.stderr()
    );
}

/// Live lbctl processes (not the old master) started with `path`.
fn lbctl_processes_for(path: &std::path::Path, except: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| p != except)
        .filter(|&p| matches!(proc_stat(p), Some((s, _, _)) if s != 'Z'))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&*path.to_string_lossy()))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn a_stop_during_a_binary_upgrade_leaves_no_master_behind() {
    let mut b = start_echo(Some("2s"));
    let old = b.master.pid();
    b.master.signal(Signal::SIGUSR2);
    b.master.signal(Signal::SIGQUIT);
    assert!(b.master.wait_exit(Duration::from_secs(15)).is_some());
    let gone = wait_until(WAIT, || lbctl_processes_for(&b.path, old).is_empty());
    let left = lbctl_processes_for(&b.path, old);
    for &p in &left {
        kill_master_tree(p, Duration::from_secs(2));
    }
    assert!(
        gone,
        "a stop during an upgrade left {left:?} running:\n{}",
        b.master.stderr()
    );
}

#[test]
fn a_client_waiting_in_the_queue_survives_a_reload() {
    let dir = TempDir::new();
    let a = Backend::echo();
    let conf = Conf::new(&dir, &[])
        .workers(1)
        .listen(|l| l.servers(vec![ServerConf::new(a.addr()).name("a")]));
    let path = Extra::new()
        .listen("queue = { size = 8, timeout = \"10s\" }")
        .server(a.addr(), "max_conns = 1")
        .write(&conf, &dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let held = open_n(conf.bind(), 1);
    assert!(wait_until(WAIT, || a.open_connections() == 1));
    let mut waiting = connect(conf.bind()).expect("queued client");
    waiting.write_all(b"q").expect("write while queued");
    assert!(
        wait_until(WAIT, || lbctl.status_json()["listens"][0]["queued"] == 1),
        "the second client never showed as queued"
    );
    lbctl.run("reload", &[]).assert_success();
    // The held connection ends: the queued client gets the server.
    drop(held);
    let mut b = [0u8; 1];
    waiting
        .read_exact(&mut b)
        .expect("the queued client was served after the reload");
    assert_eq!(&b, b"q");
}

#[test]
fn a_second_balancer_cannot_share_the_port() {
    let b = start_echo(None);
    // Another instance: its own pid file and socket, the same bind.
    let other_dir = TempDir::new();
    let mut other = Conf::new(&other_dir, &[b.echo.addr()]).workers(1);
    other.listens[0].bind = b.conf.bind();
    let other_path = other.write(&other_dir);
    // Should `start -d` succeed after all, its daemon is killed on drop.
    let _guard = DaemonGuard::new(&other);
    Lbctl::new(&other_dir, &other_path)
        .run("start", &["-d"])
        .assert_code(2)
        .assert_contains("cannot listen");
}

#[test]
fn a_master_file_pointing_at_the_config_is_refused_and_the_config_survives() {
    let dir = TempDir::new();
    let conf = Conf::new(&dir, &["127.0.0.1:6001".parse().expect("addr")]);
    let path = dir.join("lbctl.toml");
    let text = conf.to_toml().replace(
        &format!("control_socket = \"{}\"", conf.control_socket.display()),
        &format!("control_socket = \"{}\"", path.display()),
    );
    write_file(&path, &text);
    // Should `start -d` succeed after all, its daemon is killed on drop.
    let _guard = DaemonGuard::new(&conf);
    let lbctl = Lbctl::new(&dir, &path);
    lbctl
        .run("check", &[])
        .assert_code(1)
        .assert_contains("master.control_socket");
    lbctl.run("start", &["-d"]).assert_code(1);
    assert_eq!(
        std::fs::read_to_string(&path).expect("config still there"),
        text
    );
}

#[test]
fn a_syntax_error_in_the_file_is_reported_by_reload_and_status_still_works() {
    let b = start_echo(None);
    let mut text = std::fs::read_to_string(&b.path).expect("read config");
    text.push_str("oops = [\n");
    write_file(&b.path, &text);
    b.lbctl
        .run("reload", &[])
        .assert_code(1)
        .assert_contains("line");
    b.lbctl.run("status", &[]).assert_success();
    assert_eq!(b.lbctl.status_json()["generation"], 1);
}

#[test]
fn reload_of_another_file_is_refused() {
    let b = start_echo(None);
    // Same master sections (so the same control socket), another file.
    let other = b.dir.join("other.toml");
    write_file(&other, &std::fs::read_to_string(&b.path).expect("read"));
    Lbctl::new(&b.dir, &other)
        .run("reload", &[])
        .assert_failure()
        .assert_contains("this master runs");
}

#[test]
fn a_silent_control_client_does_not_hold_up_status() {
    let b = start_echo(None);
    let _silent = std::os::unix::net::UnixStream::connect(&b.conf.control_socket)
        .expect("connect to the control socket");
    let mut flood = std::os::unix::net::UnixStream::connect(&b.conf.control_socket)
        .expect("connect to the control socket");
    flood
        .set_write_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    // The master reads one request and no more: the socket may fill up.
    let _ = flood.write_all(&b"{\"cmd\":\"status\"}\n".repeat(10_000));
    b.lbctl.run("status", &[]).assert_success();
}
