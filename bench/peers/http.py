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
SECS = int(os.environ.get("PEERS_HTTP_SECS", "20"))
CONNS = int(os.environ.get("PEERS_HTTP_CONNS", "32"))
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


def wrk(url, bodies):
    env = dict(os.environ, BODIES=bodies)
    cmd = ["wrk", "-t2", f"-c{CONNS}", f"-d{SECS}s", "--latency", "-s",
           os.path.join(ROOT, "bench", "peers", "wrk.lua"), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=SECS + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50_ns": to_ns(lat.get("50", "")), "p99_ns": to_ns(lat.get("99", "")),
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


def main():
    records = []
    serve = has_serve()
    if not serve:
        print("portcullis has no `serve` subcommand on this branch: measuring Cerbos only", file=sys.stderr)
    for wi, w in enumerate(WORLDS):
        d = os.path.join(OUT, "cerbos", w)
        expected = [json.loads(l) for l in open(os.path.join(d, "expected.jsonl"))]
        cerbos_bodies = os.path.join(d, "cerbos.jsonl")
        port = 3592 + 10 * wi
        # --- Cerbos
        proc = subprocess.Popen([CERBOS, "server", f"--config={os.path.join(d, 'config.yaml')}"],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "cerbos.log"), "w"),
                                env=dict(os.environ, CERBOS_NO_TELEMETRY="1"))
        try:
            ready = wait_ready(f"http://127.0.0.1:{port}/_cerbos/health", proc)
            differ = 0
            for body, exp in zip(open(cerbos_bodies), expected):
                res = post(f"http://127.0.0.1:{port}/api/check/resources", body)
                got = res["results"][0]["actions"][exp["action"]] == "EFFECT_ALLOW"
                differ += got != exp["allowed"]
            print(f"cerbos {w}: {differ} of {len(expected)} differ (ready in {ready:.1f}s)", file=sys.stderr)
            r = wrk(f"http://127.0.0.1:{port}/api/check/resources", cerbos_bodies)
            records.append({"world": w, "server": "cerbos", "tool": "wrk", "connections": CONNS,
                            "cases": len(expected), "differ": differ, "peak_rss_kb": rss_kb(proc.pid),
                            **{k: v for k, v in r.items() if k != "raw"}})
            print(r["raw"], file=sys.stderr)
        finally:
            stop(proc)
        # --- Portcullis
        if serve:
            store = tempfile.mkdtemp(prefix="portcullis-store-")
            pport = 18080 + wi
            proc = subprocess.Popen([PORTCULLIS, "serve", "--listen", f"127.0.0.1:{pport}", "--data",
                                     os.path.join(d, "world.json"), "--store", store],
                                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "portcullis.log"), "w"))
            try:
                wait_ready(f"http://127.0.0.1:{pport}/readyz", proc)
                differ = 0
                for body, exp in zip(open(os.path.join(d, "portcullis.jsonl")), expected):
                    res = post(f"http://127.0.0.1:{pport}/v1/check", body)
                    differ += res["allowed"] != exp["allowed"]
                print(f"portcullis {w}: {differ} of {len(expected)} differ", file=sys.stderr)
                r = wrk(f"http://127.0.0.1:{pport}/v1/check", os.path.join(d, "portcullis.jsonl"))
                records.append({"world": w, "server": "portcullis", "tool": "wrk", "connections": CONNS,
                                "cases": len(expected), "differ": differ, "peak_rss_kb": rss_kb(proc.pid),
                                **{k: v for k, v in r.items() if k != "raw"}})
                print(r["raw"], file=sys.stderr)
            finally:
                stop(proc)
                shutil.rmtree(store, ignore_errors=True)
    with open(os.path.join(OUT, "http.jsonl"), "a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
