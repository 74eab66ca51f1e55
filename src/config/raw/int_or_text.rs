//! Owns the one serde shape of a value written either as an integer or as a
//! string (`expect_status = 200` or `"200-399"`, `header_bytes = 16384` or
//! `"16KiB"`): either is kept as written, for validation to check.

use serde::de::{self, Deserializer, Unexpected, Visitor};
use std::fmt;

/// Deserializes an integer into `int(n)` and a string into `text(s)`;
/// anything else (or an integer beyond `i64`) is refused with `expecting`.
pub(super) fn int_or_text<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    expecting: &'static str,
    int: fn(i64) -> T,
    text: fn(String) -> T,
) -> Result<T, D::Error> {
    deserializer.deserialize_any(IntOrText {
        expecting,
        int,
        text,
    })
}

struct IntOrText<T> {
    expecting: &'static str,
    int: fn(i64) -> T,
    text: fn(String) -> T,
}

impl<T> Visitor<'_> for IntOrText<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Ok((self.int)(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        match i64::try_from(v) {
            Ok(n) => Ok((self.int)(n)),
            Err(_) => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.text)(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{RawSize, RawStatus};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Both {
        size: Option<RawSize>,
        status: Option<RawStatus>,
    }

    fn parse(text: &str) -> Result<Both, String> {
        toml::from_str::<Both>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_and_strings_are_kept_as_written() {
        let b = parse("size = 16384\nstatus = \"200-399\"").expect("valid");
        assert_eq!(b.size, Some(RawSize::Bytes(16384)));
        assert_eq!(b.status, Some(RawStatus::Text("200-399".into())));
        let b = parse("size = \"16KiB\"\nstatus = -1").expect("valid");
        assert_eq!(b.size, Some(RawSize::Text("16KiB".into())));
        assert_eq!(b.status, Some(RawStatus::Code(-1)));
    }

    #[test]
    fn other_types_are_refused_with_what_each_key_expects() {
        let e = parse("size = true").expect_err("a bool is no size");
        assert!(e.contains("a number of bytes such as 16384"), "{e}");
        let e = parse("status = 1.5").expect_err("a float is no status");
        assert!(e.contains("an HTTP status such as 200"), "{e}");
    }
}
