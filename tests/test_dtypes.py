"""The dtype policy (``auto``) and a tiny update that survives a bf16 base."""

import pytest
import torch

import tinylora
from tinylora._core.dtypes import resolve_dtype
from tinylora.generation.generate import generate_tokens
from tinylora.generation.sampling import Sampling
from tinylora.toy.tokenizer import char_tokenizer
from conftest import make_model


def test_auto_takes_bf16_only_where_the_cpu_has_units_and_they_measure_faster():
    fast = {"bf16": 900.0, "fp32": 200.0}.__getitem__
    slow = {"bf16": 250.0, "fp32": 200.0}.__getitem__
    assert resolve_dtype("auto", "cpu", flags=["avx2", "avx512f"], measure=fast)[0] == "fp32"  # no units: no bf16
    dt, why = resolve_dtype("auto", "cpu", flags=["avx512f", "avx512_bf16", "amx_bf16"], measure=fast)
    assert dt == "bf16" and "900 vs fp32 200" in why
    dt, why = resolve_dtype("auto", "cpu", flags=["amx_bf16"], measure=slow)
    assert dt == "fp32" and "< 1.5×" in why  # units present but not faster here: fp32
    assert resolve_dtype("bf16", "cpu") == ("bf16", "as requested")
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("float8", "cpu")
    # and on this machine, measured: a real decision with its reason
    dt, why = resolve_dtype("auto", "cpu")
    assert dt in ("fp32", "bf16") and why


def test_auto_is_measured_once_per_process_so_a_run_and_its_record_agree():
    # Measured twice, the GFLOPS in the reason (and near the 1.5× line, the choice) would differ:
    # a test suite's load once flipped a trainer's recorded choice against a later call.
    first = resolve_dtype("auto", "cpu", flags=["avx512_bf16"])
    assert "GFLOPS" in first[1]  # a measured choice, its figures in the reason
    assert resolve_dtype("auto", "cpu", flags=["avx512_bf16"]) == first


def _delta_logits(model, x):
    with torch.no_grad():
        adapted = model(x).logits.float()
        with tinylora.disabled(model):
            base = model(x).logits.float()
    return (adapted - base).flatten()


def _pair(v_scale):
    m32 = make_model("qwen2", seed=2)
    m16 = make_model("qwen2", seed=2).to(torch.bfloat16)
    cfg = tinylora.TinyLoRAConfig(u=13, tying="all")
    for m in (m32, m16):
        tinylora.attach(m, cfg)
        with torch.no_grad():
            tinylora.set_flat_values(m, v_scale * torch.linspace(-1, 1, 13))
    return m32, m16


def test_a_13_parameter_update_survives_a_bf16_base():
    """Δlogits (adapted − base) with a bf16 base point where the fp32 ones do (cosine ≥ 0.99) for an update
    whose effect stands above bf16's own noise on the base logits (measured here: ‖Δ‖ ≈ 35× that noise)."""
    m32, m16 = _pair(0.2)
    x = torch.randint(4, 120, (4, 16), generator=torch.Generator().manual_seed(0))
    d32 = _delta_logits(m32, x)
    with torch.no_grad(), tinylora.disabled(m16), tinylora.disabled(m32):
        noise = (m16(x).logits.float() - m32(x).logits.float()).norm()
    assert d32.norm() > 10 * noise
    cos = torch.nn.functional.cosine_similarity(_delta_logits(m16, x), d32, dim=0)
    assert cos >= 0.99, float(cos)


