//! Rules of sign-in and credentials: sessions (open, close), passwords, access cards, API
//! keys, invitations, guests. Secrets arrive here already hashed: argon2 runs before the
//! tenant is locked, and nothing here sees a password or a token in clear.

use super::{find, Change, Fields, Rule, RuleError};
use crate::control::doc::{
    assignment_id, json, ApiKeyRow, AssignmentRow, CredentialRow, SessionRow, TenantDoc, UserRow,
};
use crate::model::{
    check_email, check_text, Assignment, Channel, GroupStatus, LogoutPeriod, Principal, Timestamp,
    User, UserKind, UserStatus,
};
use crate::store::{Kind, RowOp};

/// Most expired session rows one commit removes while doing something else.
const PRUNE_PER_COMMIT: usize = 64;
/// Most access cards per user.
pub const MAX_CARDS: usize = 16;
/// Most live API keys per user.
pub const MAX_API_KEYS: usize = 32;

/// A user who may try to sign in: id, password hash, epoch (read before argon2 runs; checked
/// again when the session is written).
#[derive(Debug, Clone)]
pub struct LoginCandidate {
    pub user: String,
    pub password_hash: Option<String>,
    pub epoch: u64,
}

/// The user whose email is `email` (case-insensitively), if it is an active, non-guest user.
pub fn login_candidate(doc: &TenantDoc, email: &str) -> Option<LoginCandidate> {
    let email = email.trim();
    let u = doc
        .users
        .values()
        .find(|u| u.user.email.eq_ignore_ascii_case(email))?;
    if u.user.status != UserStatus::Active || u.user.kind == UserKind::Guest {
        return None;
    }
    Some(LoginCandidate {
        user: u.user.id.clone(),
        password_hash: doc
            .credentials
            .get(&u.user.id)
            .and_then(|c| c.password.clone()),
        epoch: u.user.session_epoch,
    })
}

/// The active, non-guest user holding the access card whose hash is `card_hash`.
pub fn card_holder(doc: &TenantDoc, card_hash: &str) -> Option<LoginCandidate> {
    let (id, _) = doc
        .credentials
        .iter()
        .find(|(_, c)| c.cards.iter().any(|h| h == card_hash))?;
    let u = doc.users.get(id)?;
    if u.user.status != UserStatus::Active || u.user.kind == UserKind::Guest {
        return None;
    }
    Some(LoginCandidate {
        user: id.clone(),
        password_hash: None,
        epoch: u.user.session_epoch,
    })
}

/// Why a sign-in with good credentials is still refused.
fn not_allowed(message: String) -> RuleError {
    RuleError::conflict("sign_in_not_allowed", message)
}

/// The logout period of `user`: their own, else the shortest of their active groups', else the
/// tenant's, else [`LogoutPeriod::DEFAULT`].
pub fn logout_period(doc: &TenantDoc, user: &User) -> LogoutPeriod {
    if let Some(p) = user.logout {
        return p;
    }
    let groups = doc
        .groups
        .values()
        .filter(|g| g.status == GroupStatus::Active && g.members.contains(&user.id))
        .filter_map(|g| g.logout)
        .min();
    groups
        .or(doc.settings.as_ref().and_then(|s| s.sign_in.logout))
        .unwrap_or(LogoutPeriod::DEFAULT)
}

/// A new session's row and expiry.
#[derive(Debug, Clone)]
pub struct Opened {
    pub change: Change,
    pub expires_at: Timestamp,
    /// The user as the session sees it (for the answer and the token).
    pub user: User,
}

