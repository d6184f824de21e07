//! Portcullis-signed session tokens: JWTs (EdDSA / Ed25519) carrying subject, tenant, session
//! id, the user's session epoch at sign-in, the channel and the kind (session or guest).
//!
//! Keys: a ring of Ed25519 private keys, each with a `kid`; the first signs, all verify (rotate by
//! putting a new key first and keeping the old one until its tokens expired). Public keys are
//! published as a JWK set (`GET /.well-known/jwks.json`). Verification itself is the token
//! verifier's (`server::tokens`), built from [`SessionKeys::public_keys`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::Signer as _;
use serde::Serialize;

use crate::model::Channel;

/// The `iss` of every session token.
pub const ISSUER: &str = "portcullis";

/// What a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// A signed-in user.
    Session,
    /// A guest (read-only, scoped; the token is the guest's credential).
    Guest,
}

/// The claims of a session token.
#[derive(Debug, Clone, Serialize)]
pub struct SessionClaims<'a> {
    pub iss: &'a str,
    pub sub: &'a str,
    pub tenant: &'a str,
    /// Session id (the `session` row; a guest's id for guests).
    pub sid: &'a str,
    /// The user's session epoch when the session opened: a later epoch (deactivation, deletion,
    /// password change) kills it.
    pub sep: u64,
    pub ch: Channel,
    pub knd: SessionKind,
    pub iat: i64,
    pub exp: i64,
}

struct Key {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

/// The session signing keys.
pub struct SessionKeys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A `kid` derived from a public key: the first 8 bytes of its SHA-256, hex.
fn derived_kid(key: &ed25519_dalek::SigningKey) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(key.verifying_key().as_bytes());
    format!("pcs-{}", crate::model::hex(&d[..8]))
}

impl SessionKeys {
    /// Keys from PKCS#8 PEM texts, each with an optional kid (derived from the key when absent).
    /// At least one key; kids unique.
    pub fn from_pems(pems: &[(Option<String>, String)]) -> Result<SessionKeys, String> {
        if pems.is_empty() {
            return Err("no session signing key".into());
        }
        let mut keys: Vec<Key> = Vec::with_capacity(pems.len());
        for (i, (kid, pem)) in pems.iter().enumerate() {
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| {
                format!("session key {i}: not an Ed25519 private key (PKCS#8 PEM): {e}")
            })?;
            let kid = kid.clone().unwrap_or_else(|| derived_kid(&key));
            if keys.iter().any(|k| k.kid == kid) {
                return Err(format!("session key {i}: kid '{kid}' is used twice"));
            }
            keys.push(Key { kid, key });
        }
        Ok(SessionKeys { keys })
    }

    /// A new random key, as PKCS#8 PEM (to be persisted by the caller).
    pub fn generate_pem() -> Result<String, String> {
        let seed = super::secret::random_bytes::<32>().map_err(|e| e.to_string())?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        key.to_pkcs8_pem(Default::default())
            .map(|p| p.to_string())
            .map_err(|e| e.to_string())
    }

    /// The kid of the signing key.
    pub fn signing_kid(&self) -> &str {
        self.keys.first().map_or("", |k| k.kid.as_str())
    }

    /// Every public key as (kid, SPKI PEM): what token verification is built from.
    pub fn public_keys(&self) -> Vec<(String, String)> {
        self.keys
            .iter()
            .filter_map(|k| {
                let pem = k
                    .key
                    .verifying_key()
                    .to_public_key_pem(Default::default())
                    .ok()?;
                Some((k.kid.clone(), pem))
            })
            .collect()
    }

    /// The JWK set of the public keys (RFC 8037 `OKP` keys).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": "EdDSA",
                    "use": "sig",
                    "kid": k.kid,
                    "x": URL_SAFE_NO_PAD.encode(k.key.verifying_key().as_bytes()),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Signs `claims` with the first key.
    pub fn sign(&self, claims: &SessionClaims) -> Result<String, String> {
        let key = self.keys.first().ok_or("no session signing key")?;
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid});
        let claims = serde_json::to_string(claims).map_err(|e| e.to_string())?;
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let sig = key.key.sign(out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_publish() {
        let pem = SessionKeys::generate_pem().unwrap();
        let keys = SessionKeys::from_pems(&[(None, pem.clone())]).unwrap();
        assert!(keys.signing_kid().starts_with("pcs-"));
        let jwks = keys.jwks();
        assert_eq!(jwks["keys"][0]["kid"], keys.signing_kid());
        assert_eq!(jwks["keys"][0]["x"].as_str().unwrap().len(), 43);
        let t = keys
            .sign(&SessionClaims {
                iss: ISSUER,
                sub: "alice",
                tenant: "acme",
                sid: "s1",
                sep: 0,
                ch: Channel::Console,
                knd: SessionKind::Session,
                iat: 1,
                exp: 2,
            })
            .unwrap();
        assert_eq!(t.split('.').count(), 3);
        assert!(SessionKeys::from_pems(&[(None, pem.clone()), (None, pem)]).is_err());
        assert!(SessionKeys::from_pems(&[(None, "nope".into())]).is_err());
    }
}
