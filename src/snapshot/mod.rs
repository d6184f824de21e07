//! Compiled, immutable per-tenant snapshots.
//!
//! A [`Tenant`] is compiled into a [`TenantSnap`] and archived with `rkyv`. The archive is laid out
//! for the hot path:
//! - nodes are numbered in pre-order, so "scope contains resource" is `lo <= pre < hi`;
//! - every principal's grants are sorted by `(lo, hi desc)` and linked to their nearest enclosing
//!   grant (`up`), so the grants covering a node are found with one binary search and a short walk
//!   up the chain, whatever the number of grants;
//! - permissions are interned: a permission maps to a bitset of the roles granting it, wildcards
//!   folded in at build time;
//! - group memberships are resolved per user at build time; the tenant's default role is one
//!   more group ([`DEFAULT_ROLE_GROUP`]) holding the role at every root, of which every user
//!   but guests is a member.
//!
//! Bytes are validated once ([`Snapshot::from_bytes`]: rkyv's structural check plus a semantic
//! check of every index), then read zero-copy for the life of the snapshot.

mod build;
mod index;
mod registry;
mod validate;

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use rustc_hash::FxHashMap;

#[doc(hidden)]
pub use build::profile as profile_build;
pub use build::{check, BuildError, Compiled};
pub use index::{ArchivedIdIndex, AsIdIndex, IdIndex};
pub use registry::{Registry, SnapshotGuard, TenantFailure};
pub use validate::SnapshotError;

/// "No index" in `u32` index fields.
pub const NONE: u32 = u32::MAX;
/// "Never expires".
pub const NEVER: i64 = i64::MAX;

pub const RBAC_NONE: u8 = 0;
pub const RBAC_BASIC: u8 = 1;
pub const RBAC_ENTERPRISE: u8 = 2;

pub const STATUS_ACTIVE: u8 = 0;
pub const STATUS_INACTIVE: u8 = 1;
pub const STATUS_DELETED: u8 = 2;

pub const KIND_OWNER: u8 = 0;
pub const KIND_ADMIN: u8 = 1;
pub const KIND_MEMBER: u8 = 2;
pub const KIND_GUEST: u8 = 3;

/// The id, in [`TenantSnap::groups`], of the group that holds the tenant's default role: every
/// user but guests is a member, and it holds the role at every root node. `~` never occurs in
/// the ids of the tenant's own groups.
pub const DEFAULT_ROLE_GROUP: &str = "~default-role";

/// Format version of [`TenantSnap`]; bump on any layout change.
pub const FORMAT_VERSION: u32 = 7;

/// One tenant, compiled for decisions.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct TenantSnap {
    pub format: u32,
    pub id: String,
    pub name: String,
    pub revision: u64,
    pub rbac: u8,
    pub suspended: bool,
    /// Nodes in pre-order: a node's index is its pre-order number.
    pub nodes: Vec<NodeRec>,
    /// Node id → pre-order index (archived as an [`IdIndex`]: one cache miss per lookup).
    #[rkyv(with = AsIdIndex)]
    pub node_index: FxHashMap<String, u32>,
    pub kinds: Vec<String>,
    pub users: Vec<UserRec>,
    /// User id → index into `users` (archived as an [`IdIndex`]).
    #[rkyv(with = AsIdIndex)]
    pub user_index: FxHashMap<String, u32>,
    pub groups: Vec<GroupRec>,
    /// Group indexes of each user, ranges given by [`UserRec::groups`].
    pub memberships: Vec<u32>,
    /// Built-ins first, then custom roles.
    pub roles: Vec<RoleRec>,
    /// `u64` words per role bitset.
    pub words: u32,
    /// Role bitsets, `words` words each. Bitset 0 is empty.
    pub bitsets: Vec<u64>,
    /// Concrete `resource:action` → bitset of roles granting it (wildcards folded in).
    pub perm_exact: FxHashMap<String, u32>,
    /// `resource` → bitset of roles holding `resource:*`.
    pub perm_resource: FxHashMap<String, u32>,
    /// `action` → bitset of roles holding `*:action`.
    pub perm_action: FxHashMap<String, u32>,
    /// Bitset of roles holding `*`.
    pub perm_all: u32,
    /// Bitset of roles with a plugin condition (0, the empty bitset, when none).
    pub plugin_roles: u32,
    /// The tenant's plugin modules; roles point here with [`RoleRec::plugin_slot`].
    pub plugins: Vec<PluginRec>,
    /// Every principal's grants, users' first then groups', each principal's slice sorted.
    pub grants: Vec<Grant>,
    /// Explanation data, parallel to `grants`.
    pub grant_meta: Vec<GrantMeta>,
    /// Interned `assigned_by` values.
    pub actors: Vec<String>,
    /// Sessions revoked before their expiry: session id → its expiry (unix seconds).
    pub revoked_sessions: FxHashMap<String, i64>,
    /// Live API keys by key id.
    pub api_keys: FxHashMap<String, ApiKeyRec>,
    /// Single sign-on, when the tenant (enterprise) trusts an identity provider.
    pub sso: Option<SsoRec>,
}

