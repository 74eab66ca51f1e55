//! Owns counting the TCP handshakes under way to a listener (its `SYN_RECV`
//! request sockets), asked of the kernel over `NETLINK_SOCK_DIAG` as `ss`
//! does. Reading `/proc/net/tcp` instead costs a walk over every socket of
//! the host (hundreds of milliseconds with tens of thousands in TIME_WAIT),
//! once per stopped backend.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const AF_NETLINK: i32 = 16;
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const AF_INET: u8 = 2;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN_RECV: u8 = 3;
/// `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, sockid (48).
const REQ_LEN: usize = 56;

/// Handshakes under way (`SYN_RECV`) to the IPv4 listener at `addr`; 0 for
/// an IPv6 one (the tests listen on 127.0.0.1 only).
pub fn under_way(addr: SocketAddr) -> usize {
    let SocketAddr::V4(v4) = addr else {
        return 0;
    };
    let sock = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_SOCK_DIAG)),
    )
    .expect("open a NETLINK_SOCK_DIAG socket");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("netlink read timeout");
    let mut msg = Vec::with_capacity(NLMSG_HDR + REQ_LEN);
    msg.extend_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    msg.extend_from_slice(&[AF_INET, IPPROTO_TCP, 0, 0]);
    msg.extend_from_slice(&(1u32 << TCP_SYN_RECV).to_ne_bytes());
    msg.resize(NLMSG_HDR + REQ_LEN, 0); // sockid: ignored by a dump
    // Unconnected netlink sockets send to the kernel (port id 0).
    sock.send(&msg).expect("send the sock_diag request");

    let mut count = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = (&sock).read(&mut buf).expect("read the sock_diag answer");
        let mut rest = &buf[..n];
        while rest.len() >= NLMSG_HDR {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if len < NLMSG_HDR || len > rest.len() {
                panic!("malformed sock_diag answer (message length {len})");
            }
            match kind {
                NLMSG_DONE => return count,
                NLMSG_ERROR => panic!("sock_diag answered an error: {:?}", &rest[..len]),
                _ => {}
            }
            // struct inet_diag_msg: family, state, timer, retrans, then the
            // sockid: source port (network order), destination port, source
            // address (first 4 bytes for IPv4), ...
            let m = &rest[NLMSG_HDR..len];
            if m.len() >= 12
                && m[1] == TCP_SYN_RECV
                && u16::from_be_bytes([m[4], m[5]]) == v4.port()
                && m[8..12] == v4.ip().octets()
            {
                count += 1;
            }
            // Messages are aligned to 4 bytes.
            let step = (len + 3) & !3;
            rest = &rest[step.min(rest.len())..];
        }
    }
}
