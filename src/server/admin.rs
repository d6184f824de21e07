//! The management API (`/v1/tenants/…`, `/v1/users`, `/v1/openapi.json`).
//!
//! Every call needs `Authorization: Bearer <admin token>`. Writes return the tenant's new
//! revision (body `revision`, header `X-Portcullis-Revision`) so that a client can `check` with
//! `min_revision` and read its own write; single entities carry an `ETag` (the revision at which
//! the entity last changed), which `If-Match` on updates must match (409 otherwise).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::error::ApiError;
use super::State;
use crate::control::doc::{json as to_json, TenantDoc, UserRow};
use crate::control::rules::{self, Change, RuleError, UserTransition};
use crate::control::{ControlError, ControlPlane, Expect, Written};
use crate::model::{is_builtin_role, Part, Principal, UserKind, UserStatus, BUILTIN_ROLES};
use crate::store::{Kind, LogQuery};

type Resp = Response<Full<Bytes>>;
/// A business rule bound to its request, run under the tenant's write lock.
type RuleFn = Box<dyn FnOnce(&TenantDoc) -> Result<Change, RuleError> + Send>;

/// The OpenAPI 3 document of the whole HTTP API (also in the repository at `deploy/openapi.json`).
pub const OPENAPI: &str = include_str!("../../deploy/openapi.json");

/// Largest page a list endpoint returns.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 50;

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Rule(RuleError::NotFound { what, id }) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} '{id}' not found"),
            ),
            ControlError::Rule(RuleError::Invalid(fields)) => {
                let msg = RuleError::Invalid(fields.clone()).to_string();
                let mut e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", msg);
                let mut d = serde_json::Map::new();
                d.insert("fields".into(), to_json(&fields));
                e.details = Some(d);
                e
            }
            ControlError::Rule(RuleError::Conflict { code, message }) => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            ControlError::UnknownTenant(t) => ApiError::unknown_tenant(&t),
            e @ ControlError::Precondition { .. } => {
                ApiError::new(StatusCode::CONFLICT, "revision_conflict", e.to_string())
            }
            ControlError::Store(e) => {
                tracing::error!(error = %e, "store error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    e.to_string(),
                )
            }
            ControlError::Corrupt(t, m) => {
                tracing::error!(tenant = %t, error = %m, "corrupt stored data");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("stored data of tenant '{t}' is unreadable"),
                )
            }
        }
    }
}

fn respond(status: StatusCode, body: Value, revision: Option<u64>, etag: Option<u64>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(rev) = revision {
        if let Ok(v) = HeaderValue::from_str(&rev.to_string()) {
            h.insert("x-portcullis-revision", v);
        }
    }
    if let Some(tag) = etag {
        if let Ok(v) = HeaderValue::from_str(&format!("\"{tag}\"")) {
            h.insert(header::ETAG, v);
        }
    }
    r
}

fn written(w: Written, created: bool) -> Resp {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    respond(
        status,
        json!({ "revision": w.revision, "data": w.change.result }),
        Some(w.revision),
        Some(w.revision),
    )
}

/// Checks the bearer token in constant time.
fn authorize(state: &State, req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(expected) = state.admin_token.as_deref() else {
        return Err(ApiError::unauthenticated(
            "the management API has no admin token configured",
        ));
    };
    let got = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(got) = got else {
        return Err(ApiError::unauthenticated("missing bearer token"));
    };
    let (a, b) = (got.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff)) as usize;
    }
    if diff != 0 {
        return Err(ApiError::unauthenticated("invalid bearer token"));
    }
    Ok(())
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(q) = req.uri().query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.insert(decode(k), decode(v));
        }
    }
    out
}

/// Percent-decodes a query component (`+` is a space).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn if_match(req: &Request<Incoming>, kind: Kind, id: &str) -> Result<Option<Expect>, ApiError> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .unwrap_or("")
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"');
    let revision = s.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!("If-Match must be an ETag from this API, got '{s}'"))
    })?;
    Ok(Some(Expect {
        kind,
        id: id.to_string(),
        revision,
    }))
}

