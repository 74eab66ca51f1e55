//! Owns the integration-test harness: a self-removing [`TempDir`], free loopback
//! ports, [`wait_until`], a TOML [`Conf`] writer, the [`Lbctl`] command wrapper on
//! the real binary, the [`Master`] guard that runs `lbctl start` in the foreground
//! and leaves no process behind, and `/proc` helpers to find and kill workers.

#![allow(dead_code)]

pub mod backend;
pub mod load;
pub mod loadgen;
pub mod scripted;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Default time a test waits for a condition before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

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

// ---------------------------------------------------------------------------
// Temp dir, ports, waiting
// ---------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed (recursively) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `/tmp/lbctl-test-<pid>-<n>-<nanos>`. Kept short: a unix socket
    /// path inside it must stay under 108 bytes.
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("lbctl-test-{}-{}-{}", std::process::id(), n, nanos));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loopback port that was free a moment ago (bind `127.0.0.1:0`, then close).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A loopback address that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls `cond` every ~10ms until it is true (returns true) or `timeout` passes
/// (returns false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// Config writer
// ---------------------------------------------------------------------------

/// One `servers = [...]` entry.
#[derive(Debug, Clone)]
pub struct ServerConf {
    pub addr: SocketAddr,
    pub weight: Option<u32>,
    pub name: Option<String>,
    pub backup: bool,
}

impl ServerConf {
    pub fn new(addr: SocketAddr) -> ServerConf {
        ServerConf {
            addr,
            weight: None,
            name: None,
            backup: false,
        }
    }

    pub fn weight(mut self, w: u32) -> ServerConf {
        self.weight = Some(w);
        self
    }

    pub fn name(mut self, n: &str) -> ServerConf {
        self.name = Some(n.to_string());
        self
    }

    pub fn backup(mut self) -> ServerConf {
        self.backup = true;
        self
    }

    fn to_toml(&self) -> String {
        let mut s = format!("{{ addr = \"{}\"", self.addr);
        if let Some(w) = self.weight {
            let _ = write!(s, ", weight = {w}");
        }
        if let Some(n) = &self.name {
            let _ = write!(s, ", name = \"{n}\"");
        }
        if self.backup {
            s.push_str(", backup = true");
        }
        s.push_str(" }");
        s
    }
}

/// One `[[listen]]` section.
#[derive(Debug, Clone)]
pub struct ListenConf {
    pub name: String,
    pub bind: SocketAddr,
    pub balance: String,
    pub retries: u32,
    pub connect_timeout: String,
    pub idle_timeout: String,
    pub servers: Vec<ServerConf>,
    /// Raw inline table, e.g. `{ kind = "tcp", interval = "200ms", ... }`.
    pub health: Option<String>,
}

impl ListenConf {
    /// A `round_robin` listen named `web` on a fresh free port.
    pub fn new(servers: &[SocketAddr]) -> ListenConf {
        ListenConf {
            name: "web".to_string(),
            bind: free_addr(),
            balance: "round_robin".to_string(),
            retries: 2,
            connect_timeout: "1s".to_string(),
            idle_timeout: "30s".to_string(),
            servers: servers.iter().map(|a| ServerConf::new(*a)).collect(),
            health: None,
        }
    }

    pub fn balance(mut self, b: &str) -> ListenConf {
        self.balance = b.to_string();
        self
    }

    pub fn retries(mut self, r: u32) -> ListenConf {
        self.retries = r;
        self
    }

    pub fn servers(mut self, servers: Vec<ServerConf>) -> ListenConf {
        self.servers = servers;
        self
    }

    pub fn health(mut self, inline_table: &str) -> ListenConf {
        self.health = Some(inline_table.to_string());
        self
    }
}

/// A whole config file whose pid file, socket and log live in a temp dir.
#[derive(Debug, Clone)]
pub struct Conf {
    pub workers: usize,
    pub pid_file: PathBuf,
    pub control_socket: PathBuf,
    pub log_file: PathBuf,
    pub drain_timeout: String,
    pub listens: Vec<ListenConf>,
}

impl Conf {
    /// A 2-worker config with one listen over `servers`.
    pub fn new(dir: &TempDir, servers: &[SocketAddr]) -> Conf {
        Conf {
            workers: 2,
            pid_file: dir.join("lbctl.pid"),
            control_socket: dir.join("lbctl.sock"),
            log_file: dir.join("lbctl.log"),
            drain_timeout: "5s".to_string(),
            listens: vec![ListenConf::new(servers)],
        }
    }

