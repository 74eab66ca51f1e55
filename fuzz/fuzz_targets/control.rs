//! The control socket's framing and decoding: bytes a client sends, cut into
//! reads at points derived from the input, go through `LineConn::read_some`
//! as `Request`s (the master's side), with a line limit that is sometimes
//! small. Checks: no panic; the messages do not depend on how the bytes were
//! cut into reads (one list is a prefix of the other when a run stopped on
//! `TooLong`); every decoded `Request` survives `send` → `read_msgs`, and
//! `control::allowed` lets root make it and an unknown peer only read.
#![no_main]

use lbctl::channel::{LineConn, MAX_LINE, ReadOutcome};
use lbctl::control::{self, FromWorker, Request, Response, ToWorker};
use lbctl_fuzz::{Prng, pieces};
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// An in-memory non-blocking stream: each read returns the next scripted
/// piece (an empty piece is `WouldBlock`, as when the socket has nothing
/// yet), then EOF. Writes take at most `write_max` bytes, alternating with
/// `WouldBlock`.
struct Script {
    reads: VecDeque<Vec<u8>>,
    written: Vec<u8>,
    write_max: usize,
    block_next_write: bool,
}

impl Script {
    fn new(reads: Vec<&[u8]>, write_max: usize) -> Self {
        Script {
            reads: reads.into_iter().map(<[u8]>::to_vec).collect(),
            written: Vec::new(),
            write_max: write_max.max(1),
            block_next_write: false,
        }
    }
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(mut piece) = self.reads.pop_front() else {
            return Ok(0);
        };
        if piece.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = piece.len().min(buf.len());
        buf[..n].copy_from_slice(&piece[..n]);
        if n < piece.len() {
            self.reads.push_front(piece.split_off(n));
        }
        Ok(n)
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.block_next_write = !self.block_next_write;
        if !self.block_next_write {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.write_max);
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Msgs = Vec<Result<Request, String>>;

/// Reads everything the script holds, `limit` messages per call at most, as
/// the master's control loop does on each readiness event.
fn read_all(reads: Vec<&[u8]>, max_line: usize, limit: usize) -> (Msgs, ReadOutcome) {
    let mut conn = LineConn::new(Script::new(reads, 1), max_line);
    let mut out = Vec::new();
    loop {
        let before = out.len();
        match conn.read_some(&mut out, before.saturating_add(limit)) {
            ReadOutcome::Open => {}
            end => return (out, end),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Decoding alone, outside the framing: no panic for any type.
    let _ = serde_json::from_slice::<Request>(data);
    let _ = serde_json::from_slice::<Response>(data);
    let _ = serde_json::from_slice::<ToWorker>(data);
    let _ = serde_json::from_slice::<FromWorker>(data);

    let mut rng = Prng::from_input(data);
    let max_line = if rng.flip() { MAX_LINE } else { rng.below(64) };
    let limit = 1 + rng.below(4);
    let (whole, whole_end) = read_all(vec![data], max_line, usize::MAX);
    let max_piece = 1 + rng.below(16);
    let cut = pieces(data, &mut rng, max_piece);
    let (split, split_end) = read_all(cut, max_line, limit);

    if whole_end != ReadOutcome::TooLong && split_end != ReadOutcome::TooLong {
        assert_eq!(whole, split, "messages depend on how reads were cut");
        assert_eq!(whole_end, ReadOutcome::Closed);
    } else {
        let n = whole.len().min(split.len());
        assert_eq!(whole[..n], split[..n], "messages depend on read cuts");
    }

    // What the master decoded, sent again, decodes to the same requests.
    let requests: Vec<Request> = whole.into_iter().filter_map(Result::ok).collect();
    for r in &requests {
        assert!(!r.action().is_empty());
        assert!(control::allowed(Some(0), 1000, r), "root may do anything");
        assert_eq!(control::allowed(None, 1000, r), r.is_read_only());
    }
    let mut tx = LineConn::new(Script::new(Vec::new(), 1 + rng.below(32)), MAX_LINE);
    for r in &requests {
        tx.send(r).expect("an in-memory send");
    }
    while !tx.flush().expect("an in-memory flush") {}
    let wire = std::mem::take(&mut tx.stream_mut().written);
    let (back, end) = read_all(vec![&wire], MAX_LINE, usize::MAX);
    assert_eq!(end, ReadOutcome::Closed);
    let back: Vec<Request> = back
        .into_iter()
        .map(|r| r.expect("a request we encoded decodes"))
        .collect();
    assert_eq!(back, requests);
});
