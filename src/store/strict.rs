//! What a reader of untrusted safetensors must refuse beyond what the `safetensors` crate
//! does: a JSON object that names a key twice (its map-based header keeps one of the two
//! silently, so two readers could see two different files), tensors the format does not
//! define, and counts spelled non-canonically ("+5", "007", " 5", which Rust's integer
//! parser partly accepts). Each is [`Error::CorruptWeights`]: a file a tacit-rm writer
//! never produces.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, Result};

/// Refuses a header in which any JSON object (the tensor table, a tensor entry or the
/// `__metadata__` block) names a key twice. `bytes` has passed `SafeTensors::deserialize`,
/// so its length prefix is in bounds; it is checked again rather than trusted.
pub fn check_unique_keys(bytes: &[u8]) -> Result<()> {
    let header = bytes
        .get(..8)
        .and_then(|n| usize::try_from(u64::from_le_bytes(n.try_into().ok()?)).ok())
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
        .ok_or_else(|| Error::CorruptWeights("the header is out of bounds".into()))?;
    let mut reader = serde_json::Deserializer::from_slice(header);
    UniqueKeys::deserialize(&mut reader)
        .map(|_| ())
        .map_err(|e| Error::CorruptWeights(format!("header: {e}")))
}

/// A count in the one spelling a writer produces: decimal digits, no sign, no padding, no
/// leading zero (but "0" itself).
pub fn parse_count(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical {
        text.parse().ok()
    } else {
        None
    }
}

/// Refuses any tensor of the file that is not in `expected` (the names the metadata's heads
/// define; a missing one was already refused by whoever read it).
pub fn check_tensor_names<'a>(
    present: impl IntoIterator<Item = &'a str>,
    expected: &HashSet<String>,
) -> Result<()> {
    let mut extra: Vec<&str> = present
        .into_iter()
        .filter(|n| !expected.contains(*n))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    crate::math::sort_by(&mut extra, |a, b| a.cmp(b));
    Err(Error::CorruptWeights(format!(
        "tensors {extra:?} are not part of what the metadata describes"
    )))
}

/// Any JSON value, read only to find objects with a repeated key.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("key '{key}' appears twice")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_one_spelling() {
        for (text, want) in [
            ("0", Some(0)),
            ("10", Some(10)),
            ("18446744073709551615", Some(u64::MAX)),
        ] {
            assert_eq!(parse_count(text), want, "{text:?}");
        }
        for text in [
            "",
            "+5",
            "-1",
            "007",
            "00",
            " 5",
            "5 ",
            "1e3",
            "0x10",
            "18446744073709551616",
            "٣",
        ] {
            assert_eq!(parse_count(text), None, "{text:?}");
        }
    }

    #[test]
    fn repeated_keys_are_found_at_any_depth() {
        let file = |json: &str| {
            let mut b = (json.len() as u64).to_le_bytes().to_vec();
            b.extend(json.as_bytes());
            b
        };
        assert!(check_unique_keys(&file(r#"{"a":{"b":1,"c":[{"d":null}]},"e":"x"}"#)).is_ok());
        for bad in [
            r#"{"a":1,"a":1}"#,
            r#"{"m":{"k":"1","k":"2"}}"#,
            r#"[{"x":true,"x":false}]"#,
        ] {
            assert_eq!(
                check_unique_keys(&file(bad)).unwrap_err().code().as_str(),
                "corrupt_weights",
                "{bad}"
            );
        }
        assert!(check_unique_keys(&[1, 0, 0]).is_err(), "short prefix");
        assert!(
            check_unique_keys(&file("{}")[..9]).is_err(),
            "length past the end"
        );
    }
}
