//! Owns the plain clients tests use through the balancer: [`connect`] with
//! timeouts, [`fetch`], [`exchange`], and [`pseudo_random_bytes`] payloads.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Connects to `addr` with 5s read/write timeouts.
pub fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Connects, sends nothing, reads until EOF: the whole reply of a fixed-reply
/// backend behind the balancer.
pub fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = connect(addr)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// [`fetch`], panicking with context on error.
#[track_caller]
pub fn fetch_ok(addr: SocketAddr) -> String {
    match fetch(addr) {
        Ok(s) => s,
        Err(e) => panic!("connection through the balancer at {addr} failed: {e}"),
    }
}

/// Sends `data`, shuts down the write side, reads until EOF.
pub fn exchange(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = connect(addr)?;
    s.write_all(data)?;
    s.shutdown(Shutdown::Write)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Deterministic pseudo-random bytes (xorshift64*), distinct per `seed`.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `struct tcp_info` (linux/tcp.h) up to `tcpi_segs_in`.
#[repr(C)]
#[derive(Default)]
struct TcpInfo {
    _small: [u8; 8],
    _u32s: [u32; 24],
    _u64s: [u64; 4],
    _segs_out: u32,
    segs_in: u32,
}

/// Segments the socket has received so far (the SYN included).
pub fn segs_in(s: &std::net::TcpStream) -> u32 {
    let mut ti = TcpInfo::default();
    let mut len = std::mem::size_of::<TcpInfo>() as nix::libc::socklen_t;
    // SAFETY: `ti` is a live #[repr(C)] local of `len` bytes; the kernel
    // writes at most `len` bytes.
    let r = unsafe {
        nix::libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_INFO,
            (&mut ti as *mut TcpInfo).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    ti.segs_in
}
