//! A tenant's state as the control plane and its followers hold it: typed rows keyed by id.
//!
//! The same structure is rebuilt from the store at start-up ([`TenantDoc::from_rows`]) and
//! kept current by applying commits ([`TenantDoc::apply`]); every follower of the change stream
//! (the in-process snapshot builder today, remote sidecars over NATS later) runs the same code.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::{
    Assignment, Group, Node, Principal, Quotas, Rbac, Role, Tenant, TenantStatus, Timestamp, User,
};
use crate::store::{Commit, Kind, RowOp, TenantRows};

/// Tenant-level settings (the `tenant` row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub id: String,
    pub name: String,
    pub rbac: Rbac,
    pub status: TenantStatus,
    #[serde(default)]
    pub quotas: Quotas,
    #[serde(default)]
    pub created_at: Timestamp,
    /// Sign-in settings (logout period, `require_group`).
    #[serde(default, flatten)]
    pub sign_in: crate::model::SignIn,
    /// The role preset the tenant was created with (its roles were copied into it then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// The role every active non-guest user holds at the roots (see `Tenant::default_role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_role: Option<String>,
}

/// A notification rule (the `notification_rule` row): events of kind `event` go to the active
/// members of `groups`. Outside the decision model (no snapshot carries it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRuleRow {
    pub id: String,
    pub name: String,
    /// The event kind, e.g. `alarm.raised` (an id: letters, digits, `_ - . @ :`).
    pub event: String,
    /// Target groups, each listed once.
    pub groups: Vec<String>,
}

/// A user's secrets (the `credential` row, id = user id). Never logged nor published: the log
/// and the change stream carry `{"redacted": true}` instead (see `Commit::log_form`), which
/// reads back as an empty row.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CredentialRow {
    /// argon2id hash in PHC string form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Access cards: argon2id of the card UID salted with the tenant id, lowercase hex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cards: Vec<String>,
}

/// A sign-in session (the `session` row, id = session id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    pub user: String,
    pub channel: crate::model::Channel,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// Logged out (or otherwise revoked) before it expired.
    #[serde(default)]
    pub revoked: bool,
}

/// An API key (the `api_key` row, id = key id). The secret is shown once, at creation; only
/// its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRow {
    pub id: String,
    pub user: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the secret.
    pub sha256: String,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub revoked: bool,
}

/// A pending invitation (the `invitation` row, id = SHA-256 of its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationRow {
    pub user: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<Timestamp>,
}

/// A user row: the model's user plus bookkeeping the management API shows and sorts by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    #[serde(flatten)]
    pub user: User,
    #[serde(default)]
    pub created_at: Timestamp,
    #[serde(default)]
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login_at: Option<Timestamp>,
}

/// An assignment row; its id is derived from (principal, role, scope), see [`assignment_id`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRow {
    pub id: String,
    #[serde(flatten)]
    pub assignment: Assignment,
}

/// A plugin row: the module (base64 in the row's JSON) and what the API shows of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRow {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Lowercase hex SHA-256 of the module: its version.
    pub sha256: String,
    pub size: usize,
    #[serde(with = "wasm_b64")]
    pub wasm: std::sync::Arc<[u8]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded_by: Option<String>,
    #[serde(default)]
    pub uploaded_at: Timestamp,
    /// Versions this one replaced, newest first, for rollback (bounded:
    /// `control::rules::PLUGIN_VERSIONS_KEPT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<PluginVersion>,
    /// A candidate version running on a share of the plugin's calls, until it is promoted
    /// (it becomes current) or aborted (it is dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<PluginCanaryRow>,
}

/// A plugin's running canary: the candidate version and its share of the calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginCanaryRow {
    #[serde(flatten)]
    pub version: PluginVersion,
    /// Percent of the plugin's calls that run the candidate (1 to 99).
    pub share: u8,
}

/// A version of a plugin that another one replaced (kept in [`PluginRow::previous`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub sha256: String,
    pub size: usize,
    #[serde(with = "wasm_b64")]
    pub wasm: std::sync::Arc<[u8]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded_by: Option<String>,
    #[serde(default)]
    pub uploaded_at: Timestamp,
}

