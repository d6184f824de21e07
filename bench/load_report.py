"""Writes bench/LOAD.md from the raw lines bench/load.sh collected (run by load.sh)."""
import os
import sys

res, bodies, out = sys.argv[1], sys.argv[2], sys.argv[3]
E = os.environ.get
rows = {}
for line in open(res):
    parts = line.split()
    if parts:
        rows[parts[0]] = dict(p.split("=", 1) for p in parts[1:] if "=" in p)


def f(r, k):
    try:
        return float(rows[r][k])
    except (KeyError, ValueError):
        return float("nan")


def us(x):
    if x != x:
        return "–"
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.0f} µs"


def rps(x):
    return "–" if x != x else f"{x:,.0f}"


def g(r, k):
    return rows.get(r, {}).get(k, "–")


def errs(r):
    d = rows.get(r, {})
    e = sum(int(d.get(k, 0)) for k in ("err_connect", "err_read", "err_write", "err_timeout", "errors"))
    return f"{int(d.get('non2xx', 0))} / {e}"


def pct(a, b):
    return f"{100 * a / b:.0f} %" if a == a and b == b and b else "–"


def mark(ok):
    return "met" if ok else "**missed**"


P, B = f("check", "rps"), f("bare_hyper", "rps")
NS, NA = f("nginx_static", "rps"), f("nginx_auth", "rps")
FD = f("filter", "rps") * 1000
half_p99 = f("half_check", "p99_us")
fa = E("FA") == "1"
NT = f("nginx_transport", "rps")