def test_the_adapter_path_runs_in_fp32_and_is_added_to_a_bf16_output_once():
    """Per layer, exactly: y = bf16(base(x) + x ΔWᵀ computed in fp32) — v, R, U Σ, Vᵀ never rounded to bf16."""
    _, m16 = _pair(0.05)
    name, mod = next(iter(tinylora.adapted_modules(m16).items()))
    x = torch.randn(3, 5, mod.base_layer.in_features, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    with torch.no_grad():
        got = mod(x)
        dW = mod.delta.delta_weight()  # fp32 reference ΔW
        want = (mod.base_layer(x).float() + x.float() @ dW.T).to(torch.bfloat16)
        rounded_path = mod.base_layer(x) + (x @ dW.to(torch.bfloat16).T)  # what a bf16 adapter path gives
    assert got.dtype == torch.bfloat16
    assert (got.float() - want.float()).abs().max() <= 2 ** -7 * want.float().abs().max()  # fp32 reassociation only
    assert (got.float() - want.float()).abs().mean() < (rounded_path.float() - want.float()).abs().mean()


def test_the_split_bf16_update_of_a_large_output_is_correctly_rounded_but_for_ties():
    """Large outputs (a prefill) take one bf16 GEMM on hi/lo-split factors instead of the fp32 path. Against
    float64 reference math, every element is the correctly rounded bf16(y + h Bᵀ) or its neighbour, and at
    most 1 in 10⁴ is the neighbour (the split's 2⁻¹⁷ error at a rounding midpoint); the plain bf16 product
    misses ~1 in 10³ (measured), so the bound tells the two apart. The gradient is the fp32 path's, exactly."""
    from tinylora.adapters import layers

    g = torch.Generator().manual_seed(0)
    N, out = 512, 1024
    assert N * out >= layers.LOWRANK_SPLIT_MIN  # the split path is the one under test
    y = torch.randn(N, out, generator=g).to(torch.bfloat16)
    h = (0.01 * torch.randn(N, 2, generator=g)).requires_grad_()
    B = 0.05 * torch.randn(out, 2, generator=g)
    exact = y.double() + h.detach().double() @ B.double().T
    want = exact.to(torch.bfloat16)
    got = layers._add_lowrank(y.clone(), h, B)
    assert got.dtype == torch.bfloat16
    ulp = (want.float().abs().double() * 2 ** -7).clamp_min(2 ** -133)  # ≥ one bf16 ulp of the value
    assert ((got.double() - exact).abs() <= ulp).all()
    off = (got != want).double().mean().item()
    plain = (y.float() + (h.detach().to(torch.bfloat16).float() @ B.to(torch.bfloat16).float().T)).to(torch.bfloat16)
    assert off <= 1e-4 < (plain != want).double().mean().item()
    gy = torch.randn(N, out, generator=g).to(torch.bfloat16)
    (got.float() * gy.float()).sum().backward()
    assert torch.equal(h.grad, gy.float() @ B)


def test_the_adapter_input_side_on_a_bf16_activation_is_fp32_math_chunked_or_under_autograd():
    """A bf16 x is widened in row chunks for x Aᵀ (no graph) or at once (autograd): both within fp32 rounding
    of float64 math, over chunk boundaries and a ragged last chunk; the gradient is the fp32 product's."""
    from tinylora.adapters import layers

    g = torch.Generator().manual_seed(0)
    rows = 3 * layers.PROJECT_CHUNK_ROWS + 5  # three whole chunks and a ragged one
    x = torch.randn(2, rows, 384, generator=g).to(torch.bfloat16)
    assert x.numel() >= layers.PROJECT_CHUNK_MIN  # the chunked path is the one under test
    A = torch.randn(2, 384, generator=g)
    exact = x.double() @ A.double().T
    with torch.no_grad():
        chunked = layers._project(x, A)
    xg = x.clone().requires_grad_()
    graphed = layers._project(xg, A)
    for got in (chunked, graphed):
        assert got.dtype == torch.float32 and got.shape == (2, rows, 2)
        assert (got.double() - exact).abs().max().item() <= 1e-5 * exact.abs().max().item()
    gy = torch.randn(2, rows, 2, generator=g)
    (graphed * gy).sum().backward()
    assert torch.allclose(xg.grad.float(), (gy @ A).to(torch.bfloat16).float(), rtol=0, atol=0)
    assert torch.equal(layers._project(x.float(), A), torch.nn.functional.linear(x.float(), A))  # fp32: as before


def test_generation_on_a_bf16_base_runs_the_unmerged_fp32_adapter_path():
    tok = char_tokenizer("abcdefghij ")
    _, m16 = _pair(2e-3)
    m16.config.eos_token_id = tok.eos_token_id
    prompt = "abcabc"
    g = generate_tokens(m16, tok, [prompt], n=1, sampling=Sampling(temperature=1.0, max_new_tokens=1), seeds=[7])
    x = g.prompt_ids[:, g.prompt_mask[0].bool()]
    with torch.no_grad():
        want = torch.log_softmax(m16(x).logits[0, -1].float(), -1)[g.new_ids[0, 0]]
        with tinylora.merged(m16):
            wrong = torch.log_softmax(m16(x).logits[0, -1].float(), -1)[g.new_ids[0, 0]]
    assert g.logprobs[0][0] == pytest.approx(float(want), abs=1e-5)
    assert abs(float(wrong) - float(want)) > 1e-5  # merged weights would have given another value


def test_the_output_head_gets_a_contiguous_input():
    """logits_to_keep hands the head a strided slice; torch's CPU bf16 linear on it took 17 GB and 61 s on the
    0.5B's head (benchmarks/prefill.py): load_model makes the head's input contiguous."""
    from tinylora.models.loading import load_model

    model = load_model("toy", dtype="bf16")
    seen = []
    model.get_output_embeddings().register_forward_pre_hook(lambda mod, args: seen.append(args[0].is_contiguous()))
    x = torch.randint(4, 30, (3, 7))
    with torch.no_grad():
        last = model(x, logits_to_keep=1).logits
        full = model(x).logits
    assert seen == [True, True]
    assert torch.equal(last[:, -1], full[:, -1])
