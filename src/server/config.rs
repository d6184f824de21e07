//! Server configuration: defaults < config file (YAML or JSON) < `PORTCULLIS_*` environment <
//! command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8180";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data-plane (and, later, management) listen address.
    pub listen: SocketAddr,
    /// Data file to load; the bundled demo data when absent.
    pub data: Option<PathBuf>,
    /// Durable store: a directory (embedded engine) or `postgres://…`.
    pub store: Option<String>,
    /// Serve the management API on this separate address (and not on `listen`).
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token of the management API; a random one is generated and logged when absent.
    pub admin_token: Option<String>,
    pub limits: Limits,
    pub metrics: MetricsConfig,
    /// Log filter (`tracing` env-filter syntax), e.g. `info` or `portcullis=debug`.
    pub log: String,
    /// Log format: `text` or `json`.
    pub log_format: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (bytes); larger gets 413.
    pub max_body_bytes: usize,
    /// Most checks in one `/v1/check/batch`; more gets 413.
    pub max_batch: usize,
    /// Most resources in one `/v1/filter`; more gets 413.
    pub max_filter: usize,
    /// Time allowed to receive a request's headers (slowloris guard), milliseconds.
    pub header_timeout_ms: u64,
    /// Time allowed to receive a request's body, milliseconds.
    pub body_timeout_ms: u64,
    /// Longest wait for `min_revision` before answering 503, milliseconds.
    pub max_revision_wait_ms: u64,
    /// How long shutdown waits for in-flight requests, milliseconds.
    pub drain_ms: u64,
    /// Most concurrent connections; further connections wait in the accept queue.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Export per-tenant series (revision, snapshot age). Off by default: cardinality.
    pub per_tenant: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8180))),
            data: None,
            store: None,
            admin_listen: None,
            admin_token: None,
            limits: Limits::default(),
            metrics: MetricsConfig::default(),
            log: "info".to_string(),
            log_format: "text".to_string(),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_batch: 1_000,
            max_filter: 10_000,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            max_revision_wait_ms: 2_000,
            drain_ms: 10_000,
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file '{path}': {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("config file '{path}': {message}")]
    Parse { path: String, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a config file (YAML or JSON).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e
                .to_string()
                .lines()
                .next()
                .unwrap_or("invalid")
                .to_string(),
        })
    }

    /// Checks values that would make the server misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let positive = [
            ("limits.max_body_bytes", l.max_body_bytes as u64),
            ("limits.max_batch", l.max_batch as u64),
            ("limits.max_filter", l.max_filter as u64),
            ("limits.header_timeout_ms", l.header_timeout_ms),
            ("limits.body_timeout_ms", l.body_timeout_ms),
            ("limits.max_connections", l.max_connections as u64),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::Invalid(
                "admin_token must be at least 16 characters".into(),
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log_format '{}' must be 'text' or 'json'",
                self.log_format
            )));
        }
        Ok(())
    }
}
