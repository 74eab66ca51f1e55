//! Owns process inspection and killing: `/proc` stat, children and trees,
//! process identities (pid + start time), [`signal`], [`kill_master_tree`], and
//! pid files.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
pub(super) fn identity(pid: i32) -> Option<(i32, u64)> {
    proc_start_time(pid).map(|t| (pid, t))
}

/// True if the process `id` still exists, is the same process, and is not a zombie.
pub(super) fn identity_alive(id: (i32, u64)) -> bool {
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
