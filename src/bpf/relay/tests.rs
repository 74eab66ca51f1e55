//! The relay loaded for real (root only; elsewhere the tests say why and
//! pass): bytes sent before and after the link cross in both directions
//! without user space, and closing the sockets empties the maps.

use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

fn loaded() -> Option<Relay> {
    match Relay::load() {
        Ok(r) => Some(r),
        Err(e) if e.errno == Errno::EPERM => {
            eprintln!("skipped: sockmap needs CAP_BPF and CAP_NET_ADMIN ({e})");
            None
        }
        Err(e) => panic!("the kernel refused the relay: {e}"),
    }
}

/// (client, proxy's client side, proxy's server side, server).
fn four() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
    let front = TcpListener::bind("127.0.0.1:0").expect("bind");
    let back = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(front.local_addr().expect("addr")).expect("connect");
    let (a, _) = front.accept().expect("accept");
    let b = TcpStream::connect(back.local_addr().expect("addr")).expect("connect");
    let (server, _) = back.accept().expect("accept");
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
    }
    (client, a, b, server)
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    s.read_exact(&mut out).expect("read");
    out
}

#[test]
fn the_verdict_program_passes_the_verifier_and_relays_both_ways() {
    let Some(relay) = loaded() else { return };
    let (mut client, a, b, mut server) = four();
    // Sent before the link: waits in the proxy's receive queue.
    client.write_all(b"early ").expect("write");
    std::thread::sleep(Duration::from_millis(20));
    relay.link(a.as_fd(), b.as_fd()).expect("link");
    kick(a.as_raw_fd()).expect("kick");
    kick(b.as_raw_fd()).expect("kick");
    client.write_all(b"late").expect("write");
    assert_eq!(read_n(&mut server, 10), b"early late");
    let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut s2 = server.try_clone().expect("clone");
    let sender = std::thread::spawn(move || s2.write_all(&big).map(|_| big));
    let got = read_n(&mut client, 4 * 1024 * 1024);
    let big = sender.join().expect("join").expect("write");
    assert!(got == big, "4 MiB server to client arrive intact");
    assert!(relay.any_peer().expect("walk").is_some());
    drop(a);
    drop(b);
    // The kernel drops closed sockets from both maps (RCU: a moment).
    for _ in 0..200 {
        if relay.any_peer().expect("walk").is_none() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("closed sockets stayed in the peers map");
}

#[test]
fn a_bare_fin_is_not_relayed_and_the_peer_keeps_sending() {
    let Some(relay) = loaded() else { return };
    let (mut client, a, b, mut server) = four();
    relay.link(a.as_fd(), b.as_fd()).expect("link");
    client.write_all(b"ping").expect("write");
    assert_eq!(read_n(&mut server, 4), b"ping");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    std::thread::sleep(Duration::from_millis(20));
    // The other direction still flows after the client's FIN.
    server.write_all(b"pong").expect("write");
    assert_eq!(read_n(&mut client, 4), b"pong");
    let err = b.take_error().expect("so_error");
    assert!(err.is_none(), "no error on the peer: {err:?}");
}
