"""Contention: attach, one GRPO step and one evaluation, idle vs beside two busy processes, under
torch's default OpenMP wait policy and under ours (OMP_WAIT_POLICY=PASSIVE), in one run.

    python benchmarks/contention.py              # ≈ 5 min on 2 cores
    python benchmarks/contention.py --reps 1     # quicker

Each measurement runs in a fresh process (the wait policy must be set before torch loads) with 2
torch threads; "loaded" starts two pure-Python busy loops first (load ≈ 4 on 2 cores) and stops
them after. Workloads: attach TinyLoRA to 14 Qwen2.5-0.5B-shaped modules (2 layers, random
weights with a spectrum); one default GRPO step on the toy world (16 prompts × 4 samples); greedy
evaluation of 64 toy problems. Reported: median seconds of ``--reps`` runs and loaded / idle.
The goal (issue 15): no workload slower than 3× its idle time under load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKLOAD = r'''
import json, sys, time
import torch
torch.set_num_threads(2)
kind = sys.argv[1]
if kind == "attach":
    from transformers import AutoModelForCausalLM
    import tinylora
    from tinylora.synthetic import qwen25_05b_config, with_spectrum
    cfg = qwen25_05b_config(); cfg.num_hidden_layers = 2
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval(); with_spectrum(model, seed=0)
    t = time.perf_counter(); tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"), progress=False)
    print(json.dumps({"s": time.perf_counter() - t}))
elif kind == "grpo_step":
    from tinylora.train_config import TrainConfig
    from tinylora.trainers import make_trainer
    import tempfile
    tr = make_trainer(TrainConfig(out_dir=tempfile.mkdtemp(), log_completions=False), progress=False)
    t = time.perf_counter(); tr.train_step(0)
    print(json.dumps({"s": time.perf_counter() - t}))
elif kind == "eval":
    from tinylora import tasks
    from tinylora.evaluation import evaluate
    from tinylora.loading import load_model, load_tokenizer
    model, tok = load_model("toy"), load_tokenizer("toy")
    task = tasks.get("arith")
    t = time.perf_counter()
    evaluate(model, tok, task, limit=64, batch_size=64, max_new_tokens=96, progress=False)
    print(json.dumps({"s": time.perf_counter() - t}))
'''

POLICIES = {"torch default": {}, "passive (ours)": {"OMP_WAIT_POLICY": "PASSIVE"}}


def measure(kind: str, policy_env: dict) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(policy_env)
    r = subprocess.run([sys.executable, "-c", WORKLOAD, kind], env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["s"]


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hogs", type=int, default=2, help="busy processes for the loaded condition")
    ap.add_argument("--workloads", nargs="+", default=["attach", "grpo_step", "eval"])
    ap.add_argument("--json")
    args = ap.parse_args()
    results = {}
    for loaded in (False, True):
        hogs = busy(args.hogs) if loaded else []
        try:
            time.sleep(1.0 if loaded else 0.0)
            for kind in args.workloads:
                for name, env in POLICIES.items():
                    s = statistics.median(measure(kind, env) for _ in range(args.reps))
                    results[(kind, name, loaded)] = s
                    print(f"{kind:>10} · {name:<15} · {'loaded' if loaded else 'idle':<6}: {s:7.2f} s", flush=True)
        finally:
            for h in hogs:
                h.kill()
    print(f"\n| workload | policy | idle (s) | beside {args.hogs} busy processes (s) | loaded / idle |")
    print("|---|---|---|---|---|")
    rows = []
    for kind in args.workloads:
        for name in POLICIES:
            idle, load = results[(kind, name, False)], results[(kind, name, True)]
            rows.append({"workload": kind, "policy": name, "idle_s": idle, "loaded_s": load, "ratio": load / idle})
            print(f"| {kind} | {name} | {idle:.2f} | {load:.2f} | {load / idle:.1f}× |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
