//! Writes `bench/PEERS.md` from criterion's estimates and the `bench/out/*` records
//! (`agree.jsonl`, `p99.jsonl`, `mem.jsonl`, `http.jsonl`, `differential.jsonl`, `loadavg.tsv`).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// The targets.
const CHECK_TARGET: f64 = 50.0;
const HTTP_TARGET: f64 = 5.0;

fn lines(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The last record for (world, engine) in a jsonl file (later runs override earlier ones).
fn last<'a>(recs: &'a [Value], world: &str, engine: &str) -> Option<&'a Value> {
    recs.iter()
        .rev()
        .find(|r| r["world"] == world && r["engine"] == engine)
}

/// The last p99 record for (world, engine, kind).
fn last_kind<'a>(recs: &'a [Value], world: &str, engine: &str, kind: &str) -> Option<&'a Value> {
    recs.iter()
        .rev()
        .find(|r| r["world"] == world && r["engine"] == engine && r["kind"] == kind)
}

fn median_ns(target: &str, world: &str, engine: &str, kind: &str) -> Option<f64> {
    let p = format!("{target}/criterion/peers-{world}/{engine}/{kind}/new/estimates.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

pub fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn fmt_kb(kb: f64) -> String {
    if kb < 1024.0 {
        format!("{kb:.0} KiB")
    } else {
        format!("{:.1} MiB", kb / 1024.0)
    }
}

/// A ratio with a precision that suits its size.
fn fmt_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**missed**"
    }
}

fn lock_version(name: &str) -> String {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
        .unwrap_or_default();
    let key = format!("name = \"{name}\"");
    let mut it = lock.lines();
    while let Some(l) = it.next() {
        if l.trim() == key {
            if let Some(v) = it.next() {
                return v
                    .trim()
                    .trim_start_matches("version = ")
                    .trim_matches('"')
                    .to_string();
            }
        }
    }
    "?".into()
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).to_string();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            t.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {:.0} GiB RAM, Linux {}",
        mem_kb / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// Per step of `bench/peers.sh`: (step, samples, min, mean, max of the 1-minute load average,
/// wall seconds covered), in order of first appearance, from `loadavg.tsv`.
fn load_by_step(out: &str) -> Vec<(String, usize, f64, f64, f64, u64)> {
    let text = std::fs::read_to_string(format!("{out}/loadavg.tsv")).unwrap_or_default();
    let mut steps: Vec<(String, Vec<f64>, u64, u64)> = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() < 3 {
            continue;
        }
        let (Ok(t), Some(Ok(l1))) = (
            f[0].parse::<u64>(),
            f[2].split_whitespace().next().map(str::parse::<f64>),
        ) else {
            continue;
        };
        let step = f[1].to_string();
        match steps.iter_mut().find(|s| s.0 == step) {
            Some(s) => {
                s.1.push(l1);
                s.3 = t;
            }
            None => steps.push((step, vec![l1], t, t)),
        }
    }
    steps
        .into_iter()
        .map(|(step, v, t0, t1)| {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(0.0, f64::max);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let _ = (t0, t1);
            (step, v.len(), min, mean, max, 5 * v.len() as u64)
        })
        .collect()
}

/// The median over the rounds of one server's HTTP runs on one world (rps, p50, p99, CPU).
fn http_median(http: &[Value], world: &str, server: &str) -> Option<Value> {
    let runs: Vec<&Value> = http
        .iter()
        .filter(|r| r["world"] == world && r["server"] == server)
        .collect();
    if runs.is_empty() {
        return None;
    }
    let med = |k: &str| {
        let mut v: Vec<f64> = runs.iter().filter_map(|r| r[k].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => Value::Null,
            n if n % 2 == 1 => v[n / 2].into(),
            n => ((v[n / 2 - 1] + v[n / 2]) / 2.0).into(),
        }
    };
    Some(serde_json::json!({
        "rps": med("rps"), "p50_ns": med("p50_ns"), "p99_ns": med("p99_ns"),
        "cpu_us_per_req": med("cpu_us_per_req"), "rounds": runs.len(),
    }))
}

/// One row of the comparison against the fastest in-process peer.
struct VsPeer {
    world: String,
    metric: &'static str,
    portcullis: f64,
    peer: String,
    peer_value: f64,
}

