//! The access model: plain data and its validation. No I/O, no async.
//!
//! A [`Tenant`] is the unit of isolation. Validation ([`Tenant::validate`]) reports every problem
//! with the collection and index of the offending item, so that loaders (the data file, the
//! management API) can point at the exact place in their own input.

pub mod file;
mod perm;
pub mod preset;
mod sso;
mod time;

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

pub use perm::{is_segment, split_action, Part, Permission, PermissionError};
pub use sso::{
    key_material, KeyMaterial, Sso, SsoAlg, SsoKey, SsoMapping, MAX_SSO_GROUPS, MAX_SSO_KEYS,
    MAX_SSO_MAPPINGS,
};
pub use time::{de_opt_timestamp, format_timestamp, parse_timestamp, Timestamp};

/// Longest id, name or kind accepted anywhere in the model, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest free-text field (names, emails), in bytes.
pub const MAX_TEXT_LEN: usize = 256;

/// Ids of the roles every tenant has. Their permission lists are fixed.
pub const BUILTIN_ROLES: &[(&str, &str, &[&str])] = &[
    ("administrator", "Administrator", &["*"]),
    ("operator", "Operator", &["*:read", "*:operate"]),
    ("viewer", "Viewer", &["*:read"]),
    ("member", "Member", &["*:read"]),
];

/// The role a tenant's default role setting usually names: what every ordinary user holds.
pub const MEMBER_ROLE: &str = "member";

/// How a tenant authorizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Rbac {
    /// Every active user may do everything in the tenant.
    None,
    /// Built-in roles and the `basic` roles of the tenant's catalogue; custom roles are rejected
    /// and `enterprise` catalogue roles are locked.
    Basic,
    /// Every role: built in, catalogue, custom (with plugin conditions).
    #[default]
    Enterprise,
}

impl Rbac {
    /// Does a tenant with this RBAC tier let roles of `tier` grant and be assigned? `basic` locks
    /// `enterprise` roles; `none` decides without roles, so it locks nothing (the roles wait,
    /// usable, for a tier that uses them).
    pub fn unlocks(self, tier: Tier) -> bool {
        !(self == Rbac::Basic && tier == Tier::Enterprise)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rbac::None => "none",
            Rbac::Basic => "basic",
            Rbac::Enterprise => "enterprise",
        }
    }
}

/// The lowest RBAC tier a role is available in. Built-in roles are `basic`; custom roles are
/// `enterprise`; the roles of a preset catalogue say theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Basic,
    Enterprise,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Basic => "basic",
            Tier::Enterprise => "enterprise",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    #[default]
    Active,
    Suspended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    #[default]
    Active,
    Inactive,
    Deleted,
}

/// What kind of account a user is. Guests are limited to `*:read` actions whatever their roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UserKind {
    Owner,
    Admin,
    #[default]
    Member,
    Guest,
}

/// Through which channel a session was opened: the web console (passwords) or the field
/// (access cards at terminals). Groups may limit their members to some channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Console,
    Field,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Console => "console",
            Channel::Field => "field",
        }
    }
}

/// How long a session lasts before its holder must sign in again, in hours (1..=720). Written
/// as a number of hours or as a preset: `1d` = 22 hours (a daily login does not pick up the
/// previous day's last minutes), `5d` = 110 hours (a Monday login lasts until late Friday),
/// or `Nh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LogoutPeriod(u32);

impl LogoutPeriod {
    /// The default when neither the user, a group nor the tenant sets one.
    pub const DEFAULT: LogoutPeriod = LogoutPeriod(12);
    /// Longest period accepted (30 days).
    pub const MAX_HOURS: u32 = 720;

    pub fn hours(self) -> u32 {
        self.0
    }

    pub fn seconds(self) -> i64 {
        i64::from(self.0) * 3600
    }

