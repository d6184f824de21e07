//! Compiling a [`Tenant`] into a [`TenantSnap`] archive, and keeping it compiled.
//!
//! An archive is written in two parts. The **base** — tenant id and name, nodes, the id
//! indexes, users, groups, memberships, roles and role bitsets (the permission bitsets and the
//! `plugin_roles` flags) — is archived once into a block of bytes. The **tail** — the
//! permission maps, the plugin modules, every principal's grants, their metadata, the actors
//! and the root — is archived after a copy of that block, the root pointing back into it.
//! Plugins follow the permission maps in [`TenantSnap`](super::TenantSnap), so they are tail
//! parts: every archive writes them again from the records the compiled tenant keeps (they
//! change only with a full compile, as do roles).
//!
//! Every part is archived in the order of [`TenantSnap`](super::TenantSnap)'s fields (the
//! archive check requires it): the tenant id and name first, the root last.
//!
//! A [`Compiled`] tenant keeps the base block and each principal's grants. A commit that only
//! adds or removes assignments ([`Compiled::apply`]) then costs a copy of the base block, a
//! rewrite of the grant spans of users and groups inside it, and the tail — not a validation and
//! compile of the whole tenant. The bytes are exactly those of a fresh build of the same tenant
//! (tested below).

use std::cmp::Ordering;
use std::marker::PhantomData;

use rkyv::rancor::{BoxedError, Fallible, Source, Strategy};
use rkyv::ser::{allocator::Arena, sharing::Share, Serializer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::util::AlignedVec;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Archived, Place, Portable, Serialize, SerializeUnsized};
use rustc_hash::FxHashMap;

use super::index::{ArchivedIdSlot, IdIndex};
use super::{
    validate, ApiKeyRec, ArchivedGroupRec, ArchivedIdIndex, ArchivedNodeRec, ArchivedRoleRec,
    ArchivedSpan, ArchivedTenantSnap, ArchivedUserRec, CanaryRec, Grant, GrantMeta, GroupRec,
    NodeRec, PluginRec, RoleRec, Snapshot, Span, SsoKeyRec, SsoRec, UserRec, FORMAT_VERSION, NEVER,
    NONE,
};
use crate::model::{
    check_assignment, Assignment, GroupStatus, Named, Part, Principal, Rbac, Tenant, TenantStatus,
    UserKind, UserStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("tenant '{tenant}' is invalid: {first} ({count} problem(s))")]
    Invalid {
        tenant: String,
        first: String,
        count: usize,
    },
    #[error("tenant '{0}' is too large to compile (more than 2^32-2 items)")]
    TooLarge(String),
    #[error("tenant '{tenant}': {message}")]
    Plugin { tenant: String, message: String },
    #[error("archiving tenant '{tenant}' failed: {message}")]
    Archive { tenant: String, message: String },
}

fn idx(n: usize, tenant: &str) -> Result<u32, BuildError> {
    u32::try_from(n)
        .ok()
        .filter(|&v| v != NONE)
        .ok_or_else(|| BuildError::TooLarge(tenant.to_string()))
}

/// The one validation a tenant must pass to compile: the model's invariants
/// ([`Tenant::validate`]) and the compiler's size limit. Every build runs it first; the control
/// plane runs it on the tenant a commit would leave, before committing, so that every committed
/// state compiles.
pub fn check(t: &Tenant) -> Result<(), BuildError> {
    let problems = t.validate();
    if let Some(first) = problems.first() {
        return Err(BuildError::Invalid {
            tenant: t.id.clone(),
            first: first.to_string(),
            count: problems.len(),
        });
    }
    idx(
        t.nodes.len() + t.users.len() + t.groups.len() + t.assignments.len(),
        &t.id,
    )?;
    Ok(())
}

pub(super) fn build(t: &Tenant) -> Result<Snapshot, BuildError> {
    check(t)?;
    Compiled::compile(t)?.snapshot()
}