impl VsPeer {
    fn ratio(&self) -> f64 {
        self.peer_value / self.portcullis
    }
}

/// The fastest peer (smallest value) for one metric and Portcullis' value.
fn versus(
    world: &str,
    metric: &'static str,
    engines: &[&str],
    value: impl Fn(&str) -> Option<f64>,
) -> Option<VsPeer> {
    let portcullis = value("portcullis").filter(|v| *v > 0.0)?;
    let (peer, peer_value) = engines
        .iter()
        .filter(|e| **e != "portcullis")
        .filter_map(|e| value(e).map(|v| (e.to_string(), v)))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    Some(VsPeer {
        world: world.to_string(),
        metric,
        portcullis,
        peer,
        peer_value,
    })
}

/// Writes `<out>/../PEERS.md` from the records in `out` (`bench/out`) and criterion's estimates.
pub fn write(engines: &[&str], worlds: &[&str], out: &str) -> anyhow::Result<()> {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let target =
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{manifest}/target"));
    let agree = lines(&format!("{out}/agree.jsonl"));
    let p99 = lines(&format!("{out}/p99.jsonl"));
    let mem = lines(&format!("{out}/mem.jsonl"));
    let http = lines(&format!("{out}/http.jsonl"));
    let diff = lines(&format!("{out}/differential.jsonl"));
    let load = load_by_step(out);
    let rustc = command_line("rustc", &["--version"]);
    let commit = command_line("git", &["-C", manifest, "rev-parse", "--short", "HEAD"]);
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let cerbos_version = http
        .iter()
        .find_map(|r| r["cerbos_version"].as_str())
        .unwrap_or("?")
        .to_string();
    let wrk_version = http
        .iter()
        .find_map(|r| r["wrk_version"].as_str())
        .unwrap_or("?")
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let peers: Vec<&str> = engines
        .iter()
        .copied()
        .filter(|e| *e != "portcullis")
        .collect();

    // --- Comparisons against the fastest in-process peer, per metric.
    let mut vs: Vec<VsPeer> = Vec::new();
    for w in worlds {
        for kind in ["allow", "deny"] {
            let metric = if kind == "allow" {
                "median, allow"
            } else {
                "median, deny"
            };
            vs.extend(versus(w, metric, engines, |e| median_ns(&target, w, e, kind)));
        }
        for kind in ["allow", "deny"] {
            let metric = if kind == "allow" {
                "p99, allow"
            } else {
                "p99, deny"
            };
            vs.extend(versus(w, metric, engines, |e| {
                last_kind(&p99, w, e, kind).and_then(|r| r["p99_ns"].as_f64())
            }));
        }
    }

    let mut s = String::new();
    let _ = writeln!(s, "# Portcullis side by side with the peers\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| command | `bash bench/peers.sh` (report step: `PEERS_STEPS=report bash bench/peers.sh`) |");
    let _ = writeln!(s, "| date | {date} (report written) |");
    let _ = writeln!(s, "| commit | {commit} (release profile: `opt-level=3`, thin LTO, 4 codegen units) |");
    let _ = writeln!(s, "| machine | {} |", machine());
    let _ = writeln!(
        s,
        "| load average | see \"Load during the run\" below; {} when the report was written |",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        s,
        "| peers | cedar-policy {} · casbin {} · regorus {} (in-process, same release profile) · Cerbos PDP {cerbos_version} (npm `@cerbos/cerbos-linux-x64`, HTTP) |",
        lock_version("cedar-policy"),
        lock_version("casbin"),
        lock_version("regorus"),
    );
    let _ = writeln!(s, "| tools | {rustc}; criterion {}; {wrk_version} |", lock_version("criterion"));
    let _ = writeln!(
        s,
        "| worlds | S = `worlds::world_s()` (1 tenant, 1k nodes, 1k users, 5k assignments); M = `worlds::world_m()` (1 tenant, 50k nodes, 20k users, 200 groups, 100k assignments); time `worlds::NOW` |"
    );
    let _ = writeln!(
        s,
        "| translations | `bench/peers/src/` (see `bench/peers/README.md`) |\n"
    );
    let _ = writeln!(
        s,
        "**Provisional**: the machine (2 cores) is shared with other builds while this runs; the \
         load average below says how busy it was. Ratios are taken within one run, so both sides \
         of each ratio saw the same machine.\n"
    );

    // --- Summary against the targets.
    let _ = writeln!(s, "## Against the targets\n");
    let _ = writeln!(s, "| target | measured | |\n|---|---|---|");
    let bench_agree = !agree.is_empty() && agree.iter().all(|r| r["differ"] == 0);
    let bench_cases: u64 = agree.iter().filter_map(|r| r["cases"].as_u64()).sum();
    let http_agree = http.iter().all(|r| r["differ"] == 0);
    let long = diff.last();
    let long_ok = long.is_some_and(|r| r["passed"] == true);
    let _ = writeln!(
        s,
        "| identical decisions on every generated case | bench requests: {} cases over {} engine×world pairs, {} differ; HTTP bodies: {}; randomized vs Cedar: {} | {} |",
        bench_cases,
        agree.len(),
        agree.iter().filter_map(|r| r["differ"].as_u64()).sum::<u64>(),
        if http.is_empty() {
            "not run".to_string()
        } else {
            format!(
                "{} differ",
                http.iter().filter_map(|r| r["differ"].as_u64()).sum::<u64>()
            )
        },
        match long {
            Some(r) => format!(
                "{} cases (seed {}), {}",
                r["cases"],
                r["seed"],
                if long_ok { "all agree" } else { "FAILED" }
            ),
            None => "long run not recorded".into(),
        },
        met(bench_agree && http_agree && long.is_none_or(|_| long_ok))
    );
    for w in worlds {
        let rows: Vec<&VsPeer> = vs.iter().filter(|v| v.world == *w).collect();
        if rows.is_empty() {
            continue;
        }
        let worst = rows
            .iter()
            .min_by(|a, b| a.ratio().total_cmp(&b.ratio()))
            .map(|v| (v.ratio(), v.metric, v.peer.clone()));
        if let Some((r, metric, peer)) = worst {
            let label = if *w == "M" {
                format!("world M: Portcullis ≥ {CHECK_TARGET:.0}× faster per check than the fastest in-process peer (median and p99, allow and deny)")
            } else {
                format!("world {w} (no target): Portcullis vs the fastest in-process peer")
            };
            let all: Vec<String> = rows
                .iter()
                .map(|v| format!("{} {} ({})", v.metric, fmt_ratio(v.ratio()), v.peer))
                .collect();
            let _ = writeln!(
                s,
                "| {label} | lowest: {} on {metric} vs {peer}; all: {} | {} |",
                fmt_ratio(r),
                all.join(", "),
                if *w == "M" {
                    met(r >= CHECK_TARGET && rows.len() == 4)
                } else {
                    "–"
                }
            );
        }
    }
    let http_pair = |w: &str| http_median(&http, w, "portcullis").zip(http_median(&http, w, "cerbos"));
    match http_pair("S") {
        Some((p, c)) => {
            let p = &p;
            let c = &c;
            let (pr, cr) = (
                p["rps"].as_f64().unwrap_or(0.0),
                c["rps"].as_f64().unwrap_or(0.0),
            );
            let (pp, cp) = (
                p["p99_ns"].as_f64().unwrap_or(f64::INFINITY),
                c["p99_ns"].as_f64().unwrap_or(0.0),
            );
            let ratio = if cr > 0.0 { pr / cr } else { 0.0 };
            let _ = writeln!(
                s,
                "| world S over HTTP: Portcullis `/v1/check` ≥ {HTTP_TARGET:.0}× the throughput of Cerbos `CheckResources` at equal or better p99 | {} ({pr:.0} / {cr:.0} req/s); p99 {} vs {} (medians of {} alternating rounds) | {} |",
                fmt_ratio(ratio),
                fmt_ns(pp),
                fmt_ns(cp),
                p["rounds"],
                met(ratio >= HTTP_TARGET && pp <= cp)
            );
        }
        None => {
            let _ = writeln!(s, "| world S over HTTP: ≥ {HTTP_TARGET:.0}× Cerbos throughput | not measured in this run | **missed** |");
        }
    }
    let _ = writeln!(s);

    // --- Load during the run.
    let _ = writeln!(s, "## Load during the run\n");
    if load.is_empty() {
        let _ = writeln!(s, "Not sampled (the report was written on its own).\n");
    } else {
        let _ = writeln!(
            s,
            "1-minute load average sampled every 5 s by `bench/peers.sh` (2 cores: anything above \
             2 means runnable threads were waiting).\n"
        );
        let _ = writeln!(
            s,
            "| step | wall (≈) | samples | min | mean | max |\n|---|---:|---:|---:|---:|---:|"
        );
        for (step, n, min, mean, max, secs) in &load {
            let _ = writeln!(
                s,
                "| {step} | {}:{:02} | {n} | {min:.2} | {mean:.2} | {max:.2} |",
                secs / 60,
                secs % 60
            );
        }
        let _ = writeln!(s);
    }

    // --- Same decisions.
    let _ = writeln!(s, "## Same decisions\n");
    let _ = writeln!(s, "| world | engine | cases | differ from Portcullis |\n|---|---|---:|---:|");
    for w in worlds {
        for e in &peers {
            if let Some(r) = last(&agree, w, e) {
                let _ = writeln!(s, "| {w} | {e} | {} | {} |", r["cases"], r["differ"]);
            }
        }
        for r in http
            .iter()
            .filter(|r| r["world"] == *w && r["server"] != "cerbos-floor")
        {
            let _ = writeln!(
                s,
                "| {w} | {} over HTTP | {} | {} |",
                r["server"].as_str().unwrap_or("?"),
                r["cases"],
                r["differ"]
            );
        }
    }
    let _ = writeln!(
        s,
        "\nIn-process cases: the bench's 200 allow and 200 deny requests plus 200 generated requests \
         of every kind (unknown subjects and resources, inactive and deleted users, guests); an \
         engine slower than ~60 s for the whole list decides an evenly spread subset. HTTP cases: \
         every prepared request body, each sent once before the load run and checked against \
         Portcullis' in-process decision.\n"
    );
    match long {
        Some(r) => {
            let _ = writeln!(
                s,
                "Randomized differential test against Cedar (`cargo test --manifest-path \
                 bench/peers/Cargo.toml --release --test differential_cedar -- --ignored`, \
                 random small worlds with every rbac mode, suspended tenants, inactive/deleted \
                 users, guests, inactive groups, expiry at the boundary, unknown subjects and \
                 resources, wildcard and malformed actions): **{} cases, seed {}, {}, {:.0} s** \
                 (release build, this machine).\n",
                r["cases"],
                r["seed"],
                if long_ok {
                    "every case agrees"
                } else {
                    "FAILED — see bench/out/differential.log"
                },
                r["secs"].as_f64().unwrap_or(0.0)
            );
        }
        None => {
            let _ = writeln!(
                s,
                "The long randomized differential test against Cedar was not run in this run \
                 (`PEERS_STEPS` without `diff-long`).\n"
            );
        }
    }

    // --- Medians.
    let _ = writeln!(s, "## Median time per check (criterion, in-process)\n");
    let _ = writeln!(
        s,
        "Allow: 200 allowed requests; deny: 200 requests denied for lack of a matching assignment \
         (the deny that must look at every grant). One check per iteration, cycling through the \
         list. × Portcullis = engine median / Portcullis median.\n"
    );
    let _ = writeln!(
        s,
        "| world | engine | allow | deny | × Portcullis allow | × Portcullis deny |\n|---|---|---:|---:|---:|---:|"
    );
    for w in worlds {
        let base_a = median_ns(&target, w, "portcullis", "allow");
        let base_d = median_ns(&target, w, "portcullis", "deny");
        for e in engines {
            let a = median_ns(&target, w, e, "allow");
            let d = median_ns(&target, w, e, "deny");
            if a.is_none() && d.is_none() {
                continue;
            }
            let ratio = |x: Option<f64>, b: Option<f64>| match (x, b) {
                (Some(x), Some(b)) if b > 0.0 => Some(x / b),
                _ => None,
            };
            let f = |x: Option<f64>| x.map_or("–".into(), fmt_ns);
            let fr = |x: Option<f64>| x.map_or("–".into(), fmt_ratio);
            let _ = writeln!(
                s,
                "| {w} | {e} | {} | {} | {} | {} |",
                f(a),
                f(d),
                fr(ratio(a, base_a)),
                fr(ratio(d, base_d))
            );
        }
    }

    // --- Tails.
    let _ = writeln!(s, "\n## Tail latency (each check timed on its own)\n");
    let _ = writeln!(
        s,
        "The same allow and deny lists, each check timed alone with `Instant::now()` around the \
         call (its own ~20–30 ns included), for about `PEERS_P99_SECS`/2 per list (at least 50 \
         checks: for an engine that gets only 50, p99 and p99.9 are its slowest check).\n"
    );
    let _ = writeln!(
        s,
        "| world | engine | kind | checks | p50 | p99 | p99.9 | max |\n|---|---|---|---:|---:|---:|---:|---:|"
    );
    for w in worlds {
        for e in engines {
            for kind in ["allow", "deny"] {
                if let Some(r) = last_kind(&p99, w, e, kind) {
                    let g = |k: &str| fmt_ns(r[k].as_f64().unwrap_or(0.0));
                    let _ = writeln!(
                        s,
                        "| {w} | {e} | {kind} | {} | {} | {} | {} | {} |",
                        r["checks"],
                        g("p50_ns"),
                        g("p99_ns"),
                        g("p999_ns"),
                        g("max_ns")
                    );
                }
            }
        }
    }

    // --- Versus the fastest peer.
    let _ = writeln!(s, "\n## Portcullis vs the fastest in-process peer\n");
    let _ = writeln!(
        s,
        "For each metric the fastest of {} (the smallest value) is the reference; ratio = that \
         peer's value / Portcullis' value.\n",
        peers.join(", ")
    );
    let _ = writeln!(
        s,
        "| world | metric | Portcullis | fastest peer | its value | ratio |\n|---|---|---:|---|---:|---:|"
    );
    for v in &vs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            v.world,
            v.metric,
            fmt_ns(v.portcullis),
            v.peer,
            fmt_ns(v.peer_value),
            fmt_ratio(v.ratio())
        );
    }

    // --- Memory.
    let _ = writeln!(s, "\n## Memory of the loaded world (one child process per engine)\n");
    let _ = writeln!(
        s,
        "Growth of the resident set (`VmRSS`) from before loading (generated model already in \
         memory) to after loading and one check; peak = `VmHWM` growth over the same baseline \
         (includes the translation's temporary text/JSON). Load = translate + parse/load. \
         × Portcullis = engine / Portcullis.\n"
    );
    let _ = writeln!(
        s,
        "| world | engine | holds | load time | resident growth | peak growth | × Portcullis (resident) | × Portcullis (peak) |\n|---|---|---|---:|---:|---:|---:|---:|"
    );
    for w in worlds {
        let base = last(&mem, w, "portcullis");
        let base_rss = base.and_then(|r| r["rss_delta_kb"].as_f64()).filter(|v| *v > 0.0);
        let base_peak = base.and_then(|r| r["peak_delta_kb"].as_f64()).filter(|v| *v > 0.0);
        for e in engines {
            if let Some(r) = last(&mem, w, e) {
                let rss = r["rss_delta_kb"].as_f64().unwrap_or(0.0);
                let peak = r["peak_delta_kb"].as_f64().unwrap_or(0.0);
                let x = |v: f64, b: Option<f64>| b.map_or("–".into(), |b| fmt_ratio(v / b));
                let _ = writeln!(
                    s,
                    "| {w} | {e} | {} | {:.2} s | {} | {} | {} | {} |",
                    r["size"].as_str().unwrap_or("?"),
                    r["load_s"].as_f64().unwrap_or(0.0),
                    fmt_kb(rss),
                    fmt_kb(peak),
                    x(rss, base_rss),
                    x(peak, base_peak)
                );
            }
        }
    }

    // --- HTTP.
    let _ = writeln!(s, "\n## Over HTTP: Portcullis vs the Cerbos PDP\n");
    if http.is_empty() {
        let _ = writeln!(s, "Not measured in this run.\n");
    } else {
        let layout = http
            .iter()
            .find_map(|r| r["layout"].as_str())
            .unwrap_or("?")
            .to_string();
        let _ = writeln!(
            s,
            "Same load generator (wrk, closed loop, keep-alive), same machine, same run, the same \
             requests in the same order (the bench's allow and deny requests, interleaved), one \
             decision per HTTP request on both sides: Portcullis `POST /v1/check` (`portcullis \
             serve` with the world as data file) and Cerbos `POST /api/check/resources` \
             (`CheckResources`, one resource and one action; the PEP's attributes — the user's \
             effective grants and the resource's ancestors — prepared in advance, so that lookup \
             is *not* counted for Cerbos). Per-request logging is off on both (Cerbos runs with \
             `--log-level=warn`; Portcullis logs nothing per request at its default level). \
             Layout: {layout}. Server CPU = user+system time of the server process over the \
             measured run, per request. Peak RSS = `VmHWM` of the server process, including \
             loading its data. p50/p99 are wrk's (closed loop at saturation: mostly queueing). \
             On this shared machine a closed-loop p99 swings with scheduler stalls from one run \
             to the next (one single 15 s round, before the rounds were introduced, measured \
             Portcullis at p99 110 ms against Cerbos' 99.5 ms while their p50 were 319 µs and \
             38.9 ms), so the servers alternate over several rounds and the target is judged on \
             the medians of the rounds.\n"
        );
        let _ = writeln!(
            s,
            "| world | server | round | connections | requests/s | p50 | p99 | server CPU per request | server peak RSS | non-2xx |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &http {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
                r["world"].as_str().unwrap_or("?"),
                r["server"].as_str().unwrap_or("?"),
                r["round"],
                r["connections"],
                r["rps"].as_f64().unwrap_or(0.0),
                fmt_ns(r["p50_ns"].as_f64().unwrap_or(0.0)),
                fmt_ns(r["p99_ns"].as_f64().unwrap_or(0.0)),
                r["cpu_us_per_req"]
                    .as_f64()
                    .map_or("–".into(), |v| format!("{v:.1} µs")),
                fmt_kb(r["peak_rss_kb"].as_f64().unwrap_or(0.0)),
                r["non_2xx"]
            );
        }
        for w in worlds {
            if let Some((p, c)) = http_pair(w) {
                let (p, c) = (&p, &c);
                let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(0.0);
                let cpu = match (p["cpu_us_per_req"].as_f64(), c["cpu_us_per_req"].as_f64()) {
                    (Some(a), Some(b)) if a > 0.0 => format!(
                        "; server CPU per request: Cerbos / Portcullis = {}",
                        fmt_ratio(b / a)
                    ),
                    _ => String::new(),
                };
                let _ = writeln!(
                    s,
                    "\nWorld {w} (medians of the rounds): throughput Portcullis / Cerbos = **{}**; p99 Portcullis {} vs Cerbos {}{cpu}.",
                    fmt_ratio(f(p, "rps") / f(c, "rps").max(1e-9)),
                    fmt_ns(f(p, "p99_ns")),
                    fmt_ns(f(c, "p99_ns"))
                );
            }
        }
        if let Some(f) = http.iter().rev().find(|r| r["server"] == "cerbos-floor") {
            let fw = f["world"].as_str().unwrap_or("?");
            let full = http_median(&http, fw, "cerbos").and_then(|r| r["cpu_us_per_req"].as_f64());
            let floor = f["cpu_us_per_req"].as_f64();
            let share = match (floor, full) {
                (Some(a), Some(b)) if b > 0.0 => format!(
                    " — {:.0} % of the {:.0} µs it spends per request on the real bodies",
                    100.0 * a / b,
                    b
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "\nWhere Cerbos' time goes: `cerbos-floor` is the same Cerbos server sent, over and \
                 over, the cheapest request body of world {fw} (a principal with no grants: the \
                 derived-role conditions have nothing to iterate). It reaches {:.0} req/s at {} \
                 CPU per request{share}. That part is Cerbos' request path (HTTP/JSON through its \
                 gRPC gateway to protobuf, per-call bookkeeping, the policy lookup); the rest is \
                 the evaluation of the translated conditions over the grants the PEP sends.",
                f["rps"].as_f64().unwrap_or(0.0),
                floor.map_or("–".into(), |v| format!("{v:.0} µs"))
            );
        }
        let _ = writeln!(s);
    }

    let path = Path::new(out).join("../PEERS.md");
    std::fs::write(&path, s)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
