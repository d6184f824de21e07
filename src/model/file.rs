//! The data file (YAML; JSON is accepted as YAML's flow syntax).
//!
//! A file is accepted whole or rejected whole. Every problem is reported with its line and
//! column, and the tenant/collection/index it concerns.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::preset::{Preset, RawPreset};
use super::time::de_opt_timestamp;
use super::{
    Assignment, Channel, Collection, Group, GroupStatus, LogoutPeriod, Node, Permission, Principal,
    Quotas, Rbac, Role, Tenant, TenantStatus, Tier, Timestamp, User, UserKind, UserStatus,
};

/// Largest data file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 512 * 1024 * 1024;

/// A loaded, fully validated data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub tenants: Vec<Tenant>,
    pub tests: Vec<TestCase>,
}

/// One `tests:` assertion.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub tenant: String,
    pub subject: String,
    pub action: String,
    pub resource: String,
    pub allowed: bool,
    /// Evaluate at this time instead of now (for expiring assignments).
    #[serde(default, deserialize_with = "de_opt_timestamp")]
    pub at: Option<Timestamp>,
    /// Expected reason code, if given (e.g. `subject_inactive`).
    #[serde(default)]
    pub reason: Option<String>,
    /// The request `context` handed to plugin conditions.
    #[serde(default)]
    pub context: Option<serde_json::Value>,
    /// Expected reason a plugin condition gave (`set_reason`): some plugin run for this check
    /// must have given exactly this reason.
    #[serde(default)]
    pub plugin_reason: Option<String>,
    /// 1-based line of the case in the file (0 when not from a file).
    #[serde(skip)]
    pub line: u64,
}

/// One problem in a data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

/// Why a data file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read '{path}': {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("data file is {0} bytes; the limit is {MAX_FILE_BYTES}")]
    TooLarge(usize),
    #[error("{}", list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    let mut s = format!(
        "data file rejected ({} problem{}):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str("\n  ");
        s.push_str(&p.to_string());
    }
    s
}

impl LoadError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            LoadError::Invalid(p) => p,
            _ => &[],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Role catalogues the file's tenants may name as their `preset` (besides the built-in ones).
    #[serde(default)]
    presets: Vec<Spanned<RawPreset>>,
    #[serde(default)]
    tenants: Vec<Spanned<RawTenant>>,
    #[serde(default)]
    tests: Vec<Spanned<TestCase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    rbac: Rbac,
    #[serde(default)]
    status: TenantStatus,
    #[serde(default)]
    quotas: Quotas,
    #[serde(default)]
    logout: Option<LogoutPeriod>,
    #[serde(default)]
    require_group: bool,
    /// A role preset: its roles are added to the tenant's (before those of `roles:`).
    #[serde(default)]
    preset: Option<String>,
    #[serde(default)]
    admins_change_own_password: bool,
    #[serde(default)]
    users_change_own_password: Option<bool>,
    #[serde(default)]
    one_role_per_place: bool,
    #[serde(default)]
    default_role: Option<String>,
    #[serde(default)]
    sso: Option<crate::model::Sso>,
    #[serde(default)]
    nodes: Vec<Spanned<RawNode>>,
    #[serde(default)]
    roles: Vec<Spanned<RawRole>>,
    #[serde(default)]
    users: Vec<Spanned<RawUser>>,
    #[serde(default)]
    groups: Vec<Spanned<RawGroup>>,
    #[serde(default)]
    assignments: Vec<Spanned<RawAssignment>>,
    #[serde(default)]
    plugins: Vec<Spanned<RawPlugin>>,
}

/// A plugin declared by path (relative to the data file's directory).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    name: String,
    path: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: String,
    kind: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRole {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    plugin: Option<String>,
    /// A catalogue role: the lowest RBAC tier it is available in.
    #[serde(default)]
    tier: Option<Tier>,
}