async fn body<T: DeserializeOwned>(state: &State, req: Request<Incoming>) -> Result<T, ApiError> {
    let bytes = super::read_body(state, req).await?;
    if bytes.is_empty() {
        return serde_json::from_slice(b"{}").map_err(|e| ApiError::malformed(&e));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::malformed(&e))
}

struct Page {
    offset: usize,
    size: usize,
}

fn page(q: &BTreeMap<String, String>) -> Result<Page, ApiError> {
    let size = match q.get("page_size") {
        None => DEFAULT_PAGE,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("page_size must be 1..={MAX_PAGE}")))?,
    };
    let offset = match q.get("page_token") {
        None => 0,
        Some(s) if s.is_empty() => 0,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("invalid page_token"))?,
    };
    Ok(Page { offset, size })
}

fn paged(items: Vec<Value>, p: &Page, revision: u64) -> Resp {
    let total = items.len();
    let end = p.offset.saturating_add(p.size).min(total);
    let slice: Vec<Value> = items.into_iter().skip(p.offset).take(p.size).collect();
    let next = (end < total).then(|| end.to_string());
    respond(
        StatusCode::OK,
        json!({ "items": slice, "total": total, "next_page_token": next, "revision": revision }),
        Some(revision),
        None,
    )
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this resource",
    )
}

/// Handles a management request. `path` starts with `/v1/`.
pub async fn handle(state: &State, req: Request<Incoming>) -> Result<Resp, ApiError> {
    if req.uri().path() == "/v1/openapi.json" && req.method() == Method::GET {
        let mut r = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(r);
    }
    authorize(state, &req)?;
    let Some(cp) = state.control.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this process has no control plane",
        ));
    };
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .trim_start_matches("/v1/")
        .split('/')
        .map(decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let q = query(&req);
    let actor = "admin";
    match (segs.as_slice(), &method) {
        (["openapi.json"], &Method::GET) => {
            let mut r = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
        (["users"], &Method::GET) => platform_users(&cp, &q).await,
        (["tenants"], &Method::GET) => list_tenants(&cp, &q).await,
        (["tenants"], &Method::POST) => {
            let r: rules::TenantCreate = body(state, req).await?;
            let id = r.id.clone();
            let n = state.clock.now();
            Ok(written(
                cp.write_new(&id, actor, |_| rules::create_tenant(&r, n))
                    .await?,
                true,
            ))
        }
        (["tenants", t], &Method::GET) => {
            let (v, rev, etag) = cp
                .read(t, |d| {
                    (tenant_summary(d), d.revision, d.rev_of(Kind::Tenant, t))
                })
                .await?;
            Ok(respond(StatusCode::OK, v, Some(rev), Some(etag)))
        }
        (["tenants", t], &Method::PATCH) => {
            let e = if_match(&req, Kind::Tenant, t)?;
            let p: rules::TenantPatch = body(state, req).await?;
            Ok(written(
                cp.write(t, actor, e, |d| rules::update_tenant(d, &p))
                    .await?,
                false,
            ))
        }
        (["tenants", t], &Method::DELETE) => {
            let e = if_match(&req, Kind::Tenant, t)?;
            Ok(written(
                cp.write(t, actor, e, rules::delete_tenant).await?,
                false,
            ))
        }
        (["tenants", t, "audit"], &Method::GET) => audit(&cp, t, &q).await,
        (["tenants", t, coll], &Method::GET) => list(&cp, t, coll, &q, state.clock.now()).await,
        (["tenants", t, "users", "overview"], &Method::GET) => {
            let (v, rev) = cp
                .read(t, |d| (user_overview(d, state.clock.now()), d.revision))
                .await?;
            Ok(respond(StatusCode::OK, v, Some(rev), None))
        }
        (["tenants", t, coll], &Method::POST) => create(state, &cp, t, coll, actor, req).await,
        (["tenants", t, "plugins", name], &Method::PUT) => {
            upload_plugin(state, &cp, t, name, actor, &q, req).await
        }
        (["tenants", t, "plugins", name, "wasm"], &Method::GET) => {
            let (wasm, etag) = cp
                .read(t, |d| {
                    (
                        d.plugins.get(*name).map(|p| p.wasm.clone()),
                        d.rev_of(Kind::Plugin, name),
                    )
                })
                .await?;
            let wasm = wasm.ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("plugin '{name}' not found"),
                )
            })?;
            let mut r = Response::new(Full::new(Bytes::copy_from_slice(&wasm)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/wasm"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                r.headers_mut().insert(header::ETAG, v);
            }
            Ok(r)
        }
        (["tenants", t, coll, id], &Method::GET) => get_one(&cp, t, coll, id, state.clock.now()).await,
        (["tenants", t, coll, id], &Method::PATCH) => {
            update(state, &cp, t, coll, id, actor, req).await
        }
        (["tenants", t, coll, id], &Method::DELETE) => remove(&cp, t, coll, id, actor, &req, state.clock.now()).await,
        (["tenants", t, "users", id, op], &Method::POST) => {
            let tr = match *op {
                "activate" => UserTransition::Activate,
                "deactivate" => UserTransition::Deactivate,
                "restore" => UserTransition::Restore,
                "delete" => UserTransition::Delete,
                "login" => UserTransition::Login,
                _ => return Err(ApiError::not_found(&path)),
            };
            let e = if_match(&req, Kind::User, id)?;
            let n = state.clock.now();
            Ok(written(
                cp.write(t, actor, e, |d| rules::transition_user(d, id, tr, n))
                    .await?,
                false,
            ))
        }
        (["tenants", t, "groups", g, "members"], &Method::POST) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct M {
                user: String,
            }
            let e = if_match(&req, Kind::Group, g)?;
            let m: M = body(state, req).await?;
            Ok(written(
                cp.write(t, actor, e, |d| rules::add_member(d, g, &m.user))
                    .await?,
                false,
            ))
        }
        (["tenants", t, "groups", g, "members", u], &Method::DELETE) => {
            let e = if_match(&req, Kind::Group, g)?;
            Ok(written(
                cp.write(t, actor, e, |d| rules::remove_member(d, g, u))
                    .await?,
                false,
            ))
        }
        (["tenants", ..] | ["users"] | ["openapi.json"], _) => Err(method_not_allowed()),
        _ => Err(ApiError::not_found(&path)),
    }
}

