//! Owns the `status` report: the [`Status`] snapshot the master builds from
//! its slot table and the shared regions, its JSON form (`status --json`), and
//! the Workerman-style text table (`status`). Also the connection listing
//! type of `lbctl connections`.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

mod dns;
pub use dns::DnsRow;

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// lbctl version of the running master.
    pub version: String,
    /// The master's pid.
    pub master_pid: u32,
    /// The generation serving new connections.
    pub generation: u64,
    /// `starting`, `running`, `reloading`, `stopping`.
    pub phase: String,
    /// Seconds since the master started.
    pub uptime_secs: u64,
    /// Config file of the serving generation.
    pub config: String,
    /// `workers` of the serving generation.
    pub workers_configured: usize,
    /// One row per worker process (serving and draining).
    pub workers: Vec<WorkerRow>,
    /// One entry per listen of the serving generation.
    pub listens: Vec<ListenRow>,
    /// One entry per server found by DNS (`resolve`) of the serving generation.
    #[serde(default)]
    pub dns: Vec<DnsRow>,
}

/// One worker process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerRow {
    /// Slot index.
    pub slot: usize,
    /// Process id (0 while being restarted).
    pub pid: u32,
    /// Generation it serves.
    pub generation: u64,
    /// `starting`, `running`, `draining`, `busy` (no heartbeat for 3s),
    /// `restarting` (crashed, waiting for its back-off).
    pub state: String,
    /// Resident memory in KiB.
    pub memory_kb: u64,
    /// Open client connections.
    pub active: u64,
    /// Client connections accepted.
    pub total: u64,
    /// Bytes client → server.
    pub bytes_in: u64,
    /// Bytes server → client.
    pub bytes_out: u64,
    /// Connections ended by an error.
    pub errors: u64,
    /// Times this slot was respawned after a crash.
    pub restarts: u64,
    /// HTTP requests answered (by servers or by lbctl).
    #[serde(default)]
    pub requests: u64,
    /// HTTP responses by class.
    #[serde(default)]
    pub responses: Classes,
    /// HTTP requests sent over a reused (pooled) server connection.
    #[serde(default)]
    pub reused: u64,
    /// HTTP requests sent again to another server after one failed.
    #[serde(default)]
    pub retries: u64,
    /// Access-log lines dropped (disk full or too slow).
    #[serde(default)]
    pub access_log_dropped: u64,
}

/// HTTP responses by status class.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Classes {
    /// 1xx (interim answers are not counted; 101 is).
    #[serde(rename = "1xx")]
    pub c1: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub c2: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub c3: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub c4: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub c5: u64,
}

impl Classes {
    /// From counts indexed 0 = 1xx … 4 = 5xx.
    pub fn from_counts(c: [u64; 5]) -> Classes {
        Classes {
            c1: c[0],
            c2: c[1],
            c3: c[2],
            c4: c[3],
            c5: c[4],
        }
    }

    /// Adds another tally.
    pub fn add(&mut self, o: &Classes) {
        self.c1 += o.c1;
        self.c2 += o.c2;
        self.c3 += o.c3;
        self.c4 += o.c4;
        self.c5 += o.c5;
    }

    /// All responses.
    pub fn total(&self) -> u64 {
        self.c1 + self.c2 + self.c3 + self.c4 + self.c5
    }

    fn words(&self) -> String {
        format!(
            "2xx {}, 3xx {}, 4xx {}, 5xx {}",
            self.c2, self.c3, self.c4, self.c5
        )
    }
}

/// One listen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListenRow {
    /// Listen name.
    pub name: String,
    /// Bound address.
    pub bind: String,
    /// Strategy name.
    pub balance: String,
    /// Connections waiting for a server below `max_conns`.
    pub queued: u64,
    /// Connections closed because every server and the queue were full.
    pub refused: u64,
    /// Connections refused by `max_conns_per_client` or `rate`.
    #[serde(default)]
    pub limited: u64,
    /// `accept_proxy = true`: the PROXY headers read and refused; `None`
    /// (JSON `null`) when the listen expects none.
    #[serde(default)]
    pub proxy: Option<ProxyHeaders>,
    /// `tcp` or `http`.
    #[serde(default)]
    pub mode: String,
    /// HTTP requests answered on this listen (servers' and lbctl's own).
    #[serde(default)]
    pub requests: u64,
    /// HTTP responses by class (servers' and lbctl's own).
    #[serde(default)]
    pub responses: Classes,
    /// HTTP answers lbctl gave itself (400, 408, 502, 503, 504 …) by class.
    #[serde(default)]
    pub local: Classes,
    /// How bytes move: `splice` (user space), `sockmap` (the kernel), or
    /// `splice (sockmap refused: EPERM)` where `sockmap` was asked for.
    #[serde(default)]
    pub dataplane: String,
    /// Servers in config order (named pools' servers after the listen's own).
    pub servers: Vec<ServerRow>,
    /// `tls.certs` in config order (none for a plain listen).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<CertRow>,
}

