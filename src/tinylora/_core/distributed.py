"""Data parallelism on ``torch.distributed``: one process per rank, launched by ``torchrun``.

Every rank holds the frozen base and the same adapter and works on its share of each step's
prompts; the adapter's gradient (a handful of numbers for TinyLoRA) is summed over ranks, so every
rank takes the identical optimizer step. Losses are normalised by *global* counts (tokens or
sequences of the whole step, summed over ranks first), so the summed gradient is exactly the
single-process one up to float summation order.

Outside ``torchrun`` (no ``WORLD_SIZE`` in the environment) :func:`init` returns a one-rank
:class:`Dist` whose collectives are no-ops: the same code path runs in one process.

A rank that dies must not leave the others waiting forever: the process group gets a timeout,
``torchrun`` ends the job when a worker exits with an error, and a failed collective becomes one
:class:`DistFailure` whose message says what happened.
"""

from __future__ import annotations

import datetime
import functools
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch

T = TypeVar("T")


class DistFailure(RuntimeError):
    """A collective failed: a peer died, or waited past ``dist_timeout_s``."""


def _collective(fn):
    """Turn the backend's error (gloo raises a bare RuntimeError) into one clear DistFailure."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except DistFailure:
            raise
        except RuntimeError as e:
            if not self.active:
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DistFailure(f"rank {self.rank}/{self.world}: {fn.__name__} failed — another rank has probably died "
                              f"or stalled past the timeout (dist_timeout_s); the job stops here. Backend: {first}"
                              ) from e

    return wrapper


def check_device_name(device: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``, or a ValueError naming what is accepted."""
    if device not in ("cpu", "cuda", "auto") and not re.fullmatch(r"cuda:\d+", str(device)):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")
    return device


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` (this rank's GPU under torchrun), ``cuda:N``, or ``auto`` (CUDA when present)."""
    check_device_name(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device=cuda but torch sees no CUDA GPU (use device=cpu or device=auto)")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} needs its own GPU, but this machine has "
                             f"{torch.cuda.device_count()}: start at most that many processes per node")
        return torch.device("cuda", local_rank)
    if device.startswith("cuda:") and not torch.cuda.is_available():
        raise ValueError(f"device={device} but torch sees no CUDA GPU")
    return torch.device(device)


@dataclass
class Dist:
    """This process's place in the job; collectives are no-ops when ``world == 1``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous block of ``items`` (sizes differ by at most one; rank order = item order)."""
        lo, hi = self.bounds(len(items))
        return list(items[lo:hi])

    def bounds(self, n: int) -> tuple[int, int]:
        base, extra = divmod(n, self.world)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    # --- collectives --------------------------------------------------------------------------
    @_collective
    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks of a few numbers (float64, so counts stay exact)."""
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return t.cpu().tolist()

    @_collective
    def sum_grads(self, params: Sequence[torch.Tensor]) -> None:
        """Sum ``p.grad`` over ranks in one flat all-reduce (every param needs a grad: zeros if unused)."""
        if not self.active:
            return
        flat = torch.cat([p.grad.reshape(-1).float() for p in params])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad).to(p.grad.dtype))
            offset += n

    @_collective
    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (picklable objects)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    @_collective
    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    @_collective
    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init(device: str = "auto", timeout_s: float = 600.0) -> Dist:
    """The process group for this job (gloo on CPU, NCCL on CUDA), or a one-rank ``Dist``."""
    if not launched():
        return Dist(device=resolve_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": dev} if dev.type == "cuda" else {}),
        )
    return Dist(rank=rank, world=world, local_rank=local_rank, device=dev)


def shutdown(sync: bool = False) -> None:
    """Leave the process group. ``sync`` (a run that ended normally): wait at a barrier first, so no rank
    tears its connections down while a peer still has a collective in flight (gloo then aborts the
    peer with "terminate called without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if sync:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