    pub fn from_hours(hours: u32) -> Result<LogoutPeriod, String> {
        if hours == 0 || hours > Self::MAX_HOURS {
            return Err(format!(
                "logout period must be 1..={} hours, not {hours}",
                Self::MAX_HOURS
            ));
        }
        Ok(LogoutPeriod(hours))
    }
}

impl std::str::FromStr for LogoutPeriod {
    type Err = String;
    fn from_str(s: &str) -> Result<LogoutPeriod, String> {
        match s.trim() {
            "1d" => Ok(LogoutPeriod(22)),
            "5d" => Ok(LogoutPeriod(110)),
            t => {
                let n = t.strip_suffix('h').unwrap_or(t);
                let hours = n.parse::<u32>().map_err(|_| {
                    format!(
                        "logout period '{s}' is not a number of hours, '1d' (22 h) or '5d' (110 h)"
                    )
                })?;
                LogoutPeriod::from_hours(hours)
            }
        }
    }
}

impl<'de> Deserialize<'de> for LogoutPeriod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LogoutPeriod, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Hours(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Hours(h) => LogoutPeriod::from_hours(u32::try_from(h).unwrap_or(u32::MAX))
                .map_err(serde::de::Error::custom),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GroupStatus {
    #[default]
    Active,
    Inactive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_admins: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_users: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_groups: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub permissions: Vec<Permission>,
    /// Name of a tenant plugin that must also allow (custom roles only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Catalogue roles (from a preset, or a data file's `tier:`): the lowest tier they are
    /// available in; such roles are read-only through the management API. Absent: a custom
    /// role, available in `enterprise` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
}

impl Role {
    /// The lowest tier this role is available in (custom roles: `enterprise`).
    pub fn tier(&self) -> Tier {
        self.tier.unwrap_or(Tier::Enterprise)
    }

    /// Is this role locked (assignable and granting nothing) in a tenant with `rbac`?
    pub fn locked_in(&self, rbac: Rbac) -> bool {
        !rbac.unlocks(self.tier())
    }

    /// A catalogue role (it carries its tier): read-only through the management API.
    pub fn is_catalogue(&self) -> bool {
        self.tier.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub status: UserStatus,
    pub kind: UserKind,
    /// Raised when the user is deactivated or deleted or changes password; tokens issued before
    /// it (external tokens: by `iat`; Portcullis sessions: by the epoch they carry) are refused.
    #[serde(default)]
    pub session_epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// This user's logout period (else the shortest of their active groups', else the tenant's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logout: Option<LogoutPeriod>,
    /// Guests only: the node whose subtree is all they may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub status: GroupStatus,
    pub members: Vec<String>,
    /// The members' logout period (a user's own setting wins; the shortest group's applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logout: Option<LogoutPeriod>,
    /// Channels the members may sign in through (absent = every channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<Channel>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "lowercase")]
pub enum Principal {
    User(String),
    Group(String),
}

impl Principal {
    pub fn id(&self) -> &str {
        match self {
            Principal::User(id) | Principal::Group(id) => id,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User(id) => write!(f, "user '{id}'"),
            Principal::Group(id) => write!(f, "group '{id}'"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub principal: Principal,
    pub role: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// A tenant plugin: a WebAssembly module (`plugins/ABI.md`) that custom roles name as their
/// condition. The model holds the bytes; compiling and running them is `crate::plugin`'s job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginModule {
    pub name: String,
    pub description: Option<String>,
    /// The module bytes (shared: tenants are cloned on every rebuild).
    pub wasm: std::sync::Arc<[u8]>,
    /// A candidate version running on a share of the plugin's calls, if any.
    pub canary: Option<PluginCanary>,
}

/// A plugin's canary: another version of the module that runs instead of the current one on
/// `share` % of the plugin's calls (chosen by [`crate::plugin::canary_bucket`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginCanary {
    pub wasm: std::sync::Arc<[u8]>,
    /// Percent of the calls, 1 to 99 ([`CANARY_SHARES`]).
    pub share: u8,
}

/// The shares a canary may take, in percent of a plugin's calls.
pub const CANARY_SHARES: std::ops::RangeInclusive<u8> = 1..=99;

impl PluginModule {
    pub fn new(name: impl Into<String>, wasm: impl Into<std::sync::Arc<[u8]>>) -> PluginModule {
        PluginModule {
            name: name.into(),
            description: None,
            wasm: wasm.into(),
            canary: None,
        }
    }

    /// Lowercase hex SHA-256 of the module bytes: the plugin's version.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.wasm)
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// The 32 bytes of a 64-digit hex string (either case); `None` when it is not one.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (digit(b[2 * i])? << 4) | digit(b[2 * i + 1])?;
    }
    Some(out)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// Largest plugin module a tenant may hold (the plugin host enforces the same default).
pub const MAX_PLUGIN_BYTES: usize = 4 << 20;
/// Most plugins one tenant may hold.
pub const MAX_PLUGINS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub rbac: Rbac,
    pub status: TenantStatus,
    pub quotas: Quotas,
    pub nodes: Vec<Node>,
    /// Custom roles only; built-ins are implied (see [`BUILTIN_ROLES`]).
    pub roles: Vec<Role>,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub assignments: Vec<Assignment>,
    /// Plugin modules custom roles may name (not part of the serde form: data files declare
    /// them by path, the management API uploads them).
    #[serde(skip)]
    pub plugins: Vec<PluginModule>,
    /// Sign-in settings, and the identity state decisions need (revoked sessions, API keys).
    #[serde(default)]
    pub sign_in: SignIn,
    /// The role preset the tenant was created with (its roles are among `roles`, with a tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// The tenant's default role (usually [`MEMBER_ROLE`]): every active user who is not a
    /// guest holds it on every root node, without an assignment. `None`: no default role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_role: Option<String>,
    /// Revision of this state; every committed change raises it by one.
    pub revision: u64,
}

/// A tenant's sign-in settings and the identity state its snapshot carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignIn {
    /// The tenant's logout period (default [`LogoutPeriod::DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logout: Option<LogoutPeriod>,
    /// Every ordinary user must belong to an active group to sign in.
    #[serde(default)]
    pub require_group: bool,
    /// Single sign-on: the identity provider this tenant trusts and its group mappings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<Sso>,
    /// Administrators may change their own password (else only the owner changes it).
    #[serde(default)]
    pub admins_change_own_password: bool,
    /// Ordinary users may change their own password (else their administrators do: the
    /// controlled users of a tenant created with an owner, where it defaults to `false`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub users_change_own_password: bool,
    /// At most one role per user per scope node (the management API refuses a second).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_role_per_place: bool,
    /// Sessions revoked before their expiry (logout): refused until they expire anyway.
    #[serde(skip)]
    pub revoked_sessions: Vec<RevokedSession>,
    /// Live API keys (not revoked; expired ones are refused by their expiry).
    #[serde(skip)]
    pub api_keys: Vec<ApiKeyGrant>,
    /// Initial passwords from a data file, hashed when the file is imported (never stored).
    #[serde(skip)]
    pub passwords: Vec<(String, String)>,
}

impl Default for SignIn {
    fn default() -> SignIn {
        SignIn {
            logout: None,
            require_group: false,
            admins_change_own_password: false,
            users_change_own_password: true,
            one_role_per_place: false,
            sso: None,
            revoked_sessions: Vec::new(),
            api_keys: Vec::new(),
            passwords: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A session revoked before it expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSession {
    pub id: String,
    /// Unix seconds; after it the session's token is refused anyway.
    pub expires_at: Timestamp,
}

/// An API key as decisions need it: whose it is and the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyGrant {
    pub id: String,
    pub user: String,
    /// SHA-256 of the key's secret part.
    pub sha256: [u8; 32],
    pub expires_at: Option<Timestamp>,
}

/// Which collection of a tenant an error points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    Tenant,
    Nodes,
    Roles,
    Users,
    Groups,
    Assignments,
    Plugins,
}

impl Collection {
    pub fn as_str(self) -> &'static str {
        match self {
            Collection::Tenant => "tenant",
            Collection::Nodes => "nodes",
            Collection::Roles => "roles",
            Collection::Users => "users",
            Collection::Groups => "groups",
            Collection::Assignments => "assignments",
            Collection::Plugins => "plugins",
        }
    }
}

/// One validation problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub collection: Collection,
    /// Index into the collection (0 for [`Collection::Tenant`]).
    pub index: usize,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.collection {
            Collection::Tenant => write!(f, "{}", self.message),
            c => write!(f, "{}[{}]: {}", c.as_str(), self.index, self.message),
        }
    }
}

/// Checks an identifier: 1..=128 bytes of ASCII letters, digits and `_ - . @ :`, not only
/// dots (`.` and `..` would read as path steps in URLs).
pub fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if id.bytes().all(|b| b == b'.') {
        return Err(format!("{what} '{id}' is made of dots only"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!(
            "{what} '{}…' is longer than {MAX_ID_LEN} bytes",
            truncate(id, 32)
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':')))
    {
        return Err(format!(
            "{what} '{id}' contains {c:?}; allowed are ASCII letters, digits and _ - . @ :"
        ));
    }
    Ok(())
}

/// Checks a free-text field: no control characters, at most [`MAX_TEXT_LEN`] bytes.
pub fn check_text(what: &str, text: &str) -> Result<(), String> {
    if text.len() > MAX_TEXT_LEN {
        return Err(format!("{what} is longer than {MAX_TEXT_LEN} bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{what} contains a control character"));
    }
    Ok(())
}

/// A deliberately plain email check: `local@domain.tld`, no spaces, one `@`.
pub fn check_email(email: &str) -> Result<(), String> {
    if email.len() > MAX_EMAIL_LEN {
        return Err(format!("email is longer than {MAX_EMAIL_LEN} characters"));
    }
    check_text("email", email)?;
    let bad = || Err(format!("'{email}' is not a valid email address"));
    let Some((local, domain)) = email.split_once('@') else {
        return bad();
    };
    if local.is_empty()
        || domain.contains('@')
        || email.chars().any(char::is_whitespace)
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return bad();
    }
    Ok(())
}

