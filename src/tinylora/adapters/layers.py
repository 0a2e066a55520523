"""The ΔW of one adapted module, for each parameterization, and the wrapper that adds it.

Every update is written in ``nn.Linear``'s convention, ΔW of shape (out, in), whatever the base
layer stores (GPT-2's ``Conv1D`` keeps its weight as (in, out); the wrapper transposes on merge).
The unmerged forward adds x ΔWᵀ through the low-rank factors, never through a dense ΔW:

    SVD-based (LoRA-XS, TinyLoRA):   h = x V  (N×r) → h (ΣR)ᵀ (r×r) → y += h Uᵀ  (one fused addmm)
    LoRA:                            h = x Aᵀ (N×r) → y += (α/r) h Bᵀ
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _split_bf16(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """t ≈ hi + lo, both bf16: hi = bf16(t), lo = bf16(t − hi); the pair holds t to ~2⁻¹⁷ relative."""
    hi = t.to(torch.bfloat16)
    return hi, (t - hi.float()).to(torch.bfloat16)


class _AddLowRankBF16(torch.autograd.Function):
    """y += h Bᵀ into a bf16 y, as one bf16 GEMM with fp32 accumulation and a single rounding into y.

    h and B are split into bf16 pairs (hi + lo) and the product is h_hi B_hiᵀ + h_hi B_loᵀ + h_lo B_hiᵀ
    (K = 3r): the update keeps ~2⁻¹⁷ relative precision (the lo·lo term is below that), far below the one
    bf16 rounding of y + h Bᵀ that follows. Why not the fp32 path: torch's CPU fp32 GEMM with K = r = 2
    and a (tokens × out) output, plus the fp32 copy of y, measured 5–9× the cost of the base layer itself
    on a prefill (BENCHMARKS.md, "The adapter path on a bf16 base"). The backward is the fp32 one.
    """

    @staticmethod
    def forward(ctx, y, h, B, W):
        ctx.save_for_backward(B)
        h_hi, h_lo = _split_bf16(h.reshape(-1, h.shape[-1]).float())
        H = torch.cat([h_hi, h_hi, h_lo], dim=1)
        y.view(-1, y.shape[-1]).addmm_(H, W.T)
        ctx.mark_dirty(y)
        ctx.h_shape, ctx.h_dtype = h.shape, h.dtype
        return y

    @staticmethod
    def backward(ctx, g):
        (B,) = ctx.saved_tensors
        gh = None
        if ctx.needs_input_grad[1]:
            gh = (g.reshape(-1, g.shape[-1]).float() @ B.float()).reshape(ctx.h_shape).to(ctx.h_dtype)
        return g, gh, None, None


def split_factor(B: torch.Tensor) -> torch.Tensor:
    """[B_hi, B_lo, B_hi] (out, 3r) bf16: the right-hand side of :class:`_AddLowRankBF16`'s GEMM."""
    B_hi, B_lo = _split_bf16(B.float())
    return torch.cat([B_hi, B_lo, B_hi], dim=1)


PROJECT_CHUNK_ROWS = 128  # rows of x converted to fp32 at a time: a chunk stays in cache for its GEMM
# below this many input elements the chunked form's fixed cost wins over what it saves (measured, 2 threads,
# AMX CPU: 1 × 4864 0.013 → 0.042 ms, 64 × 896 0.071 → 0.074, 64 × 4864 0.235 → 0.173, 10,880 × 4864 45 → 21)
PROJECT_CHUNK_MIN = 1 << 18


