//! The SDK natively: context lookups, time helpers, the test-input builder, reasons.
//! `cd plugins && cargo test -p portcullis-plugin-sdk` (any host toolchain).

use portcullis_plugin_sdk::json::{self, Kind};
use portcullis_plugin_sdk::time::{self, Weekday};
use portcullis_plugin_sdk::{last_reason, set_reason, Input, InputBuilder, MAX_REASON};

fn input(ctx: &str) -> Vec<u8> {
    InputBuilder::new().context(ctx).build()
}

#[test]
fn typed_context_access() {
    let b = input(
        r#"{"channel":"console","mfa_age":42,"neg":-7,"f":1.5,"ok":true,"device":{"class":"public","geo":{"zone":"eu"}},"esc":"a\"b","k.dot":1}"#,
    );
    let i = Input::new(&b).unwrap();
    assert_eq!(i.get_str("channel"), Some("console"));
    assert_eq!(i.get_i64("mfa_age"), Some(42));
    assert_eq!(i.get_i64("neg"), Some(-7));
    assert_eq!(i.get_i64("f"), None, "not an integer");
    assert_eq!(i.get("f").unwrap().as_f64(), Some(1.5));
    assert_eq!(i.get_bool("ok"), Some(true));
    assert_eq!(i.get_bool("channel"), None);
    assert_eq!(i.get_str("device.class"), Some("public"));
    assert_eq!(i.get_str("device.geo.zone"), Some("eu"));
    assert_eq!(i.get("device").unwrap().kind(), Kind::Object);
    assert_eq!(i.get_str("device.nope"), None);
    assert_eq!(i.get_str("channel.x"), None);
    // Escapes: not borrowed, but comparable and copyable.
    assert_eq!(i.get_str("esc"), None);
    assert!(i.str_eq("esc", "a\"b"));
    let mut buf = [0u8; 8];
    assert_eq!(i.get("esc").unwrap().str_into(&mut buf), Some("a\"b"));
    assert_eq!(i.get("esc").unwrap().str_into(&mut [0u8; 2]), None);
    // A key with a dot: step by step.
    assert_eq!(i.ctx().unwrap().get("k.dot").unwrap().as_i64(), Some(1));
    // The member table agrees for top-level strings and numbers, in order, numbers as sent.
    let m = i.context();
    assert_eq!(m.get(0), Some(("channel", "console")));
    assert_eq!(m.get(1), Some(("mfa_age", "42")));
    assert_eq!(m.find("f"), Some("1.5"));
    assert_eq!(m.find("esc"), Some("a\"b"));
    assert_eq!(m.find("ok"), None, "booleans are in the raw JSON only");
    // No context at all.
    let b = InputBuilder::new().build();
    let i = Input::new(&b).unwrap();
    assert!(!i.has_context() && i.ctx().is_none() && i.get_str("channel").is_none());
}

