"""Threading policy: how idle OpenMP threads wait, and how many threads a process uses.

Measured on 2 cores with two other CPU-bound processes running (BENCHMARKS.md, "Contention"):
OpenMP threads spin at every barrier by default, so with many small ops a descheduled sibling
turns each barrier into a wait of a scheduler time slice — attach took 12.5 s instead of 0.2 s.
A passive wait policy (threads sleep at barriers) removes that collapse and costs little when the
machine is idle. The policy must be in the environment before the OpenMP runtime starts (when
torch is imported), so the command line sets it first thing; a value the user set is kept.

Threads per process: torch's default (one per physical core, or ``OMP_NUM_THREADS``) for one
process; ``--nproc N`` gives each rank the cores this process may use divided by N (torchrun's
own default is 1 thread per rank, which leaves cores idle when there are fewer ranks than cores);
a user's ``OMP_NUM_THREADS`` is kept. ``--threads N`` overrides both.
"""

from __future__ import annotations

import os

WAIT_POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def apply_wait_policy() -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a wait policy; call before torch loads.

    Returns the value set, or None when the user's setting was kept (or torch was already loaded,
    when setting it would be a silent no-op)."""
    import sys

    if any(v in os.environ for v in WAIT_POLICY_VARS) or "torch" in sys.modules:
        return None
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "PASSIVE"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_rank(nproc: int) -> int:
    """Threads for each of ``nproc`` ranks started on this machine."""
    return max(1, available_cores() // max(1, nproc))


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch threads (None: leave the default); returns the number in effect."""
    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# The CPU features that decide which matmuls are fast (bf16 units, AMX tiles); recorded beside every
# timing and run, since machines of one kind are not one CPU.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_features() -> dict:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has (from /proc/cpuinfo; empty elsewhere)."""
    import platform

    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return {"model": name, "flags": [f for f in CPU_FLAGS if f in flags]}
