//! Plugin modules over the management API: upload (validated and compiled before the commit),
//! download, versions and rollback, and canaries (`…/plugins/{name}/canary`: show, change the
//! share, promote, abort). Listing, reading and deleting go the way of the other collections.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use serde_json::json;

use super::http::{body, if_match, respond, Query};
use super::writes::Writer;
use crate::control::policy;
use crate::control::rules::{self, RuleError};
use crate::control::{ControlError, ControlPlane};
use crate::server::error::{ApiError, ErrorCode};
use crate::server::Resp;
use crate::store::Kind;

/// `PUT /v1/tenants/{t}/plugins/{name}` with the module as the body (`?description=` optional):
/// validated and compiled by the plugin runtime first (422 with the reason when it is refused),
/// then committed; the new version reaches checks with the tenant's next snapshot.
///
/// `?canary=N` (1 to 99, else 422) uploads the module as a canary instead: the current version
/// stays current and the candidate runs N % of the plugin's calls (`rules::put_plugin`). While a
/// canary runs, an upload without `?canary` is refused (409): promote or abort first.
pub async fn upload(
    w: &Writer<'_>,
    name: &str,
    q: &Query,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    // Refused before the module is read and compiled.
    w.may(|g| policy::plugin(g, "update")).await?;
    let (state, cp, t) = (w.state, w.cp, w.tenant);
    let e = if_match(&req, Kind::Plugin, name)?;
    let canary = match q.get("canary") {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<i64>()
                .map_err(|_| {
                    RuleError::invalid(
                        "canary",
                        format!(
                            "a canary share is a percentage of the calls from 1 to 99, got '{v}'"
                        ),
                    )
                })
                .and_then(rules::check_canary_share)
                .map_err(ControlError::Rule)?,
        ),
    };
    // The runtime keeps the other live version of the plugin loaded beside this one: the
    // current version for a canary upload, the running candidate for a re-upload of the
    // current version (any other upload is refused while a canary runs).
    let keep = cp
        .read(t, |d| {
            let p = d.plugins.get(name)?;
            let other = match canary {
                Some(_) => &p.sha256,
                None => &p.canary.as_ref()?.version.sha256,
            };
            crate::model::unhex32(other)
        })
        .await?;
    let host = state.registry.plugin_host().cloned().ok_or_else(|| {
        ApiError::new(
            ErrorCode::PluginsUnavailable,
            "this process has no plugin runtime",
        )
    })?;
    let max = host.limits().max_module_bytes;
    let bytes = crate::server::read_binary_body(state, req, max).await?;
    if let Err(msg) = rules::check_plugin_name(name) {
        return Err(ControlError::Rule(RuleError::invalid("name", msg)).into());
    }
    let wasm: Arc<[u8]> = Arc::from(&bytes[..]);
    let upload = rules::PluginUpload {
        name: name.to_string(),
        description: q.get("description").map(str::to_string),
        wasm,
        canary,
    };
    // The rule first (canary state, `rbac`, sizes): a refused upload compiles nothing and
    // leaves the runtime's loaded versions alone. It runs again under the tenant's lock.
    let (actor, n) = (w.actor.to_string(), state.clock.now());
    cp.read(t, |d| rules::put_plugin(d, &upload, &actor, n).map(|_| ()))
        .await?
        .map_err(ControlError::Rule)?;
    // Compile off the async workers. The compiled module lands in the runtime's cache, so the
    // follower's load of the committed version is a cache hit; live snapshots keep their own
    // versions whatever the cache holds.
    let name_for_log = name.to_string();
    let check = {
        let (host, wasm, name, t) = (
            host.clone(),
            upload.wasm.clone(),
            name.to_string(),
            t.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            host.load_keeping(&t, &name, &wasm, keep)
                .map(|p| p.compile_time())
        })
        .await
        .map_err(|e| {
            // A panic's text is internal: logged, never answered.
            tracing::error!(error = %e, plugin = %name_for_log, "plugin compile task failed");
            ApiError::new(
                ErrorCode::Internal,
                "the plugin could not be compiled (internal error)",
            )
        })?
    };
    let compile = check.map_err(|e| {
        ApiError::invalid(
            e.to_string(),
            json!([{"field": "wasm", "message": e.to_string()}]),
        )
    })?;
    let existed = cp.read(t, |d| d.plugins.contains_key(name)).await?;
    let mut resp = w
        .commit(e, !existed, move |g, d| {
            policy::plugin(g, "update")?;
            // The tenant's plugin count (`plugins.max_per_tenant`), checked under the tenant's
            // write lock so concurrent uploads cannot both pass it.
            host.check_plugin_count(d.plugins.len(), d.plugins.contains_key(&upload.name))
                .map_err(|e| RuleError::conflict("quota_exceeded", e.to_string()))?;
            rules::put_plugin(d, &upload, &actor, n)
        })
        .await?;
    resp.headers_mut().insert(
        "x-portcullis-compile-ms",
        HeaderValue::from_str(&format!("{:.3}", compile.as_secs_f64() * 1e3))
            .unwrap_or(HeaderValue::from_static("0")),
    );
    Ok(resp)
}

