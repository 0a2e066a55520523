import json
import os
import struct

import pytest
import torch

import tinylora
from tinylora import AdapterError
from conftest import logits, make_model, tokens


def trained(arch="qwen2", cfg=None, seed=0, dtype=torch.float32):
    m = make_model(arch, dtype=dtype)
    tinylora.attach(m, cfg or tinylora.TinyLoRAConfig(u=13, tying="all"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tinylora.trainable_parameters(m):
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return m


def rewrite_metadata(src, dst, edit):
    """Re-write a safetensors file with edited tinylora metadata (keeps tensors, recomputes nothing)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    inner = json.loads(meta["tinylora"])
    edit(inner, tensors)
    meta["tinylora"] = json.dumps(inner)
    save_file(tensors, str(dst), metadata=meta)


def test_payload_bytes_26_bf16_52_fp32(tmp_path):
    m = trained()
    for dtype, n in (("bf16", 26), ("fp32", 52), ("fp16", 26)):
        info = tinylora.read(tinylora.save(m, tmp_path / f"a-{dtype}.safetensors", dtype=dtype))
        assert info.payload_bytes == n and info.num_parameters == 13
        assert list(info.tensors) == ["v"]
        # the raw file: 8-byte header length, JSON header, then exactly n bytes of tensor data
        raw = (tmp_path / f"a-{dtype}.safetensors").read_bytes()
        (hlen,) = struct.unpack("<Q", raw[:8])
        assert len(raw) == 8 + hlen + n


def test_same_file_loads_into_fp32_and_bf16_base(tmp_path):
    m = trained()
    path = tinylora.save(m, tmp_path / "skill.safetensors", dtype="bf16")
    x = tokens(batch=2, length=6)
    f32 = make_model("qwen2", dtype=torch.float32)
    b16 = make_model("qwen2", dtype=torch.bfloat16)
    tinylora.load(f32, path)
    tinylora.load(b16, path)
    l32, l16 = logits(f32, x), logits(b16, x)
    assert (l32 - l16).abs().max() < 0.05 * l32.abs().max()  # within bf16 tolerance
    # the adapter changes the model far more than bf16 rounding does
    base = logits(make_model("qwen2"), x)
    assert (l32 - base).abs().max() > 5 * (l32 - l16).abs().max()
    # Greedy generations agree wherever fp32's top-1 margin exceeds the bf16 error: a random
    # model's logits are nearly flat, so a true tie may flip, which is not a defect.
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad(), tinylora.merged(f32):
        seq = f32.generate(x, **kw)
    l32, l16 = logits(f32, seq)[:, x.shape[1] - 1 : -1], logits(b16, seq)[:, x.shape[1] - 1 : -1]
    err = (l32 - l16).abs().amax(-1)
    top2 = l32.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * err
    assert clear.float().mean() > 0.5  # most steps are decided by a clear margin
    assert torch.equal(l16.argmax(-1)[clear], seq[:, x.shape[1]:][clear])


def test_rejects_another_base_model(tmp_path):
    path = tinylora.save(trained(), tmp_path / "a.safetensors")
    other = make_model("qwen2", seed=1)  # same architecture and shapes, different weights
    state = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(AdapterError, match="trained on another base model"):
        tinylora.load(other, path)
    # nothing lost: the model is left exactly as it was, with no adapter attached
    assert not hasattr(other, "tinylora")
    assert all(torch.equal(v, state[k]) for k, v in other.state_dict().items())


def test_rejects_a_slightly_finetuned_base(tmp_path):
    path = tinylora.save(trained(), tmp_path / "a.safetensors")
    m = make_model("qwen2")
    with torch.no_grad():
        w = m.model.layers[1].mlp.up_proj.weight
        w.add_(0.05 * w.std() * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(AdapterError, match="another base model.*up_proj"):
        tinylora.load(m, path)


def test_rejects_other_architecture_and_sizes(tmp_path):
    path = tinylora.save(trained(), tmp_path / "a.safetensors")
    with pytest.raises(AdapterError, match="target modules do not match") as e:
        tinylora.load(make_model("gpt2"), path)
    msg = str(e.value)  # real examples both ways, never an empty list
    assert "in the file, not here: ['model.layers.0." in msg and "here, not in the file: ['transformer.h.0." in msg
    assert "[]" not in msg
    from tinylora.adapters.file import _module_mismatch

    assert "same modules in another order (first difference at #1: file 'b', here 'c')" in _module_mismatch(
        ["a", "b", "c"], ["a", "c", "b"])
    lora = tinylora.save(trained(cfg=tinylora.LoRAConfig(r=2)), tmp_path / "l.safetensors")
    bigger = make_model("qwen2", intermediate_size=160)
    with pytest.raises(AdapterError, match="shapes do not match"):
        tinylora.load(bigger, lora)


def test_rejects_truncated_and_corrupted_files(tmp_path):
    path = tinylora.save(trained(), tmp_path / "a.safetensors", dtype="fp32")
    raw = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[:-10])
    with pytest.raises(AdapterError, match="truncated or corrupted"):
        tinylora.read(tmp_path / "trunc.safetensors")
    flipped = bytearray(raw)
    flipped[-3] ^= 0x40  # one bit inside the payload
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(AdapterError, match="checksum"):
        tinylora.read(tmp_path / "flip.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(AdapterError, match="not a readable safetensors"):
        tinylora.read(tmp_path / "junk.safetensors")
    with pytest.raises(AdapterError, match="no such adapter file"):
        tinylora.read(tmp_path / "missing.safetensors")


def test_rejects_unknown_version_foreign_files_and_nan(tmp_path):
    from safetensors.torch import save_file

    path = tinylora.save(trained(), tmp_path / "a.safetensors")
    rewrite_metadata(path, tmp_path / "v9.safetensors", lambda meta, t: meta.update(format_version=9))
    with pytest.raises(AdapterError, match="format version 9 is not supported"):
        tinylora.read(tmp_path / "v9.safetensors")

    def poison(meta, tensors):
        tensors["v"][0, 0] = float("nan")
        meta["payload_sha256"] = tinylora.adapters.file._payload_digest(tensors)

    rewrite_metadata(path, tmp_path / "nan.safetensors", poison)
    with pytest.raises(AdapterError, match="NaN/inf"):
        tinylora.read(tmp_path / "nan.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(AdapterError, match="not a tinylora adapter"):
        tinylora.read(tmp_path / "plain.safetensors")
    rewrite_metadata(path, tmp_path / "cfg.safetensors", lambda meta, t: meta["config"].update(u=0))
    with pytest.raises(AdapterError, match="invalid config"):
        tinylora.read(tmp_path / "cfg.safetensors")


def test_refuses_to_save_nan_and_keeps_existing_file(tmp_path):
    m = trained()
    path = tinylora.save(m, tmp_path / "a.safetensors")
    before = path.read_bytes()
    with torch.no_grad():
        m.tinylora.v[0][0] = float("inf")
    with pytest.raises(AdapterError, match="NaN/inf"):
        tinylora.save(m, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # no temp files left


def test_load_into_attached_model_checks_config(tmp_path):
    path = tinylora.save(trained(), tmp_path / "a.safetensors")
    m = make_model("qwen2")
    tinylora.attach(m, tinylora.TinyLoRAConfig(u=7, tying="all"))
    with pytest.raises(AdapterError, match="differs from the model's attached config"):
        tinylora.load(m, path)
    assert hasattr(m, "tinylora")  # a user-attached adapter is kept


def with_tied_singular_values(model):
    """Give one weight σ₂ = σ₃ (to 1e-6): its top-2 singular vectors are then set by rounding."""
    W = model.model.layers[0].mlp.up_proj.weight
    g = torch.Generator().manual_seed(5)
    a, _ = torch.linalg.qr(torch.randn(W.shape[0], W.shape[1], generator=g, dtype=torch.float64))
    b, _ = torch.linalg.qr(torch.randn(W.shape[1], W.shape[1], generator=g, dtype=torch.float64))
    s = torch.linspace(1.0, 0.1, W.shape[1], dtype=torch.float64)
    s[:3] = torch.tensor([2.0, 1.5, 1.5 * (1 - 1e-6)])
    with torch.no_grad():
        W.copy_(((a * s) @ b.T).to(W.dtype))
    return model


def test_ill_conditioned_factors_are_reported(tmp_path, caplog):
    m = with_tied_singular_values(make_model("qwen2"))
    with caplog.at_level("WARNING"):
        tinylora.attach(m, tinylora.TinyLoRAConfig())
    assert "nearly equal top singular values" in caplog.text
    path = tinylora.save(m, tmp_path / "a.safetensors")
    b16 = with_tied_singular_values(make_model("qwen2")).to(torch.bfloat16)
    with pytest.raises(AdapterError, match="singular vectors of .* differ"):
        tinylora.load(b16, path)
    with pytest.warns(UserWarning, match="singular vectors"):
        tinylora.load(b16, path, strict=False)


def test_file_loads_without_pickle(tmp_path, monkeypatch):
    import pickle

    path = tinylora.save(trained(), tmp_path / "a.safetensors")

    def refuse(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    tinylora.load(make_model("qwen2"), path)
    assert os.path.getsize(path) < 16_000