/// [`build`] phase by phase with wall-clock timings, for benchmarks (not used by the server):
/// (model validation, compile incl. archiving the base, archive tail + full check), ms.
#[doc(hidden)]
pub fn profile(t: &Tenant) -> Result<[(&'static str, f64); 3], BuildError> {
    let ms = |s: std::time::Instant| s.elapsed().as_secs_f64() * 1e3;
    let s = std::time::Instant::now();
    check(t)?;
    let v = ms(s);
    let s = std::time::Instant::now();
    let mut c = Compiled::compile(t)?;
    let cm = ms(s);
    let s = std::time::Instant::now();
    c.snapshot()?;
    let a = ms(s);
    Ok([
        ("model validate", v),
        ("compile + archive base", cm),
        ("archive tail + full check", a),
    ])
}

/// One grant before layout: (lo, hi, role, expires, actor, assigned_at); `actor` is an
/// [`Actors`] id or [`NONE`].
type Raw = (u32, u32, u32, i64, u32, i64);

/// Order of a principal's grants: by scope start, enclosing scopes first (see [`Grant::up`]).
fn raw_order(a: &Raw, b: &Raw) -> Ordering {
    a.0.cmp(&b.0)
        .then(b.1.cmp(&a.1))
        .then(a.2.cmp(&b.2))
        .then(a.3.cmp(&b.3))
        .then(a.5.cmp(&b.5))
        .then(a.4.cmp(&b.4))
}

/// Interned `assigned_by` values with use counts. Ids are stable while the tenant stays
/// compiled; the archive lists the live ones sorted by name, so its layout does not depend on
/// the order assignments arrived in.
#[derive(Debug, Default)]
struct Actors {
    names: Vec<String>,
    ids: FxHashMap<String, u32>,
    uses: Vec<u32>,
    /// Archive index of each id ([`NONE`] when unused) and the archived list; `None` when stale.
    ranked: Option<(Vec<u32>, Vec<String>)>,
}

impl Actors {
    fn intern(&mut self, name: &str) -> u32 {
        let id = match self.ids.get(name) {
            Some(&id) => id,
            None => {
                let id = self.names.len() as u32;
                self.names.push(name.to_string());
                self.ids.insert(name.to_string(), id);
                self.uses.push(0);
                id
            }
        };
        if self.uses[id as usize] == 0 {
            self.ranked = None;
        }
        self.uses[id as usize] += 1;
        id
    }

    fn release(&mut self, id: u32) {
        if let Some(u) = self.uses.get_mut(id as usize) {
            *u = u.saturating_sub(1);
            if *u == 0 {
                self.ranked = None;
            }
        }
    }

    fn ranked(&mut self) -> &(Vec<u32>, Vec<String>) {
        self.ranked_mut()
    }

    fn ranked_mut(&mut self) -> &mut (Vec<u32>, Vec<String>) {
        let (names, uses) = (&self.names, &self.uses);
        self.ranked.get_or_insert_with(|| {
            let mut live: Vec<u32> = (0..names.len() as u32)
                .filter(|&i| uses[i as usize] > 0)
                .collect();
            live.sort_unstable_by(|&a, &b| names[a as usize].cmp(&names[b as usize]));
            let mut rank = vec![NONE; names.len()];
            for (r, &i) in live.iter().enumerate() {
                rank[i as usize] = r as u32;
            }
            let list = live.iter().map(|&i| names[i as usize].clone()).collect();
            (rank, list)
        })
    }
}

/// Where a slice was archived in the base block.
#[derive(Debug, Clone, Copy)]
struct At {
    pos: usize,
    len: usize,
}

#[derive(Debug, Clone, Copy)]
struct BaseAt {
    id: usize,
    name: usize,
    nodes: At,
    node_slots: At,
    node_long: At,
    kinds: At,
    users: At,
    user_slots: At,
    user_long: At,
    groups: At,
    memberships: At,
    roles: At,
    bitsets: At,
}

/// A vector already written at a known position of the output: serializing it writes nothing.
struct Placed<T>(At, PhantomData<fn() -> T>);

impl<T> Placed<T> {
    fn at(at: At) -> Placed<T> {
        Placed(at, PhantomData)
    }
}

impl<T: Portable> Archive for Placed<T> {
    type Archived = ArchivedVec<T>;
    type Resolver = VecResolver;

    fn resolve(&self, resolver: VecResolver, out: Place<ArchivedVec<T>>) {
        ArchivedVec::<T>::resolve_from_len(self.0.len, resolver, out);
    }
}

impl<T: Portable, S: Fallible + ?Sized> Serialize<S> for Placed<T> {
    fn serialize(&self, _: &mut S) -> Result<VecResolver, S::Error> {
        Ok(VecResolver::from_pos(self.0.pos))
    }
}

/// Reports a fixed position and discards writes: lets rkyv resolve a string whose bytes are
/// already in the base block.
struct AtPos(usize);

impl rkyv::ser::Positional for AtPos {
    fn pos(&self) -> usize {
        self.0
    }
}

impl<E> rkyv::ser::Writer<E> for AtPos {
    fn write(&mut self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }
}

/// A string whose bytes are already written at `pos` of the output (when not inline).
struct PlacedStr {
    pos: usize,
    text: String,
}

impl Archive for PlacedStr {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve(&self, resolver: StringResolver, out: Place<ArchivedString>) {
        ArchivedString::resolve_from_str(&self.text, resolver, out);
    }
}

impl<S: Fallible + ?Sized> Serialize<S> for PlacedStr
where
    S::Error: Source,
{
    fn serialize(&self, _: &mut S) -> Result<StringResolver, S::Error> {
        let mut at = AtPos(self.pos);
        ArchivedString::serialize_from_str(&self.text, Strategy::<_, S::Error>::wrap(&mut at))
    }
}

/// An [`IdIndex`] already written in the base block.
#[derive(Archive, Serialize)]
#[rkyv(as = ArchivedIdIndex)]
struct PlacedIndex {
    slots: Placed<ArchivedIdSlot>,
    long: Placed<u8>,
}

/// The root of an archive whose base parts are already written: archives as a [`TenantSnap`]
/// (the compiler checks every field against [`ArchivedTenantSnap`]).
#[derive(Archive, Serialize)]
#[rkyv(as = ArchivedTenantSnap)]
struct SnapOut {
    format: u32,
    id: PlacedStr,
    name: PlacedStr,
    revision: u64,
    rbac: u8,
    suspended: bool,
    nodes: Placed<ArchivedNodeRec>,
    node_index: PlacedIndex,
    kinds: Placed<Archived<String>>,
    users: Placed<ArchivedUserRec>,
    user_index: PlacedIndex,
    groups: Placed<ArchivedGroupRec>,
    memberships: Placed<Archived<u32>>,
    roles: Placed<ArchivedRoleRec>,
    words: u32,
    bitsets: Placed<Archived<u64>>,
    perm_exact: FxHashMap<String, u32>,
    perm_resource: FxHashMap<String, u32>,
    perm_action: FxHashMap<String, u32>,
    perm_all: u32,
    plugin_roles: u32,
    plugins: Vec<PluginRec>,
    grants: Vec<Grant>,
    grant_meta: Vec<GrantMeta>,
    actors: Vec<String>,
    revoked_sessions: FxHashMap<String, i64>,
    api_keys: FxHashMap<String, ApiKeyRec>,
    sso: Option<SsoRec>,
}

type BaseSerializer<'a> =
    Strategy<Serializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, Share>, BoxedError>;

fn put<'a, T>(items: &[T], s: &mut BaseSerializer<'a>) -> Result<At, BoxedError>
where
    [T]: SerializeUnsized<BaseSerializer<'a>>,
{
    Ok(At {
        pos: items.serialize_unsized(s)?,
        len: items.len(),
    })
}

