//! The management API (`/v1/tenants/…`, `/v1/users`, `/v1/audit`, `/v1/fleet/sidecars`,
//! `/v1/openapi.json`): its router.
//!
//! Every call needs `Authorization: Bearer <credential>` (the platform token, a session token or
//! an API key: [`identity::authenticate`]); [`permit`] admits the caller to the path, then each
//! operation is authorized by the engine (`control::policy` through [`writes::Writer::write`] and
//! [`writes::may`]). Writes return the tenant's new
//! revision (body `revision`, header `X-Portcullis-Revision`) so that a client can `check` with
//! `min_revision` and read its own write; single entities carry an `ETag` (the revision at which
//! the entity last changed), which `If-Match` on updates must match (409 otherwise).
//!
//! [`http`]: bearer check, path/query decoding, typed queries, answers; [`reads`] and
//! [`writes`]: the handlers over `control::views` and `control::rules`; [`plugins`]: module
//! upload and download; [`fleet`]: the sidecars' status.

pub mod fleet;
pub mod http;
pub mod identity;
pub mod plugins;
pub mod reads;
pub mod webhook;
pub mod writes;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response};

use self::http::{segments, Query};
use self::identity::Caller;
use self::writes::{Op, Writer};
use super::error::ApiError;
use super::{Resp, State};
use crate::control::authz::At;
use crate::control::rules::UserTransition;
use crate::store::Kind;

pub use crate::control::views::MAX_PAGE;

/// The OpenAPI 3 document of the whole HTTP API (also in the repository at `deploy/openapi.json`).
pub const OPENAPI: &str = include_str!("../../../deploy/openapi.json");

/// A tenant's entity collection, as named in paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coll {
    Nodes,
    Users,
    Groups,
    Roles,
    Assignments,
    Plugins,
    NotificationRules,
}

impl Coll {
    fn parse(s: &str) -> Option<Coll> {
        Some(match s {
            "nodes" => Coll::Nodes,
            "users" => Coll::Users,
            "groups" => Coll::Groups,
            "roles" => Coll::Roles,
            "assignments" => Coll::Assignments,
            "plugins" => Coll::Plugins,
            "notification-rules" => Coll::NotificationRules,
            _ => return None,
        })
    }

    pub fn kind(self) -> Kind {
        match self {
            Coll::Nodes => Kind::Node,
            Coll::Users => Kind::User,
            Coll::Groups => Kind::Group,
            Coll::Roles => Kind::Role,
            Coll::Assignments => Kind::Assignment,
            Coll::Plugins => Kind::Plugin,
            Coll::NotificationRules => Kind::NotificationRule,
        }
    }
}

