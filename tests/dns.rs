//! Servers found by DNS, end to end: a real dnsmasq on a loopback port (its
//! records changed during the test), lbctl with `resolve = "1s"` entries
//! pointed at it by `[resolver] nameservers`, and backends on 127.0.0.x.
//! A records: both addresses serve; a changed answer reaches new
//! connections without a reload while the removed address drains; with
//! dnsmasq gone the last good set keeps serving and status shows the
//! failure. SRV: two ports with their weights, a higher priority as backup.
//! Skips, saying so, only when dnsmasq is not installed.

use crate::util::backend::Backend;
use crate::util::{
    Conf, Lbctl, Master, TempDir, fetch, free_addr, free_port, wait_until, write_file,
};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn dnsmasq_bin() -> Option<PathBuf> {
    ["/usr/sbin/dnsmasq", "/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A dnsmasq answering on 127.0.0.1:`port` from a hosts file and a conf
/// file of `srv-host` lines; killed on drop.
struct Dnsmasq {
    child: Option<Child>,
    port: u16,
    conf: PathBuf,
    hosts: PathBuf,
}

impl Dnsmasq {
    fn start(dir: &TempDir, hosts: &str, srv: &str) -> Dnsmasq {
        let mut d = Dnsmasq {
            child: None,
            port: free_port(),
            conf: dir.join("dnsmasq.conf"),
            hosts: dir.join("hosts"),
        };
        write_file(&d.hosts, hosts);
        write_file(&d.conf, srv);
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let bin = dnsmasq_bin().expect("dnsmasq");
        let mut cmd = Command::new(bin);
        cmd.arg("--no-daemon")
            .arg(format!("--port={}", self.port))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--pid-file=")
            .arg("--local-ttl=0")
            .arg(format!("--addn-hosts={}", self.hosts.display()))
            .arg(format!("--conf-file={}", self.conf.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if nix::unistd::geteuid().is_root() {
            // Stay root: the test's files are not readable by "nobody".
            cmd.arg("--user=root");
        }
        self.child = Some(cmd.spawn().expect("spawn dnsmasq"));
        let port = self.port;
        assert!(
            wait_until(WAIT, || udp_answers(port)),
            "dnsmasq never answered on port {port}"
        );
    }

    /// New hosts: dnsmasq re-reads addn-hosts on SIGHUP.
    fn set_hosts(&self, hosts: &str) {
        write_file(&self.hosts, hosts);
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGHUP,
            );
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn nameserver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something answers a DNS query on 127.0.0.1:`port`.
fn udp_answers(port: u16) -> bool {
    let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01x\x00\x00\x01\x00\x01";
    if sock.send_to(q, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    sock.recv(&mut buf).is_ok()
}

/// A lbctl config with one listen whose servers are `servers` (TOML) and
/// `[resolver]` pointing at `ns`.
fn write_conf(dir: &TempDir, servers: &str, balance: &str, ns: &str) -> PathBuf {
    write_conf_admin(dir, servers, balance, ns, None)
}

/// As [`write_conf`], with an `[admin]` listener on `admin`.
fn write_conf_admin(
    dir: &TempDir,
    servers: &str,
    balance: &str,
    ns: &str,
    admin: Option<SocketAddr>,
) -> PathBuf {
    let placeholder: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    // One worker: the weighted split is exact only within one worker's
    // balancer (with two, SO_REUSEPORT splits the connections at random).
    let mut conf = Conf::new(dir, &[placeholder])
        .workers(1)
        .listen(|l| l.balance(balance));
    if let Some(a) = admin {
        conf = conf.admin(a, None);
    }
    let text = conf.to_toml().replace(
        "servers = [ { addr = \"127.0.0.1:9\" } ]",
        &format!("servers = [ {servers} ]"),
    );
    let text = format!("[resolver]\nnameservers = [\"{ns}\"]\ntimeout = \"300ms\"\n\n{text}");
    let path = dir.join("lbctl.toml");
    write_file(&path, &text);
    path
}

fn skip() -> bool {
    if dnsmasq_bin().is_none() {
        eprintln!("dns: SKIPPED: dnsmasq is not installed (apt-get install dnsmasq-base)");
        return true;
    }
    false
}

/// The first `dns` row of `lbctl status --json`.
fn dns_row(lb: &Lbctl) -> serde_json::Value {
    lb.status_json()["dns"][0].clone()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Replies of `n` new connections through the balancer.
fn replies(bind: SocketAddr, n: usize) -> Vec<String> {
    (0..n).filter_map(|_| fetch(bind).ok()).collect()
}

fn backend_on(ip: [u8; 4], port: u16, reply: &str) -> Backend {
    Backend::fixed_at(SocketAddr::from((ip, port)), reply)
}

#[test]
fn a_records_join_and_leave_the_pool_without_a_reload() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let _b2 = backend_on([127, 0, 0, 2], port, "b2");
    let _b3 = backend_on([127, 0, 0, 3], port, "b3");
    let _b4 = backend_on([127, 0, 0, 4], port, "b4");
    let mut dns = Dnsmasq::start(&dir, "127.0.0.2 api.test\n127.0.0.3 api.test\n", "");
    let servers = format!("{{ addr = \"api.test:{port}\", resolve = \"1s\", max = 4 }}");
    let admin = free_addr();
    let path = write_conf_admin(
        &dir,
        &servers,
        "round_robin",
        &dns.nameserver(),
        Some(admin),
    );
    Lbctl::new(&dir, &path).run("check", &[]).assert_success();
    let m = Master::start(&dir, &path);
    let lb = Lbctl::new(&dir, &path);
    let bind = listen_bind(&path);

    // Both A records serve.
    assert!(
        wait_until(WAIT, || {
            let r = replies(bind, 6);
            r.iter().any(|x| x == "b2") && r.iter().any(|x| x == "b3")
        }),
        "both addresses should serve; status: {}\n{}",
        lb.status_json(),
        m.describe()
    );
    let row = dns_row(&lb);
    assert_eq!(row["result"], "ok", "{row}");
    assert_eq!(strings(&row["addresses"]).len(), 2, "{row}");
    let metrics = http_get(admin, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lbctl_dns_addresses{") && l.ends_with(" 2")),
        "{metrics}"
    );

    // A reload: the new generation's slots start from the last good answer.
    lb.run("reload", &[]).assert_success();
    let row = dns_row(&lb);
    assert_eq!(
        strings(&row["addresses"]).len(),
        2,
        "at once after the reload: {row}"
    );
    let r = replies(bind, 6);
    assert!(
        r.iter().any(|x| x == "b2") && r.iter().any(|x| x == "b3"),
        "{r:?}"
    );

    // A connection held open on b2, then b2 leaves the answer and b4 joins.
    let mut held = None;
    for _ in 0..20 {
        let mut c = TcpStream::connect(bind).expect("connect");
        let mut buf = [0u8; 2];
        if c.read_exact(&mut buf).is_ok() && &buf == b"b2" {
            held = Some(c);
            break;
        }
    }
    let mut held = held.expect("a connection to b2");
    let generation = lb.status_json()["generation"].clone();
    dns.set_hosts("127.0.0.3 api.test\n127.0.0.4 api.test\n");
    assert!(
        wait_until(WAIT, || {
            let r = replies(bind, 6);
            r.iter().any(|x| x == "b4") && !r.iter().any(|x| x == "b2")
        }),
        "new connections should reach b3 and b4 only; status: {}",
        lb.status_json()
    );
    let r = replies(bind, 8);
    assert!(r.iter().all(|x| x == "b3" || x == "b4"), "{r:?}");
    assert_eq!(
        lb.status_json()["generation"],
        generation,
        "no reload happened"
    );
    // b2 drains: its connection is still open (lbctl does not close it).
    let b2 = format!("127.0.0.2:{port}");
    assert!(
        strings(&dns_row(&lb)["draining"]).contains(&b2),
        "{}",
        dns_row(&lb)
    );
    held.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut rest = [0u8; 1];
    match held.read(&mut rest) {
        Ok(0) => {} // b2's half-close was relayed; the connection itself stays.
        Ok(_) => panic!("unexpected bytes"),
        Err(e) => assert!(
            e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut,
            "{e}"
        ),
    }
    assert!(
        std::io::Write::write_all(&mut held, b"x").is_ok(),
        "the drained connection is still open"
    );
    drop(held);
    assert!(
        wait_until(WAIT, || !strings(&dns_row(&lb)["draining"]).contains(&b2)),
        "b2 should leave once its connection closed: {}",
        dns_row(&lb)
    );

    // The nameserver goes away: the last good set keeps serving.
    dns.stop();
    assert!(
        wait_until(WAIT, || dns_row(&lb)["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("failed"))),
        "status should show the failed lookup: {}",
        dns_row(&lb)
    );
    let row = dns_row(&lb);
    assert_eq!(strings(&row["addresses"]).len(), 2, "{row}");
    let r = replies(bind, 6);
    assert!(
        r.iter().any(|x| x == "b3") && r.iter().any(|x| x == "b4"),
        "{r:?}"
    );
    let text = lb.run("status", &[]);
    text.assert_contains("api.test");
    assert!(
        wait_until(WAIT, || m.stderr().contains("dns: lookup of api.test")),
        "the failure is logged: {}",
        m.describe()
    );
}

#[test]
fn srv_records_give_ports_weights_and_a_backup_tier() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let _a = backend_on([127, 0, 0, 2], p1, "p1");
    let _b = backend_on([127, 0, 0, 2], p2, "p2");
    let _c = backend_on([127, 0, 0, 3], p3, "p3");
    let srv = format!(
        "srv-host=_app._tcp.svc.test,a.svc.test,{p1},0,1\n\
         srv-host=_app._tcp.svc.test,a.svc.test,{p2},0,3\n\
         srv-host=_app._tcp.svc.test,b.svc.test,{p3},10,1\n"
    );
    let dns = Dnsmasq::start(&dir, "127.0.0.2 a.svc.test\n127.0.0.3 b.svc.test\n", &srv);
    let servers = "{ addr = \"_app._tcp.svc.test\", resolve = \"1s\", name = \"app\" }";
    let path = write_conf(&dir, servers, "weighted_round_robin", &dns.nameserver());
    let _m = Master::start(&dir, &path);
    let lb = Lbctl::new(&dir, &path);
    let bind = listen_bind(&path);
    assert!(
        wait_until(WAIT, || strings(&dns_row(&lb)["addresses"]).len() == 3),
        "three SRV targets: {}",
        lb.status_json()
    );
    let servers = lb.status_json()["listens"][0]["servers"].clone();
    let find = |port: u16| {
        servers
            .as_array()
            .and_then(|a| {
                a.iter().find(|s| {
                    s["addr"]
                        .as_str()
                        .is_some_and(|x| x.ends_with(&format!(":{port}")))
                })
            })
            .cloned()
            .unwrap_or_else(|| panic!("no row for port {port}: {servers}"))
    };
    assert_eq!(find(p1)["weight"], 1);
    assert_eq!(find(p2)["weight"], 3);
    assert_eq!(find(p3)["backup"], true, "priority 10 is the backup tier");
    let r = replies(bind, 8);
    let n1 = r.iter().filter(|x| *x == "p1").count();
    let n2 = r.iter().filter(|x| *x == "p2").count();
    assert_eq!(
        (n1, n2, r.len()),
        (2, 6, 8),
        "weights 1:3, no backup: {r:?}"
    );
}

/// The body of `GET path` from the admin listener.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut c = TcpStream::connect(addr).expect("connect admin");
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    std::io::Write::write_all(&mut c, req.as_bytes()).expect("send");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

/// The first listen's bind in the written file.
fn listen_bind(path: &Path) -> SocketAddr {
    let text = std::fs::read_to_string(path).expect("read conf");
    let listen = text.find("[[listen]]").map_or(&text[..], |i| &text[i..]);
    listen
        .lines()
        .find_map(|l| {
            l.strip_prefix("bind = \"")
                .and_then(|r| r.strip_suffix('"'))
        })
        .and_then(|a| a.parse().ok())
        .expect("a bind")
}

#[test]
fn health_checks_probe_the_resolved_addresses() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let port = free_port();
    let _b2 = backend_on([127, 0, 0, 2], port, "b2");
    // 127.0.0.5 has nothing listening on `port`: its checks fail.
    let dns = Dnsmasq::start(&dir, "127.0.0.2 chk.test\n127.0.0.5 chk.test\n", "");
    let servers = format!(
        "{{ addr = \"chk.test:{port}\", resolve = \"1s\", max = 2, \
         health = {{ kind = \"tcp\", interval = \"200ms\", timeout = \"200ms\", rise = 1, fall = 1 }} }}"
    );
    let path = write_conf(&dir, &servers, "round_robin", &dns.nameserver());
    let _m = Master::start(&dir, &path);
    let lb = Lbctl::new(&dir, &path);
    let bind = listen_bind(&path);
    let dead = format!("127.0.0.5:{port}");
    let live = format!("127.0.0.2:{port}");
    let state_of = |addr: &str| -> Option<String> {
        lb.status_json()["listens"][0]["servers"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["addr"] == addr).cloned())
            .and_then(|s| s["state"].as_str().map(str::to_string))
    };
    assert!(
        wait_until(WAIT, || state_of(&dead).as_deref() == Some("down")
            && state_of(&live).as_deref() == Some("up")),
        "the unreachable address is checked down, the live one up: {}",
        lb.status_json()
    );
    let r = replies(bind, 6);
    assert_eq!(r, vec!["b2"; 6], "only the live address serves");
}
