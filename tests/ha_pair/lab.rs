//! Owns the HA pair's network: the test's own namespaces (a switch holding a
//! bridge, and lb1, lb2, client, backend, each with an `eth0` on the bridge,
//! addresses in 10.99.0.0/24 that exist only inside them), `ip` commands run
//! against them, running code on a thread inside one ([`in_netns`],
//! [`enter`]), and the [`Lab`] guard that kills whatever still runs inside
//! them and deletes them on drop, even on panic. Nothing is added to the
//! host's own namespace.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::Signal;

use crate::util::{pid_alive, signal, wait_until};

/// The clients' address, moved between lb1 and lb2 by keepalived.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
/// Prefix length of the lab's one subnet.
pub const PREFIX: u8 = 24;

/// One host of the lab: its role and its address on the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Lb1,
    Lb2,
    Client,
    Backend,
}

impl Host {
    pub const ALL: [Host; 4] = [Host::Lb1, Host::Lb2, Host::Client, Host::Backend];

    /// Short role name: the suffix of the namespace, the bridge port's name.
    pub fn role(self) -> &'static str {
        match self {
            Host::Lb1 => "lb1",
            Host::Lb2 => "lb2",
            Host::Client => "client",
            Host::Backend => "backend",
        }
    }

    /// Its address on `eth0`.
    pub fn ip(self) -> Ipv4Addr {
        match self {
            Host::Lb1 => Ipv4Addr::new(10, 99, 0, 11),
            Host::Lb2 => Ipv4Addr::new(10, 99, 0, 12),
            Host::Client => Ipv4Addr::new(10, 99, 0, 30),
            Host::Backend => Ipv4Addr::new(10, 99, 0, 40),
        }
    }
}

/// A system tool (`ip`, `keepalived`): the first of the PATH, /usr/sbin and
/// /sbin that has it (a PATH without the sbin directories is common), else
/// the bare name.
pub fn system_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// What `ip` printed, or why it failed.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new(system_tool("ip"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip args...`, panicking with its error.
#[track_caller]
pub fn ip_ok(args: &[&str]) -> String {
    ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// The namespaces of one test run; deleted (with everything in them) on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    /// Created so far, in order (the switch first).
    created: Vec<String>,
}

impl Lab {
    /// Builds the switch and the four hosts. `Err` says why namespaces cannot
    /// be made here (not root, no `ip netns`): the caller skips. A failure
    /// after the first namespace exists is a test failure (panics; what was
    /// made is removed).
    pub fn new() -> Result<Lab, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root: network namespaces cannot be made".to_string());
        }
        // Unique per test in this process: tests run side by side.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let mut lab = Lab {
            prefix: format!("lbha-{}-{n}", std::process::id()),
            created: Vec::new(),
        };
        let sw = lab.switch_ns();
        ip(&["netns", "add", &sw]).map_err(|e| format!("no network namespaces here ({e})"))?;
        lab.created.push(sw.clone());
        ip_ok(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", &sw, "link", "set", "br0", "up"]);
        for host in Host::ALL {
            let ns = lab.ns(host);
            ip_ok(&["netns", "add", &ns]);
            lab.created.push(ns.clone());
            // Both ends are created where they live: nothing in the host's namespace.
            ip_ok(&[
                "link",
                "add",
                "eth0",
                "netns",
                &ns,
                "type",
                "veth",
                "peer",
                "name",
                host.role(),
                "netns",
                &sw,
            ]);
            ip_ok(&["-n", &sw, "link", "set", host.role(), "master", "br0"]);
            ip_ok(&["-n", &sw, "link", "set", host.role(), "up"]);
            let addr = format!("{}/{PREFIX}", host.ip());
            ip_ok(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            ip_ok(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        Ok(lab)
    }

    fn switch_ns(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// The namespace of `host` (for `ip netns exec` and [`enter`]).
    pub fn ns(&self, host: Host) -> String {
        format!("{}-{}", self.prefix, host.role())
    }

    /// True when `host`'s `eth0` carries the VIP now.
    pub fn holds_vip(&self, host: Host) -> bool {
        let ns = self.ns(host);
        match ip(&["-n", &ns, "-o", "-4", "addr", "show", "dev", "eth0"]) {
            Ok(text) => text.contains(&format!(" {VIP}/")),
            Err(_) => false,
        }
    }

    /// Which of lb1 and lb2 hold the VIP, in words (for failure messages).
    pub fn vip_report(&self) -> String {
        let on: Vec<&str> = [Host::Lb1, Host::Lb2]
            .into_iter()
            .filter(|h| self.holds_vip(*h))
            .map(Host::role)
            .collect();
        if on.is_empty() {
            "VIP on neither node".to_string()
        } else {
            format!("VIP on {}", on.join(" and "))
        }
    }

    /// Makes `to` unreachable from `host` (a route of type `unreachable`):
    /// connects fail at once with "no route to host".
    pub fn cut_route(&self, host: Host, to: Ipv4Addr) {
        let dst = format!("{to}/32");
        ip_ok(&["-n", &self.ns(host), "route", "add", "unreachable", &dst]);
    }

    /// Pids of every process inside `ns`.
    fn pids_in(ns: &str) -> Vec<i32> {
        ip(&["netns", "pids", ns])
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Only the test's own processes run in its namespaces: whatever the
        // other guards left (a keepalived child, a respawned worker) goes.
        let mut left = Vec::new();
        for ns in &self.created {
            left.extend(Lab::pids_in(ns));
        }
        for &pid in &left {
            signal(pid, Signal::SIGKILL);
        }
        wait_until(Duration::from_secs(3), || {
            !left.iter().any(|&p| pid_alive(p))
        });
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("ha_pair: {e}");
            }
        }
    }
}

/// Moves the calling thread into network namespace `ns`: every socket it
/// creates from now on lives there.
#[track_caller]
pub fn enter(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// Runs `f` on a thread inside `ns` and returns its result (sockets it made
/// stay in `ns` whichever thread uses them later).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let thread = s.spawn(|| {
            enter(ns);
            f()
        });
        match thread.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}
