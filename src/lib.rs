//! lbctl: a high-availability TCP load balancer with Workerman's process model.
//!
//! A master process binds every listening socket (one `SO_REUSEPORT` socket per
//! `[[listen]]` per worker slot), forks N single-threaded worker processes that
//! each run a mio event loop and relay connections to a pool of backend servers,
//! supervises them, runs health checks, and answers the control socket used by
//! `lbctl status / reload / stop`. Workers share no heap: they share one
//! memory-mapped region of atomics per configuration generation ([`shm`]).
//!
//! The crate is the library behind the thin `lbctl` binary; [`cli::run`] is the
//! entry point.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

pub mod balance;
pub mod channel;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod error;
pub mod health;
pub mod http;
pub mod limits;
pub mod master;
pub mod netutil;
pub mod proxy_protocol;
pub mod serving;
pub mod shm;
pub mod stats;
pub mod worker;
