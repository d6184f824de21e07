//! Management writes: the HTTP side of every write (body, `If-Match`, answer). The business
//! rules live in `control::rules`; this file binds each request to its rule, with one generic
//! create/update/delete path for the entity collections.

use hyper::body::Incoming;
use hyper::Request;
use serde::de::DeserializeOwned;

use super::http::{body, if_match, written};
use super::identity::Caller;
use crate::control::authz::Guard;
use crate::control::policy;
use crate::control::rules::{self, Change, RuleError, UserTransition};
use crate::control::{ControlError, ControlPlane, Expect, TenantDoc, Written};
use crate::model::Timestamp;
use crate::server::error::{ApiError, ErrorCode};
use crate::server::{Resp, State};
use crate::store::Kind;

/// Who writes to which tenant, and when.
pub struct Writer<'a> {
    pub state: &'a State,
    pub cp: &'a ControlPlane,
    pub tenant: &'a str,
    pub actor: &'a str,
    pub caller: &'a Caller,
}

/// Attempts of a guarded write whose snapshot fell behind the tenant (a concurrent write).
const GUARD_ATTEMPTS: usize = 8;

/// The code of a guard refusal that asks for a retry on a newer snapshot (never answered).
const STALE_GUARD: &str = "stale_guard";

/// What a rule may need besides the document and the request body.
pub struct Ctx<'a> {
    pub actor: &'a str,
    pub now: Timestamp,
}

type Rule<T> = fn(&TenantDoc, &T, &Ctx) -> Result<Change, RuleError>;
type IdRule<T> = fn(&TenantDoc, &str, &T, &Ctx) -> Result<Change, RuleError>;
/// Who may: the caller's [`Guard`] over the write (`control::policy`).
type May<T> = fn(&Guard, &TenantDoc, &T) -> Result<(), RuleError>;
type IdMay<T> = fn(&Guard, &TenantDoc, &str, &T) -> Result<(), RuleError>;

/// The write rules of one entity collection, and who may apply them.
pub trait Collection {
    const KIND: Kind;
    type Create: DeserializeOwned + Send;
    type Patch: DeserializeOwned + Send;
    const CREATE: Rule<Self::Create>;
    const UPDATE: IdRule<Self::Patch>;
    const DELETE: IdRule<()>;
    const MAY_CREATE: May<Self::Create>;
    const MAY_UPDATE: IdMay<Self::Patch>;
    const MAY_DELETE: IdMay<()>;
}

/// Two lines per collection: its kind, request types and rules; then its policy.
macro_rules! collections {
    ($($name:ident $kind:ident $create:ident $patch:ident $c:expr, $u:expr, $d:expr;
       may $mc:expr, $mu:expr, $md:expr;)*) => {$(
        pub struct $name;
        impl Collection for $name {
            const KIND: Kind = Kind::$kind;
            type Create = rules::$create;
            type Patch = rules::$patch;
            const CREATE: Rule<Self::Create> = $c;
            const UPDATE: IdRule<Self::Patch> = $u;
            const DELETE: IdRule<()> = $d;
            const MAY_CREATE: May<Self::Create> = $mc;
            const MAY_UPDATE: IdMay<Self::Patch> = $mu;
            const MAY_DELETE: IdMay<()> = $md;
        }
    )*};
}

