//! Data-plane endpoints: check, batch, filter, scopes, explain.
//!
//! Bodies are parsed into borrowed structs (no copies of strings that need no unescaping);
//! decisions run synchronously on one pinned snapshot; responses are written by hand for the
//! small fixed shapes.

use std::borrow::Cow;
use std::io::Write;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::{ApiError, ErrorCode};
use super::State;
use crate::decide::Decision;
use crate::engine::Request;
use crate::snapshot::SnapshotGuard;

/// A request `context`, checked when the body is parsed (`plugin::check_context`: finite
/// numbers, bounded depth, no duplicate keys; otherwise the request is a 400) and kept as the
/// raw bytes the caller sent.
#[derive(Clone, Copy)]
pub struct Context<'a>(&'a RawValue);

impl<'a> Context<'a> {
    pub fn get(self) -> &'a str {
        self.0.get()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Context<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'a RawValue>::deserialize(d)?;
        crate::plugin::check_context(raw.get()).map_err(serde::de::Error::custom)?;
        Ok(Context(raw))
    }
}

/// A data-plane request body: the fields every question shares (tenant, who — `subject` or
/// `token` —, action, context, `min_revision`) plus the endpoint's own.
macro_rules! question {
    ($(#[$doc:meta])* $name:ident { $($own:tt)* }) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name<'a> {
            #[serde(borrow)]
            pub tenant: Cow<'a, str>,
            #[serde(borrow, default)]
            pub subject: Option<Cow<'a, str>>,
            #[serde(borrow, default)]
            pub token: Option<Cow<'a, str>>,
            #[serde(borrow)]
            pub action: Cow<'a, str>,
            #[serde(borrow, default)]
            pub context: Option<Context<'a>>,
            #[serde(default)]
            pub min_revision: Option<u64>,
            $($own)*
        }

        impl<'a> $name<'a> {
            /// The engine request this body asks, for `who` (from `subject` or `token`).
            fn ask<'s>(&'s self, who: &'s Asker<'_>, now: i64) -> Request<'s> {
                who.request(&self.action, now, self.context.map(Context::get))
            }
        }
    };
}

question!(
    /// `/v1/check` and `/v1/explain`.
    CheckReq {
        #[serde(borrow)]
        pub resource: Cow<'a, str>,
    }
);

question!(
    /// `/v1/filter`.
    FilterReq {
        #[serde(borrow)]
        pub resources: Vec<Cow<'a, str>>,
    }
);

question!(
    /// `/v1/scopes`.
    ScopesReq {}
);

/// One item of `/v1/check/batch` (the tenant and `min_revision` are the batch's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchItem<'a> {
    #[serde(borrow, default)]
    pub subject: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(borrow)]
    pub resource: Cow<'a, str>,
    #[serde(borrow, default)]
    pub context: Option<Context<'a>>,
}

/// `/v1/check/batch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchReq<'a> {
    #[serde(borrow)]
    pub tenant: Cow<'a, str>,
    #[serde(borrow)]
    pub checks: Vec<BatchItem<'a>>,
    #[serde(default)]
    pub min_revision: Option<u64>,
}

pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    super::body::require_object(body)?;
    serde_json::from_slice(body).map_err(|e| ApiError::malformed(&e))
}

/// Parses a check (or explain) body: [`parse`], with a fast path for the shape nearly every
/// caller sends — one flat object of plain string fields (ASCII, no escapes, each field at most
/// once, no `context` or `min_revision`). For those bodies the fast path builds exactly what
/// serde would; anything else (other fields or value types, escapes, duplicates, missing
/// fields, any syntax error) goes through serde, so results and error messages are unchanged.
pub fn parse_check(body: &[u8]) -> Result<CheckReq<'_>, ApiError> {
    match fast_check(body) {
        Some(r) => Ok(r),
        None => parse(body),
    }
}

/// JSON whitespace, as serde_json skips it.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\t' | b'\r')) {
        i += 1;
    }
    i
}

