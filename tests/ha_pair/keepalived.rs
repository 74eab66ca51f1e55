//! Owns keepalived in the HA pair tests: the shipped
//! `conf/keepalived-{master,backup}.conf` rendered for the lab (only the VIP,
//! the lbctl binary and the lbctl config path change), `keepalived -t` on the
//! result, and the [`Keepalived`] guard that runs one in a node's namespace in
//! the foreground with its own pid files and log, and stops it (and its VRRP
//! child) on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::lab::system_tool;
use crate::util::{TempDir, manifest_path, proc_stat, read_pid_file, signal, wait_until};

/// The placeholders of the shipped files and what the lab puts there.
const SHIPPED_VIP: &str = "192.0.2.100/24";
const SHIPPED_LBCTL: &str = "/usr/local/bin/lbctl";
const SHIPPED_CONFIG: &str = "/etc/lbctl/lbctl.toml";

/// True when a `keepalived` binary can be run.
pub fn installed() -> bool {
    Command::new(system_tool("keepalived"))
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The shipped file `conf/keepalived-<variant>.conf`.
pub fn shipped(variant: &str) -> String {
    let path = manifest_path(&format!("conf/keepalived-{variant}.conf"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `text` with its VIP, lbctl binary and lbctl config replaced; panics if a
/// placeholder is missing (the file changed under the test).
pub fn render(text: &str, vip: &str, lbctl: &Path, config: &Path) -> String {
    let mut out = text.to_string();
    for (from, to) in [
        (SHIPPED_VIP, vip.to_string()),
        (SHIPPED_LBCTL, lbctl.display().to_string()),
        (SHIPPED_CONFIG, config.display().to_string()),
    ] {
        assert!(
            out.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains(from)),
            "the shipped keepalived config no longer uses {from:?} outside comments"
        );
        out = out.replace(from, &to);
    }
    out
}

/// `text` with its commented-out `# nopreempt` line made a setting.
pub fn uncomment_nopreempt(text: &str) -> String {
    assert_eq!(
        text.matches("\n    # nopreempt\n").count(),
        1,
        "the shipped keepalived config has no single commented-out nopreempt line"
    );
    text.replace("\n    # nopreempt\n", "\n    nopreempt\n")
}

/// `keepalived -t -f path`: the config test's verdict, with what it printed.
pub fn config_test(path: &Path) -> Result<(), String> {
    let out = Command::new(system_tool("keepalived"))
        .arg("-t")
        .arg("-f")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run keepalived: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "keepalived -t -f {} failed ({}):\n{}{}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `keepalived -n` (foreground, VRRP only) inside a namespace.
#[derive(Debug)]
pub struct Keepalived {
    child: Child,
    vrrp_pid_file: PathBuf,
    log: PathBuf,
    name: String,
}

impl Keepalived {
    /// Starts keepalived on `config` in `ns`; pid files and the log
    /// (stdout and stderr) go to `dir`.
    pub fn start(name: &str, ns: &str, config: &Path, dir: &TempDir) -> Keepalived {
        let log = dir.join("keepalived.log");
        let vrrp_pid_file = dir.join("keepalived-vrrp.pid");
        let out = std::fs::File::create(&log).expect("create keepalived log");
        let err = out.try_clone().expect("clone keepalived log");
        let child = Command::new(system_tool("ip"))
            .args(["netns", "exec", ns])
            .arg(system_tool("keepalived"))
            // Foreground, VRRP only, log to the console (detailed), no syslog.
            .args(["-n", "-P", "-l", "-D", "-G"])
            .arg("-f")
            .arg(config)
            .arg("-p")
            .arg(dir.join("keepalived.pid"))
            .arg("-r")
            .arg(&vrrp_pid_file)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn keepalived in {ns}: {e}"));
        Keepalived {
            child,
            vrrp_pid_file,
            log,
            name: name.to_string(),
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!(
            "--- keepalived on {} ---\n{text}\n------------------------",
            self.name
        )
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
        let vrrp = read_pid_file(&self.vrrp_pid_file);
        let pid = i32::try_from(self.child.id()).unwrap_or(0);
        // TERM: keepalived stops its VRRP child, which gives up the VIP.
        signal(pid, Signal::SIGTERM);
        let exited = wait_until(Duration::from_secs(3), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // The VRRP child, if TERM did not end it (a pid file's pid is
        // killed only while it still names a keepalived).
        if let Some(v) = vrrp
            && matches!(proc_stat(v), Some((s, _, comm)) if comm == "keepalived" && s != 'Z')
        {
            signal(v, Signal::SIGKILL);
        }
    }
}
