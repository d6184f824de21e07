//! Routing: which listener serves which routes, the health, readiness and metrics endpoints,
//! and the data-plane dispatch. Every answer is counted in the metrics here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::body::{check_body_headers, json, read_body_limited, Resp};
use super::config::ExplainMode;
use super::error::{ApiError, ErrorCode};
use super::exposure::Caller;
use super::metrics::Endpoint;
use super::{admin, api, forward, snapshot_at, State};
use crate::store::StoreHealth;

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Data plane and management API (no separate admin listener).
    All,
    /// Data plane only (the management API has its own listener).
    DataPlane,
    /// Management API only (plus health).
    Admin,
}

/// Answers one request: routes it, turns an error into its `{"error","code"}` answer, and
/// records the error code and the latency.
pub(super) async fn handle(state: Arc<State>, surface: Surface, req: Request<Incoming>) -> Resp {
    let start = Instant::now();
    let (endpoint, result) = route(&state, surface, req).await;
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            state.metrics.error(e.code);
            e.into_response()
        }
    };
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE && endpoint == Endpoint::Other {
        state.metrics.error(ErrorCode::NotReady);
    }
    state
        .metrics
        .latency(endpoint, start.elapsed().as_secs_f64());
    resp
}

async fn route(
    state: &State,
    surface: Surface,
    req: Request<Incoming>,
) -> (Endpoint, Result<Resp, ApiError>) {
    let path = req.uri().path();
    let admin_path = path.starts_with("/v1/tenants")
        || path == "/v1/users"
        || path == "/v1/audit"
        || path == "/v1/fleet/sidecars"
        || path == "/v1/openapi.json";
    if path == "/.well-known/jwks.json" {
        // Public keys of session tokens: on every listener, for every gateway and sidecar.
        return (
            Endpoint::Other,
            match *req.method() {
                Method::GET | Method::HEAD => Ok(admin::identity::jwks(state)),
                _ => Err(ApiError::method_not_allowed("GET")),
            },
        );
    }
    // `metrics.admin_listener_only`: `/metrics` moves to the admin listener.
    let admin_metrics = path == "/metrics" && state.config.metrics.admin_listener_only;
    if surface == Surface::Admin && !admin_path && path != "/healthz" && !admin_metrics {
        return (Endpoint::Other, Err(ApiError::not_found(path)));
    }
    if surface == Surface::DataPlane && (admin_path || admin_metrics) {
        return (Endpoint::Other, Err(ApiError::not_found(path)));
    }
    // `data_plane.allowed_hosts` (DNS rebinding): every route of a listener serving the data
    // plane but the health probes.
    if surface != Surface::Admin && path != "/healthz" && path != "/readyz" {
        if let Err(e) = state.exposure.check_host(req.uri(), req.headers()) {
            if forward::is_forward_auth(path) {
                return (Endpoint::ForwardAuth, Err(e.for_gateway()));
            }
            return (Endpoint::Other, Err(e));
        }
    }
    if let Some(rest) = path.strip_prefix(forward::PREFIX) {
        if forward::is_forward_auth(path) {
            // Any method; the body (if any) is ignored.
            let r = forward::handle(state, req.method(), rest, req.uri().query(), req.headers());
            return (Endpoint::ForwardAuth, r);
        }
    }
    let endpoint = match path {
        "/v1/check" => Endpoint::Check,
        "/v1/check/batch" => Endpoint::Batch,
        "/v1/filter" => Endpoint::Filter,
        "/v1/scopes" => Endpoint::Scopes,
        "/v1/explain" => Endpoint::Explain,
        _ => Endpoint::Other,
    };
    let method = req.method().clone();
    let result = match (path, &method) {
        ("/healthz", &Method::GET | &Method::HEAD) => Ok(json(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ok\"}"),
        )),
        ("/readyz", &Method::GET | &Method::HEAD) => Ok(readyz(state)),
        ("/metrics", &Method::GET | &Method::HEAD) => {
            if let Err(e) = state.exposure.metrics_allowed(req.headers()) {
                return (Endpoint::Other, Err(e));
            }
            let fleet = state.fleet.as_ref().map(|f| f());
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.render(
                &state.registry,
                &state.conns,
                fleet.as_ref(),
                state.clock.now(),
            ))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(r)
        }
        (_, &Method::POST) if endpoint != Endpoint::Other => {
            let caller = check_body_headers(state, req.headers())
                .and_then(|()| state.exposure.caller(req.headers()));
            match caller {
                Ok(caller) => data_plane(state, endpoint, caller, req.into_body()).await,
                Err(e) => Err(e),
            }
        }
        (_, _) if admin_path => {
            return (Endpoint::Admin, admin::handle(state, req).await);
        }
        ("/healthz" | "/readyz" | "/metrics", _) => Err(ApiError::method_not_allowed("GET, HEAD")),
        (_, _) if endpoint != Endpoint::Other => Err(ApiError::method_not_allowed("POST")),
        _ => Err(ApiError::not_found(path)),
    };
    (endpoint, result)
}