/// A string literal at `b[i]` with only printable ASCII and no escapes: its text and the index
/// after the closing quote.
fn plain_str(b: &[u8], i: usize) -> Option<(&str, usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let rest = b.get(i + 1..)?;
    let len = rest
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c))?;
    if rest[len] != b'"' {
        return None;
    }
    let s = std::str::from_utf8(&rest[..len]).ok()?;
    Some((s, i + 1 + len + 1))
}

fn fast_check(b: &[u8]) -> Option<CheckReq<'_>> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut fields: [Option<&str>; 5] = [None; 5]; // tenant, subject, token, action, resource
    loop {
        let (key, j) = plain_str(b, skip_ws(b, i))?;
        i = skip_ws(b, j);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let (value, j) = plain_str(b, skip_ws(b, i + 1))?;
        i = skip_ws(b, j);
        let slot = match key {
            "tenant" => &mut fields[0],
            "subject" => &mut fields[1],
            "token" => &mut fields[2],
            "action" => &mut fields[3],
            "resource" => &mut fields[4],
            _ => return None,
        };
        if slot.replace(value).is_some() {
            return None;
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return None,
        }
    }
    if skip_ws(b, i + 1) != b.len() {
        return None;
    }
    let [tenant, subject, token, action, resource] = fields;
    Some(CheckReq {
        tenant: Cow::Borrowed(tenant?),
        subject: subject.map(Cow::Borrowed),
        token: token.map(Cow::Borrowed),
        action: Cow::Borrowed(action?),
        resource: Cow::Borrowed(resource?),
        context: None,
        min_revision: None,
    })
}

/// Who a request asks for: a user id (`subject`, or the user a token stands for, borrowed from
/// the snapshot: no copy) with the channel of a session token; or an SSO token's identity.
pub struct Asker<'a> {
    user: &'a str,
    sso: Option<crate::server::sso::SsoIdentity>,
    channel: Option<&'static str>,
}

impl Asker<'_> {
    /// The subject: the user id, or the SSO token's subject claim.
    pub fn subject(&self) -> &str {
        match &self.sso {
            Some(s) => s.subject(),
            None => self.user,
        }
    }

    /// The engine request for `action`.
    pub fn request<'s>(
        &'s self,
        action: &'s str,
        now: i64,
        context: Option<&'s str>,
    ) -> Request<'s> {
        Request {
            subject: self.subject(),
            action,
            now,
            context,
            sso: self.sso.as_ref().map(|s| s.groups),
            channel: self.channel,
        }
    }
}

/// Who a request asks for: `subject`, or what a `token` stands for.
pub fn subject<'a>(
    state: &State,
    snap: &'a SnapshotGuard,
    subject: &'a Option<Cow<'a, str>>,
    token: &'a Option<Cow<'a, str>>,
) -> Result<Asker<'a>, ApiError> {
    let user = |user| Asker {
        user,
        sso: None,
        channel: None,
    };
    match (subject, token) {
        (Some(_), None) if state.config.data_plane.require_token => Err(ApiError::unauthenticated(
            "this server requires a 'token' (data_plane.require_token); a bare 'subject' is refused",
        )),
        (Some(s), None) => Ok(user(s.as_ref())),
        (None, Some(t)) => Ok(
            match state.tokens.identity_for(snap, t, state.clock.now())? {
                crate::server::tokens::TokenIdentity::User { user, channel } => Asker {
                    user,
                    sso: None,
                    channel,
                },
                crate::server::tokens::TokenIdentity::Sso(sso) => Asker {
                    user: "",
                    sso: Some(sso),
                    channel: None,
                },
            },
        ),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give either 'subject' or 'token', not both",
        )),
        (None, None) => Err(ApiError::bad_request("missing 'subject' (or 'token')")),
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Ids that need no escaping are the norm; serde_json handles the rest.
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x80)
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn decision_fields(out: &mut Vec<u8>, d: Decision) {
    out.extend_from_slice(if d.allowed {
        b"\"allowed\":true,\"reason\":\""
    } else {
        b"\"allowed\":false,\"reason\":\""
    });
    out.extend_from_slice(d.reason.code().as_bytes());
    out.push(b'"');
}

