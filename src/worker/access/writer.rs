//! Owns a worker's access-log writer thread: the only code of a worker that
//! touches the disk. It receives batches of whole lines over a bounded
//! channel (the worker never waits for it), appends each file's batches with
//! one `writev` under an exclusive `flock` (several workers append to the
//! same file), and keeps every file made of whole lines: when a write stops
//! short (ENOSPC, EIO, a quota), the partial last line is cut off again
//! (`ftruncate` to the last newline, safe under the lock) and the lines that
//! did not make it are counted as dropped in the worker's slot of the shared
//! region. On [`Ctl::Reopen`] (`lbctl reopen-logs`) it opens every file again
//! by name (logrotate renamed the old one) and, in daemon mode, points the
//! worker's stdout/stderr at the reopened daemon log.

use crate::shm::Region;
use crossbeam_channel::{Receiver, Sender, TryRecvError, select};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// Batches written together at most (one `writev` per file).
const GATHER: usize = 64;

/// A control message for the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctl {
    /// Open every file again by name (logrotate).
    Reopen,
}

/// Whole lines for one file.
#[derive(Debug)]
pub struct Batch {
    /// Index of the file (in the writer's list of paths).
    pub file: usize,
    /// The lines, each ending in `\n`.
    pub buf: Vec<u8>,
    /// How many lines `buf` holds.
    pub lines: u64,
}

struct Out {
    path: PathBuf,
    file: Option<File>,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
}

struct Writer {
    outs: Vec<Out>,
    region: Arc<Region>,
    slot: usize,
    spare: Sender<Vec<u8>>,
}

/// The channels between a worker and its writer thread.
pub struct Channels {
    /// Batches to write.
    pub data: Receiver<Batch>,
    /// Control messages.
    pub ctl: Receiver<Ctl>,
    /// Emptied buffers going back to the worker.
    pub spare: Sender<Vec<u8>>,
    /// Dropped when the thread ends (the worker waits for it at exit).
    pub done: Sender<()>,
}

/// Starts the writer thread over `paths`.
pub fn spawn(
    paths: Vec<PathBuf>,
    ch: Channels,
    region: Arc<Region>,
    slot: usize,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || {
            let mut w = Writer {
                outs: paths
                    .into_iter()
                    .map(|path| Out {
                        path,
                        file: None,
                        failing: false,
                    })
                    .collect(),
                region,
                slot,
                spare: ch.spare,
            };
            for o in &mut w.outs {
                o.open();
            }
            w.run(&ch.data, &ch.ctl);
            drop(ch.done);
        })
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn note(msg: &str) {
    let _ = writeln!(
        io::stderr(),
        "{}",
        crate::master::daemon::log_line(&format!("worker: {msg}"))
    );
}

impl Out {
    fn open(&mut self) {
        match open(&self.path) {
            Ok(f) => self.file = Some(f),
            Err(e) => {
                if !self.failing {
                    note(&format!(
                        "access log {}: cannot open: {e}; its lines are dropped and counted",
                        self.path.display()
                    ));
                }
                self.failing = true;
            }
        }
    }

    /// Appends `parts` (whole lines), returns how many of `lines` lines made it.
    fn append(&mut self, parts: &[&[u8]], lines: u64) -> u64 {
        if self.file.is_none() {
            self.open();
        }
        let Some(file) = self.file.take() else {
            return 0;
        };
        let (result, file) = match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(locked) => {
                let r = append_whole_lines(&locked, parts);
                match locked.unlock() {
                    Ok(f) => (r, Some(f)),
                    // Dropping it unlocks and closes; reopened next time.
                    Err(_) => (r, None),
                }
            }
            Err((f, _)) => (append_whole_lines(&f, parts), Some(f)),
        };
        self.file = file;
        match result {
            Ok(()) => {
                if self.failing {
                    self.failing = false;
                    note(&format!(
                        "access log {}: writing again",
                        self.path.display()
                    ));
                }
                lines
            }
            Err((written, e)) => {
                if !self.failing {
                    self.failing = true;
                    note(&format!(
                        "access log {}: write failed: {e}; lines are dropped and counted until writes succeed",
                        self.path.display()
                    ));
                }
                newlines_in_prefix(parts, written)
            }
        }
    }
}

/// Writes all of `parts`; on an error, cuts a partial last line off again
/// and returns how many bytes (whole lines only) stayed in the file.
fn append_whole_lines(file: &File, parts: &[&[u8]]) -> Result<(), (usize, io::Error)> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    let mut w = file;
    let err = loop {
        if done >= total {
            return Ok(());
        }
        let slices = slices_from(parts, done);
        match w.write_vectored(&slices) {
            Ok(0) => break io::Error::from(io::ErrorKind::WriteZero),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break e,
        }
    };
    let tail = done - whole_prefix(parts, done);
    if tail > 0 {
        // O_APPEND: the offset is the end of what this write appended, and
        // under the lock nobody appended since.
        let cut = w
            .stream_position()
            .and_then(|end| file.set_len(end.saturating_sub(tail as u64)));
        if let Err(e) = cut {
            note(&format!("access log: cannot cut a partial line: {e}"));
        }
    }
    Err((done - tail, err))
}

/// The parts from byte `skip` on (at most [`GATHER`] slices).
fn slices_from<'a>(parts: &[&'a [u8]], mut skip: usize) -> Vec<IoSlice<'a>> {
    let mut v = Vec::with_capacity(parts.len().min(GATHER));
    for p in parts {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        v.push(IoSlice::new(&p[skip..]));
        skip = 0;
        if v.len() == GATHER {
            break;
        }
    }
    v
}

