//! Token identities: JWTs (JWS compact serialization, RFC 7515/7519) in `Authorization: Bearer`
//! headers (forward-auth) and in the `"token"` field of data-plane requests.
//!
//! Accepted algorithms: `HS256`, `RS256` and `EdDSA` (Ed25519). Every key is parsed once, at start
//! ([`Tokens::new`]): a bad key stops the server before it binds. Per token, the work is: split,
//! base64url-decode the header into a stack buffer, pick the key (by `kid`, or the single key of
//! the header's algorithm), verify the signature, then — and only then — decode the claims into a
//! stack buffer and read the few we need without copying them (subject, tenant, `exp`, `nbf`,
//! `iat`, `iss`, `aud`). Nothing allocates on that path for ordinary tokens except what RSA's big
//! integers need.
//!
//! The envelope code is ours, the cryptography is not: signatures are checked by RustCrypto's
//! `hmac`/`sha2` (constant-time tag comparison), `rsa` (PKCS#1 v1.5) and `ed25519-dalek`
//! (`verify_strict`). We do not use the `jsonwebtoken` crate because it re-parses the public key
//! (RSA DER, Ed25519 point) and clones the key for every token, decodes the claims twice into
//! owned values, reads the system clock instead of ours, and pulls ECDSA crates we do not use.
//!
//! Rules (each refusal is a [`TokenError`], answered as 401):
//! - the header's `alg` must be the key's algorithm (so `none` and HS/RS confusion never verify);
//!   a header with `crit` is refused (we implement no extensions);
//! - `exp` is required; `exp`/`nbf`/`iat` are checked against our clock with a small leeway;
//!   `iss`/`aud` when configured;
//! - the tenant claim must be the request's tenant (a key may also be limited to tenants);
//! - the subject must be a user of that tenant, active, and the token must not be older than the
//!   user's `session_epoch` (raised when the user is deactivated or deleted).

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use sha2::Sha256;

use super::config::{ConfigError, KeyConfig, TokensConfig};
use super::error::{clip, ApiError};
use crate::decide::Reason;
use crate::snapshot::{ArchivedTenantSnap, Snapshot};

/// Signature algorithms we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Hs256,
    Rs256,
    EdDsa,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::EdDsa => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }
}

/// Why a token was refused. Messages are meant for the client (no secrets in them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token authentication is not configured")]
    NotConfigured,
    #[error("missing bearer token")]
    Missing,
    #[error("token is longer than {0} bytes")]
    TooLong(usize),
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm '{0}' is not accepted")]
    Algorithm(String),
    #[error("token key id '{0}' is unknown")]
    UnknownKid(String),
    #[error("token algorithm '{got}' does not match the algorithm of key '{kid}' ({want})")]
    AlgorithmMismatch {
        got: String,
        kid: String,
        want: &'static str,
    },
    #[error("token has no 'kid' and {0} keys accept its algorithm")]
    AmbiguousKey(usize),
    #[error("invalid token signature")]
    Signature,
    #[error("token has no '{0}' claim")]
    MissingClaim(String),
    #[error("token expired at {0} (unix seconds)")]
    Expired(i64),
    #[error("token lifetime is too long: 'exp' {0} is more than {1} s after issue (or now)")]
    LifetimeTooLong(i64, i64),
    #[error("token not valid before {0} (unix seconds)")]
    NotYetValid(i64),
    #[error("token issued in the future ({0}, unix seconds)")]
    IssuedInFuture(i64),
    #[error("token issuer is not '{0}'")]
    Issuer(String),
    #[error("token audience does not include '{0}'")]
    Audience(String),
    #[error("token is for tenant '{token}', not '{request}'")]
    WrongTenant { token: String, request: String },
    #[error("token key '{kid}' may not sign tokens for tenant '{tenant}'")]
    KeyTenant { kid: String, tenant: String },
    #[error("unknown user '{0}'")]
    UnknownUser(String),
    #[error("user '{0}' is inactive")]
    UserInactive(String),
    #[error("user '{0}' is deleted")]
    UserDeleted(String),
    #[error("the session has ended: user '{0}' signed out, or their sessions were revoked")]
    Revoked(String),
    #[error("API key '{0}' is unknown, revoked or wrong")]
    UnknownKey(String),
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> ApiError {
        ApiError::unauthenticated(e.to_string())
    }
}

enum Verifier {
    /// A keyed HMAC state, cloned per token (a copy, no key schedule, no allocation).
    Hs256(Box<Hmac<Sha256>>),
    Rs256 {
        key: Box<rsa::pkcs1v15::VerifyingKey<Sha256>>,
        /// Signature length in bytes (the modulus size).
        size: usize,
    },
    EdDsa(Box<ed25519_dalek::VerifyingKey>),
}

struct Key {
    kid: Option<Box<str>>,
    alg: Alg,
    verifier: Verifier,
    tenants: Box<[Box<str>]>,
    /// A Portcullis session key (`identity::session`): selected by `kid` only, issuer
    /// `portcullis`, and its tokens carry a session id and epoch checked against the snapshot.
    session: bool,
}

/// Longest lifetime of a Portcullis session token: the longest logout period, plus an hour.
pub const SESSION_MAX_LIFETIME: i64 = (crate::model::LogoutPeriod::MAX_HOURS as i64 + 1) * 3600;

impl Key {
    fn label(&self) -> String {
        self.kid
            .as_deref()
            .map_or_else(|| format!("({})", self.alg.name()), str::to_string)
    }
}

/// The token verifier: keys parsed at start, claim names and checks from the config.
pub struct Tokens {
    keys: Vec<Key>,
    subject_claim: Box<str>,
    tenant_claim: Box<str>,
    issuer: Option<Box<str>>,
    audience: Option<Box<str>>,
    pub(super) leeway: i64,
    pub(super) max_bytes: usize,
    /// Longest lifetime accepted: `exp` at most this many seconds after `iat` and after now.
    pub(super) max_lifetime: i64,
    /// Tokens whose (slow) signature verified recently.
    verified: SigCache,
    /// SSO tokens verified recently, with the claims decisions need.
    pub(super) sso: super::sso::SsoCache,
}

impl Default for Tokens {
    /// No keys: every token is refused (fail closed).
    fn default() -> Tokens {
        let c = TokensConfig::default();
        Tokens {
            keys: Vec::new(),
            subject_claim: c.subject_claim.into(),
            tenant_claim: c.tenant_claim.into(),
            issuer: None,
            audience: None,
            leeway: c.leeway_seconds as i64,
            max_bytes: c.max_token_bytes,
            max_lifetime: c.max_lifetime_seconds as i64,
            verified: SigCache::new(),
            sso: super::sso::SsoCache::new(),
        }
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field(
                "keys",
                &self.keys.iter().map(Key::label).collect::<Vec<_>>(),
            )
            .field("subject_claim", &self.subject_claim)
            .field("tenant_claim", &self.tenant_claim)
            .finish_non_exhaustive()
    }
}

