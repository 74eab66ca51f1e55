//! Owns the status page test: headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs) loads `/status`, its DOM after the script ran shows a
//! row per server and per worker (and the state a POST action set), and a
//! screenshot is taken into the test's temp dir (and copied to
//! `$LBCTL_STATUS_PNG` when set, which is how `docs/status-page.png` was
//! made). Skipped, saying so, without Chromium.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Setup, TOKEN};

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium with `args` on `url`; returns its stdout.
fn run(browser: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium {args:?} did not finish in 90 s");
            }
        }
    }
    reader.join().unwrap_or_default()
}

#[test]
fn status_page_shows_every_server_and_worker_in_headless_chromium() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: no Chromium (/usr/bin/chromium); `apt-get install chromium` to run this test"
        );
        return;
    };
    let setup = Setup::start(Some(TOKEN));
    setup.send_connections(4);
    // One server disabled through the action the page's buttons use.
    let disabled = setup.server_names()[1].clone();
    let auth = format!("Bearer {TOKEN}");
    let r = setup.request(
        "POST",
        &format!("/server/web/{disabled}/disable"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let url = format!("http://{}/status", setup.admin);

    let dom = run(
        &browser,
        &setup.dir.join("profile-dom"),
        &["--dump-dom"],
        &url,
    );
    assert!(dom.contains("<title>lbctl status</title>"), "{dom}");
    for name in setup.server_names() {
        let row = format!("<tr class=\"server\" data-listen=\"web\" data-server=\"{name}\">");
        assert!(dom.contains(&row), "no row for {name}:\n{dom}");
    }
    let pids = setup.master.workers();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        let row = format!("<tr class=\"worker\" data-pid=\"{pid}\">");
        assert!(dom.contains(&row), "no row for worker {pid}:\n{dom}");
    }
    assert!(dom.contains("<b id=\"phase\">running</b>"), "{dom}");
    assert_eq!(
        dom.matches("<td class=\"state disabled\">disabled</td>")
            .count(),
        1,
        "{dom}"
    );
    // A token is set: each server has its three buttons.
    assert_eq!(dom.matches("data-action=\"disable\"").count(), 2, "{dom}");

    let png = setup.dir.join("status.png");
    run(
        &browser,
        &setup.dir.join("profile-shot"),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,640",
            "--hide-scrollbars",
        ],
        &url,
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    if let Some(dest) = std::env::var_os("LBCTL_STATUS_PNG") {
        std::fs::copy(&png, &dest).expect("copy the screenshot");
    }
}