/// `PUT /v1/tenants/{t}/plugins/{name}` with the module as the body (`?description=` optional):
/// validated and compiled by the plugin runtime first (422 with the reason when it is refused),
/// then committed; the new version reaches checks with the tenant's next snapshot.
async fn upload_plugin(
    state: &State,
    cp: &Arc<ControlPlane>,
    t: &str,
    name: &str,
    actor: &str,
    q: &BTreeMap<String, String>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let e = if_match(&req, Kind::Plugin, name)?;
    cp.read(t, |_| ()).await?;
    let host = state.registry.plugin_host().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "plugins_unavailable",
            "this process has no plugin runtime",
        )
    })?;
    let max = host.limits().max_module_bytes;
    let bytes = super::read_binary_body(state, req, max).await?;
    if let Err(msg) = rules::check_plugin_name(name) {
        return Err(ControlError::Rule(RuleError::invalid("name", msg)).into());
    }
    // Compile off the async workers. The compiled module lands in the runtime's cache, so the
    // follower's load of the committed version is a cache hit; live snapshots keep their own
    // versions whatever the cache holds.
    let wasm: Arc<[u8]> = Arc::from(&bytes[..]);
    let check = {
        let (host, wasm, name, t) = (host.clone(), wasm.clone(), name.to_string(), t.to_string());
        tokio::task::spawn_blocking(move || host.load(&t, &name, &wasm).map(|p| p.compile_time()))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
    };
    let compile = check.map_err(|e| {
        let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string());
        let mut d = serde_json::Map::new();
        d.insert(
            "fields".into(),
            json!([{"field": "wasm", "message": e.to_string()}]),
        );
        err.details = Some(d);
        err
    })?;
    let upload = rules::PluginUpload {
        name: name.to_string(),
        description: q.get("description").cloned(),
        wasm,
    };
    let n = state.clock.now();
    let existed = cp.read(t, |d| d.plugins.contains_key(name)).await?;
    let actor_s = actor.to_string();
    let w = cp
        .write(t, actor, e, move |d| {
            rules::put_plugin(d, &upload, &actor_s, n)
        })
        .await?;
    let mut resp = written(w, !existed);
    resp.headers_mut().insert(
        "x-portcullis-compile-ms",
        HeaderValue::from_str(&format!("{:.3}", compile.as_secs_f64() * 1e3))
            .unwrap_or(HeaderValue::from_static("0")),
    );
    Ok(resp)
}

