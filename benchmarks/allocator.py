"""What the allocator policy (``tinylora._core.memory``) saves: glibc's defaults against keeping freed memory,
alternated in one process so that a busy or throttled machine slows both alike.

    python benchmarks/allocator.py                       # sampling a token for 64 rows of a 151,936-word vocabulary
    python benchmarks/allocator.py --model qwen2.5-coder-0.5b-instruct --data-dir ../shared/data   # + a 0.5B rollout

Each round runs every workload twice under glibc's defaults (mmap threshold 128 KiB, trim threshold
128 KiB, as glibc starts) and twice keeping freed memory, in turn, timing the second run of each (the
first after a switch grows the heap either way); medians over ``--rounds``. The tokens
are checked equal. Minor page faults are counted beside the times (``getrusage``).
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import statistics
import time

import torch

from tinylora._core import memory

GLIBC_DEFAULT = 128 * 1024  # M_MMAP_THRESHOLD and M_TRIM_THRESHOLD at glibc's start


def set_policy(libc, keep: bool) -> None:
    m, t = (memory.MMAP_THRESHOLD, memory.TRIM_THRESHOLD) if keep else (GLIBC_DEFAULT, GLIBC_DEFAULT)
    assert libc.mallopt(memory.M_MMAP_THRESHOLD, m) == 1 and libc.mallopt(memory.M_TRIM_THRESHOLD, t) == 1
    if not keep:  # hand back what the kept heap holds, as glibc's defaults would have
        libc.malloc_trim(0)


def timed(fn):
    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="also a T = 1 rollout of 32 GSM8K prompts × 32 new tokens on this model")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from tinylora._core.seeding import key_halves
    from tinylora._core.threads import cpu_features
    from tinylora.generation.sampling import Sampling, sample_tokens

    libc = ctypes.CDLL("libc.so.6")
    cpu = cpu_features()
    print(f"CPU: {cpu['model']}; flags {', '.join(cpu['flags'])}; {a.threads} threads", flush=True)
    logits = torch.randn(64, 151_936, generator=torch.Generator().manual_seed(0)).bfloat16()
    hi, lo = key_halves(list(range(64)))
    work = {"sample 64 rows × 151,936 words (one token)":
            lambda: sample_tokens(logits, hi, lo, 0, Sampling(1.0, 1.0, 1))[0]}
    if a.model:
        from tinylora import tasks
        from tinylora._core.dtypes import resolve_dtype
        from tinylora.generation.generate import generate_tokens
        from tinylora.models.loading import load_model, load_tokenizer

        dtype, why = resolve_dtype(a.dtype)
        print(f"{a.model}: {dtype} ({why})", flush=True)
        model, tok = load_model(a.model, dtype=dtype), load_tokenizer(a.model)
        task = tasks.get("gsm8k", data_dir=f"{a.data_dir}/gsm8k")
        prompts = [task.prompt(e, tok) for e in task.load("train")[:32]]
        work[f"rollout 32 prompts × 32 tokens, T = 1, {dtype}"] = lambda: generate_tokens(
            model, tok, prompts, n=1, sampling=Sampling(1.0, 1.0, 32), seeds=list(range(32))).new_ids
    res = {(w, k): [] for w in work for k in ("system", "keep")}
    outs = {}
    for r in range(a.rounds + 1):  # round 0 warms up
        for keep in (False, True):
            set_policy(libc, keep)
            for w, fn in work.items():
                fn()  # the first call after a switch grows the heap either way: the steady state is the second
                s, faults, out = timed(fn)
                key = "keep" if keep else "system"
                if r:
                    res[(w, key)].append((s, faults))
                if w in outs:
                    assert torch.equal(outs[w], out), f"{w}: the policy changed the result"
                outs[w] = out
    for w in work:
        sys_s = statistics.median(x[0] for x in res[(w, "system")])
        keep_s = statistics.median(x[0] for x in res[(w, "keep")])
        sys_f = statistics.median(x[1] for x in res[(w, "system")])
        keep_f = statistics.median(x[1] for x in res[(w, "keep")])
        print(f"{w}: glibc defaults {sys_s * 1e3:.0f} ms ({sys_f:.0f} faults), keep {keep_s * 1e3:.0f} ms "
              f"({keep_f:.0f} faults): {sys_s / keep_s:.2f}×  [median of {a.rounds}, alternated]", flush=True)


if __name__ == "__main__":
    main()
