//! Owns the access-log tests, one file per concern: the fields of tcp and
//! http lines in both formats (lines.rs), `reopen-logs` under load after a
//! logrotate-style rename with no line lost or split, and the shipped
//! `conf/logrotate` run by logrotate itself (rotate.rs), the daemon log of
//! `start -d` reopened by master and workers (daemon_log.rs), and a
//! full disk (a small tmpfs) that drops and counts lines while traffic goes
//! on (full_disk.rs). This file holds the shared helpers: reading a log's
//! lines and waiting for a count.

mod daemon_log;
mod full_disk;
mod lines;
mod rotate;

use std::path::Path;

use serde_json::Value;

use crate::util::{WAIT, wait_until};

/// The complete lines of `path` (none if it does not exist).
pub fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8(text).expect("the access log is UTF-8");
    text.lines().map(str::to_string).collect()
}

/// Parses every line of `path` as one JSON object (panics naming the line).
pub fn json_lines(path: &Path) -> Vec<Value> {
    read_lines(path)
        .iter()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("not one JSON object ({e}): {l:?} in {}", path.display())
            })
        })
        .collect()
}

/// Waits until `paths` hold `n` lines together; returns the count reached.
pub fn wait_lines(paths: &[&Path], n: usize) -> usize {
    let count = || paths.iter().map(|p| read_lines(p).len()).sum::<usize>();
    wait_until(WAIT, || count() >= n);
    count()
}

/// The access-log table of a listen.
pub fn access_log(path: &Path, format: &str) -> String {
    format!(
        "access_log = {{ path = \"{}\", format = \"{format}\" }}",
        path.display()
    )
}
