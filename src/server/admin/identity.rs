//! Sign-in and credentials over HTTP: sessions (`POST`/`DELETE …/sessions`), user creation with
//! a password or an invitation, password changes, access cards, invitations (accept, webhook),
//! API keys, guests, the JWK set — and who a management caller is ([`Caller`]).
//!
//! Secrets never reach the control plane in clear: passwords and card UIDs are hashed here
//! (argon2id, on the blocking pool) before the tenant is locked; tokens and keys are generated
//! here and only their SHA-256 goes into the write. Writes that end sessions (logout, password
//! change, card removal, guest or key revocation, deactivation, deletion) answer only once this
//! process's snapshot has the change, so the next request with an old token is refused.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::http::{body, respond, written};
use super::writes::Writer;
use crate::control::policy;
use crate::control::rules::{self, LoginCandidate, NewUserSecrets, UserCreate};
use crate::control::{ControlError, ControlPlane, Written};
use crate::identity::secret::{self, parse_api_key, sha256_hex, ApiKeySecret, API_KEY_PREFIX};
use crate::identity::session::{SessionClaims, SessionKind, ISSUER};
use crate::identity::{throttle, SessionKeys, Throttle};
use crate::model::{check_password, Channel, Password, Timestamp, UserKind};
use crate::server::config::SignInConfig;
use crate::server::error::{ApiError, ErrorCode};
use crate::server::{Resp, State};

/// What sign-in needs at run time: the session keys, the throttle, the settings.
pub struct SignIn {
    pub keys: SessionKeys,
    pub throttle: Throttle,
    pub config: SignInConfig,
}

impl SignIn {
    pub fn new(keys: SessionKeys, config: SignInConfig) -> SignIn {
        let throttle = Throttle::new(throttle::Limits {
            per_account: config.max_failures_per_account,
            per_client: config.max_failures_per_client,
            window_seconds: i64::try_from(config.failure_window_seconds).unwrap_or(i64::MAX),
            max_entries: 100_000,
        });
        SignIn {
            keys,
            throttle,
            config,
        }
    }
}

/// The client address of a request (set by the accept loop), for sign-in throttling.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Who calls the management API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The bootstrap (break-glass) token: every tenant, every operation. Audited as `platform`.
    Platform,
    /// An owner or administrator of the platform tenant (`sign_in.platform_tenant`), on another
    /// tenant or a platform-wide path: every tenant, every operation, like the bootstrap token.
    /// Audited as `platform:<tenant>/<user>`.
    PlatformAdmin { tenant: String, user: String },
    /// A user of one tenant, signed in (session token) or with an API key.
    User {
        tenant: String,
        user: String,
        kind: UserKind,
        /// The session id (session tokens).
        session: Option<String>,
        /// The API key id (API keys).
        key: Option<String>,
        channel: Option<Channel>,
    },
}

impl Caller {
    /// The audit actor: `platform`, `alice#console` (a session through the console channel),
    /// `key:0f3a…` (an API key). Audit queries by `actor=alice` find both `alice` and
    /// `alice#…`.
    pub fn actor(&self) -> String {
        match self {
            Caller::Platform => "platform".into(),
            Caller::PlatformAdmin { tenant, user } => format!("platform:{tenant}/{user}"),
            Caller::User { key: Some(k), .. } => format!("key:{k}"),
            Caller::User {
                user,
                channel: Some(c),
                ..
            } => format!("{user}#{}", c.as_str()),
            Caller::User { user, .. } => user.clone(),
        }
    }

    /// The platform: the bootstrap token or a platform administrator (outside the platform
    /// tenant itself).
    pub fn is_platform(&self) -> bool {
        matches!(self, Caller::Platform | Caller::PlatformAdmin { .. })
    }

    /// The user id, for self-service operations.
    pub fn user_in(&self, t: &str) -> Option<&str> {
        match self {
            Caller::User { tenant, user, .. } if tenant == t => Some(user),
            _ => None,
        }
    }
}

