//! Owns the CLI contract tests: `check` on good and bad files, exit codes when
//! nothing runs, and refusing a second `start`.

use crate::util::backend::Backend;
use crate::util::{
    CMD_TIMEOUT, Conf, DaemonGuard, Lbctl, Master, TempDir, fetch_ok, manifest_path, pid_alive,
    read_pid_file, run_raw_in, write_file,
};

#[test]
fn check_accepts_the_shipped_config() {
    let dir = TempDir::new();
    let conf = manifest_path("conf/lbctl.toml");
    assert!(conf.exists(), "{} is missing", conf.display());
    let out = Lbctl::new(&dir, &conf).run("check", &[]);
    out.assert_success().assert_contains("ok");
}

#[test]
fn check_accepts_a_generated_config() {
    let dir = TempDir::new();
    let backend = Backend::echo();
    let path = Conf::new(&dir, &[backend.addr()]).write(&dir);
    Lbctl::new(&dir, &path)
        .run("check", &[])
        .assert_success()
        .assert_contains("ok");
}

#[test]
fn check_rejects_an_unknown_balance_naming_key_and_line() {
    let dir = TempDir::new();
    let conf = Conf::new(&dir, &["127.0.0.1:6001".parse().expect("addr")])
        .listen(|l| l.balance("fastest_first"));
    let path = conf.write(&dir);
    let out = Lbctl::new(&dir, &path).run("check", &[]);
    out.assert_code(1)
        .assert_contains("listen[0].balance")
        .assert_contains("line");
}

#[test]
fn check_rejects_a_bad_bind_address_naming_key_and_line() {
    let dir = TempDir::new();
    let conf = Conf::new(&dir, &["127.0.0.1:6001".parse().expect("addr")]);
    let text = conf.to_toml().replace(
        &format!("bind = \"{}\"", conf.bind()),
        "bind = \"127.0.0.1:notaport\"",
    );
    let path = dir.join("lbctl.toml");
    write_file(&path, &text);
    let out = Lbctl::new(&dir, &path).run("check", &[]);
    out.assert_code(1)
        .assert_contains("listen[0].bind")
        .assert_contains("line");
}

#[test]
fn check_rejects_a_bad_server_address_naming_key_and_line() {
    let dir = TempDir::new();
    let conf = Conf::new(
        &dir,
        &[
            "127.0.0.1:6001".parse().expect("addr"),
            "127.0.0.1:6002".parse().expect("addr"),
        ],
    );
    let text = conf
        .to_toml()
        .replace("addr = \"127.0.0.1:6002\"", "addr = \"300.1.2.3:6002\"");
    let path = dir.join("lbctl.toml");
    write_file(&path, &text);
    let out = Lbctl::new(&dir, &path).run("check", &[]);
    out.assert_code(1)
        .assert_contains("listen[0].servers[1].addr")
        .assert_contains("line");
}

#[test]
fn check_on_a_missing_file_exits_1() {
    let dir = TempDir::new();
    let path = dir.join("does-not-exist.toml");
    let out = Lbctl::new(&dir, &path).run("check", &[]);
    out.assert_code(1);
    assert!(
        !out.all().trim().is_empty(),
        "expected an error message\n{}",
        out.describe()
    );
}

#[test]
fn status_when_not_running_exits_2() {
    let dir = TempDir::new();
    let path = Conf::new(&dir, &["127.0.0.1:6001".parse().expect("addr")]).write(&dir);
    Lbctl::new(&dir, &path)
        .run("status", &[])
        .assert_code(2)
        .assert_contains("not running");
}

#[test]
fn stop_when_not_running_exits_2() {
    let dir = TempDir::new();
    let path = Conf::new(&dir, &["127.0.0.1:6001".parse().expect("addr")]).write(&dir);
    Lbctl::new(&dir, &path)
        .run("stop", &[])
        .assert_code(2)
        .assert_contains("not running");
}

#[test]
fn second_start_fails_while_the_first_keeps_running() {
    let dir = TempDir::new();
    let backend = Backend::fixed("Hello, World!");
    let conf = Conf::new(&dir, &[backend.addr()]);
    let path = conf.write(&dir);
    let mut master = Master::start(&dir, &path);
    let lbctl = Lbctl::new(&dir, &path);

    let second = lbctl.run_timeout("start", &[], std::time::Duration::from_secs(10));
    second.assert_failure().assert_contains("already running");

    assert!(
        !master.has_exited(),
        "first master exited after the second start\n{}",
        master.describe()
    );
    assert_eq!(fetch_ok(conf.bind()), "Hello, World!");
    lbctl.run("status", &[]).assert_success();
}

#[test]
fn daemon_start_fails_with_the_error_when_the_port_is_taken() {
    let dir = TempDir::new();
    let backend = Backend::fixed("Hello, World!");
    let conf = Conf::new(&dir, &[backend.addr()]);
    // A plain listener (no SO_REUSEPORT) owns the port.
    let _squatter = std::net::TcpListener::bind(conf.bind()).expect("bind squatter");
    let path = conf.write(&dir);
    let mut guard = DaemonGuard::new(&conf);
    let out = Lbctl::new(&dir, &path).run("start", &["-d"]);
    if let Some(pid) = read_pid_file(&conf.pid_file) {
        guard.track(pid);
    }
    out.assert_failure()
        .assert_contains(&conf.bind().to_string());
    assert!(
        !read_pid_file(&conf.pid_file).is_some_and(pid_alive),
        "a master is running although start -d failed\n{}",
        out.describe()
    );
}

#[test]
fn daemon_start_with_an_invalid_file_exits_1_naming_the_key() {
    let dir = TempDir::new();
    let conf = Conf::new(&dir, &["127.0.0.1:6001".parse().expect("addr")])
        .listen(|l| l.balance("fastest_first"));
    let path = conf.write(&dir);
    let _guard = DaemonGuard::new(&conf);
    Lbctl::new(&dir, &path)
        .run("start", &["-d"])
        .assert_code(1)
        .assert_contains("listen[0].balance");
    assert!(
        !conf.pid_file.exists(),
        "pid file written for an invalid config"
    );
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let dir = TempDir::new();
    let out = run_raw_in(dir.path(), &["frobnicate"], CMD_TIMEOUT);
    out.assert_code(1).assert_contains("frobnicate");
    let out = run_raw_in(dir.path(), &["status", "--no-such-flag"], CMD_TIMEOUT);
    out.assert_code(1);
    let out = run_raw_in(dir.path(), &["--help"], CMD_TIMEOUT);
    out.assert_code(0).assert_contains("reload");
}