/// A password as a request carries it: never printed (`Debug` hides it) nor serialized.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn new(p: impl Into<String>) -> Password {
        Password(p.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Password rules: at least 8 characters, with an upper-case letter, a lower-case letter and a
/// digit; at most 256 bytes (argon2 hashes any length, but a bound keeps the work bounded).
pub fn check_password(password: &str) -> Result<(), String> {
    let mut missing = Vec::new();
    if password.chars().count() < 8 {
        missing.push("at least 8 characters");
    }
    if !password.chars().any(char::is_uppercase) {
        missing.push("an upper-case letter");
    }
    if !password.chars().any(char::is_lowercase) {
        missing.push("a lower-case letter");
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        missing.push("a digit");
    }
    if password.len() > MAX_TEXT_LEN {
        return Err(format!("password is longer than {MAX_TEXT_LEN} bytes"));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("password needs {}", missing.join(", ")))
    }
}

/// Rules of a first or last name: at least 2 characters, only letters (any script), spaces,
/// dots and hyphens, at most 128 bytes.
pub fn check_person_name(what: &str, name: &str) -> Result<(), String> {
    if name.trim().chars().count() < 2 {
        return Err(format!("{what} needs at least 2 characters"));
    }
    if name.len() > MAX_ID_LEN {
        return Err(format!("{what} is longer than {MAX_ID_LEN} bytes"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphabetic() || matches!(c, ' ' | '.' | '-')))
    {
        return Err(format!(
            "{what} contains {c:?}; allowed are letters, spaces, dots and hyphens"
        ));
    }
    Ok(())
}

/// Longest email accepted (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;

fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Is `id` one of the built-in role ids?
pub fn is_builtin_role(id: &str) -> bool {
    BUILTIN_ROLES.iter().any(|(rid, _, _)| *rid == id)
}

/// The built-in role `id` (tier `basic`: available in every tier).
pub fn builtin_role(id: &str) -> Option<Role> {
    let (rid, name, perms) = BUILTIN_ROLES.iter().find(|r| r.0 == id)?;
    Some(Role {
        id: (*rid).to_string(),
        name: (*name).to_string(),
        permissions: perms.iter().filter_map(|p| p.parse().ok()).collect(),
        plugin: None,
        tier: Some(Tier::Basic),
    })
}

/// What an assignment names: its principal (a user or a group), its role, its scope node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    User,
    Group,
    Role,
    Node,
}

