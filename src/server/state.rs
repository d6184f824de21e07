//! The shared state every handler reads ([`State`]), its construction, and the wait for a
//! tenant snapshot at a minimum revision.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::config::{Config, ConfigError};
use super::error::{ApiError, ErrorCode};
use super::metrics::Metrics;
use super::{forward, tokens};
use crate::clock::Clock;
use crate::snapshot::{Registry, SnapshotGuard};

/// Everything a request handler needs. Shared by all connections.
pub struct State {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub clock: Clock,
    pub metrics: Metrics,
    pub tokens: tokens::Tokens,
    pub forward: forward::ForwardAuth,
    /// Host allow-list, data-plane API keys, metrics token (`server::exposure`).
    pub exposure: super::exposure::Exposure,
    pub ready: AtomicBool,
    /// The control plane, when this process runs one (`portcullis serve`).
    pub control: Option<Arc<crate::control::ControlPlane>>,
    /// Bearer token of the management API.
    pub admin_token: Option<String>,
    /// Sign-in (session keys, throttle), where this process issues sessions.
    pub sign_in: Option<std::sync::Arc<super::admin::identity::SignIn>>,
    /// Connection admission counters of every listener (`server::conn`).
    pub conns: Arc<super::conn::ConnStats>,
    /// A sidecar's tenants (`portcullis sidecar --tenants / --tenant-shard`); others are
    /// answered 421 `tenant_not_here`. `None`: every tenant.
    pub following: Option<crate::control::TenantSet>,
    /// The fleet's status for `/metrics` (`serve --nats`, `sidecar`).
    pub fleet: Option<super::metrics::FleetReporter>,
    /// A sidecar's `nats.max_staleness_seconds`: fail closed when NATS has been silent longer.
    pub staleness: Option<Staleness>,
    /// The sidecars' reports, where this control plane publishes to NATS (`serve --nats`).
    pub sidecars: Option<Arc<crate::fleet::follow::Directory>>,
}

/// How long a sidecar may go without hearing from NATS before it refuses to decide.
pub struct Staleness {
    /// Unix ms of the last sign of life from NATS (0: never).
    pub last_contact_ms: Arc<std::sync::atomic::AtomicU64>,
    pub max_ms: u64,
}

impl Staleness {
    /// `Err` (503 `stale`) when NATS has been silent for longer than allowed.
    pub fn check(&self) -> Result<(), ApiError> {
        let last = self
            .last_contact_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let silent = now.saturating_sub(last);
        if last == 0 || silent > self.max_ms {
            return Err(ApiError::new(
                ErrorCode::Stale,
                format!(
                    "no contact with NATS for {} s (nats.max_staleness_seconds is {}): refusing to decide on possibly stale data",
                    silent / 1000,
                    self.max_ms / 1000
                ),
            ));
        }
        Ok(())
    }
}

/// Why the shared state cannot be built (the server does not start).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl State {
    /// Builds the shared state: parses token keys and compiles forward-auth routes, so a bad
    /// key or route stops the server before it binds.
    pub fn new(config: Config, registry: Arc<Registry>, clock: Clock) -> Result<State, StateError> {
        config.validate()?;
        let metrics = Metrics::new(config.metrics.per_tenant)?;
        let tokens = tokens::Tokens::new(&config.tokens)?;
        let forward = forward::ForwardAuth::new(&config.forward_auth, &tokens)?;
        let exposure = super::exposure::Exposure::new(&config)?;
        Ok(State {
            config,
            registry,
            clock,
            metrics,
            tokens,
            forward,
            exposure,
            ready: AtomicBool::new(false),
            control: None,
            admin_token: None,
            sign_in: None,
            conns: Arc::new(super::conn::ConnStats::default()),
            following: None,
            fleet: None,
            staleness: None,
            sidecars: None,
        })
    }
}

/// Why there is no snapshot of `tenant`: not followed here (421), failed (503), unknown (404).
pub fn missing(state: &State, tenant: &str) -> ApiError {
    if let Some(set) = state.following.as_ref().filter(|s| !s.contains(tenant)) {
        return ApiError::new(ErrorCode::TenantNotHere, set.not_here(tenant));
    }
    ApiError::no_snapshot(&state.registry, tenant)
}

/// The snapshot of `tenant`, waiting (bounded) until it reaches `min_revision`.
pub async fn snapshot_at(
    state: &State,
    tenant: &str,
    min_revision: Option<u64>,
) -> Result<SnapshotGuard, ApiError> {
    if let Some(s) = &state.staleness {
        s.check()?;
    }
    let min = match min_revision {
        Some(min) => min,
        None => match state.registry.get(tenant) {
            Some(s) => return Ok(s),
            // A tenant whose plugins compile in the background: wait for it (bounded).
            None if state.registry.is_loading(tenant) => 0,
            None => return Err(missing(state, tenant)),
        },
    };
    if state
        .following
        .as_ref()
        .is_some_and(|s| !s.contains(tenant))
    {
        return Err(missing(state, tenant));
    }
    let mut changes = state.registry.subscribe();
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(state.config.limits.max_revision_wait_ms);
    loop {
        let current = state.registry.get(tenant).map(|s| s.revision());
        if current.is_none() {
            // A tenant that failed at or after `min` stays failed until a later commit.
            if let Some(f) = state.registry.failure(tenant).filter(|f| f.revision >= min) {
                return Err(ApiError::tenant_unavailable(tenant, &f));
            }
        }
        if current.is_some_and(|r| r >= min) {
            if let Some(s) = state.registry.get(tenant) {
                return Ok(s);
            }
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            _ => {
                return Err(match current {
                    None if state.registry.is_loading(tenant) => ApiError::new(
                        ErrorCode::NotReady,
                        format!("tenant '{tenant}' is loading (its plugins are compiling); retry shortly"),
                    ),
                    None => missing(state, tenant),
                    Some(r) => ApiError::new(
                        ErrorCode::RevisionUnavailable,
                        format!("tenant '{tenant}' is at revision {r}; min_revision {min} not reached in time"),
                    ),
                })
            }
        }
    }
}
