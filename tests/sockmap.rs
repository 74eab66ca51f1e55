//! Owns the tests of `dataplane = "sockmap"`: `status` says the kernel
//! relays the listen; a connection is linked at its second exchange or
//! after 64 KiB one way, never after a single one; 1 MiB and 48 MiB cross
//! both ways intact (sha256) while `connections` shows them relayed by the
//! kernel, the worker barely wakes (context switches) and the byte
//! counters, read from tcp_info, match;
//! half-close keeps every byte ahead of the FIN both ways; both linked
//! sockets get `sockmap_sndbuf` as their send buffer; the idle timeout
//! counts the kernel's bytes and closes a quiet connection; a worker without
//! CAP_BPF (`user = "nobody"`) falls back to splice, says so in `status`
//! and the log, and still serves. Root only (as CI runs): elsewhere the
//! kernel refuses, which the fallback test covers by its own assertions.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::util::backend::Backend;
use crate::util::{
    Conf, Lbctl, Master, TempDir, WAIT, connect, fetch_ok, pseudo_random_bytes, wait_until,
    write_file,
};

const MIB: usize = 1024 * 1024;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("not root: the kernel refuses sockmap here, skipped");
    false
}

fn sockmap_conf(dir: &TempDir, backend: SocketAddr) -> Conf {
    Conf::new(dir, &[backend])
        .workers(1)
        .listen(|l| l.line("dataplane = \"sockmap\""))
}

/// Starts lbctl on `conf`: its master (stopped on drop) and a client for
/// its commands.
fn start(dir: &TempDir, conf: &Conf) -> (Master, Lbctl) {
    let path = conf.write(dir);
    (Master::start(dir, &path), Lbctl::new(dir, &path))
}

fn dataplane(lbctl: &Lbctl) -> String {
    lbctl.status_json()["listens"][0]["dataplane"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Voluntary context switches of a process (its wake-ups).
fn wakeups(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Sends `data` through `s` (then FIN) while reading the echo; returns it.
fn echo_through(s: TcpStream, data: &[u8]) -> Vec<u8> {
    let mut w = s.try_clone().expect("clone");
    let to_send = data.to_vec();
    let writer = std::thread::spawn(move || {
        w.write_all(&to_send).expect("write");
        w.shutdown(Shutdown::Write).expect("shutdown");
    });
    let mut got = Vec::with_capacity(data.len());
    let mut r = s;
    r.read_to_end(&mut got).expect("read the echo");
    writer.join().expect("writer");
    got
}

/// Sends `data` through `s` while reading the echo, and counts the
/// worker's wake-ups from the first byte to the last of the echo; then
/// the FIN (whose forwarding may wait on timers for the kernel's queues:
/// the half-close test covers it), and the echo must end there.
fn echo_counting_wakeups(s: TcpStream, data: &[u8], worker: i32) -> (Vec<u8>, u64) {
    let mut w = s.try_clone().expect("clone");
    let to_send = data.to_vec();
    let before = wakeups(worker);
    let writer = std::thread::spawn(move || w.write_all(&to_send).expect("write"));
    let mut got = vec![0u8; data.len()];
    let mut r = s;
    r.read_exact(&mut got).expect("read the echo");
    let woke = wakeups(worker) - before;
    writer.join().expect("writer");
    r.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).expect("read to EOF");
    assert!(rest.is_empty(), "{} bytes after the echo", rest.len());
    (got, woke)
}

/// The test knob that links every connection at once (the CI matrix sets
/// it for the forced-sockmap run of the suite).
const LINK_AT_ONCE_ENV: &str = "LBCTL_SOCKMAP_LINK_AT_ONCE";

/// True when `connections` shows a connection relayed by the kernel.
fn kernel_relays(lbctl: &Lbctl) -> bool {
    lbctl.run("connections", &[]).stdout.contains("sockmap")
}

/// Sends `msg` and reads its echo.
fn exchange(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).expect("echo");
    assert_eq!(buf, msg);
}

/// Opens a connection and waits until the kernel relays it: two exchanges
/// (the second request earns the link), then `connections` says `sockmap`.
fn linked(lbctl: &Lbctl, bind: SocketAddr) -> TcpStream {
    let mut s = connect(bind).expect("connect");
    exchange(&mut s, b"hello");
    exchange(&mut s, b"hello");
    assert!(
        wait_until(WAIT, || kernel_relays(lbctl)),
        "the connection relayed by the kernel"
    );
    s
}

#[test]
fn sockmap_links_a_connection_at_its_second_exchange_or_after_64_kib() {
    if !root() {
        return;
    }
    let dir = TempDir::new();
    let echo = Backend::echo();
    let conf = sockmap_conf(&dir, echo.addr());
    let (_master, lbctl) = start(&dir, &conf);
    let at_once = std::env::var_os(LINK_AT_ONCE_ENV).is_some();
    // One request and its response: relayed in user space (a one-shot
    // connection never pays for the link). Nothing more happens on this
    // connection, so no later event could link it behind the check.
    let mut s = connect(conf.bind()).expect("connect");
    exchange(&mut s, b"request 1");
    let listed = lbctl.run("connections", &[]).stdout;
    assert!(
        listed.contains("relaying"),
        "the connection listed: {listed}"
    );
    assert_eq!(
        listed.contains("sockmap"),
        at_once,
        "linked after one exchange only with {LINK_AT_ONCE_ENV}: {listed}"
    );
    // The second request earns the link; its echo and all after it come
    // through the kernel.
    exchange(&mut s, b"request 2");
    assert!(
        wait_until(WAIT, || kernel_relays(&lbctl)),
        "linked at the second exchange"
    );
    exchange(&mut s, b"request 3");
    drop(s);
    assert!(
        wait_until(WAIT, || !lbctl
            .run("connections", &[])
            .stdout
            .contains("relaying")),
        "the first connection closed"
    );
    // A bulk transfer one way earns it too: 64 KiB up, no reply yet.
    let mut s = connect(conf.bind()).expect("connect");
    let data = pseudo_random_bytes(64 * 1024, 4);
    s.write_all(&data).expect("write 64 KiB");
    assert!(
        wait_until(WAIT, || kernel_relays(&lbctl)),
        "linked after 64 KiB one way"
    );
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got).expect("the echo of 64 KiB");
    assert!(got == data, "64 KiB echo");
}

