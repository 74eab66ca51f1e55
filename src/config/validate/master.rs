//! Owns validation of the `[master]` section: `workers` (default: the CPU
//! count, at most [`MAX_WORKERS`]), the `pid_file`, `control_socket` and
//! `log_file` paths (resolved against the config's directory, three different
//! files), `drain_timeout`, and the `user`/`group` names. A new `[master]` key
//! is added here (field in `raw.rs` `RawMaster`, typed field in `mod.rs`
//! `MasterConfig`).

use super::{Result, Validator};
use crate::config::raw::RawMaster;
use crate::config::{ConfigError, MasterConfig};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Upper bound of `workers`.
pub const MAX_WORKERS: usize = 1024;

impl Validator<'_> {
    pub(super) fn master(&self, m: RawMaster) -> Result<MasterConfig> {
        let workers = match &m.workers {
            Some(n) => self.int("master.workers", n, 1, MAX_WORKERS as i64)? as usize,
            None => std::thread::available_parallelism()
                .map(NonZeroUsize::get)
                .unwrap_or(1)
                .min(MAX_WORKERS),
        };
        let workers = NonZeroUsize::new(workers).unwrap_or(NonZeroUsize::MIN);
        let pid_file = self.path(
            "master.pid_file",
            m.pid_file.as_ref(),
            "/run/lbctl/lbctl.pid",
        )?;
        let control_socket = self.path(
            "master.control_socket",
            m.control_socket.as_ref(),
            "/run/lbctl/lbctl.sock",
        )?;
        let log_file = self.path(
            "master.log_file",
            m.log_file.as_ref(),
            "/var/log/lbctl/lbctl.log",
        )?;
        let files = [
            ("master.pid_file", &m.pid_file, &pid_file),
            ("master.control_socket", &m.control_socket, &control_socket),
            ("master.log_file", &m.log_file, &log_file),
        ];
        for (i, (key, raw, path)) in files.iter().enumerate() {
            if let Some((other, _, _)) = files[..i].iter().find(|(_, _, p)| p == path) {
                let message = format!(
                    "'{}' is the same file as {other}, expected a different path",
                    path.display()
                );
                return Err(match raw {
                    Some(raw) => self.invalid(key, raw, message),
                    None => ConfigError::Invalid {
                        key: key.to_string(),
                        line: None,
                        message,
                    },
                });
            }
        }
        let drain_timeout = self.opt_duration(
            "master.drain_timeout",
            m.drain_timeout.as_ref(),
            Duration::from_secs(30),
        )?;
        let user = match &m.user {
            Some(u) => Some(self.account("master.user", u)?),
            None => None,
        };
        let group = match &m.group {
            Some(g) => Some(self.account("master.group", g)?),
            None => None,
        };
        Ok(MasterConfig {
            workers,
            pid_file,
            control_socket,
            log_file,
            drain_timeout,
            user,
            group,
        })
    }

    /// A `user`/`group` name.
    fn account(&self, key: &str, s: &Spanned<String>) -> Result<String> {
        let name = s.get_ref();
        if name.is_empty()
            || name
                .chars()
                .any(|c| c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(self.invalid(
                key,
                s,
                format!(
                    "invalid account name '{}', expected a user or group name such as \"lbctl\"",
                    name.escape_debug()
                ),
            ));
        }
        Ok(name.clone())
    }

    /// A file path; relative paths are resolved against `base`.
    fn path(&self, key: &str, s: Option<&Spanned<String>>, default: &str) -> Result<PathBuf> {
        let Some(s) = s else {
            return Ok(PathBuf::from(default));
        };
        let p = s.get_ref();
        if p.is_empty() || p.contains('\0') {
            return Err(self.invalid(
                key,
                s,
                format!(
                    "invalid path '{}', expected a file path such as \"{default}\"",
                    p.escape_debug()
                ),
            ));
        }
        let p = Path::new(p);
        Ok(if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::{master_with, ok, rejected};

    #[test]
    fn relative_paths_resolve_against_the_base_directory() {
        let c = ok(&master_with(
            "pid_file = \"run/x.pid\"\ncontrol_socket = \"./x.sock\"",
        ));
        assert_eq!(c.master.pid_file, PathBuf::from("/etc/lbctl/run/x.pid"));
        assert_eq!(
            c.master.control_socket,
            PathBuf::from("/etc/lbctl/./x.sock")
        );
    }

    #[test]
    fn workers_outside_one_to_1024_are_rejected() {
        for bad in ["0", "1025", "-1"] {
            let msg = rejected(
                &master_with(&format!("workers = {bad}")),
                "master.workers",
                2,
            );
            assert!(msg.contains(bad) && msg.contains("from 1 to 1024"), "{msg}");
        }
        ok(&master_with("workers = 1024"));
    }

    #[test]
    fn empty_paths_and_shared_files_are_rejected() {
        rejected(&master_with("log_file = \"\""), "master.log_file", 2);
        let msg = rejected(
            &master_with("pid_file = \"/tmp/x\"\ncontrol_socket = \"/tmp/x\""),
            "master.control_socket",
            3,
        );
        assert!(msg.contains("master.pid_file"), "{msg}");
    }

    #[test]
    fn empty_user_or_group_is_rejected() {
        rejected(&master_with("user = \"\""), "master.user", 2);
        rejected(&master_with("group = \"a b\""), "master.group", 2);
    }
}
