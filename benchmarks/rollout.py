"""Rollout throughput: our decode loop (tinylora.generation.engine) against Hugging Face ``generate``, in one run.

    python benchmarks/rollout.py                    # toy backbone at the default GRPO batch, then SmolLM2-135M shape
    python benchmarks/rollout.py --arch toy --reps 5
    python benchmarks/rollout.py --arch qwen0.5b --reps 1 --data-dir ../shared/data   # the real 0.5B (installed)

``static`` (our loop with static shapes, the form a CUDA graph needs) runs eagerly on CPU: the
column shows what giving up compaction costs here. Toy: the shipped backbone, 16 training prompts × 4 samples at T = 1, up to 96 new tokens (the
default GRPO rollout), through ``generate_tokens`` with ``engine="hf"`` and ``engine="tinylora"``;
the outputs are checked equal. SmolLM2-135M shape: random weights of its config (30 layers, 576
wide, vocabulary 49,152) with 8 prompts × 4 samples of 64 tokens, 32 new tokens (random weights
rarely stop, so both run to the end: this measures the loop, not early stopping). qwen0.5b: the real
Qwen2.5-Coder-0.5B-Instruct (``tinylora models install qwen2.5-coder-0.5b-instruct``), 64 GSM8K test
prompts in its chat template, greedy, 64 new tokens, fp32; beside it, in the same run, the fp32
matmul roofline of this CPU (a 64×896 by 896×4864 product, the MLP's shape at this batch) and the
share of it the loop reaches (2 × parameters FLOPs a token). The CPU's flags are printed. Tokens/s count
generated tokens up to and including EOS; medians of ``--reps`` after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from tinylora.generation.generate import Sampling, generate_tokens


def timed(fn, reps):
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        r = fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out), r


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


def qwen_case(data_dir: str | None):
    from tinylora import tasks
    from tinylora.models.loading import load_model, load_tokenizer

    name = "qwen2.5-coder-0.5b-instruct"
    model, tok = load_model(name), load_tokenizer(name)
    task = tasks.get("gsm8k", data_dir=data_dir)
    prompts = [task.prompt(e, tok) for e in task.load("test")[:64]]
    return model, tok, prompts, 1, Sampling(0.0, 1.0, 64)


def matmul_gflops(threads: int, reps: int = 20) -> float:
    """fp32 GFLOPS of a (64×896)·(896×4864) product on this CPU: the roofline the decode step lives under."""
    torch.set_num_threads(threads)
    a, b = torch.randn(64, 896), torch.randn(896, 4864)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * 64 * 896 * 4864 * reps / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["toy", "smollm2"], choices=["toy", "smollm2", "qwen0.5b"])
    ap.add_argument("--data-dir", help="qwen0.5b: local GSM8K (DIR/gsm8k/test.jsonl)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tinylora._core.threads import cpu_features

    cpu = cpu_features()
    print(f"CPU: {cpu['model']}; flags {', '.join(cpu['flags']) or 'none of ours'}; {args.threads} threads", flush=True)
    rows = []
    for arch in args.arch:
        model, tok, prompts, n, sampling = {"toy": toy_case, "smollm2": smollm2_case,
                                            "qwen0.5b": lambda: qwen_case(args.data_dir)}[arch]()
        seeds = list(range(len(prompts) * n)) if sampling.temperature > 0 else None
        res = {}
        for engine in ("hf", "tinylora", "static"):
            s, g = timed(lambda: generate_tokens(model, tok, prompts, n=n, sampling=sampling, seeds=seeds,
                                                 engine=engine), args.reps)
            res[engine] = (s, g)
        for engine in ("tinylora", "static"):
            assert torch.equal(res["hf"][1].new_ids, res[engine][1].new_ids), f"{engine} disagrees with generate"
        ids = res["hf"][1].new_ids
        eos = tok.eos_token_id
        done = (ids == eos).long().cumsum(1)
        tokens = int(((done - (ids == eos).long()) == 0).sum())  # up to and including EOS
        row = {"arch": arch, "rows": len(prompts) * n, "max_new_tokens": sampling.max_new_tokens,
               "generated_tokens": tokens, "threads": args.threads,
               "hf_s": res["hf"][0], "ours_s": res["tinylora"][0],
               "hf_tok_s": tokens / res["hf"][0], "ours_tok_s": tokens / res["tinylora"][0],
               "speedup": res["hf"][0] / res["tinylora"][0],
               "static_s": res["static"][0], "static_speedup": res["hf"][0] / res["static"][0], "cpu": cpu}
        if arch == "qwen0.5b":
            gflops = matmul_gflops(args.threads)
            flop_per_token = 2 * sum(p.numel() for p in model.parameters())
            row.update(matmul_gflops=gflops, roofline_tok_s=gflops * 1e9 / flop_per_token,
                       ours_share_of_roofline=row["ours_tok_s"] / (gflops * 1e9 / flop_per_token))
            print(f"  fp32 matmul {gflops:.0f} GFLOPS → roofline {row['roofline_tok_s']:.0f} tok/s at "
                  f"{flop_per_token / 1e9:.2f} GFLOP a token; ours {100 * row['ours_share_of_roofline']:.0f}% of it",
                  flush=True)
        rows.append(row)
        print(f"{arch}: {row['rows']} rows × ≤{row['max_new_tokens']} new tokens ({tokens} generated), "
              f"{args.threads} threads: HF generate {row['hf_s']:.2f} s ({row['hf_tok_s']:.0f} tok/s), ours "
              f"{row['ours_s']:.2f} s ({row['ours_tok_s']:.0f} tok/s): {row['speedup']:.2f}×; ours with static shapes "
              f"(eager here; a CUDA graph on a GPU) {row['static_s']:.2f} s: {row['static_speedup']:.2f}×", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
