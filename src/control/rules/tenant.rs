//! Rules of tenant writes: import, create, settings and quota changes, deletion.

use super::{updated, Change, Fields, Rule, RuleError};
use crate::control::doc::{json, PluginRow, Settings, TenantDoc};
use crate::model::{
    check_id, is_builtin_role, preset, LogoutPeriod, Quotas, Rbac, Tenant, TenantStatus, Timestamp,
    UserKind, UserStatus, MEMBER_ROLE,
};
use crate::store::{Kind, RowOp};

requests! {
    TenantCreate {
        pub id: String,
        pub name: Option<String>,
        #[serde(default)]
        pub rbac: Rbac,
        #[serde(default)]
        pub status: TenantStatus,
        #[serde(default)]
        pub quotas: Quotas,
        pub logout: Option<LogoutPeriod>,
        #[serde(default)]
        pub require_group: bool,
        #[serde(default)]
        pub admins_change_own_password: bool,
        /// Default: `true`, or `false` when the tenant is created with an `owner`.
        pub users_change_own_password: Option<bool>,
        #[serde(default)]
        pub one_role_per_place: bool,
        /// The account master, created with the tenant (the fields of a user create; `kind` is
        /// `owner`, a password is required).
        pub owner: Option<super::UserCreate>,
        /// A built-in role preset (`crate::model::preset`): its roles are copied into the tenant.
        pub preset: Option<String>,
        /// The role every active non-guest user holds at the roots; `null`: none. Absent:
        /// `member` for a tenant created with an `owner` or a `preset` (the seed products'
        /// read-only member role), none otherwise.
        #[serde(default, with = "super::double_option")]
        pub default_role: Option<Option<String>>,
    }
    TenantPatch {
        pub name: Option<String>,
        pub rbac: Option<Rbac>,
        pub status: Option<TenantStatus>,
        pub quotas: Option<Quotas>,
        pub logout: Option<LogoutPeriod>,
        pub require_group: Option<bool>,
        pub admins_change_own_password: Option<bool>,
        pub users_change_own_password: Option<bool>,
        pub one_role_per_place: Option<bool>,
        /// A role id, or `null` to turn the default role off.
        #[serde(default, with = "super::double_option")]
        pub default_role: Option<Option<String>>,
        /// Single sign-on (`null` turns it off).
        #[serde(default, with = "super::double_option")]
        pub sso: Option<Option<crate::model::Sso>>,
    }
}

/// A default role must be a role of the tenant (built in or custom).
fn check_default_role(doc: Option<&TenantDoc>, role: &str, f: &mut Fields) {
    if !is_builtin_role(role) && !doc.is_some_and(|d| d.roles.contains_key(role)) {
        f.push(
            "default_role",
            format!("unknown role '{role}' (the usual default role is '{MEMBER_ROLE}')"),
        );
    }
}

/// Imports a whole (validated) tenant as its first commit; `password_hashes` are the hashes
/// of the data file's initial passwords, by user id (see [`crate::model::SignIn::passwords`]).
pub fn import(t: &Tenant, now: Timestamp, password_hashes: &[(String, String)]) -> Rule {
    let problems = t.validate();
    if !problems.is_empty() {
        return Err(RuleError::from_problems(&problems));
    }
    let mut ops = TenantDoc::ops_from_tenant(t, now);
    for (user, hash) in password_hashes {
        let cred = crate::control::doc::CredentialRow {
            password: Some(hash.clone()),
            cards: Vec::new(),
        };
        ops.push(RowOp::put(
            Kind::Credential,
            user.as_str(),
            json(&cred),
            None,
        ));
    }
    Ok(Change {
        action: "tenant.import".into(),
        target: super::target(Kind::Tenant, &t.id),
        ops,
        result: serde_json::json!({ "id": t.id }),
    })
}