/// A tenant compiled for decisions and kept ready for the next build: see the module docs.
#[derive(Debug)]
pub struct Compiled {
    id: String,
    name: String,
    revision: u64,
    rbac: u8,
    suspended: bool,
    words: u32,
    perm_exact: FxHashMap<String, u32>,
    perm_resource: FxHashMap<String, u32>,
    perm_action: FxHashMap<String, u32>,
    perm_all: u32,
    plugin_roles: u32,
    /// The tenant's plugin modules, archived in every tail (they change only with a full
    /// compile).
    plugins: Vec<PluginRec>,
    base: AlignedVec,
    at: BaseAt,
    /// True once an archive over this base passed the full check.
    base_checked: bool,
    node_index: FxHashMap<String, u32>,
    /// Subtree end of each node, by pre-order index.
    node_end: Vec<u32>,
    user_index: FxHashMap<String, u32>,
    group_index: FxHashMap<String, u32>,
    role_ids: FxHashMap<String, u32>,
    /// Each principal's grants, sorted by [`raw_order`].
    per_user: Vec<Vec<Raw>>,
    per_group: Vec<Vec<Raw>>,
    actors: Actors,
    revoked_sessions: FxHashMap<String, i64>,
    api_keys: FxHashMap<String, ApiKeyRec>,
    /// Single sign-on; its groups' grants are the last lists of `per_group`.
    sso: Option<SsoRec>,
}

impl Compiled {
    /// Validates and compiles a tenant.
    pub fn new(t: &Tenant) -> Result<Compiled, BuildError> {
        check(t)?;
        Compiled::compile(t)
    }

