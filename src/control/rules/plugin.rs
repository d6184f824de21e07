//! Rules of plugin writes: upload or replace a module (size and count caps, `enterprise` RBAC),
//! roll back to a kept version, run a canary (a candidate version on a share of the calls:
//! start, replace, change the share, promote, abort), delete only when no role names it as its
//! condition.

use super::{find, Fields, Rule, RuleError};
use crate::control::doc::{json, PluginCanaryRow, PluginRow, PluginVersion, TenantDoc};
use crate::model::{check_id, Rbac, Timestamp};
use crate::store::{Kind, RowOp};

/// An upload: the module bytes were already validated and compiled by the plugin runtime.
#[derive(Debug, Clone)]
pub struct PluginUpload {
    pub name: String,
    pub description: Option<String>,
    pub wasm: std::sync::Arc<[u8]>,
    /// Upload as a canary taking this share (percent) of the plugin's calls, instead of
    /// replacing the current version.
    pub canary: Option<u8>,
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

/// The API form of a plugin row: no module bytes, plus the roles using it and the running
/// canary, if any, as [`canary_summary`] shows it.
pub fn plugin_summary(doc: &TenantDoc, row: &PluginRow) -> serde_json::Value {
    let mut v = PluginRow::summary(&json(row));
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("roles".into(), json(&plugin_users(doc, &row.name)));
        if let Some(c) = &row.canary {
            m.insert("canary".into(), canary_summary(c));
        }
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
    if let Some(share) = req.canary {
        return put_canary(doc, req, share, sha256, actor, now);
    }
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
    if let Some(c) = cur {
        refuse_while_canary(c, "uploading another version")?;
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
        canary: None,
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

/// A canary share as the API takes it: an integer percentage, 1 to 99.
pub fn check_canary_share(share: i64) -> Result<u8, RuleError> {
    u8::try_from(share)
        .ok()
        .filter(|s| crate::model::CANARY_SHARES.contains(s))
        .ok_or_else(|| {
            RuleError::invalid(
                "canary",
                format!("a canary share is a percentage of the calls from 1 to 99, got {share}"),
            )
        })
}

/// 409 while plugin `cur` runs a canary: the write would change the version the candidate is
/// compared with.
fn refuse_while_canary(cur: &PluginRow, doing: &str) -> Result<(), RuleError> {
    match &cur.canary {
        None => Ok(()),
        Some(c) => Err(RuleError::conflict(
            "invalid_state",
            format!(
                "plugin '{}' runs a canary (version {}, {}% of the calls); promote or abort it \
                 before {doing}",
                cur.name, c.version.sha256, c.share
            ),
        )),
    }
}

/// `PUT …/plugins/{name}?canary=N`: the module becomes the plugin's candidate on `share` % of
/// the calls while the current version stays current. The same candidate again changes only
/// the share (`plugin.canary.share`); another module replaces the running candidate
/// (`plugin.canary.replace`, its `since` restarts); else `plugin.canary.start`.
fn put_canary(
    doc: &TenantDoc,
    req: &PluginUpload,
    share: u8,
    sha256: String,
    actor: &str,
    now: Timestamp,
) -> Rule {
    let share = check_canary_share(i64::from(share))?;
    let Some(cur) = doc.plugins.get(&req.name) else {
        return Err(RuleError::conflict(
            "invalid_state",
            format!(
                "plugin '{}' does not exist: upload its first version without a canary",
                req.name
            ),
        ));
    };
    if cur.sha256 == sha256 {
        return Err(RuleError::conflict(
            "invalid_state",
            format!(
                "this module is the current version of plugin '{}' ({sha256}); a canary runs \
                 another version",
                req.name
            ),
        ));
    }
    let (action, canary) = match &cur.canary {
        Some(c) if c.version.sha256 == sha256 => {
            if c.share == share && c.version.description == req.description {
                return Ok(super::change(
                    "plugin.canary.share",
                    Kind::Plugin,
                    &req.name,
                    Vec::new(),
                    plugin_summary(doc, cur),
                ));
            }
            let mut c = c.clone();
            c.share = share;
            c.version.description = req.description.clone();
            ("plugin.canary.share", c)
        }
        running => (
            if running.is_some() {
                "plugin.canary.replace"
            } else {
                "plugin.canary.start"
            },
            PluginCanaryRow {
                version: PluginVersion {
                    description: req.description.clone(),
                    sha256,
                    size: req.wasm.len(),
                    wasm: req.wasm.clone(),
                    uploaded_by: Some(actor.to_string()),
                    uploaded_at: now,
                },
                share,
            },
        ),
    };
    let row = PluginRow {
        canary: Some(canary),
        ..cur.clone()
    };
    Ok(put_row(doc, cur, row, action))
}

/// Writes plugin row `row` over `cur` (action `action`), answering with its summary.
fn put_row(doc: &TenantDoc, cur: &PluginRow, row: PluginRow, action: &str) -> super::Change {
    let before = Some(PluginRow::summary(&json(cur)));
    let op = RowOp::put(Kind::Plugin, row.name.as_str(), json(&row), before);
    let summary = plugin_summary(doc, &row);
    super::change(action, Kind::Plugin, &row.name, vec![op], summary)
}

/// The canary of plugin `name`, or 404 when it has none.
fn running_canary<'a>(
    doc: &'a TenantDoc,
    name: &str,
) -> Result<(&'a PluginRow, &'a PluginCanaryRow), RuleError> {
    let cur = find(&doc.plugins, "plugin", name)?;
    match &cur.canary {
        Some(c) => Ok((cur, c)),
        None => Err(RuleError::not_found("canary of plugin", name)),
    }
}

/// `PATCH …/plugins/{name}/canary` `{"share"}`: changes the running canary's share
/// (`plugin.canary.share`); the same share changes nothing.
pub fn set_canary_share(doc: &TenantDoc, name: &str, share: i64) -> Rule {
    let share = check_canary_share(share)?;
    let (cur, c) = running_canary(doc, name)?;
    if c.share == share {
        return Ok(super::change(
            "plugin.canary.share",
            Kind::Plugin,
            name,
            Vec::new(),
            plugin_summary(doc, cur),
        ));
    }
    let mut c = c.clone();
    c.share = share;
    let row = PluginRow {
        canary: Some(c),
        ..cur.clone()
    };
    Ok(put_row(doc, cur, row, "plugin.canary.share"))
}

/// `POST …/plugins/{name}/canary/promote`: the candidate becomes the current version (all
/// calls run it) and the replaced version becomes the newest kept previous one
/// (`plugin.canary.promote`).
pub fn promote_canary(doc: &TenantDoc, name: &str) -> Rule {
    let (cur, c) = running_canary(doc, name)?;
    let v = &c.version;
    let row = PluginRow {
        name: cur.name.clone(),
        description: v.description.clone(),
        sha256: v.sha256.clone(),
        size: v.size,
        wasm: v.wasm.clone(),
        uploaded_by: v.uploaded_by.clone(),
        uploaded_at: v.uploaded_at,
        previous: previous_after(cur, &v.sha256),
        canary: None,
    };
    Ok(put_row(doc, cur, row, "plugin.canary.promote"))
}

/// `DELETE …/plugins/{name}/canary`: drops the candidate; all calls run the current version
/// again (`plugin.canary.abort`).
pub fn abort_canary(doc: &TenantDoc, name: &str) -> Rule {
    let (cur, _) = running_canary(doc, name)?;
    let row = PluginRow {
        canary: None,
        ..cur.clone()
    };
    Ok(put_row(doc, cur, row, "plugin.canary.abort"))
}

/// The body of `PATCH …/plugins/{name}/canary`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPatch {
    /// The new share, in percent of the calls (1 to 99).
    pub share: i64,
}

/// A running canary as the API shows it: the candidate's `sha256`, `size`, `description`,
/// `uploaded_by`, its `share` (percent of the calls) and `since` (when the candidate started,
/// unix seconds; a share change keeps it), without the module bytes.
pub fn canary_summary(c: &PluginCanaryRow) -> serde_json::Value {
    let mut v = PluginRow::summary(&json(c));
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("since".into(), json(&c.version.uploaded_at));
    }
    v
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
    refuse_while_canary(cur, "rolling back")?;
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
        canary: None,
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

/// The versions of plugin `name`, current first: what `GET …/plugins/{name}/versions` shows
/// as `data` (a running canary's candidate is shown beside them, see [`canary_summary`]).
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
