//! Identities: how people and machines prove who they are. Pure functions and small types, no
//! I/O: password and access-card hashing ([`secret`]), the random secrets Portcullis hands out
//! (session ids, API keys, invitation and guest tokens), Portcullis-signed session tokens
//! ([`session`]) and sign-in throttling ([`throttle`]).
//!
//! What is stored where: password and card hashes live in `credential` rows, which never leave
//! the store (the log and the change stream carry them redacted); API keys and invitations are
//! stored as SHA-256 digests of high-entropy secrets; sessions are stored as rows (user,
//! channel, expiry, revoked) and travel in tokens signed with the server's Ed25519 keys.

pub mod secret;
pub mod session;
pub mod sso;
pub mod throttle;

pub use secret::{
    card_hash, hash_password, random_hex, verify_password, verify_unknown, ApiKeySecret, HashError,
};
pub use session::{SessionClaims, SessionKeys, SessionKind};
pub use throttle::Throttle;
