"""`export --format gguf-lora`: a llama.cpp LoRA adapter that carries exactly ΔW.

The default suite reads the file back with gguf-py (what llama.cpp's loader reads: names, shapes, the
adapter keys) and rebuilds every ΔW from it. Where llama-cpp-python and the real Qwen2.5-Coder-0.5B are
installed, the adapter is also run in llama.cpp against tinylora's adapted model (the optional test).
"""

import math
import os

import pytest
import torch

import tinylora
from tinylora.adapters.export import _llama_permute
from conftest import make_model
from test_contract import randomize_adapter

gguf = pytest.importorskip("gguf")

HF_TO_GGUF = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def _field(reader, key):
    f = reader.fields[key]
    v = f.parts[f.data[0]]
    return bytes(v).decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("cfg", [tinylora.TinyLoRAConfig(u=13, tying="all"), tinylora.LoRAConfig(r=4, alpha=8.0)],
                         ids=["tinylora", "lora"])
def test_gguf_lora_carries_exactly_the_update(arch, cfg, tmp_path):
    m = make_model(arch, num_key_value_heads=2) if arch == "llama" else make_model(arch)
    tinylora.attach(m, cfg)
    randomize_adapter(m, seed=4)
    tinylora.export(m, tmp_path / "g", format="gguf-lora")
    r = gguf.GGUFReader(str(tmp_path / "g" / "adapter.gguf"))
    assert _field(r, "general.type") == "adapter" and _field(r, "adapter.type") == "lora"
    assert _field(r, "general.architecture") == arch
    alpha = float(_field(r, "adapter.lora.alpha"))
    tensors = {t.name: torch.from_numpy(t.data.copy()).float() for t in r.tensors}
    mods = tinylora.adapted_modules(m)
    assert len(tensors) == 2 * len(mods)
    for name, mod in mods.items():
        layer, kind = int(name.split(".")[2]), name.split(".")[-1]
        g = f"blk.{layer}.{HF_TO_GGUF[kind]}.weight"
        A, B = tensors[g + ".lora_a"], tensors[g + ".lora_b"]
        rank = A.shape[0]
        assert A.shape == (rank, mod.base_layer.in_features) and B.shape == (mod.base_layer.out_features, rank)
        want = mod.delta.delta_weight()
        if arch == "llama" and kind in ("q_proj", "k_proj"):  # llama.cpp's row order for its RoPE
            heads = m.config.num_attention_heads if kind == "q_proj" else m.config.num_key_value_heads
            want = _llama_permute(want, heads)
        got = (alpha / rank) * B @ A  # what llama.cpp adds: scale · B A with scale = alpha / rank
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-5), (name, (got - want).abs().max())


def test_gguf_lora_refuses_what_llama_cpp_cannot_hold(tmp_path):
    m = make_model("gpt2")
    tinylora.attach(m, tinylora.TinyLoRAConfig(u=2, tying="all"))
    with pytest.raises(ValueError, match="gguf-lora export knows architectures"):
        tinylora.export(m, tmp_path / "g", format="gguf-lora")
    full = make_model("qwen2")
    tinylora.attach(full, tinylora.FullConfig(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="not low-rank"):
        tinylora.export(full, tmp_path / "h", format="gguf-lora")


def _installed_qwen():
    from tinylora.models import catalog

    name = "qwen2.5-coder-0.5b-instruct"
    return catalog.gguf_path(name) if catalog.installed(name) else None


@pytest.mark.skipif(os.environ.get("TINYLORA_LLAMA_CPP") != "1",
                    reason="set TINYLORA_LLAMA_CPP=1 where llama-cpp-python and the real 0.5B are installed")
def test_llama_cpp_runs_the_exported_skill_like_tinylora(tmp_path):
    """The real thing: llama.cpp on the Q4_K_M Qwen2.5-Coder-0.5B GGUF + our adapter.gguf moves the next-token
    logits as tinylora's adapted model (dequantised from the same file) does. llama.cpp multiplies with its
    Q4_K/Q8_K kernels (activations quantised to 8 bits), so the two bases already differ; the check is on
    the adapter's effect, Δlogits = adapted − base, and against that base-vs-base floor."""
    llama_cpp = pytest.importorskip("llama_cpp")
    path = _installed_qwen()
    assert path is not None, "qwen2.5-coder-0.5b-instruct is not installed (tinylora models install ...)"
    from tinylora.models.loading import load_model, load_tokenizer

    tok, model = load_tokenizer(str(path)), load_model(str(path))
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"))
    with torch.no_grad():
        tinylora.set_flat_values(model, 0.2 * torch.linspace(-1, 1, 13))
    tinylora.export(model, tmp_path / "g", format="gguf-lora")
    ids = tok("Natalia sold clips to 48 of her friends in April, and then half as many in May.",
              add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].double()
        with tinylora.disabled(model):
            ours_base = model(torch.tensor([ids])).logits[0].double()

    def run(lora):
        kw = {"lora_path": str(tmp_path / "g" / "adapter.gguf")} if lora else {}
        llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=256, n_threads=2, verbose=False, **kw)
        llm.eval(ids)
        return torch.tensor(llm.scores[: len(ids)]).double()

    theirs, theirs_base = run(True), run(False)
    d_ours, d_theirs = (ours - ours_base).flatten(), (theirs - theirs_base).flatten()
    floor = (theirs_base - ours_base).flatten().norm()
    cos = torch.nn.functional.cosine_similarity(d_ours, d_theirs, dim=0)
    print(f"|Δ ours| {d_ours.norm():.2f}  |Δ llama.cpp − Δ ours| {(d_theirs - d_ours).norm():.2f}  "
          f"base floor {floor:.2f}  cosine {cos:.4f}")
    assert d_ours.norm() > 2 * floor  # the update is larger than the quantisation gap
    assert cos >= 0.95
    assert (d_theirs - d_ours).norm() <= floor + 0.1 * d_ours.norm()
    assert math.isfinite(float(cos))