/// One certificate of a TLS listen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertRow {
    /// Its first DNS name (else its file).
    pub name: String,
    /// Every DNS name SNI picks it by.
    pub names: Vec<String>,
    /// The certificate file.
    pub cert: String,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// Seconds until it expires (negative once expired).
    pub expires_in_secs: i64,
}

/// The PROXY headers of a listen with `accept_proxy = true`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProxyHeaders {
    /// Headers read (the connection went on).
    pub accepted: u64,
    /// Connections closed: not a valid PROXY header.
    pub invalid: u64,
    /// Connections closed: no complete header within `timeouts.proxy`.
    pub timeout: u64,
    /// Connections closed by the client before its header was complete.
    pub closed: u64,
}

impl ProxyHeaders {
    /// Connections closed for their header, all reasons.
    pub fn refused(&self) -> u64 {
        self.invalid + self.timeout + self.closed
    }
}

/// One server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerRow {
    /// Name (its address when it has none).
    pub name: String,
    /// Address.
    pub addr: String,
    /// `up`, `down`, `disabled`, `draining`.
    pub state: String,
    /// Last health check result or reason of the state, in words.
    pub check: String,
    /// Seconds since the state last changed.
    pub since_secs: u64,
    /// Consecutive passed health checks.
    pub checks_ok: u32,
    /// Consecutive failed health checks.
    pub checks_failed: u32,
    /// Runtime weight.
    pub weight: u32,
    /// Used only when no primary is usable.
    pub backup: bool,
    /// Active connections (all workers).
    pub active: u64,
    /// Connections dispatched.
    pub total: u64,
    /// Failed connects.
    pub failures: u64,
    /// The named pool it belongs to (none: the listen's own servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// HTTP responses it gave.
    #[serde(default)]
    pub requests: u64,
    /// HTTP responses it gave, by class.
    #[serde(default)]
    pub responses: Classes,
}

/// One relayed connection (`lbctl connections`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnRow {
    /// Worker process holding it.
    pub worker_pid: u32,
    /// Listen name.
    pub listen: String,
    /// Client address.
    pub client: String,
    /// Server address (empty while none is picked).
    pub server: String,
    /// Bytes client → server.
    pub bytes_in: u64,
    /// Bytes server → client.
    pub bytes_out: u64,
    /// Seconds since accepted.
    pub age_secs: u64,
    /// `connecting`, `relaying`, `half-closed`, `queued`.
    pub state: String,
    /// `sockmap` while the kernel relays it (absent: user space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<String>,
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn uptime(secs: u64) -> String {
    format!(
        "{} days {:02}:{:02}:{:02}",
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn rule(title: &str, width: usize) -> String {
    let pad = width.saturating_sub(title.len() + 2);
    format!(
        "{} {} {}",
        "-".repeat(pad / 2),
        title,
        "-".repeat(pad - pad / 2)
    )
}

/// Renders a table: a header row and rows, columns padded to fit.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(s, "{:<w$}  ", c, w = widths[i]);
        }
        s.trim_end().to_string()
    };
    out.push_str(&line(header.to_vec()));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
}

