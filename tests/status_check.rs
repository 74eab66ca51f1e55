//! Owns the `status --check` tests (keepalived's `track_script`): exit 0 with
//! `ok: …` while serving, non-zero with the reason when a listen has no usable
//! server (health checks down, or disabled at runtime), and when nothing runs.

use crate::util::backend::{Backend, refusing_addr};
use crate::util::{CmdOutput, Conf, Lbctl, Master, TempDir, WAIT, wait_until};

/// Runs `status --check` until `pred` holds; returns the last output.
fn check_until(lbctl: &Lbctl, pred: impl Fn(&CmdOutput) -> bool) -> (bool, CmdOutput) {
    let mut last = lbctl.run("status", &["--check"]);
    let ok = wait_until(WAIT, || {
        last = lbctl.run("status", &["--check"]);
        pred(&last)
    });
    (ok, last)
}

#[test]
fn status_check_exits_0_while_serving_and_1_once_every_server_is_disabled() {
    let dir = TempDir::new();
    let a = Backend::echo();
    let conf = Conf::new(&dir, &[a.addr()]).workers(2);
    let path = conf.write(&dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);

    let (ok, out) = check_until(&lbctl, |o| o.code == Some(0));
    assert!(ok, "never serving\n{}", out.describe());
    assert_eq!(
        out.stdout.trim(),
        "ok: 2 workers, 1 listen serving",
        "{}",
        out.describe()
    );

    let target = format!("web/{}", a.addr());
    lbctl.run("server", &["disable", &target]).assert_success();
    let out = lbctl.run("status", &["--check"]);
    out.assert_code(1);
    assert_eq!(
        out.stdout.trim(),
        "not serving: listen web has no usable server (1 disabled)",
        "{}",
        out.describe()
    );

    lbctl.run("server", &["enable", &target]).assert_success();
    lbctl.run("status", &["--check"]).assert_code(0);
}

#[test]
fn status_check_fails_with_the_reason_when_health_checks_mark_every_server_down() {
    let dir = TempDir::new();
    let dead = [refusing_addr(), refusing_addr()];
    let conf = Conf::new(&dir, &dead).workers(1).listen(|l| {
        l.health(
            "{ kind = \"tcp\", interval = \"100ms\", timeout = \"200ms\", rise = 1, fall = 1 }",
        )
    });
    let path = conf.write(&dir);
    let _master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);

    let (down, out) = check_until(&lbctl, |o| o.stdout.contains("(2 down)"));
    assert!(down, "servers never reported down\n{}", out.describe());
    out.assert_code(1);
    assert_eq!(
        out.stdout.trim(),
        "not serving: listen web has no usable server (2 down)",
        "{}",
        out.describe()
    );

    // One server comes back: serving again.
    let revived = Backend::fixed_at(dead[0], "revived");
    let (ok, out) = check_until(&lbctl, |o| o.code == Some(0));
    assert!(
        ok,
        "never serving after a server came back\n{}",
        out.describe()
    );
    out.assert_contains("ok: 1 worker, 1 listen serving");
    drop(revived);
}

#[test]
fn status_check_when_not_running_exits_2() {
    let dir = TempDir::new();
    let path = Conf::new(&dir, &["127.0.0.1:6001".parse().expect("addr")]).write(&dir);
    Lbctl::new(&dir, &path)
        .run("status", &["--check"])
        .assert_code(2)
        .assert_contains("not running");
}

#[test]
fn status_check_rejects_json_and_watch() {
    let dir = TempDir::new();
    let path = Conf::new(&dir, &["127.0.0.1:6001".parse().expect("addr")]).write(&dir);
    let lbctl = Lbctl::new(&dir, &path);
    lbctl.run("status", &["--check", "--json"]).assert_code(1);
    lbctl.run("status", &["--check", "-d"]).assert_code(1);
}
