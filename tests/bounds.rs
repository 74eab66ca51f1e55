//! Owns tests of bounds the README's threat model names that no other file
//! covers: a full listen queue (`queue.size`) closes a new client at once
//! instead of holding it; silent control clients beyond the master's 256
//! are evicted, never the command that asks.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::util::backend::Backend;
use crate::util::json::{array_of, u64_of};
use crate::util::loadgen::{Extra, open_n};
use crate::util::{Conf, Lbctl, Master, TempDir, WAIT, connect, wait_until};

/// A counter of the first listen (`queued`, `refused`) in `lbctl status`.
fn listen_counter(lbctl: &Lbctl, key: &str) -> Option<u64> {
    let st = lbctl.try_status_json()?;
    array_of(&st, "listens").first().map(|l| u64_of(l, key))
}

#[test]
fn a_client_beyond_a_full_queue_is_closed_at_once_and_counted_as_refused() {
    let dir = TempDir::new();
    let held_server = Backend::hold();
    // One worker: the queue is per worker. Its timeout is far longer than
    // the test, so only the size can close the extra client.
    let conf = Conf::new(&dir, &[held_server.addr()]).workers(1);
    let path = Extra::new()
        .listen("queue = { size = 2, timeout = \"1h\" }")
        .server(held_server.addr(), "max_conns = 1")
        .write(&conf, &dir);
    let mut master = Master::spawn(&dir, &path);
    master.wait_accepting();
    let lbctl = Lbctl::new(&dir, &path);
    let bind = conf.bind();

    let served = open_n(bind, 1);
    assert!(
        wait_until(WAIT, || held_server.open_connections() == 1),
        "the first client never reached the server"
    );
    let queued = open_n(bind, 2);
    assert!(
        wait_until(WAIT, || listen_counter(&lbctl, "queued") == Some(2)),
        "two clients never showed as queued"
    );

    let mut extra = connect(bind).expect("connect the client beyond the queue");
    extra
        .set_read_timeout(Some(WAIT + Duration::from_secs(5)))
        .expect("read timeout");
    let mut buf = [0u8; 16];
    match extra.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("the client beyond the queue got {n} bytes"),
        Err(e) => panic!("the client beyond the queue was held: {e}"),
    }
    assert!(
        wait_until(WAIT, || listen_counter(&lbctl, "refused") == Some(1)),
        "the refusal was not counted"
    );
    assert_eq!(
        listen_counter(&lbctl, "queued"),
        Some(2),
        "the queued clients should still wait"
    );
    assert_eq!(held_server.accepted(), 1, "the server went past max_conns");
    drop((served, queued));
}

#[test]
fn more_silent_control_clients_than_the_master_serves_do_not_keep_commands_out() {
    let dir = TempDir::new();
    let backend = Backend::fixed("A");
    let conf = Conf::new(&dir, &[backend.addr()]).workers(1);
    let path = conf.write(&dir);
    let mut master = Master::spawn(&dir, &path);
    master.wait_accepting();
    let lbctl = Lbctl::new(&dir, &path);
    // More connections that never ask than the 256 the master serves.
    let silent: Vec<UnixStream> = (0..300)
        .map(|i| {
            UnixStream::connect(&conf.control_socket)
                .unwrap_or_else(|e| panic!("silent control client {i}: {e}"))
        })
        .collect();
    lbctl.run("status", &[]).assert_success();
    lbctl
        .run("reload", &[])
        .assert_success()
        .assert_contains("reloaded: generation 2");
    drop(silent);
}
