//! Owns a worker's [`Pool`] of free relay buffers and splice pipes, and of
//! the HTTP sessions' byte buffers: taken when data arrives, given back when
//! a direction is empty, so idle connections (and idle keep-alive clients)
//! hold no buffer memory and the steady state allocates nothing.

use super::{BUF_SIZE, Block};
use crate::http::SpareFields;
use std::io;
use std::os::fd::OwnedFd;

/// Free buffers and splice pipes of one worker.
#[derive(Debug, Default)]
pub struct Pool {
    free: Vec<Block>,
    pipes: Vec<(OwnedFd, OwnedFd)>,
    /// HTTP read buffers (their length is their usable size).
    bytes: Vec<Vec<u8>>,
    /// HTTP head buffers (empty, capacity kept).
    heads: Vec<Vec<u8>>,
    /// The field list of the last parsed HTTP head (one head is parsed at
    /// a time per worker), handed to the next parse.
    fields: SpareFields,
}

/// Bytes asked of a splice pipe (F_SETPIPE_SZ; the kernel may hold fewer:
/// each socket fragment takes a whole pipe slot, so "full" is detected by
/// EAGAIN, never assumed from a byte count).
pub const PIPE_CAP: usize = 256 * 1024;

/// Free buffers kept for reuse at most (the rest are freed).
const POOL_KEEP: usize = 256;

/// Capacity of a new head buffer (a typical rewritten head fits).
const HEAD_ROOM: usize = 512;

/// Head buffers larger than this are freed instead of kept.
const HEAD_KEEP: usize = 16 * 1024;

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool::default()
    }

    pub(super) fn take(&mut self) -> Block {
        self.free.pop().unwrap_or_else(|| Box::new([0u8; BUF_SIZE]))
    }

    pub(super) fn give(&mut self, b: Block) {
        if self.free.len() < POOL_KEEP {
            self.free.push(b);
        }
    }

    /// A read buffer of `len` bytes for an HTTP session: a free one when
    /// there is one (its old bytes are never read: only what a read puts
    /// in is), else a new zeroed one. Reuse skips the allocation, the
    /// zeroing and the page faults of fresh memory on every request.
    pub fn take_bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = self.bytes.pop().unwrap_or_default();
        v.resize(len, 0);
        v
    }

    /// Gives back a read buffer from [`Pool::take_bytes`].
    pub fn give_bytes(&mut self, v: Vec<u8>) {
        if v.capacity() > 0 && self.bytes.len() < POOL_KEEP {
            self.bytes.push(v);
        }
    }

    /// An empty buffer for a head an HTTP session writes out (its capacity
    /// kept from an earlier head, so writing one does not reallocate).
    pub fn take_head(&mut self) -> Vec<u8> {
        self.heads
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(HEAD_ROOM))
    }

    /// Gives back a head buffer (emptied here); an oversized one is freed.
    pub fn give_head(&mut self, mut v: Vec<u8>) {
        if v.capacity() > 0 && v.capacity() <= HEAD_KEEP && self.heads.len() < POOL_KEEP {
            v.clear();
            self.heads.push(v);
        }
    }

    /// The spare field list for parsing an HTTP head (taken by a head
    /// that completes, given back with [`Pool::give_fields`]).
    pub fn fields(&mut self) -> &mut SpareFields {
        &mut self.fields
    }

    /// Gives back a parsed head's field list (its allocation is kept).
    pub fn give_fields(&mut self, fields: Vec<crate::http::Field<'_>>) {
        self.fields = SpareFields::keep(fields);
    }

    pub(super) fn take_pipe(&mut self) -> io::Result<(OwnedFd, OwnedFd)> {
        match self.pipes.pop() {
            Some(p) => Ok(p),
            None => {
                use nix::fcntl::{FcntlArg, OFlag, fcntl};
                let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
                // Best effort: a larger pipe moves more per splice call.
                let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_CAP as i32));
                Ok((r, w))
            }
        }
    }

    pub(super) fn give_pipe(&mut self, p: (OwnedFd, OwnedFd)) {
        if self.pipes.len() < POOL_KEEP {
            self.pipes.push(p);
        }
    }
}
