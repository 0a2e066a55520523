"""A disk cache of the frozen top-r factors, keyed by the exact bytes of the base weight.

The factors U, Σ, V of an SVD-based adapter depend only on the base weight, r and the SVD method,
so a second attach to the same base can read them instead of recomputing them. The key is an
xxh3-128 hash of the weight's bytes (with its shape, dtype, r and method): any change to the
weight — one ulp of one element — is a different key, so a changed base never reuses stale
factors. On a hit the factors are still checked against the actual weight, cheaply: the residual
‖W vᵢ − σᵢ uᵢ‖ / σ₁ of every kept triplet (one product of W with r vectors) must be as small as the
SVD left it; a file that fails the check, or cannot be read, is reported, ignored and rewritten.

Where: ``$TINYLORA_CACHE_DIR``, else ``$XDG_CACHE_HOME/tinylora``, else ``~/.cache/tinylora``;
``TINYLORA_NO_CACHE=1`` (or ``--no-cache`` on the command line) turns it off. The same folder holds
dequantised GGUF models (``gguf/``, see :mod:`tinylora.models.gguf`; the folder: :mod:`tinylora._core.cache`). ``tinylora cache
info`` / ``tinylora cache clear`` show and empty it.
"""

from __future__ import annotations

import logging
import os

import torch

from .._core.cache import cache_dir, enabled
from .svd import SVDFactors, top_r

log = logging.getLogger(__name__)

VERSION = 1  # bump when the SVD or the file layout changes: old entries then miss
# on a hit, a triplet whose residual exceeds this (relative to σ₁) is refused (the SVD converges to 1e-5)
VERIFY_TOL = 1e-3


def weight_key(W: torch.Tensor, r: int, method: str) -> str:
    """Hash of the weight's exact bytes, shape, dtype, r and SVD method."""
    import xxhash

    h = xxhash.xxh3_128()
    h.update(f"v{VERSION}|{tuple(W.shape)}|{W.dtype}|r={r}|{method}|".encode())
    data = W.detach().contiguous()
    if data.device.type != "cpu":
        data = data.cpu()
    h.update(memoryview(data.view(torch.uint8).reshape(-1).numpy()))
    return h.hexdigest()


def _verify(W: torch.Tensor, f: SVDFactors) -> float:
    """max over the kept triplets of ‖W vᵢ − σᵢ uᵢ‖ / σ₁ (one pass over W)."""
    Wf = W.detach().float()
    WV = Wf @ f.Vh.T.to(Wf.device)  # (out, r)
    res = (WV - f.U.to(Wf.device) * f.S.to(Wf.device)).norm(dim=0).max()
    return float(res / f.S[0].clamp_min(torch.finfo(torch.float32).tiny))


def cached_top_r(W: torch.Tensor, r: int, *, method: str = "auto", use_cache: bool | None = None) -> SVDFactors:
    """:func:`tinylora.adapters.svd.top_r`, read from the cache when this exact weight was factored before."""
    if not (enabled() if use_cache is None else use_cache):
        return top_r(W, r, method=method)
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    key = weight_key(W, r, method)
    path = cache_dir() / "factors" / f"{key}.safetensors"
    if path.exists():
        try:
            t = load_file(path)
            f = SVDFactors(t["U"].to(W.device), t["S"].to(W.device), t["Vh"].to(W.device), "cached",
                           int(t["iterations"]), float(t["residual"]), float(t["gap"]))
            if f.U.shape != (W.shape[0], r) or f.Vh.shape != (r, W.shape[1]):
                raise ValueError(f"factor shapes {tuple(f.U.shape)}, {tuple(f.Vh.shape)} do not fit the weight")
            res = _verify(W, f)
            if res <= VERIFY_TOL:
                return f
            log.warning("factor cache: %s fails the check against the weight (residual %.1e); recomputing", path, res)
        except (SafetensorError, KeyError, ValueError, RuntimeError, OSError) as e:
            log.warning("factor cache: ignoring unreadable %s (%s); recomputing", path, e)
    f = top_r(W, r, method=method)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"U": f.U.contiguous().cpu(), "S": f.S.contiguous().cpu(), "Vh": f.Vh.contiguous().cpu(),
                   "iterations": torch.tensor(f.iterations), "residual": torch.tensor(f.residual),
                   "gap": torch.tensor(f.gap)}, tmp)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError as e:  # a read-only or full disk costs the cache, never the attach
        log.warning("factor cache: cannot write %s (%s)", path, e)
    return f