/// The verified claims of a token, borrowed from its decoded payload.
#[derive(Debug, Default)]
pub struct Claims<'a> {
    pub subject: Option<Cow<'a, str>>,
    pub tenant: Option<Cow<'a, str>>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    iss: Option<Cow<'a, str>>,
    /// `Some(true)` when `aud` contains the configured audience.
    aud_ok: Option<bool>,
    /// Session tokens: session id, session epoch, channel, kind (`session` or `guest`).
    pub sid: Option<Cow<'a, str>>,
    pub sep: Option<u64>,
    pub ch: Option<Cow<'a, str>>,
    pub knd: Option<Cow<'a, str>>,
}

/// Who a data-plane token stands for.
#[derive(Debug, Clone)]
pub enum TokenIdentity<'s> {
    /// A user of the tenant (borrowed from the snapshot), with the channel of the session when
    /// the token is a Portcullis session token.
    User {
        user: &'s str,
        channel: Option<&'static str>,
    },
    /// An SSO token of the tenant's identity provider.
    Sso(super::sso::SsoIdentity),
}

/// The channel (`console`, `field`) of a Portcullis session token; `None` for other tokens.
pub fn session_channel(v: &Verified) -> Option<&'static str> {
    if !v.is_session() {
        return None;
    }
    match v.claims.ch.as_deref() {
        Some("console") => Some(crate::model::Channel::Console.as_str()),
        Some("field") => Some(crate::model::Channel::Field.as_str()),
        _ => None,
    }
}

/// A token whose signature and time window were verified.
pub struct Verified<'a, 'k> {
    pub claims: Claims<'a>,
    key: &'k Key,
}

impl Verified<'_, '_> {
    /// Signed by a Portcullis session key.
    pub fn is_session(&self) -> bool {
        self.key.session
    }
}

const STACK: usize = 1024;

