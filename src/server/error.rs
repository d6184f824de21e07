//! Errors answered to clients: every error code the service answers ([`ErrorCode`]), its HTTP
//! status, the `{"error","code"}` body, and the mapping of control-plane errors. The one place
//! where an error becomes a status.

use std::fmt;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Response, StatusCode};

use crate::control::doc::json as to_json;
use crate::control::{ControlError, RuleError};

/// A stable, machine-readable error code (the `code` member of an error body and the `code`
/// label of `portcullis_errors_total`; documented as `ErrorCode` in `deploy/openapi.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    MalformedJson,
    UnsupportedMediaType,
    PayloadTooLarge,
    BatchTooLarge,
    UnknownTenant,
    NotFound,
    MethodNotAllowed,
    RevisionUnavailable,
    RequestTimeout,
    Unauthenticated,
    Forbidden,
    NoRoute,
    BadTarget,
    Internal,
    NotReady,
    Invalid,
    AlreadyExists,
    DuplicateEmail,
    RevisionConflict,
    InUse,
    ReadOnly,
    QuotaExceeded,
    InvalidState,
    AlreadyMember,
    StoreUnavailable,
    PluginsUnavailable,
    TooManyConnections,
    TenantUnavailable,
    PluginBusy,
    HostNotAllowed,
    HeadersTooLarge,
    InvalidCredentials,
    TooManyAttempts,
    SignInNotAllowed,
    InvalidInvitation,
    CardInUse,
    TierUnavailable,
    SignInUnavailable,
    TenantNotHere,
    Stale,
    PrivilegeEscalation,
    SelfAction,
    OwnerProtected,
    AdminProtected,
    OneRolePerPlace,
    GroupNotEmpty,
    GroupRequired,
    NatsNotConfigured,
    NatsUnavailable,
}

impl ErrorCode {
    /// Every code, in metrics order.
    pub const ALL: [ErrorCode; 50] = [
        ErrorCode::BadRequest,
        ErrorCode::MalformedJson,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::PayloadTooLarge,
        ErrorCode::BatchTooLarge,
        ErrorCode::UnknownTenant,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RevisionUnavailable,
        ErrorCode::RequestTimeout,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::NoRoute,
        ErrorCode::BadTarget,
        ErrorCode::Internal,
        ErrorCode::NotReady,
        ErrorCode::Invalid,
        ErrorCode::AlreadyExists,
        ErrorCode::DuplicateEmail,
        ErrorCode::RevisionConflict,
        ErrorCode::InUse,
        ErrorCode::ReadOnly,
        ErrorCode::QuotaExceeded,
        ErrorCode::InvalidState,
        ErrorCode::AlreadyMember,
        ErrorCode::StoreUnavailable,
        ErrorCode::PluginsUnavailable,
        ErrorCode::TooManyConnections,
        ErrorCode::TenantUnavailable,
        ErrorCode::PluginBusy,
        ErrorCode::HostNotAllowed,
        ErrorCode::HeadersTooLarge,
        ErrorCode::InvalidCredentials,
        ErrorCode::TooManyAttempts,
        ErrorCode::SignInNotAllowed,
        ErrorCode::InvalidInvitation,
        ErrorCode::CardInUse,
        ErrorCode::TierUnavailable,
        ErrorCode::SignInUnavailable,
        ErrorCode::TenantNotHere,
        ErrorCode::Stale,
        ErrorCode::PrivilegeEscalation,
        ErrorCode::SelfAction,
        ErrorCode::OwnerProtected,
        ErrorCode::AdminProtected,
        ErrorCode::OneRolePerPlace,
        ErrorCode::GroupNotEmpty,
        ErrorCode::GroupRequired,
        ErrorCode::NatsNotConfigured,
        ErrorCode::NatsUnavailable,
    ];

