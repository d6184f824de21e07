//! Forward-auth for gateways: nginx `auth_request`, Caddy `forward_auth`, Envoy `ext_authz` (HTTP)
//! and anything else that asks "may this request pass?" with a side request.
//!
//! `/v1/forward-auth` (any method) decides with the default route table;
//! `/v1/forward-auth@NAME` with the table `NAME`. The request being authorized (the *target*) is
//! read from `X-Original-URI`/`X-Original-Method` (nginx), `X-Forwarded-Uri`/`X-Forwarded-Method`
//! (Caddy, Traefik), or the path after the prefix plus the request's own method (Envoy appends
//! the original path to its `path_prefix`). When several are present they must agree, so a
//! client header that the gateway passes through cannot override the one the gateway sets.
//! Without a method header the target method is known only for Envoy-style requests; otherwise
//! only routes open to any method match.
//!
//! Target paths must be canonical: no `.`/`..` segments (also percent-encoded, also with `;`
//! parameters), no empty segments, no encoded `/`, `\` or NUL. Anything else is refused, because
//! a gateway may route on a normalized path while we would match the raw one.
//!
//! Answers: 200 with `X-Portcullis-Subject`, `X-Portcullis-Tenant`, `X-Portcullis-Revision`
//! and `X-Portcullis-Kind` — always all four (Caddy copies a missing one as a placeholder); the
//! kind is `user`, or `sso` for an SSO token of the route's tenant, whose subject claim is then the
//! subject; 401 with `WWW-Authenticate` when identity is missing, invalid, expired or
//! revoked; 403 on deny, and when no route matches (`no_route`: fail closed).

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use hyper::{Method, Response};

use super::body::Resp;
use super::config::{
    ConfigError, ForwardAuthConfig, IdentityConfig, RouteConfig, SourceConfig, TaggedSource,
};
use super::error::{clip, ApiError, ErrorCode};
use super::sso::SsoIdentity;
use super::tokens::{Tokens, Verified};
use super::State;
use crate::model::split_action;

/// The path of the endpoint; sub-paths and `@NAME` select tables and carry Envoy's target.
pub const PREFIX: &str = "/v1/forward-auth";

pub const SUBJECT_HEADER: HeaderName = HeaderName::from_static("x-portcullis-subject");
pub const TENANT_HEADER: HeaderName = HeaderName::from_static("x-portcullis-tenant");
pub const REVISION_HEADER: HeaderName = HeaderName::from_static("x-portcullis-revision");
/// `user` (the subject is a user of the tenant) or `sso` (the subject claim of an SSO token).
pub const KIND_HEADER: HeaderName = HeaderName::from_static("x-portcullis-kind");

const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");

/// Most `{param}` segments in one pattern.
const MAX_PARAMS: usize = 8;

/// Does `path` belong to the forward-auth endpoint?
pub fn is_forward_auth(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('@'))
}

/// Compiled route tables.
#[derive(Debug, Default)]
pub struct ForwardAuth {
    /// `tables[0]` is the default table (possibly without routes).
    tables: Vec<Table>,
}

#[derive(Debug)]
struct Table {
    name: Box<str>,
    identity: Identity,
    routes: Vec<Route>,
}

#[derive(Debug)]
enum Identity {
    Bearer,
    Header(HeaderName),
}

#[derive(Debug)]
struct Route {
    /// Bit set of [`METHODS`]; `ANY` matches every method, known or not.
    methods: u16,
    segs: Vec<Seg>,
    /// The pattern ends in `/*`: any rest, including nothing.
    tail: bool,
    tenant: Source,
    action: Source,
    resource: Source,
}

#[derive(Debug)]
enum Seg {
    Lit(Box<str>),
    Param,
}

#[derive(Debug)]
enum Source {
    Value(Box<str>),
    Param(usize),
    Header(HeaderName),
    /// The token's tenant claim.
    Claim,
}

const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];
const ANY: u16 = 1 << 15;

fn method_bit(m: &str) -> Option<u16> {
    METHODS
        .iter()
        .position(|k| k.as_str().eq_ignore_ascii_case(m))
        .map(|i| 1 << i)
}

impl ForwardAuth {
    /// Compiles the route tables; every problem names the route.
    pub fn new(config: &ForwardAuthConfig, tokens: &Tokens) -> Result<ForwardAuth, ConfigError> {
        let mut tables = vec![compile_table(
            "default",
            &config.identity,
            &config.routes,
            tokens,
            "forward_auth",
        )?];
        for (name, t) in &config.tables {
            if name.is_empty() || name.contains(['/', '@', '?', '#', '%']) || name == "default" {
                return Err(ConfigError::Invalid(format!(
                    "forward_auth.tables: name '{name}' must be non-empty, not 'default', without / @ ? # %"
                )));
            }
            tables.push(compile_table(
                name,
                &t.identity,
                &t.routes,
                tokens,
                &format!("forward_auth.tables.{name}"),
            )?);
        }
        Ok(ForwardAuth { tables })
    }