impl Tokens {
    /// Parses every key of the config; any problem is a clear error naming the key.
    pub fn new(config: &TokensConfig) -> Result<Tokens, ConfigError> {
        let mut keys: Vec<Key> = Vec::with_capacity(config.keys.len());
        for (i, k) in config.keys.iter().enumerate() {
            let name = match &k.kid {
                Some(kid) => format!("tokens.keys[{i}] (kid '{kid}')"),
                None => format!("tokens.keys[{i}]"),
            };
            let key = load_key(k).map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))?;
            if let Some(kid) = &key.kid {
                if keys.iter().any(|o| o.kid.as_deref() == Some(kid)) {
                    return Err(ConfigError::Invalid(format!(
                        "{name}: kid '{kid}' is used by another key"
                    )));
                }
            }
            keys.push(key);
        }
        Ok(Tokens {
            keys,
            subject_claim: config.subject_claim.as_str().into(),
            tenant_claim: config.tenant_claim.as_str().into(),
            issuer: config.issuer.as_deref().map(Into::into),
            audience: config.audience.as_deref().map(Into::into),
            leeway: i64::try_from(config.leeway_seconds).unwrap_or(i64::MAX),
            max_bytes: config.max_token_bytes,
            max_lifetime: i64::try_from(config.max_lifetime_seconds).unwrap_or(i64::MAX),
            verified: SigCache::new(),
            sso: super::sso::SsoCache::new(),
        })
    }

    /// [`Tokens::new`] plus Portcullis session keys (kid, SPKI PEM of an Ed25519 key).
    pub fn with_sessions(
        config: &TokensConfig,
        sessions: &[(String, String)],
    ) -> Result<Tokens, ConfigError> {
        let mut t = Tokens::new(config)?;
        for (kid, pem) in sessions {
            let kc = KeyConfig {
                kid: Some(kid.clone()),
                alg: "EdDSA".into(),
                secret: None,
                secret_file: None,
                public_key: Some(pem.clone()),
                public_key_file: None,
                tenants: Vec::new(),
            };
            let mut key = load_key(&kc)
                .map_err(|e| ConfigError::Invalid(format!("session key '{kid}': {e}")))?;
            if t.keys
                .iter()
                .any(|k| k.kid.as_deref() == Some(kid.as_str()))
            {
                return Err(ConfigError::Invalid(format!(
                    "session key id '{kid}' is also the kid of a tokens.keys entry"
                )));
            }
            key.session = true;
            t.keys.push(key);
        }
        Ok(t)
    }

    /// True when at least one key is configured.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn tenant_claim(&self) -> &str {
        &self.tenant_claim
    }

    /// The user id (borrowed from the snapshot) that `token` stands for in `snap`'s tenant.
    pub fn subject_for<'s>(
        &self,
        snap: &'s Snapshot,
        token: &str,
        now: i64,
    ) -> Result<&'s str, TokenError> {
        if token.starts_with(crate::identity::secret::API_KEY_PREFIX) {
            return api_key_user(snap.view(), token, now).map(|(user, _)| user);
        }
        self.verify_with(token, now, |v| {
            self.identify(v, snap.tenant_id(), snap.view())
        })?
    }

    /// Who `token` stands for in `snap`'s tenant: a user (by API key, session token or a
    /// configured token), with the channel of a session; or an SSO identity.
    pub fn identity_for<'s>(
        &self,
        snap: &'s Snapshot,
        token: &str,
        now: i64,
    ) -> Result<TokenIdentity<'s>, TokenError> {
        if token.starts_with(crate::identity::secret::API_KEY_PREFIX) {
            let (user, _) = api_key_user(snap.view(), token, now)?;
            return Ok(TokenIdentity::User {
                user,
                channel: None,
            });
        }
        if let Some(sso) = self.sso_identity(snap, token, now)? {
            return Ok(TokenIdentity::Sso(sso));
        }
        self.verify_with(token, now, |v| {
            let user = self.identify(v, snap.tenant_id(), snap.view())?;
            Ok(TokenIdentity::User {
                user,
                channel: session_channel(v),
            })
        })?
    }

    /// Verifies `token` (signature, algorithm, time window, issuer, audience) and calls `f` with
    /// its claims. Tenant and user checks are [`Tokens::identify`]'s.
    pub fn verify_with<R>(
        &self,
        token: &str,
        now: i64,
        f: impl FnOnce(&Verified<'_, '_>) -> R,
    ) -> Result<R, TokenError> {
        let mut stack = [0u8; STACK];
        let mut heap = Vec::new();
        let v = self.verify(token, now, &mut stack, &mut heap)?;
        Ok(f(&v))
    }

    fn verify<'a>(
        &'a self,
        token: &str,
        now: i64,
        stack: &'a mut [u8; STACK],
        heap: &'a mut Vec<u8>,
    ) -> Result<Verified<'a, 'a>, TokenError> {
        if self.keys.is_empty() {
            return Err(TokenError::NotConfigured);
        }
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > self.max_bytes {
            return Err(TokenError::TooLong(self.max_bytes));
        }
        let (signing_input, sig_b64) = token
            .rsplit_once('.')
            .ok_or_else(|| malformed("not three dot-separated parts"))?;
        let (header_b64, payload_b64) = signing_input
            .split_once('.')
            .ok_or_else(|| malformed("not three dot-separated parts"))?;
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
            self.select(&header)?
        };
        // Asymmetric signatures cost tens of microseconds: a token verified before is found in
        // the cache by its whole text (so a reused signature over other claims never hits).
        if key.alg == Alg::Hs256 || !self.verified.contains(token) {
            self.check_signature(key, signing_input.as_bytes(), sig_b64)?;
            if key.alg != Alg::Hs256 {
                self.verified.insert(token);
            }
        }
        let payload = b64(payload_b64, stack, heap, "payload")?;
        let claims = ClaimsSeed {
            subject: &self.subject_claim,
            tenant: &self.tenant_claim,
            audience: self.audience.as_deref(),
        }
        .deserialize(&mut serde_json::Deserializer::from_slice(payload))
        .map_err(|e| malformed(&format!("claims: {e}")))?;
        if key.session {
            self.check_times(&claims, now, SESSION_MAX_LIFETIME)?;
            let want = crate::identity::session::ISSUER;
            if claims.iss.as_deref() != Some(want) {
                return Err(TokenError::Issuer(want.to_string()));
            }
            return Ok(Verified { claims, key });
        }
        self.check_times(&claims, now, self.max_lifetime)?;
        if let Some(want) = &self.issuer {
            if claims.iss.as_deref() != Some(&**want) {
                return Err(TokenError::Issuer(want.to_string()));
            }
        }
        if let Some(want) = &self.audience {
            if claims.aud_ok != Some(true) {
                return Err(TokenError::Audience(want.to_string()));
            }
        }
        Ok(Verified { claims, key })
    }

    fn select(&self, header: &Header) -> Result<&Key, TokenError> {
        let Some(alg) = Alg::parse(&header.alg) else {
            return Err(TokenError::Algorithm(clip(&header.alg)));
        };
        match header.kid.as_deref() {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or_else(|| TokenError::UnknownKid(clip(kid)))?;
                if key.alg != alg {
                    return Err(TokenError::AlgorithmMismatch {
                        got: alg.name().to_string(),
                        kid: clip(kid),
                        want: key.alg.name(),
                    });
                }
                Ok(key)
            }
            None => {
                // Session keys are chosen by kid only.
                let mut found = self.keys.iter().filter(|k| k.alg == alg && !k.session);
                match (found.next(), found.count()) {
                    (Some(k), 0) => Ok(k),
                    (Some(_), n) => Err(TokenError::AmbiguousKey(n + 1)),
                    (None, _) => Err(TokenError::Algorithm(alg.name().to_string())),
                }
            }
        }
    }

    fn check_signature(&self, key: &Key, input: &[u8], sig_b64: &str) -> Result<(), TokenError> {
        let mut buf = [0u8; 512];
        let mut big = Vec::new();
        let sig = b64(sig_b64, &mut buf, &mut big, "signature")?;
        let ok = match &key.verifier {
            Verifier::Hs256(mac) => {
                let mut mac = (**mac).clone();
                mac.update(input);
                mac.verify_slice(sig).is_ok()
            }
            Verifier::Rs256 { key, size } => {
                use rsa::signature::Verifier as _;
                sig.len() == *size
                    && rsa::pkcs1v15::Signature::try_from(sig)
                        .is_ok_and(|s| key.verify(input, &s).is_ok())
            }
            Verifier::EdDsa(key) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| key.verify_strict(input, &s).is_ok()),
        };
        if ok {
            Ok(())
        } else {
            Err(TokenError::Signature)
        }
    }

    fn check_times(&self, c: &Claims, now: i64, max_lifetime: i64) -> Result<(), TokenError> {
        let exp = c
            .exp
            .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        if now > exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired(exp));
        }
        // An `exp` far in the future is a token that can never be expired: bounded from now
        // (with leeway) and from `iat` when present.
        let from_now = exp.saturating_sub(now.saturating_add(self.leeway));
        let from_iat = c.iat.map_or(0, |iat| exp.saturating_sub(iat));
        if from_now > max_lifetime || from_iat > max_lifetime {
            return Err(TokenError::LifetimeTooLong(exp, max_lifetime));
        }
        if let Some(nbf) = c.nbf {
            if nbf > now.saturating_add(self.leeway) {
                return Err(TokenError::NotYetValid(nbf));
            }
        }
        if let Some(iat) = c.iat {
            if iat > now.saturating_add(self.leeway) {
                return Err(TokenError::IssuedInFuture(iat));
            }
        }
        Ok(())
    }

    /// Checks a verified token against a tenant's snapshot: the token is for `tenant`, its key
    /// may sign for it, and its subject is an active user whose sessions were not revoked after
    /// the token was issued. Returns the user id, borrowed from the snapshot.
    pub fn identify<'s>(
        &self,
        v: &Verified,
        tenant: &str,
        view: &'s ArchivedTenantSnap,
    ) -> Result<&'s str, TokenError> {
        self.check_tenant(v, tenant)?;
        let c = &v.claims;
        let sub = c
            .subject
            .as_deref()
            .ok_or_else(|| TokenError::MissingClaim(self.subject_claim.to_string()))?;
        let user = crate::decide::active_user(view, sub).map_err(|r| match r {
            Reason::SubjectDeleted => TokenError::UserDeleted(clip(sub)),
            Reason::SubjectInactive => TokenError::UserInactive(clip(sub)),
            _ => TokenError::UnknownUser(clip(sub)),
        })?;
        let epoch = user.session_epoch.to_native();
        if v.key.session {
            // A Portcullis session: not logged out, opened at the user's current epoch, and a
            // guest token for a guest (and only for one).
            let sid = c
                .sid
                .as_deref()
                .ok_or_else(|| TokenError::MissingClaim("sid".into()))?;
            if view.revoked_sessions.contains_key(sid) || c.sep != Some(epoch) {
                return Err(TokenError::Revoked(clip(sub)));
            }
            let guest_token = c.knd.as_deref() == Some("guest");
            if guest_token != (user.kind == crate::snapshot::KIND_GUEST) {
                return Err(TokenError::Revoked(clip(sub)));
            }
            return Ok(user.id.as_str());
        }
        if epoch > 0 {
            // A token without `iat` cannot prove it is newer than the epoch. `iat` has
            // one-second granularity: a token issued in the very second of a revocation may
            // predate it, so it is refused too (it would otherwise live again after a
            // re-activation in that second).
            let iat = c.iat.unwrap_or(i64::MIN);
            if iat <= i64::try_from(epoch).unwrap_or(i64::MAX) {
                return Err(TokenError::Revoked(clip(sub)));
            }
        }
        Ok(user.id.as_str())
    }

    /// Is a verified token good for `tenant` (its tenant claim, its key's tenants)?
    pub fn check_tenant(&self, v: &Verified, tenant: &str) -> Result<(), TokenError> {
        let c = &v.claims;
        if !v.key.tenants.is_empty() && !v.key.tenants.iter().any(|t| &**t == tenant) {
            return Err(TokenError::KeyTenant {
                kid: v.key.label(),
                tenant: clip(tenant),
            });
        }
        match c.tenant.as_deref() {
            Some(t) if t == tenant => {}
            Some(t) => {
                return Err(TokenError::WrongTenant {
                    token: clip(t),
                    request: clip(tenant),
                })
            }
            // A key limited to tenants may omit the claim (checked above).
            None if !v.key.tenants.is_empty() => {}
            None => return Err(TokenError::MissingClaim(self.tenant_claim.to_string())),
        }
        Ok(())
    }
}

