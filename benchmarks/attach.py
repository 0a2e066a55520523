"""Attach time, forward overhead and SVD accuracy: tinylora vs PEFT's TinyLoRA, in one run.

    python benchmarks/attach.py            # Qwen2.5-0.5B shapes, fp32, 2 threads (~4 min on 2 cores)
    python benchmarks/attach.py --layers 4 # a quicker look

Model: random weights with Qwen2.5-0.5B's exact shapes; every linear weight gets a few decaying
singular-value spikes (tinylora.models.synthetic.with_spectrum) because plain random init has a flat
spectrum where no top-2 is defined (../shared/FACTS.md). All figures are medians of ``--reps``
timed runs after one warm-up; ratios are against the base model measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import statistics
import time

import torch

import tinylora
from tinylora.adapters.svd import exact_top_r
from tinylora.models.synthetic import qwen25_05b_config, with_spectrum


def timed(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=24, help="decoder layers (Qwen2.5-0.5B: 24)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-peft", action="store_true", help="skip the PEFT side (it takes ~40 s to attach)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from transformers import AutoModelForCausalLM

    cfg = qwen25_05b_config()
    cfg.num_hidden_layers = args.layers
    t = time.perf_counter()
    base = AutoModelForCausalLM.from_config(cfg).eval()
    with_spectrum(base, seed=0)
    print(f"model: Qwen2.5-0.5B shapes, {args.layers} layers, "
          f"{sum(p.numel() for p in base.parameters()) / 1e6:.0f}M params, built in {time.perf_counter() - t:.0f}s")
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))

    def fwd(model):
        with torch.inference_mode():
            model(x)

    peft_model = None if args.no_peft else copy.deepcopy(base)
    t_base = timed(lambda: fwd(base), args.reps)

    ours = base
    cfg = tinylora.TinyLoRAConfig(r=2, u=13, tying="all")
    with tempfile.TemporaryDirectory() as cache:  # a fresh factor cache: the first attach is cold
        os.environ["TINYLORA_CACHE_DIR"] = cache
        t = time.perf_counter()
        tinylora.attach(ours, cfg, progress=False, cache=False)
        t_attach = time.perf_counter() - t
        tinylora.detach(ours)
        tinylora.attach(ours, cfg, progress=False, cache=True)  # computes and stores the factors
        tinylora.detach(ours)
        t = time.perf_counter()
        tinylora.attach(ours, cfg, progress=False, cache=True)  # reads them: the second run on this base
        t_cached = time.perf_counter() - t
        assert all(st["method"] == "cached" for st in ours.tinylora.svd_stats.values())
        tinylora.detach(ours)
        tinylora.attach(ours, cfg, progress=False, cache=False)
    with torch.no_grad():
        ours.tinylora.v[0].copy_(torch.linspace(-0.5, 0.5, 13))
    methods = [s["method"] for s in ours.tinylora.svd_stats.values()]
    t_unmerged = timed(lambda: fwd(ours), args.reps)
    tinylora.merge(ours)
    t_merged = timed(lambda: fwd(ours), args.reps)
    tinylora.unmerge(ours)

    # ΔW agreement with the exact SVD, for a fixed non-trivial R on every module
    t = time.perf_counter()
    R = torch.tensor([[0.7, -0.3], [0.4, 1.1]])
    errs = []
    for mod in tinylora.adapted_modules(ours).values():
        ref = exact_top_r(mod.base_weight_linear(), 2)
        d = mod.delta
        fast = (d.U * d.S) @ R @ d.Vh
        exact = (ref.U * ref.S) @ R @ ref.Vh
        errs.append(float((fast - exact).norm() / exact.norm()))
    t_exact = time.perf_counter() - t

    rows = [
        ("tinylora attach (s)", t_attach, None),
        ("tinylora attach, factors cached (s)", t_cached, t_cached / t_attach),
        ("  exact SVD of the same weights (s)", t_exact, None),
        ("base forward (s)", t_base, 1.0),
        ("tinylora unmerged forward (s)", t_unmerged, t_unmerged / t_base),
        ("tinylora merged forward (s)", t_merged, t_merged / t_base),
    ]
    if peft_model is not None:
        from peft import TinyLoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        t = time.perf_counter()
        pm = get_peft_model(peft_model, TinyLoraConfig(r=2, u=13, weight_tying=1.0, target_modules=targets))
        t_peft_attach = time.perf_counter() - t
        t_peft = timed(lambda: fwd(pm), args.reps)
        rows[1:1] = [("PEFT TinyLoRA attach (s)", t_peft_attach, t_peft_attach / t_attach)]
        rows.append(("PEFT unmerged forward (s)", t_peft, t_peft / t_base))

    print(f"forward: {args.batch}×{args.seq} tokens, fp32, {args.threads} threads, median of {args.reps}")
    print(f"SVD: {methods.count('randomized')}/{len(methods)} modules by block Krylov, "
          f"{methods.count('exact')} exact (small or not converged)")
    print(f"ΔW vs exact SVD, relative Frobenius error: median {statistics.median(errs):.1e}, max {max(errs):.1e}")
    print(f"{'measure':42s} {'value':>9s} {'ratio':>8s}  (cached attach: ratio to the cold attach)")
    for name, value, ratio in rows:
        r = "" if ratio is None else f"{ratio:7.3f}×"
        print(f"{name:42s} {value:9.3f} {r:>8s}")
    if peft_model is not None:
        print(f"attach speed-up over PEFT: {t_peft_attach / t_attach:.0f}×")


if __name__ == "__main__":
    main()