    /// Number of routes over all tables.
    pub fn route_count(&self) -> usize {
        self.tables.iter().map(|t| t.routes.len()).sum()
    }
}

fn compile_table(
    name: &str,
    identity: &IdentityConfig,
    routes: &[RouteConfig],
    tokens: &Tokens,
    at: &str,
) -> Result<Table, ConfigError> {
    let identity = match identity {
        IdentityConfig::Bearer => Identity::Bearer,
        IdentityConfig::Header(h) => Identity::Header(
            header_name(h).map_err(|e| ConfigError::Invalid(format!("{at}.identity: {e}")))?,
        ),
    };
    let routes = routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            compile_route(r, &identity, tokens)
                .map_err(|e| ConfigError::Invalid(format!("{at}.routes[{i}] ('{}'): {e}", r.path)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Table {
        name: name.into(),
        identity,
        routes,
    })
}

fn header_name(h: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("'{h}' is not a valid header name"))
}

fn compile_route(r: &RouteConfig, identity: &Identity, tokens: &Tokens) -> Result<Route, String> {
    let mut methods = 0u16;
    for m in &r.methods {
        if m == "*" {
            methods |= ANY;
            continue;
        }
        let bit = method_bit(m).ok_or_else(|| format!("unknown method '{m}'"))?;
        methods |= bit;
        if bit == 1 {
            methods |= 2; // GET includes HEAD
        }
    }
    if methods == 0 {
        methods = ANY;
    }
    let Some(rest) = r.path.strip_prefix('/') else {
        return Err("path must start with '/'".into());
    };
    let mut segs = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let mut tail = false;
    let parts: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    for (i, p) in parts.iter().enumerate() {
        if *p == "*" {
            if i + 1 != parts.len() {
                return Err("'*' may only be the last segment".into());
            }
            tail = true;
        } else if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "parameter '{{{name}}}' needs a name of letters, digits, _"
                ));
            }
            if names.contains(&name) {
                return Err(format!("parameter '{{{name}}}' appears twice"));
            }
            names.push(name);
            segs.push(Seg::Param);
        } else if p.contains(['{', '}', '*', '?', '#', '%']) {
            return Err(format!(
                "segment '{p}': use a whole '{{name}}' segment, or '*' as the last segment"
            ));
        } else if p.is_empty() && i + 1 != parts.len() {
            return Err("empty segment ('//')".into());
        } else if *p == "." || *p == ".." {
            return Err("'.' and '..' segments never match".into());
        } else {
            segs.push(Seg::Lit((*p).into()));
        }
    }
    if names.len() > MAX_PARAMS {
        return Err(format!("more than {MAX_PARAMS} parameters"));
    }
    let source = |s: &SourceConfig, what: &str| -> Result<Source, String> {
        let tagged = match s {
            SourceConfig::Text(t) => match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(p) => TaggedSource::Param(p.to_string()),
                None => TaggedSource::Value(t.clone()),
            },
            SourceConfig::Tagged(t) => t.clone(),
        };
        Ok(match tagged {
            TaggedSource::Value(v) if v.is_empty() => {
                return Err(format!("{what} must not be empty"))
            }
            TaggedSource::Value(v) => Source::Value(v.into()),
            TaggedSource::Param(p) => Source::Param(
                names
                    .iter()
                    .position(|n| *n == p)
                    .ok_or_else(|| format!("{what}: the path has no parameter '{{{p}}}'"))?,
            ),
            TaggedSource::Header(h) => Source::Header(header_name(&h)?),
            TaggedSource::Claim(c) => {
                if what != "tenant" {
                    return Err(format!("{what}: only the tenant may come from a claim"));
                }
                if !matches!(identity, Identity::Bearer) {
                    return Err(format!(
                        "{what}: a claim needs 'identity: bearer' (this table reads a header)"
                    ));
                }
                if c != tokens.tenant_claim() {
                    return Err(format!(
                        "{what}: claim '{c}' is not the tenant claim ('{}', see tokens.tenant_claim)",
                        tokens.tenant_claim()
                    ));
                }
                Source::Claim
            }
        })
    };
    let route = Route {
        methods,
        segs,
        tail,
        tenant: source(&r.tenant, "tenant")?,
        action: source(&r.action, "action")?,
        resource: source(&r.resource, "resource")?,
    };
    if let Source::Value(a) = &route.action {
        if split_action(a).is_none() {
            return Err(format!("action '{a}' is not of the form resource:action"));
        }
    }
    Ok(route)
}

fn bad_target(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadTarget, message)
}

/// The target request: method (when known) and raw URI (path and query).
struct Target<'r> {
    method: Option<&'r str>,
    uri: Cow<'r, str>,
}

