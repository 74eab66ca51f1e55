//! Owns the tests of `defer_accept = true` and `smart_connect = true`: the
//! client's first bytes carry the handshake's last ACK to the server (seen
//! from the server's side, by counting the segments its socket received),
//! a server that speaks first still gets its client (after the kernel's
//! wait), and a bad value is refused naming the key and line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;

use crate::util::backend::Backend;
use crate::util::{Conf, Lbctl, Master, TempDir, WAIT, connect, fetch, segs_in, wait_until};

/// A server that, for each of `n` connections, reads one line and answers
/// with the number of segments its socket had received by then.
fn segment_counter(n: usize) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let t = std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((s, _)) = l.accept() else { return };
            let mut r = BufReader::new(s);
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut s = r.into_inner();
            let _ = writeln!(s, "{}", segs_in(&s));
        }
    });
    (addr, t)
}

/// The segment counts of `n` one-line exchanges through `conf`'s balancer.
fn counts(dir: &TempDir, conf: &Conf, n: usize) -> Vec<u32> {
    let _master = Master::start(dir, &conf.write(dir));
    (0..n)
        .map(|i| ping(connect(conf.bind()).expect("connect"), i))
        .collect()
}

/// Exchange `i`: one line through `c`, and the server's segment count.
fn ping(mut c: TcpStream, i: usize) -> u32 {
    c.write_all(b"ping\n").expect("write");
    let mut got = String::new();
    c.read_to_string(&mut got).expect("read");
    got.trim()
        .parse()
        .unwrap_or_else(|_| panic!("exchange {i}: the server answered {got:?}"))
}

#[test]
fn with_defer_accept_the_first_bytes_carry_the_handshakes_last_ack() {
    const N: usize = 5;
    // Without it: SYN, the bare ACK, then the bytes: 3 segments, always.
    let (addr, t) = segment_counter(N);
    let dir = TempDir::new();
    let plain = counts(&dir, &Conf::new(&dir, &[addr]).workers(1), N);
    t.join().expect("server");
    assert!(
        plain.iter().all(|&n| n == 3),
        "without defer_accept: {plain:?}"
    );

    // With it: SYN, then the bytes with the ACK. The kernel's delayed-ACK
    // timer (200 ms) can beat a worker slowed by a loaded machine to the
    // write, so one exchange in N is enough to prove it.
    let (addr, t) = segment_counter(N);
    let dir = TempDir::new();
    let conf = Conf::new(&dir, &[addr])
        .workers(1)
        .listen(|l| l.line("defer_accept = true"));
    let deferred = counts(&dir, &conf, N);
    t.join().expect("server");
    assert!(deferred.contains(&2), "with defer_accept: {deferred:?}");
    assert!(
        deferred.iter().all(|&n| n <= 3),
        "with defer_accept: {deferred:?}"
    );
}

/// A server that speaks first gets its client through a listen with
/// `line`: the client sends nothing, and the greeting comes through.
fn greeting_served_with(line: &str) {
    let greeter = Backend::fixed("220 hello\r\n");
    let dir = TempDir::new();
    let conf = Conf::new(&dir, &[greeter.addr()])
        .workers(1)
        .listen(|l| l.line(line));
    let _master = Master::start(&dir, &conf.write(&dir));
    assert_eq!(fetch(conf.bind()).expect("fetch"), "220 hello\r\n");
}

/// `lbctl check` refuses `line`, naming `key` and the line.
fn check_rejects(line: &str, key: &str) {
    let dir = TempDir::new();
    let conf = Conf::new(&dir, &["127.0.0.1:6001".parse().expect("addr")]).listen(|l| l.line(line));
    let path = conf.write(&dir);
    Lbctl::new(&dir, &path)
        .run("check", &[])
        .assert_code(1)
        .assert_contains(key)
        .assert_contains("expected true or false")
        .assert_contains("line");
}

#[test]
fn a_server_that_speaks_first_still_gets_its_client_with_defer_accept() {
    // The kernel hands the connection over once its wait (1 s) is up.
    greeting_served_with("defer_accept = true");
}

#[test]
fn check_rejects_a_defer_accept_that_is_not_a_boolean() {
    check_rejects("defer_accept = \"yes\"", "defer_accept");
}

#[test]
fn with_smart_connect_the_first_bytes_carry_the_handshakes_last_ack() {
    // No deferred accept: the connect starts at the client's handshake.
    // The client writes only once `connections` shows the connect done, so
    // no bytes wait at the connect and only a hold on every connect (not
    // defer_accept's "when the bytes are in") makes it 2 segments.
    const N: usize = 5;
    let (addr, t) = segment_counter(N);
    let dir = TempDir::new();
    let conf = Conf::new(&dir, &[addr])
        .workers(1)
        .listen(|l| l.line("smart_connect = true"));
    let path = conf.write(&dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let held: Vec<u32> = (0..N)
        .map(|i| {
            let c = connect(conf.bind()).expect("connect");
            assert!(
                wait_until(WAIT, || lbctl
                    .run("connections", &[])
                    .stdout
                    .contains("relaying")),
                "exchange {i}: the connect to the server done"
            );
            ping(c, i)
        })
        .collect();
    t.join().expect("server");
    assert!(held.contains(&2), "with smart_connect: {held:?}");
    assert!(held.iter().all(|&n| n <= 3), "with smart_connect: {held:?}");
}

#[test]
fn a_server_that_speaks_first_still_gets_its_client_with_smart_connect() {
    // The kernel's delayed ACK completes the server's handshake.
    greeting_served_with("smart_connect = true");
}

#[test]
fn check_rejects_a_smart_connect_that_is_not_a_boolean() {
    check_rejects("smart_connect = 1", "smart_connect");
}
