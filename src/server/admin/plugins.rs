//! Plugin modules over the management API: upload (validated and compiled before the commit)
//! and download. Listing, reading and deleting go the way of the other collections.

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
    cp.read(t, |_| ()).await?;
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
    // Compile off the async workers. The compiled module lands in the runtime's cache, so the
    // follower's load of the committed version is a cache hit; live snapshots keep their own
    // versions whatever the cache holds.
    let wasm: Arc<[u8]> = Arc::from(&bytes[..]);
    let name_for_log = name.to_string();
    let check = {
        let (host, wasm, name, t) = (host.clone(), wasm.clone(), name.to_string(), t.to_string());
        tokio::task::spawn_blocking(move || host.load(&t, &name, &wasm).map(|p| p.compile_time()))
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
    let upload = rules::PluginUpload {
        name: name.to_string(),
        description: q.get("description").map(str::to_string),
        wasm,
    };
    let n = state.clock.now();
    let existed = cp.read(t, |d| d.plugins.contains_key(name)).await?;
    let actor = w.actor.to_string();
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
/// ones (newest first), without their bytes.
pub async fn versions(cp: &ControlPlane, t: &str, name: &str) -> Result<Resp, ApiError> {
    let (v, rev, etag) = cp
        .read(t, |d| {
            (
                rules::plugin_versions(d, name),
                d.revision,
                d.rev_of(Kind::Plugin, name),
            )
        })
        .await?;
    let v =
        v.ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("plugin '{name}' not found")))?;
    Ok(respond(
        hyper::StatusCode::OK,
        json!({ "data": v, "kept": rules::PLUGIN_VERSIONS_KEPT }),
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
    let wasm = cp
        .read(t, |d| {
            d.plugins.get(name).and_then(|p| {
                if p.sha256 == sha {
                    Some(p.wasm.clone())
                } else {
                    p.previous
                        .iter()
                        .find(|v| v.sha256 == sha)
                        .map(|v| v.wasm.clone())
                }
            })
        })
        .await?;
    if let Some(wasm) = wasm {
        let (host, name2, t2) = (host.clone(), name.to_string(), t.to_string());
        let loaded = tokio::task::spawn_blocking(move || host.load(&t2, &name2, &wasm).map(|_| ()))
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
