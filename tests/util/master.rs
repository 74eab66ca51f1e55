//! Owns the process guards: [`Master`] (`lbctl start` in the foreground, killed
//! with all its workers on drop) and [`DaemonGuard`] (a daemonized master found
//! through its pid file).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::procs::{identity, identity_alive};
use super::{
    Conf, TempDir, WAIT, children_of, kill_master_tree, lbctl_bin, pid_alive, proc_stat,
    read_pid_file, signal, wait_until,
};

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

    /// Sends a signal to the master (none once it is reaped: its pid may
    /// name another process by then).
    pub fn signal(&self, sig: Signal) {
        if self.exited.is_none() {
            signal(self.pid, sig);
        }
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
        // A reaped master's pid may already name another process (pids wrap
        // within seconds under this suite's thread churn; pid_max is often
        // 32768): signalling it could stop another test's master. While
        // try_wait says "running" the pid is still our unreaped child.
        if !self.has_exited() {
            kill_master_tree(self.pid, Duration::from_secs(3));
        }
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
