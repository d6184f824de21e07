//! The test-input builder: the exact bytes the host writes for one call (ABI v1, 112-byte
//! header), so a plugin's unit tests run natively (`cargo test` on the build machine, no
//! wasm, no host). Not built for wasm32. `tests/plugins_sdk.rs` in the host repository checks
//! it byte for byte against the host's own encoder (`src/plugin/input.rs`) on random inputs.
//!
//! ```
//! use portcullis_plugin_sdk::{InputBuilder, Input};
//! let bytes = InputBuilder::new()
//!     .action("asset:operate")
//!     .path(&[("site", "lyon"), ("asset", "robot-12")])
//!     .context(r#"{"channel": "console", "mfa_age": 42}"#)
//!     .build();
//! let input = Input::new(&bytes).unwrap();
//! assert_eq!(input.verb(), "operate");
//! assert_eq!(input.get_i64("mfa_age"), Some(42));
//! ```

extern crate std;

use std::string::{String, ToString};
use std::vec::Vec;

use crate::json::{self, Kind};
use crate::HEADER_LEN;

/// Everything the host puts in one input. Defaults: `now` 0, tenant `t`, subject `alice`,
/// action `asset:read`, resource `r` with the path `[("asset", "r")]`, role `role`, scope the
/// resource, attributes `kind: member` and an empty `email`, no context.
#[derive(Clone, Debug)]
pub struct InputBuilder {
    now: i64,
    tenant: String,
    subject: String,
    action_resource: String,
    verb: String,
    resource: String,
    role: String,
    scope: Option<String>,
    path: Option<Vec<(String, String)>>,
    attrs: Vec<(String, String)>,
    context: Option<String>,
}

impl Default for InputBuilder {
    fn default() -> Self {
        InputBuilder {
            now: 0,
            tenant: "t".into(),
            subject: "alice".into(),
            action_resource: "asset".into(),
            verb: "read".into(),
            resource: "r".into(),
            role: "role".into(),
            scope: None,
            path: None,
            attrs: std::vec![("kind".into(), "member".into()), ("email".into(), String::new())],
            context: None,
        }
    }
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_ref(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let off = out.len() as u32;
    out.extend_from_slice(bytes);
    put_u32(out, at, off);
    put_u32(out, at + 4, bytes.len() as u32);
}

impl InputBuilder {
    pub fn new() -> InputBuilder {
        InputBuilder::default()
    }
    /// The check's time (the input's `now`), unix seconds.
    pub fn now(mut self, t: i64) -> Self {
        self.now = t;
        self
    }
    /// The check's time as RFC 3339. Panics on a malformed time (a test's mistake).
    pub fn at(self, rfc3339: &str) -> Self {
        match crate::time::parse_rfc3339(rfc3339) {
            Some(t) => self.now(t),
            None => panic!("InputBuilder::at: not an RFC 3339 time: {rfc3339:?}"),
        }
    }
    pub fn tenant(mut self, t: &str) -> Self {
        self.tenant = t.into();
        self
    }
    pub fn subject(mut self, s: &str) -> Self {
        self.subject = s.into();
        self
    }
    /// `resource:verb`, split at the first `:` as the host does.
    pub fn action(mut self, a: &str) -> Self {
        let (r, v) = a.split_once(':').unwrap_or((a, ""));
        self.action_resource = r.into();
        self.verb = v.into();
        self
    }
    /// The resource (node id). Unless [`InputBuilder::path`] is given, the path is this one
    /// node, of kind `asset`.
    pub fn resource(mut self, r: &str) -> Self {
        self.resource = r.into();
        self
    }
    pub fn role(mut self, r: &str) -> Self {
        self.role = r.into();
        self
    }
    /// The matched assignment's scope (default: the resource).
    pub fn scope(mut self, s: &str) -> Self {
        self.scope = Some(s.into());
        self
    }
    /// The node path, root first, as (kind, id); the last entry should be the resource.
    pub fn path(mut self, p: &[(&str, &str)]) -> Self {
        self.path = Some(p.iter().map(|(k, i)| (k.to_string(), i.to_string())).collect());
        self
    }
    /// The subject's `kind` attribute (`owner`, `admin`, `member`, `guest`).
    pub fn kind(self, k: &str) -> Self {
        self.attr("kind", k)
    }
    /// The subject's `email` attribute.
    pub fn email(self, e: &str) -> Self {
        self.attr("email", e)
    }
    /// Sets an attribute (replacing one of the same key, else appended).
    pub fn attr(mut self, key: &str, value: &str) -> Self {
        match self.attrs.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value.into(),
            None => self.attrs.push((key.into(), value.into())),
        }
        self
    }
    /// The request context, as the JSON text the caller sends. Checked at [`InputBuilder::build`]
    /// as the host checks it.
    pub fn context(mut self, json: &str) -> Self {
        self.context = Some(json.into());
        self
    }

