//! Deterministic generated worlds for benchmarks, load tests and differential tests.
//!
//! - **S**: 1 tenant, 1k nodes, 1k users, 20 groups, 5k assignments.
//! - **M**: 1 tenant, 50k nodes over 6 levels, 20k users, 200 groups, 100k assignments.
//! - **L**: 1,000 tenants, 10M assignments in total; the largest has 1M assignments over a
//!   6-level hierarchy of 200k nodes, 100k users and 200 groups.
//!
//! Same spec + seed → same world, on every machine.

use crate::model::{
    Assignment, Group, GroupStatus, Node, Permission, Principal, Rbac, Role, Tenant, User,
    UserKind, UserStatus,
};

/// A small, fast, deterministic PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) % n.max(1) as u64) as usize
    }
    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u32) -> bool {
        self.below(100) < p as usize
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Shape of one generated tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantSpec {
    pub nodes: usize,
    pub users: usize,
    pub groups: usize,
    pub assignments: usize,
    pub custom_roles: usize,
}

pub const S: TenantSpec = TenantSpec {
    nodes: 1_000,
    users: 1_000,
    groups: 20,
    assignments: 5_000,
    custom_roles: 10,
};
pub const M: TenantSpec = TenantSpec {
    nodes: 50_000,
    users: 20_000,
    groups: 200,
    assignments: 100_000,
    custom_roles: 20,
};
pub const L_LARGEST: TenantSpec = TenantSpec {
    nodes: 200_000,
    users: 100_000,
    groups: 200,
    assignments: 1_000_000,
    custom_roles: 30,
};
/// Each of the 999 other tenants of world L (999 × 9,009 + 1M ≈ 10M assignments).
pub const L_SMALL: TenantSpec = TenantSpec {
    nodes: 2_000,
    users: 1_000,
    groups: 20,
    assignments: 9_009,
    custom_roles: 10,
};
pub const L_TENANTS: usize = 1_000;

/// Permission vocabulary of generated worlds.
pub const RESOURCES: &[&str] = &[
    "asset",
    "door",
    "hvac",
    "camera",
    "report",
    "workorder",
    "zone",
    "site",
    "user",
    "pipeline",
];
pub const ACTIONS: &[&str] = &[
    "read",
    "write",
    "operate",
    "unlock",
    "export",
    "create",
    "delete",
    "calibrate",
];

pub const KINDS: [&str; 6] = ["organisation", "site", "building", "floor", "zone", "asset"];
const PREFIX: [&str; 6] = ["org", "site", "bldg", "floor", "zone", "asset"];

/// A fixed "now" for generated worlds (2026-06-01T00:00:00Z): expiries fall on both sides.
pub const NOW: i64 = 1_780_272_000;

/// World S: one tenant `s`.
pub fn world_s() -> Vec<Tenant> {
    vec![tenant("s", S, 1)]
}

/// World M: one tenant `m`.
pub fn world_m() -> Vec<Tenant> {
    vec![tenant("m", M, 2)]
}

/// World L, tenant by tenant (`l0000` is the largest). Generating lazily keeps peak memory to
/// what the caller keeps.
pub fn world_l() -> impl Iterator<Item = Tenant> {
    (0..L_TENANTS).map(|i| {
        let spec = if i == 0 { L_LARGEST } else { L_SMALL };
        tenant(&format!("l{i:04}"), spec, 1000 + i as u64)
    })
}

/// Node counts per level (organisation … asset) for a tenant of `n` nodes: upper levels with a
/// common fan-out `k`, assets filling the rest (about nine in ten nodes).
fn level_sizes(n: usize) -> [usize; 6] {
    let n = n.max(6);
    let mut k = 1usize;
    while 1 + (k + 1) + (k + 1).pow(2) + (k + 1).pow(3) + (k + 1).pow(4) <= n / 10 {
        k += 1;
    }
    let upper = [1, k, k * k, k * k * k, k * k * k * k];
    let used: usize = upper.iter().sum();
    [
        upper[0],
        upper[1],
        upper[2],
        upper[3],
        upper[4],
        n.saturating_sub(used).max(1),
    ]
}

/// Generates one tenant with id `id` and shape `spec`, deterministically from `seed`.
pub fn tenant(id: &str, spec: TenantSpec, seed: u64) -> Tenant {
    let mut rng = Rng::new(seed);
    let mut t = Tenant::new(id);
    t.name = format!("Generated {id}");
    t.rbac = Rbac::Enterprise;

    // Hierarchy: level by level, each node's parent drawn from the level above.
    let sizes = level_sizes(spec.nodes);
    let mut levels: Vec<(usize, usize)> = Vec::new(); // (first index, count) per level
    for (lvl, &count) in sizes.iter().enumerate() {
        let first = t.nodes.len();
        for j in 0..count {
            let parent = if lvl == 0 {
                None
            } else {
                let (pf, pc) = levels[lvl - 1];
                // Round-robin keeps the upper levels balanced; assets spread evenly.
                Some(t.nodes[pf + j % pc].id.clone())
            };
            t.nodes.push(Node {
                id: format!("{}-{j}", PREFIX[lvl]),
                kind: KINDS[lvl].to_string(),
                parent,
                name: None,
            });
        }
        levels.push((first, count));
    }

    // Custom roles.
    for r in 0..spec.custom_roles {
        let nperm = 2 + rng.below(4);
        let mut perms: Vec<Permission> = Vec::with_capacity(nperm);
        for _ in 0..nperm {
            let res = *rng.pick(RESOURCES);
            let act = *rng.pick(ACTIONS);
            let text = match rng.below(20) {
                0 => format!("{res}:*"),
                1 => format!("*:{act}"),
                _ => format!("{res}:{act}"),
            };
            if let Ok(p) = text.parse() {
                if !perms.contains(&p) {
                    perms.push(p);
                }
            }
        }
        t.roles.push(Role {
            id: format!("role-{r}"),
            name: format!("Role {r}"),
            permissions: perms,
            plugin: None,
            tier: None,
        });
    }

    // Users.
    for u in 0..spec.users {
        let status = match rng.below(100) {
            0..=2 => UserStatus::Inactive,
            3..=4 => UserStatus::Deleted,
            _ => UserStatus::Active,
        };
        let kind = match rng.below(100) {
            0..=1 => UserKind::Guest,
            2 => UserKind::Admin,
            _ => UserKind::Member,
        };
        t.users.push(User {
            id: format!("u{u}"),
            email: format!("u{u}@{id}.example"),
            name: format!("User {u}"),
            status,
            kind,
            session_epoch: 0,
            first_name: None,
            last_name: None,
            logout: None,
            scope: None,
        });
    }

    // Groups: about one membership per user on average.
    for g in 0..spec.groups {
        let status = if rng.chance(5) {
            GroupStatus::Inactive
        } else {
            GroupStatus::Active
        };
        t.groups.push(Group {
            id: format!("g{g}"),
            name: format!("Group {g}"),
            status,
            members: Vec::new(),
            logout: None,
            access: None,
        });
    }
    if spec.groups > 0 {
        for u in 0..spec.users {
            let mut first = None;
            for _ in 0..rng.below(3) {
                let g = rng.below(spec.groups);
                if first != Some(g) {
                    t.groups[g].members.push(format!("u{u}"));
                    first = Some(g);
                }
            }
        }
    }

    // Assignments: mostly to users, scopes weighted towards the middle of the hierarchy.
    let all_roles = 3 + spec.custom_roles;
    for _ in 0..spec.assignments {
        let principal = if spec.groups > 0 && rng.chance(10) {
            Principal::Group(format!("g{}", rng.below(spec.groups)))
        } else {
            Principal::User(format!("u{}", rng.below(spec.users)))
        };
        let lvl = match rng.below(100) {
            0..=1 => 0,
            2..=11 => 1,
            12..=29 => 2,
            30..=54 => 3,
            55..=84 => 4,
            _ => 5,
        };
        let (first, count) = levels[lvl];
        let scope = t.nodes[first + rng.below(count)].id.clone();
        let r = rng.below(all_roles);
        let role = match r {
            0 if rng.chance(10) => "administrator".to_string(),
            0 | 1 => "operator".to_string(),
            2 => "viewer".to_string(),
            _ => format!("role-{}", r - 3),
        };
        let expires_at = rng
            .chance(5)
            .then(|| NOW + rng.below(2 * 86_400 * 30) as i64 - 86_400 * 30);
        t.assignments.push(Assignment {
            principal,
            role,
            scope,
            assigned_by: Some("generator".to_string()),
            assigned_at: Some(NOW - 86_400 * 60),
            expires_at,
        });
    }
    t
}

/// `n` requests `(subject, action, resource)` against `t`, deterministically from `seed`:
/// mostly users and nodes that exist, a few that do not.
pub fn requests(t: &Tenant, n: usize, seed: u64) -> Vec<(String, String, String)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let subject = if rng.chance(2) {
                "nobody".to_string()
            } else {
                rng.pick(&t.users).id.clone()
            };
            let resource = if rng.chance(2) {
                "nowhere".to_string()
            } else {
                rng.pick(&t.nodes).id.clone()
            };
            let action = format!("{}:{}", rng.pick(RESOURCES), rng.pick(ACTIONS));
            (subject, action, resource)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_are_valid_and_deterministic() {
        let a = world_s();
        assert!(
            a[0].validate().is_empty(),
            "{:?}",
            &a[0].validate()[..3.min(a[0].validate().len())]
        );
        assert_eq!(a[0].nodes.len(), 1_000);
        assert_eq!(a[0].assignments.len(), 5_000);
        assert_eq!(a, world_s());
        assert_eq!(level_sizes(200_000).iter().sum::<usize>(), 200_000);
        assert_eq!(level_sizes(50_000).iter().sum::<usize>(), 50_000);
    }
}
