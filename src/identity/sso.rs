//! Single sign-on keys: an identity provider's public keys, as a tenant's `sso` setting gives
//! them (SPKI PEM, or a JWK as found in the provider's JWKS), normalized to SPKI DER for the
//! snapshot and parsed once per snapshot into signature verifiers.
//!
//! Accepted algorithms: `EdDSA` (Ed25519) and `RS256` (RSA PKCS#1 v1.5 with SHA-256, at least
//! 2048 bits). The envelope of a token (header, claims, time window) is checked by the data
//! plane (`server::sso`); this module only knows keys and signatures.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::model::SsoKey;

/// Signature algorithm of an SSO key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SsoAlg {
    EdDsa = 1,
    Rs256 = 2,
}

impl SsoAlg {
    pub fn name(self) -> &'static str {
        match self {
            SsoAlg::EdDsa => "EdDSA",
            SsoAlg::Rs256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<SsoAlg> {
        match s {
            "EdDSA" => Some(SsoAlg::EdDsa),
            "RS256" => Some(SsoAlg::Rs256),
            _ => None,
        }
    }

    pub fn from_u8(b: u8) -> Option<SsoAlg> {
        match b {
            1 => Some(SsoAlg::EdDsa),
            2 => Some(SsoAlg::Rs256),
            _ => None,
        }
    }
}

/// A key in the form the snapshot carries: its algorithm and its SPKI DER encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    pub alg: SsoAlg,
    pub der: Vec<u8>,
}

/// Reads one configured key (PEM or JWK); the message says what is wrong.
pub fn key_material(k: &SsoKey) -> Result<KeyMaterial, String> {
    let declared = match k.alg.as_deref() {
        None => None,
        Some(a) => Some(
            SsoAlg::parse(a)
                .ok_or_else(|| format!("alg '{a}' is not supported (use EdDSA or RS256)"))?,
        ),
    };
    if let Some(u) = k.use_.as_deref() {
        if u != "sig" {
            return Err(format!("use '{u}': only signing keys ('sig') are accepted"));
        }
    }
    let m = match (&k.pem, &k.kty) {
        (Some(_), Some(_)) => return Err("give 'pem' or a JWK ('kty', …), not both".into()),
        (None, None) => return Err("give 'pem' (SPKI PEM) or a JWK ('kty', …)".into()),
        (Some(pem), None) => from_pem(pem.trim(), declared)?,
        (None, Some(kty)) => from_jwk(k, kty)?,
    };
    if let Some(a) = declared {
        if a != m.alg {
            return Err(format!(
                "alg '{}' does not match the key, which is {}",
                a.name(),
                m.alg.name()
            ));
        }
    }
    // The stored form must load back.
    Verifier::load(m.alg, &m.der)?;
    Ok(m)
}

fn from_pem(pem: &str, declared: Option<SsoAlg>) -> Result<KeyMaterial, String> {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    use rsa::pkcs8::EncodePublicKey as _;
    if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        let key = rsa::PublicKey::from_pkcs1_pem(pem)
            .map_err(|e| format!("pem: not an RSA public key: {e}"))?;
        let der = key
            .to_public_key_der()
            .map_err(|e| format!("pem: {e}"))?
            .into_vec();
        return Ok(KeyMaterial {
            alg: SsoAlg::Rs256,
            der,
        });
    }
    if declared != Some(SsoAlg::Rs256) {
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            let der = ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_der(&key)
                .map_err(|e| format!("pem: {e}"))?
                .into_vec();
            return Ok(KeyMaterial {
                alg: SsoAlg::EdDsa,
                der,
            });
        }
    }
    match <rsa::PublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_pem(pem) {
        Ok(key) => {
            let der = key
                .to_public_key_der()
                .map_err(|e| format!("pem: {e}"))?
                .into_vec();
            Ok(KeyMaterial {
                alg: SsoAlg::Rs256,
                der,
            })
        }
        Err(e) => Err(format!(
            "pem: not an Ed25519 or RSA public key in SPKI PEM ({e})"
        )),
    }
}

fn b64_member(k: &SsoKey, name: &str, v: &Option<String>) -> Result<Vec<u8>, String> {
    let _ = k;
    let v = v
        .as_deref()
        .ok_or_else(|| format!("JWK member '{name}' is missing"))?;
    URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .map_err(|_| format!("JWK member '{name}' is not base64url"))
}

