//! Latency, throughput, size and memory report of the core engine on world L, against the
//! targets of the "Core engine" issue. Writes the "Core engine" section of `bench/RESULTS.md`
//! (path overridable with `RESULTS=…`), including the criterion estimates found under
//! `target/criterion` when `cargo bench --bench core` ran before.
//!
//! Run with `cargo bench --bench latency` (or everything: `bash bench/core.sh`).
//!
//! Method:
//! - World L is generated and built once; the build of every tenant is timed
//!   (`Snapshot::build`, generation excluded), the largest one three times (median reported).
//! - After loading, freed generation memory is returned (`malloc_trim`) and VmRSS/VmHWM read.
//! - Requests: tenants weighted by assignment count, then uniform user (2% unknown), uniform node
//!   (2% unknown), uniform action of the generated vocabulary. Requests are decided once and
//!   split into allow and deny pools of `PER_POOL` requests each, plus a mixed pool in natural
//!   proportions. Each pool is replayed exactly once, so every check is a fresh random request
//!   against a 10M-assignment world (caches cold-ish; only the machine's L3 helps).
//! - Each check is `registry.get(tenant)` + `decide::check(view, subject, action, resource,
//!   NOW)`, as the server does it. Batches of 64 consecutive checks are timed with `Instant`;
//!   the per-check time of each batch is one sample. Percentiles of individually timed checks
//!   (timer overhead subtracted) are reported too, since batch means hide tail latency.
//! - Filter: 1,000-resource batches (an active subject holding the action somewhere; uniform
//!   nodes of its tenant), resource decisions per second on one thread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common.rs"]
mod common;

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use portcullis::decide;
use portcullis::snapshot::Snapshot;
use portcullis::worlds::{self, NOW};

use common::{Pool, World};

/// Requests per replayed pool.
const PER_POOL: usize = 1_000_000;
const BATCH: usize = 64;
const FILTER_BATCH: usize = 1_000;
const FILTER_BATCHES: usize = 2_000;

struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    mean: f64,
    n: usize,
}

fn percentiles(mut xs: Vec<f64>) -> Percentiles {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() as f64 - 1.0) * q).round() as usize];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        mean: xs.iter().sum::<f64>() / xs.len() as f64,
        n: xs.len(),
    }
}

#[inline(always)]
fn one_check(world: &World, req: [&str; 4]) -> bool {
    let [t, s, a, r] = req;
    match world.registry.get(t) {
        Some(snap) => decide::check(snap.view(), s, a, r, NOW).allowed,
        None => false,
    }
}

/// Per-check nanoseconds of each batch of `BATCH` consecutive checks.
fn batched(world: &World, pool: &Pool) -> Percentiles {
    let mut samples = Vec::with_capacity(pool.len() / BATCH);
    let mut allowed = 0usize;
    for start in (0..pool.len().saturating_sub(BATCH - 1)).step_by(BATCH) {
        let t0 = Instant::now();
        for i in start..start + BATCH {
            allowed += usize::from(one_check(world, black_box(pool.get(i))));
        }
        let dt = t0.elapsed();
        samples.push(dt.as_nanos() as f64 / BATCH as f64);
    }
    black_box(allowed);
    percentiles(samples)
}

/// Median cost of an empty `Instant` pair, in ns.
fn timer_overhead() -> f64 {
    let mut xs = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t0 = Instant::now();
        xs.push(black_box(t0).elapsed().as_nanos() as f64);
    }
    percentiles(xs).p50
}

/// Each check timed alone, timer overhead subtracted.
fn individual(world: &World, pool: &Pool, overhead: f64) -> Percentiles {
    let mut samples = Vec::with_capacity(pool.len());
    for i in 0..pool.len() {
        let req = pool.get(i);
        let t0 = Instant::now();
        black_box(one_check(world, black_box(req)));
        samples.push((t0.elapsed().as_nanos() as f64 - overhead).max(0.0));
    }
    percentiles(samples)
}

/// Draws requests until there are `PER_POOL` allowed and `PER_POOL` denied ones; the first
/// `PER_POOL` drawn form the mixed pool.
fn pools(world: &World, seed: u64) -> (Pool, Pool, Pool, f64) {
    let (mut allow, mut deny, mut mixed) = (Pool::default(), Pool::default(), Pool::default());
    let (mut drawn, mut allowed) = (0usize, 0usize);
    let mut chunk_seed = seed;
    while allow.len() < PER_POOL || deny.len() < PER_POOL {
        let chunk = common::requests(world, 200_000, chunk_seed);
        chunk_seed += 1;
        for i in 0..chunk.len() {
            let req = chunk.get(i);
            let ok = one_check(world, req);
            drawn += 1;
            allowed += usize::from(ok);
            if mixed.len() < PER_POOL {
                mixed.push(req);
            }
            let target = if ok { &mut allow } else { &mut deny };
            if target.len() < PER_POOL {
                target.push(req);
            }
        }
    }
    (allow, deny, mixed, allowed as f64 / drawn as f64)
}

