"""The adapter path on a bf16 base, per shape: its output side (the fp32 path against the split bf16 GEMM)
and its input side (x widened at once against in cached row chunks).

    python benchmarks/adapter_path.py            # 2 threads; decode (1, 64 rows) and prefill (10,880 rows) shapes

y += h Bᵀ with y (rows × out) bf16 and h (rows × 2), B (out × 2) fp32, as
``tinylora.adapters.layers._add_lowrank`` does it: ``fp32`` = bf16(fp32(y) + h Bᵀ) (torch's fp32 GEMM with
K = 2, then a copy back), ``split`` = one bf16 GEMM on hi/lo-split factors accumulated into y
(``_AddLowRankBF16``). Input side, h = x Aᵀ with x (rows × in) bf16 and A (2 × in) fp32, no autograd:
``linear`` = ``F.linear(x.float(), A)`` (before), ``chunked`` = ``layers._project`` (A xᵀ, x widened 128 rows at
a time). The cases are alternated within each repetition; medians. The CPU's flags are printed.
"""

from __future__ import annotations

import argparse
import time

import torch


def medians_ms(cases: dict, reps: int) -> dict:
    """Median milliseconds of each callable, the callables run in turn within every repetition."""
    times = {k: [] for k in cases}
    for _ in range(reps):
        for k, f in cases.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: sorted(v)[reps // 2] * 1e3 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tinylora._core.memory import keep_freed_memory
    from tinylora._core.threads import cpu_features
    from tinylora.adapters import layers

    keep_freed_memory()
    cpu = cpu_features()
    print(f"CPU: {cpu['model']}; flags {', '.join(cpu['flags']) or 'none of ours'}; {args.threads} threads")
    for N in (1, 64, 10880):
        for out in (896, 128, 4864):
            y = torch.randn(N, out).to(torch.bfloat16)
            h, B = torch.randn(N, 2), torch.randn(out, 2)
            W = layers.split_factor(B)
            cases = {"fp32": lambda: (y.float() + h @ B.T).to(y.dtype),
                     "split": lambda: layers._AddLowRankBF16.apply(y, h, B, W)}
            med = medians_ms(cases, 200 if N < 1000 else 5)
            print(f"{N:>6} × {out:<5} fp32 {med['fp32']:.3f} ms  split {med['split']:.3f} ms  "
                  f"({med['fp32'] / med['split']:.2f}×)", flush=True)
    import torch.nn.functional as F

    print("input side, h = x Aᵀ (rows × in) → (rows × 2):")
    with torch.no_grad():
        for N in (1, 64, 10880):
            for d_in in (896, 4864):
                x, A = torch.randn(N, d_in).to(torch.bfloat16), torch.randn(2, d_in)
                cases = {"linear": lambda: F.linear(x.float(), A), "chunked": lambda: layers._project(x, A)}
                med = medians_ms(cases, 200 if N < 1000 else 9)
                print(f"{N:>6} × {d_in:<5} linear {med['linear']:.3f} ms  chunked {med['chunked']:.3f} ms  "
                      f"({med['linear'] / med['chunked']:.2f}×)", flush=True)


if __name__ == "__main__":
    main()