#[test]
fn sockmap_relays_1_and_48_mib_intact_without_waking_the_worker() {
    if !root() {
        return;
    }
    let dir = TempDir::new();
    let echo = Backend::echo();
    let conf = sockmap_conf(&dir, echo.addr());
    let (master, lbctl) = start(&dir, &conf);
    assert_eq!(dataplane(&lbctl), "sockmap");
    lbctl
        .run("status", &[])
        .assert_contains("web: dataplane: sockmap");
    let worker = master.workers()[0];
    for (size, seed) in [(MIB, 1u64), (48 * MIB, 2)] {
        let s = linked(&lbctl, conf.bind());
        let data = pseudo_random_bytes(size, seed);
        let (got, woke) = echo_counting_wakeups(s, &data, worker);
        assert_eq!(got.len(), size, "echo length of {size} bytes");
        assert_eq!(
            Sha256::digest(&got),
            Sha256::digest(&data),
            "sha256 of the {size}-byte echo"
        );
        // A user-space relay wakes at least once per 512 KiB turn (96 for
        // 48 MiB), in practice per 16-64 KiB; while the kernel relays the
        // bytes the worker wakes for its 1 s tick only (and the loop's
        // heartbeat).
        assert!(woke < 40, "the worker woke {woke} times for {size} bytes");
    }
    // Counted from tcp_info: 10 + 1 MiB + 10 + 48 MiB each way.
    let expected = (10 + MIB + 10 + 48 * MIB) as u64;
    assert!(
        wait_until(WAIT, || {
            let st = lbctl.status_json();
            let w = &st["workers"][0];
            w["bytes_in"].as_u64() == Some(expected) && w["bytes_out"].as_u64() == Some(expected)
        }),
        "byte counters from tcp_info"
    );
}

