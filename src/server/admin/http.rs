//! HTTP helpers of the management API: the bearer check, path and query decoding, typed list
//! queries, `If-Match`, JSON bodies, and the responses (revision header, `ETag`).

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::control::views::{
    AssignmentQuery, AuditQuery, ExpiredFilter, NodeQuery, Order, PageQuery, StatusFilter,
    UserQuery, UserSort, DEFAULT_PAGE, MAX_PAGE,
};
use crate::control::{Expect, Written};
use crate::server::error::{clip, ApiError};
use crate::server::{Resp, State};
use crate::store::Kind;

/// A JSON response with the tenant's revision (`X-Portcullis-Revision`) and an entity `ETag`.
pub fn respond(status: StatusCode, body: Value, revision: Option<u64>, etag: Option<u64>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(rev) = revision {
        h.insert("x-portcullis-revision", HeaderValue::from(rev));
    }
    if let Some(tag) = etag {
        if let Ok(v) = HeaderValue::from_str(&format!("\"{tag}\"")) {
            h.insert(header::ETAG, v);
        }
    }
    r
}

/// The answer to a committed write: `{"revision","data"}`, 201 when it created the entity.
pub fn written(w: Written, created: bool) -> Resp {
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

/// Checks `Authorization: Bearer <admin token>` in constant time (both sides hashed first, so
/// neither the content nor the length of the token leaks through timing).
pub fn authorize(state: &State, req: &Request<Incoming>) -> Result<(), ApiError> {
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
    if !same_secret(got, expected) {
        return Err(ApiError::unauthenticated("invalid bearer token"));
    }
    Ok(())
}

/// Compares two secrets in constant time (both sides hashed first, so neither the content nor
/// the length leaks through timing).
pub fn same_secret(got: &str, expected: &str) -> bool {
    bool::from(Sha256::digest(got.as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes())))
}

/// The percent-decoded segments of a management path after `/v1/`. `+` is a plain character in
/// a path; a segment that decodes to invalid UTF-8 or contains `/` or NUL is refused (400).
pub fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    path.trim_start_matches("/v1/")
        .split('/')
        .map(|s| {
            let d = percent_decode_str(s).decode_utf8().map_err(|_| {
                ApiError::bad_request(format!(
                    "path segment '{}' is not UTF-8 once decoded",
                    clip(s)
                ))
            })?;
            if d.contains(['/', '\0']) {
                return Err(ApiError::bad_request(format!(
                    "path segment '{}' encodes '/' or NUL",
                    clip(s)
                )));
            }
            Ok(d.into_owned())
        })
        .collect()
}

/// A request's query parameters, decoded (`+` is a space); the last of repeated keys wins.
pub struct Query(BTreeMap<String, String>);

