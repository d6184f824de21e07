//! Authorization of management calls, decided by the data plane's own engine over the tenant's
//! snapshot — taken at exactly the revision the write applies to (see
//! `server::admin::writes::Writer::write`).
//!
//! Every management operation is a permission `entity:verb` checked at a node:
//! - assignments at their scope (`assignment:create|delete|read`), nodes at themselves
//!   (`node:update|delete|read`) or their parent (`node:create`; a root node: the tenant level);
//! - users at **the place where they live**: the lowest node covering every scope at which they
//!   hold an assignment (their own or through any of their groups); a user without assignments
//!   lives at the tenant level. So `user:*` at site A manages exactly the users whose access lies
//!   within site A, and lists show exactly those;
//! - guests at their scope (`guest:create|delete`);
//! - everything else at the **tenant level** (`group:…`, `role:…`, `plugin:…`,
//!   `notification_rule:…`, `audit:read`, `tenant:read|update`): held at every root node of the
//!   hierarchy. Recipients of a group or a notification rule also need `user:read` there.
//!
//! The tenant's owner and its administrators (user kinds `owner`, `admin`) hold every management
//! permission; the rules about who may touch them ([`Guard::require_user_write`]) still apply.
//! The platform (bootstrap token) passes every check here.
//!
//! **No privilege escalation** (Kubernetes' escalate/bind rule): a caller may grant role R at N
//! only when holding every permission of R at N ([`Guard::require_grant`]), and may modify,
//! demote, deactivate, delete or reset a user only when the caller could have granted everything
//! that user holds ([`Guard::require_outranks`]). Grants with plugin conditions do not count as
//! held (they depend on a request).

use crate::control::rules::RuleError;
use crate::decide;
use crate::snapshot::{ArchivedTenantSnap, KIND_ADMIN, KIND_GUEST, KIND_OWNER, NONE};

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who<'a> {
    /// The platform: the bootstrap token. Every check passes.
    Platform,
    /// A user of the tenant (session token or API key).
    User(&'a str),
}

/// A management caller's view of one tenant at one revision.
pub struct Guard<'a> {
    who: Who<'a>,
    /// The tenant's snapshot (absent for the platform, which needs none).
    v: Option<&'a ArchivedTenantSnap>,
    /// The caller's user kind (users only).
    kind: u8,
    now: i64,
}

/// A refusal with one of the management API's 403 codes.
fn refuse(code: &'static str, message: impl Into<String>) -> RuleError {
    RuleError::conflict(code, message)
}

/// Where a check applies: a node, or the tenant level (every root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Tenant,
    Node(u32),
}

/// The nodes where a caller may do something: everywhere, or a set of subtrees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scopes {
    All,
    /// Disjoint pre-order intervals `[lo, hi)`.
    Within(Vec<(u32, u32)>),
}

impl Scopes {
    /// Does the interval `[lo, hi)` lie inside one of the scopes?
    pub fn covers(&self, lo: u32, hi: u32) -> bool {
        match self {
            Scopes::All => true,
            Scopes::Within(iv) => iv.iter().any(|&(a, b)| a <= lo && hi <= b),
        }
    }
}