#[test]
fn sockmap_idle_timeout_spares_kernel_traffic_and_closes_a_quiet_connection() {
    if !root() {
        return;
    }
    let dir = TempDir::new();
    let echo = Backend::echo();
    let idle = Duration::from_secs(2);
    let conf = sockmap_conf(&dir, echo.addr()).listen(|mut l| {
        l.idle_timeout = "2s".to_string();
        l
    });
    let (_master, lbctl) = start(&dir, &conf);
    // Two exchanges earn the link; from then on pings every 200 ms, bytes
    // the worker never sees (the kernel relays them), until `connections`
    // (watched beside them, so that looking leaves no quiet spell) has
    // shown the connection relayed by the kernel for twice the idle
    // timeout: such a connection is not idle.
    let mut s = connect(conf.bind()).expect("connect");
    exchange(&mut s, b"hello");
    exchange(&mut s, b"hello");
    let linked_at = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            if wait_until(WAIT, || kernel_relays(&lbctl)) {
                *linked_at.lock().expect("lock") = Some(std::time::Instant::now());
            }
        });
        let give_up = std::time::Instant::now() + WAIT + 4 * idle;
        loop {
            exchange(&mut s, b"ping");
            let seen = *linked_at.lock().expect("lock");
            if seen.is_some_and(|t| t.elapsed() >= 2 * idle) {
                break;
            }
            assert!(
                std::time::Instant::now() < give_up,
                "the connection relayed by the kernel (seen: {seen:?})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    // Quiet now: the balancer closes it (the echo server never would).
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = [0u8; 1];
    let r = s.read(&mut buf);
    assert!(matches!(r, Ok(0)), "closed by the idle timeout: {r:?}");
}

#[test]
fn sockmap_half_close_keeps_every_byte_ahead_of_the_fin_both_ways() {
    if !root() {
        return;
    }
    let dir = TempDir::new();
    // Replies only after the client's EOF, with everything it got: a FIN
    // that overtook bytes would shorten the reply.
    let backend = Backend::echo_after_eof();
    let conf = sockmap_conf(&dir, backend.addr());
    let (_master, lbctl) = start(&dir, &conf);
    for size in [64 * 1024, 8 * MIB] {
        let mut s = connect(conf.bind()).expect("connect");
        // The first 64 KiB (relayed in user space) earn the link; the rest
        // and the FIN go through the kernel.
        let data = pseudo_random_bytes(size, 9);
        let (head, tail) = data.split_at(64 * 1024);
        s.write_all(head).expect("write the first 64 KiB");
        assert!(
            wait_until(WAIT, || kernel_relays(&lbctl)),
            "the connection relayed by the kernel"
        );
        s.write_all(tail).expect("write");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read the reply to EOF");
        assert_eq!(got.len(), size, "reply length after half-close");
        assert!(got == data, "reply content after half-close");
    }
    // And with the echo backend: the client's FIN after bytes the kernel
    // still holds, the server's FIN after its last echo.
    let echo = Backend::echo();
    let dir2 = TempDir::new();
    let conf = sockmap_conf(&dir2, echo.addr());
    let (_master2, lbctl) = start(&dir2, &conf);
    let s = linked(&lbctl, conf.bind());
    let data = pseudo_random_bytes(4 * MIB, 5);
    let got = echo_through(s, &data);
    assert!(got == data, "echo after half-close");
}

/// The send buffers (`ss`'s `skmem` `tb`, in bytes as the kernel counts
/// them) of the established sockets `filter` selects.
fn send_buffers(filter: &str) -> Vec<u64> {
    let out = std::process::Command::new("ss")
        .args(["-tmnH", "state", "established", filter])
        .output()
        .expect("ss (iproute2; .ci/run installs it)");
    assert!(
        out.status.success(),
        "ss {filter}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(",tb")
        .skip(1)
        .filter_map(|t| t.split(',').next()?.parse().ok())
        .collect()
}

#[test]
fn sockmap_sndbuf_sizes_both_linked_sockets_send_buffers() {
    if !root() {
        return;
    }
    let dir = TempDir::new();
    let echo = Backend::echo();
    let conf = sockmap_conf(&dir, echo.addr()).listen(|l| l.line("sockmap_sndbuf = \"3MiB\""));
    let (_master, lbctl) = start(&dir, &conf);
    // SO_SNDBUF doubled by the kernel, as for any setsockopt of it.
    let wanted = 6 * MIB as u64;
    let client_side = format!("( sport = :{} )", conf.bind().port());
    let server_side = format!("( dport = :{} )", echo.addr().port());
    let mut s = connect(conf.bind()).expect("connect");
    exchange(&mut s, b"request 1");
    if std::env::var_os(LINK_AT_ONCE_ENV).is_none() {
        // In user space the kernel's autotuning sizes them.
        let before = send_buffers(&client_side);
        assert!(
            !before.is_empty() && !before.contains(&wanted),
            "{before:?}"
        );
    }
    exchange(&mut s, b"request 2");
    assert!(
        wait_until(WAIT, || kernel_relays(&lbctl)),
        "linked at the second exchange"
    );
    assert_eq!(
        send_buffers(&client_side),
        vec![wanted],
        "the client's socket"
    );
    assert!(
        send_buffers(&server_side).contains(&wanted),
        "the server's socket: {:?}",
        send_buffers(&server_side)
    );
    exchange(&mut s, b"request 3");
}

#[test]
fn a_worker_without_cap_bpf_falls_back_to_splice_and_says_so() {
    if !root() {
        return;
    }
    let Ok(Some(_)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("no user 'nobody' on this machine: skipped");
        return;
    };
    let dir = TempDir::new();
    let backend = Backend::fixed("hello");
    let conf = sockmap_conf(&dir, backend.addr()).workers(2);
    let text = conf
        .to_toml()
        .replacen("[master]\n", "[master]\nuser = \"nobody\"\n", 1);
    let path = dir.join("lbctl.toml");
    write_file(&path, &text);
    let master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    assert_eq!(dataplane(&lbctl), "splice (sockmap refused: EPERM)");
    lbctl
        .run("status", &[])
        .assert_contains("web: dataplane: splice (sockmap refused: EPERM)");
    for _ in 0..10 {
        assert_eq!(fetch_ok(conf.bind()), "hello");
    }
    let echo = Backend::echo();
    let dir2 = TempDir::new();
    let conf2 = sockmap_conf(&dir2, echo.addr());
    let text = conf2
        .to_toml()
        .replacen("[master]\n", "[master]\nuser = \"nobody\"\n", 1);
    let path2 = dir2.join("lbctl.toml");
    write_file(&path2, &text);
    let _m2 = Master::start(&dir2, &path2);
    let data = pseudo_random_bytes(2 * MIB, 3);
    let got = echo_through(connect(conf2.bind()).expect("connect"), &data);
    assert!(got == data, "2 MiB echo through the fallback");
    assert!(
        wait_until(Duration::from_secs(5), || {
            master.stderr().contains("dataplane sockmap refused")
        }),
        "the refusal in the log"
    );
    let lines = master.stderr().matches("dataplane sockmap refused").count();
    assert_eq!(lines, 1, "logged once per generation:\n{}", master.stderr());
}