/// The invariants of one assignment, reported through `err`: what it names exists (`known`
/// answers whether the tenant has that user, group, role — custom or built in — or node),
/// `assigned_by` is text, the expiry lies after the assignment. [`Tenant::validate`] applies it
/// to every assignment, the control plane to the assignments a change writes, and the compiled
/// tenant to those it patches in.
pub fn check_assignment(
    a: &Assignment,
    known: impl Fn(Named, &str) -> bool,
    mut err: impl FnMut(String),
) {
    match &a.principal {
        Principal::User(u) if !known(Named::User, u) => err(format!("unknown user '{u}'")),
        Principal::Group(g) if !known(Named::Group, g) => err(format!("unknown group '{g}'")),
        _ => {}
    }
    if !known(Named::Role, &a.role) {
        err(format!("unknown role '{}'", a.role));
    }
    if !known(Named::Node, &a.scope) {
        err(format!("unknown scope node '{}'", a.scope));
    }
    if let Some(by) = &a.assigned_by {
        if let Err(m) = check_text("assigned_by", by) {
            err(m);
        }
    }
    if let (Some(at), Some(exp)) = (a.assigned_at, a.expires_at) {
        if exp <= at {
            err("expires_at must be after assigned_at".to_string());
        }
    }
}

impl Tenant {
    /// An empty, active enterprise tenant.
    pub fn new(id: impl Into<String>) -> Tenant {
        let id = id.into();
        Tenant {
            name: id.clone(),
            id,
            rbac: Rbac::default(),
            status: TenantStatus::default(),
            quotas: Quotas::default(),
            nodes: Vec::new(),
            roles: Vec::new(),
            users: Vec::new(),
            groups: Vec::new(),
            assignments: Vec::new(),
            plugins: Vec::new(),
            sign_in: SignIn::default(),
            preset: None,
            default_role: None,
            revision: 1,
        }
    }

