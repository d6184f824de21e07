//! Rules of plugin writes: upload or replace a module (size and count caps, `enterprise` RBAC),
//! delete only when no role names it as its condition.

use super::{find, Fields, Rule, RuleError};
use crate::control::doc::{json, PluginRow, PluginVersion, TenantDoc};
use crate::model::{check_id, Rbac, Timestamp};
use crate::store::{Kind, RowOp};

/// An upload: the module bytes were already validated and compiled by the plugin runtime.
#[derive(Debug, Clone)]
pub struct PluginUpload {
    pub name: String,
    pub description: Option<String>,
    pub wasm: std::sync::Arc<[u8]>,
}

/// Previous versions kept per plugin for rollback (the oldest beyond are dropped). They live in
/// the plugin's row, so they travel with the tenant's state: a few KB each for real plugins,
/// at most 4 MiB each.
pub const PLUGIN_VERSIONS_KEPT: usize = 3;

/// The versions a new current version `sha256` leaves behind: the replaced one first, then the
/// older ones, without `sha256` itself, at most [`PLUGIN_VERSIONS_KEPT`].
fn previous_after(cur: &PluginRow, sha256: &str) -> Vec<PluginVersion> {
    std::iter::once(cur.as_version())
        .chain(cur.previous.iter().cloned())
        .filter(|v| v.sha256 != sha256)
        .take(PLUGIN_VERSIONS_KEPT)
        .collect()
}

/// The body of `POST …/plugins/{name}/rollback`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRollback {
    /// The kept version to make current (hex SHA-256).
    pub sha256: String,
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
        previous: cur
            .map(|c| previous_after(c, &sha256_of(&req.wasm)))
            .unwrap_or_default(),
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

fn sha256_of(wasm: &[u8]) -> String {
    crate::model::sha256_hex(wasm)
}

/// Makes the kept previous version `sha256` of plugin `name` current again (action
/// `plugin.rollback`); the replaced version becomes the newest previous one. Rolling back to
/// the current version changes nothing.
pub fn rollback_plugin(doc: &TenantDoc, name: &str, sha256: &str) -> Rule {
    let cur = find(&doc.plugins, "plugin", name)?;
    if cur.sha256 == sha256 {
        return Ok(super::change(
            "plugin.rollback",
            Kind::Plugin,
            name,
            Vec::new(),
            plugin_summary(doc, cur),
        ));
    }
    // Not kept (never uploaded, or dropped beyond PLUGIN_VERSIONS_KEPT): 404 naming it.
    let Some(target) = cur.previous.iter().find(|v| v.sha256 == sha256) else {
        return Err(RuleError::not_found(
            "plugin version",
            &format!("{name}@{sha256}"),
        ));
    };
    let row = PluginRow {
        name: name.to_string(),
        description: target.description.clone(),
        sha256: target.sha256.clone(),
        size: target.size,
        wasm: target.wasm.clone(),
        uploaded_by: target.uploaded_by.clone(),
        uploaded_at: target.uploaded_at,
        previous: previous_after(cur, sha256),
    };
    let before = Some(PluginRow::summary(&json(cur)));
    let op = RowOp::put(Kind::Plugin, name, json(&row), before);
    let summary = plugin_summary(doc, &row);
    Ok(super::change(
        "plugin.rollback",
        Kind::Plugin,
        name,
        vec![op],
        summary,
    ))
}

/// The versions of plugin `name`, current first: what `GET …/plugins/{name}/versions` shows.
pub fn plugin_versions(doc: &TenantDoc, name: &str) -> Option<serde_json::Value> {
    let cur = doc.plugins.get(name)?;
    let entry = |v: &PluginVersion, current: bool| {
        let mut j = PluginRow::summary(&json(v));
        if let serde_json::Value::Object(m) = &mut j {
            m.insert("current".into(), serde_json::Value::Bool(current));
        }
        j
    };
    let mut out = vec![entry(&cur.as_version(), true)];
    out.extend(cur.previous.iter().map(|v| entry(v, false)));
    Some(serde_json::Value::Array(out))
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
