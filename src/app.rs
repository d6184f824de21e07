//! Assembling the `serve` process: store → control plane → follower → registry → HTTP.

use std::sync::Arc;

use crate::control::{follower, ControlPlane};
use crate::clock::Clock;
use crate::model::file::DataFile;
use crate::server::{self, Config, State};

/// Where the embedded store lives when `--store` is not given.
pub const DEFAULT_STORE: &str = "portcullis-data";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store '{location}': {source}")]
    Store {
        location: String,
        source: crate::store::StoreError,
    },
    #[error("control plane: {0}")]
    Control(#[from] crate::control::ControlError),
    #[error(transparent)]
    Server(#[from] crate::server::StartError),
}

/// A random 128-bit token, hex-encoded, from the OS random source; an error (and no token) when
/// that source fails: a bearer secret is never derived from anything guessable.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    Ok(crate::model::hex(&b))
}

/// Opens the store, seeds it from `data` when it has no tenants, starts the control plane and
/// the follower, and returns the shared server state (ready).
pub async fn start(
    config: Config,
    data: &DataFile,
    admin_token: Option<String>,
) -> Result<Arc<State>, StartError> {
    let location = config
        .store
        .clone()
        .unwrap_or_else(|| DEFAULT_STORE.to_string());
    let store = crate::store::open(&location)
        .await
        .map_err(|source| StartError::Store {
            location: location.clone(),
            source,
        })?;
    let cp = Arc::new(ControlPlane::open(store).await?);
    if cp.tenant_ids().is_empty() {
        let imported = cp.seed(data, "import").await?;
        tracing::info!(tenants = imported.len(), store = %location, engine = cp.store_engine(), "store seeded from data file");
    } else {
        if config.data.is_some() {
            tracing::warn!(store = %location, "store already holds tenants; --data ignored");
        }
        tracing::info!(tenants = cp.tenant_ids().len(), store = %location, engine = cp.store_engine(), "store opened");
    }
    let registry = Arc::new(crate::engine::plugin_registry_with(config.plugins.limits()));
    follower::start(Arc::clone(&cp), Arc::clone(&registry)).await;
    let mut state = State::new(config, registry, Clock::ticking())?;
    state.control = Some(cp);
    state.admin_token = admin_token;
    let state = Arc::new(state);
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    Ok(state)
}

/// Serves `state` until SIGINT/SIGTERM.
pub async fn serve(state: Arc<State>) -> std::io::Result<()> {
    server::run(state).await
}