/// A tenant's identity provider, compiled: each mapped group name is an SSO group, placed in
/// `groups` after the tenant's own groups, whose grants are the group's mapped roles at their
/// scopes. An SSO token is decided over the SSO groups its group claim names.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct SsoRec {
    pub issuer: String,
    pub audience: Option<String>,
    pub subject_claim: String,
    pub groups_claim: String,
    pub keys: Vec<SsoKeyRec>,
    /// Group name of the identity provider → index into `groups`.
    pub groups: FxHashMap<String, u32>,
    /// Index into `groups` of the first SSO group (they are at most
    /// [`crate::model::MAX_SSO_GROUPS`]).
    pub first_group: u32,
}

/// A public key of the identity provider: its algorithm
/// ([`crate::model::SsoAlg`] as `u8`) and SPKI DER.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct SsoKeyRec {
    pub kid: Option<String>,
    pub alg: u8,
    pub der: Vec<u8>,
}

/// An API key: whose it is, the SHA-256 of its secret, when it expires.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKeyRec {
    /// Index into `users`.
    pub user: u32,
    pub sha256: [u8; 32],
    /// Unix seconds, or [`NEVER`].
    pub expires: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct NodeRec {
    pub id: String,
    pub name: Option<String>,
    /// Pre-order index of the parent, or [`NONE`].
    pub parent: u32,
    /// One past the last pre-order index of this node's subtree.
    pub end: u32,
    pub kind: u32,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct UserRec {
    pub id: String,
    pub email: String,
    pub name: String,
    pub status: u8,
    pub kind: u8,
    pub session_epoch: u64,
    /// Guests: pre-order index of the node whose subtree is all they may read; else [`NONE`].
    pub scope: u32,
    pub grants: Span,
    pub groups: Span,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct GroupRec {
    pub id: String,
    pub name: String,
    pub active: bool,
    pub members: u32,
    pub grants: Span,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct RoleRec {
    pub id: String,
    pub name: String,
    pub builtin: bool,
    pub permissions: Vec<String>,
    pub plugin: Option<String>,
    /// Index into [`TenantSnap::plugins`] of the role's plugin, or [`NONE`].
    pub plugin_slot: u32,
}

/// A plugin module, shipped with the snapshot so that every follower runs the same version.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct PluginRec {
    pub name: String,
    /// Lowercase hex SHA-256 of `wasm` (the version).
    pub sha256: String,
    pub description: Option<String>,
    pub wasm: Vec<u8>,
    /// The candidate version running on a share of the calls, if a canary runs.
    pub canary: Option<CanaryRec>,
}

/// A plugin's canary: the candidate module and its share. Which calls it takes is a pure
/// function of the request ([`crate::plugin::canary_bucket`]), so every process holding this
/// snapshot splits the same calls the same way.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct CanaryRec {
    /// Lowercase hex SHA-256 of `wasm`.
    pub sha256: String,
    /// Percent of the plugin's calls that run the candidate (1 to 99).
    pub share: u8,
    pub wasm: Vec<u8>,
}

/// One assignment, compiled: scope interval, role, expiry and the nearest enclosing grant of the
/// same principal.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Pre-order index of the scope node.
    pub lo: u32,
    /// End of the scope node's subtree.
    pub hi: u32,
    pub role: u32,
    /// Index (into `grants`) of the nearest enclosing grant of the same principal, or [`NONE`].
    pub up: u32,
    /// Unix seconds after which the grant no longer applies, or [`NEVER`].
    pub expires: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy)]
pub struct GrantMeta {
    /// Index into `actors`, or [`NONE`].
    pub assigned_by: u32,
    /// Unix seconds, or `i64::MIN` when unknown.
    pub assigned_at: i64,
}

/// A validated tenant snapshot: aligned archive bytes, readable zero-copy.
pub struct Snapshot {
    bytes: AlignedVec,
    /// When this process created or received the snapshot (unix seconds).
    loaded_at: i64,
    /// Compiled plugins, parallel to the archive's `plugins` (None: not compiled here, or
    /// failed to compile; grants needing it deny). Swapped together with the archive, so a
    /// check runs the plugin versions of the snapshot it started on.
    plugins: Box<[Option<std::sync::Arc<crate::plugin::Plugin>>]>,
    /// Compiled canary candidates, parallel to the archive's `plugins` (None: no canary, or
    /// it failed to compile here — the calls it takes deny).
    canaries: Box<[Option<std::sync::Arc<crate::plugin::Plugin>>]>,
    /// The SSO keys of the archive, parsed once (a key that does not load is left out: its
    /// tokens are refused).
    sso_keys: Box<[crate::identity::sso::Verifier]>,
}

