//! The SDK's test-input builder (`plugins/sdk`, `InputBuilder`) against the host's encoder
//! (`src/plugin/input.rs`, `PluginInput::encode`): on random inputs — strings of any Unicode,
//! node paths, attributes, and request contexts written with random whitespace, escapes and
//! number spellings — both produce the same bytes, and the SDK's JSON reader refuses exactly
//! the contexts the host refuses. So a plugin's native unit tests see what the host will send.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis::plugin::{check_context, PluginInput};
use portcullis_plugin_sdk::{json as sdk_json, Input, InputBuilder};
use proptest::prelude::*;

/// A JSON value to be written out with random formatting.
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    /// The number's text, as it will be written.
    Num(String),
    Str(String),
    Arr(Vec<J>),
    /// Keys are unique (the host refuses duplicates).
    Obj(Vec<(String, J)>),
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (any::<i32>(), 0u32..1000, 0usize..3)
            .prop_map(|(i, f, z)| format!("{i}.{}{f}", "0".repeat(z))),
        (
            -99i32..99,
            0u32..100,
            -20i32..20,
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(i, f, e, upper, plus)| {
                let e_char = if upper { "E" } else { "e" };
                let sign = if e >= 0 && plus { "+" } else { "" };
                format!("{i}.{f}{e_char}{sign}{e}")
            }),
        Just("-0".to_string()),
        Just("0".to_string()),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,8}",
        any::<String>().prop_map(|s| s.chars().take(10).collect()),
        "[\"\\\\/\\x00-\\x1f é😀\u{2028}]{0,6}",
    ]
}

fn json_value() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        number().prop_map(J::Num),
        text().prop_map(J::Str),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
            prop::collection::btree_map(text(), inner, 0..5)
                .prop_map(|m| J::Obj(m.into_iter().collect())),
        ]
    })
}

fn context() -> impl Strategy<Value = J> {
    prop_oneof![
        4 => prop::collection::btree_map(text(), json_value(), 0..6)
            .prop_map(|m| J::Obj(m.into_iter().collect())),
        1 => json_value(),
    ]
}

/// A tiny deterministic generator for formatting choices.
struct Style(u64);

impl Style {
    fn pick(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
    fn ws(&mut self, out: &mut String) {
        for _ in 0..self.pick(3) {
            out.push([' ', '\n', '\t', '\r'][self.pick(4) as usize]);
        }
    }
    fn string(&mut self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' if self.pick(2) == 0 => out.push_str("\\n"),
                '/' if self.pick(2) == 0 => out.push_str("\\/"),
                c if (c as u32) < 0x20 || self.pick(5) == 0 => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        if self.pick(2) == 0 {
                            out.push_str(&format!("\\u{:04x}", u));
                        } else {
                            out.push_str(&format!("\\u{:04X}", u));
                        }
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn write(&mut self, j: &J, out: &mut String) {
        self.ws(out);
        match j {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(n),
            J::Str(s) => self.string(s, out),
            J::Arr(v) => {
                out.push('[');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(x, out);
                }
                self.ws(out);
                out.push(']');
            }
            J::Obj(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.ws(out);
                    self.string(k, out);
                    self.ws(out);
                    out.push(':');
                    self.write(v, out);
                }
                self.ws(out);
                out.push('}');
            }
        }
        self.ws(out);
    }
}

fn render(j: &J, seed: u64) -> String {
    let mut out = String::new();
    Style(seed | 1).write(j, &mut out);
    out
}

#[derive(Debug, Clone)]
struct Case {
    now: i64,
    tenant: String,
    subject: String,
    action_resource: String,
    verb: String,
    resource: String,
    role: String,
    scope: String,
    path: Vec<(String, String)>,
    kind: String,
    email: String,
    context: Option<String>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0i64..=253_402_300_799,
        (
            text(),
            text(),
            "[a-z*]{1,6}",
            "[a-z*]{1,6}",
            text(),
            text(),
            text(),
        ),
        prop::collection::vec((text(), text()), 1..6),
        (text(), text()),
        prop::option::of((context(), any::<u64>())),
    )
        .prop_map(
            |(
                now,
                (tenant, subject, ar, verb, resource, role, scope),
                path,
                (kind, email),
                ctx,
            )| {
                Case {
                    now,
                    tenant,
                    subject,
                    action_resource: ar,
                    verb,
                    resource,
                    role,
                    scope,
                    path,
                    kind,
                    email,
                    context: ctx.map(|(j, seed)| render(&j, seed)),
                }
            },
        )
}

