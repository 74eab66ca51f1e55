//! Owns the HA-pair tests: two balancer nodes, each running the real `lbctl`
//! and keepalived with the shipped `conf/keepalived-{master,backup}.conf`,
//! in the test's own network namespaces joined by a bridge (lb1, lb2, a
//! client, a backend; 10.99.0.0/24 exists only inside them). A client opens
//! new connections to the VIP all along; when lb1's lbctl is killed (-9),
//! stopped cleanly, or cannot reach its backend, the VIP moves to lb2 and new
//! connections are served by lb2 within 3s of the fault. With preemption (the
//! shipped default) lb1 takes the VIP back once it serves again; with
//! `nopreempt` (uncommented on both nodes) the VIP stays on lb2.
//!
//! Needs root and `ip netns` (skips with the reason otherwise) and keepalived
//! (`.ci/run` installs it; missing, the test fails and says so).

// The namespaces, the bridge and the `ip` commands.
mod lab;
// The shipped keepalived configs rendered for the lab; the keepalived guard.
mod keepalived;
// The backend that names the balancer, and the client loop.
mod traffic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{CmdOutput, Conf, Lbctl, Master, TempDir, lbctl_bin, wait_until, write_file};
use keepalived::Keepalived;
use lab::{Host, Lab, PREFIX, VIP};
use traffic::{BACKEND_PORT, ClientLoop, LB_PORT, PeerReply, reply_from};

/// From the fault to the first new connection served by the peer.
const FAILOVER_BOUND: Duration = Duration::from_secs(3);
/// How long a step may take before the test gives up on it.
const STEP_WAIT: Duration = Duration::from_secs(15);

/// The same lbctl config on both nodes (but for the per-node pid file,
/// socket and log, which live in the node's temp dir): every address on
/// `LB_PORT`, one backend, fast TCP health checks.
fn lbctl_conf(dir: &TempDir) -> Conf {
    let backend = SocketAddr::from((Host::Backend.ip(), BACKEND_PORT));
    Conf::new(dir, &[backend])
        .workers(2)
        .drain_timeout("2s")
        .listen(|mut l| {
            l.bind = SocketAddr::from(([0, 0, 0, 0], LB_PORT));
            l.connect_timeout = "500ms".to_string();
            l.health(
                "{ kind = \"tcp\", interval = \"100ms\", timeout = \"200ms\", rise = 1, fall = 1 }",
            )
        })
}

/// One balancer node: lbctl and keepalived in its namespace.
struct Node {
    host: Host,
    ns: String,
    // Dropped first: keepalived (so nothing reacts to lbctl going), then lbctl.
    keepalived: Option<Keepalived>,
    master: Option<Master>,
    config: PathBuf,
    keepalived_conf: PathBuf,
    dir: TempDir,
}

impl Node {
    /// Writes the node's lbctl config and its keepalived config (the shipped
    /// `variant`, rendered; `nopreempt` uncommented if asked), which
    /// `keepalived -t` must accept.
    fn new(lab: &Lab, host: Host, variant: &str, preempt: Preempt) -> Node {
        let dir = TempDir::new();
        let config = lbctl_conf(&dir).write(&dir);
        let keepalived_conf = dir.join("keepalived.conf");
        let mut text = keepalived::render(
            &keepalived::shipped(variant),
            &format!("{VIP}/{PREFIX}"),
            Path::new(lbctl_bin()),
            &config,
        );
        if preempt == Preempt::No {
            text = keepalived::uncomment_nopreempt(&text);
        }
        write_file(&keepalived_conf, &text);
        if let Err(e) = keepalived::config_test(&keepalived_conf) {
            panic!("{} ({variant}): {e}", host.role());
        }
        Node {
            host,
            ns: lab.ns(host),
            keepalived: None,
            master: None,
            config,
            keepalived_conf,
            dir,
        }
    }

    /// `lbctl start` in the node's namespace, in the foreground; returns once
    /// it accepts.
    fn start_lbctl(&mut self) {
        let mut cmd = Command::new(lab::system_tool("ip"));
        cmd.args(["netns", "exec", &self.ns, lbctl_bin(), "start", "-c"])
            .arg(&self.config);
        let mut master = Master::spawn_command(&self.dir, &self.config, cmd);
        master.wait_accepting();
        self.master = Some(master);
    }

    fn start_keepalived(&mut self) {
        self.keepalived = Some(Keepalived::start(
            self.host.role(),
            &self.ns,
            &self.keepalived_conf,
            &self.dir,
        ));
    }

    fn lbctl(&self) -> Lbctl {
        Lbctl::new(&self.dir, &self.config)
    }

    /// kill -9 of the lbctl master (its workers follow it).
    fn kill_lbctl(&mut self) {
        let master = self.master.as_mut().expect("lbctl runs");
        master.signal(Signal::SIGKILL);
        assert!(
            master.wait_exit(Duration::from_secs(5)).is_some(),
            "the master survived kill -9"
        );
    }

