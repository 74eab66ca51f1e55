//! Owns the located errors and the scalar readers every section shares: an
//! error is a [`ConfigError::Invalid`] with the full key path and the line of
//! the value (or table) it is about, and each reader (duration, integer in a
//! range, name, socket address) checks one `Spanned` value and reports a
//! rejection that way. A new kind of value used by several sections is read
//! here; one used by a single section stays in that section's file.

use super::{ADDR_EXPECTED, Result, Validator};
use crate::config::ConfigError;
use crate::config::duration;
use crate::config::raw::line_of_span;
use std::net::SocketAddr;
use std::time::Duration;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn invalid<T>(&self, key: &str, at: &Spanned<T>, message: String) -> ConfigError {
        self.invalid_at(key, &at.span(), message)
    }

    /// An [`ConfigError::Invalid`] located at the line of `span`.
    pub(super) fn invalid_at(
        &self,
        key: &str,
        span: &std::ops::Range<usize>,
        message: String,
    ) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            line: Some(line_of_span(self.src, span)),
            message,
        }
    }

    /// A duration string; zero is rejected unless `allow_zero`.
    pub(super) fn duration(
        &self,
        key: &str,
        s: &Spanned<String>,
        allow_zero: bool,
    ) -> Result<Duration> {
        let d = duration::parse(s.get_ref()).map_err(|e| self.invalid(key, s, e.to_string()))?;
        if d.is_zero() && !allow_zero {
            return Err(self.invalid(
                key,
                s,
                format!(
                    "'{}' is zero, expected a positive duration such as \"500ms\" or \"3s\"",
                    s.get_ref().escape_debug()
                ),
            ));
        }
        Ok(d)
    }

    pub(super) fn opt_duration(
        &self,
        key: &str,
        s: Option<&Spanned<String>>,
        default: Duration,
    ) -> Result<Duration> {
        match s {
            Some(s) => self.duration(key, s, false),
            None => Ok(default),
        }
    }

    /// An integer in `min..=max`.
    pub(super) fn int(&self, key: &str, n: &Spanned<i64>, min: i64, max: i64) -> Result<i64> {
        let v = *n.get_ref();
        if v < min || v > max {
            return Err(self.invalid(
                key,
                n,
                format!("{v} is out of range, expected an integer from {min} to {max}"),
            ));
        }
        Ok(v)
    }

    pub(super) fn opt_u32(
        &self,
        key: &str,
        n: Option<&Spanned<i64>>,
        min: i64,
        max: i64,
        default: u32,
    ) -> Result<u32> {
        match n {
            // In range of u32 by construction: callers pass max <= u32::MAX.
            Some(n) => Ok(self.int(key, n, min, max.min(i64::from(u32::MAX)))? as u32),
            None => Ok(default),
        }
    }

    /// A listen or server name: non-empty, no '/', whitespace or control chars.
    pub(super) fn name(&self, key: &str, s: &Spanned<String>) -> Result<String> {
        let name = s.get_ref();
        if name.is_empty()
            || name
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            return Err(self.invalid(
                key,
                s,
                format!(
                    "invalid name '{}', expected a non-empty name without '/', spaces or control characters, such as \"web\" or \"app1\"",
                    name.escape_debug()
                ),
            ));
        }
        Ok(name.clone())
    }

    /// An `IP:PORT` socket address with a non-zero port.
    pub(super) fn socket_addr(&self, key: &str, s: &Spanned<String>) -> Result<SocketAddr> {
        let text = s.get_ref();
        let addr: SocketAddr = text.parse().map_err(|_| {
            let hint = if looks_like_host_name(text) {
                "; a DNS name needs resolve = \"10s\""
            } else {
                ""
            };
            self.invalid(
                key,
                s,
                format!(
                    "invalid socket address '{}', {ADDR_EXPECTED}{hint}",
                    text.escape_debug()
                ),
            )
        })?;
        if addr.port() == 0 {
            return Err(self.invalid(
                key,
                s,
                format!("port 0 in '{text}' is not allowed, {ADDR_EXPECTED}"),
            ));
        }
        Ok(addr)
    }
}

/// Whether `text` reads as `NAME:PORT` (a host name where an IP belongs).
fn looks_like_host_name(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.starts_with('[')
                && host.bytes().any(|b| b.is_ascii_alphabetic())
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}
