//! Owns the tests for TCP urgent (out-of-band) data: recv(2) stops short at
//! the urgent mark and splice(2) cannot step over it, so a short read there
//! is neither "drained" nor "EOF". Every in-band byte around an urgent byte
//! must be relayed, by copy and by splice, with and without a FIN behind it;
//! the urgent byte itself is not relayed (as with HAProxy and nginx).

use std::io::Read;
use std::net::Shutdown;

use crate::util::backend::Backend;
use crate::util::loadgen::{Extra, open_n};
use crate::util::{
    Conf, Lbctl, Master, ServerConf, TempDir, WAIT, connect, pseudo_random_bytes, wait_until,
};

/// A 1-worker config whose one server is `echo`, named "echo".
/// The user-space relay (`dataplane = "auto"`, even under
/// LBCTL_FORCE_DATAPLANE): these are its splice and copy paths; the kernel
/// relay passes an urgent byte in-band (README, "Kernel data plane").
fn echo_conf(dir: &TempDir, echo: &Backend) -> Conf {
    Conf::new(dir, &[]).workers(1).listen(|l| {
        l.servers(vec![ServerConf::new(echo.addr()).name("echo")])
            .line("dataplane = \"auto\"")
    })
}

/// A client streams `bulk` bytes through an echo server (the direction is
/// spliced by then), then without pausing "abc", an urgent byte, "def" and
/// (with `fin`) its FIN: the urgent mark is reached inside a splice turn,
/// before epoll has reported EPOLLPRI. Returns the failed rounds.
fn urgent_mid_splice(fin: bool) -> Vec<String> {
    let dir = TempDir::new();
    let echo = Backend::echo();
    let conf = echo_conf(&dir, &echo);
    let _master = Master::start(&dir, &conf.write(&dir));
    let mut failures = Vec::new();
    for round in 0..40 {
        let bulk = 256 * 1024 + round * 4099;
        let mut sent = pseudo_random_bytes(bulk, round as u64);
        sent.extend_from_slice(b"abcdef");
        let mut stream = connect(conf.bind()).expect("connect");
        let s = socket2::Socket::from(stream.try_clone().expect("clone the socket"));
        let body = sent[..bulk].to_vec();
        let writer = std::thread::spawn(move || {
            let mut off = 0;
            while off < body.len() {
                off += s.send(&body[off..]).expect("send the bulk part");
            }
            s.send(b"abc").expect("send");
            s.send_out_of_band(b"X").expect("send the urgent byte");
            s.send(b"def").expect("send");
            if fin {
                s.shutdown(Shutdown::Write).expect("shutdown");
            }
        });
        let mut got = Vec::new();
        let end = if fin {
            stream.read_to_end(&mut got).map(drop)
        } else {
            got.resize(sent.len(), 0);
            stream.read_exact(&mut got)
        };
        writer.join().expect("writer thread");
        if end.is_err() || got != sent {
            failures.push(format!(
                "round {round}: {:?}, got {} of {} bytes",
                end.err(),
                got.len(),
                sent.len()
            ));
        }
    }
    failures
}

/// A client queued behind `max_conns = 1` sends `bulk` bytes, "abc", an
/// urgent byte, "def" and (with `fin`) its FIN, so all of it is queued in the
/// kernel before the worker reads any; then it is let through to an echo
/// server. Returns what came back and the in-band bytes it sent.
fn queued_client_with_urgent_data(bulk: usize, fin: bool) -> (Vec<u8>, Vec<u8>) {
    let dir = TempDir::new();
    let echo = Backend::echo();
    let conf = echo_conf(&dir, &echo);
    let path = Extra::new()
        .listen("queue = { size = 8, timeout = \"10s\" }")
        .server(echo.addr(), "max_conns = 1")
        .write(&conf, &dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    let held = open_n(conf.bind(), 1);
    assert!(wait_until(WAIT, || echo.open_connections() == 1));
    let waiting = connect(conf.bind()).expect("connect the queued client");
    assert!(
        wait_until(WAIT, || lbctl.status_json()["listens"][0]["queued"] == 1),
        "the second client never showed as queued"
    );
    let mut sent = pseudo_random_bytes(bulk, 5);
    let s = socket2::Socket::from(waiting);
    let mut off = 0;
    while off < sent.len() {
        off += s.send(&sent[off..]).expect("send the bulk part");
    }
    s.send(b"abc").expect("send");
    s.send_out_of_band(b"X").expect("send the urgent byte");
    s.send(b"def").expect("send");
    sent.extend_from_slice(b"abcdef");
    if fin {
        s.shutdown(Shutdown::Write).expect("shutdown");
    }
    drop(held);
    let mut stream: std::net::TcpStream = s.into();
    let mut got = Vec::new();
    if fin {
        let end = stream.read_to_end(&mut got);
        assert!(end.is_ok(), "after {} bytes: {end:?}", got.len());
    } else {
        got.resize(sent.len(), 0);
        let r = stream.read_exact(&mut got);
        assert!(r.is_ok(), "echo of {} bytes: {r:?}", sent.len());
    }
    (got, sent)
}

#[test]
fn bytes_after_an_urgent_byte_and_before_the_fin_are_relayed() {
    let (got, sent) = queued_client_with_urgent_data(0, true);
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&sent)
    );
}

#[test]
fn bytes_after_an_urgent_byte_are_relayed_without_more_input() {
    let (got, sent) = queued_client_with_urgent_data(0, false);
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&sent)
    );
}

#[test]
fn an_urgent_byte_in_a_spliced_stream_neither_ends_nor_stalls_it() {
    for fin in [true, false] {
        // 64 KiB first: the first read fills the buffer, the rest is spliced.
        let (got, sent) = queued_client_with_urgent_data(64 * 1024, fin);
        assert_eq!(got.len(), sent.len(), "fin = {fin}");
        assert!(got == sent, "content differs (fin = {fin})");
    }
}

#[test]
fn an_urgent_byte_and_a_fin_reached_while_splicing_do_not_truncate_the_stream() {
    let failures = urgent_mid_splice(true);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn an_urgent_byte_reached_while_splicing_does_not_stall_the_stream() {
    let failures = urgent_mid_splice(false);
    assert!(failures.is_empty(), "{failures:#?}");
}
