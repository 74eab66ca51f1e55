//! Owns the tests with real third-party clients: curl reusing one
//! connection for several URLs, Python's `http.client` keep-alive with a
//! chunked upload, and wrk's keep-alive load while a backend is killed
//! (zero failed requests). Each skips with a message when its client is
//! missing (`.ci/run` installs them).

use super::start_http;
use crate::util::http_backend::{HttpBackend, sha256_hex};
use crate::util::{TempDir, pseudo_random_bytes};
use std::process::Command;

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn curl_spreads_the_urls_of_one_connection_over_the_servers() {
    if !have("curl") {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let b = HttpBackend::start("B");
    let (_m, bind) = start_http(&dir, &[&a, &b], |l| l);
    let urls: Vec<String> = (0..4).map(|i| format!("http://{bind}/c{i}")).collect();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(&urls)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(names.len(), 4, "{text}");
    assert!(names.windows(2).all(|w| w[0] != w[1]), "{text}");
    assert!(
        a.connections() + b.connections() <= 3,
        "server connections were not reused"
    );
}

#[test]
fn python_http_client_keepalive_chunked_upload_is_intact() {
    if !have("python3") {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let (_m, bind) = start_http(&dir, &[&a], |l| l);
    let data = pseudo_random_bytes(3 * 1024 * 1024, 11);
    let file = dir.join("upload.bin");
    std::fs::write(&file, &data).expect("write upload");
    let script = format!(
        r#"
import http.client, sys
c = http.client.HTTPConnection("{ip}", {port}, timeout=10)
def chunks():
    with open("{file}", "rb") as f:
        while True:
            b = f.read(65536)
            if not b:
                return
            yield b
c.request("POST", "/sha256", body=chunks(), encode_chunked=True, headers={{"Transfer-Encoding": "chunked"}})
r = c.getresponse(); print(r.status, r.read().decode().strip())
for i in range(5):
    c.request("GET", "/k%d" % i)
    r = c.getresponse(); print(r.status, r.read().decode().strip())
"#,
        ip = bind.ip(),
        port = bind.port(),
        file = file.display()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("200 {}", sha256_hex(&data)).as_str())
    );
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[1..].iter().all(|l| l.starts_with("200 A /k")),
        "{text}"
    );
    assert_eq!(
        a.connections(),
        1,
        "one server connection carried all six requests"
    );
}

#[test]
fn a_backend_killed_under_wrk_load_fails_no_request() {
    if !have("wrk") {
        eprintln!("skipped: wrk is not installed");
        return;
    }
    let dir = TempDir::new();
    let a = HttpBackend::start("A");
    let b = HttpBackend::start("B");
    let (_m, bind) = start_http(&dir, &[&a, &b], |l| l);
    let wrk = Command::new("wrk")
        .args(["-t2", "-c16", "-d3s", "--timeout", "5s"])
        .arg(format!("http://{bind}/w"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run wrk");
    let mut guard = KillOnDrop(Some(wrk));
    assert!(
        crate::util::wait_until(crate::util::WAIT, || a.requests() > 2000),
        "the load did not reach backend A"
    );
    a.kill();
    let out = guard
        .0
        .take()
        .expect("wrk child")
        .wait_with_output()
        .expect("wrk output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk: {text}");
    assert!(b.requests() > 0, "{text}");
    assert!(
        !text.contains("Socket errors"),
        "wrk saw socket errors: {text}"
    );
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw failed responses: {text}"
    );
}

/// Kills the child on drop (a failed assertion leaves no wrk behind).
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
