//! Portcullis: a multi-tenant authorization sidecar.
//!
//! Data flows one way: [`model`] (plain data, validation) → [`snapshot`] (compiled, zero-copy
//! rkyv archives, swapped atomically per tenant) → [`decide`] (pure, allocation-free decisions).

pub mod app;
pub mod clock;
pub mod control;
pub mod decide;
pub mod engine;
pub mod fleet;
pub mod identity;
pub mod model;
pub mod plugin;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod worlds;
