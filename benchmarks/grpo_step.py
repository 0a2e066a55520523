"""One GRPO step on the toy backbone: tinylora vs TRL's GRPOTrainer + PEFT TinyLoRA, same config.

    python benchmarks/grpo_step.py          # B=16 prompts × G=4 samples, ≤96 new tokens, 13 parameters

Each side runs in its own subprocess (so peak memory is its own): a warm-up step, then the median
wall time of ``--steps`` steps (generation, scoring, update). TRL is configured for CPU as
../shared/FACTS.md found necessary (use_cpu, no bf16, no gradient checkpointing), with beta=0,
clip 0.2/0.4 and its token-level "dapo" loss to match ours.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(a) -> dict:
    import torch

    from tinylora.trainers.config import TrainConfig
    from tinylora.trainers.grpo import GRPOTrainer

    torch.set_num_threads(a.threads)
    cfg = TrainConfig(steps=a.steps + 1, prompts_per_step=a.prompts, group_size=a.group, max_new_tokens=a.max_new,
                      eval_before=False, out_dir=tempfile.mkdtemp())
    tr = GRPOTrainer(cfg, progress=False)
    times = []
    for s in range(a.steps + 1):
        t = time.perf_counter()
        tr.train_step(s)
        times.append(time.perf_counter() - t)
    return {"step_s": statistics.median(times[1:]), "peak_rss_mb": peak_rss_mb()}


def run_trl(a) -> dict:
    import torch
    from datasets import Dataset
    from peft import TinyLoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tinylora import tasks
    from tinylora.models.loading import load_model, load_tokenizer

    torch.set_num_threads(a.threads)
    task = tasks.get("arith")
    examples = task.load("train")[: a.prompts * (a.steps + 1)]
    ds = Dataset.from_list([{"prompt": task.prompt(e), "answer": e.answer} for e in examples])

    def reward(completions, answer, **kw):
        return [task.score(c, r) for c, r in zip(completions, answer)]

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    tok = load_tokenizer("toy")
    tok.padding_side = "left"
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, gradient_checkpointing=False,
        per_device_train_batch_size=a.prompts * a.group, num_generations=a.group, max_completion_length=a.max_new,
        temperature=1.0, beta=0.0, epsilon=0.2, epsilon_high=0.4, loss_type="dapo", learning_rate=2e-2,
        max_steps=a.steps + 1, logging_steps=1, report_to=[], save_strategy="no", seed=0, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=load_model("toy"), reward_funcs=reward, args=args, train_dataset=ds,
                          processing_class=tok, callbacks=[Timer()],
                          peft_config=TinyLoraConfig(r=2, u=13, weight_tying=1.0, target_modules=TARGETS))
    trainer.train()
    return {"step_s": statistics.median(times[1:]), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=96)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.side:
        print("RESULT " + json.dumps(run_ours(a) if a.side == "ours" else run_trl(a)))
        return
    results = {}
    for side in ("ours", "trl"):
        cmd = [sys.executable, __file__, "--side", side, "--prompts", str(a.prompts), "--group", str(a.group),
               "--max-new", str(a.max_new), "--steps", str(a.steps), "--threads", str(a.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
        results[side] = json.loads(line[-1][7:])
    o, t = results["ours"], results["trl"]
    print(f"GRPO step, toy backbone, {a.prompts} prompts × {a.group} samples, ≤{a.max_new} new tokens, "
          f"13 parameters, {a.threads} threads, median of {a.steps} after a warm-up")
    print(f"{'':22s} {'tinylora':>10s} {'TRL+PEFT':>10s} {'ratio':>8s}")
    print(f"{'step time (s)':22s} {o['step_s']:10.2f} {t['step_s']:10.2f} {t['step_s'] / o['step_s']:7.2f}×")
    print(f"{'peak RSS (MB)':22s} {o['peak_rss_mb']:10.0f} {t['peak_rss_mb']:10.0f} "
          f"{t['peak_rss_mb'] / o['peak_rss_mb']:7.2f}×")


if __name__ == "__main__":
    main()
