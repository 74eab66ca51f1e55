//! Owns the TOML config writer: [`ServerConf`], [`ListenConf`], [`Conf`], and
//! [`write_file`] (atomic replace, so a reloading master never reads half a file).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{TempDir, free_addr};

/// One `servers = [...]` entry.
#[derive(Debug, Clone)]
pub struct ServerConf {
    pub addr: SocketAddr,
    pub weight: Option<u32>,
    pub name: Option<String>,
    pub backup: bool,
    /// More keys of the entry, e.g. `send_proxy = "v2"`.
    pub more: Vec<String>,
}

impl ServerConf {
    pub fn new(addr: SocketAddr) -> ServerConf {
        ServerConf {
            addr,
            weight: None,
            name: None,
            backup: false,
            more: Vec::new(),
        }
    }

    /// Adds a key of the entry as written, e.g. `send_proxy = "v2"`.
    pub fn key(mut self, kv: &str) -> ServerConf {
        self.more.push(kv.to_string());
        self
    }

    pub fn weight(mut self, w: u32) -> ServerConf {
        self.weight = Some(w);
        self
    }

    pub fn name(mut self, n: &str) -> ServerConf {
        self.name = Some(n.to_string());
        self
    }

    pub fn backup(mut self) -> ServerConf {
        self.backup = true;
        self
    }

    fn to_toml(&self) -> String {
        let mut s = format!("{{ addr = \"{}\"", self.addr);
        if let Some(w) = self.weight {
            let _ = write!(s, ", weight = {w}");
        }
        if let Some(n) = &self.name {
            let _ = write!(s, ", name = \"{n}\"");
        }
        if self.backup {
            s.push_str(", backup = true");
        }
        for kv in &self.more {
            let _ = write!(s, ", {kv}");
        }
        s.push_str(" }");
        s
    }
}

/// One `[[listen]]` section.
#[derive(Debug, Clone)]
pub struct ListenConf {
    pub name: String,
    pub bind: SocketAddr,
    pub balance: String,
    pub retries: u32,
    pub connect_timeout: String,
    pub idle_timeout: String,
    pub servers: Vec<ServerConf>,
    /// Raw inline table, e.g. `{ kind = "tcp", interval = "200ms", ... }`.
    pub health: Option<String>,
    /// `mode = "..."`.
    pub mode: String,
    /// More keys of the `timeouts` table, e.g. `header = "1s"`.
    pub more_timeouts: String,
    /// More lines of the `[[listen]]` section, written after its keys
    /// (e.g. `forwarded = [...]`, or whole `[[listen.route]]` tables).
    pub extra: Vec<String>,
}

impl ListenConf {
    /// A `round_robin` listen named `web` on a fresh free port.
    pub fn new(servers: &[SocketAddr]) -> ListenConf {
        ListenConf {
            name: "web".to_string(),
            bind: free_addr(),
            balance: "round_robin".to_string(),
            retries: 2,
            connect_timeout: "1s".to_string(),
            idle_timeout: "30s".to_string(),
            servers: servers.iter().map(|a| ServerConf::new(*a)).collect(),
            health: None,
            mode: "tcp".to_string(),
            more_timeouts: String::new(),
            extra: Vec::new(),
        }
    }

    /// `mode = "http"`.
    pub fn http(mut self) -> ListenConf {
        self.mode = "http".to_string();
        self
    }

    /// Adds keys to the `timeouts` table (`header = "1s", server = "2s"`).
    pub fn timeouts(mut self, keys: &str) -> ListenConf {
        self.more_timeouts = keys.to_string();
        self
    }

    /// Adds a line to the section (after its own keys).
    pub fn line(mut self, line: &str) -> ListenConf {
        self.extra.push(line.to_string());
        self
    }

    pub fn balance(mut self, b: &str) -> ListenConf {
        self.balance = b.to_string();
        self
    }

    pub fn retries(mut self, r: u32) -> ListenConf {
        self.retries = r;
        self
    }

    pub fn servers(mut self, servers: Vec<ServerConf>) -> ListenConf {
        self.servers = servers;
        self
    }

    pub fn health(mut self, inline_table: &str) -> ListenConf {
        self.health = Some(inline_table.to_string());
        self
    }
}