collections! {
    Nodes Node NodeCreate NodePatch |d, r, _| rules::create_node(d, r), |d, id, p, _| rules::update_node(d, id, p), |d, id, _, _| rules::delete_node(d, id);
    may |g, _, r| policy::create_node(g, r), |g, _, id, p| policy::update_node(g, id, p), |g, _, id, _| policy::delete_node(g, id);
    Users User UserCreate UserPatch |d, r, c| rules::create_user(d, r, c.now, &rules::NewUserSecrets::default()), |d, id, p, c| rules::update_user(d, id, p, c.now), |d, id, _, c| rules::transition_user(d, id, UserTransition::Delete, c.now);
    may |g, _, r| policy::create_user(g, r), policy::update_user, |g, _, id, _| policy::transition_user(g, id, UserTransition::Delete);
    Groups Group GroupCreate GroupPatch |d, r, _| rules::create_group(d, r), |d, id, p, _| rules::update_group(d, id, p), |d, id, _, _| rules::delete_group(d, id);
    may |g, _, r| policy::create_group(g, r), |g, _, id, p| policy::update_group(g, id, p), |g, _, id, _| policy::delete_group(g, id);
    Roles Role RoleCreate RolePatch |d, r, _| rules::create_role(d, r), |d, id, p, _| rules::update_role(d, id, p), |d, id, _, _| rules::delete_role(d, id);
    may |g, _, r| policy::create_role(g, r), |g, _, id, p| policy::update_role(g, id, p), |g, _, id, _| policy::delete_role(g, id);
    Assignments Assignment AssignmentCreate AssignmentPatch |d, r, c| rules::create_assignment(d, r, c.actor, c.now), |d, id, p, c| rules::update_assignment(d, id, p, c.now), |d, id, _, _| rules::delete_assignment(d, id);
    may |g, _, r| policy::create_assignment(g, r), policy::update_assignment, |g, d, id, _| policy::delete_assignment(g, d, id);
    NotificationRules NotificationRule NotificationRuleCreate NotificationRulePatch |d, r, _| rules::create_notification_rule(d, r), |d, id, p, _| rules::update_notification_rule(d, id, p), |d, id, _, _| rules::delete_notification_rule(d, id);
    may |g, _, _| policy::notification_rule(g, "create"), |g, _, _, _| policy::notification_rule(g, "update"), |g, _, _, _| policy::notification_rule(g, "delete");
}

