//! Owns size strings: parsing `"512B"`, `"16KiB"`, `"1MiB"`, `"16KB"`, `"16K"`
//! into a number of bytes (and formatting one back).
//!
//! Accepted form: a non-negative decimal integer immediately followed by one
//! unit, no spaces, no sign, no fraction. Units: `B` (bytes), `KiB` and `K`
//! (1024 bytes), `MiB` and `M` (1024 KiB), `KB` (1000 bytes), `MB` (1000 KB).
//! Units are case-sensitive, so `kb` (kilobits?) is not guessed. A bare number
//! in a string (`"16384"`) is rejected: in the config file a byte count is
//! written as a TOML integer. Whether a size is in range is up to the key
//! (see `validate`).

use std::fmt;

/// What the accepted forms are, appended to every error.
pub const EXPECTED: &str = "expected a number of bytes such as 16384, or a string of a number followed by one of B, KiB, MiB, KB, MB, K, M, such as \"16KiB\" or \"1MiB\"";

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid size '{}' ({}), {}",
            self.input.escape_debug(),
            self.reason,
            EXPECTED
        )
    }
}

impl std::error::Error for SizeError {}

/// Bytes per unit.
const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1024),
    ("MiB", 1024 * 1024),
    ("KB", 1000),
    ("MB", 1000 * 1000),
    ("K", 1024),
    ("M", 1024 * 1024),
];

/// Parses a size string such as `"512B"`, `"16KiB"`, `"1MiB"`, `"16KB"`, `"16K"`.
pub fn parse(input: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError {
        input: input.to_string(),
        reason,
    };
    if input.is_empty() {
        return Err(err("empty"));
    }
    if input.starts_with('-') {
        return Err(err("negative"));
    }
    let digits_end = input
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| err("missing unit"))?;
    let (number, unit) = input.split_at(digits_end);
    if number.is_empty() {
        return Err(err("missing digits"));
    }
    if unit.starts_with('.') {
        return Err(err("fraction"));
    }
    let per_unit = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, bytes)| *bytes)
        .ok_or_else(|| err("unknown unit"))?;
    // ASCII digits only here; the number may still overflow.
    let n: u64 = number.parse().map_err(|_| err("too large"))?;
    n.checked_mul(per_unit).ok_or_else(|| err("too large"))
}

/// Formats a byte count in the config syntax, using the largest binary unit
/// that represents it exactly (`"16KiB"`, `"1MiB"`, `"1000B"`). [`parse`] reads
/// the result back to the same value.
pub fn format(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes != 0 && bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else if bytes != 0 && bytes.is_multiple_of(1024) {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_is_accepted() {
        let cases = [
            ("0B", 0),
            ("512B", 512),
            ("16KiB", 16 * 1024),
            ("1MiB", 1024 * 1024),
            ("16KB", 16_000),
            ("2MB", 2_000_000),
            ("16K", 16 * 1024),
            ("3M", 3 * 1024 * 1024),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn malformed_sizes_are_rejected_with_the_reason() {
        let cases = [
            ("", "empty"),
            ("-1KiB", "negative"),
            ("16384", "missing unit"),
            ("KiB", "missing digits"),
            ("1.5KiB", "fraction"),
            ("16 KiB", "unknown unit"),
            ("16kib", "unknown unit"),
            ("16kb", "unknown unit"),
            ("16GiB", "unknown unit"),
            ("99999999999999999999B", "too large"),
            ("18446744073709551615KiB", "too large"),
        ];
        for (text, reason) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.reason, reason, "{text}");
        }
    }

    #[test]
    fn errors_quote_the_input_and_list_the_units() {
        let shown = parse("16Kb").expect_err("rejected").to_string();
        assert!(
            shown.starts_with("invalid size '16Kb' (unknown unit)"),
            "{shown}"
        );
        assert!(shown.contains("B, KiB, MiB, KB, MB, K, M"), "{shown}");
    }

    #[test]
    fn format_uses_the_largest_exact_binary_unit_and_parses_back() {
        for (bytes, text) in [
            (0, "0B"),
            (100, "100B"),
            (1000, "1000B"),
            (1024, "1KiB"),
            (16 * 1024, "16KiB"),
            (1024 * 1024, "1MiB"),
            (1536 * 1024, "1536KiB"),
        ] {
            assert_eq!(format(bytes), text);
            assert_eq!(parse(text), Ok(bytes));
        }
    }
}
