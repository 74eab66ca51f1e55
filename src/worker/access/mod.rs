//! Owns a worker's access log: [`AccessLogs`], the hot-path side that
//! formats one line per connection (`mode = "tcp"`) or per request
//! (`mode = "http"`) into a reused per-file batch buffer, and hands full
//! batches (and, at the end of every loop turn, partial ones) to the
//! writer thread (`writer.rs`) over a bounded channel with `try_send`: the
//! worker never waits for the disk. A batch the channel cannot take (the
//! disk does not keep up) is dropped and its lines counted in the worker's
//! slot (`access_dropped`: `lbctl status`, `/metrics`). Emptied buffers come
//! back from the writer, so the steady state allocates nothing.
//!
//! Also the loop's hooks: [`Worker::log_close`] writes the line of a
//! connection that ends (the TCP line, or the HTTP request it interrupts),
//! [`after_step`] the line of an HTTP request that just ended. What a line
//! holds is `record.rs` (causes, the per-request state), how it is written
//! `format.rs`.

pub mod format;
pub mod record;
mod writer;

use super::Worker;
use super::conn::Conn;
use super::session::Session;
use crate::config::{Config, ListenConfig, LogFormat};
use crate::shm::Region;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use format::{Clock, Entry, HttpPart};
use record::Cause;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
pub use writer::Ctl;
use writer::{Batch, Channels};

/// A batch is handed to the writer once it holds this many bytes.
const BATCH_BYTES: usize = 32 * 1024;
/// Batches queued for the writer at most (the per-worker bound: with
/// [`BATCH_BYTES`], about 2 MiB).
const QUEUE_BATCHES: usize = 64;
/// A partial batch is handed over at the latest this long after its first
/// line (a full one at once): the writer wakes a few times a second under
/// light load, and once per [`BATCH_BYTES`] under heavy load, instead of
/// once per loop turn.
const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// How long an exiting worker waits for its writer to finish.
const EXIT_WAIT: Duration = Duration::from_secs(2);

struct Pending {
    buf: Vec<u8>,
    lines: u64,
}

/// The worker's side of its access logs (inert when no listen logs).
#[derive(Default)]
pub struct AccessLogs {
    /// Per listen: (file index, format), or None when it does not log.
    targets: Vec<Option<(usize, LogFormat)>>,
    pending: Vec<Pending>,
    /// When the oldest line not yet handed over was written.
    oldest: Option<Instant>,
    clock: Clock,
    tx: Option<Sender<Batch>>,
    ctl: Option<Sender<Ctl>>,
    spare: Option<Receiver<Vec<u8>>>,
    done: Option<Receiver<()>>,
    region: Option<Arc<Region>>,
    slot: usize,
}

impl std::fmt::Debug for AccessLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLogs")
            .field("files", &self.pending.len())
            .finish()
    }
}

impl AccessLogs {
    /// The access logs of `config`'s listens for worker `slot`; starts the
    /// writer thread when any listen logs. Listens naming the same path
    /// share one file.
    pub fn start(
        config: &Config,
        region: &Arc<Region>,
        slot: usize,
    ) -> std::io::Result<AccessLogs> {
        let mut paths: Vec<PathBuf> = Vec::new();
        let targets = config
            .listens
            .iter()
            .map(|l| {
                l.access_log.as_ref().map(|a| {
                    let i = paths.iter().position(|p| *p == a.path).unwrap_or_else(|| {
                        paths.push(a.path.clone());
                        paths.len() - 1
                    });
                    (i, a.format)
                })
            })
            .collect();
        let mut logs = AccessLogs {
            targets,
            slot,
            ..AccessLogs::default()
        };
        if paths.is_empty() {
            return Ok(logs);
        }
        let (tx, data) = crossbeam_channel::bounded(QUEUE_BATCHES);
        let (ctl_tx, ctl) = crossbeam_channel::bounded(4);
        let (spare_tx, spare) = crossbeam_channel::bounded(QUEUE_BATCHES + paths.len());
        let (done_tx, done) = crossbeam_channel::bounded(0);
        logs.pending = paths
            .iter()
            .map(|_| Pending {
                buf: Vec::with_capacity(BATCH_BYTES + 4096),
                lines: 0,
            })
            .collect();
        writer::spawn(
            paths,
            Channels {
                data,
                ctl,
                spare: spare_tx,
                done: done_tx,
            },
            Arc::clone(region),
            slot,
        )?;
        logs.tx = Some(tx);
        logs.ctl = Some(ctl_tx);
        logs.spare = Some(spare);
        logs.done = Some(done);
        logs.region = Some(Arc::clone(region));
        Ok(logs)
    }

