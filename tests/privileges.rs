//! Owns the privilege-drop test: with `user`/`group` in `[master]`, the
//! master (root) binds the ports and the workers run as that user, and still
//! serve. Runs only as root (as CI does); elsewhere it says so and passes.

use crate::util::backend::Backend;
use crate::util::{Conf, Master, TempDir, fetch_ok, write_file};

/// (real uid, effective uid) of a process, from /proc.
fn uids(pid: i32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let mut f = line.split_whitespace().skip(1);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

#[test]
fn workers_drop_to_the_configured_user_and_still_serve() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: privilege drop cannot be tested here");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("no user 'nobody' on this machine: skipped");
        return;
    };
    let dir = TempDir::new();
    let backend = Backend::fixed("hello");
    let conf = Conf::new(&dir, &[backend.addr()]).workers(2);
    let text = conf
        .to_toml()
        .replacen("[master]\n", "[master]\nuser = \"nobody\"\n", 1);
    let path = dir.join("lbctl.toml");
    write_file(&path, &text);
    let master = Master::start(&dir, &path);
    assert_eq!(
        uids(master.pid()).map(|u| u.1),
        Some(0),
        "the master stays root"
    );
    let workers = master.workers();
    assert_eq!(workers.len(), 2, "workers: {workers:?}");
    for w in &workers {
        assert_eq!(
            uids(*w),
            Some((nobody.uid.as_raw(), nobody.uid.as_raw())),
            "worker {w} did not drop to nobody"
        );
    }
    assert_eq!(fetch_ok(conf.bind()), "hello");
}
