"""Pre-packed bf16 linear weights (tinylora.generation.packed) against F.linear, per shape and end to end.

    python benchmarks/packed.py                                   # per shape (Qwen2.5-Coder-0.5B's linears), no model needed
    python benchmarks/packed.py --data-dir ../shared/data --tokens 64 --reps 2   # + the real 0.5B decoding 64 GSM8K prompts

Per shape: best-of-``--reps`` ms of ``F.linear`` (oneDNN reorders the weight every call) and of the packed weight
(reordered once), the two alternated; the outputs' largest difference and the share of equal elements.
End to end: the 0.5B in bf16 through our decode loop, greedy, packing on and off alternated within each
repetition (a shared host's speed drifts 2× within minutes: measured), medians; greedy rows identical
between the two. The CPU's flags are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [  # (in, out): the 0.5B's q/o, k/v, gate/up, down, and the 151,936-word head
    (896, 896), (896, 128), (896, 4864), (4864, 896), (896, 151936)]


def best_ms(f, reps: int) -> float:
    f()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def per_shape(rows_list, reps: int) -> list[dict]:
    out = []
    for K, N in SHAPES:
        W = (0.05 * torch.randn(N, K)).bfloat16()
        for rows in rows_list:
            x = torch.randn(rows, K).bfloat16()
            Pw = torch.ops.mkldnn._reorder_linear_weight(W, rows)
            plain = lambda: F.linear(x, W)  # noqa: E731
            packed = lambda: torch.ops.mkldnn._linear_pointwise(x, Pw, None, "none", [], "")  # noqa: E731
            a, b = [], []
            for _ in range(3):
                a.append(best_ms(plain, reps))
                b.append(best_ms(packed, reps))
            ya, yb = plain().float(), packed().float()
            r = {"in": K, "out": N, "rows": rows, "f_linear_ms": round(min(a), 3), "packed_ms": round(min(b), 3),
                 "speedup": round(min(a) / min(b), 2), "max_diff": float((ya - yb).abs().max()),
                 "equal_share": round(float((ya == yb).float().mean()), 5)}
            print(r, flush=True)
            out.append(r)
    return out


def end_to_end(data_dir: str, tokens: int, reps: int, prompts_n: int) -> dict:
    from tinylora import tasks
    from tinylora.generation import packed as P
    from tinylora.generation.generate import Sampling, generate_tokens
    from tinylora.models.loading import load_model, load_tokenizer

    name = "qwen2.5-coder-0.5b-instruct"
    model, tok = load_model(name, dtype="bf16"), load_tokenizer(name)
    task = tasks.get("gsm8k", data_dir=f"{data_dir}/gsm8k")
    prompts = [task.prompt(e, tok) for e in task.load("test")[:prompts_n]]
    s = Sampling(0.0, 1.0, tokens)
    keep = P.PACK_DTYPES

    one = Sampling(0.0, 1.0, 1)  # the prefill alone (and its one token): the rest of a run is the decode

    def run(on: bool, smp=s):
        P.PACK_DTYPES = keep if on else ()
        try:
            t = time.perf_counter()
            g = generate_tokens(model, tok, prompts, sampling=smp, engine="tinylora")
            return time.perf_counter() - t, g.new_ids
        finally:
            P.PACK_DTYPES = keep

    run(True)  # warm-up
    times, ids = {"packed": [], "f_linear": [], "packed_prefill": [], "f_linear_prefill": []}, {}
    for i in range(reps):
        for case in (("packed", "f_linear") if i % 2 == 0 else ("f_linear", "packed")):
            dt, ids[case] = run(case == "packed")
            times[case].append(dt)
            times[case + "_prefill"].append(run(case == "packed", one)[0])
            print(case, round(dt, 2), "s; its prefill", round(times[case + "_prefill"][-1], 2), "s", flush=True)
    is_eos = ids["packed"] == tok.eos_token_id
    ends = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, torch.tensor(is_eos.shape[1]))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"prompts": prompts_n, "tokens": tokens, "times_s": times, "median_s": med,
            "speedup": round(med["f_linear"] / med["packed"], 3),
            "decode_s": {k: [a - b for a, b in zip(times[k], times[k + "_prefill"])] for k in ("packed", "f_linear")},
            "decode_speedup_median": round(statistics.median(a - b for a, b in zip(times["f_linear"], times["f_linear_prefill"]))
                                           / statistics.median(a - b for a, b in zip(times["packed"], times["packed_prefill"])), 3),
            "greedy_rows_identical": float((ids["packed"] == ids["f_linear"]).all(1).float().mean()),
            "generated_tokens": int(ends.sum()), "tok_s": {k: round(int(ends.sum()) / med[k], 1) for k in ("packed", "f_linear")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", help="with ../shared/data: also the real 0.5B end to end (installed)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--e2e-reps", type=int, default=2, help="end-to-end repetitions (each runs both cases)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--json")
    a = ap.parse_args()
    from tinylora.generation import packed as P

    if not P.available():
        raise SystemExit("this torch has no oneDNN packed-linear ops (torch.ops.mkldnn._reorder_linear_weight)")
    torch.set_num_threads(a.threads)
    from tinylora._core.threads import cpu_features

    res = {"cpu": cpu_features(), "threads": a.threads, "shapes": per_shape(a.rows, a.reps)}
    if a.data_dir:
        res["end_to_end"] = end_to_end(a.data_dir, a.tokens, a.e2e_reps, a.prompts)
        print(json.dumps(res["end_to_end"]))
    if a.json:
        json.dump(res, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
