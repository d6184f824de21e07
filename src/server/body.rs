//! Request bodies (media type, declared length, size and time limits) and the JSON response
//! helper.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::error::{ApiError, ErrorCode};
use super::State;

/// Every response the server builds.
pub type Resp = Response<Full<Bytes>>;

/// A response with a JSON body.
pub fn json(status: StatusCode, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Reads a JSON body within the size and time limits.
pub async fn read_body(state: &State, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    check_body_headers(state, req.headers())?;
    read_body_limited(state, req.into_body()).await
}

/// The header half of [`read_body`]: media type and declared length.
pub(super) fn check_body_headers(
    state: &State,
    headers: &hyper::HeaderMap,
) -> Result<(), ApiError> {
    let limits = &state.config.limits;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let mut parts = ct.split(';');
        let json = parts
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        // JSON is UTF-8 (RFC 8259): a body declared in another charset is not read as UTF-8.
        let other_charset = parts.any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && !v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        });
        if !json || other_charset {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "request body must be application/json in UTF-8",
            ));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(ApiError::too_large("request body", limits.max_body_bytes));
    }
    Ok(())
}

/// Refuses a JSON body whose top-level value is not an object (serde would read a struct
/// from an array of its fields in order: `["femo","alice",…]`).
pub fn require_object(body: &[u8]) -> Result<(), ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::MalformedJson,
            "the request body must be a JSON object",
        )),
    }
}

/// The body half of [`read_body`]. Takes only the body, not the whole request: every async
/// level that holds a `Request` by value keeps its own copy in the handler future, which hyper
/// moves per request.
pub(super) async fn read_body_limited(state: &State, body: Incoming) -> Result<Bytes, ApiError> {
    read_body_max(state, body, state.config.limits.max_body_bytes).await
}

/// Reads a binary body (plugin uploads): `application/wasm`, `application/octet-stream` or no
/// content type, at most `max` bytes.
pub async fn read_binary_body(
    state: &State,
    req: Request<Incoming>,
    max: usize,
) -> Result<Bytes, ApiError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ok = ct
            .to_str()
            .ok()
            .and_then(|s| s.split(';').next())
            .map(str::trim)
            .is_some_and(|m| {
                m.eq_ignore_ascii_case("application/wasm")
                    || m.eq_ignore_ascii_case("application/octet-stream")
            });
        if !ok {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "a plugin upload body must be application/wasm (or application/octet-stream)",
            ));
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::too_large("plugin module", max));
    }
    read_body_max(state, req.into_body(), max).await
}

async fn read_body_max(state: &State, body: Incoming, max: usize) -> Result<Bytes, ApiError> {
    let limits = &state.config.limits;
    let mut collect = std::pin::pin!(Limited::new(body, max).collect());
    // A small body has almost always arrived with the headers: try once before arming the
    // timer (saves a clock read and a timer entry per request); the timeout applies as before
    // to a body that is still on its way.
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(collect.as_mut(), cx))
    })
    .await;
    let read = match first {
        std::task::Poll::Ready(r) => Ok(r),
        std::task::Poll::Pending => {
            tokio::time::timeout(Duration::from_millis(limits.body_timeout_ms), collect).await
        }
    };
    match read {
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            "request body not received in time",
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large("request body", max))
        }
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "cannot read request body: {e}"
        ))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}
