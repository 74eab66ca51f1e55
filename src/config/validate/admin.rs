//! Owns validation of the `[admin]` section: `bind` (required in the section;
//! must not clash with any listen's bind) and the optional `token` (between
//! [`MIN_TOKEN`] and [`MAX_TOKEN`] visible ASCII characters). No section means
//! no admin listener. A new `[admin]` key is added here (field in `raw/mod.rs`
//! `RawAdmin`, typed field in `mod.rs` `AdminConfig`).

use super::listen::binds_clash;
use super::{Result, Validator};
use crate::config::raw::RawAdmin;
use crate::config::{AdminConfig, ListenConfig};
use toml::Spanned;

/// Fewest characters of `admin.token`.
pub const MIN_TOKEN: usize = 8;
/// Most characters of `admin.token`.
pub const MAX_TOKEN: usize = 256;

impl Validator<'_> {
    pub(super) fn admin(
        &self,
        raw: Option<&Spanned<RawAdmin>>,
        listens: &[ListenConfig],
    ) -> Result<Option<AdminConfig>> {
        let Some(table) = raw else {
            return Ok(None);
        };
        let a = table.get_ref();
        let Some(raw_bind) = &a.bind else {
            return Err(self.invalid(
                "admin.bind",
                table,
                "missing, expected the admin listener's IP:PORT such as \"127.0.0.1:9900\" \
                 (leave out [admin] for no admin listener)"
                    .to_string(),
            ));
        };
        let bind = self.socket_addr("admin.bind", raw_bind)?;
        for (i, l) in listens.iter().enumerate() {
            if let Some(why) = binds_clash(bind, l.bind) {
                return Err(self.invalid(
                    "admin.bind",
                    raw_bind,
                    format!("'{bind}' {why} listen[{i}].bind '{}'", l.bind),
                ));
            }
        }
        let token = match &a.token {
            Some(t) => Some(self.token(t)?),
            None => None,
        };
        Ok(Some(AdminConfig { bind, token }))
    }

    fn token(&self, t: &Spanned<String>) -> Result<String> {
        let s = t.get_ref();
        let n = s.chars().count();
        let visible = s.bytes().all(|b| b.is_ascii_graphic());
        if !visible || !(MIN_TOKEN..=MAX_TOKEN).contains(&n) {
            // The value itself is never quoted: it is a secret.
            let what = if visible {
                format!("{n} characters long")
            } else {
                "not only visible ASCII characters".to_string()
            };
            return Err(self.invalid(
                "admin.token",
                t,
                format!(
                    "the token is {what}, expected {MIN_TOKEN} to {MAX_TOKEN} visible ASCII \
                     characters without spaces"
                ),
            ));
        }
        Ok(s.clone())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::validate::tests::{listen_with, ok, rejected};

    #[test]
    fn no_admin_section_means_no_admin_listener() {
        assert_eq!(ok(&listen_with("")).admin, None);
    }

    #[test]
    fn admin_bind_and_token_are_read() {
        let c = ok(&listen_with(
            "[admin]\nbind = \"127.0.0.1:9900\"\ntoken = \"s3cret-s3cret\"",
        ));
        let a = c.admin.expect("admin");
        assert_eq!(a.bind.to_string(), "127.0.0.1:9900");
        assert_eq!(a.token.as_deref(), Some("s3cret-s3cret"));
        let shown = format!("{a:?}");
        assert!(!shown.contains("s3cret"), "token printed: {shown}");
        let c = ok(&listen_with("[admin]\nbind = \"[::1]:9900\""));
        assert_eq!(c.admin.expect("admin").token, None);
    }

    #[test]
    fn admin_section_without_bind_is_rejected() {
        let msg = rejected(
            &listen_with("[admin]\ntoken = \"s3cret-s3cret\""),
            "admin.bind",
            4,
        );
        assert!(msg.contains("127.0.0.1:9900"), "{msg}");
    }

    #[test]
    fn admin_bind_must_be_an_address_and_not_a_listen_bind() {
        rejected(
            &listen_with("[admin]\nbind = \"localhost:9900\""),
            "admin.bind",
            5,
        );
        rejected(
            &listen_with("[admin]\nbind = \"127.0.0.1:0\""),
            "admin.bind",
            5,
        );
        let msg = rejected(
            &listen_with("[admin]\nbind = \"127.0.0.1:8080\""),
            "admin.bind",
            5,
        );
        assert!(msg.contains("duplicates listen[0].bind"), "{msg}");
        let msg = rejected(
            &listen_with("[admin]\nbind = \"0.0.0.0:8080\""),
            "admin.bind",
            5,
        );
        assert!(msg.contains("overlaps"), "{msg}");
    }

    #[test]
    fn admin_token_must_be_long_visible_ascii() {
        let bind = "[admin]\nbind = \"127.0.0.1:9900\"\n";
        for bad in [
            "short",
            "",
            "with space in it",
            "tab\tinside-it",
            "ünïcödé-tøkén",
        ] {
            let msg = rejected(
                &listen_with(&format!("{bind}token = \"{bad}\"")),
                "admin.token",
                6,
            );
            if !bad.is_empty() {
                assert!(!msg.contains(bad), "secret quoted: {msg}");
            }
        }
        let long = "x".repeat(super::MAX_TOKEN + 1);
        rejected(
            &listen_with(&format!("{bind}token = \"{long}\"")),
            "admin.token",
            6,
        );
        ok(&listen_with(&format!(
            "{bind}token = \"{}\"",
            "x".repeat(super::MAX_TOKEN)
        )));
    }

    #[test]
    fn unknown_admin_keys_are_rejected() {
        let src = listen_with("[admin]\nbind = \"127.0.0.1:9900\"\nport = 1");
        assert!(crate::config::parse(&src, std::path::Path::new("/")).is_err());
    }

    #[test]
    fn shipped_admin_example_validates_once_uncommented() {
        let src = include_str!("../../../conf/lbctl.toml");
        let start = src.find("# [admin]\n").expect("admin example");
        let end = start + src[start..].find("\n\n").expect("end of the admin example");
        let mut text = src[..start].to_string();
        for line in src[start..end].lines() {
            if let Some(code) = line.strip_prefix("# ") {
                text.push_str(code);
                text.push('\n');
            }
        }
        text.push_str(&src[end..]);
        let a = ok(&text).admin.expect("admin");
        assert_eq!(a.bind.to_string(), "127.0.0.1:9900");
        assert!(a.token.is_some());
    }
}