    /// Whether the listen logs.
    #[inline]
    pub fn logs(&self, listen: usize) -> bool {
        matches!(self.targets.get(listen), Some(Some(_)))
    }

    /// Formats one line of `listen` into its file's batch.
    fn line(&mut self, listen: usize, e: &Entry<'_>, now: Instant) {
        let Some(Some((file, format))) = self.targets.get(listen).copied() else {
            return;
        };
        let Some(p) = self.pending.get_mut(file) else {
            return;
        };
        match format {
            LogFormat::Text => format::text(&mut p.buf, &mut self.clock, e),
            LogFormat::Json => format::json(&mut p.buf, &mut self.clock, e),
        }
        p.lines += 1;
        self.oldest.get_or_insert(now);
        if p.buf.len() >= BATCH_BYTES {
            self.send(file);
        }
    }

    /// Hands the partial batches over once the oldest line waited
    /// [`FLUSH_AFTER`] (called every loop turn).
    #[inline]
    pub fn flush_due(&mut self, now: Instant) {
        if self
            .oldest
            .is_some_and(|t| now.saturating_duration_since(t) >= FLUSH_AFTER)
        {
            self.flush();
        }
    }

    /// How long the loop may sleep before [`AccessLogs::flush_due`] has work.
    #[inline]
    pub fn next_flush(&self, now: Instant) -> Option<Duration> {
        self.oldest
            .map(|t| (t + FLUSH_AFTER).saturating_duration_since(now))
    }

    /// Hands every partial batch to the writer.
    pub fn flush(&mut self) {
        if self.oldest.take().is_none() {
            return;
        }
        for f in 0..self.pending.len() {
            if self.pending[f].lines > 0 {
                self.send(f);
            }
        }
    }

    fn send(&mut self, file: usize) {
        let Some(p) = self.pending.get_mut(file) else {
            return;
        };
        let fresh = self
            .spare
            .as_ref()
            .and_then(|s| s.try_recv().ok())
            .unwrap_or_else(|| Vec::with_capacity(BATCH_BYTES + 4096));
        let batch = Batch {
            file,
            buf: std::mem::replace(&mut p.buf, fresh),
            lines: std::mem::take(&mut p.lines),
        };
        let refused = match &self.tx {
            Some(tx) => match tx.try_send(batch) {
                Ok(()) => return,
                Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => b,
            },
            None => batch,
        };
        // The writer cannot take it: the lines are dropped and counted,
        // and the buffer is kept for the next batch.
        if let Some(r) = &self.region {
            r.slot(self.slot)
                .access_dropped
                .fetch_add(refused.lines, Relaxed);
        }
        let mut buf = refused.buf;
        buf.clear();
        if let Some(p) = self.pending.get_mut(file) {
            p.buf = buf;
        }
    }

    /// `lbctl reopen-logs`: the writer opens its files again.
    pub fn reopen(&mut self) {
        self.flush();
        match &self.ctl {
            Some(c) => {
                let _ = c.try_send(Ctl::Reopen);
            }
            None => {
                // No access log, so no writer thread: stdout/stderr (daemon
                // mode) are reopened by a short-lived thread, so the loop
                // never waits for the disk.
                if crate::master::daemon::daemon_log().is_some() {
                    let _ = std::thread::Builder::new()
                        .name("reopen-log".into())
                        .spawn(|| {
                            let _ = crate::master::daemon::reopen_daemon_log();
                        });
                }
            }
        }
    }

    /// The worker exits: what is queued is written (waiting at most
    /// [`EXIT_WAIT`]).
    pub fn finish(&mut self) {
        self.flush();
        self.tx = None;
        if let Some(done) = self.done.take() {
            let _ = done.recv_timeout(EXIT_WAIT);
        }
        self.ctl = None;
    }
}