/// A role of the file, its permissions parsed (problems reported as `what: role 'x': …`).
fn role_of(s: Spanned<RawRole>, what: &str, problems: &mut Vec<Problem>) -> Role {
    let mut perms = Vec::with_capacity(s.value.permissions.len());
    for p in &s.value.permissions {
        match p.parse::<Permission>() {
            Ok(p) => perms.push(p),
            Err(e) => problems.push(at(
                &s.referenced,
                format!("{what}: role '{}': {e}", s.value.id),
            )),
        }
    }
    Role {
        name: s.value.name.unwrap_or_else(|| s.value.id.clone()),
        id: s.value.id,
        permissions: perms,
        plugin: s.value.plugin,
        tier: s.value.tier,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    id: String,
    email: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: UserStatus,
    #[serde(default)]
    kind: UserKind,
    #[serde(default)]
    session_epoch: u64,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    logout: Option<LogoutPeriod>,
    #[serde(default)]
    scope: Option<String>,
    /// An initial password (demo and test data): hashed on import, never stored as given.
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: GroupStatus,
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    logout: Option<LogoutPeriod>,
    #[serde(default)]
    access: Option<Vec<Channel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssignment {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
    role: String,
    scope: String,
    #[serde(default)]
    assigned_by: Option<String>,
    #[serde(default, deserialize_with = "de_opt_timestamp")]
    assigned_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "de_opt_timestamp")]
    expires_at: Option<Timestamp>,
}

fn at(loc: &Location, message: String) -> Problem {
    Problem {
        line: loc.line(),
        column: loc.column(),
        message,
    }
}

/// Reads and validates a data file from disk.
pub fn load_path(path: &Path) -> Result<DataFile, LoadError> {
    let meta = std::fs::metadata(path).map_err(|source| LoadError::Io {
        path: path.display().to_string(),
        source,
    })?;
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(LoadError::TooLarge(meta.len() as usize));
    }
    let text = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.display().to_string(),
        source,
    })?;
    load_bytes_in(&text, path.parent())
}

/// Parses and validates a data file held in memory (plugin paths relative to the current
/// directory).
pub fn load_bytes(bytes: &[u8]) -> Result<DataFile, LoadError> {
    load_bytes_in(bytes, None)
}

fn load_bytes_in(bytes: &[u8], base: Option<&Path>) -> Result<DataFile, LoadError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge(bytes.len()));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        let valid = std::str::from_utf8(bytes)
            .err()
            .map(|e| e.valid_up_to())
            .unwrap_or(0);
        let line = bytes[..valid].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        return Err(LoadError::Invalid(vec![Problem {
            line,
            column: 0,
            message: "data file is not valid UTF-8".into(),
        }]));
    };
    load_str_in(text, base)
}

/// serde-saphyr's default limits (alias expansion, nesting, anchors, documents), with the
/// size-proportional ones raised to the input's size: the defaults (250k YAML nodes, 1M events,
/// 64 MiB of scalars) reject honest files such as `portcullis generate --world m`. A YAML node or
/// event takes at least a byte or two of input, so these still bound the work linearly.
fn yaml_options(len: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = budget.max_nodes.max(len);
    budget.max_events = budget.max_events.max(len.saturating_mul(2));
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(len);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Parses and validates a data file's text (plugin paths relative to the current directory).
pub fn load_str(text: &str) -> Result<DataFile, LoadError> {
    load_str_in(text, None)
}

/// The presets a data file declares (the built-in preset files are read this way). Its tenants
/// may name only the presets of the same file.
pub(super) fn presets_of(text: &str) -> Result<Vec<Preset>, LoadError> {
    convert(parse(text)?, None, false).map(|(_, presets)| presets)
}

fn load_str_in(text: &str, base: Option<&Path>) -> Result<DataFile, LoadError> {
    convert(parse(text)?, base, true).map(|(file, _)| file)
}

fn parse(text: &str) -> Result<RawFile, LoadError> {
    Ok(if text.trim().is_empty() {
        RawFile {
            presets: Vec::new(),
            tenants: Vec::new(),
            tests: Vec::new(),
        }
    } else {
        serde_saphyr::from_str_with_options(text, yaml_options(text.len())).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            // The rendered error repeats the position and a snippet; keep its first line only.
            let msg = e.to_string();
            let first = msg
                .lines()
                .next()
                .unwrap_or("invalid data file")
                .to_string();
            LoadError::Invalid(vec![Problem {
                line,
                column,
                message: first,
            }])
        })?
    })
}

