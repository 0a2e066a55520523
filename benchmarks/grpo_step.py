"""One GRPO step: tinylora vs TRL's GRPOTrainer + PEFT TinyLoRA, same config.

    python benchmarks/grpo_step.py          # toy backbone: B=16 prompts × G=4 samples, ≤96 new tokens, 13 parameters
    python benchmarks/grpo_step.py --model qwen0.5b --data-dir ../shared/data --prompts 8 --group 4 \
        --max-new 256 --micro-batch 8 --steps 1 --warmup 0      # Qwen2.5-Coder-0.5B-Instruct on GSM8K train

On the 0.5B ours runs its base in ``--dtype`` (auto: bf16 where this CPU has fast bf16 units; the adapter
path stays fp32) and TRL in ``--trl-dtype`` (fp32: FACTS found TRL's bf16 unusable on CPU), both with
micro-batches of ``--micro-batch`` sequences (TRL: gradient accumulation over one generation batch of
B × G), the gsm8k task's training reward, T = 1.

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

QWEN = "qwen2.5-coder-0.5b-instruct"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(a) -> dict:
    import torch

    import tinylora.trainers.batch as batch_mod
    from tinylora.trainers.config import TrainConfig
    from tinylora.trainers.grpo import GRPOTrainer

    torch.set_num_threads(a.threads)
    if a.head_chunk_rows is not None:  # 0: the head's logits at once (as before the chunked head)
        import tinylora.trainers.batch as batch

        batch.HEAD_CHUNK_ROWS = a.head_chunk_rows
    real = {} if a.model == "toy" else {
        "model": QWEN, "task": "gsm8k", "task_args": {"data_dir": f"{a.data_dir}/gsm8k"}, "dtype": a.dtype}
    cfg = TrainConfig(steps=a.steps + a.warmup, prompts_per_step=a.prompts, group_size=a.group,
                      max_new_tokens=a.max_new, micro_batch_size=a.micro_batch, eval_before=False,
                      out_dir=tempfile.mkdtemp(), **real)
    tr = GRPOTrainer(cfg, progress=False)
    times, rollouts = [], []
    for s in range(a.steps + a.warmup):
        t = time.perf_counter()
        m = tr.train_step(s)
        times.append(time.perf_counter() - t)
        rollouts.append(m.get("rollout_s", float("nan")))
        last = m
    return {"step_s": statistics.median(times[a.warmup:]), "rollout_s": statistics.median(rollouts[a.warmup:]),
            "peak_rss_mb": peak_rss_mb(), "head_chunk_rows": batch_mod.HEAD_CHUNK_ROWS, "dtype": tr.dtype, "dtype_why": tr.dtype_why, "allocator": tr.allocator,
            **{k: v for k, v in last.items() if k in ("rollout_lp_gap", "rollout_lp_gap_max", "reward_mean",
                                                      "rollout_tokens", "frac_zero_std")}}


def run_trl(a) -> dict:
    import torch
    from datasets import Dataset
    from peft import TinyLoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tinylora import tasks
    from tinylora.models.loading import load_model, load_tokenizer

    torch.set_num_threads(a.threads)
    name = "toy" if a.model == "toy" else QWEN
    task = tasks.get("arith") if a.model == "toy" else tasks.get("gsm8k", data_dir=f"{a.data_dir}/gsm8k")
    tok = load_tokenizer(name)
    tok.padding_side = "left"
    examples = task.load("train")[: a.prompts * (a.steps + a.warmup)]
    ds = Dataset.from_list([{"prompt": task.prompt(e, tok), "answer": e.answer} for e in examples])

    def reward(completions, answer, **kw):
        return [task.score(c, r) for c, r in zip(completions, answer)]

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    rows = a.prompts * a.group
    micro = min(a.micro_batch, rows)
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, gradient_checkpointing=False,
        per_device_train_batch_size=micro, gradient_accumulation_steps=rows // micro, generation_batch_size=rows,
        num_generations=a.group, max_completion_length=a.max_new,
        temperature=1.0, beta=0.0, epsilon=0.2, epsilon_high=0.4, loss_type="dapo", learning_rate=2e-2,
        max_steps=a.steps + a.warmup, logging_steps=1, report_to=[], save_strategy="no", seed=0,
        dataloader_num_workers=0,
    )
    model = load_model(name, dtype="fp32" if a.model == "toy" else a.trl_dtype)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds,
                          processing_class=tok, callbacks=[Timer()],
                          peft_config=TinyLoraConfig(r=2, u=13, weight_tying=1.0, target_modules=TARGETS))
    trainer.train()
    return {"step_s": statistics.median(times[a.warmup:]), "peak_rss_mb": peak_rss_mb(), "dtype": a.trl_dtype}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=96)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="toy", choices=["toy", "qwen0.5b"])
    ap.add_argument("--data-dir", default="../shared/data", help="qwen0.5b: DIR/gsm8k/train.jsonl")
    ap.add_argument("--micro-batch", type=int, default=64, help="sequences per forward/backward, both sides")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--dtype", default="auto", choices=["fp32", "bf16", "auto"], help="qwen0.5b: our base's dtype")
    ap.add_argument("--trl-dtype", default="fp32", choices=["fp32", "bf16"], help="qwen0.5b: TRL's model dtype")
    ap.add_argument("--head-chunk-rows", type=int, help="ours: positions per chunk of the loss's head (0: all at once)")
    ap.add_argument("--sides", nargs="+", default=["ours", "trl"], choices=["ours", "trl"])
    a = ap.parse_args()
    if a.model == "toy":
        a.dtype = "fp32"
    if a.side:
        from tinylora._core.dtypes import compare_bf16_fp32

        # this machine's matmul speed before and after: a shared host drifts by 2× within minutes (measured),
        # so a ratio of two runs is read together with these
        before = compare_bf16_fp32()
        res = run_ours(a) if a.side == "ours" else run_trl(a)
        res["matmul_bf16_fp32_gflops_before_after"] = [before, compare_bf16_fp32()]
        print("RESULT " + json.dumps(res))
        return
    results = {}
    from tinylora._core.threads import cpu_features

    cpu = cpu_features()
    print(f"CPU: {cpu['model']}; flags {', '.join(cpu['flags'])}; {a.threads} threads", flush=True)
    for side in a.sides:
        cmd = [sys.executable, __file__, "--side", side, "--prompts", str(a.prompts), "--group", str(a.group),
               "--max-new", str(a.max_new), "--steps", str(a.steps), "--threads", str(a.threads),
               "--model", a.model, "--data-dir", a.data_dir, "--micro-batch", str(a.micro_batch),
               "--warmup", str(a.warmup), "--dtype", a.dtype, "--trl-dtype", a.trl_dtype,
               *(["--head-chunk-rows", str(a.head_chunk_rows)] if a.head_chunk_rows is not None else [])]
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if not line:
            sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
        results[side] = json.loads(line[-1][7:])
        print(f"{side}: {json.dumps(results[side])}", flush=True)
    if set(results) != {"ours", "trl"}:
        return
    o, t = results["ours"], results["trl"]
    print(f"GRPO step, {a.model}, {a.prompts} prompts × {a.group} samples, ≤{a.max_new} new tokens, micro-batch "
          f"{a.micro_batch}, 13 parameters, {a.threads} threads, median of {a.steps} after {a.warmup} warm-up; "
          f"ours {o['dtype']} base ({o.get('dtype_why', '')}), TRL {t['dtype']}")
    print(f"{'':22s} {'tinylora':>10s} {'TRL+PEFT':>10s} {'ratio':>8s}")
    print(f"{'step time (s)':22s} {o['step_s']:10.2f} {t['step_s']:10.2f} {t['step_s'] / o['step_s']:7.2f}×")
    print(f"{'peak RSS (MB)':22s} {o['peak_rss_mb']:10.0f} {t['peak_rss_mb']:10.0f} "
          f"{t['peak_rss_mb'] / o['peak_rss_mb']:7.2f}×")

if __name__ == "__main__":
    main()