/// Bytes of the first `n` bytes of `parts` up to and including the last newline.
fn whole_prefix(parts: &[&[u8]], n: usize) -> usize {
    let mut seen = 0;
    let mut whole = 0;
    for p in parts {
        if seen >= n {
            break;
        }
        let take = (n - seen).min(p.len());
        if let Some(i) = p[..take].iter().rposition(|&b| b == b'\n') {
            whole = seen + i + 1;
        }
        seen += take;
    }
    whole
}

/// Lines (newlines) in the first `n` bytes of `parts`.
fn newlines_in_prefix(parts: &[&[u8]], n: usize) -> u64 {
    let mut left = n;
    let mut count = 0;
    for p in parts {
        let take = left.min(p.len());
        count += p[..take].iter().filter(|&&b| b == b'\n').count() as u64;
        left -= take;
        if left == 0 {
            break;
        }
    }
    count
}

impl Writer {
    fn run(&mut self, data: &Receiver<Batch>, ctl: &Receiver<Ctl>) {
        let mut batches = Vec::with_capacity(GATHER);
        loop {
            select! {
                recv(data) -> m => match m {
                    Ok(b) => {
                        batches.push(b);
                        self.gather(data, &mut batches);
                    }
                    Err(_) => return,
                },
                recv(ctl) -> c => match c {
                    Ok(Ctl::Reopen) => self.reopen(),
                    Err(_) => {
                        // The worker is going: write what is left.
                        while let Ok(b) = data.recv() {
                            batches.push(b);
                            self.gather(data, &mut batches);
                        }
                        return;
                    }
                },
            }
        }
    }

    /// Takes what else is queued (up to [`GATHER`]) and writes it all.
    fn gather(&mut self, data: &Receiver<Batch>, batches: &mut Vec<Batch>) {
        while batches.len() < GATHER {
            match data.try_recv() {
                Ok(b) => batches.push(b),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        self.write(batches);
    }

    fn write(&mut self, batches: &mut Vec<Batch>) {
        let mut dropped = 0;
        for (f, out) in self.outs.iter_mut().enumerate() {
            let mine: Vec<&[u8]> = batches
                .iter()
                .filter(|b| b.file == f && !b.buf.is_empty())
                .map(|b| &b.buf[..])
                .collect();
            if mine.is_empty() {
                continue;
            }
            let lines: u64 = batches
                .iter()
                .filter(|b| b.file == f)
                .map(|b| b.lines)
                .sum();
            dropped += lines - out.append(&mine, lines).min(lines);
        }
        // Batches naming no file (cannot happen) are dropped too.
        dropped += batches
            .iter()
            .filter(|b| b.file >= self.outs.len())
            .map(|b| b.lines)
            .sum::<u64>();
        if dropped > 0 {
            self.region
                .slot(self.slot)
                .access_dropped
                .fetch_add(dropped, Relaxed);
        }
        for mut b in batches.drain(..) {
            b.buf.clear();
            let _ = self.spare.try_send(b.buf);
        }
    }

    fn reopen(&mut self) {
        for o in &mut self.outs {
            match open(&o.path) {
                Ok(f) => {
                    o.file = Some(f);
                    o.failing = false;
                }
                Err(e) => note(&format!(
                    "access log {}: cannot reopen: {e}; still writing to the old file",
                    o.path.display()
                )),
            }
        }
        if let Err(e) = crate::master::daemon::reopen_daemon_log() {
            note(&format!("cannot reopen the daemon log: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_prefix_stops_at_the_last_newline_across_parts() {
        let parts: [&[u8]; 2] = [b"ab\ncd\n", b"ef\ngh\n"];
        assert_eq!(whole_prefix(&parts, 0), 0);
        assert_eq!(whole_prefix(&parts, 2), 0);
        assert_eq!(whole_prefix(&parts, 3), 3);
        assert_eq!(whole_prefix(&parts, 7), 6);
        assert_eq!(whole_prefix(&parts, 12), 12);
        assert_eq!(newlines_in_prefix(&parts, 7), 2);
        assert_eq!(newlines_in_prefix(&parts, 12), 4);
    }

    #[test]
    fn slices_skip_what_was_written() {
        let parts: [&[u8]; 3] = [b"abc", b"de", b"f"];
        let s = slices_from(&parts, 4);
        let got: Vec<&[u8]> = s.iter().map(|s| &**s).collect();
        assert_eq!(got, [&b"e"[..], &b"f"[..]]);
    }

    #[test]
    fn lines_are_appended_whole_and_the_file_can_be_reopened_after_a_rename() {
        let dir = std::env::temp_dir().join(format!("lbctl-writer-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("a.log");
        let mut out = Out {
            path: path.clone(),
            file: None,
            failing: false,
        };
        assert_eq!(out.append(&[b"one\n", b"two\n"], 2), 2);
        let rotated = dir.join("a.log.1");
        std::fs::rename(&path, &rotated).expect("rename");
        assert_eq!(out.append(&[b"three\n"], 1), 1);
        out.file = open(&out.path).ok();
        assert_eq!(out.append(&[b"four\n"], 1), 1);
        let old = std::fs::read_to_string(&rotated).expect("old");
        let new = std::fs::read_to_string(&path).expect("new");
        assert_eq!(
            (old.as_str(), new.as_str()),
            ("one\ntwo\nthree\n", "four\n")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