/// Runs `f` directly when `needs` is false (the plain path); otherwise under the plugin
/// runtime's request limits, off the reactor (`engine::plugin_work`; no slot: 503 plugin_busy).
fn plugin_work<R>(
    state: &State,
    snap: &SnapshotGuard,
    needs: bool,
    f: impl FnOnce() -> R,
) -> Result<R, ApiError> {
    if !needs {
        return Ok(f());
    }
    crate::engine::plugin_work(&state.registry, snap.tenant_id(), f)
        .map_err(|e| ApiError::new(ErrorCode::PluginBusy, e.to_string()))
}

pub fn check(state: &State, snap: &SnapshotGuard, req: &CheckReq) -> Result<Bytes, ApiError> {
    let who = subject(state, snap, &req.subject, &req.token)?;
    let needs = crate::engine::needs_plugins(snap, &req.action);
    let d = plugin_work(state, snap, needs, || {
        req.ask(&who, state.clock.now()).check(snap, &req.resource)
    })?;
    state.metrics.decision(d.reason);
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    decision_fields(&mut out, d);
    let _ = write!(out, ",\"revision\":{}}}", snap.revision());
    Ok(Bytes::from(out))
}

pub fn batch(state: &State, snap: &SnapshotGuard, req: &BatchReq) -> Result<Bytes, ApiError> {
    let max = state.config.limits.max_batch;
    if req.checks.len() > max {
        return Err(ApiError::batch_too_large("checks", req.checks.len(), max));
    }
    let now = state.clock.now();
    let needs = req
        .checks
        .iter()
        .any(|c| crate::engine::needs_plugins(snap, &c.action));
    plugin_work(state, snap, needs, || batch_items(state, snap, req, now))?
}

fn batch_items(
    state: &State,
    snap: &SnapshotGuard,
    req: &BatchReq,
    now: i64,
) -> Result<Bytes, ApiError> {
    let mut out = Vec::with_capacity(48 * req.checks.len() + 32);
    out.extend_from_slice(b"{\"results\":[");
    for (i, c) in req.checks.iter().enumerate() {
        let who = subject(state, snap, &c.subject, &c.token).map_err(|e| ApiError {
            message: format!("checks[{i}]: {}", e.message),
            ..e
        })?;
        let d = who
            .request(&c.action, now, c.context.map(Context::get))
            .check(snap, &c.resource);
        state.metrics.decision(d.reason);
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        decision_fields(&mut out, d);
        out.push(b'}');
    }
    let _ = write!(out, "],\"revision\":{}}}", snap.revision());
    Ok(Bytes::from(out))
}

pub fn filter(state: &State, snap: &SnapshotGuard, req: &FilterReq) -> Result<Bytes, ApiError> {
    let max = state.config.limits.max_filter;
    if req.resources.len() > max {
        return Err(ApiError::batch_too_large(
            "resources",
            req.resources.len(),
            max,
        ));
    }
    let who = subject(state, snap, &req.subject, &req.token)?;
    let mut out = Vec::with_capacity(16 * req.resources.len() + 64);
    out.extend_from_slice(b"{\"allowed\":[");
    let mut first = true;
    let needs = crate::engine::needs_plugins(snap, &req.action);
    let d = plugin_work(state, snap, needs, || {
        req.ask(&who, state.clock.now())
            .filter(snap, &req.resources, |i| {
                if !first {
                    out.push(b',');
                }
                first = false;
                json_str(&mut out, &req.resources[i]);
            })
    })?;
    state.metrics.filtered(req.resources.len());
    let _ = write!(
        out,
        "],\"reason\":\"{}\",\"revision\":{}}}",
        d.reason.code(),
        snap.revision()
    );
    Ok(Bytes::from(out))
}

pub fn scopes(state: &State, snap: &SnapshotGuard, req: &ScopesReq) -> Result<Bytes, ApiError> {
    let who = subject(state, snap, &req.subject, &req.token)?;
    let view = snap.view();
    let mut roots = Vec::new();
    let scopes = req.ask(&who, state.clock.now()).scopes(snap, &mut roots);
    let (d, conditional) = (scopes.decision, scopes.conditional);
    let mut out = Vec::with_capacity(16 * roots.len() + 64);
    out.extend_from_slice(b"{\"nodes\":[");
    for (i, &x) in roots.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Some(n) = view.nodes.get(x as usize) {
            json_str(&mut out, n.id.as_str());
        }
    }
    let _ = write!(
        out,
        "],\"reason\":\"{}\",\"conditional\":{conditional},\"revision\":{}}}",
        d.reason.code(),
        snap.revision()
    );
    Ok(Bytes::from(out))
}