fn kind_of(coll: &str) -> Result<Kind, ApiError> {
    Ok(match coll {
        "nodes" => Kind::Node,
        "users" => Kind::User,
        "groups" => Kind::Group,
        "roles" => Kind::Role,
        "assignments" => Kind::Assignment,
        "plugins" => Kind::Plugin,
        other => return Err(ApiError::not_found(&format!("/v1/tenants/…/{other}"))),
    })
}

async fn create(
    state: &State,
    cp: &Arc<ControlPlane>,
    t: &str,
    coll: &str,
    actor: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let n = state.clock.now();
    let f: RuleFn = match kind_of(coll)? {
        Kind::Node => {
            let r: rules::NodeCreate = body(state, req).await?;
            Box::new(move |d| rules::create_node(d, &r))
        }
        Kind::User => {
            let r: rules::UserCreate = body(state, req).await?;
            Box::new(move |d| rules::create_user(d, &r, n))
        }
        Kind::Group => {
            let r: rules::GroupCreate = body(state, req).await?;
            Box::new(move |d| rules::create_group(d, &r))
        }
        Kind::Role => {
            let r: rules::RoleCreate = body(state, req).await?;
            Box::new(move |d| rules::create_role(d, &r))
        }
        Kind::Assignment => {
            let r: rules::AssignmentCreate = body(state, req).await?;
            let actor = actor.to_string();
            Box::new(move |d| rules::create_assignment(d, &r, &actor, n))
        }
        _ => return Err(method_not_allowed()),
    };
    Ok(written(cp.write(t, actor, None, f).await?, true))
}

async fn update(
    state: &State,
    cp: &Arc<ControlPlane>,
    t: &str,
    coll: &str,
    id: &str,
    actor: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let kind = kind_of(coll)?;
    let e = if_match(&req, kind, id)?;
    let n = state.clock.now();
    let id2 = id.to_string();
    let f: RuleFn = match kind {
        Kind::Node => {
            let p: rules::NodePatch = body(state, req).await?;
            Box::new(move |d| rules::update_node(d, &id2, &p))
        }
        Kind::User => {
            let p: rules::UserPatch = body(state, req).await?;
            Box::new(move |d| rules::update_user(d, &id2, &p, n))
        }
        Kind::Group => {
            let p: rules::GroupPatch = body(state, req).await?;
            Box::new(move |d| rules::update_group(d, &id2, &p))
        }
        Kind::Role => {
            let p: rules::RolePatch = body(state, req).await?;
            Box::new(move |d| rules::update_role(d, &id2, &p))
        }
        Kind::Assignment => {
            let p: rules::AssignmentPatch = body(state, req).await?;
            Box::new(move |d| rules::update_assignment(d, &id2, &p, n))
        }
        _ => return Err(method_not_allowed()),
    };
    Ok(written(cp.write(t, actor, e, f).await?, false))
}

async fn remove(
    cp: &Arc<ControlPlane>,
    t: &str,
    coll: &str,
    id: &str,
    actor: &str,
    req: &Request<Incoming>,
    n: i64,
) -> Result<Resp, ApiError> {
    let kind = kind_of(coll)?;
    let e = if_match(req, kind, id)?;
    let w = match kind {
        Kind::Node => cp.write(t, actor, e, |d| rules::delete_node(d, id)).await?,
        // Users are soft-deleted (restorable).
        Kind::User => {
            cp.write(t, actor, e, |d| {
                rules::transition_user(d, id, UserTransition::Delete, n)
            })
            .await?
        }
        Kind::Group => {
            cp.write(t, actor, e, |d| rules::delete_group(d, id))
                .await?
        }
        Kind::Role => cp.write(t, actor, e, |d| rules::delete_role(d, id)).await?,
        Kind::Assignment => {
            cp.write(t, actor, e, |d| rules::delete_assignment(d, id))
                .await?
        }
        Kind::Plugin => {
            cp.write(t, actor, e, |d| rules::delete_plugin(d, id))
                .await?
        }
        _ => return Err(method_not_allowed()),
    };
    Ok(written(w, false))
}

