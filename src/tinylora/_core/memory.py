"""Allocator policy: keep freed memory in the process for reuse instead of handing it back to the OS.

glibc serves an allocation above its mmap threshold (which adapts, up to 32 MiB) with fresh pages from
``mmap`` and unmaps them at ``free``; pages left at the top of the heap are trimmed back too. Every large
temporary is then page-faulted in again each time it is made — and a real model's are large: one decode
step's logits for 64 rows of Qwen2.5's 151,936-word vocabulary are 39 MB in fp32, and sampling makes four
such tensors a token. Measured (``benchmarks/allocator.py``, the two alternated in one process, 2 threads;
BENCHMARKS.md, "The 0.5B on a CPU with AMX"): sampling a token for 64 rows of that vocabulary 186 → 83 ms
(37,987 → 0 page faults), a T = 1 rollout of Qwen2.5-Coder-0.5B (32 prompts × 32 tokens, bf16)
45.8 → 30.1 s; the same tokens.

The price: memory freed after a peak stays with the process, and the peak grows a little, since torch's
64-byte-aligned requests do not always fit a freed chunk and the heap grows instead (measured: one GRPO
step of the 0.5B with its head's logits made at once peaked at 12.1 GB against 11.2 GB with glibc's
defaults). ``TINYLORA_ALLOCATOR=system`` keeps glibc's defaults. Elsewhere than glibc (macOS, musl) this
is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 30  # allocations below 1 GiB come from the heap, where freed memory is reused
TRIM_THRESHOLD = 2**31 - 1  # (mallopt takes a C int) in effect: never trim the heap's top back to the OS
_applied: str | None = None


def keep_freed_memory() -> str:
    """Apply the policy once per process; returns what is in effect (``"keep"``, ``"system"`` when the
    user opted out, ``"unavailable"`` off glibc), for the run's record."""
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get("TINYLORA_ALLOCATOR", "keep") == "system":
        _applied = "system"
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _applied = "unavailable"
        return _applied
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _applied = "keep" if ok else "unavailable"
    return _applied