impl PluginRow {
    /// The row's JSON without the module bytes, its own or its previous versions' (for audit
    /// entries and API responses).
    pub fn summary(v: &serde_json::Value) -> serde_json::Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("wasm");
            if let Some(serde_json::Value::Array(prev)) = m.get_mut("previous") {
                for p in prev {
                    if let Some(pm) = p.as_object_mut() {
                        pm.remove("wasm");
                    }
                }
            }
            if let Some(c) = m.get_mut("canary").and_then(|c| c.as_object_mut()) {
                c.remove("wasm");
            }
        }
        v
    }

    /// This row's current version, as a previous one.
    pub fn as_version(&self) -> PluginVersion {
        PluginVersion {
            description: self.description.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
            wasm: self.wasm.clone(),
            uploaded_by: self.uploaded_by.clone(),
            uploaded_at: self.uploaded_at,
        }
    }
}

mod wasm_b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &std::sync::Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::sync::Arc<[u8]>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Into::into)
            .map_err(serde::de::Error::custom)
    }
}

/// The id of an assignment: `user~alice~machine-operator~hawthorne`. `~` never occurs in ids.
pub fn assignment_id(principal: &Principal, role: &str, scope: &str) -> String {
    let (k, id) = match principal {
        Principal::User(u) => ("user", u),
        Principal::Group(g) => ("group", g),
    };
    format!("{k}~{id}~{role}~{scope}")
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantDoc {
    pub revision: u64,
    /// Revision at which each row last changed (its ETag), keyed by (kind, id).
    pub row_rev: std::collections::HashMap<(Kind, String), u64>,
    pub settings: Option<Settings>,
    pub nodes: BTreeMap<String, Node>,
    pub roles: BTreeMap<String, Role>,
    pub users: BTreeMap<String, UserRow>,
    pub groups: BTreeMap<String, Group>,
    pub assignments: BTreeMap<String, AssignmentRow>,
    pub plugins: BTreeMap<String, PluginRow>,
    pub credentials: BTreeMap<String, CredentialRow>,
    pub sessions: BTreeMap<String, SessionRow>,
    pub api_keys: BTreeMap<String, ApiKeyRow>,
    pub invitations: BTreeMap<String, InvitationRow>,
    pub notification_rules: BTreeMap<String, NotificationRuleRow>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot apply {kind} row '{id}': {message}")]
pub struct ApplyError {
    pub kind: &'static str,
    pub id: String,
    pub message: String,
}

fn put<T: for<'de> Deserialize<'de>>(
    map: &mut BTreeMap<String, T>,
    kind: Kind,
    id: &str,
    value: Option<&serde_json::Value>,
) -> Result<(), ApplyError> {
    match value {
        None => {
            map.remove(id);
        }
        Some(v) => {
            let t = T::deserialize(v).map_err(|e| ApplyError {
                kind: kind.as_str(),
                id: id.to_string(),
                message: e.to_string(),
            })?;
            map.insert(id.to_string(), t);
        }
    }
    Ok(())
}

impl TenantDoc {
    /// Applies one row change made by the commit of revision `rev`.
    pub fn apply_op(&mut self, op: &RowOp, rev: u64) -> Result<(), ApplyError> {
        self.apply_row(op.kind, &op.id, op.value.as_ref(), rev)
    }

    /// Sets (`Some`) or deletes (`None`) one row, last written at revision `rev`.
    fn apply_row(
        &mut self,
        kind: Kind,
        id: &str,
        value: Option<&serde_json::Value>,
        rev: u64,
    ) -> Result<(), ApplyError> {
        match value {
            Some(_) => {
                self.row_rev.insert((kind, id.to_string()), rev);
            }
            None => {
                self.row_rev.remove(&(kind, id.to_string()));
            }
        }
        match kind {
            Kind::Tenant => {
                self.settings = match value {
                    None => None,
                    Some(v) => Some(Settings::deserialize(v).map_err(|e| ApplyError {
                        kind: "tenant",
                        id: id.to_string(),
                        message: e.to_string(),
                    })?),
                };
                Ok(())
            }
            Kind::Node => put(&mut self.nodes, kind, id, value),
            Kind::Role => put(&mut self.roles, kind, id, value),
            Kind::User => put(&mut self.users, kind, id, value),
            Kind::Group => put(&mut self.groups, kind, id, value),
            Kind::Assignment => put(&mut self.assignments, kind, id, value),
            Kind::Plugin => put(&mut self.plugins, kind, id, value),
            Kind::Credential => put(&mut self.credentials, kind, id, value),
            Kind::Session => put(&mut self.sessions, kind, id, value),
            Kind::ApiKey => put(&mut self.api_keys, kind, id, value),
            Kind::Invitation => put(&mut self.invitations, kind, id, value),
            Kind::NotificationRule => put(&mut self.notification_rules, kind, id, value),
        }
    }

    /// The revision at which a row last changed (0 when unknown).
    pub fn rev_of(&self, kind: Kind, id: &str) -> u64 {
        self.row_rev
            .get(&(kind, id.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Applies a commit; it must be the next revision.
    pub fn apply(&mut self, c: &Commit) -> Result<(), ApplyError> {
        if c.revision != self.revision + 1 {
            return Err(ApplyError {
                kind: "commit",
                id: c.revision.to_string(),
                message: format!("out of order: tenant is at revision {}", self.revision),
            });
        }
        for op in &c.ops {
            self.apply_op(op, c.revision)?;
        }
        self.revision = c.revision;
        Ok(())
    }

    /// Rebuilds a document from stored rows.
    pub fn from_rows(rows: &TenantRows) -> Result<TenantDoc, ApplyError> {
        let mut d = TenantDoc {
            revision: rows.revision,
            ..TenantDoc::default()
        };
        for row in &rows.rows {
            d.apply_row(row.kind, &row.id, Some(&row.value), row.rev)?;
        }
        Ok(d)
    }

    /// The document as stored rows (the inverse of [`TenantDoc::from_rows`]): what a fleet
    /// snapshot carries so that a sidecar can apply later commits. Only the typed fields of each
    /// row are written — what the decision model and the follower read.
    pub fn to_rows(&self, tenant: &str) -> TenantRows {
        let mut rows = Vec::new();
        let rev = |kind: Kind, id: &str| self.row_rev.get(&(kind, id.to_string())).copied();
        let mut push = |kind: Kind, id: &str, value: serde_json::Value| {
            rows.push(crate::store::Row {
                kind,
                id: id.to_string(),
                rev: rev(kind, id).unwrap_or(self.revision),
                value,
            });
        };
        if let Some(s) = &self.settings {
            push(Kind::Tenant, &s.id, json(s));
        }
        for (id, v) in &self.nodes {
            push(Kind::Node, id, json(v));
        }
        for (id, v) in &self.roles {
            push(Kind::Role, id, json(v));
        }
        for (id, v) in &self.users {
            push(Kind::User, id, json(v));
        }
        for (id, v) in &self.groups {
            push(Kind::Group, id, json(v));
        }
        for (id, v) in &self.assignments {
            push(Kind::Assignment, id, json(v));
        }
        for (id, v) in &self.plugins {
            push(Kind::Plugin, id, json(v));
        }
        // Sessions (revocations) and API keys (digests) are what a follower's snapshot needs;
        // credentials and invitations never leave the control plane.
        for (id, v) in &self.sessions {
            push(Kind::Session, id, json(v));
        }
        for (id, v) in &self.api_keys {
            push(Kind::ApiKey, id, json(v));
        }
        crate::store::sort_rows(&mut rows);
        TenantRows {
            tenant: tenant.to_string(),
            revision: self.revision,
            rows,
        }
    }

    /// The model of this tenant, for validation and snapshot building. `None` when the tenant
    /// has been deleted (no settings row).
    pub fn to_tenant(&self) -> Option<Tenant> {
        let s = self.settings.as_ref()?;
        Some(model(s, self.revision, self.rows(None)))
    }

    /// The model of this tenant as a commit of `ops` would leave it, without changing the
    /// document or copying it: the rows `ops` write are read from them, the others from here.
    /// It is what a follower builds after applying that commit (checked before committing).
    pub fn to_tenant_after(&self, ops: &[RowOp]) -> Result<Option<Tenant>, ApplyError> {
        let mut written = TenantDoc::default();
        for op in ops {
            written.apply_op(op, self.revision + 1)?;
        }
        let touched: Touched<'_> = ops.iter().map(|o| (o.kind, o.id.as_str())).collect();
        let settings = if touched.iter().any(|(k, _)| *k == Kind::Tenant) {
            written.settings.as_ref()
        } else {
            self.settings.as_ref()
        };
        let Some(s) = settings else {
            return Ok(None);
        };
        let over = Overlay {
            written: &written,
            touched: &touched,
        };
        Ok(Some(model(s, self.revision + 1, self.rows(Some(over)))))
    }

    /// Every row of each collection, sorted by id; with `over`, as its commit leaves them.
    fn rows<'a>(&'a self, over: Option<Overlay<'a>>) -> Rows<'a> {
        let (w, t) = (over.map(|o| o.written), over.map(|o| o.touched));
        Rows {
            nodes: merged(Kind::Node, &self.nodes, w.map(|w| &w.nodes), t),
            roles: merged(Kind::Role, &self.roles, w.map(|w| &w.roles), t),
            users: merged(Kind::User, &self.users, w.map(|w| &w.users), t),
            groups: merged(Kind::Group, &self.groups, w.map(|w| &w.groups), t),
            assignments: merged(
                Kind::Assignment,
                &self.assignments,
                w.map(|w| &w.assignments),
                t,
            ),
            plugins: merged(Kind::Plugin, &self.plugins, w.map(|w| &w.plugins), t),
            sessions: merged_entries(Kind::Session, &self.sessions, w.map(|w| &w.sessions), t),
            api_keys: merged(Kind::ApiKey, &self.api_keys, w.map(|w| &w.api_keys), t),
        }
    }

    /// The row operations that create this tenant from nothing (used by imports).
    pub fn ops_from_tenant(t: &Tenant, now: Timestamp) -> Vec<RowOp> {
        let row = |kind: Kind, id: &str, v: serde_json::Value| RowOp {
            kind,
            id: id.to_string(),
            value: Some(v),
            before: None,
        };
        let mut ops = Vec::with_capacity(
            1 + t.nodes.len()
                + t.roles.len()
                + t.users.len()
                + t.groups.len()
                + t.assignments.len(),
        );
        let settings = Settings {
            id: t.id.clone(),
            name: t.name.clone(),
            rbac: t.rbac,
            status: t.status,
            quotas: t.quotas,
            created_at: now,
            sign_in: crate::model::SignIn {
                logout: t.sign_in.logout,
                require_group: t.sign_in.require_group,
                sso: t.sign_in.sso.clone(),
                admins_change_own_password: t.sign_in.admins_change_own_password,
                users_change_own_password: t.sign_in.users_change_own_password,
                one_role_per_place: t.sign_in.one_role_per_place,
                ..crate::model::SignIn::default()
            },
            preset: t.preset.clone(),
            default_role: t.default_role.clone(),
        };
        ops.push(row(Kind::Tenant, &t.id, json(&settings)));
        for p in &t.plugins {
            let p = PluginRow {
                name: p.name.clone(),
                description: p.description.clone(),
                sha256: p.sha256(),
                size: p.wasm.len(),
                wasm: p.wasm.clone(),
                uploaded_by: None,
                uploaded_at: now,
                previous: Vec::new(),
                canary: p.canary.as_ref().map(|c| PluginCanaryRow {
                    version: PluginVersion {
                        description: None,
                        sha256: crate::model::sha256_hex(&c.wasm),
                        size: c.wasm.len(),
                        wasm: c.wasm.clone(),
                        uploaded_by: None,
                        uploaded_at: now,
                    },
                    share: c.share,
                }),
            };
            ops.push(row(Kind::Plugin, &p.name, json(&p)));
        }
        for n in &t.nodes {
            ops.push(row(Kind::Node, &n.id, json(n)));
        }
        for r in &t.roles {
            ops.push(row(Kind::Role, &r.id, json(r)));
        }
        for u in &t.users {
            let u = UserRow {
                user: u.clone(),
                created_at: now,
                updated_at: now,
                last_login_at: None,
            };
            ops.push(row(Kind::User, &u.user.id, json(&u)));
        }
        for g in &t.groups {
            ops.push(row(Kind::Group, &g.id, json(g)));
        }
        let mut seen = std::collections::HashSet::new();
        for a in &t.assignments {
            let id = assignment_id(&a.principal, &a.role, &a.scope);
            if seen.insert(id.clone()) {
                let a = AssignmentRow {
                    id: id.clone(),
                    assignment: a.clone(),
                };
                ops.push(row(Kind::Assignment, &id, json(&a)));
            }
        }
        ops
    }
}

/// The rows a commit writes, as (kind, id).
type Touched<'a> = HashSet<(Kind, &'a str)>;

/// The rows a commit writes, over a document.
#[derive(Clone, Copy)]
struct Overlay<'a> {
    written: &'a TenantDoc,
    touched: &'a Touched<'a>,
}

/// The rows of each collection, sorted by id.
struct Rows<'a> {
    nodes: Vec<&'a Node>,
    roles: Vec<&'a Role>,
    users: Vec<&'a UserRow>,
    groups: Vec<&'a Group>,
    assignments: Vec<&'a AssignmentRow>,
    plugins: Vec<&'a PluginRow>,
    sessions: Vec<(&'a str, &'a SessionRow)>,
    api_keys: Vec<&'a ApiKeyRow>,
}

/// [`merged`], keeping the ids (rows whose documents do not hold their id).
fn merged_entries<'a, T>(
    kind: Kind,
    base: &'a BTreeMap<String, T>,
    written: Option<&'a BTreeMap<String, T>>,
    touched: Option<&Touched<'a>>,
) -> Vec<(&'a str, &'a T)> {
    match (written, touched) {
        (Some(written), Some(touched)) if touched.iter().any(|(k, _)| *k == kind) => {
            let mut v: Vec<(&str, &T)> = base
                .iter()
                .filter(|(id, _)| !touched.contains(&(kind, id.as_str())))
                .chain(written)
                .map(|(id, r)| (id.as_str(), r))
                .collect();
            v.sort_by(|a, b| a.0.cmp(b.0));
            v
        }
        _ => base.iter().map(|(id, r)| (id.as_str(), r)).collect(),
    }
}

/// The rows of one collection, sorted by id: `base`'s, or with `over`, those `base` keeps
/// (the ones the commit does not touch) and those the commit writes.
fn merged<'a, T>(
    kind: Kind,
    base: &'a BTreeMap<String, T>,
    written: Option<&'a BTreeMap<String, T>>,
    touched: Option<&Touched<'a>>,
) -> Vec<&'a T> {
    merged_entries(kind, base, written, touched)
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// The model of a tenant from its settings and rows.
fn model(s: &Settings, revision: u64, rows: Rows<'_>) -> Tenant {
    Tenant {
        id: s.id.clone(),
        name: s.name.clone(),
        rbac: s.rbac,
        status: s.status,
        quotas: s.quotas,
        nodes: rows.nodes.into_iter().cloned().collect(),
        roles: rows.roles.into_iter().cloned().collect(),
        users: rows.users.into_iter().map(|u| u.user.clone()).collect(),
        groups: rows.groups.into_iter().cloned().collect(),
        assignments: rows
            .assignments
            .into_iter()
            .map(|a| a.assignment.clone())
            .collect(),
        plugins: rows
            .plugins
            .into_iter()
            .map(|p| crate::model::PluginModule {
                name: p.name.clone(),
                description: p.description.clone(),
                wasm: p.wasm.clone(),
                canary: p.canary.as_ref().map(|c| crate::model::PluginCanary {
                    wasm: c.version.wasm.clone(),
                    share: c.share,
                }),
            })
            .collect(),
        sign_in: crate::model::SignIn {
            logout: s.sign_in.logout,
            require_group: s.sign_in.require_group,
            sso: s.sign_in.sso.clone(),
            admins_change_own_password: s.sign_in.admins_change_own_password,
            users_change_own_password: s.sign_in.users_change_own_password,
            one_role_per_place: s.sign_in.one_role_per_place,
            revoked_sessions: rows
                .sessions
                .into_iter()
                .filter(|(_, r)| r.revoked)
                .map(|(id, r)| crate::model::RevokedSession {
                    id: id.to_string(),
                    expires_at: r.expires_at,
                })
                .collect(),
            api_keys: rows
                .api_keys
                .into_iter()
                .filter(|k| !k.revoked)
                .filter_map(|k| {
                    Some(crate::model::ApiKeyGrant {
                        id: k.id.clone(),
                        user: k.user.clone(),
                        sha256: crate::model::unhex32(&k.sha256)?,
                        expires_at: k.expires_at,
                    })
                })
                .collect(),
            passwords: Vec::new(),
        },
        preset: s.preset.clone(),
        default_role: s.default_role.clone(),
        revision,
    }
}

/// Serializes a row value. Our row types serialize infallibly (no maps with non-string keys).
pub fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