    /// `lbctl stop` (returns once the master is gone).
    fn stop_lbctl(&mut self) {
        self.lbctl().run("stop", &[]).assert_success();
        let master = self.master.as_mut().expect("lbctl runs");
        assert!(
            master.wait_exit(Duration::from_secs(5)).is_some(),
            "the master still runs after `lbctl stop`"
        );
    }

    /// `lbctl status --check` against the node's lbctl.
    fn check(&self) -> CmdOutput {
        self.lbctl().run("status", &["--check"])
    }
}

/// The lab with its traffic and both nodes. Fields drop in order: the
/// client, the nodes (keepalived, then lbctl), the backend, the namespaces.
struct Pair {
    client: ClientLoop,
    lb1: Node,
    lb2: Node,
    _backend: PeerReply,
    lab: Lab,
}

/// Whether the nodes run the shipped default (preemption) or `nopreempt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preempt {
    Yes,
    No,
}

impl Pair {
    /// Builds the lab, starts the backend, lbctl on both nodes, then
    /// keepalived on both (the README's order), and the client; returns once
    /// lb1 (the higher priority) serves the VIP. `None`: namespaces cannot be
    /// made here (the reason is printed).
    fn start(preempt: Preempt) -> Option<Pair> {
        let lab = match Lab::new() {
            Ok(lab) => lab,
            Err(why) => {
                eprintln!("ha_pair skipped: {why}");
                return None;
            }
        };
        assert!(
            keepalived::installed(),
            "keepalived is not installed (apt-get install keepalived; .ci/run does)"
        );
        let backend = PeerReply::start(&lab.ns(Host::Backend), Host::Backend.ip().into());
        let mut lb1 = Node::new(&lab, Host::Lb1, "master", preempt);
        let mut lb2 = Node::new(&lab, Host::Lb2, "backup", preempt);
        lb1.start_lbctl();
        lb2.start_lbctl();
        lb1.start_keepalived();
        lb2.start_keepalived();
        let client = ClientLoop::start(&lab.ns(Host::Client));
        let pair = Pair {
            client,
            lb1,
            lb2,
            _backend: backend,
            lab,
        };
        let t = Instant::now();
        let (_, first) = pair.wait_serving(Host::Lb1, t, "start (lb1 has the higher priority)");
        eprintln!(
            "ha_pair: start: lb1 serves the VIP {:.2}s after keepalived started",
            first.as_secs_f64()
        );
        pair.lb2.check().assert_success();
        Some(pair)
    }

    /// Who holds the VIP and what the client saw since `since`, for failure
    /// messages (the guards print keepalived's and lbctl's logs as the
    /// panic unwinds).
    fn report(&self, since: Instant) -> String {
        format!("{}\n{}", self.lab.vip_report(), self.client.summary(since))
    }

    /// Waits until `host` alone holds the VIP and a new connection made
    /// after `since` was relayed by it; returns (VIP seen moved, first
    /// connection served) since `since`.
    fn wait_serving(&self, host: Host, since: Instant, what: &str) -> (Duration, Duration) {
        let other = if host == Host::Lb1 {
            Host::Lb2
        } else {
            Host::Lb1
        };
        let reply = reply_from(host.ip());
        let mut moved = None;
        let ok = wait_until(STEP_WAIT, || {
            if moved.is_none() && self.lab.holds_vip(host) && !self.lab.holds_vip(other) {
                moved = Some(since.elapsed());
            }
            moved.is_some() && self.client.first_reply(since, &reply).is_some()
        });
        assert!(
            ok,
            "{what}: {} did not take over within {STEP_WAIT:?}\n{}",
            host.role(),
            self.report(since)
        );
        let served = self
            .client
            .first_reply(since, &reply)
            .map(|t| t.saturating_duration_since(since))
            .unwrap_or_default();
        (moved.unwrap_or_default(), served)
    }

    /// Injects a fault into lb1 and asserts the failover: the VIP on lb2
    /// alone, and new connections served by lb2 within [`FAILOVER_BOUND`]
    /// of the fault, and every one after that too. Returns the time to the
    /// first connection served.
    fn fail_over(&mut self, what: &str, inject: impl FnOnce(&mut Pair)) -> Duration {
        let t0 = Instant::now();
        inject(self);
        let (moved, served) = self.wait_serving(Host::Lb2, t0, what);
        eprintln!(
            "ha_pair: {what}: VIP on lb2 after {:.2}s, first new connection served by lb2 after {:.2}s",
            moved.as_secs_f64(),
            served.as_secs_f64()
        );
        assert!(
            served <= FAILOVER_BOUND,
            "{what}: lb2 served new connections only {served:?} after the fault (bound {FAILOVER_BOUND:?})\n{}",
            self.report(t0)
        );
        // Once lb2 serves, it goes on serving: no failed connection after the first.
        std::thread::sleep(Duration::from_millis(300));
        let first = t0 + served;
        let reply = reply_from(Host::Lb2.ip());
        let after = self.client.since(first);
        assert!(
            after
                .iter()
                .all(|a| a.outcome.as_deref() == Ok(reply.as_str())),
            "{what}: a connection failed after lb2 took over\n{}",
            self.client.summary(first)
        );
        served
    }