/// Parses the archive's SSO keys.
fn load_sso_keys(v: &ArchivedTenantSnap) -> Box<[crate::identity::sso::Verifier]> {
    use crate::identity::sso::Verifier;
    use crate::model::SsoAlg;
    let Some(sso) = v.sso.as_ref() else {
        return Box::default();
    };
    sso.keys
        .iter()
        .filter_map(|k| {
            let alg = SsoAlg::from_u8(k.alg)?;
            let mut key = Verifier::load(alg, k.der.as_slice()).ok()?;
            key.kid = k.kid.as_ref().map(|s| s.as_str().into());
            Some(key)
        })
        .collect()
}

impl Snapshot {
    /// Compiles a (validated) tenant.
    pub fn build(tenant: &crate::model::Tenant) -> Result<Snapshot, BuildError> {
        build::build(tenant)
    }

    /// Adopts untrusted bytes (e.g. received over the network): checks the archive structure and
    /// every index in it before accepting.
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        validate::validate(&aligned)?;
        Ok(Snapshot::adopt(aligned))
    }

    /// Wraps validated archive bytes.
    fn adopt(bytes: AlignedVec) -> Snapshot {
        let mut s = Snapshot {
            bytes,
            loaded_at: crate::clock::unix_now(),
            plugins: Box::default(),
            canaries: Box::default(),
            sso_keys: Box::default(),
        };
        s.sso_keys = load_sso_keys(s.view());
        s
    }

    /// The tenant's SSO keys (empty without SSO).
    #[inline]
    pub fn sso_keys(&self) -> &[crate::identity::sso::Verifier] {
        &self.sso_keys
    }

    /// Compiles (or takes from the host's cache) every plugin of this snapshot, and the
    /// candidate of each running canary. A module that fails to load leaves its slot empty, so
    /// the calls needing it deny (fail closed); the errors are returned for logging.
    pub fn attach_plugins(
        &mut self,
        host: &crate::plugin::PluginHost,
    ) -> Vec<crate::plugin::ModuleError> {
        let mut errors = Vec::new();
        let (loaded, canaries): (Vec<_>, Vec<_>) = {
            let v = self.view();
            let tenant = v.id.as_str();
            let mut load = |name: &str, wasm: &[u8], keep: Option<&str>| {
                // While a canary runs, the host keeps both versions of the plugin loaded.
                let keep = keep.and_then(crate::model::unhex32);
                match host.load_keeping(tenant, name, wasm, keep) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                }
            };
            v.plugins
                .iter()
                .map(|p| {
                    let name = p.name.as_str();
                    let canary = p.canary.as_ref();
                    let cur = load(name, p.wasm.as_slice(), canary.map(|c| c.sha256.as_str()));
                    let cand =
                        canary.and_then(|c| load(name, c.wasm.as_slice(), Some(p.sha256.as_str())));
                    (cur, cand)
                })
                .unzip()
        };
        self.plugins = loaded.into_boxed_slice();
        self.canaries = canaries.into_boxed_slice();
        errors
    }

    /// The compiled plugin in `slot`, if attached.
    #[inline]
    pub fn plugin(&self, slot: u32) -> Option<&std::sync::Arc<crate::plugin::Plugin>> {
        self.plugins.get(slot as usize).and_then(Option::as_ref)
    }

    /// The compiled canary candidate of the plugin in `slot`, if one runs and is attached.
    #[inline]
    pub fn canary(&self, slot: u32) -> Option<&std::sync::Arc<crate::plugin::Plugin>> {
        self.canaries.get(slot as usize).and_then(Option::as_ref)
    }

    /// The compiled plugins attached to this snapshot, canary candidates included.
    pub fn attached_plugins(&self) -> impl Iterator<Item = &std::sync::Arc<crate::plugin::Plugin>> {
        self.plugins.iter().chain(self.canaries.iter()).flatten()
    }

    /// Whether any role of this tenant has a plugin condition.
    #[inline]
    pub fn has_plugins(&self) -> bool {
        !self.view().plugins.is_empty()
    }

    /// The archived view. Zero-copy, no checks: the bytes were validated when this snapshot
    /// was created.
    #[inline]
    pub fn view(&self) -> &ArchivedTenantSnap {
        // SAFETY: `bytes` was validated by `validate::validate` (rkyv `access` with bytecheck,
        // plus index checks) when this `Snapshot` was created, and is never mutated afterwards.
        unsafe { rkyv::access_unchecked::<ArchivedTenantSnap>(&self.bytes) }
    }

    /// The archive bytes (for shipping to other processes).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn tenant_id(&self) -> &str {
        self.view().id.as_str()
    }

    pub fn revision(&self) -> u64 {
        self.view().revision.to_native()
    }

    /// When this process created or received the snapshot (unix seconds).
    pub fn loaded_at(&self) -> i64 {
        self.loaded_at
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("tenant", &self.tenant_id())
            .field("revision", &self.revision())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}