/// Creates a tenant; with an `owner`, its owner too (`owner_hash`: the argon2id hash of the
/// owner's password, computed by the caller).
pub fn create_tenant(req: &TenantCreate, now: Timestamp, owner_hash: Option<&str>) -> Rule {
    let mut f = Fields::default();
    f.check("id", check_id("tenant id", &req.id));
    let name = super::name_or_id(&req.name, &req.id, &mut f);
    if let Some(o) = &req.owner {
        if !matches!(o.kind, UserKind::Member | UserKind::Owner) {
            f.push("owner.kind", "the owner's kind is 'owner'");
        }
        if o.password.is_none() || owner_hash.is_none() {
            f.push("owner.password", "the owner needs a password");
        }
    }
    let preset = match req.preset.as_deref().map(|p| (p, preset::get(p))) {
        None => None,
        Some((_, Some(p))) => Some(p),
        Some((id, None)) => {
            f.push("preset", preset::unknown(id));
            None
        }
    };
    let default_role = match &req.default_role {
        Some(r) => r.clone(),
        None => (req.owner.is_some() || req.preset.is_some()).then(|| MEMBER_ROLE.to_string()),
    };
    if let Some(r) = &default_role {
        check_default_role(None, r, &mut f);
    }
    f.done()?;
    let s = Settings {
        id: req.id.clone(),
        name,
        rbac: req.rbac,
        status: req.status,
        quotas: req.quotas,
        created_at: now,
        sign_in: crate::model::SignIn {
            logout: req.logout,
            require_group: req.require_group,
            admins_change_own_password: req.admins_change_own_password,
            users_change_own_password: req.users_change_own_password.unwrap_or(req.owner.is_none()),
            one_role_per_place: req.one_role_per_place,
            ..crate::model::SignIn::default()
        },
        preset: preset.map(|p| p.id.clone()),
        default_role,
    };
    let mut change = super::created(Kind::Tenant, &req.id, &s);
    if let Some(o) = &req.owner {
        let doc = TenantDoc {
            settings: Some(s),
            ..TenantDoc::default()
        };
        let owner = super::UserCreate {
            kind: UserKind::Owner,
            ..o.clone()
        };
        let secrets = super::NewUserSecrets {
            password_hash: owner_hash.map(str::to_string),
            invitation: None,
        };
        let user = super::create_user(&doc, &owner, now, &secrets).map_err(|e| match e {
            RuleError::Invalid(fields) => RuleError::Invalid(
                fields
                    .into_iter()
                    .map(|mut f| {
                        f.field = format!("owner.{}", f.field);
                        f
                    })
                    .collect(),
            ),
            e => e,
        })?;
        change.ops.extend(user.ops);
        if let serde_json::Value::Object(m) = &mut change.result {
            m.insert("owner".into(), user.result);
        }
    }
    // The preset's roles are the tenant's from now on (copies: a later release changing the
    // preset does not change what this tenant grants).
    for r in preset.iter().flat_map(|p| &p.roles) {
        change
            .ops
            .push(RowOp::put(Kind::Role, r.id.as_str(), json(r), None));
    }
    Ok(change)
}

pub fn update_tenant(doc: &TenantDoc, patch: &TenantPatch) -> Rule {
    let Some(cur) = &doc.settings else {
        return Err(RuleError::not_found("tenant", ""));
    };
    let mut s = cur.clone();
    let mut f = Fields::default();
    super::rename(&patch.name, &mut s.name, &mut f);
    if let Some(r) = patch.rbac {
        // Catalogue (preset) roles stay when the tier is lowered: those the new tier lacks are
        // locked — listed as such, not assignable, and their assignments (kept, so that raising
        // the tier again restores them) grant nothing. Custom roles cannot exist below
        // 'enterprise'.
        let custom = doc.roles.values().filter(|r| !r.is_catalogue()).count();
        if r == Rbac::Basic && custom > 0 {
            f.push(
                "rbac",
                format!(
                    "tenant has {custom} custom role(s); 'basic' allows built-in and preset roles only"
                ),
            );
        }
        s.rbac = r;
    }
    if let Some(st) = patch.status {
        s.status = st;
    }
    if let Some(l) = patch.logout {
        s.sign_in.logout = Some(l);
    }
    if let Some(r) = patch.require_group {
        s.sign_in.require_group = r;
    }
    if let Some(a) = patch.admins_change_own_password {
        s.sign_in.admins_change_own_password = a;
    }
    if let Some(u) = patch.users_change_own_password {
        s.sign_in.users_change_own_password = u;
    }
    if let Some(o) = patch.one_role_per_place {
        s.sign_in.one_role_per_place = o;
    }
    if let Some(r) = &patch.default_role {
        if let Some(role) = r {
            check_default_role(Some(doc), role, &mut f);
        }
        s.default_role.clone_from(r);
    }
    if let Some(sso) = &patch.sso {
        s.sign_in.sso = sso.clone();
    }
    if let Some(sso) = &s.sign_in.sso {
        let role = |r: &str| crate::model::is_builtin_role(r) || doc.roles.contains_key(r);
        for (field, m) in sso.problems(role, |n| doc.nodes.contains_key(n)) {
            f.push(&field, m);
        }
    }
    f.done()?;
    if s.sign_in.sso.is_some() && s.rbac != Rbac::Enterprise {
        return Err(tier_unavailable(s.rbac));
    }
    if let Some(q) = patch.quotas {
        quotas_cover_usage(doc, &q)?;
        s.quotas = q;
    }
    Ok(updated("tenant.update", Kind::Tenant, &s.id, cur, &s))
}

/// Single sign-on needs an `enterprise` tenant (422 `tier_unavailable`).
fn tier_unavailable(rbac: Rbac) -> RuleError {
    let tier = match rbac {
        Rbac::None => "none",
        Rbac::Basic => "basic",
        Rbac::Enterprise => "enterprise",
    };
    RuleError::conflict(
        "tier_unavailable",
        format!("sso: single sign-on needs rbac 'enterprise' (tenant has '{tier}')"),
    )
}

