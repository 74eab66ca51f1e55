//! The io_uring loop: one `io_uring_enter` per turn submits every queued request and reaps
//! the completions. The listener has one multishot accept; each socket one multishot recv
//! that picks its buffers from a registered buffer ring; connect, send and close are ring
//! requests too (shutdown is a direct syscall, see `maybe_shut`). The ring runs with SINGLE_ISSUER + DEFER_TASKRUN (completions
//! are processed only when this loop asks), and no SQPOLL thread: on a 2-CPU machine
//! that thread would spin on the CPU the load needs.

use crate::sys;
use io_uring::types::{BufRingEntry, Fd};
use io_uring::{IoUring, cqueue, opcode, squeue};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};

const BUFS: u16 = 1024; // a power of two, as the buffer ring wants
const BUF_LEN: usize = 16 * 1024;
const GROUP: u16 = 0;

// user_data: the operation in bits 0..8, the side in bit 8, the slot from bit 32.
const ACCEPT: u64 = 1;
const CONNECT: u64 = 2;
const RECV: u64 = 3;
const SEND: u64 = 4;
const CLOSE: u64 = 6;

fn tag(slot: usize, side: usize, op: u64) -> u64 {
    ((slot as u64) << 32) | ((side as u64) << 8) | op
}

/// The registered buffer ring: BUFS entries the kernel takes buffers from, and the buffers.
struct BufRing {
    ring: *mut BufRingEntry,
    bufs: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new(uring: &IoUring) -> io::Result<BufRing> {
        let size = BUFS as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping; no pointer of ours is passed in.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            ring: ring.cast(),
            bufs: vec![0; BUFS as usize * BUF_LEN],
            tail: 0,
        };
        // SAFETY: the mapping is page-aligned, BUFS entries long, and lives as long as the
        // process (it is never unmapped), so as long as the ring that reads it.
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(br.ring as u64, BUFS, GROUP, 0)?
        };
        for bid in 0..BUFS {
            br.give(bid);
        }
        Ok(br)
    }

    /// Hands buffer `bid` (back) to the kernel.
    fn give(&mut self, bid: u16) {
        let addr = self.buf(bid) as u64;
        // SAFETY: the index is masked into the ring's BUFS entries; the tail is published
        // with release ordering after the entry is written, as the kernel expects.
        unsafe {
            let entry = &mut *self.ring.add((self.tail & (BUFS - 1)) as usize);
            entry.set_addr(addr);
            entry.set_len(BUF_LEN as u32);
            entry.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn buf(&self, bid: u16) -> *const u8 {
        self.bufs[bid as usize * BUF_LEN..].as_ptr()
    }
}

/// Bytes received into buffer `bid`, `off` of them already sent on.
struct Chunk {
    bid: u16,
    off: u32,
    len: u32,
}

#[derive(Default)]
struct Conn {
    fds: [RawFd; 2],             // client, server
    inflight: u32,               // requests the kernel still holds for this connection
    queue: [VecDeque<Chunk>; 2], // direction d: received on side d, to send on side 1 - d
    sending: [bool; 2],
    armed: [bool; 2], // a multishot recv is in place on side d
    eof: [bool; 2],
    shut: [bool; 2], // side 1 - d was shut down for writing
    dead: bool,
}

struct Relay {
    uring: IoUring,
    bufs: BufRing,
    listener: RawFd,
    backends: Vec<libc::sockaddr_in>, // live for the run: connect requests point into it
    next: usize,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
}

pub fn run(listener: RawFd, backends: &[SocketAddrV4]) -> io::Result<()> {
    let uring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_cqsize(16384)
        .build(4096)?;
    let bufs = BufRing::new(&uring)?;
    let mut r = Relay {
        uring,
        bufs,
        listener,
        backends: backends.iter().map(|b| sys::sockaddr(*b)).collect(),
        next: 0,
        conns: Vec::new(),
        free: Vec::new(),
    };
    r.push(
        opcode::AcceptMulti::new(Fd(listener))
            .build()
            .user_data(ACCEPT),
    );
    let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
    loop {
        match r.uring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        done.clear();
        done.extend(
            r.uring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &done {
            r.complete(ud, res, flags);
        }
    }
}

impl Relay {
    fn push(&mut self, sqe: squeue::Entry) {
        // SAFETY: every buffer and address a request points to outlives it: buffers are in
        // the ring's allocation (alive for the run), addresses in self.backends.
        while unsafe { self.uring.submission().push(&sqe) }.is_err() {
            if self.uring.submit().is_err() {
                break; // the queue stays full: the push is retried after the submit
            }
        }
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        let (slot, side, op) = ((ud >> 32) as usize, ((ud >> 8) & 1) as usize, ud & 0xff);
        if op == ACCEPT {
            if !cqueue::more(flags) {
                self.push(
                    opcode::AcceptMulti::new(Fd(self.listener))
                        .build()
                        .user_data(ACCEPT),
                );
            }
            if res >= 0 {
                self.open(res);
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        conn.inflight -= u32::from(op != RECV || !cqueue::more(flags));
        match op {
            CONNECT if res < 0 => self.kill(slot),
            CONNECT => {
                for s in 0..2 {
                    self.arm(slot, s);
                }
            }
            RECV => self.received(slot, side, res, flags),
            SEND => self.sent(slot, side, res),
            _ => {} // CLOSE
        }
        self.reap(slot);
    }

    fn open(&mut self, client: RawFd) {
        let Ok(server) = sys::tcp_socket(false) else {
            sys::close(client);
            return;
        };
        let addr = &self.backends[self.next % self.backends.len()] as *const libc::sockaddr_in;
        self.next += 1;
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.conns[slot] = Some(Conn {
            fds: [client, server],
            inflight: 1,
            ..Conn::default()
        });
        let connect = opcode::Connect::new(Fd(server), addr.cast(), sys::SOCKADDR_LEN);
        self.push(connect.build().user_data(tag(slot, 1, CONNECT)));
    }

    fn arm(&mut self, slot: usize, side: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if conn.armed[side] || conn.eof[side] || conn.dead {
            return;
        }
        conn.armed[side] = true;
        conn.inflight += 1;
        let fd = conn.fds[side];
        self.push(
            opcode::RecvMulti::new(Fd(fd), GROUP)
                .build()
                .user_data(tag(slot, side, RECV)),
        );
    }

    fn received(&mut self, slot: usize, d: usize, res: i32, flags: u32) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if !cqueue::more(flags) {
            conn.armed[d] = false;
        }
        if res > 0 {
            let Some(bid) = cqueue::buffer_select(flags) else {
                return self.kill(slot);
            };
            if conn.dead {
                self.bufs.give(bid);
                return;
            }
            conn.queue[d].push_back(Chunk {
                bid,
                off: 0,
                len: res as u32,
            });
            self.send_next(slot, d);
            self.arm(slot, d); // the multishot recv ended (it does when buffers run short)
        } else if res == 0 {
            conn.eof[d] = true;
            self.maybe_shut(slot, d);
        } else if res == -libc::ENOBUFS {
            self.arm(slot, d); // every buffer is queued for sending: ask again
        } else {
            self.kill(slot);
        }
    }

    fn send_next(&mut self, slot: usize, d: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if conn.sending[d] || conn.dead {
            return;
        }
        let Some(c) = conn.queue[d].front() else {
            return self.maybe_shut(slot, d);
        };
        // SAFETY: off < len <= BUF_LEN, inside buffer bid.
        let ptr = unsafe { self.bufs.buf(c.bid).add(c.off as usize) };
        let send =
            opcode::Send::new(Fd(conn.fds[1 - d]), ptr, c.len - c.off).flags(libc::MSG_NOSIGNAL);
        conn.sending[d] = true;
        conn.inflight += 1;
        self.push(send.build().user_data(tag(slot, d, SEND)));
    }

    fn sent(&mut self, slot: usize, d: usize, res: i32) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        conn.sending[d] = false;
        if res < 0 {
            return self.kill(slot);
        }
        let Some(c) = conn.queue[d].front_mut() else {
            return;
        };
        c.off += res as u32;
        if c.off >= c.len {
            let bid = c.bid;
            conn.queue[d].pop_front();
            self.bufs.give(bid);
        }
        self.send_next(slot, d);
    }

    /// Forwards direction d's end of stream once everything before it has been sent. A
    /// direct shutdown(2), not IORING_OP_SHUTDOWN: the kernel always hands that one to an
    /// io-wq worker thread (REQ_F_FORCE_ASYNC), a thread wake-up per half-close.
    fn maybe_shut(&mut self, slot: usize, d: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if !conn.eof[d] || conn.shut[d] || conn.sending[d] || !conn.queue[d].is_empty() || conn.dead
        {
            return;
        }
        conn.shut[d] = true;
        // SAFETY: shutdown(2) takes no pointers; the fd is the connection's own.
        unsafe { libc::shutdown(conn.fds[1 - d], libc::SHUT_WR) };
        if conn.shut == [true; 2] {
            let fds = conn.fds;
            conn.inflight += 2;
            for (s, fd) in fds.into_iter().enumerate() {
                self.push(
                    opcode::Close::new(Fd(fd))
                        .build()
                        .user_data(tag(slot, s, CLOSE)),
                );
            }
        }
    }

    /// A failed connection: shut both sockets down so the kernel ends the requests it holds;
    /// `reap` closes them when the last one is back.
    fn kill(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if !conn.dead {
            conn.dead = true;
            for fd in conn.fds {
                // SAFETY: shutdown(2) takes no pointers; the fds are the connection's own.
                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            }
        }
    }

    /// Frees the slot once the kernel holds nothing of the connection and it is done.
    fn reap(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_ref() else {
            return;
        };
        let closed = conn.shut == [true; 2];
        if conn.inflight > 0 || !(closed || conn.dead) {
            return;
        }
        let Some(mut conn) = self.conns[slot].take() else {
            return;
        };
        if !closed {
            sys::close(conn.fds[0]);
            sys::close(conn.fds[1]);
        }
        for q in &mut conn.queue {
            for c in q.drain(..) {
                self.bufs.give(c.bid);
            }
        }
        self.free.push(slot);
    }
}
