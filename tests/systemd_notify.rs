//! Owns the systemd notification tests: `lbctl start` in the foreground with
//! `NOTIFY_SOCKET` set sends READY=1 once its workers accept, RELOADING=1
//! then READY=1 around a reload, and STOPPING=1 on stop, in that order; the
//! abstract-namespace form (`@name`) works too.

use std::os::unix::net::UnixDatagram;
use std::process::Command;

use crate::util::backend::Backend;
use crate::util::{Conf, Lbctl, Master, TempDir, WAIT, fetch_ok, lbctl_bin};

/// The states we follow; other assignments (MAINPID=, STATUS=...) are kept in
/// the transcript but not asserted on.
const STATES: [&str; 3] = ["READY=1", "RELOADING=1", "STOPPING=1"];

/// Reads datagrams until one carries a state from [`STATES`]; returns that
/// state (the first in the datagram). Every datagram goes to `transcript`.
fn next_state(sock: &UnixDatagram, transcript: &mut Vec<String>) -> Option<String> {
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).ok()?;
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        transcript.push(msg.clone());
        if let Some(state) = msg.lines().find(|l| STATES.contains(l)) {
            return Some(state.to_string());
        }
    }
}

/// Spawns `lbctl start -c path` in the foreground with `NOTIFY_SOCKET`.
fn start_with_notify(dir: &TempDir, path: &std::path::Path, notify: &str) -> Master {
    let mut cmd = Command::new(lbctl_bin());
    cmd.arg("start")
        .arg("-c")
        .arg(path)
        .env("NOTIFY_SOCKET", notify);
    Master::spawn_command(dir, path, cmd)
}

#[test]
fn notify_socket_gets_ready_then_reloading_ready_then_stopping() {
    let dir = TempDir::new();
    let a = Backend::fixed("A");
    let conf = Conf::new(&dir, &[a.addr()]);
    let path = conf.write(&dir);
    let lbctl = Lbctl::new(&dir, &path);
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(WAIT))
        .expect("notify socket timeout");
    let mut master = start_with_notify(&dir, &path, &sock_path.display().to_string());
    let mut transcript = Vec::new();

    let first = next_state(&sock, &mut transcript);
    assert_eq!(
        first.as_deref(),
        Some("READY=1"),
        "first notification; transcript {transcript:?}"
    );
    // READY=1 comes once the workers accept: a client is served at once.
    assert_eq!(fetch_ok(conf.bind()), "A");

    lbctl
        .run("reload", &[])
        .assert_success()
        .assert_contains("reloaded: generation 2");
    let reloading = next_state(&sock, &mut transcript);
    let ready = next_state(&sock, &mut transcript);
    assert_eq!(
        (reloading.as_deref(), ready.as_deref()),
        (Some("RELOADING=1"), Some("READY=1")),
        "notifications around the reload; transcript {transcript:?}"
    );
    assert_eq!(fetch_ok(conf.bind()), "A");

    lbctl.run("stop", &[]).assert_success();
    let stopping = next_state(&sock, &mut transcript);
    assert_eq!(
        stopping.as_deref(),
        Some("STOPPING=1"),
        "notification on stop; transcript {transcript:?}"
    );
    assert!(
        master.wait_exit(WAIT).is_some(),
        "the master did not exit after stop"
    );
    eprintln!("systemd notifications: {transcript:?}");
}

#[test]
fn notify_socket_in_the_abstract_namespace_gets_ready() {
    use std::os::linux::net::SocketAddrExt;
    let dir = TempDir::new();
    let a = Backend::fixed("A");
    let conf = Conf::new(&dir, &[a.addr()]);
    let path = conf.write(&dir);
    let name = format!(
        "lbctl-test-notify-{}-{}",
        std::process::id(),
        dir.path()
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .expect("abstract socket address");
    let sock = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
    sock.set_read_timeout(Some(WAIT))
        .expect("notify socket timeout");
    let _master = start_with_notify(&dir, &path, &format!("@{name}"));
    let mut transcript = Vec::new();
    let first = next_state(&sock, &mut transcript);
    assert_eq!(
        first.as_deref(),
        Some("READY=1"),
        "first notification on @{name}; transcript {transcript:?}"
    );
    assert_eq!(fetch_ok(conf.bind()), "A");
}
