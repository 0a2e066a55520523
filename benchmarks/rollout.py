"""Rollout throughput: our decode loop (tinylora.generation.engine) against Hugging Face ``generate``, in one run.

    python benchmarks/rollout.py                    # toy backbone at the default GRPO batch, then SmolLM2-135M shape
    python benchmarks/rollout.py --arch toy --reps 5
    python benchmarks/rollout.py --arch qwen0.5b --reps 1 --data-dir ../shared/data   # the real 0.5B (installed)
    python benchmarks/rollout.py --arch qwen0.5b --reps 2 --data-dir ../shared/data --dtype auto --hf-dtype fp32 \
        --engines tinylora hf                        # ours in bf16 (where fast) against HF generate in fp32

``static`` (our loop with static shapes, the form a CUDA graph needs) runs eagerly on CPU: the
column shows what giving up compaction costs here. Toy: the shipped backbone, 16 training prompts × 4 samples at T = 1, up to 96 new tokens (the
default GRPO rollout), through ``generate_tokens`` with ``engine="hf"`` and ``engine="tinylora"``;
the outputs are checked equal. SmolLM2-135M shape: random weights of its config (30 layers, 576
wide, vocabulary 49,152) with 8 prompts × 4 samples of 64 tokens, 32 new tokens (random weights
rarely stop, so both run to the end: this measures the loop, not early stopping). qwen0.5b: the real
Qwen2.5-Coder-0.5B-Instruct (``tinylora models install qwen2.5-coder-0.5b-instruct``), 64 GSM8K test
prompts in its chat template, 64 new tokens, greedy (``--temperature 1``: sampled), in ``--dtype`` (fp32;
``auto`` takes bf16 where this CPU has it fast); beside it, in the same run, the matmul roofline of this
CPU in that dtype (a 64×896 by 896×4864 product, the MLP's shape at this batch, bf16 weights reordered once for
oneDNN as the decode loop uses them: one weight kept in cache, and 48 weights in turn, streamed from memory as a
decode step streams its weights) and the share of each
the loop reaches (2 × the multiplying parameters FLOPs a token). The CPU's flags are printed. Tokens/s count
generated tokens up to and including EOS; medians of ``--reps`` after one warm-up, the engines timed in
turn within each repetition (a shared host's speed drifts by 2× within minutes: measured).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from tinylora.generation.generate import Sampling, generate_tokens


def toy_case():
    from tinylora import tasks
    from tinylora.models.loading import load_model, load_tokenizer

    model, tok = load_model("toy"), load_tokenizer("toy")
    task = tasks.get("arith")
    prompts = [task.prompt(e, tok) for e in task.load("train")[:16]]
    return model, tok, prompts, 4, Sampling(1.0, 1.0, 96)


def smollm2_case():
    from transformers import AutoModelForCausalLM

    from tinylora.models.synthetic import smollm2_135m_config
    from tinylora.toy.tokenizer import char_tokenizer

    cfg = smollm2_135m_config(eos_token_id=2, bos_token_id=1, pad_token_id=0)  # SmolLM2-135M
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    tok = char_tokenizer("abcdefghijklmnopqrstuvwxyz ")  # ids < 49,152: any tokenizer feeds the shape
    g = torch.Generator().manual_seed(1)
    letters = "abcdefghijklmnopqrstuvwxyz "
    prompts = ["".join(letters[int(i)] for i in torch.randint(0, 27, (64,), generator=g)) for _ in range(8)]
    return model, tok, prompts, 4, Sampling(1.0, 1.0, 32)


def qwen_case(data_dir: str | None, dtype: str = "fp32", temperature: float = 0.0):
    from tinylora import tasks
    from tinylora.models.loading import load_model, load_tokenizer

    name = "qwen2.5-coder-0.5b-instruct"
    model, tok = load_model(name, dtype=dtype), load_tokenizer(name)
    task = tasks.get("gsm8k", data_dir=data_dir)
    prompts = [task.prompt(e, tok) for e in task.load("test")[:64]]
    return model, tok, prompts, 1, Sampling(temperature, 1.0, 64)


def matmul_gflops(threads: int, dtype: torch.dtype = torch.float32, reps: int = 20, cold: bool = False,
                  rows: int = 64) -> float:
    """GFLOPS of a (rows×896)·(896×4864) product (the MLP's shape at this batch) on this CPU, at the best this
    torch offers for the dtype: bf16 weights reordered once for oneDNN (what the decode loop multiplies with,
    ``tinylora.generation.packed``; ``F.linear`` reorders on every call, measured 2–3× slower at 64 rows),
    fp32 through ``F.linear``. ``cold``: 48 different weights in turn (209 MB in bf16, more than the
    caches), as a decode step streams its weights from memory; otherwise one weight, kept in cache."""
    import torch.nn.functional as F

    from tinylora.generation import packed as P

    torch.set_num_threads(threads)
    x = torch.randn(rows, 896).to(dtype)
    ws = [torch.randn(4864, 896).to(dtype) for _ in range(48 if cold else 1)]
    if dtype in P.PACK_DTYPES and P.available():
        ws = [torch.ops.mkldnn._reorder_linear_weight(w, rows) for w in ws]

        def mm(w):
            return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
    else:
        def mm(w):
            return F.linear(x, w)
    for w in ws:
        mm(w)
    n = max(reps, len(ws))
    t = time.perf_counter()
    for i in range(n):
        mm(ws[i % len(ws)])
    return 2 * rows * 896 * 4864 * n / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["toy", "smollm2"], choices=["toy", "smollm2", "qwen0.5b"])
    ap.add_argument("--data-dir", help="qwen0.5b: local GSM8K (DIR/gsm8k/test.jsonl)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"],
                    help="qwen0.5b: the base's dtype (auto: bf16 where this CPU has bf16 units and measures it faster)")
    ap.add_argument("--hf-dtype", choices=["fp32", "bf16", "auto"],
                    help="qwen0.5b: run HF generate on its own copy of the model in this dtype (the issue's "
                         "reference is HF in fp32); default: the same model as ours. Rows then differ by "
                         "dtype, so each engine's tokens are counted on its own and none is asserted equal")
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="qwen0.5b: 0 = greedy (the evaluation); 1 = sampled as a GRPO rollout")
    ap.add_argument("--allocator", default="keep", choices=["keep", "system"],
                    help="keep: tinylora's allocator policy (what the CLI and trainers use), for both engines; "
                         "system: glibc's defaults")
    ap.add_argument("--engines", nargs="+", default=["hf", "tinylora", "static"], choices=["hf", "tinylora", "static"],
                    help="which loops to time (the first one's tokens are the reference the others must equal)")
    ap.add_argument("--json")
    args = ap.parse_args()
    import os

    os.environ["TINYLORA_ALLOCATOR"] = args.allocator
    from tinylora._core.dtypes import resolve_dtype, torch_dtype
    from tinylora._core.memory import keep_freed_memory

    allocator = keep_freed_memory()
    torch.set_num_threads(args.threads)
    dtype, why = resolve_dtype(args.dtype) if "qwen0.5b" in args.arch else ("fp32", "")
    from tinylora._core.threads import cpu_features

    cpu = cpu_features()
    print(f"CPU: {cpu['model']}; flags {', '.join(cpu['flags']) or 'none of ours'}; {args.threads} threads; "
          f"allocator {allocator}", flush=True)
    if "qwen0.5b" in args.arch:
        print(f"qwen0.5b dtype: {dtype} ({why})", flush=True)
    rows = []
    for arch in args.arch:
        model, tok, prompts, n, sampling = {"toy": toy_case, "smollm2": smollm2_case,
                                            "qwen0.5b": lambda: qwen_case(args.data_dir, dtype, args.temperature)}[arch]()
        seeds = list(range(len(prompts) * n)) if sampling.temperature > 0 else None
        hf_dtype = resolve_dtype(args.hf_dtype)[0] if arch == "qwen0.5b" and args.hf_dtype else dtype
        models = {e: model for e in args.engines}
        if hf_dtype != dtype and "hf" in models:
            from tinylora.models.loading import load_model

            models["hf"] = load_model("qwen2.5-coder-0.5b-instruct", dtype=hf_dtype)
        res, prefill = {}, {}
        if arch == "qwen0.5b":  # the roofline before and after the engines: this machine's speed drifts
            dt = torch_dtype(dtype)
            before = (matmul_gflops(args.threads, dt), matmul_gflops(args.threads, dt, cold=True),
                      matmul_gflops(args.threads, dt, rows=1024))
        one = dataclasses.replace(sampling, max_new_tokens=1)  # the prefill alone: the rest is the decode
        runs = {(e, k): (lambda e=e, smp=smp: generate_tokens(models[e], tok, prompts, n=n, sampling=smp, seeds=seeds,
                                                             engine=e))
                for e in args.engines for k, smp in (("all", sampling), ("prefill", one))
                if k == "all" or arch == "qwen0.5b"}
        for fn in runs.values():  # one warm-up each
            fn()
        times = {key: [] for key in runs}
        outs = {}
        for _ in range(args.reps):  # the engines in turn, so that the machine drifting slows both alike
            for key, fn in runs.items():
                t = time.perf_counter()
                outs[key] = fn()
                times[key].append(time.perf_counter() - t)
        for e in args.engines:
            res[e] = (statistics.median(times[(e, "all")]), outs[(e, "all")])
            if (e, "prefill") in times:
                prefill[e] = statistics.median(times[(e, "prefill")])
        ref = res[args.engines[0]][1].new_ids
        same = {e: float((res[e][1].new_ids == ref).all(1).float().mean()) for e in args.engines[1:]
                if res[e][1].new_ids.shape == ref.shape}
        for engine in args.engines[1:]:
            share = same.get(engine, 0.0)
            print(f"  {engine}: {100 * share:.0f}% of rows identical to {args.engines[0]}'s", flush=True)
            # fp32: the loops must agree exactly; bf16 rounds differently with another cache and mask shape
            # (the static loop's full-length mask), so a near-tie can flip and a row diverge from there
            if (arch != "qwen0.5b" or dtype == "fp32") and hf_dtype == dtype:
                assert share == 1.0, f"{engine} disagrees with {args.engines[0]}"
        eos = tok.eos_token_id

        def generated(ids: torch.Tensor) -> int:
            done = (ids == eos).long().cumsum(1)
            return int(((done - (ids == eos).long()) == 0).sum())  # up to and including EOS

        count = {e: generated(res[e][1].new_ids) for e in args.engines}
        tokens = count[args.engines[0]]
        row = {"arch": arch, "rows": len(prompts) * n, "max_new_tokens": sampling.max_new_tokens,
               "generated_tokens": tokens, "generated_tokens_each": count, "threads": args.threads, "cpu": cpu,
               "rows_identical": same, "hf_dtype": hf_dtype}
        for engine, key in (("hf", "hf"), ("tinylora", "ours"), ("static", "static")):
            if engine in res:
                row[f"{key}_s"], row[f"{key}_tok_s"] = res[engine][0], count[engine] / res[engine][0]
        if "hf" in res and "tinylora" in res:  # tokens/s: with two dtypes the engines generate different rows
            row["speedup"] = row["ours_tok_s"] / row["hf_tok_s"]
        if "hf" in res and "static" in res:
            row["static_speedup"] = row["static_tok_s"] / row["hf_tok_s"]
        if arch == "qwen0.5b":
            after = (matmul_gflops(args.threads, dt), matmul_gflops(args.threads, dt, cold=True),
                     matmul_gflops(args.threads, dt, rows=1024))
            hot, cold, wide = ((b + a) / 2 for b, a in zip(before, after))
            print(f"  {dtype} matmul before / after the engines: in cache {before[0]:.0f} / {after[0]:.0f}, "
                  f"streamed {before[1]:.0f} / {after[1]:.0f} GFLOPS; their means below", flush=True)
            # 2 × the parameters that multiply (the untied input embedding is a lookup)
            emb = model.get_input_embeddings().weight.numel()
            flop_per_token = 2 * (sum(p.numel() for p in model.parameters()) - emb)
            row.update(matmul_before=before, matmul_after=after)
            row.update(dtype=dtype, dtype_why=why, allocator=allocator, temperature=args.temperature,
                       matmul_gflops=hot, matmul_gflops_cold=cold, flop_per_token=flop_per_token,
                       roofline_tok_s=hot * 1e9 / flop_per_token, roofline_cold_tok_s=cold * 1e9 / flop_per_token)
            row.update(ours_share_of_roofline=row["ours_tok_s"] / row["roofline_tok_s"],
                       ours_share_of_cold_roofline=row["ours_tok_s"] / row["roofline_cold_tok_s"])
            enc = tok(prompts, padding=True)
            prompt_tokens = n * sum(sum(m) for m in enc["attention_mask"])
            for engine, key in (("hf", "hf"), ("tinylora", "ours"), ("static", "static")):
                if engine not in prefill:
                    continue
                pre, dec = prefill[engine], res[engine][0] - prefill[engine]
                row[f"{key}_prefill_s"], row[f"{key}_decode_s"] = pre, dec
                row[f"{key}_decode_tok_s"] = (count[engine] - row["rows"]) / dec  # the tokens after the first
                row[f"{key}_prefill_gflops"] = flop_per_token * prompt_tokens / pre / 1e9
                print(f"  {engine}: prefill of {prompt_tokens} prompt tokens {pre:.1f} s "
                      f"({row[f'{key}_prefill_gflops']:.0f} GFLOPS; a 1024-row matmul {wide:.0f}: "
                      f"{100 * row[f'{key}_prefill_gflops'] / wide:.0f}%), decode {dec:.1f} s "
                      f"({row[f'{key}_decode_tok_s']:.0f} tok/s: {100 * row[f'{key}_decode_tok_s'] / row['roofline_tok_s']:.0f}% "
                      f"/ {100 * row[f'{key}_decode_tok_s'] / row['roofline_cold_tok_s']:.0f}% of the 64-row roofline "
                      "in cache / streamed)", flush=True)
            row.update(prompt_tokens=prompt_tokens, matmul_gflops_1024_rows=wide)
            print(f"  {dtype} matmul {hot:.0f} GFLOPS in cache, {cold:.0f} streaming its weights → roofline "
                  f"{row['roofline_tok_s']:.0f} / {row['roofline_cold_tok_s']:.0f} tok/s at {flop_per_token / 1e9:.2f} "
                  f"GFLOP a token; ours {100 * row['ours_share_of_roofline']:.0f}% / "
                  f"{100 * row['ours_share_of_cold_roofline']:.0f}% of them", flush=True)
        rows.append(row)
        said = "; ".join(f"{name}{' ' + hf_dtype if k == 'hf' and hf_dtype != dtype else ''} "
                         f"{row[k + '_s']:.2f} s ({row[k + '_tok_s']:.0f} tok/s)"
                         for name, k in (("HF generate", "hf"), ("ours", "ours"), ("ours with static shapes", "static"))
                         if k + "_s" in row)
        ratio = f": ours {row['speedup']:.2f}× HF's tokens/s" if "speedup" in row else ""
        print(f"{arch}: {row['rows']} rows × ≤{row['max_new_tokens']} new tokens ({tokens} generated), "
              f"{args.threads} threads: {said}{ratio}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
