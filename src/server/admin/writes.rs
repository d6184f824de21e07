//! Management writes: the HTTP side of every write (body, `If-Match`, answer). The business
//! rules live in `control::rules`; this file binds each request to its rule, with one generic
//! create/update/delete path for the entity collections.

use hyper::body::Incoming;
use hyper::Request;
use serde::de::DeserializeOwned;

use super::http::{body, if_match, written};
use crate::control::rules::{self, Change, RuleError, UserTransition};
use crate::control::{ControlPlane, Expect, TenantDoc};
use crate::model::Timestamp;
use crate::server::error::ApiError;
use crate::server::{Resp, State};
use crate::store::Kind;

/// Who writes to which tenant, and when.
pub struct Writer<'a> {
    pub state: &'a State,
    pub cp: &'a ControlPlane,
    pub tenant: &'a str,
    pub actor: &'a str,
}

/// What a rule may need besides the document and the request body.
pub struct Ctx<'a> {
    pub actor: &'a str,
    pub now: Timestamp,
}

type Rule<T> = fn(&TenantDoc, &T, &Ctx) -> Result<Change, RuleError>;
type IdRule<T> = fn(&TenantDoc, &str, &T, &Ctx) -> Result<Change, RuleError>;

/// The write rules of one entity collection.
pub trait Collection {
    const KIND: Kind;
    type Create: DeserializeOwned + Send;
    type Patch: DeserializeOwned + Send;
    const CREATE: Rule<Self::Create>;
    const UPDATE: IdRule<Self::Patch>;
    const DELETE: IdRule<()>;
}

/// One line per collection: its kind, request types and rules.
macro_rules! collections {
    ($($name:ident $kind:ident $create:ident $patch:ident $c:expr, $u:expr, $d:expr;)*) => {$(
        pub struct $name;
        impl Collection for $name {
            const KIND: Kind = Kind::$kind;
            type Create = rules::$create;
            type Patch = rules::$patch;
            const CREATE: Rule<Self::Create> = $c;
            const UPDATE: IdRule<Self::Patch> = $u;
            const DELETE: IdRule<()> = $d;
        }
    )*};
}

collections! {
    Nodes Node NodeCreate NodePatch |d, r, _| rules::create_node(d, r), |d, id, p, _| rules::update_node(d, id, p), |d, id, _, _| rules::delete_node(d, id);
    Users User UserCreate UserPatch |d, r, c| rules::create_user(d, r, c.now, &rules::NewUserSecrets::default()), |d, id, p, c| rules::update_user(d, id, p, c.now), |d, id, _, c| rules::transition_user(d, id, UserTransition::Delete, c.now);
    Groups Group GroupCreate GroupPatch |d, r, _| rules::create_group(d, r), |d, id, p, _| rules::update_group(d, id, p), |d, id, _, _| rules::delete_group(d, id);
    Roles Role RoleCreate RolePatch |d, r, _| rules::create_role(d, r), |d, id, p, _| rules::update_role(d, id, p), |d, id, _, _| rules::delete_role(d, id);
    Assignments Assignment AssignmentCreate AssignmentPatch |d, r, c| rules::create_assignment(d, r, c.actor, c.now), |d, id, p, c| rules::update_assignment(d, id, p, c.now), |d, id, _, _| rules::delete_assignment(d, id);
    NotificationRules NotificationRule NotificationRuleCreate NotificationRulePatch |d, r, _| rules::create_notification_rule(d, r), |d, id, p, _| rules::update_notification_rule(d, id, p), |d, id, _, _| rules::delete_notification_rule(d, id);
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

    /// Commits the change `f` computes under the tenant's lock.
    pub async fn commit(
        &self,
        expect: Option<Expect>,
        created: bool,
        f: impl FnOnce(&TenantDoc) -> Result<Change, RuleError>,
    ) -> Result<Resp, ApiError> {
        let w = self.cp.write(self.tenant, self.actor, expect, f).await?;
        Ok(written(w, created))
    }

    /// [`Writer::commit`], answered once this process serves the write: for writes that cut
    /// access (a group deactivated or deleted, a member removed), so that the next check after
    /// the answer is decided without it.
    pub async fn commit_visible(
        &self,
        expect: Option<Expect>,
        f: impl FnOnce(&TenantDoc) -> Result<Change, RuleError>,
    ) -> Result<Resp, ApiError> {
        let w = self.cp.write(self.tenant, self.actor, expect, f).await?;
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
                self.commit(None, true, |d| (C::CREATE)(d, &r, &ctx)).await
            }
            Op::Update(id) => {
                let e = if_match(&req, C::KIND, id)?;
                let p: C::Patch = body(self.state, req).await?;
                let f = |d: &TenantDoc| (C::UPDATE)(d, id, &p, &ctx);
                if C::KIND == Kind::Group {
                    self.commit_visible(e, f).await
                } else {
                    self.commit(e, false, f).await
                }
            }
            Op::Delete(id) => {
                let e = if_match(&req, C::KIND, id)?;
                let f = |d: &TenantDoc| (C::DELETE)(d, id, &(), &ctx);
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
        let now = self.state.clock.now();
        let w = self
            .cp
            .write_new(&r.id, self.actor, |_| rules::create_tenant(&r, now))
            .await?;
        Ok(written(w, true))
    }

    /// `PATCH /v1/tenants/{t}`.
    pub async fn update_tenant(&self, req: Request<Incoming>) -> Result<Resp, ApiError> {
        let e = if_match(&req, Kind::Tenant, self.tenant)?;
        let p: rules::TenantPatch = body(self.state, req).await?;
        self.commit(e, false, |d| rules::update_tenant(d, &p)).await
    }

    /// `DELETE /v1/tenants/{t}`.
    pub async fn delete_tenant(&self, req: &Request<Incoming>) -> Result<Resp, ApiError> {
        let e = if_match(req, Kind::Tenant, self.tenant)?;
        self.commit(e, false, rules::delete_tenant).await
    }

    /// `DELETE /v1/tenants/{t}/plugins/{name}`.
    pub async fn delete_plugin(
        &self,
        name: &str,
        req: &Request<Incoming>,
    ) -> Result<Resp, ApiError> {
        let e = if_match(req, Kind::Plugin, name)?;
        self.commit(e, false, |d| rules::delete_plugin(d, name))
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
            .cp
            .write(self.tenant, self.actor, e, |d| {
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
        self.commit(e, false, |d| rules::add_member(d, group, &m.user))
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
        self.commit_visible(e, |d| rules::remove_member(d, group, user))
            .await
    }
}
