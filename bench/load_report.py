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
fa = E("AUTH_PATH") == "/v1/forward-auth"

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
    ("nginx_auth", f"nginx `auth_request` → portcullis ({E('AUTH_KIND')})"),
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
note = "" if fa else " — **transport only** (auth target `HEAD /healthz`, no decision)"
L.append(f"| nginx + portcullis ≥ 60 % of nginx alone | {pct(NA, NS)} ({rps(NA)} / {rps(NS)}){note} | {mark(NA >= 0.6 * NS)} |")
L.append(f"| p99 ≤ 1 ms at half of peak ({rps(f('half_check', 'target_rps'))} req/s) | {us(half_p99)} | {mark(half_p99 <= 1000)} |")
L.append(f"| `/v1/filter` resource decisions/s (1,000-resource batches) | {rps(FD)} | (no target) |")
uc = E("UPSTREAM_CLOSED") or "0"
if uc.isdigit() and int(uc) > 100:
    L.append("")
    L.append(f"**Warning:** nginx closed {uc} upstream connections to portcullis during the auth run: the")
    L.append("auth answer has a body, so nginx cannot reuse keep-alive connections (answer 2xx/401/403 without a body).")
L.append("")
L.append("Notes: closed-loop p50/p99 are wrk's (write to full response, per connection; at peak they mostly")
L.append("show queueing). The open-loop p99 counts from the write; \"from schedule\" counts from the moment the")
L.append("request was due (wrk2-style, corrects coordinated omission; includes the generator's own sleep")
L.append("overshoot); \"late\" is the share of requests the generator itself wrote > 1 ms after they were due")
L.append("(non-zero means the generator, not the server, fell behind). Server CPU: run time of all server")
L.append("processes and threads over the run, in % of one core, and per request (robust on a busy machine,")
L.append("where req/s is not); generator CPU: wrk's user+system time, % of one core.")
L.append("")
L.append("<details><summary>raw</summary>\n\n```")
L.append(open(res).read().rstrip())
L.append(open(bodies).read().rstrip())
L.append("```\n</details>")
open(out, "w").write("\n".join(L) + "\n")