    /// lb1 serves again (lbctl started anew): with preemption it takes the VIP
    /// back from lb2.
    fn recover_lb1(&mut self, what: &str) {
        let t = Instant::now();
        self.lb1.start_lbctl();
        let (_, served) = self.wait_serving(Host::Lb1, t, what);
        eprintln!(
            "ha_pair: {what}: lb1 serves the VIP again {:.2}s after its lbctl was started",
            served.as_secs_f64()
        );
    }
}

#[test]
fn vip_moves_to_lb2_when_lb1_is_killed_stopped_or_cannot_reach_its_backend() {
    let Some(mut pair) = Pair::start(Preempt::Yes) else {
        return;
    };

    let killed = pair.fail_over("lb1's lbctl killed -9", |p| p.lb1.kill_lbctl());
    pair.recover_lb1("after kill -9");

    let stopped = pair.fail_over("lb1's lbctl stopped", |p| p.lb1.stop_lbctl());
    pair.recover_lb1("after stop");

    let cut = pair.fail_over("lb1 cannot reach the backend", |p| {
        p.lab.cut_route(Host::Lb1, Host::Backend.ip());
    });
    let verdict = pair.lb1.check();
    verdict
        .assert_code(1)
        .assert_contains("not serving: listen web has no usable server");
    pair.lb2.check().assert_success();

    eprintln!(
        "ha_pair: failover to the first connection served by lb2: kill -9 {:.2}s, stop {:.2}s, backend unreachable {:.2}s",
        killed.as_secs_f64(),
        stopped.as_secs_f64(),
        cut.as_secs_f64()
    );
}

/// With `nopreempt` on both nodes, lb1 serving again after a failover
/// leaves the VIP on lb2 (where preemption would take it back in about 3s).
#[test]
fn with_nopreempt_the_vip_stays_on_lb2_when_lb1_serves_again() {
    let Some(mut pair) = Pair::start(Preempt::No) else {
        return;
    };
    pair.fail_over("lb1's lbctl killed -9 (nopreempt)", |p| p.lb1.kill_lbctl());
    let t = Instant::now();
    pair.lb1.start_lbctl();
    let back = wait_until(STEP_WAIT, || pair.lb1.check().code == Some(0));
    assert!(
        back,
        "lb1 does not serve again\n{}",
        pair.lb1.check().describe()
    );
    // Twice as long as a preempting lb1 takes to come back (measured 2.9s).
    std::thread::sleep(Duration::from_secs(6).saturating_sub(t.elapsed()));
    assert!(
        pair.lab.holds_vip(Host::Lb2) && !pair.lab.holds_vip(Host::Lb1),
        "with nopreempt the VIP left lb2\n{}",
        pair.report(t)
    );
    let reply = reply_from(Host::Lb2.ip());
    let since = Instant::now() - Duration::from_secs(1);
    let last = pair.client.since(since);
    assert!(
        !last.is_empty()
            && last
                .iter()
                .all(|a| a.outcome.as_deref() == Ok(reply.as_str())),
        "with nopreempt new connections should go on reaching lb2\n{}",
        pair.client.summary(since)
    );
}

/// The two shipped files are one config: their settings differ only in the
/// node's `router_id` and `priority`; they carry the check the README shows.
#[test]
fn shipped_keepalived_confs_differ_only_in_router_id_and_priority() {
    let master = keepalived::shipped("master");
    let backup = keepalived::shipped("backup");
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let (m, b) = (settings(&master), settings(&backup));
    assert_eq!(m.len(), b.len(), "the files have different settings");
    let differing: Vec<(&String, &String)> = m.iter().zip(&b).filter(|(x, y)| x != y).collect();
    for (x, y) in &differing {
        let key = |l: &str| l.split_whitespace().next().unwrap_or("").to_string();
        assert!(
            key(x) == key(y) && (key(x) == "router_id" || key(x) == "priority"),
            "master and backup differ in more than router_id/priority: {x:?} vs {y:?}"
        );
    }
    assert!(m.contains(&"priority 150".to_string()), "{m:?}");
    assert!(b.contains(&"priority 100".to_string()), "{b:?}");
    for line in [
        "script \"/usr/local/bin/lbctl status --check -c /etc/lbctl/lbctl.toml\"",
        "interval 1",
        "fall 2",
        "rise 2",
        "weight 0",
        "state BACKUP",
        "track_script {",
    ] {
        assert!(m.iter().any(|l| l == line), "no {line:?} in {m:?}");
    }
    assert!(
        master.contains("# nopreempt"),
        "nopreempt is discussed in the file"
    );
}