impl Status {
    /// The Workerman-style text report.
    pub fn render(&self) -> String {
        const W: usize = 100;
        let mut out = String::new();
        out.push_str(&rule("LBCTL STATUS", W));
        out.push('\n');
        let _ = writeln!(
            out,
            "lbctl version: {}    master pid: {}    generation: {}    phase: {}",
            self.version, self.master_pid, self.generation, self.phase
        );
        let active: u64 = self.workers.iter().map(|w| w.active).sum();
        let total: u64 = self.workers.iter().map(|w| w.total).sum();
        let _ = writeln!(
            out,
            "run: {}    workers: {}    connections: {} active, {} total",
            uptime(self.uptime_secs),
            self.workers_configured,
            active,
            total
        );
        let _ = writeln!(out, "config: {}", self.config);
        let dropped: u64 = self.workers.iter().map(|w| w.access_log_dropped).sum();
        if dropped > 0 {
            let _ = writeln!(
                out,
                "access log: {dropped} lines dropped (the disk was full or too slow; see the log)"
            );
        }
        out.push_str(&rule("WORKERS", W));
        out.push('\n');
        let rows: Vec<Vec<String>> = self
            .workers
            .iter()
            .map(|w| {
                vec![
                    w.slot.to_string(),
                    w.pid.to_string(),
                    w.generation.to_string(),
                    format!("{:.1}M", w.memory_kb as f64 / 1024.0),
                    w.active.to_string(),
                    w.total.to_string(),
                    human_bytes(w.bytes_in),
                    human_bytes(w.bytes_out),
                    w.errors.to_string(),
                    w.restarts.to_string(),
                    w.requests.to_string(),
                    w.state.clone(),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "slot",
                "pid",
                "gen",
                "memory",
                "active",
                "total",
                "bytes_in",
                "bytes_out",
                "errors",
                "restarts",
                "requests",
                "state",
            ],
            &rows,
        );
        out.push_str(&rule("SERVERS", W));
        out.push('\n');
        let mut rows = Vec::new();
        for l in &self.listens {
            for s in &l.servers {
                let label = if s.name == s.addr {
                    s.addr.clone()
                } else {
                    format!("{} {}", s.name, s.addr)
                };
                rows.push(vec![
                    format!("{} ({}, {})", l.name, l.bind, l.balance),
                    match &s.pool {
                        Some(p) => format!("{p}/{label}"),
                        None => label,
                    },
                    if s.backup {
                        format!("{} (backup)", s.state)
                    } else {
                        s.state.clone()
                    },
                    s.weight.to_string(),
                    s.active.to_string(),
                    s.total.to_string(),
                    s.failures.to_string(),
                    s.requests.to_string(),
                    if s.checks_ok + s.checks_failed > 0 {
                        format!(
                            "{} ({}s; {} ok / {} failed in a row)",
                            s.check, s.since_secs, s.checks_ok, s.checks_failed
                        )
                    } else {
                        format!("{} ({}s)", s.check, s.since_secs)
                    },
                ]);
            }
        }
        table(
            &mut out,
            &[
                "listen", "server", "state", "weight", "active", "total", "failures", "requests",
                "check",
            ],
            &rows,
        );
        for l in &self.listens {
            if l.mode == "http" {
                let _ = writeln!(
                    out,
                    "{}: {} requests ({}); lbctl answered {} itself ({})",
                    l.name,
                    l.requests,
                    l.responses.words(),
                    l.local.total(),
                    l.local.words()
                );
            }
        }
        for l in &self.listens {
            if let Some(p) = &l.proxy {
                let _ = writeln!(
                    out,
                    "{}: {} PROXY headers read, {} connections closed for theirs (invalid {}, timeout {}, closed {})",
                    l.name,
                    p.accepted,
                    p.refused(),
                    p.invalid,
                    p.timeout,
                    p.closed
                );
            }
            if l.dataplane != "splice" && !l.dataplane.is_empty() {
                let _ = writeln!(out, "{}: dataplane: {}", l.name, l.dataplane);
            }
            for c in &l.tls_certificates {
                let _ = writeln!(
                    out,
                    "{}: certificate {} ({}) expires in {} days",
                    l.name,
                    c.name,
                    c.cert,
                    c.expires_in_secs.div_euclid(86_400)
                );
            }
        }
        for l in &self.listens {
            if l.limited > 0 {
                let _ = writeln!(
                    out,
                    "{}: {} refused by the per-client limits",
                    l.name, l.limited
                );
            }
            if l.queued > 0 || l.refused > 0 {
                let _ = writeln!(
                    out,
                    "{}: {} queued, {} refused (all servers full)",
                    l.name, l.queued, l.refused
                );
            }
        }
        for d in &self.dns {
            let _ = writeln!(out, "{}", d.line());
        }
        out
    }
}

/// Connections and requests per second per worker between two snapshots
/// (`status --watch`), matched by pid; workers new in `cur` count from 0.
pub fn render_rates(prev: &Status, cur: &Status, secs: f64) -> String {
    let secs = secs.max(0.001);
    let mut out = String::new();
    out.push_str(&rule("RATES", 100));
    out.push('\n');
    let mut rows = Vec::new();
    let (mut conns, mut reqs) = (0.0, 0.0);
    for w in &cur.workers {
        let before = prev.workers.iter().find(|p| p.pid == w.pid && w.pid != 0);
        let c = w.total.saturating_sub(before.map_or(0, |b| b.total)) as f64 / secs;
        let r = w.requests.saturating_sub(before.map_or(0, |b| b.requests)) as f64 / secs;
        conns += c;
        reqs += r;
        rows.push(vec![
            w.pid.to_string(),
            format!("{c:.1}"),
            format!("{r:.1}"),
        ]);
    }
    rows.push(vec![
        "all".to_string(),
        format!("{conns:.1}"),
        format!("{reqs:.1}"),
    ]);
    table(&mut out, &["pid", "conns/s", "requests/s"], &rows);
    out
}

/// Renders `lbctl connections` as text.
pub fn render_connections(rows: &[ConnRow]) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|c| {
            vec![
                c.worker_pid.to_string(),
                c.listen.clone(),
                c.client.clone(),
                c.server.clone(),
                human_bytes(c.bytes_in),
                human_bytes(c.bytes_out),
                format!("{}s", c.age_secs),
                match &c.dataplane {
                    Some(d) => format!("{} ({d})", c.state),
                    None => c.state.clone(),
                },
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "worker",
            "listen",
            "client",
            "server",
            "bytes_in",
            "bytes_out",
            "age",
            "state",
        ],
        &rows,
    );
    let _ = writeln!(out, "{} connections", rows.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_names_workers_and_servers() {
        let s = Status {
            dns: Vec::new(),
            version: "0.1.0".into(),
            master_pid: 10,
            generation: 2,
            phase: "running".into(),
            uptime_secs: 90061,
            config: "/etc/lbctl/lbctl.toml".into(),
            workers_configured: 1,
            workers: vec![WorkerRow {
                slot: 0,
                pid: 4242,
                generation: 2,
                state: "running".into(),
                memory_kb: 2048,
                active: 1,
                total: 5,
                bytes_in: 2048,
                bytes_out: 10,
                errors: 0,
                restarts: 0,
                requests: 7,
                responses: Classes::from_counts([0, 6, 0, 0, 1]),
                reused: 4,
                retries: 1,
                access_log_dropped: 0,
            }],
            listens: vec![ListenRow {
                name: "web".into(),
                bind: "127.0.0.1:8080".into(),
                balance: "round_robin".into(),
                queued: 0,
                refused: 0,
                limited: 0,
                proxy: None,
                mode: "http".into(),
                requests: 7,
                responses: Classes::from_counts([0, 6, 0, 0, 1]),
                local: Classes::from_counts([0, 0, 0, 0, 1]),
                dataplane: String::new(),
                servers: vec![ServerRow {
                    name: "127.0.0.1:6001".into(),
                    addr: "127.0.0.1:6001".into(),
                    state: "up".into(),
                    check: "ok".into(),
                    since_secs: 3,
                    checks_ok: 0,
                    checks_failed: 0,
                    weight: 1,
                    backup: false,
                    active: 1,
                    total: 5,
                    failures: 0,
                    pool: None,
                    requests: 6,
                    responses: Classes::from_counts([0, 6, 0, 0, 0]),
                }],
                tls_certificates: Vec::new(),
            }],
        };
        let text = s.render();
        assert!(text.contains("4242"), "{text}");
        assert!(text.contains("127.0.0.1:6001"), "{text}");
        assert!(text.contains("1 days 01:01:01"), "{text}");
        assert!(text.contains("2.0K"), "{text}");
        assert!(
            text.contains("web: 7 requests (2xx 6, 3xx 0, 4xx 0, 5xx 1); lbctl answered 1 itself"),
            "{text}"
        );
        let json = serde_json::to_string(&s).expect("json");
        let back: Status = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, s);
    }
}