    /// The tenant revision this compiles.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Compiles a tenant that passed [`check`].
    fn compile(t: &Tenant) -> Result<Compiled, BuildError> {
        // --- Nodes in pre-order ---------------------------------------------------------
        let n = t.nodes.len();
        let by_id: FxHashMap<&str, usize> = t
            .nodes
            .iter()
            .enumerate()
            .map(|(i, x)| (x.id.as_str(), i))
            .collect();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut roots = Vec::new();
        for (i, x) in t.nodes.iter().enumerate() {
            match x.parent.as_deref().and_then(|p| by_id.get(p)) {
                Some(&p) => children[p].push(i),
                None => roots.push(i),
            }
        }
        let mut pre = vec![NONE; n]; // input index -> pre-order index
        let mut order = Vec::with_capacity(n); // pre-order index -> input index
        let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
        while let Some(i) = stack.pop() {
            pre[i] = order.len() as u32;
            order.push(i);
            stack.extend(children[i].iter().rev());
        }
        // Subtree ends: walk pre-order backwards accumulating sizes.
        let mut size = vec![1u32; n];
        for &i in order.iter().rev() {
            if let Some(&p) = t.nodes[i].parent.as_deref().and_then(|p| by_id.get(p)) {
                size[p] += size[i];
            }
        }
        let mut kind_ids: FxHashMap<&str, u32> = FxHashMap::default();
        let mut kinds = Vec::new();
        let mut nodes = Vec::with_capacity(n);
        for (p, &i) in order.iter().enumerate() {
            let x = &t.nodes[i];
            let kind = *kind_ids.entry(x.kind.as_str()).or_insert_with(|| {
                kinds.push(x.kind.clone());
                (kinds.len() - 1) as u32
            });
            nodes.push(NodeRec {
                id: x.id.clone(),
                name: x.name.clone(),
                parent: x
                    .parent
                    .as_deref()
                    .and_then(|q| by_id.get(q))
                    .map_or(NONE, |&q| pre[q]),
                end: p as u32 + size[i],
                kind,
            });
        }
        let node_end: Vec<u32> = nodes.iter().map(|x| x.end).collect();
        let node_index: FxHashMap<String, u32> = order
            .iter()
            .enumerate()
            .map(|(p, &i)| (t.nodes[i].id.clone(), p as u32))
            .collect();

        // --- Roles and permission bitsets -------------------------------------------------
        let roles = t.all_roles();
        let nbuiltin = roles.len() - t.roles.len();
        let role_ids: FxHashMap<String, u32> = roles
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i as u32))
            .collect();
        let words = roles.len().div_ceil(64).max(1);
        let mut bitsets: Vec<u64> = vec![0; words]; // bitset 0: empty
        let mut new_bitset = |members: &[u32]| -> u32 {
            let at = bitsets.len() / words;
            bitsets.extend(std::iter::repeat_n(0, words));
            for &r in members {
                bitsets[at * words + (r as usize) / 64] |= 1u64 << (r % 64);
            }
            at as u32
        };
        let mut all: Vec<u32> = Vec::new();
        let mut by_res: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
        let mut by_act: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
        let mut exact: FxHashMap<(&str, &str), Vec<u32>> = FxHashMap::default();
        for (ri, r) in roles.iter().enumerate() {
            let ri = ri as u32;
            // A role locked in the tenant's RBAC tier grants nothing: its assignments (kept when
            // the tier was lowered) stay in the archive but no permission maps to the role.
            if r.locked_in(t.rbac) {
                continue;
            }
            for p in &r.permissions {
                match (&p.resource, &p.action) {
                    (Part::Any, Part::Any) => all.push(ri),
                    (Part::Name(res), Part::Any) => by_res.entry(res).or_default().push(ri),
                    (Part::Any, Part::Name(act)) => by_act.entry(act).or_default().push(ri),
                    (Part::Name(res), Part::Name(act)) => {
                        exact.entry((res, act)).or_default().push(ri)
                    }
                }
            }
        }
        let perm_all = new_bitset(&all);
        let mut perm_exact = FxHashMap::default();
        for (&(res, act), direct) in &exact {
            let mut m: Vec<u32> = direct.clone();
            m.extend(&all);
            m.extend(by_res.get(res).into_iter().flatten());
            m.extend(by_act.get(act).into_iter().flatten());
            perm_exact.insert(format!("{res}:{act}"), new_bitset(&m));
        }
        let perm_resource = by_res
            .iter()
            .map(|(k, v)| ((*k).to_string(), new_bitset(v)))
            .collect();
        let perm_action = by_act
            .iter()
            .map(|(k, v)| ((*k).to_string(), new_bitset(v)))
            .collect();
        // --- Plugins: slots in declaration order; roles naming one are flagged -------------
        // The flag bitset is created after the permission bitsets, so it lands in the base
        // block with them (bitsets are base parts) and never changes incrementally.
        let plugin_slot = |name: &str| {
            t.plugins
                .iter()
                .position(|p| p.name == name)
                .map_or(NONE, |i| i as u32)
        };
        let with_plugin: Vec<u32> = roles
            .iter()
            .enumerate()
            .filter(|(_, r)| r.plugin.is_some())
            .map(|(i, _)| i as u32)
            .collect();
        let plugin_roles = if with_plugin.is_empty() {
            0
        } else {
            new_bitset(&with_plugin)
        };
        let plugins: Vec<PluginRec> = t
            .plugins
            .iter()
            .map(|p| PluginRec {
                name: p.name.clone(),
                sha256: p.sha256(),
                description: p.description.clone(),
                wasm: p.wasm.to_vec(),
                canary: p.canary.as_ref().map(|c| CanaryRec {
                    sha256: crate::model::sha256_hex(&c.wasm),
                    share: c.share,
                    wasm: c.wasm.to_vec(),
                }),
            })
            .collect();
        let roles_rec: Vec<RoleRec> = roles
            .iter()
            .enumerate()
            .map(|(i, r)| RoleRec {
                id: r.id.clone(),
                name: r.name.clone(),
                builtin: i < nbuiltin,
                permissions: r.permissions.iter().map(ToString::to_string).collect(),
                plugin: r.plugin.clone(),
                plugin_slot: r.plugin.as_deref().map_or(NONE, plugin_slot),
            })
            .collect();

        // --- Users, groups, memberships ----------------------------------------------------
        let user_index: FxHashMap<String, u32> = t
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id.clone(), i as u32))
            .collect();
        let group_index: FxHashMap<String, u32> = t
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.id.clone(), i as u32))
            .collect();
        let mut groups_of: Vec<Vec<u32>> = vec![Vec::new(); t.users.len()];
        for (gi, g) in t.groups.iter().enumerate() {
            for m in &g.members {
                if let Some(&u) = user_index.get(m) {
                    groups_of[u as usize].push(gi as u32);
                }
            }
        }
        // The default role: a group of its own after the tenant's, holding the role at every
        // root, of which every user but guests is a member. Decisions then need nothing new.
        let default_role = match t.rbac {
            Rbac::None => None,
            _ => t
                .default_role
                .as_deref()
                .and_then(|r| role_ids.get(r).copied()),
        };
        let mut default_members = 0u32;
        if default_role.is_some() {
            let gi = t.groups.len() as u32;
            for (ui, u) in t.users.iter().enumerate() {
                if u.kind != UserKind::Guest {
                    groups_of[ui].push(gi);
                    default_members += 1;
                }
            }
        }
        // Grant spans are written per build (see `snapshot`); the base holds placeholders.
        let empty = Span { start: 0, end: 0 };
        let mut users = Vec::with_capacity(t.users.len());
        let mut memberships = Vec::new();
        for (ui, u) in t.users.iter().enumerate() {
            let gstart = memberships.len() as u32;
            let mut gs = std::mem::take(&mut groups_of[ui]);
            gs.sort_unstable();
            gs.dedup();
            memberships.extend(gs);
            users.push(UserRec {
                id: u.id.clone(),
                email: u.email.clone(),
                name: u.name.clone(),
                status: match u.status {
                    UserStatus::Active => super::STATUS_ACTIVE,
                    UserStatus::Inactive => super::STATUS_INACTIVE,
                    UserStatus::Deleted => super::STATUS_DELETED,
                },
                kind: match u.kind {
                    UserKind::Owner => super::KIND_OWNER,
                    UserKind::Admin => super::KIND_ADMIN,
                    UserKind::Member => super::KIND_MEMBER,
                    UserKind::Guest => super::KIND_GUEST,
                },
                session_epoch: u.session_epoch,
                scope: match (u.kind, u.scope.as_deref()) {
                    (UserKind::Guest, Some(s)) => node_index.get(s).copied().unwrap_or(NONE),
                    _ => NONE,
                },
                grants: empty,
                groups: Span {
                    start: gstart,
                    end: memberships.len() as u32,
                },
            });
        }
        let mut groups: Vec<GroupRec> = t
            .groups
            .iter()
            .map(|g| GroupRec {
                id: g.id.clone(),
                name: g.name.clone(),
                active: g.status == GroupStatus::Active,
                members: g.members.len() as u32,
                grants: empty,
            })
            .collect();
        if default_role.is_some() {
            groups.push(GroupRec {
                id: super::DEFAULT_ROLE_GROUP.to_string(),
                name: "default role".to_string(),
                active: true,
                members: default_members,
                grants: empty,
            });
        }
        // SSO groups follow the tenant's own: one per mapped group name of the provider.
        let mut sso_grants: Vec<Vec<Raw>> = Vec::new();
        let sso = match (&t.sign_in.sso, t.rbac) {
            (Some(sso), Rbac::Enterprise) => {
                let first_group = idx(groups.len(), &t.id)?;
                let names = sso.group_names();
                let mut index = FxHashMap::default();
                for name in &names {
                    index.insert((*name).to_string(), idx(groups.len(), &t.id)?);
                    groups.push(GroupRec {
                        id: format!("sso:{name}"),
                        name: (*name).to_string(),
                        active: true,
                        members: 0,
                        grants: empty,
                    });
                    sso_grants.push(Vec::new());
                }
                for m in &sso.mappings {
                    let (Some(&g), Some(&lo), Some(&role)) = (
                        index.get(&m.group),
                        node_index.get(&m.scope),
                        role_ids.get(&m.role),
                    ) else {
                        continue; // unreachable for a validated tenant
                    };
                    let hi = node_end.get(lo as usize).copied().unwrap_or(lo);
                    if let Some(l) = sso_grants.get_mut((g - first_group) as usize) {
                        l.push((lo, hi, role, NEVER, NONE, i64::MIN));
                    }
                }
                let keys = sso
                    .keys
                    .iter()
                    .filter_map(|k| {
                        let m = crate::model::key_material(k).ok()?;
                        Some(SsoKeyRec {
                            kid: k.kid.clone(),
                            alg: m.alg as u8,
                            der: m.der,
                        })
                    })
                    .collect();
                Some(SsoRec {
                    issuer: sso.issuer.clone(),
                    audience: sso.audience.clone(),
                    subject_claim: sso.subject_claim.clone(),
                    groups_claim: sso.groups_claim.clone(),
                    keys,
                    groups: index,
                    first_group,
                })
            }
            _ => None,
        };

        // --- The base block ------------------------------------------------------------------
        let archive_err = |e: BoxedError| BuildError::Archive {
            tenant: t.id.clone(),
            message: e.to_string(),
        };
        let node_ix = IdIndex::build(node_index.iter().map(|(k, &v)| (k.as_str(), v)));
        let user_ix = IdIndex::build(user_index.iter().map(|(k, &v)| (k.as_str(), v)));
        let (base, at) = {
            let mut arena = Arena::new();
            let mut ser = Serializer::new(AlignedVec::new(), arena.acquire(), Share::new());
            let s = Strategy::<_, BoxedError>::wrap(&mut ser);
            let at = (|| -> Result<BaseAt, BoxedError> {
                // In the order of `TenantSnap`'s fields: the archive check claims the bytes
                // each field points to in field order.
                Ok(BaseAt {
                    id: t.id.as_str().serialize_unsized(s)?,
                    name: t.name.as_str().serialize_unsized(s)?,
                    nodes: put(&nodes, s)?,
                    node_slots: put(&node_ix.slots, s)?,
                    node_long: put(&node_ix.long, s)?,
                    kinds: put(&kinds, s)?,
                    users: put(&users, s)?,
                    user_slots: put(&user_ix.slots, s)?,
                    user_long: put(&user_ix.long, s)?,
                    groups: put(&groups, s)?,
                    memberships: put(&memberships, s)?,
                    roles: put(&roles_rec, s)?,
                    bitsets: put(&bitsets, s)?,
                })
            })()
            .map_err(archive_err)?;
            (ser.into_writer(), at)
        };

        let mut c = Compiled {
            id: t.id.clone(),
            name: t.name.clone(),
            revision: t.revision,
            rbac: match t.rbac {
                Rbac::None => super::RBAC_NONE,
                Rbac::Basic => super::RBAC_BASIC,
                Rbac::Enterprise => super::RBAC_ENTERPRISE,
            },
            suspended: t.status == TenantStatus::Suspended,
            words: words as u32,
            perm_exact,
            perm_resource,
            perm_action,
            perm_all,
            plugin_roles,
            plugins,
            base,
            at,
            base_checked: false,
            node_index,
            node_end,
            user_index,
            group_index,
            role_ids,
            per_user: vec![Vec::new(); t.users.len()],
            // The tenant's groups and the default role's; SSO groups' grants follow.
            per_group: vec![Vec::new(); groups.len() - sso_grants.len()],
            actors: Actors::default(),
            sso,
            revoked_sessions: t
                .sign_in
                .revoked_sessions
                .iter()
                .map(|r| (r.id.clone(), r.expires_at))
                .collect(),
            api_keys: FxHashMap::default(),
        };
        for k in &t.sign_in.api_keys {
            if let Some(&user) = c.user_index.get(&k.user) {
                let rec = ApiKeyRec {
                    user,
                    sha256: k.sha256,
                    expires: k.expires_at.unwrap_or(NEVER),
                };
                c.api_keys.insert(k.id.clone(), rec);
            }
        }

        // --- Grants, grouped by principal ----------------------------------------------------
        for a in &t.assignments {
            if let Some((list, raw)) = c.raw(a) {
                c.per_list(list).push(raw);
            } // else: unreachable for a validated tenant
        }
        if let (Some(role), Some(list)) = (default_role, c.per_group.get_mut(t.groups.len())) {
            for (p, x) in nodes.iter().enumerate() {
                if x.parent == NONE {
                    list.push((p as u32, x.end, role, NEVER, NONE, i64::MIN));
                }
            }
        }
        c.per_group.extend(sso_grants);
        for list in c.per_user.iter_mut().chain(c.per_group.iter_mut()) {
            list.sort_unstable_by(raw_order);
        }
        Ok(c)
    }

    fn per_list(&mut self, list: (bool, usize)) -> &mut Vec<Raw> {
        match list {
            (true, i) => &mut self.per_user[i],
            (false, i) => &mut self.per_group[i],
        }
    }

    /// The grant of an assignment and whose list it goes in ((is user, index)); `None` when
    /// it names an unknown principal, role or scope. Interns its actor.
    fn raw(&mut self, a: &Assignment) -> Option<((bool, usize), Raw)> {
        let list = match &a.principal {
            Principal::User(u) => (true, *self.user_index.get(u)? as usize),
            Principal::Group(g) => (false, *self.group_index.get(g)? as usize),
        };
        let lo = *self.node_index.get(&a.scope)?;
        let role = *self.role_ids.get(&a.role)?;
        let hi = *self.node_end.get(lo as usize)?;
        let by = match &a.assigned_by {
            Some(b) => self.actors.intern(b),
            None => NONE,
        };
        Some((
            list,
            (
                lo,
                hi,
                role,
                a.expires_at.unwrap_or(NEVER),
                by,
                a.assigned_at.unwrap_or(i64::MIN),
            ),
        ))
    }

    /// Applies assignment changes of one commit (the tenant's other rows unchanged):
    /// `removed` are the previous values of changed or deleted assignments, `added` the new
    /// values of created or changed ones. Returns false when a change cannot be applied
    /// (unknown principal, role or scope, an invalid field, a removal of an unknown grant):
    /// `self` is then unusable and the tenant must be compiled from scratch, which reports
    /// the problem.
    pub fn apply(&mut self, removed: &[Assignment], added: &[Assignment], revision: u64) -> bool {
        for a in removed {
            let Some((list, raw)) = self.raw(a) else {
                return false;
            };
            self.actors.release(raw.4); // the lookup interned it once more
            let l = self.per_list(list);
            match l.binary_search_by(|x| raw_order(x, &raw)) {
                Ok(i) => {
                    l.remove(i);
                }
                Err(_) => return false,
            }
            self.actors.release(raw.4);
        }
        for a in added {
            // The invariants `Tenant::validate` applies to each assignment.
            let mut valid = true;
            let known = |what: Named, id: &str| match what {
                Named::User => self.user_index.contains_key(id),
                Named::Group => self.group_index.contains_key(id),
                Named::Role => self.role_ids.contains_key(id),
                Named::Node => self.node_index.contains_key(id),
            };
            check_assignment(a, known, |_| valid = false);
            if !valid {
                return false;
            }
            let Some((list, raw)) = self.raw(a) else {
                return false;
            };
            let l = self.per_list(list);
            let i = l
                .binary_search_by(|x| raw_order(x, &raw))
                .unwrap_or_else(|i| i);
            l.insert(i, raw);
        }
        self.revision = revision;
        true
    }

    /// Archives the current state. The first archive over a base gets the full check
    /// ([`Snapshot::from_bytes`]'s); later ones reuse the checked base bytes unchanged, except
    /// the grant spans, and check what was written anew (spans, grants, their metadata).
    pub fn snapshot(&mut self) -> Result<Snapshot, BuildError> {
        let archive_err = |tenant: &str, message: String| BuildError::Archive {
            tenant: tenant.to_string(),
            message,
        };
        let total: usize = self
            .per_user
            .iter()
            .chain(&self.per_group)
            .map(Vec::len)
            .sum();
        idx(total, &self.id)?;
        let rank = &self.actors.ranked().0;
        let mut grants: Vec<Grant> = Vec::with_capacity(total);
        let mut grant_meta: Vec<GrantMeta> = Vec::with_capacity(total);
        let mut lay_out = |list: &[Raw]| -> Span {
            let start = grants.len() as u32;
            let mut chain: Vec<u32> = Vec::new(); // stack of enclosing grants
            for &(lo, hi, role, expires, by, at) in list {
                while let Some(&top) = chain.last() {
                    if grants[top as usize].hi > lo {
                        break;
                    }
                    chain.pop();
                }
                let me = grants.len() as u32;
                grants.push(Grant {
                    lo,
                    hi,
                    role,
                    up: chain.last().copied().unwrap_or(NONE),
                    expires,
                });
                grant_meta.push(GrantMeta {
                    assigned_by: rank.get(by as usize).copied().unwrap_or(NONE),
                    assigned_at: at,
                });
                chain.push(me);
            }
            Span {
                start,
                end: grants.len() as u32,
            }
        };
        let user_spans: Vec<Span> = self.per_user.iter().map(|l| lay_out(l)).collect();
        let group_spans: Vec<Span> = self.per_group.iter().map(|l| lay_out(l)).collect();

        let mut out = AlignedVec::with_capacity(
            self.base.len()
                + total * (size_of::<Archived<Grant>>() + size_of::<Archived<GrantMeta>>())
                + 4096,
        );
        out.extend_from_slice(&self.base);
        patch_spans(
            &mut out,
            self.at.users,
            size_of::<ArchivedUserRec>(),
            std::mem::offset_of!(ArchivedUserRec, grants),
            &user_spans,
        )
        .map_err(|m| archive_err(&self.id, m))?;
        patch_spans(
            &mut out,
            self.at.groups,
            size_of::<ArchivedGroupRec>(),
            std::mem::offset_of!(ArchivedGroupRec, grants),
            &group_spans,
        )
        .map_err(|m| archive_err(&self.id, m))?;
        let at = self.at;
        // The root owns what it archives: lend it the tenant's fields, take them back after.
        let mut root = SnapOut {
            format: FORMAT_VERSION,
            id: PlacedStr {
                pos: at.id,
                text: std::mem::take(&mut self.id),
            },
            name: PlacedStr {
                pos: at.name,
                text: std::mem::take(&mut self.name),
            },
            revision: self.revision,
            rbac: self.rbac,
            suspended: self.suspended,
            nodes: Placed::at(at.nodes),
            node_index: PlacedIndex {
                slots: Placed::at(at.node_slots),
                long: Placed::at(at.node_long),
            },
            kinds: Placed::at(at.kinds),
            users: Placed::at(at.users),
            user_index: PlacedIndex {
                slots: Placed::at(at.user_slots),
                long: Placed::at(at.user_long),
            },
            groups: Placed::at(at.groups),
            memberships: Placed::at(at.memberships),
            roles: Placed::at(at.roles),
            words: self.words,
            bitsets: Placed::at(at.bitsets),
            perm_exact: std::mem::take(&mut self.perm_exact),
            perm_resource: std::mem::take(&mut self.perm_resource),
            perm_action: std::mem::take(&mut self.perm_action),
            perm_all: self.perm_all,
            plugin_roles: self.plugin_roles,
            plugins: std::mem::take(&mut self.plugins),
            grants,
            grant_meta,
            actors: std::mem::take(&mut self.actors.ranked_mut().1),
            revoked_sessions: std::mem::take(&mut self.revoked_sessions),
            api_keys: std::mem::take(&mut self.api_keys),
            sso: self.sso.take(),
        };
        let bytes = rkyv::api::high::to_bytes_in::<_, BoxedError>(&root, out);
        self.id = std::mem::take(&mut root.id.text);
        self.name = std::mem::take(&mut root.name.text);
        self.perm_exact = std::mem::take(&mut root.perm_exact);
        self.perm_resource = std::mem::take(&mut root.perm_resource);
        self.perm_action = std::mem::take(&mut root.perm_action);
        self.plugins = std::mem::take(&mut root.plugins);
        self.actors.ranked_mut().1 = std::mem::take(&mut root.actors);
        self.revoked_sessions = std::mem::take(&mut root.revoked_sessions);
        self.api_keys = std::mem::take(&mut root.api_keys);
        self.sso = root.sso.take();
        let bytes = bytes.map_err(|e| archive_err(&self.id, e.to_string()))?;
        if self.base_checked {
            debug_assert!(validate::validate(&bytes).is_ok());
            // SAFETY: the base bytes are those of an archive that passed the full check, at the
            // same positions; only span integers were rewritten in them. The tail and the root
            // were just written by rkyv's serializer, pointing at those positions.
            let v = unsafe { rkyv::access_unchecked::<ArchivedTenantSnap>(&bytes) };
            validate::check_grants(v)
        } else {
            validate::validate(&bytes)
        }
        .map_err(|e| archive_err(&self.id, e.to_string()))?;
        self.base_checked = true;
        Ok(Snapshot::adopt(bytes))
    }
}

