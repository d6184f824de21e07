//! The example plugins under plugins/ (Rust SDK crates and the C one), built by
//! `plugins/build.sh` (run here when `plugins/out` lacks them), against their documented rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::{Arc, Once};

use portcullis::plugin::{Limits, Outcome, Plugin, PluginHost, PluginInput};
use serde_json::{json, Value};

const NAMES: [&str; 5] = ["shift-hours", "channel", "device", "mfa", "c-weekdays"];
/// 2023-11-14 (a Tuesday) 22:13:20 UTC.
const NOW: i64 = 1_700_000_000;

fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins/out")
}

fn build_once() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        if NAMES
            .iter()
            .all(|n| out_dir().join(format!("{n}.wasm")).exists())
        {
            return;
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins/build.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .status()
            .expect("run plugins/build.sh");
        assert!(status.success(), "plugins/build.sh failed");
    });
}

fn load(h: &PluginHost, name: &str) -> Arc<Plugin> {
    build_once();
    let bytes = std::fs::read(out_dir().join(format!("{name}.wasm"))).unwrap();
    let p = h
        .load("femo", name, &bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{name}: {} bytes, compiled in {:?}",
        bytes.len(),
        p.compile_time()
    );
    p
}

struct Case<'a> {
    now: i64,
    role: &'a str,
    verb: &'a str,
    kind: &'a str,
    ctx: Option<Value>,
}

impl Default for Case<'_> {
    fn default() -> Self {
        Case {
            now: NOW,
            role: "machine-operator",
            verb: "operate",
            kind: "member",
            ctx: None,
        }
    }
}

fn call(p: &Plugin, c: Case) -> (Outcome, String) {
    let mut b = Vec::new();
    PluginInput {
        now: c.now,
        tenant: "femo",
        subject: "alice",
        action_resource: "asset",
        verb: c.verb,
        resource: "press-7",
        role: c.role,
        scope: "hawthorne",
        path: &[
            ("organisation", "femo"),
            ("site", "hawthorne"),
            ("asset", "press-7"),
        ],
        attrs: &[("kind", c.kind), ("email", "alice@femo.example")],
        context: c.ctx.as_ref(),
        context_raw: None,
        host_context: &[],
    }
    .encode(&mut b);
    let mut reason = String::new();
    let o = p.call_with_reason(&b, &mut reason);
    (o, reason)
}

#[test]
fn shift_hours() {
    let h = PluginHost::new(Limits::default()).unwrap();
    let p = load(&h, "shift-hours");
    let night = |now| {
        call(
            &p,
            Case {
                now,
                role: "night-shift-22-06",
                ..Case::default()
            },
        )
        .0
    };
    assert_eq!(night(NOW), Outcome::Allow);
    assert_eq!(
        night(NOW + 6 * 3600),
        Outcome::Allow,
        "04:13 is in the night shift"
    );
    assert_eq!(night(NOW + 12 * 3600), Outcome::Abstain, "10:13 is not");
    let (o, reason) = call(
        &p,
        Case {
            role: "day-shift-06-14",
            ..Case::default()
        },
    );
    assert_eq!(o, Outcome::Abstain);
    assert_eq!(reason, "outside the role's shift hours");
    // Schedule from the context when the role names none.
    let ctx = |s, e| Some(json!({"shift_start": s, "shift_end": e}));
    assert_eq!(
        call(
            &p,
            Case {
                ctx: ctx(20, 23),
                ..Case::default()
            }
        )
        .0,
        Outcome::Allow
    );
    assert_eq!(
        call(
            &p,
            Case {
                ctx: ctx(8, 16),
                ..Case::default()
            }
        )
        .0,
        Outcome::Abstain
    );
    assert_eq!(
        call(&p, Case::default()).0,
        Outcome::Deny,
        "no schedule at all"
    );
}

#[test]
fn channel() {
    let h = PluginHost::new(Limits::default()).unwrap();
    let p = load(&h, "channel");
    let ch = |c: &str| {
        call(
            &p,
            Case {
                ctx: Some(json!({"channel": c})),
                ..Case::default()
            },
        )
        .0
    };
    assert_eq!(ch("console"), Outcome::Allow);
    assert_eq!(ch("mobile"), Outcome::Abstain);
    assert_eq!(call(&p, Case::default()).0, Outcome::Abstain);
}

#[test]
fn device() {
    let h = PluginHost::new(Limits::default()).unwrap();
    let p = load(&h, "device");
    let dev = |class: &str, verb| {
        let ctx = Some(json!({"device_class": class}));
        call(
            &p,
            Case {
                verb,
                ctx,
                ..Case::default()
            },
        )
        .0
    };
    assert_eq!(dev("public", "read"), Outcome::Allow);
    assert_eq!(dev("public", "operate"), Outcome::Deny);
    assert_eq!(dev("managed", "read"), Outcome::Abstain);
}

#[test]
fn mfa() {
    let h = PluginHost::new(Limits::default()).unwrap();
    let p = load(&h, "mfa");
    let age = |a: Value, kind| {
        call(
            &p,
            Case {
                kind,
                ctx: Some(json!({"mfa_age": a})),
                ..Case::default()
            },
        )
    };
    assert_eq!(
        call(
            &p,
            Case {
                verb: "read",
                ..Case::default()
            }
        )
        .0,
        Outcome::Allow
    );
    assert_eq!(age(json!(42), "member").0, Outcome::Allow);
    assert_eq!(
        age(json!(900), "member"),
        (Outcome::Deny, "mfa is older than 300 s".into())
    );
    assert_eq!(age(json!(42), "guest").0, Outcome::Deny);
    assert_eq!(call(&p, Case::default()).0, Outcome::Deny);
}

#[test]
fn c_weekdays() {
    let h = PluginHost::new(Limits::default()).unwrap();
    let p = load(&h, "c-weekdays");
    assert_eq!(call(&p, Case::default()).0, Outcome::Allow, "tuesday");
    let (o, reason) = call(
        &p,
        Case {
            now: NOW + 4 * 86_400,
            ..Case::default()
        },
    );
    assert_eq!(o, Outcome::Abstain, "saturday");
    assert!(reason.starts_with("weekend"), "{reason}");
}
