//! Shared setup of the core-engine benchmarks: loading world L into a [`Registry`] and drawing
//! realistic request mixes from it. Included with `#[path]` by `core.rs` and `latency.rs`.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use portcullis::decide;
use portcullis::snapshot::{Registry, Snapshot, STATUS_ACTIVE};
use portcullis::worlds::{self, Rng};

/// Per-tenant numbers gathered while loading a world.
#[derive(Debug, Clone)]
pub struct TenantStat {
    pub id: String,
    pub nodes: usize,
    pub users: usize,
    pub assignments: usize,
    /// Archive size in bytes.
    pub bytes: usize,
    /// `Snapshot::build` wall time.
    pub build: Duration,
}

/// A world loaded into a registry, as a data-plane process would hold it.
pub struct World {
    pub registry: Registry,
    pub stats: Vec<TenantStat>,
    /// Total time spent generating tenants (not part of any target).
    pub gen_time: Duration,
    /// Total time spent in `Snapshot::build`.
    pub build_time: Duration,
}

impl World {
    pub fn assignments(&self) -> usize {
        self.stats.iter().map(|s| s.assignments).sum()
    }
    pub fn bytes(&self) -> usize {
        self.stats.iter().map(|s| s.bytes).sum()
    }
}

/// Builds every tenant of `tenants` into a fresh registry, timing generation and build apart.
pub fn load(tenants: impl Iterator<Item = portcullis::model::Tenant>, label: &str) -> World {
    let registry = Registry::new();
    let mut stats = Vec::new();
    let (mut gen_time, mut build_time) = (Duration::ZERO, Duration::ZERO);
    let mut tenants = tenants.peekable();
    let started = Instant::now();
    loop {
        let t0 = Instant::now();
        let Some(t) = tenants.next() else { break };
        gen_time += t0.elapsed();
        let t1 = Instant::now();
        let snap = Snapshot::build(&t).expect("generated tenants are valid");
        let build = t1.elapsed();
        build_time += build;
        stats.push(TenantStat {
            id: t.id.clone(),
            nodes: t.nodes.len(),
            users: t.users.len(),
            assignments: t.assignments.len(),
            bytes: snap.as_bytes().len(),
            build,
        });
        drop(t);
        registry.install(snap);
        if stats.len() % 100 == 0 {
            eprintln!(
                "[{label}] {} tenants loaded ({:.1} s)",
                stats.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "[{label}] loaded {} tenants, {} assignments: generation {:.1} s, build {:.1} s",
        stats.len(),
        stats.iter().map(|s| s.assignments).sum::<usize>(),
        gen_time.as_secs_f64(),
        build_time.as_secs_f64()
    );
    World {
        registry,
        stats,
        gen_time,
        build_time,
    }
}

/// World L (1,000 tenants, 10M assignments).
pub fn load_l() -> World {
    load(worlds::world_l(), "L")
}

/// World S (one tenant, 5k assignments).
pub fn load_s() -> World {
    load(worlds::world_s().into_iter(), "S")
}

/// Requests `(tenant, subject, action, resource)` packed into one string arena, read in order:
/// the strings of a request sit together, as they would in a freshly parsed request body.
#[derive(Default)]
pub struct Pool {
    arena: String,
    items: Vec<[(u32, u32); 4]>,
}

impl Pool {
    pub fn push(&mut self, parts: [&str; 4]) {
        let mut item = [(0, 0); 4];
        for (slot, s) in item.iter_mut().zip(parts) {
            *slot = (self.arena.len() as u32, s.len() as u32);
            self.arena.push_str(s);
        }
        self.items.push(item);
    }

    #[inline]
    pub fn get(&self, i: usize) -> [&str; 4] {
        let it = &self.items[i];
        it.map(|(o, l)| &self.arena[o as usize..(o + l) as usize])
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Picks tenant indexes with probability proportional to their assignment count.
pub struct Weighted {
    cumulative: Vec<u64>,
}

impl Weighted {
    pub fn by_assignments(world: &World) -> Weighted {
        let mut acc = 0u64;
        let cumulative = world
            .stats
            .iter()
            .map(|s| {
                acc += s.assignments as u64;
                acc
            })
            .collect();
        Weighted { cumulative }
    }

    pub fn pick(&self, rng: &mut Rng) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1);
        let x = rng.next_u64() % total;
        self.cumulative.partition_point(|&c| c <= x)
    }
}

fn random_action(rng: &mut Rng) -> String {
    format!(
        "{}:{}",
        rng.pick(worlds::RESOURCES),
        rng.pick(worlds::ACTIONS)
    )
}

/// `n` requests across `world`: tenants weighted by size, then (like [`worlds::requests`]) a uniform
/// user (2% unknown), a uniform node (2% unknown) and a uniform action of the generated
/// vocabulary.
pub fn requests(world: &World, n: usize, seed: u64) -> Pool {
    let mut rng = Rng::new(seed);
    let weights = Weighted::by_assignments(world);
    let snaps: Vec<_> = world
        .stats
        .iter()
        .map(|s| world.registry.get(&s.id).expect("tenant is loaded"))
        .collect();
    let mut pool = Pool::default();
    for _ in 0..n {
        let ti = weights.pick(&mut rng);
        let v = snaps[ti].view();
        let subject = if rng.chance(2) {
            "nobody"
        } else {
            v.users[rng.below(v.users.len())].id.as_str()
        };
        let resource = if rng.chance(2) {
            "nowhere"
        } else {
            v.nodes[rng.below(v.nodes.len())].id.as_str()
        };
        let action = random_action(&mut rng);
        pool.push([&world.stats[ti].id, subject, &action, resource]);
    }
    pool
}

/// Splits `pool` into the requests that are allowed and those that are denied at `now`.
pub fn classify(world: &World, pool: &Pool, now: i64) -> (Pool, Pool) {
    let (mut allow, mut deny) = (Pool::default(), Pool::default());
    for i in 0..pool.len() {
        let [t, s, a, r] = pool.get(i);
        let snap = world.registry.get(t).expect("tenant is loaded");
        if decide::check(snap.view(), s, a, r, now).allowed {
            allow.push([t, s, a, r]);
        } else {
            deny.push([t, s, a, r]);
        }
    }
    (allow, deny)
}

/// One `filter` request: an active subject that holds `action` somewhere in its tenant, and
/// `resources` drawn uniformly from the tenant's nodes (an IoT pipeline's batch of readings).
pub struct FilterBatch {
    pub tenant: String,
    pub subject: String,
    pub action: String,
    pub resources: Vec<String>,
}

/// `n` filter batches of `size` resources each, tenants weighted by size.
pub fn filter_batches(
    world: &World,
    n: usize,
    size: usize,
    now: i64,
    seed: u64,
) -> Vec<FilterBatch> {
    let mut rng = Rng::new(seed);
    let weights = Weighted::by_assignments(world);
    let mut out = Vec::with_capacity(n);
    let mut scratch = Vec::new();
    while out.len() < n {
        let stat = &world.stats[weights.pick(&mut rng)];
        let snap = world.registry.get(&stat.id).expect("tenant is loaded");
        let v = snap.view();
        let user = &v.users[rng.below(v.users.len())];
        let action = random_action(&mut rng);
        if user.status != STATUS_ACTIVE {
            continue;
        }
        // Only subjects that hold the permission somewhere: otherwise `filter` returns before
        // looking at a single resource, which would flatter the throughput.
        let d = decide::scopes(v, user.id.as_str(), &action, now, &mut scratch);
        if !d.allowed {
            continue;
        }
        let resources = (0..size)
            .map(|_| v.nodes[rng.below(v.nodes.len())].id.to_string())
            .collect();
        out.push(FilterBatch {
            tenant: stat.id.clone(),
            subject: user.id.to_string(),
            action,
            resources,
        });
    }
    out
}

/// `(VmRSS, VmHWM)` of this process in bytes, from `/proc/self/status`.
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