fn with_rev(mut v: Value, rev: u64) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("_rev");
        m.insert("etag".into(), Value::String(format!("\"{rev}\"")));
    }
    v
}

fn tenant_summary(d: &TenantDoc) -> Value {
    let mut v = d.settings.as_ref().map(to_json).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("revision".into(), json!(d.revision));
        m.insert(
            "counts".into(),
            json!({
                "nodes": d.nodes.len(), "roles": d.roles.len() + BUILTIN_ROLES.len(),
                "users": d.users.values().filter(|u| u.user.status != UserStatus::Deleted).count(),
                "groups": d.groups.len(), "assignments": d.assignments.len(),
            }),
        );
    }
    v
}

async fn list_tenants(
    cp: &Arc<ControlPlane>,
    q: &BTreeMap<String, String>,
) -> Result<Resp, ApiError> {
    let p = page(q)?;
    let mut items = Vec::new();
    for id in cp.tenant_ids() {
        if let Ok(v) = cp.read(&id, tenant_summary).await {
            items.push(v);
        }
    }
    Ok(paged(items, &p, 0))
}

fn node_json(d: &TenantDoc, id: &str) -> Option<Value> {
    let n = d.nodes.get(id)?;
    let mut path = vec![n.id.clone()];
    let mut cur = n.parent.clone();
    while let Some(c) = cur {
        if path.len() > d.nodes.len() {
            break;
        }
        path.push(c.clone());
        cur = d.nodes.get(&c).and_then(|x| x.parent.clone());
    }
    path.reverse();
    let children = d
        .nodes
        .values()
        .filter(|x| x.parent.as_deref() == Some(id))
        .count();
    let mut v = to_json(n);
    if let Value::Object(m) = &mut v {
        m.insert("path".into(), json!(path));
        m.insert("children".into(), json!(children));
    }
    Some(with_rev(v, d.rev_of(Kind::Node, id)))
}

fn role_json(d: &TenantDoc, id: &str, detail: bool) -> Option<Value> {
    let (role, builtin) = if is_builtin_role(id) {
        let (rid, name, perms) = BUILTIN_ROLES.iter().find(|r| r.0 == id)?;
        (
            crate::model::Role {
                id: (*rid).to_string(),
                name: (*name).to_string(),
                permissions: perms.iter().filter_map(|p| p.parse().ok()).collect(),
                plugin: None,
            },
            true,
        )
    } else {
        (d.roles.get(id)?.clone(), false)
    };
    let mut v = to_json(&role);
    if let Value::Object(m) = &mut v {
        m.insert("builtin".into(), json!(builtin));
        if detail {
            let mut by_res: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for p in &role.permissions {
                let res = match &p.resource {
                    Part::Any => "*".to_string(),
                    Part::Name(n) => n.clone(),
                };
                let act = match &p.action {
                    Part::Any => "*".to_string(),
                    Part::Name(n) => n.clone(),
                };
                by_res.entry(res).or_default().push(act);
            }
            m.insert("permissions_by_resource".into(), json!(by_res));
            let mut holders = Vec::new();
            for a in d.assignments.values().filter(|a| a.assignment.role == id) {
                match &a.assignment.principal {
                    Principal::User(u) => holders
                        .push(json!({"user": u, "via": "direct", "scope": a.assignment.scope})),
                    Principal::Group(g) => {
                        for mbr in d.groups.get(g).map(|g| g.members.as_slice()).unwrap_or(&[]) {
                            holders.push(json!({"user": mbr, "via": format!("group:{g}"), "scope": a.assignment.scope}));
                        }
                    }
                }
            }
            m.insert("holders".into(), json!(holders));
        }
    }
    Some(with_rev(
        v,
        if builtin { 0 } else { d.rev_of(Kind::Role, id) },
    ))
}

fn user_json(d: &TenantDoc, u: &UserRow) -> Value {
    let mut v = to_json(u);
    if let Value::Object(m) = &mut v {
        let groups: Vec<&str> = d
            .groups
            .values()
            .filter(|g| g.members.iter().any(|x| x == &u.user.id))
            .map(|g| g.id.as_str())
            .collect();
        m.insert("groups".into(), json!(groups));
    }
    with_rev(v, d.rev_of(Kind::User, &u.user.id))
}