    /// The input bytes, exactly as the host encodes them. Panics if the context is one the
    /// host refuses with 400 (malformed, duplicate keys, deeper than 32, non-finite numbers):
    /// no plugin would ever see it.
    pub fn build(&self) -> Vec<u8> {
        let members: Vec<(String, &str, Option<String>)> = match &self.context {
            None => Vec::new(),
            Some(raw) => {
                let v = match json::parse(raw) {
                    Some(v) => v,
                    None => panic!(
                        "InputBuilder: the host refuses this context (400 malformed_json): {raw:?}"
                    ),
                };
                v.members()
                    .filter_map(|(k, v)| {
                        let mut key = String::new();
                        json::unescape(k, |c| key.push(c))?;
                        match v.kind() {
                            Kind::String => {
                                let mut s = String::new();
                                json::unescape(v.text(), |c| s.push(c))?;
                                Some((key, "", Some(s)))
                            }
                            Kind::Number => Some((key, v.text(), None)),
                            _ => None,
                        }
                    })
                    .collect()
            }
        };
        let default_path;
        let path: &[(String, String)] = match &self.path {
            Some(p) => p,
            None => {
                default_path = [("asset".to_string(), self.resource.clone())];
                &default_path
            }
        };
        let path_at = HEADER_LEN;
        let attrs_at = path_at + 16 * path.len();
        let ctx_at = attrs_at + 16 * self.attrs.len();
        let strings_at = ctx_at + 16 * members.len();
        let mut out = std::vec![0u8; strings_at];
        put_u32(&mut out, 0, 1);
        out[8..16].copy_from_slice(&self.now.to_le_bytes());
        let scope = self.scope.as_deref().unwrap_or(&self.resource);
        for (at, s) in [
            (16, self.tenant.as_str()),
            (24, self.subject.as_str()),
            (32, self.action_resource.as_str()),
            (40, self.verb.as_str()),
            (48, self.resource.as_str()),
            (56, self.role.as_str()),
            (64, scope),
            (72, self.context.as_deref().unwrap_or("")),
        ] {
            put_ref(&mut out, at, s.as_bytes());
        }
        put_u32(&mut out, 80, path_at as u32);
        put_u32(&mut out, 84, path.len() as u32);
        put_u32(&mut out, 88, attrs_at as u32);
        put_u32(&mut out, 92, self.attrs.len() as u32);
        put_u32(&mut out, 96, ctx_at as u32);
        put_u32(&mut out, 100, members.len() as u32);
        put_u32(&mut out, 104, u32::from(self.context.is_some()));
        for (i, (k, id)) in path.iter().enumerate() {
            put_ref(&mut out, path_at + 16 * i, k.as_bytes());
            put_ref(&mut out, path_at + 16 * i + 8, id.as_bytes());
        }
        for (i, (k, v)) in self.attrs.iter().enumerate() {
            put_ref(&mut out, attrs_at + 16 * i, k.as_bytes());
            put_ref(&mut out, attrs_at + 16 * i + 8, v.as_bytes());
        }
        for (i, (k, num, s)) in members.iter().enumerate() {
            put_ref(&mut out, ctx_at + 16 * i, k.as_bytes());
            let v = s.as_deref().unwrap_or(num);
            put_ref(&mut out, ctx_at + 16 * i + 8, v.as_bytes());
        }
        let total = out.len() as u32;
        put_u32(&mut out, 4, total);
        out
    }
}
