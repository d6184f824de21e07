//! `resource:action` permissions with wildcards (`asset:*`, `*:read`, `*`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One side of a permission: a name or the wildcard `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Any,
    Name(String),
}

impl Part {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Part::Any => true,
            Part::Name(n) => n == name,
        }
    }
}

/// A granted permission. Requests always name a concrete `resource:action`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    pub resource: Part,
    pub action: Part,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid permission '{text}': {why}")]
pub struct PermissionError {
    pub text: String,
    pub why: &'static str,
}

/// Is `s` a valid permission segment name (ASCII letters, digits, `_ - .`, 1..=64 bytes)?
pub fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Splits a concrete request action `resource:action` without allocating.
/// Returns `None` when it is not exactly two valid, non-wildcard segments.
pub fn split_action(action: &str) -> Option<(&str, &str)> {
    let (r, a) = action.split_once(':')?;
    (is_segment(r) && is_segment(a)).then_some((r, a))
}

impl Permission {
    /// Does this (possibly wildcard) permission grant the concrete `resource:action`?
    pub fn grants(&self, resource: &str, action: &str) -> bool {
        self.resource.matches(resource) && self.action.matches(action)
    }
}

impl FromStr for Permission {
    type Err = PermissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| PermissionError {
            text: s.to_string(),
            why,
        };
        if s == "*" {
            return Ok(Permission {
                resource: Part::Any,
                action: Part::Any,
            });
        }
        let Some((r, a)) = s.split_once(':') else {
            return Err(err(
                "expected 'resource:action', 'resource:*', '*:action' or '*'",
            ));
        };
        let part = |p: &str| -> Result<Part, PermissionError> {
            if p == "*" {
                Ok(Part::Any)
            } else if is_segment(p) {
                Ok(Part::Name(p.to_string()))
            } else {
                Err(err(
                    "each side must be '*' or 1-64 ASCII letters, digits, '_', '-' or '.'",
                ))
            }
        };
        Ok(Permission {
            resource: part(r)?,
            action: part(a)?,
        })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.resource, &self.action) {
            (Part::Any, Part::Any) => f.write_str("*"),
            (r, a) => {
                let s = |p: &Part| match p {
                    Part::Any => "*".to_string(),
                    Part::Name(n) => n.clone(),
                };
                write!(f, "{}:{}", s(r), s(a))
            }
        }
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let p: Permission = "asset:*".parse().unwrap();
        assert!(p.grants("asset", "read") && !p.grants("door", "read"));
        let p: Permission = "*:read".parse().unwrap();
        assert!(p.grants("door", "read") && !p.grants("door", "unlock"));
        let p: Permission = "*".parse().unwrap();
        assert_eq!(p.to_string(), "*");
        assert_eq!("*:*".parse::<Permission>().unwrap(), p);
        for bad in [
            "",
            "asset",
            "asset:",
            ":read",
            "a:b:c",
            "a b:c",
            "**:read",
            "asset:re*d",
        ] {
            assert!(bad.parse::<Permission>().is_err(), "{bad}");
        }
        assert_eq!(split_action("asset:read"), Some(("asset", "read")));
        assert_eq!(split_action("asset:*"), None);
        assert_eq!(split_action("asset"), None);
    }
}