struct FilterResult {
    per_sec: f64,
    batch: Percentiles,
    allowed_share: f64,
}

fn filter_run(world: &World, batches: &[common::FilterBatch]) -> FilterResult {
    let mut per_batch = Vec::with_capacity(batches.len());
    let (mut total, mut allowed) = (Duration::ZERO, 0usize);
    for q in batches {
        let t0 = Instant::now();
        let snap = world.registry.get(&q.tenant).unwrap();
        let mut n = 0usize;
        black_box(decide::filter(
            snap.view(),
            &q.subject,
            &q.action,
            &q.resources,
            NOW,
            |_| n += 1,
        ));
        drop(snap);
        let dt = t0.elapsed();
        total += dt;
        allowed += n;
        per_batch.push(dt.as_nanos() as f64);
    }
    let resources = (batches.len() * FILTER_BATCH) as f64;
    FilterResult {
        per_sec: resources / total.as_secs_f64(),
        batch: percentiles(per_batch),
        allowed_share: allowed as f64 / resources,
    }
}

fn trim_heap() {
    // SAFETY: `malloc_trim` only returns free heap memory to the OS; no Rust invariant involved.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

fn cmd(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Criterion's point estimates (ns per iteration) of one benchmark, if it ran.
fn criterion_estimate(id: &str) -> Option<(f64, f64)> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = format!("{target}/criterion/{id}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let get = |k: &str| v.get(k)?.get("point_estimate")?.as_f64();
    Some((get("mean")?, get("median")?))
}

fn ns(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2} s", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1} ms", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1} µs", x / 1e3)
    } else {
        format!("{x:.0} ns")
    }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// Replaces (or appends) the `## Core engine` section of the results file.
fn write_section(path: &str, section: &str) {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmark results\n\n".into());
    let header = "## Core engine";
    let new = match old.find(header) {
        Some(start) => {
            let rest = &old[start + header.len()..];
            let end = rest
                .find("\n## ")
                .map_or(old.len(), |e| start + header.len() + e + 1);
            format!("{}{}{}", &old[..start], section, &old[end..])
        }
        None => format!("{}\n{}", old.trim_end(), section),
    };
    std::fs::write(path, new).expect("write results file");
}

