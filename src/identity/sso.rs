//! Single sign-on keys as signature verifiers: an identity provider's public keys (SPKI DER, as
//! the snapshot carries them: see `model::sso`) parsed once per snapshot. The envelope of a token
//! (header, claims, time window) is checked by the data plane (`server::sso`); this module only
//! knows keys and signatures.

use sha2::{Digest, Sha256};

use crate::model::SsoAlg;

enum Inner {
    EdDsa(Box<ed25519_dalek::VerifyingKey>),
    Rs256 {
        key: Box<rsa::pkcs1v15::VerifyingKey<Sha256>>,
        size: usize,
    },
}

/// A parsed SSO key: verifies signatures; known by its kid and its fingerprint (the SHA-256 of
/// its SPKI DER), which verification caches record.
pub struct Verifier {
    pub kid: Option<Box<str>>,
    pub alg: SsoAlg,
    pub fingerprint: [u8; 32],
    inner: Inner,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Parses SPKI DER of the given algorithm.
    pub fn load(alg: SsoAlg, der: &[u8]) -> Result<Verifier, String> {
        let inner = match alg {
            SsoAlg::EdDsa => {
                use ed25519_dalek::pkcs8::DecodePublicKey as _;
                let key = ed25519_dalek::VerifyingKey::from_public_key_der(der)
                    .map_err(|e| format!("not an Ed25519 public key: {e}"))?;
                Inner::EdDsa(Box::new(key))
            }
            SsoAlg::Rs256 => {
                use rsa::pkcs8::DecodePublicKey as _;
                use rsa::traits::PublicKeyParts as _;
                let key = rsa::PublicKey::from_public_key_der(der)
                    .map_err(|e| format!("not an RSA public key: {e}"))?;
                let bits = key.n().bit_width();
                if bits < 2048 {
                    return Err(format!("RSA key has {bits} bits; use at least 2048"));
                }
                let size = key.size();
                Inner::Rs256 {
                    key: Box::new(rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key)),
                    size,
                }
            }
        };
        Ok(Verifier {
            kid: None,
            alg,
            fingerprint: Sha256::digest(der).into(),
            inner,
        })
    }

    /// Whether `sig` is a valid signature of `input` under this key.
    pub fn verify(&self, input: &[u8], sig: &[u8]) -> bool {
        match &self.inner {
            Inner::EdDsa(key) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| key.verify_strict(input, &s).is_ok()),
            Inner::Rs256 { key, size } => {
                use rsa::signature::Verifier as _;
                sig.len() == *size
                    && rsa::pkcs1v15::Signature::try_from(sig)
                        .is_ok_and(|s| key.verify(input, &s).is_ok())
            }
        }
    }
}