fn assignment_json(d: &TenantDoc, id: &str, now: i64) -> Option<Value> {
    let a = d.assignments.get(id)?;
    let mut v = to_json(a);
    if let Value::Object(m) = &mut v {
        let kind = d.nodes.get(&a.assignment.scope).map(|n| n.kind.clone());
        m.insert("scope_kind".into(), json!(kind));
        let exp = a.assignment.expires_at.is_some_and(|e| e <= now);
        m.insert("expired".into(), json!(exp));
    }
    Some(with_rev(v, d.rev_of(Kind::Assignment, id)))
}

async fn get_one(
    cp: &Arc<ControlPlane>,
    t: &str,
    coll: &str,
    id: &str,
    now: i64,
) -> Result<Resp, ApiError> {
    let kind = kind_of(coll)?;
    let (v, rev) = cp
        .read(t, |d| {
            let v = match kind {
                Kind::Node => node_json(d, id),
                Kind::User => d.users.get(id).map(|u| user_json(d, u)),
                Kind::Group => d
                    .groups
                    .get(id)
                    .map(|g| with_rev(to_json(g), d.rev_of(Kind::Group, id))),
                Kind::Role => role_json(d, id, true),
                Kind::Assignment => assignment_json(d, id, now),
                Kind::Plugin => d
                    .plugins
                    .get(id)
                    .map(|p| with_rev(rules::plugin_summary(d, p), d.rev_of(Kind::Plugin, id))),
                _ => None,
            };
            (v, d.revision)
        })
        .await?;
    let v = v.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{} '{id}' not found", kind.as_str()),
        )
    })?;
    let etag = v
        .get("etag")
        .and_then(Value::as_str)
        .and_then(|s| s.trim_matches('"').parse().ok());
    Ok(respond(StatusCode::OK, v, Some(rev), etag))
}

fn contains_ci(hay: &str, needle_lc: &str) -> bool {
    hay.to_ascii_lowercase().contains(needle_lc)
}

fn flag(q: &BTreeMap<String, String>, k: &str) -> Result<bool, ApiError> {
    match q.get(k).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(o) => Err(ApiError::bad_request(format!(
            "{k} must be true or false, got '{o}'"
        ))),
    }
}

/// Filters and sorts users per the list query (shared by the tenant and platform listings).
fn select_users<'a, T>(
    users: Vec<(T, &'a UserRow)>,
    q: &BTreeMap<String, String>,
) -> Result<Vec<(T, &'a UserRow)>, ApiError> {
    let needle = q.get("q").map(|s| s.to_ascii_lowercase());
    let status = q.get("status").map(String::as_str).unwrap_or("all");
    if !matches!(status, "all" | "active" | "inactive") {
        return Err(ApiError::bad_request(format!(
            "status must be all, active or inactive, got '{status}'"
        )));
    }
    let include_deleted = flag(q, "include_deleted")?;
    let mut out: Vec<(T, &UserRow)> = users
        .into_iter()
        .filter(|(_, u)| include_deleted || u.user.status != UserStatus::Deleted)
        .filter(|(_, u)| match status {
            "active" => u.user.status == UserStatus::Active,
            "inactive" => u.user.status == UserStatus::Inactive,
            _ => true,
        })
        .filter(|(_, u)| {
            needle
                .as_deref()
                .is_none_or(|n| contains_ci(&u.user.name, n) || contains_ci(&u.user.email, n))
        })
        .collect();
    let sort = q.get("sort").map(String::as_str).unwrap_or("name");
    match sort {
        "name" => out.sort_by(|(_, a), (_, b)| {
            a.user
                .name
                .to_lowercase()
                .cmp(&b.user.name.to_lowercase())
                .then(a.user.id.cmp(&b.user.id))
        }),
        "email" => out.sort_by(|(_, a), (_, b)| {
            a.user
                .email
                .to_lowercase()
                .cmp(&b.user.email.to_lowercase())
        }),
        "created" => out.sort_by(|(_, a), (_, b)| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.user.id.cmp(&b.user.id))
        }),
        "last_login" => out.sort_by(|(_, a), (_, b)| {
            a.last_login_at
                .cmp(&b.last_login_at)
                .then(a.user.id.cmp(&b.user.id))
        }),
        o => {
            return Err(ApiError::bad_request(format!(
                "sort must be name, email, created or last_login, got '{o}'"
            )))
        }
    }
    match q.get("order").map(String::as_str).unwrap_or("asc") {
        "asc" => {}
        "desc" => out.reverse(),
        o => {
            return Err(ApiError::bad_request(format!(
                "order must be asc or desc, got '{o}'"
            )))
        }
    }
    Ok(out)
}

