//! Decoding a stored commit (its serde JSON form) with only a window of its row changes: the
//! others are skipped by the parser without being built, so a 100k-row commit costs a scan of
//! its bytes, not 100k documents in memory.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Commit, CommitWindow, RowOp};

/// Decodes `bytes` (a [`Commit`] as serde JSON) keeping ops `offset..offset + limit`.
pub fn decode(bytes: &[u8], offset: usize, limit: usize) -> serde_json::Result<CommitWindow> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let w = CommitSeed { offset, limit }.deserialize(&mut de)?;
    de.end()?;
    Ok(w)
}

#[derive(Clone, Copy)]
struct CommitSeed {
    offset: usize,
    limit: usize,
}

impl<'de> DeserializeSeed<'de> for CommitSeed {
    type Value = CommitWindow;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<CommitWindow, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CommitSeed {
    type Value = CommitWindow;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a commit")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CommitWindow, A::Error> {
        use serde::de::Error;
        let (mut tenant, mut revision, mut actor, mut at_ms, mut action, mut target) =
            (None, None, None, None, None, None);
        let mut ops = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "tenant" => tenant = Some(map.next_value::<String>()?),
                "revision" => revision = Some(map.next_value::<u64>()?),
                "actor" => actor = Some(map.next_value::<String>()?),
                "at_ms" => at_ms = Some(map.next_value::<i64>()?),
                "action" => action = Some(map.next_value::<String>()?),
                "target" => target = Some(map.next_value::<String>()?),
                "ops" => ops = Some(map.next_value_seed(OpsSeed(self))?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (ops, op_count) = ops.ok_or_else(|| A::Error::missing_field("ops"))?;
        Ok(CommitWindow {
            commit: Commit {
                tenant: tenant.ok_or_else(|| A::Error::missing_field("tenant"))?,
                revision: revision.ok_or_else(|| A::Error::missing_field("revision"))?,
                actor: actor.ok_or_else(|| A::Error::missing_field("actor"))?,
                at_ms: at_ms.ok_or_else(|| A::Error::missing_field("at_ms"))?,
                action: action.ok_or_else(|| A::Error::missing_field("action"))?,
                target: target.ok_or_else(|| A::Error::missing_field("target"))?,
                ops,
            },
            op_count,
        })
    }
}

struct OpsSeed(CommitSeed);

impl<'de> DeserializeSeed<'de> for OpsSeed {
    type Value = (Vec<RowOp>, usize);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for OpsSeed {
    type Value = (Vec<RowOp>, usize);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of row changes")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let CommitSeed { offset, limit } = self.0;
        let mut ops = Vec::new();
        let mut n = 0usize;
        loop {
            let keep = n >= offset && ops.len() < limit;
            let more = if keep {
                seq.next_element::<RowOp>()?
                    .map(|op| ops.push(op))
                    .is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                break;
            }
            n += 1;
        }
        Ok((ops, n))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::Kind;
    use serde_json::json;

    #[test]
    fn a_window_is_the_same_as_decoding_everything_and_slicing() {
        let c = Commit {
            tenant: "t".into(),
            revision: 3,
            actor: "a".into(),
            at_ms: 5,
            action: "import".into(),
            target: "tenant:t".into(),
            ops: (0..30)
                .map(|i| {
                    RowOp::put(
                        Kind::User,
                        format!("u{i}"),
                        json!({"i": i, "x": [1, {"y": "}"}]}),
                        None,
                    )
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&c).unwrap();
        for (offset, limit) in [(0, 20), (20, 20), (0, 0), (29, 5), (40, 1), (0, usize::MAX)] {
            assert_eq!(
                decode(&bytes, offset, limit).unwrap(),
                CommitWindow::of(c.clone(), offset, limit)
            );
        }
        assert!(decode(b"{\"ops\": []}", 0, 1).is_err());
        assert!(decode(&bytes[..bytes.len() - 1], 0, 1).is_err());
    }
}
