//! Owns raw -> typed validation (placeholder until implemented).

use super::raw::RawConfig;
use super::{Config, ConfigError};
use std::path::Path;

/// Validates the raw config into a typed [`Config`].
pub fn validate(_raw: RawConfig, _src: &str, _base: &Path) -> Result<Config, ConfigError> {
    Err(ConfigError::Syntax {
        key: None,
        line: None,
        message: "config validation not implemented".into(),
    })
}