    /// Every built-in, catalogue and custom role.
    pub fn all_roles(&self) -> Vec<Role> {
        let mut roles: Vec<Role> = BUILTIN_ROLES
            .iter()
            .filter_map(|(id, _, _)| builtin_role(id))
            .collect();
        roles.extend(self.roles.iter().cloned());
        roles
    }

    /// Validates the whole tenant; returns every problem found (empty = valid).
    pub fn validate(&self) -> Vec<Invalid> {
        let mut errs = Vec::new();
        let mut err = |collection, index, message: String| {
            errs.push(Invalid {
                collection,
                index,
                message,
            })
        };
        if let Err(m) = check_id("tenant id", &self.id) {
            err(Collection::Tenant, 0, m);
        }
        if let Err(m) = check_text("tenant name", &self.name) {
            err(Collection::Tenant, 0, m);
        }

        // Nodes: unique ids, known parents, no cycles.
        let mut node_idx: HashMap<&str, usize> = HashMap::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            if let Err(m) = check_id("node id", &n.id) {
                err(Collection::Nodes, i, m);
            }
            if let Err(m) = check_id("node kind", &n.kind) {
                err(Collection::Nodes, i, m);
            }
            if let Some(name) = &n.name {
                if let Err(m) = check_text("node name", name) {
                    err(Collection::Nodes, i, m);
                }
            }
            if let Some(prev) = node_idx.insert(&n.id, i) {
                err(
                    Collection::Nodes,
                    i,
                    format!("duplicate node id '{}' (first at nodes[{prev}])", n.id),
                );
            }
        }
        let mut parent_of: Vec<Option<usize>> = vec![None; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(p) = &n.parent {
                match node_idx.get(p.as_str()) {
                    Some(&pi) if pi == i => err(
                        Collection::Nodes,
                        i,
                        format!("node '{}' is its own parent", n.id),
                    ),
                    Some(&pi) => parent_of[i] = Some(pi),
                    None => err(
                        Collection::Nodes,
                        i,
                        format!("unknown parent '{p}' of node '{}'", n.id),
                    ),
                }
            }
        }
        // Cycle detection: colour walk up the parent chain.
        let mut state = vec![0u8; self.nodes.len()]; // 0 new, 1 on path, 2 done
        for start in 0..self.nodes.len() {
            let mut path = Vec::new();
            let mut cur = Some(start);
            while let Some(c) = cur {
                match state[c] {
                    2 => break,
                    1 => {
                        err(
                            Collection::Nodes,
                            c,
                            format!("hierarchy cycle through node '{}'", self.nodes[c].id),
                        );
                        break;
                    }
                    _ => {
                        state[c] = 1;
                        path.push(c);
                        cur = parent_of[c];
                    }
                }
            }
            for p in path {
                state[p] = 2;
            }
        }