fn readyz(state: &State) -> Resp {
    let n = state.registry.len();
    if !state.ready.load(Ordering::Acquire) {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"{\"status\":\"loading\",\"code\":\"not_ready\"}"),
        );
    }
    let loading = state.registry.loading();
    if loading > 0 {
        // Tenants whose plugins still compile in the background are not served yet.
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from(format!(
                "{{\"status\":\"loading\",\"code\":\"not_ready\",\"tenants\":{n},\"loading\":{loading}}}"
            )),
        );
    }
    // Fail visibly: a tenant that cannot be compiled is not served.
    let failed = state.registry.failures_now();
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(t, _)| t.as_str()).collect();
        let body = serde_json::json!({
            "status": "degraded",
            "code": ErrorCode::NotReady.as_str(),
            "error": format!("tenant(s) {} cannot be compiled and are not served", names.join(", ")),
            "tenants": n,
            "failed": failed.iter().map(|(t, f)| serde_json::json!({
                "tenant": t, "revision": f.revision, "error": f.error,
            })).collect::<Vec<_>>(),
        });
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from(body.to_string()),
        );
    }
    // A sidecar that fails closed on staleness is not ready either.
    if let Some(Err(e)) = state.staleness.as_ref().map(|s| s.check()) {
        let body = serde_json::json!({
            "status": "stale",
            "code": e.code.as_str(),
            "error": e.message,
            "tenants": n,
        });
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from(body.to_string()),
        );
    }
    // A sidecar started with --tenants: each of them must be there.
    if let Some(named) = state.following.as_ref().and_then(|s| s.named()) {
        let absent: Vec<&str> = named
            .iter()
            .filter(|t| state.registry.get(t).is_none() && state.registry.failure(t).is_none())
            .map(String::as_str)
            .collect();
        if !absent.is_empty() {
            let body = serde_json::json!({
                "status": "degraded",
                "code": ErrorCode::NotReady.as_str(),
                "error": format!("tenant(s) {} not found in the fleet", absent.join(", ")),
                "tenants": n,
            });
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from(body.to_string()),
            );
        }
    }
    // A store that fails its writes (disk full, I/O errors) cannot acknowledge changes: not
    // ready until it recovers (the embedded engine reopens itself and probes every second).
    if let Some(cp) = &state.control {
        if let StoreHealth::Degraded { error, failures } = cp.store_health() {
            let body = serde_json::json!({
                "status": "degraded",
                "code": ErrorCode::StoreUnavailable.as_str(),
                "store": { "error": error, "failures": failures },
                "tenants": n,
            });
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from(body.to_string()),
            );
        }
    }
    json(
        StatusCode::OK,
        Bytes::from(format!("{{\"status\":\"ready\",\"tenants\":{n}}}")),
    )
}

/// A data-plane POST whose headers passed [`check_body_headers`].
/// `caller`: the API key's caller when `data_plane.api_keys` is set (it may ask only about its
/// tenants).
async fn data_plane(
    state: &State,
    endpoint: Endpoint,
    caller: Option<Caller<'_>>,
    body: Incoming,
) -> Result<Resp, ApiError> {
    if endpoint == Endpoint::Explain && state.config.data_plane.explain == ExplainMode::Off {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "/v1/explain is disabled here (data_plane.explain: off)",
        ));
    }
    let body = read_body_limited(state, body).await?;
    decide_body(state, endpoint, caller, &body)
        .await
        .map(|out| json(StatusCode::OK, out))
}