/// Opens session `sid` for `c` through `channel`: the user must still be active at the epoch
/// its credentials were checked at; with `require_group`, an ordinary member must belong to an
/// active group; when the user's active groups limit channels, one must allow `channel`.
/// Records the sign-in time and removes some expired session rows.
pub fn open_session(
    doc: &TenantDoc,
    c: &LoginCandidate,
    channel: Channel,
    sid: &str,
    now: Timestamp,
) -> Result<Opened, RuleError> {
    let cur: &UserRow = find(&doc.users, "user", &c.user)?;
    if cur.user.status != UserStatus::Active || cur.user.session_epoch != c.epoch {
        return Err(RuleError::conflict(
            "invalid_credentials",
            "the account changed while signing in; try again".to_string(),
        ));
    }
    let groups: Vec<_> = doc
        .groups
        .values()
        .filter(|g| g.members.contains(&c.user))
        .collect();
    let active: Vec<_> = groups
        .iter()
        .filter(|g| g.status == GroupStatus::Active)
        .collect();
    let require = doc
        .settings
        .as_ref()
        .is_some_and(|s| s.sign_in.require_group);
    if require && cur.user.kind == UserKind::Member && active.is_empty() {
        return Err(not_allowed(
            "this tenant requires membership of an active group to sign in".into(),
        ));
    }
    let limited: Vec<_> = active.iter().filter_map(|g| g.access.as_ref()).collect();
    if !limited.is_empty() && !limited.iter().any(|a| a.contains(&channel)) {
        return Err(not_allowed(format!(
            "the user's groups do not allow signing in through the {} channel",
            channel.as_str()
        )));
    }
    let period = logout_period(doc, &cur.user);
    let expires_at = now.saturating_add(period.seconds());
    let row = SessionRow {
        user: c.user.clone(),
        channel,
        created_at: now,
        expires_at,
        revoked: false,
    };
    let mut user = cur.clone();
    user.last_login_at = Some(now);
    let mut ops = vec![
        RowOp::put(Kind::Session, sid, json(&row), None),
        RowOp::put(Kind::User, c.user.as_str(), json(&user), Some(json(cur))),
    ];
    ops.extend(prune_sessions(doc, now));
    Ok(Opened {
        change: Change {
            action: "session.create".into(),
            target: format!("session:{sid}"),
            ops,
            result: serde_json::json!({
                "session": sid, "user": c.user, "channel": channel, "expires_at": expires_at
            }),
        },
        expires_at,
        user: user.user,
    })
}

/// Deletes up to [`PRUNE_PER_COMMIT`] session rows that expired (revoked or not).
fn prune_sessions(doc: &TenantDoc, now: Timestamp) -> impl Iterator<Item = RowOp> + '_ {
    doc.sessions
        .iter()
        .filter(move |(_, s)| s.expires_at < now)
        .take(PRUNE_PER_COMMIT)
        .map(|(sid, s)| RowOp::delete(Kind::Session, sid.as_str(), Some(json(s))))
}

/// Closes (revokes) session `sid` of `user`: its token is refused from the next snapshot on.
pub fn close_session(doc: &TenantDoc, sid: &str, user: &str, now: Timestamp) -> Rule {
    let cur = doc
        .sessions
        .get(sid)
        .filter(|s| s.user == user)
        .ok_or_else(|| RuleError::not_found("session", sid))?;
    let mut ops = Vec::new();
    if !cur.revoked {
        let mut next = cur.clone();
        next.revoked = true;
        ops.push(RowOp::put(Kind::Session, sid, json(&next), Some(json(cur))));
    }
    ops.extend(prune_sessions(doc, now).filter(|op| op.id != sid));
    Ok(Change {
        action: "session.delete".into(),
        target: format!("session:{sid}"),
        ops,
        result: serde_json::json!({"session": sid, "revoked": true}),
    })
}

