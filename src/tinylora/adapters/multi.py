"""Many adapters in one forward: every batch row carries its own adapter values.

A TinyLoRA or LoRA-XS update is U Σ R Vᵀ with a per-module r×r matrix R; everything else is frozen
and shared. So K adapters on one base differ only in K small R's per module, and a batch whose row
b uses adapter ``rows[b]`` computes

    y_b = W x_b + U (Σ R_{rows[b]}) Vᵀ x_b

with the base matmul once for the whole batch and the rank-r path batched per row (one gather of
r×r matrices and one ``bmm``). This is the population forward of the ES trainer and the serving
kernel of many skills on one base: the same table and row index serve both.

    table = adapter_table(model, values)        # values: (K, n) flat adapter vectors
    with per_row(model, table, rows):           # rows: (B,) index into the table; −1 = the base
        out = model.generate(...)               # or model(...): row b runs adapter rows[b]

``values`` are flat vectors in :func:`flat_values` order (the adapter file's tensor order). The
model's own trained values are ignored inside the block. The table is built once (K × modules
small matrices); ``rows`` may be changed between forwards with :meth:`PerRow.set_rows`, e.g. when
requests join and leave a running batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from . import methods
from .layers import LoRAXSDelta, TinyLoRADelta
from .model import adapted_modules, get_root, is_attached, trainable_parameters


def flat_values(model) -> torch.Tensor:
    """The adapter's trained numbers as one float32 vector (``trainable_parameters`` order)."""
    return torch.cat([p.detach().float().reshape(-1) for p in trainable_parameters(model)])


@torch.no_grad()
def set_flat_values(model, values: torch.Tensor) -> None:
    """Write a flat vector (as :func:`flat_values` returns) into the adapter's parameters."""
    params = trainable_parameters(model)
    n = sum(p.numel() for p in params)
    if values.ndim != 1 or values.numel() != n:
        raise ValueError(f"expected a flat vector of {n} adapter values, got shape {tuple(values.shape)}")
    offset = 0
    for p in params:
        p.copy_(values[offset:offset + p.numel()].view_as(p).to(p.dtype))
        offset += p.numel()


def _split(model, values: torch.Tensor) -> list[torch.Tensor]:
    """(K, n) → one (K, *shape) tensor per trainable parameter."""
    params = trainable_parameters(model)
    out, offset = [], 0
    for p in params:
        out.append(values[:, offset:offset + p.numel()].reshape(values.shape[0], *p.shape))
        offset += p.numel()
    return out


@torch.no_grad()
def adapter_table(model, values: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per adapted module, the (K + 1, r, r) stack of Σ R_k for K adapters; the last entry is zero (the base).

    Exact: R_k is computed as each module's own ``R()`` computes it from adapter k's values.
    """
    root = get_root(model)
    if not methods.of(root.config).per_row:
        raise ValueError(f"per-row adapters need an SVD-based method whose rows can differ "
                         f"({', '.join(m.name for m in methods.METHODS.values() if m.per_row)}); this model has "
                         f"{root.config.method!r}")
    if not isinstance(values, torch.Tensor):
        values = torch.stack([torch.as_tensor(v).reshape(-1) for v in values])
    n = sum(p.numel() for p in trainable_parameters(model))
    if values.ndim != 2 or values.shape[1] != n:
        raise ValueError(f"values must be (K, {n}) flat adapter vectors, got shape {tuple(values.shape)}")
    parts = _split(model, values.float())
    table = {}
    for index, (name, mod) in enumerate(adapted_modules(model).items()):
        d = mod.delta
        dev = d.S.device
        if isinstance(d, TinyLoRADelta):
            v = parts[d.group].to(dev)  # (K, u)
            u, r, _ = d.P.shape
            R = d.scale * (v @ d.P.reshape(u, r * r)).reshape(-1, r, r)
        elif isinstance(d, LoRAXSDelta):
            R = parts[index].to(dev)  # (K, r, r)
        else:  # pragma: no cover - guarded by the config check above
            raise TypeError(type(d).__name__)
        SR = d.S[None, :, None] * R  # Σ R_k, as SVDDelta.add_to applies it
        table[name] = torch.cat([SR, SR.new_zeros(1, *SR.shape[1:])])
    return table


class PerRow:
    """The active per-row state of one model (see :func:`per_row`)."""

    def __init__(self, model, table: dict[str, torch.Tensor], rows: torch.Tensor | Sequence[int]):
        self.model = model
        self.table = table
        self.K = next(iter(table.values())).shape[0] - 1
        self.set_rows(rows)

    def set_rows(self, rows: torch.Tensor | Sequence[int]) -> None:
        """Which adapter each batch row runs (−1: the base); shape (B,)."""
        rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        if rows.numel() and (int(rows.min()) < -1 or int(rows.max()) >= self.K):
            raise ValueError(f"row indices must be in [-1, {self.K}); got {rows.min().item()}..{rows.max().item()}")
        self.use_table_rows(torch.where(rows < 0, torch.full_like(rows, self.K), rows))

    def use_table_rows(self, rows: torch.Tensor) -> None:
        """Table indices per row as they are (K = the base's zero entry): what every module reads. The
        decode loop calls it as it compacts its batch, with the rows it keeps."""
        self.rows = rows
        for name, mod in adapted_modules(self.model).items():
            sr = self.table[name]
            mod.delta.per_row = (sr, rows.to(sr.device))


@contextlib.contextmanager
def per_row(model, table: dict[str, torch.Tensor], rows: torch.Tensor | Sequence[int]) -> Iterator[PerRow]:
    """Inside the block, batch row b of every forward runs adapter ``rows[b]`` of ``table``."""
    mods = adapted_modules(model)
    if set(mods) != set(table):
        raise ValueError("this adapter table was built for another model's modules")
    if any(m.merged or m.disabled for m in mods.values()):
        raise RuntimeError("per-row adapters need the unmerged, enabled adapter path")
    if any(getattr(m.delta, "per_row", None) is not None for m in mods.values()):
        raise RuntimeError("per-row adapters are already active on this model")
    state = PerRow(model, table, rows)
    root = get_root(model)
    root.per_row_state = state  # the rollout engine reads it to follow its batch compaction
    try:
        yield state
    finally:
        root.per_row_state = None
        for m in mods.values():
            m.delta.per_row = None


def active_state(model) -> PerRow | None:
    """The per-row state inside a :func:`per_row` block, else None (what the decode loop follows)."""
    return getattr(get_root(model), "per_row_state", None) if is_attached(model) else None


def per_row_active(model) -> bool:
    return any(getattr(m.delta, "per_row", None) is not None for m in adapted_modules(model).values())