/// The bearer token of a request.
fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Identifies a management caller: the bootstrap token, a session token (of `tenant` when the
/// path names one) or an API key of `tenant`. Session tokens and keys are checked against the
/// tenant's live snapshot: revoked sessions, deactivated users and revoked keys are refused.
pub fn authenticate(
    state: &State,
    req: &Request<Incoming>,
    tenant: Option<&str>,
) -> Result<Caller, ApiError> {
    let caller = identify(state, req, tenant)?;
    // The platform tenant's owner and administrators are platform administrators everywhere
    // but in the platform tenant itself (where its own rules apply to them).
    match (&caller, state.config.sign_in.platform_tenant.as_deref()) {
        (
            Caller::User {
                tenant: t,
                user,
                kind: UserKind::Owner | UserKind::Admin,
                ..
            },
            Some(p),
        ) if t == p && tenant != Some(p) => Ok(Caller::PlatformAdmin {
            tenant: t.clone(),
            user: user.clone(),
        }),
        _ => Ok(caller),
    }
}

fn identify(
    state: &State,
    req: &Request<Incoming>,
    tenant: Option<&str>,
) -> Result<Caller, ApiError> {
    let got = bearer(req).ok_or_else(|| ApiError::unauthenticated("missing bearer token"))?;
    if let Some(expected) = state.admin_token.as_deref() {
        if super::http::same_secret(got, expected) {
            return Ok(Caller::Platform);
        }
    }
    let now = state.clock.now();
    if got.starts_with(API_KEY_PREFIX) {
        let platform = state.config.sign_in.platform_tenant.as_deref();
        let key_of = |t: &str| -> Result<_, ApiError> {
            let snap = state
                .registry
                .get(t)
                .ok_or_else(|| ApiError::unauthenticated("invalid bearer token"))?;
            let found = crate::server::tokens::api_key_user(snap.view(), got, now)
                .map(|(u, k)| (u.to_string(), k.to_string()));
            Ok((snap, found?))
        };
        // A key of the path's tenant; else (platform administrators) of the platform tenant.
        let (t, (snap, (user, key))) = match (tenant, platform) {
            (Some(t), Some(p)) if t != p => match key_of(t) {
                Ok(found) => (t, found),
                Err(e) => (p, key_of(p).map_err(|_| e)?),
            },
            (Some(t), _) => (t, key_of(t)?),
            (None, Some(p)) => (p, key_of(p)?),
            (None, None) => {
                return Err(ApiError::unauthenticated(
                    "an API key is accepted on its tenant's paths only",
                ))
            }
        };
        let (user, key) = (user.as_str(), key.as_str());
        let kind = user_kind(snap.view(), user);
        return Ok(Caller::User {
            tenant: t.to_string(),
            user: user.to_string(),
            kind,
            session: None,
            key: Some(key.to_string()),
            channel: None,
        });
    }
    let out = state
        .tokens
        .verify_with(got, now, |v| {
            if !v.is_session() {
                return Err(ApiError::unauthenticated(
                    "the management API accepts the platform token, session tokens and API keys",
                ));
            }
            let t = v
                .claims
                .tenant
                .as_deref()
                .ok_or_else(|| ApiError::unauthenticated("token has no tenant"))?;
            let snap = state
                .registry
                .get(t)
                .ok_or_else(|| ApiError::unauthenticated("invalid bearer token"))?;
            let user = state.tokens.identify(v, t, snap.view())?;
            Ok(Caller::User {
                tenant: t.to_string(),
                user: user.to_string(),
                kind: user_kind(snap.view(), user),
                session: v.claims.sid.as_deref().map(str::to_string),
                key: None,
                channel: v.claims.ch.as_deref().and_then(|c| match c {
                    "console" => Some(Channel::Console),
                    "field" => Some(Channel::Field),
                    _ => None,
                }),
            })
        })
        .map_err(ApiError::from)
        .and_then(|r| r);
    if out.is_err() {
        // An SSO token of the path's tenant: say where it works.
        let sso = tenant
            .and_then(|t| state.registry.get(t))
            .is_some_and(|snap| crate::server::sso::is_sso_token_of(&snap, got));
        if sso {
            return Err(ApiError::unauthenticated(
                crate::server::sso::NOT_ON_MANAGEMENT,
            ));
        }
    }
    out
}

fn user_kind(view: &crate::snapshot::ArchivedTenantSnap, user: &str) -> UserKind {
    match crate::decide::user(view, user).map(|u| u.kind) {
        Some(crate::snapshot::KIND_OWNER) => UserKind::Owner,
        Some(crate::snapshot::KIND_ADMIN) => UserKind::Admin,
        Some(crate::snapshot::KIND_GUEST) => UserKind::Guest,
        _ => UserKind::Member,
    }
}

fn sign_in_of(state: &State) -> Result<&SignIn, ApiError> {
    state.sign_in.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::SignInUnavailable,
            "sign-in is off: no session signing key (set sign_in.session_keys)",
        )
    })
}

