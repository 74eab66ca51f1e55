//! Owns the JSON helpers: field accessors that panic with the whole document on
//! a shape mismatch, and shortcuts into a `status --json` document.

use serde_json::Value;

#[track_caller]
pub fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    match v.get(key) {
        Some(x) => x,
        None => panic!("missing key {key:?} in {v:#}"),
    }
}

#[track_caller]
pub fn u64_of(v: &Value, key: &str) -> u64 {
    match field(v, key).as_u64() {
        Some(x) => x,
        None => panic!("key {key:?} is not an unsigned integer in {v:#}"),
    }
}

#[track_caller]
pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    match field(v, key).as_str() {
        Some(x) => x,
        None => panic!("key {key:?} is not a string in {v:#}"),
    }
}

#[track_caller]
pub fn bool_of(v: &Value, key: &str) -> bool {
    match field(v, key).as_bool() {
        Some(x) => x,
        None => panic!("key {key:?} is not a bool in {v:#}"),
    }
}

#[track_caller]
pub fn array_of<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    match field(v, key).as_array() {
        Some(x) => x,
        None => panic!("key {key:?} is not an array in {v:#}"),
    }
}

/// `workers[*]` of a status document.
#[track_caller]
pub fn workers(status: &Value) -> &Vec<Value> {
    array_of(status, "workers")
}

/// `(slot, pid, generation, state)` of each worker.
#[track_caller]
pub fn worker_rows(status: &Value) -> Vec<(u64, i32, u64, String)> {
    workers(status)
        .iter()
        .map(|w| {
            (
                u64_of(w, "slot"),
                i32::try_from(u64_of(w, "pid")).expect("pid fits i32"),
                u64_of(w, "generation"),
                str_of(w, "state").to_string(),
            )
        })
        .collect()
}

/// Worker pids of a status document.
#[track_caller]
pub fn worker_pids(status: &Value) -> Vec<i32> {
    worker_rows(status).into_iter().map(|r| r.1).collect()
}

/// Sum of a worker counter over all workers.
#[track_caller]
pub fn worker_sum(status: &Value, key: &str) -> u64 {
    workers(status).iter().map(|w| u64_of(w, key)).sum()
}

/// `listens[i].servers`.
#[track_caller]
pub fn servers(status: &Value, listen: usize) -> &Vec<Value> {
    let listens = array_of(status, "listens");
    match listens.get(listen) {
        Some(l) => array_of(l, "servers"),
        None => panic!("no listens[{listen}] in {status:#}"),
    }
}