def _project(x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """x Aᵀ in fp32 for a low-rank A (r, in), x of any float dtype: the adapter path's input side.

    An fp32 x, or a small one, takes ``F.linear`` as before. A bf16/fp16 x must be widened first (exact), and that copy,
    not the GEMM, is the cost: measured (2 threads, AMX CPU) for 11,008 × 4864 → 2 ``F.linear(x.float(), A)``
    44 ms, the transposed product A xᵀ 37 ms, and 128-row chunks of it, each widened while it is in cache,
    21 ms; at 64 × 4864 (a decode step) 0.20 → 0.06 ms. Same fp32 math, another reduction order (≤ 1e-6
    relative). Under autograd the unchunked transposed form (``out=`` does not record a graph)."""
    if x.dtype == torch.float32 or x.numel() < PROJECT_CHUNK_MIN:
        return F.linear(x.float(), A.float())
    A = A.float()
    x2 = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled() and (x.requires_grad or A.requires_grad):
        out = A @ x2.float().T
    else:
        out = x2.new_empty((A.shape[0], x2.shape[0]), dtype=torch.float32)
        for i in range(0, x2.shape[0], PROJECT_CHUNK_ROWS):
            torch.mm(A, x2[i:i + PROJECT_CHUNK_ROWS].float().T, out=out[:, i:i + PROJECT_CHUNK_ROWS])
    return out.T.reshape(*x.shape[:-1], A.shape[0])


LOWRANK_SPLIT_MAX = 64  # the split GEMM triples K: worth it for a low-rank h, not for a full-width one
# below this many outputs the split's fixed cost (~0.1 ms of small ops) exceeds what it saves (measured,
# 2 threads, AMX CPU: 10,880 × 4864 split 23 ms vs fp32 140; 64 × 4864 0.36 vs 0.40; 64 × 896 0.24 vs 0.13)
LOWRANK_SPLIT_MIN = 1 << 18


def _add_lowrank(y: torch.Tensor, h: torch.Tensor, B: torch.Tensor, W: torch.Tensor | None = None) -> torch.Tensor:
    """y + h Bᵀ, accumulated into y in place by one GEMM.

    In place matters: an out-of-place result allocates a fresh activation-sized buffer per module
    (page faults on every call), which measured 7× slower than the GEMM itself on CPU. It is safe
    for autograd because ``nn.Linear``/``Conv1D`` do not save their output for backward.
    ``W``: :func:`split_factor` of B, cached by the caller (a frozen factor), else made here.
    """
    if (y.dtype == torch.bfloat16 and y.is_contiguous() and h.shape[-1] <= LOWRANK_SPLIT_MAX
            and y.numel() >= LOWRANK_SPLIT_MIN):
        return _AddLowRankBF16.apply(y, h, B, split_factor(B) if W is None else W)
    if y.dtype != torch.float32:  # a bf16/fp16 base: the update is computed in fp32 and rounded once
        return (y.float() + h.float() @ B.float().T).to(y.dtype)
    if not y.is_contiguous():
        return y + (h @ B.T)
    y.view(-1, y.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), B.T)
    return y


