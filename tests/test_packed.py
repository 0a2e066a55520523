"""Pre-packed bf16 linear weights (generation/packed.py): within bf16 rounding of the float64 product,
used only where they are valid (no gradients, small inputs, unchanged weights), and gone afterwards."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinylora.generation import packed as P
from tinylora.generation.generate import Sampling, generate_tokens
from tinylora.toy.tokenizer import char_tokenizer
from conftest import make_model

pytestmark = pytest.mark.skipif(not P.available(), reason="this torch has no oneDNN packed-linear ops")


def bound(x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    """What a bf16 output of an fp32-accumulated product may be off from the float64 one: half a bf16 step of
    the result (2⁻⁹ relative) plus fp32 accumulation over K terms (K · 2⁻²⁴ · Σ|x w|), doubled for slack."""
    K = x.shape[-1]
    mag = x.abs().double() @ lin.weight.abs().double().t()
    ref = F.linear(x.double(), lin.weight.double(), None if lin.bias is None else lin.bias.double())
    return ref, 2 * (ref.abs() * 2.0 ** -9 + K * 2.0 ** -24 * mag)


@pytest.mark.parametrize("K,N,bias", [(96, 320, False), (320, 96, False), (96, 32, True), (37, 53, True)])
def test_packed_outputs_are_the_product_to_bf16_rounding(K, N, bias):
    torch.manual_seed(0)
    lin = nn.Linear(K, N, bias=bias).bfloat16()
    if bias:
        with torch.no_grad():
            lin.bias.mul_(40)  # large biases (Qwen's k/v projections have them): a dropped one shows
    for shape in [(1, K), (5, K), (64, K), (3, 7, K), (64, 1, K), (8, 4, K)]:
        x = torch.randn(*shape).bfloat16()
        if shape == (8, 4, K):
            x = x[:, 1]  # not contiguous
        with P.packed(lin), torch.no_grad():  # no_grad: with autograd the layer takes F.linear
            y = lin(x)
        ref, tol = bound(x, lin)
        assert ((y.double() - ref).abs() <= tol).all(), shape


def test_the_packed_path_is_taken_only_where_it_is_valid():
    torch.manual_seed(1)
    lin = nn.Linear(64, 48).bfloat16().requires_grad_(False)  # a frozen base layer
    x = torch.randn(16, 64).bfloat16()
    P.pack(lin)
    assert "forward" in lin.__dict__ and P.is_packed(lin)
    # a weight changed in place after packing: the stale copy is not used, the result is F.linear's exactly
    with torch.no_grad():
        lin.weight.mul_(-2)
    assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias))
    # autograd through the layer (the training forward): F.linear, and the gradient flows
    xg = x.clone().requires_grad_(True)
    lin(xg).float().sum().backward()
    xr = x.clone().requires_grad_(True)
    F.linear(xr, lin.weight, lin.bias).float().sum().backward()
    assert torch.equal(xg.grad, xr.grad)
    P.unpack(lin)
    assert "forward" not in lin.__dict__ and not P.is_packed(lin)


def test_fp32_layers_are_not_packed_and_packing_nests():
    model32 = make_model("qwen2")
    assert P.packable(model32) == [] and P.pack(model32) == 0
    model = make_model("qwen2", dtype=torch.bfloat16)
    n = len(P.packable(model))
    assert n > 0 and all(m.weight.dtype == torch.bfloat16 for m in P.packable(model))
    P.pack(model)
    with P.packed(model):  # already packed: stays packed after the block
        pass
    assert P.is_packed(model)
    P.unpack(model)
    with P.packed(model):
        assert P.is_packed(model)
    assert not P.is_packed(model)


def test_the_decode_loop_runs_a_bf16_base_packed_and_leaves_it_unpacked():
    tok = char_tokenizer("abcdefghijklmnopqrstuvwxyz ")
    model = make_model("qwen2", vocab_size=len(tok), seed=3, dtype=torch.bfloat16)
    seen = []
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda m, i, o: seen.append((i[0].shape[:-1].numel(), P.is_packed(model))))
    prompts = ["abc", "hello world", "z", "qrs tuv"]
    ours = generate_tokens(model, tok, prompts, sampling=Sampling(0.0, 1.0, 12), engine="tinylora")
    assert not P.is_packed(model)
    steps = ours.new_ids.shape[1]
    assert steps > 1 and [p for _, p in seen] == [True] * len(seen)  # the prefill's head input and every step's