/// Tokens whose asymmetric signature verified: a fixed table of slots indexed by a keyed hash
/// of the token, each holding one token's text. A lookup is one atomic load and a comparison;
/// an insert replaces the slot's previous token. Entries need no expiry of their own: the
/// claims (and `exp`) are checked on every use, hit or miss.
struct SigCache {
    slots: Box<[arc_swap::ArcSwapOption<Box<str>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl SigCache {
    const SLOTS: usize = 4096;

    fn new() -> SigCache {
        SigCache {
            slots: (0..Self::SLOTS)
                .map(|_| arc_swap::ArcSwapOption::empty())
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn slot(&self, token: &str) -> &arc_swap::ArcSwapOption<Box<str>> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(token) as usize;
        &self.slots[h % self.slots.len()]
    }

    fn contains(&self, token: &str) -> bool {
        self.slot(token)
            .load()
            .as_deref()
            .is_some_and(|t| **t == *token)
    }

    fn insert(&self, token: &str) {
        self.slot(token)
            .store(Some(std::sync::Arc::new(token.into())));
    }
}

/// The user an API key (`pck_<id>_<secret>`) stands for in a tenant's snapshot, and the key id:
/// the key must exist (not revoked), not be expired, its secret must match, and its user be
/// active.
pub fn api_key_user<'s, 'k>(
    view: &'s ArchivedTenantSnap,
    key: &'k str,
    now: i64,
) -> Result<(&'s str, &'k str), TokenError> {
    let (id, secret) =
        crate::identity::secret::parse_api_key(key).ok_or_else(|| malformed("not an API key"))?;
    let rec = view
        .api_keys
        .get(id)
        .ok_or_else(|| TokenError::UnknownKey(clip(id)))?;
    if !crate::identity::secret::api_key_matches(secret, &rec.sha256) {
        return Err(TokenError::UnknownKey(clip(id)));
    }
    if rec.expires.to_native() <= now {
        return Err(TokenError::Expired(rec.expires.to_native()));
    }
    let user = view
        .users
        .get(rec.user.to_native() as usize)
        .ok_or_else(|| TokenError::UnknownKey(clip(id)))?;
    match user.status {
        crate::snapshot::STATUS_ACTIVE => Ok((user.id.as_str(), id)),
        crate::snapshot::STATUS_DELETED => Err(TokenError::UserDeleted(clip(&user.id))),
        _ => Err(TokenError::UserInactive(clip(&user.id))),
    }
}

pub(super) fn malformed(what: &str) -> TokenError {
    TokenError::Malformed(what.to_string())
}

/// Base64url (no padding, canonical) into `stack`, or `heap` when it does not fit.
pub(super) fn b64<'b>(
    input: &str,
    stack: &'b mut [u8],
    heap: &'b mut Vec<u8>,
    part: &str,
) -> Result<&'b [u8], TokenError> {
    let est = input.len().div_ceil(4) * 3;
    let out: &'b mut [u8] = if est <= stack.len() {
        stack
    } else {
        heap.resize(est, 0);
        heap
    };
    let n = URL_SAFE_NO_PAD
        .decode_slice(input, &mut *out)
        .map_err(|_| malformed(&format!("{part} is not base64url")))?;
    Ok(&out[..n])
}

fn load_key(k: &KeyConfig) -> Result<Key, String> {
    let alg = Alg::parse(&k.alg).ok_or_else(|| {
        format!(
            "alg '{}' is not supported (use HS256, RS256 or EdDSA)",
            k.alg
        )
    })?;
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read '{}': {e}", p.display()))
    };
    let verifier = match alg {
        Alg::Hs256 => {
            if k.public_key.is_some() || k.public_key_file.is_some() {
                return Err("HS256 takes 'secret' or 'secret_file', not a public key".into());
            }
            let secret = match (&k.secret, &k.secret_file) {
                (Some(s), None) => s.0.clone(),
                (None, Some(p)) => read(p)?.trim().to_string(),
                _ => return Err("give exactly one of 'secret' or 'secret_file'".into()),
            };
            if secret.len() < 32 {
                return Err(format!(
                    "HS256 secret is {} bytes; use at least 32",
                    secret.len()
                ));
            }
            let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .map_err(|e| format!("HS256 secret: {e}"))?;
            Verifier::Hs256(Box::new(mac))
        }
        Alg::Rs256 | Alg::EdDsa => {
            if k.secret.is_some() || k.secret_file.is_some() {
                return Err(format!(
                    "{} takes 'public_key' or 'public_key_file' (PEM), not a secret",
                    alg.name()
                ));
            }
            let pem = match (&k.public_key, &k.public_key_file) {
                (Some(s), None) => s.clone(),
                (None, Some(p)) => read(p)?,
                _ => return Err("give exactly one of 'public_key' or 'public_key_file'".into()),
            };
            let pem = pem.trim();
            if alg == Alg::Rs256 {
                rsa_key(pem)?
            } else {
                use ed25519_dalek::pkcs8::DecodePublicKey;
                let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
                    .map_err(|e| format!("not an Ed25519 public key in PEM: {e}"))?;
                Verifier::EdDsa(Box::new(key))
            }
        }
    };
    if k.tenants.iter().any(String::is_empty) {
        return Err("tenants must not contain an empty id".into());
    }
    Ok(Key {
        kid: k.kid.as_deref().map(Into::into),
        alg,
        verifier,
        tenants: k.tenants.iter().map(|t| t.as_str().into()).collect(),
        session: false,
    })
}

fn rsa_key(pem: &str) -> Result<Verifier, String> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    let key = if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        rsa::PublicKey::from_pkcs1_pem(pem).map_err(|e| format!("not an RSA public key: {e}"))?
    } else {
        rsa::PublicKey::from_public_key_pem(pem)
            .map_err(|e| format!("not an RSA public key in PEM: {e}"))?
    };
    let bits = key.n().bit_width();
    if bits < 2048 {
        return Err(format!("RSA key has {bits} bits; use at least 2048"));
    }
    let size = key.size();
    Ok(Verifier::Rs256 {
        key: Box::new(rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key)),
        size,
    })
}

