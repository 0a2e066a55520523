"""Data-parallel GRPO throughput: 1 rank against N ranks (torchrun, gloo), same global batch.

    python benchmarks/distributed.py                 # toy backbone, 16 prompts × 4 samples, 1 vs 2 ranks

Each configuration is a real ``tinylora train`` run (a subprocess, one thread per rank) of
``--steps`` GRPO steps on the shipped toy backbone; the first step is a warm-up and is not counted.
Throughput comes from the runs' own metrics: rollout tokens/s = generated tokens / step time, and
steps/min. A third row, 1 process with N threads, is the honest reference on a machine with N cores:
data parallelism has to beat intra-op threading, not just one thread. The N-rank run must produce
the same completions as the 1-rank run (checked), so the comparison is of equal work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(label: str, nproc: int, threads: int, a, root: Path) -> dict:
    out = root / label.replace(" ", "_")
    overrides = [f"steps={a.steps + 1}", f"prompts_per_step={a.prompts}", f"group_size={a.group}",
                 f"max_new_tokens={a.max_new}", "eval_before=false", "eval_limit=8", "checkpoint_every=0",
                 "device=cpu", f"out_dir={out}"]
    cmd = [sys.executable, "-m", "tinylora", "train", *(["--nproc", str(nproc)] if nproc > 1 else []), *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{label} failed:\n{r.stderr[-3000:]}")
    wall = time.time() - t0
    m = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()][1:]  # drop the warm-up
    step_s = sum(x["step_s"] for x in m)
    tokens = sum(x["rollout_tokens"] for x in m)
    return {"label": label, "ranks": nproc, "threads_per_rank": threads, "median_step_s": statistics.median(
        x["step_s"] for x in m), "steps_per_min": 60 * len(m) / step_s, "rollout_tokens_per_s": tokens / step_s,
        "rollout_tokens": tokens, "wall_s": round(wall, 1), "completions": (out / "completions.jsonl").read_text()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=2, help="ranks to compare against 1 (default 2: this machine's cores)")
    p.add_argument("--steps", type=int, default=6, help="timed steps (one more is run as a warm-up)")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--max-new", type=int, default=96)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rows = [run("1 rank, 1 thread", 1, 1, a, Path(d)),
                run(f"{a.nproc} ranks, 1 thread each", a.nproc, 1, a, Path(d)),
                run(f"1 rank, {a.nproc} threads", 1, a.nproc, a, Path(d))]
    same = rows[1]["completions"] == rows[0]["completions"]
    print(f"GRPO on the toy backbone: {a.prompts} prompts × {a.group} samples, ≤{a.max_new} new tokens, "
          f"{a.steps} timed steps (+1 warm-up); os.cpu_count()={os.cpu_count()}")
    print(f"{'configuration':<26} {'step (median)':>14} {'steps/min':>10} {'rollout tok/s':>14}")
    for r in rows:
        print(f"{r['label']:<26} {r['median_step_s']:>13.2f}s {r['steps_per_min']:>10.1f} {r['rollout_tokens_per_s']:>14.0f}")
    base, dp, thr = rows
    print(f"\n{a.nproc} ranks vs 1 rank (1 thread each): {dp['rollout_tokens_per_s'] / base['rollout_tokens_per_s']:.2f}× "
          f"rollout tokens/s, {dp['steps_per_min'] / base['steps_per_min']:.2f}× steps/min")
    print(f"{a.nproc} ranks vs 1 rank with {a.nproc} threads: "
          f"{dp['steps_per_min'] / thr['steps_per_min']:.2f}× steps/min")
    print(f"identical completions, 1 rank vs {a.nproc} ranks: {same}; 1 vs {a.nproc} threads: "
          f"{rows[2]['completions'] == rows[0]['completions']} (thread count may change float sums)")
    if not same:
        raise SystemExit("1 rank and N ranks generated different completions: not equal work")


if __name__ == "__main__":
    main()
