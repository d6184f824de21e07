//! API errors and their mapping to HTTP responses, in one place.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Response, StatusCode};

/// An error answered to the client as `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra members of the error body, e.g. `fields` for validation errors.
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
    /// Methods for the `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            allow: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn malformed(e: &serde_json::Error) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("malformed JSON body: {e}"),
        )
    }
    pub fn unknown_tenant(tenant: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            format!("unknown tenant '{}'", clip(tenant)),
        )
    }
    /// The tenant's stored state does not compile: it is not served (fail closed).
    pub fn tenant_unavailable(tenant: &str, f: &crate::snapshot::TenantFailure) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant_unavailable",
            format!(
                "tenant '{}' is unavailable: its state at revision {} cannot be compiled ({}); \
                 an administrator must correct it",
                clip(tenant),
                f.revision,
                f.error
            ),
        )
    }
    /// No snapshot of `tenant`: failed (503 `tenant_unavailable`) or unknown (404).
    pub fn no_snapshot(registry: &crate::snapshot::Registry, tenant: &str) -> ApiError {
        match registry.failure(tenant) {
            Some(f) => ApiError::tenant_unavailable(tenant, &f),
            None => ApiError::unknown_tenant(tenant),
        }
    }
    pub fn too_large(what: &str, limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{what} exceeds the limit of {limit}"),
        )
    }
    pub fn batch_too_large(what: &str, n: usize, limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{n} {what} in one request; the limit is {limit}"),
        )
    }
    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for '{}'", clip(path)),
        )
    }
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut body = self.details.unwrap_or_default();
        body.insert("error".into(), serde_json::Value::String(self.message));
        body.insert(
            "code".into(),
            serde_json::Value::String(self.code.to_string()),
        );
        let body = serde_json::Value::Object(body).to_string();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if let Some(allow) = self.allow {
            resp.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"portcullis\""),
            );
        }
        resp
    }
}

/// Shortens user input echoed in messages.
pub fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
