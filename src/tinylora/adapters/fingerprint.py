"""Fingerprints that let an adapter file recognise the base model it was trained on.

A hash of the weights would reject the same model loaded in bf16 instead of fp32, so the
fingerprint is a tolerance-checked sketch instead, costing one matrix–vector product per weight:

- ``w``: for the weight W (out × in) and fixed ±1 vectors g (in) and h (out),
  [‖W g‖, hᵀ W g]. A different model moves both by O(‖W g‖); rounding to bf16 moves them by
  about 2⁻⁹‖W g‖.
- ``s``, ``u``, ``v`` (SVD-based methods only): σ₁…σᵣ and uᵢ·h, vᵢ·g for the canonical factors.
  These are what the trained numbers act on: if W matches but these do not, the top-r singular
  subspace is ill-conditioned (nearly equal σ's) and the update would silently differ.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._core.seeding import sign_vector
from .svd import SVDFactors

_EPS = {"float32": 2.0**-16, "bfloat16": 2.0**-8, "float16": 2.0**-11}  # unit roundoff (fp32: compute noise)


def _signs(n: int, salt: int, device: torch.device) -> torch.Tensor:
    return (sign_vector(n, salt) * math.sqrt(n)).to(device=device, dtype=torch.float32)


def module_fingerprint(W: torch.Tensor, factors: SVDFactors | None) -> dict[str, list[float]]:
    """Sketch of one weight given as (out, in); one pass over W."""
    out_f, in_f = W.shape
    g, h = _signs(in_f, 1, W.device), _signs(out_f, 2, W.device)
    y = W.float() @ g if W.dtype != torch.float32 else W @ g
    fp = {"w": [float(y.norm()), float(h @ y)]}
    if factors is not None:
        fp["s"] = [float(s) for s in factors.S]
        fp["u"] = [float(factors.U[:, i].to(h.device) @ h) for i in range(factors.U.shape[1])]
        fp["v"] = [float(factors.Vh[i].to(g.device) @ g) for i in range(factors.Vh.shape[0])]
    return {k: [round(x, 7) for x in vals] for k, vals in fp.items()}


def tolerance(dtype_a: str, dtype_b: str) -> float:
    """Relative tolerance for comparing sketches of weights stored in these dtypes."""
    return 2 * max(_EPS.get(dtype_a, 2.0**-8), _EPS.get(dtype_b, 2.0**-8))


def compare(saved: dict[str, Any], current: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Modules whose weights differ, and modules whose SVD factors differ while the weights match."""
    tol = tolerance(saved.get("weight_dtype", "float32"), current.get("weight_dtype", "float32"))
    factor_tol = max(6 * tol, 1e-3)  # on unit vectors: 0.05 for bf16, 1e-3 between fp32 loads
    weights_differ, factors_differ = [], []
    for name, s in saved["modules"].items():
        c = current["modules"].get(name)
        if c is None:
            weights_differ.append(name)
            continue
        scale = max(s["w"][0], 1e-30)
        if any(abs(a - b) > tol * scale for a, b in zip(s["w"], c["w"])):
            weights_differ.append(name)
            continue
        if "s" in s:
            s1 = max(s["s"][0], 1e-30)
            if (any(abs(a - b) > tol * s1 * 4 for a, b in zip(s["s"], c["s"]))
                    or any(abs(a - b) > factor_tol for a, b in zip(s["u"] + s["v"], c["u"] + c["v"]))):
                factors_differ.append(name)
    return weights_differ, factors_differ