pub fn explain(state: &State, snap: &SnapshotGuard, req: &CheckReq) -> Result<Bytes, ApiError> {
    let who = subject(state, snap, &req.subject, &req.token)?;
    let needs = crate::engine::needs_plugins(snap, &req.action);
    let e = plugin_work(state, snap, needs, || {
        req.ask(&who, state.clock.now())
            .explain(snap, &req.resource)
    })?;
    let mut v =
        serde_json::to_value(&e).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "tenant".into(),
            serde_json::Value::String(req.tenant.to_string()),
        );
        m.insert(
            "subject".into(),
            serde_json::Value::String(who.subject().to_string()),
        );
    }
    Ok(Bytes::from(v.to_string()))
}

#[cfg(test)]
mod tests {
    use hyper::StatusCode;
    use std::sync::Arc;

    use super::*;
    use crate::clock::Clock;
    use crate::engine::{self, DEMO_DATA};
    use crate::model::file;
    use crate::server::tokens::sign::{sign, SigningKey};
    use crate::server::Config;
    use crate::snapshot::Registry;
    use proptest::prelude::*;

    const NOW: i64 = 1_800_000_000;
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn token_stands_for_subject_in_check_and_batch() {
        let config = Config::parse(
            &format!("tokens:\n  keys: [{{ alg: HS256, secret: \"{SECRET}\" }}]\n"),
            "test",
        )
        .unwrap();
        let reg = Registry::new();
        engine::install_all(&reg, &file::load_str(DEMO_DATA).unwrap()).unwrap();
        let state = State::new(config, Arc::new(reg), Clock::fixed(NOW)).unwrap();
        let snap = state.registry.get("femo").unwrap();
        let tok = |sub: &str, tenant: &str| {
            let c =
                serde_json::json!({ "sub": sub, "tenant": tenant, "iat": NOW, "exp": NOW + 60 });
            sign(&SigningKey::Hs256(SECRET.as_bytes()), None, &c.to_string()).unwrap()
        };
        let body = format!(
            r#"{{"tenant":"femo","token":"{}","action":"asset:operate","resource":"press-7"}}"#,
            tok("alice", "femo")
        );
        let out = check(&state, &snap, &parse(body.as_bytes()).unwrap()).unwrap();
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .contains("\"allowed\":true"));
        // A token for another tenant, or for an inactive user, is a 401.
        for t in [tok("alice", "towerco"), tok("erik", "femo")] {
            let body = format!(
                r#"{{"tenant":"femo","token":"{t}","action":"asset:read","resource":"press-7"}}"#
            );
            let e = check(&state, &snap, &parse(body.as_bytes()).unwrap()).unwrap_err();
            assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{}", e.message);
        }
        let body = format!(
            r#"{{"tenant":"femo","checks":[{{"token":"{}","action":"asset:operate","resource":"robot-12"}},{{"subject":"bruno","action":"asset:operate","resource":"robot-12"}}]}}"#,
            tok("alice", "femo")
        );
        let out = batch(&state, &snap, &parse(body.as_bytes()).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["results"][0]["allowed"], false);
        assert_eq!(v["results"][1]["allowed"], true);
    }

    /// What a parsed check request says, for comparing the two parsers.
    fn fields(
        r: &CheckReq,
    ) -> (
        String,
        Option<String>,
        Option<String>,
        String,
        String,
        bool,
        Option<u64>,
    ) {
        (
            r.tenant.to_string(),
            r.subject.as_ref().map(|s| s.to_string()),
            r.token.as_ref().map(|s| s.to_string()),
            r.action.to_string(),
            r.resource.to_string(),
            r.context.is_some(),
            r.min_revision,
        )
    }

    fn agree(body: &str) {
        let serde: Result<CheckReq, _> = parse(body.as_bytes());
        match fast_check(body.as_bytes()) {
            Some(fast) => match &serde {
                Ok(serde) => assert_eq!(fields(&fast), fields(serde), "{body:?}"),
                Err(e) => panic!("fast path accepted {body:?}, serde said {}", e.message),
            },
            None => {
                // The fallback is serde itself: nothing to compare, but the common shape must
                // not miss the fast path.
            }
        }
        let via = parse_check(body.as_bytes());
        match (&via, &serde) {
            (Ok(a), Ok(b)) => assert_eq!(fields(a), fields(b), "{body:?}"),
            (Err(a), Err(b)) => {
                assert_eq!(
                    (a.status, a.code, &a.message),
                    (b.status, b.code, &b.message),
                    "{body:?}"
                )
            }
            _ => panic!("parse_check and serde disagree on {body:?}"),
        }
    }

    #[test]
    fn fast_path_takes_the_common_shape() {
        for body in [
            r#"{"tenant":"s","subject":"u1","action":"asset:read","resource":"zone-3"}"#,
            " {\n \"resource\" : \"r\" ,\t\"action\":\"a:b\", \"token\":\"t\",\"tenant\":\"x\"}\r\n",
        ] {
            assert!(fast_check(body.as_bytes()).is_some(), "{body}");
            agree(body);
        }
    }

    #[test]
    fn everything_else_goes_to_serde() {
        for body in [
            r#"{"tenant":"s","subject":"u1","action":"a:b","resource":"r","context":{}}"#,
            r#"{"tenant":"s","subject":"u1","action":"a:b","resource":"r","min_revision":3}"#,
            r#"{"tenant":"s","subject":"u\u0031","action":"a:b","resource":"r"}"#,
            r#"{"tenant":"s","subject":"ü","action":"a:b","resource":"r"}"#,
            r#"{"tenant":"s","tenant":"t","subject":"u","action":"a:b","resource":"r"}"#,
            r#"{"tenant":"s","subject":"u","action":"a:b"}"#,
            r#"{"tenant":"s","subject":"u","action":"a:b","resource":"r",}"#,
            r#"{"tenant":"s","subject":"u","action":"a:b","resource":"r"} x"#,
            r#"{"tenant":"s","subject":null,"action":"a:b","resource":"r"}"#,
            r#"{"tenant":"s","subject":"u","action":"a:b","resource":"r","extra":"e"}"#,
            r#"{"tenant":"s","subject":"u","action":"a:b","resource":"r""#,
            "{\"tenant\":\"s\u{1}\",\"subject\":\"u\",\"action\":\"a:b\",\"resource\":\"r\"}",
            "{}",
            "",
            "[]",
            "\u{feff}{\"tenant\":\"s\",\"subject\":\"u\",\"action\":\"a:b\",\"resource\":\"r\"}",
        ] {
            assert!(fast_check(body.as_bytes()).is_none(), "{body}");
            agree(body);
        }
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("null".to_string()),
            Just("7".to_string()),
            Just("\"tenant\"".to_string()),
            Just("\"subject\"".to_string()),
            Just("\"token\"".to_string()),
            Just("\"action\"".to_string()),
            Just("\"resource\"".to_string()),
            Just("\"context\"".to_string()),
            Just("\"min_revision\"".to_string()),
            "\"[a-z:\\\\é\"\u{1}-]{0,4}\"",
        ]
    }

    fn field() -> impl Strategy<Value = String> {
        (
            prop_oneof![
                Just("tenant"),
                Just("subject"),
                Just("token"),
                Just("action"),
                Just("resource"),
                Just("other")
            ],
            "[a-z0-9:é\\\\-]{0,6}",
            "[ \n]{0,1}",
        )
            .prop_map(|(k, v, ws)| format!("{ws}\"{k}\"{ws}:{ws}\"{v}\"{ws}"))
    }

    proptest! {
        #[test]
        fn fast_path_matches_serde_on_noise(pieces in proptest::collection::vec(piece(), 0..24)) {
            agree(&pieces.concat());
        }

        #[test]
        fn fast_path_matches_serde_on_objects(fs in proptest::collection::vec(field(), 0..7)) {
            agree(&format!("{{{}}}", fs.join(",")));
        }
    }
}