class Delta(nn.Module):
    """ΔW of one module. Subclasses hold the trainable tensors (or reference shared ones)."""

    def delta_weight(self) -> torch.Tensor:
        """Dense ΔW, float32, shape (out, in): the reference the fast path must agree with."""
        raise NotImplementedError

    def add_to(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y + x ΔWᵀ, computed cheaply; x (…, in), y (…, out)."""
        raise NotImplementedError


class FullDelta(Delta):
    def __init__(self, out_features: int, in_features: int):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(out_features, in_features))

    def delta_weight(self) -> torch.Tensor:
        return self.delta.float()

    def add_to(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _add_lowrank(y, x.float(), self.delta.float())


class LoRADelta(Delta):
    """ΔW = (alpha / r) · B A; A Kaiming-uniform (as in PEFT), B = 0, so ΔW = 0 at init."""

    def __init__(self, out_features: int, in_features: int, r: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.scale = alpha / r
        A = torch.empty(r, in_features)
        bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform_(a=√5) on (r, in)
        A.uniform_(-bound, bound, generator=generator)
        self.A = nn.Parameter(A)
        self.B = nn.Parameter(torch.zeros(out_features, r))

    def delta_weight(self) -> torch.Tensor:
        return self.scale * (self.B.float() @ self.A.float())

    def add_to(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _add_lowrank(y, _project(x, self.A), (self.scale * self.B).float())


class SVDDelta(Delta):
    """ΔW = U Σ R Vᵀ on the frozen rank-r SVD of W; subclasses say what R is."""

    def __init__(self, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor):
        super().__init__()
        # Frozen, recomputed from the base weight at attach: never saved (persistent=False).
        self.register_buffer("U", U, persistent=False)  # (out, r)
        self.register_buffer("S", S, persistent=False)  # (r,)
        self.register_buffer("Vh", Vh, persistent=False)  # (r, in)
        # ((K + 1, r, r) table of Σ R_k, (B,) row index) while tinylora.adapters.multi.per_row is active
        self.per_row: tuple[torch.Tensor, torch.Tensor] | None = None

    def R(self) -> torch.Tensor:
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        return (self.U * self.S) @ self.R().float() @ self.Vh

    def add_to(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dt = torch.float32  # fp32 whatever the base's dtype: v, R and the path Vᵀx → R → UΣ stay exact
        h = _project(x, self.Vh)  # (…, r) = x V, in fp32
        if self.per_row is not None:  # row b runs its own Σ R_b (tinylora.adapters.multi)
            table, rows = self.per_row
            if h.ndim < 2 or h.shape[0] != rows.shape[0]:
                raise RuntimeError(f"per-row adapters are set for {rows.shape[0]} rows; this forward has "
                                   f"{h.shape[0] if h.ndim >= 2 else 'no batch'} rows")
            M = table[rows].to(dt)  # (B, r, r)
            h = torch.bmm(h.reshape(h.shape[0], -1, h.shape[-1]), M.transpose(1, 2)).reshape(h.shape)
        else:
            h = F.linear(h, (self.S[:, None] * self.R()).to(dt))  # h (ΣR)ᵀ = x V Rᵀ Σ
        return _add_lowrank(y, h, self.U.to(dt), self._split_U() if y.dtype == torch.bfloat16 else None)  # y + x V Rᵀ Σ Uᵀ = y + x ΔWᵀ

    def _split_U(self) -> torch.Tensor:
        """U's bf16 split for a bf16 base (:func:`split_factor`), made once: U is frozen."""
        key = (self.U.data_ptr(), self.U._version, self.U.device)
        cached = getattr(self, "_U_split", None)
        if cached is None or cached[0] != key:
            cached = (key, split_factor(self.U))
            object.__setattr__(self, "_U_split", cached)  # not a buffer: never saved or moved
        return cached[1]


class LoRAXSDelta(SVDDelta):
    def __init__(self, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor):
        super().__init__(U, S, Vh)
        r = S.shape[0]
        self.weight = nn.Parameter(torch.zeros(r, r))

    def R(self) -> torch.Tensor:
        return self.weight


class TinyLoRADelta(SVDDelta):
    """R = (alpha / √u) Σᵢ vᵢ Pᵢ with this module's fixed P and its group's shared v."""

    def __init__(self, U, S, Vh, P: torch.Tensor, alpha: float, shared_v: nn.ParameterList, group: int):
        super().__init__(U, S, Vh)
        self.register_buffer("P", P, persistent=False)  # (u, r, r), regenerated from the seed
        self.scale = alpha / math.sqrt(P.shape[0])
        self.group = group
        # The ParameterList lives on the model's adapter root; keep a plain reference so the
        # shared vector is registered (and saved, and optimised) exactly once.
        object.__setattr__(self, "_shared_v", shared_v)

    @property
    def v(self) -> nn.Parameter:
        return self._shared_v[self.group]

    def R(self) -> torch.Tensor:
        v = self.v
        u, r, _ = self.P.shape
        return self.scale * (v.float() @ self.P.reshape(u, r * r)).reshape(r, r)


class AdaptedLinear(nn.Module):
    """A frozen ``nn.Linear`` / ``Conv1D`` plus a :class:`Delta`.

    ``merge`` swaps in a new weight tensor W + ΔW and keeps the original tensor; ``unmerge`` puts
    the original back, so the base weights are restored bit for bit in every dtype after any
    number of cycles (subtracting ΔW again, as PEFT/TRL do, drifts in bf16). The price is one
    extra copy of the adapted weights while merged.
    """

    def __init__(self, base_layer: nn.Module, delta: Delta, fan_in_fan_out: bool):
        super().__init__()
        self.base_layer = base_layer
        self.delta = delta
        self.fan_in_fan_out = fan_in_fan_out
        self.merged = False
        self.disabled = False
        self._original: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:  # HF code reads .weight (dtype/device checks, tying)
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def base_weight_linear(self) -> torch.Tensor:
        """The base weight as (out, in), whatever the layer's storage layout."""
        W = self.base_layer.weight
        return W.T if self.fan_in_fan_out else W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged or self.disabled:
            return y
        return self.delta.add_to(x, y)

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        W = self.base_layer.weight
        dW = self.delta.delta_weight().to(W.device)
        if self.fan_in_fan_out:
            dW = dW.T
        self._original = W.data
        W.data = (W.data.float() + dW).to(W.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        self.base_layer.weight.data = self._original
        self._original = None
        self.merged = False
