//! Owns the unit tests of `metrics.rs`: the names, labels and values of both
//! formats for a hand-made snapshot.

use super::*;
use crate::stats::{ListenRow, ServerRow, WorkerRow};

fn snapshot() -> Status {
    Status {
        dns: Vec::new(),
        version: "9.8.7".into(),
        master_pid: 10,
        generation: 3,
        phase: "running".into(),
        uptime_secs: 42,
        config: "/etc/lbctl/lbctl.toml".into(),
        workers_configured: 1,
        workers: vec![WorkerRow {
            slot: 0,
            pid: 4242,
            generation: 3,
            state: "running".into(),
            memory_kb: 2,
            active: 1,
            total: 5,
            bytes_in: 2048,
            bytes_out: 10,
            errors: 1,
            restarts: 2,
            requests: 7,
            responses: Classes::from_counts([0, 6, 0, 0, 1]),
            reused: 4,
            access_log_dropped: 3,
            retries: 1,
        }],
        listens: vec![ListenRow {
            name: "web".into(),
            bind: "127.0.0.1:8080".into(),
            balance: "round_robin".into(),
            queued: 2,
            refused: 3,
            limited: 0,
            proxy: None,
            mode: "http".into(),
            requests: 7,
            responses: Classes::from_counts([0, 6, 0, 0, 1]),
            local: Classes::from_counts([0, 0, 0, 0, 1]),
            dataplane: String::new(),
            servers: vec![ServerRow {
                name: "a\"b".into(),
                addr: "127.0.0.1:6001".into(),
                state: "disabled".into(),
                check: "ok".into(),
                since_secs: 3,
                checks_ok: 4,
                checks_failed: 0,
                weight: 2,
                backup: false,
                active: 1,
                total: 5,
                failures: 6,
                pool: Some("api".into()),
                requests: 6,
                responses: Classes::from_counts([0, 6, 0, 0, 0]),
            }],
            tls_certificates: Vec::new(),
        }],
    }
}

const FIGURES: Figures = Figures {
    reloads_ok: 2,
    reloads_failed: 1,
};

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "no line {line:?} in:\n{text}"
    );
}

#[test]
fn prometheus_text_names_every_figure_with_its_labels() {
    let t = render(snapshot(), FIGURES, false);
    has(&t, "# TYPE lbctl_build_info gauge");
    has(&t, "lbctl_build_info{version=\"9.8.7\"} 1");
    has(&t, "lbctl_generation 3");
    has(&t, "lbctl_phase{phase=\"running\"} 1");
    has(&t, "lbctl_phase{phase=\"stopping\"} 0");
    has(&t, "lbctl_uptime_seconds 42");
    has(&t, "# TYPE lbctl_reloads_total counter");
    has(&t, "lbctl_reloads_total{result=\"ok\"} 2");
    has(&t, "lbctl_reloads_total{result=\"failed\"} 1");
    let w = "slot=\"0\",pid=\"4242\",generation=\"3\"";
    has(
        &t,
        &format!("lbctl_worker_state{{{w},state=\"running\"}} 1"),
    );
    has(
        &t,
        &format!("lbctl_worker_resident_memory_bytes{{{w}}} 2048"),
    );
    has(&t, &format!("lbctl_worker_active_connections{{{w}}} 1"));
    has(&t, &format!("lbctl_worker_connections_total{{{w}}} 5"));
    has(
        &t,
        &format!("lbctl_worker_received_bytes_total{{{w}}} 2048"),
    );
    has(&t, &format!("lbctl_worker_sent_bytes_total{{{w}}} 10"));
    has(&t, &format!("lbctl_worker_errors_total{{{w}}} 1"));
    has(&t, &format!("lbctl_worker_restarts_total{{{w}}} 2"));
    has(&t, &format!("lbctl_worker_http_requests_total{{{w}}} 7"));
    has(
        &t,
        &format!("lbctl_worker_http_reused_requests_total{{{w}}} 4"),
    );
    has(&t, &format!("lbctl_worker_http_retries_total{{{w}}} 1"));
    has(
        &t,
        &format!("lbctl_access_log_dropped_lines_total{{{w}}} 3"),
    );
    has(
        &t,
        &format!("lbctl_worker_http_responses_total{{{w},code=\"5xx\"}} 1"),
    );
    has(
        &t,
        "lbctl_listen_info{listen=\"web\",bind=\"127.0.0.1:8080\",mode=\"http\",balance=\"round_robin\"} 1",
    );
    has(&t, "lbctl_listen_queued_connections{listen=\"web\"} 2");
    has(
        &t,
        "lbctl_listen_refused_connections_total{listen=\"web\"} 3",
    );
    has(&t, "lbctl_listen_http_requests_total{listen=\"web\"} 7");
    has(
        &t,
        "lbctl_listen_http_responses_total{listen=\"web\",code=\"2xx\"} 6",
    );
    has(
        &t,
        "lbctl_listen_http_local_responses_total{listen=\"web\",code=\"5xx\"} 1",
    );
    // Label values are escaped.
    let s = "listen=\"web\",server=\"a\\\"b\",pool=\"api\"";
    has(
        &t,
        &format!("lbctl_server_info{{{s},addr=\"127.0.0.1:6001\",backup=\"false\"}} 1"),
    );
    has(&t, &format!("lbctl_server_up{{{s}}} 0"));
    has(
        &t,
        &format!("lbctl_server_state{{{s},state=\"disabled\"}} 1"),
    );
    has(&t, &format!("lbctl_server_state{{{s},state=\"up\"}} 0"));
    has(&t, &format!("lbctl_server_weight{{{s}}} 2"));
    has(&t, &format!("lbctl_server_active_connections{{{s}}} 1"));
    has(&t, &format!("lbctl_server_state_age_seconds{{{s}}} 3"));
    has(
        &t,
        &format!("lbctl_server_health_checks_passed_in_row{{{s}}} 4"),
    );
    has(&t, &format!("lbctl_server_connections_total{{{s}}} 5"));
    has(&t, &format!("lbctl_server_connect_failures_total{{{s}}} 6"));
    has(&t, &format!("lbctl_server_http_requests_total{{{s}}} 6"));
    has(
        &t,
        &format!("lbctl_server_http_responses_total{{{s},code=\"2xx\"}} 6"),
    );
    assert!(!t.contains("# EOF"), "{t}");
}

#[test]
fn openmetrics_has_unit_and_eof_lines_and_the_same_samples() {
    let t = render(snapshot(), FIGURES, true);
    has(&t, "# TYPE lbctl_build info");
    has(&t, "# TYPE lbctl_server_connections counter");
    has(&t, "# TYPE lbctl_worker_received_bytes counter");
    has(&t, "# UNIT lbctl_worker_received_bytes bytes");
    has(&t, "lbctl_reloads_total{result=\"ok\"} 2");
    assert!(t.ends_with("# EOF\n"), "{t}");
}

#[test]
fn a_pool_less_server_is_in_the_default_pool() {
    let mut st = snapshot();
    st.listens[0].servers[0].pool = None;
    let t = render(st, FIGURES, false);
    assert!(
        t.contains("lbctl_server_up{listen=\"web\",server=\"a\\\"b\",pool=\"default\"} 0"),
        "{t}"
    );
}
