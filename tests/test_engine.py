"""The rollout engine gives what Hugging Face generate gives: the same greedy tokens, the same sampled
tokens for the same seeds, log-probs within 1e-5 — with padding, several samples per prompt,
early-finishing rows dropped from the batch, and per-row adapters."""

import pytest
import torch

import tinylora
from tinylora.generation.generate import Sampling, generate_tokens
from tinylora.models.loading import load_model, load_tokenizer
from tinylora.adapters.multi import adapter_table, per_row
from tinylora.toy.tokenizer import char_tokenizer
from conftest import ARCHS, make_model
from test_grpo_train import tiny_run_setup  # noqa: F401  (fixture)

PROMPTS = ["Q: 7 + 5 =", "Q: a", "Q: 12 - 3 + 4 = ?", "Q: hello there"]


OURS = ["tinylora", "static"]  # the compacting loop and the static-shape one (CUDA graphs on a GPU)


def both(model, tok, prompts, ours_engine="tinylora", **kw):
    hf = generate_tokens(model, tok, prompts, engine="hf", **kw)
    ours = generate_tokens(model, tok, prompts, engine=ours_engine, **kw)
    return hf, ours


def assert_same(hf, ours, tok):
    assert torch.equal(hf.new_ids, ours.new_ids)
    assert (hf.new_ids == tok.eos_token_id).any()  # not vacuous: some rows stopped early
    if hf.logprobs is not None:
        done = torch.cumsum((hf.new_ids == tok.eos_token_id).long(), 1)  # log-probs up to and with EOS
        live = (done - (hf.new_ids == tok.eos_token_id).long()) == 0
        a, b = torch.tensor(hf.logprobs)[live], torch.tensor(ours.logprobs)[live]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def toy(quick_backbone):
    return load_model(str(quick_backbone)), load_tokenizer(str(quick_backbone))


@pytest.mark.parametrize("engine", OURS)
def test_greedy_and_sampled_tokens_equal_generate_on_the_toy_backbone(toy, engine):
    model, tok = toy
    assert_same(*both(model, tok, PROMPTS, engine, sampling=Sampling(0.0, 1.0, 40)), tok)
    seeds = list(range(100, 100 + 3 * len(PROMPTS)))
    for top_p in (1.0, 0.8):
        assert_same(*both(model, tok, PROMPTS, engine, n=3, sampling=Sampling(1.0, top_p, 40), seeds=seeds), tok)


@pytest.mark.parametrize("engine", OURS)
@pytest.mark.parametrize("arch", ARCHS)
def test_random_architectures_match_generate(arch, engine):
    tok = char_tokenizer("abcdefghijklmnopqrstuvwxyz ")
    model = make_model(arch, vocab_size=len(tok), seed=5, tie_word_embeddings=False)
    with torch.no_grad():
        model.get_output_embeddings().weight[tok.eos_token_id] += 0.35  # EOS likely enough to end some rows early
    model.config.eos_token_id = tok.eos_token_id
    prompts = ["abc", "hello world", "z", "qrs tuv"]
    hf, ours = both(model, tok, prompts, engine, sampling=Sampling(0.0, 1.0, 24))
    assert torch.equal(hf.new_ids, ours.new_ids)
    seeds = list(range(2 * len(prompts)))
    assert_same(*both(model, tok, prompts, engine, n=2, sampling=Sampling(1.0, 1.0, 24), seeds=seeds), tok)


@pytest.mark.parametrize("engine", OURS)
def test_per_row_adapters_follow_the_compaction(toy, quick_backbone, engine):
    model = load_model(str(quick_backbone))
    tok = load_tokenizer(str(quick_backbone))
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"))
    values = 3.0 * torch.randn(3, 13, generator=torch.Generator().manual_seed(2))
    rows = torch.tensor([0, 0, 1, 1, -1, -1, 2, 2])  # 4 prompts × 2 samples, member per (prompt, sample) row
    seeds = list(range(8))
    s = Sampling(1.0, 1.0, 30)
    with per_row(model, adapter_table(model, values), rows):
        hf, ours = both(model, tok, PROMPTS, engine, n=2, sampling=s, seeds=seeds)
    assert_same(hf, ours, tok)



