//! Data-plane endpoints: check, batch, filter, scopes, explain.
//!
//! Bodies are parsed into borrowed structs (no copies of strings that need no unescaping);
//! decisions run synchronously on one pinned snapshot; responses are written by hand for the
//! small fixed shapes.

use std::borrow::Cow;
use std::io::Write;

use bytes::Bytes;
use hyper::StatusCode;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::error::ApiError;
use super::State;
use crate::decide::{self, Decision};
use crate::snapshot::SnapshotGuard;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckReq<'a> {
    #[serde(borrow)]
    pub tenant: Cow<'a, str>,
    #[serde(borrow, default)]
    pub subject: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(borrow)]
    pub resource: Cow<'a, str>,
    #[serde(default)]
    pub context: Option<IgnoredAny>,
    #[serde(default)]
    pub min_revision: Option<u64>,
}

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
    #[serde(default)]
    pub context: Option<IgnoredAny>,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterReq<'a> {
    #[serde(borrow)]
    pub tenant: Cow<'a, str>,
    #[serde(borrow, default)]
    pub subject: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(borrow)]
    pub resources: Vec<Cow<'a, str>>,
    #[serde(default)]
    pub context: Option<IgnoredAny>,
    #[serde(default)]
    pub min_revision: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopesReq<'a> {
    #[serde(borrow)]
    pub tenant: Cow<'a, str>,
    #[serde(borrow, default)]
    pub subject: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(default)]
    pub context: Option<IgnoredAny>,
    #[serde(default)]
    pub min_revision: Option<u64>,
}

pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::malformed(&e))
}

/// The subject of a request: `subject`, or the user a `token` stands for.
/// A token's user id is borrowed from the snapshot: no copy.
pub fn subject<'a>(
    state: &State,
    snap: &'a SnapshotGuard,
    subject: &'a Option<Cow<'a, str>>,
    token: &'a Option<Cow<'a, str>>,
) -> Result<Cow<'a, str>, ApiError> {
    match (subject, token) {
        (Some(s), None) => Ok(Cow::Borrowed(s.as_ref())),
        (None, Some(t)) => Ok(Cow::Borrowed(state.tokens.subject_for(
            snap,
            t,
            state.clock.now(),
        )?)),
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

pub fn check(state: &State, snap: &SnapshotGuard, req: &CheckReq) -> Result<Bytes, ApiError> {
    let subject = subject(state, snap, &req.subject, &req.token)?;
    let now = state.clock.now();
    let d = decide::check(snap.view(), &subject, &req.action, &req.resource, now);
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
    let mut out = Vec::with_capacity(48 * req.checks.len() + 32);
    out.extend_from_slice(b"{\"results\":[");
    for (i, c) in req.checks.iter().enumerate() {
        let subject = subject(state, snap, &c.subject, &c.token).map_err(|e| ApiError {
            message: format!("checks[{i}]: {}", e.message),
            ..e
        })?;
        let d = decide::check(snap.view(), &subject, &c.action, &c.resource, now);
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
    let subject = subject(state, snap, &req.subject, &req.token)?;
    let now = state.clock.now();
    let mut out = Vec::with_capacity(16 * req.resources.len() + 64);
    out.extend_from_slice(b"{\"allowed\":[");
    let mut first = true;
    let d = decide::filter(
        snap.view(),
        &subject,
        &req.action,
        &req.resources,
        now,
        |i| {
            if !first {
                out.push(b',');
            }
            first = false;
            json_str(&mut out, &req.resources[i]);
        },
    );
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
    let subject = subject(state, snap, &req.subject, &req.token)?;
    let view = snap.view();
    let mut roots = Vec::new();
    let d = decide::scopes(view, &subject, &req.action, state.clock.now(), &mut roots);
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
        "],\"reason\":\"{}\",\"revision\":{}}}",
        d.reason.code(),
        snap.revision()
    );
    Ok(Bytes::from(out))
}

pub fn explain(state: &State, snap: &SnapshotGuard, req: &CheckReq) -> Result<Bytes, ApiError> {
    let subject = subject(state, snap, &req.subject, &req.token)?;
    let e = decide::explain(
        snap.view(),
        &subject,
        &req.action,
        &req.resource,
        state.clock.now(),
    );
    let mut v = serde_json::to_value(&e)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "tenant".into(),
            serde_json::Value::String(req.tenant.to_string()),
        );
        m.insert(
            "subject".into(),
            serde_json::Value::String(subject.to_string()),
        );
    }
    Ok(Bytes::from(v.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::{self, Clock, DEMO_DATA};
    use crate::model::file;
    use crate::server::tokens::sign::{sign, SigningKey};
    use crate::server::Config;
    use crate::snapshot::Registry;

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
}