/// Runs argon2 (or anything slow) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("hashing failed: {e}")))
}

fn hash_error(e: secret::HashError) -> ApiError {
    ApiError::new(ErrorCode::Internal, e.to_string())
}

/// Waits (bounded) until this process serves `tenant` at `revision`: answers to writes that end
/// sessions are sent only once the old tokens are refused here.
async fn visible(state: &State, tenant: &str, revision: u64) {
    if let Err(e) = crate::server::snapshot_at(state, tenant, Some(revision)).await {
        tracing::warn!(tenant, revision, error = %e.message, "write acknowledged before this process applied it");
    }
}

/// [`written`], once this process serves the write.
pub async fn written_visible(state: &State, tenant: &str, w: Written) -> Resp {
    visible(state, tenant, w.revision).await;
    written(w, false)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInRequest {
    email: Option<String>,
    password: Option<Password>,
    card: Option<Password>,
    /// `console` (default for passwords) or `field` (default for cards).
    channel: Option<Channel>,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCredentials,
        "invalid credentials (unknown account, wrong password, or the account cannot sign in)",
    )
}

fn client_of(req: &Request<Incoming>) -> String {
    req.extensions()
        .get::<PeerAddr>()
        .map_or_else(|| "unknown".to_string(), |p| p.0.ip().to_string())
}