@pytest.mark.parametrize("engine", OURS)
def test_samples_of_one_prompt_on_different_adapters(quick_backbone, engine):
    """Rows of one prompt's samples that run different adapters cannot share a prefill: each row is prefilled."""
    model = load_model(str(quick_backbone))
    tok = load_tokenizer(str(quick_backbone))
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"))
    values = 3.0 * torch.randn(2, 13, generator=torch.Generator().manual_seed(3))
    rows = torch.tensor([0, 1, 1, 0, -1, 0, 1, -1])
    with per_row(model, adapter_table(model, values), rows):
        hf, ours = both(model, tok, PROMPTS, engine, n=2, sampling=Sampling(1.0, 1.0, 30), seeds=list(range(8)))
    assert_same(hf, ours, tok)


def test_a_training_run_is_the_same_on_either_engine(tiny_run_setup, tmp_path):
    """GRPO through our engine and through HF generate: the same completions, the same adapter bytes."""
    from test_grpo_train import cfg_for
    from tinylora.trainers import make_trainer

    for engine in ("hf", "tinylora", "static"):
        make_trainer(cfg_for(tiny_run_setup, steps=4, max_new_tokens=3, rollout_engine=engine,
                             out_dir=str(tmp_path / engine)), progress=False).train()
    for engine in ("tinylora", "static"):
        assert (tmp_path / "hf" / "completions.jsonl").read_text() == (tmp_path / engine / "completions.jsonl").read_text()
        assert (tmp_path / "hf" / "adapter.safetensors").read_bytes() == (tmp_path / engine / "adapter.safetensors").read_bytes()


def test_cuda_graphs_need_a_cuda_device(toy):
    from tinylora.generation.engine import decode_static

    model, tok = toy
    enc = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        decode_static(model, enc["input_ids"], enc["attention_mask"], graphs=True)


LONG_AND_SHORT = ["Q: " + "abcdefghij klmnop"[: i % 17] + " = ?" * (i % 5) for i in range(16)]


@pytest.fixture
def grouped_prefill(monkeypatch):
    """The prefill in length groups, which bf16/fp16 bases take, forced on for fp32 so it can be held to
    ``generate`` exactly; counts the batches that took it, so a test cannot pass by not grouping."""
    from tinylora.generation import engine

    monkeypatch.setattr(engine, "BUCKET_DTYPES", (torch.float32,))
    monkeypatch.setattr(engine, "PREFILL_MIN_ROWS", 2)
    calls = []
    real = engine._grouped_prefill
    monkeypatch.setattr(engine, "_grouped_prefill", lambda *a, **k: calls.append(len(a[4])) or real(*a, **k))
    return calls


@pytest.mark.parametrize("arch", ARCHS)
def test_the_prefill_in_length_groups_gives_what_one_padded_batch_gives(arch, grouped_prefill):
    tok = char_tokenizer("abcdefghijklmnopqrstuvwxyz =?Q:")
    model = make_model(arch, vocab_size=len(tok), seed=5, tie_word_embeddings=False)
    with torch.no_grad():
        model.get_output_embeddings().weight[tok.eos_token_id] += 0.35
    model.config.eos_token_id = tok.eos_token_id
    hf, ours = both(model, tok, LONG_AND_SHORT, sampling=Sampling(0.0, 1.0, 20))
    assert torch.equal(hf.new_ids, ours.new_ids)
    seeds = list(range(2 * len(LONG_AND_SHORT)))
    assert_same(*both(model, tok, LONG_AND_SHORT, n=2, sampling=Sampling(1.0, 1.0, 20), seeds=seeds), tok)
    assert grouped_prefill == [4, 4]  # both calls prefilled in four groups


def test_the_grouped_prefill_keeps_each_prompts_adapter(quick_backbone, grouped_prefill):
    model = load_model(str(quick_backbone))
    tok = load_tokenizer(str(quick_backbone))
    tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"))
    values = 3.0 * torch.randn(3, 13, generator=torch.Generator().manual_seed(2))
    rows = torch.tensor([(p % 4) - 1 for p in range(16) for _ in range(2)])  # prompt p's samples: member p % 4 − 1
    with per_row(model, adapter_table(model, values), rows):
        hf, ours = both(model, tok, LONG_AND_SHORT, n=2, sampling=Sampling(1.0, 1.0, 30), seeds=list(range(32)))
    assert_same(hf, ours, tok)
    assert grouped_prefill == [4]