/// Raises the user's session epoch (every session dies) and stores `f`'s changes to the
/// credential row.
fn with_credential(
    doc: &TenantDoc,
    user: &str,
    action: &str,
    bump_epoch: bool,
    now: Timestamp,
    f: impl FnOnce(&mut CredentialRow) -> Result<(), RuleError>,
) -> Rule {
    let cur = find(&doc.users, "user", user)?;
    if cur.user.status == UserStatus::Deleted {
        return Err(RuleError::conflict(
            "invalid_state",
            format!("user '{user}' is deleted"),
        ));
    }
    if cur.user.kind == UserKind::Guest {
        return Err(RuleError::conflict(
            "invalid_state",
            format!("user '{user}' is a guest; guests sign in with their token"),
        ));
    }
    let before = doc.credentials.get(user);
    let mut cred = before.cloned().unwrap_or_default();
    f(&mut cred)?;
    let mut ops = vec![RowOp::put(
        Kind::Credential,
        user,
        json(&cred),
        before.map(json),
    )];
    if bump_epoch {
        let mut next = cur.clone();
        next.user.session_epoch = super::next_epoch(cur.user.session_epoch, now);
        next.updated_at = now;
        ops.push(RowOp::put(Kind::User, user, json(&next), Some(json(cur))));
    }
    Ok(Change {
        action: action.into(),
        target: format!("user:{user}"),
        ops,
        result: serde_json::json!({"id": user}),
    })
}

/// Sets `user`'s password (already hashed) and ends every session of theirs.
pub fn set_password(doc: &TenantDoc, user: &str, hash: &str, now: Timestamp) -> Rule {
    let mut c = with_credential(doc, user, "user.password", true, now, |cred| {
        cred.password = Some(hash.to_string());
        Ok(())
    })?;
    c.result = serde_json::json!({"id": user, "password_changed": true, "sessions_ended": true});
    Ok(c)
}

/// Adds an access card (already hashed) to `user`; a card belongs to one user of the tenant.
pub fn add_card(doc: &TenantDoc, user: &str, hash: &str, now: Timestamp) -> Rule {
    if let Some((holder, _)) = doc
        .credentials
        .iter()
        .find(|(_, c)| c.cards.iter().any(|h| h == hash))
    {
        return Err(RuleError::conflict(
            "card_in_use",
            if holder == user {
                format!("user '{user}' already has this card")
            } else {
                "this card belongs to another user".to_string()
            },
        ));
    }
    let mut c = with_credential(doc, user, "user.card.add", false, now, |cred| {
        if cred.cards.len() >= MAX_CARDS {
            return Err(RuleError::conflict(
                "quota_exceeded",
                format!("a user holds at most {MAX_CARDS} access cards"),
            ));
        }
        cred.cards.push(hash.to_string());
        Ok(())
    })?;
    let n = doc.credentials.get(user).map_or(0, |c| c.cards.len()) + 1;
    c.result = serde_json::json!({"id": user, "cards": n});
    Ok(c)
}

/// Removes every access card of `user` and ends their sessions (a lost card).
pub fn remove_cards(doc: &TenantDoc, user: &str, now: Timestamp) -> Rule {
    let mut c = with_credential(doc, user, "user.card.remove", true, now, |cred| {
        cred.cards.clear();
        Ok(())
    })?;
    c.result = serde_json::json!({"id": user, "cards": 0, "sessions_ended": true});
    Ok(c)
}

/// Accepts invitation `sha` (SHA-256 of its token): sets the password, activates the user.
pub fn accept_invitation(doc: &TenantDoc, sha: &str, hash: &str, now: Timestamp) -> Rule {
    let bad = || {
        RuleError::conflict(
            "invalid_invitation",
            "this invitation is unknown, used or expired".to_string(),
        )
    };
    let inv = doc.invitations.get(sha).ok_or_else(bad)?;
    if inv.accepted_at.is_some() || inv.expires_at <= now {
        return Err(bad());
    }
    let cur = doc.users.get(&inv.user).ok_or_else(bad)?;
    if cur.user.status == UserStatus::Deleted {
        return Err(bad());
    }
    let before = doc.credentials.get(&inv.user);
    let mut cred = before.cloned().unwrap_or_default();
    cred.password = Some(hash.to_string());
    let mut used = inv.clone();
    used.accepted_at = Some(now);
    let mut user = cur.clone();
    user.user.status = UserStatus::Active;
    user.updated_at = now;
    let id = inv.user.as_str();
    Ok(Change {
        action: "invitation.accept".into(),
        target: format!("user:{id}"),
        ops: vec![
            RowOp::put(Kind::Credential, id, json(&cred), before.map(json)),
            RowOp::put(Kind::Invitation, sha, json(&used), Some(json(inv))),
            RowOp::put(Kind::User, id, json(&user), Some(json(cur))),
        ],
        result: serde_json::json!({"id": id, "email": cur.user.email, "status": "active"}),
    })
}

