//! The request `context`: checked once, when a request arrives, against what the plugin layer
//! can represent; then handed to plugins byte for byte.
//!
//! A context the plugin layer could not read must never turn into *no* context (a veto plugin
//! that looks for `"risk":"high"` would then be skipped), and two readers must never see two
//! different contexts (duplicate keys: one reader takes the first, another the last). So a
//! context is refused (HTTP 400) unless it is JSON whose numbers are all finite `f64`s, whose
//! nesting is at most [`MAX_CONTEXT_DEPTH`] deep and whose objects have no duplicate keys.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Deepest nesting of arrays and objects in a request context (the top-level value is depth 1).
pub const MAX_CONTEXT_DEPTH: usize = 32;

/// Why a context was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid 'context': {0}")]
pub struct ContextError(pub String);

/// Checks a raw JSON `context` (see the module docs).
pub fn check_context(raw: &str) -> Result<(), ContextError> {
    let mut de = serde_json::Deserializer::from_str(raw);
    Walk { depth: 1 }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| ContextError(e.to_string()))
}

/// A visitor over any JSON value that enforces the rules and keeps nothing.
#[derive(Clone, Copy)]
struct Walk {
    depth: usize,
}

impl Walk {
    fn deeper<E: de::Error>(self) -> Result<Walk, E> {
        if self.depth >= MAX_CONTEXT_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_CONTEXT_DEPTH} levels"
            )));
        }
        Ok(Walk {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("a number out of range"))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        let mut keys: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !keys.insert(key.to_string()) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key '{}'",
                    key.chars().take(64).collect::<String>()
                )));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_contexts_pass() {
        for ok in [
            r#"{}"#,
            r#"{"risk":"high","n":1.5,"m":-3,"b":true,"z":null,"a":[1,[2]]}"#,
            r#""just a string""#,
            r#"{"k":{"k":1}}"#,
        ] {
            assert_eq!(check_context(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_plugins_could_not_read_is_refused() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let just_too_deep = format!(
            "{}1{}",
            "[".repeat(MAX_CONTEXT_DEPTH),
            "]".repeat(MAX_CONTEXT_DEPTH)
        );
        let deepest_ok = format!(
            "{}1{}",
            "[".repeat(MAX_CONTEXT_DEPTH - 1),
            "]".repeat(MAX_CONTEXT_DEPTH - 1)
        );
        assert_eq!(check_context(&deepest_ok), Ok(()));
        for (bad, needle) in [
            (r#"{"risk":"high","pad":1e400}"#, "out of range"),
            (r#"{"risk":"high","pad":-1e999}"#, "out of range"),
            (r#"{"risk":"high","risk":"low"}"#, "duplicate key 'risk'"),
            (r#"{"a":{"x":1,"x":2}}"#, "duplicate key 'x'"),
            (deep.as_str(), "nested deeper"),
            (just_too_deep.as_str(), "nested deeper"),
            (r#"{"a":1} x"#, "trailing"),
        ] {
            let e = check_context(bad).unwrap_err();
            assert!(e.0.contains(needle), "{bad}: {e}");
        }
    }
}