/// Percent-decodes a query component (`+` is a space).
fn decode_component(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

impl Query {
    pub fn of(req: &Request<Incoming>) -> Query {
        Query::parse(req.uri().query().unwrap_or(""))
    }

    pub fn parse(q: &str) -> Query {
        let mut out = BTreeMap::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.insert(decode_component(k), decode_component(v));
        }
        Query(out)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn owned(&self, k: &str) -> Option<String> {
        self.0.get(k).cloned()
    }

    fn flag(&self, k: &str) -> Result<bool, ApiError> {
        match self.get(k) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(o) => Err(ApiError::bad_request(format!(
                "{k} must be true or false, got '{o}'"
            ))),
        }
    }

    /// A count parameter in 1..=MAX_PAGE, `DEFAULT_PAGE` when absent.
    fn count(&self, k: &str) -> Result<usize, ApiError> {
        match self.get(k) {
            None => Ok(DEFAULT_PAGE),
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| ApiError::bad_request(format!("{k} must be 1..={MAX_PAGE}"))),
        }
    }

    /// `page_size` (1..=MAX_PAGE) and `page_token`.
    pub fn page(&self) -> Result<PageQuery, ApiError> {
        let size = self.count("page_size")?;
        let offset = match self.get("page_token") {
            None | Some("") => 0,
            Some(s) => s
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request("invalid page_token"))?,
        };
        Ok(PageQuery { offset, size })
    }

    pub fn users(&self) -> Result<UserQuery, ApiError> {
        let page = self.page()?;
        let status = match self.get("status").unwrap_or("all") {
            "all" => StatusFilter::All,
            "active" => StatusFilter::Active,
            "inactive" => StatusFilter::Inactive,
            o => {
                return Err(ApiError::bad_request(format!(
                    "status must be all, active or inactive, got '{o}'"
                )))
            }
        };
        let include_deleted = self.flag("include_deleted")?;
        let sort = match self.get("sort").unwrap_or("name") {
            "name" => UserSort::Name,
            "email" => UserSort::Email,
            "created" => UserSort::Created,
            "last_login" => UserSort::LastLogin,
            o => {
                return Err(ApiError::bad_request(format!(
                    "sort must be name, email, created or last_login, got '{o}'"
                )))
            }
        };
        let order = match self.get("order").unwrap_or("asc") {
            "asc" => Order::Asc,
            "desc" => Order::Desc,
            o => {
                return Err(ApiError::bad_request(format!(
                    "order must be asc or desc, got '{o}'"
                )))
            }
        };
        Ok(UserQuery {
            q: self.owned("q"),
            status,
            include_deleted,
            sort,
            order,
            page,
        })
    }

    pub fn nodes(&self) -> Result<NodeQuery, ApiError> {
        Ok(NodeQuery {
            kind: self.owned("kind"),
            parent: self.owned("parent"),
            page: self.page()?,
        })
    }

    pub fn assignments(&self) -> Result<AssignmentQuery, ApiError> {
        let page = self.page()?;
        let include_groups = self.flag("include_groups")?;
        let expired = match self.get("expired").unwrap_or("include") {
            "include" => ExpiredFilter::Include,
            "exclude" => ExpiredFilter::Exclude,
            "only" => ExpiredFilter::Only,
            _ => {
                return Err(ApiError::bad_request(
                    "expired must be include, exclude or only",
                ))
            }
        };
        Ok(AssignmentQuery {
            role: self.owned("role"),
            scope: self.owned("scope"),
            scope_kind: self.owned("scope_kind"),
            group: self.owned("group"),
            user: self.owned("user"),
            include_groups,
            expired,
            page,
        })
    }

    pub fn audit(&self) -> Result<AuditQuery, ApiError> {
        let limit = self.count("limit")?;
        // Unix milliseconds, or an RFC 3339 timestamp.
        let time = |k: &str| -> Result<Option<i64>, ApiError> {
            self.get(k)
                .map(|s| match s.parse::<i64>() {
                    Ok(n) => Ok(n),
                    Err(_) => crate::model::parse_timestamp(s)
                        .map(|t| t * 1000)
                        .map_err(ApiError::bad_request),
                })
                .transpose()
        };
        let after_revision = self
            .get("after_revision")
            .map(str::parse::<u64>)
            .transpose()
            .map_err(|_| ApiError::bad_request("after_revision must be a number"))?;
        Ok(AuditQuery {
            tenant: None,
            after_revision,
            actor: self.owned("actor"),
            action_prefix: self.owned("action"),
            target: self.owned("target"),
            since_ms: time("since")?,
            until_ms: time("until")?,
            limit,
        })
    }
}

/// The `If-Match` precondition on `kind`/`id`, if the request sends one.
pub fn if_match(req: &Request<Incoming>, kind: Kind, id: &str) -> Result<Option<Expect>, ApiError> {
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

/// The JSON body of a management request (an empty body counts as `{}`).
pub async fn body<T: DeserializeOwned>(
    state: &State,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let bytes = crate::server::read_body(state, req).await?;
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
    crate::server::body::require_object(bytes)?;
    serde_json::from_slice(bytes).map_err(|e| ApiError::malformed(&e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_plus_in_a_path_stays_a_plus() {
        assert_eq!(
            segments("/v1/tenants/a+b/users/x%2By").unwrap(),
            ["tenants", "a+b", "users", "x+y"]
        );
        assert_eq!(segments("/v1/tenants/a%20b").unwrap(), ["tenants", "a b"]);
    }

    #[test]
    fn encoded_slash_nul_and_bad_utf8_are_refused() {
        for p in [
            "/v1/tenants/a%2Fb",
            "/v1/tenants/a%2fb",
            "/v1/tenants/a%00",
            "/v1/tenants/%ff",
        ] {
            let e = segments(p).unwrap_err();
            assert_eq!(
                (e.status, e.code.as_str()),
                (StatusCode::BAD_REQUEST, "bad_request"),
                "{p}"
            );
        }
    }

    #[test]
    fn a_plus_in_a_query_is_a_space() {
        let q = Query::parse("q=ann+lee&x=a%2Bb&flag&page_size=2&page_size=3");
        assert_eq!(q.get("q"), Some("ann lee"));
        assert_eq!(q.get("x"), Some("a+b"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.page().unwrap().size, 3);
    }

    #[test]
    fn bad_query_values_are_400() {
        for q in [
            "status=gone",
            "sort=shoe",
            "order=up",
            "include_deleted=maybe",
            "page_size=0",
            "page_size=1001",
            "page_token=x",
        ] {
            let e = Query::parse(q).users().unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{q}");
        }
        assert!(Query::parse("expired=never").assignments().is_err());
        assert!(Query::parse("include_groups=2").assignments().is_err());
        assert!(Query::parse("limit=0").audit().is_err());
        assert!(Query::parse("after_revision=x").audit().is_err());
        assert!(Query::parse("since=yesterday").audit().is_err());
        let a = Query::parse("since=2026-01-01T00:00:00Z&until=5")
            .audit()
            .unwrap();
        assert_eq!((a.since_ms, a.until_ms), (Some(1_767_225_600_000), Some(5)));
    }
}
