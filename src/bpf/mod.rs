//! Owns lbctl's raw `bpf(2)` calls: creating a map, loading a program (with
//! the verifier's log kept for the error), attaching a program to a map,
//! and updating, deleting and walking map elements. Each command fills a
//! zeroed `union bpf_attr` prefix of its own (`#[repr(C)]` structs below,
//! laid out as in linux/bpf.h); the kernel rejects non-zero bytes it does
//! not know, so nothing here depends on a newer kernel than the fields
//! used. Programs are written in Rust (`asm.rs`); what lbctl loads is in
//! `relay.rs`. No C toolchain, no object files, no libbpf.
//!
//! This and `relay.rs` are where the unsafe for BPF lives: the syscall
//! itself and the pointers it is given, each block with its `SAFETY` line.

pub mod asm;
pub mod relay;

use nix::errno::Errno;
use nix::libc;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_int = 4;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;

/// `BPF_MAP_TYPE_SOCKHASH`: sockets keyed by arbitrary bytes.
pub const MAP_TYPE_SOCKHASH: u32 = 18;
/// `BPF_PROG_TYPE_SK_SKB`: runs on the bytes a socket in a sockmap receives.
pub const PROG_TYPE_SK_SKB: u32 = 14;
/// `BPF_SK_SKB_STREAM_VERDICT`: the verdict program of a sockmap.
pub const ATTACH_SK_SKB_STREAM_VERDICT: u32 = 5;

/// What failed, and the kernel's errno (plus the verifier's log for a
/// refused program).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfError {
    /// The step, in words ("map create", "program load", ...).
    pub step: &'static str,
    /// The kernel's answer.
    pub errno: Errno,
    /// The verifier's log (program load only), trimmed.
    pub log: String,
}

impl BpfError {
    fn new(step: &'static str, errno: Errno) -> BpfError {
        BpfError {
            step,
            errno,
            log: String::new(),
        }
    }
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?} ({})", self.step, self.errno, self.errno.desc())?;
        if !self.log.is_empty() {
            write!(f, "; verifier: {}", self.log)?;
        }
        Ok(())
    }
}

impl std::error::Error for BpfError {}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// Calls bpf(2) with `attr`, a `#[repr(C)]` prefix of `union bpf_attr`.
fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> Result<libc::c_long, Errno> {
    let size = std::mem::size_of::<T>() as libc::c_uint;
    // SAFETY: `attr` is a live, exclusively borrowed, fully initialised
    // #[repr(C)] struct of `size` bytes laid out as the prefix of
    // `union bpf_attr` the command reads; every pointer inside it was set
    // by the caller to memory that outlives this call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size) };
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this fd for us alone; nobody else
    // owns or closes it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(name.bytes().take(15)) {
        *o = b;
    }
    out
}

/// Creates a map; its fd closes it (with the worker, at the latest).
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> Result<OwnedFd, BpfError> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_name: name16(name),
        ..MapCreateAttr::default()
    };
    sys_bpf(BPF_MAP_CREATE, &mut attr)
        .map(owned)
        .map_err(|e| BpfError::new("map create", e))
}

/// Loads a program of `prog_type` (license "GPL": the sockmap helpers are
/// GPL-only). A refusal is tried once more with the verifier's log, which
/// the error carries.
pub fn prog_load(prog_type: u32, insns: &[asm::Insn], name: &str) -> Result<OwnedFd, BpfError> {
    let license = b"GPL\0";
    let load = |log: Option<&mut Vec<u8>>| {
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name16(name),
            ..ProgLoadAttr::default()
        };
        if let Some(buf) = log {
            attr.log_level = 1;
            attr.log_size = buf.len() as u32;
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        sys_bpf(BPF_PROG_LOAD, &mut attr).map(owned)
    };
    match load(None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut buf = vec![0u8; 64 * 1024];
            let errno = match load(Some(&mut buf)) {
                Ok(fd) => return Ok(fd),
                Err(e) => e,
            };
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let log = String::from_utf8_lossy(&buf[..end]);
            let log: Vec<&str> = log.lines().rev().take(4).collect();
            let mut err = BpfError::new("program load", if errno == first { errno } else { first });
            err.log = log.into_iter().rev().collect::<Vec<_>>().join(" | ");
            Err(err)
        }
    }
}

/// Attaches `prog` to `map` as `attach_type`.
pub fn prog_attach(map: &OwnedFd, prog: &OwnedFd, attach_type: u32) -> Result<(), BpfError> {
    let mut attr = AttachAttr {
        target_fd: map.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        ..AttachAttr::default()
    };
    sys_bpf(BPF_PROG_ATTACH, &mut attr)
        .map(|_| ())
        .map_err(|e| BpfError::new("program attach", e))
}

/// Sets `key` to the socket `fd` in a sockmap or sockhash (`BPF_ANY`).
pub fn map_update_fd(map: &OwnedFd, key: &[u8], fd: RawFd) -> Result<(), Errno> {
    let value = fd as u64;
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value_or_next: &value as *const u64 as u64,
        ..ElemAttr::default()
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
}

/// Removes `key` from a map.
pub fn map_delete(map: &OwnedFd, key: &[u8]) -> Result<(), Errno> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        ..ElemAttr::default()
    };
    sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(|_| ())
}

/// The first key of a map with 8-byte keys (None: the map is empty).
pub fn map_first_key_u64(map: &OwnedFd) -> Result<Option<u64>, Errno> {
    let mut next = 0u64;
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: 0,
        value_or_next: &mut next as *mut u64 as u64,
        ..ElemAttr::default()
    };
    match sys_bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(Some(next)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}