fn user_overview(d: &TenantDoc, now: i64) -> Value {
    let live: Vec<&UserRow> = d
        .users
        .values()
        .filter(|u| u.user.status != UserStatus::Deleted)
        .collect();
    let admins = live
        .iter()
        .filter(|u| {
            matches!(u.user.kind, UserKind::Owner | UserKind::Admin)
                || d.assignments.values().any(|a| {
                    a.assignment.role == "administrator"
                        && a.assignment.principal == Principal::User(u.user.id.clone())
                })
        })
        .count();
    json!({
        "total": live.len(),
        "administrators": admins,
        "active": live.iter().filter(|u| u.user.status == UserStatus::Active).count(),
        "new_last_7_days": live.iter().filter(|u| u.created_at > now - 7 * 86_400).count(),
    })
}

async fn list(
    cp: &Arc<ControlPlane>,
    t: &str,
    coll: &str,
    q: &BTreeMap<String, String>,
    now: i64,
) -> Result<Resp, ApiError> {
    let kind = kind_of(coll)?;
    let p = page(q)?;
    let (items, rev) = cp
        .read(t, |d| -> Result<(Vec<Value>, u64), ApiError> {
            let items: Vec<Value> = match kind {
                Kind::Node => d
                    .nodes
                    .values()
                    .filter(|n| q.get("kind").is_none_or(|k| &n.kind == k))
                    .filter(|n| {
                        q.get("parent")
                            .is_none_or(|pa| n.parent.as_deref() == Some(pa.as_str()))
                    })
                    .filter_map(|n| node_json(d, &n.id))
                    .collect(),
                Kind::User => select_users(d.users.values().map(|u| ((), u)).collect(), q)?
                    .into_iter()
                    .map(|(_, u)| user_json(d, u))
                    .collect(),
                Kind::Group => d
                    .groups
                    .iter()
                    .map(|(id, g)| with_rev(to_json(g), d.rev_of(Kind::Group, id)))
                    .collect(),
                Kind::Role => BUILTIN_ROLES
                    .iter()
                    .map(|r| r.0.to_string())
                    .chain(d.roles.keys().cloned())
                    .filter_map(|id| role_json(d, &id, false))
                    .collect(),
                Kind::Plugin => d
                    .plugins
                    .iter()
                    .map(|(id, p)| {
                        with_rev(rules::plugin_summary(d, p), d.rev_of(Kind::Plugin, id))
                    })
                    .collect(),
                Kind::Assignment => {
                    let via_groups = flag(q, "include_groups")?;
                    let user = q.get("user");
                    let groups_of_user: Vec<&str> = match user {
                        Some(u) if via_groups => d
                            .groups
                            .values()
                            .filter(|g| g.members.iter().any(|m| m == u))
                            .map(|g| g.id.as_str())
                            .collect(),
                        _ => Vec::new(),
                    };
                    let expired = q.get("expired").map(String::as_str).unwrap_or("include");
                    if !matches!(expired, "include" | "exclude" | "only") {
                        return Err(ApiError::bad_request(
                            "expired must be include, exclude or only",
                        ));
                    }
                    d.assignments
                        .values()
                        .filter(|a| q.get("role").is_none_or(|r| &a.assignment.role == r))
                        .filter(|a| q.get("scope").is_none_or(|s| &a.assignment.scope == s))
                        .filter(|a| {
                            q.get("scope_kind").is_none_or(|k| {
                                d.nodes
                                    .get(&a.assignment.scope)
                                    .is_some_and(|n| &n.kind == k)
                            })
                        })
                        .filter(|a| {
                            q.get("group").is_none_or(|g| {
                                a.assignment.principal == Principal::Group(g.clone())
                            })
                        })
                        .filter(|a| {
                            user.is_none_or(|u| match &a.assignment.principal {
                                Principal::User(x) => x == u,
                                Principal::Group(g) => groups_of_user.contains(&g.as_str()),
                            })
                        })
                        .filter(|a| {
                            let ex = a.assignment.expires_at.is_some_and(|e| e <= now);
                            match expired {
                                "exclude" => !ex,
                                "only" => ex,
                                _ => true,
                            }
                        })
                        .filter_map(|a| assignment_json(d, &a.id, now))
                        .collect()
                }
                _ => Vec::new(),
            };
            Ok((items, d.revision))
        })
        .await??;
    Ok(paged(items, &p, rev))
}