/// A whole config file whose pid file, socket and log live in a temp dir.
#[derive(Debug, Clone)]
pub struct Conf {
    pub workers: usize,
    pub pid_file: PathBuf,
    pub control_socket: PathBuf,
    pub log_file: PathBuf,
    pub drain_timeout: String,
    pub listens: Vec<ListenConf>,
    /// `[admin]`: its bind and optional token.
    pub admin: Option<(SocketAddr, Option<String>)>,
}

impl Conf {
    /// A 2-worker config with one listen over `servers`.
    pub fn new(dir: &TempDir, servers: &[SocketAddr]) -> Conf {
        Conf {
            workers: 2,
            pid_file: dir.join("lbctl.pid"),
            control_socket: dir.join("lbctl.sock"),
            log_file: dir.join("lbctl.log"),
            drain_timeout: "5s".to_string(),
            listens: vec![ListenConf::new(servers)],
            admin: None,
        }
    }

    pub fn workers(mut self, n: usize) -> Conf {
        self.workers = n;
        self
    }

    pub fn drain_timeout(mut self, d: &str) -> Conf {
        self.drain_timeout = d.to_string();
        self
    }

    /// An `[admin]` section on `bind`, with `token` if given.
    pub fn admin(mut self, bind: SocketAddr, token: Option<&str>) -> Conf {
        self.admin = Some((bind, token.map(str::to_string)));
        self
    }

    /// Edits the first listen.
    pub fn listen(mut self, f: impl FnOnce(ListenConf) -> ListenConf) -> Conf {
        let l = self.listens.remove(0);
        self.listens.insert(0, f(l));
        self
    }

    /// The first listen's address (where clients connect).
    pub fn bind(&self) -> SocketAddr {
        self.listens[0].bind
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "[master]");
        let _ = writeln!(s, "workers = {}", self.workers);
        let _ = writeln!(s, "pid_file = \"{}\"", self.pid_file.display());
        let _ = writeln!(s, "control_socket = \"{}\"", self.control_socket.display());
        let _ = writeln!(s, "log_file = \"{}\"", self.log_file.display());
        let _ = writeln!(s, "drain_timeout = \"{}\"", self.drain_timeout);
        if let Some((bind, token)) = &self.admin {
            let _ = writeln!(s, "\n[admin]\nbind = \"{bind}\"");
            if let Some(t) = token {
                let _ = writeln!(s, "token = \"{t}\"");
            }
        }
        for l in &self.listens {
            let _ = writeln!(s);
            let _ = writeln!(s, "[[listen]]");
            let _ = writeln!(s, "name = \"{}\"", l.name);
            let _ = writeln!(s, "bind = \"{}\"", l.bind);
            let _ = writeln!(s, "mode = \"{}\"", l.mode);
            let _ = writeln!(s, "balance = \"{}\"", l.balance);
            let _ = writeln!(s, "retries = {}", l.retries);
            let more = if l.more_timeouts.is_empty() {
                String::new()
            } else {
                format!(", {}", l.more_timeouts)
            };
            let _ = writeln!(
                s,
                "timeouts = {{ connect = \"{}\", idle = \"{}\"{more} }}",
                l.connect_timeout, l.idle_timeout
            );
            let servers: Vec<String> = l.servers.iter().map(ServerConf::to_toml).collect();
            let _ = writeln!(s, "servers = [ {} ]", servers.join(", "));
            if let Some(h) = &l.health {
                let _ = writeln!(s, "health = {h}");
            }
            for line in &l.extra {
                let _ = writeln!(s, "{line}");
            }
        }
        s
    }

    /// Writes the TOML to `path` (replacing it) and returns the path.
    pub fn write_to(&self, path: &Path) -> PathBuf {
        write_file(path, &self.to_toml());
        path.to_path_buf()
    }

    /// Writes `lbctl.toml` in `dir`.
    pub fn write(&self, dir: &TempDir) -> PathBuf {
        self.write_to(&dir.join("lbctl.toml"))
    }
}

/// Writes `text` to `path` atomically (temp file + rename), so a master that
/// reads the file during a reload never sees half of it.
pub fn write_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}
