//! Owns the binary-upgrade tests: under load by command, by SIGUSR2, and a
//! broken binary that changes nothing; and an upgraded master holding no
//! descriptor that a fresh one does not.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;

use crate::util::backend::Backend;
use crate::util::json::u64_of;
use crate::util::{
    CMD_TIMEOUT, DaemonGuard, Lbctl, Master, TempDir, WAIT, fetch_ok, lbctl_bin, pid_alive,
    run_bin_in, signal, wait_until,
};

use super::{standard_load, two_listens};

/// Puts `contents` at `path` through a rename (a running binary cannot be
/// written in place), executable.
fn replace_file(path: &Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("replacing");
    std::fs::write(&tmp, contents).expect("write replacement");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod +x");
    std::fs::rename(&tmp, path).expect("rename replacement");
}

/// The `master_pid` of a status answer.
fn master_pid(st: &serde_json::Value) -> i32 {
    i32::try_from(u64_of(st, "master_pid")).expect("pid fits i32")
}

/// Waits until status answers with a master pid that `accept` likes; returns
/// it (panics with the last answer otherwise).
#[track_caller]
fn wait_master(lbctl: &Lbctl, what: &str, accept: impl Fn(i32) -> bool) -> i32 {
    let mut last = None;
    let ok = wait_until(WAIT, || {
        last = lbctl.try_status_json();
        last.as_ref().is_some_and(|st| accept(master_pid(st)))
    });
    match (ok, last) {
        (true, Some(st)) => master_pid(&st),
        (_, last) => panic!("{what}: last status {last:#?}"),
    }
}

#[test]
fn binary_upgrade_by_command_and_sigusr2_fails_no_connection_and_a_broken_binary_changes_nothing() {
    let dir = TempDir::new();
    let (a, b) = (Backend::fixed("A"), Backend::fixed("B"));
    let e = Backend::echo();
    let conf = two_listens(&dir, &[a.addr(), b.addr()], &[e.addr()], 2);
    let path = conf.write(&dir);
    let bin_path: PathBuf = dir.join("lbctl");
    let good = std::fs::read(lbctl_bin()).expect("read the built binary");
    replace_file(&bin_path, &good);
    let mut guard = DaemonGuard::new(&conf);
    let mut cmd = Command::new(&bin_path);
    cmd.arg("start").arg("-c").arg(&path);
    let mut master = Master::spawn_command(&dir, &path, cmd);
    master.wait_accepting();
    let first = master.pid();
    guard.track(first);
    let lbctl = Lbctl::new(&dir, &path);
    let cfg = path.display().to_string();
    let load = standard_load(&conf, &["A", "B"]);
    assert!(
        load.wait_progress(20, WAIT),
        "no traffic before the upgrade"
    );

    // 1. `upgrade` through the copy's own CLI.
    let up = run_bin_in(&bin_path, dir.path(), &["upgrade", "-c", &cfg], CMD_TIMEOUT);
    up.assert_success()
        .assert_contains("upgraded: new master pid ");
    let second: i32 = up
        .stdout
        .split("upgraded: new master pid ")
        .nth(1)
        .and_then(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no pid after \"new master pid\"\n{}", up.describe()));
    guard.track(second);
    assert_ne!(second, first, "the upgrade kept the same master pid");
    let status_right_after = lbctl.try_status_json().map(|st| master_pid(&st));
    eprintln!(
        "upgrade: first status right after `upgrade` returned: master_pid {status_right_after:?}"
    );
    wait_master(&lbctl, "status never showed the new master", |p| {
        p == second
    });
    assert!(
        load.wait_progress(20, WAIT),
        "traffic stalled after the upgrade; failures: {:#?}",
        load.failures()
    );

    // 2. A broken binary on disk: the upgrade fails, the master keeps serving.
    replace_file(&bin_path, b"this is not an executable\n");
    let broken = lbctl.run("upgrade", &[]);
    broken.assert_failure().assert_contains("upgrade failed");
    let st = lbctl.status_json();
    assert_eq!(
        master_pid(&st),
        second,
        "a failed upgrade changed the master: {st:#}"
    );
    assert!(
        pid_alive(second),
        "master {second} died in a failed upgrade"
    );
    assert!(
        load.wait_progress(20, WAIT),
        "traffic stalled after the failed upgrade; failures: {:#?}",
        load.failures()
    );

    // 3. SIGUSR2 with a good binary back on disk.
    replace_file(&bin_path, &good);
    signal(second, Signal::SIGUSR2);
    let third = wait_master(&lbctl, "SIGUSR2 did not replace the master", |p| {
        p != second && p != first
    });
    guard.track(third);
    assert!(
        load.wait_progress(20, WAIT),
        "traffic stalled after the SIGUSR2 upgrade; failures: {:#?}",
        load.failures()
    );

    let report = load.stop();
    eprintln!("binary upgrades: {}", report.describe());
    report.assert_no_failures("binary upgrades");
    // The old masters leave once their workers drained.
    assert!(
        master.wait_exit(WAIT).is_some(),
        "the first master {first} outlived its upgrade"
    );
    assert!(
        wait_until(WAIT, || !pid_alive(second)),
        "the second master {second} outlived its upgrade"
    );
    let reply = fetch_ok(conf.bind());
    assert!(
        reply == "A" || reply == "B",
        "reply {reply:?} from the upgraded master"
    );
    lbctl.run("stop", &[]).assert_success();
    assert!(
        wait_until(WAIT, || !pid_alive(third)),
        "master {third} survived stop"
    );
}

/// The open descriptors of `pid`, each named by what it is (`socket`,
/// `pipe`, `anon_inode:[eventpoll]`, a file's path), sorted: two masters of
/// one config hold the same list whatever the inode numbers.
fn fd_kinds(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut kinds: Vec<String> = dir
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|target| {
            let t = target.display().to_string();
            match t.split_once(":[") {
                Some((kind @ ("socket" | "pipe"), _)) => kind.to_string(),
                _ => t,
            }
        })
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn an_upgraded_master_holds_the_same_descriptors_as_a_fresh_one() {
    let dir = TempDir::new();
    let (a, e) = (Backend::fixed("A"), Backend::echo());
    let conf = two_listens(&dir, &[a.addr()], &[e.addr()], 2);
    let path = conf.write(&dir);
    let mut guard = DaemonGuard::new(&conf);
    let mut master = Master::start(&dir, &path);
    let first = master.pid();
    guard.track(first);
    let fresh = fd_kinds(first);
    assert!(!fresh.is_empty(), "no descriptors read for master {first}");

    let lbctl = Lbctl::new(&dir, &path);
    let up = lbctl.run("upgrade", &[]);
    up.assert_success();
    let second = wait_master(&lbctl, "status never showed the new master", |p| p != first);
    guard.track(second);
    // Once the old master is gone the handover is over: what the new master
    // holds now, it holds for its whole life.
    assert!(
        master.wait_exit(WAIT).is_some(),
        "the first master {first} outlived its upgrade"
    );
    let mut upgraded = Vec::new();
    let same = wait_until(WAIT, || {
        upgraded = fd_kinds(second);
        upgraded == fresh
    });
    assert!(
        same,
        "the upgraded master {second} holds other descriptors than a fresh one\n\
         fresh:    {fresh:?}\nupgraded: {upgraded:?}"
    );
    assert_eq!(fetch_ok(conf.bind()), "A", "the upgraded master serves");
    lbctl.run("stop", &[]).assert_success();
    assert!(
        wait_until(WAIT, || !pid_alive(second)),
        "master {second} survived stop"
    );
}
