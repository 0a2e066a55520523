"""The one table of dtype names (the words a config, a file or the command line uses for a float
type), and ``auto``: the base's dtype chosen for the machine at run time."""

from __future__ import annotations

import functools
import time

DTYPE_NAMES = ("fp32", "bf16", "fp16")
BASE_DTYPES = DTYPE_NAMES + ("auto",)  # what a base model may be loaded in (`--dtype auto`)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU units that make bf16 matmuls fast
BF16_MIN_SPEEDUP = 1.5  # auto takes bf16 on a CPU only where it measures at least this much faster


def torch_dtype(name: str):
    """``fp32`` → ``torch.float32`` …; anything else is a ValueError naming the known ones."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in table:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    return table[name]


def matmul_gflops(dtype: str, m: int = 256, k: int = 896, n: int = 4864, reps: int = 3) -> float:
    """Best-of-``reps`` GFLOPS of an (m×k)·(k×n) matmul in ``dtype`` on the CPU (a 0.5B model's MLP shape)."""
    import torch

    dt = torch_dtype(dtype)
    a, b = torch.randn(m, k).to(dt), torch.randn(k, n).to(dt)
    a @ b  # warm-up: oneDNN picks its kernel on the first call
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def compare_bf16_fp32(reps: int = 5) -> tuple[float, float]:
    """(bf16, fp32) best-of-``reps`` GFLOPS, the two measured in turn, so that load coming and going during
    the measurement slows both rather than one (a reading). Measured: the former back-to-back best-of-3
    read 212 vs 147 GFLOPS under the test suite's load (fp32 chosen) on a CPU that reads 208 vs 83 idle."""
    best = {"bf16": 0.0, "fp32": 0.0}
    for _ in range(reps):
        for dt in best:
            best[dt] = max(best[dt], matmul_gflops(dt, reps=1))
    return best["bf16"], best["fp32"]


@functools.lru_cache(maxsize=None)
def _cpu_auto(units: tuple[str, ...]) -> tuple[str, str]:
    """The measured CPU choice, once per process: every model a process loads, and every record it
    writes, gets the same answer."""
    bf16, fp32 = compare_bf16_fp32()
    return _choose(units, bf16, fp32)


def _choose(units, bf16: float, fp32: float) -> tuple[str, str]:
    why = f"{'+'.join(units)}; matmul bf16 {bf16:.0f} vs fp32 {fp32:.0f} GFLOPS"
    return ("bf16", why) if bf16 >= BF16_MIN_SPEEDUP * fp32 else ("fp32", why + f" (< {BF16_MIN_SPEEDUP}×)")


def resolve_dtype(name: str, device: str = "cpu", *, flags: list[str] | None = None,
                  measure=None) -> tuple[str, str]:
    """(dtype, why) for a base model: a named dtype as asked; ``auto`` → bf16 on a CUDA GPU with bf16,
    bf16 on a CPU with bf16 units *and* a bf16 matmul measured ≥ 1.5× the fp32 one, else fp32.

    Machines of one kind differ (AVX2-only CPUs emulate bf16 slowly), so the choice is made here,
    on this machine, and printed and recorded by the caller; on a CPU it is measured once per process
    (``measure(dtype) -> GFLOPS`` replaces the measurement, uncached, for tests). The adapter stays
    fp32 whatever the base.
    """
    if name != "auto":
        torch_dtype(name)
        return name, "as requested"
    import torch

    if str(device).startswith("cuda"):
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ("bf16", "CUDA GPU with bf16") if ok else ("fp32", "CUDA GPU without bf16")
    if flags is None:
        from .threads import cpu_features

        flags = cpu_features()["flags"]
    units = tuple(f for f in BF16_FLAGS if f in flags)
    if not units:
        return "fp32", f"CPU has no bf16 units ({' or '.join(BF16_FLAGS)} absent)"
    if measure is None:
        return _cpu_auto(units)
    return _choose(units, measure("bf16"), measure("fp32"))
