//! Owns the checks of a validated [`Config`] that need the host rather than
//! the text: the master's files must not be the config file itself, the
//! control socket path must fit a unix socket address, and `user`/`group`
//! must exist. The account lookups may go through NSS to the network, so a
//! reload (which runs in the master's loop) makes them only when the names
//! differ from the running config's; `lbctl check` and `start` always do.

use std::path::Path;

use super::{Config, ConfigError, MasterConfig};

impl MasterConfig {
    /// Whether `other` names the same `user` and `group` (so an identity
    /// resolved for one holds for the other).
    pub fn same_accounts(&self, other: &MasterConfig) -> bool {
        self.user == other.user && self.group == other.group
    }
}

/// Runs the host checks on `config`, read from `path`. With `running` (a
/// reload), `user` and `group` are looked up only when they changed.
pub(super) fn check(
    config: &Config,
    path: &Path,
    running: Option<&Config>,
) -> Result<(), ConfigError> {
    let own = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for (key, p) in [
        ("master.pid_file", &config.master.pid_file),
        ("master.control_socket", &config.master.control_socket),
        ("master.log_file", &config.master.log_file),
    ] {
        let resolved = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        if resolved == own {
            return Err(invalid(
                key,
                format!("'{}' is the config file itself", p.display()),
            ));
        }
    }
    // sockaddr_un holds 108 bytes including the terminating NUL.
    let len = config.master.control_socket.as_os_str().len();
    if len > 107 {
        return Err(invalid(
            "master.control_socket",
            format!("path is {len} bytes long, a unix socket path holds at most 107"),
        ));
    }
    if running.is_none_or(|old| !old.master.same_accounts(&config.master)) {
        check_accounts(&config.master)?;
    }
    Ok(())
}

/// `user` and `group` name accounts this host knows.
fn check_accounts(master: &MasterConfig) -> Result<(), ConfigError> {
    if let Some(name) = &master.user
        && !matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
    {
        return Err(invalid("master.user", format!("no such user '{name}'")));
    }
    if let Some(name) = &master.group
        && !matches!(nix::unistd::Group::from_name(name), Ok(Some(_)))
    {
        return Err(invalid("master.group", format!("no such group '{name}'")));
    }
    Ok(())
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        line: None,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{load, load_for_reload};
    use std::path::PathBuf;

    /// Writes a config naming `user`/`group` into a fresh temp dir.
    fn file_as(tag: &str, user: &str, group: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lbctl-host-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("lbctl.toml");
        let text = format!(
            "[master]\nworkers = 1\nuser = \"{user}\"\ngroup = \"{group}\"\n\
             [[listen]]\nname = \"web\"\nbind = \"127.0.0.1:1\"\n\
             servers = [ {{ addr = \"127.0.0.1:2\" }} ]\n"
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// `path`'s config as a master would be running it (no host checks).
    fn running(path: &std::path::Path) -> crate::config::Config {
        let text = std::fs::read_to_string(path).expect("read config");
        crate::config::parse(&text, path.parent().expect("dir")).expect("valid text")
    }

    #[test]
    fn a_reload_looks_up_no_account_whose_name_is_unchanged() {
        // Names no host has: a lookup would fail, so Ok proves none was made.
        let path = file_as(
            "same",
            "lbctl-test-no-such-user",
            "lbctl-test-no-such-group",
        );
        let old = running(&path);
        let new = load_for_reload(&path, &old).expect("unchanged names are not looked up");
        assert!(new.master.same_accounts(&old.master));
        // `lbctl check` and `start` still look them up.
        let err = load(&path)
            .expect_err("check looks the user up")
            .to_string();
        assert!(err.contains("master.user: no such user"), "{err}");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn a_reload_looks_up_the_accounts_when_a_name_changed() {
        let path = file_as(
            "changed",
            "lbctl-test-no-such-user",
            "lbctl-test-no-such-group",
        );
        let mut old = running(&path);
        old.master.group = Some("lbctl-test-old-group".to_string());
        let err = load_for_reload(&path, &old)
            .expect_err("a changed group is looked up")
            .to_string();
        assert!(err.contains("no such"), "{err}");
        old.master.group = Some("lbctl-test-no-such-group".to_string());
        old.master.user = None;
        let err = load_for_reload(&path, &old)
            .expect_err("a changed user is looked up")
            .to_string();
        assert!(err.contains("master.user: no such user"), "{err}");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }
}
