//! Encoder of the ABI v1 input layout (`plugins/ABI.md`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer as _, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// Header size of the v1 layout.
pub const HEADER_LEN: usize = 112;

/// Everything a plugin sees of one check and the grant that matched.
#[derive(Debug, Clone, Copy, Default)]
pub struct PluginInput<'a> {
    /// Unix seconds of the check.
    pub now: i64,
    pub tenant: &'a str,
    pub subject: &'a str,
    /// `asset` in `asset:read`.
    pub action_resource: &'a str,
    /// `read` in `asset:read`.
    pub verb: &'a str,
    pub resource: &'a str,
    /// The matched grant's role id.
    pub role: &'a str,
    /// The matched assignment's scope node id.
    pub scope: &'a str,
    /// Node path root → resource as (kind, id).
    pub path: &'a [(&'a str, &'a str)],
    /// Subject attributes (`kind`, `email`).
    pub attrs: &'a [(&'a str, &'a str)],
    /// The request `context`, parsed; used only when `context_raw` is `None` (then serialized
    /// for the raw slot).
    pub context: Option<&'a Value>,
    /// The request `context` exactly as the caller sent it: the raw slot, and the source of the
    /// member table (top-level string and number members, in document order). When `None`, the
    /// raw slot holds `context` serialized.
    pub context_raw: Option<&'a str>,
    /// Context members the host sets (e.g. the session's `channel`): they replace caller members
    /// of the same name, in the member table and in the raw slot (then the caller's object
    /// re-serialized with them), so a caller cannot claim them.
    pub host_context: &'a [(&'a str, &'a str)],
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    if let Some(d) = out.get_mut(at..at + 4) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// Append `bytes` to `out` and write its (offset, len) ref at `at`.
fn put_ref(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let off = out.len() as u32;
    out.extend_from_slice(bytes);
    put_u32(out, at, off);
    put_u32(out, at + 4, bytes.len() as u32);
}

/// The context members a plugin sees (ABI v1): the top-level members of the raw context JSON,
/// when it is an object, whose value is a string (unescaped) or a number (its text exactly as
/// sent), in the order of the JSON text. Derived from the raw bytes alone, so the member table
/// and the raw slot always agree, and the SDK's test-input builder reproduces it. A context the
/// host would refuse (`check_context`: duplicate keys, too deep, not finite) never gets here;
/// JSON that does not parse yields no members.
fn context_members(raw: &str) -> Vec<(Cow<'_, str>, Member<'_>)> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(Cow<'de, str>, Member<'de>)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<CowStr<'de>>()? {
                let v: &'de RawValue = map.next_value()?;
                let text = v.get();
                match text.as_bytes().first() {
                    Some(b'"') => {
                        let s: CowStr<'de> =
                            serde_json::from_str(text).map_err(de::Error::custom)?;
                        out.push((k.0, Member::Str(s.0)));
                    }
                    Some(b'-' | b'0'..=b'9') => out.push((k.0, Member::Num(text))),
                    _ => {}
                }
            }
            Ok(out)
        }
        // Any other top-level value: no members.
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok(Vec::new())
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    match de.deserialize_any(Members) {
        Ok(m) if de.end().is_ok() => m,
        _ => Vec::new(),
    }
}

/// The context object `raw` (none, or not an object: an empty one) with the host's members
/// set, replacing the caller's of the same name.
fn with_host_members(raw: Option<&str>, host: &[(&str, &str)]) -> String {
    let mut obj = raw
        .and_then(|r| serde_json::from_str::<serde_json::Map<String, Value>>(r).ok())
        .unwrap_or_default();
    for (k, v) in host {
        obj.insert((*k).to_string(), Value::String((*v).to_string()));
    }
    Value::Object(obj).to_string()
}

/// A string that borrows from the input when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A context member's value as the plugin sees it.
enum Member<'a> {
    /// A string, unescaped.
    Str(Cow<'a, str>),
    /// A number's JSON text, as sent.
    Num(&'a str),
}

impl Member<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Member::Str(s) => s.as_bytes(),
            Member::Num(n) => n.as_bytes(),
        }
    }
}

