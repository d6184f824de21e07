//! Encoder of the ABI v1 input layout (`plugins/ABI.md`).

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
    /// The request `context`, parsed (its string and number members go into the member table).
    pub context: Option<&'a Value>,
    /// The request `context` exactly as the caller sent it, for the raw slot; when `None`, the
    /// raw slot holds `context` serialized.
    pub context_raw: Option<&'a str>,
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

fn context_members(ctx: Option<&Value>) -> impl Iterator<Item = (&String, &Value)> {
    ctx.and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.iter())
        .filter(|(_, v)| v.is_string() || v.is_number())
}

impl PluginInput<'_> {
    /// Write the v1 layout into `out` (cleared first; reuse it to avoid allocating).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        let n_ctx = context_members(self.context).count();
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
        // Raw context JSON.
        let start = out.len();
        match (self.context_raw, self.context) {
            (Some(raw), _) => out.extend_from_slice(raw.as_bytes()),
            // Writing a Value into a Vec cannot fail.
            (None, Some(ctx)) => {
                let _ = serde_json::to_writer(&mut *out, ctx);
            }
            (None, None) => {}
        }
        let raw_len = out.len() - start;
        put_u32(out, 72, start as u32);
        put_u32(out, 76, raw_len as u32);
        put_u32(out, 80, path_at as u32);
        put_u32(out, 84, self.path.len() as u32);
        put_u32(out, 88, attrs_at as u32);
        put_u32(out, 92, self.attrs.len() as u32);
        put_u32(out, 96, ctx_at as u32);
        put_u32(out, 100, n_ctx as u32);
        put_u32(out, 104, u32::from(self.context.is_some()));
        for (i, (kind, id)) in self.path.iter().enumerate() {
            put_ref(out, path_at + 16 * i, kind.as_bytes());
            put_ref(out, path_at + 16 * i + 8, id.as_bytes());
        }
        for (i, (k, v)) in self.attrs.iter().enumerate() {
            put_ref(out, attrs_at + 16 * i, k.as_bytes());
            put_ref(out, attrs_at + 16 * i + 8, v.as_bytes());
        }
        for (i, (k, v)) in context_members(self.context).enumerate() {
            let e = ctx_at + 16 * i;
            put_ref(out, e, k.as_bytes());
            match v {
                Value::String(s) => put_ref(out, e + 8, s.as_bytes()),
                other => {
                    let start = out.len();
                    let _ = serde_json::to_writer(&mut *out, other);
                    put_u32(out, e + 8, start as u32);
                    let len = (out.len() - start) as u32;
                    put_u32(out, e + 12, len);
                }
            }
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
    fn no_context() {
        let mut b = Vec::new();
        PluginInput::default().encode(&mut b);
        assert_eq!(b.len(), HEADER_LEN);
        assert_eq!(u32_at(&b, 104), 0);
        assert_eq!(u32_at(&b, 76), 0);
    }
}
