//! Token identities (`"token"` in data-plane requests, bearer tokens in forward-auth).
//!
//! Until token verification is configured, every token is refused (fail closed).

use super::error::ApiError;
use crate::snapshot::SnapshotGuard;

#[derive(Default)]
pub struct Tokens {}

impl Tokens {
    /// The user id a token stands for in the snapshot's tenant.
    pub fn subject_for(&self, _snap: &SnapshotGuard, _token: &str) -> Result<String, ApiError> {
        Err(ApiError::unauthenticated(
            "token authentication is not configured",
        ))
    }
}
