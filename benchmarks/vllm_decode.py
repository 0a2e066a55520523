"""Decode side by side: our loop against vLLM on the same base, without and with a 13-parameter adapter.

    # in the vLLM environment (README, "vLLM"): tinylora installed there too
    python benchmarks/vllm_decode.py --data-dir ../shared/data                       # Qwen2.5-Coder-0.5B, fp32 and bf16
    python benchmarks/vllm_decode.py --dtype bf16 --prompts 64 --new-tokens 64

One process, one machine, one run each: 64 GSM8K test prompts in the model's chat template, greedy, 64
new tokens. For each dtype of the base (fp32; bf16 where asked), four cases through
``generate_tokens``: ours and vLLM (``engine="vllm"``), each on the base and with a 13-parameter
TinyLoRA adapter (u = 13, tying all, v ~ N(0, σ²), fixed seed: a small update like a trained one,
which keeps the text sensible). vLLM runs the adapter as a rank-2 LoRA on 168 modules. Tokens/s count
generated tokens up to and including EOS; each figure is the median of ``--reps`` calls after one
warm-up call of each engine (vLLM's first call compiles and loads the LoRA), the two engines timed in
turn within each repetition (a shared host's speed drifts by 2× within minutes: measured). Agreement: the share of rows whose
greedy tokens are identical in both engines, and the mean share of each row's tokens before the first
divergence. Beside them, in the same run, the matmul roofline of the dtype (a (rows×896)·(896×4864)
product, best of 20; 2 × parameters FLOPs a token). The CPU's flags are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import statistics

import torch


def alternated(fns: dict, reps: int) -> dict:
    """Median seconds of each callable over ``reps`` calls after one warm-up of each, the callables run
    in turn within every repetition, so a drift in the host's speed reaches all of them alike."""
    out = {k: fn() for k, fn in fns.items()}  # warm-up; keeps each engine's last output
    times: dict = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            out[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(times[k]), out[k], times[k]) for k in fns}


def count(ids: torch.Tensor, eos: int) -> int:
    done = (ids == eos).long().cumsum(1)
    return int(((done - (ids == eos).long()) == 0).sum())


def rows_of(ids: torch.Tensor, eos: int) -> list[list[int]]:
    out = []
    for r in ids.tolist():
        out.append(r[:r.index(eos) + 1] if eos in r else r)
    return out


