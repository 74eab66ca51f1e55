//! TOML text → `lbctl::config::parse`: any text yields a `Config` or a
//! `ConfigError`, never a panic, and both can be printed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match lbctl::config::parse(src, Path::new("/etc/lbctl")) {
        Ok(config) => {
            assert!(!config.listens.is_empty(), "a valid config has a listen");
            let _ = format!("{config:?}");
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
        }
    }
});
