//! Rules of custom role writes (built-in roles are read-only): permissions parsed and distinct,
//! an optional plugin condition naming a plugin the tenant holds, `enterprise` RBAC only;
//! delete only when no assignment uses the role and it is not the tenant's default role.

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

/// Built-in roles cannot be created, changed or deleted (409 `read_only`).
fn not_builtin(id: &str) -> Result<(), RuleError> {
    if is_builtin_role(id) {
        return Err(RuleError::conflict(
            "read_only",
            format!("role '{id}' is built in and read-only"),
        ));
    }
    Ok(())
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
    not_builtin(&req.id)?;
    super::absent(&doc.roles, Kind::Role, &req.id)?;
    let r = Role {
        id: req.id.clone(),
        name,
        permissions: perms,
        plugin: req.plugin.clone(),
    };
    Ok(super::created(Kind::Role, &r.id, &r))
}

pub fn update_role(doc: &TenantDoc, id: &str, patch: &RolePatch) -> Rule {
    not_builtin(id)?;
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
    not_builtin(id)?;
    let cur = find(&doc.roles, "role", id)?;
    super::unassigned(doc, |a| a.role == id, &format!("role '{id}' is used by"))?;
    let default = doc
        .settings
        .as_ref()
        .and_then(|s| s.default_role.as_deref());
    super::unused(usize::from(default == Some(id)), || {
        format!("role '{id}' is the tenant's default role; set another default_role first")
    })?;
    Ok(super::deleted(Kind::Role, id, cur, Vec::new()))
}
