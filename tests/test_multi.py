"""Many adapters in one forward: each row equals its adapter run alone (logits, KV cache, sampling)."""

import pytest
import torch

import tinylora
from tinylora.generation.generate import Sampling, generate_tokens
from tinylora.adapters.multi import adapter_table, flat_values, per_row, per_row_active, set_flat_values
from conftest import ARCHS, make_model

CONFIGS = {
    "tinylora": lambda: tinylora.TinyLoRAConfig(u=3, tying="structured", n_tie=2),
    "lora_xs": lambda: tinylora.LoRAXSConfig(r=2),
}


def attached(arch, method, seed=0):
    model = make_model(arch, seed=seed, tie_word_embeddings=False)
    tinylora.attach(model, CONFIGS[method]())
    model.eval()
    return model


def random_values(model, K, seed=0, scale=2.0):
    n = tinylora.num_trainable(model)
    return scale * torch.randn(K, n, generator=torch.Generator().manual_seed(seed))


def padded_batch(vocab, B=5, seed=1):
    """Left-padded token batch with rows of different lengths."""
    g = torch.Generator().manual_seed(seed)
    L = 9
    ids = torch.randint(4, vocab, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    for b, pad in enumerate([0, 3, 1, 5, 2][:B]):
        ids[b, :pad] = 0
        mask[b, :pad] = 0
    return ids, mask


def alone(model, values_k, fn):
    """Run ``fn`` with the model's own adapter set to values_k (None: the base alone)."""
    saved = flat_values(model)
    try:
        if values_k is None:
            with tinylora.disabled(model):
                return fn()
        set_flat_values(model, values_k)
        return fn()
    finally:
        set_flat_values(model, saved)


@pytest.mark.parametrize("method", list(CONFIGS))
@pytest.mark.parametrize("arch", ARCHS)
def test_each_row_runs_its_own_adapter(arch, method):
    model = attached(arch, method)
    values = random_values(model, 3)
    ids, mask = padded_batch(model.config.vocab_size)
    rows = torch.tensor([0, 2, -1, 1, 2])
    kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0))
    with torch.no_grad(), per_row(model, adapter_table(model, values), rows):
        got = model(**kwargs).logits
    assert not per_row_active(model)
    for k in [-1, 0, 1, 2]:
        ref = alone(model, values[k] if k >= 0 else None, lambda: model(**kwargs).logits.detach())
        sel = rows == k
        real = mask[sel].bool()
        torch.testing.assert_close(got[sel][real], ref[sel][real], atol=1e-5, rtol=0)
    # and the rows really differ: adapters 0 and 2 move the logits of the same input apart
    assert (got[0] - alone(model, values[2], lambda: model(**kwargs).logits.detach())[0]).abs().max() > 1e-3


@pytest.mark.parametrize("method", list(CONFIGS))
@pytest.mark.parametrize("arch", ARCHS)
def test_generation_with_kv_cache_matches_each_adapter_alone(arch, method):
    model = attached(arch, method)
    values = random_values(model, 2, seed=4)
    ids, mask = padded_batch(model.config.vocab_size, B=4, seed=2)
    rows = torch.tensor([1, -1, 0, 1])
    gen = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, return_dict_in_generate=True,
               output_logits=True, pad_token_id=0, eos_token_id=None)
    with torch.no_grad(), per_row(model, adapter_table(model, values), rows):
        got = model.generate(**gen)
    got_logits = torch.stack(got.logits, 1)
    for k in [-1, 0, 1]:
        ref = alone(model, values[k] if k >= 0 else None, lambda: model.generate(**gen))
        sel = rows == k
        assert torch.equal(got.sequences[sel], ref.sequences[sel])
        torch.testing.assert_close(got_logits[sel], torch.stack(ref.logits, 1)[sel], atol=1e-5, rtol=0)


def test_sampled_tokens_equal_sequential_generation(quick_backbone):
    """The ES population path (rows = members, same prompts and seeds) against one member at a time
    through the ordinary merged generation."""
    from tinylora.models.loading import load_model, load_tokenizer

    model = load_model(str(quick_backbone))
    tok = load_tokenizer(str(quick_backbone))
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"))
    values = random_values(model, 3, seed=7, scale=3.0)
    prompts = ["Q: 7 + 5 =", "Q: a b", "Q: 12 - 3 + 4 ="]
    seeds = [11, 12, 13]
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=12)
    K = values.shape[0]
    with per_row(model, adapter_table(model, values), torch.arange(K).repeat_interleave(len(prompts))):
        batched = generate_tokens(model, tok, prompts * K, sampling=sampling, seeds=seeds * K)
    for k in range(K):
        ref = alone(model, values[k], lambda: generate_tokens(model, tok, prompts, sampling=sampling, seeds=seeds))
        got = batched.new_ids[k * len(prompts):(k + 1) * len(prompts)]
        T = min(got.shape[1], ref.new_ids.shape[1])
        assert torch.equal(got[:, :T], ref.new_ids[:, :T])
        assert (got[:, T:] == tok.pad_token_id).all() and (ref.new_ids[:, T:] == tok.pad_token_id).all()
        lp = torch.tensor(batched.logprobs[k * len(prompts):(k + 1) * len(prompts)])[:, :T]
        torch.testing.assert_close(lp, torch.tensor(ref.logprobs)[:, :T], atol=1e-5, rtol=0)


def test_table_rows_and_misuse_are_checked():
    model = attached("qwen2", "tinylora")
    values = random_values(model, 2)
    table = adapter_table(model, values)
    with pytest.raises(ValueError, match=r"\[-1, 2\)"):
        with per_row(model, table, [0, 2]):
            pass
    with pytest.raises(ValueError, match="flat adapter vectors"):
        adapter_table(model, values[:, :-1])
    with per_row(model, table, [0, 1]):
        with pytest.raises(RuntimeError, match="already active"):
            with per_row(model, table, [0, 1]):
                pass
        with pytest.raises(RuntimeError, match="set for 2 rows"):
            model(torch.zeros(3, 4, dtype=torch.long))
    lora = make_model("qwen2")
    tinylora.attach(lora, tinylora.LoRAConfig(r=1))
    with pytest.raises(ValueError, match="SVD-based"):
        adapter_table(lora, torch.zeros(1, tinylora.num_trainable(lora)))


def test_flat_values_round_trip():
    model = attached("llama", "lora_xs")
    v = random_values(model, 1)[0]
    set_flat_values(model, v)
    assert torch.equal(flat_values(model), v)
    with pytest.raises(ValueError, match="flat vector"):
        set_flat_values(model, v[:-1])


@pytest.mark.parametrize("method", list(CONFIGS))
def test_a_table_entry_exports_as_that_adapter_alone(method):
    """What the vLLM engine sends for row k of a population is the LoRA of adapter k on its own."""
    from tinylora.adapters.export import peft_lora_tensors

    model = attached("qwen2", method)
    values = random_values(model, 3)
    table = adapter_table(model, values)
    for k in range(3):
        row, row_cfg = peft_lora_tensors(model, table=table, entry=k)
        own, own_cfg = alone(model, values[k], lambda: peft_lora_tensors(model))
        assert row_cfg == own_cfg and row.keys() == own.keys()
        for name in own:
            assert torch.allclose(row[name], own[name], rtol=1e-5, atol=1e-6), name
        assert any(own[n].abs().max() > 0 for n in own if n.endswith("lora_B.weight"))
    base, _ = peft_lora_tensors(model, table=table, entry=3)  # the base's entry: B = 0
    assert all(base[n].abs().max() == 0 for n in base if n.endswith("lora_B.weight"))
