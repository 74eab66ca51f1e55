//! Owns running the real `lbctl` binary as a command: [`lbctl_bin`], [`CmdOutput`]
//! and its assertions, the [`Lbctl`] wrapper bound to one config file, and
//! [`run_raw_in`] / [`run_bin_in`] with captured output and a timeout.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::TempDir;

/// Default time an `lbctl` command may run before the test kills it and fails.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// The real binary under test.
pub fn lbctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lbctl")
}

/// A file in the crate (e.g. `conf/lbctl.toml`).
pub fn manifest_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// What one `lbctl` command did.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub args: Vec<String>,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// Both streams, labelled, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: lbctl {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// stdout and stderr together (messages may go to either).
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Panics (printing both streams) unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &CmdOutput {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &CmdOutput {
        self.assert_code(0)
    }

    /// Panics unless the command exited with a non-zero code.
    #[track_caller]
    pub fn assert_failure(&self) -> &CmdOutput {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a non-zero exit code\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless stdout or stderr contains `needle`.
    #[track_caller]
    pub fn assert_contains(&self, needle: &str) -> &CmdOutput {
        assert!(
            self.all().contains(needle),
            "expected output to contain {needle:?}\n{}",
            self.describe()
        );
        self
    }

    /// Parses stdout as one JSON value (panics, printing both streams, if not).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_str(self.stdout.trim()) {
            Ok(v) => v,
            Err(e) => panic!("stdout is not one JSON value: {e}\n{}", self.describe()),
        }
    }
}

/// Runs the real `lbctl` binary against one config file.
#[derive(Debug, Clone)]
pub struct Lbctl {
    config: PathBuf,
    /// Where captured streams go (a temp dir's path).
    out_dir: PathBuf,
}

impl Lbctl {
    /// `lbctl ... -c config`, capturing output in files under `dir`.
    pub fn new(dir: &TempDir, config: &Path) -> Lbctl {
        Lbctl {
            config: config.to_path_buf(),
            out_dir: dir.path().to_path_buf(),
        }
    }

    /// The config file commands use.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// `lbctl <sub> -c <config> <extra...>` with the default timeout.
    pub fn run(&self, sub: &str, extra: &[&str]) -> CmdOutput {
        self.run_timeout(sub, extra, CMD_TIMEOUT)
    }

    /// As [`Lbctl::run`], failing the test if the command runs past `timeout`.
    pub fn run_timeout(&self, sub: &str, extra: &[&str], timeout: Duration) -> CmdOutput {
        let config = self.config.display().to_string();
        let mut args: Vec<&str> = vec![sub, "-c", &config];
        args.extend_from_slice(extra);
        run_raw_in(&self.out_dir, &args, timeout)
    }

    /// `lbctl status --json`, parsed; panics unless it exits 0.
    #[track_caller]
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.run("status", &["--json"]);
        out.assert_success();
        out.json()
    }

    /// `lbctl status --json` if it exits 0 with valid JSON, else `None`.
    pub fn try_status_json(&self) -> Option<serde_json::Value> {
        let out = self.run("status", &["--json"]);
        if out.code != Some(0) {
            return None;
        }
        serde_json::from_str(out.stdout.trim()).ok()
    }
}

/// Runs `lbctl <args...>` (no implied `-c`) with stdout/stderr captured in files
/// under `out_dir` (files, not pipes: a daemon that inherits them cannot block us).
pub fn run_raw_in(out_dir: &Path, args: &[&str], timeout: Duration) -> CmdOutput {
    run_bin_in(Path::new(lbctl_bin()), out_dir, args, timeout)
}

/// As [`run_raw_in`], running `bin` (e.g. a copy of the binary) instead.
pub fn run_bin_in(bin: &Path, out_dir: &Path, args: &[&str], timeout: Duration) -> CmdOutput {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let out_path = out_dir.join(format!("cmd-{n}.out"));
    let err_path = out_dir.join(format!("cmd-{n}.err"));
    let out_file = std::fs::File::create(&out_path).expect("create stdout file");
    let err_file = std::fs::File::create(&err_path).expect("create stderr file");
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(err_file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait lbctl") {
            Some(st) => break Some(st),
            None if Instant::now() >= deadline => break None,
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let timed_out = status.is_none();
    if timed_out {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = CmdOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    if timed_out {
        panic!(
            "{} did not finish within {timeout:?} (killed)\n{}",
            bin.display(),
            out.describe()
        );
    }
    out
}
