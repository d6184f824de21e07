//! Data-plane exposure (`data_plane`, `metrics` settings): the Host allow-list, data-plane API
//! keys bound to tenants, and the `/metrics` bearer token. All off by default.

use hyper::header::{self, HeaderMap};
use hyper::Uri;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::{read_token_file, Config, ConfigError};
use super::error::{ApiError, ErrorCode};

/// One data-plane API key: the SHA-256 of the key and the tenants it may ask about.
struct ApiKey {
    digest: [u8; 32],
    tenants: Vec<String>,
}

/// The caller a data-plane API key identified.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'e> {
    tenants: &'e [String],
}

impl Caller<'_> {
    /// Refuses (403 `forbidden`) a question about a tenant this key is not bound to.
    pub fn may_ask(&self, tenant: &str) -> Result<(), ApiError> {
        if self.tenants.iter().any(|t| t == tenant) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this API key may not ask about tenant '{}'",
                    super::error::clip(tenant)
                ),
            ))
        }
    }
}

/// The exposure settings, parsed at start.
#[derive(Default)]
pub struct Exposure {
    keys: Vec<ApiKey>,
    metrics_digest: Option<[u8; 32]>,
    /// Lower-case allowed hosts; empty: any.
    hosts: Vec<String>,
}

impl std::fmt::Debug for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposure")
            .field("api_keys", &self.keys.len())
            .field("metrics_token", &self.metrics_digest.is_some())
            .field("hosts", &self.hosts)
            .finish()
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let h = char::from(b[2 * i]).to_digit(16)?;
        let l = char::from(b[2 * i + 1]).to_digit(16)?;
        *o = u8::try_from(h * 16 + l).ok()?;
    }
    Some(out)
}

/// The bearer credential of `Authorization: Bearer <x>`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

impl Exposure {
    /// Parses the key digests, reads the metrics token file and normalizes the host list.
    pub fn new(config: &Config) -> Result<Exposure, ConfigError> {
        let dp = &config.data_plane;
        let mut keys = Vec::with_capacity(dp.api_keys.len());
        for (i, k) in dp.api_keys.iter().enumerate() {
            let digest = parse_hex32(k.sha256.trim()).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "data_plane.api_keys[{i}].sha256 must be 64 hex digits (the SHA-256 of the key)"
                ))
            })?;
            if k.tenants.is_empty() || k.tenants.iter().any(|t| t.is_empty()) {
                return Err(ConfigError::Invalid(format!(
                    "data_plane.api_keys[{i}].tenants must list at least one tenant"
                )));
            }
            if keys.iter().any(|o: &ApiKey| o.digest == digest) {
                return Err(ConfigError::Invalid(format!(
                    "data_plane.api_keys[{i}] repeats another key"
                )));
            }
            keys.push(ApiKey {
                digest,
                tenants: k.tenants.clone(),
            });
        }
        let metrics_digest = match &config.metrics.bearer_token_file {
            Some(p) => Some(digest(&read_token_file(p)?)),
            None => None,
        };
        let mut hosts = Vec::with_capacity(dp.allowed_hosts.len());
        for h in &dp.allowed_hosts {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.contains(['/', ' ', '@']) {
                return Err(ConfigError::Invalid(format!(
                    "data_plane.allowed_hosts: '{h}' is not a host name (`name` or `name:port`)"
                )));
            }
            hosts.push(h);
        }
        Ok(Exposure {
            keys,
            metrics_digest,
            hosts,
        })
    }

    /// Refuses (421 `host_not_allowed`) a request whose `:authority` (HTTP/2) or `Host` is not
    /// in `allowed_hosts`; any host when the list is empty.
    pub fn check_host(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.hosts.is_empty() {
            return Ok(());
        }
        let host = match uri.authority() {
            Some(a) => Some(a.as_str()),
            None => headers.get(header::HOST).and_then(|v| v.to_str().ok()),
        };
        let Some(host) = host else {
            return Err(ApiError::new(
                ErrorCode::HostNotAllowed,
                "the request names no host (Host header); this server only answers its allowed hosts",
            ));
        };
        let name = match host.rsplit_once(':') {
            // `[::1]:80` or `name:80`; a bare IPv6 literal keeps its colons inside brackets.
            Some((n, port)) if !n.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        };
        // The configured names are lower case; compare without allocating per request.
        if self
            .hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host) || h.eq_ignore_ascii_case(name))
        {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::HostNotAllowed,
            format!(
                "host '{}' is not served here (data_plane.allowed_hosts)",
                super::error::clip(host)
            ),
        ))
    }

    /// With API keys configured: the caller of `Authorization: Bearer <key>` (401
    /// `unauthenticated` without a known key); `None` when no key is configured.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Option<Caller<'_>>, ApiError> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let Some(got) = bearer(headers) else {
            return Err(ApiError::unauthenticated(
                "this data plane needs an API key: Authorization: Bearer <key>",
            ));
        };
        let got = digest(got);
        // Compare against every key, in constant time each, without stopping early.
        let mut found: Option<&ApiKey> = None;
        for k in &self.keys {
            if bool::from(k.digest.ct_eq(&got)) {
                found = Some(k);
            }
        }
        match found {
            Some(k) => Ok(Some(Caller {
                tenants: &k.tenants,
            })),
            None => Err(ApiError::unauthenticated("invalid API key")),
        }
    }

    /// With `metrics.bearer_token_file`: `Authorization: Bearer <token>` is required (401).
    pub fn metrics_allowed(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(want) = &self.metrics_digest else {
            return Ok(());
        };
        match bearer(headers) {
            Some(got) if bool::from(digest(got).ct_eq(want)) => Ok(()),
            Some(_) => Err(ApiError::unauthenticated("invalid metrics bearer token")),
            None => Err(ApiError::unauthenticated(
                "/metrics needs Authorization: Bearer <metrics token>",
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn exposure(yaml: &str) -> Exposure {
        Exposure::new(&Config::parse(yaml, "t").unwrap()).unwrap()
    }

    #[test]
    fn hosts_match_by_name_or_name_and_port() {
        let e = exposure("data_plane: { allowed_hosts: [Auth.Internal, 'localhost:8180'] }");
        let ok = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, h.parse().unwrap());
            e.check_host(&Uri::from_static("/v1/check"), &m).is_ok()
        };
        assert!(ok("auth.internal"));
        assert!(ok("AUTH.internal:9000"));
        assert!(ok("localhost:8180"));
        assert!(!ok("localhost:8181"));
        assert!(!ok("localhost"));
        assert!(!ok("evil.example"));
        assert!(!ok("auth.internal.evil.example"));
        assert!(e
            .check_host(&Uri::from_static("/v1/check"), &HeaderMap::new())
            .is_err());
        assert!(e
            .check_host(
                &Uri::from_static("http://auth.internal/v1/check"),
                &HeaderMap::new()
            )
            .is_ok());
    }

    #[test]
    fn bad_key_digests_are_refused_at_start() {
        for yaml in [
            "data_plane: { api_keys: [ { sha256: abc, tenants: [a] } ] }",
            &format!(
                "data_plane: {{ api_keys: [ {{ sha256: {}, tenants: [] }} ] }}",
                "0".repeat(64)
            ),
        ] {
            assert!(Exposure::new(&Config::parse(yaml, "t").unwrap()).is_err());
        }
    }
}