/// Reads a declared plugin module, refusing anything but a regular file within the size cap.
fn read_plugin(base: Option<&Path>, path: &str) -> Result<Vec<u8>, String> {
    let full = match base {
        Some(b) if !Path::new(path).is_absolute() => b.join(path),
        _ => Path::new(path).to_path_buf(),
    };
    let meta = std::fs::metadata(&full).map_err(|e| format!("{}: {e}", full.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", full.display()));
    }
    if meta.len() > crate::model::MAX_PLUGIN_BYTES as u64 {
        return Err(format!(
            "{} is {} bytes; the limit is {}",
            full.display(),
            meta.len(),
            crate::model::MAX_PLUGIN_BYTES
        ));
    }
    std::fs::read(&full).map_err(|e| format!("{}: {e}", full.display()))
}

/// Converts and validates a parsed file; `builtin`: tenants may name the built-in presets.
fn convert(
    raw: RawFile,
    base: Option<&Path>,
    builtin: bool,
) -> Result<(DataFile, Vec<Preset>), LoadError> {
    let mut problems = Vec::new();
    // The file's own presets, with the position of each role.
    let mut presets: Vec<(Preset, Vec<Location>)> = Vec::with_capacity(raw.presets.len());
    for sp in raw.presets {
        let (ploc, rp) = (sp.referenced, sp.value);
        let what = format!("preset '{}'", rp.id);
        if let Err(m) = super::check_id("preset id", &rp.id) {
            problems.push(at(&ploc, m));
        }
        if presets.iter().any(|(p, _)| p.id == rp.id) {
            problems.push(at(&ploc, format!("duplicate {what}")));
        }
        let locs: Vec<Location> = rp.roles.iter().map(|s| s.referenced).collect();
        let mut roles = Vec::with_capacity(rp.roles.len());
        for s in rp.roles {
            if s.value.tier.is_none() {
                problems.push(at(
                    &s.referenced,
                    format!(
                        "{what}: role '{}' needs a tier ('basic' or 'enterprise')",
                        s.value.id
                    ),
                ));
            }
            roles.push(role_of(s, &what, &mut problems));
        }
        let preset = Preset {
            name: rp.name.unwrap_or_else(|| rp.id.clone()),
            id: rp.id,
            description: rp.description,
            roles,
        };
        presets.push((preset, locs));
    }
    let mut tenants = Vec::with_capacity(raw.tenants.len());
    let mut ids = HashSet::new();
    for rt in raw.tenants {
        let tloc = rt.referenced;
        let rt = rt.value;
        // Tenant ids are compared without case: `FEMO` beside `femo` would be two tenants
        // that people, logs and URLs confuse.
        if !ids.insert(rt.id.to_ascii_lowercase()) {
            problems.push(at(
                &tloc,
                format!(
                    "duplicate tenant id '{}' (ids differing only in case are the same)",
                    rt.id
                ),
            ));
        }
        let tid = rt.id.clone();
        let mut locs: Vec<(Collection, Vec<Location>)> = Vec::new();
        let mut t = Tenant::new(rt.id);
        if let Some(n) = rt.name {
            t.name = n;
        }
        t.rbac = rt.rbac;
        t.status = rt.status;
        t.quotas = rt.quotas;
        t.sign_in.logout = rt.logout;
        t.sign_in.require_group = rt.require_group;
        t.sign_in.sso = rt.sso;
        t.sign_in.admins_change_own_password = rt.admins_change_own_password;
        t.sign_in.users_change_own_password = rt.users_change_own_password.unwrap_or(true);
        t.sign_in.one_role_per_place = rt.one_role_per_place;
        t.default_role = rt.default_role;
        locs.push((
            Collection::Plugins,
            rt.plugins.iter().map(|s| s.referenced).collect(),
        ));
        for s in rt.plugins {
            match read_plugin(base, &s.value.path) {
                Ok(bytes) => t.plugins.push(crate::model::PluginModule {
                    name: s.value.name,
                    description: s.value.description,
                    wasm: bytes.into(),
                    canary: None,
                }),
                Err(e) => problems.push(at(
                    &s.referenced,
                    format!("tenant '{tid}': plugin '{}': {e}", s.value.name),
                )),
            }
        }
        locs.push((
            Collection::Nodes,
            rt.nodes.iter().map(|s| s.referenced).collect(),
        ));
        t.nodes = rt
            .nodes
            .into_iter()
            .map(|s| Node {
                id: s.value.id,
                kind: s.value.kind,
                parent: s.value.parent,
                name: s.value.name,
            })
            .collect();
        // The preset's roles come first (a problem with one points at the preset's role, or at
        // the tenant for a built-in preset), then the tenant's own.
        let mut role_locs: Vec<Location> = Vec::new();
        if let Some(pid) = rt.preset {
            let own = presets.iter().find(|(p, _)| p.id == pid);
            match (own, builtin.then(|| super::preset::get(&pid)).flatten()) {
                (Some((p, l)), _) => {
                    t.roles.extend(p.roles.iter().cloned());
                    role_locs.extend(l.iter().copied());
                }
                (None, Some(p)) => {
                    t.roles.extend(p.roles.iter().cloned());
                    role_locs.extend(std::iter::repeat_n(tloc, p.roles.len()));
                }
                (None, None) => problems.push(at(
                    &tloc,
                    format!(
                        "tenant '{tid}': {}",
                        if builtin {
                            super::preset::unknown(&pid)
                        } else {
                            format!("unknown preset '{pid}' (not declared in this file)")
                        }
                    ),
                )),
            }
            t.preset = Some(pid);
        }
        role_locs.extend(rt.roles.iter().map(|s| s.referenced));
        locs.push((Collection::Roles, role_locs));
        let what = format!("tenant '{tid}'");
        for s in rt.roles {
            t.roles.push(role_of(s, &what, &mut problems));
        }
        locs.push((
            Collection::Users,
            rt.users.iter().map(|s| s.referenced).collect(),
        ));
        t.users = rt
            .users
            .into_iter()
            .map(|s| {
                let u = s.value;
                if let Some(p) = u.password {
                    if let Err(e) = super::check_password(&p) {
                        problems.push(at(
                            &s.referenced,
                            format!("tenant '{tid}': user '{}': password: {e}", u.id),
                        ));
                    }
                    t.sign_in.passwords.push((u.id.clone(), p));
                }
                User {
                    name: u.name.unwrap_or_else(|| u.id.clone()),
                    id: u.id,
                    email: u.email,
                    status: u.status,
                    kind: u.kind,
                    session_epoch: u.session_epoch,
                    first_name: u.first_name,
                    last_name: u.last_name,
                    logout: u.logout,
                    scope: u.scope,
                }
            })
            .collect();
        locs.push((
            Collection::Groups,
            rt.groups.iter().map(|s| s.referenced).collect(),
        ));
        t.groups = rt
            .groups
            .into_iter()
            .map(|s| {
                let g = s.value;
                Group {
                    name: g.name.unwrap_or_else(|| g.id.clone()),
                    id: g.id,
                    status: g.status,
                    members: g.members,
                    logout: g.logout,
                    access: g.access,
                }
            })
            .collect();
        locs.push((
            Collection::Assignments,
            rt.assignments.iter().map(|s| s.referenced).collect(),
        ));
        for s in rt.assignments {
            let a = s.value;
            let principal = match (a.user, a.group) {
                (Some(u), None) => Principal::User(u),
                (None, Some(g)) => Principal::Group(g),
                _ => {
                    problems.push(at(
                        &s.referenced,
                        format!(
                            "tenant '{tid}': an assignment names exactly one of 'user' or 'group'"
                        ),
                    ));
                    continue;
                }
            };
            t.assignments.push(Assignment {
                principal,
                role: a.role,
                scope: a.scope,
                assigned_by: a.assigned_by,
                assigned_at: a.assigned_at,
                expires_at: a.expires_at,
            });
        }
        for inv in t.validate() {
            let loc = locs
                .iter()
                .find(|(c, _)| *c == inv.collection)
                .and_then(|(_, l)| l.get(inv.index))
                .copied()
                .unwrap_or(tloc);
            problems.push(at(&loc, format!("tenant '{tid}': {inv}")));
        }
        tenants.push(t);
    }
    let mut tests = Vec::with_capacity(raw.tests.len());
    for s in raw.tests {
        let mut c = s.value;
        c.line = s.referenced.line();
        if !ids.contains(&c.tenant) {
            problems.push(at(
                &s.referenced,
                format!("test names unknown tenant '{}'", c.tenant),
            ));
        }
        tests.push(c);
    }
    if problems.is_empty() {
        let presets = presets.into_iter().map(|(p, _)| p).collect();
        Ok((DataFile { tenants, tests }, presets))
    } else {
        problems.sort_by_key(|p| (p.line, p.column));
        Err(LoadError::Invalid(problems))
    }
}

/// Writes tenants (and optional test cases) as a data file in JSON, which [`load_str`] accepts.
pub fn to_json(tenants: &[Tenant], tests: &[TestCase]) -> String {
    use serde_json::{json, Map, Value};
    let opt = |m: &mut Map<String, Value>, k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    let ts = |t: Option<Timestamp>| t.map(|t| Value::String(super::format_timestamp(t)));
    let tenants: Vec<Value> = tenants
        .iter()
        .map(|t| {
            let assignments: Vec<Value> = t
                .assignments
                .iter()
                .map(|a| {
                    let mut m = Map::new();
                    match &a.principal {
                        Principal::User(u) => m.insert("user".into(), json!(u)),
                        Principal::Group(g) => m.insert("group".into(), json!(g)),
                    };
                    m.insert("role".into(), json!(a.role));
                    m.insert("scope".into(), json!(a.scope));
                    opt(
                        &mut m,
                        "assigned_by",
                        a.assigned_by.as_ref().map(|b| json!(b)),
                    );
                    opt(&mut m, "assigned_at", ts(a.assigned_at));
                    opt(&mut m, "expires_at", ts(a.expires_at));
                    Value::Object(m)
                })
                .collect();
            let mut v = json!({
                "id": t.id, "name": t.name, "rbac": t.rbac, "status": t.status, "quotas": t.quotas,
                "nodes": t.nodes, "roles": t.roles, "users": t.users,
                "groups": t.groups, "assignments": assignments,
            });
            if let (Value::Object(m), Some(r)) = (&mut v, &t.default_role) {
                m.insert("default_role".into(), json!(r));
            }
            v
        })
        .collect();
    let tests: Vec<Value> = tests
        .iter()
        .map(|c| {
            let mut m = Map::new();
            for (k, v) in [
                ("tenant", &c.tenant),
                ("subject", &c.subject),
                ("action", &c.action),
                ("resource", &c.resource),
            ] {
                m.insert(k.into(), json!(v));
            }
            m.insert("allowed".into(), json!(c.allowed));
            opt(&mut m, "at", ts(c.at));
            opt(&mut m, "reason", c.reason.as_ref().map(|r| json!(r)));
            opt(&mut m, "context", c.context.clone());
            opt(
                &mut m,
                "plugin_reason",
                c.plugin_reason.as_ref().map(|r| json!(r)),
            );
            Value::Object(m)
        })
        .collect();
    json!({ "tenants": tenants, "tests": tests }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
tenants:
  - id: femo
    rbac: enterprise
    nodes:
      - { id: femo, kind: organisation }
      - { id: hawthorne, kind: site, parent: femo }
      - { id: press-7, kind: asset, parent: hawthorne }
    roles:
      - { id: machine-operator, name: Machine Operator, permissions: [asset:read, asset:operate] }
    users:
      - { id: alice, email: alice@femo.example, name: Alice Adams, status: active }
    groups:
      - { id: night-shift, members: [alice] }
    assignments:
      - { user: alice, role: machine-operator, scope: hawthorne }
      - { group: night-shift, role: viewer, scope: femo, expires_at: "2030-01-01T00:00:00Z" }
tests:
  - { tenant: femo, subject: alice, action: asset:operate, resource: press-7, allowed: true }
"#;

    #[test]
    fn loads_the_contract_example() {
        let f = load_str(GOOD).unwrap();
        assert_eq!(f.tenants.len(), 1);
        let t = &f.tenants[0];
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(
            t.assignments[1].principal,
            Principal::Group("night-shift".into())
        );
        assert_eq!(t.assignments[1].expires_at, Some(1_893_456_000));
        assert_eq!(f.tests.len(), 1);
        assert_eq!(f.tests[0].line, 19);
    }

    #[test]
    fn json_is_accepted() {
        let j = r#"{"tenants":[{"id":"a","nodes":[{"id":"n","kind":"site"}],
            "users":[{"id":"u","email":"u@a.example"}],
            "assignments":[{"user":"u","role":"viewer","scope":"n"}]}]}"#;
        let f = load_str(j).unwrap();
        assert_eq!(f.tenants[0].assignments.len(), 1);
    }

    fn problems(text: &str) -> Vec<Problem> {
        match load_str(text) {
            Err(LoadError::Invalid(p)) => p,
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    #[test]
    fn semantic_errors_have_positions() {
        let bad = GOOD.replace("parent: hawthorne }", "parent: nowhere }");
        let p = problems(&bad);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, 8);
        assert!(
            p[0].message.contains("unknown parent 'nowhere'"),
            "{}",
            p[0].message
        );

        let bad = GOOD.replace("scope: hawthorne", "scope: mars");
        let p = problems(&bad);
        assert_eq!(p[0].line, 16);
        assert!(p[0].message.contains("unknown scope node 'mars'"));

        let bad = GOOD.replace("asset:operate] }", "asset operate] }");
        let p = problems(&bad);
        assert_eq!(p[0].line, 10);
        assert!(p[0].message.contains("invalid permission 'asset operate'"));

        let bad = GOOD.replace("alice@femo.example", "not-an-email");
        assert!(problems(&bad)[0].message.contains("not a valid email"));

        let bad = GOOD.replace("members: [alice]", "members: [bob]");
        assert!(problems(&bad)[0].message.contains("member 'bob'"));
    }

    #[test]
    fn syntax_and_type_errors_have_positions() {
        let p = problems("tenants:\n  - id: a\n    rbac: superuser\n");
        assert_eq!(p[0].line, 3, "{p:?}");
        let p = problems("tenants:\n  - id: a\n    colour: blue\n");
        assert!(p[0].message.contains("colour"), "{p:?}");
        let p = problems("tenants: [\n");
        assert!(p[0].line >= 1, "{p:?}");
    }

    #[test]
    fn json_writer_round_trips() {
        let f = load_str(GOOD).unwrap();
        let back = load_str(&to_json(&f.tenants, &f.tests)).unwrap();
        assert_eq!(back.tenants, f.tenants);
        assert_eq!(back.tests.len(), 1);
    }

    #[test]
    fn presets_declared_in_the_file_or_built_in() {
        let own = "presets:\n  - id: mine\n    roles:\n      - { id: reader, tier: basic, permissions: ['*:read'] }\n      - { id: writer, tier: enterprise, permissions: ['*:write'] }\ntenants:\n  - id: a\n    rbac: basic\n    preset: mine\n";
        let f = load_str(own).unwrap();
        let t = &f.tenants[0];
        assert_eq!(t.preset.as_deref(), Some("mine"));
        assert_eq!(t.roles.len(), 2);
        assert!(!t.roles[0].locked_in(t.rbac) && t.roles[1].locked_in(t.rbac));

        // Preset roles need a tier; a tenant's own role may not repeat a preset role's id.
        let p = problems(&own.replace("tier: enterprise, ", ""));
        assert_eq!(p[0].line, 5, "{p:?}");
        assert!(p[0].message.contains("needs a tier"), "{p:?}");
        let dup = format!("{own}    roles: [{{ id: reader, tier: basic, permissions: [] }}]\n");
        let p = problems(&dup);
        assert_eq!(p[0].line, 10, "{p:?}");
        assert!(p[0].message.contains("duplicate role id 'reader'"), "{p:?}");

        // Built-in presets by name; an unknown one is refused at the tenant.
        let f = load_str("tenants:\n  - id: a\n    preset: tiered\n").unwrap();
        assert_eq!(f.tenants[0].roles.len(), 14);
        let p = problems("tenants:\n  - id: a\n    preset: gold\n");
        assert_eq!(p[0].line, 2, "{p:?}");
        assert!(p[0].message.contains("unknown preset 'gold'"), "{p:?}");
    }

    #[test]
    fn everything_is_reported_at_once() {
        let bad = GOOD
            .replace("parent: hawthorne }", "parent: nowhere }")
            .replace("scope: hawthorne", "scope: mars");
        assert_eq!(problems(&bad).len(), 2);
    }
}