/// The data-plane endpoints by the names of their NATS subjects (`fleet`'s request-reply).
pub fn endpoint_named(name: &str) -> Option<Endpoint> {
    Some(match name {
        "check" => Endpoint::Check,
        "batch" => Endpoint::Batch,
        "filter" => Endpoint::Filter,
        "scopes" => Endpoint::Scopes,
        "explain" => Endpoint::Explain,
        _ => return None,
    })
}

/// Answers a data-plane request that arrived as a message (NATS request-reply) with the same
/// JSON as over HTTP: the status it would have had and the body. Counted in the metrics like an
/// HTTP request. `authorization` is the message's `Authorization` header: with
/// `data_plane.api_keys` set, it must carry a key, as over HTTP.
pub async fn answer(
    state: &State,
    endpoint: Endpoint,
    authorization: Option<&str>,
    body: &[u8],
) -> (u16, Bytes) {
    let start = Instant::now();
    let mut headers = hyper::HeaderMap::new();
    if let Some(v) = authorization.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert(header::AUTHORIZATION, v);
    }
    let caller = state.exposure.caller(&headers);
    let r = if let Err(e) = caller {
        Err(e)
    } else if body.len() > state.config.limits.max_body_bytes {
        Err(ApiError::too_large(
            "request body",
            state.config.limits.max_body_bytes,
        ))
    } else if endpoint == Endpoint::Explain && state.config.data_plane.explain == ExplainMode::Off {
        Err(ApiError::new(
            ErrorCode::NotFound,
            "explain is disabled here (data_plane.explain: off)",
        ))
    } else {
        let caller = caller.ok().flatten();
        decide_body(state, endpoint, caller, body).await
    };
    let out = match r {
        Ok(b) => (200, b),
        Err(e) => {
            state.metrics.error(e.code);
            (e.status.as_u16(), e.body())
        }
    };
    state
        .metrics
        .latency(endpoint, start.elapsed().as_secs_f64());
    out
}

/// Decides a data-plane request body: parse (borrowing from `body`), pin the snapshot, decide.
async fn decide_body(
    state: &State,
    endpoint: Endpoint,
    caller: Option<Caller<'_>>,
    body: &[u8],
) -> Result<Bytes, ApiError> {
    let explain = state.config.data_plane.explain;
    let may_ask = |tenant: &str| caller.map_or(Ok(()), |c| c.may_ask(tenant));
    // Each arm: parse (borrowing from `body`), pin the snapshot, decide synchronously.
    let out = match endpoint {
        Endpoint::Check | Endpoint::Explain => {
            let r = api::parse_check(body)?;
            may_ask(&r.tenant)?;
            if endpoint == Endpoint::Explain
                && explain == ExplainMode::Token
                && caller.is_none()
                && r.token.is_none()
            {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "/v1/explain needs a 'token' (or an API key) here (data_plane.explain: token)",
                ));
            }
            let snap = snapshot_at(state, &r.tenant, r.min_revision).await?;
            if endpoint == Endpoint::Check {
                api::check(state, &snap, &r)?
            } else {
                api::explain(state, &snap, &r)?
            }
        }
        Endpoint::Batch => {
            let r: api::BatchReq = api::parse(body)?;
            may_ask(&r.tenant)?;
            let snap = snapshot_at(state, &r.tenant, r.min_revision).await?;
            api::batch(state, &snap, &r)?
        }
        Endpoint::Filter => {
            let r: api::FilterReq = api::parse(body)?;
            may_ask(&r.tenant)?;
            let snap = snapshot_at(state, &r.tenant, r.min_revision).await?;
            api::filter(state, &snap, &r)?
        }
        Endpoint::Scopes => {
            let r: api::ScopesReq = api::parse(body)?;
            may_ask(&r.tenant)?;
            let snap = snapshot_at(state, &r.tenant, r.min_revision).await?;
            api::scopes(state, &snap, &r)?
        }
        Endpoint::ForwardAuth | Endpoint::Admin | Endpoint::Other => {
            return Err(ApiError::not_found(""))
        }
    };
    Ok(out)
}
