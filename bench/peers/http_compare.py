#!/usr/bin/env python3
"""HTTP side of bench/peers.sh (bench/peers/http.sh): Cerbos PDP vs `portcullis serve`, same requests, wrk on loopback.

Expects `PEERS_MODE=cerbos-prep cargo bench --manifest-path bench/peers/Cargo.toml --bench peers`
to have written bench/out/cerbos/<W>/ and the Cerbos binary under bench/out/cerbos-bin/
(bench/peers/http.sh does both). For each
world: start the server on 127.0.0.1, check every prepared request against Portcullis'
in-process decision, run wrk (bounded time), stop the server. Appends to bench/out/http.jsonl.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "bench", "out")
CERBOS = os.path.join(OUT, "cerbos-bin", "package", "cerbos-linux-x64")
PORTCULLIS = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                          "release", "portcullis")
SECS = int(os.environ.get("PEERS_HTTP_SECS", "10"))
WARM = int(os.environ.get("PEERS_HTTP_WARM", "3"))
CONNS = int(os.environ.get("PEERS_HTTP_CONNS", "32"))
# Measured runs per server and world, alternating Cerbos and Portcullis; the report takes the
# median of the rounds (a shared machine's stalls hit single runs).
ROUNDS = int(os.environ.get("PEERS_HTTP_ROUNDS", "3"))
# Same layout for both servers: wrk (1 thread) on CPU 0, the server on CPU 1 (taskset), so that
# neither server competes with the load generator for a core, and both get one core (Go sizes
# GOMAXPROCS and tokio its worker pool from the affinity mask). PEERS_HTTP_PIN=0: no pinning,
# wrk with 2 threads, both processes free on both cores.
PIN = os.environ.get("PEERS_HTTP_PIN", "1") != "0" and shutil.which("taskset") and os.cpu_count() >= 2
GEN = ["taskset", "-c", "0"] if PIN else []
SRV = ["taskset", "-c", "1"] if PIN else []
WRK_THREADS = 1 if PIN else 2
LAYOUT = (f"wrk ({WRK_THREADS} thread, {CONNS} keep-alive connections) pinned to CPU 0, the server to CPU 1 (taskset); "
          f"{WARM} s warm-up run, then {SECS} s measured" if PIN else
          f"no pinning; wrk {WRK_THREADS} threads, {CONNS} keep-alive connections; {WARM} s warm-up run, then {SECS} s measured")
WORLDS = [w.strip() for w in os.environ.get("PEERS_WORLDS", "S,M").split(",") if w.strip()]


def post(url, body, timeout=10):
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_ready(url, proc, secs=900):
    t0 = time.time()
    while time.time() - t0 < secs:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.time() - t0
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {secs}s")


def to_ns(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return 0.0
    return float(m.group(1)) * {"us": 1e3, "ms": 1e6, "s": 1e9}[m.group(2)]


def cpu_ns(pid):
    """User + system CPU time of a process (all its threads), in ns."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")


def wrk(url, bodies, pid):
    env = dict(os.environ, BODIES=bodies)
    script = os.path.join(ROOT, "bench", "peers", "wrk.lua")
    base = GEN + ["wrk", f"-t{WRK_THREADS}", f"-c{CONNS}", "-s", script]
    if WARM > 0:
        subprocess.run(base + [f"-d{WARM}s", url], env=env, capture_output=True, timeout=WARM + 60)
    c0 = cpu_ns(pid)
    out = subprocess.run(base + [f"-d{SECS}s", "--latency", url], env=env, capture_output=True,
                         text=True, timeout=SECS + 60).stdout
    cpu = cpu_ns(pid) - c0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "requests": total, "cpu_us_per_req": cpu / 1e3 / max(total, 1), "p50_ns": to_ns(lat.get("50", "")), "p99_ns": to_ns(lat.get("99", "")),
            "non_2xx": int(errors.group(1)) if errors else 0, "raw": out}


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def has_serve():
    if not os.path.exists(PORTCULLIS):
        return False
    r = subprocess.run([PORTCULLIS, "serve", "--help"], capture_output=True)
    return r.returncode == 0


def version(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"


def start_cerbos(d):
    # --log-level=warn: Cerbos logs every request at `info` ("Handled request"); Portcullis
    # logs nothing per request at its default level, so per-request logging is off on both.
    return subprocess.Popen(SRV + [CERBOS, "server", f"--config={os.path.join(d, 'config.yaml')}",
                                   "--log-level=warn"],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "cerbos.log"), "w"),
                            env=dict(os.environ, CERBOS_NO_TELEMETRY="1"))


