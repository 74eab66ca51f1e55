//! Owns `lbctl demo`: the seed's example, runnable with no config and no
//! backends of your own. Two built-in nodes answer HTTP with
//! "Hello, World!" (127.0.0.1:6001) and "Hello, Workerman!" (127.0.0.1:6002)
//! in a child process, and a master runs `conf/demo.toml` (a round-robin
//! balancer on 127.0.0.1:8080) in the foreground. Ctrl-C stops all of it.

use crate::config;
use crate::error::Error;
use crate::master;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The demo's config, compiled in.
pub const DEMO_TOML: &str = include_str!("../conf/demo.toml");

/// Where the demo writes its config for the other commands to find.
pub const DEMO_PATH: &str = "/tmp/lbctl-demo.toml";

/// The two nodes: address and greeting.
pub const NODES: [(&str, &str); 2] = [
    ("127.0.0.1:6001", "Hello, World!"),
    ("127.0.0.1:6002", "Hello, Workerman!"),
];

/// Runs the demo until Ctrl-C.
pub fn run() -> Result<ExitCode, Error> {
    let cfg = config::parse(DEMO_TOML, Path::new("/tmp"))?;
    let mut listeners = Vec::new();
    for (addr, greeting) in NODES {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| Error::Runtime(format!("demo node address {addr}: {e}")))?;
        let l = TcpListener::bind(addr).map_err(|e| {
            Error::Runtime(format!(
                "demo node cannot listen on {addr}: {e} (is a demo already running?)"
            ))
        })?;
        listeners.push((l, greeting));
    }
    // The nodes live in their own process: the master must stay
    // single-threaded to fork workers safely.
    // SAFETY: this process is single-threaded at this point.
    match unsafe { nix::unistd::fork() }
        .map_err(|e| Error::Runtime(format!("cannot fork the demo nodes: {e}")))?
    {
        nix::unistd::ForkResult::Child => {
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
            let _ = nix::sys::prctl::set_name(c"lbctl: demo nodes");
            serve_nodes(listeners);
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Parent { .. } => drop(listeners),
    }
    eprintln!(
        "lbctl demo: nodes {} and {}; balancer on http://{} — try `curl {}` (Ctrl-C to stop)",
        NODES[0].0, NODES[1].0, cfg.listens[0].bind, cfg.listens[0].bind
    );
    // Written out so `lbctl status -c /tmp/lbctl-demo.toml` (and reload)
    // work against the demo like against any master.
    let path = Path::new(DEMO_PATH);
    if let Err(e) = std::fs::write(path, DEMO_TOML) {
        eprintln!("lbctl demo: cannot write {DEMO_PATH}: {e} (status -c will not find it)");
    }
    eprintln!("lbctl demo: in another terminal: lbctl status -c {DEMO_PATH}");
    Ok(master::run_foreground(path, cfg)?)
}

fn serve_nodes(listeners: Vec<(TcpListener, &'static str)>) {
    let mut handles = Vec::new();
    for (l, greeting) in listeners {
        handles.push(std::thread::spawn(move || {
            for stream in l.incoming().flatten() {
                std::thread::spawn(move || answer(stream, greeting));
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}

/// Reads the request head (bounded, with a timeout), answers, closes.
fn answer(mut stream: TcpStream, greeting: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!("{greeting}\n");
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}