/// One header's value, refusing repeated or non-ASCII values.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, ApiError> {
    let mut all = headers.get_all(name).iter();
    let Some(v) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(bad_target(format!(
            "header '{name}' appears more than once"
        )));
    }
    v.to_str()
        .map(Some)
        .map_err(|_| bad_target(format!("header '{name}' is not visible ASCII")))
}

fn agree<'a>(
    a: Option<&'a str>,
    b: Option<&'a str>,
    what: &str,
    eq: impl Fn(&str, &str) -> bool,
) -> Result<Option<&'a str>, ApiError> {
    match (a, b) {
        (Some(x), Some(y)) if !eq(x, y) => Err(bad_target(format!(
            "conflicting original {what}s: '{}' and '{}'",
            clip(x),
            clip(y)
        ))),
        (Some(x), _) => Ok(Some(x)),
        (None, y) => Ok(y),
    }
}

/// Method-override headers: a backend may honour one and run another method than the one
/// decided, so a target request carrying any of them is refused.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

fn target<'r>(
    method: &'r Method,
    headers: &'r HeaderMap,
    suffix: &'r str,
    query: Option<&'r str>,
) -> Result<Target<'r>, ApiError> {
    if let Some(h) = METHOD_OVERRIDES.iter().find(|h| headers.contains_key(**h)) {
        return Err(bad_target(format!(
            "the target request carries '{h}': method overrides are refused"
        )));
    }
    let uri = agree(
        single(headers, &X_ORIGINAL_URI)?,
        single(headers, &X_FORWARDED_URI)?,
        "URI",
        |a, b| a == b,
    )?;
    let m = agree(
        single(headers, &X_ORIGINAL_METHOD)?,
        single(headers, &X_FORWARDED_METHOD)?,
        "method",
        |a, b| a.eq_ignore_ascii_case(b),
    )?;
    if suffix.is_empty() {
        let uri = uri.ok_or_else(|| {
            bad_target(format!(
                "no target: send X-Original-URI or X-Forwarded-Uri, or append the path to {PREFIX}"
            ))
        })?;
        return Ok(Target {
            method: m,
            uri: Cow::Borrowed(uri),
        });
    }
    // Envoy style: the target is the rest of our own path, with our query and method.
    let own: Cow<str> = match query {
        Some(q) => Cow::Owned(format!("{suffix}?{q}")),
        None => Cow::Borrowed(suffix),
    };
    if let Some(u) = uri {
        if u != own {
            return Err(bad_target(format!(
                "conflicting original URIs: '{}' and '{}'",
                clip(u),
                clip(&own)
            )));
        }
    }
    let m = agree(m, Some(method.as_str()), "method", |a, b| {
        a.eq_ignore_ascii_case(b)
    })?;
    Ok(Target {
        method: m,
        uri: own,
    })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The decoded, canonical path of a target URI (query dropped), or why it is refused.
fn canonical_path(uri: &str) -> Result<Cow<'_, str>, ApiError> {
    let raw = uri.split_once(['?', '#']).map_or(uri, |(p, _)| p);
    if !raw.starts_with('/') {
        return Err(bad_target(format!(
            "target '{}' is not an absolute path",
            clip(raw)
        )));
    }
    if raw.contains('\\') {
        return Err(bad_target("target path contains '\\'"));
    }
    let path: Cow<str> = if raw.contains('%') {
        let b = raw.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let v = match (
                    b.get(i + 1).and_then(|&x| hex(x)),
                    b.get(i + 2).and_then(|&x| hex(x)),
                ) {
                    (Some(h), Some(l)) => h * 16 + l,
                    _ => return Err(bad_target("target path has a bad percent-encoding")),
                };
                if matches!(v, b'/' | b'\\' | 0) {
                    return Err(bad_target("target path encodes '/', '\\' or NUL"));
                }
                // `%25` decodes to '%': a backend that decodes again would see another path.
                if v == b'%' {
                    return Err(bad_target("target path encodes '%' ('%25')"));
                }
                out.push(v);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        Cow::Owned(String::from_utf8(out).map_err(|_| bad_target("target path is not UTF-8"))?)
    } else {
        Cow::Borrowed(raw)
    };
    let body = &path[1..];
    let mut segs = body.split('/').peekable();
    while let Some(s) = segs.next() {
        let last = segs.peek().is_none();
        if s.is_empty() && !last {
            return Err(bad_target("target path has an empty segment ('//')"));
        }
        let bare = s.split_once(';').map_or(s, |(b, _)| b);
        if bare == "." || bare == ".." {
            return Err(bad_target("target path has a '.' or '..' segment"));
        }
        if s.bytes().any(|c| c < 0x20 || c == 0x7f) {
            return Err(bad_target("target path has control characters"));
        }
    }
    Ok(path)
}

