//! Owns `GET /metrics`: one [`Status`] snapshot (the figures of `lbctl
//! status`) and the master's own counters, encoded by `prometheus-client` in
//! the Prometheus text format or in OpenMetrics. The snapshot is a
//! [`Collector`] registered in a registry made for the one scrape: the figures
//! live in the shared region, not in the crate's metric objects, so nothing is
//! kept between scrapes. Every name starts with `lbctl_`; counters end in
//! `_total`, units are bytes and seconds.

use crate::config::validate::DEFAULT_POOL;
use crate::stats::{Classes, Status};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;

/// `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// `Content-Type` of the OpenMetrics text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the master counts itself, beside the status report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Reloads that brought a new generation into service.
    pub reloads_ok: u64,
    /// Reloads refused (bad file, bind failure) or whose workers did not start.
    pub reloads_failed: u64,
}

/// Encodes the snapshot; `openmetrics` picks the format.
pub fn render(status: Status, figures: Figures, openmetrics: bool) -> String {
    let mut registry = Registry::with_prefix("lbctl");
    registry.register(
        "build",
        "The running lbctl master's version",
        Info::new(vec![("version", status.version.clone())]),
    );
    registry.register_collector(Box::new(Snapshot { status, figures }));
    let mut out = String::new();
    let done = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
    };
    // Writing to a String cannot fail; a collector error would be a bug here.
    if done.is_err() {
        out.clear();
    }
    out
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct Snapshot {
    status: Status,
    figures: Figures,
}

/// One metric family: its descriptor, then one sample per label set.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    rows: Vec<(Labels, M)>,
    kind: &M,
) -> fmt::Result {
    // Help texts end in a period, as the registry writes the build info's.
    let help = format!("{help}.");
    let mut metric = enc.encode_descriptor(name, &help, unit.as_ref(), kind.metric_type())?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    rows: Vec<(Labels, u64)>,
) -> fmt::Result {
    let rows = rows
        .into_iter()
        .map(|(l, v)| (l, ConstCounter::new(v)))
        .collect();
    family(enc, name, help, unit, rows, &ConstCounter::new(0u64))
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    rows: Vec<(Labels, i64)>,
) -> fmt::Result {
    let rows = rows
        .into_iter()
        .map(|(l, v)| (l, ConstGauge::new(v)))
        .collect();
    family(enc, name, help, unit, rows, &ConstGauge::new(0i64))
}

/// `labels` once per class, with `code="1xx"` … `code="5xx"`.
fn by_class(labels: &Labels, c: &Classes) -> Vec<(Labels, u64)> {
    [
        ("1xx", c.c1),
        ("2xx", c.c2),
        ("3xx", c.c3),
        ("4xx", c.c4),
        ("5xx", c.c5),
    ]
    .into_iter()
    .map(|(code, n)| (with(labels, "code", code), n))
    .collect()
}

/// `labels` plus `key` once per value of `states`, valued 1 for `current`,
/// else 0 (the usual shape of an enum in Prometheus).
fn one_of(
    labels: &Labels,
    key: &'static str,
    states: &[&str],
    current: &str,
) -> Vec<(Labels, i64)> {
    states
        .iter()
        .map(|s| (with(labels, key, s), i64::from(*s == current)))
        .collect()
}

fn with(labels: &Labels, key: &'static str, value: &str) -> Labels {
    let mut l = labels.clone();
    l.push((key, value.to_string()));
    l
}

