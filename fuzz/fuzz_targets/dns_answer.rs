//! `resolve::wire::parse` fed any bytes as the answer to query id 0x1234
//! (the first two bytes are overwritten with the id half of the time, so
//! the header checks pass and the record parsing is reached). Checks: no
//! panic; every name read is lower case, at most 253 characters.
#![no_main]

use lbctl::resolve::wire::{Record, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    if buf.len() >= 3 && data[0] & 1 == 1 {
        buf[0] = 0x12;
        buf[1] = 0x34;
        buf[2] |= 0x80;
    }
    if let Ok(records) = parse(&buf, 0x1234) {
        for r in records {
            let name = match &r {
                Record::A { name, .. } | Record::Aaaa { name, .. } => name,
                Record::Srv { target, .. } => target,
            };
            assert!(name.len() <= 253, "{name}");
            assert_eq!(*name, name.to_ascii_lowercase());
        }
    }
});
