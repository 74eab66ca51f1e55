//! Owns the self-tests of the harness (no lbctl involved): backends, temp dir,
//! wait_until, and the /proc process-tree cleanup the Master guard relies on.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::backend::{Backend, refusing_addr};
use crate::util::{
    TempDir, WAIT, children_of, connect, exchange, fetch, kill_master_tree, pid_alive, wait_until,
};

#[test]
fn harness_backends_behave_as_documented() {
    let echo = Backend::echo();
    assert_eq!(exchange(echo.addr(), b"abc").expect("echo"), b"abc");
    let late = Backend::echo_after_eof();
    assert_eq!(
        exchange(late.addr(), b"xyz").expect("echo after eof"),
        b"xyz"
    );
    let fixed = Backend::fixed("Hello, World!");
    assert_eq!(fetch(fixed.addr()).expect("fixed"), "Hello, World!");
    assert_eq!(fixed.accepted(), 1);
    assert!(connect(refusing_addr()).is_err(), "refusing addr accepted");

    let hold = Backend::hold();
    let mut s = connect(hold.addr()).expect("hold connect");
    assert!(wait_until(WAIT, || hold.open_connections() == 1));
    hold.release();
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut buf).expect("EOF after release");
    assert!(buf.is_empty());
}

#[test]
fn harness_temp_dir_is_removed_on_drop() {
    let dir = TempDir::new();
    let p = dir.path().to_path_buf();
    std::fs::write(dir.join("f"), "x").expect("write");
    drop(dir);
    assert!(!p.exists());
}

#[test]
fn harness_kills_a_process_and_its_children() {
    // A parent that ignores SIGTERM, with two children: all must die.
    let mut child = TreeGuard(
        Command::new("sh")
            .arg("-c")
            .arg("trap '' TERM; sleep 100 & sleep 100 & wait")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sh"),
    );
    let pid = child.0.id() as i32;
    assert!(wait_until(WAIT, || children_of(pid).len() == 2));
    let kids = children_of(pid);
    kill_master_tree(pid, Duration::from_millis(200));
    let _ = child.0.wait();
    assert!(!pid_alive(pid));
    assert!(
        wait_until(WAIT, || kids.iter().all(|&k| !pid_alive(k))),
        "children survived: {kids:?}"
    );
}

/// Kills a child and its descendants on drop unless it was already reaped
/// (so a failed assertion leaves no `sh` or `sleep` behind).
struct TreeGuard(Child);

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            kill_master_tree(self.0.id() as i32, Duration::ZERO);
            let _ = self.0.wait();
        }
    }
}