L = []
L.append("# Portcullis data plane under HTTP load (`bench/load.sh`)\n")
L.append("| | |\n|---|---|")
L.append(f"| machine | {E('NPROC')} CPUs, {E('CPU_MODEL')}, kernel {E('KERNEL')}; load average after the run: {E('LOADAVG')} |")
L.append(f"| date | {E('DATE_UTC')} |")
L.append(f"| versions | {E('RUSTC_V')}; hyper {E('HYPER_V')}, tokio {E('TOKIO_V')}; {E('WRK_V')}; nginx {E('NGINX_V')}; {E('H2_V')} |")
L.append(f"| commit | {E('COMMIT')} (release profile) |")
L.append(f"| layout | {E('LAYOUT')}; nice {E('NICE_LEVEL')} |")
L.append(f"| closed loop | wrk, 1 thread, {E('CONNS')} keep-alive connections, {E('WARM')} s warm-up run, then {E('DUR')} s measured |")
L.append(f"| open loop | `bench/fixed_rate.rs` (wrk2-style fixed rate), {E('FIXED_CONNS')} connections, {E('WARM')} s warm-up, then {E('DUR')} s |")
L.append(f"| data | world S (1 tenant, 1k nodes, 1k users, 5k assignments); {E('CHECKS')} checks from `gen::requests()` cycled, {E('ALLOW_PCT')} % allowed; filter: 1,000 resources |")
L.append(f"| command | `bash bench/load.sh` (DUR={E('DUR')} WARM={E('WARM')} CONNS={E('CONNS')} PIN={E('PIN_FLAG')} NICE={E('NICE_LEVEL')}) |")
L.append("")
L.append("## Results\n")
L.append("| run | req/s | p50 | p99 | server CPU | server CPU µs/req | generator CPU | non-2xx / errors |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
names = [
    ("bare_hyper", "bare hyper, fixed 200 JSON (transport limit), same check bodies"),
    ("check", "portcullis `POST /v1/check`, world S"),
    ("filter", "portcullis `POST /v1/filter`, 1,000 resources per request"),
    ("nginx_static", "nginx alone, static 200"),
    ("nginx_transport", "nginx `auth_request` → portcullis `HEAD /healthz` (transport only, no decision)"),
    ("nginx_auth", "nginx `auth_request` → portcullis `HEAD /v1/forward-auth` (decision; non-2xx = the denied half)"),
    ("nginx_auth_get", "nginx `auth_request` → portcullis `GET /v1/forward-auth` (as deploy/nginx.conf)"),
]
for k, label in names:
    if k in rows:
        split = f" (portcullis {g(k, 'p_us_per_req')})" if "p_us_per_req" in rows[k] else ""
        L.append(f"| {label} | {rps(f(k, 'rps'))} | {us(f(k, 'p50_us'))} | {us(f(k, 'p99_us'))} | {g(k, 'srv_cpu')} % | {g(k, 'srv_us_per_req')}{split} | {g(k, 'gen_cpu')} % | {errs(k)} |")
for k, label in [("half_check", "portcullis `/v1/check` at half of its peak, fixed rate"),
                 ("half_bare_hyper", "bare hyper at the same fixed rate")]:
    if k in rows:
        L.append(f"| {label} ({rps(f(k, 'target_rps'))} req/s) | {rps(f(k, 'achieved_rps'))} | {us(f(k, 'p50_us'))} | {us(f(k, 'p99_us'))} (from schedule: {us(f(k, 'sched_p99_us'))}) | {g(k, 'srv_cpu')} % | {g(k, 'srv_us_per_req')} | late {g(k, 'late_pct')} % | {errs(k)} |")
for k, label in [("h2_bare_hyper", "h2c (h2load, 8 conns × 16 streams, one body): bare hyper"),
                 ("h2_check", "h2c (h2load, 8 conns × 16 streams, one body): portcullis `/v1/check`")]:
    if k in rows:
        L.append(f"| {label} | {rps(f(k, 'rps'))} | mean {g(k, 'mean')} | – | {g(k, 'srv_cpu')} % | {g(k, 'srv_us_per_req')} | – | – |")
L.append("")
L.append("## Against the targets\n")
L.append("| target | measured | |")
L.append("|---|---:|---|")
L.append(f"| portcullis `/v1/check` ≥ 75 % of bare hyper | {pct(P, B)} ({rps(P)} / {rps(B)}) | {mark(P >= 0.75 * B)} |")
CB, CP = f("bare_hyper", "srv_us_per_req"), f("check", "srv_us_per_req")
L.append(f"| (same, from server CPU per request: bare µs / portcullis µs) | {pct(CB, CP)} ({CB:.2f} / {CP:.2f} µs) | {mark(CB >= 0.75 * CP)} |")
if fa:
    L.append(f"| nginx + portcullis ≥ 60 % of nginx alone (forward-auth decisions, HEAD) | {pct(NA, NS)} ({rps(NA)} / {rps(NS)}) | {mark(NA >= 0.6 * NS)} |")
    NG = f("nginx_auth_get", "rps")
    L.append(f"| (same with GET, as deploy/nginx.conf) | {pct(NG, NS)} ({rps(NG)} / {rps(NS)}) | {mark(NG >= 0.6 * NS)} |")
L.append(f"| (transport only: nginx + portcullis `HEAD /healthz` vs nginx alone) | {pct(NT, NS)} ({rps(NT)} / {rps(NS)}) | {mark(NT >= 0.6 * NS)} |")
L.append(f"| p99 ≤ 1 ms at half of peak ({rps(f('half_check', 'target_rps'))} req/s) | {us(half_p99)} | {mark(half_p99 <= 1000)} |")
L.append(f"| `/v1/filter` resource decisions/s (1,000-resource batches) | {rps(FD)} | (no target) |")
for key, what in (("UPSTREAM_CLOSED_T", "transport-only"), ("UPSTREAM_CLOSED", "forward-auth (HEAD)"),
                  ("UPSTREAM_CLOSED_G", "forward-auth (GET)")):
    uc = E(key) or "0"
    if uc.lstrip("-").isdigit() and int(uc) > 200:
        L.append("")
        L.append(f"**Note:** nginx opened about {uc} new upstream connections to portcullis during the {what}")
        L.append("run: an auth answer with a body (the JSON error body of a 401/403) keeps nginx from reusing")
        L.append("the keep-alive connection, so each such answer costs a new TCP connection.")
L.append("")
L.append("Notes: closed-loop p50/p99 are wrk's (write to full response, per connection; at peak they mostly")
L.append("show queueing). The open-loop p99 counts from the write; \"from schedule\" counts from the moment the")
L.append("request was due (wrk2-style, corrects coordinated omission; includes the generator's own sleep")
L.append("overshoot); \"late\" is the share of requests the generator itself wrote > 1 ms after they were due")
L.append("(non-zero means the generator, not the server, fell behind). Server CPU: run time of all server")
L.append("processes and threads over the run, in % of one core, and per request (robust on a busy machine,")
L.append("where req/s is not); generator CPU: wrk's user+system time, % of one core.")
L.append("")
L.append("## How it is measured\n")
L.append("- **Servers**: `portcullis serve` (release build, world S from `portcullis generate --world s`, fresh")
L.append("  embedded store in a temp dir) and `bench/bare_hyper.rs` (same tokio multi-thread runtime and")
L.append("  hyper-util auto builder, same HTTP/1 settings, reads the body and answers a fixed 200 JSON): the")
L.append("  transport's limit. nginx 1 worker, `access_log off`, static file via `try_files`; `auth_request`")
L.append("  to a keep-alive upstream (`proxy_http_version 1.1`, `keepalive 64`).")
L.append("- **Requests**: `bench/load_bodies.rs` draws checks from `gen::requests()` (existing and unknown")
L.append("  users and nodes, all actions) and keeps a 50/50 allow/deny mix, verified against the server")
L.append("  before the runs; the filter body is all 1,000 nodes for a subject that may see about a quarter.")
L.append("- **Closed loop**: wrk with `bench/load.lua`, which pre-formats every request once and cycles.")
L.append("- **Open loop**: Debian has no wrk2; `hey -q` paces per worker and needs more CPU per request than")
L.append("  the server under test; `h2load --rate` paces connections, not requests. So `bench/fixed_rate.rs`")
L.append("  (one thread, tokio current-thread, millisecond pacing like wrk2) sends at half the measured")
L.append("  `/v1/check` peak and records latency from the write and from the scheduled time.")
L.append("- **nginx keep-alive**: an `auth_request` subrequest never reads the auth answer's body, so nginx")
L.append("  can reuse the upstream connection only when the answer has none. `GET /healthz` (a 15-byte")
L.append("  body) made nginx open a new connection per request; the transport-only row uses `HEAD /healthz`.")
L.append("  Forward-auth allows are body-less, but 401/403 carry the JSON error body, so with `GET` nginx")
L.append("  drops the connection after every denial; asked with `HEAD` (`proxy_method HEAD;`, same")
L.append("  decision: the target method travels in `X-Original-Method`) no answer has a body. The script")
L.append("  counts the new upstream connections nginx opened in each run.")
L.append("- **On a busy machine** req/s and latencies move with other load; the server's CPU time per")
L.append("  request (from `/proc/PID/task/*/schedstat`) is the steadier figure, and the ratios of two runs")
L.append("  made minutes apart are only indicative. `NICE=-10` gives the run's own session a larger share.")
L.append("")
L.append("<details><summary>raw</summary>\n\n```")
L.append(open(res).read().rstrip())
L.append(open(bodies).read().rstrip())
L.append("```\n</details>")
open(out, "w").write("\n".join(L) + "\n")
