//! Owns the control-socket credentials test: with the socket opened to every
//! user, a client running as uid 65534 (via `setpriv`) gets `status` and
//! `connections` but is refused `reload`, `stop` and runtime server changes
//! ("permission denied: uid 65534 may not ..."), and the master logs each
//! refusal and keeps serving. Runs only as root with `setpriv` installed;
//! elsewhere it says so and passes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::backend::Backend;
use crate::util::{CMD_TIMEOUT, CmdOutput, Conf, Lbctl, Master, TempDir, fetch_ok, lbctl_bin};
use crate::util::{run_bin_in, wait_until};

const OTHER_UID: &str = "65534";

fn setpriv() -> Option<&'static Path> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
}

/// `lbctl <args...> -c config` as uid/gid 65534 with no supplementary groups.
fn run_as_other(setpriv: &Path, dir: &TempDir, config: &Path, args: &[&str]) -> CmdOutput {
    let config = config.display().to_string();
    let mut argv = vec![
        "--reuid",
        OTHER_UID,
        "--regid",
        OTHER_UID,
        "--clear-groups",
        lbctl_bin(),
    ];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["-c", &config]);
    run_bin_in(setpriv, dir.path(), &argv, CMD_TIMEOUT)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

#[test]
fn another_user_may_read_status_but_not_reload_stop_or_change_servers() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: control socket credentials cannot be tested here (needs setuid)");
        return;
    }
    let Some(setpriv) = setpriv() else {
        eprintln!("no setpriv on this machine: control socket credentials test skipped");
        return;
    };
    let dir = TempDir::new();
    let backend = Backend::fixed("hello");
    let conf = Conf::new(&dir, &[backend.addr()]);
    let path = conf.write(&dir);
    let master = Master::start(&dir, &path);
    // Open the way for the other user: the directory, the file and the
    // socket (0600 by default, so only root could connect at all).
    chmod(dir.path(), 0o755);
    chmod(&path, 0o644);
    chmod(&conf.control_socket, 0o666);

    let status = run_as_other(setpriv, &dir, &path, &["status", "--json"]);
    status.assert_success();
    assert_eq!(
        status.json()["master_pid"],
        master.pid(),
        "{}",
        status.describe()
    );
    run_as_other(setpriv, &dir, &path, &["connections"]).assert_success();

    let target = format!("web/{}", backend.addr());
    let refusals = [
        (vec!["reload"], "reload".to_string()),
        (vec!["stop"], "stop".to_string()),
        (
            vec!["server", "disable", &target],
            format!("disable {target}"),
        ),
        (
            vec!["server", "weight", &target, "5"],
            format!("set the weight of {target}"),
        ),
    ];
    for (args, action) in &refusals {
        run_as_other(setpriv, &dir, &path, args)
            .assert_failure()
            .assert_contains(&format!(
                "permission denied: uid {OTHER_UID} may not {action}"
            ));
    }
    let logged = wait_until(crate::util::WAIT, || {
        master
            .stderr()
            .matches(&format!("refused request from uid {OTHER_UID}"))
            .count()
            == refusals.len()
    });
    assert!(logged, "each refusal is logged\n{}", master.describe());

    // Nothing changed: still generation 1, serving, and root may reload.
    let lbctl = Lbctl::new(&dir, &path);
    let status = lbctl.status_json();
    assert_eq!(status["generation"], 1);
    let server = &status["listens"][0]["servers"][0];
    assert_eq!(
        (&server["state"], &server["weight"]),
        (&"up".into(), &1.into()),
        "{status}"
    );
    assert_eq!(fetch_ok(conf.bind()), "hello");
    lbctl
        .run("reload", &[])
        .assert_success()
        .assert_contains("reloaded: generation 2");
}
