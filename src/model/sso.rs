//! Single sign-on: a tenant trusts an identity provider's tokens and maps the provider's group
//! names to role assignments at scopes. A request with such a token gets exactly the mapped
//! roles of the groups its group claim names (no user record). Enterprise tenants only.

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{check_id, check_text};

/// Most keys one tenant trusts.
pub const MAX_SSO_KEYS: usize = 16;
/// Most mappings of one tenant.
pub const MAX_SSO_MAPPINGS: usize = 1024;
/// Most distinct group names the mappings of one tenant name (a token's groups are decided as a
/// fixed-size set of this many bits).
pub const MAX_SSO_GROUPS: usize = 256;
/// The issuer of Portcullis's own session tokens: never an identity provider's.
const RESERVED_ISSUER: &str = "portcullis";

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_subject_claim() -> String {
    "sub".into()
}

/// A tenant's identity provider and its group mappings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sso {
    /// The `iss` of the provider's tokens; a token with this issuer on this tenant is an SSO
    /// token.
    pub issuer: String,
    /// The provider's public signing keys.
    pub keys: Vec<SsoKey>,
    /// When set, a token's `aud` must contain it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The claim listing the token's groups (a list of strings, or one string).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The claim naming the subject (reported to gateways and plugins; decides nothing).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    #[serde(default)]
    pub mappings: Vec<SsoMapping>,
}

/// One public key: SPKI PEM (`pem`) or a JWK (`kty` and its members, as in the provider's JWKS;
/// other JWK members are ignored and not stored).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SsoKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `EdDSA` or `RS256` (implied by the key when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// Members of the provider's group `group` get `role` at `scope` (and its subtree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoMapping {
    pub group: String,
    pub role: String,
    pub scope: String,
}

impl Sso {
    /// The distinct mapped group names, sorted: the order of the snapshot's SSO groups.
    pub fn group_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.mappings.iter().map(|m| m.group.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Every problem of this setting as (field, message), fields named from `sso`
    /// (`sso.keys[0]`, `sso.mappings[2].role`). `role` and `node` say whether an id exists in
    /// the tenant.
    pub fn problems(
        &self,
        role: impl Fn(&str) -> bool,
        node: impl Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut err = |f: String, m: String| out.push((f, m));
        let iss = self.issuer.trim();
        if iss.is_empty() {
            err("sso.issuer".into(), "issuer must not be empty".into());
        } else if iss == RESERVED_ISSUER {
            err(
                "sso.issuer".into(),
                format!("'{RESERVED_ISSUER}' is the issuer of Portcullis's own session tokens"),
            );
        } else if iss != self.issuer {
            err(
                "sso.issuer".into(),
                "issuer must not start or end with spaces".into(),
            );
        } else if let Err(m) = check_text("issuer", &self.issuer) {
            err("sso.issuer".into(), m);
        }
        if let Some(a) = &self.audience {
            if a.is_empty() {
                err("sso.audience".into(), "audience must not be empty".into());
            } else if let Err(m) = check_text("audience", a) {
                err("sso.audience".into(), m);
            }
        }
        for (f, c) in [
            ("sso.groups_claim", &self.groups_claim),
            ("sso.subject_claim", &self.subject_claim),
        ] {
            if let Err(m) = check_id("claim name", c) {
                err(f.into(), m);
            }
        }
        if self.groups_claim == self.subject_claim {
            err(
                "sso.groups_claim".into(),
                "the groups claim and the subject claim must differ".into(),
            );
        }
        if self.keys.is_empty() {
            err("sso.keys".into(), "at least one key is required".into());
        }
        if self.keys.len() > MAX_SSO_KEYS {
            err(
                "sso.keys".into(),
                format!("at most {MAX_SSO_KEYS} keys, got {}", self.keys.len()),
            );
        }
        let mut kids = HashSet::new();
        let mut unnamed = 0;
        for (i, k) in self.keys.iter().enumerate() {
            let f = format!("sso.keys[{i}]");
            match &k.kid {
                Some(kid) => {
                    if let Err(m) = check_text("kid", kid).and_then(|()| {
                        if kid.is_empty() {
                            Err("kid must not be empty".into())
                        } else {
                            Ok(())
                        }
                    }) {
                        err(format!("{f}.kid"), m);
                    } else if !kids.insert(kid.as_str()) {
                        err(
                            format!("{f}.kid"),
                            format!("kid '{kid}' is used by another key"),
                        );
                    }
                }
                None => unnamed += 1,
            }
            if let Err(m) = key_material(k) {
                err(f, m);
            }
        }
        if unnamed > 0 && self.keys.len() > 1 {
            err(
                "sso.keys".into(),
                "with more than one key, every key needs a 'kid'".into(),
            );
        }
        if self.mappings.len() > MAX_SSO_MAPPINGS {
            err(
                "sso.mappings".into(),
                format!(
                    "at most {MAX_SSO_MAPPINGS} mappings, got {}",
                    self.mappings.len()
                ),
            );
        }
        let mut seen = HashSet::new();
        for (i, m) in self.mappings.iter().enumerate() {
            let f = format!("sso.mappings[{i}]");
            if m.group.is_empty() {
                err(format!("{f}.group"), "group must not be empty".into());
            } else if let Err(e) = check_text("group", &m.group) {
                err(format!("{f}.group"), e);
            }
            if !role(&m.role) {
                err(format!("{f}.role"), format!("unknown role '{}'", m.role));
            }
            if !node(&m.scope) {
                err(
                    format!("{f}.scope"),
                    format!("unknown scope node '{}'", m.scope),
                );
            }
            if !seen.insert((&m.group, &m.role, &m.scope)) {
                err(f, format!("duplicate mapping of group '{}'", m.group));
            }
        }
        let groups = self.group_names().len();
        if groups > MAX_SSO_GROUPS {
            err(
                "sso.mappings".into(),
                format!("at most {MAX_SSO_GROUPS} distinct groups, got {groups}"),
            );
        }
        out
    }
}

// --- Keys: PEM or JWK, normalized to SPKI DER (what the snapshot carries) -------------------

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
    if m.alg == SsoAlg::Rs256 {
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::traits::PublicKeyParts as _;
        let key = rsa::PublicKey::from_public_key_der(&m.der)
            .map_err(|e| format!("not an RSA public key: {e}"))?;
        let bits = key.n().bit_width();
        if bits < 2048 {
            return Err(format!("RSA key has {bits} bits; use at least 2048"));
        }
    }
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
        use ed25519_dalek::pkcs8::DecodePublicKey as _;
        let k = ed25519_dalek::VerifyingKey::from_public_key_pem(ED1_PUB.trim()).unwrap();
        let jwk = SsoKey {
            kty: Some("OKP".into()),
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(k.as_bytes())),
            ..SsoKey::default()
        };
        assert_eq!(key_material(&jwk).unwrap(), ed);

        let rs = key_material(&key(RSA1_PUB)).unwrap();
        assert_eq!(rs.alg, SsoAlg::Rs256);
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
