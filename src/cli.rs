//! Owns the command line: the clap definitions ([`Cli`], [`Command`]) and
//! [`run`], which dispatches each command — starting a master (foreground or
//! daemon), or talking to a running one over its control socket and turning
//! the answer into output and an exit code.

use crate::config::{self, Config};
use crate::control::{Client, Request, Response, ServerAction};
use crate::error::Error;
use crate::master::{self, Master, daemon};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// lbctl: a high-availability TCP load balancer (Workerman's process model).
#[derive(Debug, Parser)]
#[command(name = "lbctl", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the master and its workers.
    Start {
        /// Config file (default /etc/lbctl/lbctl.toml, else conf/lbctl.toml).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Run in the background (returns once the workers accept).
        #[arg(short, long)]
        daemon: bool,
    },
    /// Stop the running master.
    Stop {
        /// Config file of the running master.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Let open connections finish first (bounded by drain_timeout).
        #[arg(short, long)]
        graceful: bool,
    },
    /// Stop, then start again.
    Restart {
        /// Config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Start in the background.
        #[arg(short, long)]
        daemon: bool,
        /// Stop gracefully.
        #[arg(short, long)]
        graceful: bool,
    },
    /// Re-read the config and replace the workers without dropping connections.
    Reload {
        /// Config file of the running master.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Show masters, workers and servers.
    Status {
        /// Config file of the running master.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Refresh every second.
        #[arg(short = 'd', long = "watch")]
        watch: bool,
        /// Health verdict for keepalived's `track_script`: one line, exit 0
        /// only when serving.
        ///
        /// Serving means: the master runs, every worker of the serving
        /// generation is running (accepting), and every listen has at least
        /// one usable server (up, enabled, weight above 0; a backup counts).
        /// Prints `ok: N workers, M listens serving` and exits 0; otherwise
        /// prints `not serving: REASON` and exits 1, or exits 2 when the
        /// master is not running or does not answer.
        #[arg(long, conflicts_with_all = ["json", "watch"])]
        check: bool,
    },
    /// List every relayed connection.
    Connections {
        /// Config file of the running master.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Replace the running master with the `lbctl` binary now on disk,
    /// handing over the listening sockets (no connection is dropped).
    Upgrade {
        /// Config file of the running master.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Reopen the log files (access logs, the daemon log) by name, after
    /// logrotate renamed them (its `postrotate` step).
    ReopenLogs {
        /// Config file of the running master.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file (exit 0 when valid, 1 when not).
    Check {
        /// Config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Runtime control of one server (no reload needed; a reload resets it).
    Server {
        /// Config file of the running master.
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        /// The action.
        #[command(subcommand)]
        action: ServerCmd,
    },
    /// Run the demo: a balancer on 127.0.0.1:8080 over two built-in nodes.
    Demo,
}

/// `lbctl server ...`.
#[derive(Debug, Subcommand)]
pub enum ServerCmd {
    /// List servers with their state.
    List,
    /// Take traffic again.
    Enable {
        /// LISTEN/SERVER (server name or address).
        target: String,
    },
    /// Take no new connections.
    Disable {
        /// LISTEN/SERVER.
        target: String,
    },
    /// Take no new connections; open ones finish.
    Drain {
        /// LISTEN/SERVER.
        target: String,
    },
    /// Set the runtime weight.
    Weight {
        /// LISTEN/SERVER.
        target: String,
        /// New weight (0 = no new connections).
        weight: u32,
    },
}

/// Runs a command.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Start { config, daemon } => start(&config_path(config)?, daemon),
        Command::Stop { config, graceful } => stop(&config_path(config)?, graceful),
        Command::Restart {
            config,
            daemon,
            graceful,
        } => {
            let path = config_path(config)?;
            // An invalid file must not stop the running master.
            let ends = Endpoints::of(&config::load(&path)?);
            if daemon::PidFile::running(&ends.pid_file).is_some() {
                stop(&path, graceful)?;
            }
            start(&path, daemon)
        }
        Command::Reload { config } => {
            let path = config_path(config)?;
            // An invalid file changes nothing: say why (key and line) here,
            // the running master keeps its configuration.
            let ends = Endpoints::of(&config::load(&path)?);
            let req = Request::Reload { config: Some(path) };
            call_done(&ends, &req, Duration::from_secs(60))
        }
        Command::Status {
            config,
            json,
            watch,
            check,
        } => {
            let path = config_path(config)?;
            if check {
                let verdict = crate::serving::verdict(&*fetch_status(&endpoints(&path))?);
                println!("{verdict}");
                return Ok(verdict.exit_code());
            }
            status(&path, json, watch)
        }
        Command::Connections { config, json } => {
            let ends = endpoints(&config_path(config)?);
            match call(&ends, &Request::Connections, Duration::from_secs(10))? {
                Response::Connections { connections, busy } => {
                    if json {
                        let v = serde_json::json!({ "connections": connections, "busy": busy });
                        println!("{v}");
                    } else {
                        print!("{}", crate::stats::render_connections(&connections));
                        for pid in busy {
                            println!("worker {pid}: busy (did not answer in time)");
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                other => Err(remote_error(other)),
            }
        }
        Command::Upgrade { config } => {
            let ends = endpoints(&config_path(config)?);
            call_done(&ends, &Request::Upgrade, Duration::from_secs(60))
        }
        Command::ReopenLogs { config } => {
            let ends = endpoints(&config_path(config)?);
            call_done(&ends, &Request::ReopenLogs, Duration::from_secs(10))
        }
        Command::Check { config } => {
            let path = config_path(config)?;
            let cfg = config::load(&path)?;
            let servers: usize = cfg.listens.iter().map(|l| l.servers.len()).sum();
            println!(
                "ok: {} is valid ({} listens, {} servers, {} workers)",
                path.display(),
                cfg.listens.len(),
                servers,
                cfg.master.workers
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Server { config, action } => server(&config_path(config)?, action),
        Command::Demo => crate::demo::run(),
    }
}

/// `-c FILE`, else `/etc/lbctl/lbctl.toml` when it exists, else
/// `conf/lbctl.toml`; made absolute (a daemon changes directory).
pub fn config_path(given: Option<PathBuf>) -> Result<PathBuf, Error> {
    let path = match given {
        Some(p) => p,
        None => {
            let etc = PathBuf::from("/etc/lbctl/lbctl.toml");
            if etc.exists() {
                etc
            } else {
                PathBuf::from("conf/lbctl.toml")
            }
        }
    };
    if path.is_absolute() {
        return Ok(path);
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Error::Runtime(format!("cannot read the current directory: {e}")))?;
    Ok(cwd.join(path))
}

/// Where a running master of this config file can be found.
#[derive(Debug)]
pub struct Endpoints {
    /// Control socket.
    pub control_socket: PathBuf,
    /// Pid file.
    pub pid_file: PathBuf,
    /// Drain timeout (bounds how long `stop -g` waits).
    pub drain_timeout: Duration,
}

impl Endpoints {
    /// The endpoints of a validated config.
    pub fn of(cfg: &Config) -> Endpoints {
        Endpoints {
            control_socket: cfg.master.control_socket.clone(),
            pid_file: cfg.master.pid_file.clone(),
            drain_timeout: cfg.master.drain_timeout,
        }
    }
}

/// Finds the control socket and pid file of `path` — from the validated
/// config when it is valid, else leniently from the raw TOML, so that
/// `reload` of a broken file still reaches the master (which then rejects
/// it with the key and line).
pub fn endpoints(path: &Path) -> Endpoints {
    if let Ok(cfg) = config::load(path) {
        return Endpoints::of(&cfg);
    }
    let base = path.parent().unwrap_or(Path::new("/"));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let table: Option<toml::Table> = text.parse().ok();
    let get = |key: &str, default: &str| -> PathBuf {
        let v = match &table {
            Some(t) => t
                .get("master")
                .and_then(|m| m.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string),
            // Not even TOML (a typo elsewhere in the file): find the key in
            // the [master] section line by line.
            None => master_key_by_line(&text, key),
        };
        base.join(v.as_deref().unwrap_or(default))
    };
    Endpoints {
        control_socket: get("control_socket", "/run/lbctl/lbctl.sock"),
        pid_file: get("pid_file", "/run/lbctl/lbctl.pid"),
        drain_timeout: Duration::from_secs(30),
    }
}

/// `key = "value"` in the `[master]` section of a file that does not parse.
fn master_key_by_line(text: &str, key: &str) -> Option<String> {
    let mut in_master = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let name = header.split(']').next().unwrap_or_default().trim();
            in_master = !header.starts_with('[') && name == "master";
            continue;
        }
        if !in_master {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        let Some(quote) = v.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        if let Some(end) = v[1..].find(quote) {
            return Some(v[1..1 + end].to_string());
        }
    }
    None
}

fn call(ends: &Endpoints, req: &Request, timeout: Duration) -> Result<Response, Error> {
    Ok(Client::new(&ends.control_socket).call(req, timeout)?)
}

/// Sends a request whose answer is `Done`, printing its message.
fn call_done(ends: &Endpoints, req: &Request, timeout: Duration) -> Result<ExitCode, Error> {
    match call(ends, req, timeout)? {
        Response::Done { message } => {
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(remote_error(other)),
    }
}

/// The running master's status report.
fn fetch_status(ends: &Endpoints) -> Result<Box<crate::stats::Status>, Error> {
    match call(ends, &Request::Status, Duration::from_secs(5))? {
        Response::Status { status } => Ok(status),
        other => Err(remote_error(other)),
    }
}

fn remote_error(resp: Response) -> Error {
    match resp {
        Response::Error { message } => Error::Remote {
            config: message.starts_with("reload rejected"),
            message,
        },
        other => Error::Runtime(format!("unexpected answer from the master: {other:?}")),
    }
}

fn start(path: &Path, daemonize: bool) -> Result<ExitCode, Error> {
    if let Some(inherited) = master::upgrade::inherited() {
        return start_upgraded(path, inherited);
    }
    let cfg: Config = config::load(path)?;
    if let Some(pid) = daemon::PidFile::running(&cfg.master.pid_file) {
        return Err(master::MasterError::AlreadyRunning {
            pid: Some(pid),
            pid_file: cfg.master.pid_file.clone(),
        }
        .into());
    }
    if !daemonize {
        return Ok(master::run_foreground(path, cfg)?);
    }
    let log_file = cfg.master.log_file.clone();
    let fd = match daemon::daemonize(&log_file).map_err(|e| {
        Error::Runtime(format!(
            "cannot daemonize (log file {}): {e}",
            log_file.display()
        ))
    })? {
        daemon::Daemonized::Parent(msg) => {
            return if msg == "ok" {
                let pid = daemon::PidFile::running(&cfg.master.pid_file)
                    .map_or_else(|| "?".to_string(), |p| p.to_string());
                println!(
                    "lbctl started in the background (master pid {pid}, log {})",
                    log_file.display()
                );
                Ok(ExitCode::SUCCESS)
            } else if msg.is_empty() {
                Err(Error::Runtime(format!(
                    "the daemon exited during startup; see {}",
                    log_file.display()
                )))
            } else {
                Err(Error::Runtime(msg))
            };
        }
        daemon::Daemonized::Daemon(fd) => fd,
    };
    let pid_file = match master::lock_pid_file(&cfg) {
        Ok(p) => p,
        Err(e) => return Err(report_to_starter(fd, e.into())),
    };
    let startup = master::Startup::Fresh {
        pid_file,
        ready: None,
    };
    run_reporting(path, Ok(cfg), startup, fd)
}

/// Logs a startup failure and writes it into the readiness channel, so the
/// process waiting on it (`start -d`, or the old master of an upgrade)
/// prints why; returns the error.
fn report_to_starter(ready: std::os::fd::OwnedFd, e: Error) -> Error {
    use std::io::Write;
    master::log(&format!("cannot start: {e}"));
    let _ = std::fs::File::from(ready).write_all(e.to_string().as_bytes());
    e
}

/// Starts a master that must say "ok" (once its workers accept) or its
/// error into `ready`, then runs it.
fn run_reporting(
    path: &Path,
    cfg: Result<Config, Error>,
    mut startup: master::Startup,
    ready: std::os::fd::OwnedFd,
) -> Result<ExitCode, Error> {
    // The master owns one end (written "ok" once ready); a spare reports
    // an error that happens before it exists. An upgraded master already
    // owns the inherited end, so `ready` is the spare itself: a second copy
    // would stay open, orphaned, for the master's whole life.
    let spare = match &mut startup {
        master::Startup::Fresh { ready: r, .. } => {
            let spare = ready.try_clone();
            *r = Some(ready);
            spare
        }
        master::Startup::Upgrade(_) => Ok(ready),
    };
    let report = |spare: std::io::Result<std::os::fd::OwnedFd>, e: Error| match spare {
        Ok(fd) => report_to_starter(fd, e),
        Err(_) => e,
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => return Err(report(spare, e)),
    };
    match Master::start(path, cfg, startup) {
        Ok(m) => {
            drop(spare);
            Ok(ExitCode::from(m.run() as u8))
        }
        Err(e) => Err(report(spare, e.into())),
    }
}

/// A master executed by `lbctl upgrade`: failures go into the inherited
/// readiness socket so the old master keeps serving and says why.
fn start_upgraded(
    path: &Path,
    inherited: Result<master::upgrade::Inherited, String>,
) -> Result<ExitCode, Error> {
    let inherited = inherited.map_err(Error::Runtime)?;
    // The new master writes "ok" into `inherited.ready` once its workers
    // accept; this copy reports an error before that.
    let ready = inherited
        .ready
        .try_clone()
        .map_err(|e| Error::Runtime(format!("upgrade: readiness socket: {e}")))?;
    let cfg = config::load(path).map_err(Error::from);
    run_reporting(path, cfg, master::Startup::Upgrade(inherited), ready)
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn stop(path: &Path, graceful: bool) -> Result<ExitCode, Error> {
    let ends = endpoints(path);
    // The master answers once it is done: after the drain of *its* config
    // (which may differ from the file's), killing what is left at its
    // deadline. So a graceful stop waits as long as it takes.
    let wait = if graceful {
        Duration::from_secs(7 * 24 * 3600)
    } else {
        ends.drain_timeout + Duration::from_secs(15)
    };
    let pid = daemon::PidFile::running(&ends.pid_file);
    match call(&ends, &Request::Stop { graceful }, wait)? {
        Response::Done { message } => {
            // The master answers just before it exits; wait until it is
            // gone so `stop` returning means the port and pid file are free.
            let deadline = Instant::now() + Duration::from_secs(10);
            while (daemon::PidFile::running(&ends.pid_file).is_some() || pid.is_some_and(alive))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            println!("lbctl {message}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(remote_error(other)),
    }
}

fn status(path: &Path, json: bool, watch: bool) -> Result<ExitCode, Error> {
    let ends = endpoints(path);
    let mut prev: Option<(crate::stats::Status, std::time::Instant)> = None;
    loop {
        let status = fetch_status(&ends)?;
        let now = std::time::Instant::now();
        if json {
            let s = serde_json::to_string(&status)
                .map_err(|e| Error::Runtime(format!("cannot encode status: {e}")))?;
            println!("{s}");
        } else {
            if watch {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", status.render());
            if let Some((p, at)) = &prev {
                let secs = now.duration_since(*at).as_secs_f64();
                print!("{}", crate::stats::render_rates(p, &status, secs));
            }
        }
        prev = Some((*status, now));
        if !watch {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn server(path: &Path, action: ServerCmd) -> Result<ExitCode, Error> {
    let ends = endpoints(path);
    let (action, target) = match action {
        ServerCmd::List => {
            let status = fetch_status(&ends)?;
            for l in &status.listens {
                for s in &l.servers {
                    println!(
                        "{}/{}\t{}\t{}\tweight {}\tactive {}\ttotal {}\t{}",
                        l.name, s.name, s.addr, s.state, s.weight, s.active, s.total, s.check
                    );
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        ServerCmd::Enable { target } => (ServerAction::Enable, target),
        ServerCmd::Disable { target } => (ServerAction::Disable, target),
        ServerCmd::Drain { target } => (ServerAction::Drain, target),
        ServerCmd::Weight { target, weight } => (ServerAction::Weight(weight), target),
    };
    call_done(
        &ends,
        &Request::Server { action, target },
        Duration::from_secs(5),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_keys_are_found_in_a_file_that_does_not_parse() {
        let text = "[master]  # the master\npid_file = '/run/x.pid'\ncontrol_socket = \"/run/x.sock\" # c\n[[listen]]\ncontrol_socket = \"/no\"\noops = [\n";
        assert!(text.parse::<toml::Table>().is_err());
        assert_eq!(
            master_key_by_line(text, "pid_file").as_deref(),
            Some("/run/x.pid")
        );
        assert_eq!(
            master_key_by_line(text, "control_socket").as_deref(),
            Some("/run/x.sock")
        );
        assert_eq!(master_key_by_line(text, "log_file"), None);
    }
}