/// Matches `path` (canonical, starting with '/') against a route; fills `params`.
fn matches<'p>(route: &Route, path: &'p str, params: &mut [&'p str; MAX_PARAMS]) -> bool {
    let body = &path[1..];
    let mut parts = if body.is_empty() {
        None
    } else {
        Some(body.split('/'))
    };
    let mut n = 0;
    for seg in &route.segs {
        let Some(p) = parts.as_mut().and_then(Iterator::next) else {
            return false;
        };
        match seg {
            Seg::Lit(l) => {
                if **l != *p {
                    return false;
                }
            }
            Seg::Param => {
                if p.is_empty() {
                    return false;
                }
                if let Some(slot) = params.get_mut(n) {
                    *slot = p;
                }
                n += 1;
            }
        }
    }
    route.tail || parts.is_none_or(|mut rest| rest.next().is_none())
}

/// Handles one forward-auth request. `rest` is the path after [`PREFIX`].
pub fn handle(
    state: &State,
    method: &Method,
    rest: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Resp, ApiError> {
    let fa = &state.forward;
    let (table, suffix) = match rest.strip_prefix('@') {
        Some(r) => {
            let (name, suffix) = r.find('/').map_or((r, ""), |i| r.split_at(i));
            let t = fa.tables.iter().find(|t| &*t.name == name).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("no forward-auth route table '{}'", clip(name)),
                )
            })?;
            (t, suffix)
        }
        None => match fa.tables.first() {
            Some(t) => (t, rest),
            None => return Err(no_route("(none)", "")),
        },
    };
    let t = target(method, headers, suffix, query)?;
    let path = canonical_path(&t.uri)?;
    let mut params = [""; MAX_PARAMS];
    let route = table
        .routes
        .iter()
        .find(|r| {
            let method_ok = r.methods & ANY != 0
                || t.method
                    .and_then(method_bit)
                    .is_some_and(|b| r.methods & b != 0);
            method_ok && matches(r, &path, &mut params)
        })
        .ok_or_else(|| no_route(t.method.unwrap_or("(unknown method)"), &path))?;
    let req = Req {
        state,
        route,
        params: &params,
        headers,
    };
    match &table.identity {
        Identity::Header(h) => {
            let subject = single(headers, h)?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    ApiError::unauthenticated(format!("missing identity header '{h}'"))
                })?;
            req.decide(None, None, |view| Ok((user_check(view, subject)?, None)))
        }
        Identity::Bearer => {
            let token = bearer(headers)?;
            let now = state.clock.now();
            if token.starts_with(crate::identity::secret::API_KEY_PREFIX) {
                // An API key: no claims, the route names the tenant.
                return req.decide(None, None, |view| {
                    Ok((super::tokens::api_key_user(view, token, now)?.0, None))
                });
            }
            // An SSO token of the tenant the route names (a tenant read from a claim has none:
            // identity providers do not name tenants).
            if !matches!(route.tenant, Source::Claim) {
                let tenant = req.value(&route.tenant, "tenant", None).unwrap_or_default();
                if let Some(snap) = state.registry.get(&tenant) {
                    if let Some(sso) = state.tokens.sso_identity(&snap, token, now)? {
                        return req.decide(None, Some(&sso), |_| {
                            Err(ApiError::unauthenticated("not an SSO token"))
                        });
                    }
                }
            }
            state
                .tokens
                .verify_with(token, now, |v| {
                    req.decide(Some(v), None, |view| {
                        let tenant = view.id.as_str();
                        let user = state.tokens.identify(v, tenant, view)?;
                        Ok((user, super::tokens::session_channel(v)))
                    })
                })
                .map_err(ApiError::from)?
        }
    }
}

fn no_route(method: &str, path: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NoRoute,
        format!("no route for {} {}", clip(method), clip(path)),
    )
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return Err(ApiError::unauthenticated(
            if headers.contains_key(AUTHORIZATION) {
                "more than one Authorization header"
            } else {
                "missing bearer token"
            },
        ));
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::unauthenticated("Authorization header is not visible ASCII"))?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Err(ApiError::unauthenticated("missing bearer token"))
            } else {
                Ok(token)
            }
        }
        _ => Err(ApiError::unauthenticated(
            "Authorization is not a Bearer token",
        )),
    }
}

/// A header-identified user must exist and be active.
fn user_check<'s>(
    view: &'s crate::snapshot::ArchivedTenantSnap,
    id: &str,
) -> Result<&'s str, ApiError> {
    use crate::decide::Reason;
    match crate::decide::active_user(view, id) {
        Ok(user) => Ok(user.id.as_str()),
        Err(Reason::SubjectDeleted) => Err(ApiError::unauthenticated(format!(
            "user '{}' is deleted",
            clip(id)
        ))),
        Err(Reason::SubjectInactive) => Err(ApiError::unauthenticated(format!(
            "user '{}' is inactive",
            clip(id)
        ))),
        Err(_) => Err(ApiError::unauthenticated(format!(
            "unknown user '{}'",
            clip(id)
        ))),
    }
}