#[derive(Deserialize)]
pub(super) struct Header<'a> {
    #[serde(borrow)]
    pub(super) alg: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) kid: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) crit: Option<IgnoredAny>,
}

/// A string borrowed from the input when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON NumericDate: integer or fractional seconds, floored.
pub(super) struct NumericDate(pub(super) i64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NumericDate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumericDate, E> {
                Ok(NumericDate(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
                Ok(NumericDate(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumericDate, E> {
                if v.is_finite() {
                    // `as` saturates at the i64 bounds.
                    Ok(NumericDate(v.floor() as i64))
                } else {
                    Err(E::custom("not a finite number"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `aud`: a string or a list of strings; true when it contains the expected audience.
struct AudSeed<'c>(Option<&'c str>);

impl<'de> DeserializeSeed<'de> for AudSeed<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AudSeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(self.0 == Some(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(s) = seq.next_element::<CowStr>()? {
            found |= self.0 == Some(&*s.0);
        }
        Ok(found)
    }
}

/// Reads the claims we need, borrowing strings; duplicate claims are refused.
struct ClaimsSeed<'c> {
    subject: &'c str,
    tenant: &'c str,
    audience: Option<&'c str>,
}

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = Claims<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Claims<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = Claims<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims<'de>, A::Error> {
        fn once<T, E: de::Error>(slot: &mut Option<T>, v: T, name: &str) -> Result<(), E> {
            if slot.is_some() {
                return Err(E::custom(format!("duplicate claim '{name}'")));
            }
            *slot = Some(v);
            Ok(())
        }
        let mut c = Claims::default();
        while let Some(key) = map.next_key::<CowStr>()? {
            let k = &*key.0;
            if k == self.subject {
                let v = map.next_value::<CowStr>()?;
                once(&mut c.subject, v.0, k)?;
            } else if k == self.tenant {
                let v = map.next_value::<CowStr>()?;
                once(&mut c.tenant, v.0, k)?;
            } else {
                match k {
                    "exp" => once(&mut c.exp, map.next_value::<NumericDate>()?.0, k)?,
                    "nbf" => once(&mut c.nbf, map.next_value::<NumericDate>()?.0, k)?,
                    "iat" => once(&mut c.iat, map.next_value::<NumericDate>()?.0, k)?,
                    "iss" => once(&mut c.iss, map.next_value::<CowStr>()?.0, k)?,
                    "sid" => once(&mut c.sid, map.next_value::<CowStr>()?.0, k)?,
                    "sep" => once(&mut c.sep, map.next_value::<u64>()?, k)?,
                    "ch" => once(&mut c.ch, map.next_value::<CowStr>()?.0, k)?,
                    "knd" => once(&mut c.knd, map.next_value::<CowStr>()?.0, k)?,
                    "aud" => {
                        let ok = map.next_value_seed(AudSeed(self.audience))?;
                        once(&mut c.aud_ok, ok, k)?;
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
        }
        Ok(c)
    }
}

/// Signs HS256/RS256/EdDSA tokens: for tests, demos and the `portcullis token` command.
pub mod sign {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    /// Key material for signing.
    pub enum SigningKey<'a> {
        /// HS256 shared secret.
        Hs256(&'a [u8]),
        /// RS256 private key, PKCS#8 PEM (`PRIVATE KEY`) or PKCS#1 PEM (`RSA PRIVATE KEY`).
        Rs256Pem(&'a str),
        /// Ed25519 private key, PKCS#8 PEM.
        EdDsaPem(&'a str),
    }

    /// A compact JWS with header `{"alg", "typ": "JWT", "kid"?}` over `claims` (JSON).
    pub fn sign(key: &SigningKey, kid: Option<&str>, claims: &str) -> Result<String, String> {
        let alg = match key {
            SigningKey::Hs256(_) => "HS256",
            SigningKey::Rs256Pem(_) => "RS256",
            SigningKey::EdDsaPem(_) => "EdDSA",
        };
        let mut header = serde_json::json!({ "alg": alg, "typ": "JWT" });
        if let (Some(kid), Some(h)) = (kid, header.as_object_mut()) {
            h.insert("kid".into(), kid.into());
        }
        sign_raw(key, &header.to_string(), claims)
    }

    /// Like [`sign`] with a header given verbatim (tests use it to forge odd headers).
    pub fn sign_raw(key: &SigningKey, header: &str, claims: &str) -> Result<String, String> {
        let mut out = URL_SAFE_NO_PAD.encode(header);
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let sig = match key {
            SigningKey::Hs256(secret) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
                mac.update(out.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            SigningKey::Rs256Pem(pem) => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                use rsa::pkcs8::DecodePrivateKey;
                use rsa::signature::{SignatureEncoding, Signer};
                let key = if pem.contains("BEGIN RSA PRIVATE KEY") {
                    rsa::PrivateKey::from_pkcs1_pem(pem).map_err(|e| e.to_string())?
                } else {
                    rsa::PrivateKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())?
                };
                let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
                signer
                    .try_sign(out.as_bytes())
                    .map_err(|e| e.to_string())?
                    .to_vec()
            }
            SigningKey::EdDsaPem(pem) => {
                use ed25519_dalek::pkcs8::DecodePrivateKey;
                use ed25519_dalek::Signer;
                let key =
                    ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())?;
                key.sign(out.as_bytes()).to_bytes().to_vec()
            }
        };
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::sign::{sign, sign_raw, SigningKey};
    use super::*;
    use crate::model::file;
    use hyper::StatusCode;

    const NOW: i64 = 1_700_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const SECRET2: &[u8] = b"fedcba9876543210fedcba9876543210";
    const RSA1: &str = include_str!("testdata/rsa1.key");
    const RSA1_PUB: &str = include_str!("testdata/rsa1.pub");
    const RSA1_PKCS1_PUB: &str = include_str!("testdata/rsa1.pkcs1.pub");
    const RSA2: &str = include_str!("testdata/rsa2.key");
    const RSA1024_PUB: &str = include_str!("testdata/rsa1024.pub");
    const ED1: &str = include_str!("testdata/ed1.key");
    const ED1_PUB: &str = include_str!("testdata/ed1.pub");
    const ED2: &str = include_str!("testdata/ed2.key");

    const DATA: &str = r#"
tenants:
  - id: acme
    rbac: basic
    nodes: [{ id: acme, kind: organisation }]
    users:
      - { id: alice, email: alice@acme.example }
      - { id: ivan, email: ivan@acme.example, status: inactive }
      - { id: dora, email: dora@acme.example, status: deleted }
      - { id: rita, email: rita@acme.example, session_epoch: 1700000500 }
  - id: other
    nodes: [{ id: other, kind: organisation }]
    users:
      - { id: alice, email: alice@other.example }
"#;

    fn snap(tenant: &str) -> Snapshot {
        let data = file::load_str(DATA).unwrap();
        let t = data.tenants.iter().find(|t| t.id == tenant).unwrap();
        Snapshot::build(t).unwrap()
    }

    fn hs(kid: Option<&str>, secret: &str) -> KeyConfig {
        KeyConfig {
            kid: kid.map(Into::into),
            alg: "HS256".into(),
            secret: Some(crate::server::config::Secret(secret.into())),
            secret_file: None,
            public_key: None,
            public_key_file: None,
            tenants: Vec::new(),
        }
    }

    fn public(kid: Option<&str>, alg: &str, pem: &str) -> KeyConfig {
        KeyConfig {
            kid: kid.map(Into::into),
            alg: alg.into(),
            secret: None,
            secret_file: None,
            public_key: Some(pem.into()),
            public_key_file: None,
            tenants: Vec::new(),
        }
    }

    fn tokens(keys: Vec<KeyConfig>) -> Tokens {
        Tokens::new(&TokensConfig {
            keys,
            ..TokensConfig::default()
        })
        .unwrap()
    }

    fn std_tokens() -> Tokens {
        tokens(vec![
            hs(Some("hs"), std::str::from_utf8(SECRET).unwrap()),
            public(Some("rs"), "RS256", RSA1_PUB),
            public(Some("ed"), "EdDSA", ED1_PUB),
        ])
    }

    fn claims(sub: &str, tenant: &str) -> serde_json::Value {
        serde_json::json!({ "sub": sub, "tenant": tenant, "iat": NOW - 10, "exp": NOW + 600 })
    }

    fn with(mut c: serde_json::Value, k: &str, v: serde_json::Value) -> serde_json::Value {
        c.as_object_mut().unwrap().insert(k.into(), v);
        c
    }

    fn without(mut c: serde_json::Value, k: &str) -> serde_json::Value {
        c.as_object_mut().unwrap().remove(k);
        c
    }

    fn tok(key: &SigningKey, kid: Option<&str>, c: &serde_json::Value) -> String {
        sign(key, kid, &c.to_string()).unwrap()
    }

    fn check(t: &Tokens, tenant: &str, token: &str) -> Result<String, TokenError> {
        let s = snap(tenant);
        t.subject_for(&s, token, NOW).map(str::to_string)
    }

    /// Refused, answered as 401 with a message containing `needle`.
    fn refused(r: Result<String, TokenError>, needle: &str) {
        let e = r.expect_err("token must be refused");
        let api = ApiError::from(e.clone());
        assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{e}");
        assert_eq!(api.code, "unauthenticated");
        assert!(
            api.message.contains(needle),
            "message '{}' lacks '{needle}'",
            api.message
        );
    }

    #[test]
    fn every_algorithm_verifies() {
        let t = std_tokens();
        let c = claims("alice", "acme");
        let hs = tok(&SigningKey::Hs256(SECRET), Some("hs"), &c);
        let rs = tok(&SigningKey::Rs256Pem(RSA1), Some("rs"), &c);
        let ed = tok(&SigningKey::EdDsaPem(ED1), Some("ed"), &c);
        for token in [hs, rs, ed] {
            assert_eq!(check(&t, "acme", &token).unwrap(), "alice");
        }
    }

    #[test]
    fn keys_without_kid_are_chosen_by_algorithm() {
        let t = tokens(vec![
            hs(None, std::str::from_utf8(SECRET).unwrap()),
            public(None, "RS256", RSA1_PKCS1_PUB),
            public(None, "EdDSA", ED1_PUB),
        ]);
        let c = claims("alice", "acme");
        for key in [
            SigningKey::Hs256(SECRET),
            SigningKey::Rs256Pem(RSA1),
            SigningKey::EdDsaPem(ED1),
        ] {
            assert_eq!(check(&t, "acme", &tok(&key, None, &c)).unwrap(), "alice");
        }
    }

    #[test]
    fn kid_selects_among_keys_of_one_algorithm() {
        let t = tokens(vec![
            hs(Some("k1"), std::str::from_utf8(SECRET).unwrap()),
            hs(Some("k2"), std::str::from_utf8(SECRET2).unwrap()),
        ]);
        let c = claims("alice", "acme");
        let k2 = SigningKey::Hs256(SECRET2);
        assert_eq!(
            check(&t, "acme", &tok(&k2, Some("k2"), &c)).unwrap(),
            "alice"
        );
        refused(
            check(&t, "acme", &tok(&k2, Some("k1"), &c)),
            "invalid token signature",
        );
        refused(
            check(&t, "acme", &tok(&k2, Some("k9"), &c)),
            "key id 'k9' is unknown",
        );
        refused(
            check(&t, "acme", &tok(&k2, None, &c)),
            "no 'kid' and 2 keys",
        );
    }

    #[test]
    fn wrong_key_is_refused() {
        let t = std_tokens();
        let c = claims("alice", "acme");
        for (key, kid) in [
            (SigningKey::Hs256(SECRET2), "hs"),
            (SigningKey::Rs256Pem(RSA2), "rs"),
            (SigningKey::EdDsaPem(ED2), "ed"),
        ] {
            refused(
                check(&t, "acme", &tok(&key, Some(kid), &c)),
                "invalid token signature",
            );
        }
    }

    #[test]
    fn tampered_claims_are_refused() {
        let t = std_tokens();
        let good = tok(
            &SigningKey::Hs256(SECRET),
            Some("hs"),
            &claims("alice", "acme"),
        );
        let forged = URL_SAFE_NO_PAD.encode(claims("dana", "acme").to_string());
        let parts: Vec<&str> = good.split('.').collect();
        let token = format!("{}.{}.{}", parts[0], forged, parts[2]);
        refused(check(&t, "acme", &token), "invalid token signature");
    }

    #[test]
    fn alg_none_is_refused() {
        let t = std_tokens();
        let c = URL_SAFE_NO_PAD.encode(claims("alice", "acme").to_string());
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"none","kid":"hs"}"#,
            r#"{"alg":"None"}"#,
        ] {
            let token = format!("{}.{c}.", URL_SAFE_NO_PAD.encode(header));
            let r = check(&t, "acme", &token);
            refused(r, "is not accepted");
        }
        // Other algorithms we do not implement are refused the same way.
        let hs512 = sign_raw(
            &SigningKey::Hs256(SECRET),
            r#"{"alg":"HS512","kid":"hs"}"#,
            &claims("alice", "acme").to_string(),
        )
        .unwrap();
        refused(check(&t, "acme", &hs512), "'HS512' is not accepted");
    }

    #[test]
    fn hs_rs_confusion_is_refused() {
        // The classic attack: sign HS256 with the RSA public key's PEM text as the secret.
        let t = tokens(vec![public(Some("rs"), "RS256", RSA1_PUB)]);
        let c = claims("alice", "acme");
        let forged_key = SigningKey::Hs256(RSA1_PUB.as_bytes());
        refused(
            check(&t, "acme", &tok(&forged_key, Some("rs"), &c)),
            "does not match the algorithm of key 'rs' (RS256)",
        );
        refused(
            check(&t, "acme", &tok(&forged_key, None, &c)),
            "'HS256' is not accepted",
        );
        // And the other way round: an RS256 token against an HS256 key id.
        let t = std_tokens();
        refused(
            check(
                &t,
                "acme",
                &tok(&SigningKey::Rs256Pem(RSA1), Some("hs"), &c),
            ),
            "does not match the algorithm of key 'hs' (HS256)",
        );
        // EdDSA signature presented as RS256.
        let ed = tok(&SigningKey::EdDsaPem(ED1), Some("ed"), &c);
        let parts: Vec<&str> = ed.split('.').collect();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"rs"}"#);
        refused(
            check(&t, "acme", &format!("{header}.{}.{}", parts[1], parts[2])),
            "invalid token signature",
        );
    }

    #[test]
    fn time_window_is_checked_with_leeway() {
        let t = std_tokens();
        let key = SigningKey::Hs256(SECRET);
        let c = claims("alice", "acme");
        refused(
            check(
                &t,
                "acme",
                &tok(
                    &key,
                    Some("hs"),
                    &with(c.clone(), "exp", (NOW - 100).into()),
                ),
            ),
            "token expired at 1699999900",
        );
        // Within the 30 s leeway.
        assert!(check(
            &t,
            "acme",
            &tok(&key, Some("hs"), &with(c.clone(), "exp", (NOW - 10).into()))
        )
        .is_ok());
        refused(
            check(
                &t,
                "acme",
                &tok(
                    &key,
                    Some("hs"),
                    &with(c.clone(), "nbf", (NOW + 100).into()),
                ),
            ),
            "not valid before 1700000100",
        );
        assert!(check(
            &t,
            "acme",
            &tok(&key, Some("hs"), &with(c.clone(), "nbf", (NOW + 10).into()))
        )
        .is_ok());
        refused(
            check(
                &t,
                "acme",
                &tok(
                    &key,
                    Some("hs"),
                    &with(c.clone(), "iat", (NOW + 100).into()),
                ),
            ),
            "issued in the future",
        );
        refused(
            check(
                &t,
                "acme",
                &tok(&key, Some("hs"), &without(c.clone(), "exp")),
            ),
            "no 'exp' claim",
        );
        // `exp` is bounded: at most `max_lifetime_seconds` (30 days) after now and after `iat`.
        let month = 86_400 * 30;
        refused(
            check(
                &t,
                "acme",
                &tok(
                    &key,
                    Some("hs"),
                    &with(c.clone(), "exp", (NOW + 40 * month).into()),
                ),
            ),
            "lifetime is too long",
        );
        let old = with(c.clone(), "iat", (NOW - month).into());
        refused(
            check(
                &t,
                "acme",
                &tok(&key, Some("hs"), &with(old, "exp", (NOW + 60).into())),
            ),
            "lifetime is too long",
        );
        assert!(check(
            &t,
            "acme",
            &tok(
                &key,
                Some("hs"),
                &with(c.clone(), "exp", (NOW + month - 60).into())
            )
        )
        .is_ok());
        // NumericDate may be fractional.
        let frac = with(c, "exp", serde_json::json!(NOW as f64 + 0.5));
        assert!(check(&t, "acme", &tok(&key, Some("hs"), &frac)).is_ok());
    }

    #[test]
    fn tenant_must_match() {
        let t = std_tokens();
        let key = SigningKey::Hs256(SECRET);
        let for_other = tok(&key, Some("hs"), &claims("alice", "other"));
        assert_eq!(check(&t, "other", &for_other).unwrap(), "alice");
        refused(
            check(&t, "acme", &for_other),
            "token is for tenant 'other', not 'acme'",
        );
        refused(
            check(
                &t,
                "acme",
                &tok(
                    &key,
                    Some("hs"),
                    &without(claims("alice", "acme"), "tenant"),
                ),
            ),
            "no 'tenant' claim",
        );
    }

    #[test]
    fn key_limited_to_tenants() {
        let mut k = hs(Some("hs"), std::str::from_utf8(SECRET).unwrap());
        k.tenants = vec!["other".into()];
        let t = tokens(vec![k]);
        let key = SigningKey::Hs256(SECRET);
        refused(
            check(&t, "acme", &tok(&key, Some("hs"), &claims("alice", "acme"))),
            "key 'hs' may not sign tokens for tenant 'acme'",
        );
        // Such a key may omit the tenant claim.
        let c = without(claims("alice", "other"), "tenant");
        assert_eq!(
            check(&t, "other", &tok(&key, Some("hs"), &c)).unwrap(),
            "alice"
        );
    }

    #[test]
    fn users_must_exist_and_be_active() {
        let t = std_tokens();
        let key = SigningKey::Hs256(SECRET);
        let go = |sub: &str| check(&t, "acme", &tok(&key, Some("hs"), &claims(sub, "acme")));
        refused(go("nobody"), "unknown user 'nobody'");
        refused(go("ivan"), "user 'ivan' is inactive");
        refused(go("dora"), "user 'dora' is deleted");
        refused(
            check(
                &t,
                "acme",
                &tok(&key, Some("hs"), &without(claims("alice", "acme"), "sub")),
            ),
            "no 'sub' claim",
        );
    }

    #[test]
    fn tokens_older_than_the_session_epoch_are_revoked() {
        let t = std_tokens();
        let key = SigningKey::Hs256(SECRET);
        let s = snap("acme");
        // Rita's sessions were revoked at 1700000500; the clock is a minute later.
        let (epoch, now) = (1_700_000_500, 1_700_000_560);
        let c = serde_json::json!({ "sub": "rita", "tenant": "acme", "exp": now + 600 });
        let go = |c: &serde_json::Value| {
            t.subject_for(&s, &tok(&key, Some("hs"), c), now)
                .map(str::to_string)
        };
        refused(
            go(&with(c.clone(), "iat", (epoch - 1).into())),
            "user 'rita' signed out, or their sessions were revoked",
        );
        // Without iat a token cannot prove it is newer.
        refused(go(&c), "were revoked");
        // Issued in the second of the revocation: it may predate it, so it is refused.
        refused(go(&with(c.clone(), "iat", epoch.into())), "were revoked");
        assert_eq!(
            go(&with(c.clone(), "iat", (epoch + 1).into())).unwrap(),
            "rita"
        );
        assert_eq!(go(&with(c, "iat", (epoch + 30).into())).unwrap(), "rita");
    }

    #[test]
    fn issuer_and_audience() {
        let t = Tokens::new(&TokensConfig {
            keys: vec![hs(None, std::str::from_utf8(SECRET).unwrap())],
            issuer: Some("https://idp.example".into()),
            audience: Some("portcullis".into()),
            ..TokensConfig::default()
        })
        .unwrap();
        let key = SigningKey::Hs256(SECRET);
        let c = with(claims("alice", "acme"), "iss", "https://idp.example".into());
        let ok1 = with(c.clone(), "aud", "portcullis".into());
        let ok2 = with(c.clone(), "aud", serde_json::json!(["other", "portcullis"]));
        assert!(check(&t, "acme", &tok(&key, None, &ok1)).is_ok());
        assert!(check(&t, "acme", &tok(&key, None, &ok2)).is_ok());
        refused(
            check(&t, "acme", &tok(&key, None, &c)),
            "audience does not include 'portcullis'",
        );
        let bad = with(c.clone(), "aud", serde_json::json!(["other"]));
        refused(check(&t, "acme", &tok(&key, None, &bad)), "audience");
        let bad = with(ok1, "iss", "https://evil.example".into());
        refused(
            check(&t, "acme", &tok(&key, None, &bad)),
            "issuer is not 'https://idp.example'",
        );
    }

    #[test]
    fn custom_claim_names() {
        let t = Tokens::new(&TokensConfig {
            keys: vec![hs(None, std::str::from_utf8(SECRET).unwrap())],
            subject_claim: "uid".into(),
            tenant_claim: "org".into(),
            ..TokensConfig::default()
        })
        .unwrap();
        let key = SigningKey::Hs256(SECRET);
        let c =
            serde_json::json!({ "uid": "alice", "org": "acme", "sub": "ignored", "exp": NOW + 60 });
        assert_eq!(check(&t, "acme", &tok(&key, None, &c)).unwrap(), "alice");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let t = std_tokens();
        let good = tok(
            &SigningKey::Hs256(SECRET),
            Some("hs"),
            &claims("alice", "acme"),
        );
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            ("", "missing bearer token"),
            ("abc", "three dot-separated parts"),
            ("a.b", "three dot-separated parts"),
            ("a.b.c.d.e", "more than three parts"),
            ("!!.b.c", "header is not base64url"),
            (
                &*format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
                "not base64url",
            ),
            (
                &*format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
                "signature is not base64url",
            ),
            (
                &*format!("{}.{}.", parts[0], parts[1]),
                "invalid token signature",
            ),
            (
                &*format!("{}.{}", URL_SAFE_NO_PAD.encode("[]"), "x.y"),
                "header",
            ),
        ];
        for (token, needle) in cases {
            refused(check(&t, "acme", token), needle);
        }
        let long = "a".repeat(9000);
        refused(check(&t, "acme", &long), "longer than 8192 bytes");
        // crit extensions are refused.
        let crit = sign_raw(
            &SigningKey::Hs256(SECRET),
            r#"{"alg":"HS256","kid":"hs","crit":["exp"]}"#,
            &claims("alice", "acme").to_string(),
        )
        .unwrap();
        refused(check(&t, "acme", &crit), "crit");
        // Duplicate claims are refused (no parser differentials).
        let dup = sign_raw(
            &SigningKey::Hs256(SECRET),
            r#"{"alg":"HS256","kid":"hs"}"#,
            &format!(
                r#"{{"sub":"ivan","sub":"alice","tenant":"acme","exp":{}}}"#,
                NOW + 60
            ),
        )
        .unwrap();
        refused(check(&t, "acme", &dup), "duplicate claim 'sub'");
        let num = sign_raw(
            &SigningKey::Hs256(SECRET),
            r#"{"alg":"HS256","kid":"hs"}"#,
            &format!(r#"{{"sub":7,"tenant":"acme","exp":{}}}"#, NOW + 60),
        )
        .unwrap();
        refused(check(&t, "acme", &num), "claims");
    }

    #[test]
    fn without_keys_every_token_is_refused() {
        let t = Tokens::default();
        let token = tok(&SigningKey::Hs256(SECRET), None, &claims("alice", "acme"));
        refused(check(&t, "acme", &token), "not configured");
    }

    #[test]
    fn bad_keys_are_clear_config_errors() {
        let err = |k: KeyConfig| {
            Tokens::new(&TokensConfig {
                keys: vec![k],
                ..TokensConfig::default()
            })
            .unwrap_err()
            .to_string()
        };
        let e = err(hs(Some("short"), "too short"));
        assert!(
            e.contains("tokens.keys[0] (kid 'short')") && e.contains("at least 32"),
            "{e}"
        );
        let e = err(public(
            None,
            "RS256",
            "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----",
        ));
        assert!(e.contains("not an RSA public key"), "{e}");
        let e = err(public(None, "EdDSA", RSA1_PUB));
        assert!(e.contains("not an Ed25519 public key"), "{e}");
        let e = err(public(None, "RS256", ED1_PUB));
        assert!(e.contains("not an RSA public key"), "{e}");
        let e = err(public(None, "RS256", RSA1024_PUB));
        assert!(e.contains("1024 bits; use at least 2048"), "{e}");
        let e = err(public(None, "ES256", RSA1_PUB));
        assert!(e.contains("alg 'ES256' is not supported"), "{e}");
        let mut k = hs(None, std::str::from_utf8(SECRET).unwrap());
        k.public_key = Some(RSA1_PUB.into());
        assert!(err(k).contains("not a public key"));
        let mut k = public(None, "RS256", RSA1_PUB);
        k.secret = Some(crate::server::config::Secret("x".repeat(40)));
        assert!(err(k).contains("not a secret"));
        let mut k = hs(None, "");
        k.secret = None;
        k.secret_file = Some("/nonexistent/secret".into());
        assert!(err(k).contains("cannot read '/nonexistent/secret'"));
        let e = Tokens::new(&TokensConfig {
            keys: vec![
                hs(Some("a"), &"x".repeat(32)),
                public(Some("a"), "EdDSA", ED1_PUB),
            ],
            ..TokensConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("kid 'a' is used by another key"), "{e}");
    }

    #[test]
    fn keys_load_from_files() {
        let dir = std::env::temp_dir().join(format!("portcullis-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("secret"),
            format!("{}\n", std::str::from_utf8(SECRET).unwrap()),
        )
        .unwrap();
        std::fs::write(dir.join("ed.pub"), ED1_PUB).unwrap();
        let mut a = hs(Some("hs"), "");
        a.secret = None;
        a.secret_file = Some(dir.join("secret"));
        let mut b = public(Some("ed"), "EdDSA", "");
        b.public_key = None;
        b.public_key_file = Some(dir.join("ed.pub"));
        let t = tokens(vec![a, b]);
        std::fs::remove_dir_all(&dir).unwrap();
        let c = claims("alice", "acme");
        assert!(check(&t, "acme", &tok(&SigningKey::Hs256(SECRET), Some("hs"), &c)).is_ok());
        assert!(check(&t, "acme", &tok(&SigningKey::EdDsaPem(ED1), Some("ed"), &c)).is_ok());
        // Secrets never show in Debug output.
        let k = hs(None, "do-not-print-me-do-not-print-me!");
        assert!(!format!("{k:?}").contains("do-not-print"));
    }
}
