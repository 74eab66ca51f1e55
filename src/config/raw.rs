//! Owns the raw serde view of the TOML file (placeholder until implemented).

use super::ConfigError;

/// The whole file as written.
#[derive(Debug, Default)]
pub struct RawConfig;

/// Parses TOML text into the raw structs.
pub fn parse(_src: &str) -> Result<RawConfig, ConfigError> {
    Err(ConfigError::Syntax {
        key: None,
        line: None,
        message: "config parsing not implemented".into(),
    })
}