struct Req<'a> {
    state: &'a State,
    route: &'a Route,
    params: &'a [&'a str; MAX_PARAMS],
    headers: &'a HeaderMap,
}

impl Req<'_> {
    fn value<'v>(
        &'v self,
        s: &'v Source,
        what: &str,
        v: Option<&'v Verified>,
    ) -> Result<Cow<'v, str>, ApiError> {
        let out = match s {
            Source::Value(x) => Cow::Borrowed(&**x),
            // Parameters are slices of the decoded path: no second decoding.
            Source::Param(i) => Cow::Borrowed(self.params.get(*i).copied().unwrap_or("")),
            Source::Header(h) => Cow::Borrowed(single(self.headers, h)?.unwrap_or("")),
            Source::Claim => match v.and_then(|v| v.claims.tenant.as_deref()) {
                Some(t) => Cow::Borrowed(t),
                None => {
                    return Err(ApiError::unauthenticated(format!(
                        "token has no '{}' claim",
                        self.state.tokens.tenant_claim()
                    )))
                }
            },
        };
        if out.is_empty() {
            return Err(bad_target(format!("the route gives no {what}")));
        }
        Ok(out)
    }

    /// Resolves tenant, action and resource, identifies the subject in the tenant's snapshot
    /// (a user and the channel of its session; or the SSO identity `sso`) and decides.
    fn decide(
        &self,
        v: Option<&Verified>,
        sso: Option<&SsoIdentity>,
        identify: impl FnOnce(
            &crate::snapshot::ArchivedTenantSnap,
        ) -> Result<(&str, Option<&'static str>), ApiError>,
    ) -> Result<Resp, ApiError> {
        let state = self.state;
        let tenant = self.value(&self.route.tenant, "tenant", v)?;
        if let Some(v) = v {
            // A token for another tenant is an identity problem (401), whether or not the
            // requested tenant exists.
            state.tokens.check_tenant(v, &tenant)?;
        }
        if let Some(s) = &state.staleness {
            s.check()?;
        }
        let Some(snap) = state.registry.get(&tenant) else {
            return Err(super::state::missing(state, &tenant).for_gateway());
        };
        let view = snap.view();
        let (subject, channel) = match sso {
            Some(s) => (s.subject(), None),
            None => identify(view)?,
        };
        let action = self.value(&self.route.action, "action", v)?;
        let resource = self.value(&self.route.resource, "resource", v)?;
        // Gateways send no request context: plugin conditions see none. A check that may call
        // plugins runs under the request budget and concurrency slots, off the reactor.
        let ask = || {
            crate::engine::Request {
                subject,
                action: &action,
                now: state.clock.now(),
                context: None,
                sso: sso.map(|s| s.groups),
                channel,
            }
            .check(&snap, &resource)
        };
        let d = if crate::engine::needs_plugins(&snap, &action) {
            crate::engine::plugin_work(&state.registry, snap.tenant_id(), ask)
                .map_err(|e| ApiError::new(ErrorCode::PluginBusy, e.to_string()))?
        } else {
            ask()
        };
        state.metrics.decision(d.reason);
        let revision = snap.revision();
        if !d.allowed {
            return Err(ApiError::new(ErrorCode::Forbidden, "access denied"));
        }
        let mut r = Response::new(Full::new(Bytes::new()));
        let h = r.headers_mut();
        let subject = HeaderValue::from_str(subject);
        let tenant = HeaderValue::from_str(view.id.as_str());
        let (Ok(subject), Ok(tenant)) = (subject, tenant) else {
            // Fail closed: an id that cannot travel in a header is never an allow.
            return Err(ApiError::new(
                ErrorCode::Internal,
                "subject or tenant id cannot be sent in a header",
            ));
        };
        h.insert(SUBJECT_HEADER, subject);
        h.insert(TENANT_HEADER, tenant);
        h.insert(REVISION_HEADER, HeaderValue::from(revision));
        h.insert(
            KIND_HEADER,
            HeaderValue::from_static(if sso.is_some() { "sso" } else { "user" }),
        );
        Ok(r)
    }
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

    const NOW: i64 = 1_800_000_000;
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    const CONFIG: &str = r#"
tokens:
  keys:
    - { alg: HS256, secret: "0123456789abcdef0123456789abcdef" }
forward_auth:
  routes:
    - { methods: [GET], path: "/t/{tenant}/assets/{asset}", tenant: "{tenant}", action: "asset:read", resource: "{asset}" }
    - { methods: [POST], path: "/t/{tenant}/assets/{asset}/operate", tenant: "{tenant}", action: "asset:operate", resource: { param: asset } }
    - { path: "/mine/*", tenant: { claim: tenant }, action: "asset:read", resource: { header: X-Resource } }
    - { methods: ["*"], path: "/fixed", tenant: femo, action: { value: "asset:read" }, resource: { value: press-7 } }
  tables:
    internal:
      identity: { header: X-Auth-User }
      routes:
        - { methods: [GET, PUT], path: "/api/{asset}", tenant: { header: X-Tenant }, action: "asset:operate", resource: "{asset}" }
"#;

    fn state() -> State {
        let config = Config::parse(CONFIG, "test").unwrap();
        let reg = Registry::new();
        engine::install_all(&reg, &file::load_str(DEMO_DATA).unwrap()).unwrap();
        State::new(config, Arc::new(reg), Clock::fixed(NOW)).unwrap()
    }

    fn token(sub: &str, tenant: &str, exp: i64) -> String {
        let c = serde_json::json!({ "sub": sub, "tenant": tenant, "iat": NOW - 5, "exp": exp });
        sign(&SigningKey::Hs256(SECRET.as_bytes()), None, &c.to_string()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn bearer_for(sub: &str) -> String {
        format!("Bearer {}", token(sub, "femo", NOW + 600))
    }

    /// `(status, code or "")`, and the identity headers on allow.
    fn run(
        st: &State,
        method: Method,
        rest: &str,
        h: &[(&str, &str)],
    ) -> (u16, String, Option<(String, String, String)>) {
        match handle(st, &method, rest, None, &headers(h)) {
            Ok(r) => {
                let get =
                    |n: &HeaderName| r.headers().get(n).unwrap().to_str().unwrap().to_string();
                (
                    r.status().as_u16(),
                    String::new(),
                    Some((
                        get(&SUBJECT_HEADER),
                        get(&TENANT_HEADER),
                        get(&REVISION_HEADER),
                    )),
                )
            }
            Err(e) => {
                let resp = e.clone().into_response();
                if e.status == StatusCode::UNAUTHORIZED {
                    assert!(resp.headers().contains_key(hyper::header::WWW_AUTHENTICATE));
                }
                (e.status.as_u16(), e.code.to_string(), None)
            }
        }
    }

    #[test]
    fn nginx_caddy_and_envoy_targets() {
        let st = state();
        let auth = bearer_for("alice");
        let nginx = [
            ("authorization", auth.as_str()),
            ("x-original-uri", "/t/femo/assets/press-7?x=1"),
            ("x-original-method", "GET"),
        ];
        let (s, _, id) = run(&st, Method::GET, "", &nginx);
        assert_eq!(s, 200);
        let (sub, tenant, rev) = id.unwrap();
        assert_eq!((sub.as_str(), tenant.as_str()), ("alice", "femo"));
        assert!(rev.parse::<u64>().is_ok());
        let caddy = [
            ("authorization", auth.as_str()),
            ("x-forwarded-uri", "/t/femo/assets/press-7/operate"),
            ("x-forwarded-method", "POST"),
        ];
        assert_eq!(run(&st, Method::GET, "", &caddy).0, 200);
        let envoy = [("authorization", auth.as_str())];
        assert_eq!(
            run(&st, Method::POST, "/t/femo/assets/press-7/operate", &envoy).0,
            200
        );
        assert_eq!(
            run(&st, Method::HEAD, "/t/femo/assets/press-7", &envoy).0,
            200
        );
        let (s, code, _) = run(&st, Method::POST, "/t/femo/assets/robot-12/operate", &envoy);
        assert_eq!((s, code.as_str()), (403, "forbidden"));
        // Decisions are counted.
        let m = String::from_utf8(st.metrics.render(&st.registry, &st.conns, None, NOW)).unwrap();
        assert!(
            m.contains(r#"portcullis_decisions_total{reason="granted",result="allow"} 4"#),
            "{m}"
        );
    }

    #[test]
    fn no_route_fails_closed() {
        let st = state();
        let auth = bearer_for("alice");
        let a = auth.as_str();
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "",
                &[
                    ("authorization", a),
                    ("x-original-uri", "/nowhere"),
                    ("x-original-method", "GET"),
                ],
            ),
            // DELETE is not routed.
            (
                "",
                &[
                    ("authorization", a),
                    ("x-original-uri", "/t/femo/assets/press-7"),
                    ("x-original-method", "DELETE"),
                ],
            ),
            // Without a method header, only any-method routes match.
            (
                "",
                &[
                    ("authorization", a),
                    ("x-original-uri", "/t/femo/assets/press-7"),
                ],
            ),
            // Too long / too short for the patterns.
            ("/t/femo/assets/press-7/extra", &[("authorization", a)]),
            ("/t/femo/assets", &[("authorization", a)]),
            ("/t/femo/assets/", &[("authorization", a)]),
        ];
        for (rest, h) in cases {
            let (s, code, _) = run(&st, Method::GET, rest, h);
            assert_eq!((s, code.as_str()), (403, "no_route"), "{rest} {h:?}");
        }
        // The any-method route does match without a method header.
        let h = [("authorization", a), ("x-original-uri", "/fixed")];
        assert_eq!(run(&st, Method::GET, "", &h).0, 200);
    }

    #[test]
    fn conflicting_or_odd_targets_are_refused() {
        let st = state();
        let auth = bearer_for("alice");
        let a = auth.as_str();
        type Case<'a> = (&'a str, Method, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            // A client header passed through by the gateway cannot override the gateway's own.
            (
                "",
                Method::GET,
                &[
                    ("authorization", a),
                    ("x-original-uri", "/fixed"),
                    ("x-forwarded-uri", "/t/femo/assets/robot-12"),
                ],
            ),
            (
                "",
                Method::GET,
                &[
                    ("authorization", a),
                    ("x-original-uri", "/fixed"),
                    ("x-original-method", "GET"),
                    ("x-forwarded-method", "POST"),
                ],
            ),
            (
                "/fixed",
                Method::GET,
                &[
                    ("authorization", a),
                    ("x-original-uri", "/t/femo/assets/press-7"),
                ],
            ),
            (
                "/t/femo/assets/press-7/operate",
                Method::POST,
                &[("authorization", a), ("x-forwarded-method", "GET")],
            ),
            (
                "",
                Method::GET,
                &[
                    ("authorization", a),
                    ("x-original-uri", "/fixed"),
                    ("x-original-uri", "/fixed"),
                ],
            ),
            ("", Method::GET, &[("authorization", a)]),
            (
                "/t/femo/assets/press-7",
                Method::GET,
                &[("authorization", a), ("x-http-method-override", "DELETE")],
            ),
            (
                "/t/femo/assets/press-7",
                Method::GET,
                &[("authorization", a), ("x-http-method", "POST")],
            ),
            (
                "/t/femo/assets/press-7",
                Method::GET,
                &[("authorization", a), ("X-Method-Override", "PUT")],
            ),
        ];
        for (rest, m, h) in cases {
            let (s, code, _) = run(&st, m.clone(), rest, h);
            assert_eq!((s, code.as_str()), (403, "bad_target"), "{rest} {h:?}");
        }
        for uri in [
            "/t/femo/assets/../assets/press-7",
            "/t/femo/assets/./press-7",
            "/t/femo/assets/%2e%2E/x",
            "/t/femo/assets/..;/x",
            "/t/femo//assets/press-7",
            "/t/femo/assets/a%2Fb",
            "/t/femo/assets/a%5cb",
            "/t/femo/assets/a%00",
            "/t/femo/assets/a%zz",
            "/t/femo/assets/%252e%252e/x",
            "/t/femo/assets/a%25",
            "/t/femo/assets/%ff",
            "/t\\femo",
            "t/femo/assets/press-7",
            "http://evil/t/femo/assets/press-7",
        ] {
            let h = [
                ("authorization", a),
                ("x-original-uri", uri),
                ("x-original-method", "GET"),
            ];
            let (s, code, _) = run(&st, Method::GET, "", &h);
            assert_eq!((s, code.as_str()), (403, "bad_target"), "{uri}");
        }
        // Percent-encoded ordinary characters are decoded before matching.
        let h = [
            ("authorization", a),
            ("x-original-uri", "/t/femo/%61ssets/press%2D7"),
            ("x-original-method", "GET"),
        ];
        assert_eq!(run(&st, Method::GET, "", &h).0, 200);
    }

    #[test]
    fn identity_problems_are_401() {
        let st = state();
        let target = [
            ("x-original-uri", "/t/femo/assets/press-7"),
            ("x-original-method", "GET"),
        ];
        let go = |auth: Option<&str>| {
            let mut h = target.to_vec();
            if let Some(a) = auth {
                h.push(("authorization", a));
            }
            run(&st, Method::GET, "", &h)
        };
        let expired = format!("Bearer {}", token("alice", "femo", NOW - 3600));
        let inactive = bearer_for("erik");
        let deleted = bearer_for("fatima");
        let unknown = bearer_for("nobody");
        let other_tenant = format!("Bearer {}", token("kim", "towerco", NOW + 600));
        for auth in [
            None,
            Some("Basic YWxpY2U6eA=="),
            Some("Bearer"),
            Some("Bearer not.a.jwt"),
            Some(expired.as_str()),
            Some(inactive.as_str()),
            Some(deleted.as_str()),
            Some(unknown.as_str()),
            Some(other_tenant.as_str()),
        ] {
            let (s, code, _) = go(auth);
            assert_eq!((s, code.as_str()), (401, "unauthenticated"), "{auth:?}");
        }
        // A token for femo on a request for another (here unknown) tenant.
        let h = [
            ("authorization", &*bearer_for("alice")),
            ("x-original-uri", "/t/nope/assets/press-7"),
            ("x-original-method", "GET"),
        ];
        let (s, code, _) = run(&st, Method::GET, "", &h);
        assert_eq!(
            (s, code.as_str()),
            (401, "unauthenticated"),
            "token for femo, request for nope"
        );
    }

    #[test]
    fn tenant_from_claim_and_resource_from_header() {
        let st = state();
        let auth = bearer_for("alice");
        let h = [("authorization", auth.as_str()), ("x-resource", "press-7")];
        let (s, _, id) = run(&st, Method::GET, "/mine/anything/here", &h);
        assert_eq!(s, 200);
        assert_eq!(id.unwrap().1, "femo");
        let h = [("authorization", auth.as_str()), ("x-resource", "robot-12")];
        assert_eq!(run(&st, Method::GET, "/mine/x", &h).0, 403);
        let h = [("authorization", auth.as_str())];
        let (s, code, _) = run(&st, Method::GET, "/mine/x", &h);
        assert_eq!((s, code.as_str()), (403, "bad_target"));
    }

    #[test]
    fn header_identity_table() {
        let st = state();
        let go = |user: Option<&str>, tenant: &str, asset: &str| {
            let mut h = vec![("x-tenant", tenant)];
            if let Some(u) = user {
                h.push(("x-auth-user", u));
            }
            run(&st, Method::PUT, &format!("@internal/api/{asset}"), &h)
        };
        let (s, _, id) = go(Some("alice"), "femo", "press-7");
        assert_eq!(s, 200);
        assert_eq!(id.unwrap().0, "alice");
        assert_eq!(go(Some("alice"), "femo", "robot-12").0, 403);
        assert_eq!(go(None, "femo", "press-7").0, 401);
        assert_eq!(go(Some("erik"), "femo", "press-7").0, 401);
        assert_eq!(go(Some("nobody"), "femo", "press-7").0, 401);
        let (s, code, _) = go(Some("alice"), "nope", "press-7");
        assert_eq!((s, code.as_str()), (403, "unknown_tenant"));
        let (s, code, _) = run(&st, Method::GET, "@missing/api/x", &[]);
        assert_eq!((s, code.as_str()), (404, "not_found"));
    }

    #[test]
    fn endpoint_paths() {
        for (p, yes) in [
            ("/v1/forward-auth", true),
            ("/v1/forward-auth/", true),
            ("/v1/forward-auth/api/x", true),
            ("/v1/forward-auth@internal/api", true),
            ("/v1/forward-authx", false),
            ("/v1/forward", false),
        ] {
            assert_eq!(is_forward_auth(p), yes, "{p}");
        }
    }

    #[test]
    fn bad_routes_are_clear_config_errors() {
        let err = |routes: &str, extra: &str| {
            let yaml = format!(
                "tokens:\n  keys: [{{ alg: HS256, secret: \"{SECRET}\" }}]\nforward_auth:\n{extra}  routes:\n{routes}"
            );
            let config = Config::parse(&yaml, "test").unwrap();
            State::new(config, Arc::new(Registry::new()), Clock::fixed(NOW))
                .err()
                .unwrap()
                .to_string()
        };
        let cases = [
            (
                r#"    - { path: "/a/{x}", tenant: "{t}", action: "a:b", resource: "{x}" }"#,
                "",
                "no parameter '{t}'",
            ),
            (
                r#"    - { path: "/a/*/b", tenant: t, action: "a:b", resource: r }"#,
                "",
                "'*' may only be the last",
            ),
            (
                r#"    - { path: "/a/x{y}", tenant: t, action: "a:b", resource: r }"#,
                "",
                "whole '{name}' segment",
            ),
            (
                r#"    - { path: "a", tenant: t, action: "a:b", resource: r }"#,
                "",
                "must start with '/'",
            ),
            (
                r#"    - { methods: [FETCH], path: "/a", tenant: t, action: "a:b", resource: r }"#,
                "",
                "unknown method 'FETCH'",
            ),
            (
                r#"    - { path: "/a", tenant: t, action: "read", resource: r }"#,
                "",
                "not of the form resource:action",
            ),
            (
                r#"    - { path: "/a", tenant: { claim: org }, action: "a:b", resource: r }"#,
                "",
                "not the tenant claim",
            ),
            (
                r#"    - { path: "/a", tenant: t, action: "a:b", resource: { claim: tenant } }"#,
                "",
                "only the tenant",
            ),
            (
                r#"    - { path: "/a", tenant: { claim: tenant }, action: "a:b", resource: r }"#,
                "  identity: { header: X-User }\n",
                "needs 'identity: bearer'",
            ),
            (
                r#"    - { path: "/{a}/{a}", tenant: t, action: "a:b", resource: r }"#,
                "",
                "appears twice",
            ),
        ];
        for (routes, extra, needle) in cases {
            let e = err(routes, extra);
            assert!(
                e.contains(needle) && e.contains("forward_auth.routes[0]"),
                "{e} (wanted '{needle}')"
            );
        }
    }
}