/// `GET /v1/tenants/{t}/plugins/{name}/wasm`: the module as uploaded.
pub async fn download(cp: &ControlPlane, t: &str, name: &str) -> Result<Resp, ApiError> {
    let (wasm, etag) = cp
        .read(t, |d| {
            (
                d.plugins.get(name).map(|p| p.wasm.clone()),
                d.rev_of(Kind::Plugin, name),
            )
        })
        .await?;
    let wasm = wasm
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("plugin '{name}' not found")))?;
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

/// `GET /v1/tenants/{t}/plugins/{name}/versions`: the current version and the kept previous
/// ones (newest first), without their bytes; `canary`: the running canary's candidate, or null.
pub async fn versions(cp: &ControlPlane, t: &str, name: &str) -> Result<Resp, ApiError> {
    let (v, canary, rev, etag) = cp
        .read(t, |d| {
            (
                rules::plugin_versions(d, name),
                d.plugins
                    .get(name)
                    .and_then(|p| p.canary.as_ref())
                    .map(rules::canary_summary),
                d.revision,
                d.rev_of(Kind::Plugin, name),
            )
        })
        .await?;
    let v =
        v.ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("plugin '{name}' not found")))?;
    Ok(respond(
        hyper::StatusCode::OK,
        json!({ "data": v, "kept": rules::PLUGIN_VERSIONS_KEPT, "canary": canary }),
        Some(rev),
        Some(etag),
    ))
}