impl PluginInput<'_> {
    /// Write the v1 layout into `out` (cleared first; reuse it to avoid allocating).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        // The raw slot: the context exactly as sent, else `context` serialized.
        let serialized;
        let mut raw: Option<&str> = match (self.context_raw, self.context) {
            (Some(raw), _) => Some(raw),
            (None, Some(ctx)) => {
                serialized = serde_json::to_string(ctx).unwrap_or_default();
                Some(serialized.as_str())
            }
            (None, None) => None,
        };
        let with_host;
        if !self.host_context.is_empty() {
            with_host = with_host_members(raw, self.host_context);
            raw = Some(with_host.as_str());
        }
        let members = raw.map(context_members).unwrap_or_default();
        let n_ctx = members.len();
        let path_at = HEADER_LEN;
        let attrs_at = path_at + 16 * self.path.len();
        let ctx_at = attrs_at + 16 * self.attrs.len();
        let strings_at = ctx_at + 16 * n_ctx;
        out.resize(strings_at, 0);
        put_u32(out, 0, 1);
        let now = self.now.to_le_bytes();
        out[8..16].copy_from_slice(&now);
        put_ref(out, 16, self.tenant.as_bytes());
        put_ref(out, 24, self.subject.as_bytes());
        put_ref(out, 32, self.action_resource.as_bytes());
        put_ref(out, 40, self.verb.as_bytes());
        put_ref(out, 48, self.resource.as_bytes());
        put_ref(out, 56, self.role.as_bytes());
        put_ref(out, 64, self.scope.as_bytes());
        put_ref(out, 72, raw.unwrap_or("").as_bytes());
        put_u32(out, 80, path_at as u32);
        put_u32(out, 84, self.path.len() as u32);
        put_u32(out, 88, attrs_at as u32);
        put_u32(out, 92, self.attrs.len() as u32);
        put_u32(out, 96, ctx_at as u32);
        put_u32(out, 100, n_ctx as u32);
        put_u32(out, 104, u32::from(raw.is_some()));
        for (i, (kind, id)) in self.path.iter().enumerate() {
            put_ref(out, path_at + 16 * i, kind.as_bytes());
            put_ref(out, path_at + 16 * i + 8, id.as_bytes());
        }
        for (i, (k, v)) in self.attrs.iter().enumerate() {
            put_ref(out, attrs_at + 16 * i, k.as_bytes());
            put_ref(out, attrs_at + 16 * i + 8, v.as_bytes());
        }
        for (i, (k, v)) in members.iter().enumerate() {
            let e = ctx_at + 16 * i;
            put_ref(out, e, k.as_bytes());
            put_ref(out, e + 8, v.bytes());
        }
        let total = out.len() as u32;
        put_u32(out, 4, total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
    }
    fn str_at(b: &[u8], o: usize) -> &str {
        let (off, len) = (u32_at(b, o) as usize, u32_at(b, o + 4) as usize);
        std::str::from_utf8(&b[off..off + len]).unwrap()
    }

    #[test]
    fn layout_matches_abi() {
        let ctx = serde_json::json!({"channel": "console", "mfa_age": 42, "nested": {"a": 1}});
        let input = PluginInput {
            now: 1_700_000_000,
            tenant: "femo",
            subject: "alice",
            action_resource: "asset",
            verb: "read",
            resource: "press-7",
            role: "machine-operator",
            scope: "hawthorne",
            path: &[("organisation", "femo"), ("asset", "press-7")],
            attrs: &[("kind", "member"), ("email", "alice@femo.example")],
            context: Some(&ctx),
            context_raw: None,
            host_context: &[],
        };
        let mut b = Vec::new();
        input.encode(&mut b);
        assert_eq!(u32_at(&b, 0), 1);
        assert_eq!(u32_at(&b, 4) as usize, b.len());
        assert_eq!(
            i64::from_le_bytes(b[8..16].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(str_at(&b, 16), "femo");
        assert_eq!(str_at(&b, 40), "read");
        assert_eq!(str_at(&b, 64), "hawthorne");
        let raw: Value = serde_json::from_str(str_at(&b, 72)).unwrap();
        assert_eq!(raw, ctx);
        let path = u32_at(&b, 80) as usize;
        assert_eq!(u32_at(&b, 84), 2);
        assert_eq!(str_at(&b, path + 16), "asset");
        assert_eq!(str_at(&b, path + 24), "press-7");
        let attrs = u32_at(&b, 88) as usize;
        assert_eq!(str_at(&b, attrs + 24), "alice@femo.example");
        let c = u32_at(&b, 96) as usize;
        assert_eq!(u32_at(&b, 100), 2, "only string and number members");
        let members: Vec<(&str, &str)> = (0..2)
            .map(|i| (str_at(&b, c + 16 * i), str_at(&b, c + 16 * i + 8)))
            .collect();
        assert!(members.contains(&("channel", "console")));
        assert!(members.contains(&("mfa_age", "42")));
        assert_eq!(u32_at(&b, 104), 1);
    }

    #[test]
    fn raw_context_is_passed_byte_for_byte() {
        let raw = r#"{ "channel" : "console",  "n": 1.50 }"#;
        let ctx: Value = serde_json::from_str(raw).unwrap();
        let input = PluginInput {
            context: Some(&ctx),
            context_raw: Some(raw),
            ..PluginInput::default()
        };
        let mut b = Vec::new();
        input.encode(&mut b);
        assert_eq!(str_at(&b, 72), raw);
        assert_eq!(u32_at(&b, 100), 2);
    }

    #[test]
    fn host_members_replace_the_callers() {
        let members = |b: &[u8]| -> Vec<(String, String)> {
            let c = u32_at(b, 96) as usize;
            (0..u32_at(b, 100) as usize)
                .map(|i| {
                    let e = c + 16 * i;
                    (str_at(b, e).to_string(), str_at(b, e + 8).to_string())
                })
                .collect()
        };
        let host = [("channel", "console")];
        let mut b = Vec::new();
        for (raw, want) in [
            (
                Some(r#"{"channel":"field","n":1}"#),
                vec![("channel", "console"), ("n", "1")],
            ),
            (None, vec![("channel", "console")]),
            (Some("[1]"), vec![("channel", "console")]),
        ] {
            PluginInput {
                context_raw: raw,
                host_context: &host,
                ..PluginInput::default()
            }
            .encode(&mut b);
            let got = members(&b);
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert!(
                got.iter().all(|m| want.contains(m)) && got.len() == want.len(),
                "{raw:?}: {got:?}"
            );
            let ctx: serde_json::Value = serde_json::from_str(str_at(&b, 72)).unwrap();
            assert_eq!(ctx["channel"], "console", "{raw:?}");
            assert_eq!(u32_at(&b, 104), 1);
        }
    }

    #[test]
    fn members_come_from_the_raw_json_in_order_numbers_as_sent() {
        let raw =
            r#"{"z":"a\"b\u00e9","n":1.50,"e":-2E+3,"o":{"x":1},"b":true,"a":[1],"k\u0041":"v"}"#;
        let input = PluginInput {
            context_raw: Some(raw),
            ..PluginInput::default()
        };
        let mut b = Vec::new();
        input.encode(&mut b);
        let c = u32_at(&b, 96) as usize;
        let n = u32_at(&b, 100) as usize;
        let members: Vec<(&str, &str)> = (0..n)
            .map(|i| (str_at(&b, c + 16 * i), str_at(&b, c + 16 * i + 8)))
            .collect();
        assert_eq!(
            members,
            vec![
                ("z", "a\"b\u{e9}"),
                ("n", "1.50"),
                ("e", "-2E+3"),
                ("kA", "v")
            ]
        );
        // Not an object: no members, the raw slot as sent.
        for raw in ["[1,2]", "\"s\"", "3", "null", "{bad"] {
            let input = PluginInput {
                context_raw: Some(raw),
                ..PluginInput::default()
            };
            input.encode(&mut b);
            assert_eq!(u32_at(&b, 100), 0, "{raw}");
            assert_eq!(str_at(&b, 72), raw);
            assert_eq!(u32_at(&b, 104), 1);
        }
    }

    #[test]
    fn no_context() {
        let mut b = Vec::new();
        PluginInput::default().encode(&mut b);
        assert_eq!(b.len(), HEADER_LEN);
        assert_eq!(u32_at(&b, 104), 0);
        assert_eq!(u32_at(&b, 76), 0);
    }
}
