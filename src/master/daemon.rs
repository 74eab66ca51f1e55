//! Owns the process plumbing around the master: the locked pid file, daemon
//! mode (double fork, setsid, stdin from /dev/null, stdout and stderr to the
//! log file, a readiness pipe back to `lbctl start -d`), systemd's
//! `sd_notify`, and the log-line format.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{Flock, FlockArg};

/// The master's pid file, locked (flock) for the master's whole life: a stale
/// file left by a crash is never mistaken for a running master.
#[derive(Debug)]
pub struct PidFile {
    lock: Option<Flock<File>>,
    path: PathBuf,
}

/// Outcome of trying to take the pid file.
#[derive(Debug)]
pub enum PidError {
    /// Another live master holds the lock.
    Running(Option<i32>),
    /// The file could not be created or written.
    Io(io::Error),
}

/// Creates the directory `path` lives in, if missing.
pub fn create_parent_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

fn open_pid(path: &Path) -> io::Result<File> {
    create_parent_dir(path)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
}

fn read_pid(file: &mut File) -> Option<i32> {
    let mut s = String::new();
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

impl PidFile {
    /// Locks the pid file and writes our pid into it.
    pub fn acquire(path: &Path) -> Result<PidFile, PidError> {
        let file = open_pid(path).map_err(PidError::Io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                // A file holding something other than a pid is not ours to
                // overwrite (a misconfigured path must never destroy data).
                let regular = lock.metadata().map(|m| m.is_file()).unwrap_or(false);
                let mut head = Vec::new();
                let _ = (&*lock).take(32).read_to_end(&mut head);
                let pid_like = head
                    .iter()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_whitespace());
                if !regular || !pid_like {
                    return Err(PidError::Io(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "the path exists and is not a pid file",
                    )));
                }
                use std::io::Seek;
                lock.seek(std::io::SeekFrom::Start(0))
                    .map_err(PidError::Io)?;
                lock.set_len(0).map_err(PidError::Io)?;
                writeln!(&mut *lock, "{}", std::process::id()).map_err(PidError::Io)?;
                Ok(PidFile {
                    lock: Some(lock),
                    path: path.to_path_buf(),
                })
            }
            Err((mut file, _)) => Err(PidError::Running(read_pid(&mut file))),
        }
    }

    /// The pid of the live master holding `path`, if any (a file nobody
    /// locks is stale and ignored).
    pub fn running(path: &Path) -> Option<i32> {
        let file = File::open(path).ok()?;
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_unlocked_on_drop) => None,
            Err((mut file, _)) => read_pid(&mut file),
        }
    }

    /// Unlocks without removing the file (a new master takes it over).
    pub fn release(mut self) {
        self.lock = None;
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if self.lock.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// In `lbctl start -d`: forks; the original process waits on a pipe for the
/// daemon's verdict and returns `Ok(Parent(message))`; the daemon (the
/// grandchild, in a new session, with stdout and stderr on the log file)
/// returns `Ok(Daemon(writer))` and must write "ok" or the error into it.
pub enum Daemonized {
    /// In the invoking process: what the daemon reported.
    Parent(String),
    /// In the daemon: the readiness pipe.
    Daemon(OwnedFd),
}

impl std::fmt::Debug for Daemonized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Daemonized::Parent(m) => write!(f, "Parent({m:?})"),
            Daemonized::Daemon(_) => write!(f, "Daemon"),
        }
    }
}

/// Detaches into the background (see [`Daemonized`]).
pub fn daemonize(log_file: &Path) -> io::Result<Daemonized> {
    use nix::unistd::{ForkResult, fork, setsid};
    let log = open_log(log_file)?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the CLI process is single-threaded here; the child only calls
    // async-signal-safe functions until it is the sole thread of its own.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            drop(write);
            let _ = nix::sys::wait::waitpid(child, None);
            let mut msg = String::new();
            let mut f = File::from(read);
            let _ = f.read_to_string(&mut msg);
            Ok(Daemonized::Parent(msg))
        }
        ForkResult::Child => {
            drop(read);
            let _ = setsid();
            // SAFETY: as above; the intermediate child exits at once.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { .. }) => {
                    // SAFETY: _exit skips atexit handlers of the parent's copy.
                    unsafe { nix::libc::_exit(0) }
                }
                Ok(ForkResult::Child) => {}
                Err(_) => {
                    // SAFETY: as above.
                    unsafe { nix::libc::_exit(1) }
                }
            }
            let devnull = File::open("/dev/null")?;
            nix::unistd::dup2_stdin(&devnull)?;
            nix::unistd::dup2_stdout(&log)?;
            nix::unistd::dup2_stderr(&log)?;
            // The daemon is single-threaded here (just forked), so nothing
            // reads the environment while it changes. Workers (forked) and
            // an upgraded master (exec'd) inherit it: `reopen-logs` reopens
            // their stdout/stderr on this file too.
            let absolute = std::fs::canonicalize(log_file).unwrap_or_else(|_| log_file.into());
            // SAFETY: see above.
            unsafe { std::env::set_var(DAEMON_LOG_ENV, absolute) };
            let _ = std::env::set_current_dir("/");
            Ok(Daemonized::Daemon(write))
        }
    }
}