        // Plugins: unique names, size caps.
        let mut plugin_names: HashSet<&str> = HashSet::with_capacity(self.plugins.len());
        if self.plugins.len() > MAX_PLUGINS {
            err(
                Collection::Plugins,
                MAX_PLUGINS,
                format!("at most {MAX_PLUGINS} plugins per tenant"),
            );
        }
        for (i, p) in self.plugins.iter().enumerate() {
            if let Err(m) = check_id("plugin name", &p.name) {
                err(Collection::Plugins, i, m);
            }
            if let Some(d) = &p.description {
                if let Err(m) = check_text("plugin description", d) {
                    err(Collection::Plugins, i, m);
                }
            }
            if p.wasm.is_empty() || p.wasm.len() > MAX_PLUGIN_BYTES {
                err(
                    Collection::Plugins,
                    i,
                    format!(
                        "plugin '{}' is {} bytes; a module must be 1 to {MAX_PLUGIN_BYTES} bytes",
                        p.name,
                        p.wasm.len()
                    ),
                );
            }
            if let Some(c) = &p.canary {
                if c.wasm.is_empty() || c.wasm.len() > MAX_PLUGIN_BYTES {
                    err(
                        Collection::Plugins,
                        i,
                        format!(
                            "the canary of plugin '{}' is {} bytes; a module must be 1 to {MAX_PLUGIN_BYTES} bytes",
                            p.name,
                            c.wasm.len()
                        ),
                    );
                }
                if !CANARY_SHARES.contains(&c.share) {
                    err(
                        Collection::Plugins,
                        i,
                        format!(
                            "the canary of plugin '{}' has share {}; a share is 1 to 99 (percent)",
                            p.name, c.share
                        ),
                    );
                }
            }
            if !plugin_names.insert(&p.name) {
                err(
                    Collection::Plugins,
                    i,
                    format!("duplicate plugin name '{}'", p.name),
                );
            }
        }

