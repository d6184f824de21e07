//! Rules of plugin writes: upload or replace a module (size and count caps, `enterprise` RBAC),
//! delete only when no role names it as its condition.

use super::{find, Fields, Rule, RuleError};
use crate::control::doc::{json, PluginRow, TenantDoc};
use crate::model::{check_id, Rbac, Timestamp};
use crate::store::{Kind, RowOp};

/// An upload: the module bytes were already validated and compiled by the plugin runtime.
#[derive(Debug, Clone)]
pub struct PluginUpload {
    pub name: String,
    pub description: Option<String>,
    pub wasm: std::sync::Arc<[u8]>,
}

/// A plugin name as the API takes it.
pub fn check_plugin_name(name: &str) -> Result<(), String> {
    check_id("plugin name", name)
}

/// Roles naming plugin `name`, sorted.
pub fn plugin_users(doc: &TenantDoc, name: &str) -> Vec<String> {
    doc.roles
        .values()
        .filter(|r| r.plugin.as_deref() == Some(name))
        .map(|r| r.id.clone())
        .collect()
}

/// The API form of a plugin row: no module bytes, plus the roles using it.
pub fn plugin_summary(doc: &TenantDoc, row: &PluginRow) -> serde_json::Value {
    let mut v = PluginRow::summary(&json(row));
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("roles".into(), json(&plugin_users(doc, &row.name)));
    }
    v
}

/// Creates or replaces a plugin. Replacing with the same bytes and description changes nothing.
pub fn put_plugin(doc: &TenantDoc, req: &PluginUpload, actor: &str, now: Timestamp) -> Rule {
    let mut f = Fields::default();
    f.check("name", check_plugin_name(&req.name));
    if let Some(d) = &req.description {
        f.check("description", crate::model::check_text("description", d));
    }
    if req.wasm.is_empty() || req.wasm.len() > crate::model::MAX_PLUGIN_BYTES {
        f.push(
            "wasm",
            format!(
                "a module must be 1 to {} bytes, got {}",
                crate::model::MAX_PLUGIN_BYTES,
                req.wasm.len()
            ),
        );
    }
    if doc
        .settings
        .as_ref()
        .is_some_and(|s| s.rbac != Rbac::Enterprise)
    {
        f.push("name", "plugins need rbac 'enterprise'");
    }
    f.done()?;
    let cur = doc.plugins.get(&req.name);
    if cur.is_none() && doc.plugins.len() >= crate::model::MAX_PLUGINS {
        return Err(RuleError::conflict(
            "quota_exceeded",
            format!(
                "a tenant holds at most {} plugins",
                crate::model::MAX_PLUGINS
            ),
        ));
    }
    let sha256 = crate::model::sha256_hex(&req.wasm);
    let action = if cur.is_some() {
        "plugin.replace"
    } else {
        "plugin.create"
    };
    if let Some(c) = cur.filter(|c| c.sha256 == sha256 && c.description == req.description) {
        let summary = plugin_summary(doc, c);
        return Ok(super::change(
            action,
            Kind::Plugin,
            &req.name,
            Vec::new(),
            summary,
        ));
    }
    let row = PluginRow {
        name: req.name.clone(),
        description: req.description.clone(),
        sha256,
        size: req.wasm.len(),
        wasm: req.wasm.clone(),
        uploaded_by: Some(actor.to_string()),
        uploaded_at: now,
    };
    let before = cur.map(|c| PluginRow::summary(&json(c)));
    let op = RowOp::put(Kind::Plugin, req.name.as_str(), json(&row), before);
    let summary = plugin_summary(doc, &row);
    Ok(super::change(
        action,
        Kind::Plugin,
        &req.name,
        vec![op],
        summary,
    ))
}

pub fn delete_plugin(doc: &TenantDoc, name: &str) -> Rule {
    let cur = find(&doc.plugins, "plugin", name)?;
    let roles = plugin_users(doc, name);
    super::unused(roles.len(), || {
        format!(
            "plugin '{name}' is the condition of role(s) {}; change them first",
            roles.join(", ")
        )
    })?;
    // The audit log keeps the module's summary, not its bytes.
    let op = RowOp::delete(Kind::Plugin, name, Some(PluginRow::summary(&json(cur))));
    Ok(super::change(
        "plugin.delete",
        Kind::Plugin,
        name,
        vec![op],
        super::gone(name),
    ))
}