fn host_bytes(c: &Case) -> Vec<u8> {
    let path: Vec<(&str, &str)> = c
        .path
        .iter()
        .map(|(k, i)| (k.as_str(), i.as_str()))
        .collect();
    let parsed: Option<serde_json::Value> = c
        .context
        .as_deref()
        .map(|t| serde_json::from_str(t).unwrap());
    let mut out = Vec::new();
    PluginInput {
        now: c.now,
        tenant: &c.tenant,
        subject: &c.subject,
        action_resource: &c.action_resource,
        verb: &c.verb,
        resource: &c.resource,
        role: &c.role,
        scope: &c.scope,
        path: &path,
        attrs: &[("kind", &c.kind), ("email", &c.email)],
        context: parsed.as_ref(),
        context_raw: c.context.as_deref(),
        host_context: &[],
    }
    .encode(&mut out);
    out
}

fn sdk_bytes(c: &Case) -> Vec<u8> {
    let path: Vec<(&str, &str)> = c
        .path
        .iter()
        .map(|(k, i)| (k.as_str(), i.as_str()))
        .collect();
    let mut b = InputBuilder::new()
        .now(c.now)
        .tenant(&c.tenant)
        .subject(&c.subject)
        .action(&format!("{}:{}", c.action_resource, c.verb))
        .resource(&c.resource)
        .role(&c.role)
        .scope(&c.scope)
        .path(&path)
        .kind(&c.kind)
        .email(&c.email);
    if let Some(ctx) = &c.context {
        b = b.context(ctx);
    }
    b.build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The builder writes exactly the host's bytes, and the SDK reads them back.
    #[test]
    fn builder_matches_the_host_encoder(c in case()) {
        if let Some(ctx) = &c.context {
            prop_assert!(check_context(ctx).is_ok(), "the host accepts {ctx:?}");
        }
        let host = host_bytes(&c);
        let sdk = sdk_bytes(&c);
        prop_assert_eq!(&host, &sdk, "context {:?}", c.context);
        let i = Input::new(&sdk).unwrap();
        prop_assert_eq!(i.now(), c.now);
        prop_assert_eq!(i.tenant(), c.tenant.as_str());
        prop_assert_eq!(i.path().len(), c.path.len());
        prop_assert_eq!(i.has_context(), c.context.is_some());
        // Every top-level string member reads the same through the member table and the
        // typed lookup (for keys without a dot).
        let m = i.context();
        for k in 0..m.len() {
            let (key, value) = m.get(k).unwrap();
            if key.is_empty() || key.contains('.') {
                continue;
            }
            let v = i.get(key).unwrap();
            match v.kind() {
                sdk_json::Kind::String => prop_assert!(v.str_eq(value), "{key}"),
                sdk_json::Kind::Number => prop_assert_eq!(v.text(), value),
                other => prop_assert!(false, "member {key} of kind {other:?}"),
            }
        }
    }

    /// The SDK's JSON reader refuses exactly what the host's context check refuses, on valid
    /// contexts with one byte changed, dropped or duplicated.
    #[test]
    fn sdk_and_host_refuse_the_same_contexts(
        j in context(),
        seed in any::<u64>(),
        at in any::<prop::sample::Index>(),
        op in 0u8..3,
        byte in prop_oneof![Just(b'"'), Just(b'\\'), Just(b','), Just(b'}'), Just(b'e'), Just(b'-'), Just(b'.'), Just(b'0'), any::<u8>()],
    ) {
        let t = render(&j, seed);
        let mut b = t.into_bytes();
        let i = at.index(b.len().max(1)).min(b.len().saturating_sub(1));
        match op {
            0 if !b.is_empty() => b[i] = byte,
            1 if !b.is_empty() => { b.remove(i); }
            _ => b.insert(i, byte),
        }
        let Ok(text) = String::from_utf8(b) else { return Ok(()) };
        let host = check_context(&text).is_ok();
        let sdk = sdk_json::parse(&text).is_some();
        prop_assert_eq!(host, sdk, "{:?}", text);
    }
}

#[test]
fn duplicate_keys_are_refused_by_both() {
    for t in [
        r#"{"a":1,"a":2}"#,
        r#"{"a":1,"\u0061":2}"#,
        r#"{"x":{"k":"1","k":"1"}}"#,
        r#"[{"a":1,"a":1}]"#,
    ] {
        assert!(check_context(t).is_err(), "{t}");
        assert!(sdk_json::parse(t).is_none(), "{t}");
    }
}

/// The SDK's own tests (`plugins/sdk/tests/sdk.rs`: context lookups, time helpers, builder,
/// reasons), run here too so `cargo test` of this crate covers them.
#[path = "../plugins/sdk/tests/sdk.rs"]
mod sdk_own_tests;
