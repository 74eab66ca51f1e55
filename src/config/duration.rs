//! Owns duration strings: parsing `"500ms"`, `"3s"`, `"1.5s"`, `"5m"`, `"1h"`
//! into [`Duration`] (and formatting one back).
//!
//! Accepted form: a non-negative decimal number immediately followed by one unit,
//! no spaces, no sign. Units: `ms` (milliseconds), `s` (seconds), `m` (minutes),
//! `h` (hours). A fraction is allowed (`"1.5s"`, `"0.25h"`), up to 9 fractional
//! digits; sub-nanosecond remainders are truncated. A bare number (`"3"`) is
//! rejected because its unit would be a guess. `"0s"` parses; whether zero is
//! allowed is up to the key (see `validate`). Values above [`MAX`] (one year) are
//! rejected so that `Instant::now() + d` can never overflow.

use std::fmt;
use std::time::Duration;

/// The largest accepted duration: 8760h (365 days).
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the accepted forms are, appended to every error.
pub const EXPECTED: &str = "expected a number followed by one of ms, s, m, h, such as \"500ms\", \"3s\", \"1.5s\", \"5m\", \"1h\"";

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration '{}' ({}), {}",
            self.input.escape_debug(),
            self.reason,
            EXPECTED
        )
    }
}

impl std::error::Error for DurationError {}

/// Nanoseconds per unit, longest suffix first so `ms` wins over `s`/`m`.
const UNITS: &[(&str, u128)] = &[
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3600 * 1_000_000_000),
];

/// Parses a duration string such as `"500ms"`, `"3s"`, `"1.5s"`, `"5m"`, `"1h"`.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
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
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| err("missing unit"))?;
    let (number, unit) = input.split_at(digits_end);
    let per_unit = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, nanos)| *nanos)
        .ok_or_else(|| err("unknown unit"))?;
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int_part.is_empty() || (number.contains('.') && frac_part.is_empty()) {
        return Err(err("missing digits"));
    }
    if frac_part.contains('.') {
        return Err(err("more than one '.'"));
    }
    if frac_part.len() > 9 {
        return Err(err("more than 9 fractional digits"));
    }
    // Both parts are ASCII digits only here; the int part may still overflow.
    let whole: u128 = int_part.parse().map_err(|_| err("too large"))?;
    let frac: u128 = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().map_err(|_| err("missing digits"))?
    };
    let scale = 10u128.pow(frac_part.len() as u32);
    let nanos = whole
        .checked_mul(per_unit)
        .and_then(|n| n.checked_add(frac * per_unit / scale))
        .ok_or_else(|| err("too large"))?;
    if nanos > MAX.as_nanos() {
        return Err(err("longer than 8760h"));
    }
    let secs = (nanos / 1_000_000_000) as u64;
    let sub = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration in the config syntax, using the largest unit that
/// represents it exactly (`"5m"`, `"30s"`, `"1500ms"`), else fractional seconds.
/// [`parse`] reads the result back to the same value.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    for (name, per_unit) in UNITS.iter().rev() {
        if nanos.is_multiple_of(*per_unit) {
            return format!("{}{}", nanos / per_unit, name);
        }
    }
    let frac = format!("{:09}", d.subsec_nanos());
    format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn rejected(s: &str) -> String {
        match parse(s) {
            Ok(d) => panic!("{s:?} should be rejected, got {d:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn each_unit_parses() {
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("3s"), Duration::from_secs(3));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("0s"), Duration::ZERO);
    }

    #[test]
    fn fractions_parse_exactly() {
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0.25h"), Duration::from_secs(900));
        assert_eq!(ok("0.5ms"), Duration::from_micros(500));
        assert_eq!(ok("1.000000001s"), Duration::new(1, 1));
    }

    #[test]
    fn sub_nanosecond_remainders_are_truncated() {
        assert_eq!(ok("0.000001ms"), Duration::from_nanos(1));
        assert_eq!(ok("0.0000001ms"), Duration::ZERO);
    }

    #[test]
    fn one_year_is_the_maximum() {
        assert_eq!(ok("8760h"), MAX);
        assert!(rejected("8761h").contains("longer than 8760h"));
        assert!(rejected("99999999999999999999999999999999999999999h").contains("too large"));
    }

    #[test]
    fn empty_string_is_rejected_with_the_accepted_units() {
        let msg = rejected("");
        assert!(msg.contains("empty"), "{msg}");
        assert!(msg.contains("ms, s, m, h"), "{msg}");
    }

    #[test]
    fn bare_number_is_rejected_as_missing_unit() {
        let msg = rejected("3");
        assert!(msg.contains("'3'") && msg.contains("missing unit"), "{msg}");
        assert!(msg.contains("ms, s, m, h"), "{msg}");
    }

    #[test]
    fn negative_durations_are_rejected() {
        let msg = rejected("-1s");
        assert!(
            msg.contains("negative") && msg.contains("ms, s, m, h"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_units_are_rejected() {
        for s in ["3x", "3sec", "3S", "3us", "3 s", "3s ", " 3s", "3ns", "3d"] {
            let msg = rejected(s);
            assert!(msg.contains("ms, s, m, h"), "{s:?}: {msg}");
        }
        assert!(rejected("3x").contains("unknown unit"));
    }

    #[test]
    fn malformed_numbers_are_rejected() {
        for s in [
            "s",
            "ms",
            ".5s",
            "1.s",
            "1..5s",
            "1.2.3s",
            "+1s",
            "1e3s",
            "1.0000000001s",
        ] {
            let msg = rejected(s);
            assert!(msg.contains("ms, s, m, h"), "{s:?}: {msg}");
        }
    }

    #[test]
    fn non_ascii_input_is_rejected_without_panicking() {
        rejected("3秒");
        rejected("３s");
        rejected("é");
    }

    #[test]
    fn format_uses_the_largest_exact_unit_and_round_trips() {
        let cases = [
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(7200), "2h"),
            (Duration::ZERO, "0s"),
            (Duration::new(1, 500), "1.0000005s"),
        ];
        for (d, s) in cases {
            assert_eq!(format(d), s);
            assert_eq!(ok(s), d);
        }
    }
}