/// `POST /v1/tenants/{t}/plugins/{name}/rollback` `{"sha256"}`: makes a kept previous version
/// current again (loaded by the plugin runtime first, as an upload is; audited as
/// `plugin.rollback`). `If-Match` guards against a concurrent change.
pub async fn rollback(
    w: &Writer<'_>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    // Refused before the module is read and compiled.
    w.may(|g| policy::plugin(g, "update")).await?;
    let (state, cp, t) = (w.state, w.cp, w.tenant);
    let e = if_match(&req, Kind::Plugin, name)?;
    let r: rules::PluginRollback = body(state, req).await?;
    let sha = r.sha256.to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ControlError::Rule(RuleError::invalid(
            "sha256",
            "a version is the module's SHA-256 in hex (64 characters)",
        ))
        .into());
    }
    let host = state.registry.plugin_host().cloned().ok_or_else(|| {
        ApiError::new(
            ErrorCode::PluginsUnavailable,
            "this process has no plugin runtime",
        )
    })?;
    // The kept bytes passed the runtime's checks when uploaded; the limits may have changed
    // since, so they are loaded again before the commit (a cache hit when unchanged).
    let (wasm, keep) = cp
        .read(t, |d| {
            let p = d.plugins.get(name);
            let wasm = p.and_then(|p| {
                if p.sha256 == sha {
                    Some(p.wasm.clone())
                } else {
                    p.previous
                        .iter()
                        .find(|v| v.sha256 == sha)
                        .map(|v| v.wasm.clone())
                }
            });
            // Only the current version passes the rule while a canary runs: its candidate
            // stays loaded.
            let keep = p
                .and_then(|p| p.canary.as_ref())
                .and_then(|c| crate::model::unhex32(&c.version.sha256));
            (wasm, keep)
        })
        .await?;
    // Refused writes (a canary runs, the version is not kept) stop here, before any load.
    cp.read(t, |d| rules::rollback_plugin(d, name, &sha).map(|_| ()))
        .await?
        .map_err(ControlError::Rule)?;
    if let Some(wasm) = wasm {
        let (host, name2, t2) = (host.clone(), name.to_string(), t.to_string());
        let loaded = tokio::task::spawn_blocking(move || {
            host.load_keeping(&t2, &name2, &wasm, keep).map(|_| ())
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, plugin = %name, "plugin compile task failed");
            ApiError::new(
                ErrorCode::Internal,
                "the plugin could not be compiled (internal error)",
            )
        })?;
        loaded.map_err(|e| {
            ApiError::invalid(
                e.to_string(),
                json!([{"field": "sha256", "message": e.to_string()}]),
            )
        })?;
    }
    w.commit(e, false, move |g, d| {
        policy::plugin(g, "update")?;
        rules::rollback_plugin(d, name, &sha)
    })
    .await
}

/// `GET /v1/tenants/{t}/plugins/{name}/canary`: the running canary (`rules::canary_summary`),
/// 404 when the plugin runs none. The ETag is the plugin's. Needs `plugin:read`.
pub async fn canary(cp: &ControlPlane, t: &str, name: &str) -> Result<Resp, ApiError> {
    let (c, exists, rev, etag) = cp
        .read(t, |d| {
            let p = d.plugins.get(name);
            (
                p.and_then(|p| p.canary.as_ref()).map(rules::canary_summary),
                p.is_some(),
                d.revision,
                d.rev_of(Kind::Plugin, name),
            )
        })
        .await?;
    let c = c.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            if exists {
                format!("plugin '{name}' runs no canary")
            } else {
                format!("plugin '{name}' not found")
            },
        )
    })?;
    Ok(respond(
        hyper::StatusCode::OK,
        json!({ "data": c }),
        Some(rev),
        Some(etag),
    ))
}

/// `PATCH /v1/tenants/{t}/plugins/{name}/canary` `{"share"}`: changes the running canary's
/// share (1 to 99, else 422; audited as `plugin.canary.share`). Needs `plugin:update`.
pub async fn canary_share(
    w: &Writer<'_>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let e = if_match(&req, Kind::Plugin, name)?;
    let p: rules::CanaryPatch = body(w.state, req).await?;
    w.commit(e, false, move |g, d| {
        policy::plugin(g, "update")?;
        rules::set_canary_share(d, name, p.share)
    })
    .await
}

/// `POST /v1/tenants/{t}/plugins/{name}/canary/promote`: the candidate becomes the current
/// version and the replaced one is kept for rollback (`plugin.canary.promote`). Needs
/// `plugin:update`.
pub async fn canary_promote(
    w: &Writer<'_>,
    name: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let e = if_match(req, Kind::Plugin, name)?;
    w.commit(e, false, move |g, d| {
        policy::plugin(g, "update")?;
        rules::promote_canary(d, name)
    })
    .await
}

/// `DELETE /v1/tenants/{t}/plugins/{name}/canary`: drops the candidate; every call runs the
/// current version again (`plugin.canary.abort`). Needs `plugin:update`.
pub async fn canary_abort(
    w: &Writer<'_>,
    name: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let e = if_match(req, Kind::Plugin, name)?;
    w.commit(e, false, move |g, d| {
        policy::plugin(g, "update")?;
        rules::abort_canary(d, name)
    })
    .await
}