fn gauge_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Snapshot {
    fn master(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let s = &self.status;
        let none = Labels::new;
        gauges(
            enc,
            "generation",
            "The configuration generation serving new connections",
            None,
            vec![(none(), gauge_of(s.generation))],
        )?;
        let phases = ["starting", "running", "reloading", "stopping"];
        let phase = one_of(&none(), "phase", &phases, &s.phase);
        gauges(
            enc,
            "phase",
            "The master's phase (1 = current)",
            None,
            phase,
        )?;
        gauges(
            enc,
            "uptime",
            "Time since the master started",
            Some(Unit::Seconds),
            vec![(none(), gauge_of(s.uptime_secs))],
        )?;
        gauges(
            enc,
            "configured_workers",
            "Worker processes of the serving generation's config",
            None,
            vec![(none(), gauge_of(s.workers_configured as u64))],
        )?;
        let f = self.figures;
        counters(
            enc,
            "reloads",
            "Reloads since the master started, by result (failed: file rejected, bind \
             failure, or workers not started in time)",
            None,
            vec![
                (vec![("result", "ok".to_string())], f.reloads_ok),
                (vec![("result", "failed".to_string())], f.reloads_failed),
            ],
        )
    }

    fn workers(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let ws = &self.status.workers;
        let key = |w: &crate::stats::WorkerRow| -> Labels {
            vec![
                ("slot", w.slot.to_string()),
                ("pid", w.pid.to_string()),
                ("generation", w.generation.to_string()),
            ]
        };
        let states = ["starting", "running", "draining", "busy", "restarting"];
        let rows = ws
            .iter()
            .flat_map(|w| one_of(&key(w), "state", &states, &w.state))
            .collect();
        gauges(
            enc,
            "worker_state",
            "Worker process state (1 = current; busy: no heartbeat for 3s)",
            None,
            rows,
        )?;
        type Field = fn(&crate::stats::WorkerRow) -> u64;
        let gauge_fields: [(&str, &str, Option<Unit>, Field); 2] = [
            (
                "worker_resident_memory",
                "Resident memory of the worker process",
                Some(Unit::Bytes),
                |w| w.memory_kb * 1024,
            ),
            (
                "worker_active_connections",
                "Open client connections",
                None,
                |w| w.active,
            ),
        ];
        for (name, help, unit, get) in gauge_fields {
            let rows = ws.iter().map(|w| (key(w), gauge_of(get(w)))).collect();
            gauges(enc, name, help, unit, rows)?;
        }
        let counter_fields: [(&str, &str, Option<Unit>, Field); 9] = [
            (
                "worker_connections",
                "Client connections accepted",
                None,
                |w| w.total,
            ),
            (
                "worker_received",
                "Bytes read from clients (client to server)",
                Some(Unit::Bytes),
                |w| w.bytes_in,
            ),
            (
                "worker_sent",
                "Bytes written to clients (server to client)",
                Some(Unit::Bytes),
                |w| w.bytes_out,
            ),
            (
                "worker_errors",
                "Connections ended by an error",
                None,
                |w| w.errors,
            ),
            (
                "worker_restarts",
                "Times the slot was respawned after a crash",
                None,
                |w| w.restarts,
            ),
            (
                "worker_http_requests",
                "HTTP requests answered (by servers or by lbctl)",
                None,
                |w| w.requests,
            ),
            (
                "worker_http_reused_requests",
                "HTTP requests sent over a reused (pooled) server connection",
                None,
                |w| w.reused,
            ),
            (
                "worker_http_retries",
                "HTTP requests sent again to another server after one failed",
                None,
                |w| w.retries,
            ),
            (
                "access_log_dropped_lines",
                "Access-log lines dropped because the disk was full or too slow",
                None,
                |w| w.access_log_dropped,
            ),
        ];
        for (name, help, unit, get) in counter_fields {
            let rows = ws.iter().map(|w| (key(w), get(w))).collect();
            counters(enc, name, help, unit, rows)?;
        }
        let rows = ws
            .iter()
            .flat_map(|w| by_class(&key(w), &w.responses))
            .collect();
        counters(
            enc,
            "worker_http_responses",
            "HTTP responses by status class",
            None,
            rows,
        )
    }

    fn listens(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let ls = &self.status.listens;
        let key = |name: &str| -> Labels { vec![("listen", name.to_string())] };
        let mut info = enc.encode_descriptor(
            "listen",
            "A listen of the serving generation.",
            None,
            prometheus_client::metrics::MetricType::Info,
        )?;
        for l in ls {
            let labels: Labels = vec![
                ("listen", l.name.clone()),
                ("bind", l.bind.clone()),
                ("mode", l.mode.clone()),
                ("balance", l.balance.clone()),
            ];
            info.encode_info(&labels)?;
        }
        let rows = ls
            .iter()
            .map(|l| (key(&l.name), gauge_of(l.queued)))
            .collect();
        gauges(
            enc,
            "listen_queued_connections",
            "Connections waiting for a server below max_conns",
            None,
            rows,
        )?;
        let rows = ls.iter().map(|l| (key(&l.name), l.refused)).collect();
        counters(
            enc,
            "listen_refused_connections",
            "Connections closed because every server and the queue were full",
            None,
            rows,
        )?;
        let rows = ls.iter().map(|l| (key(&l.name), l.limited)).collect();
        counters(
            enc,
            "listen_limited_connections",
            "Connections refused by max_conns_per_client or rate",
            None,
            rows,
        )?;
        let with_proxy = || ls.iter().filter_map(|l| l.proxy.map(|p| (key(&l.name), p)));
        let rows = with_proxy().map(|(k, p)| (k, p.accepted)).collect();
        counters(
            enc,
            "listen_proxy_headers",
            "PROXY protocol headers read from clients (accept_proxy)",
            None,
            rows,
        )?;
        let rows = with_proxy()
            .flat_map(|(k, p)| {
                [
                    ("invalid", p.invalid),
                    ("timeout", p.timeout),
                    ("closed", p.closed),
                ]
                .map(|(why, n)| (with(&k, "reason", why), n))
            })
            .collect();
        counters(
            enc,
            "listen_proxy_header_errors",
            "Connections closed for their PROXY header (accept_proxy), by reason",
            None,
            rows,
        )?;
        let rows = ls
            .iter()
            .flat_map(|l| {
                l.tls_certificates.iter().map(|c| {
                    let labels: Labels = vec![
                        ("listen", l.name.clone()),
                        ("name", c.name.clone()),
                        ("cert", c.cert.clone()),
                    ];
                    (labels, c.not_after)
                })
            })
            .collect();
        gauges(
            enc,
            "tls_certificate_expiry",
            "When each TLS certificate of a listen expires (notAfter, Unix time)",
            Some(Unit::Seconds),
            rows,
        )?;
        let rows = ls.iter().map(|l| (key(&l.name), l.requests)).collect();
        counters(
            enc,
            "listen_http_requests",
            "HTTP requests answered on the listen (by servers and by lbctl)",
            None,
            rows,
        )?;
        let rows = ls
            .iter()
            .flat_map(|l| by_class(&key(&l.name), &l.responses))
            .collect();
        counters(
            enc,
            "listen_http_responses",
            "HTTP responses by status class, the servers' and lbctl's own",
            None,
            rows,
        )?;
        let rows = ls
            .iter()
            .flat_map(|l| by_class(&key(&l.name), &l.local))
            .collect();
        counters(
            enc,
            "listen_http_local_responses",
            "HTTP answers lbctl gave itself (400, 408, 502, 503, 504 ...) by status class",
            None,
            rows,
        )
    }

    fn servers(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let all: Vec<(Labels, &crate::stats::ServerRow)> = self
            .status
            .listens
            .iter()
            .flat_map(|l| {
                l.servers.iter().map(|s| {
                    let pool = s.pool.as_deref().unwrap_or(DEFAULT_POOL).to_string();
                    let labels = vec![
                        ("listen", l.name.clone()),
                        ("server", s.name.clone()),
                        ("pool", pool),
                    ];
                    (labels, s)
                })
            })
            .collect();
        let mut info = enc.encode_descriptor(
            "server",
            "A server of the serving generation.",
            None,
            prometheus_client::metrics::MetricType::Info,
        )?;
        for (l, s) in &all {
            let labels = with(&with(l, "addr", &s.addr), "backup", &s.backup.to_string());
            info.encode_info(&labels)?;
        }
        let rows = all
            .iter()
            .map(|(l, s)| (l.clone(), i64::from(s.state == "up")))
            .collect();
        gauges(
            enc,
            "server_up",
            "1 when the server takes new connections (up), else 0",
            None,
            rows,
        )?;
        let states = ["up", "down", "disabled", "draining"];
        let rows = all
            .iter()
            .flat_map(|(l, s)| one_of(l, "state", &states, &s.state))
            .collect();
        gauges(
            enc,
            "server_state",
            "Server state (1 = current)",
            None,
            rows,
        )?;
        type Field = fn(&crate::stats::ServerRow) -> u64;
        let gauge_fields: [(&str, &str, Option<Unit>, Field); 5] = [
            ("server_weight", "Runtime weight", None, |s| {
                u64::from(s.weight)
            }),
            (
                "server_active_connections",
                "Active connections (all workers)",
                None,
                |s| s.active,
            ),
            (
                "server_state_age",
                "Time since the server's state last changed",
                Some(Unit::Seconds),
                |s| s.since_secs,
            ),
            (
                "server_health_checks_passed_in_row",
                "Consecutive passed health checks",
                None,
                |s| u64::from(s.checks_ok),
            ),
            (
                "server_health_checks_failed_in_row",
                "Consecutive failed health checks",
                None,
                |s| u64::from(s.checks_failed),
            ),
        ];
        for (name, help, unit, get) in gauge_fields {
            let rows = all
                .iter()
                .map(|(l, s)| (l.clone(), gauge_of(get(s))))
                .collect();
            gauges(enc, name, help, unit, rows)?;
        }
        let counter_fields: [(&str, &str, Field); 3] = [
            (
                "server_connections",
                "Connections dispatched to the server",
                |s| s.total,
            ),
            (
                "server_connect_failures",
                "Failed connects to the server",
                |s| s.failures,
            ),
            (
                "server_http_requests",
                "HTTP requests the server answered",
                |s| s.requests,
            ),
        ];
        for (name, help, get) in counter_fields {
            let rows = all.iter().map(|(l, s)| (l.clone(), get(s))).collect();
            counters(enc, name, help, None, rows)?;
        }
        let rows = all
            .iter()
            .flat_map(|(l, s)| by_class(l, &s.responses))
            .collect();
        counters(
            enc,
            "server_http_responses",
            "HTTP responses the server gave, by status class",
            None,
            rows,
        )
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.master(&mut enc)?;
        self.workers(&mut enc)?;
        self.listens(&mut enc)?;
        self.servers(&mut enc)?;
        self.dns(&mut enc)
    }
}

#[path = "metrics_dns.rs"]
mod dns;

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