    /// The code as answered.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::UnknownTenant => "unknown_tenant",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RevisionUnavailable => "revision_unavailable",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NoRoute => "no_route",
            ErrorCode::BadTarget => "bad_target",
            ErrorCode::Internal => "internal",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Invalid => "invalid",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::DuplicateEmail => "duplicate_email",
            ErrorCode::RevisionConflict => "revision_conflict",
            ErrorCode::InUse => "in_use",
            ErrorCode::ReadOnly => "read_only",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::AlreadyMember => "already_member",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::PluginsUnavailable => "plugins_unavailable",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::TenantUnavailable => "tenant_unavailable",
            ErrorCode::PluginBusy => "plugin_busy",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::SignInNotAllowed => "sign_in_not_allowed",
            ErrorCode::InvalidInvitation => "invalid_invitation",
            ErrorCode::CardInUse => "card_in_use",
            ErrorCode::TierUnavailable => "tier_unavailable",
            ErrorCode::SignInUnavailable => "sign_in_unavailable",
            ErrorCode::TenantNotHere => "tenant_not_here",
            ErrorCode::Stale => "stale",
            ErrorCode::PrivilegeEscalation => "privilege_escalation",
            ErrorCode::SelfAction => "self_action",
            ErrorCode::OwnerProtected => "owner_protected",
            ErrorCode::AdminProtected => "admin_protected",
            ErrorCode::OneRolePerPlace => "one_role_per_place",
            ErrorCode::GroupNotEmpty => "group_not_empty",
            ErrorCode::GroupRequired => "group_required",
            ErrorCode::NatsNotConfigured => "nats_not_configured",
            ErrorCode::NatsUnavailable => "nats_unavailable",
        }
    }

    /// The HTTP status this code is answered with.
    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson => StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnknownTenant => StatusCode::NOT_FOUND,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RevisionUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NoRoute => StatusCode::FORBIDDEN,
            ErrorCode::BadTarget => StatusCode::FORBIDDEN,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::AlreadyExists => StatusCode::CONFLICT,
            ErrorCode::DuplicateEmail => StatusCode::CONFLICT,
            ErrorCode::RevisionConflict => StatusCode::CONFLICT,
            ErrorCode::InUse => StatusCode::CONFLICT,
            ErrorCode::ReadOnly => StatusCode::CONFLICT,
            ErrorCode::QuotaExceeded => StatusCode::CONFLICT,
            ErrorCode::InvalidState => StatusCode::CONFLICT,
            ErrorCode::AlreadyMember => StatusCode::CONFLICT,
            ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::PluginsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TenantUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::PluginBusy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HostNotAllowed => StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ErrorCode::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::SignInNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::InvalidInvitation => StatusCode::GONE,
            ErrorCode::CardInUse => StatusCode::CONFLICT,
            ErrorCode::TierUnavailable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::SignInUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TenantNotHere => StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::Stale => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::PrivilegeEscalation
            | ErrorCode::SelfAction
            | ErrorCode::OwnerProtected
            | ErrorCode::AdminProtected => StatusCode::FORBIDDEN,
            ErrorCode::OneRolePerPlace => StatusCode::CONFLICT,
            ErrorCode::GroupNotEmpty => StatusCode::CONFLICT,
            ErrorCode::GroupRequired => StatusCode::CONFLICT,
            ErrorCode::NatsNotConfigured => StatusCode::NOT_FOUND,
            ErrorCode::NatsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code spelled `s`, if any.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// An error answered to the client as `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Extra members of the error body, e.g. `fields` for validation errors.
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
    /// Methods for the `Allow` header of a 405.
    pub allow: Option<&'static str>,
    /// Seconds for the `Retry-After` header (429).
    pub retry_after: Option<i64>,
}