        // Roles.
        let mut role_ids: HashSet<&str> = BUILTIN_ROLES.iter().map(|r| r.0).collect();
        for (i, r) in self.roles.iter().enumerate() {
            if let Err(m) = check_id("role id", &r.id) {
                err(Collection::Roles, i, m);
            }
            if let Err(m) = check_text("role name", &r.name) {
                err(Collection::Roles, i, m);
            }
            if is_builtin_role(&r.id) {
                err(
                    Collection::Roles,
                    i,
                    format!("role '{}' is built in and cannot be redefined", r.id),
                );
            } else if !role_ids.insert(&r.id) {
                err(
                    Collection::Roles,
                    i,
                    format!("duplicate role id '{}'", r.id),
                );
            }
            if self.rbac == Rbac::Basic && !r.is_catalogue() {
                err(
                    Collection::Roles,
                    i,
                    format!(
                        "custom role '{}' needs rbac 'enterprise' (tenant has 'basic')",
                        r.id
                    ),
                );
            }
            if r.tier == Some(Tier::Basic) && r.plugin.is_some() {
                err(
                    Collection::Roles,
                    i,
                    format!(
                        "role '{}' has a plugin condition, which needs tier 'enterprise'",
                        r.id
                    ),
                );
            }
            if let Some(p) = &r.plugin {
                if let Err(m) = check_id("plugin name", p) {
                    err(Collection::Roles, i, m);
                } else if !plugin_names.contains(p.as_str()) {
                    err(
                        Collection::Roles,
                        i,
                        format!("role '{}' names unknown plugin '{p}'", r.id),
                    );
                }
            }
        }

        // Users.
        let mut user_ids: HashMap<&str, usize> = HashMap::with_capacity(self.users.len());
        let mut emails: HashMap<String, usize> = HashMap::with_capacity(self.users.len());
        for (i, u) in self.users.iter().enumerate() {
            if let Err(m) = check_id("user id", &u.id) {
                err(Collection::Users, i, m);
            }
            if let Err(m) = check_email(&u.email) {
                err(Collection::Users, i, m);
            }
            if let Err(m) = check_text("user name", &u.name) {
                err(Collection::Users, i, m);
            }
            for (what, name) in [("first_name", &u.first_name), ("last_name", &u.last_name)] {
                if let Some(Err(m)) = name.as_deref().map(|n| check_person_name(what, n)) {
                    err(Collection::Users, i, m);
                }
            }
            match (&u.scope, u.kind) {
                (Some(s), UserKind::Guest) if !node_idx.contains_key(s.as_str()) => err(
                    Collection::Users,
                    i,
                    format!("unknown guest scope node '{s}' of user '{}'", u.id),
                ),
                (Some(_), kind) if kind != UserKind::Guest => err(
                    Collection::Users,
                    i,
                    format!("user '{}' has a scope but only guests have one", u.id),
                ),
                _ => {}
            }
            if let Some(prev) = user_ids.insert(&u.id, i) {
                err(
                    Collection::Users,
                    i,
                    format!("duplicate user id '{}' (first at users[{prev}])", u.id),
                );
            }
            if let Some(prev) = emails.insert(u.email.to_ascii_lowercase(), i) {
                err(
                    Collection::Users,
                    i,
                    format!("duplicate email '{}' (first at users[{prev}])", u.email),
                );
            }
        }

        // Groups.
        let mut group_ids: HashMap<&str, usize> = HashMap::with_capacity(self.groups.len());
        for (i, g) in self.groups.iter().enumerate() {
            if let Err(m) = check_id("group id", &g.id) {
                err(Collection::Groups, i, m);
            }
            if let Err(m) = check_text("group name", &g.name) {
                err(Collection::Groups, i, m);
            }
            if let Some(prev) = group_ids.insert(&g.id, i) {
                err(
                    Collection::Groups,
                    i,
                    format!("duplicate group id '{}' (first at groups[{prev}])", g.id),
                );
            }
            let mut seen = HashSet::new();
            for m in &g.members {
                if !user_ids.contains_key(m.as_str()) {
                    err(
                        Collection::Groups,
                        i,
                        format!(
                            "member '{m}' of group '{}' is not a user of this tenant",
                            g.id
                        ),
                    );
                } else if !seen.insert(m.as_str()) {
                    err(
                        Collection::Groups,
                        i,
                        format!("member '{m}' is listed twice in group '{}'", g.id),
                    );
                }
            }
        }

