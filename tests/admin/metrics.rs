//! Owns the `/metrics` tests: the answer is parsed by the Prometheus Python
//! client's own parsers (`tests/admin/parse_metrics.py`, Prometheus text and
//! OpenMetrics), and the counts it reads are the connections the test sent.

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

use super::{JsonBody, Setup, servers};
use crate::util::manifest_path;

/// One family as the parser read it.
#[derive(Debug)]
struct Family {
    kind: String,
    samples: Vec<(String, HashMap<String, String>, f64)>,
}

/// Runs the Python parser over `text`; `None` (test skipped) when
/// prometheus_client is missing outside CI. In CI (`CI` set) it must be there:
/// `.ci/run` installs it.
fn parse(setup: &Setup, text: &str, format: &str) -> Option<HashMap<String, Family>> {
    let file = setup.dir.join(&format!("metrics.{format}.txt"));
    std::fs::write(&file, text).expect("write metrics");
    let script = manifest_path("tests/admin/parse_metrics.py");
    let out = match Command::new("python3")
        .arg(&script)
        .arg(&file)
        .arg(format)
        .output()
    {
        Ok(o) => o,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: python3 cannot run ({e}); `pip install prometheus_client`");
            return None;
        }
        Err(e) => panic!("python3 cannot run: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        if std::env::var_os("CI").is_none() {
            eprintln!("SKIPPED: {stderr}; run `pip install prometheus_client`");
            return None;
        }
        panic!("{stderr} (.ci/run installs it)");
    }
    assert!(
        out.status.success(),
        "the {format} parser rejected /metrics: {stderr}\n{text}"
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("parser output");
    let mut families = HashMap::new();
    for f in parsed.as_array().expect("families") {
        let samples = f["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|s| {
                let labels = s["labels"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("label").to_string()))
                    .collect();
                let name = s["name"].as_str().expect("name").to_string();
                (name, labels, s["value"].as_f64().expect("value"))
            })
            .collect();
        let name = f["name"].as_str().expect("name").to_string();
        let kind = f["type"].as_str().expect("type").to_string();
        families.insert(name, Family { kind, samples });
    }
    Some(families)
}

/// Sample `name`'s value per value of label `by`.
fn values_by(
    f: &HashMap<String, Family>,
    family: &str,
    name: &str,
    by: &str,
) -> HashMap<String, f64> {
    let fam = f
        .get(family)
        .unwrap_or_else(|| panic!("no family {family} in {:?}", f.keys()));
    fam.samples
        .iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, l, v)| (l.get(by).cloned().unwrap_or_default(), *v))
        .collect()
}

/// Checks one parsed exposition against what was sent and `status`.
fn check(f: &HashMap<String, Family>, setup: &Setup, status: &Value, sent: u64, openmetrics: bool) {
    // Both parsers name a counter's family without `_total`; OpenMetrics
    // has an info type (family without `_info`), Prometheus text a gauge.
    let conns = "lbctl_server_connections";
    let (build, listen_info) = if openmetrics {
        ("lbctl_build", "lbctl_listen")
    } else {
        ("lbctl_build_info", "lbctl_listen_info")
    };
    assert_eq!(f[conns].kind, "counter");
    let per_server = values_by(f, conns, "lbctl_server_connections_total", "server");
    let total: f64 = per_server.values().sum();
    assert_eq!(
        total, sent as f64,
        "server connections vs sent: {per_server:?}"
    );
    for s in servers(status) {
        let name = s["name"].as_str().expect("name");
        assert_eq!(
            per_server.get(name).copied(),
            s["total"].as_f64(),
            "server {name}: /metrics vs /status.json"
        );
    }
    let mut names: Vec<&String> = per_server.keys().collect();
    names.sort();
    let mut expected = setup.server_names();
    expected.sort();
    assert_eq!(names, expected.iter().collect::<Vec<_>>());
    let up = values_by(f, "lbctl_server_up", "lbctl_server_up", "server");
    assert!(up.values().all(|v| *v == 1.0), "{up:?}");
    let workers = values_by(
        f,
        "lbctl_worker_connections",
        "lbctl_worker_connections_total",
        "pid",
    );
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert_eq!(workers.values().sum::<f64>(), sent as f64, "{workers:?}");
    let version = values_by(f, build, "lbctl_build_info", "version");
    assert_eq!(
        version.get(env!("CARGO_PKG_VERSION")),
        Some(&1.0),
        "{version:?}"
    );
    let listen = values_by(f, listen_info, "lbctl_listen_info", "listen");
    assert_eq!(listen.get("web"), Some(&1.0), "{listen:?}");
    let generation = values_by(f, "lbctl_generation", "lbctl_generation", "");
    assert_eq!(generation.get(""), Some(&1.0));
    let reloads = values_by(f, "lbctl_reloads", "lbctl_reloads_total", "result");
    assert_eq!(reloads.get("ok"), Some(&0.0), "{reloads:?}");
    assert_eq!(reloads.get("failed"), Some(&0.0), "{reloads:?}");
    for (name, fam) in f {
        for (sample, _, _) in &fam.samples {
            assert!(sample.starts_with("lbctl_"), "{sample}");
            if fam.kind == "counter" {
                assert!(sample.ends_with("_total"), "counter {name}: {sample}");
            }
        }
    }
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_the_connections_sent() {
    let setup = Setup::start(None);
    setup.send_connections(10);
    let status = setup.get("/status.json").json();
    let r = setup.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(r.has_token("connection", "close"));
    let Some(f) = parse(&setup, &r.text(), "prometheus") else {
        return;
    };
    check(&f, &setup, &status, 10, false);
    // More traffic shows in the next scrape.
    setup.send_connections(4);
    let status = setup.get("/status.json").json();
    let f = parse(&setup, &setup.get("/metrics").text(), "prometheus").expect("parsed before");
    check(&f, &setup, &status, 14, false);
}

#[test]
fn metrics_are_openmetrics_when_the_scraper_asks_for_it() {
    let setup = Setup::start(None);
    setup.send_connections(6);
    let status = setup.get("/status.json").json();
    // What Prometheus itself sends.
    let accept = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
                  application/openmetrics-text;version=0.0.1;q=0.4,\
                  text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
    let r = setup.request("GET", "/metrics", &[("Accept", accept)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let Some(f) = parse(&setup, &text, "openmetrics") else {
        return;
    };
    check(&f, &setup, &status, 6, true);
}