def agreement(a: list[list[int]], b: list[list[int]]) -> dict[str, float]:
    same, prefix = 0, []
    for x, y in zip(a, b):
        same += x == y
        n = 0
        while n < min(len(x), len(y)) and x[n] == y[n]:
            n += 1
        prefix.append(n / max(len(x), len(y), 1))
    return {"identical_rows": same / len(a), "mean_prefix_share": sum(prefix) / len(prefix)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--data-dir", help="local GSM8K (DIR/gsm8k/test.jsonl)")
    ap.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--sigma", type=float, default=0.02, help="the adapter's v ~ N(0, sigma²)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import tinylora
    from tinylora import tasks
    from tinylora._core.threads import cpu_features
    from tinylora.adapters.multi import set_flat_values
    from tinylora.generation import vllm_engine
    from tinylora.generation.generate import Sampling, generate_tokens
    from tinylora.models.loading import load_model, load_tokenizer

    vllm_engine.require()
    cpu = cpu_features()
    print(f"CPU: {cpu['model']}; flags {', '.join(cpu['flags']) or 'none of ours'}; {args.threads} threads", flush=True)
    tok = load_tokenizer(args.model)
    task = tasks.get("gsm8k", data_dir=args.data_dir)
    prompts = [task.prompt(e, tok) for e in task.load("test")[:args.prompts]]
    sampling = Sampling(0.0, 1.0, args.new_tokens)
    rows = []
    for dtype in args.dtype:
        model = load_model(args.model, dtype=dtype)
        res = {}
        for adapted in (False, True):
            if adapted:
                tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"), progress=False)
                n = tinylora.num_trainable(model)
                set_flat_values(model, args.sigma * torch.randn(n, generator=torch.Generator().manual_seed(0)))
            timed = alternated({engine: (lambda engine=engine: generate_tokens(
                model, tok, prompts, sampling=sampling, engine=engine)) for engine in ("tinylora", "vllm")}, args.reps)
            for engine, (s, g, all_s) in timed.items():
                toks = count(g.new_ids, tok.eos_token_id)
                key = f"{engine}{'+adapter' if adapted else ''}"
                res[key] = {"s": s, "tokens": toks, "tok_s": toks / s, "reps_s": all_s,
                            "ids": rows_of(g.new_ids, tok.eos_token_id)}
                print(f"{dtype} {key}: {toks} tokens in {s:.2f} s = {toks / s:.0f} tok/s "
                      f"(reps {', '.join(f'{t:.1f}' for t in all_s)} s)", flush=True)
        from tinylora._core.dtypes import matmul_gflops

        gflops = matmul_gflops(dtype, m=len(prompts), reps=20)  # the decode step's MLP shape, this dtype
        flop_per_token = 2 * sum(p.numel() for n, p in model.named_parameters() if "tinylora" not in n)
        row = {"model": args.model, "dtype": dtype, "rows": len(prompts), "new_tokens": args.new_tokens,
               "threads": args.threads, "cpu": cpu, "sigma": args.sigma, "matmul_gflops": gflops,
               "roofline_tok_s": gflops * 1e9 / flop_per_token}
        for k, v in res.items():
            row[f"{k}_tok_s"] = v["tok_s"]
            row[f"{k}_s"] = v["s"]
        row["base_agreement"] = agreement(res["tinylora"]["ids"], res["vllm"]["ids"])
        row["adapter_agreement"] = agreement(res["tinylora+adapter"]["ids"], res["vllm+adapter"]["ids"])
        row["adapter_changes_ours"] = agreement(res["tinylora"]["ids"], res["tinylora+adapter"]["ids"])
        row["adapter_changes_vllm"] = agreement(res["vllm"]["ids"], res["vllm+adapter"]["ids"])
        eng = next(iter(vllm_engine._ENGINES.values()))
        row["lora_file_bytes"] = eng.synced_bytes // max(eng.syncs, 1)
        print(f"{dtype}: ours {row['tinylora_tok_s']:.0f} / {row['tinylora+adapter_tok_s']:.0f} tok/s (base / adapter), "
              f"vLLM {row['vllm_tok_s']:.0f} / {row['vllm+adapter_tok_s']:.0f}; ours ÷ vLLM with the adapter "
              f"{row['tinylora+adapter_tok_s'] / row['vllm+adapter_tok_s']:.2f}×; greedy rows identical: base "
              f"{100 * row['base_agreement']['identical_rows']:.0f}%, adapter "
              f"{100 * row['adapter_agreement']['identical_rows']:.0f}% (mean prefix "
              f"{100 * row['base_agreement']['mean_prefix_share']:.0f}% / "
              f"{100 * row['adapter_agreement']['mean_prefix_share']:.0f}%); the adapter changes "
              f"{100 * (1 - row['adapter_changes_ours']['identical_rows']):.0f}% of our rows, "
              f"{100 * (1 - row['adapter_changes_vllm']['identical_rows']):.0f}% of vLLM's", flush=True)
        print(f"{dtype}: matmul {gflops:.0f} GFLOPS ({len(prompts)}×896·896×4864) → roofline "
              f"{row['roofline_tok_s']:.0f} tok/s; ours {100 * row['tinylora_tok_s'] / row['roofline_tok_s']:.0f}% of it, "
              f"vLLM {100 * row['vllm_tok_s'] / row['roofline_tok_s']:.0f}%", flush=True)
        rows.append(row)
        for e in list(vllm_engine._ENGINES):
            vllm_engine._ENGINES.pop(e).close()
        model = None  # the next dtype loads its own copy
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