/// SSO mappings of the tenant that `uses` matches (a role or node they name cannot be deleted).
pub(super) fn sso_uses(doc: &TenantDoc, uses: impl Fn(&crate::model::SsoMapping) -> bool) -> usize {
    doc.settings
        .as_ref()
        .and_then(|s| s.sign_in.sso.as_ref())
        .map_or(0, |sso| sso.mappings.iter().filter(|m| uses(m)).count())
}

/// Deletes a tenant and every row it has.
pub fn delete_tenant(doc: &TenantDoc) -> Rule {
    let Some(s) = &doc.settings else {
        return Err(RuleError::not_found("tenant", ""));
    };
    fn rows<'a, T: serde::Serialize>(
        kind: Kind,
        rows: &'a std::collections::BTreeMap<String, T>,
        before: impl Fn(&T) -> serde_json::Value + 'a,
    ) -> impl Iterator<Item = RowOp> + 'a {
        rows.iter()
            .map(move |(id, r)| RowOp::delete(kind, id.as_str(), Some(before(r))))
    }
    let ops = rows(Kind::Assignment, &doc.assignments, json)
        .chain(rows(Kind::Group, &doc.groups, json))
        .chain(rows(Kind::User, &doc.users, json))
        .chain(rows(Kind::Role, &doc.roles, json))
        .chain(rows(Kind::Node, &doc.nodes, json))
        .chain(rows(Kind::Plugin, &doc.plugins, |p| {
            PluginRow::summary(&json(p))
        }))
        .chain(rows(Kind::Credential, &doc.credentials, json))
        .chain(rows(Kind::Session, &doc.sessions, json))
        .chain(rows(Kind::ApiKey, &doc.api_keys, json))
        .chain(rows(Kind::Invitation, &doc.invitations, json))
        .chain(rows(Kind::NotificationRule, &doc.notification_rules, json))
        .collect();
    Ok(super::deleted(Kind::Tenant, &s.id, s, ops))
}

/// What a tenant's quotas count: live (not deleted) users, live owners and admins, groups.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Usage {
    pub users: usize,
    pub admins: usize,
    pub groups: usize,
}

/// Owners and admins count against `max_admins`.
pub(super) fn is_admin(kind: UserKind) -> bool {
    matches!(kind, UserKind::Owner | UserKind::Admin)
}

fn usage(doc: &TenantDoc) -> Usage {
    let live = || {
        doc.users
            .values()
            .filter(|u| u.user.status != UserStatus::Deleted)
    };
    Usage {
        users: live().count(),
        admins: live().filter(|u| is_admin(u.user.kind)).count(),
        groups: doc.groups.len(),
    }
}

/// The quotas `q` that the tenant's usage plus `adding` would exceed, as
/// (quota name, its value, current usage, what it counts).
fn exceeded(
    doc: &TenantDoc,
    q: &Quotas,
    adding: Usage,
) -> Vec<(&'static str, u32, usize, &'static str)> {
    let u = usage(doc);
    [
        ("max_users", q.max_users, u.users, adding.users, "users"),
        (
            "max_admins",
            q.max_admins,
            u.admins,
            adding.admins,
            "owners/admins",
        ),
        (
            "max_groups",
            q.max_groups,
            u.groups,
            adding.groups,
            "groups",
        ),
    ]
    .into_iter()
    .filter_map(|(name, max, n, add, what)| {
        max.filter(|m| n + add > *m as usize)
            .map(|m| (name, m, n, what))
    })
    .collect()
}

/// New quotas must not be below what the tenant already holds (409 `quota_exceeded`, like any
/// change that would leave the tenant over a quota).
fn quotas_cover_usage(doc: &TenantDoc, q: &Quotas) -> Result<(), RuleError> {
    let over: Vec<String> = exceeded(doc, q, Usage::default())
        .into_iter()
        .map(|(name, m, n, what)| {
            format!("quotas.{name}: tenant has {n} {what}; cannot lower {name} to {m}")
        })
        .collect();
    if over.is_empty() {
        Ok(())
    } else {
        Err(RuleError::conflict("quota_exceeded", over.join("; ")))
    }
}

/// Room under the tenant's quotas for `adding` more users, admins or groups (409
/// `quota_exceeded` naming the first quota that has none).
pub(super) fn quota_room(doc: &TenantDoc, adding: Usage) -> Result<(), RuleError> {
    let Some(s) = &doc.settings else {
        return Ok(());
    };
    match exceeded(doc, &s.quotas, adding).first() {
        None => Ok(()),
        Some((name, m, n, what)) => Err(RuleError::conflict(
            "quota_exceeded",
            format!("tenant has {n} {what}; quota {name} is {m}"),
        )),
    }
}
