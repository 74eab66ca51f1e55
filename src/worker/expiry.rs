//! Owns what a worker does when time passes or a client is turned away:
//! firing due timers (queue timeout, connect timeout, PROXY header timeout,
//! the idle timeout and
//! a session's own deadlines such as HTTP header/server timeouts), refusing
//! a client over its per-client limit, and the `lbctl connections` rows.

use super::Worker;
use super::access::record::Cause;
use super::conn::Phase;
use super::session::Counters;
use crate::stats::ConnRow;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

impl Worker {
    pub(super) fn fire_timers(&mut self) {
        while let Some((idx, serial)) = self.timers.pop_due(self.now) {
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            if conn.serial != serial {
                continue;
            }
            let listen = &self.config.listens[conn.listen];
            match conn.phase {
                Phase::Queued { deadline } => {
                    if self.now >= deadline {
                        // Its queue entry goes stale (skipped when reached).
                        let rt = &self.listens[conn.listen];
                        self.region
                            .slot_server(self.slot, rt.base)
                            .queued
                            .fetch_sub(1, Relaxed);
                        self.region.server(rt.base).refused.fetch_add(1, Relaxed);
                        conn.end = Some(Cause::QueueTimeout);
                        self.no_server(idx);
                    }
                }
                Phase::Connecting { deadline } => {
                    if self.now >= deadline {
                        self.connect_failed(idx);
                    }
                }
                Phase::ProxyHeader { deadline } => {
                    if self.now >= deadline {
                        self.proxy_refused(idx, super::proxy_accept::Refused::Timeout, None);
                    }
                }
                Phase::Active => {
                    conn.armed = None;
                    let own = conn.session.deadline(listen);
                    // A kernel-relayed connection's bytes move unseen (no
                    // event refreshes `last_active`): measured now. Its own
                    // timers (FIN recheck, 1 s tick) are due at nearly every
                    // fire, so its idle time is checked before them, or it
                    // would never be.
                    let mut kernel = conn.session.sockmap();
                    let moved = kernel
                        .as_mut()
                        .and_then(|k| k.last_moved(&conn.client, &conn.upstream, self.now));
                    if let Some(t) = moved {
                        conn.last_active = conn.last_active.max(t);
                    }
                    let now = self.now;
                    let (due, owed) = idle_due(conn.last_active, listen.timeouts.idle, now, || {
                        kernel?.owes_bytes(&conn.client, &conn.upstream, now)
                    });
                    let idle_first = moved.is_some() && self.now >= due;
                    if !idle_first && own.is_some_and(|d| self.now >= d) {
                        let counters = Counters {
                            region: &self.region,
                            slot: self.slot,
                            base: self.listens[conn.listen].base,
                        };
                        if conn
                            .session
                            .on_timeout(&mut conn.client, &counters, self.now)
                        {
                            self.close(idx, true);
                        } else {
                            self.progress(idx);
                        }
                        continue;
                    }
                    if self.now >= due {
                        if owed {
                            super::sockmap::reset_owed(
                                &conn.client,
                                conn.upstream.server.as_deref(),
                            );
                        }
                        conn.end = Some(Cause::IdleTimeout);
                        self.close(idx, owed);
                    } else {
                        let next = own.map_or(due, |d| d.min(due));
                        conn.armed = Some(next);
                        self.timers.push(next, idx, serial);
                    }
                }
            }
        }
    }
    /// A client over its listen's per-client limit: counted per listen, and
    /// logged at most once a second (with how many went unlogged).
    pub(super) fn refuse_client(
        &mut self,
        listen: usize,
        addr: std::net::SocketAddr,
        why: crate::limits::Refusal,
    ) {
        let l = &self.config.listens[listen];
        let base = self.listens[listen].base;
        if self.region.servers() > base {
            self.region.server(base).limited.fetch_add(1, Relaxed);
        }
        self.limit_unlogged += 1;
        if self
            .limit_logged_at
            .is_none_or(|t| self.now.duration_since(t) >= Duration::from_secs(1))
        {
            eprintln!(
                "lbctl worker {}: listen {}: refused {} ({}){}",
                self.pid,
                l.name,
                addr.ip(),
                why.word(),
                if self.limit_unlogged > 1 {
                    format!("; {} refused since the last line", self.limit_unlogged)
                } else {
                    String::new()
                }
            );
            self.limit_logged_at = Some(self.now);
            self.limit_unlogged = 0;
        }
    }

    pub(super) fn connection_rows(&self) -> Vec<ConnRow> {
        self.conns
            .iter()
            .flatten()
            .map(|c| {
                let listen = &self.config.listens[c.listen];
                let (bytes_in, bytes_out) = c.session.bytes();
                ConnRow {
                    worker_pid: self.pid,
                    listen: listen.name.clone(),
                    client: c.client_addr.to_string(),
                    server: c
                        .upstream
                        .server_id
                        .and_then(|id| listen.servers.get(id))
                        .map(|s| s.addr.to_string())
                        .unwrap_or_default(),
                    bytes_in,
                    bytes_out,
                    age_secs: self.now.duration_since(c.accepted).as_secs(),
                    state: c.state_name().to_string(),
                    dataplane: c.session.kernel_relayed().then(|| "sockmap".to_string()),
                }
            })
            .collect()
    }
}

/// When a connection last active at `last_active` closes as idle, and
/// whether the kernel relay owes bytes then. `idle` later, unless by then
/// `owes()` says since when the relay has owed bytes it took from a peer
/// (its worker is late, the peers are not quiet): then a whole `idle` after
/// it first owed them. Still owed at that deadline, the bytes are the
/// relay's fault and the connection closes as idle all the same, with
/// resets (`owed`). `owes` is asked only once the first period is over (it
/// costs system calls).
fn idle_due(
    last_active: Instant,
    idle: Duration,
    now: Instant,
    owes: impl FnOnce() -> Option<Instant>,
) -> (Instant, bool) {
    let due = last_active + idle;
    if now < due {
        return (due, false);
    }
    match owes() {
        Some(since) => (due.max(since + idle), true),
        None => (due, false),
    }
}

#[cfg(test)]
mod tests {
    use super::idle_due;
    use std::time::{Duration, Instant};

    #[test]
    fn bytes_the_kernel_relay_owes_hold_an_idle_close_for_one_period_from_when_first_owed() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(2);
        let s = Duration::from_secs;
        let never = || -> Option<Instant> { panic!("asked before the idle period was over") };
        assert_eq!(idle_due(t0, idle, t0 + s(1), never), (t0 + idle, false));
        assert_eq!(idle_due(t0, idle, t0 + idle, || None), (t0 + idle, false));
        // First owed at the first look after the period (late: 3 s).
        let first = t0 + s(3);
        assert_eq!(
            idle_due(t0, idle, first, || Some(first)),
            (first + idle, true)
        );
        // Looked at again before that: still held.
        let later = t0 + s(4);
        assert_eq!(
            idle_due(t0, idle, later, || Some(first)),
            (first + idle, true)
        );
        // Still owed at the deadline: due, with resets; delivered by then
        // (owed no more): a plain idle close.
        let end = first + idle;
        assert_eq!(idle_due(t0, idle, end, || Some(first)), (end, true));
        assert_eq!(idle_due(t0, idle, end, || None), (t0 + idle, false));
    }
}
