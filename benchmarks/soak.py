"""Soak ``tinylora serve``: 64 clients for 10 minutes with a mix of adapters, streaming, disconnects and bad
requests; latency and memory at the start and at the end, no error, nothing lost.

    python benchmarks/soak.py                       # toy backbone, 100 adapters, 64 clients, 10 minutes
    python benchmarks/soak.py --minutes 1 --json soak.json

Each client loops until the time is up, drawing its next request from a seeded stream: 65% a greedy
completion (≤ 24 tokens) naming one of ``--adapters`` adapters or the base, 15% the same streamed, 10% a
stream it abandons after the first chunk (a disconnect), 10% a malformed request (a random bad field
value) that must come back 400. Anything else — a 5xx, a timeout, a 200 on a bad request, a stream
without [DONE] — counts as an error. At the end the server's ``/metrics`` must account for every
request the clients finished (nothing lost), and its log must hold one line per request. Reported:
p50/p99 latency of the plain completions in the first and the last minute, the server's resident
memory (VmRSS) after the first and the last minute, requests by kind, errors.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import free_port, write_adapters  # noqa: E402  (benchmarks/serve.py)

BAD = [{"max_tokens": -1}, {"temperature": "hot"}, {"top_p": float("inf")}, {"n": 99}, {"stop": 5},
       {"presence_penalty": 1}, {"logprobs": 9}, {"model": 7}, {"prompt": []}, {"seed": "x"}]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(port: int, body: dict, timeout: float):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/v1/completions", body=json.dumps(body, allow_nan=True),
                 headers={"Content-Type": "application/json"})
    return conn, conn.getresponse()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--adapters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        folder, log = Path(d) / "skills", Path(d) / "server.log"
        folder.mkdir()
        write_adapters("toy", folder, a.adapters)
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
        with log.open("w") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "tinylora", "serve", "--model", "toy", "--adapters",
                                     str(folder), "--port", str(port), "--max-batch", str(a.clients),
                                     "--threads", str(a.threads)], env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 300
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError("server did not start: " + log.read_text()[-2000:])
                    time.sleep(0.3)
            out = run_load(a, port, proc.pid)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60).read().decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        counted = sum(float(x.rsplit(" ", 1)[1]) for x in metrics.splitlines()
                      if x.startswith("tinylora_requests_total{"))
        logged = sum(1 for x in log.read_text().splitlines() if "tinylora.serve.requests: " in x)
    out.update(server_counted=int(counted), server_logged=logged, exit_code=proc.returncode)
    finished = out["finished"]
    out["lost"] = finished - int(counted)
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    ok = out["errors"] == 0 and out["lost"] == 0 and logged == int(counted) and proc.returncode == 0
    print("soak:", "no error, nothing lost" if ok else "FAILED")
    sys.exit(0 if ok else 1)


def run_load(a, port: int, pid: int) -> dict:
    t0 = time.time()
    end = t0 + 60 * a.minutes
    lock = threading.Lock()
    plain: list[tuple[float, float]] = []  # (start offset, latency)
    kinds = {"plain": 0, "stream": 0, "disconnect": 0, "bad": 0}
    errors: list[str] = []
    finished = [0]
    rss: dict[str, float] = {}
    prompts = ["Q: Tom has 7 apples and gets 5 more. How many?\nA:", "Q: 12 - 3 + 4 =\nA:", "Q: 9 + 8 - 6 =\nA:"]

    def one(rng: random.Random) -> None:
        x = rng.random()
        body = {"model": rng.choice(["toy"] + [f"s{i}" for i in range(a.adapters)]), "prompt": rng.choice(prompts),
                "max_tokens": 24, "temperature": 0}
        kind = "plain" if x < 0.65 else "stream" if x < 0.80 else "disconnect" if x < 0.90 else "bad"
        if kind == "bad":
            body.update(rng.choice(BAD))
        if kind in ("stream", "disconnect"):
            body["stream"] = True
        t = time.time()
        conn, r = post(port, body, a.timeout)
        try:
            if kind == "bad":
                payload = json.loads(r.read())
                if r.status != 400 or "error" not in payload:
                    raise AssertionError(f"bad request {body} → {r.status}")
            elif kind == "plain":
                payload = json.loads(r.read())
                if r.status != 200 or not payload.get("choices"):
                    raise AssertionError(f"completion → {r.status} {payload}")
                with lock:
                    plain.append((t - t0, time.time() - t))
            elif kind == "stream":
                text = r.read().decode()
                if r.status != 200 or not text.rstrip().endswith("data: [DONE]"):
                    raise AssertionError(f"stream → {r.status}, no [DONE]")
            else:  # read the first event, then hang up
                r.readline()
                conn.sock.close()
        finally:
            conn.close()
        with lock:
            kinds[kind] += 1
            finished[0] += 1

    def client(c: int) -> None:
        rng = random.Random(c)
        while time.time() < end:
            try:
                one(rng)
            except Exception as e:  # noqa: BLE001  (every failure is counted, none stops the soak)
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:300])

    def sampler() -> None:
        while time.time() < end:
            elapsed = time.time() - t0
            if "first_minute" not in rss and elapsed >= min(60, 60 * a.minutes / 2):
                rss["first_minute"] = rss_mb(pid)
            time.sleep(1)
        rss["end"] = rss_mb(pid)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)] + [threading.Thread(target=sampler)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.time() - t0
    last_start = max(0.0, wall - 60)

    def pct(xs, q):
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3) if xs else None

    first = [lat for s, lat in plain if s < 60]
    last = [lat for s, lat in plain if s >= last_start]
    # a disconnect leaves the server to finish the row: give it time to account for it before /metrics
    time.sleep(5)
    return {"minutes": a.minutes, "clients": a.clients, "adapters": a.adapters, "wall_s": round(wall, 1),
            "finished": finished[0], "kinds": kinds, "errors": len(errors), "error_examples": errors[:5],
            "plain_p50_first_minute_s": pct(first, 0.5), "plain_p99_first_minute_s": pct(first, 0.99),
            "plain_p50_last_minute_s": pct(last, 0.5), "plain_p99_last_minute_s": pct(last, 0.99),
            "plain_median_s": round(statistics.median([lat for _, lat in plain]), 3) if plain else None,
            "rss_mb_first_minute": round(rss.get("first_minute", float("nan")), 1),
            "rss_mb_end": round(rss.get("end", float("nan")), 1)}


if __name__ == "__main__":
    main()