/// Writes each record's grant span into a copy of the base block: records of `size` bytes at
/// `at`, the span `offset` bytes into each.
fn patch_spans(
    out: &mut [u8],
    at: At,
    size: usize,
    offset: usize,
    spans: &[Span],
) -> Result<(), String> {
    if spans.len() != at.len || offset + size_of::<ArchivedSpan>() > size {
        return Err("grant spans do not match the base".into());
    }
    for (i, s) in spans.iter().enumerate() {
        let p = at.pos + i * size + offset;
        let dst = out
            .get_mut(p..p + size_of::<ArchivedSpan>())
            .ok_or("grant span outside the base")?;
        let span = ArchivedSpan {
            start: s.start.into(),
            end: s.end.into(),
        };
        // SAFETY: `dst` is exactly `size_of::<ArchivedSpan>()` bytes; the write is unaligned.
        unsafe { std::ptr::write_unaligned(dst.as_mut_ptr().cast::<ArchivedSpan>(), span) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worlds::{self, Rng};

    fn bytes_of(t: &Tenant) -> Vec<u8> {
        Snapshot::build(t).unwrap().as_bytes().to_vec()
    }

    /// Random assignment edits applied incrementally give the bytes of a fresh build. Roles in
    /// `favour` get half of the new assignments.
    fn incremental_matches_fresh(mut t: Tenant, seed: u64, favour: &[String]) {
        // Dedup (principal, role, scope), as the control plane's documents are.
        let mut seen = std::collections::HashSet::new();
        t.assignments
            .retain(|a| seen.insert((a.principal.clone(), a.role.clone(), a.scope.clone())));
        let mut c = Compiled::new(&t).unwrap();
        assert_eq!(c.snapshot().unwrap().as_bytes(), bytes_of(&t).as_slice());
        let mut rng = Rng::new(seed);
        for step in 0..60 {
            let mut removed = Vec::new();
            let mut added = Vec::new();
            for _ in 0..rng.below(4) {
                if !t.assignments.is_empty() && rng.chance(50) {
                    // Removals prefer the favoured roles' assignments too.
                    let mut i = rng.below(t.assignments.len());
                    if !favour.is_empty() && rng.chance(50) {
                        if let Some(j) = t.assignments.iter().position(|a| favour.contains(&a.role))
                        {
                            i = j;
                        }
                    }
                    let a = t.assignments.swap_remove(i);
                    // One added earlier in this step: the step neither adds nor removes it.
                    match added.iter().position(|x| *x == a) {
                        Some(k) => {
                            added.swap_remove(k);
                            seen.remove(&(a.principal.clone(), a.role.clone(), a.scope.clone()));
                        }
                        None => removed.push(a),
                    }
                } else {
                    let role = if !favour.is_empty() && rng.chance(50) {
                        rng.pick(favour).clone()
                    } else {
                        rng.pick(&t.all_roles()).id.clone()
                    };
                    let a = Assignment {
                        principal: if rng.chance(80) {
                            Principal::User(rng.pick(&t.users).id.clone())
                        } else {
                            Principal::Group(rng.pick(&t.groups).id.clone())
                        },
                        role,
                        scope: rng.pick(&t.nodes).id.clone(),
                        assigned_by: rng.chance(50).then(|| format!("actor-{}", rng.below(5))),
                        assigned_at: Some(worlds::NOW),
                        expires_at: rng.chance(30).then_some(worlds::NOW + 1000),
                    };
                    let key = (a.principal.clone(), a.role.clone(), a.scope.clone());
                    if seen.insert(key) {
                        t.assignments.push(a.clone());
                        added.push(a);
                    }
                }
            }
            for a in &removed {
                seen.remove(&(a.principal.clone(), a.role.clone(), a.scope.clone()));
            }
            t.revision += 1;
            assert!(c.apply(&removed, &added, t.revision));
            assert_eq!(
                c.snapshot().unwrap().as_bytes(),
                bytes_of(&t).as_slice(),
                "step {step}"
            );
        }
    }

    #[test]
    fn incremental_equals_fresh_build() {
        incremental_matches_fresh(worlds::tenant("t", worlds::S, 3), 11, &[]);
    }

    /// The default role's group (after the tenant's groups) survives incremental changes, and
    /// grants every non-guest user the role at the roots.
    #[test]
    fn incremental_equals_fresh_build_with_a_default_role() {
        let mut t = worlds::tenant("t", worlds::S, 3);
        t.default_role = Some("member".into());
        let s = Snapshot::build(&t).unwrap();
        let v = s.view();
        let g = v.groups.last().unwrap();
        assert_eq!(g.id.as_str(), super::super::DEFAULT_ROLE_GROUP);
        let guests = t.users.iter().filter(|u| u.kind == UserKind::Guest).count();
        assert_eq!(g.members.to_native() as usize, t.users.len() - guests);
        let roots = t.nodes.iter().filter(|n| n.parent.is_none()).count();
        assert_eq!(
            (g.grants.end.to_native() - g.grants.start.to_native()) as usize,
            roots
        );
        incremental_matches_fresh(t, 13, &[]);
    }

    /// The same with plugins: roles with a plugin condition (flagged in `plugin_roles`, a base
    /// bitset) gaining and losing assignments; the plugin records are re-archived in every tail.
    #[test]
    fn incremental_equals_fresh_build_with_plugins() {
        let mut t = worlds::tenant("t", worlds::S, 3);
        t.plugins = vec![
            crate::model::PluginModule::new("first", b"\0asm-first".to_vec()),
            crate::model::PluginModule {
                name: "second".into(),
                description: Some("the second module".into()),
                wasm: vec![7u8; 3000].into(),
                canary: Some(crate::model::PluginCanary {
                    wasm: vec![8u8; 100].into(),
                    share: 30,
                }),
            },
        ];
        t.roles[0].plugin = Some("second".into());
        t.roles[1].plugin = Some("first".into());
        let favour = vec![t.roles[0].id.clone(), t.roles[1].id.clone()];
        let mut c = Compiled::new(&t).unwrap();
        {
            let s = c.snapshot().unwrap();
            let v = s.view();
            assert_eq!(v.plugins.len(), 2);
            assert!(v.plugins[0].canary.is_none());
            let c = v.plugins[1].canary.as_ref().unwrap();
            assert_eq!((c.share, c.wasm.len()), (30, 100));
            assert_ne!(v.plugin_roles.to_native(), 0);
            let nbuiltin = v.roles.len() - t.roles.len();
            assert_eq!(v.roles[nbuiltin].plugin_slot.to_native(), 1);
            assert_eq!(v.roles[nbuiltin + 1].plugin_slot.to_native(), 0);
            assert_eq!(v.roles[nbuiltin + 2].plugin_slot.to_native(), NONE);
        }
        incremental_matches_fresh(t, 12, &favour);
    }

    #[test]
    fn unknown_references_ask_for_a_full_build() {
        let t = worlds::tenant("t", worlds::S, 3);
        let mut a = t.assignments[0].clone();
        a.scope = "nowhere".into();
        assert!(!Compiled::new(&t).unwrap().apply(&[], &[a], 9));
        let mut a = t.assignments[0].clone();
        a.role = "nobody".into();
        assert!(!Compiled::new(&t).unwrap().apply(&[a.clone()], &[], 9));
        a.role = t.assignments[0].role.clone();
        a.expires_at = Some(1);
        a.assigned_at = Some(2);
        assert!(!Compiled::new(&t).unwrap().apply(&[], &[a], 9));
    }
}