def main():
    records = []
    common = {"tool": "wrk", "connections": CONNS, "layout": LAYOUT, "secs": SECS, "rounds": ROUNDS,
              "cerbos_version": version([CERBOS, "--version"]), "wrk_version": version(["wrk", "-v"])}
    serve = has_serve()
    if not serve:
        print("portcullis has no `serve` subcommand on this branch: measuring Cerbos only", file=sys.stderr)
    for wi, w in enumerate(WORLDS):
        d = os.path.join(OUT, "cerbos", w)
        expected = [json.loads(l) for l in open(os.path.join(d, "expected.jsonl"))]
        cerbos_bodies = os.path.join(d, "cerbos.jsonl")
        portcullis_bodies = os.path.join(d, "portcullis.jsonl")
        port = 3592 + 10 * wi
        pport = 18080 + wi
        store = tempfile.mkdtemp(prefix="portcullis-store-")
        procs = {}
        try:
            # Both servers up (each idle while the other is measured), then the rounds alternate
            # between them, so that both see the same stretches of a shared machine.
            procs["cerbos"] = start_cerbos(d)
            ready = wait_ready(f"http://127.0.0.1:{port}/_cerbos/health", procs["cerbos"])
            differ = {}
            differ["cerbos"] = 0
            for body, exp in zip(open(cerbos_bodies), expected):
                res = post(f"http://127.0.0.1:{port}/api/check/resources", body)
                got = res["results"][0]["actions"][exp["action"]] == "EFFECT_ALLOW"
                differ["cerbos"] += got != exp["allowed"]
            print(f"cerbos {w}: {differ['cerbos']} of {len(expected)} differ (ready in {ready:.1f}s)", file=sys.stderr)
            runs = [("cerbos", f"http://127.0.0.1:{port}/api/check/resources", cerbos_bodies)]
            if serve:
                procs["portcullis"] = subprocess.Popen(
                    SRV + [PORTCULLIS, "serve", "--listen", f"127.0.0.1:{pport}", "--data",
                           os.path.join(d, "world.json"), "--store", store],
                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "portcullis.log"), "w"))
                wait_ready(f"http://127.0.0.1:{pport}/readyz", procs["portcullis"])
                differ["portcullis"] = 0
                for body, exp in zip(open(portcullis_bodies), expected):
                    res = post(f"http://127.0.0.1:{pport}/v1/check", body)
                    differ["portcullis"] += res["allowed"] != exp["allowed"]
                print(f"portcullis {w}: {differ['portcullis']} of {len(expected)} differ", file=sys.stderr)
                runs.append(("portcullis", f"http://127.0.0.1:{pport}/v1/check", portcullis_bodies))
            for rnd in range(1, ROUNDS + 1):
                for server, url, bodies in runs:
                    r = wrk(url, bodies, procs[server].pid)
                    records.append({"world": w, "server": server, "round": rnd, **common,
                                    "cases": len(expected), "differ": differ[server],
                                    "peak_rss_kb": rss_kb(procs[server].pid),
                                    **{k: v for k, v in r.items() if k != "raw"}})
                    print(f"{w} {server} round {rnd}:\n{r['raw']}", file=sys.stderr)
            if wi == 0:
                # Where Cerbos' time goes: the same server on its cheapest body (a principal with
                # no grants), sent over and over.
                bodies = open(cerbos_bodies).read().splitlines()
                cheapest = min(bodies, key=lambda b: len(json.loads(b)["principal"]["attr"]["grants"]))
                floor = os.path.join(d, "cerbos-floor.jsonl")
                with open(floor, "w") as f:
                    f.write(cheapest + "\n")
                r = wrk(f"http://127.0.0.1:{port}/api/check/resources", floor, procs["cerbos"].pid)
                records.append({"world": w, "server": "cerbos-floor", "round": 1, **common, "cases": 0,
                                "differ": 0, "peak_rss_kb": rss_kb(procs["cerbos"].pid),
                                **{k: v for k, v in r.items() if k != "raw"}})
                print(r["raw"], file=sys.stderr)
        finally:
            for p in procs.values():
                stop(p)
            shutil.rmtree(store, ignore_errors=True)
    with open(os.path.join(OUT, "http.jsonl"), "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