/// A new invitation for an existing user (e.g. the first one expired).
pub fn invite(
    doc: &TenantDoc,
    user: &str,
    sha: &str,
    expires_at: Timestamp,
    now: Timestamp,
) -> Rule {
    let cur = find(&doc.users, "user", user)?;
    if cur.user.status == UserStatus::Deleted || cur.user.kind == UserKind::Guest {
        return Err(RuleError::conflict(
            "invalid_state",
            format!("user '{user}' cannot be invited"),
        ));
    }
    let row = crate::control::doc::InvitationRow {
        user: user.to_string(),
        created_at: now,
        expires_at,
        accepted_at: None,
    };
    Ok(Change {
        action: "invitation.create".into(),
        target: format!("user:{user}"),
        ops: vec![RowOp::put(Kind::Invitation, sha, json(&row), None)],
        result: serde_json::json!({"user": user, "expires_at": expires_at}),
    })
}

requests! {
    ApiKeyCreate {
        pub user: String,
        pub name: String,
        #[serde(default, deserialize_with = "crate::model::de_opt_timestamp")]
        pub expires_at: Option<Timestamp>,
    }
    ApiKeyPatch {}
}

/// Records API key `id` (secret hashed as `sha256`) for a user.
pub fn create_api_key(
    doc: &TenantDoc,
    req: &ApiKeyCreate,
    id: &str,
    sha256: &str,
    now: Timestamp,
) -> Rule {
    let mut f = Fields::default();
    f.check("name", check_text("name", &req.name));
    match doc.users.get(&req.user) {
        None => f.push("user", format!("unknown user '{}'", req.user)),
        Some(u) if u.user.status == UserStatus::Deleted => {
            f.push("user", format!("user '{}' is deleted", req.user))
        }
        Some(u) if u.user.kind == UserKind::Guest => {
            f.push("user", format!("user '{}' is a guest", req.user))
        }
        Some(_) => {}
    }
    if req.expires_at.is_some_and(|e| e <= now) {
        f.push("expires_at", "expires_at must be in the future");
    }
    f.done()?;
    let live = doc
        .api_keys
        .values()
        .filter(|k| k.user == req.user && !k.revoked)
        .count();
    if live >= MAX_API_KEYS {
        return Err(RuleError::conflict(
            "quota_exceeded",
            format!("a user holds at most {MAX_API_KEYS} live API keys"),
        ));
    }
    let row = ApiKeyRow {
        id: id.to_string(),
        user: req.user.clone(),
        name: req.name.clone(),
        sha256: sha256.to_string(),
        created_at: now,
        expires_at: req.expires_at,
        revoked: false,
    };
    let v = json(&row);
    Ok(Change {
        action: "api_key.create".into(),
        target: format!("api_key:{id}"),
        ops: vec![RowOp::put(Kind::ApiKey, id, v, None)],
        result: api_key_view(&row),
    })
}

/// What the API shows of a key (never its digest).
pub fn api_key_view(k: &ApiKeyRow) -> serde_json::Value {
    serde_json::json!({
        "id": k.id, "user": k.user, "name": k.name, "created_at": k.created_at,
        "expires_at": k.expires_at, "revoked": k.revoked,
    })
}

/// Revokes API key `id`: refused from the next snapshot on.
pub fn revoke_api_key(doc: &TenantDoc, id: &str) -> Rule {
    let cur = find(&doc.api_keys, "API key", id)?;
    let mut next = cur.clone();
    next.revoked = true;
    Ok(Change {
        action: "api_key.revoke".into(),
        target: format!("api_key:{id}"),
        ops: vec![RowOp::put(Kind::ApiKey, id, json(&next), Some(json(cur)))],
        result: api_key_view(&next),
    })
}