/// `POST /v1/tenants/{t}/sessions` `{"email","password"}` or `{"card"}` → 201
/// `{"token","expires_at","user","session"}`. Every credential problem is the same 401.
pub async fn sign_in(
    state: &State,
    cp: &ControlPlane,
    tenant: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let si = sign_in_of(state)?;
    let client = client_of(&req);
    let r: SignInRequest = body(state, req).await?;
    let now = state.clock.now();
    let (method, account) = match (&r.email, &r.password, &r.card) {
        (Some(e), Some(_), None) => ("password", e.trim().to_lowercase()),
        // Per card (a cheap digest: throttling runs before argon2), so that failures with one
        // card never lock out the others.
        (None, None, Some(c)) => (
            "card",
            format!(
                "card:{}",
                sha256_hex(&c.expose().trim().to_ascii_uppercase())
            ),
        ),
        _ => {
            return Err(ApiError::bad_request(
                "give either 'email' and 'password', or 'card'",
            ))
        }
    };
    if let Some(wait) = si.throttle.blocked(tenant, &account, &client, now) {
        state.metrics.sign_in(method, "throttled");
        let mut e = ApiError::new(
            ErrorCode::TooManyAttempts,
            format!("too many failed sign-ins; retry in {wait} s"),
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
    let channel = r.channel.unwrap_or(match method {
        "card" => Channel::Field,
        _ => Channel::Console,
    });
    let candidate: Option<LoginCandidate> = match (r.password, r.card) {
        (Some(password), None) => {
            let email = r.email.unwrap_or_default();
            let c = cp
                .read(tenant, |d| rules::login_candidate(d, &email))
                .await
                .ok()
                .flatten();
            let hash = c.as_ref().and_then(|c| c.password_hash.clone());
            let ok = blocking(move || match hash {
                Some(h) => secret::verify_password(&h, password.expose()),
                None => secret::verify_unknown(password.expose()),
            })
            .await?;
            c.filter(|_| ok)
        }
        (None, Some(card)) => {
            let t = tenant.to_string();
            let hash = blocking(move || secret::card_hash(&t, card.expose()))
                .await?
                .map_err(hash_error)?;
            cp.read(tenant, |d| rules::card_holder(d, &hash))
                .await
                .ok()
                .flatten()
        }
        _ => None,
    };
    let Some(c) = candidate else {
        si.throttle.failed(tenant, &account, &client, now);
        state.metrics.sign_in(method, "refused");
        return Err(invalid_credentials());
    };
    let sid = secret::random_hex::<16>().map_err(hash_error)?;
    let mut opened = None;
    let actor = format!("{}#{}", c.user, channel.as_str());
    let w = cp
        .write(tenant, &actor, None, |d| {
            let o = rules::open_session(d, &c, channel, &sid, now)?;
            let change = o.change.clone();
            opened = Some(o);
            Ok(change)
        })
        .await;
    let w = match w {
        Ok(w) => w,
        Err(ControlError::Rule(rules::RuleError::Conflict {
            code: "sign_in_not_allowed",
            message,
        })) => {
            state.metrics.sign_in(method, "not_allowed");
            return Err(ApiError::new(ErrorCode::SignInNotAllowed, message));
        }
        Err(ControlError::Rule(_)) => {
            state.metrics.sign_in(method, "refused");
            return Err(invalid_credentials());
        }
        Err(e) => return Err(e.into()),
    };
    let Some(o) = opened else {
        return Err(ApiError::new(ErrorCode::Internal, "session not opened"));
    };
    si.throttle.succeeded(tenant, &account);
    state.metrics.sign_in(method, "ok");
    let token = si
        .keys
        .sign(&SessionClaims {
            iss: ISSUER,
            sub: &o.user.id,
            tenant,
            sid: &sid,
            sep: o.user.session_epoch,
            ch: channel,
            knd: SessionKind::Session,
            iat: now,
            exp: o.expires_at,
        })
        .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
    // The session must be known to this process's snapshot before its token is used here.
    visible(state, tenant, w.revision).await;
    Ok(respond(
        StatusCode::CREATED,
        json!({
            "token": token,
            "expires_at": o.expires_at,
            "session": sid,
            "channel": channel,
            "user": user_view(&o.user),
            "revision": w.revision,
        }),
        Some(w.revision),
        None,
    ))
}

fn user_view(u: &crate::model::User) -> serde_json::Value {
    json!({
        "id": u.id, "email": u.email, "name": u.name, "first_name": u.first_name,
        "last_name": u.last_name, "kind": u.kind, "status": u.status,
    })
}

/// `DELETE /v1/tenants/{t}/sessions/current`: the caller's session ends (204).
pub async fn sign_out(
    state: &State,
    cp: &ControlPlane,
    caller: &Caller,
    tenant: &str,
) -> Result<Resp, ApiError> {
    let (
        Some(user),
        Caller::User {
            session: Some(sid), ..
        },
    ) = (caller.user_in(tenant), caller)
    else {
        return Err(ApiError::bad_request(
            "sessions/current needs a session token of this tenant",
        ));
    };
    let now = state.clock.now();
    let w = cp
        .write(tenant, &caller.actor(), None, |d| {
            rules::close_session(d, sid, user, now)
        })
        .await?;
    visible(state, tenant, w.revision).await;
    let mut r = respond(StatusCode::NO_CONTENT, json!(null), Some(w.revision), None);
    *r.body_mut() = http_body_util::Full::new(bytes::Bytes::new());
    r.headers_mut().remove(header::CONTENT_TYPE);
    Ok(r)
}

/// An invitation made for a new or existing user: its token (shown once) and expiry.
struct Invitation {
    token: String,
    sha: String,
    expires_at: Timestamp,
}

fn new_invitation(state: &State, cfg: &SignInConfig) -> Result<Invitation, ApiError> {
    let token = secret::random_hex::<32>().map_err(hash_error)?;
    Ok(Invitation {
        sha: sha256_hex(&token),
        expires_at: state
            .clock
            .now()
            .saturating_add(i64::from(cfg.invitation_ttl_hours) * 3600),
        token,
    })
}

/// Posts an invitation to the configured webhook (in the background, a few tries).
fn deliver(state: &State, tenant: &str, user: &str, email: &str, inv: &Invitation) {
    let Some(url) = state
        .sign_in
        .as_deref()
        .and_then(|s| s.config.invitation_webhook.clone())
    else {
        return;
    };
    let body = json!({
        "tenant": tenant,
        "user": user,
        "email": email,
        "token": inv.token,
        "expires_at": inv.expires_at,
        "accept_path": format!("/v1/tenants/{tenant}/invitations/{}/accept", inv.token),
    })
    .to_string();
    let (tenant, user) = (tenant.to_string(), user.to_string());
    tokio::spawn(async move {
        for attempt in 0..5u32 {
            match super::webhook::post_json(&url, &body).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(tenant, user, attempt, error = %e, "invitation webhook failed");
                    tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        tracing::error!(
            tenant,
            user,
            "invitation webhook gave up; re-invite the user"
        );
    });
}

/// `POST /v1/tenants/{t}/users`: with `password`, it is hashed first; without, the answer
/// carries an invitation (also sent to the webhook).
pub async fn create_user(w: &Writer<'_>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let state = w.state;
    let r: UserCreate = body(state, req).await?;
    let mut secrets = NewUserSecrets::default();
    let mut invitation = None;
    if let Some(p) = r.password.clone() {
        if check_password(p.expose()).is_ok() {
            let hash = blocking(move || secret::hash_password(p.expose()))
                .await?
                .map_err(hash_error)?;
            secrets.password_hash = Some(hash);
        } else {
            // The rule reports the password problem with the other fields' problems.
            secrets.password_hash = Some(String::new());
        }
    } else {
        let cfg = state
            .sign_in
            .as_deref()
            .map_or_else(SignInConfig::default, |s| s.config.clone());
        let inv = new_invitation(state, &cfg)?;
        secrets.invitation = Some((inv.sha.clone(), inv.expires_at));
        invitation = Some(inv);
    }
    let now = state.clock.now();
    let written_ = w
        .write(None, |g, d| {
            policy::create_user(g, &r)?;
            rules::create_user(d, &r, now, &secrets)
        })
        .await?;
    let mut data = written_.change.result.clone();
    if let Some(inv) = &invitation {
        let id = data["id"].as_str().unwrap_or_default().to_string();
        deliver(state, w.tenant, &id, &r.email, inv);
        if let Some(m) = data.as_object_mut() {
            m.insert(
                "invitation".into(),
                json!({"token": inv.token, "expires_at": inv.expires_at}),
            );
        }
    }
    let rev = written_.revision;
    Ok(respond(
        StatusCode::CREATED,
        json!({"revision": rev, "data": data}),
        Some(rev),
        Some(rev),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: Password,
}

async fn hash_checked(p: Password) -> Result<String, ApiError> {
    if let Err(m) = check_password(p.expose()) {
        return Err(ApiError::invalid(
            format!("invalid request: password: {m}"),
            json!([{"field": "password", "message": m}]),
        ));
    }
    blocking(move || secret::hash_password(p.expose()))
        .await?
        .map_err(hash_error)
}

/// `POST /v1/tenants/{t}/users/{id}/password` `{"password"}`: hashes, audits (without the
/// password) and ends every session of the user.
pub async fn set_password(
    w: &Writer<'_>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let b: PasswordBody = body(w.state, req).await?;
    let hash = hash_checked(b.password).await?;
    let now = w.state.clock.now();
    let done = w
        .write(None, |g, d| {
            policy::set_password(g, d, id)?;
            rules::set_password(d, id, &hash, now)
        })
        .await?;
    Ok(written_visible(w.state, w.tenant, done).await)
}

/// `POST /v1/tenants/{t}/users/{id}/invitation`: a new invitation for the user.
pub async fn reinvite(w: &Writer<'_>, id: &str) -> Result<Resp, ApiError> {
    let si = sign_in_of(w.state)?;
    let inv = new_invitation(w.state, &si.config)?;
    let now = w.state.clock.now();
    let done = w
        .write(None, |g, d| {
            policy::user_credentials(g, id)?;
            rules::invite(d, id, &inv.sha, inv.expires_at, now)
        })
        .await?;
    let email =
        w.cp.read(w.tenant, |d| d.users.get(id).map(|u| u.user.email.clone()))
            .await?
            .unwrap_or_default();
    deliver(w.state, w.tenant, id, &email, &inv);
    let rev = done.revision;
    Ok(respond(
        StatusCode::CREATED,
        json!({"revision": rev, "data": {"user": id, "invitation": {"token": inv.token, "expires_at": inv.expires_at}}}),
        Some(rev),
        None,
    ))
}

/// `POST /v1/tenants/{t}/invitations/{token}/accept` `{"password"}` (no bearer: the token is
/// the credential).
pub async fn accept_invitation(
    state: &State,
    cp: &ControlPlane,
    tenant: &str,
    token: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let b: PasswordBody = body(state, req).await?;
    let hash = hash_checked(b.password).await?;
    let sha = sha256_hex(token);
    let now = state.clock.now();
    let user = cp
        .read(tenant, |d| d.invitations.get(&sha).map(|i| i.user.clone()))
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let done = cp
        .write(tenant, &user, None, |d| {
            rules::accept_invitation(d, &sha, &hash, now)
        })
        .await
        .map_err(|e| match e {
            ControlError::UnknownTenant(_) => ApiError::new(
                ErrorCode::InvalidInvitation,
                "this invitation is unknown, used or expired",
            ),
            e => e.into(),
        })?;
    Ok(written(done, false))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardBody {
    card: Password,
}

/// `POST /v1/tenants/{t}/users/{id}/cards` `{"card"}`: adds an access card (stored hashed).
pub async fn add_card(w: &Writer<'_>, id: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let b: CardBody = body(w.state, req).await?;
    let uid = b.card.expose().trim().to_string();
    if uid.len() < 4 || uid.len() > 64 || !uid.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "invalid request: card: 4 to 64 visible ASCII characters",
            json!([{"field": "card", "message": "4 to 64 visible ASCII characters"}]),
        ));
    }
    let t = w.tenant.to_string();
    let hash = blocking(move || secret::card_hash(&t, &uid))
        .await?
        .map_err(hash_error)?;
    let now = w.state.clock.now();
    let done = w
        .write(None, |g, d| {
            policy::cards(g, id)?;
            rules::add_card(d, id, &hash, now)
        })
        .await?;
    Ok(written(done, true))
}

/// `DELETE /v1/tenants/{t}/users/{id}/cards`: removes every card and ends the user's sessions.
pub async fn remove_cards(w: &Writer<'_>, id: &str) -> Result<Resp, ApiError> {
    let now = w.state.clock.now();
    let done = w
        .write(None, |g, d| {
            policy::cards(g, id)?;
            rules::remove_cards(d, id, now)
        })
        .await?;
    Ok(written_visible(w.state, w.tenant, done).await)
}

/// `POST /v1/tenants/{t}/api-keys` `{"user","name","expires_at"?}` → 201 with the key, shown
/// once.
pub async fn create_api_key(w: &Writer<'_>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let r: rules::ApiKeyCreate = body(w.state, req).await?;
    let k = ApiKeySecret::generate().map_err(hash_error)?;
    let now = w.state.clock.now();
    let done = w
        .write(None, |g, d| {
            policy::api_key(g, &r.user)?;
            rules::create_api_key(d, &r, &k.id, &k.sha256, now)
        })
        .await?;
    let mut data = done.change.result.clone();
    if let Some(m) = data.as_object_mut() {
        m.insert("key".into(), json!(k.key));
    }
    // Usable at once on this process.
    visible(w.state, w.tenant, done.revision).await;
    let rev = done.revision;
    Ok(respond(
        StatusCode::CREATED,
        json!({"revision": rev, "data": data}),
        Some(rev),
        Some(rev),
    ))
}

/// `GET /v1/tenants/{t}/api-keys`: every key (never a secret or its digest) to a caller with
/// `user:read` tenant-wide; one's own keys to anyone else.
pub async fn list_api_keys(
    state: &State,
    cp: &ControlPlane,
    caller: &Caller,
    tenant: &str,
) -> Result<Resp, ApiError> {
    let all = super::writes::may(state, caller, tenant, |g| {
        g.require("user:read", crate::control::authz::At::Tenant)
    })
    .await
    .is_ok();
    let own = caller.user_in(tenant).unwrap_or_default();
    let (keys, rev) = cp
        .read(tenant, |d| {
            let keys: Vec<_> = d
                .api_keys
                .values()
                .filter(|k| all || k.user == own)
                .map(rules::api_key_view)
                .collect();
            (keys, d.revision)
        })
        .await?;
    Ok(respond(
        StatusCode::OK,
        json!({"items": keys, "revision": rev}),
        Some(rev),
        None,
    ))
}

/// `DELETE /v1/tenants/{t}/api-keys/{id}`: revoked, refused from this answer on.
pub async fn revoke_api_key(w: &Writer<'_>, id: &str) -> Result<Resp, ApiError> {
    let done = w
        .write(None, |g, d| {
            if let Some(k) = d.api_keys.get(id) {
                policy::api_key(g, &k.user)?;
            }
            rules::revoke_api_key(d, id)
        })
        .await?;
    Ok(written_visible(w.state, w.tenant, done).await)
}

/// `POST /v1/tenants/{t}/guests` `{"name","email"?,"scope","expires_at"}` → 201
/// `{"id","token","expires_at"}`.
pub async fn create_guest(w: &Writer<'_>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let si = sign_in_of(w.state)?;
    let r: rules::GuestCreate = body(w.state, req).await?;
    let id = format!("guest-{}", secret::random_hex::<6>().map_err(hash_error)?);
    let now = w.state.clock.now();
    let done = w
        .write(None, |g, d| {
            policy::create_guest(g, &r.scope)?;
            rules::create_guest(d, &r, &id, w.actor, now)
        })
        .await?;
    let expires_at = r.expires_at.unwrap_or(now);
    let token = si
        .keys
        .sign(&SessionClaims {
            iss: ISSUER,
            sub: &id,
            tenant: w.tenant,
            sid: &id,
            sep: 0,
            ch: Channel::Console,
            knd: SessionKind::Guest,
            iat: now,
            exp: expires_at,
        })
        .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
    visible(w.state, w.tenant, done.revision).await;
    let rev = done.revision;
    Ok(respond(
        StatusCode::CREATED,
        json!({"id": id, "token": token, "expires_at": expires_at, "scope": r.scope, "revision": rev}),
        Some(rev),
        None,
    ))
}

/// `DELETE /v1/tenants/{t}/guests/{id}`: the guest's token is dead from this answer on.
pub async fn revoke_guest(w: &Writer<'_>, id: &str) -> Result<Resp, ApiError> {
    let now = w.state.clock.now();
    let done = w
        .write(None, |g, d| {
            policy::revoke_guest(g, id)?;
            rules::revoke_guest(d, id, now)
        })
        .await?;
    Ok(written_visible(w.state, w.tenant, done).await)
}

/// `GET /.well-known/jwks.json`: the public keys of session tokens.
pub fn jwks(state: &State) -> Resp {
    let body = state
        .sign_in
        .as_deref()
        .map_or_else(|| json!({"keys": []}), |s| s.keys.jwks());
    let mut r = respond(StatusCode::OK, body, None, None);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// Is `token` an API key string (as opposed to a JWT)?
pub fn is_api_key(token: &str) -> bool {
    parse_api_key(token).is_some()
}

/// Shared handle for the server state.
pub type SignInHandle = Arc<SignIn>;
