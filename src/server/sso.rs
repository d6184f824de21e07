//! SSO tokens on the data plane: tokens of an identity provider a tenant trusts (the tenant's
//! `sso` setting, carried by its snapshot), decided over the tenant's SSO groups the token's
//! group claim names.
//!
//! A token is an SSO token of a tenant when the tenant has `sso` and the token's `iss` is the
//! tenant's issuer; then only the tenant's SSO keys may verify it, and every refusal is a 401
//! (bad signature, unknown key, a key of another tenant, expired, not yet valid, wrong audience).
//! Any other token goes the way of session and configured tokens.
//!
//! Verification costs tens of microseconds (Ed25519, RSA): a token verified once is kept, with
//! the claims decisions need, in a fixed table of slots indexed by a keyed hash of the token
//! ([`SsoCache`]), recording the fingerprint of the key that verified it. A request with a
//! cached token costs a hash, an atomic load and a comparison of the token text; the key must
//! still be one of the tenant's, and the time window, issuer, audience and group mapping are
//! checked against the current snapshot on every request (no allocation). A miss verifies and
//! replaces the slot's previous token.
//!
//! The management API does not accept SSO tokens.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::tokens::{b64, malformed, Header, NumericDate, TokenError, Tokens};
use crate::decide::SsoGroups;
use crate::model::SsoAlg;
use crate::snapshot::Snapshot;

/// The refusal of an SSO token on the management API.
pub const NOT_ON_MANAGEMENT: &str =
    "SSO tokens are accepted on the data plane only; the management API accepts the platform token, session tokens and API keys";

/// A verified SSO token's claims, as cached (no `Debug`: it holds the token).
pub struct Entry {
    token: Box<str>,
    /// SHA-256 of the SPKI DER of the key that verified the signature.
    key: [u8; 32],
    /// The claim names the claims below were read with.
    subject_claim: Box<str>,
    groups_claim: Box<str>,
    subject: Option<Box<str>>,
    iss: Box<str>,
    aud: Box<[Box<str>]>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    groups: Box<[Box<str>]>,
}

/// An SSO token identified on a tenant: its subject claim and the SSO groups it names.
#[derive(Clone)]
pub struct SsoIdentity {
    entry: Arc<Entry>,
    pub groups: SsoGroups,
}

impl std::fmt::Debug for SsoIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoIdentity")
            .field("subject", &self.subject())
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

impl SsoIdentity {
    /// The token's subject claim.
    pub fn subject(&self) -> &str {
        self.entry.subject.as_deref().unwrap_or("")
    }
}

/// Recently verified SSO tokens: see the module docs.
pub struct SsoCache {
    slots: Box<[ArcSwapOption<Entry>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl SsoCache {
    const SLOTS: usize = 4096;

    pub fn new() -> SsoCache {
        SsoCache {
            slots: (0..Self::SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn slot(&self, token: &str) -> &ArcSwapOption<Entry> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(token) as usize;
        &self.slots[h % self.slots.len()]
    }

    fn get(&self, token: &str) -> Option<Arc<Entry>> {
        self.slot(token).load_full().filter(|e| *e.token == *token)
    }

    fn insert(&self, e: Arc<Entry>) {
        self.slot(&e.token).store(Some(e));
    }
}

impl Default for SsoCache {
    fn default() -> SsoCache {
        SsoCache::new()
    }
}

/// The unverified `iss` of a token, if it has one (only to route the token to a verifier).
fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let mut stack = [0u8; 1024];
    let mut heap = Vec::new();
    let bytes = b64(payload, &mut stack, &mut heap, "payload").ok()?;
    serde_json::from_slice::<Iss>(bytes).ok()?.iss
}

/// Whether `token` claims to come from the identity provider of `snap`'s tenant (for a clear
/// refusal where SSO tokens are not accepted).
pub fn is_sso_token_of(snap: &Snapshot, token: &str) -> bool {
    snap.view()
        .sso
        .as_ref()
        .is_some_and(|sso| unverified_issuer(token).is_some_and(|iss| iss == sso.issuer.as_str()))
}

/// The claims of an SSO token, owned (read once per verification; duplicates refused).
struct RawClaims(BTreeMap<String, serde_json::Value>);

impl<'de> Deserialize<'de> for RawClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawClaims;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of claims")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawClaims, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v: serde_json::Value = map.next_value()?;
                    if out.contains_key(&k) {
                        return Err(de::Error::custom(format!("duplicate claim '{k}'")));
                    }
                    out.insert(k, v);
                }
                Ok(RawClaims(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn string_claim(c: &RawClaims, name: &str) -> Result<Option<Box<str>>, TokenError> {
    match c.0.get(name) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.as_str().into())),
        Some(_) => Err(malformed(&format!("claims: '{name}' is not a string"))),
    }
}

/// A string, or a list of strings.
fn strings_claim(c: &RawClaims, name: &str) -> Result<Box<[Box<str>]>, TokenError> {
    match c.0.get(name) {
        None => Ok(Box::default()),
        Some(serde_json::Value::String(s)) => Ok(vec![s.as_str().into()].into()),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(Into::into)
                    .ok_or_else(|| malformed(&format!("claims: '{name}' is not a list of strings")))
            })
            .collect(),
        Some(_) => Err(malformed(&format!(
            "claims: '{name}' is not a string or a list of strings"
        ))),
    }
}

