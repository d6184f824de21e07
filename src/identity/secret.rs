//! Password and access-card hashes (argon2id), random secrets, API key strings.
//!
//! Parameters: argon2id, 19 MiB, 2 passes, 1 lane — OWASP's minimum recommendation
//! (Password Storage Cheat Sheet). Password hashes are PHC strings with a random 16-byte salt
//! per hash. Card UIDs are short and must be found by value at sign-in, so a card's hash is
//! argon2id of the UID salted with the tenant id (deterministic per tenant): finding the card
//! of a hash still costs one argon2 evaluation per guess.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::Digest;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the system random source failed: {0}")]
    Random(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

fn argon() -> Argon2<'static> {
    // `Params::DEFAULT` is m = 19 MiB, t = 2, p = 1.
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

/// `n` random bytes from the OS.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], HashError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| HashError::Random(e.to_string()))?;
    Ok(b)
}

/// `N` random bytes, lowercase hex.
pub fn random_hex<const N: usize>() -> Result<String, HashError> {
    Ok(crate::model::hex(&random_bytes::<N>()?))
}

/// An argon2id PHC string of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = random_bytes::<16>()?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Hash(e.to_string()))?;
    argon()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

/// Does `password` match the PHC string `phc`? A malformed hash never matches.
pub fn verify_password(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => argon().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// The same work as [`verify_password`] for a sign-in whose email matches no user (or a user
/// without a password), so that the answer's timing does not tell whether the email exists.
/// Always false.
pub fn verify_unknown(password: &str) -> bool {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("Unused-dummy-password-0").ok());
    if let Some(d) = dummy {
        let _ = verify_password(d, password);
    }
    false
}

/// The stored form of access card `uid` in `tenant`: argon2id salted with the tenant id,
/// lowercase hex. Card UIDs are compared case-insensitively (readers differ in hex case) and
/// without surrounding spaces.
pub fn card_hash(tenant: &str, uid: &str) -> Result<String, HashError> {
    let uid = uid.trim().to_ascii_uppercase();
    // argon2 needs at least 8 bytes of salt: prefix the tenant id.
    let salt = format!("portcullis-card:{tenant}");
    let mut out = [0u8; 32];
    argon()
        .hash_password_into(uid.as_bytes(), salt.as_bytes(), &mut out)
        .map_err(|e| HashError::Hash(e.to_string()))?;
    Ok(crate::model::hex(&out))
}

/// Lowercase hex SHA-256 of `s` (stored form of invitation tokens and API key secrets).
pub fn sha256_hex(s: &str) -> String {
    crate::model::hex(&sha2::Sha256::digest(s.as_bytes()))
}

/// Prefix of every API key: `pck_<id>_<secret>`.
pub const API_KEY_PREFIX: &str = "pck_";
const API_KEY_ID_LEN: usize = 16;

/// A freshly made API key: its id (public, in the row and in audit) and the whole key (shown
/// once; only the SHA-256 of its secret part is kept).
#[derive(Clone)]
pub struct ApiKeySecret {
    pub id: String,
    pub key: String,
    pub sha256: String,
}

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeySecret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ApiKeySecret {
    /// A new key: 64-bit id, 256-bit secret, both hex.
    pub fn generate() -> Result<ApiKeySecret, HashError> {
        let id = random_hex::<8>()?;
        let secret = random_hex::<32>()?;
        Ok(ApiKeySecret {
            key: format!("{API_KEY_PREFIX}{id}_{secret}"),
            sha256: crate::model::hex(&sha2::Sha256::digest(secret.as_bytes())),
            id,
        })
    }
}

/// Splits an API key string into its id and secret; `None` when `s` is not one.
pub fn parse_api_key(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_at_checked(API_KEY_ID_LEN)?;
    let secret = secret.strip_prefix('_')?;
    (id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty()).then_some((id, secret))
}

/// Does `secret` hash to `sha256`? Constant time in the digest comparison.
pub fn api_key_matches(secret: &str, sha256: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    let d = sha2::Sha256::digest(secret.as_bytes());
    bool::from(d.as_slice().ct_eq(sha256.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_random_salts_and_verify() {
        let a = hash_password("Correct-horse-1").unwrap();
        let b = hash_password("Correct-horse-1").unwrap();
        assert_ne!(a, b, "fresh salt per hash");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert!(verify_password(&a, "Correct-horse-1"));
        assert!(!verify_password(&a, "correct-horse-1"));
        assert!(!verify_password("not a hash", "Correct-horse-1"));
        assert!(!verify_unknown("Correct-horse-1"));
    }

    #[test]
    fn cards_hash_per_tenant_and_ignore_case_and_spaces() {
        let a = card_hash("acme", "04a1b2c3").unwrap();
        assert_eq!(a, card_hash("acme", " 04A1B2C3 ").unwrap());
        assert_ne!(a, card_hash("other", "04a1b2c3").unwrap());
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn api_keys_round_trip() {
        let k = ApiKeySecret::generate().unwrap();
        let (id, secret) = parse_api_key(&k.key).unwrap();
        assert_eq!(id, k.id);
        let digest = crate::model::unhex32(&k.sha256).unwrap();
        assert!(api_key_matches(secret, &digest));
        assert!(!api_key_matches("x", &digest));
        assert!(parse_api_key("pck_short_x").is_none());
        assert!(parse_api_key("eyJhbGciOi.x.y").is_none());
        assert!(!format!("{k:?}").contains(&k.key));
    }
}
