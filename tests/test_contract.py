"""One table of checks run over every parameterization × architecture (PEFT's contract-test idea)."""

import math

import pytest
import torch

import tinylora
from tinylora._core import seeding
from tinylora.adapters.layers import AdaptedLinear
from conftest import ARCHS, logits, make_model, tokens

METHODS = {
    "tinylora": lambda: tinylora.TinyLoRAConfig(r=2, u=5, tying="tiled", n_tie=4, seed=3),
    "tinylora_all": lambda: tinylora.TinyLoRAConfig(r=2, u=13, tying="all", alpha=0.7),
    "lora_xs": lambda: tinylora.LoRAXSConfig(r=2),
    "lora": lambda: tinylora.LoRAConfig(r=3, alpha=6.0),
    "full": lambda: tinylora.FullConfig(),
}
CASES = [(m, a) for m in METHODS for a in ARCHS]


def randomize_adapter(model, seed=0):
    """Give the trainable tensors non-zero values so ΔW ≠ 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tinylora.trainable_parameters(model):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))


def reference_factors(W, r):
    """Exact SVD in float64, signs canonicalised by the rule stated in the docs."""
    U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    U, S, Vh = U[:, :r], S[:r], Vh[:r]
    idx = U.abs().argmax(dim=0)
    sign = torch.sign(U[idx, torch.arange(r)])
    return U * sign, S, Vh * sign[:, None]


def reference_delta(model, name, index):
    """ΔW from the paper's formulas, computed here from the module's own base weight."""
    root = model.tinylora
    cfg = root.config
    mod = model.get_submodule(name)
    W = mod.base_weight_linear().detach()
    if cfg.method == "full":
        return mod.delta.delta.double()
    if cfg.method == "lora":
        return (cfg.alpha / cfg.r) * mod.delta.B.double() @ mod.delta.A.double()
    U, S, Vh = reference_factors(W, cfg.r)
    if cfg.method == "lora_xs":
        R = mod.delta.weight.double()
    else:
        P = seeding.normal((cfg.u, cfg.r, cfg.r), cfg.seed, index).double()
        v = root.v[root.groups[index]].double()
        R = cfg.alpha / math.sqrt(cfg.u) * torch.einsum("i,ijk->jk", v, P)
    return U @ torch.diag(S) @ R @ Vh


@pytest.mark.parametrize("method,arch", CASES)
def test_identity_at_init(method, arch):
    m = make_model(arch)
    x = tokens()
    before = logits(m, x)
    tinylora.attach(m, METHODS[method]())
    assert torch.equal(logits(m, x), before)
    assert all(d.abs().max() == 0 for d in tinylora.delta_weights(m).values())


@pytest.mark.parametrize("method,arch", CASES)
def test_delta_matches_dense_reference_and_forward(method, arch):
    m = make_model(arch)
    tinylora.attach(m, METHODS[method]())
    randomize_adapter(m)
    deltas = tinylora.delta_weights(m)
    for index, (name, mod) in enumerate(tinylora.adapted_modules(m).items()):
        ref = reference_delta(m, name, index)
        assert (deltas[name].double() - ref).norm() <= 1e-4 * ref.norm() + 1e-9, name  # SVD tol
        # the fast unmerged forward adds exactly x ΔWᵀ
        x = torch.randn(3, 5, ref.shape[1], generator=torch.Generator().manual_seed(index))
        with torch.no_grad():
            got = mod(x) - mod.base_layer(x)
        want = (x.double() @ ref.T).float()
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("method,arch", CASES)
def test_one_step_changes_only_the_adapter(method, arch):
    m = make_model(arch)
    tinylora.attach(m, METHODS[method]())
    base_before = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("tinylora.") and ".delta." not in k}
    params = tinylora.trainable_parameters(m)
    assert {id(p) for p in params} == {id(p) for p in m.parameters() if p.requires_grad}
    adapter_before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-2)
    x = tokens()
    m.train()
    loss = m(x, labels=x).loss
    loss.backward()
    opt.step()
    after = {k: v for k, v in m.state_dict().items() if k in base_before}
    assert after.keys() == base_before.keys()
    assert all(torch.equal(after[k], base_before[k]) for k in base_before)
    assert any(not torch.equal(p, b) for p, b in zip(params, adapter_before))


@pytest.mark.parametrize("method,arch", CASES)
def test_merge_equals_unmerged_and_restores_bits(method, arch):
    m = make_model(arch)
    tinylora.attach(m, METHODS[method]())
    randomize_adapter(m)
    x = tokens()
    weights = {k: v.clone() for k, v in m.state_dict().items()}
    unmerged_logits = logits(m, x)
    with tinylora.merged(m):
        merged_logits = logits(m, x)
    assert torch.allclose(merged_logits, unmerged_logits, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(v, weights[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("method", list(METHODS))
def test_save_load_round_trip(method, tmp_path):
    m = make_model("qwen2")
    tinylora.attach(m, METHODS[method]())
    randomize_adapter(m)
    x = tokens()
    want = logits(m, x)
    path = tinylora.save(m, tmp_path / "a.safetensors")  # fp32: exact
    fresh = make_model("qwen2")
    tinylora.load(fresh, path)
    assert torch.equal(logits(fresh, x), want)
    for a, b in zip(tinylora.trainable_parameters(fresh), tinylora.trainable_parameters(m)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", list(METHODS))
def test_counts_and_bytes(method):
    m = make_model("qwen2")  # 3 layers × 7 targets; hidden 64, intermediate 128, kv 32
    cfg = METHODS[method]()
    tinylora.attach(m, cfg)
    shapes = [mod.base_weight_linear().shape for mod in tinylora.adapted_modules(m).values()]
    assert len(shapes) == 21
    expected = {
        "tinylora": math.ceil(21 / 4) * 5,
        "tinylora_all": 13,
        "lora_xs": 21 * 4,
        "lora": sum(3 * (o + i) for o, i in shapes),
        "full": sum(o * i for o, i in shapes),
    }[method]
    assert tinylora.num_trainable(m) == expected
    assert tinylora.update_bytes(m, "fp32") == 4 * expected
    assert tinylora.update_bytes(m, "bf16") == tinylora.update_bytes(m, "fp16") == 2 * expected
    with pytest.raises(ValueError, match="dtype"):
        tinylora.update_bytes(m, "int8")


def test_bf16_merge_unmerge_cycles_are_bit_exact():
    m = make_model("qwen2", dtype=torch.bfloat16)
    tinylora.attach(m, tinylora.TinyLoRAConfig())
    randomize_adapter(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    for _ in range(1000):
        tinylora.merge(m)
        tinylora.unmerge(m)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_merged_generation_matches_unmerged():
    m = make_model("qwen2")
    tinylora.attach(m, tinylora.TinyLoRAConfig(u=13, tying="all"))
    randomize_adapter(m)
    x = tokens(batch=2, length=5)
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        slow = m.generate(x, **kw)
        with tinylora.merged(m):
            fast = m.generate(x, **kw)
    assert torch.equal(slow, fast)


def test_disabled_gives_base_model():
    m = make_model("llama")
    x = tokens()
    base = logits(m, x)
    tinylora.attach(m, tinylora.LoRAXSConfig())
    randomize_adapter(m)
    assert not torch.equal(logits(m, x), base)
    with tinylora.disabled(m):
        assert torch.equal(logits(m, x), base)
    with tinylora.merged(m), pytest.raises(RuntimeError, match="merged"):
        with tinylora.disabled(m):
            pass


def test_targets_and_attach_errors():
    m = make_model("qwen2")
    with pytest.raises(ValueError, match="no linear layer matches"):
        tinylora.attach(m, tinylora.LoRAConfig(target_modules=["c_attn"]))
    tinylora.attach(m, tinylora.LoRAXSConfig(target_modules=["q_proj", "v_proj"]))
    assert len(tinylora.adapted_modules(m)) == 6
    assert all(isinstance(mod, AdaptedLinear) for mod in tinylora.adapted_modules(m).values())
    with pytest.raises(ValueError, match="already has"):
        tinylora.attach(m, tinylora.LoRAXSConfig())
    g = make_model("gpt2")
    tinylora.attach(g, tinylora.TinyLoRAConfig())
    assert len(tinylora.adapted_modules(g)) == 3 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj
    small = make_model("qwen2", hidden_size=8, intermediate_size=16, num_attention_heads=2, num_key_value_heads=1)
    with pytest.raises(ValueError, match="exceeds"):
        tinylora.attach(small, tinylora.LoRAXSConfig(r=5))


def test_detach_restores_the_original_model():
    m = make_model("gpt2")
    x = tokens()
    base = logits(m, x)
    keys = set(m.state_dict())
    tinylora.attach(m, tinylora.LoRAConfig())
    randomize_adapter(m)
    tinylora.merge(m)
    tinylora.detach(m)
    assert set(m.state_dict()) == keys
    assert torch.equal(logits(m, x), base)


@pytest.mark.parametrize("method,arch", CASES)
def test_gradients_match_dense_reference(method, arch):
    """The fused in-place low-rank path must give the same gradients as F.linear(x, W + ΔW)."""
    m = make_model(arch)
    tinylora.attach(m, METHODS[method]())
    randomize_adapter(m)
    params = tinylora.trainable_parameters(m)
    name, mod = next(iter(tinylora.adapted_modules(m).items()))
    W = mod.base_weight_linear().detach()
    bias = mod.bias
    x = torch.randn(2, 4, W.shape[1], generator=torch.Generator().manual_seed(1), requires_grad=True)
    g = torch.randn(2, 4, W.shape[0], generator=torch.Generator().manual_seed(2))

    (mod(x) * g).sum().backward()
    fast = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    fast_x = x.grad.clone()
    for p in params:
        p.grad = None
    x.grad = None
    ref_out = torch.nn.functional.linear(x, W + mod.delta.delta_weight(), bias)
    (ref_out * g).sum().backward()
    ref = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for a, b in zip(fast, ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert torch.allclose(fast_x, x.grad, atol=1e-5, rtol=1e-4)


def test_tied_output_layer_is_refused():
    m = make_model("qwen2")  # tie_word_embeddings=True: lm_head.weight is the embedding matrix
    with pytest.raises(ValueError, match="tied to"):
        tinylora.attach(m, tinylora.TinyLoRAConfig(target_modules=["lm_head"]))
    assert not hasattr(m, "tinylora")
    untied = make_model("qwen2", tie_word_embeddings=False)
    tinylora.attach(untied, tinylora.TinyLoRAConfig(target_modules=["lm_head"]))
    assert list(tinylora.adapted_modules(untied)) == ["lm_head"]
