//! Owns the full-disk case: the access log lives on a tiny tmpfs (mounted
//! by the test, which runs as root; skipped with a message when mount
//! fails), the tmpfs is filled, and traffic goes on unaffected while the
//! lines that do not fit are dropped and counted (`status`, `/metrics`);
//! what is in the file is whole lines only.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{access_log, read_lines};
use crate::util::backend::Backend;
use crate::util::json::worker_sum;
use crate::util::{Conf, Lbctl, Master, TempDir, WAIT, exchange, wait_until};

/// A tmpfs mounted for the test; lazily unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with `filler` until it is full.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).expect("filler");
    let block = vec![b'x'; 4096];
    while f.write_all(&block).is_ok() {}
    // Whatever is left below a block (a partial page).
    while f.write_all(b"x").is_ok() {}
}

#[test]
fn a_full_disk_drops_and_counts_lines_and_traffic_goes_on() {
    let dir = TempDir::new();
    let Some(mount) = Mount::tmpfs(&dir.join("small"), "256k") else {
        return;
    };
    let echo = Backend::echo();
    let log = mount.0.join("access.log");
    let conf = Conf::new(&dir, &[echo.addr()]).listen(|l| l.line(&access_log(&log, "text")));
    let path = conf.write(&dir);
    let m = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);
    // A few lines while there is room.
    for i in 0..10 {
        let data = format!("before {i}");
        assert_eq!(
            exchange(conf.bind(), data.as_bytes()).expect("echo"),
            data.as_bytes()
        );
    }
    assert!(wait_until(WAIT, || read_lines(&log).len() == 10));
    fill(&mount.0);
    let total = 2000;
    for i in 0..total {
        let data = format!("request {i}");
        let got = exchange(conf.bind(), data.as_bytes()).unwrap_or_else(|e| {
            panic!(
                "request {i} failed with the disk full: {e}\n{}",
                m.describe()
            )
        });
        assert_eq!(got, data.as_bytes(), "request {i}");
    }
    // Every line is either in the file or counted as dropped.
    let want = 10 + total as u64;
    let accounted =
        || read_lines(&log).len() as u64 + worker_sum(&lbctl.status_json(), "access_log_dropped");
    assert!(
        wait_until(WAIT, || accounted() >= want),
        "{} lines accounted for, {want} requests: {}",
        accounted(),
        lbctl.status_json()
    );
    let dropped = worker_sum(&lbctl.status_json(), "access_log_dropped");
    assert!(dropped > 0, "nothing dropped on a full disk");
    assert_eq!(read_lines(&log).len() as u64 + dropped, want);
    lbctl
        .run("status", &[])
        .assert_success()
        .assert_contains("lines dropped");
    // Whole lines only: every line has its nine fields.
    let bytes = std::fs::read(&log).expect("log");
    assert!(bytes.ends_with(b"\n"), "the log ends mid-line");
    let lines = read_lines(&log);
    for l in &lines {
        assert_eq!(l.split(' ').count(), 9, "split line: {l:?}");
    }
    // Room again: lines are written again.
    let _ = std::fs::remove_file(mount.0.join("filler"));
    let before = read_lines(&log).len();
    assert!(
        wait_until(WAIT, || {
            let _ = exchange(conf.bind(), b"after");
            read_lines(&log).len() > before
        }),
        "no line written once there was room again"
    );
    drop(m);
}