/// A write to one entity of a collection.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    Create,
    Update(&'a str),
    /// Users are soft-deleted (restorable).
    Delete(&'a str),
}

impl Writer<'_> {
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            actor: self.actor,
            now: self.state.clock.now(),
        }
    }

    /// Commits the change `f` computes under the tenant's lock, `f` first authorizing it with
    /// the caller's [`Guard`] — over the tenant's snapshot at exactly the revision the write
    /// applies to: when a concurrent write moved the tenant on, the guard is taken again from the
    /// newer snapshot (bounded), so no decision is made on stale grants.
    pub async fn write(
        &self,
        expect: Option<Expect>,
        f: impl Fn(&Guard, &TenantDoc) -> Result<Change, RuleError>,
    ) -> Result<Written, ApiError> {
        let now = self.state.clock.now();
        let user = match self.caller {
            Caller::Platform | Caller::PlatformAdmin { .. } => {
                let g = Guard::platform(now);
                let w = self.cp.write(self.tenant, self.actor, expect, |d| f(&g, d));
                return Ok(w.await?);
            }
            Caller::User { user, .. } => user.as_str(),
        };
        let mut min = None;
        for _ in 0..GUARD_ATTEMPTS {
            let snap = crate::server::state::snapshot_at(self.state, self.tenant, min).await?;
            let g = Guard::user(snap.view(), user, now).map_err(ControlError::from)?;
            let at = g.revision();
            let w = self.cp.write(self.tenant, self.actor, expect.clone(), |d| {
                if at != Some(d.revision) {
                    return Err(RuleError::conflict(STALE_GUARD, d.revision.to_string()));
                }
                f(&g, d)
            });
            match w.await {
                Err(ControlError::Rule(RuleError::Conflict { code, message }))
                    if code == STALE_GUARD =>
                {
                    min = message.parse().ok();
                }
                r => return Ok(r?),
            }
        }
        Err(ApiError::new(
            crate::server::error::ErrorCode::RevisionConflict,
            "the tenant changes too fast to authorize this write: retry",
        ))
    }

    /// Refuses early what the caller may not do at all (before costly work such as compiling
    /// a plugin, and for reads), on the tenant's live snapshot. Writes check again in
    /// [`Writer::write`].
    pub async fn may(&self, f: impl Fn(&Guard) -> Result<(), RuleError>) -> Result<(), ApiError> {
        may(self.state, self.caller, self.tenant, f).await
    }

    /// [`Writer::write`], answered.
    pub async fn commit(
        &self,
        expect: Option<Expect>,
        created: bool,
        f: impl Fn(&Guard, &TenantDoc) -> Result<Change, RuleError>,
    ) -> Result<Resp, ApiError> {
        let w = self.write(expect, f).await?;
        Ok(written(w, created))
    }

    /// [`Writer::commit`], answered once this process serves the write: for writes that cut
    /// access (a group deactivated or deleted, a member removed), so that the next check after
    /// the answer is decided without it.
    pub async fn commit_visible(
        &self,
        expect: Option<Expect>,
        f: impl Fn(&Guard, &TenantDoc) -> Result<Change, RuleError>,
    ) -> Result<Resp, ApiError> {
        let w = self.write(expect, f).await?;
        Ok(super::identity::written_visible(self.state, self.tenant, w).await)
    }

    /// Create, update or delete in collection `C`.
    pub async fn crud<C: Collection>(
        &self,
        op: Op<'_>,
        req: Request<Incoming>,
    ) -> Result<Resp, ApiError> {
        let ctx = self.ctx();
        match op {
            Op::Create => {
                let r: C::Create = body(self.state, req).await?;
                self.commit(None, true, |g, d| {
                    (C::MAY_CREATE)(g, d, &r)?;
                    (C::CREATE)(d, &r, &ctx)
                })
                .await
            }
            Op::Update(id) => {
                let e = if_match(&req, C::KIND, id)?;
                let p: C::Patch = body(self.state, req).await?;
                let f = |g: &Guard, d: &TenantDoc| {
                    (C::MAY_UPDATE)(g, d, id, &p)?;
                    (C::UPDATE)(d, id, &p, &ctx)
                };
                if C::KIND == Kind::Group {
                    self.commit_visible(e, f).await
                } else {
                    self.commit(e, false, f).await
                }
            }
            Op::Delete(id) => {
                let e = if_match(&req, C::KIND, id)?;
                let f = |g: &Guard, d: &TenantDoc| {
                    (C::MAY_DELETE)(g, d, id, &())?;
                    (C::DELETE)(d, id, &(), &ctx)
                };
                if C::KIND == Kind::Group {
                    self.commit_visible(e, f).await
                } else {
                    self.commit(e, false, f).await
                }
            }
        }
    }

    /// `POST /v1/tenants`.
    pub async fn create_tenant(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let r: rules::TenantCreate = body(self.state, req).await?;
        let hash = match r.owner.as_ref().and_then(|o| o.password.clone()) {
            // A password the rules refuse is reported by them, with the other fields.
            Some(p) if crate::model::check_password(p.expose()).is_ok() => Some(
                tokio::task::spawn_blocking(move || {
                    crate::identity::secret::hash_password(p.expose())
                })
                .await
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("hashing failed: {e}")))?
                .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?,
            ),
            Some(_) => Some(String::new()),
            None => None,
        };
        let now = self.state.clock.now();
        let w = self
            .cp
            .write_new(&r.id, self.actor, |_| {
                rules::create_tenant(&r, now, hash.as_deref())
            })
            .await?;
        Ok(written(w, true))
    }

    /// `PATCH /v1/tenants/{t}`.
    pub async fn update_tenant(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let e = if_match(&req, Kind::Tenant, self.tenant)?;
        let p: rules::TenantPatch = body(self.state, req).await?;
        self.commit(e, false, |g, d| {
            policy::update_tenant(g, &p)?;
            rules::update_tenant(d, &p)
        })
        .await
    }

    /// `POST /v1/tenants/{t}/owner` `{"user"}`: ownership transfer, by the owner (or the
    /// platform).
    pub async fn transfer_owner(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct To {
            user: String,
        }
        let to: To = body(self.state, req).await?;
        let now = self.state.clock.now();
        self.commit(None, false, |g, d| {
            policy::transfer_owner(g)?;
            rules::transfer_owner(d, &to.user, now)
        })
        .await
    }

    /// `DELETE /v1/tenants/{t}`.
    pub async fn delete_tenant(&self, req: &Request<Incoming>) -> Result<Resp, ApiError> {
        let e = if_match(req, Kind::Tenant, self.tenant)?;
        self.commit(e, false, |g, d| {
            policy::delete_tenant(g)?;
            rules::delete_tenant(d)
        })
        .await
    }

    /// `DELETE /v1/tenants/{t}/plugins/{name}`.
    pub async fn delete_plugin(
        &self,
        name: &str,
        req: &Request<Incoming>,
    ) -> Result<Resp, ApiError> {
        let e = if_match(req, Kind::Plugin, name)?;
        self.commit(e, false, |g, d| {
            policy::plugin(g, "delete")?;
            rules::delete_plugin(d, name)
        })
        .await
    }

    /// `POST /v1/tenants/{t}/users/{id}/{activate|deactivate|restore|delete|login}`.
    pub async fn transition(
        &self,
        id: &str,
        tr: UserTransition,
        req: &Request<Incoming>,
    ) -> Result<Resp, ApiError> {
        let e = if_match(req, Kind::User, id)?;
        let now = self.state.clock.now();
        let w = self
            .write(e, |g, d| {
                policy::transition_user(g, id, tr)?;
                rules::transition_user(d, id, tr, now)
            })
            .await?;
        if matches!(tr, UserTransition::Deactivate | UserTransition::Delete) {
            // The user's sessions end with this write: answer once they are refused here.
            Ok(super::identity::written_visible(self.state, self.tenant, w).await)
        } else {
            Ok(written(w, false))
        }
    }

    /// `POST /v1/tenants/{t}/users/{id}/erase`: removes a deleted user and scrubs the user's
    /// email and name from the tenant's audit log.
    pub async fn erase_user(&self, id: &str) -> Result<Resp, ApiError> {
        // The erasure rewrites the log before its commit: authorized on the live snapshot.
        self.may(|g| policy::erase_user(g, id)).await?;
        let w = self.cp.erase_user(self.tenant, self.actor, id).await?;
        Ok(written(w, false))
    }

    /// `POST /v1/tenants/{t}/groups/{g}/members` `{"user"}`.
    pub async fn add_member(&self, group: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Member {
            user: String,
        }
        let e = if_match(&req, Kind::Group, group)?;
        let m: Member = body(self.state, req).await?;
        self.commit(e, false, |g, d| {
            policy::group_member(g, group, &m.user)?;
            rules::add_member(d, group, &m.user)
        })
        .await
    }

    /// `DELETE /v1/tenants/{t}/groups/{g}/members/{u}`.
    pub async fn remove_member(
        &self,
        group: &str,
        user: &str,
        req: &Request<Incoming>,
    ) -> Result<Resp, ApiError> {
        let e = if_match(req, Kind::Group, group)?;
        self.commit_visible(e, |g, d| {
            policy::group_member(g, group, user)?;
            rules::remove_member(d, group, user)
        })
        .await
    }
}

/// [`Writer::may`] for any handler: the platform passes; a user is judged on the tenant's live
/// snapshot.
pub async fn may(
    state: &State,
    caller: &Caller,
    tenant: &str,
    f: impl Fn(&Guard) -> Result<(), RuleError>,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    match caller {
        Caller::Platform | Caller::PlatformAdmin { .. } => {
            Ok(f(&Guard::platform(now)).map_err(ControlError::from)?)
        }
        Caller::User { user, .. } => {
            let snap = crate::server::state::snapshot_at(state, tenant, None).await?;
            let g = Guard::user(snap.view(), user, now).map_err(ControlError::from)?;
            Ok(f(&g).map_err(ControlError::from)?)
        }
    }
}
