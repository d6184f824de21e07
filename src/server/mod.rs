//! The HTTP server (hyper 1 on tokio): HTTP/1.1 keep-alive and HTTP/2 cleartext (h2c) on one
//! port, strict input limits, graceful shutdown.
//!
//! - [`state`]: the shared [`State`] and the wait for a snapshot at a revision;
//! - [`listen`]: accept loop, listeners, drain, signals; [`conn`]: connection admission;
//!   [`tls`]: TLS (rustls), client certificates, certificate reloads;
//! - [`router`]: surfaces, routes, health/readiness/metrics, data-plane dispatch;
//! - [`body`]: request bodies and the JSON response helper; [`protocol`]: JSON bodies for the
//!   errors hyper answers itself (unparsable requests, oversized headers);
//! - [`error`]: the error codes and their HTTP statuses;
//! - [`exposure`]: Host allow-list, data-plane API keys, the metrics token;
//! - [`api`] (data plane), [`forward`] (forward-auth), [`tokens`], [`admin`] (management API).

pub mod admin;
pub mod api;
pub mod body;
pub mod config;
pub mod conn;
pub mod error;
pub mod exposure;
pub mod forward;
pub mod listen;
pub mod metrics;
pub mod protocol;
pub mod router;
pub mod sso;
pub mod state;
pub mod tls;
pub mod tokens;

pub use body::{json, read_binary_body, read_body, Resp};
pub use config::Config;
pub use listen::{serve, shutdown_signal};
pub use router::Surface;
pub use state::{snapshot_at, State, StateError};
