//! HAProxy (Debian's `haproxy`, installed by `.ci/run`) as the server with
//! `accept-proxy`: lbctl's `send_proxy` v1 and v2 headers are accepted, and
//! HAProxy forwards the original client address (`X-Client: %[src]`) to
//! the HTTP backend behind it; lbctl's health checks (v1 UNKNOWN, v2
//! LOCAL) pass through HAProxy too. Skipped, saying so, without haproxy.

use crate::util::http_backend::HttpBackend;
use crate::util::http_client::HttpConn;
use crate::util::loadgen::connect_from;
use crate::util::{Conf, Lbctl, Master, ServerConf, TempDir, WAIT, connect, free_addr, wait_until};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn haproxy_binary() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join("haproxy"))
        .find(|p| p.is_file())
}

/// A foreground HAProxy, killed on drop.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_haproxy(bin: &Path, dir: &TempDir, fronts: &[SocketAddr], app: SocketAddr) -> Haproxy {
    let mut cfg = String::from(
        "global\n  maxconn 200\n\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\n",
    );
    for (i, f) in fronts.iter().enumerate() {
        cfg.push_str(&format!(
            "frontend f{i}\n  bind {f} accept-proxy\n  http-request set-header X-Client %[src]:%[src_port]\n  http-request set-header X-Front f{i}\n  default_backend app\n\n"
        ));
    }
    cfg.push_str(&format!("backend app\n  server app1 {app}\n"));
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("write haproxy.cfg");
    let check = Command::new(bin)
        .args(["-c", "-f"])
        .arg(&path)
        .output()
        .expect("run haproxy -c");
    assert!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(bin)
        .args(["-db", "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.log")).expect("log"))
        .spawn()
        .expect("start haproxy");
    let h = Haproxy(child);
    for f in fronts {
        assert!(
            wait_until(WAIT, || connect(*f).is_ok()),
            "haproxy does not listen on {f}"
        );
    }
    h
}

#[test]
fn haproxy_with_accept_proxy_sees_the_original_client_in_v1_and_v2() {
    let Some(bin) = haproxy_binary() else {
        eprintln!(
            "skipped: haproxy is not installed (Debian package haproxy; .ci/run installs it)"
        );
        return;
    };
    let dir = TempDir::new();
    let app = HttpBackend::start("app");
    let fronts = [free_addr(), free_addr()];
    let _h = start_haproxy(&bin, &dir, &fronts, app.addr());
    let conf = Conf::new(&dir, &[]).listen(|l| {
        l.http()
            .servers(vec![
                ServerConf::new(fronts[0]).key(r#"send_proxy = "v1""#),
                ServerConf::new(fronts[1]).key(r#"send_proxy = "v2""#),
            ])
            .health(r#"{ kind = "http", path = "/health", interval = "200ms", timeout = "2s", rise = 1, fall = 1 }"#)
    });
    let path = conf.write(&dir);
    let _m = Master::start(&dir, &path);
    let bind = conf.bind();

    let s = connect_from("127.0.0.9".parse().expect("ip"), bind).expect("connect");
    let me = s.local_addr().expect("local");
    let mut c = HttpConn::from_stream(bind, s).expect("conn");
    let mut fronts_seen = BTreeSet::new();
    for _ in 0..4 {
        let r = c.request("GET", "/headers", &[], None).expect("response");
        assert_eq!(r.status, 200, "{}", r.text());
        let head = r.text().to_lowercase();
        assert!(head.contains(&format!("x-client: {me}\r\n")), "{head}");
        assert!(head.contains("x-forwarded-for: 127.0.0.9\r\n"), "{head}");
        if let Some(f) = head.lines().find_map(|l| l.strip_prefix("x-front: ")) {
            fronts_seen.insert(f.trim().to_string());
        }
    }
    assert_eq!(
        fronts_seen,
        BTreeSet::from(["f0".to_string(), "f1".to_string()]),
        "both the v1 and the v2 server were used"
    );

    // The checks (v1 UNKNOWN, v2 LOCAL, then GET /health) pass HAProxy.
    let lbctl = Lbctl::new(&dir, &path);
    let mut last = serde_json::Value::Null;
    assert!(
        wait_until(WAIT, || {
            last = lbctl.run("status", &["--json"]).json();
            last["listens"][0]["servers"].as_array().is_some_and(|s| {
                s.iter().all(|s| {
                    s["state"] == "up" && s["check"].as_str().is_some_and(|c| c.starts_with("ok"))
                })
            })
        }),
        "{last:#}\nhaproxy: {}",
        std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
    );
}