/// The environment variable naming a daemon's log file (set by
/// [`daemonize`]; absent in the foreground, where stderr is not a file).
pub const DAEMON_LOG_ENV: &str = "LBCTL_DAEMON_LOG";

/// The log file stdout/stderr were redirected to by `start -d`, if any.
pub fn daemon_log() -> Option<PathBuf> {
    std::env::var_os(DAEMON_LOG_ENV).map(PathBuf::from)
}

/// `reopen-logs`: points stdout and stderr at a freshly opened daemon log
/// (after logrotate renamed the old one); false in the foreground. A
/// failure leaves both on the old file.
pub fn reopen_daemon_log() -> io::Result<bool> {
    let Some(path) = daemon_log() else {
        return Ok(false);
    };
    let log = open_log(&path)?;
    nix::unistd::dup2_stdout(&log)?;
    nix::unistd::dup2_stderr(&log)?;
    Ok(true)
}

/// Opens (creating directories) the log file for appending.
pub fn open_log(path: &Path) -> io::Result<File> {
    create_parent_dir(path)?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Sends a message to systemd's `NOTIFY_SOCKET`, if set (READY=1,
/// RELOADING=1, STOPPING=1, STATUS=...). Best-effort and never blocking: the
/// master's loop calls it, so a full or missing notify socket costs one
/// failed send; the first failure is logged, later ones are not.
pub fn sd_notify(msg: &str) {
    static FAILED: AtomicBool = AtomicBool::new(false);
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = notify_to(&target, msg)
        && !FAILED.swap(true, Ordering::Relaxed)
    {
        super::log(&format!(
            "systemd notification {:?} to {} failed: {e} (further failures are not logged)",
            msg.lines().next().unwrap_or_default(),
            target.display()
        ));
    }
}

/// Sends one datagram to `target` (a path, or `@name` in the abstract
/// namespace) from a fresh non-blocking socket, with `MSG_DONTWAIT` too: a
/// full receive queue is `EAGAIN` at once, never a wait.
fn notify_to(target: &OsStr, msg: &str) -> io::Result<()> {
    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, sendto, socket};
    let bytes = target.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name)?,
        None => UnixAddr::new(Path::new(target))?,
    };
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let sent = sendto(sock.as_raw_fd(), msg.as_bytes(), &addr, flags)?;
    if sent != msg.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", msg.len()),
        ));
    }
    Ok(())
}

/// Formats a log line: UTC timestamp, program and pid, message.
pub fn log_line(msg: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z lbctl[{}]: {msg}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis(),
        std::process::id()
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_to_a_full_or_missing_socket_fails_at_once() {
        use std::os::unix::net::UnixDatagram;
        use std::time::{Duration, Instant};
        let dir = std::env::temp_dir().join(format!("lbctl-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).expect("bind");
        notify_to(path.as_os_str(), "READY=1").expect("an empty queue takes a datagram");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
        // Nobody reads: fill the receive queue until the kernel says EAGAIN.
        let mut filled = false;
        for _ in 0..100_000 {
            if notify_to(path.as_os_str(), "STATUS=filling").is_err() {
                filled = true;
                break;
            }
        }
        assert!(filled, "the receive queue never filled");
        let t0 = Instant::now();
        let err = notify_to(path.as_os_str(), "READY=1").expect_err("the queue is full");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "a full socket stalled"
        );
        drop(receiver);
        let _ = std::fs::remove_file(&path);
        assert!(
            notify_to(path.as_os_str(), "READY=1").is_err(),
            "missing socket"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn civil_dates_are_correct() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_786), (2026, 11, 29));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn a_file_that_is_not_a_pid_file_is_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("lbctl-pid2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for (name, content) in [("text", &b"hello"[..]), ("bin", &[0xff, 0xfe, 0, 0x41][..])] {
            let path = dir.join(name);
            std::fs::write(&path, content).expect("write");
            assert!(matches!(PidFile::acquire(&path), Err(PidError::Io(_))));
            assert_eq!(std::fs::read(&path).expect("read"), content);
        }
        let stale = dir.join("stale.pid");
        std::fs::write(&stale, "4242\n").expect("write");
        drop(PidFile::acquire(&stale).expect("a stale pid file is taken over"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pid_file_is_exclusive_and_removed_on_drop() {
        let dir = std::env::temp_dir().join(format!("lbctl-pid-{}", std::process::id()));
        let path = dir.join("x.pid");
        let held = PidFile::acquire(&path).expect("first");
        assert!(matches!(
            PidFile::acquire(&path),
            Err(PidError::Running(Some(_)))
        ));
        assert_eq!(PidFile::running(&path), Some(std::process::id() as i32));
        drop(held);
        assert!(!path.exists());
        assert_eq!(PidFile::running(&path), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