impl ApiError {
    /// An error with the code's own status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
            details: None,
            allow: None,
            retry_after: None,
        }
    }
    /// A 405 naming the methods the path allows (sent as the `Allow` header).
    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(ErrorCode::MethodNotAllowed, format!("use {allow}"))
        }
    }
    /// A 422 `invalid` naming the offending fields (`fields` member of the body).
    pub fn invalid(message: impl Into<String>, fields: serde_json::Value) -> ApiError {
        let mut d = serde_json::Map::new();
        d.insert("fields".into(), fields);
        ApiError {
            details: Some(d),
            ..ApiError::new(ErrorCode::Invalid, message)
        }
    }
    /// Forward-auth answers gateways with 2xx, 401 or 403 only: a refusal that would be a 404
    /// (unknown tenant) or a 421 (host not allowed) elsewhere is a 403 there, with the same code.
    pub fn for_gateway(self) -> ApiError {
        if matches!(
            self.status,
            StatusCode::NOT_FOUND | StatusCode::MISDIRECTED_REQUEST
        ) {
            ApiError {
                status: StatusCode::FORBIDDEN,
                ..self
            }
        } else {
            self
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }
    pub fn malformed(e: &serde_json::Error) -> ApiError {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("malformed JSON body: {e}"),
        )
    }
    pub fn unknown_tenant(tenant: &str) -> ApiError {
        ApiError::new(
            ErrorCode::UnknownTenant,
            format!("unknown tenant '{}'", clip(tenant)),
        )
    }
    /// The tenant's stored state does not compile: it is not served (fail closed).
    pub fn tenant_unavailable(tenant: &str, f: &crate::snapshot::TenantFailure) -> ApiError {
        ApiError::new(
            ErrorCode::TenantUnavailable,
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
            ErrorCode::PayloadTooLarge,
            format!("{what} exceeds the limit of {limit}"),
        )
    }
    pub fn batch_too_large(what: &str, n: usize, limit: usize) -> ApiError {
        ApiError::new(
            ErrorCode::BatchTooLarge,
            format!("{n} {what} in one request; the limit is {limit}"),
        )
    }
    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no route for '{}'", clip(path)),
        )
    }
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthenticated, message)
    }

    /// The `{"error","code"}` body (with any details).
    pub fn body(&self) -> Bytes {
        let mut body = self.details.clone().unwrap_or_default();
        body.insert(
            "error".into(),
            serde_json::Value::String(self.message.clone()),
        );
        body.insert(
            "code".into(),
            serde_json::Value::String(self.code.to_string()),
        );
        Bytes::from(serde_json::Value::Object(body).to_string())
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.body()));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if let Some(allow) = self.allow {
            resp.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
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

/// Control-plane errors as answers: rule refusals keep their code (404, 422 with `fields`, 409),
/// store failures are 503, unreadable stored data is 500 (logged, never echoed).
impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Rule(RuleError::NotFound { what, id }) => {
                ApiError::new(ErrorCode::NotFound, format!("{what} '{id}' not found"))
            }
            ControlError::Rule(RuleError::Invalid(fields)) => {
                let msg = RuleError::Invalid(fields.clone()).to_string();
                ApiError::invalid(msg, to_json(&fields))
            }
            ControlError::Rule(RuleError::Conflict { code, message }) => {
                // Rules refuse with client errors only (most are 409; sign-in refusals 401/403,
                // a used invitation 410).
                let code = ErrorCode::parse(code)
                    .filter(|c| c.status().is_client_error())
                    .unwrap_or_else(|| {
                        tracing::error!(code, "a rule refused with a code the API does not know");
                        ErrorCode::InvalidState
                    });
                ApiError::new(code, message)
            }
            ControlError::UnknownTenant(t) => ApiError::unknown_tenant(&t),
            e @ ControlError::Precondition { .. } => {
                ApiError::new(ErrorCode::RevisionConflict, e.to_string())
            }
            ControlError::Store(e) => {
                // The store logs its failures itself, at most once a second per cause.
                tracing::debug!(error = %e, "store error");
                ApiError::new(ErrorCode::StoreUnavailable, e.to_string())
            }
            ControlError::Corrupt(t, m) => {
                tracing::error!(tenant = %t, error = %m, "corrupt stored data");
                ApiError::new(
                    ErrorCode::Internal,
                    format!("stored data of tenant '{t}' is unreadable"),
                )
            }
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Every code in the enum is in `deploy/openapi.json` (enum and description, with its
    /// status), and every documented code is in the enum.
    #[test]
    fn every_code_is_documented_with_its_status_and_vice_versa() {
        let doc: serde_json::Value = serde_json::from_str(crate::server::admin::OPENAPI).unwrap();
        let schema = &doc["components"]["schemas"]["ErrorCode"];
        let documented: Vec<&str> = schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for d in &documented {
            assert!(
                ErrorCode::parse(d).is_some(),
                "documented, not in ErrorCode: {d}"
            );
        }
        let description = schema["description"].as_str().unwrap();
        for c in ErrorCode::ALL {
            assert!(documented.contains(&c.as_str()), "not documented: {c}");
            let line = format!("- `{c}`: {}:", c.status().as_u16());
            assert!(description.contains(&line), "description lacks '{line}'");
        }
        assert_eq!(documented.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn codes_are_distinct_and_round_trip() {
        for (i, c) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i, "ALL is in declaration order");
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
            assert_eq!(crate::server::metrics::ERROR_CODES[i], c.as_str());
        }
    }

    #[test]
    fn a_405_carries_allow() {
        let r = ApiError::method_not_allowed("GET, HEAD").into_response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
    }
}