fn date_claim(c: &RawClaims, name: &str) -> Result<Option<i64>, TokenError> {
    match c.0.get(name) {
        None => Ok(None),
        Some(v) => NumericDate::deserialize(v)
            .map(|d| Some(d.0))
            .map_err(|_| malformed(&format!("claims: '{name}' is not a number of seconds"))),
    }
}

impl Tokens {
    /// The SSO identity `token` stands for in `snap`'s tenant: `Ok(None)` when it is not an SSO
    /// token of that tenant (no `sso`, or another issuer), an error when it is one but is
    /// refused.
    pub fn sso_identity(
        &self,
        snap: &Snapshot,
        token: &str,
        now: i64,
    ) -> Result<Option<SsoIdentity>, TokenError> {
        let Some(sso) = snap.view().sso.as_ref() else {
            return Ok(None);
        };
        let keys = snap.sso_keys();
        if let Some(e) = self.sso.get(token) {
            if keys.iter().any(|k| k.fingerprint == e.key)
                && *e.subject_claim == *sso.subject_claim.as_str()
                && *e.groups_claim == *sso.groups_claim.as_str()
            {
                return self.sso_check(snap, e, now).map(Some);
            }
            // Verified with a key this tenant does not trust (another tenant's, or one since
            // removed): verify again against this tenant's keys.
        }
        if token.len() > self.max_bytes {
            return match is_sso_token_of(snap, token) {
                true => Err(TokenError::TooLong(self.max_bytes)),
                false => Ok(None),
            };
        }
        let Some((signing_input, sig_b64)) = token.rsplit_once('.') else {
            return Ok(None);
        };
        let Some((header_b64, payload_b64)) = signing_input.split_once('.') else {
            return Ok(None);
        };
        let mut stack = [0u8; 1024];
        let mut heap = Vec::new();
        let Ok(payload) = b64(payload_b64, &mut stack, &mut heap, "payload") else {
            return Ok(None);
        };
        // Routing by the unverified issuer, without allocating (session tokens of SSO tenants
        // pass here on every request): not this tenant's provider, another path judges it.
        #[derive(Deserialize)]
        struct Iss<'a> {
            #[serde(borrow)]
            iss: Option<std::borrow::Cow<'a, str>>,
        }
        match serde_json::from_slice::<Iss>(payload) {
            Ok(Iss { iss: Some(iss) }) if *iss == *sso.issuer.as_str() => {}
            _ => return Ok(None),
        }
        // From here on the token claims to be this tenant's provider's: refusals are final.
        let claims = serde_json::from_slice::<RawClaims>(payload)
            .map_err(|e| malformed(&format!("claims: {e}")))?;
        if payload_b64.contains('.') {
            return Err(malformed(
                "more than three parts (encrypted tokens are not accepted)",
            ));
        }
        let key = {
            let mut buf = [0u8; 512];
            let mut big = Vec::new();
            let bytes = b64(header_b64, &mut buf, &mut big, "header")?;
            let header: Header =
                serde_json::from_slice(bytes).map_err(|e| malformed(&format!("header: {e}")))?;
            if header.crit.is_some() {
                return Err(malformed(
                    "header has 'crit' extensions, none are supported",
                ));
            }
            let alg = SsoAlg::parse(&header.alg)
                .ok_or_else(|| TokenError::Algorithm(super::error::clip(&header.alg)))?;
            let key = match header.kid.as_deref() {
                Some(kid) => keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or_else(|| TokenError::UnknownKid(super::error::clip(kid)))?,
                None => {
                    let mut found = keys.iter().filter(|k| k.alg == alg);
                    match (found.next(), found.count()) {
                        (Some(k), 0) => k,
                        (Some(_), n) => return Err(TokenError::AmbiguousKey(n + 1)),
                        (None, _) => return Err(TokenError::Algorithm(alg.name().to_string())),
                    }
                }
            };
            if key.alg != alg {
                return Err(TokenError::AlgorithmMismatch {
                    got: alg.name().to_string(),
                    kid: key.kid.as_deref().unwrap_or("").to_string(),
                    want: key.alg.name(),
                });
            }
            key
        };
        let mut buf = [0u8; 512];
        let mut big = Vec::new();
        let sig = b64(sig_b64, &mut buf, &mut big, "signature")?;
        if !key.verify(signing_input.as_bytes(), sig) {
            return Err(TokenError::Signature);
        }
        let entry = Arc::new(Entry {
            token: token.into(),
            key: key.fingerprint,
            subject_claim: sso.subject_claim.as_str().into(),
            groups_claim: sso.groups_claim.as_str().into(),
            subject: string_claim(&claims, sso.subject_claim.as_str())?,
            iss: sso.issuer.as_str().into(),
            aud: strings_claim(&claims, "aud")?,
            exp: date_claim(&claims, "exp")?,
            nbf: date_claim(&claims, "nbf")?,
            iat: date_claim(&claims, "iat")?,
            groups: strings_claim(&claims, sso.groups_claim.as_str())?,
        });
        self.sso.insert(entry.clone());
        self.sso_check(snap, entry, now).map(Some)
    }

    /// The per-request checks of a verified SSO token against the tenant's current setting.
    fn sso_check(
        &self,
        snap: &Snapshot,
        e: Arc<Entry>,
        now: i64,
    ) -> Result<SsoIdentity, TokenError> {
        let Some(sso) = snap.view().sso.as_ref() else {
            return Err(TokenError::NotConfigured);
        };
        let exp = e
            .exp
            .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        if now > exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired(exp));
        }
        let from_now = exp.saturating_sub(now.saturating_add(self.leeway));
        let from_iat = e.iat.map_or(0, |iat| exp.saturating_sub(iat));
        if from_now > self.max_lifetime || from_iat > self.max_lifetime {
            return Err(TokenError::LifetimeTooLong(exp, self.max_lifetime));
        }
        if let Some(nbf) = e.nbf {
            if nbf > now.saturating_add(self.leeway) {
                return Err(TokenError::NotYetValid(nbf));
            }
        }
        if let Some(iat) = e.iat {
            if iat > now.saturating_add(self.leeway) {
                return Err(TokenError::IssuedInFuture(iat));
            }
        }
        if *e.iss != *sso.issuer.as_str() {
            return Err(TokenError::Issuer(sso.issuer.to_string()));
        }
        if let Some(want) = sso.audience.as_ref() {
            if !e.aud.iter().any(|a| **a == *want.as_str()) {
                return Err(TokenError::Audience(want.to_string()));
            }
        }
        if e.subject.as_deref().is_none_or(str::is_empty) {
            return Err(TokenError::MissingClaim(e.subject_claim.to_string()));
        }
        let first = sso.first_group.to_native();
        let mut groups = SsoGroups::default();
        for g in e.groups.iter() {
            if let Some(ix) = sso.groups.get(&**g) {
                groups.insert(ix.to_native().wrapping_sub(first));
            }
        }
        Ok(SsoIdentity { entry: e, groups })
    }
}