fn main() {
    let started = Instant::now();
    let results_path = std::env::var("RESULTS").unwrap_or_else(|_| "bench/RESULTS.md".into());

    // --- Load L ------------------------------------------------------------------------------
    let world = common::load_l();
    trim_heap();
    let (rss_loaded, hwm_loaded) = common::rss();
    let assignments = world.assignments();
    let bytes = world.bytes();
    let largest = world
        .stats
        .iter()
        .max_by_key(|s| s.assignments)
        .unwrap()
        .clone();
    let bpa = |s: &common::TenantStat| s.bytes as f64 / s.assignments as f64;
    let worst = world
        .stats
        .iter()
        .max_by(|a, b| bpa(a).total_cmp(&bpa(b)))
        .unwrap()
        .clone();
    let best = world
        .stats
        .iter()
        .min_by(|a, b| bpa(a).total_cmp(&bpa(b)))
        .unwrap()
        .clone();
    eprintln!(
        "L: {assignments} assignments, {bytes} archive bytes ({:.1} B/assignment), VmRSS {} VmHWM {}",
        bytes as f64 / assignments as f64,
        mib(rss_loaded),
        mib(hwm_loaded)
    );

    // --- Checks ------------------------------------------------------------------------------
    let (allow, deny, mixed, allow_rate) = pools(&world, 42);
    eprintln!(
        "pools: {} allow, {} deny, {} mixed (natural allow rate {:.1}%)",
        allow.len(),
        deny.len(),
        mixed.len(),
        allow_rate * 100.0
    );
    let overhead = timer_overhead();
    let b_allow = batched(&world, &allow);
    let b_deny = batched(&world, &deny);
    let b_mixed = batched(&world, &mixed);
    let i_allow = individual(&world, &allow, overhead);
    let i_deny = individual(&world, &deny, overhead);
    let i_mixed = individual(&world, &mixed, overhead);
    for (name, p) in [
        ("allow (batches of 64)", &b_allow),
        ("deny (batches of 64)", &b_deny),
        ("mixed (batches of 64)", &b_mixed),
        ("allow (single)", &i_allow),
        ("deny (single)", &i_deny),
        ("mixed (single)", &i_mixed),
    ] {
        eprintln!(
            "check L {name}: p50 {:.0} ns, p99 {:.0} ns, p99.9 {:.0} ns, mean {:.0} ns ({} samples)",
            p.p50, p.p99, p.p999, p.mean, p.n
        );
    }
    drop((allow, deny, mixed));

    // --- Filter ------------------------------------------------------------------------------
    let batches = common::filter_batches(&world, FILTER_BATCHES, FILTER_BATCH, NOW, 11);
    let filter = filter_run(&world, &batches);
    eprintln!(
        "filter L: {:.2} M decisions/s, batch p50 {:.1} µs p99 {:.1} µs, {:.1}% allowed",
        filter.per_sec / 1e6,
        filter.batch.p50 / 1e3,
        filter.batch.p99 / 1e3,
        filter.allowed_share * 100.0
    );
    drop(batches);

    // --- Build of the largest tenant, twice more -----------------------------------------------
    let mut builds = vec![largest.build];
    let t = worlds::world_l().next().unwrap();
    assert_eq!(t.id, largest.id);
    for _ in 0..2 {
        let t0 = Instant::now();
        let s = Snapshot::build(&t).unwrap();
        builds.push(t0.elapsed());
        drop(s);
    }
    drop(t);
    builds.sort();
    let build_median = builds[1];
    eprintln!(
        "build {}: {:?} (median of {:?})",
        largest.id, build_median, builds
    );
    let (_, hwm_end) = common::rss();

    // --- Report ------------------------------------------------------------------------------
    let rustc = cmd("rustc", &["-V"]);
    let date = cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let l3 = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = String::new();
    let w = &mut md;
    writeln!(w, "## Core engine\n").unwrap();
    writeln!(
        w,
        "Generated by `bash bench/core.sh` (criterion `cargo bench --bench core`, then the report \
         harness `cargo bench --bench latency`, release profile). Do not edit by hand.\n"
    )
    .unwrap();
    writeln!(w, "- Date: {date}").unwrap();
    writeln!(
        w,
        "- Machine: {nproc} CPUs, {}, L3 {l3}; load average at the end {load}",
        cpu_model()
    )
    .unwrap();
    writeln!(w, "- Compiler: {rustc}").unwrap();
    writeln!(
        w,
        "- World L: {} tenants, {} assignments (largest `{}`: {} assignments, {} nodes, {} users); \
         generation {:.1} s, build {:.1} s in total; report run took {:.0} s\n",
        world.stats.len(),
        assignments,
        largest.id,
        largest.assignments,
        largest.nodes,
        largest.users,
        world.gen_time.as_secs_f64(),
        world.build_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    )
    .unwrap();

    writeln!(w, "| Measure (world L) | Target | Measured | |").unwrap();
    writeln!(w, "|---|---|---|---|").unwrap();
    for (name, p) in [("allow", &b_allow), ("deny", &b_deny)] {
        writeln!(
            w,
            "| check {name}, median per check | ≤ 200 ns | {} | {} |",
            ns(p.p50),
            verdict(p.p50 <= 200.0)
        )
        .unwrap();
        writeln!(
            w,
            "| check {name}, p99 per check | ≤ 1 µs | {} | {} |",
            ns(p.p99),
            verdict(p.p99 <= 1000.0)
        )
        .unwrap();
    }
    writeln!(
        w,
        "| filter, 1,000-resource batches, one core | ≥ 5 M decisions/s | {:.2} M/s | {} |",
        filter.per_sec / 1e6,
        verdict(filter.per_sec >= 5e6)
    )
    .unwrap();
    let overall = bytes as f64 / assignments as f64;
    writeln!(
        w,
        "| snapshot bytes per assignment, overall | ≤ 64 | {overall:.1} | {} |",
        verdict(overall <= 64.0)
    )
    .unwrap();
    writeln!(
        w,
        "| snapshot bytes per assignment, worst tenant (`{}`) | ≤ 64 | {:.1} | {} |",
        worst.id,
        bpa(&worst),
        verdict(bpa(&worst) <= 64.0)
    )
    .unwrap();
    writeln!(
        w,
        "| snapshot bytes per assignment, largest tenant (`{}`) | ≤ 64 | {:.1} | {} |",
        largest.id,
        bpa(&largest),
        verdict(bpa(&largest) <= 64.0)
    )
    .unwrap();
    writeln!(
        w,
        "| `Snapshot::build` of the largest tenant (median of 3) | ≤ 1 s | {} | {} |",
        ns(build_median.as_nanos() as f64),
        verdict(build_median <= Duration::from_secs(1))
    )
    .unwrap();
    writeln!(
        w,
        "| RSS with L loaded (VmRSS after load and `malloc_trim`) | report | {} | |",
        mib(rss_loaded)
    )
    .unwrap();
    writeln!(
        w,
        "| peak RSS while generating and building L (VmHWM) | report | {} | |",
        mib(hwm_loaded.max(hwm_end))
    )
    .unwrap();
    writeln!(
        w,
        "| archive bytes of L in total | report | {} | |\n",
        mib(bytes as u64)
    )
    .unwrap();

    writeln!(
        w,
        "Checks: `registry.get(tenant)` + `decide::check`, requests drawn across L with tenants \
         weighted by size (natural allow rate {:.1}%), each pool of {} requests replayed once. \
         \"Batches of 64\": per-check time of each timed batch of 64 consecutive checks (the \
         target rows above). \"Single\": each check timed alone, timer overhead ({overhead:.0} ns) \
         subtracted.\n",
        allow_rate * 100.0,
        PER_POOL
    )
    .unwrap();
    writeln!(w, "| Check latency, world L | p50 | p99 | p99.9 | mean |").unwrap();
    writeln!(w, "|---|---|---|---|---|").unwrap();
    for (name, p) in [
        ("allow, batches of 64", &b_allow),
        ("deny, batches of 64", &b_deny),
        ("mixed, batches of 64", &b_mixed),
        ("allow, single", &i_allow),
        ("deny, single", &i_deny),
        ("mixed, single", &i_mixed),
    ] {
        writeln!(
            w,
            "| {name} | {} | {} | {} | {} |",
            ns(p.p50),
            ns(p.p99),
            ns(p.p999),
            ns(p.mean)
        )
        .unwrap();
    }
    writeln!(
        w,
        "\nFilter: {} batches of {} resources ({:.1}% allowed); per batch p50 {}, p99 {}.\n",
        FILTER_BATCHES,
        FILTER_BATCH,
        filter.allowed_share * 100.0,
        ns(filter.batch.p50),
        ns(filter.batch.p99)
    )
    .unwrap();
    writeln!(
        w,
        "Snapshot size per tenant: {:.1} (`{}`) to {:.1} (`{}`) bytes per assignment.\n",
        bpa(&best),
        best.id,
        bpa(&worst),
        worst.id
    )
    .unwrap();

    let crit = [
        ("build/S", "build, tenant S (5k assignments)"),
        (
            "build/L-largest",
            "build, largest L tenant (1M assignments)",
        ),
        ("check/S/allow", "check S allow"),
        ("check/S/deny", "check S deny"),
        ("check/L/allow", "check L allow"),
        ("check/L/deny", "check L deny"),
        ("filter/L_1000", "filter L, 1,000 resources"),
        ("scopes/S", "scopes S"),
        ("scopes/L", "scopes L"),
        ("explain/S/allow", "explain S allow"),
        ("explain/S/deny", "explain S deny"),
    ];
    let rows: Vec<_> = crit
        .iter()
        .filter_map(|(id, name)| criterion_estimate(id).map(|e| (id, name, e)))
        .collect();
    if rows.is_empty() {
        writeln!(
            w,
            "Criterion estimates: none found (run `cargo bench --bench core` first)."
        )
        .unwrap();
    } else {
        writeln!(
            w,
            "Criterion (`cargo bench --bench core`), time per iteration:\n"
        )
        .unwrap();
        writeln!(w, "| Benchmark | id | mean | median |").unwrap();
        writeln!(w, "|---|---|---|---|").unwrap();
        for (id, name, (mean, median)) in rows {
            let extra = if id.starts_with("filter") {
                format!(" ({:.2} M elements/s)", FILTER_BATCH as f64 / mean * 1e3)
            } else {
                String::new()
            };
            writeln!(
                w,
                "| {name} | `{id}` | {}{extra} | {} |",
                ns(mean),
                ns(median)
            )
            .unwrap();
        }
    }
    writeln!(w).unwrap();

    print!("{md}");
    write_section(&results_path, &md);
    eprintln!("wrote {results_path}");
}
