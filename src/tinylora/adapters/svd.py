"""Top-r singular triplets of a weight, fast, checked, and independent of how they were computed.

TinyLoRA and LoRA-XS need only the top r (= 2) singular triplets of each adapted weight. A full SVD
(what PEFT does) costs O(m n min(m, n)) per weight; subspace iteration costs O(m n k) per step with
k = r + oversampling. We iterate until every wanted triplet satisfies

    ‖W vᵢ − σᵢ uᵢ‖ ≤ tol · σ₁          (and Wᵀuᵢ = σᵢvᵢ holds by construction),

and fall back to ``torch.linalg.svd`` when that does not happen quickly (flat spectra, as in
random-init weights, converge slowly or never). Everything runs in float32 whatever the weight's
dtype. Signs are canonicalised (largest-magnitude entry of each uᵢ positive, vᵢ flipped with it):
a flipped pair turns R into D R D, silently changing what trained numbers mean, so without this
the same adapter bytes would give different models on different algorithms or devices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SVDFactors:
    U: torch.Tensor  # (m, r) float32, orthonormal columns
    S: torch.Tensor  # (r,) float32, descending
    Vh: torch.Tensor  # (r, n) float32, orthonormal rows
    method: str  # "randomized" or "exact"
    iterations: int
    residual: float  # max_i ‖W vᵢ − σᵢ uᵢ‖ / σ₁
    gap: float  # min over i ≤ r of (σᵢ − σᵢ₊₁) / σ₁; small ⇒ factors ill-defined (not portable)


def canonicalize_signs(U: torch.Tensor, Vh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each singular pair so the largest-magnitude entry of uᵢ is positive (sklearn's svd_flip)."""
    idx = U.abs().argmax(dim=0)  # (r,)
    signs = torch.sign(U[idx, torch.arange(U.shape[1], device=U.device)])
    signs[signs == 0] = 1
    return U * signs, Vh * signs[:, None]


def _relative_gap(S_ext: torch.Tensor, r: int) -> float:
    """min over i < r of (σᵢ − σᵢ₊₁) / σ₁, using σ_{r+1} when known (0 when r = rank)."""
    if S_ext.numel() == 0 or S_ext[0] <= 0:
        return 0.0
    s = torch.cat([S_ext, S_ext.new_zeros(1)])[: r + 1]
    return float(((s[:-1] - s[1:]) / S_ext[0]).min())


def _residual(W: torch.Tensor, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor) -> float:
    res = (W @ Vh.T - U * S).norm(dim=0).max()
    return float(res / S[0].clamp_min(torch.finfo(torch.float32).tiny))


def exact_top_r(W: torch.Tensor, r: int) -> SVDFactors:
    """Reference: full ``torch.linalg.svd`` in float32, truncated to r."""
    W = W.detach().float()
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    Ur, Vr = canonicalize_signs(U[:, :r], Vh[:r])
    return SVDFactors(Ur.contiguous(), S[:r].contiguous(), Vr.contiguous(), "exact", 0,
                      _residual(W, Ur, S[:r], Vr), _relative_gap(S, r))


