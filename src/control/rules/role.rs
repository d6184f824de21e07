//! Rules of custom role writes (built-in and catalogue roles are read-only): permissions parsed
//! and distinct, an optional plugin condition naming a plugin the tenant holds, `enterprise` RBAC
//! only; delete only when no assignment uses the role and it is not the tenant's default role.
//! And the tier rule every grant obeys: a role locked in the tenant's tier cannot be assigned
//! ([`available`]).

use super::{find, Fields, Rule, RuleError};
use crate::control::doc::TenantDoc;
use crate::model::{check_id, is_builtin_role, Permission, Rbac, Role};
use crate::store::Kind;

requests! {
    RoleCreate {
        pub id: String,
        pub name: Option<String>,
        pub permissions: Vec<String>,
        pub plugin: Option<String>,
    }
    RolePatch {
        pub name: Option<String>,
        pub permissions: Option<Vec<String>>,
        #[serde(default, with = "super::double_option")]
        pub plugin: Option<Option<String>>,
    }
}

/// A role's plugin must be a valid name of a plugin the tenant holds.
fn check_plugin_ref(doc: &TenantDoc, p: &str, f: &mut Fields) {
    if let Err(m) = check_id("plugin name", p) {
        f.push("plugin", m);
    } else if !doc.plugins.contains_key(p) {
        f.push(
            "plugin",
            format!("no plugin '{p}' in this tenant; upload it first (PUT …/plugins/{p})"),
        );
    }
}

fn parse_perms(perms: &[String], f: &mut Fields) -> Vec<Permission> {
    let mut out = Vec::with_capacity(perms.len());
    for (i, p) in perms.iter().enumerate() {
        match p.parse::<Permission>() {
            Ok(p) if out.contains(&p) => f.push(
                &format!("permissions[{i}]"),
                format!("'{p}' is listed twice"),
            ),
            Ok(p) => out.push(p),
            Err(e) => f.push(&format!("permissions[{i}]"), e.to_string()),
        }
    }
    out
}

/// Built-in roles cannot be created, changed or deleted, nor can catalogue roles (those of the
/// tenant's preset, which carry a tier) be changed or deleted (409 `read_only`).
fn not_builtin(doc: &TenantDoc, id: &str) -> Result<(), RuleError> {
    if is_builtin_role(id) {
        return Err(RuleError::conflict(
            "read_only",
            format!("role '{id}' is built in and read-only"),
        ));
    }
    if doc.roles.get(id).is_some_and(Role::is_catalogue) {
        let from = doc
            .settings
            .as_ref()
            .and_then(|s| s.preset.as_deref())
            .map(|p| format!(" (preset '{p}')"))
            .unwrap_or_default();
        return Err(RuleError::conflict(
            "read_only",
            format!("role '{id}' belongs to the tenant's role catalogue{from} and is read-only"),
        ));
    }
    Ok(())
}

/// Role `id` (built in or the tenant's) may be granted in the tenant's RBAC tier; otherwise
/// 422 `tier_unavailable`, naming the tier it needs. Unknown roles pass (callers report them).
/// Every path that grants a role (assignments, and any mapping of external claims to roles)
/// checks it.
pub fn available(doc: &TenantDoc, id: &str) -> Result<(), RuleError> {
    let Some(rbac) = doc.settings.as_ref().map(|s| s.rbac) else {
        return Ok(());
    };
    match doc.roles.get(id) {
        Some(r) if r.locked_in(rbac) => Err(RuleError::conflict(
            "tier_unavailable",
            format!(
                "role '{id}' needs rbac '{}' (tenant has '{}')",
                r.tier().as_str(),
                rbac.as_str()
            ),
        )),
        _ => Ok(()),
    }
}

pub fn create_role(doc: &TenantDoc, req: &RoleCreate) -> Rule {
    let mut f = Fields::default();
    f.check("id", check_id("role id", &req.id));
    let name = super::name_or_id(&req.name, &req.id, &mut f);
    let perms = parse_perms(&req.permissions, &mut f);
    if let Some(p) = &req.plugin {
        check_plugin_ref(doc, p, &mut f);
    }
    if doc.settings.as_ref().is_some_and(|s| s.rbac == Rbac::Basic) {
        f.push(
            "id",
            "custom roles need rbac 'enterprise' (tenant has 'basic')",
        );
    }
    f.done()?;
    not_builtin(doc, &req.id)?;
    super::absent(&doc.roles, Kind::Role, &req.id)?;
    let r = Role {
        id: req.id.clone(),
        name,
        permissions: perms,
        plugin: req.plugin.clone(),
        tier: None,
    };
    Ok(super::created(Kind::Role, &r.id, &r))
}

pub fn update_role(doc: &TenantDoc, id: &str, patch: &RolePatch) -> Rule {
    not_builtin(doc, id)?;
    super::edit(&doc.roles, Kind::Role, id, |_, r, f| {
        super::rename(&patch.name, &mut r.name, f);
        if let Some(p) = &patch.permissions {
            r.permissions = parse_perms(p, f);
        }
        if let Some(p) = &patch.plugin {
            if let Some(p) = p {
                check_plugin_ref(doc, p, f);
            }
            r.plugin = p.clone();
        }
        Ok("role.update")
    })
}

pub fn delete_role(doc: &TenantDoc, id: &str) -> Rule {
    not_builtin(doc, id)?;
    let cur = find(&doc.roles, "role", id)?;
    super::unassigned(doc, |a| a.role == id, &format!("role '{id}' is used by"))?;
    let default = doc
        .settings
        .as_ref()
        .and_then(|s| s.default_role.as_deref());
    super::unused(usize::from(default == Some(id)), || {
        format!("role '{id}' is the tenant's default role; set another default_role first")
    })?;
    let n = super::tenant::sso_uses(doc, |m| m.role == id);
    super::unused(n, || {
        format!("role '{id}' is used by {n} SSO mapping(s); change the tenant's sso first")
    })?;
    Ok(super::deleted(Kind::Role, id, cur, Vec::new()))
}
