"""Linear weights pre-packed for oneDNN while a bf16 model decodes on the CPU.

A bf16 ``F.linear`` on the CPU goes to oneDNN, which first reorders the weight into its blocked
(VNNI / AMX tile) layout — on every call. At a decode batch of 64 rows that reorder is a large share of
the matmul: measured (2 threads, AMX CPU, 2026-12-03, idle; ``benchmarks/packed.py``) 64 × 896 · 896 × 4864
1.40 → 0.86 ms, the 151,936-word head 56 → 36 ms with the weight reordered once
(``mkldnn._reorder_linear_weight``, the op ``torch.compile``'s CPU freezing pass inserts) and
multiplied with ``mkldnn._linear_pointwise``. Not bit for bit the plain call: measured, the outputs are
equal on ≥ 99.99% of elements and one bf16 step apart on the rest (the 896 → 128 k/v projections at 64
rows), so a bf16 greedy decode can take another branch at a near-tie (91% of 64 GSM8K rows identical);
tests hold it to the float64 product within bf16 rounding. Large inputs (a prefill) keep ``F.linear``,
where packing measured no faster. fp32 is left alone: MKL's packed GEMM (``mkl._mkl_linear``) does not
give ``F.linear``'s bits either, and the fp32 loop is held token for token to ``generate``.

The packed copies are extra memory (one more copy of every packed weight: 0.99 GB on
Qwen2.5-Coder-0.5B in bf16) for as long as :func:`packed` holds them; a packed weight whose tensor
changed (``load_state_dict``, an in-place edit) is not used again until repacked.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

PACK_DTYPES = (torch.bfloat16,)
PACK_MAX_ROWS = 256  # inputs with more rows (a prefill) take F.linear: packing measured no faster there (1.0–1.4× at
# 1,024 rows, slower at 2,480 rows with a 64-row pack; both under load)
_KEY = "_tinylora_packed"


def available() -> bool:
    """Whether this torch has oneDNN and its packed-linear ops."""
    if not (torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available()):
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight, torch.ops.mkldnn._linear_pointwise  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


def _stamp(w: torch.Tensor) -> tuple[int, int]:
    return w.data_ptr(), w._version


def _forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    stamp, packed_w = self.__dict__[_KEY]
    w = self.weight
    if (x.dtype != w.dtype or x.numel() > PACK_MAX_ROWS * x.shape[-1] or stamp != _stamp(w)
            or (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))):
        return F.linear(x, w, self.bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed_w, self.bias, "none", [], "")


def packable(model: nn.Module) -> list[nn.Linear]:
    """The model's plain ``nn.Linear`` layers on the CPU in a packed dtype (the base layers inside adapted ones
    included: their adapter path is separate)."""
    if not available():
        return []
    return [m for m in model.modules() if type(m) is nn.Linear and m.weight.device.type == "cpu"
            and m.weight.dtype in PACK_DTYPES]


def pack(model: nn.Module, batch_size: int = 64) -> int:
    """Reorder every packable linear weight once (``batch_size``: the rows oneDNN is told to expect) and route the
    layer's small inputs through it; returns the bytes the packed copies hold. Idempotent."""
    total = 0
    for m in packable(model):
        if _KEY not in m.__dict__:
            with torch.no_grad():
                m.__dict__[_KEY] = (_stamp(m.weight), torch.ops.mkldnn._reorder_linear_weight(m.weight, batch_size))
            m.forward = _forward.__get__(m)  # an instance attribute: shadows nn.Linear.forward for this layer only
        total += m.weight.numel() * m.weight.element_size()
    return total


def unpack(model: nn.Module) -> None:
    """Drop the packed copies; the layers run ``nn.Linear.forward`` again."""
    for m in model.modules():
        if _KEY in m.__dict__:
            del m.__dict__[_KEY]
            m.__dict__.pop("forward", None)


def is_packed(model: nn.Module) -> bool:
    return any(_KEY in m.__dict__ for m in model.modules())


@contextlib.contextmanager
def packed(model: nn.Module, batch_size: int = 64):
    """Packed weights inside the block (a model already packed stays packed after it)."""
    already = is_packed(model)
    if not already:
        n = pack(model, batch_size)
        if n:
            log.debug("packed %d bytes of linear weights for oneDNN", n)
    try:
        yield model
    finally:
        if not already:
            unpack(model)