        if let Some(r) = &self.default_role {
            if !role_ids.contains(r.as_str()) {
                err(
                    Collection::Tenant,
                    0,
                    format!("default_role names unknown role '{r}'"),
                );
            }
        }

        // Assignments.
        let known = |what: Named, id: &str| match what {
            Named::User => user_ids.contains_key(id),
            Named::Group => group_ids.contains_key(id),
            Named::Role => role_ids.contains(id),
            Named::Node => node_idx.contains_key(id),
        };
        for (i, a) in self.assignments.iter().enumerate() {
            check_assignment(a, known, |m| err(Collection::Assignments, i, m));
        }

        // Single sign-on: enterprise tenants only; keys, roles and scopes must be valid.
        if let Some(sso) = &self.sign_in.sso {
            if self.rbac != Rbac::Enterprise {
                err(
                    Collection::Tenant,
                    0,
                    "sso: single sign-on needs rbac 'enterprise'".to_string(),
                );
            }
            for (field, m) in sso.problems(|r| role_ids.contains(r), |n| node_idx.contains_key(n)) {
                err(Collection::Tenant, 0, format!("{field}: {m}"));
            }
        }

        // Quotas.
        let q = &self.quotas;
        let live_users = self
            .users
            .iter()
            .filter(|u| u.status != UserStatus::Deleted)
            .count();
        if let Some(max) = q.max_users {
            if live_users > max as usize {
                err(
                    Collection::Tenant,
                    0,
                    format!("{live_users} users exceed the quota max_users={max}"),
                );
            }
        }
        if let Some(max) = q.max_groups {
            if self.groups.len() > max as usize {
                err(
                    Collection::Tenant,
                    0,
                    format!(
                        "{} groups exceed the quota max_groups={max}",
                        self.groups.len()
                    ),
                );
            }
        }
        if let Some(max) = q.max_admins {
            let admins = self
                .users
                .iter()
                .filter(|u| {
                    u.status != UserStatus::Deleted
                        && matches!(u.kind, UserKind::Owner | UserKind::Admin)
                })
                .count();
            if admins > max as usize {
                err(
                    Collection::Tenant,
                    0,
                    format!("{admins} owners/admins exceed the quota max_admins={max}"),
                );
            }
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        let mut t = Tenant::new("t");
        t.nodes = vec![
            Node {
                id: "org".into(),
                kind: "organisation".into(),
                parent: None,
                name: None,
            },
            Node {
                id: "site".into(),
                kind: "site".into(),
                parent: Some("org".into()),
                name: None,
            },
        ];
        t.users = vec![User {
            id: "u".into(),
            email: "u@x.example".into(),
            name: "U".into(),
            status: UserStatus::Active,
            kind: UserKind::Member,
            session_epoch: 0,
            first_name: None,
            last_name: None,
            logout: None,
            scope: None,
        }];
        t
    }

    #[test]
    fn valid_tenant_has_no_errors() {
        assert!(tenant().validate().is_empty());
    }

    #[test]
    fn cycle_is_reported() {
        let mut t = tenant();
        t.nodes[0].parent = Some("site".into());
        let errs = t.validate();
        assert!(errs.iter().any(|e| e.message.contains("cycle")), "{errs:?}");
    }

    #[test]
    fn bad_ids_and_emails() {
        assert!(check_id("x", "").is_err());
        assert!(check_id("x", "a b").is_err());
        assert!(check_id("x", &"a".repeat(129)).is_err());
        assert!(check_id("x", "press-7.a@b:c_d").is_ok());
        assert!(check_email("a@b.c").is_ok());
        for bad in [
            "", "a", "a@b", "@b.c", "a@@b.c", "a b@c.d", "a@.c", "a@c.", "a@b..c",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn basic_tenant_rejects_custom_roles() {
        let mut t = tenant();
        t.rbac = Rbac::Basic;
        t.roles.push(Role {
            id: "r".into(),
            name: "R".into(),
            permissions: vec![],
            plugin: None,
            tier: None,
        });
        assert_eq!(t.validate().len(), 1);
    }
}