impl<'a> Guard<'a> {
    /// The platform's guard: every check passes.
    pub fn platform(now: i64) -> Guard<'static> {
        Guard {
            who: Who::Platform,
            v: None,
            kind: NONE as u8,
            now,
        }
    }

    /// A user's guard over snapshot `v`. Guests and users who are not active may not manage.
    pub fn user(
        v: &'a ArchivedTenantSnap,
        user: &'a str,
        now: i64,
    ) -> Result<Guard<'a>, RuleError> {
        let u = decide::active_user(v, user).map_err(|r| {
            refuse(
                "forbidden",
                format!("user '{user}' may not manage this tenant ({})", r.code()),
            )
        })?;
        if u.kind == KIND_GUEST {
            return Err(refuse(
                "forbidden",
                "guest tokens are read-only data-plane credentials: they cannot use the management API",
            ));
        }
        Ok(Guard {
            who: Who::User(user),
            v: Some(v),
            kind: u.kind,
            now,
        })
    }

    pub fn who(&self) -> Who<'a> {
        self.who
    }

    /// The revision of the state this guard decides on (the platform: any).
    pub fn revision(&self) -> Option<u64> {
        self.v.map(|v| v.revision.to_native())
    }

    /// The caller's user id (users only).
    pub fn user_id(&self) -> Option<&'a str> {
        match self.who {
            Who::User(u) => Some(u),
            Who::Platform => None,
        }
    }

    pub fn is_platform(&self) -> bool {
        self.who == Who::Platform
    }

    pub fn is_owner(&self) -> bool {
        self.v.is_some() && self.kind == KIND_OWNER
    }

    /// The platform, the owner and administrators hold every management permission.
    pub fn is_manager(&self) -> bool {
        self.is_platform() || self.kind == KIND_OWNER || self.kind == KIND_ADMIN
    }

    fn node_name(v: &ArchivedTenantSnap, x: u32) -> &str {
        v.nodes.get(x as usize).map_or("?", |n| n.id.as_str())
    }

    fn roots(v: &ArchivedTenantSnap) -> impl Iterator<Item = u32> + '_ {
        v.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.parent.to_native() == NONE)
            .map(|(i, _)| i as u32)
    }

    /// Does the caller hold `perm` (a permission pattern) at `at`?
    pub fn holds(&self, perm: &str, at: At) -> bool {
        let (Some(v), Who::User(u)) = (self.v, self.who) else {
            return true;
        };
        if self.is_manager() {
            return true;
        }
        match at {
            At::Node(x) => decide::holds(v, u, perm, x, self.now).allowed,
            At::Tenant => {
                let mut any = false;
                for r in Self::roots(v) {
                    any = true;
                    if !decide::holds(v, u, perm, r, self.now).allowed {
                        return false;
                    }
                }
                // A tenant without nodes has nowhere to hold anything: managers only.
                any
            }
        }
    }

    /// Refuses (403 `forbidden`, naming the permission and the place) unless the caller holds
    /// `perm` at `at`.
    pub fn require(&self, perm: &str, at: At) -> Result<(), RuleError> {
        if self.holds(perm, at) {
            return Ok(());
        }
        let place = match (at, self.v) {
            (At::Node(x), Some(v)) => format!("on '{}'", Self::node_name(v, x)),
            _ => "at the tenant level (every root node)".to_string(),
        };
        Err(refuse(
            "forbidden",
            format!("missing permission '{perm}' {place}"),
        ))
    }

    /// [`Guard::require`] at the node `id` (an unknown node: the rule answers; no check here).
    pub fn require_at(&self, perm: &str, id: &str) -> Result<(), RuleError> {
        match self.node(id) {
            Some(x) => self.require(perm, At::Node(x)),
            None if self.v.is_none() => Ok(()),
            // Unknown node: only a caller with the permission tenant-wide learns so.
            None => self.require(perm, At::Tenant),
        }
    }

    /// The pre-order index of node `id`.
    pub fn node(&self, id: &str) -> Option<u32> {
        self.v
            .and_then(|v| v.node_index.get(id).map(|x| x.to_native()))
    }

    /// The index of user `id`.
    fn user_index(&self, id: &str) -> Option<usize> {
        self.v
            .and_then(|v| v.user_index.get(id).map(|x| x.to_native() as usize))
    }

    /// Calls `f(role, lo)` for every grant user `u` holds, its own and through any of its
    /// groups (active or not: an inactive group can be switched back on). Not the tenant's
    /// default role ([`crate::snapshot::DEFAULT_ROLE_GROUP`]): every user but guests holds it at
    /// the roots, so it says nothing about where a user lives, and a caller who is not a guest
    /// holds it too.
    fn each_grant(v: &ArchivedTenantSnap, u: usize, mut f: impl FnMut(u32, u32) -> bool) {
        let Some(user) = v.users.get(u) else { return };
        let slice = |s: u32, e: u32| v.grants.get(s as usize..e as usize).unwrap_or(&[]);
        for g in slice(user.grants.start.to_native(), user.grants.end.to_native()) {
            if !f(g.role.to_native(), g.lo.to_native()) {
                return;
            }
        }
        let (gs, ge) = (
            user.groups.start.to_native() as usize,
            user.groups.end.to_native() as usize,
        );
        for gi in v.memberships.get(gs..ge).unwrap_or(&[]) {
            let Some(group) = v.groups.get(gi.to_native() as usize) else {
                continue;
            };
            if group.id == crate::snapshot::DEFAULT_ROLE_GROUP {
                continue;
            }
            for g in slice(group.grants.start.to_native(), group.grants.end.to_native()) {
                if !f(g.role.to_native(), g.lo.to_native()) {
                    return;
                }
            }
        }
    }

    /// Where user `u` lives: the lowest node covering all its grants (`None`: the tenant level).
    fn place_of(v: &ArchivedTenantSnap, u: usize) -> Option<u32> {
        let (mut lo, mut hi) = (u32::MAX, 0u32);
        Self::each_grant(v, u, |_, x| {
            let end = v.nodes.get(x as usize).map_or(x + 1, |n| n.end.to_native());
            lo = lo.min(x);
            hi = hi.max(end);
            true
        });
        if lo == u32::MAX {
            return None;
        }
        // Walk up from the leftmost grant until the subtree covers the rightmost one.
        let mut x = lo;
        loop {
            let n = v.nodes.get(x as usize)?;
            if n.end.to_native() >= hi {
                return Some(x);
            }
            let p = n.parent.to_native();
            if p == NONE {
                return None;
            }
            x = p;
        }
    }

    /// The place of user `id` (see the module docs), for checks and messages.
    pub fn place(&self, id: &str) -> At {
        match (self.v, self.user_index(id)) {
            (Some(v), Some(u)) => Self::place_of(v, u).map_or(At::Tenant, At::Node),
            _ => At::Tenant,
        }
    }

    /// The interval of the place of user `id`.
    pub fn place_interval(&self, id: &str) -> Option<(u32, u32)> {
        let v = self.v?;
        match self.place(id) {
            At::Node(x) => v.nodes.get(x as usize).map(|n| (x, n.end.to_native())),
            At::Tenant => Some((0, v.nodes.len() as u32)),
        }
    }

    /// Refuses unless the caller holds `perm` where user `id` lives.
    pub fn require_user(&self, perm: &str, id: &str) -> Result<(), RuleError> {
        self.require(perm, self.place(id))
    }

    /// The first permission of role `role` (an index) the caller lacks at node `x`.
    fn lacks(&self, role: u32, x: u32) -> Option<&'a str> {
        let v = self.v?;
        if self.is_manager() {
            return None;
        }
        let r = v.roles.get(role as usize)?;
        r.permissions
            .iter()
            .map(|p| p.as_str())
            .find(|p| !self.holds(p, At::Node(x)))
    }

    /// Refuses (403 `privilege_escalation`) a grant of role `role` at node `scope` unless the
    /// caller holds every permission of the role there.
    pub fn require_grant(&self, role: &str, scope: &str) -> Result<(), RuleError> {
        let (Some(v), false) = (self.v, self.is_manager()) else {
            return Ok(());
        };
        let Some(x) = self.node(scope) else {
            return Ok(()); // unknown scope: the rule answers 422
        };
        let Some(ri) = v.roles.iter().position(|r| r.id == role) else {
            return Ok(()); // unknown role: the rule answers 422
        };
        match self.lacks(ri as u32, x) {
            None => Ok(()),
            Some(p) => Err(refuse(
                "privilege_escalation",
                format!(
                    "you may not grant (or remove) role '{role}' on '{scope}': it holds '{p}', which you do not hold there"
                ),
            )),
        }
    }

    /// Refuses (403 `privilege_escalation`) acting on user `id` unless the caller could have
    /// granted everything the user holds: every permission of every role, at its scope.
    pub fn require_outranks(&self, id: &str) -> Result<(), RuleError> {
        let (Some(v), false) = (self.v, self.is_manager()) else {
            return Ok(());
        };
        let Some(u) = self.user_index(id) else {
            return Ok(());
        };
        let mut lacked: Option<(u32, u32, &str)> = None;
        Self::each_grant(v, u, |role, x| match self.lacks(role, x) {
            Some(p) => {
                lacked = Some((role, x, p));
                false
            }
            None => true,
        });
        match lacked {
            None => Ok(()),
            Some((role, x, p)) => Err(refuse(
                "privilege_escalation",
                format!(
                    "user '{id}' holds '{p}' on '{}' (role '{}'), which you do not hold there",
                    Self::node_name(v, x),
                    v.roles.get(role as usize).map_or("?", |r| r.id.as_str())
                ),
            )),
        }
    }

    /// Refuses (403 `privilege_escalation`) changing the membership or status of group `id`
    /// (which grants or takes away all of its assignments) unless the caller could have granted
    /// every one of them.
    pub fn require_group_grants(&self, id: &str) -> Result<(), RuleError> {
        let (Some(v), false) = (self.v, self.is_manager()) else {
            return Ok(());
        };
        let Some(group) = v.groups.iter().find(|g| g.id == id) else {
            return Ok(());
        };
        let (s, e) = (group.grants.start.to_native(), group.grants.end.to_native());
        for g in v.grants.get(s as usize..e as usize).unwrap_or(&[]) {
            let (role, x) = (g.role.to_native(), g.lo.to_native());
            if let Some(p) = self.lacks(role, x) {
                return Err(refuse(
                    "privilege_escalation",
                    format!(
                        "group '{id}' holds '{p}' on '{}' (role '{}'), which you do not hold there",
                        Self::node_name(v, x),
                        v.roles.get(role as usize).map_or("?", |r| r.id.as_str())
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Refuses (403 `privilege_escalation`) a change of role `id` that adds or removes any of
    /// `changed` (permission patterns) unless the caller holds each of them wherever the role is
    /// assigned.
    pub fn require_role_change(&self, id: &str, changed: &[&str]) -> Result<(), RuleError> {
        let (Some(v), false) = (self.v, self.is_manager()) else {
            return Ok(());
        };
        let Some(ri) = v.roles.iter().position(|r| r.id == id) else {
            return Ok(());
        };
        for g in v.grants.iter().filter(|g| g.role.to_native() == ri as u32) {
            let x = g.lo.to_native();
            if let Some(p) = changed.iter().find(|p| !self.holds(p, At::Node(x))) {
                return Err(refuse(
                    "privilege_escalation",
                    format!(
                        "role '{id}' is assigned on '{}', where you do not hold '{p}': you may not add or remove it",
                        Self::node_name(v, x)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The permissions of role `id` in the snapshot (empty when unknown).
    pub fn role_permissions(&self, id: &str) -> Vec<&'a str> {
        self.v
            .and_then(|v| v.roles.iter().find(|r| r.id == id))
            .map(|r| r.permissions.iter().map(|p| p.as_str()).collect())
            .unwrap_or_default()
    }

    /// The guest scope (a node id) of user `id`, when it is a guest.
    pub fn guest_scope(&self, id: &str) -> Option<&'a str> {
        let v = self.v?;
        let u = v.users.get(self.user_index(id)?)?;
        (u.kind == KIND_GUEST)
            .then(|| {
                v.nodes
                    .get(u.scope.to_native() as usize)
                    .map(|n| n.id.as_str())
            })
            .flatten()
    }

    /// The users whose place lies where the caller holds `perm` (`None`: every user).
    pub fn visible_users(&self, perm: &str) -> Option<std::collections::HashSet<String>> {
        let Scopes::Within(iv) = self.scopes(perm) else {
            return None;
        };
        let v = self.v?;
        let scopes = Scopes::Within(iv);
        let all = (0, v.nodes.len() as u32);
        Some(
            (0..v.users.len())
                .filter(|&u| {
                    let (lo, hi) = Self::place_of(v, u)
                        .and_then(|x| v.nodes.get(x as usize).map(|n| (x, n.end.to_native())))
                        .unwrap_or(all);
                    scopes.covers(lo, hi)
                })
                .filter_map(|u| v.users.get(u).map(|r| r.id.to_string()))
                .collect(),
        )
    }

    /// The nodes where the caller holds `perm` (`None`: every node).
    pub fn visible_nodes(&self, perm: &str) -> Option<std::collections::HashSet<String>> {
        let Scopes::Within(iv) = self.scopes(perm) else {
            return None;
        };
        let v = self.v?;
        Some(
            iv.iter()
                .flat_map(|&(lo, hi)| lo..hi)
                .filter_map(|x| v.nodes.get(x as usize).map(|n| n.id.to_string()))
                .collect(),
        )
    }

    /// The kind of user `id` in the snapshot.
    fn kind_of(&self, id: &str) -> Option<u8> {
        let v = self.v?;
        self.user_index(id)
            .and_then(|u| v.users.get(u))
            .map(|u| u.kind)
    }

    /// The rules about whom a write to user `id` may touch, then the permission `perm` where
    /// the user lives, then no escalation:
    /// - nobody changes the status of, deletes or erases their own account (`self_action`);
    /// - only the owner (and the platform) touches the owner (`owner_protected`) and
    ///   administrators (`admin_protected`), except a user's own profile and password;
    /// - otherwise the caller needs `perm` where the user lives and must outrank the user.
    pub fn require_user_write(&self, perm: &str, id: &str, op: UserOp) -> Result<(), RuleError> {
        if self.is_platform() {
            return Ok(());
        }
        let own = self.user_id() == Some(id);
        if own {
            return match op {
                UserOp::Status | UserOp::Delete => Err(refuse(
                    "self_action",
                    "you may not delete, deactivate or change the status of your own account",
                )),
                UserOp::Kind => Err(refuse("self_action", "you may not change your own kind")),
                // Own profile and credentials: decided by the caller (password policy).
                UserOp::Profile | UserOp::Credentials => Ok(()),
            };
        }
        match self.kind_of(id) {
            Some(KIND_OWNER) => {
                return Err(refuse(
                    "owner_protected",
                    format!(
                    "user '{id}' is the tenant's owner: only the owner changes the owner's account"
                ),
                ))
            }
            Some(KIND_ADMIN) if !self.is_owner() => {
                return Err(refuse(
                    "admin_protected",
                    format!(
                        "user '{id}' is an administrator: only the owner manages administrators"
                    ),
                ))
            }
            _ => {}
        }
        self.require_user(perm, id)?;
        self.require_outranks(id)
    }

    /// Refuses creating or promoting a user to `kind` (`owner`: never through the user API;
    /// `admin`: the owner and the platform only).
    pub fn require_kind_change(&self, kind: crate::model::UserKind) -> Result<(), RuleError> {
        use crate::model::UserKind;
        match kind {
            UserKind::Owner => Err(refuse(
                "owner_protected",
                "the owner is not assignable through the user API: the owner transfers ownership (POST /v1/tenants/{t}/owner)",
            )),
            UserKind::Admin if !(self.is_platform() || self.is_owner()) => Err(refuse(
                "admin_protected",
                "only the owner creates administrators or changes who is one",
            )),
            _ => Ok(()),
        }
    }

    /// The subtrees where the caller holds the concrete permission `perm` (lists are filtered
    /// by them).
    pub fn scopes(&self, perm: &str) -> Scopes {
        let (Some(v), Who::User(u)) = (self.v, self.who) else {
            return Scopes::All;
        };
        if self.is_manager() || self.holds(perm, At::Tenant) {
            return Scopes::All;
        }
        let mut roots = Vec::new();
        let d = decide::managed_scopes(v, u, perm, self.now, &mut roots);
        if !d.allowed {
            return Scopes::Within(Vec::new());
        }
        Scopes::Within(
            roots
                .iter()
                .filter_map(|&x| v.nodes.get(x as usize).map(|n| (x, n.end.to_native())))
                .collect(),
        )
    }
}

/// What a write does to a user (for the self, owner and administrator rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserOp {
    /// Name, groups, logout period and other profile fields.
    Profile,
    /// The user's kind.
    Kind,
    /// Activate, deactivate, restore.
    Status,
    /// Delete, erase.
    Delete,
    /// Password, invitation, access cards, API keys.
    Credentials,
}