/// A management path, decoded.
#[derive(Debug, Clone, Copy)]
enum Route<'a> {
    OpenApi,
    PlatformUsers,
    PlatformAudit,
    FleetSidecars,
    Tenants,
    Tenant(&'a str),
    Audit(&'a str),
    AuditEntry(&'a str, &'a str),
    List(&'a str, Coll),
    Entity(&'a str, Coll, &'a str),
    PluginWasm(&'a str, &'a str),
    PluginVersions(&'a str, &'a str),
    PluginRollback(&'a str, &'a str),
    PluginCanary(&'a str, &'a str),
    PluginCanaryPromote(&'a str, &'a str),
    UserOp(&'a str, &'a str, UserTransition),
    UserErase(&'a str, &'a str),
    Members(&'a str, &'a str),
    Member(&'a str, &'a str, &'a str),
    GroupRecipients(&'a str, &'a str),
    RuleRecipients(&'a str, &'a str),
    Sessions(&'a str),
    SessionCurrent(&'a str),
    InvitationAccept(&'a str, &'a str),
    UserPassword(&'a str, &'a str),
    UserInvitation(&'a str, &'a str),
    UserCards(&'a str, &'a str),
    ApiKeys(&'a str),
    ApiKey(&'a str, &'a str),
    Guests(&'a str),
    Guest(&'a str, &'a str),
    Owner(&'a str),
}

impl<'a> Route<'a> {
    fn parse(segs: &[&'a str]) -> Option<Route<'a>> {
        Some(match *segs {
            ["openapi.json"] => Route::OpenApi,
            ["users"] => Route::PlatformUsers,
            ["audit"] => Route::PlatformAudit,
            ["fleet", "sidecars"] => Route::FleetSidecars,
            ["tenants"] => Route::Tenants,
            ["tenants", t] => Route::Tenant(t),
            ["tenants", t, "audit"] => Route::Audit(t),
            ["tenants", t, "audit", rev] => Route::AuditEntry(t, rev),
            ["tenants", t, "sessions"] => Route::Sessions(t),
            ["tenants", t, "sessions", "current"] => Route::SessionCurrent(t),
            ["tenants", t, "invitations", token, "accept"] => Route::InvitationAccept(t, token),
            ["tenants", t, "api-keys"] => Route::ApiKeys(t),
            ["tenants", t, "api-keys", id] => Route::ApiKey(t, id),
            ["tenants", t, "guests"] => Route::Guests(t),
            ["tenants", t, "guests", id] => Route::Guest(t, id),
            ["tenants", t, "owner"] => Route::Owner(t),
            ["tenants", t, "users", id, "password"] => Route::UserPassword(t, id),
            ["tenants", t, "users", id, "invitation"] => Route::UserInvitation(t, id),
            ["tenants", t, "users", id, "cards"] => Route::UserCards(t, id),
            ["tenants", t, c] => Route::List(t, Coll::parse(c)?),
            ["tenants", t, c, id] => Route::Entity(t, Coll::parse(c)?, id),
            ["tenants", t, "plugins", name, "wasm"] => Route::PluginWasm(t, name),
            ["tenants", t, "plugins", name, "versions"] => Route::PluginVersions(t, name),
            ["tenants", t, "plugins", name, "rollback"] => Route::PluginRollback(t, name),
            ["tenants", t, "plugins", name, "canary"] => Route::PluginCanary(t, name),
            ["tenants", t, "plugins", name, "canary", "promote"] => {
                Route::PluginCanaryPromote(t, name)
            }
            ["tenants", t, "groups", g, "members"] => Route::Members(t, g),
            ["tenants", t, "groups", g, "members", u] => Route::Member(t, g, u),
            ["tenants", t, "groups", g, "recipients"] => Route::GroupRecipients(t, g),
            ["tenants", t, "notification-rules", r, "recipients"] => Route::RuleRecipients(t, r),
            ["tenants", t, "users", id, "erase"] => Route::UserErase(t, id),
            ["tenants", t, "users", id, op] => Route::UserOp(
                t,
                id,
                match op {
                    "activate" => UserTransition::Activate,
                    "deactivate" => UserTransition::Deactivate,
                    "restore" => UserTransition::Restore,
                    "delete" => UserTransition::Delete,
                    "login" => UserTransition::Login,
                    _ => return None,
                },
            ),
            _ => return None,
        })
    }

    /// The methods the path accepts (the `Allow` header of its 405).
    fn allow(self) -> &'static str {
        match self {
            Route::OpenApi
            | Route::PlatformUsers
            | Route::PlatformAudit
            | Route::FleetSidecars
            | Route::Audit(..)
            | Route::AuditEntry(..)
            | Route::PluginWasm(..)
            | Route::PluginVersions(..)
            | Route::GroupRecipients(..)
            | Route::RuleRecipients(..) => "GET",
            Route::PluginRollback(..) | Route::PluginCanaryPromote(..) => "POST",
            Route::PluginCanary(..) => "GET, PATCH, DELETE",
            Route::List(_, Coll::Plugins) => "GET",
            Route::Tenants | Route::List(..) => "GET, POST",
            Route::Entity(_, Coll::Plugins, _) => "GET, PUT, DELETE",
            Route::Tenant(_) | Route::Entity(..) => "GET, PATCH, DELETE",
            Route::UserOp(..) | Route::UserErase(..) | Route::Members(..) => "POST",
            Route::Member(..) => "DELETE",
            Route::Sessions(..)
            | Route::InvitationAccept(..)
            | Route::UserPassword(..)
            | Route::UserInvitation(..)
            | Route::Guests(..)
            | Route::Owner(..) => "POST",
            Route::SessionCurrent(..) | Route::Guest(..) => "DELETE",
            Route::UserCards(..) => "POST, DELETE",
            Route::ApiKeys(..) => "GET, POST",
            Route::ApiKey(..) => "DELETE",
        }
    }

    /// The tenant the path addresses, if any.
    fn tenant(self) -> Option<&'a str> {
        use Route::*;
        match self {
            OpenApi | PlatformUsers | PlatformAudit | FleetSidecars | Tenants => None,
            Tenant(t)
            | Audit(t)
            | AuditEntry(t, _)
            | List(t, _)
            | Entity(t, _, _)
            | PluginWasm(t, _)
            | PluginVersions(t, _)
            | PluginRollback(t, _)
            | PluginCanary(t, _)
            | PluginCanaryPromote(t, _)
            | UserOp(t, _, _)
            | UserErase(t, _)
            | Members(t, _)
            | Member(t, _, _)
            | GroupRecipients(t, _)
            | RuleRecipients(t, _)
            | Sessions(t)
            | SessionCurrent(t)
            | InvitationAccept(t, _)
            | UserPassword(t, _)
            | UserInvitation(t, _)
            | UserCards(t, _)
            | ApiKeys(t)
            | ApiKey(t, _)
            | Guests(t)
            | Guest(t, _)
            | Owner(t) => Some(t),
        }
    }
}

/// Who may call at all: platform-wide paths need the platform; a tenant's paths a credential of
/// that tenant (never a guest's). What each operation then needs is decided per operation by
/// the engine (`control::policy`, through [`writes::Writer::write`] and [`writes::may`]).
fn permit(caller: &Caller, route: Route<'_>) -> Result<(), ApiError> {
    let forbidden = |m: String| Err(ApiError::new(super::error::ErrorCode::Forbidden, m));
    match (route.tenant(), caller) {
        (_, Caller::Platform | Caller::PlatformAdmin { .. }) => Ok(()),
        (None, _) => forbidden("only the platform may use platform-wide endpoints".into()),
        (Some(t), Caller::User { tenant, .. }) if tenant != t => forbidden(format!(
            "this credential is for tenant '{}', not '{}'",
            super::error::clip(tenant),
            super::error::clip(t)
        )),
        (Some(_), Caller::User { kind, .. }) if *kind == crate::model::UserKind::Guest => forbidden(
            "guest tokens are read-only data-plane credentials: they cannot use the management API"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// The permission reading collection `c` needs.
fn read_perm(c: Coll) -> &'static str {
    match c {
        Coll::Nodes => "node:read",
        Coll::Users => "user:read",
        Coll::Groups => "group:read",
        Coll::Roles => "role:read",
        Coll::Assignments => "assignment:read",
        Coll::Plugins => "plugin:read",
        Coll::NotificationRules => "notification_rule:read",
    }
}

/// What of collection `c` the caller may see: users where they live, nodes and assignments by
/// node, the rest all or nothing (403 `forbidden`).
async fn visible(
    state: &State,
    caller: &Caller,
    t: &str,
    c: Coll,
) -> Result<crate::control::views::Visible, ApiError> {
    let perm = read_perm(c);
    let vis = std::sync::Mutex::new(None);
    writes::may(state, caller, t, |g| {
        let v = match c {
            Coll::Users => g.visible_users(perm),
            Coll::Nodes | Coll::Assignments => g.visible_nodes(perm),
            _ => {
                g.require(perm, At::Tenant)?;
                None
            }
        };
        if let Ok(mut slot) = vis.lock() {
            *slot = v;
        }
        Ok(())
    })
    .await?;
    Ok(vis.into_inner().unwrap_or_default())
}

/// Refuses a caller without `perm` at the tenant level.
async fn may_tenant(state: &State, caller: &Caller, t: &str, perm: &str) -> Result<(), ApiError> {
    writes::may(state, caller, t, |g| g.require(perm, At::Tenant)).await
}

/// May the caller read entity `id` of collection `c`?
async fn may_read(
    state: &State,
    cp: &crate::control::ControlPlane,
    caller: &Caller,
    t: &str,
    c: Coll,
    id: &str,
) -> Result<(), ApiError> {
    if caller.is_platform() {
        return Ok(());
    }
    let scope = match c {
        Coll::Assignments => {
            cp.read(t, |d| {
                d.assignments.get(id).map(|a| a.assignment.scope.clone())
            })
            .await?
        }
        _ => None,
    };
    let perm = read_perm(c);
    writes::may(state, caller, t, |g| match c {
        Coll::Users => g.require_user(perm, id),
        Coll::Nodes => g.require_at(perm, id),
        Coll::Assignments => match &scope {
            Some(s) => g.require_at(perm, s),
            None => g.require(perm, At::Tenant),
        },
        _ => g.require(perm, At::Tenant),
    })
    .await
}

fn openapi() -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Handles a management request. `path` starts with `/v1/`.
pub async fn handle(state: &State, req: Request<Incoming>) -> Result<Resp, ApiError> {
    if req.uri().path() == "/v1/openapi.json" && req.method() == Method::GET {
        return Ok(openapi());
    }
    let path = req.uri().path().to_string();
    let segs = segments(&path)?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let parsed = Route::parse(&segs);
    let method = req.method().clone();
    let Some(cp) = state.control.clone() else {
        return Err(ApiError::new(
            super::error::ErrorCode::NotFound,
            "this process has no control plane",
        ));
    };
    let cp = &*cp;
    // Sign-in and invitation acceptance carry their own credentials.
    match (parsed, &method) {
        (Some(Route::Sessions(t)), &Method::POST) => {
            return identity::sign_in(state, cp, t, req).await
        }
        (Some(Route::InvitationAccept(t, token)), &Method::POST) => {
            return identity::accept_invitation(state, cp, t, token, req).await
        }
        _ => {}
    }
    let caller = identity::authenticate(state, &req, parsed.and_then(Route::tenant))?;
    let route = parsed.ok_or_else(|| ApiError::not_found(&path))?;
    permit(&caller, route)?;
    let actor = caller.actor();
    let actor = actor.as_str();
    let q = Query::of(&req);
    let now = state.clock.now();
    let w = |tenant| Writer {
        state,
        cp,
        tenant,
        actor,
        caller: &caller,
    };
    use Route::*;
    let refusal_target = format!("{method} {path}");
    let result = match (route, method.clone()) {
        (SessionCurrent(t), Method::DELETE) => identity::sign_out(state, cp, &caller, t).await,
        (UserPassword(t, id), Method::POST) => identity::set_password(&w(t), id, req).await,
        (UserInvitation(t, id), Method::POST) => identity::reinvite(&w(t), id).await,
        (UserCards(t, id), Method::POST) => identity::add_card(&w(t), id, req).await,
        (UserCards(t, id), Method::DELETE) => identity::remove_cards(&w(t), id).await,
        (ApiKeys(t), Method::GET) => identity::list_api_keys(state, cp, &caller, t).await,
        (ApiKeys(t), Method::POST) => identity::create_api_key(&w(t), req).await,
        (ApiKey(t, id), Method::DELETE) => identity::revoke_api_key(&w(t), id).await,
        (Guests(t), Method::POST) => identity::create_guest(&w(t), req).await,
        (Guest(t, id), Method::DELETE) => identity::revoke_guest(&w(t), id).await,
        (Owner(t), Method::POST) => w(t).transfer_owner(req).await,
        (List(t, Coll::Users), Method::POST) => identity::create_user(&w(t), req).await,
        (Entity(t, Coll::Users, id), Method::DELETE) => {
            w(t).transition(id, UserTransition::Delete, &req).await
        }
        (PlatformUsers, Method::GET) => reads::platform_users(cp, &q).await,
        (PlatformAudit, Method::GET) => reads::platform_audit(cp, &q).await,
        (FleetSidecars, Method::GET) => fleet::sidecars(state, cp).await,
        (Tenants, Method::GET) => reads::tenants(cp, &q).await,
        (Tenants, Method::POST) => w("").create_tenant(req).await,
        (Tenant(t), Method::GET) => {
            may_tenant(state, &caller, t, "tenant:read").await?;
            reads::tenant(cp, t).await
        }
        (Tenant(t), Method::PATCH) => w(t).update_tenant(req).await,
        (Tenant(t), Method::DELETE) => w(t).delete_tenant(&req).await,
        (Audit(t), Method::GET) => {
            may_tenant(state, &caller, t, "audit:read").await?;
            reads::audit(cp, t, &q).await
        }
        (AuditEntry(t, rev), Method::GET) => {
            may_tenant(state, &caller, t, "audit:read").await?;
            reads::audit_entry(cp, t, rev, &q).await
        }
        (List(t, c), Method::GET) => {
            let vis = visible(state, &caller, t, c).await?;
            reads::list(cp, t, c, &q, now, &vis).await
        }
        (Entity(t, Coll::Users, "overview"), Method::GET) => {
            may_tenant(state, &caller, t, "user:read").await?;
            reads::user_overview(cp, t, now).await
        }
        (Entity(t, c, id), Method::GET) => {
            may_read(state, cp, &caller, t, c, id).await?;
            reads::entity(cp, t, c, id, now).await
        }
        (Entity(t, Coll::Plugins, name), Method::PUT) => {
            plugins::upload(&w(t), name, &q, req).await
        }
        (Entity(t, Coll::Plugins, name), Method::DELETE) => w(t).delete_plugin(name, &req).await,
        (PluginWasm(t, name), Method::GET) => {
            may_tenant(state, &caller, t, "plugin:read").await?;
            plugins::download(cp, t, name).await
        }
        (PluginVersions(t, name), Method::GET) => {
            may_tenant(state, &caller, t, "plugin:read").await?;
            plugins::versions(cp, t, name).await
        }
        (PluginRollback(t, name), Method::POST) => plugins::rollback(&w(t), name, req).await,
        (PluginCanary(t, name), Method::GET) => {
            may_tenant(state, &caller, t, "plugin:read").await?;
            plugins::canary(cp, t, name).await
        }
        (PluginCanary(t, name), Method::PATCH) => plugins::canary_share(&w(t), name, req).await,
        (PluginCanary(t, name), Method::DELETE) => plugins::canary_abort(&w(t), name, &req).await,
        (PluginCanaryPromote(t, name), Method::POST) => {
            plugins::canary_promote(&w(t), name, &req).await
        }
        (UserOp(t, id, tr), Method::POST) => w(t).transition(id, tr, &req).await,
        (UserErase(t, id), Method::POST) => w(t).erase_user(id).await,
        (Members(t, g), Method::POST) => w(t).add_member(g, req).await,
        (Member(t, g, u), Method::DELETE) => w(t).remove_member(g, u, &req).await,
        (GroupRecipients(t, g), Method::GET) => {
            // Recipients are users with their emails.
            may_tenant(state, &caller, t, "group:read").await?;
            may_tenant(state, &caller, t, "user:read").await?;
            reads::group_recipients(cp, t, g, &q).await
        }
        (RuleRecipients(t, r), Method::GET) => {
            may_tenant(state, &caller, t, "notification_rule:read").await?;
            may_tenant(state, &caller, t, "user:read").await?;
            reads::rule_recipients(cp, t, r, &q).await
        }
        (List(t, c), Method::POST) if c != Coll::Plugins => crud(&w(t), c, Op::Create, req).await,
        (Entity(t, c, id), Method::PATCH) if c != Coll::Plugins => {
            crud(&w(t), c, Op::Update(id), req).await
        }
        (Entity(t, c, id), Method::DELETE) => crud(&w(t), c, Op::Delete(id), req).await,
        (r, _) => Err(ApiError::method_not_allowed(r.allow())),
    };
    if let (Err(e), Some(t), false) = (&result, route.tenant(), caller.is_platform()) {
        if method != Method::GET && is_refusal(e.code) {
            // Refused writes are audited with their actor (never their body).
            let target = format!("{refusal_target}: {}", e.code.as_str());
            if let Err(err) = cp.record_refusal(t, actor, target).await {
                tracing::warn!(tenant = t, error = %err, "recording a refused write failed");
            }
        }
    }
    result
}

/// The management API's authorization refusals (audited when a write is refused).
fn is_refusal(code: super::error::ErrorCode) -> bool {
    use super::error::ErrorCode as C;
    matches!(
        code,
        C::Forbidden
            | C::PrivilegeEscalation
            | C::SelfAction
            | C::OwnerProtected
            | C::AdminProtected
    )
}

/// The generic create/update/delete of an entity collection (plugins have their own upload).
async fn crud(
    w: &Writer<'_>,
    c: Coll,
    op: Op<'_>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    match c {
        Coll::Nodes => w.crud::<writes::Nodes>(op, req).await,
        Coll::Users => w.crud::<writes::Users>(op, req).await,
        Coll::Groups => w.crud::<writes::Groups>(op, req).await,
        Coll::Roles => w.crud::<writes::Roles>(op, req).await,
        Coll::Assignments => w.crud::<writes::Assignments>(op, req).await,
        Coll::NotificationRules => w.crud::<writes::NotificationRules>(op, req).await,
        // Routed to `plugins` and `Writer::delete_plugin` before reaching here.
        Coll::Plugins => Err(ApiError::method_not_allowed(match op {
            Op::Create => Route::List("", c).allow(),
            Op::Update(_) | Op::Delete(_) => Route::Entity("", c, "").allow(),
        })),
    }
}
