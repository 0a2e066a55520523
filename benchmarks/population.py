"""Population throughput: K adapters × B prompts in one batched generation (tinylora.adapters.multi), in one run
against the same rows on the base model alone and against one adapter at a time.

    python benchmarks/population.py                  # toy backbone, K=32 members × B=16 prompts, 2 threads
    python benchmarks/population.py --arch smollm2   # SmolLM2-135M shape, random weights

Every generation runs exactly ``--tokens`` new tokens (no early stop), so the three ways do the same
work: (a) per-row — K·B rows, row group k running member k; (b) the base — K·B rows, no adapter
(the reference: the 1.3× target of issue 13 is a/b); (c) sequential — K generations of B rows, each on
that member's merged weights (how an ES step runs without the per-row mode). Medians of ``--reps``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import tinylora
from tinylora.adapters.multi import adapter_table, per_row


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(arch: str):
    if arch == "toy":
        from tinylora.models.loading import load_model

        return load_model("toy")
    from transformers import AutoModelForCausalLM

    from tinylora.models.synthetic import smollm2_135m_config, with_spectrum

    model = AutoModelForCausalLM.from_config(smollm2_135m_config()).eval()
    with_spectrum(model, seed=0)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=["toy", "smollm2"], default="toy")
    ap.add_argument("--members", type=int, default=32, help="K adapters")
    ap.add_argument("--prompts", type=int, default=16, help="B prompts per member")
    ap.add_argument("--prompt-len", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per row")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = build(args.arch)
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"))
    K, B = args.members, args.prompts
    values = 0.1 * torch.randn(K, tinylora.num_trainable(model), generator=torch.Generator().manual_seed(0))
    vocab = model.config.vocab_size
    prompts = torch.randint(10, vocab, (B, args.prompt_len), generator=torch.Generator().manual_seed(1))
    rows_ids = prompts.repeat(K, 1)  # member-major: member k's B prompts are rows k·B … k·B + B − 1
    gen = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False, pad_token_id=0)

    @torch.inference_mode()
    def batched():
        with per_row(model, adapter_table(model, values), torch.arange(K).repeat_interleave(B)):
            model.generate(rows_ids, attention_mask=torch.ones_like(rows_ids), **gen)

    @torch.inference_mode()
    def base():
        with tinylora.disabled(model):
            model.generate(rows_ids, attention_mask=torch.ones_like(rows_ids), **gen)

    @torch.inference_mode()
    def sequential():
        from tinylora.adapters.multi import set_flat_values

        for k in range(K):
            set_flat_values(model, values[k])
            with tinylora.merged(model):
                model.generate(prompts, attention_mask=torch.ones_like(prompts), **gen)

    t_batched, t_base, t_seq = timed(batched, args.reps), timed(base, args.reps), timed(sequential, args.reps)
    tokens = K * B * args.tokens
    out = {"arch": args.arch, "members": K, "prompts": B, "rows": K * B, "new_tokens": args.tokens,
           "threads": args.threads, "batched_s": t_batched, "base_s": t_base, "sequential_s": t_seq,
           "batched_tok_s": tokens / t_batched, "base_tok_s": tokens / t_base, "sequential_tok_s": tokens / t_seq,
           "batched_over_base": t_batched / t_base, "speedup_vs_sequential": t_seq / t_batched}
    print(f"{args.arch}: K={K} members × B={B} prompts = {K * B} rows, {args.tokens} new tokens each, "
          f"{args.threads} threads")
    print(f"  per-row batched  {t_batched:7.2f} s  {tokens / t_batched:8.0f} tok/s  "
          f"({t_batched / t_base:.2f}× the base's time; target ≤ 1.3×)")
    print(f"  base, no adapter {t_base:7.2f} s  {tokens / t_base:8.0f} tok/s")
    print(f"  one at a time    {t_seq:7.2f} s  {tokens / t_seq:8.0f} tok/s  (batched is {t_seq / t_batched:.1f}× faster)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