def top_r(
    W: torch.Tensor,
    r: int,
    *,
    method: str = "auto",
    block: int | None = None,
    tol: float = 1e-5,
    max_blocks: int = 24,
    seed: int = 0,
) -> SVDFactors:
    """Top-r singular triplets of ``W`` (m × n), sign-canonical, float32.

    method: ``"auto"`` (randomized block Krylov, checked against ``tol``, exact fallback),
    ``"randomized"`` (same, but raises instead of falling back) or ``"exact"``.

    The iterative method is randomized block Krylov (Musco & Musco 2015) with full
    re-orthogonalisation: the basis grows by one block of size ``block`` (default r + 2) per step
    and Rayleigh–Ritz on the whole basis converges much faster than plain subspace iteration
    (``torch.svd_lowrank``), whose top-2 is off by 5% on real weights after 2 iterations.
    """
    if W.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {tuple(W.shape)}")
    m, n = W.shape
    if r > min(m, n):
        raise ValueError(f"rank r={r} exceeds min(shape)={min(m, n)} of a {m}×{n} weight")
    if method not in ("auto", "randomized", "exact"):
        raise ValueError(f"method must be 'auto', 'randomized' or 'exact', got {method!r}")
    b = block or r + 2
    if method == "exact" or (method == "auto" and 4 * b >= min(m, n)):
        return exact_top_r(W, r)  # small matrix: a full SVD is as cheap as iterating

    W = W.detach().float()
    # Work in the tall orientation A (M × N, M ≥ N) without copying W: for a wide W, A = Wᵀ.
    # Products use the forms measured fastest for a row-major W on CPU (F.linear(W, Xᵀ) for W X
    # is ~4× faster than W @ X when X has a handful of columns).
    transpose = m < n
    if transpose:
        A_mul = lambda Y: (Y.T.contiguous() @ W).T  # noqa: E731  A Y = Wᵀ Y
        At_mul = lambda Q: F.linear(W, Q.T.contiguous())  # noqa: E731  Aᵀ Q = W Q
    else:
        A_mul = lambda Y: F.linear(W, Y.T.contiguous())  # noqa: E731  A Y = W Y
        At_mul = lambda Q: (Q.T.contiguous() @ W).T  # noqa: E731  Aᵀ Q = Wᵀ Q
    N = min(m, n)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(N, b, generator=gen).to(W.device)
    Qj, _ = torch.linalg.qr(A_mul(omega))  # (M, b)
    Qs: list[torch.Tensor] = []
    Ys: list[torch.Tensor] = []  # Aᵀ Q_j: the Ritz matrix Qᵀ A costs nothing extra
    Xs: list[torch.Tensor] = []  # A Aᵀ Q_j: next blocks, and A vᵢ for the residual, for free
    res = float("inf")
    steps = min(max_blocks, min(m, n) // b)
    for it in range(1, steps + 1):
        Qs.append(Qj)
        Yj = At_mul(Qj)  # (N, b)
        Ys.append(Yj)
        Xs.append(A_mul(Yj))  # (M, b)
        # Ritz values/vectors of B = Qᵀ A (kt × N) from its kt × kt Gram matrix in float64: a
        # tiny eigh instead of an SVD of B (top singular values only, so squaring is harmless).
        B = torch.cat(Ys, dim=1).T
        evals, evecs = torch.linalg.eigh((B.double() @ B.double().T))
        S_ext = evals.flip(0).clamp_min(0).sqrt().float()
        Ub = evecs.flip(1).float()
        S = S_ext[:r]
        inv = 1.0 / S.clamp_min(torch.finfo(torch.float32).tiny)
        Vh = (Ub[:, :r].T @ B) * inv[:, None]
        U = torch.cat(Qs, dim=1) @ Ub[:, :r]
        # vᵢ = Y Ubᵢ / σᵢ, so A vᵢ = X Ubᵢ / σᵢ: the residual needs no pass over A
        AV = torch.cat(Xs, dim=1) @ Ub[:, :r] * inv
        res = float((AV - U * S).norm(dim=0).max() / S[0])
        if res <= tol:
            if transpose:  # A = Wᵀ: swap roles back
                U, Vh = Vh.T, U.T
            Uc, Vc = canonicalize_signs(U.contiguous(), Vh.contiguous())
            return SVDFactors(Uc.contiguous(), S.contiguous(), Vc.contiguous(), "randomized", it, res,
                              _relative_gap(S_ext, r))
        Qcat = torch.cat(Qs, dim=1)
        X = Xs[-1]
        for _ in range(2):  # classical Gram–Schmidt twice: orthogonal to fp32 precision
            X = X - Qcat @ (Qcat.T @ X)
        Qj, _ = torch.linalg.qr(X)
    if method == "randomized":
        raise RuntimeError(f"block Krylov did not converge (residual {res:.2e} > tol {tol:.0e})")
    return exact_top_r(W, r)