    pub fn workers(mut self, n: usize) -> Conf {
        self.workers = n;
        self
    }

    pub fn drain_timeout(mut self, d: &str) -> Conf {
        self.drain_timeout = d.to_string();
        self
    }

    /// Edits the first listen.
    pub fn listen(mut self, f: impl FnOnce(ListenConf) -> ListenConf) -> Conf {
        let l = self.listens.remove(0);
        self.listens.insert(0, f(l));
        self
    }

    /// The first listen's address (where clients connect).
    pub fn bind(&self) -> SocketAddr {
        self.listens[0].bind
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "[master]");
        let _ = writeln!(s, "workers = {}", self.workers);
        let _ = writeln!(s, "pid_file = \"{}\"", self.pid_file.display());
        let _ = writeln!(s, "control_socket = \"{}\"", self.control_socket.display());
        let _ = writeln!(s, "log_file = \"{}\"", self.log_file.display());
        let _ = writeln!(s, "drain_timeout = \"{}\"", self.drain_timeout);
        for l in &self.listens {
            let _ = writeln!(s);
            let _ = writeln!(s, "[[listen]]");
            let _ = writeln!(s, "name = \"{}\"", l.name);
            let _ = writeln!(s, "bind = \"{}\"", l.bind);
            let _ = writeln!(s, "mode = \"tcp\"");
            let _ = writeln!(s, "balance = \"{}\"", l.balance);
            let _ = writeln!(s, "retries = {}", l.retries);
            let _ = writeln!(
                s,
                "timeouts = {{ connect = \"{}\", idle = \"{}\" }}",
                l.connect_timeout, l.idle_timeout
            );
            let servers: Vec<String> = l.servers.iter().map(ServerConf::to_toml).collect();
            let _ = writeln!(s, "servers = [ {} ]", servers.join(", "));
            if let Some(h) = &l.health {
                let _ = writeln!(s, "health = {h}");
            }
        }
        s
    }

    /// Writes the TOML to `path` (replacing it) and returns the path.
    pub fn write_to(&self, path: &Path) -> PathBuf {
        write_file(path, &self.to_toml());
        path.to_path_buf()
    }

    /// Writes `lbctl.toml` in `dir`.
    pub fn write(&self, dir: &TempDir) -> PathBuf {
        self.write_to(&dir.join("lbctl.toml"))
    }
}

/// Writes `text` to `path` atomically (temp file + rename), so a master that
/// reads the file during a reload never sees half of it.
pub fn write_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

// ---------------------------------------------------------------------------
// Running lbctl commands
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// /proc helpers
// ---------------------------------------------------------------------------

/// `(state, ppid, comm)` of a process from `/proc/<pid>/stat`.
pub fn proc_stat(pid: i32) -> Option<(char, i32, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid, comm))
}

/// True if `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((state, _, _)) if state != 'Z' && state != 'X')
}

/// Live (non-zombie) processes whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut kids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return kids;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((state, ppid, _)) = proc_stat(child)
            && ppid == pid
            && state != 'Z'
            && state != 'X'
        {
            kids.push(child);
        }
    }
    kids.sort_unstable();
    kids
}

/// `pid` and all its live descendants.
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let kids = children_of(all[i]);
        for k in kids {
            if !all.contains(&k) {
                all.push(k);
            }
        }
        i += 1;
    }
    all
}

/// Sends `sig` to `pid`, ignoring errors (the process may be gone).
pub fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// The start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`): with
/// the pid it names one process, so a reused pid is never mistaken for it.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = text.rfind(')')?;
    // Fields after the comm start at field 3 (state); starttime is field 22.
    text.get(close + 1..)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// A process identity: pid plus start time.
fn identity(pid: i32) -> Option<(i32, u64)> {
    proc_start_time(pid).map(|t| (pid, t))
}

/// True if the process `id` still exists, is the same process, and is not a zombie.
fn identity_alive(id: (i32, u64)) -> bool {
    pid_alive(id.0) && proc_start_time(id.0) == Some(id.1)
}