#[test]
fn duplicate_keys_are_never_picked() {
    // The host refuses these contexts (400); the SDK's reader finds neither value.
    let v = json::parse(r#"{"risk":"low"}"#).unwrap();
    assert_eq!(v.get("risk").unwrap().as_str(), Some("low"));
    assert!(json::parse(r#"{"risk":"low","risk":"high"}"#).is_none());
    assert!(json::parse(r#"{"a":{"x":1,"x":2}}"#).is_none());
    assert!(json::parse(r#"{"risk":"low","ri\u0073k":"high"}"#).is_none());
    let r = std::panic::catch_unwind(|| input(r#"{"risk":"low","risk":"high"}"#));
    assert!(r.is_err(), "the builder refuses what the host refuses");
    // Other refusals the host makes: depth, non-finite numbers, bad syntax.
    let deep = format!("{}1{}", "[".repeat(32), "]".repeat(32));
    assert!(json::parse(&deep).is_none());
    let ok = format!("{}1{}", "[".repeat(31), "]".repeat(31));
    assert!(json::parse(&ok).is_some());
    for bad in [
        "{\"a\":1e400}",
        "{\"a\":01}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "[1] x",
        "\"\\x\"",
    ] {
        assert!(json::parse(bad).is_none(), "{bad}");
    }
    // Surrogate pairs and unicode escapes.
    let v = json::parse(r#""\ud83d\ude00 \u00e9""#).unwrap();
    assert!(v.str_eq("😀 é"));
    for lone in [
        r#""\ud83d""#,
        r#""\ude00""#,
        r#""\ud83d\u0041""#,
        r#""\ud83dx""#,
    ] {
        assert!(
            json::parse(lone).is_none(),
            "lone surrogates are refused: {lone}"
        );
    }
}

#[test]
fn time_helpers() {
    // 2023-11-14T22:13:20Z, a Tuesday.
    let t = 1_700_000_000;
    let d = time::utc(t);
    assert_eq!(
        (d.year, d.month, d.day, d.hour, d.minute, d.second),
        (2023, 11, 14, 22, 13, 20)
    );
    assert_eq!(d.weekday, Weekday::Tuesday);
    assert_eq!(time::weekday(0), Weekday::Thursday);
    assert_eq!(time::hour(t), 22);
    assert!(time::in_hours(t, 22, 6) && !time::in_hours(t, 6, 22));
    assert!(time::in_hours(t + 6 * 3600, 22, 6), "04:13");
    assert!(!time::in_hours(t + 8 * 3600, 22, 6), "06:13");
    assert!(time::weekday(t + 4 * 86_400).is_weekend(), "Saturday");
    assert_eq!(time::parse_rfc3339("2023-11-14T22:13:20Z"), Some(t));
    assert_eq!(
        time::parse_rfc3339("2023-11-14T23:13:20.999+01:00"),
        Some(t)
    );
    assert_eq!(time::parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        time::parse_rfc3339("2024-02-29T00:00:00Z"),
        Some(1_709_164_800)
    );
    for bad in [
        "2023-02-29T00:00:00Z",
        "2023-11-14 22:13:20",
        "2023-13-01T00:00:00Z",
        "2023-11-14T24:00:00Z",
        "2023-11-14T22:13:20+0100",
        "",
    ] {
        assert_eq!(time::parse_rfc3339(bad), None, "{bad}");
    }
    // Every day of 400 years round-trips.
    for days in (0..146_097 * 2).step_by(13) {
        let (y, m, dd) = time::civil_from_days(days);
        assert_eq!(time::days_from_civil(y, m, dd), days);
    }
    let b = InputBuilder::new().at("2026-06-01T08:30:00Z").build();
    let i = Input::new(&b).unwrap();
    assert_eq!((i.utc().hour, i.utc().weekday), (8, Weekday::Monday));
}

#[test]
fn builder_fields_read_back() {
    let b = InputBuilder::new()
        .now(1_700_000_000)
        .tenant("femo")
        .subject("zoe")
        .action("asset:operate")
        .path(&[
            ("organisation", "femo"),
            ("site", "lyon"),
            ("asset", "robot-12"),
        ])
        .resource("robot-12")
        .role("console-operator")
        .scope("lyon")
        .kind("guest")
        .email("zoe@femo.example")
        .build();
    let i = Input::new(&b).unwrap();
    assert_eq!(i.now(), 1_700_000_000);
    assert_eq!((i.tenant(), i.subject()), ("femo", "zoe"));
    assert_eq!((i.action_resource(), i.verb()), ("asset", "operate"));
    assert_eq!(
        (i.resource(), i.role(), i.scope()),
        ("robot-12", "console-operator", "lyon")
    );
    assert_eq!(i.path().len(), 3);
    assert_eq!(i.path().get(1), Some(("site", "lyon")));
    assert_eq!(i.subject_kind(), "guest");
    assert_eq!(i.attrs().find("email"), Some("zoe@femo.example"));
    assert_eq!(
        u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize,
        b.len()
    );
}

#[test]
fn reasons_are_cut_with_a_marker() {
    set_reason("short");
    assert_eq!(last_reason(), "short");
    let long = "é".repeat(200); // 400 bytes
    set_reason(&long);
    let r = last_reason();
    assert!(r.len() <= MAX_REASON, "{}", r.len());
    assert!(r.ends_with('…'));
    assert!(r.starts_with("éé"));
    set_reason(&"x".repeat(MAX_REASON));
    assert_eq!(
        last_reason().len(),
        MAX_REASON,
        "exactly the limit is kept whole"
    );
}

#[test]
fn debug_lines_are_kept_natively() {
    portcullis_plugin_sdk::debug_log("first");
    portcullis_plugin_sdk::debug_log("second");
    assert_eq!(
        portcullis_plugin_sdk::take_debug_log(),
        vec!["first", "second"]
    );
    assert!(portcullis_plugin_sdk::take_debug_log().is_empty());
}
