"""The GGUF cache: the first load of a .gguf file writes a dequantised safetensors copy, later loads read
it and give bit-identical weights, logits and tokenizer; a changed copy is rebuilt, never trusted."""

import logging

import pytest
import torch

from tinylora._core import cache as factor_cache
from tinylora.models import gguf as gguf_cache
from tinylora.models.loading import load_model, load_tokenizer
from tiny_gguf import write_tiny_llama_gguf


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYLORA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYLORA_NO_CACHE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def gguf_file(tmp_path):
    path = tmp_path / "src" / "tiny.gguf"
    path.parent.mkdir()
    write_tiny_llama_gguf(str(path), seed=0)
    return path


def direct(gguf_file, monkeypatch, dtype="fp32"):
    """The reference: the same file through transformers' GGUF loader, no cache."""
    monkeypatch.setenv("TINYLORA_NO_CACHE", "1")
    try:
        return load_model(str(gguf_file), dtype=dtype), load_tokenizer(str(gguf_file))
    finally:
        monkeypatch.delenv("TINYLORA_NO_CACHE")


def entries(cache):
    root = cache / "gguf"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_hit_is_bit_identical_to_loading_the_gguf(cache, gguf_file, monkeypatch):
    ref_model, ref_tok = direct(gguf_file, monkeypatch)
    assert entries(cache) == []
    first = load_model(str(gguf_file))
    (entry,) = entries(cache)
    assert (entry / "model.safetensors").exists() and (entry / "meta.json").exists()

    def no_rebuild(*a, **k):
        raise AssertionError("a hit must not dequantise again")

    monkeypatch.setattr(gguf_cache, "_build", no_rebuild)
    again, tok = load_model(str(gguf_file)), load_tokenizer(str(gguf_file))
    assert same_weights(first, ref_model) and same_weights(again, ref_model)
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()  # still tied
    ids = torch.tensor([[3, 7, 11, 200, 5]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, ref_model(ids).logits)
    msgs = [{"role": "user", "content": "hello the tell"}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == \
        ref_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert tok("hello the tell").input_ids == ref_tok("hello the tell").input_ids
    assert (tok.eos_token_id, tok.pad_token_id) == (ref_tok.eos_token_id, ref_tok.pad_token_id)
    bf16_ref, _ = direct(gguf_file, monkeypatch, dtype="bf16")
    assert same_weights(load_model(str(gguf_file), dtype="bf16"), bf16_ref)


def test_a_changed_gguf_file_is_a_new_entry(cache, gguf_file):
    load_model(str(gguf_file))
    key = gguf_cache.gguf_key(gguf_file)
    write_tiny_llama_gguf(str(gguf_file), seed=1)
    assert gguf_cache.gguf_key(gguf_file) != key
    load_model(str(gguf_file))
    assert len(entries(cache)) == 2


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "remove meta"])
def test_a_damaged_copy_is_rebuilt_with_a_warning(cache, gguf_file, monkeypatch, caplog, damage):
    ref_model, _ = direct(gguf_file, monkeypatch)
    load_model(str(gguf_file))
    (entry,) = entries(cache)
    st = entry / "model.safetensors"
    if damage == "flip a byte":
        data = bytearray(st.read_bytes())
        data[-5] ^= 0x01  # one bit of one weight: still a valid safetensors file
        st.write_bytes(bytes(data))
    elif damage == "truncate":
        st.write_bytes(st.read_bytes()[:1000])
    else:
        (entry / "meta.json").unlink()
    with caplog.at_level(logging.WARNING, logger="tinylora.models.gguf"):
        again = load_model(str(gguf_file))
    assert "rebuilding" in caplog.text
    assert same_weights(again, ref_model)
    assert gguf_cache._verified(entry)  # rewritten whole


def test_no_cache_and_an_unwritable_cache_load_the_gguf_directly(cache, gguf_file, monkeypatch, tmp_path, caplog):
    ref_model, _ = direct(gguf_file, monkeypatch)
    assert entries(cache) == []  # TINYLORA_NO_CACHE wrote nothing
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("TINYLORA_CACHE_DIR", str(blocker))
    with caplog.at_level(logging.WARNING, logger="tinylora.models.gguf"):
        m = load_model(str(gguf_file))
    assert "cannot write" in caplog.text and same_weights(m, ref_model)


def test_cache_info_counts_the_gguf_copies(cache, gguf_file):
    load_model(str(gguf_file))
    i = factor_cache.info()
    assert i["kinds"]["gguf"] > 0 and i["bytes"] == sum(i["kinds"].values())


def test_a_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GGUF file at"):
        load_model(str(tmp_path / "nothing.gguf"))

