//! Owns turning the master's slot tables and shared regions into a
//! [`Status`] snapshot (the answer to `lbctl status`): worker rows with pid,
//! memory (from /proc), counters and state (`busy` when a worker's heartbeat
//! is older than [`BUSY_AFTER_MS`]); server rows of the serving generation.

use super::Master;
use super::supervisor::WorkerState;
use crate::config::Mode;
use crate::shm::{self, ADMIN_DISABLED, ADMIN_DRAINING, HEALTH_DOWN};
use crate::stats::{Classes, ListenRow, ServerRow, Status, WorkerRow};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// A running worker whose loop has not turned for this long shows as busy.
pub const BUSY_AFTER_MS: u64 = 3000;

/// Resident set size of a process in KiB (0 if unknown).
pub fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_kb())
}

/// The page size in KiB (4 on x86-64, 16 or 64 on some arm64 kernels).
fn page_kb() -> u64 {
    static PAGE_KB: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE_KB.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4, |b| (b as u64 / 1024).max(1))
    })
}

/// The status report.
pub fn status(m: &Master, now: Instant) -> Status {
    let now_ms = shm::now_ms();
    let mut workers = Vec::new();
    for g in &m.gens {
        for (k, s) in g.slots.iter().enumerate() {
            if s.state == WorkerState::Exited {
                continue;
            }
            let cell = g.region.slot(k);
            let mut state = s.state.name().to_string();
            if s.state == WorkerState::Running
                && now_ms.saturating_sub(cell.heartbeat_ms.load(Relaxed)) > BUSY_AFTER_MS
            {
                state = "busy".to_string();
            }
            let pid = s.pid.map_or(0, |p| p.as_raw());
            workers.push(WorkerRow {
                slot: k,
                pid: pid as u32,
                generation: g.number,
                state,
                memory_kb: if pid > 0 { rss_kb(pid) } else { 0 },
                active: cell.active.load(Relaxed),
                total: cell.total.load(Relaxed),
                bytes_in: cell.bytes_in.load(Relaxed),
                bytes_out: cell.bytes_out.load(Relaxed),
                errors: cell.errors.load(Relaxed),
                restarts: s.restarts,
                requests: cell.requests.load(Relaxed),
                responses: Classes::from_counts(cell.classes.each_ref().map(|c| c.load(Relaxed))),
                reused: cell.reused.load(Relaxed),
                retries: cell.retries.load(Relaxed),
                access_log_dropped: cell.access_dropped.load(Relaxed),
            });
        }
    }
    let serving = m
        .gens
        .iter()
        .find(|g| g.number == m.serving)
        .or_else(|| m.gens.last());
    let mut listens = Vec::new();
    let mut workers_configured = 0;
    let dns = serving.map_or_else(Vec::new, |g| m.dns_rows(&g.config, &g.region));
    if let Some(g) = serving {
        workers_configured = g.config.master.workers.get();
        let mut idx = 0;
        for l in &g.config.listens {
            let first = g.region.server(idx);
            let mut row = ListenRow {
                name: l.name.clone(),
                bind: l.bind.to_string(),
                balance: l.balance.name().to_string(),
                queued: g.region.server_queued(idx),
                refused: first.refused.load(Relaxed),
                limited: first.limited.load(Relaxed),
                proxy: l.accept_proxy.map(|_| crate::stats::ProxyHeaders {
                    accepted: first.proxy_accepted.load(Relaxed),
                    invalid: first.proxy_refused[0].load(Relaxed),
                    timeout: first.proxy_refused[1].load(Relaxed),
                    closed: first.proxy_refused[2].load(Relaxed),
                }),
                mode: match l.mode {
                    Mode::Tcp => "tcp",
                    Mode::Http => "http",
                }
                .to_string(),
                requests: 0,
                responses: Classes::default(),
                local: Classes::from_counts(std::array::from_fn(|c| {
                    g.region.server_class(idx, c, true)
                })),
                dataplane: crate::worker::sockmap::plane::describe(
                    l.dataplane == crate::config::Dataplane::Sockmap,
                    first.dataplane.load(Relaxed),
                ),
                servers: Vec::new(),
                tls_certificates: crate::config::tls::cert_rows(l.tls.as_deref()),
            };
            row.responses = row.local;
            for s in &l.servers {
                let cell = g.region.server(idx);
                // An empty DNS slot is no server yet: no row.
                let member = cell.member.load(Relaxed);
                if member == crate::shm::MEMBER_EMPTY {
                    idx += 1;
                    continue;
                }
                let passive = cell.down_until_ms.load(Relaxed) > now_ms;
                let state = match cell.admin.load(Relaxed) {
                    ADMIN_DISABLED => "disabled",
                    ADMIN_DRAINING => "draining",
                    _ if member == crate::shm::MEMBER_DRAINING => "draining",
                    _ if cell.health.load(Relaxed) == HEALTH_DOWN || passive => "down",
                    _ => "up",
                };
                let note = &g.notes[idx];
                row.servers.push(ServerRow {
                    name: s.label(),
                    addr: cell.member_addr().unwrap_or(s.addr).to_string(),
                    state: state.to_string(),
                    check: if passive {
                        super::health_sync::passive_note(l)
                    } else {
                        note.check.clone()
                    },
                    since_secs: now.duration_since(note.since).as_secs(),
                    checks_ok: note.ok_in_row,
                    checks_failed: note.failed_in_row,
                    weight: cell.weight.load(Relaxed),
                    backup: s.backup || cell.member_backup.load(Relaxed) == 1,
                    active: g.region.server_active(idx),
                    total: g.region.server_total(idx),
                    failures: g.region.server_failures(idx),
                    pool: s.pool.clone(),
                    requests: g.region.server_requests(idx),
                    responses: Classes::from_counts(std::array::from_fn(|c| {
                        g.region.server_class(idx, c, false)
                    })),
                });
                if let Some(srv) = row.servers.last() {
                    row.responses.add(&srv.responses);
                }
                idx += 1;
            }
            row.requests = row.responses.total();
            listens.push(row);
        }
    }
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        master_pid: m.pid.as_raw() as u32,
        generation: m.serving,
        phase: m.phase.name().to_string(),
        uptime_secs: now.duration_since(m.started).as_secs(),
        config: m.config_path.display().to_string(),
        workers_configured,
        workers,
        listens,
        dns,
    }
}
