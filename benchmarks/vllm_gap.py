"""The rollout/trainer log-prob gap: tokens sampled by vLLM, scored again by the trainer's forward.

    # in the vLLM environment (README, "vLLM")
    python benchmarks/vllm_gap.py --data-dir ../shared/data

Qwen2.5-Coder-0.5B-Instruct with a 13-parameter TinyLoRA adapter (u = 13, tying all, v ~ N(0, σ²), seed 0),
``--prompts`` GSM8K test prompts × ``--samples`` samples at T = 1 through vLLM (the adapter as its rank-2
LoRA, the base in ``--dtype``); then the trainer's log-probs of the same tokens (the unmerged adapter path,
the loss forward of GRPO) on that base. Per token: |log π_train − log π_vLLM| (mean, p99, max), and the
share of tokens whose truncated importance weight min(π_train / π_vLLM, 2) would be capped — what
``rollout_lp_gap`` and ``tis_cap: 2.0`` see in a GRPO run. The CPU's flags are printed.
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--data-dir")
    ap.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import tinylora
    from tinylora import tasks
    from tinylora._core.threads import cpu_features
    from tinylora.adapters.multi import set_flat_values
    from tinylora.generation import vllm_engine
    from tinylora.generation.generate import Sampling
    from tinylora.generation.rollout import LocalBackend
    from tinylora.models.loading import load_model, load_tokenizer
    from tinylora.trainers.batch import build_batch, completion_logprobs

    vllm_engine.require()
    cpu = cpu_features()
    print(f"CPU: {cpu['model']}; flags {', '.join(cpu['flags']) or 'none of ours'}; {args.threads} threads", flush=True)
    tok = load_tokenizer(args.model)
    task = tasks.get("gsm8k", data_dir=args.data_dir)
    prompts = [task.prompt(e, tok) for e in task.load("test")[:args.prompts]]
    model = load_model(args.model, dtype=args.dtype)
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"), progress=False)
    set_flat_values(model, args.sigma * torch.randn(tinylora.num_trainable(model),
                                                    generator=torch.Generator().manual_seed(0)))
    seeds = list(range(len(prompts) * args.samples))
    ro = LocalBackend(model, tok, engine="vllm").generate(prompts, args.samples, Sampling(1.0, 1.0, args.new_tokens),
                                                          seeds)
    gaps, capped = [], 0
    with torch.no_grad():
        for lo in range(0, len(ro.completion_ids), 8):
            idx = range(lo, min(lo + 8, len(ro.completion_ids)))
            batch = build_batch([ro.prompt_ids[i] for i in idx], [ro.completion_ids[i] for i in idx], tok.pad_token_id)
            lp = completion_logprobs(model, batch, temperature=1.0)
            for row, i in enumerate(idx):
                n = len(ro.completion_ids[i])
                ours = lp[row, -n:].float()
                theirs = torch.tensor(ro.logprobs[i])
                gaps.append((ours - theirs).abs())
                capped += int((torch.exp(ours - theirs) >= 2.0).sum())
    g = torch.cat(gaps)
    res = {"model": args.model, "dtype": args.dtype, "tokens": g.numel(), "gap_mean": float(g.mean()),
           "gap_p99": float(g.quantile(0.99)), "gap_max": float(g.max()), "tis_capped_share": capped / g.numel(),
           "cpu": cpu}
    print(f"{args.dtype} base, {g.numel()} sampled tokens: |Δ log p| mean {res['gap_mean']:.4f}, p99 "
          f"{res['gap_p99']:.4f}, max {res['gap_max']:.3f}; π_train/π_vLLM ≥ 2 on {100 * res['tis_capped_share']:.2f}% "
          "of tokens", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