/// SIGTERM the master, give it `grace` to exit, then SIGKILL the master and
/// every descendant seen before or after (workers, respawned workers).
pub fn kill_master_tree(master: i32, grace: Duration) {
    let mut seen: Vec<(i32, u64)> = Vec::new();
    let collect = |seen: &mut Vec<(i32, u64)>| {
        for p in process_tree(master) {
            if let Some(id) = identity(p)
                && !seen.iter().any(|s| s.0 == p)
            {
                seen.push(id);
            }
        }
    };
    collect(&mut seen);
    signal(master, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        collect(&mut seen);
        if !seen.iter().any(|&id| identity_alive(id)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    collect(&mut seen);
    // The master first, so it cannot respawn what we kill next.
    for &id in &seen {
        if identity_alive(id) {
            signal(id.0, Signal::SIGKILL);
        }
    }
}

/// Reads a pid file (first integer in it).
pub fn read_pid_file(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------
// The master guard
// ---------------------------------------------------------------------------

/// `lbctl start -c FILE` in the foreground. On drop: SIGTERM, a short wait, then
/// SIGKILL of the master and every worker; on a failing test its stdout, stderr
/// and log file are printed.
#[derive(Debug)]
pub struct Master {
    child: Child,
    pid: i32,
    config: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    log_path: Option<PathBuf>,
    exited: Option<ExitStatus>,
}

impl Master {
    /// Spawns `lbctl start -c config` (not yet waiting for it to accept).
    pub fn spawn(dir: &TempDir, config: &Path) -> Master {
        let mut cmd = Command::new(lbctl_bin());
        cmd.arg("start").arg("-c").arg(config);
        Master::spawn_command(dir, config, cmd)
    }

    /// Spawns `cmd` as the master: another copy of the binary, extra
    /// environment, or a wrapper that `exec`s `lbctl start` (so the child's
    /// pid is the master's). Output is captured as by [`Master::spawn`].
    pub fn spawn_command(dir: &TempDir, config: &Path, mut cmd: Command) -> Master {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let stdout_path = dir.join(&format!("master-cmd-{n}.out"));
        let stderr_path = dir.join(&format!("master-cmd-{n}.err"));
        let out = std::fs::File::create(&stdout_path).expect("create master stdout");
        let err = std::fs::File::create(&stderr_path).expect("create master stderr");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the master command");
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        Master {
            child,
            pid,
            config: config.to_path_buf(),
            stdout_path,
            stderr_path,
            log_path: Some(dir.join("lbctl.log")),
            exited: None,
        }
    }

    /// Spawns and waits until stderr says "accepting" (panics, printing the
    /// master's output, if it exits first or does not within [`WAIT`]).
    #[track_caller]
    pub fn start(dir: &TempDir, config: &Path) -> Master {
        let mut m = Master::spawn(dir, config);
        m.wait_accepting();
        m
    }

    /// Waits for "accepting" on stderr.
    #[track_caller]
    pub fn wait_accepting(&mut self) {
        let ok = wait_until(WAIT, || {
            if self.stderr().contains("accepting") {
                return true;
            }
            self.has_exited()
        });
        if !ok || self.exited.is_some() {
            panic!(
                "master did not report \"accepting\" (exited: {:?})\n{}",
                self.exited,
                self.describe()
            );
        }
    }

    /// The master's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Live worker processes (children of the master).
    pub fn workers(&self) -> Vec<i32> {
        children_of(self.pid)
    }

    /// What the master wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// What the master wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// True once the master process has exited (reaps it).
    pub fn has_exited(&mut self) -> bool {
        if self.exited.is_some() {
            return true;
        }
        if let Ok(Some(st)) = self.child.try_wait() {
            self.exited = Some(st);
            return true;
        }
        false
    }

    /// Waits up to `timeout` for the master to exit; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.has_exited());
        self.exited
    }

    /// Sends a signal to the master.
    pub fn signal(&self, sig: Signal) {
        signal(self.pid, sig);
    }

    /// The master's stdout, stderr and log file, for failure messages.
    pub fn describe(&self) -> String {
        let log = self
            .log_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        format!(
            "master pid {} (config {})\n--- master stdout ---\n{}\n--- master stderr ---\n{}\n--- log file ---\n{}\n---------------------",
            self.pid,
            self.config.display(),
            self.stdout(),
            self.stderr(),
            log
        )
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
        kill_master_tree(self.pid, Duration::from_secs(3));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a daemonized master (found through its pid file) and its workers on
/// drop, in case the test failed before `lbctl stop`.
#[derive(Debug)]
pub struct DaemonGuard {
    pid_file: PathBuf,
    log_file: PathBuf,
    pids: Vec<(i32, u64)>,
}

impl DaemonGuard {
    pub fn new(conf: &Conf) -> DaemonGuard {
        DaemonGuard {
            pid_file: conf.pid_file.clone(),
            log_file: conf.log_file.clone(),
            pids: Vec::new(),
        }
    }

    /// Remembers a master pid (with its start time) to kill on drop.
    pub fn track(&mut self, pid: i32) {
        if let Some(id) = identity(pid)
            && !self.pids.contains(&id)
        {
            self.pids.push(id);
        }
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
            eprintln!("--- daemon log file ---\n{log}\n-----------------------");
        }
        for &id in &self.pids {
            if identity_alive(id) {
                kill_master_tree(id.0, Duration::from_secs(3));
            }
        }
        if let Some(p) = read_pid_file(&self.pid_file)
            && !self.pids.iter().any(|id| id.0 == p)
        {
            let is_lbctl = matches!(proc_stat(p), Some((_, _, comm)) if comm.starts_with("lbctl"));
            if pid_alive(p) && is_lbctl {
                kill_master_tree(p, Duration::from_secs(3));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// Connects to `addr` with 5s read/write timeouts.
pub fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Connects, sends nothing, reads until EOF: the whole reply of a fixed-reply
/// backend behind the balancer.
pub fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = connect(addr)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// [`fetch`], panicking with context on error.
#[track_caller]
pub fn fetch_ok(addr: SocketAddr) -> String {
    match fetch(addr) {
        Ok(s) => s,
        Err(e) => panic!("connection through the balancer at {addr} failed: {e}"),
    }
}

/// Sends `data`, shuts down the write side, reads until EOF.
pub fn exchange(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = connect(addr)?;
    s.write_all(data)?;
    s.shutdown(Shutdown::Write)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Deterministic pseudo-random bytes (xorshift64*), distinct per `seed`.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// JSON helpers that panic with the whole document on a shape mismatch.
pub mod json {
    use serde_json::Value;

    #[track_caller]
    pub fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
        match v.get(key) {
            Some(x) => x,
            None => panic!("missing key {key:?} in {v:#}"),
        }
    }

    #[track_caller]
    pub fn u64_of(v: &Value, key: &str) -> u64 {
        match field(v, key).as_u64() {
            Some(x) => x,
            None => panic!("key {key:?} is not an unsigned integer in {v:#}"),
        }
    }

    #[track_caller]
    pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
        match field(v, key).as_str() {
            Some(x) => x,
            None => panic!("key {key:?} is not a string in {v:#}"),
        }
    }

    #[track_caller]
    pub fn bool_of(v: &Value, key: &str) -> bool {
        match field(v, key).as_bool() {
            Some(x) => x,
            None => panic!("key {key:?} is not a bool in {v:#}"),
        }
    }

    #[track_caller]
    pub fn array_of<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
        match field(v, key).as_array() {
            Some(x) => x,
            None => panic!("key {key:?} is not an array in {v:#}"),
        }
    }

    /// `workers[*]` of a status document.
    #[track_caller]
    pub fn workers(status: &Value) -> &Vec<Value> {
        array_of(status, "workers")
    }

    /// `(slot, pid, generation, state)` of each worker.
    #[track_caller]
    pub fn worker_rows(status: &Value) -> Vec<(u64, i32, u64, String)> {
        workers(status)
            .iter()
            .map(|w| {
                (
                    u64_of(w, "slot"),
                    i32::try_from(u64_of(w, "pid")).expect("pid fits i32"),
                    u64_of(w, "generation"),
                    str_of(w, "state").to_string(),
                )
            })
            .collect()
    }

    /// Worker pids of a status document.
    #[track_caller]
    pub fn worker_pids(status: &Value) -> Vec<i32> {
        worker_rows(status).into_iter().map(|r| r.1).collect()
    }

    /// Sum of a worker counter over all workers.
    #[track_caller]
    pub fn worker_sum(status: &Value, key: &str) -> u64 {
        workers(status).iter().map(|w| u64_of(w, key)).sum()
    }

    /// `listens[i].servers`.
    #[track_caller]
    pub fn servers(status: &Value, listen: usize) -> &Vec<Value> {
        let listens = array_of(status, "listens");
        match listens.get(listen) {
            Some(l) => array_of(l, "servers"),
            None => panic!("no listens[{listen}] in {status:#}"),
        }
    }
}