/// The line of an HTTP request that just ended, if one did (called after
/// every step of a connection whose listen logs).
#[inline]
pub fn after_step(logs: &mut AccessLogs, conn: &mut Conn, listen: &ListenConfig, now: Instant) {
    if !logs.logs(conn.listen) {
        return;
    }
    let view = conn_view(conn);
    if let Session::Http(h) = &mut conn.session
        && let Some(ended) = h.log_mut().take_ended()
    {
        let e = http_entry(conn_part(view, listen, now), h.log_mut(), ended);
        logs.line(conn.listen, &e, now);
    }
}

/// What a line takes from the connection.
#[derive(Clone, Copy)]
struct ConnView {
    client: std::net::SocketAddr,
    accepted: Instant,
    server: Option<usize>,
    tried: usize,
}

fn conn_view(conn: &Conn) -> ConnView {
    ConnView {
        client: conn.client_addr,
        accepted: conn.accepted,
        server: conn
            .upstream
            .server_id
            .or_else(|| conn.upstream.tried.last().copied()),
        tried: conn.upstream.tried.len(),
    }
}

fn conn_part<'a>(v: ConnView, listen: &'a ListenConfig, now: Instant) -> Entry<'a> {
    Entry {
        client: v.client,
        listen: &listen.name,
        server: v
            .server
            .and_then(|id| listen.servers.get(id))
            .map(|s| s.addr),
        duration: now.saturating_duration_since(v.accepted),
        bytes_in: 0,
        bytes_out: 0,
        cause: Cause::Error,
        retries: v.tried.saturating_sub(1),
        http: None,
    }
}

fn http_entry<'a>(mut e: Entry<'a>, r: &'a record::RequestLog, ended: record::Ended) -> Entry<'a> {
    e.bytes_in = ended.bytes.0;
    e.bytes_out = ended.bytes.1;
    e.cause = ended.cause;
    e.http = Some(HttpPart {
        method: r.method(),
        path: r.path(),
        status: r.status,
        request: r
            .since
            .map_or(Duration::ZERO, |s| ended.at.saturating_duration_since(s)),
    });
    e
}

impl Worker {
    /// The connection `conn` is being dropped (`error`: by a socket error):
    /// writes its line (tcp) or that of the request it interrupts (http).
    pub(super) fn log_close(&mut self, conn: &mut Conn, error: bool) {
        if !self.access.logs(conn.listen) {
            return;
        }
        let listen = &self.config.listens[conn.listen];
        let now = self.now;
        let view = conn_view(conn);
        let fallback = conn.end.unwrap_or(if error {
            Cause::Error
        } else {
            Cause::ClientClosed
        });
        // A TLS session logs what it carries (bytes of the plaintext).
        let session = match &mut conn.session {
            Session::Tls(t) => t.inner_mut(),
            s => s,
        };
        match session {
            // Not built: a TLS session never carries another.
            Session::Tls(_) => {}
            Session::Http(h) => {
                let bytes = h.bytes();
                let r = h.log_mut();
                r.close(fallback, now, bytes);
                if let Some(ended) = r.take_ended() {
                    let e = http_entry(conn_part(view, listen, now), h.log_mut(), ended);
                    self.access.line(conn.listen, &e, now);
                }
            }
            Session::Sockmap(k) => {
                let mut e = conn_part(view, listen, now);
                (e.bytes_in, e.bytes_out) = k.bytes();
                e.cause = conn
                    .end
                    .unwrap_or(if error { Cause::Error } else { k.ended_by() });
                self.access.line(conn.listen, &e, now);
            }
            Session::Tcp(t) => {
                let cause = conn
                    .end
                    .unwrap_or(if error { Cause::Error } else { t.ended_by() });
                let (up, down) = t.bytes();
                let mut e = conn_part(view, listen, now);
                e.bytes_in = up;
                e.bytes_out = down;
                e.cause = cause;
                match t.upgraded.as_deref_mut() {
                    // An HTTP request answered `101`: its line covers the
                    // whole tunnel.
                    Some(r) => {
                        r.close(cause, now, (up, down));
                        if let Some(ended) = r.take_ended() {
                            let e = http_entry(e, r, ended);
                            self.access.line(conn.listen, &e, now);
                        }
                    }
                    None => self.access.line(conn.listen, &e, now),
                }
            }
        }
    }
}
