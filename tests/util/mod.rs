//! Owns the integration-test harness: a self-removing [`TempDir`], free loopback
//! ports, [`wait_until`], a TOML [`Conf`] writer, the [`Lbctl`] command wrapper on
//! the real binary, the [`Master`] guard that runs `lbctl start` in the foreground
//! and leaves no process behind, and `/proc` helpers to find and kill workers.
//!
//! Each concern lives in its own file; this module re-exports them so tests
//! write `crate::util::X` whatever file `X` is in.

#![allow(dead_code)]

// Loopback backends: echo, fixed reply, slow, refusing.
pub mod backend;
// Running `lbctl`: CmdOutput, the Lbctl wrapper, run_raw_in / run_bin_in.
pub mod cmd;
// The TOML config writer: ServerConf, ListenConf, Conf, write_file.
pub mod conf;
// Handshakes under way on a listener (NETLINK_SOCK_DIAG), for backends that stop cleanly.
pub mod handshakes;
// HTTP/1.1 test backend: keep-alive, pipelining, /headers, /sha256, /download, /ws, kill.
pub mod http_backend;
// Blocking HTTP/1.1 client: HttpConn (keep-alive, pipelining, raw bytes), Response, get.
pub mod http_client;
// HTTP framing shared by both: buffered Wire, bodies by length/chunked/close, chunk encoding.
pub mod http_wire;
// JSON accessors that panic with the whole document.
pub mod json;
// Client load of the zero-downtime tests: short and long connections, every byte checked.
pub mod load;
// Balancing-test clients: chosen source addresses, reply tallies, config patches.
pub mod loadgen;
// The Master guard (foreground `lbctl start`) and the DaemonGuard.
pub mod master;
// Plain clients: connect, fetch, exchange, pseudo_random_bytes.
pub mod net;
// /proc helpers, signals, kill_master_tree, pid files.
pub mod procs;
// Scripted backends of the HA tests: killable, HTTP status, line protocol, silent, greeter.
pub mod scripted;
// TempDir, free ports, wait_until.
pub mod tmp;

pub use cmd::*;
pub use conf::*;
pub use master::*;
pub use net::*;
pub use procs::*;
pub use tmp::*;
