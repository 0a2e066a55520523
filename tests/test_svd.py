import pytest
import torch

from tinylora.adapters.svd import canonicalize_signs, exact_top_r, top_r


def decaying(m, n, alpha=0.5, seed=0, dtype=torch.float32):
    """A matrix with a power-law spectrum σ_i = i^-alpha, as real weights roughly have."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    a, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))
    b, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    s = torch.arange(1, k + 1, dtype=torch.float64) ** -alpha
    return ((a * s) @ b.T).to(dtype)


def delta(f, R):
    return (f.U * f.S) @ R @ f.Vh


@pytest.mark.parametrize("shape", [(256, 256), (512, 128), (96, 400)])
@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.3])
def test_randomized_matches_exact_delta(shape, alpha):
    W = decaying(*shape, alpha=alpha)
    fast = top_r(W, 2, method="randomized")
    ref = exact_top_r(W, 2)
    assert fast.method == "randomized"
    R = torch.tensor([[0.3, -1.2], [0.7, 0.25]])
    d_fast, d_ref = delta(fast, R), delta(ref, R)
    assert (d_fast - d_ref).norm() / d_ref.norm() < 1e-4
    # and both agree with a float64 SVD computed here
    U, S, Vh = torch.linalg.svd(W.double())
    U2, Vh2 = canonicalize_signs(U[:, :2], Vh[:2])
    d64 = (U2 * S[:2]) @ R.double() @ Vh2
    assert (d_fast.double() - d64).norm() / d64.norm() < 1e-4


def test_sign_flips_of_W_factors_change_nothing():
    W = decaying(200, 150, seed=1)
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    flip = torch.ones(S.shape[0], dtype=torch.float64)
    flip[:6:2] = -1  # flip the signs of some singular pairs, including the top one
    W_flipped = ((U * flip * S) @ (Vh * flip[:, None])).float()
    R = torch.randn(2, 2)
    for method in ("exact", "randomized"):
        a, b = top_r(W, 2, method=method), top_r(W_flipped, 2, method=method)
        assert (delta(a, R) - delta(b, R)).norm() / delta(a, R).norm() < 1e-5


def test_canonical_sign_rule():
    W = decaying(64, 48, seed=2)
    f = exact_top_r(W, 3)
    idx = f.U.abs().argmax(dim=0)
    assert (f.U[idx, torch.arange(3)] > 0).all()
    assert torch.allclose((f.U * f.S) @ f.Vh, (f.U * f.S) @ f.Vh)  # factors consistent
    assert torch.allclose(W @ f.Vh.T, f.U * f.S, atol=1e-5)


def test_any_weight_dtype_is_computed_in_fp32():
    W = decaying(300, 200, seed=3)
    for dt in (torch.bfloat16, torch.float16):
        f = top_r(W.to(dt), 2)
        assert f.U.dtype == torch.float32 and f.S.dtype == torch.float32
        ref = exact_top_r(W.to(dt).float(), 2)
        assert torch.allclose(f.S, ref.S, rtol=1e-5)


def test_flat_spectrum_falls_back_to_exact():
    W = torch.randn(300, 300, generator=torch.Generator().manual_seed(0))
    f = top_r(W, 2, max_blocks=2)  # a flat spectrum needs far more than 2 Krylov blocks
    assert f.method == "exact"
    assert f.gap < 0.05  # flat spectrum: reported as ill-conditioned
    with pytest.raises(RuntimeError, match="did not converge"):
        top_r(W, 2, method="randomized", max_blocks=2)
    # given enough blocks the Krylov method gets there, and agrees with the exact factors
    g = top_r(W, 2)
    R = torch.randn(2, 2)
    assert (delta(g, R) - delta(f, R)).norm() / delta(f, R).norm() < 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="exceeds"):
        top_r(torch.randn(3, 5), 4)
    with pytest.raises(ValueError, match="method"):
        top_r(torch.randn(30, 50), 2, method="lanczos")