requests! {
    GuestCreate {
        pub name: String,
        pub email: Option<String>,
        pub scope: String,
        #[serde(default, deserialize_with = "crate::model::de_opt_timestamp")]
        pub expires_at: Option<Timestamp>,
    }
    GuestPatch {}
}

/// Longest guest lifetime, seconds (30 days).
pub const MAX_GUEST_SECONDS: i64 = 30 * 86_400;

/// Creates guest `id`: a read-only user limited to `scope`'s subtree, with a `viewer`
/// assignment there that expires with the guest.
pub fn create_guest(
    doc: &TenantDoc,
    req: &GuestCreate,
    id: &str,
    by: &str,
    now: Timestamp,
) -> Rule {
    let mut f = Fields::default();
    f.check("name", check_text("name", &req.name));
    if req.name.trim().is_empty() {
        f.push("name", "name must not be empty");
    }
    if let Some(e) = &req.email {
        f.check("email", check_email(e));
    }
    if !doc.nodes.contains_key(&req.scope) {
        f.push("scope", format!("unknown node '{}'", req.scope));
    }
    let expires_at = req.expires_at.unwrap_or(0);
    if req.expires_at.is_none() {
        f.push("expires_at", "expires_at is required");
    } else if expires_at <= now {
        f.push("expires_at", "expires_at must be in the future");
    } else if expires_at - now > MAX_GUEST_SECONDS {
        f.push("expires_at", "a guest lasts at most 30 days");
    }
    f.done()?;
    super::absent(&doc.users, Kind::User, id)?;
    let user = UserRow {
        user: User {
            id: id.to_string(),
            email: req
                .email
                .clone()
                .unwrap_or_else(|| format!("{id}@guests.invalid")),
            name: req.name.clone(),
            status: UserStatus::Active,
            kind: UserKind::Guest,
            session_epoch: 0,
            first_name: None,
            last_name: None,
            logout: None,
            scope: Some(req.scope.clone()),
        },
        created_at: now,
        updated_at: now,
        last_login_at: None,
    };
    let a = Assignment {
        principal: Principal::User(id.to_string()),
        role: "viewer".into(),
        scope: req.scope.clone(),
        assigned_by: Some(by.to_string()),
        assigned_at: Some(now),
        expires_at: Some(expires_at),
    };
    let aid = assignment_id(&a.principal, &a.role, &a.scope);
    let row = AssignmentRow {
        id: aid.clone(),
        assignment: a,
    };
    Ok(Change {
        action: "guest.create".into(),
        target: format!("user:{id}"),
        ops: vec![
            RowOp::put(Kind::User, id, json(&user), None),
            RowOp::put(Kind::Assignment, aid.as_str(), json(&row), None),
        ],
        result: serde_json::json!({
            "id": id, "name": req.name, "scope": req.scope, "expires_at": expires_at,
            "kind": "guest",
        }),
    })
}

/// Revokes guest `id`: deleted, sessions dead, assignments removed.
pub fn revoke_guest(doc: &TenantDoc, id: &str, now: Timestamp) -> Rule {
    let cur = find(&doc.users, "guest", id)?;
    if cur.user.kind != UserKind::Guest {
        return Err(RuleError::not_found("guest", id));
    }
    let mut next = cur.clone();
    next.user.status = UserStatus::Deleted;
    next.user.session_epoch = super::next_epoch(cur.user.session_epoch, now);
    next.updated_at = now;
    let mut ops: Vec<RowOp> = doc
        .assignments
        .iter()
        .filter(|(_, a)| a.assignment.principal == Principal::User(id.to_string()))
        .map(|(aid, a)| RowOp::delete(Kind::Assignment, aid.as_str(), Some(json(a))))
        .collect();
    ops.push(RowOp::put(Kind::User, id, json(&next), Some(json(cur))));
    Ok(Change {
        action: "guest.delete".into(),
        target: format!("user:{id}"),
        ops,
        result: serde_json::json!({"id": id, "revoked": true}),
    })
}