async fn platform_users(
    cp: &Arc<ControlPlane>,
    q: &BTreeMap<String, String>,
) -> Result<Resp, ApiError> {
    let p = page(q)?;
    let mut all: Vec<(String, UserRow)> = Vec::new();
    for t in cp.tenant_ids() {
        if let Ok(users) = cp
            .read(&t, |d| d.users.values().cloned().collect::<Vec<_>>())
            .await
        {
            all.extend(users.into_iter().map(|u| (t.clone(), u)));
        }
    }
    let selected = select_users(all.iter().map(|(t, u)| (t.as_str(), u)).collect(), q)?;
    let items: Vec<Value> = selected
        .into_iter()
        .map(|(tenant, u)| {
            let mut v = to_json(u);
            if let Value::Object(m) = &mut v {
                m.remove("_rev");
                m.insert("tenant".into(), json!(tenant));
            }
            v
        })
        .collect();
    Ok(paged(items, &p, 0))
}

async fn audit(
    cp: &Arc<ControlPlane>,
    t: &str,
    q: &BTreeMap<String, String>,
) -> Result<Resp, ApiError> {
    cp.read(t, |_| ()).await?;
    let limit = match q.get("limit") {
        None => DEFAULT_PAGE,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..={MAX_PAGE}")))?,
    };
    let num = |k: &str| -> Result<Option<i64>, ApiError> {
        q.get(k)
            .map(|s| match s.parse::<i64>() {
                Ok(n) => Ok(n),
                Err(_) => crate::model::parse_timestamp(s)
                    .map(|t| t * 1000)
                    .map_err(ApiError::bad_request),
            })
            .transpose()
    };
    let query = LogQuery {
        tenant: Some(t.to_string()),
        after_revision: q
            .get("after_revision")
            .map(|s| s.parse::<u64>())
            .transpose()
            .map_err(|_| ApiError::bad_request("after_revision must be a number"))?,
        actor: q.get("actor").cloned(),
        action_prefix: q.get("action").cloned(),
        target: q.get("target").cloned(),
        since_ms: num("since")?,
        until_ms: num("until")?,
        limit: limit + 1,
    };
    let mut commits = cp.store().log(&query).await.map_err(ControlError::from)?;
    let more = commits.len() > limit;
    commits.truncate(limit);
    let next = if more {
        commits.last().map(|c| c.revision.to_string())
    } else {
        None
    };
    let items: Vec<Value> = commits
        .iter()
        .map(|c| {
            json!({
                "revision": c.revision, "actor": c.actor, "at": crate::model::format_timestamp(c.at_ms / 1000), "at_ms": c.at_ms,
                "action": c.action, "target": c.target,
                "changes": c.ops.iter().map(|o| {
                    // Plugin rows carry the module: the audit shows its hash and size.
                    let show = |v: &Value| if o.kind == Kind::Plugin {
                        crate::control::doc::PluginRow::summary(v)
                    } else {
                        strip_rev(v.clone())
                    };
                    json!({
                        "kind": o.kind, "id": o.id,
                        "before": o.before.as_ref().map(show),
                        "after": o.value.as_ref().map(show),
                    })
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(respond(
        StatusCode::OK,
        json!({"items": items, "next_after_revision": next}),
        None,
        None,
    ))
}

fn strip_rev(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("_rev");
    }
    v
}
