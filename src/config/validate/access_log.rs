//! Owns validation of a listen's `access_log = { path, format }`: `path` is
//! required, a file path (resolved against the config's directory) whose
//! directory exists and which is not a directory itself; `format` is
//! `"text"` (the default) or `"json"`. Both modes log (tcp: one line per
//! connection, http: one per request). The directory is checked here, with
//! the key and line, so `lbctl check` and a reload reject a typo before any
//! worker tries to open the file (a rejected reload keeps the old workers,
//! and so the old log).

use super::{Result, Validator};
use crate::config::raw::RawListen;
use crate::config::{AccessLogConfig, LogFormat};
use std::path::Path;

/// The accepted `access_log.format` values.
pub const LOG_FORMATS: &[&str] = &["text", "json"];

impl Validator<'_> {
    pub(super) fn access_log(&self, p: &str, l: &RawListen) -> Result<Option<AccessLogConfig>> {
        let Some(t) = &l.access_log else {
            return Ok(None);
        };
        let key = format!("{p}.access_log");
        let raw = t.get_ref();
        let Some(path) = &raw.path else {
            return Err(self.invalid(
                &format!("{key}.path"),
                t,
                "missing, expected the file to append to, such as path = \"/var/log/lbctl/access.log\""
                    .to_string(),
            ));
        };
        let text = path.get_ref();
        if text.is_empty() || text.contains('\0') || text.ends_with('/') {
            return Err(self.invalid(
                &format!("{key}.path"),
                path,
                format!(
                    "invalid path '{}', expected a file path such as \"/var/log/lbctl/access.log\"",
                    text.escape_debug()
                ),
            ));
        }
        let file = Path::new(text);
        let file = if file.is_absolute() {
            file.to_path_buf()
        } else {
            self.base.join(file)
        };
        let dir = file.parent().unwrap_or_else(|| Path::new("/"));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if !dir.is_dir() {
            return Err(self.invalid(
                &format!("{key}.path"),
                path,
                format!(
                    "directory '{}' does not exist, expected an existing directory for '{}'",
                    dir.display(),
                    text.escape_debug()
                ),
            ));
        }
        if file.is_dir() {
            return Err(self.invalid(
                &format!("{key}.path"),
                path,
                format!("'{}' is a directory, expected a file", file.display()),
            ));
        }
        let format = match &raw.format {
            None => LogFormat::Text,
            Some(f) => match f.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(self.invalid(
                        &format!("{key}.format"),
                        f,
                        format!(
                            "unknown format '{}', expected one of: {}",
                            other.escape_debug(),
                            LOG_FORMATS.join(", ")
                        ),
                    ));
                }
            },
        };
        Ok(Some(AccessLogConfig { path: file, format }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{http_with, listen_with, ok, rejected};
    use crate::config::LogFormat;
    use std::path::PathBuf;

    #[test]
    fn access_log_is_off_by_default_and_text_unless_json_is_asked() {
        assert_eq!(ok(&listen_with("")).listens[0].access_log, None);
        let c = ok(&listen_with("access_log = { path = \"/tmp/a.log\" }"));
        let a = c.listens[0].access_log.clone().expect("set");
        assert_eq!(a.path, PathBuf::from("/tmp/a.log"));
        assert_eq!(a.format, LogFormat::Text);
        let c = ok(&http_with(
            "access_log = { path = \"/tmp/a.log\", format = \"json\" }",
        ));
        assert_eq!(
            c.listens[0].access_log.as_ref().map(|a| a.format),
            Some(LogFormat::Json)
        );
    }

    #[test]
    fn a_relative_path_is_resolved_against_the_config_directory() {
        let src = listen_with("access_log = { path = \"a.log\" }");
        let c = crate::config::parse(&src, std::path::Path::new("/tmp")).expect("valid");
        let a = c.listens[0].access_log.clone().expect("set");
        assert_eq!(a.path, PathBuf::from("/tmp/a.log"));
    }

    #[test]
    fn bad_access_log_tables_name_the_key_and_line() {
        rejected(
            &listen_with("access_log = { format = \"json\" }"),
            "listen[0].access_log.path",
            4,
        );
        let msg = rejected(
            &listen_with("access_log = { path = \"/no/such/dir/a.log\" }"),
            "listen[0].access_log.path",
            4,
        );
        assert!(msg.contains("/no/such/dir"), "{msg}");
        rejected(
            &listen_with("access_log = { path = \"/tmp\" }"),
            "listen[0].access_log.path",
            4,
        );
        rejected(
            &listen_with("access_log = { path = \"\" }"),
            "listen[0].access_log.path",
            4,
        );
        let msg = rejected(
            &listen_with("access_log = { path = \"/tmp/a.log\", format = \"xml\" }"),
            "listen[0].access_log.format",
            4,
        );
        assert!(msg.contains("text, json"), "{msg}");
        let err = crate::config::parse(
            &listen_with("access_log = { path = \"/tmp/a.log\", buffer = 1 }"),
            std::path::Path::new("/tmp"),
        )
        .expect_err("unknown key");
        let shown = err.to_string();
        assert!(shown.contains("listen[0].access_log.buffer"), "{shown}");
        assert!(shown.contains("line 4"), "{shown}");
    }
}