fn from_jwk(k: &SsoKey, kty: &str) -> Result<KeyMaterial, String> {
    match kty {
        "OKP" => {
            if k.crv.as_deref() != Some("Ed25519") {
                return Err(format!(
                    "JWK crv '{}' is not supported (use Ed25519)",
                    k.crv.as_deref().unwrap_or("")
                ));
            }
            let x = b64_member(k, "x", &k.x)?;
            let bytes: [u8; 32] = x
                .as_slice()
                .try_into()
                .map_err(|_| format!("JWK x is {} bytes; an Ed25519 key is 32", x.len()))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|_| "JWK x is not an Ed25519 public key".to_string())?;
            let der = ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_der(&key)
                .map_err(|e| format!("JWK: {e}"))?
                .into_vec();
            Ok(KeyMaterial {
                alg: SsoAlg::EdDsa,
                der,
            })
        }
        "RSA" => {
            use rsa::pkcs1::DecodeRsaPublicKey as _;
            use rsa::pkcs8::EncodePublicKey as _;
            let n = b64_member(k, "n", &k.n)?;
            let e = b64_member(k, "e", &k.e)?;
            let pkcs1 = der_sequence(&[der_uint(&n), der_uint(&e)]);
            let key = rsa::PublicKey::from_pkcs1_der(&pkcs1)
                .map_err(|e| format!("JWK: not an RSA public key: {e}"))?;
            let der = key
                .to_public_key_der()
                .map_err(|e| format!("JWK: {e}"))?
                .into_vec();
            Ok(KeyMaterial {
                alg: SsoAlg::Rs256,
                der,
            })
        }
        other => Err(format!(
            "JWK kty '{other}' is not supported (use OKP with Ed25519, or RSA)"
        )),
    }
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// A DER INTEGER of an unsigned big-endian magnitude.
fn der_uint(mag: &[u8]) -> Vec<u8> {
    let skip = mag.iter().take_while(|b| **b == 0).count();
    let mag = &mag[skip.min(mag.len().saturating_sub(1))..];
    let pad = mag.first().is_some_and(|b| b & 0x80 != 0);
    let mut out = vec![0x02];
    der_len(&mut out, mag.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(mag);
    out
}

fn der_sequence(items: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = items.concat();
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const ED1_PUB: &str = include_str!("../server/testdata/ed1.pub");
    const RSA1_PUB: &str = include_str!("../server/testdata/rsa1.pub");
    const RSA1024_PUB: &str = include_str!("../server/testdata/rsa1024.pub");

    fn key(pem: &str) -> SsoKey {
        SsoKey {
            kid: Some("k".into()),
            pem: Some(pem.into()),
            ..SsoKey::default()
        }
    }

    #[test]
    fn pem_and_jwk_give_the_same_material() {
        let ed = key_material(&key(ED1_PUB)).unwrap();
        assert_eq!(ed.alg, SsoAlg::EdDsa);
        let v = Verifier::load(ed.alg, &ed.der).unwrap();
        let Inner::EdDsa(k) = &v.inner else { panic!() };
        let jwk = SsoKey {
            kty: Some("OKP".into()),
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(k.as_bytes())),
            ..SsoKey::default()
        };
        assert_eq!(key_material(&jwk).unwrap(), ed);

        let rs = key_material(&key(RSA1_PUB)).unwrap();
        assert_eq!(rs.alg, SsoAlg::Rs256);
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::traits::PublicKeyParts as _;
        let pk = rsa::PublicKey::from_public_key_der(&rs.der).unwrap();
        let jwk = SsoKey {
            kty: Some("RSA".into()),
            n: Some(URL_SAFE_NO_PAD.encode(pk.n_bytes())),
            e: Some(URL_SAFE_NO_PAD.encode(pk.e_bytes())),
            alg: Some("RS256".into()),
            ..SsoKey::default()
        };
        assert_eq!(key_material(&jwk).unwrap(), rs);
    }

    #[test]
    fn bad_keys_say_why() {
        let e = |k: SsoKey| key_material(&k).unwrap_err();
        assert!(e(key(
            "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"
        ))
        .contains("pem"));
        assert!(e(key(RSA1024_PUB)).contains("at least 2048"));
        let mut k = key(ED1_PUB);
        k.alg = Some("RS256".into());
        assert!(e(k).contains("pem"));
        let mut k = key(ED1_PUB);
        k.alg = Some("HS256".into());
        assert!(e(k).contains("not supported"));
        assert!(e(SsoKey::default()).contains("give 'pem'"));
        let jwk = SsoKey {
            kty: Some("OKP".into()),
            crv: Some("Ed25519".into()),
            x: Some("AAAA".into()),
            ..SsoKey::default()
        };
        assert!(e(jwk).contains("32"));
    }
}
