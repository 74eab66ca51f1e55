//! Owns a worker's [`Pool`] of free relay buffers and splice pipes: taken
//! when data arrives, given back when a direction is empty, so idle
//! connections hold no buffer memory and the steady state allocates nothing.

use super::{BUF_SIZE, Block};
use std::io;
use std::os::fd::OwnedFd;

/// Free buffers and splice pipes of one worker.
#[derive(Debug, Default)]
pub struct Pool {
    free: Vec<Block>,
    pipes: Vec<(OwnedFd, OwnedFd)>,
}

/// Bytes asked of a splice pipe (F_SETPIPE_SZ; the kernel may hold fewer:
/// each socket fragment takes a whole pipe slot, so "full" is detected by
/// EAGAIN, never assumed from a byte count).
pub const PIPE_CAP: usize = 256 * 1024;

/// Free buffers kept for reuse at most (the rest are freed).
const POOL_KEEP: usize = 256;

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
